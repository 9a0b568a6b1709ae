//! Prometheus metrics: every stage of the data path reports here.
//!
//! Labels are bounded: camera ids (validated, from config), stage names and
//! fixed reasons. Never a URL or an error text, so credentials cannot leak
//! into a label and the series count stays fixed.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

pub struct Metrics {
    pub registry: Registry,
    pub frames_decoded: IntCounterVec,
    pub frames_dropped: IntCounterVec,
    pub frames_analysed: IntCounterVec,
    pub camera_up: IntGaugeVec,
    pub reconnects: IntCounterVec,
    pub stage_seconds: HistogramVec,
    pub events: IntCounterVec,
    pub mqtt_connected: IntGauge,
    pub analysis_errors: IntCounterVec,
}

/// Buckets from 0.5 ms to 2 s: preprocess sits near the bottom, inference
/// in the middle, a slow snapshot at the top.
const BUCKETS: &[f64] = &[0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0];

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("static metric definition");
            registry.register(Box::new(c.clone())).expect("unique metric name");
            c
        };
        let frames_decoded = counter(
            "alleywatch_frames_decoded_total",
            "Frames decoded and handed to the latest-frame slot",
            &["camera"],
        );
        let frames_dropped =
            counter("alleywatch_frames_dropped_total", "Frames dropped before analysis", &["camera", "reason"]);
        let frames_analysed =
            counter("alleywatch_frames_analysed_total", "Frames run through detection and rules", &["camera"]);
        let reconnects = counter("alleywatch_camera_reconnects_total", "Camera stream restarts", &["camera"]);
        let events = counter("alleywatch_events_total", "Event messages sent", &["kind", "type"]);
        let analysis_errors =
            counter("alleywatch_analysis_errors_total", "Frames whose analysis failed", &["camera", "stage"]);
        let camera_up =
            IntGaugeVec::new(Opts::new("alleywatch_camera_up", "1 while the camera is streaming"), &["camera"])
                .expect("static metric definition");
        registry.register(Box::new(camera_up.clone())).expect("unique metric name");
        let stage_seconds = HistogramVec::new(
            HistogramOpts::new("alleywatch_stage_seconds", "Time spent per data-path stage").buckets(BUCKETS.to_vec()),
            &["stage"],
        )
        .expect("static metric definition");
        registry.register(Box::new(stage_seconds.clone())).expect("unique metric name");
        let mqtt_connected = IntGauge::new("alleywatch_mqtt_connected", "1 while connected to the broker")
            .expect("static metric definition");
        registry.register(Box::new(mqtt_connected.clone())).expect("unique metric name");
        Metrics {
            registry,
            frames_decoded,
            frames_dropped,
            frames_analysed,
            camera_up,
            reconnects,
            stage_seconds,
            events,
            mqtt_connected,
            analysis_errors,
        }
    }

    /// A histogram handle for one stage, resolved once, not per frame.
    pub fn stage(&self, stage: &str) -> Histogram {
        self.stage_seconds.with_label_values(&[stage])
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
