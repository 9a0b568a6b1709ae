//! Wires the stages together: source → infer → analytics → alert.
//!
//! Per camera there are two threads:
//! - a **supervisor** ([`crate::source::supervisor`]) that keeps the
//!   GStreamer pipeline running and fills the camera's [`FrameSlot`];
//! - an **analysis** thread ([`Analysis`]) that takes the latest frame,
//!   letterboxes it, runs the shared detector, feeds the lane rules and
//!   turns their transitions into events with snapshots.
//!
//! Both send plain [`Outbound`] messages down one channel to the MQTT
//! [`Publisher`], which runs on the async runtime. Nothing here is shared
//! and mutable except the slot and the detector's session lock.
//!
//! Shutdown runs in data-path order: sources stop, analysis drains, then
//! the publisher sends what is left and marks the agent offline.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde_json::json;
use tokio::sync::mpsc;

use crate::alert::event::{self, CameraRef, Evidence, EvidenceObject, Scores, SnapshotRef};
use crate::alert::{snapshot, Event, EventKind, Outbound, Publisher, Severity, Topics};
use crate::analytics::{LaneRule, LaneTransition, Phase};
use crate::config::{Camera, Config};
use crate::infer::{Detection, Detector};
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
    let detector = tokio::task::spawn_blocking(move || crate::infer::detector::load_from_config(&cfg))
        .await
        .map_err(|e| crate::infer::InferError::Run(e.to_string()))??;
    let detector = Arc::new(detector);
    tracing::info!(model = %detector.info().name, version = %detector.info().version, "detector loaded");

    let publisher = Publisher::start(&config)?;
    let (tx, rx) = mpsc::channel(OUTBOUND_DEPTH);
    let mut threads = Vec::new();
    let mut slots = Vec::new();
    for camera in &config.cameras {
        let slot = Arc::new(FrameSlot::new());
        slots.push(slot.clone());
        threads.push(spawn_supervisor(&config, camera, slot.clone(), tx.clone(), shutdown.clone(), metrics.clone())?);
        let analysis = Analysis::new(&config, camera, detector.clone(), slot, tx.clone(), metrics.clone());
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

/// An event between its `start` and `end`.
struct OpenEvent {
    id: String,
    started_at: SystemTime,
}

/// One camera's analysis loop and the state it carries between frames.
struct Analysis {
    camera: Camera,
    agent: String,
    site: String,
    labels: Vec<String>,
    topics: Topics,
    quality: u8,
    score_threshold: f32,
    detector: Arc<Detector>,
    slot: Arc<FrameSlot>,
    rules: Vec<LaneRule>,
    open: Vec<Option<OpenEvent>>,
    tx: mpsc::Sender<Outbound>,
    metrics: Arc<Metrics>,
    epoch: Instant,
}

impl Analysis {
    fn new(
        config: &Config,
        camera: &Camera,
        detector: Arc<Detector>,
        slot: Arc<FrameSlot>,
        tx: mpsc::Sender<Outbound>,
        metrics: Arc<Metrics>,
    ) -> Analysis {
        let labels = config.labels();
        let rules: Vec<LaneRule> =
            camera.lanes.iter().map(|l| LaneRule::new(l.clone(), &labels, config.alerts.update_interval_s)).collect();
        Analysis {
            camera: camera.clone(),
            agent: config.agent_id.clone(),
            site: config.site.path(),
            labels,
            topics: Topics::new(config),
            quality: config.alerts.snapshot_quality,
            score_threshold: config.detector.score_threshold,
            detector,
            slot,
            open: rules.iter().map(|_| None).collect(),
            rules,
            tx,
            metrics,
            epoch: Instant::now(),
        }
    }

    fn run(mut self) {
        let id = self.camera.id.clone();
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
        let (t_pre, t_infer, t_rules) = (m.stage("preprocess"), m.stage("inference"), m.stage("rules"));
        let mut pre = self.detector.preprocessor();
        let mut detections: Vec<Detection> = Vec::with_capacity(64);
        let mut seen = Default::default();
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

            let t0 = Instant::now();
            let lb = match pre.run(&frame.data, frame.width, frame.height) {
                Ok(lb) => lb,
                Err(e) => {
                    pre_errors.inc();
                    tracing::warn!(error = %e, "preprocess failed");
                    self.slot.recycle(frame.data);
                    continue;
                }
            };
            let t1 = Instant::now();
            t_pre.observe((t1 - t0).as_secs_f64());
            if let Err(e) = self.detector.detect(&pre, &lb, &mut detections) {
                infer_errors.inc();
                tracing::warn!(error = %e, "inference failed");
                self.slot.recycle(frame.data);
                continue;
            }
            let t2 = Instant::now();
            t_infer.observe((t2 - t1).as_secs_f64());
            let now = frame.captured.duration_since(self.epoch).as_secs_f64();
            for i in 0..self.rules.len() {
                if let Some(tr) = self.rules[i].observe(now, &detections) {
                    let msg = self.event(i, &tr, now, &frame);
                    if self.tx.blocking_send(msg).is_err() {
                        tracing::error!("publisher gone; event not sent");
                    }
                }
            }
            t_rules.observe(t2.elapsed().as_secs_f64());
            analysed.inc();
            self.slot.recycle(frame.data);
        }
    }

    /// Builds the event message (with its snapshot) for a lane transition.
    fn event(&mut self, lane: usize, tr: &LaneTransition, now: f64, frame: &crate::source::Frame) -> Outbound {
        let rule = &self.rules[lane];
        let wall = frame.wall;
        let ago = |t: f64| Duration::from_secs_f64((now - t).max(0.0));
        let open = match tr.phase {
            Phase::Start => self.open[lane]
                .insert(OpenEvent { id: event::new_id(), started_at: wall.checked_sub(ago(tr.since)).unwrap_or(wall) }),
            // An update or end always follows a start on this rule; the
            // fallback only guards against a logic error, never panics.
            _ => self.open[lane].get_or_insert_with(|| OpenEvent { id: event::new_id(), started_at: wall }),
        };
        let (id, started_at) = (open.id.clone(), open.started_at);
        let ended_at = tr.cleared_at.map(|c| wall.checked_sub(ago(c)).unwrap_or(wall));
        if tr.phase == Phase::End {
            self.open[lane] = None;
        }
        let duration_s = ended_at.unwrap_or(wall).duration_since(started_at).map(|d| d.as_secs_f64()).unwrap_or(0.0);
        let kind = EventKind::LaneBlocked;
        let boxes: Vec<_> = tr.objects.iter().map(|d| d.bbox).collect();
        let jpeg =
            snapshot::render(&frame.data, frame.width, frame.height, &rule.polygon().points, &boxes, self.quality);
        let snapshot_ref = jpeg.as_ref().map(|j| SnapshotRef {
            topic: self.topics.snapshot(kind.as_str(), &id),
            content_type: "image/jpeg",
            width: frame.width,
            height: frame.height,
            bytes: j.len(),
        });
        let lane_cfg = rule.lane();
        let event = Event {
            schema: event::SCHEMA,
            id,
            seq: 0,
            kind,
            phase: tr.phase,
            severity: Severity::Warning,
            agent: self.agent.clone(),
            site: self.site.clone(),
            camera: CameraRef { id: self.camera.id.clone(), name: self.camera.name.clone() },
            zone: Some(lane_cfg.name.clone()),
            started_at,
            updated_at: wall,
            ended_at,
            duration_s,
            score: Scores { peak: tr.peak, current: tr.score },
            evidence: Evidence {
                objects: tr
                    .objects
                    .iter()
                    .map(|d| EvidenceObject {
                        label: self.labels.get(d.class_id).cloned().unwrap_or_else(|| d.class_id.to_string()),
                        score: d.score,
                        bbox: [d.bbox.x1, d.bbox.y1, d.bbox.x2, d.bbox.y2],
                        track_id: None,
                    })
                    .collect(),
                track_ids: Vec::new(),
                occupancy: Some(tr.occupancy),
                keypoints: None,
            },
            rule: json!({
                "name": "lane_blocked",
                "lane": lane_cfg.name,
                "polygon": lane_cfg.polygon,
                "classes": lane_cfg.classes,
                "dwell_s": lane_cfg.dwell_s,
                "clear_s": lane_cfg.clear_s,
                "score_threshold": self.score_threshold,
            }),
            model: self.detector.info().clone(),
            snapshot: snapshot_ref,
        };
        self.metrics.events.with_label_values(&[kind.as_str(), phase_str(tr.phase)]).inc();
        Outbound::Event { event: Box::new(event), snapshot: jpeg }
    }
}

fn phase_str(p: Phase) -> &'static str {
    match p {
        Phase::Start => "start",
        Phase::Update => "update",
        Phase::End => "end",
    }
}
