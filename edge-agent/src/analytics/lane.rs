//! The blocked-lane rule: an object of a configured class stays inside a
//! lane polygon for longer than `dwell_s`.
//!
//! An object is *in* the lane when the bottom-centre of its box (where it
//! touches the ground) lies inside the polygon, as Frigate does for zones:
//! a car whose roof overhangs a lane from the kerb is not blocking it.
//!
//! States: `Clear` → `Pending` (occupied, dwell running) → `Blocked`
//! (`start` sent) → `Clear` (`end` sent). A gap shorter than `clear_s` — a
//! missed detection or a passer-by occluding the car — neither resets the
//! dwell nor ends the event. While blocked, an `update` goes out when the
//! number of blocking objects changes, at most once per `update_interval_s`.
//!
//! What blocks depends on the lane's `cue`: tracked objects of its classes
//! (`objects`, the default), the class-agnostic obstruction cue
//! ([`super::obstruction`]: enough of the lane differs from its clear
//! reference, `obstruction`), or either (`both`). Each transition says which
//! one started it (`cause`).

use super::flicker::ColourThumb;
use super::obstruction::{ObstructionCue, Reading};
use crate::config::Lane;
use crate::config::ObstructionParams;
use crate::infer::Detection;
use crate::vocab::BBox;
use crate::vocab::Phase;
use crate::vocab::Polygon;

/// What made a lane count as blocked (the event's `evidence.cause`).
pub use alleywatch_contract::event::Cause;

/// What the rule reports on a frame where the lane's event changes.
#[derive(Debug, Clone, PartialEq)]
pub struct LaneTransition {
    pub(crate) phase: Phase,
    /// When the lane first became occupied (rule time, seconds).
    pub(crate) since: f64,
    /// When the lane was found clear (rule time), for `end` only.
    pub(crate) cleared_at: Option<f64>,
    /// The blocking detections on this frame (empty on `end`).
    pub(crate) objects: Vec<Detection>,
    /// Highest score among `objects`.
    pub(crate) score: f32,
    /// Highest score seen since the event began.
    pub(crate) peak: f32,
    /// Fraction of the lane covered by the blocking boxes.
    pub(crate) occupancy: f32,
    /// Objects on this frame, or else the obstruction cue.
    pub(crate) cause: Cause,
    /// The obstruction cue's reading on this frame, when the lane uses it.
    pub(crate) obstruction: Option<Reading>,
}

#[derive(Debug, Clone, PartialEq)]
enum State {
    Clear,
    Pending { since: f64, clear_since: Option<f64>, peak: f32 },
    Blocked { since: f64, clear_since: Option<f64>, peak: f32, reported: usize, last_report: f64 },
}

/// One lane's rule state. Feed it every analysed frame, in time order.
#[derive(Debug, Clone)]
pub struct LaneRule {
    lane: Lane,
    polygon: Polygon,
    class_ids: Vec<usize>,
    update_interval_s: f64,
    state: State,
    /// The class-agnostic cue, when the lane's `cue` uses it.
    obstruction: Option<ObstructionCue>,
    /// The cue's last reading (`None` while it learns its reference).
    reading: Option<Reading>,
}

impl LaneRule {
    /// `labels` maps class ids to names; `lane.classes` were validated
    /// against it when the config was loaded.
    pub fn new(lane: Lane, labels: &[String], update_interval_s: f64) -> LaneRule {
        let class_ids = labels.iter().enumerate().filter(|(_, l)| lane.classes.contains(l)).map(|(i, _)| i).collect();
        LaneRule {
            polygon: Polygon::new(&lane.polygon),
            lane,
            class_ids,
            update_interval_s,
            state: State::Clear,
            obstruction: None,
            reading: None,
        }
    }

    /// Turns the obstruction cue on (when the lane's `cue` uses it) or off,
    /// keeping a learnt reference across reconfigurations.
    pub(crate) fn set_obstruction(&mut self, params: ObstructionParams) {
        if !self.lane.cue.obstruction() {
            self.obstruction = None;
            return;
        }
        let cue = match &mut self.obstruction {
            Some(cue) => {
                cue.reconfigure(self.polygon.clone(), params);
                cue
            }
            None => self.obstruction.insert(ObstructionCue::new(self.polygon.clone(), params)),
        };
        cue.adapt_below(self.lane.min_occupancy as f32 / 2.0);
    }

    /// The obstruction cue's reading on the last frame.
    pub(crate) fn reading(&self) -> Option<&Reading> {
        self.reading.as_ref()
    }

    /// The obstruction cue, when the lane uses it.
    pub(crate) fn obstruction(&self) -> Option<&ObstructionCue> {
        self.obstruction.as_ref()
    }

    /// The obstruction cue, for its references (save, load, set).
    pub(crate) fn obstruction_mut(&mut self) -> Option<&mut ObstructionCue> {
        self.obstruction.as_mut()
    }

    /// New parameters from a reload (polygon, classes, dwell and clear
    /// times). An open event stays open; the new times apply from now on.
    pub(crate) fn reconfigure(&mut self, lane: Lane, labels: &[String], update_interval_s: f64) {
        let state = std::mem::replace(&mut self.state, State::Clear);
        let obstruction = self.obstruction.take();
        *self = LaneRule { state, obstruction, ..LaneRule::new(lane, labels, update_interval_s) };
    }

    pub(crate) fn name(&self) -> &str {
        &self.lane.name
    }

    pub(crate) fn lane(&self) -> &Lane {
        &self.lane
    }

    pub(crate) fn polygon(&self) -> &Polygon {
        &self.polygon
    }

    /// Whether an event is open (between `start` and `end`).
    pub(crate) fn is_blocked(&self) -> bool {
        matches!(self.state, State::Blocked { .. })
    }

    /// Does this detection block the lane?
    pub(crate) fn blocks(&self, d: &Detection) -> bool {
        let b = &d.bbox;
        self.class_ids.contains(&d.class_id) && self.polygon.contains((b.x1 + b.x2) / 2.0, b.y2)
    }

    /// Advances the rule to time `now` (seconds, monotonic) with this
    /// frame's detections (objects cue only).
    pub fn observe(&mut self, now: f64, detections: &[Detection]) -> Option<LaneTransition> {
        self.observe_frame(now, detections, None, &[])
    }

    /// Advances the rule with this frame's detections and, for the
    /// obstruction cue, the frame's thumbnail and the boxes it must leave
    /// out (people, moving objects).
    pub(crate) fn observe_frame(
        &mut self,
        now: f64,
        detections: &[Detection],
        thumb: Option<&ColourThumb>,
        masks: &[BBox],
    ) -> Option<LaneTransition> {
        let reading = match (self.obstruction.as_mut(), thumb) {
            (Some(cue), Some(t)) => cue.observe(now, t, masks),
            _ => None,
        };
        let obstructed = reading.as_ref().is_some_and(|r| r.occupancy as f64 >= self.lane.min_occupancy);
        self.reading.clone_from(&reading);
        let objects: Vec<Detection> = if self.lane.cue.objects() {
            detections.iter().filter(|d| self.blocks(d)).cloned().collect()
        } else {
            Vec::new()
        };
        let cause = if objects.is_empty() { Cause::Obstruction } else { Cause::Object };
        let score = match (objects.is_empty(), &reading) {
            (true, Some(r)) if obstructed => r.occupancy,
            _ => objects.iter().map(|d| d.score).fold(0.0, f32::max),
        };
        let occupied = !objects.is_empty() || obstructed;
        let dwell = self.lane.dwell_s;
        let clear_s = self.lane.clear_s;

        match &mut self.state {
            State::Clear => {
                if occupied {
                    self.state = State::Pending { since: now, clear_since: None, peak: score };
                    // A zero dwell fires on the first frame.
                    return self.observe_pending(now, objects, score, dwell, (cause, reading));
                }
                None
            }
            State::Pending { clear_since, .. } => {
                if occupied {
                    *clear_since = None;
                    self.observe_pending(now, objects, score, dwell, (cause, reading))
                } else {
                    let cs = *clear_since.get_or_insert(now);
                    if now - cs >= clear_s {
                        self.state = State::Clear;
                    }
                    None
                }
            }
            State::Blocked { since, clear_since, peak, reported, last_report } => {
                if occupied {
                    *clear_since = None;
                    *peak = peak.max(score);
                    if objects.len() != *reported && now - *last_report >= self.update_interval_s {
                        *reported = objects.len();
                        *last_report = now;
                        let (since, peak) = (*since, *peak);
                        return Some(self.open_transition(
                            Phase::Update,
                            since,
                            objects,
                            (score, peak),
                            cause,
                            reading,
                        ));
                    }
                    None
                } else {
                    let cs = *clear_since.get_or_insert(now);
                    if now - cs >= clear_s {
                        let t = LaneTransition {
                            phase: Phase::End,
                            since: *since,
                            cleared_at: Some(cs),
                            objects: Vec::new(),
                            score: 0.0,
                            peak: *peak,
                            occupancy: 0.0,
                            cause,
                            obstruction: reading,
                        };
                        self.state = State::Clear;
                        return Some(t);
                    }
                    None
                }
            }
        }
    }

    fn observe_pending(
        &mut self,
        now: f64,
        objects: Vec<Detection>,
        score: f32,
        dwell: f64,
        (cause, obstruction): (Cause, Option<Reading>),
    ) -> Option<LaneTransition> {
        let State::Pending { since, peak, .. } = &mut self.state else {
            return None;
        };
        *peak = peak.max(score);
        if now - *since < dwell {
            return None;
        }
        let (since, peak) = (*since, *peak);
        self.state = State::Blocked { since, clear_since: None, peak, reported: objects.len(), last_report: now };
        Some(self.open_transition(Phase::Start, since, objects, (score, peak), cause, obstruction))
    }

    /// A `start` or `update`: the lane is blocked by `objects` (and/or the
    /// cue's reading) since `since`.
    fn open_transition(
        &self,
        phase: Phase,
        since: f64,
        objects: Vec<Detection>,
        (score, peak): (f32, f32),
        cause: Cause,
        obstruction: Option<Reading>,
    ) -> LaneTransition {
        let occupancy = coverage(&self.polygon, &objects);
        LaneTransition { phase, since, cleared_at: None, objects, score, peak, occupancy, cause, obstruction }
    }
}

fn coverage(polygon: &Polygon, objects: &[Detection]) -> f32 {
    let boxes: Vec<BBox> = objects.iter().map(|d| d.bbox).collect();
    polygon.coverage(&boxes)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CAR: usize = 2;
    const PERSON: usize = 0;

    fn labels() -> Vec<String> {
        ["person", "bicycle", "car"].iter().map(|s| s.to_string()).collect()
    }

    fn rule(dwell_s: f64, clear_s: f64) -> LaneRule {
        let lane = Lane {
            name: "fire-lane".into(),
            polygon: vec![[0.0, 0.5], [1.0, 0.5], [1.0, 1.0], [0.0, 1.0]],
            classes: vec!["car".into()],
            dwell_s,
            clear_s,
            cue: Default::default(),
            min_occupancy: 0.3,
        };
        LaneRule::new(lane, &labels(), 5.0)
    }

    /// A car whose bottom edge sits at `bottom` (inside the lane when > 0.5).
    fn car(bottom: f32, score: f32) -> Detection {
        Detection {
            bbox: BBox { x1: 0.3, y1: bottom - 0.2, x2: 0.5, y2: bottom },
            class_id: CAR,
            score,
            track_id: None,
        }
    }

    /// Runs a script of (time, detections) through a rule; returns (time, phase).
    fn run(rule: &mut LaneRule, script: &[(f64, Vec<Detection>)]) -> Vec<(f64, Phase)> {
        script.iter().filter_map(|(t, d)| rule.observe(*t, d).map(|tr| (*t, tr.phase))).collect()
    }

    /// Frames every 0.25 s (exact in binary, so times compare exactly)
    /// from `from` to `to` (exclusive) with `dets`.
    fn span(from: f64, to: f64, dets: &[Detection]) -> Vec<(f64, Vec<Detection>)> {
        let n = ((to - from) / 0.25).round() as usize;
        (0..n).map(|i| (from + i as f64 * 0.25, dets.to_vec())).collect()
    }

    #[test]
    fn start_after_dwell_then_end_after_clear() {
        let mut r = rule(5.0, 2.0);
        let mut script = span(0.0, 2.0, &[]);
        script.extend(span(2.0, 12.0, &[car(0.9, 0.8)]));
        script.extend(span(12.0, 16.0, &[]));
        let got = run(&mut r, &script);
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(got, vec![(7.0, Phase::Start), (14.0, Phase::End)], "start at dwell end, end after clear_s");
    }

    #[test]
    fn occupied_shorter_than_dwell_never_starts() {
        let mut r = rule(5.0, 1.0);
        let mut script = span(0.0, 4.8, &[car(0.9, 0.9)]);
        script.extend(span(4.8, 10.0, &[]));
        assert!(run(&mut r, &script).is_empty());
        assert!(!r.is_blocked());
    }

    #[test]
    fn short_gaps_do_not_reset_dwell_or_end() {
        let mut r = rule(3.0, 1.0);
        let mut script = Vec::new();
        // Car present, but every third frame is a missed detection.
        for i in 0..48 {
            let t = i as f64 * 0.25;
            let dets = if i % 3 == 2 { vec![] } else { vec![car(0.9, 0.7)] };
            script.push((t, dets));
        }
        let got = run(&mut r, &script);
        assert_eq!(got, vec![(3.0, Phase::Start)]);
        assert!(r.is_blocked());
    }

    #[test]
    fn long_gap_before_dwell_resets_it() {
        let mut r = rule(3.0, 1.0);
        let mut script = span(0.0, 2.0, &[car(0.9, 0.7)]);
        script.extend(span(2.0, 3.5, &[])); // 1.5 s gap > clear_s
        script.extend(span(3.5, 6.0, &[car(0.9, 0.7)]));
        assert!(run(&mut r, &script).is_empty(), "dwell restarted at 3.5 s");
        let got = run(&mut r, &span(6.0, 7.0, &[car(0.9, 0.7)]));
        assert_eq!(got, vec![(6.5, Phase::Start)]);
    }

    #[test]
    fn wrong_class_or_outside_lane_is_ignored() {
        let mut r = rule(1.0, 1.0);
        let person = Detection { class_id: PERSON, ..car(0.9, 0.9) };
        let above_lane = car(0.4, 0.9); // bottom edge above the lane
        let script = span(0.0, 5.0, &[person, above_lane]);
        assert!(run(&mut r, &script).is_empty());
    }

    #[test]
    fn update_on_count_change_is_throttled() {
        let mut r = rule(1.0, 1.0);
        let two = [car(0.9, 0.8), Detection { bbox: BBox { x1: 0.6, y1: 0.7, x2: 0.8, y2: 0.9 }, ..car(0.9, 0.6) }];
        let mut script = span(0.0, 2.0, &two[..1]);
        script.extend(span(2.0, 4.0, &two)); // second car at 2 s: too soon after start at 1 s
        script.extend(span(4.0, 10.0, &two));
        let got = run(&mut r, &script);
        assert_eq!(got[0], (1.0, Phase::Start));
        // Throttle is 5 s: the change seen at 2.0 is reported at 6.0.
        assert_eq!(got, vec![(1.0, Phase::Start), (6.0, Phase::Update)]);
    }

    #[test]
    fn transition_carries_evidence() {
        let mut r = rule(0.0, 1.0);
        let t = r.observe(0.0, &[car(0.9, 0.8)]).expect("zero dwell starts at once");
        assert_eq!(t.phase, Phase::Start);
        assert_eq!(t.objects.len(), 1);
        assert_eq!(t.score, 0.8);
        assert!(t.occupancy > 0.05 && t.occupancy < 0.15, "{}", t.occupancy);
        r.observe(0.2, &[car(0.9, 0.95)]);
        let end = (1..20).find_map(|i| r.observe(0.2 + i as f64 * 0.2, &[])).unwrap();
        assert_eq!(end.phase, Phase::End);
        assert_eq!(end.peak, 0.95);
        assert_eq!(end.cleared_at, Some(0.4));
        assert_eq!(end.since, 0.0);
    }

    /// A lane on the obstruction cue alone: goods nobody's detector names
    /// block it past the dwell; a person standing there does not.
    #[test]
    fn the_obstruction_cue_blocks_a_lane_without_any_detection() {
        use crate::analytics::obstruction::fixtures::{scene, with_box};
        use crate::config::LaneCue;
        let lane = Lane {
            name: "fire-escape".into(),
            polygon: vec![[0.0, 0.4], [1.0, 0.4], [1.0, 1.0], [0.0, 1.0]],
            classes: vec![],
            dwell_s: 5.0,
            clear_s: 2.0,
            cue: LaneCue::Obstruction,
            min_occupancy: 0.2,
        };
        let mut rule = LaneRule::new(lane, &labels(), 5.0);
        rule.set_obstruction(ObstructionParams::default());
        let clear = scene(1.0);
        let goods = with_box(scene(1.0), 40, 50, 104, 90);
        type Seen = Vec<(f64, Phase, Cause, Option<f32>)>;
        fn feed(rule: &mut LaneRule, from: f64, to: f64, thumb: &ColourThumb, masks: &[BBox]) -> Seen {
            let mut seen = Vec::new();
            let mut t = from;
            while t < to {
                // A parked "car" the lane does not list: ignored by this cue.
                if let Some(tr) = rule.observe_frame(t, &[car(0.9, 0.9)], Some(thumb), masks) {
                    seen.push((t, tr.phase, tr.cause, tr.obstruction.map(|r| r.occupancy)));
                }
                t += 0.5;
            }
            seen
        }
        let mut events = feed(&mut rule, 0.0, 10.0, &clear, &[]); // learns the clear lane
        let person = [BBox { x1: 0.2, y1: 0.4, x2: 0.7, y2: 1.0 }];
        events.extend(feed(&mut rule, 10.0, 30.0, &goods, &person)); // someone stands on the goods' spot
        assert!(events.is_empty(), "a person (masked) is no obstruction: {events:?}");
        events.extend(feed(&mut rule, 30.0, 60.0, &goods, &[]));
        events.extend(feed(&mut rule, 60.0, 70.0, &clear, &[]));
        let phases: Vec<_> = events.iter().map(|e| (e.1, e.2)).collect();
        assert_eq!(phases, [(Phase::Start, Cause::Obstruction), (Phase::End, Cause::Obstruction)], "{events:?}");
        let (start_t, _, _, occ) = events[0];
        assert!((35.0..=36.5).contains(&start_t), "start one dwell after the lane read blocked: {start_t}");
        assert!(occ.unwrap() >= 0.2, "{occ:?}");
        assert!((62.0..=63.5).contains(&events[1].0), "end clear_s after the goods left: {}", events[1].0);
    }
}
