//! `[obstruction]`: the thresholds of the lanes' class-agnostic
//! obstruction cue (`analytics::obstruction`), shared by every lane that
//! uses it.

use super::check::{at_least, fail, Check};

/// The cue's thresholds. Defaults measured on the development clips.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ObstructionParams {
    /// A textured cell whose luma correlates less than this with the
    /// reference differs.
    pub(crate) ncc_min: f32,
    /// Luma standard deviation (grey levels) under which a cell is flat.
    pub(crate) flat_std: f32,
    /// Normalised-colour distance above which a cell differs.
    pub(crate) chroma_max: f32,
    /// A flat cell whose brightness, corrected by the lane's overall gain,
    /// moved by more than this fraction differs.
    pub(crate) luma_max: f32,
    /// Mean luma change (grey levels) between two analysed frames that
    /// marks a cell as moving.
    pub(crate) motion_min: f32,
    /// Seconds a cell stays left out after it last moved. The inside of a
    /// plain-coloured passer-by does not change from frame to frame; its
    /// front edge moved over those cells a moment ago, its back edge will
    /// shortly.
    pub(crate) motion_hold_s: f64,
    /// Seconds of quiet frames before a new reference is used.
    pub(crate) learn_s: f64,
    /// Time constant (seconds) of the reference following slow changes
    /// while the lane reads clear; 0 freezes it.
    pub(crate) adapt_s: f64,
    /// Frames darker than this mean luma use the night reference.
    pub(crate) night_luma: f32,
}

impl Default for ObstructionParams {
    fn default() -> Self {
        ObstructionParams {
            ncc_min: 0.5,
            flat_std: 4.0,
            chroma_max: 0.12,
            luma_max: 0.35,
            motion_min: 12.0,
            motion_hold_s: 1.5,
            learn_s: 5.0,
            adapt_s: 120.0,
            night_luma: 40.0,
        }
    }
}

impl ObstructionParams {
    pub(super) fn validate(&self) -> Check {
        let o = self;
        let times = [("learn_s", o.learn_s), ("adapt_s", o.adapt_s), ("motion_hold_s", o.motion_hold_s)];
        let levels = [
            ("ncc_min", o.ncc_min),
            ("flat_std", o.flat_std),
            ("chroma_max", o.chroma_max),
            ("luma_max", o.luma_max),
            ("motion_min", o.motion_min),
            ("night_luma", o.night_luma),
        ];
        for (key, v) in times.into_iter().chain(levels.map(|(k, v)| (k, v as f64))) {
            if !at_least(v, 0.0) {
                return fail(&format!("obstruction.{key}"), format!("{v} must be ≥ 0"));
            }
        }
        if o.ncc_min > 1.0 {
            return fail("obstruction.ncc_min", format!("{} must be ≤ 1 (a correlation)", o.ncc_min));
        }
        Ok(())
    }
}
