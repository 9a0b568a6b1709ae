//! A cheap motion cue: grey thumbnails of recent frames and the fraction of
//! a region that changed.
//!
//! The fall rule needs it because a falling person often *vanishes* from the
//! pose model: lying bodies score far lower than standing ones. What remains
//! visible is the classic motion-history signature of a fall — a burst of
//! change low in the person's last box, then stillness.
//!
//! Each frame becomes a 96-pixel-wide grey thumbnail (box-averaged: a small
//! fraction of a model run, see `benches/pipeline.rs`); a ring keeps the
//! last few, reused, so nothing allocates after the first frames.

/// Width of every thumbnail; the height keeps the frame's aspect.
pub(crate) const THUMB_W: u32 = 96;

/// One grey thumbnail.
#[derive(Debug, Clone, Default)]
pub struct Thumb {
    pub w: u32,
    pub h: u32,
    pub px: Vec<u8>,
}

impl Thumb {
    /// Refills from a packed RGB frame (BT.601 luma, area average).
    pub fn fill(&mut self, rgb: &[u8], width: u32, height: u32) {
        let (tw, th) = thumb_size(THUMB_W, width, height);
        self.w = tw;
        self.h = th;
        self.px.clear();
        self.px.resize(tw as usize * th as usize, 0);
        if rgb.len() < width as usize * height as usize * 3 {
            return;
        }
        for ty in 0..th {
            let (y0, y1) = span(ty, th, height);
            for tx in 0..tw {
                let (x0, x1) = span(tx, tw, width);
                let mut sum = 0u32;
                for y in y0..y1 {
                    let row = &rgb[(y as usize * width as usize + x0 as usize) * 3
                        ..(y as usize * width as usize + x1 as usize) * 3];
                    for p in row.chunks_exact(3) {
                        // 0.299 R + 0.587 G + 0.114 B in fixed point.
                        sum += (77 * p[0] as u32 + 150 * p[1] as u32 + 29 * p[2] as u32) >> 8;
                    }
                }
                let n = ((y1 - y0) * (x1 - x0)).max(1);
                self.px[(ty * tw + tx) as usize] = (sum / n) as u8;
            }
        }
    }
}

/// A thumbnail's size: `target_w` wide (at most the frame's width), the
/// height keeping the frame's aspect.
pub(crate) fn thumb_size(target_w: u32, width: u32, height: u32) -> (u32, u32) {
    let tw = target_w.min(width.max(1));
    let th = ((height as f64 * tw as f64 / width.max(1) as f64).round() as u32).max(1);
    (tw, th)
}

/// Source pixel range covered by thumbnail cell `i` of `n` over `len`.
pub(crate) fn span(i: u32, n: u32, len: u32) -> (u32, u32) {
    let a = (i as u64 * len as u64 / n as u64) as u32;
    let b = (((i + 1) as u64 * len as u64).div_ceil(n as u64) as u32).clamp(a + 1, len.max(a + 1));
    (a, b.min(len))
}

/// How much of a normalised region changed between two thumbnails.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub(crate) struct Motion {
    /// Fraction of the region's pixels that changed by more than the threshold.
    pub(crate) fraction: f32,
    /// Mean row of the changed pixels, normalised to the frame (None when
    /// nothing changed).
    pub(crate) centre_y: Option<f32>,
}

/// Compares `cur` with `prev` inside `roi` = (x1, y1, x2, y2), normalised.
pub(crate) fn motion(cur: &Thumb, prev: &Thumb, roi: [f32; 4], threshold: f32) -> Motion {
    if cur.w != prev.w || cur.h != prev.h || cur.px.is_empty() {
        return Motion::default();
    }
    let (w, h) = (cur.w as f32, cur.h as f32);
    let x0 = ((roi[0] * w) as i64).clamp(0, cur.w as i64) as u32;
    let y0 = ((roi[1] * h) as i64).clamp(0, cur.h as i64) as u32;
    let x1 = ((roi[2] * w).ceil() as i64).clamp(0, cur.w as i64) as u32;
    let y1 = ((roi[3] * h).ceil() as i64).clamp(0, cur.h as i64) as u32;
    if x1 <= x0 || y1 <= y0 {
        return Motion::default();
    }
    let (mut moving, mut rows) = (0u32, 0u64);
    for y in y0..y1 {
        for x in x0..x1 {
            let i = (y * cur.w + x) as usize;
            if (cur.px[i] as f32 - prev.px[i] as f32).abs() > threshold {
                moving += 1;
                rows += (y - y0) as u64;
            }
        }
    }
    let total = (x1 - x0) * (y1 - y0);
    Motion {
        fraction: moving as f32 / total as f32,
        centre_y: (moving > 0).then(|| (y0 as f32 + rows as f32 / moving as f32 + 0.5) / h),
    }
}

/// The last few thumbnails of a camera, with their times.
///
/// Motion compares with the thumbnail `lag_s` seconds back by *time*, not by
/// frame count: a live camera drops frames when analysis is busy, and the
/// cue must mean the same on a slow box as on a fast one.
#[derive(Debug, Clone)]
pub struct MotionHistory {
    ring: Vec<(f64, Thumb)>,
    next: usize,
    filled: usize,
}

impl MotionHistory {
    /// Keeps `capacity` thumbnails (at least 2): enough to reach `lag_s`
    /// back at the camera's fps, with room for jitter.
    pub fn new(capacity: usize) -> MotionHistory {
        MotionHistory { ring: vec![(f64::NEG_INFINITY, Thumb::default()); capacity.max(2)], next: 0, filled: 0 }
    }

    /// Adds the thumbnail of the frame at time `t`.
    pub fn push(&mut self, t: f64, rgb: &[u8], width: u32, height: u32) {
        let n = self.ring.len();
        let slot = &mut self.ring[self.next];
        slot.0 = t;
        slot.1.fill(rgb, width, height);
        self.next = (self.next + 1) % n;
        self.filled = (self.filled + 1).min(n);
    }

    /// The latest thumbnail, once a frame is in (the low-light check reads
    /// the frame's brightness from it instead of from the frame again).
    pub(crate) fn latest(&self) -> Option<&Thumb> {
        let n = self.ring.len();
        (self.filled > 0).then(|| &self.ring[(self.next + n - 1) % n].1)
    }

    /// (the latest thumbnail, the newest one at least `lag_s` older — or the
    /// oldest kept), once a frame is in.
    pub(crate) fn pair(&self, lag_s: f64) -> Option<(&Thumb, &Thumb)> {
        let n = self.ring.len();
        if self.filled == 0 {
            return None;
        }
        let cur = (self.next + n - 1) % n;
        let now = self.ring[cur].0;
        let mut back = cur;
        for k in 1..self.filled {
            let i = (cur + n - k) % n;
            back = i;
            if self.ring[i].0 <= now - lag_s + 1e-6 {
                break;
            }
        }
        Some((&self.ring[cur].1, &self.ring[back].1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(w: u32, h: u32, f: impl Fn(u32, u32) -> u8) -> Vec<u8> {
        let mut v = Vec::with_capacity((w * h * 3) as usize);
        for y in 0..h {
            for x in 0..w {
                let g = f(x, y);
                v.extend_from_slice(&[g, g, g]);
            }
        }
        v
    }

    #[test]
    fn thumbnail_keeps_aspect_and_averages() {
        let mut t = Thumb::default();
        t.fill(&frame(192, 108, |x, _| if x < 96 { 0 } else { 200 }), 192, 108);
        assert_eq!((t.w, t.h), (96, 54));
        assert_eq!(t.px[0], 0);
        assert_eq!(t.px[95], 200);
    }

    #[test]
    fn motion_fraction_and_centre() {
        let (mut a, mut b) = (Thumb::default(), Thumb::default());
        a.fill(&frame(96, 96, |_, _| 50), 96, 96);
        // The bottom quarter of the frame brightens.
        b.fill(&frame(96, 96, |_, y| if y >= 72 { 150 } else { 50 }), 96, 96);
        let m = motion(&b, &a, [0.0, 0.0, 1.0, 1.0], 15.0);
        assert!((m.fraction - 0.25).abs() < 1e-6, "{m:?}");
        assert!((m.centre_y.unwrap() - 84.0 / 96.0).abs() < 1e-3);
        let still = motion(&b, &b, [0.0, 0.0, 1.0, 1.0], 15.0);
        assert_eq!(still, Motion { fraction: 0.0, centre_y: None });
    }

    #[test]
    fn history_pairs_by_time_not_frame_count() {
        let mut h = MotionHistory::new(4);
        assert!(h.pair(0.4).is_none());
        // 5 fps: 0.4 s back is two frames back.
        for (i, g) in [10u8, 20, 30, 40].into_iter().enumerate() {
            h.push(i as f64 * 0.2, &frame(8, 8, |_, _| g), 8, 8);
        }
        let (cur, prev) = h.pair(0.4).unwrap();
        assert_eq!((cur.px[0], prev.px[0]), (40, 20));
        // Frames dropped (busy analysis): 0.4 s back is now one frame back.
        h.push(1.2, &frame(8, 8, |_, _| 50), 8, 8);
        let (cur, prev) = h.pair(0.4).unwrap();
        assert_eq!((cur.px[0], prev.px[0]), (50, 40), "the newest thumbnail at least 0.4 s older is from 0.6 s");
    }

    #[test]
    fn thumbnail_of_a_narrow_frame_keeps_its_aspect() {
        let mut t = Thumb::default();
        t.fill(&frame(64, 48, |_, _| 9), 64, 48);
        assert_eq!((t.w, t.h), (64, 48));
    }
}
