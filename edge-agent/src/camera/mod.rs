//! One camera's analysis: a frame in, events out. Steps 2–5 of the data path.
//!
//! ```text
//! frame ─┬─▶ detector (≤ detector.fps) ─▶ object tracker ─▶ lane rules ─┐
//!        ├─▶ fire model (≤ fire.fps) ─▶ fire rule ◀─ flicker thumbnails ─┼─▶ events (+ snapshots)
//!        └─▶ pose model ─▶ person tracker ─▶ fall rule ─────────────────┘
//! ```
//!
//! Lanes and fire are slow phenomena, so their models run at their own low
//! rate whatever the camera's fps (which the fall rule needs); the flicker
//! check still sees every frame, as 160-px thumbnails.
//!
//! The live agent ([`super::run`]) and `replay` both drive a
//! [`CameraAnalyzer`] frame by frame, so what an operator replays is exactly
//! what the agent would have sent. A model only runs when a rule on this
//! camera needs it: no lanes, no detector; falls off, no pose model.
//!
//! Time comes in with each frame (`t`, seconds, and the wall clock for
//! payloads); nothing here reads a clock except the stage timers.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde_json::json;

use crate::alert::event::{self, CameraRef, Evidence, EvidenceObject, Scores, SnapshotRef};
use crate::alert::{snapshot, CloseReason, Event, Outbound, Topics};
use crate::analytics::flicker::{self, ColourThumb, FlickerHistory};
use crate::analytics::obstruction::ObstructionCue;
use crate::analytics::{
    FallRule, FallTransition, FireRule, FireTransition, LaneRule, LaneTransition, Track, Tracker, TrackerParams,
};
use crate::config::{Camera, Config, FireKind};
use crate::draw::{self, Canvas};
use crate::infer::fire::{FireHit, FireModel};
use crate::infer::gate::MotionGate;
use crate::infer::lowlight::Stretch;
use crate::infer::motion::MotionHistory;
use crate::infer::pose::{Keypoint, Pose, PoseModel, KEYPOINT_NAMES};
use crate::infer::{Detection, Detector, InferError, ModelInfo, Preprocessor};
use crate::metrics::Metrics;
use crate::vocab::{BBox, Phase};
use crate::vocab::{EventKind, Severity};

/// The models every camera shares.
#[derive(Clone)]
pub struct Models {
    pub detector: Arc<Detector>,
    pub pose: Option<Arc<PoseModel>>,
    pub fire: Option<Arc<FireModel>>,
}

impl Models {
    /// Loads every model the config names.
    pub fn load(config: &Config) -> Result<Models, InferError> {
        if config.require_model_hash {
            crate::infer::runtime::SessionSpec::all_of(config)
                .iter()
                .try_for_each(crate::infer::runtime::require_pinned)?;
        }
        let detector = Arc::new(crate::infer::detector::load_from_config(config)?);
        let pose = crate::infer::pose::load_from_config(config)?.map(Arc::new);
        let fire = crate::infer::fire::load_from_config(config)?.map(Arc::new);
        Ok(Models { detector, pose, fire })
    }
}

/// One frame handed to analysis.
pub struct FrameInput<'a> {
    /// Packed RGB, `width * height * 3` bytes.
    pub rgb: &'a [u8],
    pub width: u32,
    pub height: u32,
    /// Rule time in seconds (monotonic per camera).
    pub t: f64,
    /// Wall-clock time that payloads report.
    pub wall: SystemTime,
}

/// An event between its `start` and `end`.
struct OpenEvent {
    id: String,
    started_at: SystemTime,
}

/// Stage histograms, resolved once.
struct Timers {
    pre: prometheus::Histogram,
    infer: prometheus::Histogram,
    post: prometheus::Histogram,
    rules: prometheus::Histogram,
    /// Detector runs the motion gate skipped.
    skipped: prometheus::IntCounter,
    /// Frames stretched for the pose model (`infer::lowlight`).
    low_light: prometheus::IntCounter,
}

/// Why "the lane is clear now" was not taken.
#[derive(Debug, thiserror::Error)]
pub enum ReferenceError {
    #[error("camera {camera:?} has no lane {lane:?} (its lanes: {known:?})")]
    NoLane { camera: String, lane: String, known: Vec<String> },
    #[error("lane {lane:?} of camera {camera:?} uses cue = \"objects\"; a clear reference is for cue = \"obstruction\" or \"both\"")]
    NoCue { camera: String, lane: String },
    #[error("camera {camera:?} has no lane with cue = \"obstruction\" or \"both\"")]
    NoCueLanes { camera: String },
    #[error("camera {camera:?} delivered no frame to take as the clear lane (is it streaming?)")]
    NoFrame { camera: String },
}

/// Per-camera analysis state: preprocessors, trackers, rules, open events.
pub struct CameraAnalyzer {
    camera: Camera,
    agent: String,
    site: String,
    labels: Vec<String>,
    topics: Topics,
    quality: u8,
    score_threshold: f32,
    models: Models,
    det_pre: Option<Preprocessor>,
    /// Made on the first frame: the pose input follows the frame's aspect.
    pose_pre: Option<(u32, u32, Preprocessor)>,
    /// `pose.low_light_below`: dimmer frames are stretched for the pose model.
    low_light_below: f32,
    motion: MotionHistory,
    pinned: Vec<u64>,
    detections: Vec<Detection>,
    tracked: Vec<Detection>,
    poses: Vec<Pose>,
    person_dets: Vec<Detection>,
    objects: Tracker,
    people: Tracker,
    lanes: Vec<LaneRule>,
    lane_open: Vec<Option<OpenEvent>>,
    /// The frame's 160-px YCbCr thumbnail for the lanes' obstruction cue,
    /// made at the lane rate when a lane uses the cue.
    lane_thumb: ColourThumb,
    /// When `lane_thumb` was made (frame time); `None` before the first.
    lane_thumb_t: Option<f64>,
    /// Tracked people's boxes, which the cue leaves out (reused buffer).
    lane_masks: Vec<BBox>,
    /// Where the lanes' clear references are kept (live agent only; a
    /// replay learns its own and writes nothing).
    references: Option<std::path::PathBuf>,
    falls: Option<FallRule>,
    fall_open: HashMap<u64, OpenEvent>,
    fall_out: Vec<FallTransition>,
    /// Next slot of the detector (lanes run at `detector.fps`).
    det_next: f64,
    det_period: f64,
    /// Whether the detector must run on a lane frame (motion or periodic check).
    gate: MotionGate,
    fire: Option<FireStage>,
    timers: Timers,
    metrics: Arc<Metrics>,
}

impl CameraAnalyzer {
    pub fn new(config: &Config, camera: &Camera, models: Models, metrics: Arc<Metrics>) -> CameraAnalyzer {
        let labels = config.labels();
        let mut lanes: Vec<LaneRule> =
            camera.lanes.iter().map(|l| LaneRule::new(l.clone(), &labels, config.alerts.update_interval_s)).collect();
        for rule in &mut lanes {
            rule.set_obstruction(config.obstruction);
        }
        let falls_cfg = config.falls_for(camera);
        let falls = match (&config.pose, falls_cfg.enabled) {
            (Some(pose), true) if models.pose.is_some() => Some(FallRule::new(falls_cfg, pose.track_score)),
            _ => None,
        };
        // Enough thumbnails to reach `motion_lag_s` back at the camera's fps.
        let thumbs = (falls_cfg.motion_lag_s * camera.fps).ceil() as usize + 2;
        let people_params = match &config.pose {
            Some(p) => TrackerParams::people(p, &config.tracking),
            None => TrackerParams::objects(1.0, &config.tracking),
        };
        let models_fire = models.fire.clone();
        CameraAnalyzer {
            camera: camera.clone(),
            agent: config.agent_id.clone(),
            site: config.site.path(),
            labels,
            topics: Topics::new(config),
            quality: config.alerts.snapshot_quality,
            score_threshold: config.detector.score_threshold,
            det_pre: (!lanes.is_empty()).then(|| models.detector.preprocessor()),
            pose_pre: None,
            low_light_below: config.pose.as_ref().map_or(0.0, |p| p.low_light_below),
            motion: MotionHistory::new(thumbs),
            pinned: Vec::new(),
            models,
            detections: Vec::with_capacity(64),
            tracked: Vec::with_capacity(64),
            poses: Vec::with_capacity(6),
            person_dets: Vec::with_capacity(6),
            objects: Tracker::new(TrackerParams::objects(config.detector.score_threshold, &config.tracking)),
            people: Tracker::new(people_params),
            lane_open: lanes.iter().map(|_| None).collect(),
            lane_thumb: ColourThumb::default(),
            lane_thumb_t: None,
            lane_masks: Vec::with_capacity(8),
            references: None,
            lanes,
            falls,
            fall_open: HashMap::new(),
            fall_out: Vec::with_capacity(4),
            det_next: f64::NEG_INFINITY,
            det_period: 1.0 / config.detector.fps,
            fire: FireStage::new(config, camera, &models_fire),
            timers: Timers {
                pre: metrics.stage("preprocess"),
                infer: metrics.stage("inference"),
                post: metrics.stage("postprocess"),
                rules: metrics.stage("rules"),
                skipped: metrics.detector_skipped.with_label_values(&[camera.id.as_str()]),
                low_light: metrics.low_light_frames.with_label_values(&[camera.id.as_str()]),
            },
            gate: MotionGate::new(config.detector.motion_gate),
            metrics,
        }
    }

    pub fn camera(&self) -> &Camera {
        &self.camera
    }

    /// Applies reloaded rule parameters without touching the stream:
    /// lanes are matched by name (an open lane event stays open), the fall
    /// and fire rules take their new settings, and trackers keep their
    /// tracks. A rule switched off, or a lane removed, closes its open
    /// events (`Outbound::Close`, ended by the alert stage).
    pub fn reconfigure(&mut self, config: &Config, camera: &Camera, out: &mut Vec<Outbound>) {
        let update_s = config.alerts.update_interval_s;
        self.labels = config.labels();
        self.quality = config.alerts.snapshot_quality;
        self.score_threshold = config.detector.score_threshold;
        self.det_period = 1.0 / config.detector.fps;
        self.gate.set_params(config.detector.motion_gate);
        self.objects.set_params(TrackerParams::objects(config.detector.score_threshold, &config.tracking));
        if let Some(p) = &config.pose {
            self.people.set_params(TrackerParams::people(p, &config.tracking));
            self.low_light_below = p.low_light_below;
        }

        let mut old: Vec<(LaneRule, Option<OpenEvent>)> =
            std::mem::take(&mut self.lanes).into_iter().zip(std::mem::take(&mut self.lane_open)).collect();
        for lane in &camera.lanes {
            match old.iter().position(|(r, _)| r.name() == lane.name) {
                Some(i) => {
                    let (mut rule, open) = old.swap_remove(i);
                    rule.reconfigure(lane.clone(), &self.labels, update_s);
                    rule.set_obstruction(config.obstruction);
                    self.lanes.push(rule);
                    self.lane_open.push(open);
                }
                None => {
                    let mut rule = LaneRule::new(lane.clone(), &self.labels, update_s);
                    rule.set_obstruction(config.obstruction);
                    self.lanes.push(rule);
                    self.lane_open.push(None);
                }
            }
        }
        for (_, open) in old {
            if let Some(o) = open {
                out.push(Outbound::Close { event_id: o.id, reason: CloseReason::RuleRemoved });
            }
        }
        if self.lanes.is_empty() {
            self.det_pre = None;
        } else if self.det_pre.is_none() {
            self.det_pre = Some(self.models.detector.preprocessor());
        }

        let falls_cfg = config.falls_for(camera);
        match (&mut self.falls, &config.pose, falls_cfg.enabled && self.models.pose.is_some()) {
            (Some(rule), _, true) => rule.set_params(falls_cfg),
            (None, Some(pose), true) => self.falls = Some(FallRule::new(falls_cfg, pose.track_score)),
            (_, _, false) => {
                self.falls = None;
                out.extend(
                    self.fall_open
                        .drain()
                        .map(|(_, o)| Outbound::Close { event_id: o.id, reason: CloseReason::RuleRemoved }),
                );
            }
            (None, None, true) => {}
        }

        match (&mut self.fire, &config.fire, camera.fire) {
            (Some(stage), Some(cfg), true) => {
                stage.rule.reconfigure(cfg, update_s);
                stage.period = 1.0 / cfg.fps;
            }
            (None, Some(_), true) => self.fire = FireStage::new(config, camera, &self.models.fire),
            (Some(stage), _, _) => {
                out.extend(
                    stage
                        .open
                        .drain()
                        .map(|(_, o)| Outbound::Close { event_id: o.id, reason: CloseReason::RuleRemoved }),
                );
                self.fire = None;
            }
            (None, _, _) => {}
        }
        self.camera = camera.clone();
        // A lane that gained the cue finds its saved reference.
        self.load_references();
    }

    /// Keeps the lanes' clear references in `dir` (the agent's state
    /// folder): loads what is there, and saves them as they change.
    pub fn keep_references(&mut self, dir: std::path::PathBuf) {
        self.references = Some(dir);
        self.load_references();
    }

    /// Loads saved references for lanes whose cue has none yet.
    fn load_references(&mut self) {
        let Some(dir) = &self.references else { return };
        for rule in &mut self.lanes {
            let lane = rule.lane().name.clone();
            if let Some(cue) = rule.obstruction_mut().filter(|c| c.references().next().is_none()) {
                let found = cue.load(dir, &self.camera.id, &lane);
                if !found.is_empty() {
                    tracing::info!(lane = %lane, lights = ?found, "clear-lane reference loaded");
                }
            }
        }
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
                if let Err(e) = cue.save(dir, &self.camera.id, &lane) {
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
    pub fn set_reference(&mut self, lane: Option<&str>, asked: f64) -> Result<Vec<String>, ReferenceError> {
        let camera = self.camera.id.clone();
        let lanes: Vec<usize> = match lane {
            Some(name) => {
                let Some(i) = self.lanes.iter().position(|r| r.name() == name) else {
                    let known = self.lanes.iter().map(|r| r.name().to_string()).collect();
                    return Err(ReferenceError::NoLane { camera, lane: name.into(), known });
                };
                if !self.lanes[i].lane().cue.obstruction() {
                    return Err(ReferenceError::NoCue { camera, lane: name.into() });
                }
                vec![i]
            }
            None => (0..self.lanes.len()).filter(|&i| self.lanes[i].lane().cue.obstruction()).collect(),
        };
        if lanes.is_empty() {
            return Err(ReferenceError::NoCueLanes { camera });
        }
        let Some(t) = self.lane_thumb_t.filter(|&t| t >= asked) else {
            return Err(ReferenceError::NoFrame { camera });
        };
        let mut set = Vec::new();
        for i in lanes {
            let name = self.lanes[i].name().to_string();
            let Some(cue) = self.lanes[i].obstruction_mut() else { continue };
            let light = cue.set_reference(t, &self.lane_thumb);
            set.push(format!("{name} ({light:?})").to_lowercase());
        }
        self.save_references(ObstructionCue::take_changed);
        Ok(set)
    }

    /// Closes every open event (the camera is stopping).
    pub fn close_all(&mut self, out: &mut Vec<Outbound>) {
        // What the cues learnt since their last save is kept too.
        self.save_references(ObstructionCue::take_changed);
        let close = |id: String| Outbound::Close { event_id: id, reason: CloseReason::CameraStopped };
        out.extend(self.lane_open.iter_mut().filter_map(Option::take).map(|o| close(o.id)));
        out.extend(self.fall_open.drain().map(|(_, o)| close(o.id)));
        if let Some(stage) = &mut self.fire {
            out.extend(stage.open.drain().map(|(_, o)| close(o.id)));
        }
    }

    /// Runs every stage on one frame and appends resulting messages to `out`.
    pub fn analyse(&mut self, frame: &FrameInput, out: &mut Vec<Outbound>) -> Result<(), InferError> {
        let (t, wall) = (frame.t, frame.wall);
        let half_frame = 0.5 / self.camera.fps;
        // Lanes run only in their slots; the other rules run below.
        let lanes_due = due(&mut self.det_next, t, self.det_period, half_frame);
        if let (true, Some(pre)) = (lanes_due, self.det_pre.as_mut()) {
            // Unchanged scene: the rules see the last run's detections again.
            let t2 = if self.gate.check(t, frame.rgb, frame.width, frame.height) {
                let t0 = Instant::now();
                let lb = pre.run(frame.rgb, frame.width, frame.height)?;
                let t1 = Instant::now();
                self.timers.pre.observe((t1 - t0).as_secs_f64());
                let post = self.models.detector.detect_timed(pre, &lb, &mut self.detections)?;
                self.gate.ran(t);
                let (runs, frames) = self.models.detector.batch_stats();
                self.metrics.detector_inferences.set(runs as i64);
                self.metrics.detector_inferred_frames.set(frames as i64);
                let t2 = Instant::now();
                self.timers.infer.observe((t2 - t1).saturating_sub(post).as_secs_f64());
                self.timers.post.observe(post.as_secs_f64());
                t2
            } else {
                self.timers.skipped.inc();
                Instant::now()
            };
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
                self.lane_thumb.fill(frame.rgb, frame.width, frame.height);
                self.lane_thumb_t = Some(t);
                &self.lane_thumb
            });
            self.lane_masks.clear();
            if thumb.is_some() {
                let person = self.labels.iter().position(|l| l == "person");
                let people = self.tracked.iter().filter(|d| Some(d.class_id) == person);
                self.lane_masks.extend(people.map(|d| d.bbox));
            }
            let transitions: Vec<(usize, LaneTransition)> = (0..self.lanes.len())
                .filter_map(|i| {
                    self.lanes[i].observe_frame(t, &self.tracked, thumb, &self.lane_masks).map(|tr| (i, tr))
                })
                .collect();
            for (i, tr) in transitions {
                out.push(self.lane_event(i, &tr, t, wall, frame));
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
            self.timers.rules.observe(t2.elapsed().as_secs_f64());
        }
        self.analyse_fire(frame, half_frame, out)?;
        if let (Some(rule), Some(model)) = (self.falls.as_mut(), self.models.pose.as_ref()) {
            let (w, h) = (frame.width, frame.height);
            if !matches!(&self.pose_pre, Some((pw, ph, _)) if (*pw, *ph) == (w, h)) {
                self.pose_pre = Some((w, h, model.preprocessor(w, h)));
            }
            let Some((_, _, pre)) = self.pose_pre.as_mut() else { return Ok(()) };
            let t0 = Instant::now();
            let lb = pre.run(frame.rgb, frame.width, frame.height)?;
            // Always kept while the rule runs: a person the pose model loses
            // is judged by whether their region has gone still.
            self.motion.push(t, frame.rgb, w, h);
            // A dim frame's levels are stretched for the pose model, judged
            // on the thumbnail just made (the frame is not read again).
            let below = self.low_light_below;
            if let Some(s) = self.motion.latest().and_then(|th| Stretch::measure(&th.px, below)) {
                s.apply_i32(pre.tensor_i32_mut());
                self.timers.low_light.inc();
            }
            let t1 = Instant::now();
            self.timers.pre.observe((t1 - t0).as_secs_f64());
            model.detect(pre, &lb, &mut self.poses)?;
            let t2 = Instant::now();
            self.timers.infer.observe((t2 - t1).as_secs_f64());
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
            self.pinned.extend(rule.pinned());
            self.people.update_pinned(t, &self.person_dets, &self.pinned);
            let mut transitions = std::mem::take(&mut self.fall_out);
            let thumbs = self.motion.pair(rule.params().motion_lag_s);
            let aspect = w as f32 / h.max(1) as f32;
            rule.observe(t, self.people.tracks(), &self.poses, thumbs, aspect, &mut transitions);
            for tr in &transitions {
                out.push(self.fall_event(tr, t, wall, frame));
            }
            self.fall_out = transitions;
            self.timers.rules.observe(t2.elapsed().as_secs_f64());
        }
        Ok(())
    }

    /// The fire path: every frame feeds the flicker thumbnails; at
    /// `fire.fps` the model runs and the rule judges its regions.
    fn analyse_fire(&mut self, frame: &FrameInput, half_frame: f64, out: &mut Vec<Outbound>) -> Result<(), InferError> {
        // Taken out for the call so events can borrow the analyzer too.
        let Some(mut stage) = self.fire.take() else { return Ok(()) };
        let result = self.run_fire(&mut stage, frame, half_frame, out);
        self.fire = Some(stage);
        result
    }

    fn run_fire(
        &mut self,
        stage: &mut FireStage,
        frame: &FrameInput,
        half_frame: f64,
        out: &mut Vec<Outbound>,
    ) -> Result<(), InferError> {
        let (t, w, h) = (frame.t, frame.width, frame.height);
        let t0 = Instant::now();
        stage.history.push(t, frame.rgb, w, h);
        if !due(&mut stage.next, t, stage.period, half_frame) {
            self.timers.pre.observe(t0.elapsed().as_secs_f64());
            return Ok(());
        }
        let lb = stage.pre.run(frame.rgb, w, h)?;
        let t1 = Instant::now();
        self.timers.pre.observe((t1 - t0).as_secs_f64());
        stage.model.detect(&mut stage.pre, &lb, &mut stage.hits)?;
        let t2 = Instant::now();
        self.timers.infer.observe((t2 - t1).as_secs_f64());
        if tracing::enabled!(tracing::Level::TRACE) {
            let hits: Vec<String> = stage
                .hits
                .iter()
                .map(|x| {
                    let b = x.bbox;
                    format!("{}{:.2}@[{:.2},{:.2},{:.2},{:.2}]", x.kind.as_str(), x.score, b.x1, b.y1, b.x2, b.y2)
                })
                .collect();
            tracing::trace!(t, hits = %hits.join(" "), "fire candidates");
        }
        let window_s = stage.rule.flicker().window_s;
        let history = &stage.history;
        let mut measure = |kind: FireKind, b: &crate::vocab::BBox| {
            let stats = flicker::measure(history, t, window_s, b);
            tracing::debug!(t, kind = kind.as_str(), ?stats, "flicker check");
            stats
        };
        let mut transitions = std::mem::take(&mut stage.out);
        transitions.clear();
        stage.rule.observe(t, &stage.hits, &mut measure, &mut transitions);
        for tr in &transitions {
            out.push(self.fire_event(stage, tr, t, frame.wall, frame));
        }
        stage.out = transitions;
        self.timers.rules.observe(t2.elapsed().as_secs_f64());
        Ok(())
    }

    /// The fire rule's flicker verdicts on ready regions so far (fire,
    /// smoke), for `eval`; zero when the camera has no fire path.
    pub fn flicker_tally(&self) -> [crate::analytics::fire::FlickerTally; 2] {
        self.fire.as_ref().map(|s| s.rule.tally()).unwrap_or_default()
    }

    /// What the last frame showed, for `replay --annotate`.
    pub fn draw(&self, canvas: &mut Canvas) {
        if let Some(stage) = &self.fire {
            for (kind, b, hits) in stage.rule.candidates() {
                let colour = if kind == FireKind::Fire { draw::YELLOW } else { draw::GREY };
                canvas.rect(&b, colour);
                canvas.label(&b, &format!("{} {hits}/{}", kind.as_str(), stage.rule.rule(kind).n), colour);
            }
            for (kind, b) in stage.rule.open_regions() {
                canvas.rect(&b, draw::RED);
                canvas.label(&b, &kind.as_str().to_uppercase(), draw::RED);
            }
        }
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
        let Some(rule) = &self.falls else { return };
        let down: Vec<u64> = rule.down().collect();
        let kp_min = rule.params().keypoint_score;
        for t in self.people.confirmed() {
            let colour = if down.contains(&t.id) { draw::RED } else { draw::GREEN };
            canvas.rect(&t.bbox, colour);
            if let Some(pose) = t.matched.and_then(|m| self.poses.get(m)) {
                canvas.skeleton(&pose.keypoints, kp_min, colour);
            }
            let f = rule.features(t.id).copied().unwrap_or_default();
            canvas.label(
                &t.bbox,
                &format!("#{} {:.2} h{:.2} d{:.2} w{:.2}", t.id, t.score, f.height_ratio, f.drop, f.width_ratio),
                colour,
            );
        }
    }

    /// Builds the event message (with its snapshot) for a lane transition.
    fn lane_event(
        &mut self,
        lane: usize,
        tr: &LaneTransition,
        now: f64,
        wall: SystemTime,
        frame: &FrameInput,
    ) -> Outbound {
        let open = open_event(&mut self.lane_open[lane], tr.phase, wall, now, tr.since);
        let ended_at = tr.cleared_at.map(|c| back(wall, now, c));
        if tr.phase == Phase::End {
            self.lane_open[lane] = None;
        }
        let rule = &self.lanes[lane];
        let lane_cfg = rule.lane();
        let boxes: Vec<_> = tr.objects.iter().map(|d| d.bbox).collect();
        let changed: &[BBox] = tr.obstruction.as_ref().map_or(&[], |r| &r.changed);
        // The clear reference the frame was compared with, beside it.
        let reference = tr
            .obstruction
            .as_ref()
            .and_then(|r| rule.obstruction()?.reference(r.light))
            .map(|p| (p.to_rgb(), p.w, p.h));
        let jpeg = snapshot::render(frame.rgb, frame.width, frame.height, self.quality, |c| {
            if let Some((rgb, w, h)) = &reference {
                c.inset(rgb, *w, *h, "clear reference");
            }
            c.polygon(&rule.polygon().points, draw::YELLOW);
            // The obstruction cue's changed cells: why the lane reads blocked.
            for cell in changed {
                c.rect(cell, draw::CYAN);
            }
            for b in &boxes {
                c.rect(b, draw::RED);
            }
        });
        let evidence = Evidence {
            objects: tr
                .objects
                .iter()
                .map(|d| EvidenceObject {
                    label: self.labels.get(d.class_id).cloned().unwrap_or_else(|| d.class_id.to_string()),
                    score: d.score,
                    bbox: [d.bbox.x1, d.bbox.y1, d.bbox.x2, d.bbox.y2],
                    track_id: d.track_id,
                })
                .collect(),
            track_ids: tr.objects.iter().filter_map(|d| d.track_id).collect(),
            occupancy: Some(tr.occupancy),
            cause: Some(tr.cause),
            obstruction: tr.obstruction.as_ref().map(|r| {
                json!({
                    "occupancy": r.occupancy,
                    "light": r.light,
                    "cells": r.cells,
                    "considered": r.considered,
                    "changed": r.changed.iter().map(|b| [b.x1, b.y1, b.x2, b.y2]).collect::<Vec<_>>(),
                })
            }),
            ..Evidence::default()
        };
        let rule_json = json!({
            "name": "lane_blocked",
            "lane": lane_cfg.name,
            "polygon": lane_cfg.polygon,
            "classes": lane_cfg.classes,
            "dwell_s": lane_cfg.dwell_s,
            "clear_s": lane_cfg.clear_s,
            "cue": lane_cfg.cue,
            "min_occupancy": lane_cfg.min_occupancy,
            "score_threshold": self.score_threshold,
        });
        let parts = Parts {
            kind: EventKind::LaneBlocked,
            phase: tr.phase,
            severity: Severity::Warning,
            zone: Some(lane_cfg.name.clone()),
            open,
            wall,
            ended_at,
            score: Scores { peak: tr.peak, current: tr.score },
            evidence,
            rule: rule_json,
            model: self.models.detector.info().clone(),
        };
        self.finish(parts, jpeg, frame)
    }

    /// Builds the event message (with its snapshot) for a fall transition.
    fn fall_event(&mut self, tr: &FallTransition, now: f64, wall: SystemTime, frame: &FrameInput) -> Outbound {
        let open = open_keyed(&mut self.fall_open, tr.track_id, tr.phase, wall, now, tr.fell_at);
        let ended_at = tr.ended_at.map(|e| back(wall, now, e));
        let kp_min = self.falls.as_ref().map(|r| r.params().keypoint_score).unwrap_or(0.2);
        let jpeg = snapshot::render(frame.rgb, frame.width, frame.height, self.quality, |c| {
            c.rect(&tr.bbox, draw::RED);
            if let Some(k) = &tr.keypoints {
                c.skeleton(k, kp_min, draw::RED);
            }
        });
        let keypoints = tr.keypoints.map(|k| keypoints_json(tr.track_id, &k));
        let b = tr.bbox;
        let evidence = Evidence {
            objects: vec![EvidenceObject {
                label: "person".into(),
                score: tr.score,
                bbox: [b.x1, b.y1, b.x2, b.y2],
                track_id: Some(tr.track_id),
            }],
            track_ids: vec![tr.track_id],
            keypoints,
            down_s: Some((tr.down_s * 10.0).round() / 10.0),
            long_lie: Some(tr.long_lie),
            ..Evidence::default()
        };
        let params = self.falls.as_ref().map(|r| *r.params());
        let rule_json = json!({
            "name": "fall",
            "params": params,
            "fired_by": tr.trigger,
        });
        let parts = Parts {
            kind: EventKind::Fall,
            phase: tr.phase,
            // A fall is a warning until the person has stayed down
            // `long_lie_s`: then it is the emergency (README, "Falls").
            severity: if tr.long_lie { Severity::Critical } else { Severity::Warning },
            zone: None,
            open,
            wall,
            ended_at,
            score: Scores { peak: tr.peak, current: tr.score },
            evidence,
            rule: rule_json,
            model: self.models.pose.as_ref().map(|p| p.info().clone()).unwrap_or_else(|| ModelInfo {
                name: "pose".into(),
                version: String::new(),
                format: String::new(),
            }),
        };
        self.finish(parts, jpeg, frame)
    }

    /// Builds the event message (with its snapshot) for a fire or smoke
    /// transition.
    fn fire_event(
        &self,
        stage: &mut FireStage,
        tr: &FireTransition,
        now: f64,
        wall: SystemTime,
        frame: &FrameInput,
    ) -> Outbound {
        let (kind, severity) = match tr.kind {
            FireKind::Fire => (EventKind::Fire, Severity::Critical),
            FireKind::Smoke => (EventKind::Smoke, Severity::Warning),
        };
        let open = open_keyed(&mut stage.open, (tr.kind, tr.region), tr.phase, wall, now, tr.since);
        let ended_at = tr.ended_at.map(|e| back(wall, now, e));
        let hit_boxes: Vec<crate::vocab::BBox> = tr.window.iter().filter_map(|s| s.bbox).collect();
        let jpeg = snapshot::render(frame.rgb, frame.width, frame.height, self.quality, |c| {
            for b in &hit_boxes {
                c.rect(b, draw::YELLOW);
            }
            c.rect(&tr.bbox, draw::RED);
            c.label(&tr.bbox, tr.kind.as_str(), draw::RED);
        });
        let b = tr.bbox;
        let window: Vec<serde_json::Value> = tr
            .window
            .iter()
            .map(|s| json!({ "t_offset_s": ((s.t - now) * 1000.0).round() / 1000.0, "score": s.score }))
            .collect();
        let evidence = Evidence {
            objects: vec![EvidenceObject {
                label: tr.kind.as_str().into(),
                score: tr.score,
                bbox: [b.x1, b.y1, b.x2, b.y2],
                track_id: None,
            }],
            regions: Some(hit_boxes.iter().map(|b| [b.x1, b.y1, b.x2, b.y2]).collect()),
            window: Some(window),
            flicker: tr.flicker.map(|v| serde_json::to_value(v).unwrap_or_default()),
            ..Evidence::default()
        };
        let rule = stage.rule.rule(tr.kind);
        let rule_json = json!({
            "name": tr.kind.as_str(),
            "region": tr.region,
            "params": rule,
            "fps": 1.0 / stage.period,
            "flicker": stage.rule.flicker(),
        });
        let parts = Parts {
            kind,
            phase: tr.phase,
            severity,
            zone: None,
            open,
            wall,
            ended_at,
            score: Scores { peak: tr.peak, current: tr.score },
            evidence,
            rule: rule_json,
            model: stage.model.info().clone(),
        };
        self.finish(parts, jpeg, frame)
    }

    fn finish(&self, p: Parts, jpeg: Option<Vec<u8>>, frame: &FrameInput) -> Outbound {
        let (id, started_at) = p.open;
        let snapshot_ref = jpeg.as_ref().map(|j| SnapshotRef {
            topic: self.topics.snapshot(p.kind.as_str(), &id),
            content_type: "image/jpeg",
            width: frame.width,
            height: frame.height,
            bytes: j.len(),
        });
        let duration_s =
            p.ended_at.unwrap_or(p.wall).duration_since(started_at).map(|d| d.as_secs_f64()).unwrap_or(0.0);
        let event = Event {
            schema: event::SCHEMA,
            id,
            seq: 0,
            kind: p.kind,
            phase: p.phase,
            severity: p.severity,
            agent: self.agent.clone(),
            site: self.site.clone(),
            camera: CameraRef { id: self.camera.id.clone(), name: self.camera.name.clone() },
            zone: p.zone,
            started_at,
            updated_at: p.wall,
            ended_at: p.ended_at,
            duration_s,
            score: p.score,
            evidence: p.evidence,
            rule: p.rule,
            model: p.model,
            snapshot: snapshot_ref,
            centre: Default::default(),
        };
        self.metrics.events.with_label_values(&[p.kind.as_str(), p.phase.as_str()]).inc();
        Outbound::Event { event: Box::new(event), snapshot: jpeg }
    }
}

/// The fire path of one camera: its model input, flicker thumbnails, rule
/// and open events.
struct FireStage {
    model: Arc<FireModel>,
    pre: Preprocessor,
    history: FlickerHistory,
    rule: FireRule,
    hits: Vec<FireHit>,
    out: Vec<FireTransition>,
    open: HashMap<(FireKind, u64), OpenEvent>,
    /// Next slot of the model (it runs at `fire.fps`).
    next: f64,
    period: f64,
}

impl FireStage {
    fn new(config: &Config, camera: &Camera, model: &Option<Arc<FireModel>>) -> Option<FireStage> {
        let (Some(cfg), Some(model), true) = (&config.fire, model, camera.fire) else { return None };
        Some(FireStage {
            pre: model.preprocessor(),
            model: model.clone(),
            // A little more than the flicker window, for frame jitter.
            history: FlickerHistory::new(cfg.flicker.window_s + 0.5),
            rule: FireRule::new(cfg, config.alerts.update_interval_s),
            hits: Vec::with_capacity(16),
            out: Vec::with_capacity(4),
            open: HashMap::new(),
            next: f64::NEG_INFINITY,
            period: 1.0 / cfg.fps,
        })
    }
}

/// Whether a stage running every `period` seconds is due at `t`; `next` is
/// its next slot. A frame within half a camera frame of the slot takes it,
/// and slots advance by `period`, so the stage averages exactly its rate
/// whatever the camera's. Time going backwards (a replay restarting), or a
/// gap of more than a period, starts the slots again from `t`.
fn due(next: &mut f64, t: f64, period: f64, half_frame: f64) -> bool {
    if t < *next - period - 1e-9 {
        *next = f64::NEG_INFINITY;
    }
    if t + half_frame + 1e-6 < *next {
        return false;
    }
    *next = if t - *next >= period { t + period } else { *next + period };
    true
}

/// The parts of an event that differ between rules.
struct Parts {
    kind: EventKind,
    phase: Phase,
    severity: Severity,
    zone: Option<String>,
    /// (id, started_at)
    open: (String, SystemTime),
    wall: SystemTime,
    ended_at: Option<SystemTime>,
    score: Scores,
    evidence: Evidence,
    rule: serde_json::Value,
    model: ModelInfo,
}

/// A fall event's `evidence.keypoints`: the person's skeleton by keypoint
/// name, `[x, y, score]` each (see `deploy/schema/event.schema.json`).
pub fn keypoints_json(track_id: u64, k: &[Keypoint; 17]) -> serde_json::Value {
    let named: serde_json::Map<String, serde_json::Value> =
        KEYPOINT_NAMES.iter().zip(k.iter()).map(|(n, p)| (n.to_string(), json!([p.x, p.y, p.score]))).collect();
    json!([{ "track_id": track_id, "points": named }])
}

/// The wall time of rule time `t`, given that rule time `now` is `wall`.
fn back(wall: SystemTime, now: f64, t: f64) -> SystemTime {
    wall.checked_sub(Duration::from_secs_f64((now - t).max(0.0))).unwrap_or(wall)
}

/// Opens the event on `start`; on `update`/`end` returns the open one. An
/// update or end always follows a start on the same rule; the fallback only
/// guards against a logic error, never panics.
fn open_event(
    slot: &mut Option<OpenEvent>,
    phase: Phase,
    wall: SystemTime,
    now: f64,
    since: f64,
) -> (String, SystemTime) {
    let open = match phase {
        Phase::Start => slot.insert(OpenEvent { id: event::new_id(), started_at: back(wall, now, since) }),
        _ => slot.get_or_insert_with(|| OpenEvent { id: event::new_id(), started_at: wall }),
    };
    (open.id.clone(), open.started_at)
}

/// [`open_event`] for rules with many events at once, keyed by track or
/// region; the entry goes on `end`.
fn open_keyed<K: std::hash::Hash + Eq>(
    open: &mut HashMap<K, OpenEvent>,
    key: K,
    phase: Phase,
    wall: SystemTime,
    now: f64,
    since: f64,
) -> (String, SystemTime) {
    let mut slot = open.remove(&key);
    let event = open_event(&mut slot, phase, wall, now, since);
    if let (Some(o), false) = (slot, phase == Phase::End) {
        open.insert(key, o);
    }
    event
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 2 fps stage on a 5 fps camera takes 2 frames a second, evenly
    /// enough; on a 1 fps camera every frame; after a replay restarts, at once.
    #[test]
    fn slow_stages_keep_their_rate() {
        let runs = |cam_fps: f64, secs: f64| -> Vec<f64> {
            let mut next = f64::NEG_INFINITY;
            (0..(secs * cam_fps) as u64)
                .map(|i| i as f64 / cam_fps)
                .filter(|&t| due(&mut next, t, 0.5, 0.5 / cam_fps))
                .collect()
        };
        let five = runs(5.0, 10.0);
        assert_eq!(five.len(), 20, "{five:?}");
        assert_eq!(&five[..4], &[0.0, 0.4, 1.0, 1.4]);
        assert_eq!(runs(1.0, 5.0), vec![0.0, 1.0, 2.0, 3.0, 4.0]);
        let mut next = f64::NEG_INFINITY;
        assert!(due(&mut next, 5.0, 0.5, 0.1));
        assert!(!due(&mut next, 5.2, 0.5, 0.1));
        assert!(due(&mut next, 0.0, 0.5, 0.1), "time went backwards");
    }

    /// Fall payloads carry keypoints in the shape the published schema promises.
    #[test]
    fn keypoints_match_the_event_schema() {
        let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/schema/event.schema.json");
        let schema: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
        let sub = &schema["properties"]["evidence"]["properties"]["keypoints"];
        let validator = jsonschema::validator_for(sub).unwrap();
        let mut k = [Keypoint::default(); 17];
        k[0] = Keypoint { x: 0.5, y: 0.25, score: 0.75 };
        let v = keypoints_json(7, &k);
        assert!(validator.is_valid(&v), "{v}");
        assert_eq!(v[0]["points"]["nose"], json!([0.5, 0.25, 0.75]));
        assert_eq!(v[0]["points"].as_object().unwrap().len(), 17);
        assert!(validator.is_valid(&serde_json::Value::Null));
        assert!(!validator.is_valid(&json!([{ "track_id": 1, "points": { "nose": [0.5] } }])));
    }
}
