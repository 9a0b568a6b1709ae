//! Keeps one camera streaming, forever.
//!
//! Like moonfire-nvr's `Streamer`: run the pipeline once; on error, end of
//! stream or a stall, tear it down, report, back off (doubling, capped) and
//! try again until shutdown. Each camera has its own supervisor thread, so a
//! camera that hangs in a blocking GStreamer call never delays the others.
//!
//! Status changes go out through a callback as plain [`CameraStatus`]
//! values; the wiring in [`crate::pipeline`] publishes them (retained) and
//! feeds metrics.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use gstreamer as gst;
use gstreamer::prelude::*;

use super::pipeline::{self, SourceOptions};
use super::{FrameSlot, SourceError};
use crate::config::Camera;
use crate::shutdown::Shutdown;

/// What the retained camera status topic says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CameraState {
    /// Frames are arriving.
    Streaming,
    /// The stream failed or ended; retrying with backoff.
    Reconnecting,
    /// Several attempts in a row produced no frame. Still retrying, at the
    /// capped delay, but an operator should look.
    Failed,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct CameraStatus {
    pub camera: String,
    pub name: String,
    pub state: CameraState,
    /// Decoded frames per second (after the analysis rate limit).
    pub fps: f64,
    #[serde(with = "crate::alert::rfc3339_opt")]
    pub last_frame_at: Option<SystemTime>,
    /// Credentials already removed.
    pub last_error: Option<String>,
    pub reconnects: u64,
    #[serde(with = "crate::alert::rfc3339")]
    pub at: SystemTime,
}

/// Consecutive attempts without a frame before the state reads `failed`.
const FAILED_AFTER: u32 = 3;
/// How often a streaming camera refreshes its retained status (fps).
const REFRESH: Duration = Duration::from_secs(30);

pub struct Supervisor {
    pub camera: Camera,
    pub options: SourceOptions,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// A streaming camera with no frame for this long is restarted.
    pub stall_after: Duration,
    pub slot: Arc<FrameSlot>,
    pub shutdown: Shutdown,
    pub on_status: Box<dyn Fn(CameraStatus) + Send>,
}

/// How long a pipeline may take to stop before it is abandoned.
const TEARDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// Stops a pipeline without letting it block the supervisor.
///
/// `rtspsrc` can hang in its state change when the server vanished
/// mid-stream (seen with GStreamer 1.22: the change to NULL waits on a lock
/// its own streaming task holds). The stop runs on a helper thread; if it
/// has not finished within [`TEARDOWN_TIMEOUT`] the pipeline is abandoned
/// (logged) and the camera reconnects with a fresh one, so one bad stream
/// never stalls its camera for good. The abandoned pipeline's threads and
/// buffers stay allocated: a camera that vanishes this way many times a day
/// leaks a little each time (see the README's known issues).
fn teardown(pipeline: &gst::Pipeline, camera: &str) {
    let (tx, rx) = std::sync::mpsc::channel();
    let p = pipeline.clone();
    let spawned = std::thread::Builder::new().name(format!("teardown-{camera}")).spawn(move || {
        let _ = p.set_state(gst::State::Null);
        let _ = tx.send(());
    });
    if spawned.is_err() {
        let _ = pipeline.set_state(gst::State::Null);
        return;
    }
    if rx.recv_timeout(TEARDOWN_TIMEOUT).is_err() {
        tracing::warn!(timeout_s = TEARDOWN_TIMEOUT.as_secs(), "pipeline did not stop in time; abandoning it");
    }
}

/// Outcome of one pipeline run.
struct RunEnd {
    error: Option<SourceError>,
    streamed: bool,
}

impl Supervisor {
    /// Runs until shutdown. Call on a dedicated thread.
    pub fn run(self) {
        let span = tracing::info_span!("camera", id = %self.camera.id);
        let _enter = span.enter();
        let mut delay = self.backoff_initial;
        let mut failures = 0u32;
        let mut reconnects = 0u64;
        let mut last_error: Option<String> = None;
        while !self.shutdown.is_triggered() {
            let end = match pipeline::build(&self.camera, self.options, self.slot.clone()) {
                Ok(p) => self.run_once(p, reconnects, &mut last_error),
                Err(e) => RunEnd { error: Some(e), streamed: false },
            };
            if self.shutdown.is_triggered() {
                break;
            }
            if end.streamed {
                delay = self.backoff_initial;
                failures = 0;
            }
            failures += 1;
            reconnects += 1;
            let mut err = end.error.as_ref().map(|e| e.to_string()).unwrap_or_else(|| "stopped".into());
            if let Some(SourceError::Stream { element, message }) = &end.error {
                // rtspsrc words every connection failure alike; find the step.
                if element == "rtspsrc" && message.contains("Failed to connect") && !self.shutdown.is_triggered() {
                    if let Some(why) = super::probe::diagnose(&self.camera.url) {
                        err = format!("{err}: {why}");
                    }
                }
            }
            tracing::warn!(error = %err, retry_in_s = delay.as_secs_f64(), "camera stream lost");
            last_error = Some(err);
            let state = if failures >= FAILED_AFTER { CameraState::Failed } else { CameraState::Reconnecting };
            self.report(state, 0.0, reconnects, &last_error);
            if self.shutdown.wait_timeout(delay) {
                break;
            }
            delay = (delay * 2).min(self.backoff_max);
        }
        tracing::info!("camera stopped");
    }

    fn report(&self, state: CameraState, fps: f64, reconnects: u64, last_error: &Option<String>) {
        (self.on_status)(CameraStatus {
            camera: self.camera.id.clone(),
            name: self.camera.name.clone(),
            state,
            fps,
            last_frame_at: self.slot.last_frame().map(|(_, w)| w),
            last_error: last_error.clone(),
            reconnects,
            at: SystemTime::now(),
        });
    }

    fn run_once(&self, p: pipeline::CameraPipeline, reconnects: u64, last_error: &mut Option<String>) -> RunEnd {
        let pipeline = p.pipeline;
        let started = Instant::now();
        let end = |error: Option<SourceError>, streamed: bool| {
            teardown(&pipeline, &self.camera.id);
            RunEnd { error, streamed }
        };
        let Some(bus) = pipeline.bus() else {
            return end(Some(SourceError::Build("pipeline has no bus".into())), false);
        };
        if pipeline.set_state(gst::State::Playing).is_err() {
            // The bus carries the reason; read it below.
            let err = bus
                .timed_pop_filtered(gst::ClockTime::from_mseconds(100), &[gst::MessageType::Error])
                .and_then(|m| match m.view() {
                    gst::MessageView::Error(e) => Some(pipeline::describe_error(e)),
                    _ => None,
                })
                .unwrap_or_else(|| SourceError::Build("cannot start the pipeline".into()));
            return end(Some(err), false);
        }
        let mut streamed = false;
        let mut counted = (Instant::now(), self.slot.stats().decoded);
        let mut last_report = Instant::now();
        loop {
            if self.shutdown.is_triggered() {
                return end(None, streamed);
            }
            if let Some(msg) = bus.timed_pop_filtered(
                gst::ClockTime::from_mseconds(100),
                &[gst::MessageType::Error, gst::MessageType::Eos],
            ) {
                match msg.view() {
                    gst::MessageView::Error(e) => return end(Some(pipeline::describe_error(e)), streamed),
                    gst::MessageView::Eos(_) => return end(Some(SourceError::Eos), streamed),
                    _ => {}
                }
            }
            let last = self.slot.last_frame().map(|(t, _)| t).filter(|&t| t >= started);
            match last {
                Some(_) if !streamed => {
                    streamed = true;
                    *last_error = None;
                    tracing::info!("camera streaming");
                    self.report(CameraState::Streaming, 0.0, reconnects, last_error);
                    counted = (Instant::now(), self.slot.stats().decoded);
                    last_report = Instant::now();
                }
                Some(t) if t.elapsed() > self.stall_after => {
                    return end(Some(SourceError::Stalled(t.elapsed().as_secs_f64())), streamed);
                }
                None if started.elapsed() > self.stall_after * 2 => {
                    return end(Some(SourceError::Stalled(started.elapsed().as_secs_f64())), false);
                }
                _ => {}
            }
            if streamed && last_report.elapsed() >= REFRESH {
                let decoded = self.slot.stats().decoded;
                let fps = (decoded - counted.1) as f64 / counted.0.elapsed().as_secs_f64();
                counted = (Instant::now(), decoded);
                last_report = Instant::now();
                self.report(CameraState::Streaming, fps, reconnects, last_error);
            }
        }
    }
}
