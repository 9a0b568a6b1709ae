//! The object detector: one model, shared by every camera through a few
//! `ort` sessions (`detector.sessions`, one per core by default, each
//! single-threaded: see `pool.rs` for why), behind a [`Batcher`]: frames
//! that find every session busy run together in one inference when the
//! model has a dynamic batch axis (`detector.batch`).
//!
//! Callers are the per-camera analysis threads, never the async runtime.
//! Each camera preprocesses into its own [`Preprocessor`] first, so only the
//! model run itself waits for a free session.

use ort::session::Session;

use std::time::{Duration, Instant};

use super::batch::Batcher;
use super::decode::{self, Candidate};
use super::letterbox::{Element, InputSpec, Layout, Letterbox, Preprocessor};
use super::run::{Input, ModelRun};
use super::{runtime, Detection, InferError};
use crate::config::{self, ModelFormat};

/// Which model saw an event (name, hash prefix, format): the contract's type.
pub use alleywatch_contract::event::ModelInfo;

pub struct Detector {
    sessions: Batcher<Slot, Job>,
    format: ModelFormat,
    spec: InputSpec,
    classes: usize,
    threshold: f32,
    nms_iou: f32,
    info: ModelInfo,
    /// Per output index: what it holds, resolved once at load time.
    outputs: Vec<OutputRole>,
}

/// A session and what a run needs beside it, reused on every frame.
struct Slot {
    run: ModelRun,
    /// One frame's candidates.
    found: Vec<Candidate>,
    /// A batch's input, its frames' tensors end to end (unused at batch 1).
    input: Vec<f32>,
}

/// One camera's frame through the detector. Its tensor and its output list
/// are moved in and back out, so batching copies nothing it can avoid and
/// allocates nothing.
struct Job {
    tensor: Vec<f32>,
    lb: Letterbox,
    out: Vec<Detection>,
    /// Time spent decoding and in NMS, or why the run failed.
    result: Result<Duration, InferError>,
}

#[derive(Debug, Clone, Copy)]
enum OutputRole {
    /// The single output of YOLOX / YOLOv8 / CenterNet.
    Main,
    /// NanoDet class scores for stride level `n`.
    NanoScores(usize),
    /// NanoDet box distributions for stride level `n`.
    NanoBoxes(usize),
    Unused,
}

/// One NanoDet stride level's (scores, boxes) outputs.
type NanoLevel<'a> = (Option<&'a [f32]>, Option<&'a [f32]>);

/// The input each supported format expects (see `models/models.toml`).
pub fn input_spec(format: ModelFormat, size: u32) -> InputSpec {
    // YOLOX's: BGR 0–255, NCHW, top-left, pad 114. The others differ from it
    // only where they say so.
    let yolox = InputSpec {
        width: size,
        height: size,
        element: Element::F32,
        layout: Layout::Nchw,
        bgr: true,
        mean: [0.0; 3],
        std: [1.0; 3],
        pad: 114,
        centered: false,
    };
    match format {
        ModelFormat::Yolox => yolox,
        ModelFormat::Nanodet => InputSpec { mean: [103.53, 116.28, 123.675], std: [57.375, 57.12, 58.395], ..yolox },
        ModelFormat::Yolov8 => InputSpec { bgr: false, std: [255.0; 3], centered: true, ..yolox },
        ModelFormat::Centernet => InputSpec { layout: Layout::Nhwc, bgr: false, pad: 0, ..yolox },
    }
}

impl Detector {
    /// Verifies, loads and checks a model against its configured format.
    /// `floor` is the lowest score decoded: the tracker's low threshold,
    /// below `score_threshold`, so tracks can follow weak detections.
    pub fn load(
        cfg: &config::Detector,
        classes: usize,
        floor: f32,
        env: &ort::environment::Environment,
    ) -> Result<Detector, InferError> {
        Detector::load_as("detector", cfg, classes, floor, env)
    }

    /// As [`Detector::load`], for a model configured in `section` (the
    /// fire path's box-format models): errors name that section's keys.
    pub(crate) fn load_as(
        section: &'static str,
        cfg: &config::Detector,
        classes: usize,
        floor: f32,
        env: &ort::environment::Environment,
    ) -> Result<Detector, InferError> {
        let session_spec = crate::config::ModelSession { section, ..cfg.session() };
        let path = &cfg.path;
        let shown = path.display().to_string();
        let model_err = |message: String| InferError::Model { path: shown.clone(), message };
        let (session, info) = runtime::open_session(&session_spec, &cfg.format.to_string(), env)?;

        let spec = input_spec(cfg.format, cfg.input_size);
        let input = session.inputs().first().ok_or_else(|| model_err("has no inputs".into()))?;
        if let Some(shape) = input.dtype().tensor_shape() {
            let want = spec.dims(1);
            let ok = shape.len() == 4 && shape.iter().zip(&want).all(|(&got, &w)| got < 0 || got == w);
            if !ok {
                return Err(model_err(format!(
                    "input {:?} has shape {:?}, but format {} with input_size {} needs {:?}",
                    input.name(),
                    &shape[..],
                    cfg.format,
                    cfg.input_size,
                    want
                )));
            }
        }
        let outputs = resolve_outputs(&session, cfg.format, classes, cfg.input_size).map_err(model_err)?;
        let dynamic = input.dtype().tensor_shape().is_some_and(|s| s.first().is_some_and(|&b| b < 0));
        // The default follows where the sessions really run: a CPU fallback
        // from an absent accelerator runs frames alone, as on the CPU.
        let wanted = match cfg.batch {
            Some(b) => b,
            None if runtime::provider_available(cfg.execution_provider) => cfg.batch(),
            None => 1,
        };
        let max_batch = if dynamic { wanted } else { 1 };
        if wanted > 1 && !dynamic {
            tracing::info!(
                field = %format!("{section}.batch"),
                model = %shown,
                "the model's batch axis is fixed at 1: each frame runs alone"
            );
        }
        let (per, probe) = (spec.values(), spec.dims(1));
        let slot = |session| -> Result<Slot, InferError> {
            Ok(Slot {
                run: ModelRun::new(session, max_batch, &shown, Some(probe))?,
                found: Vec::with_capacity(256),
                input: if max_batch > 1 { vec![0.0; per * max_batch] } else { Vec::new() },
            })
        };
        let first = slot(session)?;
        // The probe may have found the model does not really batch.
        let max_batch = first.run.max_batch();
        let mut sessions = vec![first];
        for _ in 1..cfg.sessions {
            let (more, _) = runtime::open_session(&session_spec, &cfg.format.to_string(), env)?;
            sessions.push(slot(more)?);
        }
        Ok(Detector {
            sessions: Batcher::new(sessions, max_batch),
            format: cfg.format,
            spec,
            classes,
            threshold: floor.min(cfg.score_threshold),
            nms_iou: cfg.nms_iou,
            info,
            outputs,
        })
    }

    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// A preprocessor matching this model, for one camera to own.
    pub fn preprocessor(&self) -> Preprocessor {
        Preprocessor::new(self.spec)
    }

    /// The most frames one inference carries (1 where the model's batch
    /// axis is fixed).
    pub fn max_batch(&self) -> usize {
        self.sessions.max_batch()
    }

    /// (inferences run, frames they carried) since loading.
    pub fn batch_stats(&self) -> (u64, u64) {
        self.sessions.stats()
    }

    /// Runs the model on the tensor `pre` holds and decodes detections into
    /// `out` (cleared first), in normalised frame coordinates.
    pub fn detect(&self, pre: &mut Preprocessor, lb: &Letterbox, out: &mut Vec<Detection>) -> Result<(), InferError> {
        self.detect_timed(pre, lb, out).map(|_| ())
    }

    /// As [`Detector::detect`], and returns how long decoding and NMS took
    /// (the `postprocess` stage; the rest of the call is inference, and
    /// waiting for a session).
    ///
    /// The frame may run batched with other cameras' frames: `pre`'s tensor
    /// is lent to the batch and is back in `pre` when this returns.
    pub fn detect_timed(
        &self,
        pre: &mut Preprocessor,
        lb: &Letterbox,
        out: &mut Vec<Detection>,
    ) -> Result<Duration, InferError> {
        if pre.spec() != &self.spec || pre.tensor().len() != self.spec.values() {
            return Err(InferError::Run("the preprocessor was not made by this detector".into()));
        }
        let job = Job { tensor: pre.take_tensor(), lb: *lb, out: std::mem::take(out), result: Ok(Duration::ZERO) };
        let job = self.sessions.submit(
            job,
            |slot, jobs| self.run_batch(slot, jobs),
            |job| job.result = Err(InferError::Run("the model run panicked".into())),
        );
        pre.put_tensor(job.tensor);
        *out = job.out;
        job.result
    }

    /// One inference over `jobs` (1 to `max_batch` frames), each frame's
    /// detections decoded into its own job.
    fn run_batch(&self, slot: &mut Slot, jobs: &mut [(u64, Job)]) {
        let (n, per) = (jobs.len(), self.spec.values());
        let dims = self.spec.dims(n);
        let ran = if n == 1 {
            slot.run.run(Input::F32(&dims, &jobs[0].1.tensor))
        } else {
            for (i, (_, job)) in jobs.iter().enumerate() {
                slot.input[i * per..(i + 1) * per].copy_from_slice(&job.tensor);
            }
            slot.run.run(Input::F32(&dims, &slot.input[..n * per]))
        };
        if let Err(e) = ran {
            let message = e.to_string();
            for (_, job) in jobs.iter_mut() {
                job.result = Err(InferError::Run(message.clone()));
            }
            return;
        }
        for (item, (_, job)) in jobs.iter_mut().enumerate() {
            let t = Instant::now();
            slot.found.clear();
            self.decode_item(&slot.run, item, &mut slot.found);
            decode::nms(&mut slot.found, self.nms_iou, 100);
            job.out.clear();
            job.out.extend(slot.found.iter().map(|c| Detection {
                bbox: job.lb.to_frame(c.x1, c.y1, c.x2, c.y2),
                class_id: c.class_id,
                score: c.score,
                track_id: None,
            }));
            job.out.retain(|d| d.bbox.area() > 0.0);
            job.result = Ok(t.elapsed());
        }
    }

    /// Batch item `item`'s outputs → candidates in model-input pixels.
    fn decode_item(&self, run: &ModelRun, item: usize, found: &mut Vec<Candidate>) {
        let size = self.spec.width as usize;
        let mut nano: [NanoLevel; 3] = [(None, None); 3];
        for (i, role) in self.outputs.iter().enumerate() {
            let data = run.output_item(i, item);
            match role {
                OutputRole::Main => match self.format {
                    ModelFormat::Yolox => decode::yolox(data, self.classes, size, self.threshold, found),
                    ModelFormat::Yolov8 => {
                        let mut shape = [0; 6];
                        let dims = run.output_shape(i, &mut shape);
                        let anchors = if dims > 0 { shape[dims - 1] as usize } else { 0 };
                        decode::yolov8(data, self.classes, anchors, self.threshold, found)
                    }
                    ModelFormat::Centernet => decode::centernet(data, self.threshold, found),
                    ModelFormat::Nanodet => {}
                },
                OutputRole::NanoScores(l) => nano[*l].0 = Some(data),
                OutputRole::NanoBoxes(l) => nano[*l].1 = Some(data),
                OutputRole::Unused => {}
            }
        }
        for (level, pair) in nano.iter().enumerate() {
            if let (Some(scores), Some(boxes)) = pair {
                decode::nanodet(level, scores, boxes, self.classes, size, self.threshold, found);
            }
        }
    }
}

/// Checks output shapes against the format and, for NanoDet, works out
/// which of its six outputs is which (the export orders them arbitrarily).
fn resolve_outputs(
    session: &Session,
    format: ModelFormat,
    classes: usize,
    size: u32,
) -> Result<Vec<OutputRole>, String> {
    let shapes: Vec<(String, Vec<i64>)> = session
        .outputs()
        .iter()
        .map(|o| (o.name().to_string(), o.dtype().tensor_shape().map(|s| s.to_vec()).unwrap_or_default()))
        .collect();
    let describe = || shapes.iter().map(|(n, s)| format!("{n}{s:?}")).collect::<Vec<_>>().join(", ");
    match format {
        ModelFormat::Nanodet => {
            let mut roles = vec![OutputRole::Unused; shapes.len()];
            let mut seen = 0;
            for (i, (_, s)) in shapes.iter().enumerate() {
                let (Some(&cells), Some(&last)) = (s.get(1), s.last()) else { continue };
                let side = size as i64;
                let Some(level) = decode::STRIDES.iter().position(|&st| cells == (side / st as i64).pow(2)) else {
                    continue;
                };
                if last == classes as i64 {
                    roles[i] = OutputRole::NanoScores(level);
                    seen += 1;
                } else if last == 4 * decode::NANODET_BINS as i64 {
                    roles[i] = OutputRole::NanoBoxes(level);
                    seen += 1;
                }
            }
            if seen != 6 {
                return Err(format!(
                    "format nanodet needs score [1, cells, {classes}] and box [1, cells, 44] outputs for strides 8/16/32; the model has {}",
                    describe()
                ));
            }
            Ok(roles)
        }
        _ => {
            let Some((_, s)) = shapes.first() else { return Err("has no outputs".into()) };
            let ok = match format {
                ModelFormat::Yolox => s.len() == 3 && (s[2] < 0 || s[2] == 5 + classes as i64),
                ModelFormat::Yolov8 => s.len() == 3 && (s[1] < 0 || s[1] == 4 + classes as i64),
                ModelFormat::Centernet => s.len() == 3 && (s[2] < 0 || s[2] == 6),
                ModelFormat::Nanodet => unreachable!(),
            };
            if !ok {
                let want = match format {
                    ModelFormat::Yolox => format!("[1, anchors, {}] (5 + {classes} labels)", 5 + classes),
                    ModelFormat::Yolov8 => format!("[1, {}, anchors] (4 + {classes} labels)", 4 + classes),
                    _ => "[1, 100, 6]".into(),
                };
                return Err(format!("format {format} needs a first output {want}; the model has {}", describe()));
            }
            let mut roles = vec![OutputRole::Unused; shapes.len()];
            roles[0] = OutputRole::Main;
            Ok(roles)
        }
    }
}

/// Loads a detector from config, initialising ONNX Runtime on first use.
pub(crate) fn load_from_config(cfg: &crate::config::Config) -> Result<Detector, InferError> {
    let env = runtime::init(cfg.ort_library.as_deref())?;
    Detector::load(&cfg.detector, cfg.labels().len(), cfg.tracking.low_score, env)
}

impl std::fmt::Debug for Detector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Detector").field("info", &self.info).finish()
    }
}
