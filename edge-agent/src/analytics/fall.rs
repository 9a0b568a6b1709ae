//! The fall rule: a tracked person goes from upright to lying, fast, and
//! stays down.
//!
//! Per person track (from the pose tracker) the rule keeps a few seconds of
//! history and computes, each frame, [`FallFeatures`]:
//! - **height ratio**: box height over the person's *standing height* (their
//!   tallest box in the last `history_s`). The strongest single cue on real
//!   footage: lying people measured about 0.36, bending ≥ 0.72, upright
//!   ≥ 0.94 (see the README, "Falls");
//! - **drop**: how far the hip centre fell within `window_s`, in standing
//!   heights (hips from keypoints, else the box centre);
//! - **torso angle** from vertical (mid-shoulders → mid-hips), when visible;
//! - **head below hips**, and the box **aspect** (width over height).
//!
//! States: `Upright` → `Falling` (the hips dropped ≥ `min_drop` within
//! `window_s` and the posture is lying) → `Down` once the lying posture has
//! held `confirm_s`: that is the event's `start`. `end` comes when the person
//! has been upright for `recover_s`, or unseen for `lost_s`.
//!
//! Guards against the usual false alarms:
//! - bending or picking something up: the hips stay high (small drop, height
//!   ratio above `lying_height_ratio`);
//! - sitting down: slower than `window_s`, torso upright;
//! - walking out of frame: a box at the frame edge is not judged;
//! - people overlapping: a box overlapping another person's is not judged;
//! - lying from the start: no drop was ever seen, so no fall.
//!
//! Like every rule it never reads a clock: time comes in with each frame.

use std::collections::HashMap;
use std::collections::VecDeque;

use super::tracker::Track;
use crate::config::Falls;
use crate::infer::pose::{kp, Keypoint, Pose};
use crate::infer::BBox;

pub use super::lane::Phase;

/// What the rule measured on one person on one frame.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize)]
pub struct FallFeatures {
    /// Box height over standing height.
    pub height_ratio: f32,
    /// Hip-centre drop within `window_s`, in standing heights (down > 0).
    pub drop: f32,
    /// Hip-centre speed downwards, standing heights per second.
    pub hip_speed: f32,
    /// Torso angle from vertical in degrees, when shoulders and hips show.
    pub torso_deg: Option<f32>,
    /// Head keypoints lower in the image than the hips.
    pub head_below_hips: bool,
    /// Box width over height.
    pub aspect: f32,
}

/// A change in a person's fall event.
#[derive(Debug, Clone, PartialEq)]
pub struct FallTransition {
    pub phase: Phase,
    pub track_id: u64,
    /// When the fall was seen (rule time): the event's start.
    pub fell_at: f64,
    /// For `end`: when the person was last down (recovered or lost).
    pub ended_at: Option<f64>,
    pub bbox: BBox,
    /// The latest skeleton, when the pose model saw the person this frame.
    pub keypoints: Option<[Keypoint; 17]>,
    /// The features on the frame that fired (for `start`) or the latest.
    pub features: FallFeatures,
    /// Features at the moment of the fall (what crossed the thresholds).
    pub trigger: FallFeatures,
    /// Person score now, and the highest since the fall.
    pub score: f32,
    pub peak: f32,
}

#[derive(Debug, Clone, Copy)]
struct Sample {
    t: f64,
    height: f32,
    hip_y: f32,
    judged: bool,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    Upright,
    Falling { at: f64, trigger: FallFeatures, standing: f32 },
    Down { at: f64, trigger: FallFeatures, standing: f32, upright_since: Option<f64>, peak: f32 },
}

#[derive(Debug, Clone)]
struct Person {
    history: VecDeque<Sample>,
    state: State,
    last_seen: f64,
    bbox: BBox,
    features: FallFeatures,
    keypoints: Option<[Keypoint; 17]>,
    score: f32,
}

/// The fall rule of one camera.
#[derive(Debug, Clone)]
pub struct FallRule {
    p: Falls,
    people: HashMap<u64, Person>,
}

impl FallRule {
    pub fn new(params: Falls) -> FallRule {
        FallRule { p: params, people: HashMap::new() }
    }

    pub fn params(&self) -> &Falls {
        &self.p
    }

    /// Track ids with an open fall event.
    pub fn down(&self) -> impl Iterator<Item = u64> + '_ {
        self.people.iter().filter(|(_, p)| matches!(p.state, State::Down { .. })).map(|(id, _)| *id)
    }

    /// The latest features of a tracked person, for annotation.
    pub fn features(&self, track_id: u64) -> Option<&FallFeatures> {
        self.people.get(&track_id).map(|p| &p.features)
    }

    /// Advances the rule to `now` with the person tracker's confirmed
    /// tracks; `poses` are this frame's poses that `Track::matched` indexes.
    pub fn observe(&mut self, now: f64, tracks: &[Track], poses: &[Pose], out: &mut Vec<FallTransition>) {
        out.clear();
        let p = self.p;
        let keep = p.window_s.max(p.history_s) + 0.5;
        for (i, track) in tracks.iter().enumerate() {
            if !track.confirmed {
                continue;
            }
            let Some(pose) = track.matched.and_then(|m| poses.get(m)) else { continue };
            let overlapped = tracks.iter().enumerate().any(|(j, o)| {
                j != i && o.confirmed && o.is_visible() && o.bbox.iou(&track.bbox) > p.overlap_iou
            });
            let judged = !overlapped && !at_edge(&track.bbox, p.edge_margin);
            let person = self.people.entry(track.id).or_insert_with(|| Person {
                history: VecDeque::with_capacity(64),
                state: State::Upright,
                last_seen: now,
                bbox: track.bbox,
                features: FallFeatures::default(),
                keypoints: None,
                score: 0.0,
            });
            person.last_seen = now;
            person.bbox = track.bbox;
            person.keypoints = Some(pose.keypoints);
            person.score = pose.score;
            let height = track.bbox.y2 - track.bbox.y1;
            let hip_y = hip_centre(pose, p.keypoint_score).unwrap_or((track.bbox.y1 + track.bbox.y2) / 2.0);
            while person.history.front().is_some_and(|s| now - s.t > keep) {
                person.history.pop_front();
            }
            person.history.push_back(Sample { t: now, height, hip_y, judged });

            let standing = match person.state {
                State::Upright => standing_height(&person.history, now, p.history_s).max(height),
                State::Falling { standing, .. } | State::Down { standing, .. } => standing,
            };
            let f = features(pose, &track.bbox, &person.history, now, standing, &p);
            person.features = f;
            let lying = is_lying(&f, &p);
            let upright = is_upright(&f, &p);

            match person.state {
                State::Upright => {
                    if judged && lying && f.drop >= p.min_drop {
                        person.state = State::Falling { at: now, trigger: f, standing };
                        if p.confirm_s <= 0.0 {
                            out.push(person.go_down(track.id, now, f, standing));
                        }
                    }
                }
                State::Falling { at, trigger, standing } => {
                    if upright {
                        person.state = State::Upright;
                    } else if lying && now - at >= p.confirm_s {
                        out.push(person.go_down(track.id, at, trigger, standing));
                    }
                }
                State::Down { at, trigger, standing, upright_since, peak } => {
                    let peak = peak.max(pose.score);
                    let upright_since = if upright { Some(upright_since.unwrap_or(now)) } else { None };
                    person.state = State::Down { at, trigger, standing, upright_since, peak };
                    if let Some(since) = upright_since.filter(|s| now - s >= p.recover_s) {
                        out.push(person.end(track.id, since));
                    }
                }
            }
        }

        // People not seen this frame: a fall waiting for confirmation is
        // abandoned after `window_s`; an open event ends after `lost_s`.
        let mut gone = Vec::new();
        for (&id, person) in self.people.iter_mut() {
            let unseen = now - person.last_seen;
            if unseen <= 0.0 {
                continue;
            }
            match person.state {
                State::Down { .. } if unseen >= p.lost_s => {
                    let last = person.last_seen;
                    out.push(person.end(id, last));
                    gone.push(id);
                }
                State::Down { .. } => {}
                State::Falling { .. } if unseen >= p.window_s => gone.push(id),
                _ if unseen >= keep => gone.push(id),
                _ => {}
            }
        }
        for id in gone {
            self.people.remove(&id);
        }
    }
}

impl Person {
    fn go_down(&mut self, id: u64, at: f64, trigger: FallFeatures, standing: f32) -> FallTransition {
        self.state = State::Down { at, trigger, standing, upright_since: None, peak: self.score };
        FallTransition {
            phase: Phase::Start,
            track_id: id,
            fell_at: at,
            ended_at: None,
            bbox: self.bbox,
            keypoints: self.keypoints,
            features: self.features,
            trigger,
            score: self.score,
            peak: self.score,
        }
    }

    fn end(&mut self, id: u64, ended_at: f64) -> FallTransition {
        let (at, trigger, peak) = match self.state {
            State::Down { at, trigger, peak, .. } => (at, trigger, peak),
            _ => (ended_at, self.features, self.score),
        };
        self.state = State::Upright;
        self.history.clear();
        FallTransition {
            phase: Phase::End,
            track_id: id,
            fell_at: at,
            ended_at: Some(ended_at),
            bbox: self.bbox,
            keypoints: self.keypoints,
            features: self.features,
            trigger,
            score: self.score,
            peak,
        }
    }
}

/// The box touches the left, right or bottom edge: the person may be
/// partly out of frame, so their box height says nothing about posture.
fn at_edge(b: &BBox, margin: f32) -> bool {
    b.x1 <= margin || b.x2 >= 1.0 - margin || b.y2 >= 1.0 - margin
}

fn visible(k: &Keypoint, min: f32) -> Option<(f32, f32)> {
    (k.score >= min).then_some((k.x, k.y))
}

/// Mean of the visible points among `idx`.
fn mean_of(pose: &Pose, idx: &[usize], min: f32) -> Option<(f32, f32)> {
    let pts: Vec<(f32, f32)> = idx.iter().filter_map(|&i| visible(&pose.keypoints[i], min)).collect();
    (!pts.is_empty()).then(|| {
        let n = pts.len() as f32;
        (pts.iter().map(|p| p.0).sum::<f32>() / n, pts.iter().map(|p| p.1).sum::<f32>() / n)
    })
}

fn hip_centre(pose: &Pose, min: f32) -> Option<f32> {
    mean_of(pose, &[kp::LEFT_HIP, kp::RIGHT_HIP], min).map(|p| p.1)
}

/// Tallest box among judged samples in the last `span` seconds.
fn standing_height(history: &VecDeque<Sample>, now: f64, span: f64) -> f32 {
    history.iter().filter(|s| s.judged && now - s.t <= span).map(|s| s.height).fold(0.0, f32::max)
}

fn features(pose: &Pose, b: &BBox, history: &VecDeque<Sample>, now: f64, standing: f32, p: &Falls) -> FallFeatures {
    let height = b.y2 - b.y1;
    let standing = standing.max(1e-3);
    let latest = history.back().map(|s| s.hip_y).unwrap_or(0.0);
    let window: Vec<&Sample> = history.iter().filter(|s| now - s.t <= p.window_s).collect();
    let highest = window.iter().map(|s| s.hip_y).fold(latest, f32::min);
    let drop = (latest - highest) / standing;
    let hip_speed = match window.first() {
        Some(first) if now - first.t > 0.0 => ((latest - first.hip_y) / standing) / (now - first.t) as f32,
        _ => 0.0,
    };
    let shoulders = mean_of(pose, &[kp::LEFT_SHOULDER, kp::RIGHT_SHOULDER], p.keypoint_score);
    let hips = mean_of(pose, &[kp::LEFT_HIP, kp::RIGHT_HIP], p.keypoint_score);
    let torso_deg = match (shoulders, hips) {
        (Some(s), Some(h)) => Some((h.0 - s.0).abs().atan2((h.1 - s.1).abs()).to_degrees()),
        _ => None,
    };
    let head = mean_of(pose, &[kp::NOSE, kp::LEFT_EAR, kp::RIGHT_EAR], p.keypoint_score);
    let head_below_hips = matches!((head, hips), (Some(h), Some(hp)) if h.1 > hp.1);
    FallFeatures {
        height_ratio: height / standing,
        drop,
        hip_speed,
        torso_deg,
        head_below_hips,
        aspect: (b.x2 - b.x1) / height.max(1e-3),
    }
}

fn is_lying(f: &FallFeatures, p: &Falls) -> bool {
    f.height_ratio <= p.lying_height_ratio || f.torso_deg.is_some_and(|a| a >= p.lying_torso_deg) || f.head_below_hips
}

fn is_upright(f: &FallFeatures, p: &Falls) -> bool {
    f.height_ratio >= p.upright_height_ratio && f.torso_deg.is_none_or(|a| a < p.lying_torso_deg) && !f.head_below_hips
}
