//! The fire stage: every frame feeds the flicker thumbnails; at `fire.fps`
//! the fire/smoke model runs and the fire rule judges its regions, asking
//! the flicker check about each one that is ready.

use std::sync::Arc;
use std::time::Instant;

use super::{Models, Slot, Stage, Timers};
use crate::alert::{evidence, Draft};
use crate::analytics::fire::FlickerTally;
use crate::analytics::flicker::{self, FlickerHistory};
use crate::analytics::{FireRule, FireTransition};
use crate::config::{Camera, Config, Fire, FireKind};
use crate::draw::{self, Canvas};
use crate::infer::fire::{FireHit, FireModel};
use crate::infer::{InferError, Preprocessor};
use crate::vocab::{BBox, FrameInput};

/// The fire path of one camera: its model input, flicker thumbnails and rule.
pub(super) struct FireStage {
    model: Arc<FireModel>,
    pre: Preprocessor,
    history: FlickerHistory,
    rule: FireRule,
    hits: Vec<FireHit>,
    out: Vec<FireTransition>,
    slot: Slot,
}

impl FireStage {
    /// `None` unless the config has a fire model and the camera has fire on.
    pub(super) fn new(config: &Config, camera: &Camera, models: &Models) -> Option<FireStage> {
        let (Some(cfg), Some(model), true) = (&config.fire, &models.fire, camera.fire) else { return None };
        Some(FireStage {
            pre: model.preprocessor(),
            model: model.clone(),
            // A little more than the flicker window, for frame jitter.
            history: FlickerHistory::new(cfg.flicker.window_s + 0.5),
            rule: FireRule::new(cfg, config.alerts.update_interval_s),
            hits: Vec::with_capacity(16),
            out: Vec::with_capacity(4),
            slot: Slot::every(1.0 / cfg.fps),
        })
    }

    pub(super) fn reconfigure(&mut self, cfg: &Fire, update_s: f64) {
        self.rule.reconfigure(cfg, update_s);
        self.slot.period = 1.0 / cfg.fps;
    }

    /// The flicker verdicts on ready regions so far (fire, smoke).
    pub(super) fn tally(&self) -> [FlickerTally; 2] {
        self.rule.tally()
    }
}

impl Stage for FireStage {
    fn slot(&mut self) -> &mut Slot {
        &mut self.slot
    }

    fn frame(
        &mut self,
        frame: &FrameInput,
        due: bool,
        timers: &Timers,
        out: &mut Vec<Draft>,
    ) -> Result<(), InferError> {
        let (t, w, h) = (frame.t, frame.width, frame.height);
        let t0 = Instant::now();
        self.history.push(t, frame.rgb, w, h);
        if !due {
            timers.pre.observe(t0.elapsed().as_secs_f64());
            return Ok(());
        }
        let lb = self.pre.run(frame.rgb, w, h)?;
        let t1 = Instant::now();
        timers.pre.observe((t1 - t0).as_secs_f64());
        self.model.detect(&mut self.pre, &lb, &mut self.hits)?;
        let t2 = Instant::now();
        timers.infer.observe((t2 - t1).as_secs_f64());
        if tracing::enabled!(tracing::Level::TRACE) {
            let hits: Vec<String> = self
                .hits
                .iter()
                .map(|x| {
                    let b = x.bbox;
                    format!("{}{:.2}@[{:.2},{:.2},{:.2},{:.2}]", x.kind.as_str(), x.score, b.x1, b.y1, b.x2, b.y2)
                })
                .collect();
            tracing::trace!(t, hits = %hits.join(" "), "fire candidates");
        }
        let window_s = self.rule.flicker().window_s;
        let history = &self.history;
        let mut measure = |kind: FireKind, b: &BBox| {
            let stats = flicker::measure(history, t, window_s, b);
            tracing::debug!(t, kind = kind.as_str(), ?stats, "flicker check");
            stats
        };
        self.out.clear();
        self.rule.observe(t, &self.hits, &mut measure, &mut self.out);
        let fps = 1.0 / self.slot.period;
        out.extend(self.out.iter().map(|tr| evidence::fire(tr, t, &self.rule, fps, self.model.info())));
        timers.rules.observe(t2.elapsed().as_secs_f64());
        Ok(())
    }

    fn draw(&self, canvas: &mut Canvas) {
        for (kind, b, hits) in self.rule.candidates() {
            let colour = if kind == FireKind::Fire { draw::YELLOW } else { draw::GREY };
            canvas.rect(&b, colour);
            canvas.label(&b, &format!("{} {hits}/{}", kind.as_str(), self.rule.rule(kind).n), colour);
        }
        for (kind, b) in self.rule.open_regions() {
            canvas.rect(&b, draw::RED);
            canvas.label(&b, &kind.as_str().to_uppercase(), draw::RED);
        }
    }
}
