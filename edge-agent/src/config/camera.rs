//! `[source]` and `[[cameras]]`: how streams are pulled, and each
//! camera with its lanes, fall overrides, fire switch and decode mode —
//! checked against the rest of the config (a camera's rate must suit the
//! rules it runs).

use std::collections::HashSet;

use serde::Deserialize;

use super::check::{at_least, check_url, fail, topic_safe, Check};
use super::{Config, FallOverrides};

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SourceDefaults {
    /// `rtspsrc` jitter-buffer latency.
    pub(crate) latency_ms: u32,
    /// First reconnect delay; doubles on every failure.
    pub(crate) backoff_initial_s: f64,
    /// Cap on the reconnect delay. Retries never stop.
    pub(crate) backoff_max_s: f64,
    /// A camera with no frame for this long is restarted (watchdog). Some
    /// RTSP servers vanish without closing the stream, and only this
    /// notices.
    pub(crate) stall_timeout_s: f64,
}

impl Default for SourceDefaults {
    fn default() -> Self {
        SourceDefaults { latency_ms: 200, backoff_initial_s: 1.0, backoff_max_s: 30.0, stall_timeout_s: 10.0 }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Camera {
    /// Topic-safe id, unique within the agent.
    pub(crate) id: String,
    /// Human-readable name shown to operators.
    pub(crate) name: String,
    /// `rtsp://…` (sub-stream preferred), `file:///…`, or `test://` for a
    /// synthetic pattern. May carry credentials; they never leave the agent.
    pub(crate) url: String,
    /// Frames per second handed to analysis; the rest are dropped before
    /// colour conversion.
    #[serde(default = "default_fps")]
    pub(crate) fps: f64,
    /// Width of the analysed frame; height follows the stream's aspect ratio.
    #[serde(default = "default_analysis_width")]
    pub analysis_width: u32,
    #[serde(default)]
    pub lanes: Vec<Lane>,
    /// Overrides of `[falls]` for this camera.
    #[serde(default)]
    pub(crate) falls: FallOverrides,
    /// Run the fire rule on this camera (when `[fire]` is set).
    #[serde(default = "default_true")]
    pub fire: bool,
    /// `all` decodes every frame; `keyframes` hands the decoder only the
    /// stream's keyframes (one per GOP, typically 1–2 s) and drops the rest
    /// before decoding: several times less decode CPU, for cameras that only
    /// run lanes at ≤ 1 fps. Falls and the fire rule's flicker check need
    /// the camera's frame rate, so both refuse it. A GOP longer than
    /// `source.stall_timeout_s` would read as a stalled stream.
    #[serde(default)]
    pub(crate) decode: Decode,
}

/// Which frames of a camera's stream are decoded.
#[derive(Debug, Clone, Copy, Default, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Decode {
    #[default]
    All,
    Keyframes,
}

/// A lane (zone) that must stay clear.
#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Lane {
    pub name: String,
    /// Normalised `[x, y]` vertices (0–1, origin top-left), at least three.
    pub polygon: Vec<[f64; 2]>,
    /// Detector class names that count as blocking.
    pub classes: Vec<String>,
    /// Seconds the lane must stay occupied before `start`.
    pub dwell_s: f64,
    /// Seconds the lane must stay empty before `end`; short detection gaps
    /// inside this window do not reset the dwell.
    #[serde(default = "default_clear_s")]
    pub clear_s: f64,
    /// What counts as blocking: tracked objects of `classes`, the
    /// class-agnostic obstruction cue (the lane differs from its clear
    /// reference), or either.
    #[serde(default)]
    pub cue: LaneCue,
    /// Obstruction cue: the fraction of the lane's cells that must differ
    /// from the clear reference.
    #[serde(default = "default_min_occupancy")]
    pub min_occupancy: f64,
}

/// Which cue blocks a lane.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LaneCue {
    #[default]
    Objects,
    Obstruction,
    Both,
}

impl LaneCue {
    pub(crate) fn objects(self) -> bool {
        self != LaneCue::Obstruction
    }

    pub(crate) fn obstruction(self) -> bool {
        self != LaneCue::Objects
    }
}

fn default_min_occupancy() -> f64 {
    0.3
}

/// Most lanes one camera may have: every lane costs analysis time on every
/// frame, and the file and remote changes (which may add lanes) alike are
/// bounded by it.
pub const MAX_LANES_PER_CAMERA: usize = 16;
/// Most vertices of a lane's polygon (a hand-drawn lane has a handful).
pub const MAX_POLYGON_POINTS: usize = 64;

impl SourceDefaults {
    pub(super) fn validate(&self) -> Check {
        let s = self;
        if !at_least(s.backoff_initial_s, 0.001) {
            return fail("source.backoff_initial_s", "must be > 0");
        }
        if !at_least(s.backoff_max_s, s.backoff_initial_s) {
            return fail("source.backoff_max_s", "must be ≥ source.backoff_initial_s");
        }
        if !at_least(s.stall_timeout_s, 1.0) {
            return fail("source.stall_timeout_s", "must be at least 1");
        }
        Ok(())
    }
}

/// Every camera: ids unique, URLs sane, rates that suit the rules the
/// camera runs, and its lanes.
pub(super) fn validate_cameras(config: &Config) -> Check {
    if config.cameras.is_empty() {
        return fail("cameras", "at least one camera is required");
    }
    let labels = config.labels();
    let mut ids = HashSet::new();
    for (i, c) in config.cameras.iter().enumerate() {
        let at = |k: &str| format!("cameras[{i}].{k}");
        topic_safe(&c.id).or_else(|m| fail(&at("id"), m))?;
        if !ids.insert(c.id.as_str()) {
            return fail(&at("id"), format!("duplicate camera id {:?}", c.id));
        }
        c.validate(i, config)?;
        if c.lanes.len() > MAX_LANES_PER_CAMERA {
            return fail(
                &format!("cameras[{i}].lanes"),
                format!("{} lanes: at most {MAX_LANES_PER_CAMERA} per camera", c.lanes.len()),
            );
        }
        let mut names = HashSet::new();
        for (j, lane) in c.lanes.iter().enumerate() {
            topic_safe(&lane.name).or_else(|m| fail(&format!("cameras[{i}].lanes[{j}].name"), m))?;
            if !names.insert(lane.name.as_str()) {
                return fail(&format!("cameras[{i}].lanes[{j}].name"), format!("duplicate lane name {:?}", lane.name));
            }
            lane.validate(&format!("cameras[{i}].lanes[{j}]"), &labels)?;
        }
    }
    Ok(())
}

impl Camera {
    /// This camera (number `i`) against the rules it runs.
    fn validate(&self, i: usize, config: &Config) -> Check {
        let c = self;
        let at = |k: &str| format!("cameras[{i}].{k}");
        if let Err(m) = check_url(&c.url) {
            return fail(&at("url"), m);
        }
        if !(at_least(c.fps, 0.01) && c.fps <= 60.0) {
            return fail(&at("fps"), format!("{} is outside (0, 60]", c.fps));
        }
        if c.analysis_width < 64 || c.analysis_width > 3840 || c.analysis_width % 2 != 0 {
            return fail(&at("analysis_width"), "must be an even number between 64 and 3840");
        }
        let falls = c.falls.apply(&config.falls);
        falls.validate(&format!("cameras[{i}].falls"))?;
        if falls.vanish_after_s > falls.vanish_within_s {
            return fail("falls.vanish_after_s", "must be ≤ falls.vanish_within_s");
        }
        let falls_run = falls.enabled && config.pose.is_some();
        let flicker_runs = c.fire && config.fire.as_ref().is_some_and(|f| f.flicker.enabled);
        if flicker_runs && c.decode == Decode::Keyframes {
            return fail(
                &at("decode"),
                "\"keyframes\" leaves about one frame per GOP, too few for the fire rule's flicker check: set \
                 fire = false for this camera, fire.flicker.enabled = false, or decode = \"all\"",
            );
        }
        if let Some(f) = config.fire.as_ref().filter(|_| flicker_runs) {
            // Thumbnails in the check's window at this camera's rate,
            // counted without the end frame: a 29.97 fps source taken
            // at 2 a second spaces them a little over 1/fps apart.
            let frames = (c.fps * f.flicker.window_s).floor() as usize;
            if frames < f.flicker.min_frames {
                return fail(
                    &at("fps"),
                    format!(
                        "{} frames/s gives {frames} frames in fire.flicker.window_s ({} s), fewer than \
                         fire.flicker.min_frames ({}): the fire rule could never start; raise fps or window_s, \
                         or lower min_frames",
                        c.fps, f.flicker.window_s, f.flicker.min_frames
                    ),
                );
            }
        }
        if falls_run && c.decode == Decode::Keyframes {
            return fail(
                &at("decode"),
                "\"keyframes\" leaves about one frame per GOP, too few for the fall rule: set \
                 falls.enabled = false for this camera, or decode = \"all\"",
            );
        }
        if falls_run && falls.vanish && falls.vanish_within_s > config.tracking.max_age_s {
            return fail(
                "tracking.max_age_s",
                format!(
                    "{} is shorter than falls.vanish_within_s ({}): the tracker would forget a person before the \
                     fall rule's vanish path could judge them",
                    config.tracking.max_age_s, falls.vanish_within_s
                ),
            );
        }
        Ok(())
    }
}

impl Lane {
    /// This lane, at key path `at`, against the detector's `labels`.
    pub(super) fn validate(&self, at: &str, labels: &[String]) -> Check {
        let lane = self;
        let at = |k: &str| format!("{at}.{k}");
        topic_safe(&lane.name).or_else(|m| fail(&at("name"), m))?;
        if lane.polygon.len() < 3 {
            return fail(&at("polygon"), format!("needs at least 3 points, got {}", lane.polygon.len()));
        }
        if lane.polygon.len() > MAX_POLYGON_POINTS {
            return fail(&at("polygon"), format!("{} points: at most {MAX_POLYGON_POINTS}", lane.polygon.len()));
        }
        for (k, p) in lane.polygon.iter().enumerate() {
            if !p.iter().all(|v| (0.0..=1.0).contains(v)) {
                return fail(
                    &at("polygon"),
                    format!("point {k} [{}, {}] is outside 0–1 (coordinates are normalised)", p[0], p[1]),
                );
            }
        }
        if crate::vocab::polygon_area(&lane.polygon) < 1e-4 {
            return fail(&at("polygon"), "has no area (points in a line?)");
        }
        if lane.classes.is_empty() && lane.cue.objects() {
            return fail(&at("classes"), "must list at least one class (or set cue = \"obstruction\")");
        }
        if !(lane.min_occupancy > 0.0 && lane.min_occupancy <= 1.0) {
            return fail(&at("min_occupancy"), format!("{} must be in (0, 1]", lane.min_occupancy));
        }
        for class in &lane.classes {
            if !labels.contains(class) {
                return fail(&at("classes"), format!("unknown class {class:?}: not among the detector's labels"));
            }
        }
        if !at_least(lane.dwell_s, 0.0) {
            return fail(&at("dwell_s"), format!("{} must be ≥ 0", lane.dwell_s));
        }
        if !at_least(lane.clear_s, 0.0) {
            return fail(&at("clear_s"), format!("{} must be ≥ 0", lane.clear_s));
        }
        Ok(())
    }
}

fn default_fps() -> f64 {
    5.0
}
fn default_analysis_width() -> u32 {
    640
}
fn default_true() -> bool {
    true
}
fn default_clear_s() -> f64 {
    3.0
}
