//! The fall rule: a tracked person collapses fast and stays down.
//!
//! Per person track (from the pose tracker) the rule keeps a few seconds of
//! observations. A person's **reference** is how they looked standing in
//! the last `ref_window_s`: confident, clear of the top and bottom edges, and
//! narrower than `ref_max_aspect`. Against it, each new observation gives
//! [`FallFeatures`]:
//! - **height ratio**: box height over the standing height. The strongest
//!   single cue on real footage: lying people measured about 0.36, people
//!   bending ≥ 0.72, upright ≥ 0.94;
//! - **drop**: how far the top of the box (the head) moved down, in
//!   standing heights. Bending and sitting keep it small;
//! - **width ratio**: box width over the reference's. A fallen person gets
//!   wider; someone cut by the frame edge or occluded gets narrower.
//!
//! Torso angle, hip speed and head-below-hips are computed from the
//! keypoints and *reported* with every event, but do not decide: a fall
//! towards the camera still measured 36–48° from vertical, a man bending
//! over reached 60°, and lying keypoints are the least reliable ones
//! (measurements in the README, "Falls").
//!
//! States: `Upright` → `Falling` → `Down` (the event's `start`) → `Upright`
//! (`end`). Two ways into `Falling`:
//! - **pose path**: the box collapses (height ratio ≤ `fall_height_ratio`,
//!   drop ≥ `min_drop`) within `window_s` of a standing reference, and is
//!   not narrower (`min_width_ratio`);
//! - **vanish path**: the pose model loses a confident, nearly still person
//!   (lying bodies often score too low to be seen at all) while a burst of
//!   motion fills the lower part of where they stood. Guards: not at the
//!   frame edge, not occluded by another person, nobody upright reappears
//!   close by.
//!
//! From `Falling`, the person must stay *down* (box height ratio ≤
//! `down_height_ratio`, or unseen in a still region) for `confirm_s`; an
//! upright box or `fall_timeout_s` cancels. `end` comes after `recover_s`
//! upright, or `lost_s` unseen.
//!
//! Like every rule it never reads a clock: time comes in with each frame.

use std::collections::{HashMap, VecDeque};

use super::tracker::Track;
use crate::config::Falls;
use crate::infer::motion::{motion, Motion, Thumb};
use crate::infer::pose::{kp, Keypoint, Pose};
use crate::vocab::BBox;

use crate::vocab::Phase;

/// What the rule measured on one person on one frame.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize)]
pub struct FallFeatures {
    /// Box height over standing height.
    pub height_ratio: f32,
    /// Downward move of the box top since the reference, in standing heights.
    pub drop: f32,
    /// Box width over the reference's width.
    pub width_ratio: f32,
    /// Box width over height, in pixels.
    pub aspect: f32,
    /// Fraction of the watched region that moved (vanish path and while
    /// confirming).
    pub motion: f32,
    /// Which way the fall was seen: "pose" or "vanish" (empty before).
    pub path: &'static str,
    /// Reported, not decided on (see the module docs): the torso angle from
    /// vertical in degrees, when shoulders and hips show…
    pub torso_deg: Option<f32>,
    /// …the hip centre's downward speed over `window_s`, standing heights
    /// per second…
    pub hip_speed: Option<f32>,
    /// …and whether the head shows lower than the hips.
    pub head_below_hips: bool,
}

/// A change in a person's fall event.
#[derive(Debug, Clone, PartialEq)]
pub struct FallTransition {
    pub phase: Phase,
    pub track_id: u64,
    /// When the collapse was seen (rule time).
    pub fell_at: f64,
    /// For `end`: when the person recovered or was last seen.
    pub ended_at: Option<f64>,
    /// The person's box (the last one seen).
    pub bbox: BBox,
    /// The latest skeleton seen.
    pub keypoints: Option<[Keypoint; 17]>,
    /// Features at the collapse: what crossed the thresholds.
    pub trigger: FallFeatures,
    pub score: f32,
    pub peak: f32,
    /// Seconds the person has been down: from the collapse to this frame,
    /// or to `ended_at` for an `end`.
    pub down_s: f64,
    /// The person has stayed down `long_lie_s` (or `long_lie_s` is 0): the
    /// event's severity rises (README, "Falls: the long lie").
    pub long_lie: bool,
}

#[derive(Debug, Clone, Copy)]
struct Obs {
    t: f64,
    bbox: BBox,
    score: f32,
    /// Hip centre height (normalised y), when a hip shows.
    hip_y: Option<f32>,
    /// Torso angle from vertical in degrees, when shoulders and hips show.
    torso_deg: Option<f32>,
    head_below_hips: bool,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Path {
    Pose,
    Vanish { vbox: BBox },
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    Upright,
    Falling {
        at: f64,
        path: Path,
        roi: [f32; 4],
        standing: f32,
        trigger: FallFeatures,
    },
    Down {
        at: f64,
        standing: f32,
        trigger: FallFeatures,
        upright_since: Option<f64>,
        peak: f32,
        /// When the last `start` or `update` went out.
        reported: f64,
        long_lie: bool,
    },
}

#[derive(Debug, Clone)]
struct Person {
    obs: VecDeque<Obs>,
    state: State,
    best: f32,
    last_seen: f64,
    bbox: BBox,
    keypoints: Option<[Keypoint; 17]>,
    score: f32,
    features: FallFeatures,
}

/// The standing reference of a person at one observation.
struct Reference {
    height: f32,
    top: f32,
    t: f64,
    bbox: BBox,
}

/// The fall rule of one camera.
#[derive(Debug, Clone)]
pub struct FallRule {
    p: Falls,
    /// A sighting scoring at least this is confident: the pose tracker's
    /// birth score.
    confident: f32,
    people: HashMap<u64, Person>,
}

impl FallRule {
    /// `confident` is the pose tracker's birth score (`pose.track_score`).
    pub fn new(params: Falls, confident: f32) -> FallRule {
        FallRule { p: params, confident, people: HashMap::new() }
    }

    /// New parameters from a reload; people being followed stay followed.
    pub fn set_params(&mut self, params: Falls) {
        self.p = params;
    }

    pub fn params(&self) -> &Falls {
        &self.p
    }

    /// Track ids the tracker must keep however long they are unseen: people
    /// falling or down (the rule decides when they are lost).
    pub fn pinned(&self) -> impl Iterator<Item = u64> + '_ {
        self.people.iter().filter(|(_, p)| !matches!(p.state, State::Upright)).map(|(id, _)| *id)
    }

    /// Track ids with an open fall event.
    pub fn down(&self) -> impl Iterator<Item = u64> + '_ {
        self.people.iter().filter(|(_, p)| matches!(p.state, State::Down { .. })).map(|(id, _)| *id)
    }

    /// The latest features of a tracked person, for annotation.
    pub fn features(&self, track_id: u64) -> Option<&FallFeatures> {
        self.people.get(&track_id).map(|p| &p.features)
    }

    /// Advances the rule to `now`.
    /// - `tracks`: every track of the person tracker (unmatched ones too);
    /// - `poses`: this frame's people, which `Track::matched` indexes;
    /// - `thumbs`: (this frame's thumbnail, the newest one at least
    ///   `motion_lag_s` older);
    /// - `frame_aspect`: frame width over height in pixels.
    pub fn observe(
        &mut self,
        now: f64,
        tracks: &[Track],
        poses: &[Pose],
        thumbs: Option<(&Thumb, &Thumb)>,
        frame_aspect: f32,
        out: &mut Vec<FallTransition>,
    ) {
        out.clear();
        let (p, hi) = (self.p, self.confident);
        let keep = p.ref_window_s.max(p.vanish_hist_s).max(p.window_s).max(1.0) + 2.0;
        let motion_in = |roi: [f32; 4]| -> Motion {
            thumbs.map(|(cur, prev)| motion(cur, prev, roi, p.motion_threshold)).unwrap_or_default()
        };
        for track in tracks.iter().filter(|t| t.confirmed) {
            let matched = track.matched.and_then(|m| poses.get(m));
            let person = self.people.entry(track.id).or_insert_with(|| Person {
                obs: VecDeque::with_capacity(32),
                state: State::Upright,
                best: 0.0,
                last_seen: track.last_seen,
                bbox: track.bbox,
                keypoints: None,
                score: 0.0,
                features: FallFeatures::default(),
            });
            if let Some(pose) = matched {
                let k = skeleton(pose, p.keypoint_score, frame_aspect);
                person.obs.push_back(Obs {
                    t: now,
                    bbox: track.bbox,
                    score: pose.score,
                    hip_y: k.hip_y,
                    torso_deg: k.torso_deg,
                    head_below_hips: k.head_below_hips,
                });
                while person.obs.front().is_some_and(|o| now - o.t > keep) {
                    person.obs.pop_front();
                }
                person.best = person.best.max(pose.score);
                person.last_seen = now;
                person.bbox = track.bbox;
                person.keypoints = Some(pose.keypoints);
                person.score = pose.score;
            }
            let confident = matched.is_some_and(|m| m.score >= hi);
            let state = person.state;
            match state {
                State::Upright => {
                    if matched.is_some() {
                        let Some((f, r)) = features(person, &p, hi, frame_aspect) else { continue };
                        person.features = f;
                        if f.height_ratio <= p.fall_height_ratio
                            && f.drop >= p.min_drop
                            && now - r.t <= p.window_s
                            && f.width_ratio >= p.min_width_ratio
                        {
                            let trigger = FallFeatures { path: "pose", ..f };
                            person.state = State::Falling {
                                at: now,
                                path: Path::Pose,
                                roi: roi_of(&r.bbox),
                                standing: r.height,
                                trigger,
                            };
                        }
                    } else if p.vanish {
                        let others: Vec<BBox> = tracks
                            .iter()
                            .filter(|o| o.id != track.id && o.confirmed && o.is_visible())
                            .map(|o| o.bbox)
                            .collect();
                        if let Some(f) = vanish(person, now, &p, hi, frame_aspect, &others, &motion_in) {
                            let b = person.bbox;
                            person.features = f;
                            let standing = b.y2 - b.y1;
                            person.state = State::Falling {
                                at: now,
                                path: Path::Vanish { vbox: b },
                                roi: roi_of(&b),
                                standing,
                                trigger: f,
                            };
                        }
                    }
                }
                State::Falling { at, path, roi, standing, trigger } => {
                    let m = motion_in(roi).fraction;
                    if let Path::Vanish { vbox } = path {
                        // Someone upright where the person vanished: they
                        // stood up or walked on (not their own detection).
                        // A bystander who was already there (tracked since
                        // before the fall) is not the person getting up.
                        let own = track.matched;
                        let bystander = |i: usize| {
                            tracks.iter().any(|o| o.id != track.id && o.matched == Some(i) && o.first_seen <= at)
                        };
                        let reappeared = poses.iter().enumerate().any(|(i, o)| {
                            Some(i) != own
                                && !bystander(i)
                                && o.score >= hi
                                && upright_near(&o.bbox, &vbox, &p, frame_aspect)
                        });
                        if reappeared {
                            person.state = State::Upright;
                            continue;
                        }
                    }
                    let f = if matched.is_some() { features(person, &p, hi, frame_aspect) } else { None };
                    // Seen, but the standing reference has aged out: measure
                    // against the standing height kept from the collapse.
                    let hr = f
                        .as_ref()
                        .map(|(f, _)| f.height_ratio)
                        .or_else(|| matched.map(|_| (person.bbox.y2 - person.bbox.y1) / standing.max(1e-3)));
                    if let Some((f, _)) = f {
                        person.features = FallFeatures { motion: m, ..f };
                    }
                    if confident && hr.is_some_and(|h| h >= p.upright_height_ratio) {
                        person.state = State::Upright;
                        continue;
                    }
                    let down = match hr {
                        Some(h) => h <= p.down_height_ratio,
                        None => m <= p.still_max,
                    };
                    if down && now - at >= p.confirm_s - 1e-6 {
                        person.state = State::Down {
                            at,
                            standing,
                            trigger,
                            upright_since: None,
                            peak: person.score,
                            reported: now,
                            long_lie: now - at >= p.long_lie_s - 1e-6,
                        };
                        out.push(transition(person, track.id, Phase::Start, None, now));
                    } else if now - at > p.fall_timeout_s {
                        // Start afresh: the old references must not re-trigger.
                        person.state = State::Upright;
                        person.obs.clear();
                    }
                }
                State::Down { at, standing, trigger, upright_since, peak, reported, long_lie } => {
                    let peak = if matched.is_some() { peak.max(person.score) } else { peak };
                    let b = person.bbox;
                    // Any sighting counts here, confident or not: someone who
                    // got up must be able to end the event even if the model
                    // scores them low. A box this tall is not a lying body.
                    let upright = matched.is_some() && (b.y2 - b.y1) / standing.max(1e-3) >= p.upright_height_ratio;
                    let upright_since = match (matched.is_some(), upright) {
                        (true, true) => Some(upright_since.unwrap_or(now)),
                        (true, false) => None,
                        (false, _) => upright_since,
                    };
                    person.state = State::Down { at, standing, trigger, upright_since, peak, reported, long_lie };
                    if let Some(since) = upright_since.filter(|s| now - s >= p.recover_s) {
                        out.push(transition(person, track.id, Phase::End, Some(since), now));
                        person.state = State::Upright;
                        person.obs.clear();
                    } else if matched.is_none() && now - person.last_seen >= p.lost_s {
                        let last = person.last_seen;
                        out.push(transition(person, track.id, Phase::End, Some(last), now));
                        person.state = State::Upright;
                    } else if let Some(long_lie) =
                        down_update(&p, now - at, now - reported, long_lie).filter(|_| upright_since.is_none())
                    {
                        // Still down: say for how long, and raise the
                        // severity once it has been `long_lie_s`.
                        person.state =
                            State::Down { at, standing, trigger, upright_since, peak, reported: now, long_lie };
                        out.push(transition(person, track.id, Phase::Update, None, now));
                    }
                }
            }
        }

        // People whose track is gone: an open event ends once they have
        // been unseen for `lost_s`; everyone else is forgotten.
        let mut ended = Vec::new();
        self.people.retain(|&id, person| {
            if tracks.iter().any(|t| t.id == id) {
                return true;
            }
            match person.state {
                State::Down { .. } if now - person.last_seen < p.lost_s => true,
                State::Down { .. } => {
                    let last = person.last_seen;
                    ended.push(transition(person, id, Phase::End, Some(last), now));
                    false
                }
                _ => false,
            }
        });
        out.extend(ended);
    }
}

/// While a person stays down (not while they are getting up), whether an
/// `update` is due now, and with it the long-lie flag: `Some(true)` the
/// first time the person has been down `long_lie_s` (also when a reload
/// lowered it under the time already down); `Some(long_lie)` every
/// `down_update_s` (at least 1 s) after the last one; `None` otherwise.
fn down_update(p: &Falls, down_s: f64, since_report: f64, long_lie: bool) -> Option<bool> {
    if !long_lie && down_s >= p.long_lie_s - 1e-6 {
        return Some(true);
    }
    (p.down_update_s > 0.0 && since_report >= p.down_update_s.max(1.0) - 1e-6).then_some(long_lie)
}

fn transition(person: &Person, id: u64, phase: Phase, ended_at: Option<f64>, now: f64) -> FallTransition {
    let (at, trigger, peak, long_lie) = match person.state {
        State::Down { at, trigger, peak, long_lie, .. } => (at, trigger, peak, long_lie),
        State::Falling { at, trigger, .. } => (at, trigger, person.score, false),
        State::Upright => (person.last_seen, person.features, person.score, false),
    };
    FallTransition {
        phase,
        track_id: id,
        fell_at: at,
        ended_at,
        bbox: person.bbox,
        keypoints: person.keypoints,
        trigger,
        score: person.score,
        peak,
        down_s: (ended_at.unwrap_or(now) - at).max(0.0),
        long_lie,
    }
}

/// The region watched for motion around a box: wider, and extending below
/// it, where a falling body lands.
fn roi_of(b: &BBox) -> [f32; 4] {
    let (w, h) = (b.x2 - b.x1, b.y2 - b.y1);
    [(b.x1 - 0.25 * w).max(0.0), b.y1, (b.x2 + 0.25 * w).min(1.0), (b.y2 + 0.5 * h).min(1.0)]
}

fn touches_edge(b: &BBox, e: f32) -> bool {
    b.x1 <= e || b.y1 <= e || b.x2 >= 1.0 - e || b.y2 >= 1.0 - e
}

/// Pixel aspect (width over height) of a normalised box.
fn aspect(b: &BBox, frame_aspect: f32) -> f32 {
    (b.x2 - b.x1) * frame_aspect / (b.y2 - b.y1).max(1e-6)
}

/// The latest observation's features against the standing reference.
fn features(person: &Person, p: &Falls, hi: f32, frame_aspect: f32) -> Option<(FallFeatures, Reference)> {
    let last = person.obs.back()?;
    let mut r: Option<Reference> = None;
    let mut latest_t = f64::NEG_INFINITY;
    for o in person.obs.iter().take(person.obs.len() - 1) {
        let b = &o.bbox;
        if last.t - o.t > p.ref_window_s
            || o.score < hi
            || b.y1 <= p.edge_margin
            || b.y2 >= 1.0 - p.edge_margin
            || aspect(b, frame_aspect) > p.ref_max_aspect
        {
            continue;
        }
        let h = b.y2 - b.y1;
        let r = r.get_or_insert(Reference { height: h, top: b.y1, t: o.t, bbox: *b });
        r.height = r.height.max(h);
        r.top = r.top.min(b.y1);
        if o.t >= latest_t {
            latest_t = o.t;
            r.t = o.t;
            r.bbox = *b;
        }
    }
    let r = r?;
    let b = &last.bbox;
    // Hip speed: from the earliest sighting with hips in the window to now.
    let hip_speed = last.hip_y.and_then(|y| {
        let first = person.obs.iter().find(|o| last.t - o.t <= p.window_s && o.hip_y.is_some() && o.t < last.t)?;
        Some((y - first.hip_y?) / r.height / (last.t - first.t) as f32)
    });
    let f = FallFeatures {
        height_ratio: (b.y2 - b.y1) / r.height,
        drop: (b.y1 - r.top) / r.height,
        width_ratio: (b.x2 - b.x1) / (r.bbox.x2 - r.bbox.x1).max(1e-6),
        aspect: aspect(b, frame_aspect),
        motion: 0.0,
        path: "",
        torso_deg: last.torso_deg,
        hip_speed,
        head_below_hips: last.head_below_hips,
    };
    Some((f, r))
}

/// The vanish path: is this unseen person's disappearance a fall?
fn vanish(
    person: &Person,
    now: f64,
    p: &Falls,
    hi: f32,
    frame_aspect: f32,
    others: &[BBox],
    motion_in: &dyn Fn([f32; 4]) -> Motion,
) -> Option<FallFeatures> {
    let last = person.obs.back()?;
    let unseen = now - last.t;
    if !(unseen >= p.vanish_after_s - 1e-6 && unseen <= p.vanish_within_s) {
        return None;
    }
    let b = last.bbox;
    if touches_edge(&b, p.edge_margin) || person.best < p.vanish_min_score {
        return None;
    }
    let hits = person.obs.iter().filter(|o| last.t - o.t <= p.vanish_hist_s && o.score >= hi).count();
    if hits < p.vanish_min_hits as usize {
        return None;
    }
    // Speed over the last second or more: a walker leaving is fast.
    let prev = person.obs.iter().rev().find(|o| last.t - o.t >= 1.0 - 1e-6)?;
    let bh = (b.y2 - b.y1).max(1e-6);
    let dx = ((b.x1 + b.x2) - (prev.bbox.x1 + prev.bbox.x2)) / 2.0 * frame_aspect;
    let dy = ((b.y1 + b.y2) - (prev.bbox.y1 + prev.bbox.y2)) / 2.0;
    let speed = (dx * dx + dy * dy).sqrt() / bh / (last.t - prev.t) as f32;
    if speed > p.vanish_max_speed {
        return None;
    }
    if others.iter().any(|o| ioa(o, &b) >= p.occlusion_ioa) {
        return None;
    }
    // A burst of motion, centred low in the last box: the body going down.
    let m = motion_in(roi_of(&b));
    let centre = m.centre_y.map(|cy| (cy - b.y1) / bh).unwrap_or(-1.0);
    (m.fraction >= p.burst_min && centre >= p.burst_centre).then_some(FallFeatures {
        height_ratio: 1.0,
        drop: 0.0,
        width_ratio: 1.0,
        aspect: aspect(&b, frame_aspect),
        motion: m.fraction,
        path: "vanish",
        torso_deg: last.torso_deg,
        hip_speed: None,
        head_below_hips: last.head_below_hips,
    })
}

/// What the keypoints say about one sighting.
struct Skeleton {
    hip_y: Option<f32>,
    torso_deg: Option<f32>,
    head_below_hips: bool,
}

fn skeleton(pose: &Pose, min: f32, frame_aspect: f32) -> Skeleton {
    let mean = |idx: &[usize]| -> Option<(f32, f32)> {
        let (mut x, mut y, mut n) = (0.0, 0.0, 0.0);
        for &i in idx {
            let k = &pose.keypoints[i];
            if k.score >= min {
                x += k.x;
                y += k.y;
                n += 1.0;
            }
        }
        (n > 0.0).then(|| (x / n, y / n))
    };
    let hips = mean(&[kp::LEFT_HIP, kp::RIGHT_HIP]);
    let shoulders = mean(&[kp::LEFT_SHOULDER, kp::RIGHT_SHOULDER]);
    let head = mean(&[kp::NOSE, kp::LEFT_EAR, kp::RIGHT_EAR]);
    Skeleton {
        hip_y: hips.map(|h| h.1),
        torso_deg: match (shoulders, hips) {
            (Some(s), Some(h)) => Some(((h.0 - s.0) * frame_aspect).abs().atan2((h.1 - s.1).abs()).to_degrees()),
            _ => None,
        },
        head_below_hips: matches!((head, hips), (Some(hd), Some(hp)) if hd.1 > hp.1),
    }
}

/// Area of the intersection over the area of `b`.
fn ioa(a: &BBox, b: &BBox) -> f32 {
    let iw = (a.x2.min(b.x2) - a.x1.max(b.x1)).max(0.0);
    let ih = (a.y2.min(b.y2) - a.y1.max(b.y1)).max(0.0);
    iw * ih / b.area().max(1e-9)
}

/// An upright person (tall as the lost one, standing-shaped) within
/// `reappear_dist` box heights of where they vanished.
fn upright_near(o: &BBox, vbox: &BBox, p: &Falls, frame_aspect: f32) -> bool {
    let bh = vbox.y2 - vbox.y1;
    let tall = o.y2 - o.y1 >= p.upright_height_ratio * bh;
    let standing = aspect(o, frame_aspect) <= p.ref_max_aspect;
    let dx = ((o.x1 + o.x2) - (vbox.x1 + vbox.x2)) / 2.0 * frame_aspect;
    let dy = ((o.y1 + o.y2) - (vbox.y1 + vbox.y2)) / 2.0;
    tall && standing && (dx * dx + dy * dy).sqrt() <= p.reappear_dist * bh
}

#[cfg(test)]
mod tests {
    //! Scripted sequences at 5 fps through the real person tracker and the
    //! rule. Boxes are normalised; the frame is 16:9. A standing person is
    //! 0.1 wide and 0.6 tall (pixel aspect 0.3).
    use super::*;
    use crate::analytics::tracker::{Tracker, TrackerParams};
    use crate::infer::Detection;

    const DT: f64 = 0.2;
    const STAND: [f32; 4] = [0.45, 0.2, 0.55, 0.8];

    fn b(v: [f32; 4]) -> BBox {
        BBox { x1: v[0], y1: v[1], x2: v[2], y2: v[3] }
    }

    struct Script {
        tracker: Tracker,
        rule: FallRule,
        t: f64,
        log: Vec<(f64, Phase, f64)>,
        triggers: Vec<FallFeatures>,
        /// Every transition, `update`s included (`log` and `phases` leave
        /// the still-down updates out).
        all: Vec<(f64, FallTransition)>,
        thumbs: Option<(Thumb, Thumb)>,
    }

    impl Script {
        fn new() -> Script {
            let params = TrackerParams {
                high: 0.2,
                low: 0.05,
                match_iou: 0.3,
                low_match_iou: 0.2,
                min_hits: 2,
                max_age_s: 2.0,
                predict: false,
            };
            Script {
                tracker: Tracker::new(params),
                rule: FallRule::new(Falls::default(), 0.2),
                t: 0.0,
                log: Vec::new(),
                triggers: Vec::new(),
                all: Vec::new(),
                thumbs: None,
            }
        }

        /// One frame with these people (box, score).
        fn frame(&mut self, people: &[([f32; 4], f32)]) {
            let poses: Vec<Pose> =
                people.iter().map(|(v, s)| Pose { bbox: b(*v), score: *s, keypoints: body(b(*v)) }).collect();
            let dets: Vec<Detection> =
                poses.iter().map(|p| Detection { bbox: p.bbox, class_id: 0, score: p.score, track_id: None }).collect();
            let pinned: Vec<u64> = self.rule.pinned().collect();
            self.tracker.update_pinned(self.t, &dets, &pinned);
            let mut out = Vec::new();
            let thumbs = self.thumbs.as_ref().map(|(a, b)| (a, b));
            self.rule.observe(self.t, self.tracker.tracks(), &poses, thumbs, 16.0 / 9.0, &mut out);
            for tr in out {
                self.all.push((self.t, tr.clone()));
                if tr.phase == Phase::Update {
                    continue;
                }
                self.log.push((self.t, tr.phase, tr.fell_at));
                self.triggers.push(tr.trigger);
            }
            self.t += DT;
        }

        /// `n` frames of the same people.
        fn hold(&mut self, n: usize, people: &[([f32; 4], f32)]) {
            for _ in 0..n {
                self.frame(people);
            }
        }

        fn phases(&self) -> Vec<Phase> {
            self.log.iter().map(|l| l.1).collect()
        }
    }

    /// Runs `scenario` with the default parameters and with `weakened`
    /// ones (one guard switched off). The negative tests assert that the
    /// default stays silent *and* that the weakened rule fires, so each test
    /// proves its guard is what holds.
    fn with_and_without(weakened: Falls, scenario: impl Fn(&mut Script)) -> (Vec<Phase>, Vec<Phase>) {
        let mut a = Script::new();
        scenario(&mut a);
        let mut b = Script::new();
        b.rule = FallRule::new(weakened, 0.2);
        scenario(&mut b);
        (a.phases(), b.phases())
    }

    /// A skeleton filling the box: head up for a tall box, lying head-left
    /// for a wide one (pixel aspect over 1).
    fn body(bx: BBox) -> [Keypoint; 17] {
        let (w, h) = (bx.x2 - bx.x1, bx.y2 - bx.y1);
        let lying = w * 16.0 / 9.0 > h;
        // Position along the body (0 head, 1 feet) and across it (-1..1).
        let at = |along: f32, across: f32| {
            let (x, y) = if lying {
                (bx.x1 + along * w, bx.y1 + h / 2.0 + across * h * 0.3)
            } else {
                (bx.x1 + w / 2.0 + across * w * 0.3, bx.y1 + along * h)
            };
            Keypoint { x, y, score: 0.6 }
        };
        let mut k = [Keypoint::default(); 17];
        k[kp::NOSE] = at(0.05, 0.0);
        k[kp::LEFT_EAR] = at(0.05, -0.3);
        k[kp::RIGHT_EAR] = at(0.05, 0.3);
        k[kp::LEFT_SHOULDER] = at(0.2, -1.0);
        k[kp::RIGHT_SHOULDER] = at(0.2, 1.0);
        k[kp::LEFT_HIP] = at(0.55, -0.6);
        k[kp::RIGHT_HIP] = at(0.55, 0.6);
        k[kp::LEFT_ANKLE] = at(1.0, -0.5);
        k[kp::RIGHT_ANKLE] = at(1.0, 0.5);
        k
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-6
    }

    /// Standing for 2 s, then down within 0.4 s.
    fn fall(s: &mut Script) {
        s.hold(10, &[(STAND, 0.6)]);
        s.frame(&[([0.42, 0.4, 0.6, 0.84], 0.4)]); // t = 2.0, going down
        s.frame(&[([0.38, 0.6, 0.68, 0.85], 0.3)]); // t = 2.2, collapsed
    }

    #[test]
    fn fast_fall_starts_after_confirm_then_recovers() {
        let mut s = Script::new();
        fall(&mut s);
        // Lying: the pose model scores low, the tracker's second stage keeps it.
        s.hold(10, &[([0.38, 0.6, 0.68, 0.85], 0.12)]);
        assert_eq!(s.log.len(), 1, "{:?}", s.log);
        let (t, phase, fell_at) = s.log[0];
        assert_eq!(phase, Phase::Start);
        assert!(close(fell_at, 2.2), "collapse seen at 2.2, got {fell_at}");
        assert!(close(t, 2.8), "start after confirm_s 0.6, got {t}");
        // What fired it, as the event reports it.
        let f = s.triggers[0];
        assert_eq!(f.path, "pose");
        assert!(f.height_ratio < 0.45 && f.drop > 0.6 && f.width_ratio > 1.5, "{f:?}");
        assert!(f.torso_deg.is_some_and(|a| a > 80.0), "lying skeleton: {f:?}");
        assert!(f.hip_speed.is_some_and(|v| v > 0.1), "hips went down: {f:?}");
        assert_eq!(s.rule.down().count(), 1);
        // Getting up, through a crouch, then upright for recover_s.
        s.frame(&[([0.42, 0.4, 0.6, 0.84], 0.4)]);
        s.hold(15, &[(STAND, 0.6)]);
        assert_eq!(s.phases(), vec![Phase::Start, Phase::End]);
        assert_eq!(s.rule.down().count(), 0);
    }

    #[test]
    fn staying_down_sends_updates_with_the_time_down_and_then_the_long_lie() {
        let mut s = Script::new();
        fall(&mut s); // collapse seen at 2.2
        s.hold(380, &[([0.38, 0.6, 0.68, 0.85], 0.12)]); // 76 s down
        let phases: Vec<Phase> = s.all.iter().map(|(_, tr)| tr.phase).collect();
        assert_eq!(phases[0], Phase::Start);
        assert!(phases[1..].iter().all(|p| *p == Phase::Update), "{phases:?}");
        let (t0, start) = &s.all[0];
        assert!(!start.long_lie, "a fall is not a long lie at its start");
        assert!(close(start.down_s, t0 - 2.2), "down since the collapse: {}", start.down_s);
        // Every update says how long, growing; the one at long_lie_s (60 s
        // after the collapse) raises the flag, which then stays up.
        let mut last = start.down_s;
        let mut long_at = None;
        for (t, tr) in &s.all[1..] {
            assert!(tr.down_s > last && close(tr.down_s, t - 2.2), "{} after {last}", tr.down_s);
            last = tr.down_s;
            if tr.long_lie && long_at.is_none() {
                long_at = Some(*t);
            }
            assert_eq!(tr.long_lie, long_at.is_some(), "the flag never drops at {t}");
        }
        let long_at = long_at.expect("a long-lie update");
        assert!((62.2 - 1e-6..62.2 + DT).contains(&long_at), "long lie at 60 s down: {long_at}");
        // Start at 2.8; updates every down_update_s (15 s) and the long-lie one.
        let times: Vec<f64> = s.all[1..].iter().map(|(t, _)| *t).collect();
        assert_eq!(times.len(), 5, "{times:?}");
        for (got, want) in times.iter().zip([17.8, 32.8, 47.8, 62.2, 77.2]) {
            assert!((got - want).abs() < DT, "{times:?}");
        }
    }

    #[test]
    fn getting_up_sends_no_update_and_a_reload_to_zero_raises_an_open_fall() {
        let mut s = Script::new();
        fall(&mut s);
        s.hold(70, &[([0.38, 0.6, 0.68, 0.85], 0.12)]); // down until t = 16.4
        s.frame(&[([0.42, 0.4, 0.6, 0.84], 0.4)]);
        s.hold(12, &[(STAND, 0.6)]); // upright from 16.6 (end at 18.6), past the 17.8 update
        let phases: Vec<Phase> = s.all.iter().map(|(_, tr)| tr.phase).collect();
        assert_eq!(phases, vec![Phase::Start, Phase::End], "no update while getting up");

        let mut s = Script::new();
        fall(&mut s);
        s.hold(10, &[([0.38, 0.6, 0.68, 0.85], 0.12)]);
        assert!(!s.all[0].1.long_lie);
        s.rule.set_params(Falls { long_lie_s: 0.0, ..Falls::default() });
        s.frame(&[([0.38, 0.6, 0.68, 0.85], 0.12)]);
        let (_, last) = s.all.last().expect("an update");
        assert!(last.phase == Phase::Update && last.long_lie, "0 means critical now, for an open fall too");
    }

    #[test]
    fn long_lie_zero_is_critical_from_the_start_and_end_says_how_long() {
        let mut s = Script::new();
        s.rule = FallRule::new(Falls { long_lie_s: 0.0, down_update_s: 0.0, ..Falls::default() }, 0.2);
        fall(&mut s);
        s.hold(100, &[([0.38, 0.6, 0.68, 0.85], 0.12)]);
        s.frame(&[([0.42, 0.4, 0.6, 0.84], 0.4)]); // getting up, through a crouch
        s.hold(15, &[(STAND, 0.6)]);
        let phases: Vec<Phase> = s.all.iter().map(|(_, tr)| tr.phase).collect();
        assert_eq!(phases, vec![Phase::Start, Phase::End], "no updates with down_update_s 0");
        assert!(s.all[0].1.long_lie && s.all[1].1.long_lie);
        let end = &s.all[1].1;
        let ended = end.ended_at.expect("end time");
        assert!(close(end.down_s, ended - 2.2), "down from the collapse to getting up: {}", end.down_s);
    }

    #[test]
    fn lost_fallen_person_ends_after_lost_s_not_before() {
        let mut s = Script::new();
        fall(&mut s);
        s.hold(5, &[([0.38, 0.6, 0.68, 0.85], 0.12)]); // start at 2.8
        let last_seen = s.t - DT;
        // Occlusion gap of 4 s: the tracker keeps the pinned track, no end.
        s.hold(20, &[]);
        assert_eq!(s.phases(), vec![Phase::Start]);
        s.hold(5, &[([0.38, 0.6, 0.68, 0.85], 0.1)]);
        assert_eq!(s.phases(), vec![Phase::Start], "seen again: still the same event, no second start");
        let seen_again = s.t - DT;
        s.hold(60, &[]);
        assert_eq!(s.phases(), vec![Phase::Start, Phase::End]);
        let (t_end, _, _) = s.log[1];
        assert!(t_end >= seen_again + 10.0 - 1e-6 && t_end < seen_again + 10.0 + DT, "end at lost_s: {t_end}");
        assert!(last_seen < seen_again);
    }

    #[test]
    fn slow_sit_is_not_a_fall() {
        let (rule, weak) = with_and_without(Falls { fall_height_ratio: 0.8, ..Falls::default() }, |s| {
            s.hold(10, &[(STAND, 0.6)]);
            // Over 2 s the box loses 0.18 of its 0.6 height and stays there: seated.
            for i in 1..=10 {
                let k = i as f32 / 10.0;
                s.frame(&[([0.44, 0.2 + 0.18 * k, 0.56 + 0.02 * k, 0.8], 0.55)]);
            }
            s.hold(20, &[([0.44, 0.38, 0.58, 0.8], 0.5)]);
        });
        assert!(rule.is_empty(), "{rule:?}");
        assert_eq!(weak, vec![Phase::Start], "a looser height ratio would call sitting a fall");
    }

    #[test]
    fn bending_over_is_not_a_fall() {
        let weak = Falls { fall_height_ratio: 0.8, down_height_ratio: 0.8, ..Falls::default() };
        let (rule, weak) = with_and_without(weak, |s| {
            s.hold(10, &[(STAND, 0.6)]);
            // Picking something up: the box drops to 0.75 of its height, wider, and back.
            s.frame(&[([0.43, 0.3, 0.6, 0.8], 0.5)]);
            s.hold(4, &[([0.42, 0.36, 0.62, 0.8], 0.4)]);
            s.frame(&[([0.43, 0.3, 0.6, 0.8], 0.5)]);
            s.hold(10, &[(STAND, 0.6)]);
        });
        assert!(rule.is_empty(), "{rule:?}");
        assert_eq!(weak[0], Phase::Start, "the hips-stay-high margin is what holds");
    }

    #[test]
    fn lying_from_the_start_is_not_a_fall() {
        let mut s = Script::new();
        // Someone (or a "person" on a table base) lies there from the first frame.
        s.hold(50, &[([0.3, 0.65, 0.7, 0.85], 0.35)]);
        assert!(s.log.is_empty(), "no standing reference, no fall: {:?}", s.log);
    }

    #[test]
    fn walking_out_of_frame_is_not_a_fall() {
        let (rule, weak) = with_and_without(Falls { min_width_ratio: 0.0, ..Falls::default() }, |s| {
            s.hold(10, &[([0.87, 0.2, 0.97, 0.8], 0.6)]);
            // Leaving at the right edge: the box is cut, narrow and short.
            s.frame(&[([0.91, 0.35, 0.99, 0.8], 0.4)]);
            s.frame(&[([0.94, 0.55, 0.995, 0.8], 0.3)]);
            s.hold(10, &[]);
        });
        assert!(rule.is_empty(), "{rule:?}");
        assert_eq!(weak, vec![Phase::Start], "without the width guard the cut box looks like a collapse");
    }

    /// Thumbnails where the region below `y_from` changed (a body going down).
    fn burst(y_from: f32) -> (Thumb, Thumb) {
        let (w, h) = (96u32, 54u32);
        let prev = Thumb { w, h, px: vec![50; (w * h) as usize] };
        let mut cur = prev.clone();
        for y in (y_from * h as f32) as u32..h {
            for x in 0..w {
                cur.px[(y * w + x) as usize] = 160;
            }
        }
        (cur, prev)
    }

    fn still() -> (Thumb, Thumb) {
        let t = Thumb { w: 96, h: 54, px: vec![50; 96 * 54] };
        (t.clone(), t)
    }

    #[test]
    fn vanishing_with_a_low_burst_of_motion_is_a_fall() {
        let mut s = Script::new();
        s.thumbs = Some(still());
        s.hold(15, &[(STAND, 0.5)]);
        // The pose model loses the person as they go down; the lower part of
        // where they stood churns…
        s.thumbs = Some(burst(0.55));
        s.hold(2, &[]);
        assert!(s.log.is_empty());
        // …then everything is still: down.
        s.thumbs = Some(still());
        s.hold(5, &[]);
        assert_eq!(s.phases(), vec![Phase::Start], "{:?}", s.log);
    }

    #[test]
    fn vanishing_behind_another_person_is_not_a_fall() {
        let weak = Falls { occlusion_ioa: 2.0, reappear_dist: 0.0, ..Falls::default() };
        let (rule, weak) = with_and_without(weak, |s| {
            s.thumbs = Some(still());
            // A stands still while B, nearer the camera (taller), walks
            // across in front of them.
            let b_at = |x: f32| ([x, 0.1, x + 0.16, 0.95], 0.6);
            s.hold(10, &[(STAND, 0.5), b_at(0.1)]);
            for i in 1..=8 {
                s.frame(&[(STAND, 0.5), b_at(0.1 + 0.04 * i as f32)]);
            }
            // B now covers A: A vanishes, and B's legs churn the region.
            s.thumbs = Some(burst(0.55));
            s.hold(2, &[b_at(0.42)]);
            s.thumbs = Some(still());
            s.hold(5, &[b_at(0.42)]);
        });
        assert!(rule.is_empty(), "occluded, not fallen: {rule:?}");
        assert_eq!(weak, vec![Phase::Start], "the occlusion guard is what holds");
    }

    #[test]
    fn vanish_cancelled_when_the_person_reappears_upright() {
        let (rule, weak) = with_and_without(Falls { reappear_dist: 0.0, ..Falls::default() }, |s| {
            s.thumbs = Some(still());
            s.hold(15, &[(STAND, 0.5)]);
            s.thumbs = Some(burst(0.55));
            s.hold(2, &[]);
            // Back in view, upright, beside where they vanished: too far to
            // match the old track, close enough to be the same person.
            s.thumbs = Some(still());
            s.hold(5, &[([0.56, 0.21, 0.66, 0.8], 0.5)]);
        });
        assert!(rule.is_empty(), "{rule:?}");
        assert_eq!(weak, vec![Phase::Start]);
    }

    #[test]
    fn a_bystander_already_there_does_not_cancel_a_vanish_fall() {
        let mut s = Script::new();
        s.thumbs = Some(still());
        // A caregiver stands right beside the person the whole time.
        let carer = ([0.56, 0.2, 0.66, 0.8], 0.6);
        s.hold(15, &[(STAND, 0.5), carer]);
        s.thumbs = Some(burst(0.55));
        s.hold(2, &[carer]);
        s.thumbs = Some(still());
        s.hold(5, &[carer]);
        assert_eq!(s.phases(), vec![Phase::Start], "{:?}", s.log);
    }

    #[test]
    fn getting_up_ends_the_event_even_when_scored_low() {
        let mut s = Script::new();
        fall(&mut s);
        s.hold(5, &[([0.38, 0.6, 0.68, 0.85], 0.12)]);
        // Up again, but the model only gives them 0.1 (under track_score).
        s.frame(&[([0.42, 0.4, 0.6, 0.84], 0.1)]);
        s.hold(15, &[(STAND, 0.1)]);
        assert_eq!(s.phases(), vec![Phase::Start, Phase::End]);
    }

    #[test]
    fn lost_s_zero_does_not_end_an_event_while_the_person_is_seen() {
        let mut s = Script::new();
        s.rule = FallRule::new(Falls { lost_s: 0.0, ..Falls::default() }, 0.2);
        fall(&mut s);
        s.hold(10, &[([0.38, 0.6, 0.68, 0.85], 0.12)]);
        assert_eq!(s.phases(), vec![Phase::Start]);
        s.frame(&[]);
        assert_eq!(s.phases(), vec![Phase::Start, Phase::End], "unseen: ends at once");
    }

    #[test]
    fn motion_cue_off_means_no_vanish_path() {
        let mut s = Script::new();
        s.rule = FallRule::new(Falls { vanish: false, ..Falls::default() }, 0.2);
        s.thumbs = Some(still());
        s.hold(15, &[(STAND, 0.5)]);
        s.thumbs = Some(burst(0.55));
        s.hold(2, &[]);
        s.thumbs = Some(still());
        s.hold(5, &[]);
        assert!(s.log.is_empty());
    }
}
