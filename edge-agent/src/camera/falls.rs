//! The falls stage, on every frame: the pose model (on a dim frame, with
//! its levels stretched first), the person tracker, motion thumbnails for
//! people the pose model loses, and the fall rule.

use std::sync::Arc;
use std::time::Instant;

use super::{Models, Slot, Stage, Timers};
use crate::alert::{evidence, Draft};
use crate::analytics::{FallRule, FallTransition, Tracker, TrackerParams};
use crate::config::{Camera, Config};
use crate::draw::{self, Canvas};
use crate::infer::lowlight::Stretch;
use crate::infer::motion::MotionHistory;
use crate::infer::pose::{Pose, PoseModel};
use crate::infer::{Detection, InferError, Preprocessor};
use crate::metrics::Metrics;
use crate::vocab::FrameInput;

/// A camera's fall path: pose input, people, motion and the rule.
pub(super) struct FallStage {
    model: Arc<PoseModel>,
    rule: FallRule,
    /// Made on the first frame: the pose input follows the frame's aspect.
    pre: Option<(u32, u32, Preprocessor)>,
    /// `pose.low_light_below`: dimmer frames are stretched for the pose model.
    low_light_below: f32,
    motion: MotionHistory,
    people: Tracker,
    poses: Vec<Pose>,
    person_dets: Vec<Detection>,
    pinned: Vec<u64>,
    out: Vec<FallTransition>,
    slot: Slot,
    /// Frames stretched for the pose model (`infer::lowlight`).
    low_light: prometheus::IntCounter,
}

impl FallStage {
    /// `None` unless falls are on for the camera and a pose model is loaded.
    pub(super) fn new(config: &Config, camera: &Camera, models: &Models, metrics: &Metrics) -> Option<FallStage> {
        let falls = config.falls_for(camera);
        let (Some(pose), Some(model), true) = (&config.pose, &models.pose, falls.enabled) else { return None };
        // Enough thumbnails to reach `motion_lag_s` back at the camera's fps.
        let thumbs = (falls.motion_lag_s * camera.fps).ceil() as usize + 2;
        Some(FallStage {
            model: model.clone(),
            rule: FallRule::new(falls, pose.track_score),
            pre: None,
            low_light_below: pose.low_light_below,
            motion: MotionHistory::new(thumbs),
            people: Tracker::new(TrackerParams::people(pose, &config.tracking)),
            poses: Vec::with_capacity(6),
            person_dets: Vec::with_capacity(6),
            pinned: Vec::new(),
            out: Vec::with_capacity(4),
            slot: Slot::every(0.0),
            low_light: metrics.low_light_frames.with_label_values(&[camera.id.as_str()]),
        })
    }

    /// Takes reloaded parameters; tracks and people down are kept.
    pub(super) fn reconfigure(&mut self, config: &Config, camera: &Camera) {
        if let Some(p) = &config.pose {
            self.people.set_params(TrackerParams::people(p, &config.tracking));
            self.low_light_below = p.low_light_below;
        }
        self.rule.set_params(config.falls_for(camera));
    }
}

impl Stage for FallStage {
    fn slot(&mut self) -> &mut Slot {
        &mut self.slot
    }

    fn frame(
        &mut self,
        frame: &FrameInput,
        _due: bool,
        timers: &Timers,
        out: &mut Vec<Draft>,
    ) -> Result<(), InferError> {
        let (t, w, h) = (frame.t, frame.width, frame.height);
        if !matches!(&self.pre, Some((pw, ph, _)) if (*pw, *ph) == (w, h)) {
            self.pre = Some((w, h, self.model.preprocessor(w, h)));
        }
        let Some((_, _, pre)) = self.pre.as_mut() else { return Ok(()) };
        let t0 = Instant::now();
        let lb = pre.run(frame.rgb, w, h)?;
        // Always kept while the rule runs: a person the pose model loses
        // is judged by whether their region has gone still.
        self.motion.push(t, frame.rgb, w, h);
        // A dim frame's levels are stretched for the pose model, judged
        // on the thumbnail just made (the frame is not read again).
        if let Some(s) = self.motion.latest().and_then(|th| Stretch::measure(&th.px, self.low_light_below)) {
            s.apply_i32(pre.tensor_i32_mut());
            self.low_light.inc();
        }
        let t1 = Instant::now();
        timers.pre.observe((t1 - t0).as_secs_f64());
        self.model.detect(pre, &lb, &mut self.poses)?;
        let t2 = Instant::now();
        timers.infer.observe((t2 - t1).as_secs_f64());
        self.person_dets.clear();
        self.person_dets.extend(self.poses.iter().map(|p| Detection {
            bbox: p.bbox,
            class_id: 0,
            score: p.score,
            track_id: None,
        }));
        if tracing::enabled!(tracing::Level::TRACE) {
            let people: Vec<String> = self
                .poses
                .iter()
                .map(|p| {
                    let b = p.bbox;
                    format!("{:.2}@[{:.3},{:.3},{:.3},{:.3}]", p.score, b.x1, b.y1, b.x2, b.y2)
                })
                .collect();
            tracing::trace!(t, people = %people.join(" "), "poses");
        }
        self.pinned.clear();
        self.pinned.extend(self.rule.pinned());
        self.people.update_pinned(t, &self.person_dets, &self.pinned);
        let thumbs = self.motion.pair(self.rule.params().motion_lag_s);
        let aspect = w as f32 / h.max(1) as f32;
        self.out.clear();
        self.rule.observe(t, self.people.tracks(), &self.poses, thumbs, aspect, &mut self.out);
        let params = self.rule.params();
        out.extend(self.out.iter().map(|tr| evidence::fall(tr, params, self.model.info().clone())));
        timers.rules.observe(t2.elapsed().as_secs_f64());
        Ok(())
    }

    fn draw(&self, canvas: &mut Canvas) {
        let down: Vec<u64> = self.rule.down().collect();
        let kp_min = self.rule.params().keypoint_score;
        for t in self.people.confirmed() {
            let colour = if down.contains(&t.id) { draw::RED } else { draw::GREEN };
            canvas.rect(&t.bbox, colour);
            if let Some(pose) = t.matched.and_then(|m| self.poses.get(m)) {
                canvas.skeleton(&pose.keypoints, kp_min, colour);
            }
            let f = self.rule.features(t.id).copied().unwrap_or_default();
            canvas.label(
                &t.bbox,
                &format!("#{} {:.2} h{:.2} d{:.2} w{:.2}", t.id, t.score, f.height_ratio, f.drop, f.width_ratio),
                colour,
            );
        }
    }
}
