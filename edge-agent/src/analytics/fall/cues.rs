//! What one person's observations say, as numbers the fall rule's states
//! decide on: the pose path's features against the standing reference,
//! the vanish path's verdict, and the skeleton cues that are reported but
//! do not decide (see the parent module's doc).

use super::{FallFeatures, Person, Reference};
use crate::config::Falls;
use crate::infer::motion::Motion;
use crate::infer::pose::{kp, Pose};
use crate::vocab::BBox;

/// The region watched for motion around a box: wider, and extending below
/// it, where a falling body lands.
pub(super) fn roi_of(b: &BBox) -> [f32; 4] {
    let (w, h) = (b.x2 - b.x1, b.y2 - b.y1);
    [(b.x1 - 0.25 * w).max(0.0), b.y1, (b.x2 + 0.25 * w).min(1.0), (b.y2 + 0.5 * h).min(1.0)]
}

pub(super) fn touches_edge(b: &BBox, e: f32) -> bool {
    b.x1 <= e || b.y1 <= e || b.x2 >= 1.0 - e || b.y2 >= 1.0 - e
}

/// Pixel aspect (width over height) of a normalised box.
pub(super) fn aspect(b: &BBox, frame_aspect: f32) -> f32 {
    (b.x2 - b.x1) * frame_aspect / (b.y2 - b.y1).max(1e-6)
}

/// The latest observation's features against the standing reference.
pub(super) fn features(person: &Person, p: &Falls, hi: f32, frame_aspect: f32) -> Option<(FallFeatures, Reference)> {
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
pub(super) fn vanish(
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
pub(super) struct Skeleton {
    pub(super) hip_y: Option<f32>,
    pub(super) torso_deg: Option<f32>,
    pub(super) head_below_hips: bool,
}

pub(super) fn skeleton(pose: &Pose, min: f32, frame_aspect: f32) -> Skeleton {
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
pub(super) fn ioa(a: &BBox, b: &BBox) -> f32 {
    let iw = (a.x2.min(b.x2) - a.x1.max(b.x1)).max(0.0);
    let ih = (a.y2.min(b.y2) - a.y1.max(b.y1)).max(0.0);
    iw * ih / b.area().max(1e-9)
}

/// An upright person (tall as the lost one, standing-shaped) within
/// `reappear_dist` box heights of where they vanished.
pub(super) fn upright_near(o: &BBox, vbox: &BBox, p: &Falls, frame_aspect: f32) -> bool {
    let bh = vbox.y2 - vbox.y1;
    let tall = o.y2 - o.y1 >= p.upright_height_ratio * bh;
    let standing = aspect(o, frame_aspect) <= p.ref_max_aspect;
    let dx = ((o.x1 + o.x2) - (vbox.x1 + vbox.x2)) / 2.0 * frame_aspect;
    let dy = ((o.y1 + o.y2) - (vbox.y1 + vbox.y2)) / 2.0;
    tall && standing && (dx * dx + dy * dy).sqrt() <= p.reappear_dist * bh
}
