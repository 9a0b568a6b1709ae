//! The fall rule's parameters: `[falls]` and per-camera `cameras[].falls`.
//!
//! One macro lists every parameter once, with its default, its valid range
//! and its meaning; it generates the global table ([`Falls`]), the
//! all-optional per-camera table ([`FallOverrides`]), the merge and the range
//! checks, so the three can never drift apart. What each parameter does, and
//! how the defaults were measured, is in the README ("Falls").

use serde::{Deserialize, Serialize};

macro_rules! fall_params {
    ($( $(#[doc = $doc:expr])* $name:ident : $ty:ty = $default:expr, $min:expr, $max:expr; )*) => {
        /// The fall rule's parameters for one camera (after merging).
        #[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq)]
        #[serde(default, deny_unknown_fields)]
        pub struct Falls {
            /// Run the fall rule (needs `[pose]`).
            pub enabled: bool,
            $( $(#[doc = $doc])* pub $name: $ty, )*
        }

        impl Default for Falls {
            fn default() -> Self {
                Falls { enabled: true, $( $name: $default, )* }
            }
        }

        /// Per-camera overrides: any key of `[falls]`.
        #[derive(Debug, Clone, Default, Deserialize, PartialEq)]
        #[serde(deny_unknown_fields)]
        pub struct FallOverrides {
            pub enabled: Option<bool>,
            $( pub $name: Option<$ty>, )*
        }

        impl FallOverrides {
            /// `base` with every key set here replaced.
            pub fn apply(&self, base: &Falls) -> Falls {
                Falls {
                    enabled: self.enabled.unwrap_or(base.enabled),
                    $( $name: self.$name.unwrap_or(base.$name), )*
                }
            }
        }

        impl Falls {
            /// Range checks; `at` is the table's key path for messages.
            pub fn validate(&self, at: &str) -> Result<(), (String, String)> {
                $(
                    let v = self.$name as f64;
                    if !(v.is_finite() && v >= $min as f64 && v <= $max as f64) {
                        return Err((
                            format!("{at}.{}", stringify!($name)),
                            format!("{} is outside {}–{}", self.$name, $min, $max),
                        ));
                    }
                )*
                Ok(())
            }
        }
    };
}

fall_params! {
    /// The fall itself must happen within this many seconds: the hips drop
    /// by `min_drop` and the body reaches a lying posture. Sitting down and
    /// lying down on purpose are slower.
    window_s: f64 = 2.0, 0.2, 10.0;
    /// Seconds the lying posture must hold after the fall before `start`.
    confirm_s: f64 = 1.0, 0.0, 60.0;
    /// Seconds upright before a fall event ends.
    recover_s: f64 = 5.0, 0.0, 3600.0;
    /// Seconds without seeing the fallen person before the event ends.
    lost_s: f64 = 10.0, 0.0, 3600.0;
    /// How far back a track's standing height (its tallest recent box) is
    /// remembered, in seconds.
    history_s: f64 = 3.0, 0.5, 60.0;
    /// Minimum drop of the hip centre within `window_s`, in standing
    /// heights. Bending over and picking something up keep the hips high.
    min_drop: f32 = 0.25, 0.0, 2.0;
    /// Box height over standing height at or below which a person counts as
    /// lying.
    lying_height_ratio: f32 = 0.6, 0.0, 1.0;
    /// Box height over standing height at or above which (with a torso
    /// within `lying_torso_deg` of vertical) a person counts as upright.
    upright_height_ratio: f32 = 0.85, 0.0, 1.5;
    /// Torso angle from vertical, in degrees, from which the torso counts as
    /// lying when the keypoints are visible.
    lying_torso_deg: f32 = 55.0, 0.0, 90.0;
    /// Keypoints scoring below this are treated as not visible.
    keypoint_score: f32 = 0.2, 0.0, 1.0;
    /// A box within this distance of the frame edge is leaving the frame:
    /// its shrinking height is not a fall.
    edge_margin: f32 = 0.02, 0.0, 0.5;
    /// A person whose box overlaps another person's by more than this IoU is
    /// not judged: merged and split boxes fake height changes.
    overlap_iou: f32 = 0.4, 0.0, 1.0;
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
