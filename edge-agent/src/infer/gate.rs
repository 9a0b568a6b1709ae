//! The motion gate: whether a camera's detector must run on this frame.
//!
//! Most alley cameras watch a scene where nothing moves for minutes; running
//! the detector on each of those frames finds the same parked car again.
//! The gate compares a 96-pixel grey thumbnail of the frame (far cheaper
//! than the detector) with the one taken when the detector last ran — not with the
//! previous frame, so slow change (creeping smoke, a car edging in, dusk)
//! adds up until it counts — and lets the detector run when enough of it
//! changed, or when `full_check_s` has passed since the last run whatever
//! the thumbnail says. On a skipped frame the rules see the last run's
//! detections again, which is what the detector would have found in a scene
//! that did not change.

use crate::config;
use crate::infer::motion::{motion, Thumb};

pub struct MotionGate {
    params: config::MotionGate,
    /// The thumbnail of the frame the detector last ran on.
    reference: Thumb,
    current: Thumb,
    last_run: f64,
}

impl MotionGate {
    pub(crate) fn new(params: config::MotionGate) -> MotionGate {
        MotionGate { params, reference: Thumb::default(), current: Thumb::default(), last_run: f64::NEG_INFINITY }
    }

    pub(crate) fn set_params(&mut self, params: config::MotionGate) {
        self.params = params;
    }

    /// Whether the detector must run on the frame at time `t`. Call
    /// [`MotionGate::ran`] once it has: a run that failed must not become
    /// the reference the next frames are compared with.
    pub(crate) fn check(&mut self, t: f64, rgb: &[u8], width: u32, height: u32) -> bool {
        if !self.params.enabled {
            return true;
        }
        self.current.fill(rgb, width, height);
        let due = t - self.last_run >= self.params.full_check_s
            || self.reference.w != self.current.w
            || self.reference.h != self.current.h;
        due || {
            let changed = motion(&self.current, &self.reference, [0.0, 0.0, 1.0, 1.0], self.params.pixel_delta as f32);
            changed.fraction as f64 >= self.params.min_changed
        }
    }

    /// The detector ran on the frame last checked, at time `t`: that frame
    /// is the new reference.
    pub(crate) fn ran(&mut self, t: f64) {
        if self.params.enabled {
            std::mem::swap(&mut self.reference, &mut self.current);
            self.last_run = t;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(w: u32, h: u32, block: Option<(u32, u32)>) -> Vec<u8> {
        let mut rgb = vec![100u8; (w * h * 3) as usize];
        if let Some((bx, by)) = block {
            for y in by..by + 40 {
                for x in bx..bx + 40 {
                    let i = ((y * w + x) * 3) as usize;
                    rgb[i..i + 3].copy_from_slice(&[250, 250, 250]);
                }
            }
        }
        rgb
    }

    /// A check, and the run it asks for (which succeeds).
    fn step(gate: &mut MotionGate, t: f64, rgb: &[u8], w: u32, h: u32) -> bool {
        let run = gate.check(t, rgb, w, h);
        if run {
            gate.ran(t);
        }
        run
    }

    #[test]
    fn runs_on_motion_and_periodically_and_skips_a_still_scene() {
        let params = config::MotionGate { enabled: true, min_changed: 0.002, pixel_delta: 10, full_check_s: 5.0 };
        let mut gate = MotionGate::new(params);
        let still = frame(640, 360, None);
        assert!(step(&mut gate, 0.0, &still, 640, 360), "the first frame always runs");
        assert!(!step(&mut gate, 0.5, &still, 640, 360), "nothing moved");
        assert!(!step(&mut gate, 4.9, &still, 640, 360));
        assert!(step(&mut gate, 5.0, &still, 640, 360), "the periodic full check");
        let moved = frame(640, 360, Some((300, 200)));
        assert!(step(&mut gate, 5.5, &moved, 640, 360), "a 40 px object appeared");
        assert!(!step(&mut gate, 6.0, &moved, 640, 360), "and then stayed still");
        assert!(step(&mut gate, 6.5, &still, 640, 360), "and left");
        let off = config::MotionGate { enabled: false, ..params };
        gate.set_params(off);
        assert!(step(&mut gate, 6.6, &still, 640, 360), "a disabled gate always runs");
    }

    #[test]
    fn a_failed_run_does_not_become_the_reference() {
        let params = config::MotionGate { enabled: true, min_changed: 0.002, pixel_delta: 10, full_check_s: 5.0 };
        let mut gate = MotionGate::new(params);
        let still = frame(640, 360, None);
        assert!(step(&mut gate, 0.0, &still, 640, 360));
        let moved = frame(640, 360, Some((300, 200)));
        assert!(gate.check(1.0, &moved, 640, 360), "motion");
        // The detector failed on that frame: no ran(). The next frame with
        // the same change must still run.
        assert!(gate.check(1.2, &moved, 640, 360), "still differs from the last successful run");
    }

    #[test]
    fn slow_change_adds_up_against_the_last_run() {
        let params = config::MotionGate { enabled: true, min_changed: 0.002, pixel_delta: 10, full_check_s: 1e9 };
        let mut gate = MotionGate::new(params);
        let (w, h) = (640u32, 360u32);
        let mut rgb = vec![100u8; (w * h * 3) as usize];
        assert!(step(&mut gate, 0.0, &rgb, w, h));
        // A region brightens by 4 levels a frame: never 10 between frames,
        // but 12 after three against the reference.
        let mut ran = Vec::new();
        for k in 1..=3 {
            for y in 0..120 {
                for x in 0..120 {
                    let i = ((y * w + x) * 3) as usize;
                    for c in &mut rgb[i..i + 3] {
                        *c += 4;
                    }
                }
            }
            ran.push(step(&mut gate, k as f64, &rgb, w, h));
        }
        assert_eq!(ran, [false, false, true]);
    }
}
