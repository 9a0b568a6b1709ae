//! Keeps one camera streaming, forever.
//!
//! Like moonfire-nvr's `Streamer`: run the pipeline once; on error, end of
//! stream or a stall, tear it down, report, back off (doubling, capped) and
//! try again until shutdown. Each camera has its own supervisor thread, so a
//! camera that hangs in a blocking GStreamer call never delays the others.
//!
//! Status changes go out through a callback as plain [`CameraStatus`]
//! values; the wiring in [`crate::agent`] publishes them (retained) and
//! feeds metrics.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use gstreamer as gst;
use gstreamer::prelude::*;

use super::pipeline::{self, SourceOptions};
use super::{FrameSlot, SourceError};
use crate::config::Camera;
use crate::service::Heartbeat;
use crate::shutdown::Shutdown;

/// The retained camera status: the contract's types, which a centre reads back.
pub use alleywatch_contract::status::{CameraState, CameraStatus};

/// Consecutive attempts without a frame before the state reads `failed`.
const FAILED_AFTER: u32 = 3;
/// How often a streaming camera refreshes its retained status (fps).
const REFRESH: Duration = Duration::from_secs(30);

pub(crate) struct Supervisor {
    pub(crate) camera: Camera,
    pub(crate) options: SourceOptions,
    pub(crate) backoff_initial: Duration,
    pub(crate) backoff_max: Duration,
    /// A streaming camera with no frame for this long is restarted.
    pub(crate) stall_after: Duration,
    pub(crate) slot: Arc<FrameSlot>,
    pub(crate) shutdown: Shutdown,
    pub(crate) on_status: Box<dyn Fn(CameraStatus) + Send>,
    /// This thread's sign of life for the service watchdog: it beats while
    /// streaming, while backing off and between attempts, so a supervisor
    /// wedged in a GStreamer call stops the watchdog pings.
    pub(crate) beat: Heartbeat,
    /// Counts pipelines left behind by [`teardown`].
    pub(crate) abandoned: prometheus::IntCounter,
}

/// How long a pipeline may take to stop before it is abandoned.
const TEARDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// Stops a pipeline without letting it block the supervisor.
///
/// `rtspsrc` can hang in its state change when the server vanished
/// mid-stream (seen with GStreamer 1.22: the change to NULL waits on a lock
/// its own streaming task holds). The stop runs on a helper thread; if it
/// has not finished within [`TEARDOWN_TIMEOUT`] the pipeline is abandoned
/// and the camera reconnects with a fresh one, so one bad stream never
/// stalls its camera for good. The abandoned pipeline's threads and buffers
/// stay allocated: each one is logged and counted in
/// `alleywatch_pipelines_abandoned_total` (see the README's known issues).
fn teardown(pipeline: &gst::Pipeline, camera: &str, abandoned: &prometheus::IntCounter) {
    let p = pipeline.clone();
    let stopped = stop_within(&format!("teardown-{camera}"), TEARDOWN_TIMEOUT, move || {
        let _ = p.set_state(gst::State::Null);
    });
    if !stopped {
        abandoned.inc();
        tracing::warn!(
            timeout_s = TEARDOWN_TIMEOUT.as_secs(),
            abandoned = abandoned.get(),
            "pipeline did not stop in time; abandoning it (its threads stay until the agent restarts)"
        );
    }
}

/// Runs `stop` on its own thread and waits at most `timeout`; false when it
/// did not finish (or no thread could be started). Never runs `stop` on the
/// caller's thread: a stop that hangs there is the very hang this exists to
/// avoid. When no thread can be had, the pipeline is left as it is (it keeps
/// its reference, so it is never disposed while playing).
fn stop_within(name: &str, timeout: Duration, stop: impl FnOnce() + Send + 'static) -> bool {
    let (tx, rx) = std::sync::mpsc::channel();
    let spawned = std::thread::Builder::new().name(name.to_string()).spawn(move || {
        stop();
        let _ = tx.send(());
    });
    match spawned {
        Ok(_) => rx.recv_timeout(timeout).is_ok(),
        Err(e) => {
            tracing::error!(error = %e, "cannot start a thread to stop the pipeline");
            false
        }
    }
}

/// Outcome of one pipeline run.
struct RunEnd {
    error: Option<SourceError>,
    streamed: bool,
}

impl Supervisor {
    /// Runs until shutdown. Call on a dedicated thread.
    pub(crate) fn run(self) {
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
            if self.back_off(delay) {
                break;
            }
            delay = (delay * 2).min(self.backoff_max);
        }
        tracing::info!("camera stopped");
    }

    /// Waits `delay` (true when shutdown came first), beating at least
    /// once a second: the capped backoff may be longer than the watchdog's
    /// patience.
    fn back_off(&self, delay: Duration) -> bool {
        let until = Instant::now() + delay;
        loop {
            self.beat.beat();
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            if self.shutdown.wait_timeout(left.min(Duration::from_secs(1))) {
                return true;
            }
        }
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
            teardown(&pipeline, &self.camera.id, &self.abandoned);
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
            self.beat.beat();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stop_that_hangs_is_abandoned_never_waited_for() {
        let (release, hang) = std::sync::mpsc::channel::<()>();
        let t = Instant::now();
        assert!(!stop_within("hangs", Duration::from_millis(200), move || {
            let _ = hang.recv();
        }));
        assert!(t.elapsed() < Duration::from_secs(5), "the caller is not held");
        drop(release);
        assert!(stop_within("quick", Duration::from_secs(5), || {}));
    }

    #[test]
    fn the_supervisor_beats_while_it_backs_off() {
        crate::source::init().unwrap();
        let camera: Camera =
            toml::from_str("id = \"c\"\nname = \"c\"\nurl = \"file:///nonexistent/clip.mp4\"").unwrap();
        let (status_tx, status_rx) = std::sync::mpsc::channel();
        let status_tx = std::sync::Mutex::new(status_tx);
        let beat = Heartbeat::default();
        let shutdown = Shutdown::new();
        let sup = Supervisor {
            camera,
            options: SourceOptions { latency_ms: 0 },
            // Longer than the watchdog's patience, as a capped backoff may be.
            backoff_initial: Duration::from_secs(60),
            backoff_max: Duration::from_secs(60),
            stall_after: Duration::from_secs(10),
            slot: Arc::new(FrameSlot::new()),
            shutdown: shutdown.clone(),
            on_status: Box::new(move |s| {
                let _ = status_tx.lock().unwrap().send(s.state);
            }),
            beat: beat.clone(),
            abandoned: prometheus::IntCounter::new("a", "a").unwrap(),
        };
        let thread = std::thread::spawn(move || sup.run());
        let state = status_rx.recv_timeout(Duration::from_secs(30)).expect("the failed attempt is reported");
        assert_eq!(state, CameraState::Reconnecting);
        // Now in its 60 s backoff: the beat must stay fresh throughout.
        let t = Instant::now();
        let mut oldest = Duration::ZERO;
        while t.elapsed() < Duration::from_millis(2500) {
            oldest = oldest.max(beat.age());
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(oldest < Duration::from_millis(1500), "a beat at least once a second, saw {oldest:?}");
        shutdown.trigger();
        thread.join().unwrap();
    }
}
