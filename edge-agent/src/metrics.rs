//! Prometheus metrics: every stage of the data path reports here.
//!
//! Labels are bounded: camera ids (validated, from config), stage names and
//! fixed reasons. Never a URL or an error text, so credentials cannot leak
//! into a label and the series count stays fixed.

use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};

pub struct Metrics {
    pub(crate) registry: Registry,
    /// The HTTP listener's own series (connections, refusals, snapshots).
    pub http: HttpMetrics,
    pub(crate) frames_decoded: IntCounterVec,
    pub(crate) frames_dropped: IntCounterVec,
    pub(crate) frames_analysed: IntCounterVec,
    /// Detector runs the motion gate skipped (nothing moved).
    pub(crate) detector_skipped: IntCounterVec,
    /// Frames whose levels were stretched for the pose model (dim scene).
    pub(crate) low_light_frames: IntCounterVec,
    /// Detector inferences since the models loaded, and the frames they
    /// carried: more frames than inferences means cameras' frames ran
    /// batched. Set from the detector's own counts (gauges: they restart
    /// with a model reload).
    pub(crate) detector_inferences: IntGauge,
    pub(crate) detector_inferred_frames: IntGauge,
    pub(crate) camera_up: IntGaugeVec,
    pub(crate) reconnects: IntCounterVec,
    /// Camera starts: at agent start, and each time a reload adds or
    /// restarts the camera (a stream reconnect is `reconnects`).
    pub(crate) camera_starts: IntCounterVec,
    /// Camera pipelines that did not stop within the teardown timeout and
    /// were left behind with their threads (see `source::supervisor`).
    pub(crate) pipelines_abandoned: IntCounter,
    pub(crate) stage_seconds: HistogramVec,
    pub(crate) events: IntCounterVec,
    pub mqtt_connected: IntGauge,
    pub(crate) analysis_errors: IntCounterVec,
    pub(crate) last_frame_age: GaugeVec,
    pub(crate) spool_messages: IntGauge,
    pub(crate) spool_bytes: IntGauge,
    pub(crate) spool_oldest_age: Gauge,
    pub(crate) spool_dropped: IntCounterVec,
    pub(crate) spool_errors: IntCounter,
    /// Corrupt spool files set aside at start (an empty spool replaced them).
    pub(crate) spool_corrupt: IntCounter,
    /// Spooled messages the broker kept refusing, moved out of the drain.
    pub(crate) spool_set_aside: IntCounter,
    /// 1 while the spool's last real write succeeded (what `/readyz` reports).
    pub(crate) spool_write_ok: IntGauge,
    /// Messages the spool could not store, waiting in memory.
    pub(crate) spool_fallback_messages: IntGauge,
    /// What the bounded in-memory fallback gave up: updates, then snapshots.
    pub(crate) spool_fallback_dropped: IntCounterVec,
    /// Snapshots over `alerts.snapshot_max_kb`, by what fitted them.
    pub(crate) snapshots_capped: IntCounterVec,
    pub(crate) last_seq: IntGauge,
    pub(crate) published: IntCounterVec,
    pub(crate) publish_failures: IntCounter,
    pub(crate) events_suppressed: IntCounterVec,
    pub(crate) commands: IntCounterVec,
    pub(crate) reloads: IntCounterVec,
    pub models_loaded: IntGauge,
    /// Commands refused before they were read (issue 19): `retained`,
    /// `too_large`, `rate_limited`, `busy`.
    pub(crate) commands_refused: IntCounterVec,
    /// Overlays set aside at start because they were corrupt or refused.
    pub overlay_set_aside: IntCounter,
}

/// Buckets from 0.5 ms to 30 s: preprocess sits near the bottom, inference
/// in the middle, capture-to-publish (which includes the broker's
/// acknowledgement, and spooling through an outage) at the top.
const BUCKETS: &[f64] = &[0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0];

/// The stages of `alleywatch_stage_seconds`, in data-path order.
pub(crate) const STAGES: &[&str] = &[
    "decode_to_slot",
    "preprocess",
    "inference",
    "postprocess",
    "rules",
    "snapshot",
    "capture_to_decision",
    "capture_to_publish",
];

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        // Every definition below is static, so a failure is a programming
        // error caught by the first test that builds `Metrics`.
        fn add<C: prometheus::core::Collector + Clone + 'static>(registry: &Registry, c: prometheus::Result<C>) -> C {
            let c = c.expect("static metric definition");
            registry.register(Box::new(c.clone())).expect("unique metric name");
            c
        }
        let counter =
            |name: &str, help: &str, labels: &[&str]| add(&registry, IntCounterVec::new(Opts::new(name, help), labels));
        let gauge = |name: &str, help: &str| add(&registry, IntGauge::new(name, help));
        let frames_decoded = counter(
            "alleywatch_frames_decoded_total",
            "Frames decoded and handed to the latest-frame slot",
            &["camera"],
        );
        let frames_dropped =
            counter("alleywatch_frames_dropped_total", "Frames dropped before analysis", &["camera", "reason"]);
        let frames_analysed =
            counter("alleywatch_frames_analysed_total", "Frames run through detection and rules", &["camera"]);
        let detector_skipped = counter(
            "alleywatch_detector_skipped_total",
            "Detector runs skipped by the motion gate: nothing moved since the last run",
            &["camera"],
        );
        let low_light_frames = counter(
            "alleywatch_low_light_frames_total",
            "Frames too dim for the pose model as they came (mean luma under pose.low_light_below): levels stretched first",
            &["camera"],
        );
        let detector_inferences = gauge(
            "alleywatch_detector_inferences",
            "Detector inferences since the models loaded (each carries one frame or a batch of several)",
        );
        let detector_inferred_frames = gauge(
            "alleywatch_detector_inferred_frames",
            "Frames those inferences carried; divided by alleywatch_detector_inferences, the mean batch",
        );
        let reconnects = counter("alleywatch_camera_reconnects_total", "Camera stream restarts", &["camera"]);
        let camera_starts = counter(
            "alleywatch_camera_starts_total",
            "Camera starts: at agent start, and when a reload adds or restarts the camera",
            &["camera"],
        );
        let pipelines_abandoned = add(
            &registry,
            IntCounter::new(
                "alleywatch_pipelines_abandoned_total",
                "Camera pipelines that did not stop in time and were left behind, threads and all (a restart frees them)",
            ),
        );
        let events = counter("alleywatch_events_total", "Event messages sent", &["kind", "type"]);
        let analysis_errors =
            counter("alleywatch_analysis_errors_total", "Frames whose analysis failed", &["camera", "stage"]);
        let camera_up = add(
            &registry,
            IntGaugeVec::new(Opts::new("alleywatch_camera_up", "1 while the camera is streaming"), &["camera"]),
        );
        let stage_seconds = add(
            &registry,
            HistogramVec::new(
                HistogramOpts::new("alleywatch_stage_seconds", "Time spent per data-path stage")
                    .buckets(BUCKETS.to_vec()),
                &["stage"],
            ),
        );
        let mqtt_connected = gauge("alleywatch_mqtt_connected", "1 while connected to the broker");
        let last_frame_age = add(
            &registry,
            GaugeVec::new(
                Opts::new("alleywatch_camera_last_frame_age_seconds", "Seconds since the camera's last decoded frame"),
                &["camera"],
            ),
        );
        let spool_messages = gauge("alleywatch_spool_messages", "Event messages waiting in the spool for a PUBACK");
        let spool_bytes = gauge("alleywatch_spool_bytes", "Payload bytes in the spool");
        let spool_oldest_age =
            add(&registry, Gauge::new("alleywatch_spool_oldest_age_seconds", "Age of the oldest spooled message"));
        let spool_dropped = counter(
            "alleywatch_spool_dropped_total",
            "What a full spool gave up: whole updates, or snapshots of kept messages",
            &["what"],
        );
        let spool_errors = add(
            &registry,
            IntCounter::new("alleywatch_spool_errors_total", "Spool writes that failed (sent from memory)"),
        );
        let spool_corrupt = add(
            &registry,
            IntCounter::new(
                "alleywatch_spool_corrupt_total",
                "Corrupt spool files set aside at start (an empty spool replaced them)",
            ),
        );
        let spool_set_aside = add(
            &registry,
            IntCounter::new(
                "alleywatch_spool_set_aside_total",
                "Spooled messages set aside after the broker dropped the connection on them repeatedly",
            ),
        );
        let spool_write_ok = gauge("alleywatch_spool_write_ok", "1 while the spool's last write succeeded");
        spool_write_ok.set(1);
        let spool_fallback_messages =
            gauge("alleywatch_spool_fallback_messages", "Event messages the spool could not store, waiting in memory");
        let spool_fallback_dropped = counter(
            "alleywatch_spool_fallback_dropped_total",
            "What the bounded in-memory fallback gave up: whole updates, or snapshots of kept messages",
            &["what"],
        );
        let snapshots_capped = counter(
            "alleywatch_snapshots_capped_total",
            "Snapshots over alerts.snapshot_max_kb: re-encoded (quality), scaled down (scaled) or left out (dropped)",
            &["how"],
        );
        let last_seq = gauge("alleywatch_event_seq", "The last event seq assigned (persists across restarts)");
        let published =
            counter("alleywatch_published_total", "Event messages acknowledged by the broker", &["kind", "type"]);
        let publish_failures = add(
            &registry,
            IntCounter::new("alleywatch_mqtt_failures_total", "Broker connection failures and lost connections"),
        );
        let events_suppressed = counter(
            "alleywatch_events_suppressed_total",
            "Event messages not sent because a centre acknowledged or resolved the event",
            &["reason"],
        );
        let commands = counter("alleywatch_commands_total", "Commands from the centres", &["command", "result"]);
        let reloads = counter("alleywatch_config_reloads_total", "Configuration reloads", &["result"]);
        let models_loaded = gauge("alleywatch_models_loaded", "1 once every configured model is loaded");
        let commands_refused = counter(
            "alleywatch_commands_refused_total",
            "Commands refused unread: retained, too_large, rate_limited or busy",
            &["reason"],
        );
        let overlay_set_aside = add(
            &registry,
            IntCounter::new(
                "alleywatch_overlay_set_aside_total",
                "overlay.toml files set aside at start (corrupt or refused); the agent ran from the config file alone",
            ),
        );
        for stage in STAGES {
            stage_seconds.with_label_values(&[stage]);
        }
        let http = HttpMetrics::new(&registry);
        for reason in ["retained", "too_large", "rate_limited", "busy"] {
            commands_refused.with_label_values(&[reason]);
        }
        Metrics {
            registry,
            http,
            frames_decoded,
            frames_dropped,
            frames_analysed,
            detector_skipped,
            low_light_frames,
            detector_inferences,
            detector_inferred_frames,
            camera_up,
            reconnects,
            camera_starts,
            pipelines_abandoned,
            stage_seconds,
            events,
            mqtt_connected,
            analysis_errors,
            last_frame_age,
            spool_messages,
            spool_bytes,
            spool_oldest_age,
            spool_dropped,
            spool_errors,
            spool_corrupt,
            spool_set_aside,
            spool_write_ok,
            spool_fallback_messages,
            spool_fallback_dropped,
            snapshots_capped,
            last_seq,
            published,
            publish_failures,
            events_suppressed,
            commands,
            reloads,
            models_loaded,
            commands_refused,
            overlay_set_aside,
        }
    }

    /// Drops a removed camera's series, so dashboards and alerts do not
    /// keep a camera that is no longer configured.
    pub(crate) fn forget_camera(&self, id: &str) {
        for vec in [
            &self.frames_decoded,
            &self.frames_analysed,
            &self.detector_skipped,
            &self.low_light_frames,
            &self.reconnects,
            &self.camera_starts,
        ] {
            let _ = vec.remove_label_values(&[id]);
        }
        let _ = self.camera_up.remove_label_values(&[id]);
        let _ = self.http.snapshot_encodes.remove_label_values(&[id]);
        let _ = self.last_frame_age.remove_label_values(&[id]);
        let _ = self.frames_dropped.remove_label_values(&[id, "analysis_busy"]);
        for stage in ["preprocess", "inference"] {
            let _ = self.analysis_errors.remove_label_values(&[id, stage]);
        }
    }

    /// A histogram handle for one stage, resolved once, not per frame.
    pub fn stage(&self, stage: &str) -> Histogram {
        self.stage_seconds.with_label_values(&[stage])
    }

    /// The text exposition format.
    pub(crate) fn render(&self) -> String {
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

/// The HTTP listener: what it holds open, what it refused and why.
pub struct HttpMetrics {
    pub connections: IntGauge,
    /// Connections answered 503 and closed at `http.max_connections`.
    pub connections_refused: IntCounter,
    /// Connections closed by a timeout: `header` (no whole request head in
    /// `http.header_timeout_s`) or `idle` (nothing moved in
    /// `http.idle_timeout_s`).
    pub timeouts: IntCounterVec,
    /// Changes refused because another site sent them (Origin,
    /// Sec-Fetch-Site, a form without Origin).
    pub cross_site_refused: IntCounter,
    /// JPEG encodes for `snapshot.jpg` (at most one a second per camera).
    pub(crate) snapshot_encodes: IntCounterVec,
}

impl HttpMetrics {
    fn new(registry: &Registry) -> HttpMetrics {
        fn add<C: prometheus::core::Collector + Clone + 'static>(registry: &Registry, c: prometheus::Result<C>) -> C {
            let c = c.expect("static metric definition");
            registry.register(Box::new(c.clone())).expect("unique metric name");
            c
        }
        let timeouts = add(
            registry,
            IntCounterVec::new(
                Opts::new("alleywatch_http_timeouts_total", "HTTP connections closed by a timeout"),
                &["timeout"],
            ),
        );
        for t in ["header", "idle"] {
            timeouts.with_label_values(&[t]);
        }
        HttpMetrics {
            connections: add(registry, IntGauge::new("alleywatch_http_connections", "Open HTTP connections")),
            connections_refused: add(
                registry,
                IntCounter::new(
                    "alleywatch_http_connections_refused_total",
                    "HTTP connections refused (503) because http.max_connections were open",
                ),
            ),
            timeouts,
            cross_site_refused: add(
                registry,
                IntCounter::new(
                    "alleywatch_http_cross_site_refused_total",
                    "Changes refused because they came from another web page",
                ),
            ),
            snapshot_encodes: add(
                registry,
                IntCounterVec::new(
                    Opts::new("alleywatch_http_snapshot_encodes_total", "JPEG encodes for snapshot.jpg"),
                    &["camera"],
                ),
            ),
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
