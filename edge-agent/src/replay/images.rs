//! `eval-images`: a fire/smoke model against a folder of labelled stills.
//!
//! Clips tell whether the *rule* alerts in time; stills tell whether the
//! *model* sees fire and smoke, and what it takes for them. An operator
//! runs this on stills from their own cameras (a warm-lit shop, a neon
//! sign, a foggy morning) before trusting a model there, the project's or
//! one they bring.
//!
//! The decision is the one the fire rule makes per analysed frame: an image
//! *hits* a kind when a candidate region of that kind scores at least the
//! threshold and covers between the kind's `min_area` and `max_area` of the
//! frame. Each image goes through the agent's own path (resized to the
//! camera's analysis width, letterboxed, the same model code), once; a
//! heat-map's regions depend on the threshold, so each point of the curve
//! reads the same output at its own floor.
//!
//! Labels are YOLO text files (`class cx cy w h`, normalised): the image's
//! path with its last `images` folder replaced by `labels` (`images/x.jpg`
//! → `labels/x.txt`, `images/val/x.jpg` → `labels/val/x.txt`), else `x.txt`
//! beside the image. No label file, or an empty one, is an image with neither kind (a
//! negative). Class ids are named by `--names` or the set's `data.yaml`,
//! and mapped to fire and smoke by the model's `[fire.classes]` names.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::{frames, ReplayError};
use crate::config::{Camera, Fire, FireKind};
use crate::draw::{Canvas, Rgb};
use crate::infer::fire::{FireHit, FireModel};
use crate::vocab::BBox;

/// The thresholds of the curve: 0.05, 0.10, … 0.95.
const CURVE: [f32; 19] =
    [0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95];

/// Most images a set may hold: a bound on memory and on a mistaken `/`.
const MAX_IMAGES: usize = 100_000;

/// One labelled still.
#[derive(Debug, Clone)]
pub struct LabelledImage {
    pub(crate) path: PathBuf,
    /// Boxes of the two kinds, normalised to the image.
    pub(crate) boxes: Vec<(FireKind, BBox)>,
}

/// What to evaluate and how.
#[derive(Debug, Clone)]
pub struct ImageEvalOptions {
    /// Dataset class names in id order (`--names`); `None`: the set's
    /// `data.yaml`, else `fire, smoke`.
    pub names: Option<Vec<String>>,
    /// False positives and negatives listed per kind in the printout.
    pub top: usize,
}

/// One point of a precision-recall curve.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct CurvePoint {
    pub(crate) threshold: f32,
    pub tp: usize,
    pub fp: usize,
    #[serde(rename = "fn")]
    pub fn_: usize,
    pub precision: f64,
    pub(crate) recall: f64,
}

/// An image named in a list, with its score.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Ranked {
    pub file: String,
    /// The image's best region score of the kind (within the area gates),
    /// at the lowest floor of the curve; 0 when none.
    pub score: f32,
}

/// One kind's figures.
#[derive(Debug, Clone, Serialize)]
pub struct KindReport {
    pub positives: usize,
    pub negatives: usize,
    /// The configured `min_score` and the figures there.
    pub at_threshold: CurvePoint,
    /// Labelled boxes touched by a region of the kind at the threshold.
    pub boxes: usize,
    pub boxes_found: usize,
    /// Area under the curve's precision over recall (step-wise, from the
    /// highest threshold down).
    pub(crate) average_precision: f64,
    pub curve: Vec<CurvePoint>,
    /// Negatives that hit at the threshold, highest score first.
    pub false_positives: Vec<Ranked>,
    /// Positives that did not, highest score first.
    pub(crate) false_negatives: Vec<Ranked>,
}

/// The whole report (`report.json`).
#[derive(Debug, Clone, Serialize)]
pub struct ImageReport {
    pub(crate) set: String,
    pub(crate) model: String,
    pub(crate) format: String,
    pub(crate) input_size: u32,
    pub(crate) analysis_width: u32,
    pub(crate) images: usize,
    /// Images that could not be read (they count as misses), with why.
    pub(crate) unreadable: Vec<String>,
    pub fire: KindReport,
    pub smoke: KindReport,
}

impl ImageReport {
    pub(crate) fn kind(&self, kind: FireKind) -> &KindReport {
        match kind {
            FireKind::Fire => &self.fire,
            FireKind::Smoke => &self.smoke,
        }
    }
}

/// Every labelled image under `set` (a folder, searched recursively, or a
/// text file listing image paths one per line, relative to the list).
pub fn load_set(set: &Path, opts: &ImageEvalOptions, fire: &Fire) -> Result<Vec<LabelledImage>, ReplayError> {
    let shown = set.display().to_string();
    let input = |message: String| ReplayError::Input { file: shown.clone(), message };
    let meta = std::fs::metadata(set).map_err(|e| input(e.to_string()))?;
    let mut paths = Vec::new();
    let root = if meta.is_dir() {
        walk(set, 0, &mut paths).map_err(|e| input(e.to_string()))?;
        set.to_path_buf()
    } else {
        let text = std::fs::read_to_string(set).map_err(|e| input(e.to_string()))?;
        let base = set.parent().unwrap_or(Path::new("."));
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
            paths.push(base.join(line));
            if paths.len() > MAX_IMAGES {
                break;
            }
        }
        base.to_path_buf()
    };
    if paths.len() > MAX_IMAGES {
        return Err(input(format!("holds more than {MAX_IMAGES} images; point at a smaller set")));
    }
    paths.sort();
    if paths.is_empty() {
        return Err(input("no .jpg, .jpeg or .png images found".into()));
    }
    let names = match &opts.names {
        Some(n) => n.clone(),
        None => names_from_yaml(&root)?.unwrap_or_else(|| vec!["fire".into(), "smoke".into()]),
    };
    // A set's class names are the labeller's words: the model's own names
    // (`[fire.classes]`) or the common ones (fire, flame, smoke).
    let common = crate::config::ClassMap::default();
    let kinds: Vec<Option<FireKind>> =
        names.iter().map(|n| fire.classes.kind_of(n).or_else(|| common.kind_of(n))).collect();
    if !kinds.iter().any(Option::is_some) {
        return Err(ReplayError::Input {
            file: "--names".into(),
            message: format!(
                "none of the set's classes {names:?} is a fire class {:?} or a smoke class {:?}",
                fire.classes.fire, fire.classes.smoke
            ),
        });
    }
    let set: Vec<LabelledImage> = paths
        .into_iter()
        .map(|path| {
            let boxes = read_labels(&path, &kinds)?;
            Ok(LabelledImage { path, boxes })
        })
        .collect::<Result<_, ReplayError>>()?;
    if set.iter().all(|i| label_path(&i.path).is_none()) {
        tracing::warn!(set = %shown, "no label file found for any image: every image counts as a negative");
    }
    Ok(set)
}

fn is_image(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| ["jpg", "jpeg", "png"].iter().any(|x| e.eq_ignore_ascii_case(x)))
}

/// Images under `dir`, at most 8 folders deep, symbolic links not followed.
fn walk(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let read = |e: std::io::Error| std::io::Error::new(e.kind(), format!("{}: {e}", dir.display()));
    for entry in std::fs::read_dir(dir).map_err(read)? {
        if out.len() > MAX_IMAGES {
            break;
        }
        let entry = entry.map_err(read)?;
        let kind = entry.file_type().map_err(read)?;
        let path = entry.path();
        if kind.is_dir() && depth < 8 {
            walk(&path, depth + 1, out)?;
        } else if kind.is_file() && is_image(&path) {
            out.push(path);
        }
    }
    Ok(())
}

/// The class names of a YOLO `data.yaml` in `root` or its parent, in the
/// one-line form every exporter writes: `names: ['Fire', 'default', 'smoke']`.
fn names_from_yaml(root: &Path) -> Result<Option<Vec<String>>, ReplayError> {
    for dir in [Some(root), root.parent()].into_iter().flatten() {
        let file = dir.join("data.yaml");
        let Ok(text) = std::fs::read_to_string(&file) else { continue };
        let Some(line) = text.lines().find(|l| l.trim_start().starts_with("names:")) else { continue };
        let list = line.trim_start()["names:".len()..].trim();
        let inner = list.strip_prefix('[').and_then(|l| l.strip_suffix(']')).ok_or_else(|| ReplayError::Input {
            file: file.display().to_string(),
            message: format!("names: {list:?} is not a one-line list; pass --names instead"),
        })?;
        let names = inner.split(',').map(|n| n.trim().trim_matches(|c| c == '\'' || c == '"').to_string()).collect();
        return Ok(Some(names));
    }
    Ok(None)
}

/// The label file that goes with `image`: `../labels/x.txt` for
/// `…/images/x.jpg`, else `x.txt` beside it.
fn label_path(image: &Path) -> Option<PathBuf> {
    let mut txt = image.to_path_buf();
    txt.set_extension("txt");
    // YOLO's convention: the last `images` folder of the path becomes
    // `labels` (`images/x.jpg` and Ultralytics' `images/train/x.jpg`).
    let parts: Vec<_> = txt.components().collect();
    if let Some(i) = parts.iter().rposition(|c| c.as_os_str() == "images") {
        let yolo: PathBuf = parts
            .iter()
            .enumerate()
            .map(|(j, c)| if j == i { std::ffi::OsStr::new("labels") } else { c.as_os_str() })
            .collect();
        if yolo.exists() {
            return Some(yolo);
        }
    }
    txt.exists().then_some(txt)
}

fn read_labels(image: &Path, kinds: &[Option<FireKind>]) -> Result<Vec<(FireKind, BBox)>, ReplayError> {
    let Some(file) = label_path(image) else { return Ok(Vec::new()) };
    let shown = file.display().to_string();
    let text = std::fs::read_to_string(&file)
        .map_err(|e| ReplayError::Labels { file: shown.clone(), message: e.to_string() })?;
    let mut boxes = Vec::new();
    for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let bad = |what: &str| ReplayError::Labels {
            file: format!("{shown}:{}", n + 1),
            message: format!("{what}: expected `class cx cy w h` (YOLO, normalised), got {line:?}"),
        };
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 5 {
            return Err(bad("too few fields"));
        }
        let class: usize = f[0].parse().map_err(|_| bad("class is not an index"))?;
        let v: Vec<f32> =
            f[1..5].iter().map(|x| x.parse::<f32>()).collect::<Result<_, _>>().map_err(|_| bad("not a number"))?;
        if v.iter().any(|x| !x.is_finite() || *x < -0.01 || *x > 1.01) {
            return Err(bad("a coordinate is outside 0–1"));
        }
        let kind =
            kinds.get(class).ok_or_else(|| bad(&format!("class {class} has no name ({} named)", kinds.len())))?;
        if let Some(kind) = kind {
            let (cx, cy, w, h) = (v[0], v[1], v[2], v[3]);
            boxes.push((*kind, BBox { x1: cx - w / 2.0, y1: cy - h / 2.0, x2: cx + w / 2.0, y2: cy + h / 2.0 }));
        }
    }
    Ok(boxes)
}

/// Per image and kind: the best gated score at each level.
struct Scored {
    /// `[image][kind][level]`: the best region score within the area gates
    /// at that level's floor, 0 when none.
    best: Vec<[Vec<f32>; 2]>,
    /// `[image][kind]`: labelled boxes touched by a gated region at the
    /// configured threshold's level.
    found: Vec<[usize; 2]>,
    /// Images that could not be read, with why.
    unreadable: Vec<String>,
}

/// Runs `model` on every image and scores it. `levels[i]` is the floor per
/// kind of level `i`; `at` is the configured threshold's level per kind.
fn score_all(
    images: &[LabelledImage],
    model: &FireModel,
    fire: &Fire,
    width: u32,
    levels: &[[f32; 2]],
    at: [usize; 2],
    progress: &mut dyn FnMut(usize),
) -> Result<Scored, ReplayError> {
    let mut pre = model.preprocessor();
    let mut hits: Vec<(usize, FireHit)> = Vec::new();
    let mut scored = Scored {
        best: Vec::with_capacity(images.len()),
        found: Vec::with_capacity(images.len()),
        unreadable: Vec::new(),
    };
    let rules = [fire.rule(FireKind::Fire), fire.rule(FireKind::Smoke)];
    for (n, img) in images.iter().enumerate() {
        let frame = match frames::load_still(&img.path, width) {
            Ok(f) => f,
            Err(e) => {
                // One broken file must not cost the whole run: it is listed
                // and scores as a miss for whatever it shows.
                scored.unreadable.push(e.to_string());
                scored.best.push([vec![0.0; levels.len()], vec![0.0; levels.len()]]);
                scored.found.push([0, 0]);
                progress(n + 1);
                continue;
            }
        };
        let lb = pre.run(&frame.rgb, frame.width, frame.height)?;
        model.detect_levels(&mut pre, &lb, levels, &mut hits)?;
        let mut best = [vec![0.0f32; levels.len()], vec![0.0f32; levels.len()]];
        let mut found = [0usize; 2];
        for (level, hit) in &hits {
            let k = hit.kind as usize;
            let a = hit.bbox.area();
            if a < rules[k].min_area || a > rules[k].max_area {
                continue;
            }
            best[k][*level] = best[k][*level].max(hit.score);
        }
        for (kind, b) in &img.boxes {
            let k = *kind as usize;
            let touched = hits.iter().any(|(level, h)| {
                let a = h.bbox.area();
                *level == at[k]
                    && h.kind == *kind
                    && h.score >= rules[k].min_score
                    && a >= rules[k].min_area
                    && a <= rules[k].max_area
                    && intersects(&h.bbox, b)
            });
            found[k] += touched as usize;
        }
        scored.best.push(best);
        scored.found.push(found);
        progress(n + 1);
    }
    Ok(scored)
}

fn intersects(a: &BBox, b: &BBox) -> bool {
    a.x1 < b.x2 && b.x1 < a.x2 && a.y1 < b.y2 && b.y1 < a.y2
}

fn point(threshold: f32, hit: impl Iterator<Item = (bool, bool)>) -> CurvePoint {
    let (mut tp, mut fp, mut fn_) = (0, 0, 0);
    for (pred, truth) in hit {
        match (pred, truth) {
            (true, true) => tp += 1,
            (true, false) => fp += 1,
            (false, true) => fn_ += 1,
            (false, false) => {}
        }
    }
    let ratio = |a: usize, b: usize| if b == 0 { 0.0 } else { (a as f64 / b as f64 * 1000.0).round() / 1000.0 };
    CurvePoint { threshold, tp, fp, fn_, precision: ratio(tp, tp + fp), recall: ratio(tp, tp + fn_) }
}

/// Precision over recall, step-wise from the highest threshold down.
fn average_precision(curve: &[CurvePoint]) -> f64 {
    let mut ap = 0.0;
    let mut last_recall = 0.0;
    for p in curve.iter().rev() {
        if p.tp + p.fp > 0 && p.recall > last_recall {
            ap += (p.recall - last_recall) * p.precision;
            last_recall = p.recall;
        }
    }
    (ap * 1000.0).round() / 1000.0
}

/// Evaluates `model` (loaded from `fire` with its floors lowered to the
/// curve's lowest threshold) on `images`; thresholds and gates come from
/// `fire`.
pub fn evaluate(
    set: &Path,
    images: &[LabelledImage],
    model: &FireModel,
    fire: &Fire,
    camera: &Camera,
    progress: &mut dyn FnMut(usize),
) -> Result<ImageReport, ReplayError> {
    let thresholds = [fire.rule(FireKind::Fire).min_score, fire.rule(FireKind::Smoke).min_score];
    // The curve's levels, then the live agent's own: regions built at the
    // floor it uses (the lower of min_score and near_fire_min_score), a hit
    // when the region's score reaches min_score.
    let mut levels: Vec<[f32; 2]> = CURVE.iter().map(|&t| [t, t]).collect();
    let live = |k: FireKind| {
        let r = fire.rule(k);
        match k {
            FireKind::Fire => r.min_score,
            FireKind::Smoke => r.min_score.min(r.near_fire_min_score),
        }
    };
    levels.push([live(FireKind::Fire), live(FireKind::Smoke)]);
    let at = [CURVE.len(), CURVE.len()];
    let scored = score_all(images, model, fire, camera.analysis_width, &levels, at, progress)?;
    let name = |i: usize| images[i].path.display().to_string();
    let kind_report = |kind: FireKind| {
        let k = kind as usize;
        let truth: Vec<bool> = images.iter().map(|im| im.boxes.iter().any(|(bk, _)| *bk == kind)).collect();
        let best = &scored.best;
        let pred_at = |level: usize| {
            let min = if level == at[k] { thresholds[k] } else { f32::MIN_POSITIVE };
            (0..images.len()).map(move |i| best[i][k][level] >= min)
        };
        let curve: Vec<CurvePoint> =
            CURVE.iter().enumerate().map(|(l, &t)| point(t, pred_at(l).zip(truth.iter().copied()))).collect();
        let here = point(thresholds[k], pred_at(at[k]).zip(truth.iter().copied()));
        let lowest = |i: usize| scored.best[i][k][0];
        let hit = |i: usize| scored.best[i][k][at[k]] >= thresholds[k];
        let mut fps: Vec<Ranked> = (0..images.len())
            .filter(|&i| !truth[i] && hit(i))
            .map(|i| Ranked { file: name(i), score: scored.best[i][k][at[k]] })
            .collect();
        let mut fns: Vec<Ranked> = (0..images.len())
            .filter(|&i| truth[i] && !hit(i))
            .map(|i| Ranked { file: name(i), score: lowest(i) })
            .collect();
        fps.sort_by(|a, b| b.score.total_cmp(&a.score).then_with(|| a.file.cmp(&b.file)));
        fns.sort_by(|a, b| b.score.total_cmp(&a.score).then_with(|| a.file.cmp(&b.file)));
        KindReport {
            positives: truth.iter().filter(|&&t| t).count(),
            negatives: truth.iter().filter(|&&t| !t).count(),
            at_threshold: here,
            boxes: images.iter().map(|im| im.boxes.iter().filter(|(bk, _)| *bk == kind).count()).sum(),
            boxes_found: scored.found.iter().map(|f| f[k]).sum(),
            average_precision: average_precision(&curve),
            curve,
            false_positives: fps,
            false_negatives: fns,
        }
    };
    Ok(ImageReport {
        set: set.display().to_string(),
        model: fire.path.display().to_string(),
        format: fire.format.to_string(),
        input_size: fire.input_size,
        analysis_width: camera.analysis_width,
        images: images.len(),
        fire: kind_report(FireKind::Fire),
        smoke: kind_report(FireKind::Smoke),
        unreadable: scored.unreadable.clone(),
    })
}

/// The printed summary: a table per kind, then the top false positives and
/// negatives.
pub fn summary(r: &ImageReport, top: usize) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{} images, model {} ({}, input {}), analysed at width {}\n",
        r.images, r.model, r.format, r.input_size, r.analysis_width
    );
    for u in r.unreadable.iter().take(top) {
        let _ = writeln!(s, "unreadable (counted as a miss): {u}");
    }
    let _ = writeln!(
        s,
        "| kind | positives | negatives | threshold | TP | FP | FN | precision | recall | boxes found | AP |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|---|---|");
    for kind in FireKind::ALL {
        let k = r.kind(kind);
        let p = &k.at_threshold;
        let _ = writeln!(
            s,
            "| {} | {} | {} | {:.2} | {} | {} | {} | {:.3} | {:.3} | {}/{} | {:.3} |",
            kind.as_str(),
            k.positives,
            k.negatives,
            p.threshold,
            p.tp,
            p.fp,
            p.fn_,
            p.precision,
            p.recall,
            k.boxes_found,
            k.boxes,
            k.average_precision
        );
    }
    for kind in FireKind::ALL {
        let k = r.kind(kind);
        let _ = writeln!(s, "\n{} curve (threshold precision/recall):", kind.as_str());
        let pts: Vec<String> =
            k.curve.iter().map(|p| format!("{:.2} {:.2}/{:.2}", p.threshold, p.precision, p.recall)).collect();
        let _ = writeln!(s, "  {}", pts.join("  "));
        for (what, list) in [("false positives", &k.false_positives), ("false negatives", &k.false_negatives)] {
            if list.is_empty() {
                continue;
            }
            let _ = writeln!(s, "{} {what} ({}), highest score first:", kind.as_str(), list.len());
            for f in list.iter().take(top) {
                let _ = writeln!(s, "  {:.3}  {}", f.score, f.file);
            }
            if list.len() > top {
                let _ = writeln!(s, "  … {} more in report.json", list.len() - top);
            }
        }
    }
    s
}

const FIRE_RGB: Rgb = [220, 40, 30];
const SMOKE_RGB: Rgb = [60, 90, 200];

/// The precision-recall curves as a PNG: recall across, precision up, one
/// line per kind, the configured threshold as a square.
pub fn plot(r: &ImageReport) -> Result<Vec<u8>, image::ImageError> {
    let (w, h) = (640u32, 480u32);
    let mut px = vec![255u8; (w * h * 3) as usize];
    // Plot area in normalised canvas coordinates.
    let (x0, x1, y0, y1) = (0.1f32, 0.96f32, 0.06f32, 0.88f32);
    let at = |recall: f64, precision: f64| [x0 + (x1 - x0) * recall as f32, y1 - (y1 - y0) * precision as f32];
    if let Some(mut c) = Canvas::new(&mut px, w, h) {
        for i in 0..=10 {
            let v = i as f64 / 10.0;
            let grid: Rgb = if i % 5 == 0 { [120, 120, 120] } else { [225, 225, 225] };
            c.line(at(v, 0.0), at(v, 1.0), grid, 1);
            c.line(at(0.0, v), at(1.0, v), grid, 1);
        }
        for (i, label) in ["0", "0.5", "1"].iter().enumerate() {
            let v = i as f64 / 2.0;
            let p = at(v, 0.0);
            c.text((p[0] * w as f32) as i64 - 8, (p[1] * h as f32) as i64 + 6, label, [255, 255, 255], 1);
            let p = at(0.0, v);
            c.text((p[0] * w as f32) as i64 - 34, (p[1] * h as f32) as i64 - 4, label, [255, 255, 255], 1);
        }
        c.text(290, (h as f32 * 0.93) as i64, "recall", [255, 255, 255], 1);
        c.text(4, 8, "precision", [255, 255, 255], 1);
        for (kind, colour, y) in [(FireKind::Fire, FIRE_RGB, 8i64), (FireKind::Smoke, SMOKE_RGB, 22)] {
            let k = r.kind(kind);
            // Points with no true positive have no precision to speak of
            // (0 by convention): drawn, they would pull the line to the origin.
            let pts: Vec<[f32; 2]> = k.curve.iter().filter(|p| p.tp > 0).map(|p| at(p.recall, p.precision)).collect();
            for pair in pts.windows(2) {
                c.line(pair[0], pair[1], colour, 2);
            }
            let p = at(k.at_threshold.recall, k.at_threshold.precision);
            let (cx, cy) = (p[0] - 0.008, p[1] - 0.01);
            for d in 0..6 {
                let o = d as f32 * 0.003;
                c.line([cx, cy + o], [cx + 0.016, cy + o], colour, 2);
            }
            let legend = format!(
                "{} AP {:.2}  P {:.2} R {:.2} at {:.2}",
                kind.as_str(),
                k.average_precision,
                k.at_threshold.precision,
                k.at_threshold.recall,
                k.at_threshold.threshold
            );
            c.line([0.5, (y + 4) as f32 / h as f32], [0.54, (y + 4) as f32 / h as f32], colour, 3);
            c.text((0.55 * w as f32) as i64, y, &legend, [255, 255, 255], 1);
        }
    }
    let mut png = Vec::new();
    image::RgbImage::from_raw(w, h, px)
        .expect("buffer sized for the image")
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)?;
    Ok(png)
}

#[cfg(test)]
mod tests;
