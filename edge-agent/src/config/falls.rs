//! The fall rule's parameters: `[falls]` and per-camera `cameras[].falls`.
//!
//! One list (`params::rule_params`) names every parameter once, with its
//! default, its valid range and its meaning; it generates the global table
//! ([`Falls`]), the all-optional per-camera table ([`FallOverrides`]), the
//! merge and the range checks, so they can never drift apart. What each parameter does, and
//! how the defaults were measured, is in the README ("Falls").

use serde::{Deserialize, Serialize};

use super::params::rule_params;

rule_params! {
    defaults;
    /// The fall rule's parameters for one camera (after merging).
    #[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq)]
    #[serde(default, deny_unknown_fields)]
    pub struct Falls;
    /// Per-camera overrides: any key of `[falls]`.
    pub struct FallOverrides;

    /// Run the fall rule (needs `[pose]`).
    enabled: bool = true, 0, 1;
    /// The collapse must come within this many seconds of the person's
    /// last standing observation.
    window_s: f64 = 2.0, 0.2, 10.0;
    /// Seconds the person must stay down after the collapse before `start`.
    confirm_s: f64 = 0.6, 0.0, 60.0;
    /// A collapse not confirmed within this many seconds is abandoned.
    fall_timeout_s: f64 = 3.0, 0.2, 60.0;
    /// Seconds upright (box back to `upright_height_ratio` of the standing
    /// height, confidently seen) before a fall event ends.
    recover_s: f64 = 2.0, 0.0, 3600.0;
    /// Seconds without seeing the fallen person before the event ends.
    lost_s: f64 = 10.0, 0.0, 3600.0;
    /// The long lie: a person down this many seconds gets an `update` that
    /// raises the event from `warning` to `critical` (a fall nobody has
    /// answered is the emergency). 0: `critical` from the start.
    long_lie_s: f64 = 60.0, 0.0, 86400.0;
    /// While a person stays down, an `update` carrying how long
    /// (`evidence.down_s`) every this many seconds (at least 1 s); 0: only
    /// the long-lie one.
    down_update_s: f64 = 15.0, 0.0, 3600.0;
    /// How far back a standing observation counts as the person's reference
    /// (standing height, top of head, width), in seconds.
    ref_window_s: f64 = 3.0, 0.5, 60.0;
    /// A reference must look like a standing person: box width over height
    /// (in pixels) at most this.
    ref_max_aspect: f32 = 0.8, 0.1, 5.0;
    /// Box height over standing height at or below which the person has
    /// collapsed (lying people measured about 0.36, bending ≥ 0.72).
    fall_height_ratio: f32 = 0.6, 0.0, 1.0;
    /// The top of the box must move down by at least this many standing
    /// heights: bending over and sitting keep the head high.
    min_drop: f32 = 0.25, 0.0, 2.0;
    /// The collapsed box must be at least this wide relative to the
    /// reference: a person cut by the frame edge or occluded gets narrower,
    /// a fallen one wider.
    min_width_ratio: f32 = 0.8, 0.0, 5.0;
    /// While falling, a box at or below this height ratio counts as down.
    down_height_ratio: f32 = 0.75, 0.0, 1.5;
    /// A box at or above this height ratio (seen with a confident score)
    /// counts as upright again.
    upright_height_ratio: f32 = 0.8, 0.0, 1.5;
    /// A box within this distance of the frame's top or bottom edge may be
    /// cut off: it is no standing reference. The vanish path ignores boxes
    /// near any edge.
    edge_margin: f32 = 0.02, 0.0, 0.5;
    /// Keypoints scoring below this count as unseen: for the reported torso
    /// angle, hip speed and head position, and in drawings.
    keypoint_score: f32 = 0.2, 0.0, 1.0;
    /// Use the motion cue for people the pose model loses as they fall
    /// (lying people often score too low to be seen at all).
    vanish: bool = true, 0, 1;
    /// Grey-level change (0–255, on a 96-px-wide thumbnail) that counts as
    /// motion.
    motion_threshold: f32 = 15.0, 1.0, 255.0;
    /// Motion compares with the thumbnail this many seconds earlier (one
    /// frame back misses motion in clips with duplicated frames).
    motion_lag_s: f64 = 0.4, 0.0, 5.0;
    /// A region moving on at most this fraction of its pixels is still
    /// (the person lies still after the fall).
    still_max: f32 = 0.04, 0.0, 1.0;
    /// Vanish path: at least this fraction of the region around the lost
    /// person's last box must be moving…
    burst_min: f32 = 0.10, 0.0, 1.0;
    /// …with the motion's centre at least this far down the last box
    /// (0 top, 1 bottom): a fall moves the lower part of the scene.
    burst_centre: f32 = 0.5, 0.0, 1.5;
    /// Vanish path: the person has been unseen for at least this long…
    vanish_after_s: f64 = 0.2, 0.0, 10.0;
    /// …and at most this long.
    vanish_within_s: f64 = 1.2, 0.0, 10.0;
    /// Vanish path: the track's best score must be at least this (fake
    /// "people" on furniture stay lower).
    vanish_min_score: f32 = 0.25, 0.0, 1.0;
    /// Vanish path: confident observations needed in the `vanish_hist_s`
    /// before the person was lost (a count at the analysis fps; measured at
    /// 5 fps).
    vanish_min_hits: u32 = 3, 0, 1000;
    vanish_hist_s: f64 = 2.0, 0.0, 60.0;
    /// Vanish path: the person was nearly still before vanishing, in box
    /// heights per second (walkers leaving are faster).
    vanish_max_speed: f32 = 0.3, 0.0, 100.0;
    /// Vanish path: an upright person appearing within this many box
    /// heights of the lost one cancels the fall (they stood up or walked on).
    reappear_dist: f32 = 1.0, 0.0, 100.0;
    /// Vanish path: another person covering this fraction of the last box
    /// means occlusion, not a fall.
    occlusion_ioa: f32 = 0.2, 0.0, 1.0;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_replace_only_what_they_set() {
        let base = Falls::default();
        let o = FallOverrides { confirm_s: Some(3.0), enabled: Some(false), ..Default::default() };
        let merged = o.apply(&base);
        assert_eq!(merged.confirm_s, 3.0);
        assert!(!merged.enabled);
        assert_eq!(merged.window_s, base.window_s);
    }

    #[test]
    fn validate_names_the_key() {
        let f = Falls { min_drop: -1.0, ..Falls::default() };
        let (key, msg) = f.validate("cameras[2].falls").unwrap_err();
        assert_eq!(key, "cameras[2].falls.min_drop");
        assert_eq!(msg, "-1 is outside 0–2");
        assert!(Falls::default().validate("falls").is_ok());
    }
}
