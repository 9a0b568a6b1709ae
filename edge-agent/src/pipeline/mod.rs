//! Wires the stages together: source → infer → analytics → alert.
//!
//! Per camera there are two threads:
//! - a **supervisor** ([`crate::source::supervisor`]) that keeps the
//!   GStreamer pipeline running and fills the camera's [`FrameSlot`];
//! - an **analysis** thread ([`LiveAnalysis`]) that takes the latest frame
//!   and hands it to the camera's [`CameraAnalyzer`] ([`camera`]): models,
//!   trackers, rules, events with snapshots.
//!
//! `replay` ([`crate::replay`]) drives the same [`CameraAnalyzer`] from a
//! file instead of a slot.
//!
//! Both send plain [`Outbound`] messages down one channel to the MQTT
//! [`Publisher`], which runs on the async runtime. Nothing here is shared
//! and mutable except the slot and the models' session locks.
//!
//! Shutdown runs in data-path order: sources stop, analysis drains, then
//! the publisher sends what is left and marks the agent offline.

pub mod camera;

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

pub use camera::{CameraAnalyzer, FrameInput, Models};

use crate::alert::{Outbound, Publisher};
use crate::config::{Camera, Config};
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;
use crate::source::pipeline::SourceOptions;
use crate::source::supervisor::Supervisor;
use crate::source::{CameraState, FrameSlot};

/// Errors that stop the agent before it runs.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Source(#[from] crate::source::SourceError),
    #[error(transparent)]
    Infer(#[from] crate::infer::InferError),
    #[error(transparent)]
    Publish(#[from] crate::alert::PublisherError),
    #[error("cannot start thread: {0}")]
    Thread(#[from] std::io::Error),
}

/// Channel depth between analysis and the publisher. Deep enough to ride
/// out a slow broker for a while; when full, analysis waits (dropping
/// frames in the slot), so events themselves are never dropped.
const OUTBOUND_DEPTH: usize = 1024;

/// Runs the agent until `shutdown` fires.
pub async fn run(config: Config, shutdown: Shutdown, metrics: Arc<Metrics>) -> Result<(), AgentError> {
    crate::source::init()?;
    let cfg = config.clone();
    let models = tokio::task::spawn_blocking(move || Models::load(&cfg))
        .await
        .map_err(|e| crate::infer::InferError::Run(e.to_string()))??;
    let d = models.detector.info();
    tracing::info!(model = %d.name, version = %d.version, "detector loaded");
    if let Some(p) = &models.pose {
        tracing::info!(model = %p.info().name, version = %p.info().version, "pose model loaded");
    }

    let publisher = Publisher::start(&config)?;
    let (tx, rx) = mpsc::channel(OUTBOUND_DEPTH);
    let mut threads = Vec::new();
    let mut slots = Vec::new();
    for camera in &config.cameras {
        let slot = Arc::new(FrameSlot::new());
        slots.push(slot.clone());
        threads.push(spawn_supervisor(&config, camera, slot.clone(), tx.clone(), shutdown.clone(), metrics.clone())?);
        let analysis = LiveAnalysis {
            analyzer: CameraAnalyzer::new(&config, camera, models.clone(), metrics.clone()),
            slot,
            tx: tx.clone(),
            metrics: metrics.clone(),
            epoch: Instant::now(),
        };
        threads
            .push(std::thread::Builder::new().name(format!("analysis-{}", camera.id)).spawn(move || analysis.run())?);
    }
    // The publisher ends once every sender is gone: ours goes now, the
    // threads' go as they stop.
    drop(tx);

    let closer = {
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            shutdown.wait().await;
            tracing::info!("stopping cameras");
            for slot in &slots {
                slot.close();
            }
        })
    };
    let connected = metrics.mqtt_connected.clone();
    let watch = tokio::spawn({
        let flag = publisher.connected_flag();
        let shutdown = shutdown.clone();
        async move {
            while !shutdown.is_triggered() {
                connected.set(flag.load(std::sync::atomic::Ordering::SeqCst) as i64);
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = shutdown.wait() => {}
                }
            }
        }
    });
    let result = publisher.run(rx, config.clone()).await;
    let _ = closer.await;
    let _ = watch.await;
    tokio::task::spawn_blocking(move || {
        for t in threads {
            let _ = t.join();
        }
    })
    .await
    .ok();
    tracing::info!("agent stopped");
    result.map_err(Into::into)
}

fn spawn_supervisor(
    config: &Config,
    camera: &Camera,
    slot: Arc<FrameSlot>,
    tx: mpsc::Sender<Outbound>,
    shutdown: Shutdown,
    metrics: Arc<Metrics>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let up = metrics.camera_up.with_label_values(&[camera.id.as_str()]);
    let reconnects = metrics.reconnects.with_label_values(&[camera.id.as_str()]);
    let s = &config.source;
    let sup = Supervisor {
        camera: camera.clone(),
        options: SourceOptions { latency_ms: s.latency_ms },
        backoff_initial: Duration::from_secs_f64(s.backoff_initial_s),
        backoff_max: Duration::from_secs_f64(s.backoff_max_s),
        stall_after: Duration::from_secs_f64(s.stall_timeout_s),
        slot,
        shutdown,
        on_status: Box::new(move |status| {
            up.set((status.state == CameraState::Streaming) as i64);
            if status.state != CameraState::Streaming {
                reconnects.inc();
            }
            // Statuses are retained and superseded by the next one; if the
            // channel is closed we are shutting down anyway.
            let _ = tx.blocking_send(Outbound::Camera(status));
        }),
    };
    std::thread::Builder::new().name(format!("camera-{}", camera.id)).spawn(move || sup.run())
}

/// The live loop of one camera: take the latest frame from the slot,
/// analyse it, send what it produced.
struct LiveAnalysis {
    analyzer: CameraAnalyzer,
    slot: Arc<FrameSlot>,
    tx: mpsc::Sender<Outbound>,
    metrics: Arc<Metrics>,
    epoch: Instant,
}

impl LiveAnalysis {
    fn run(mut self) {
        let id = self.analyzer.camera().id.clone();
        let span = tracing::info_span!("analysis", camera = %id);
        let _enter = span.enter();
        let m = &self.metrics;
        let (analysed, decoded) =
            (m.frames_analysed.with_label_values(&[&id]), m.frames_decoded.with_label_values(&[&id]));
        let dropped = m.frames_dropped.with_label_values(&[id.as_str(), "analysis_busy"]);
        let (pre_errors, infer_errors) = (
            m.analysis_errors.with_label_values(&[id.as_str(), "preprocess"]),
            m.analysis_errors.with_label_values(&[id.as_str(), "inference"]),
        );
        let mut seen = Default::default();
        let mut out = Vec::with_capacity(4);
        loop {
            let Some(frame) = self.slot.take(Duration::from_millis(500)) else {
                if self.slot.is_closed() {
                    break;
                }
                continue;
            };
            // Mirror the slot's counters into metrics.
            let stats = self.slot.stats();
            let crate::source::slot::SlotStats { decoded: d0, dropped: x0 } = seen;
            decoded.inc_by(stats.decoded - d0);
            dropped.inc_by(stats.dropped - x0);
            seen = stats;

            let input = FrameInput {
                rgb: &frame.data,
                width: frame.width,
                height: frame.height,
                t: frame.captured.duration_since(self.epoch).as_secs_f64(),
                wall: frame.wall,
            };
            if let Err(e) = self.analyzer.analyse(&input, &mut out) {
                match e {
                    crate::infer::InferError::Preprocess(_) => pre_errors.inc(),
                    _ => infer_errors.inc(),
                }
                tracing::warn!(error = %e, "analysis failed");
            }
            for msg in out.drain(..) {
                if self.tx.blocking_send(msg).is_err() {
                    tracing::error!("publisher gone; event not sent");
                }
            }
            analysed.inc();
            self.slot.recycle(frame.data);
        }
    }
}
