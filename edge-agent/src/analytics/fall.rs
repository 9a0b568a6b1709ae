//! The fall rule: a tracked person collapses fast and stays down.
//!
//! Per person track (from the pose tracker) the rule keeps a few seconds of
//! observations. A person's **reference** is how they looked standing in
//! the last `ref_window_s`: confident, not cut by the frame edge, and
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
//! Torso angle and hips-below-head are *not* used: a fall towards the
//! camera still measures 36–48° from vertical, and lying keypoints are the
//! least reliable ones (measurements in the README, "Falls").
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

use super::motion::{motion, Motion, Thumb};
use super::tracker::Track;
use crate::config::Falls;
use crate::infer::pose::{Keypoint, Pose};
use crate::infer::BBox;

pub use super::lane::Phase;

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
}

#[derive(Debug, Clone, Copy)]
struct Obs {
    t: f64,
    bbox: BBox,
    score: f32,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Path {
    Pose,
    Vanish { vbox: BBox },
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    Upright,
    Falling { at: f64, path: Path, roi: [f32; 4], standing: f32, trigger: FallFeatures },
    Down { at: f64, standing: f32, trigger: FallFeatures, upright_since: Option<f64>, peak: f32 },
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
    /// Frame width over height, for pixel aspect and speed.
    frame_aspect: f32,
    people: HashMap<u64, Person>,
}

impl FallRule {
    /// `confident` is the pose tracker's birth score (`pose.track_score`).
    pub fn new(params: Falls, confident: f32) -> FallRule {
        FallRule { p: params, confident, frame_aspect: 16.0 / 9.0, people: HashMap::new() }
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
    /// - `motion`: (this frame's thumbnail, the one `motion_lag_s` back);
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
        self.frame_aspect = frame_aspect;
        let (p, hi) = (self.p, self.confident);
        let keep = p.ref_window_s.max(p.vanish_hist_s).max(1.0) + 2.0;
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
                person.obs.push_back(Obs { t: now, bbox: track.bbox, score: pose.score });
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
                        let own = track.matched;
                        let reappeared = poses.iter().enumerate().any(|(i, o)| {
                            Some(i) != own && o.score >= hi && upright_near(&o.bbox, &vbox, &p, frame_aspect)
                        });
                        if reappeared {
                            person.state = State::Upright;
                            continue;
                        }
                    }
                    let f = if matched.is_some() { features(person, &p, hi, frame_aspect) } else { None };
                    let hr = f.as_ref().map(|(f, _)| f.height_ratio);
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
                            trigger: FallFeatures { motion: m, ..trigger },
                            upright_since: None,
                            peak: person.score,
                        };
                        out.push(transition(person, track.id, Phase::Start, None));
                    } else if now - at > p.fall_timeout_s {
                        person.state = State::Upright;
                    }
                }
                State::Down { at, standing, trigger, upright_since, peak } => {
                    let peak = if matched.is_some() { peak.max(person.score) } else { peak };
                    let b = person.bbox;
                    let upright = confident && (b.y2 - b.y1) / standing.max(1e-3) >= p.upright_height_ratio;
                    let upright_since = match (matched.is_some(), upright) {
                        (true, true) => Some(upright_since.unwrap_or(now)),
                        (true, false) => None,
                        (false, _) => upright_since,
                    };
                    person.state = State::Down { at, standing, trigger, upright_since, peak };
                    if let Some(since) = upright_since.filter(|s| now - s >= p.recover_s) {
                        out.push(transition(person, track.id, Phase::End, Some(since)));
                        person.state = State::Upright;
                        person.obs.clear();
                    } else if now - person.last_seen >= p.lost_s {
                        let last = person.last_seen;
                        out.push(transition(person, track.id, Phase::End, Some(last)));
                        person.state = State::Upright;
                    }
                }
            }
        }

        // People whose track is gone: an open event ends once they have
        // been unseen for `lost_s`; everyone else is forgotten.
        let live: Vec<u64> = tracks.iter().map(|t| t.id).collect();
        let mut ended = Vec::new();
        self.people.retain(|&id, person| {
            if live.contains(&id) {
                return true;
            }
            match person.state {
                State::Down { .. } if now - person.last_seen < p.lost_s => true,
                State::Down { .. } => {
                    let last = person.last_seen;
                    ended.push(transition(person, id, Phase::End, Some(last)));
                    false
                }
                _ => false,
            }
        });
        out.extend(ended);
    }
}

fn transition(person: &Person, id: u64, phase: Phase, ended_at: Option<f64>) -> FallTransition {
    let (at, trigger, peak) = match person.state {
        State::Down { at, trigger, peak, .. } => (at, trigger, peak),
        State::Falling { at, trigger, .. } => (at, trigger, person.score),
        State::Upright => (person.last_seen, person.features, person.score),
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
    let f = FallFeatures {
        height_ratio: (b.y2 - b.y1) / r.height,
        drop: (b.y1 - r.top) / r.height,
        width_ratio: (b.x2 - b.x1) / (r.bbox.x2 - r.bbox.x1).max(1e-6),
        aspect: aspect(b, frame_aspect),
        motion: 0.0,
        path: "",
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
    })
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
