//! `edge-agent eval LABELS.toml`: replay every labelled clip and score the
//! events against the labels.
//!
//! Scoring, per kind:
//! - a labelled event is a **TP** when an event of the same kind *starts*
//!   (its `start` message is sent) within `[at − early_s, at + late_s]`;
//! - any other `start` is an **FP**; a label with no match is an **FN**;
//! - the **delay** of a TP is start time − `at`;
//! - the **flicker veto rate**, per kind, on the clips labelled with that
//!   kind: of the analysed frames where a region had its k of n hits, the
//!   share the flicker check refused (each one a delay or a miss).
//!
//! Each clip runs with the base config (`--config`, or replay's default),
//! plus the clip's `config` overlay (a TOML file of agent config keys,
//! merged table by table) and its `lanes`, which replace the camera's lanes
//! and use the same keys as the agent config. Paths in the labels file are
//! relative to it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{ReplayError, ReplayEvent, ReplayOptions};
use crate::analytics::fire::FlickerTally;
use crate::camera::Models;
use crate::config::{Config, FireKind};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Labels {
    #[serde(default)]
    pub(crate) defaults: Defaults,
    #[serde(default)]
    pub(crate) clip: Vec<ClipLabels>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct Defaults {
    pub(crate) early_s: f64,
    pub(crate) late_s: f64,
    /// Seconds a still image is shown.
    pub(crate) still_s: f64,
    /// Seconds the last frame of a video is held after it ends.
    pub(crate) hold_last_s: f64,
}

impl Default for Defaults {
    fn default() -> Self {
        Defaults { early_s: 1.0, late_s: 3.0, still_s: 10.0, hold_last_s: 0.0 }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ClipLabels {
    pub(crate) file: PathBuf,
    /// A TOML file of agent config keys merged over the base config.
    #[serde(default)]
    pub(crate) config: Option<PathBuf>,
    /// Lanes for the clip's camera (agent config keys).
    #[serde(default)]
    pub(crate) lanes: Option<Vec<toml::Value>>,
    #[serde(default)]
    pub(crate) hold_last_s: Option<f64>,
    #[serde(default)]
    pub(crate) still_s: Option<f64>,
    pub(crate) events: Vec<LabelledEvent>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LabelledEvent {
    pub(crate) kind: String,
    pub(crate) at: f64,
    #[serde(default)]
    pub(crate) early_s: Option<f64>,
    #[serde(default)]
    pub(crate) late_s: Option<f64>,
}

/// Counts for one kind.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct KindScore {
    pub(crate) tp: u32,
    pub(crate) fp: u32,
    #[serde(rename = "fn")]
    pub(crate) fn_: u32,
    pub(crate) precision: Option<f64>,
    pub(crate) recall: Option<f64>,
    pub(crate) delays_s: Vec<f64>,
    pub(crate) mean_delay_s: Option<f64>,
    pub(crate) median_delay_s: Option<f64>,
    pub(crate) max_delay_s: Option<f64>,
}

/// An event that started, at clip time `t`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Start {
    pub kind: String,
    pub t: f64,
}

/// A labelled event and the start that matched it, if any.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Outcome {
    pub kind: String,
    pub at: f64,
    pub matched: Option<f64>,
}

/// One clip's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct ClipResult {
    pub file: String,
    pub starts: Vec<Start>,
    pub labelled: Vec<Outcome>,
    pub false_positives: Vec<Start>,
    pub(crate) frames: u64,
    pub fps: f64,
    pub error: Option<String>,
    /// The flicker check's verdicts on ready regions, per kind.
    pub(crate) flicker: BTreeMap<String, FlickerTally>,
}

/// Per kind, the flicker check on the clips labelled with that kind: every
/// veto there held back a real fire or smoke (a delay, or a miss).
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct VetoRate {
    pub(crate) judged: u32,
    pub(crate) vetoed: u32,
    /// Of the vetoes, smoke that had only not persisted long enough yet.
    pub(crate) waiting: u32,
    pub(crate) rate: Option<f64>,
    /// The rate without the waits: vetoes on what the region looked like.
    pub(crate) rate_on_looks: Option<f64>,
    /// Labelled events of the kind that never started although the check
    /// had vetoed a ready region on their clip.
    pub(crate) missed_after_veto: u32,
}

#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    pub(crate) labels: String,
    pub(crate) kinds: BTreeMap<String, KindScore>,
    pub(crate) clips: Vec<ClipResult>,
    pub(crate) frames: u64,
    pub(crate) wall_s: f64,
    /// Analysed frames per second over all clips.
    pub(crate) fps: f64,
    /// The flicker check's veto rate on true fire and smoke, per kind.
    pub(crate) flicker_on_positives: BTreeMap<String, VetoRate>,
}

/// Reads a labels file.
pub(crate) fn load_labels(path: &Path) -> Result<Labels, ReplayError> {
    let err = |message: String| ReplayError::Labels { file: path.display().to_string(), message };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let de = toml::Deserializer::parse(&text).map_err(|e| err(e.to_string()))?;
    serde_path_to_error::deserialize(de).map_err(|e| err(format!("{}: {}", e.path(), e.inner().message())))
}

/// Merges `overlay` into `base`, table by table; other values replace.
pub(crate) fn merge(base: &mut toml::Table, overlay: toml::Table) {
    for (k, v) in overlay {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

/// The config for one clip: base + overlay file + lanes on the first camera.
pub(crate) fn clip_config(
    base_text: &str,
    base_file: &Path,
    dir: &Path,
    clip: &ClipLabels,
    sets: &[super::LaneSet],
) -> Result<Config, ReplayError> {
    let labels_err = |message: String| ReplayError::Labels { file: clip.file.display().to_string(), message };
    let mut table: toml::Table = toml::from_str(base_text).map_err(|e| labels_err(e.to_string()))?;
    if let Some(overlay) = &clip.config {
        let path = dir.join(overlay);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| ReplayError::Labels { file: path.display().to_string(), message: e.to_string() })?;
        let o: toml::Table = toml::from_str(&text)
            .map_err(|e| ReplayError::Labels { file: path.display().to_string(), message: e.to_string() })?;
        // Models load once from the base config; an overlay cannot swap them.
        if let Some(k) = ["detector", "pose", "ort_library"].iter().find(|k| o.contains_key(**k)) {
            return Err(ReplayError::Labels {
                file: path.display().to_string(),
                message: format!("`{k}` cannot be overridden per clip (models load once from the base config)"),
            });
        }
        merge(&mut table, o);
    }
    if let Some(lanes) = &clip.lanes {
        let cam = table
            .get_mut("cameras")
            .and_then(|c| c.as_array_mut())
            .and_then(|a| a.first_mut())
            .and_then(|c| c.as_table_mut())
            .ok_or_else(|| labels_err("the base config has no [[cameras]] to put the lanes on".into()))?;
        cam.insert("lanes".into(), toml::Value::Array(lanes.clone()));
    }
    super::set_lanes(&mut table, sets);
    let text = toml::to_string(&table).map_err(|e| labels_err(e.to_string()))?;
    Ok(Config::from_text(&text, base_file)?)
}

/// Scores one clip's starts against its labels, adding to `kinds`.
pub(crate) fn score_clip(
    labels: &[LabelledEvent],
    d: &Defaults,
    starts: &[Start],
    kinds: &mut BTreeMap<String, KindScore>,
) -> (Vec<Outcome>, Vec<Start>) {
    let mut used = vec![false; starts.len()];
    let mut labelled = Vec::new();
    for l in labels {
        let (early, late) = (l.early_s.unwrap_or(d.early_s), l.late_s.unwrap_or(d.late_s));
        let hit = starts
            .iter()
            .enumerate()
            .filter(|(i, s)| !used[*i] && s.kind == l.kind && s.t >= l.at - early && s.t <= l.at + late)
            .min_by(|a, b| (a.1.t - l.at).abs().total_cmp(&(b.1.t - l.at).abs()))
            .map(|(i, s)| (i, s.t));
        let score = kinds.entry(l.kind.clone()).or_default();
        match hit {
            Some((i, t)) => {
                used[i] = true;
                score.tp += 1;
                score.delays_s.push(t - l.at);
            }
            None => score.fn_ += 1,
        }
        labelled.push(Outcome { kind: l.kind.clone(), at: l.at, matched: hit.map(|h| h.1) });
    }
    let mut fps = Vec::new();
    for (i, s) in starts.iter().enumerate() {
        if !used[i] {
            kinds.entry(s.kind.clone()).or_default().fp += 1;
            fps.push(s.clone());
        }
    }
    (labelled, fps)
}

/// `base_text` with `fire.flicker.enabled = false` (when `[fire]` is set).
fn without_flicker(base_text: &str, base_file: &Path) -> Result<String, ReplayError> {
    let mut table: toml::Table = base_text.parse().map_err(|e: toml::de::Error| ReplayError::Input {
        file: base_file.display().to_string(),
        message: e.to_string(),
    })?;
    if let Some(toml::Value::Table(fire)) = table.get_mut("fire") {
        let mut off = toml::Table::new();
        off.insert("enabled".into(), toml::Value::Boolean(false));
        merge(fire, toml::Table::from_iter([("flicker".to_string(), toml::Value::Table(off))]));
    }
    Ok(table.to_string())
}

fn finish(s: &mut KindScore) {
    let (tp, fp, fn_) = (s.tp as f64, s.fp as f64, s.fn_ as f64);
    s.precision = (tp + fp > 0.0).then(|| tp / (tp + fp));
    s.recall = (tp + fn_ > 0.0).then(|| tp / (tp + fn_));
    if !s.delays_s.is_empty() {
        let mut d = s.delays_s.clone();
        d.sort_by(f64::total_cmp);
        s.mean_delay_s = Some(d.iter().sum::<f64>() / d.len() as f64);
        s.max_delay_s = d.last().copied();
        let n = d.len();
        s.median_delay_s = Some(if n % 2 == 1 { d[n / 2] } else { (d[n / 2 - 1] + d[n / 2]) / 2.0 });
    }
}

/// Runs every clip of `labels_path` (those whose file contains `filter`).
pub fn run(
    labels_path: &Path,
    base_config: Option<&Path>,
    filter: Option<&str>,
    flicker: bool,
    sets: &[super::LaneSet],
    progress: &mut dyn FnMut(&ClipResult),
) -> Result<EvalReport, ReplayError> {
    let started = std::time::Instant::now();
    let labels = load_labels(labels_path)?;
    let dir = labels_path.parent().unwrap_or(Path::new("."));
    let (base_text, base_file) = match base_config {
        Some(p) => (
            std::fs::read_to_string(p)
                .map_err(|e| ReplayError::Input { file: p.display().to_string(), message: e.to_string() })?,
            p.to_path_buf(),
        ),
        None => {
            let cfg = super::load_config(None)?;
            let models = cfg.detector.path.parent().unwrap_or(Path::new(".")).to_path_buf();
            (super::default_config_text(&models), PathBuf::from("<replay default>"))
        }
    };
    let base_text = if flicker { base_text } else { without_flicker(&base_text, &base_file)? };
    let base = Config::from_text(&base_text, &base_file)?;
    let models = Models::load(&base)?;
    let mut kinds: BTreeMap<String, KindScore> = BTreeMap::new();
    let mut clips = Vec::new();
    let mut frames = 0;
    let mut veto: BTreeMap<String, VetoRate> = BTreeMap::new();
    for clip in &labels.clip {
        let file = dir.join(&clip.file);
        if filter.is_some_and(|f| !file.to_string_lossy().contains(f)) {
            continue;
        }
        let opts = ReplayOptions {
            realtime: false,
            annotate: None,
            still_s: clip.still_s.unwrap_or(labels.defaults.still_s),
            hold_last_s: clip.hold_last_s.unwrap_or(labels.defaults.hold_last_s),
        };
        // Every log line of this clip's replay names it (`RUST_LOG=debug`
        // shows each flicker verdict, with what it measured).
        let _span = tracing::info_span!("clip", file = %clip.file.display()).entered();
        let outcome = clip_config(&base_text, &base_file, dir, clip, sets).and_then(|config| {
            let camera = config.cameras.first().cloned().ok_or_else(|| ReplayError::Input {
                file: base_file.display().to_string(),
                message: "has no cameras".into(),
            })?;
            super::run(&config, &camera, &models, &file, &opts, &mut |_: &ReplayEvent| {})
        });
        let (starts, nframes, fps, error, tally) = match outcome {
            Ok(r) => (
                r.events
                    .iter()
                    .filter(|e| e.phase == "start")
                    .map(|e| Start { kind: e.kind.to_string(), t: e.t })
                    .collect(),
                r.frames,
                r.fps(),
                None,
                r.flicker,
            ),
            Err(e) => (Vec::new(), 0, 0.0, Some(e.to_string()), Default::default()),
        };
        frames += nframes;
        let (labelled, false_positives) = score_clip(&clip.events, &labels.defaults, &starts, &mut kinds);
        let flicker: BTreeMap<String, FlickerTally> =
            FireKind::ALL.iter().map(|k| (k.as_str().to_string(), tally[*k as usize])).collect();
        for (kind, t) in &flicker {
            let mine: Vec<&Outcome> = labelled.iter().filter(|o| &o.kind == kind).collect();
            if mine.is_empty() {
                continue;
            }
            let v = veto.entry(kind.clone()).or_default();
            v.judged += t.judged;
            v.vetoed += t.vetoed;
            v.waiting += t.waiting;
            if t.vetoed > 0 {
                v.missed_after_veto += mine.iter().filter(|o| o.matched.is_none()).count() as u32;
            }
        }
        let result = ClipResult {
            file: clip.file.display().to_string(),
            starts,
            labelled,
            false_positives,
            frames: nframes,
            fps,
            error,
            flicker,
        };
        progress(&result);
        clips.push(result);
    }
    kinds.values_mut().for_each(finish);
    for v in veto.values_mut() {
        v.rate = (v.judged > 0).then(|| v.vetoed as f64 / v.judged as f64);
        v.rate_on_looks = (v.judged > 0).then(|| (v.vetoed - v.waiting) as f64 / v.judged as f64);
    }
    let wall_s = started.elapsed().as_secs_f64();
    Ok(EvalReport {
        labels: labels_path.display().to_string(),
        kinds,
        clips,
        frames,
        wall_s,
        fps: if wall_s > 0.0 { frames as f64 / wall_s } else { 0.0 },
        flicker_on_positives: veto,
    })
}

/// The report as the table `eval` prints.
pub fn table(r: &EvalReport) -> String {
    let opt = |v: Option<f64>, prec: usize| v.map(|x| format!("{x:.prec$}")).unwrap_or_else(|| "-".into());
    let mut s = format!(
        "{:<14} {:>4} {:>4} {:>4} {:>9} {:>7} {:>11} {:>13} {:>10}\n",
        "kind", "TP", "FP", "FN", "precision", "recall", "mean delay", "median delay", "max delay"
    );
    for (k, v) in &r.kinds {
        s += &format!(
            "{:<14} {:>4} {:>4} {:>4} {:>9} {:>7} {:>10}s {:>12}s {:>9}s\n",
            k,
            v.tp,
            v.fp,
            v.fn_,
            opt(v.precision, 2),
            opt(v.recall, 2),
            opt(v.mean_delay_s, 2),
            opt(v.median_delay_s, 2),
            opt(v.max_delay_s, 2)
        );
    }
    for (k, v) in r.flicker_on_positives.iter().filter(|(_, v)| v.judged > 0) {
        s += &format!(
            "flicker check on {k}-labelled clips: {} of {} ready frames vetoed ({:.0} %; {} only waiting for smoke_min_persist_s, so {:.0} % on looks); {} labelled {k} missed after a veto\n",
            v.vetoed,
            v.judged,
            v.rate.unwrap_or(0.0) * 100.0,
            v.waiting,
            v.rate_on_looks.unwrap_or(0.0) * 100.0,
            v.missed_after_veto
        );
    }
    s +=
        &format!("{} clips, {} frames analysed in {:.1} s: {:.1} frames/s\n", r.clips.len(), r.frames, r.wall_s, r.fps);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(kind: &str, at: f64) -> LabelledEvent {
        LabelledEvent { kind: kind.into(), at, early_s: None, late_s: None }
    }

    fn st(kind: &str, t: f64) -> Start {
        Start { kind: kind.into(), t }
    }

    #[test]
    fn scoring_matches_within_tolerance_once() {
        let d = Defaults::default();
        let mut kinds = BTreeMap::new();
        let starts = vec![st("fall", 4.0), st("fall", 4.5), st("fire", 1.0)];
        let (labelled, fps) = score_clip(&[ev("fall", 3.5), ev("smoke", 0.0)], &d, &starts, &mut kinds);
        assert_eq!(labelled[0], Outcome { kind: "fall".into(), at: 3.5, matched: Some(4.0) }, "closest start matches");
        assert_eq!(labelled[1].matched, None);
        // The second fall start and the fire are FPs.
        assert_eq!(fps, vec![st("fall", 4.5), st("fire", 1.0)]);
        kinds.values_mut().for_each(finish);
        let f = &kinds["fall"];
        assert_eq!((f.tp, f.fp, f.fn_), (1, 1, 0));
        assert_eq!(f.precision, Some(0.5));
        assert_eq!(f.recall, Some(1.0));
        assert_eq!(f.median_delay_s, Some(0.5));
        assert_eq!(kinds["smoke"].recall, Some(0.0));
        assert_eq!(kinds["fire"].precision, Some(0.0));
    }

    #[test]
    fn too_early_or_late_is_fp_and_fn() {
        let d = Defaults::default();
        let mut kinds = BTreeMap::new();
        let starts = vec![st("fall", 2.4), st("fall", 6.6)];
        score_clip(&[ev("fall", 3.5)], &d, &starts, &mut kinds);
        let f = &kinds["fall"];
        assert_eq!((f.tp, f.fp, f.fn_), (0, 2, 1), "window is [2.5, 6.5]");
        // A per-event tolerance widens it.
        let mut kinds = BTreeMap::new();
        let wide = LabelledEvent { late_s: Some(4.0), ..ev("fall", 3.5) };
        score_clip(&[wide], &d, &starts[1..], &mut kinds);
        assert_eq!(kinds["fall"].tp, 1);
    }

    #[test]
    fn no_flicker_turns_only_the_check_off() {
        let text = "a = 1\n[fire]\npath = \"f.onnx\"\n[fire.flicker]\nwindow_s = 3.0\n";
        let out: toml::Table = without_flicker(text, Path::new("x")).unwrap().parse().unwrap();
        assert_eq!(out["fire"]["flicker"]["enabled"].as_bool(), Some(false));
        assert_eq!(out["fire"]["flicker"]["window_s"].as_float(), Some(3.0));
        assert_eq!(out["fire"]["path"].as_str(), Some("f.onnx"));
        assert_eq!(out["a"].as_integer(), Some(1));
        let plain: toml::Table = without_flicker("a = 1", Path::new("x")).unwrap().parse().unwrap();
        assert!(!plain.contains_key("fire"));
    }

    #[test]
    fn merge_is_deep_for_tables_only() {
        let mut base: toml::Table = toml::from_str("a = 1\n[falls]\nconfirm_s = 1.0\nwindow_s = 2.0\n").unwrap();
        let o: toml::Table = toml::from_str("a = 2\n[falls]\nconfirm_s = 3.0\n").unwrap();
        merge(&mut base, o);
        assert_eq!(base["a"].as_integer(), Some(2));
        assert_eq!(base["falls"]["confirm_s"].as_float(), Some(3.0));
        assert_eq!(base["falls"]["window_s"].as_float(), Some(2.0));
    }

    #[test]
    fn lane_sets_reach_every_lane_and_are_validated_like_the_config() {
        use crate::replay::LaneSet;
        let sets: Vec<LaneSet> =
            ["cue=obstruction", "min_occupancy = 0.2", "classes=[]"].iter().map(|s| s.parse().unwrap()).collect();
        assert_eq!(sets[0].value, toml::Value::String("obstruction".into()), "a bare word is a string");
        assert_eq!(sets[1].value, toml::Value::Float(0.2));
        assert!("dwell_s".parse::<LaneSet>().unwrap_err().contains("KEY=VALUE"));
        assert!("a.b=1".parse::<LaneSet>().is_err());

        let base = "agent_id = \"a\"\nsite = { district = \"d\", street = \"s\", community = \"c\" }\n\
                    broker = { host = \"127.0.0.1\" }\ndetector = { path = \"m.onnx\", format = \"nanodet\", input_size = 416 }\n\
                    [[cameras]]\nid = \"c1\"\nname = \"c1\"\nurl = \"file:///x\"\n";
        let clip = ClipLabels {
            file: "a.mp4".into(),
            config: None,
            lanes: Some(vec![toml::from_str::<toml::Value>(
                "name = \"l\"\npolygon = [[0.0, 0.0], [1.0, 0.0], [1.0, 1.0]]\nclasses = [\"car\"]\ndwell_s = 5",
            )
            .unwrap()]),
            hold_last_s: None,
            still_s: None,
            events: vec![],
        };
        let config = clip_config(base, Path::new("base.toml"), Path::new("."), &clip, &sets).unwrap();
        let lane = &config.cameras[0].lanes[0];
        assert_eq!(lane.cue, crate::config::LaneCue::Obstruction);
        assert_eq!((lane.min_occupancy, lane.dwell_s, lane.classes.len()), (0.2, 5.0, 0));
        // A bad value is the config's own error, naming the lane key.
        let bad = ["cue=sometimes".parse().unwrap()];
        let e = clip_config(base, Path::new("base.toml"), Path::new("."), &clip, &bad).unwrap_err().to_string();
        assert!(e.contains("cameras[0].lanes[0].cue"), "{e}");
    }

    #[test]
    fn labels_file_errors_name_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("labels.toml");
        std::fs::write(&p, "[[clip]]\nfile = \"a.mp4\"\nevents = [{ kind = \"fall\", att = 1.0 }]\n").unwrap();
        let e = load_labels(&p).unwrap_err().to_string();
        assert!(e.contains("labels.toml") && e.contains("clip[0].events[0]") && e.contains("att"), "{e}");
    }
}
