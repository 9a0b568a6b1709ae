//! Wires the stages together: source → infer → analytics → alert, and keeps
//! them in step with the configuration.
//!
//! Per camera there are two threads:
//! - a **supervisor** ([`crate::source::supervisor`]) that keeps the
//!   GStreamer pipeline running and fills the camera's [`FrameSlot`];
//! - an **analysis** thread ([`LiveAnalysis`]) that takes the latest frame
//!   and hands it to the camera's [`CameraAnalyzer`] ([`camera`]): models,
//!   trackers, rules, events with snapshots.
//!
//! Both hand plain messages to the [`Outbox`] (events are spooled on disk
//! there), which the MQTT [`Publisher`] task drains. `replay`
//! ([`crate::replay`]) drives the same [`CameraAnalyzer`] from a file.
//!
//! Reload ([`reload`]): on SIGHUP, a change of the config file, or a `set`
//! command, the new config is validated and compared with the running one.
//! Rule parameters go to each analysis thread as a plain message (no stream
//! restarts); an added camera starts, a removed one stops, and a camera
//! whose stream settings changed restarts alone.
//!
//! Shutdown runs in data-path order: sources stop, analysis drains, then
//! the publisher sends what it can and leaves the rest in the spool.

pub(crate) mod reload;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{mpsc as std_mpsc, Arc};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::camera::{self, CameraAnalyzer, FrameInput, Models};

use crate::alert::{topics_of, Ledger, Outbox, Publisher, Spool};
use crate::config::{Camera, Config};
use crate::control::{Change, Request};
use crate::http::{Frames, HttpState, LatestFrame};
use crate::metrics::Metrics;
use crate::service::Heartbeat;
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
    #[error(transparent)]
    Spool(#[from] crate::alert::SpoolError),
    #[error(transparent)]
    Http(#[from] crate::http::HttpError),
    #[error("cannot start thread: {0}")]
    Thread(#[from] std::io::Error),
}

/// Where the running config came from, for reloads. `None` (the demo): no
/// reloads, no overlay.
pub struct ConfigSource {
    pub file: PathBuf,
    /// Also reload when the file changes on disk (besides SIGHUP).
    pub watch: bool,
}

/// A running camera: its threads and how to reach them.
struct CameraHandle {
    camera: Camera,
    stop: Shutdown,
    slot: Arc<FrameSlot>,
    threads: Vec<std::thread::JoinHandle<()>>,
    control: std_mpsc::Sender<Control>,
    /// The analysis thread's sign of life, for the systemd watchdog.
    beat: Heartbeat,
    /// The stream supervisor's, likewise.
    source_beat: Heartbeat,
}

impl CameraHandle {
    /// This camera's threads that stopped beating, by thread name.
    fn stale(&self) -> Vec<String> {
        [(&self.beat, "analysis"), (&self.source_beat, "camera")]
            .into_iter()
            .filter(|(beat, _)| beat.age() > crate::service::STALE)
            .map(|(_, thread)| format!("{thread}-{}", self.camera.id))
            .collect()
    }

    fn stop(self) -> Vec<std::thread::JoinHandle<()>> {
        self.stop.trigger();
        self.slot.close();
        self.threads
    }
}

/// What the manager tells a camera's analysis thread, between frames.
enum Control {
    /// New rule parameters (a reload or a `set`).
    Config(Arc<Config>),
    /// "The lane is clear now" (`None`: every lane with the obstruction
    /// cue); answered once the reference is in use.
    Reference { lane: Option<String>, by: String, reply: tokio::sync::oneshot::Sender<Result<(), String>> },
}

/// What every camera needs from the agent.
struct Shared {
    models: Models,
    outbox: Outbox,
    metrics: Arc<Metrics>,
    frames: Frames,
}

/// Runs the agent until `shutdown` fires.
pub async fn run(
    config: Config,
    source: Option<ConfigSource>,
    shutdown: Shutdown,
    metrics: Arc<Metrics>,
) -> Result<(), AgentError> {
    crate::source::init()?;
    let spool = Spool::open(&config.spool.path, config.spool.max_bytes())?;
    // Bind before the slow model load, so a port clash fails fast.
    let listener = crate::http::bind(config.http.bind).await?;
    let tokens = crate::http::auth::Tokens::from_config(&config.http).map_err(crate::http::HttpError::Token)?;
    for warning in config.start_warnings() {
        tracing::warn!("{warning}");
    }
    let publisher = Publisher::new(&config)?;
    let cfg = config.clone();
    let models = tokio::task::spawn_blocking(move || Models::load(&cfg))
        .await
        .map_err(|e| crate::infer::InferError::Run(e.to_string()))??;
    let d = models.detector.info();
    tracing::info!(model = %d.name, version = %d.version, "detector loaded");
    if let Some(p) = &models.pose {
        tracing::info!(model = %p.info().name, version = %p.info().version, "pose model loaded");
    }
    metrics.models_loaded.set(1);
    let depth = spool.depth()?;
    if depth.messages > 0 {
        tracing::info!(
            messages = depth.messages,
            "the spool holds unsent messages from an earlier run; sending them first"
        );
    }

    let outbox = Outbox::new(spool, Ledger::new(&config.alerts, &config.site), topics_of(&config), metrics.clone());
    outbox.set_snapshot_max_bytes(config.alerts.snapshot_max_kb as usize * 1024);
    let frames: Frames = Default::default();
    let shared = Shared { models, outbox: outbox.clone(), metrics: metrics.clone(), frames: frames.clone() };
    let closing = Shutdown::new();
    // Bounded: a flood of changes is refused as busy, never queued without end.
    let (requests_tx, mut requests) = mpsc::channel::<Request>(crate::control::REQUEST_QUEUE);
    let config = Arc::new(config);
    let (config_tx, config_rx) = tokio::sync::watch::channel(config.clone());
    let http = tokio::spawn(crate::http::serve(
        listener,
        HttpState {
            metrics: metrics.clone(),
            outbox: outbox.clone(),
            frames,
            quality: config.alerts.snapshot_quality,
            config: config_rx,
            requests: requests_tx.clone(),
            tokens,
        },
        shutdown.clone(),
    ));
    tracing::info!(bind = %config.http.bind, "HTTP listening (/, /metrics, /healthz, /readyz, /api)");
    let publisher = tokio::spawn(publisher.run(outbox.clone(), requests_tx, closing.clone()));

    let mut cameras = HashMap::new();
    for camera in &config.cameras {
        cameras.insert(camera.id.clone(), spawn_camera(&config, camera, &shared)?);
    }

    let mut triggers = reload::Triggers::new(source.as_ref());
    let mut running = config;
    let mut service = crate::service::Service::ready();
    loop {
        // The running config, for the HTTP side (page, /api/config).
        if !Arc::ptr_eq(&running, &config_tx.borrow()) {
            config_tx.send_replace(running.clone());
        }
        tokio::select! {
            _ = shutdown.wait() => break,
            // The watchdog is fed from this loop, so a wedged manager (not
            // just a live process) makes systemd restart the agent.
            _ = service.watchdog_due() => {
                let stale: Vec<String> = cameras.values().flat_map(CameraHandle::stale).collect();
                service.ping(&stale);
            }
            why = triggers.next() => {
                let Some(file) = source.as_ref().map(|s| s.file.clone()) else { continue };
                let loaded = tokio::task::spawn_blocking(move || crate::config::overlay::load(&file)).await;
                match loaded {
                    Ok(Ok(new)) => {
                        running = apply(running, new, &mut cameras, &shared).await;
                        metrics.reloads.with_label_values(&["ok"]).inc();
                        tracing::info!(trigger = why, "configuration reloaded");
                    }
                    Ok(Err(e)) => {
                        metrics.reloads.with_label_values(&["rejected"]).inc();
                        tracing::error!(trigger = why, error = %e, "new configuration rejected; the running one stays in force");
                    }
                    Err(e) => tracing::error!(error = %e, "reload task failed"),
                }
            }
            Some(req) = requests.recv() => {
                let Request { change, by, reply } = req;
                let changes = match change {
                    Change::Set(changes) => changes,
                    Change::Reference { camera, lane } => {
                        // The camera's analysis thread holds the frame and
                        // the references; it answers.
                        match cameras.get(&camera) {
                            Some(h) => {
                                if let Err(e) = h.control.send(Control::Reference { lane, by, reply }) {
                                    if let Control::Reference { reply, .. } = e.0 {
                                        let _ = reply.send(Err(format!("camera {camera:?} is stopping")));
                                    }
                                }
                            }
                            None => {
                                let _ = reply.send(Err(format!("reference: no camera {camera:?} on this agent")));
                            }
                        }
                        continue;
                    }
                };
                let Some(file) = source.as_ref().map(|s| s.file.clone()) else {
                    let _ = reply.send(Err("set: this agent runs without a config file".into()));
                    continue;
                };
                let keys: Vec<String> = changes.keys().cloned().collect();
                let who = by.clone();
                let result = tokio::task::spawn_blocking(move || crate::config::overlay::set(&file, &changes, &who)).await;
                match result {
                    Ok(Ok(new)) => {
                        tracing::info!(by = %by, keys = ?keys, "set command applied");
                        running = apply(running, new, &mut cameras, &shared).await;
                        metrics.reloads.with_label_values(&["ok"]).inc();
                        // In force (and visible on /api/config) before the answer.
                        config_tx.send_replace(running.clone());
                        let _ = reply.send(Ok(()));
                    }
                    Ok(Err(e)) => {
                        metrics.reloads.with_label_values(&["rejected"]).inc();
                        let _ = reply.send(Err(e.to_string()));
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e.to_string()));
                    }
                }
            }
        }
    }

    service.stopping();
    // Answer what is queued (a lane saved on the page, a centre's `set`):
    // the HTTP server waits for its handlers before it stops.
    requests.close();
    while let Ok(req) = requests.try_recv() {
        let _ = req.reply.send(Err("the agent is stopping".into()));
    }
    tracing::info!("stopping cameras");
    let threads: Vec<_> = cameras.into_values().flat_map(CameraHandle::stop).collect();
    tokio::task::spawn_blocking(move || {
        for t in threads {
            let _ = t.join();
        }
    })
    .await
    .ok();
    closing.trigger();
    let _ = publisher.await;
    let _ = http.await;
    tracing::info!("agent stopped");
    Ok(())
}

/// Brings the running cameras in line with `new`; returns it as the
/// running config. Model and broker settings need a restart (logged).
async fn apply(
    old: Arc<Config>,
    new: Config,
    cameras: &mut HashMap<String, CameraHandle>,
    shared: &Shared,
) -> Arc<Config> {
    for what in reload::needs_restart(&old, &new) {
        tracing::warn!(setting = what, "this setting changed but takes effect only after a restart of the agent");
    }
    let new = Arc::new(new);
    shared.outbox.ledger().reconfigure(&new.alerts, &new.site);
    shared.outbox.set_snapshot_max_bytes(new.alerts.snapshot_max_kb as usize * 1024);
    let plan = reload::plan(&old, &new);
    let mut stopped = Vec::new();
    for id in plan.stop.iter().chain(plan.restart.iter()) {
        if let Some(h) = cameras.remove(id) {
            tracing::info!(camera = %id, "stopping camera");
            stopped.extend(h.stop());
        }
        if plan.stop.contains(id) {
            shared.outbox.camera_removed(id);
            shared.metrics.forget_camera(id);
            shared.frames.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
        }
    }
    // Threads stop within a poll interval; wait so a restarted camera's old
    // stream is gone before the new one opens.
    tokio::task::spawn_blocking(move || {
        for t in stopped {
            let _ = t.join();
        }
    })
    .await
    .ok();
    for id in plan.start.iter().chain(plan.restart.iter()) {
        let Some(camera) = new.cameras.iter().find(|c| &c.id == id) else { continue };
        match spawn_camera(&new, camera, shared) {
            Ok(h) => {
                tracing::info!(camera = %id, "camera started");
                cameras.insert(id.clone(), h);
            }
            Err(e) => tracing::error!(camera = %id, error = %e, "cannot start camera"),
        }
    }
    for h in cameras.values() {
        if plan.start.contains(&h.camera.id) || plan.restart.contains(&h.camera.id) {
            continue;
        }
        // Rule parameters: the analysis thread applies them between frames.
        let _ = h.control.send(Control::Config(new.clone()));
    }
    new
}

fn spawn_camera(config: &Arc<Config>, camera: &Camera, shared: &Shared) -> std::io::Result<CameraHandle> {
    let stop = Shutdown::new();
    shared.metrics.camera_starts.with_label_values(&[camera.id.as_str()]).inc();
    let slot = Arc::new(FrameSlot::with_timer(shared.metrics.stage("decode_to_slot")));
    let latest = Arc::new(LatestFrame::new(&camera.name));
    shared.frames.lock().unwrap_or_else(|p| p.into_inner()).insert(camera.id.clone(), latest.clone());
    let source_beat = Heartbeat::default();
    let supervisor = spawn_supervisor(
        config,
        camera,
        slot.clone(),
        shared.outbox.clone(),
        stop.clone(),
        &shared.metrics,
        source_beat.clone(),
    )?;
    let (control, rx) = std_mpsc::channel();
    let beat = Heartbeat::default();
    let analysis = LiveAnalysis {
        beat: beat.clone(),
        analyzer: {
            let mut a = CameraAnalyzer::new(config, camera, shared.models.clone(), shared.metrics.clone());
            a.keep_references(config.spool.path.with_file_name("references"));
            a
        },
        slot: slot.clone(),
        outbox: shared.outbox.clone(),
        metrics: shared.metrics.clone(),
        epoch: Instant::now(),
        control: rx,
        latest,
    };
    let analysis = std::thread::Builder::new().name(format!("analysis-{}", camera.id)).spawn(move || analysis.run())?;
    Ok(CameraHandle {
        camera: camera.clone(),
        stop,
        slot,
        threads: vec![supervisor, analysis],
        control,
        beat,
        source_beat,
    })
}

fn spawn_supervisor(
    config: &Config,
    camera: &Camera,
    slot: Arc<FrameSlot>,
    outbox: Outbox,
    stop: Shutdown,
    metrics: &Metrics,
    beat: Heartbeat,
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
        shutdown: stop,
        on_status: Box::new(move |status| {
            up.set((status.state == CameraState::Streaming) as i64);
            if status.state != CameraState::Streaming {
                reconnects.inc();
            }
            outbox.camera_status(status);
        }),
        beat,
        abandoned: metrics.pipelines_abandoned.clone(),
    };
    std::thread::Builder::new().name(format!("camera-{}", camera.id)).spawn(move || sup.run())
}

/// How long "the lane is clear now" waits for the next lane frame (the
/// lanes run at `detector.fps`, 2 a second by default).
const REFERENCE_WAIT_S: f64 = 5.0;

/// "The lane is clear now", waiting for a frame to take.
struct PendingReference {
    lane: Option<String>,
    by: String,
    reply: tokio::sync::oneshot::Sender<Result<(), String>>,
    /// When it was asked (analysis clock): the frame must be from then
    /// on, and after [`REFERENCE_WAIT_S`] "no frame" is the answer.
    asked: f64,
}

/// How often a camera's latest frame is copied for `/api/.../snapshot.jpg`.
const VIEW_EVERY: Duration = Duration::from_secs(1);

/// The live loop of one camera: take the latest frame from the slot,
/// analyse it, hand what it produced to the outbox.
struct LiveAnalysis {
    analyzer: CameraAnalyzer,
    slot: Arc<FrameSlot>,
    outbox: Outbox,
    metrics: Arc<Metrics>,
    epoch: Instant,
    /// New configs from a reload and operators' requests, applied
    /// between frames.
    control: std_mpsc::Receiver<Control>,
    latest: Arc<LatestFrame>,
    beat: Heartbeat,
}

impl LiveAnalysis {
    /// Answers the references that can be set now (a recent lane frame) or
    /// that waited long enough; the rest wait for the next frame.
    fn answer_references(&mut self, pending: &mut Vec<PendingReference>) {
        if pending.is_empty() {
            return;
        }
        let now = self.epoch.elapsed().as_secs_f64();
        for p in std::mem::take(pending) {
            match self.analyzer.set_reference(p.lane.as_deref(), p.asked) {
                Err(camera::ReferenceError::NoFrame { .. }) if now < p.asked + REFERENCE_WAIT_S => pending.push(p),
                Ok(lanes) => {
                    tracing::info!(by = %p.by, lanes = ?lanes, "clear-lane reference set by an operator");
                    let _ = p.reply.send(Ok(()));
                }
                Err(e) => {
                    tracing::warn!(by = %p.by, error = %e, "clear-lane reference not set");
                    let _ = p.reply.send(Err(e.to_string()));
                }
            }
        }
    }

    fn run(mut self) {
        let id = self.analyzer.camera().id.clone();
        let span = tracing::info_span!("analysis", camera = %id);
        let _enter = span.enter();
        let m = &self.metrics;
        let (analysed, decoded) =
            (m.frames_analysed.with_label_values(&[&id]), m.frames_decoded.with_label_values(&[&id]));
        let dropped = m.frames_dropped.with_label_values(&[id.as_str(), "analysis_busy"]);
        let age = m.last_frame_age.with_label_values(&[id.as_str()]);
        // From the frame's arrival at the appsink to the rules' verdict on
        // it: what a camera waits in the slot plus what analysis takes.
        let decision = m.stage("capture_to_decision");
        let started = Instant::now();
        let (pre_errors, infer_errors) = (
            m.analysis_errors.with_label_values(&[id.as_str(), "preprocess"]),
            m.analysis_errors.with_label_values(&[id.as_str(), "inference"]),
        );
        let mut seen = Default::default();
        let mut out = Vec::with_capacity(4);
        let mut viewed: Option<Instant> = None;
        let mut pending: Vec<PendingReference> = Vec::new();
        loop {
            self.beat.beat();
            while let Ok(control) = self.control.try_recv() {
                match control {
                    Control::Config(config) => {
                        if let Some(camera) = config.cameras.iter().find(|c| c.id == id) {
                            self.analyzer.reconfigure(&config, camera, &mut out);
                            tracing::info!("rule parameters updated");
                        }
                    }
                    Control::Reference { lane, by, reply } => {
                        let asked = self.epoch.elapsed().as_secs_f64();
                        pending.push(PendingReference { lane, by, reply, asked });
                    }
                }
            }
            for msg in out.drain(..) {
                self.outbox.send(msg);
            }
            self.answer_references(&mut pending);
            // A camera that never delivered a frame ages from its start, so
            // `age > N` alerts catch it as well as one that went quiet.
            let last = self.slot.last_frame().map(|(t, _)| t).unwrap_or(started);
            age.set(last.elapsed().as_secs_f64());
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
            if viewed.is_none_or(|v| v.elapsed() >= VIEW_EVERY) {
                self.latest.store(&frame.data, frame.width, frame.height, frame.wall);
                viewed = Some(Instant::now());
            }

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
                self.outbox.send(msg);
            }
            analysed.inc();
            decision.observe(frame.captured.elapsed().as_secs_f64());
            self.slot.recycle(frame.data);
            self.answer_references(&mut pending);
        }
        // Whatever is still asked (waiting, or not yet read) is answered.
        let queued = self.control.try_iter().filter_map(|c| match c {
            Control::Reference { reply, .. } => Some(reply),
            Control::Config(_) => None,
        });
        for reply in pending.into_iter().map(|p| p.reply).chain(queued) {
            let _ = reply.send(Err(format!("camera {id:?} is stopping")));
        }
        // Open events end with the camera (removed, restarted or stopping),
        // so a centre never waits for an `end` that cannot come. (After a
        // crash they stay open; the next start raises fresh ones.)
        self.analyzer.close_all(&mut out);
        for msg in out.drain(..) {
            self.outbox.send(msg);
        }
    }
}
