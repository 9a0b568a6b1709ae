//! One camera's analysis: a frame in, event messages out. Steps 2–5 of the
//! data path, one stage per file.
//!
//! ```text
//! frame ─┬─▶ lanes: detector (≤ detector.fps) ─▶ object tracker ─▶ lane rules ──┐
//!        ├─▶ fire: model (≤ fire.fps) ─▶ fire rule ◀─ flicker thumbnails ───────┼─▶ drafts ─▶ alert::Composer ─▶ events
//!        └─▶ falls: pose model ─▶ person tracker ─▶ fall rule ──────────────────┘
//! ```
//!
//! - `lanes`, `fire`, `falls`: each a `Stage` — its model input,
//!   trackers and rules — that looks at a frame and states what its rules
//!   decided as [`Draft`]s.
//! - This file schedules the stages (lanes and fire are slow phenomena, so
//!   their models run at their own low rate whatever the camera's fps,
//!   which the fall rule needs) and hands their drafts to the camera's
//!   [`Composer`], which builds the messages.
//!
//! The live agent (`crate::agent`) and `replay` both drive a
//! [`CameraAnalyzer`] frame by frame, so what an operator replays is exactly
//! what the agent would have sent. A model only runs when a stage on this
//! camera needs it: no lanes, no detector; falls off, no pose model.
//!
//! Time comes in with each frame (`t`, seconds, and the wall clock for
//! payloads); nothing here reads a clock except the stage timers.

mod falls;
mod fire;
mod lanes;
mod models;

use std::sync::Arc;

pub(crate) use lanes::ReferenceError;
pub use models::Models;

use crate::alert::{CloseReason, Composer, Draft, EventKey, Outbound};
use crate::analytics::fire::FlickerTally;
use crate::config::{Camera, Config};
use crate::draw::Canvas;
use crate::infer::InferError;
use crate::metrics::Metrics;
pub use crate::vocab::FrameInput;

/// One stage of a camera's analysis: the model it runs and the rules that
/// model feeds.
trait Stage {
    /// When the stage runs next, and how often.
    fn slot(&mut self) -> &mut Slot;
    /// Looks at a frame: `due` when it falls in the stage's slot (a stage
    /// may still keep cheap per-frame state, like thumbnails, when it is
    /// not). Pushes what its rules decided.
    fn frame(&mut self, frame: &FrameInput, due: bool, timers: &Timers, out: &mut Vec<Draft>)
        -> Result<(), InferError>;
    /// What the last run showed, for `replay --annotate`.
    fn draw(&self, canvas: &mut Canvas);
}

/// Stage histograms, resolved once and shared by the camera's stages.
struct Timers {
    pre: prometheus::Histogram,
    infer: prometheus::Histogram,
    post: prometheus::Histogram,
    rules: prometheus::Histogram,
}

/// Per-camera analysis: its stages and the composer of their events.
pub struct CameraAnalyzer {
    camera: Camera,
    models: Models,
    metrics: Arc<Metrics>,
    lanes: lanes::LaneStage,
    fire: Option<fire::FireStage>,
    falls: Option<falls::FallStage>,
    composer: Composer,
    drafts: Vec<Draft>,
    timers: Timers,
}

impl CameraAnalyzer {
    pub fn new(config: &Config, camera: &Camera, models: Models, metrics: Arc<Metrics>) -> CameraAnalyzer {
        CameraAnalyzer {
            lanes: lanes::LaneStage::new(config, camera, &models, &metrics),
            fire: fire::FireStage::new(config, camera, &models),
            falls: falls::FallStage::new(config, camera, &models, &metrics),
            composer: Composer::new(config, camera, metrics.clone()),
            drafts: Vec::with_capacity(4),
            timers: Timers {
                pre: metrics.stage("preprocess"),
                infer: metrics.stage("inference"),
                post: metrics.stage("postprocess"),
                rules: metrics.stage("rules"),
            },
            camera: camera.clone(),
            models,
            metrics,
        }
    }

    pub(crate) fn camera(&self) -> &Camera {
        &self.camera
    }

    /// Applies reloaded rule parameters without touching the stream:
    /// lanes are matched by name (an open lane event stays open), the fall
    /// and fire rules take their new settings, and trackers keep their
    /// tracks. A rule switched off, or a lane removed, closes its open
    /// events (`Outbound::Close`, ended by the alert stage).
    pub(crate) fn reconfigure(&mut self, config: &Config, camera: &Camera, out: &mut Vec<Outbound>) {
        let removed = CloseReason::RuleRemoved;
        let gone = self.lanes.reconfigure(config, camera, &self.models);
        self.composer.close(|k| matches!(k, EventKey::Lane(name) if gone.contains(name)), removed, out);

        let falls_on = config.falls_for(camera).enabled && self.models.pose.is_some();
        match (&mut self.falls, falls_on) {
            (Some(stage), true) => stage.reconfigure(config, camera),
            (None, true) => self.falls = falls::FallStage::new(config, camera, &self.models, &self.metrics),
            (_, false) => {
                self.falls = None;
                self.composer.close(|k| matches!(k, EventKey::Person(_)), removed, out);
            }
        }

        match (&mut self.fire, &config.fire, camera.fire) {
            (Some(stage), Some(cfg), true) => stage.reconfigure(cfg, config.alerts.update_interval_s),
            (None, Some(_), true) => self.fire = fire::FireStage::new(config, camera, &self.models),
            (Some(_), _, _) => {
                self.fire = None;
                self.composer.close(|k| matches!(k, EventKey::Region(..)), removed, out);
            }
            (None, _, _) => {}
        }
        self.composer.reconfigure(config, camera);
        self.camera = camera.clone();
    }

    /// Keeps the lanes' clear references in `dir` (the agent's state
    /// folder): loads what is there, and saves them as they change.
    pub(crate) fn keep_references(&mut self, dir: std::path::PathBuf) {
        self.lanes.keep_references(dir);
    }

    /// "The lane is clear now" (see `lanes::LaneStage::set_reference`).
    pub(crate) fn set_reference(&mut self, lane: Option<&str>, asked: f64) -> Result<Vec<String>, ReferenceError> {
        self.lanes.set_reference(lane, asked)
    }

    /// Closes every open event (the camera is stopping).
    pub(crate) fn close_all(&mut self, out: &mut Vec<Outbound>) {
        // What the cues learnt since their last save is kept too.
        self.lanes.save_changed();
        self.composer.close(|_| true, CloseReason::CameraStopped, out);
    }

    /// Runs every stage on one frame and appends resulting messages to `out`.
    pub fn analyse(&mut self, frame: &FrameInput, out: &mut Vec<Outbound>) -> Result<(), InferError> {
        let half_frame = 0.5 / self.camera.fps;
        // A frame's events keep this order: lanes, fire, falls.
        let stages: [Option<&mut dyn Stage>; 3] = [
            Some(&mut self.lanes),
            self.fire.as_mut().map(|s| s as &mut dyn Stage),
            self.falls.as_mut().map(|s| s as &mut dyn Stage),
        ];
        let mut result = Ok(());
        for stage in stages.into_iter().flatten() {
            let due = stage.slot().due(frame.t, half_frame);
            result = stage.frame(frame, due, &self.timers, &mut self.drafts);
            if result.is_err() {
                break;
            }
        }
        // What a stage decided before another failed is still sent.
        out.extend(self.drafts.drain(..).map(|d| self.composer.compose(d, frame)));
        result
    }

    /// The fire rule's flicker verdicts on ready regions so far (fire,
    /// smoke), for `eval`; zero when the camera has no fire path.
    pub(crate) fn flicker_tally(&self) -> [FlickerTally; 2] {
        self.fire.as_ref().map(|s| s.tally()).unwrap_or_default()
    }

    /// What the last frame showed, for `replay --annotate`.
    pub(crate) fn draw(&self, canvas: &mut Canvas) {
        if let Some(stage) = &self.fire {
            stage.draw(canvas);
        }
        self.lanes.draw(canvas);
        if let Some(stage) = &self.falls {
            stage.draw(canvas);
        }
    }
}

/// When a stage runs: every `period` seconds of rule time (0: every frame).
struct Slot {
    /// The next slot.
    next: f64,
    period: f64,
}

impl Slot {
    fn every(period: f64) -> Slot {
        Slot { next: f64::NEG_INFINITY, period }
    }

    /// Whether the stage is due at `t`. A frame within half a camera frame
    /// of the slot takes it, and slots advance by `period`, so the stage
    /// averages exactly its rate whatever the camera's. Time going
    /// backwards (a replay restarting), or a gap of more than a period,
    /// starts the slots again from `t`.
    fn due(&mut self, t: f64, half_frame: f64) -> bool {
        let (next, period) = (&mut self.next, self.period);
        if t < *next - period - 1e-9 {
            *next = f64::NEG_INFINITY;
        }
        if t + half_frame + 1e-6 < *next {
            return false;
        }
        *next = if t - *next >= period { t + period } else { *next + period };
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 2 fps stage on a 5 fps camera takes 2 frames a second, evenly
    /// enough; on a 1 fps camera every frame; after a replay restarts, at once.
    #[test]
    fn slow_stages_keep_their_rate() {
        let runs = |cam_fps: f64, secs: f64| -> Vec<f64> {
            let mut slot = Slot::every(0.5);
            (0..(secs * cam_fps) as u64).map(|i| i as f64 / cam_fps).filter(|&t| slot.due(t, 0.5 / cam_fps)).collect()
        };
        let five = runs(5.0, 10.0);
        assert_eq!(five.len(), 20, "{five:?}");
        assert_eq!(&five[..4], &[0.0, 0.4, 1.0, 1.4]);
        assert_eq!(runs(1.0, 5.0), vec![0.0, 1.0, 2.0, 3.0, 4.0]);
        let mut slot = Slot::every(0.5);
        assert!(slot.due(5.0, 0.1));
        assert!(!slot.due(5.2, 0.1));
        assert!(slot.due(0.0, 0.1), "time went backwards");
    }

    /// A stage with period 0 (falls) runs on every frame, repeated times included.
    #[test]
    fn every_frame_stages_always_run() {
        let mut slot = Slot::every(0.0);
        assert!([0.0, 0.2, 0.2, 0.4, 0.1].iter().all(|&t| slot.due(t, 0.1)));
    }
}
