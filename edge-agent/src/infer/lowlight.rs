//! Low-light input adaptation: decides per frame, from its brightness,
//! whether to stretch the levels a model sees, and does it.
//!
//! Why: a dim scene (a back alley at night, a room with the lights off)
//! squeezes a person into the bottom few grey levels, and the pose model
//! finds far fewer people there. Measured on 150 hospital_cctv day frames
//! darkened to a quarter: MultiPose at 384 found 0.157 people per labelled
//! box against 0.244 on the originals; this stretch brought it back to
//! 0.253, where CLAHE reached 0.186 (README, "Falls", low light).
//! Infrared night frames are already spread over the levels: the check
//! leaves them alone.
//!
//! What it does: the mean luma of the frame's grey motion thumbnail (which
//! the fall path makes of every pose frame anyway, so the frame is not
//! read twice) decides (below `pose.low_light_below`); the thumbnail's 1st
//! and 99.5th percentiles become 0 and 255, linearly, with the gain capped
//! so sensor noise in a black frame is not blown up. It works on the model's input
//! tensor after the letterbox (a few hundred thousand values, not the full
//! frame), which commutes with the resize up to rounding because the map
//! is monotone and linear between its clamps.

/// The stretch never multiplies levels by more than this.
pub(crate) const MAX_GAIN: f32 = 6.0;

/// A level map for one frame: `lo` → 0 and `lo + 255 / gain` → 255.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stretch {
    pub(crate) lo: f32,
    pub(crate) gain: f32,
    /// The frame's mean luma (0–255) that made the decision.
    pub(crate) mean: f32,
}

impl Stretch {
    /// Measures grey levels (a frame's luma thumbnail); `Some` when their
    /// mean is below `below` (0 turns the adaptation off).
    pub fn measure(luma: &[u8], below: f32) -> Option<Stretch> {
        if below <= 0.0 {
            return None;
        }
        let mut hist = [0u32; 256];
        let mut n = 0u32;
        let mut sum = 0u64;
        for &y in luma {
            hist[y as usize] += 1;
            sum += y as u64;
            n += 1;
        }
        if n == 0 {
            return None;
        }
        let mean = sum as f32 / n as f32;
        if mean >= below {
            return None;
        }
        let level_at = |q: f32| -> f32 {
            let want = (q * n as f32).ceil().max(1.0) as u32;
            let mut acc = 0;
            for (level, &c) in hist.iter().enumerate() {
                acc += c;
                if acc >= want {
                    return level as f32;
                }
            }
            255.0
        };
        let (lo, hi) = (level_at(0.01), level_at(0.995));
        let gain = (255.0 / (hi - lo).max(1.0)).min(MAX_GAIN);
        (gain > 1.05).then_some(Stretch { lo, gain, mean })
    }

    /// One level through the map.
    #[inline]
    pub(crate) fn map(&self, v: f32) -> f32 {
        ((v - self.lo) * self.gain).clamp(0.0, 255.0)
    }

    /// Maps a tensor of raw 0–255 levels (MultiPose's int32 input) in
    /// place. The padding (level 0) stays 0.
    pub fn apply_i32(&self, tensor: &mut [i32]) {
        let lut: [i32; 256] = std::array::from_fn(|v| self.map(v as f32).round() as i32);
        for v in tensor {
            *v = lut[(*v).clamp(0, 255) as usize];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(levels: impl Fn(usize) -> u8, n: usize) -> Vec<u8> {
        (0..n).map(levels).collect()
    }

    #[test]
    fn a_dark_frame_is_stretched_to_the_full_range() {
        // Grey levels 10..60, evenly: mean 35.
        let rgb = frame(|i| 10 + (i % 51) as u8, 51 * 1000);
        let s = Stretch::measure(&rgb, 70.0).expect("dark: stretched");
        assert!((s.mean - 35.0).abs() < 1.0, "{s:?}");
        assert!((10.0..=11.0).contains(&s.lo), "{s:?}");
        assert!(s.map(60.0) >= 250.0 && s.map(10.0) <= 0.0, "{s:?}");
        let mut t = vec![0, 10, 35, 60, 255];
        s.apply_i32(&mut t);
        assert_eq!(t[0], 0, "padding stays black");
        assert!(t[2] > 100 && t[2] < 160 && t[3] >= 250 && t[4] == 255, "{t:?}");
    }

    #[test]
    fn a_bright_frame_or_a_zero_threshold_is_left_alone() {
        let rgb = frame(|i| 60 + (i % 120) as u8, 120 * 1000);
        assert_eq!(Stretch::measure(&rgb, 70.0), None, "mean 119.5: bright enough");
        let dark = frame(|i| (i % 40) as u8, 40 * 1000);
        assert_eq!(Stretch::measure(&dark, 0.0), None, "0 turns it off");
        // A frame already spread over the levels (infrared night) gains
        // nothing.
        let spread = frame(|i| (i % 251) as u8, 251 * 1000);
        assert_eq!(Stretch::measure(&spread, 200.0), None);
    }

    #[test]
    fn a_black_frame_gets_at_most_max_gain() {
        let rgb = frame(|i| 2 + (i % 3) as u8, 3 * 1000);
        let s = Stretch::measure(&rgb, 70.0).expect("stretched");
        assert_eq!(s.gain, MAX_GAIN, "noise in the dark is not blown up to full range");
    }
}
