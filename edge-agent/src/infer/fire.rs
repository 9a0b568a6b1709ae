//! The fire/smoke model: frame → candidate regions, each `fire` or `smoke`.
//!
//! Two kinds of model sit behind one interface, so the fire rule never knows
//! which one a box runs:
//!
//! - **heat-map** (the project's `models/fire.onnx`, made by
//!   `models/train_fire.py`): NanoDet's input, one output
//!   `[1, classes, H, W]` of per-cell probabilities. Hot cells (≥ the kind's
//!   `min_score`) that touch form one region; its score is its hottest cell.
//! - **boxes** (bring your own): a YOLOv8/YOLO11, YOLOX or NanoDet export
//!   decoded by the object detector's code; `[fire.classes]` maps its class
//!   names to the two kinds, and unmapped classes are dropped.
//!
//! Regions leave here in normalised frame coordinates, unfiltered by area:
//! the rule owns `min_area`/`max_area`.

use std::sync::Mutex;

use super::letterbox::{InputSpec, Letterbox, Preprocessor};
use super::run::{Input, ModelRun};
use super::{detector, runtime, BBox, Detection, Detector, InferError, ModelInfo};
use crate::config::{self, Fire, FireKind};

/// One candidate region on one frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FireHit {
    pub kind: FireKind,
    pub score: f32,
    pub bbox: BBox,
}

enum Backend {
    Heatmap { session: Mutex<ModelRun>, classes: usize },
    Boxes { detector: Detector, scratch: Mutex<Vec<Detection>> },
}

pub struct FireModel {
    backend: Backend,
    spec: InputSpec,
    /// Per model class: the kind it reports.
    kinds: Vec<Option<FireKind>>,
    /// Per kind (fire, smoke): the cell/box score that makes a candidate.
    floor: [f32; 2],
    info: ModelInfo,
}

impl FireModel {
    /// Verifies, loads and checks the model `[fire]` names.
    pub fn load(cfg: &Fire, env: &ort::environment::Environment) -> Result<FireModel, InferError> {
        let labels = cfg.labels();
        let kinds = cfg.class_kinds();
        // The lowest score either path of a kind's rule can use.
        let lowest = |k| {
            let r = cfg.rule(k);
            r.min_score.min(if k == FireKind::Smoke { r.near_fire_min_score } else { r.min_score })
        };
        let floor = [lowest(FireKind::Fire), lowest(FireKind::Smoke)];
        let shown = cfg.path.display().to_string();
        let model_err = |message: String| InferError::Model { path: shown.clone(), message };
        match cfg.format.boxes() {
            Some(format) => {
                let det_cfg = config::Detector {
                    path: cfg.path.clone(),
                    format,
                    input_size: cfg.input_size,
                    labels: Some(labels.clone()),
                    score_threshold: floor[0].min(floor[1]),
                    nms_iou: 0.5,
                    sha256: cfg.sha256.clone(),
                    threads: cfg.threads,
                    sessions: 1,
                    batch: Some(1),
                    precision: cfg.precision,
                    execution_provider: cfg.execution_provider,
                    fallback: cfg.fallback,
                    fps: cfg.fps,
                    motion_gate: config::MotionGate::default(),
                };
                let detector = Detector::load_as("fire", &det_cfg, labels.len(), 1.0, env)?;
                let info = detector.info().clone();
                Ok(FireModel {
                    spec: detector::input_spec(format, cfg.input_size),
                    backend: Backend::Boxes { detector, scratch: Mutex::new(Vec::with_capacity(32)) },
                    kinds,
                    floor,
                    info,
                })
            }
            None => {
                let (session, info) = runtime::open_session(&cfg.session(), "heatmap", env)?;
                let spec = detector::input_spec(config::ModelFormat::Nanodet, cfg.input_size);
                let want = [1, 3, spec.height as i64, spec.width as i64];
                let input = session.inputs().first().ok_or_else(|| model_err("has no inputs".into()))?;
                if let Some(shape) = input.dtype().tensor_shape() {
                    if shape.len() != 4 || shape.iter().zip(&want).any(|(&g, &w)| g >= 0 && g != w) {
                        return Err(model_err(format!(
                            "input {:?} has shape {:?}, but format heatmap with input_size {} needs {want:?}",
                            input.name(),
                            &shape[..],
                            cfg.input_size
                        )));
                    }
                }
                let output = session.outputs().first().ok_or_else(|| model_err("has no outputs".into()))?;
                let shape = output.dtype().tensor_shape().map(|s| s.to_vec()).unwrap_or_default();
                if shape.len() != 4 || (shape[1] >= 0 && shape[1] != labels.len() as i64) {
                    return Err(model_err(format!(
                        "format heatmap needs an output [1, {}, H, W] (one channel per label {labels:?}); {:?} has {shape:?}",
                        labels.len(),
                        output.name()
                    )));
                }
                Ok(FireModel {
                    backend: Backend::Heatmap {
                        session: Mutex::new(ModelRun::new(session, 1, &shown, Some(want))?),
                        classes: labels.len(),
                    },
                    spec,
                    kinds,
                    floor,
                    info,
                })
            }
        }
    }

    pub(crate) fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// A preprocessor matching this model, for one camera to own.
    pub fn preprocessor(&self) -> Preprocessor {
        Preprocessor::new(self.spec)
    }

    /// Runs the model on the tensor `pre` holds; candidate regions go to
    /// `out` (cleared first).
    pub fn detect(&self, pre: &mut Preprocessor, lb: &Letterbox, out: &mut Vec<FireHit>) -> Result<(), InferError> {
        out.clear();
        self.detect_into(pre, lb, &[self.floor], &mut |_, hit| out.push(hit))
    }

    /// One model run, read at several score floors (per level: fire, smoke):
    /// a heat-map's regions depend on the floor (hot cells that touch), so
    /// `eval-images` asks for each threshold of its curve what the agent
    /// would have seen there. `out` gets (level index, region).
    pub(crate) fn detect_levels(
        &self,
        pre: &mut Preprocessor,
        lb: &Letterbox,
        levels: &[[f32; 2]],
        out: &mut Vec<(usize, FireHit)>,
    ) -> Result<(), InferError> {
        out.clear();
        self.detect_into(pre, lb, levels, &mut |level, hit| out.push((level, hit)))
    }

    fn detect_into(
        &self,
        pre: &mut Preprocessor,
        lb: &Letterbox,
        levels: &[[f32; 2]],
        out: &mut dyn FnMut(usize, FireHit),
    ) -> Result<(), InferError> {
        match &self.backend {
            Backend::Heatmap { session, classes } => {
                let mut run = session.lock().unwrap_or_else(|p| p.into_inner());
                run.run(Input::F32(&pre.dims(), pre.tensor()))?;
                let mut shape = [0; 6];
                let dims = run.output_shape(0, &mut shape);
                let data = run.output(0);
                let (gh, gw) = match shape[..dims] {
                    [_, c, h, w] if c as usize == *classes && h > 0 && w > 0 => (h as usize, w as usize),
                    _ => return Err(InferError::Run(format!("heat-map output has shape {:?}", &shape[..dims]))),
                };
                let grid = Grid {
                    w: gw,
                    h: gh,
                    cell_w: self.spec.width as f32 / gw as f32,
                    cell_h: self.spec.height as f32 / gh as f32,
                };
                for (c, kind) in self.kinds.iter().enumerate() {
                    let Some(kind) = *kind else { continue };
                    let Some(plane) = data.get(c * gh * gw..(c + 1) * gh * gw) else { continue };
                    for (level, floors) in levels.iter().enumerate() {
                        regions(plane, &grid, lb, floors[kind_index(kind)], kind, &mut |hit| out(level, hit));
                    }
                }
            }
            Backend::Boxes { detector, scratch } => {
                let mut dets = scratch.lock().unwrap_or_else(|p| p.into_inner());
                detector.detect(pre, lb, &mut dets)?;
                for d in dets.iter() {
                    let Some(kind) = self.kinds.get(d.class_id).copied().flatten() else { continue };
                    for (level, floors) in levels.iter().enumerate() {
                        if d.score >= floors[kind_index(kind)] {
                            out(level, FireHit { kind, score: d.score, bbox: d.bbox });
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

fn kind_index(kind: FireKind) -> usize {
    match kind {
        FireKind::Fire => 0,
        FireKind::Smoke => 1,
    }
}

/// The heat-map's cell grid in model-input pixels.
struct Grid {
    w: usize,
    h: usize,
    cell_w: f32,
    cell_h: f32,
}

/// Connected (8-neighbour) groups of cells ≥ `floor` → one hit each, box =
/// the cells' union mapped to the frame, score = the hottest cell. Cells in
/// the letterbox padding are skipped: they show no frame.
fn regions(plane: &[f32], g: &Grid, lb: &Letterbox, floor: f32, kind: FireKind, out: &mut dyn FnMut(FireHit)) {
    let inner_w = lb.frame_w as f32 * lb.scale + lb.pad_x;
    let inner_h = lb.frame_h as f32 * lb.scale + lb.pad_y;
    let inside = |r: usize, c: usize| (c as f32 * g.cell_w) < inner_w && (r as f32 * g.cell_h) < inner_h;
    let mut seen = vec![false; plane.len()];
    let mut stack = Vec::new();
    // NaN cells are never hot.
    let hot = |v: f32| v >= floor;
    for start in 0..plane.len() {
        if seen[start] || !hot(plane[start]) || !inside(start / g.w, start % g.w) {
            continue;
        }
        seen[start] = true;
        stack.push(start);
        let (mut r0, mut r1, mut c0, mut c1, mut best) = (usize::MAX, 0, usize::MAX, 0, 0f32);
        while let Some(i) = stack.pop() {
            let (r, c) = (i / g.w, i % g.w);
            (r0, r1, c0, c1) = (r0.min(r), r1.max(r), c0.min(c), c1.max(c));
            best = best.max(plane[i]);
            for dr in -1i64..=1 {
                for dc in -1i64..=1 {
                    let (nr, nc) = (r as i64 + dr, c as i64 + dc);
                    if nr < 0 || nc < 0 || nr >= g.h as i64 || nc >= g.w as i64 {
                        continue;
                    }
                    let j = nr as usize * g.w + nc as usize;
                    if !seen[j] && hot(plane[j]) && inside(nr as usize, nc as usize) {
                        seen[j] = true;
                        stack.push(j);
                    }
                }
            }
        }
        let bbox = lb.to_frame(
            c0 as f32 * g.cell_w,
            r0 as f32 * g.cell_h,
            (c1 + 1) as f32 * g.cell_w,
            (r1 + 1) as f32 * g.cell_h,
        );
        if bbox.area() > 0.0 {
            out(FireHit { kind, score: best, bbox });
        }
    }
}

/// Loads the fire model when `[fire]` is configured.
pub(crate) fn load_from_config(cfg: &crate::config::Config) -> Result<Option<FireModel>, InferError> {
    let Some(fire) = &cfg.fire else { return Ok(None) };
    let env = runtime::init(cfg.ort_library.as_deref())?;
    FireModel::load(fire, env).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two separate hot blobs become two regions with their own peaks;
    /// diagonal neighbours join; padding cells never count.
    #[test]
    fn hot_cells_group_into_regions() {
        // 4 × 4 grid of 10-px cells over a 40 × 40 input; the frame is
        // 40 × 30, so the last row is letterbox padding.
        let g = Grid { w: 4, h: 4, cell_w: 10.0, cell_h: 10.0 };
        let lb = Letterbox::new(40, 30, 40, false);
        #[rustfmt::skip]
        let plane = [
            0.9, 0.0, 0.0, 0.0,
            0.0, 0.6, 0.0, 0.7,
            0.0, 0.0, 0.0, 0.8,
            0.9, 0.9, 0.9, 0.9, // padding
        ];
        let mut out = Vec::new();
        regions(&plane, &g, &lb, 0.5, FireKind::Fire, &mut |h| out.push(h));
        assert_eq!(out.len(), 2, "{out:?}");
        let a = out.iter().find(|h| h.bbox.x1 == 0.0).unwrap();
        assert_eq!(a.score, 0.9);
        assert!((a.bbox.x2 - 0.5).abs() < 1e-6 && (a.bbox.y2 - 2.0 / 3.0).abs() < 1e-6, "{a:?}");
        let b = out.iter().find(|h| h.bbox.x1 > 0.5).unwrap();
        assert_eq!(b.score, 0.8);
        assert!((b.bbox.y1 - 1.0 / 3.0).abs() < 1e-6 && (b.bbox.y2 - 1.0).abs() < 1e-6, "{b:?}");
        out.clear();
        regions(&plane, &g, &lb, 0.95, FireKind::Fire, &mut |h| out.push(h));
        assert!(out.is_empty());
    }
}
