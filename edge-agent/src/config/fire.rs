//! Config of the fire path: `[fire]` names the fire/smoke model, maps its
//! classes to `fire` and `smoke`, and sets each kind's temporal rule and the
//! flicker check. Cameras opt out with `cameras[].fire = false`.
//!
//! Kept apart from `config/mod.rs` because these are the knobs an operator
//! tunes when a lamp or a kettle raises an alert. Why each default is what
//! it is: README, "Fire and smoke".

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::params::rule_params;

use super::ModelFormat;

/// What the fire model outputs.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum FireFormat {
    /// The project's own model (`models/fire.onnx`): NanoDet's input, one
    /// output `[1, classes, H, W]` of per-cell probabilities.
    Heatmap,
    /// A YOLOv8 / YOLO11 export, `[1, 4 + classes, anchors]`.
    Yolov8,
    /// A YOLOX export, `[1, anchors, 5 + classes]`.
    Yolox,
    /// A NanoDet export (GFL heads).
    Nanodet,
}

impl FireFormat {
    /// The box-detector format, for the formats that are one.
    pub(crate) fn boxes(self) -> Option<ModelFormat> {
        match self {
            FireFormat::Heatmap => None,
            FireFormat::Yolov8 => Some(ModelFormat::Yolov8),
            FireFormat::Yolox => Some(ModelFormat::Yolox),
            FireFormat::Nanodet => Some(ModelFormat::Nanodet),
        }
    }
}

impl std::fmt::Display for FireFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.boxes() {
            Some(b) => b.fmt(f),
            None => f.write_str("heatmap"),
        }
    }
}

/// `[fire]`: the model and the rule defaults shared by every camera.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fire {
    /// The ONNX file. Relative paths are resolved against the config file.
    pub path: PathBuf,
    #[serde(default = "default_format")]
    pub format: FireFormat,
    /// Square model input side in pixels (letterboxed). The project model
    /// runs at 640, the scale it was trained for: a distant fire then
    /// covers enough cells to be seen.
    #[serde(default = "default_input_size")]
    pub input_size: u32,
    /// The model's class names in output order. Default for `heatmap`:
    /// `["fire", "smoke"]`; required for the box formats.
    #[serde(default)]
    pub labels: Option<Vec<String>>,
    /// Which model classes count as fire and as smoke.
    #[serde(default)]
    pub(crate) classes: ClassMap,
    /// Expected sha256; default from `models.toml` next to the file.
    #[serde(default)]
    pub sha256: Option<String>,
    /// ONNX Runtime intra-op threads.
    #[serde(default = "default_threads")]
    pub(crate) threads: usize,
    /// `fp32` (the file `path` names) or `int8` (its quantised variant).
    #[serde(default)]
    pub(crate) precision: crate::config::Precision,
    /// ONNX Runtime execution provider: `cpu`, `cuda`, `tensorrt` or
    /// `openvino` (the loaded library must have it).
    #[serde(default)]
    pub(crate) execution_provider: crate::config::Provider,
    /// When the library lacks `execution_provider`: warn and use the CPU
    /// instead of refusing to start.
    #[serde(default)]
    pub(crate) fallback: bool,
    /// Analysis rate of the fire rule, frames per second. Fire is slow; this
    /// keeps the model's cost low and independent of the camera's fps.
    #[serde(default = "default_fps")]
    pub(crate) fps: f64,
    /// The rule for flames.
    #[serde(default)]
    pub fire: KindOverrides,
    /// The rule for smoke.
    #[serde(default)]
    pub smoke: KindOverrides,
    /// The flicker / shape-change check on candidate regions.
    #[serde(default)]
    pub(crate) flicker: Flicker,
}

/// `[fire.classes]`: model class names (case-insensitive) per kind. Classes
/// in neither list are ignored.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ClassMap {
    pub(crate) fire: Vec<String>,
    pub(crate) smoke: Vec<String>,
}

impl ClassMap {
    /// The kind a class name maps to (case-insensitive), fire first.
    pub(crate) fn kind_of(&self, name: &str) -> Option<FireKind> {
        let has = |names: &[String]| names.iter().any(|n| n.eq_ignore_ascii_case(name));
        if has(&self.fire) {
            Some(FireKind::Fire)
        } else if has(&self.smoke) {
            Some(FireKind::Smoke)
        } else {
            None
        }
    }
}

impl Default for ClassMap {
    fn default() -> Self {
        ClassMap { fire: vec!["fire".into(), "flame".into()], smoke: vec!["smoke".into()] }
    }
}

/// The two kinds the fire path reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FireKind {
    Fire,
    Smoke,
}

impl FireKind {
    pub const ALL: [FireKind; 2] = [FireKind::Fire, FireKind::Smoke];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            FireKind::Fire => "fire",
            FireKind::Smoke => "smoke",
        }
    }
}

rule_params! {
    no_defaults;
    /// One kind's temporal rule, after defaults are applied.
    #[derive(Debug, Clone, Copy, PartialEq, Serialize)]
    pub struct KindRule;
    /// `[fire.fire]` / `[fire.smoke]`: any key of [`KindRule`]; the rest keep
    /// the kind's default.
    pub struct KindOverrides;

    /// A region's peak score must reach this to count as a hit.
    min_score: f32, 0, 1;
    /// Region area as a fraction of the frame: at least this…
    min_area: f32, 0, 1;
    /// …and at most this (a frame-filling "fire" is a lighting change).
    /// (Checked against `min_area` below, with the message it has always had.)
    max_area: f32, f32::MIN, f32::MAX;
    /// `start` when at least `k` of the last `n` analysed frames hit.
    /// (`k` and `near_fire_k` are checked against `n` below.)
    k: u32, 0, u32::MAX;
    n: u32, 1, 100;
    /// `end` after this many seconds without a hit.
    clear_s: f64, 0, 3600;
    /// Smoke next to a fire region that passed the flicker check (smoke
    /// rising from a flame corroborates both) needs only `near_fire_k` of
    /// the last `n` frames at `near_fire_min_score`, and no persistence.
    /// Unused for fire.
    near_fire_min_score: f32, 0, 1;
    near_fire_k: u32, 0, u32::MAX;
    /// One fire, one event: a candidate this close to an open event (the
    /// gap between their boxes, as a fraction of the frame), or touching
    /// the event's box widened by its own size, is part of that fire. A
    /// region farther than this from every open event is a second fire.
    merge_gap: f32, 0, 1;
}

/// The defaults, measured on the development clips (README, "Fire and smoke").
pub(crate) fn default_rule(kind: FireKind) -> KindRule {
    match kind {
        FireKind::Fire => KindRule {
            min_score: 0.6,
            min_area: 0.0005,
            max_area: 0.5,
            k: 3,
            n: 7,
            clear_s: 10.0,
            near_fire_min_score: 0.4,
            near_fire_k: 3,
            merge_gap: 0.1,
        },
        FireKind::Smoke => KindRule {
            min_score: 0.85,
            min_area: 0.002,
            max_area: 0.6,
            k: 5,
            n: 7,
            clear_s: 15.0,
            near_fire_min_score: 0.5,
            near_fire_k: 3,
            merge_gap: 0.2,
        },
    }
}

/// `[fire.flicker]`: flame changes shape and brightness from frame to frame
/// (1–15 Hz) and has flame colours; lamps, neon and tail lights are static
/// or flash as a whole, and vapour is colourless and fades. Measured on the
/// camera-rate colour thumbnails the fire path keeps, over `window_s`.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Flicker {
    /// Run the check; when off, the temporal rule alone decides.
    pub(crate) enabled: bool,
    /// Seconds of thumbnails the check looks at.
    pub(crate) window_s: f64,
    /// Fire: fraction of the pixels of the model's box with flame colour
    /// (Çelik & Demirel's YCbCr rule, or a white-hot core), averaged over
    /// the window. Then either motion test passes it:
    pub(crate) fire_min_colour: f32,
    /// Fire, first test: the flame-coloured pixels flicker: their mean
    /// non-uniform brightness change between consecutive thumbnails, in
    /// grey levels, at least this.
    pub(crate) fire_min_flicker: f32,
    /// Fire, second test: the flame-coloured area changes shape (0–1;
    /// growing or shrinking in place, as a flashing sign does, scores 0)…
    pub(crate) fire_min_shape: f32,
    /// …and the whole region's non-uniform brightness change (the region's
    /// common change, a sign flashing as a whole, subtracted first) is at
    /// least this, in grey levels.
    pub(crate) fire_min_change: f32,
    /// Fewest thumbnails in the window for a verdict (a camera that just
    /// started has too little history to judge motion).
    pub(crate) min_frames: usize,
    /// Smoke: the same change measure; drifting smoke changes shape.
    pub(crate) smoke_min_change: f32,
    /// Smoke: mean colourfulness of the region (`|Cb − 128| + |Cr − 128|`)
    /// at most this: smoke is grey; neon, lamps and lit walls are not.
    pub(crate) smoke_max_chroma: f32,
    /// Smoke: mean local contrast of the region (grey levels per thumbnail
    /// pixel) at most this: smoke is soft; a moving person or a lit sign
    /// has sharp edges.
    pub(crate) smoke_max_edges: f32,
    /// Smoke: the region must stay a smoke candidate for this long, because
    /// exhaled vapour disperses within seconds while smoke keeps coming.
    pub(crate) smoke_min_persist_s: f64,
}

impl Default for Flicker {
    fn default() -> Self {
        Flicker {
            enabled: true,
            window_s: 2.0,
            fire_min_colour: 0.05,
            fire_min_flicker: 15.0,
            fire_min_shape: 0.15,
            fire_min_change: 8.0,
            min_frames: 5,
            smoke_min_change: 2.5,
            smoke_max_chroma: 20.0,
            smoke_max_edges: 23.0,
            smoke_min_persist_s: 5.0,
        }
    }
}

impl Fire {
    /// The model's class names: configured, or the heat-map's own two.
    pub(crate) fn labels(&self) -> Vec<String> {
        match &self.labels {
            Some(l) => l.clone(),
            None => vec!["fire".into(), "smoke".into()],
        }
    }

    /// For each model class, the kind it reports (if any).
    pub(crate) fn class_kinds(&self) -> Vec<Option<FireKind>> {
        self.labels().iter().map(|l| self.classes.kind_of(l)).collect()
    }

    /// The rule for `kind` with `[fire.<kind>]` applied.
    pub fn rule(&self, kind: FireKind) -> KindRule {
        let o = match kind {
            FireKind::Fire => &self.fire,
            FireKind::Smoke => &self.smoke,
        };
        o.apply(&default_rule(kind))
    }

    /// Its ONNX Runtime session keys (one session: the fire model runs at a
    /// few frames a second).
    pub(crate) fn session(&self) -> super::ModelSession<'_> {
        super::ModelSession {
            section: "fire",
            path: &self.path,
            sha256: self.sha256.as_deref(),
            threads: self.threads,
            sessions: None,
            precision: self.precision,
            provider: self.execution_provider,
            fallback: self.fallback,
        }
    }

    /// Range and consistency checks; returns the key path and message of
    /// the first problem.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let err = |k: &str, m: String| Err((format!("fire.{k}"), m));
        if self.input_size < 32 || self.input_size > 2048 || self.input_size % 32 != 0 {
            return err("input_size", format!("{} is not a multiple of 32 between 32 and 2048", self.input_size));
        }
        self.session().validate()?;
        if !(self.fps > 0.0 && self.fps <= 30.0) {
            return err("fps", format!("{} is outside (0, 30]", self.fps));
        }
        match &self.labels {
            Some(l) if l.is_empty() => return err("labels", "must not be empty".into()),
            None if self.format != FireFormat::Heatmap => {
                return err(
                    "labels",
                    format!("is required for format {}: the model's class names in order", self.format),
                )
            }
            _ => {}
        }
        let labels = self.labels();
        // A mapping the operator wrote must name real classes (a typo would
        // silently turn a kind off); the default one only maps what exists.
        let written = self.classes != ClassMap::default();
        for (key, names) in [("classes.fire", &self.classes.fire), ("classes.smoke", &self.classes.smoke)] {
            for n in names.iter().filter(|_| written) {
                if !labels.iter().any(|l| l.eq_ignore_ascii_case(n)) {
                    return err(key, format!("{n:?} is not among fire.labels {labels:?}"));
                }
            }
        }
        let kinds = self.class_kinds();
        if !kinds.iter().any(Option::is_some) {
            return err(
                "classes",
                format!("none of the model's classes {labels:?} is mapped to fire or smoke; set fire.classes"),
            );
        }
        for kind in FireKind::ALL {
            let r = self.rule(kind);
            let at = kind.as_str();
            r.validate(&format!("fire.{at}"))?;
            if !(r.min_area..=1.0).contains(&r.max_area) {
                return err(&format!("{at}.max_area"), format!("{} must be between min_area and 1", r.max_area));
            }
            if r.k == 0 || r.k > r.n {
                return err(&format!("{at}.k"), format!("{} must be between 1 and n ({})", r.k, r.n));
            }
            if r.near_fire_k == 0 || r.near_fire_k > r.n {
                return err(
                    &format!("{at}.near_fire_k"),
                    format!("{} must be between 1 and n ({})", r.near_fire_k, r.n),
                );
            }
        }
        let f = &self.flicker;
        if !(f.window_s > 0.0 && f.window_s <= 10.0) {
            return err("flicker.window_s", format!("{} is outside (0, 10]", f.window_s));
        }
        for (k, v) in [("fire_min_colour", f.fire_min_colour), ("fire_min_shape", f.fire_min_shape)] {
            if !(0.0..=1.0).contains(&v) {
                return err(&format!("flicker.{k}"), format!("{v} is outside 0–1"));
            }
        }
        if f.min_frames < 2 || f.min_frames > 300 {
            return err("flicker.min_frames", format!("{} is outside 2–300", f.min_frames));
        }
        for (k, v) in [
            ("fire_min_flicker", f.fire_min_flicker),
            ("fire_min_change", f.fire_min_change),
            ("smoke_min_change", f.smoke_min_change),
            ("smoke_max_chroma", f.smoke_max_chroma),
            ("smoke_max_edges", f.smoke_max_edges),
        ] {
            if !(0.0..=255.0).contains(&v) {
                return err(&format!("flicker.{k}"), format!("{v} is outside 0–255"));
            }
        }
        if !(f.smoke_min_persist_s >= 0.0 && f.smoke_min_persist_s <= 600.0) {
            return err("flicker.smoke_min_persist_s", format!("{} is outside 0–600", f.smoke_min_persist_s));
        }
        Ok(())
    }
}

fn default_format() -> FireFormat {
    FireFormat::Heatmap
}
fn default_input_size() -> u32 {
    640
}
fn default_threads() -> usize {
    1
}
fn default_fps() -> f64 {
    2.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fire(text: &str) -> Fire {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn yolo_class_names_map_to_kinds_case_insensitively() {
        let f = fire(
            r#"path = "x.onnx"
format = "yolov8"
labels = ["Fire", "default", "smoke"]"#,
        );
        assert!(f.validate().is_ok());
        assert_eq!(f.class_kinds(), vec![Some(FireKind::Fire), None, Some(FireKind::Smoke)]);
        let f = fire(
            r#"path = "x.onnx"
format = "yolov8"
labels = ["flame", "plume"]
classes = { fire = ["flame"], smoke = ["plume"] }"#,
        );
        assert!(f.validate().is_ok());
        assert_eq!(f.class_kinds(), vec![Some(FireKind::Fire), Some(FireKind::Smoke)]);
    }

    #[test]
    fn box_formats_need_labels_and_a_mapping() {
        let f = fire("path = \"x.onnx\"\nformat = \"yolov8\"");
        assert_eq!(f.validate().unwrap_err().0, "fire.labels");
        let f = fire("path = \"x.onnx\"\nformat = \"yolov8\"\nlabels = [\"a\", \"b\"]");
        let (key, msg) = f.validate().unwrap_err();
        assert_eq!(key, "fire.classes");
        assert!(msg.contains("[\"a\", \"b\"]"), "{msg}");
        let f = fire("path = \"x.onnx\"\nformat = \"yolov8\"\nlabels = [\"a\"]\nclasses = { fire = [\"b\"] }");
        assert_eq!(f.validate().unwrap_err().0, "fire.classes.fire");
    }

    #[test]
    fn kind_overrides_keep_the_kinds_own_defaults() {
        let f = fire("path = \"x.onnx\"\n[smoke]\nk = 2\n[fire]\nmin_score = 0.7");
        assert_eq!(f.rule(FireKind::Smoke).k, 2);
        assert_eq!(f.rule(FireKind::Smoke).n, default_rule(FireKind::Smoke).n);
        assert_eq!(f.rule(FireKind::Fire).min_score, 0.7);
        assert_eq!(f.rule(FireKind::Fire).k, default_rule(FireKind::Fire).k);
        let f = fire("path = \"x.onnx\"\n[smoke]\nk = 9\nn = 7");
        let (key, msg) = f.validate().unwrap_err();
        assert_eq!((key.as_str(), msg.as_str()), ("fire.smoke.k", "9 must be between 1 and n (7)"));
    }

    #[test]
    fn cross_checks_name_the_key_and_the_bound_it_broke() {
        let cases = [
            ("[fire]\nk = 0", "fire.fire.k", "0 must be between 1 and n (7)"),
            ("[smoke]\nnear_fire_k = 0", "fire.smoke.near_fire_k", "0 must be between 1 and n (7)"),
            ("[fire]\nmax_area = 1.5", "fire.fire.max_area", "1.5 must be between min_area and 1"),
            ("[fire]\nmin_area = 0.2\nmax_area = 0.1", "fire.fire.max_area", "0.1 must be between min_area and 1"),
            ("[smoke]\nn = 0", "fire.smoke.n", "0 is outside 1–100"),
        ];
        for (toml, want_key, want_msg) in cases {
            let (key, msg) = fire(&format!("path = \"x.onnx\"\n{toml}")).validate().unwrap_err();
            assert_eq!((key.as_str(), msg.as_str()), (want_key, want_msg), "{toml}");
        }
    }
}
