//! A per-camera multi-object tracker in the ByteTrack style.
//!
//! Rules reason about *objects over time* (a car that has stood in a lane for
//! a minute, a person whose hips dropped a metre in half a second), so they
//! need an identity that outlives a single frame and a missed detection.
//!
//! Each frame:
//! 1. every track predicts its box (constant velocity of the box centre);
//! 2. **high-score** detections (≥ `high`) are matched to all tracks by IoU;
//! 3. **low-score** detections (`low` ≤ score < `high`) are matched to the
//!    confirmed tracks still unmatched. This is ByteTrack's insight: a person
//!    who lies down or is half occluded scores low, but a low score next to
//!    an existing track is still that person, while a low score alone is
//!    usually noise;
//! 4. unmatched high detections start *tentative* tracks; a tentative track
//!    is confirmed after `min_hits` consecutive matches and dropped on its
//!    first miss (birth hysteresis);
//! 5. a confirmed track survives misses for `max_age_s` (death hysteresis).
//!
//! Matching is greedy on IoU (best pair first) within one class. With the
//! handful of objects a camera sees this gives the same result as the
//! Hungarian method in practice, with no allocation beyond reused buffers.

use crate::config::{Pose, Tracking};
use crate::infer::Detection;
use crate::vocab::BBox;

/// The tracker's thresholds, in one place for both trackers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrackerParams {
    /// Detections at or above this score start tracks and match first.
    pub high: f32,
    /// Detections from here up to `high` only extend confirmed tracks.
    pub low: f32,
    pub match_iou: f32,
    pub low_match_iou: f32,
    pub min_hits: u32,
    pub max_age_s: f64,
    /// Predict boxes with the track's velocity before matching. Off for
    /// people, whose boxes change shape more than they move between frames.
    pub predict: bool,
}

impl TrackerParams {
    /// For detector objects: `high` is the detector's score threshold.
    pub(crate) fn objects(score_threshold: f32, t: &Tracking) -> TrackerParams {
        TrackerParams {
            high: score_threshold,
            low: t.low_score,
            match_iou: t.match_iou,
            low_match_iou: t.low_match_iou,
            min_hits: t.min_hits,
            max_age_s: t.max_age_s,
            predict: true,
        }
    }

    /// For pose people: the pose model's own score band.
    pub(crate) fn people(pose: &Pose, t: &Tracking) -> TrackerParams {
        TrackerParams { high: pose.track_score, low: pose.min_score, predict: false, ..TrackerParams::objects(0.0, t) }
    }
}

/// One tracked object.
#[derive(Debug, Clone, PartialEq)]
pub struct Track {
    /// Unique per tracker (per camera), never reused.
    pub(crate) id: u64,
    pub(crate) class_id: usize,
    /// The last matched box.
    pub(crate) bbox: BBox,
    /// The last matched score.
    pub(crate) score: f32,
    /// Index of the detection matched on the latest frame, if any.
    pub(crate) matched: Option<usize>,
    pub(crate) first_seen: f64,
    pub(crate) last_seen: f64,
    /// Consecutive matches while tentative; total matches after.
    pub(crate) hits: u32,
    pub(crate) confirmed: bool,
    /// Box-centre velocity, normalised units per second.
    velocity: [f32; 2],
}

impl Track {
    /// The box this track expects at time `now`.
    pub(crate) fn predicted(&self, now: f64) -> BBox {
        let dt = (now - self.last_seen).clamp(0.0, 1.0) as f32;
        let (dx, dy) = (self.velocity[0] * dt, self.velocity[1] * dt);
        BBox { x1: self.bbox.x1 + dx, y1: self.bbox.y1 + dy, x2: self.bbox.x2 + dx, y2: self.bbox.y2 + dy }
    }

    /// Seen on the latest frame.
    pub fn is_visible(&self) -> bool {
        self.matched.is_some()
    }

    /// This track's latest box and score as a detection carrying its id.
    pub fn detection(&self) -> Detection {
        Detection { bbox: self.bbox, class_id: self.class_id, score: self.score, track_id: Some(self.id) }
    }
}

/// The tracker of one camera (one per model output it follows).
#[derive(Debug)]
pub struct Tracker {
    params: TrackerParams,
    tracks: Vec<Track>,
    next_id: u64,
    /// Scratch: candidate (iou, track, detection) pairs; reused.
    pairs: Vec<(f32, usize, usize)>,
    det_used: Vec<bool>,
}

impl Tracker {
    pub fn new(params: TrackerParams) -> Tracker {
        Tracker { params, tracks: Vec::new(), next_id: 1, pairs: Vec::new(), det_used: Vec::new() }
    }

    /// New parameters from a reload; live tracks keep their ids.
    pub(crate) fn set_params(&mut self, params: TrackerParams) {
        self.params = params;
    }

    /// Every live track, tentative ones included.
    pub fn tracks(&self) -> &[Track] {
        &self.tracks
    }

    /// Confirmed tracks: what rules should see.
    pub fn confirmed(&self) -> impl Iterator<Item = &Track> {
        self.tracks.iter().filter(|t| t.confirmed)
    }

    /// Advances to time `now` (seconds, non-decreasing) with this frame's
    /// detections. Afterwards each track's `matched` names its detection.
    pub fn update(&mut self, now: f64, dets: &[Detection]) {
        self.update_pinned(now, dets, &[]);
    }

    /// The track with this id (tests follow one track through a script).
    #[cfg(test)]
    pub(crate) fn get(&self, id: u64) -> Option<&Track> {
        self.tracks.iter().find(|t| t.id == id)
    }

    /// As [`Tracker::update`], but tracks in `pinned` outlive `max_age_s`:
    /// a rule that is following someone (a fallen person the model no
    /// longer sees) decides itself when they are lost.
    pub(crate) fn update_pinned(&mut self, now: f64, dets: &[Detection], pinned: &[u64]) {
        let p = self.params;
        for t in &mut self.tracks {
            t.matched = None;
        }
        self.det_used.clear();
        self.det_used.resize(dets.len(), false);

        // Stage 1: high-score detections against every track.
        self.associate(now, dets, p.high, f32::INFINITY, p.match_iou, false);
        // Stage 2: low-score detections against confirmed tracks left over.
        self.associate(now, dets, p.low, p.high, p.low_match_iou, true);

        // Tentative tracks die on their first miss; confirmed ones after max_age_s.
        self.tracks.retain(|t| {
            if t.confirmed {
                now - t.last_seen <= p.max_age_s || pinned.contains(&t.id)
            } else {
                t.matched.is_some()
            }
        });

        // Births: high-score detections nobody claimed.
        for (i, d) in dets.iter().enumerate() {
            if self.det_used[i] || d.score.is_nan() || d.score < p.high {
                continue;
            }
            let confirmed = p.min_hits <= 1;
            self.tracks.push(Track {
                id: self.next_id,
                class_id: d.class_id,
                bbox: d.bbox,
                score: d.score,
                matched: Some(i),
                first_seen: now,
                last_seen: now,
                hits: 1,
                confirmed,
                velocity: [0.0; 2],
            });
            self.next_id += 1;
        }
    }

    fn associate(&mut self, now: f64, dets: &[Detection], lo: f32, hi: f32, min_iou: f32, confirmed_only: bool) {
        self.pairs.clear();
        for (ti, t) in self.tracks.iter().enumerate() {
            if t.matched.is_some() || (confirmed_only && !t.confirmed) {
                continue;
            }
            let predicted = if self.params.predict { t.predicted(now) } else { t.bbox };
            for (di, d) in dets.iter().enumerate() {
                if self.det_used[di] || d.class_id != t.class_id || !(d.score >= lo && d.score < hi) {
                    continue;
                }
                let iou = predicted.iou(&d.bbox).max(t.bbox.iou(&d.bbox));
                if iou >= min_iou {
                    self.pairs.push((iou, ti, di));
                }
            }
        }
        self.pairs.sort_unstable_by(|a, b| b.0.total_cmp(&a.0));
        for k in 0..self.pairs.len() {
            let (_, ti, di) = self.pairs[k];
            if self.det_used[di] || self.tracks[ti].matched.is_some() {
                continue;
            }
            self.det_used[di] = true;
            let min_hits = self.params.min_hits;
            let t = &mut self.tracks[ti];
            let d = &dets[di];
            let dt = (now - t.last_seen) as f32;
            if dt > 0.0 {
                let (cx0, cy0) = centre(&t.bbox);
                let (cx1, cy1) = centre(&d.bbox);
                // Smoothed so one jittery box does not fling the prediction.
                t.velocity[0] = 0.5 * t.velocity[0] + 0.5 * (cx1 - cx0) / dt;
                t.velocity[1] = 0.5 * t.velocity[1] + 0.5 * (cy1 - cy0) / dt;
            }
            t.bbox = d.bbox;
            t.score = d.score;
            t.matched = Some(di);
            t.last_seen = now;
            t.hits = t.hits.saturating_add(1);
            if t.hits >= min_hits {
                t.confirmed = true;
            }
        }
    }
}

fn centre(b: &BBox) -> (f32, f32) {
    ((b.x1 + b.x2) / 2.0, (b.y1 + b.y2) / 2.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> TrackerParams {
        TrackerParams {
            high: 0.5,
            low: 0.1,
            match_iou: 0.3,
            low_match_iou: 0.2,
            min_hits: 2,
            max_age_s: 1.0,
            predict: true,
        }
    }

    fn det(x: f32, score: f32) -> Detection {
        Detection { bbox: BBox { x1: x, y1: 0.2, x2: x + 0.2, y2: 0.8 }, class_id: 0, score, track_id: None }
    }

    #[test]
    fn birth_needs_min_hits_and_ids_stay_stable() {
        let mut tr = Tracker::new(params());
        tr.update(0.0, &[det(0.1, 0.9)]);
        assert_eq!(tr.confirmed().count(), 0, "one hit is tentative");
        tr.update(0.2, &[det(0.12, 0.9)]);
        let ids: Vec<u64> = tr.confirmed().map(|t| t.id).collect();
        assert_eq!(ids, vec![1]);
        for i in 2..10 {
            tr.update(i as f64 * 0.2, &[det(0.1 + 0.02 * i as f32, 0.9)]);
        }
        assert_eq!(tr.confirmed().map(|t| t.id).collect::<Vec<_>>(), vec![1]);
        assert_eq!(tr.tracks()[0].matched, Some(0));
    }

    #[test]
    fn tentative_track_dies_on_first_miss() {
        let mut tr = Tracker::new(params());
        tr.update(0.0, &[det(0.1, 0.9)]);
        tr.update(0.2, &[]);
        assert!(tr.tracks().is_empty());
    }

    #[test]
    fn low_score_keeps_a_confirmed_track_but_never_starts_one() {
        let mut tr = Tracker::new(params());
        tr.update(0.0, &[det(0.1, 0.9)]);
        tr.update(0.2, &[det(0.1, 0.9)]);
        // The person lies down: score drops to 0.15, well under `high`.
        for i in 2..20 {
            tr.update(i as f64 * 0.2, &[det(0.1, 0.15)]);
            let t = tr.get(1).expect("track 1 follows the low-score detection");
            assert_eq!(t.matched, Some(0));
            assert_eq!(t.score, 0.15);
        }
        // A low-score detection elsewhere starts nothing.
        tr.update(4.0, &[det(0.1, 0.15), det(0.7, 0.3)]);
        assert_eq!(tr.tracks().len(), 1);
    }

    #[test]
    fn confirmed_track_survives_gaps_up_to_max_age() {
        let mut tr = Tracker::new(params());
        tr.update(0.0, &[det(0.1, 0.9)]);
        tr.update(0.2, &[det(0.1, 0.9)]);
        tr.update(0.4, &[]);
        tr.update(0.8, &[]);
        tr.update(1.2, &[]);
        let t = tr.get(1).expect("alive 1.0 s after its last match");
        assert!(!t.is_visible());
        tr.update(1.1 + 0.2, &[det(0.1, 0.9)]);
        assert!(tr.get(1).is_some_and(|t| t.is_visible()), "picked up again with the same id");
        tr.update(2.4, &[]);
        assert!(tr.get(1).is_none(), "gone after max_age_s without a match");
    }

    #[test]
    fn pinned_tracks_outlive_max_age() {
        let mut tr = Tracker::new(params());
        tr.update(0.0, &[det(0.1, 0.9)]);
        tr.update(0.2, &[det(0.1, 0.9)]);
        for i in 1..30 {
            tr.update_pinned(0.2 + i as f64 * 0.2, &[], &[1]);
        }
        assert!(tr.get(1).is_some(), "kept while pinned");
        tr.update(6.2, &[]);
        assert!(tr.get(1).is_none(), "dropped once unpinned");
    }

    #[test]
    fn two_people_crossing_keep_their_ids() {
        let mut tr = Tracker::new(params());
        // A walks right, B walks left; their boxes overlap mid-way.
        let mut a_ids = Vec::new();
        for i in 0..12 {
            let t = i as f64 * 0.2;
            let a = det(0.1 + 0.05 * i as f32, 0.9);
            let b = Detection { bbox: BBox { y1: 0.1, y2: 0.7, ..det(0.65 - 0.05 * i as f32, 0.8).bbox }, ..a };
            tr.update(t, &[a, b]);
            if let Some(track) = tr.tracks().iter().find(|t| t.matched == Some(0)) {
                a_ids.push(track.id);
            }
        }
        assert!(a_ids.iter().all(|&id| id == a_ids[0]), "A kept one id: {a_ids:?}");
        assert_eq!(tr.confirmed().count(), 2);
    }

    #[test]
    fn classes_do_not_match_each_other() {
        let mut tr = Tracker::new(params());
        tr.update(0.0, &[det(0.1, 0.9)]);
        tr.update(0.2, &[det(0.1, 0.9)]);
        let car = Detection { class_id: 2, ..det(0.1, 0.9) };
        tr.update(0.4, &[car]);
        assert!(!tr.get(1).unwrap().is_visible());
        assert_eq!(tr.tracks().len(), 2, "the car is a new tentative track");
    }
}
