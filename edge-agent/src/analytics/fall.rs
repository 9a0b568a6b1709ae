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
use crate::infer::pose::{Keypoint, Pose};
use crate::vocab::BBox;

use crate::vocab::Phase;

mod cues;
use cues::*;

/// What the rule measured on one person on one frame.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize)]
pub struct FallFeatures {
    /// Box height over standing height.
    pub(crate) height_ratio: f32,
    /// Downward move of the box top since the reference, in standing heights.
    pub(crate) drop: f32,
    /// Box width over the reference's width.
    pub(crate) width_ratio: f32,
    /// Box width over height, in pixels.
    pub(crate) aspect: f32,
    /// Fraction of the watched region that moved (vanish path and while
    /// confirming).
    pub(crate) motion: f32,
    /// Which way the fall was seen: "pose" or "vanish" (empty before).
    pub(crate) path: &'static str,
    /// Reported, not decided on (see the module docs): the torso angle from
    /// vertical in degrees, when shoulders and hips show…
    pub(crate) torso_deg: Option<f32>,
    /// …the hip centre's downward speed over `window_s`, standing heights
    /// per second…
    pub(crate) hip_speed: Option<f32>,
    /// …and whether the head shows lower than the hips.
    pub(crate) head_below_hips: bool,
}

/// A change in a person's fall event.
#[derive(Debug, Clone, PartialEq)]
pub struct FallTransition {
    pub(crate) phase: Phase,
    pub(crate) track_id: u64,
    /// When the collapse was seen (rule time).
    pub(crate) fell_at: f64,
    /// For `end`: when the person recovered or was last seen.
    pub(crate) ended_at: Option<f64>,
    /// The person's box (the last one seen).
    pub(crate) bbox: BBox,
    /// The latest skeleton seen.
    pub(crate) keypoints: Option<[Keypoint; 17]>,
    /// Features at the collapse: what crossed the thresholds.
    pub(crate) trigger: FallFeatures,
    pub(crate) score: f32,
    pub(crate) peak: f32,
    /// Seconds the person has been down: from the collapse to this frame,
    /// or to `ended_at` for an `end`.
    pub(crate) down_s: f64,
    /// The person has stayed down `long_lie_s` (or `long_lie_s` is 0): the
    /// event's severity rises (README, "Falls: the long lie").
    pub(crate) long_lie: bool,
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
    pub(crate) fn set_params(&mut self, params: Falls) {
        self.p = params;
    }

    pub(crate) fn params(&self) -> &Falls {
        &self.p
    }

    /// Track ids the tracker must keep however long they are unseen: people
    /// falling or down (the rule decides when they are lost).
    pub(crate) fn pinned(&self) -> impl Iterator<Item = u64> + '_ {
        self.people.iter().filter(|(_, p)| !matches!(p.state, State::Upright)).map(|(id, _)| *id)
    }

    /// Track ids with an open fall event.
    pub(crate) fn down(&self) -> impl Iterator<Item = u64> + '_ {
        self.people.iter().filter(|(_, p)| matches!(p.state, State::Down { .. })).map(|(id, _)| *id)
    }

    /// The latest features of a tracked person, for annotation.
    pub(crate) fn features(&self, track_id: u64) -> Option<&FallFeatures> {
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

#[cfg(test)]
mod tests;
