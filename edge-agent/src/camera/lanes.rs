//! The lanes stage: at `detector.fps`, the object detector (skipped by the
//! motion gate when nothing moved), the object tracker, and each lane's
//! rule — tracked objects, and where a lane asks for it the class-agnostic
//! obstruction cue on a colour thumbnail. It also keeps the cues' clear
//! references on disk, so a restart does not relearn them.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use super::{Models, Slot, Stage, Timers};
use crate::alert::{evidence, Draft};
use crate::analytics::flicker::ColourThumb;
use crate::analytics::obstruction::ObstructionCue;
use crate::analytics::{LaneRule, Track, Tracker, TrackerParams};
use crate::config::{Camera, Config};
use crate::draw::{self, Canvas};
use crate::infer::gate::MotionGate;
use crate::infer::{Detection, Detector, InferError, Preprocessor};
use crate::metrics::Metrics;
use crate::vocab::{BBox, FrameInput};

/// Why "the lane is clear now" was not taken.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReferenceError {
    #[error("camera {camera:?} has no lane {lane:?} (its lanes: {known:?})")]
    UnknownLane { camera: String, lane: String, known: Vec<String> },
    #[error("lane {lane:?} of camera {camera:?} uses cue = \"objects\"; a clear reference is for cue = \"obstruction\" or \"both\"")]
    ObjectsCue { camera: String, lane: String },
    #[error("camera {camera:?} has no lane with cue = \"obstruction\" or \"both\"")]
    NoCueLanes { camera: String },
    #[error("camera {camera:?} delivered no frame to take as the clear lane (is it streaming?)")]
    NoFrame { camera: String },
}

/// A camera's lanes with the detector and tracker that feed them. Always
/// present; with no lanes it never runs the detector.
pub(super) struct LaneStage {
    camera: String,
    detector: Arc<Detector>,
    labels: Vec<String>,
    score_threshold: f32,
    /// `None` while the camera has no lanes.
    pre: Option<Preprocessor>,
    /// Whether the detector must run on a lane frame (motion or periodic check).
    gate: MotionGate,
    objects: Tracker,
    detections: Vec<Detection>,
    tracked: Vec<Detection>,
    lanes: Vec<LaneRule>,
    /// The frame's 160-px YCbCr thumbnail for the lanes' obstruction cue,
    /// made at the lane rate when a lane uses the cue.
    thumb: ColourThumb,
    /// When `thumb` was made (frame time); `None` before the first.
    thumb_t: Option<f64>,
    /// Tracked people's boxes, which the cue leaves out (reused buffer).
    masks: Vec<BBox>,
    /// Where the lanes' clear references are kept (live agent only; a
    /// replay learns its own and writes nothing).
    references: Option<PathBuf>,
    slot: Slot,
    /// Detector runs the motion gate skipped.
    skipped: prometheus::IntCounter,
    metrics: Arc<Metrics>,
}

impl LaneStage {
    pub(super) fn new(config: &Config, camera: &Camera, models: &Models, metrics: &Arc<Metrics>) -> LaneStage {
        let labels = config.labels();
        let lanes: Vec<LaneRule> = camera.lanes.iter().map(|l| lane_rule(config, l, &labels)).collect();
        LaneStage {
            camera: camera.id.clone(),
            detector: models.detector.clone(),
            score_threshold: config.detector.score_threshold,
            pre: (!lanes.is_empty()).then(|| models.detector.preprocessor()),
            gate: MotionGate::new(config.detector.motion_gate),
            objects: Tracker::new(TrackerParams::objects(config.detector.score_threshold, &config.tracking)),
            detections: Vec::with_capacity(64),
            tracked: Vec::with_capacity(64),
            labels,
            lanes,
            thumb: ColourThumb::default(),
            thumb_t: None,
            masks: Vec::with_capacity(8),
            references: None,
            slot: Slot::every(1.0 / config.detector.fps),
            skipped: metrics.detector_skipped.with_label_values(&[camera.id.as_str()]),
            metrics: metrics.clone(),
        }
    }

    /// Takes reloaded parameters; lanes are matched by name, so an open
    /// lane event stays open. Returns the names of the lanes removed.
    pub(super) fn reconfigure(&mut self, config: &Config, camera: &Camera, models: &Models) -> Vec<String> {
        let update_s = config.alerts.update_interval_s;
        self.labels = config.labels();
        self.score_threshold = config.detector.score_threshold;
        self.slot.period = 1.0 / config.detector.fps;
        self.gate.set_params(config.detector.motion_gate);
        self.objects.set_params(TrackerParams::objects(config.detector.score_threshold, &config.tracking));
        let mut old = std::mem::take(&mut self.lanes);
        for lane in &camera.lanes {
            match old.iter().position(|r| r.name() == lane.name) {
                Some(i) => {
                    let mut rule = old.swap_remove(i);
                    rule.reconfigure(lane.clone(), &self.labels, update_s);
                    rule.set_obstruction(config.obstruction);
                    self.lanes.push(rule);
                }
                None => self.lanes.push(lane_rule(config, lane, &self.labels)),
            }
        }
        if self.lanes.is_empty() {
            self.pre = None;
        } else if self.pre.is_none() {
            self.pre = Some(models.detector.preprocessor());
        }
        // A lane that gained the cue finds its saved reference.
        self.load_references();
        old.iter().map(|r| r.name().to_string()).collect()
    }

    /// Keeps the lanes' clear references in `dir`: loads what is there, and
    /// saves them as they change.
    pub(super) fn keep_references(&mut self, dir: PathBuf) {
        self.references = Some(dir);
        self.load_references();
    }

    /// Loads saved references for lanes whose cue has none yet.
    fn load_references(&mut self) {
        let Some(dir) = &self.references else { return };
        for rule in &mut self.lanes {
            let lane = rule.lane().name.clone();
            if let Some(cue) = rule.obstruction_mut().filter(|c| c.references().next().is_none()) {
                let found = cue.load(dir, &self.camera, &lane);
                if !found.is_empty() {
                    tracing::info!(lane = %lane, lights = ?found, "clear-lane reference loaded");
                }
            }
        }
    }

    /// Saves every reference that changed since its last save (an operator
    /// set it, or the camera stops).
    pub(super) fn save_changed(&mut self) {
        self.save_references(ObstructionCue::take_changed);
    }

    /// Saves the references of the lanes whose cue says `due` (a changed
    /// reference: at most once a minute while running, at once when an
    /// operator set it or the camera stops).
    fn save_references(&mut self, mut due: impl FnMut(&mut ObstructionCue) -> bool) {
        let Some(dir) = &self.references else { return };
        for rule in &mut self.lanes {
            let lane = rule.lane().name.clone();
            let Some(cue) = rule.obstruction_mut() else { continue };
            if due(cue) {
                if let Err(e) = cue.save(dir, &self.camera, &lane) {
                    tracing::warn!(lane = %lane, error = %e, "cannot save the clear-lane reference");
                }
            }
        }
    }

    /// "The lane is clear now": the latest lane frame becomes the clear
    /// reference of `lane` (of every lane using the obstruction cue when
    /// `None`), for that frame's light, in use and saved at once. Only a
    /// frame captured at or after `asked` (analysis clock) will do: an
    /// operator who clicks as the goods are carried off means the lane as
    /// it is from now, not the frame before. Returns the lanes set.
    pub(super) fn set_reference(&mut self, lane: Option<&str>, asked: f64) -> Result<Vec<String>, ReferenceError> {
        let camera = self.camera.clone();
        let lanes: Vec<usize> = match lane {
            Some(name) => {
                let Some(i) = self.lanes.iter().position(|r| r.name() == name) else {
                    let known = self.lanes.iter().map(|r| r.name().to_string()).collect();
                    return Err(ReferenceError::UnknownLane { camera, lane: name.into(), known });
                };
                if !self.lanes[i].lane().cue.obstruction() {
                    return Err(ReferenceError::ObjectsCue { camera, lane: name.into() });
                }
                vec![i]
            }
            None => (0..self.lanes.len()).filter(|&i| self.lanes[i].lane().cue.obstruction()).collect(),
        };
        if lanes.is_empty() {
            return Err(ReferenceError::NoCueLanes { camera });
        }
        let Some(t) = self.thumb_t.filter(|&t| t >= asked) else {
            return Err(ReferenceError::NoFrame { camera });
        };
        let mut set = Vec::new();
        for i in lanes {
            let name = self.lanes[i].name().to_string();
            let Some(cue) = self.lanes[i].obstruction_mut() else { continue };
            let light = cue.set_reference(t, &self.thumb);
            set.push(format!("{name} ({light:?})").to_lowercase());
        }
        self.save_changed();
        Ok(set)
    }

    /// The detector on this frame, or — the motion gate says the scene has
    /// not changed — the last run's detections again.
    fn detect(&mut self, frame: &FrameInput, timers: &Timers) -> Result<Instant, InferError> {
        let Some(pre) = self.pre.as_mut() else { return Ok(Instant::now()) };
        if !self.gate.check(frame.t, frame.rgb, frame.width, frame.height) {
            self.skipped.inc();
            return Ok(Instant::now());
        }
        let t0 = Instant::now();
        let lb = pre.run(frame.rgb, frame.width, frame.height)?;
        let t1 = Instant::now();
        timers.pre.observe((t1 - t0).as_secs_f64());
        let post = self.detector.detect_timed(pre, &lb, &mut self.detections)?;
        self.gate.ran(frame.t);
        let (runs, frames) = self.detector.batch_stats();
        self.metrics.detector_inferences.set(runs as i64);
        self.metrics.detector_inferred_frames.set(frames as i64);
        let t2 = Instant::now();
        timers.infer.observe((t2 - t1).saturating_sub(post).as_secs_f64());
        timers.post.observe(post.as_secs_f64());
        Ok(t2)
    }
}

impl Stage for LaneStage {
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
        if !due || self.pre.is_none() {
            return Ok(());
        }
        let t = frame.t;
        let t2 = self.detect(frame, timers)?;
        self.objects.update(t, &self.detections);
        // Confirmed tracks seen on this frame, low-score matches
        // included: a parked car whose score dips under the threshold
        // for a frame is still the same car (ByteTrack's second stage).
        // Longer gaps are the lane rule's `clear_s`; counting coasting
        // tracks as well would delay every `end` by `max_age_s`.
        self.tracked.clear();
        self.tracked.extend(self.objects.confirmed().filter(|t| t.is_visible()).map(Track::detection));
        // The obstruction cue compares the lane with its clear reference;
        // people in it are passers-by, not a blockage.
        let thumb = self.lanes.iter().any(|l| l.lane().cue.obstruction()).then(|| {
            self.thumb.fill(frame.rgb, frame.width, frame.height);
            self.thumb_t = Some(t);
            &self.thumb
        });
        self.masks.clear();
        if thumb.is_some() {
            let person = self.labels.iter().position(|l| l == "person");
            let people = self.tracked.iter().filter(|d| Some(d.class_id) == person);
            self.masks.extend(people.map(|d| d.bbox));
        }
        let model = self.detector.info();
        for rule in &mut self.lanes {
            if let Some(tr) = rule.observe_frame(t, &self.tracked, thumb, &self.masks) {
                out.push(evidence::lane(&tr, rule, &self.labels, self.score_threshold, model));
            }
        }
        for rule in self.lanes.iter().filter(|r| r.lane().cue.obstruction()) {
            match rule.reading() {
                Some(r) => {
                    tracing::debug!(lane = %rule.name(), occupancy = r.occupancy, considered = r.considered, light = ?r.light, "obstruction cue")
                }
                None => tracing::debug!(lane = %rule.name(), "obstruction cue learning its clear reference"),
            }
        }
        self.save_references(|c| c.save_due(t, 60.0));
        timers.rules.observe(t2.elapsed().as_secs_f64());
        Ok(())
    }

    fn draw(&self, canvas: &mut Canvas) {
        for lane in &self.lanes {
            let colour = if lane.is_blocked() { draw::RED } else { draw::YELLOW };
            canvas.polygon(&lane.polygon().points, colour);
        }
        for t in self.objects.confirmed() {
            let label = self.labels.get(t.class_id).map(String::as_str).unwrap_or("?");
            let colour = if t.is_visible() { draw::CYAN } else { draw::GREY };
            canvas.rect(&t.bbox, colour);
            canvas.label(&t.bbox, &format!("#{} {label} {:.2}", t.id, t.score), colour);
        }
    }
}

/// A lane's rule with the config's obstruction thresholds.
fn lane_rule(config: &Config, lane: &crate::config::Lane, labels: &[String]) -> LaneRule {
    let mut rule = LaneRule::new(lane.clone(), labels, config.alerts.update_interval_s);
    rule.set_obstruction(config.obstruction);
    rule
}
