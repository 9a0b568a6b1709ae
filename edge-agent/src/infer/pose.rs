//! The pose model: MoveNet MultiPose, shared by every camera through a pool
//! of `ort` sessions.
//!
//! MultiPose finds up to six people and 17 COCO keypoints for each in one
//! pass. The fall rule needs the keypoints (torso angle, hips against head);
//! its person boxes also feed the person tracker, so falls need no second
//! detector run.
//!
//! The TF.js export takes `int32 [1, H, W, 3]`, RGB 0–255, with H and W
//! multiples of 32, and returns `output_0 [1, 6, 56]`: per person 17 ×
//! (y, x, score) normalised to the *input tensor*, then ymin, xmin, ymax,
//! xmax and a person score. The frame is letterboxed top-left into the input,
//! so decoding maps input coordinates back through the [`Letterbox`].

use super::letterbox::{Element, InputSpec, Layout, Letterbox, Preprocessor};
use super::pool::Pool;
use super::run::{Input, ModelRun};
use super::{runtime, BBox, InferError, ModelInfo};
use crate::config;

/// COCO keypoint order, as MoveNet emits it.
pub(crate) const KEYPOINT_NAMES: [&str; 17] = [
    "nose",
    "left_eye",
    "right_eye",
    "left_ear",
    "right_ear",
    "left_shoulder",
    "right_shoulder",
    "left_elbow",
    "right_elbow",
    "left_wrist",
    "right_wrist",
    "left_hip",
    "right_hip",
    "left_knee",
    "right_knee",
    "left_ankle",
    "right_ankle",
];

/// Indices into [`Pose::keypoints`] the rules use by name.
pub mod kp {
    pub const NOSE: usize = 0;
    pub(crate) const LEFT_EAR: usize = 3;
    pub(crate) const RIGHT_EAR: usize = 4;
    pub const LEFT_SHOULDER: usize = 5;
    pub const RIGHT_SHOULDER: usize = 6;
    pub const LEFT_HIP: usize = 11;
    pub const RIGHT_HIP: usize = 12;
    pub const LEFT_ANKLE: usize = 15;
    pub const RIGHT_ANKLE: usize = 16;
}

/// Values per person in the MultiPose output.
const STRIDE: usize = 56;

/// One keypoint in normalised frame coordinates.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize)]
pub struct Keypoint {
    pub x: f32,
    pub y: f32,
    pub score: f32,
}

/// One person with a skeleton.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pose {
    pub bbox: BBox,
    pub score: f32,
    pub keypoints: [Keypoint; 17],
}

/// Input tensor size for a frame: long side `long`, short side scaled the
/// same and padded up to a multiple of 32 (MoveNet's stride).
pub(crate) fn input_dims(frame_w: u32, frame_h: u32, long: u32) -> (u32, u32) {
    let s = long as f64 / frame_w.max(frame_h).max(1) as f64;
    let up = |v: u32| (((v as f64 * s).round() as u32).max(1)).div_ceil(32) * 32;
    (up(frame_w), up(frame_h))
}

/// The input spec MoveNet needs at a given size.
pub(crate) fn input_spec(width: u32, height: u32) -> InputSpec {
    InputSpec {
        width,
        height,
        layout: Layout::Nhwc,
        element: Element::I32,
        bgr: false,
        mean: [0.0; 3],
        std: [1.0; 3],
        pad: 0,
        centered: false,
    }
}

/// Decodes a `[1, 6, 56]` MultiPose output into `out` (cleared first),
/// keeping people scoring at least `min_score`. Coordinates go back to the
/// frame through `lb`; `in_w`/`in_h` are the input tensor's size.
pub(crate) fn decode_multipose(
    data: &[f32],
    lb: &Letterbox,
    in_w: u32,
    in_h: u32,
    min_score: f32,
    out: &mut Vec<Pose>,
) {
    out.clear();
    let (w, h) = (in_w as f32, in_h as f32);
    for person in data.chunks_exact(STRIDE) {
        let score = person[55];
        if score.is_nan() || score < min_score {
            continue;
        }
        let mut keypoints = [Keypoint::default(); 17];
        for (k, kp) in keypoints.iter_mut().enumerate() {
            let (y, x, s) = (person[3 * k], person[3 * k + 1], person[3 * k + 2]);
            let p = lb.to_frame(x * w, y * h, x * w, y * h);
            // A non-finite coordinate is no sighting (and must not reach JSON as null).
            let ok = [x, y, s].iter().all(|v| v.is_finite());
            *kp = Keypoint {
                x: if ok { p.x1 } else { 0.0 },
                y: if ok { p.y1 } else { 0.0 },
                score: if ok { s } else { 0.0 },
            };
        }
        let (ymin, xmin, ymax, xmax) = (person[51], person[52], person[53], person[54]);
        let bbox = lb.to_frame(xmin * w, ymin * h, xmax * w, ymax * h);
        if bbox.area() <= 0.0 {
            continue;
        }
        out.push(Pose { bbox, score, keypoints });
    }
}

/// Keeps the best-scoring of people overlapping more than `iou` (MultiPose
/// sometimes reports one person twice).
pub(crate) fn nms(people: &mut Vec<Pose>, iou: f32) {
    people.sort_unstable_by(|a, b| b.score.total_cmp(&a.score));
    let mut i = 0;
    while i < people.len() {
        let keep = people[i].bbox;
        let mut j = i + 1;
        while j < people.len() {
            if people[j].bbox.iou(&keep) >= iou {
                people.remove(j);
            } else {
                j += 1;
            }
        }
        i += 1;
    }
}

/// The shared MultiPose sessions (`pose.sessions`; see `pool.rs`).
pub struct PoseModel {
    sessions: Pool<ModelRun>,
    input_size: u32,
    min_score: f32,
    nms_iou: f32,
    info: ModelInfo,
}

impl PoseModel {
    /// Verifies and loads the model, and checks its input and output shapes.
    pub fn load(cfg: &config::Pose, env: &ort::environment::Environment) -> Result<PoseModel, InferError> {
        let path = &cfg.path;
        let shown = path.display().to_string();
        let model_err = |message: String| InferError::Model { path: shown.clone(), message };
        let (session, info) = runtime::open_session(&cfg.session(), "movenet-multipose", env)?;
        // The input size follows each camera's aspect, so H and W must be dynamic.
        let input_ok = session
            .inputs()
            .first()
            .and_then(|i| i.dtype().tensor_shape().map(|s| s.to_vec()))
            .is_some_and(|s| s.len() == 4 && s[3] == 3 && s[1] < 0 && s[2] < 0);
        let output_ok = session
            .outputs()
            .first()
            .and_then(|o| o.dtype().tensor_shape().map(|s| s.to_vec()))
            .is_some_and(|s| s.len() == 3 && (s[2] < 0 || s[2] == STRIDE as i64));
        if !input_ok || !output_ok {
            return Err(model_err("not a MoveNet MultiPose export: needs input int32 [1, H, W, 3] with dynamic H and W, and output [1, 6, 56]".to_string()));
        }
        let mut sessions = vec![ModelRun::new(session, 1, &shown, None)?];
        for _ in 1..cfg.sessions {
            let more = runtime::open_session(&cfg.session(), "movenet-multipose", env)?.0;
            sessions.push(ModelRun::new(more, 1, &shown, None)?);
        }
        Ok(PoseModel {
            sessions: Pool::new(sessions),
            input_size: cfg.input_size,
            min_score: cfg.min_score,
            nms_iou: cfg.nms_iou,
            info,
        })
    }

    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// A preprocessor for frames of this size, for one camera to own.
    pub fn preprocessor(&self, frame_w: u32, frame_h: u32) -> Preprocessor {
        let (w, h) = input_dims(frame_w, frame_h, self.input_size);
        Preprocessor::new(input_spec(w, h))
    }

    /// Runs the model on what `pre` holds and decodes people into `out`.
    pub fn detect(&self, pre: &Preprocessor, lb: &Letterbox, out: &mut Vec<Pose>) -> Result<(), InferError> {
        let mut run = self.sessions.get();
        run.run(Input::I32(&pre.dims(), pre.tensor_i32()))?;
        let data = run.output(0);
        let spec = pre.spec();
        decode_multipose(data, lb, spec.width, spec.height, self.min_score, out);
        nms(out, self.nms_iou);
        Ok(())
    }
}

/// Loads the pose model from config, initialising ONNX Runtime on first use.
pub(crate) fn load_from_config(cfg: &config::Config) -> Result<Option<PoseModel>, InferError> {
    let Some(pose) = &cfg.pose else { return Ok(None) };
    let env = runtime::init(cfg.ort_library.as_deref())?;
    PoseModel::load(pose, env).map(Some)
}

impl std::fmt::Debug for PoseModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoseModel").field("info", &self.info).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A person laid out as MoveNet writes it: keypoints (y, x, s), then box, then score.
    fn person(kps: &[(f32, f32, f32)], bbox: [f32; 4], score: f32) -> Vec<f32> {
        let mut v = Vec::with_capacity(STRIDE);
        for k in 0..17 {
            let (y, x, s) = kps.get(k).copied().unwrap_or((0.0, 0.0, 0.0));
            v.extend_from_slice(&[y, x, s]);
        }
        v.extend_from_slice(&bbox);
        v.push(score);
        v
    }

    #[test]
    fn maps_input_coordinates_back_to_the_frame() {
        // A 640x360 frame letterboxed top-left into 256x256: scale 0.4, the
        // image fills input rows 0..144, i.e. normalised y 0..0.5625.
        let lb = Letterbox::fit(640, 360, 256, 256, false);
        let mut data = person(&[(0.28125, 0.5, 0.9)], [0.0, 0.25, 0.5625, 0.75], 0.8);
        data.extend(person(&[], [0.1, 0.1, 0.2, 0.2], 0.01)); // below min_score
        data.extend(vec![0.0; STRIDE * 4]);
        let mut out = Vec::new();
        decode_multipose(&data, &lb, 256, 256, 0.05, &mut out);
        assert_eq!(out.len(), 1);
        let p = &out[0];
        assert_eq!(p.score, 0.8);
        // Input y 0.28125*256 = 72 px → frame 72/0.4 = 180 px → 0.5.
        assert!((p.keypoints[0].y - 0.5).abs() < 1e-5, "{:?}", p.keypoints[0]);
        assert!((p.keypoints[0].x - 0.5).abs() < 1e-5);
        assert_eq!(p.keypoints[0].score, 0.9);
        assert!((p.bbox.x1 - 0.25).abs() < 1e-5 && (p.bbox.x2 - 0.75).abs() < 1e-5);
        assert!((p.bbox.y1 - 0.0).abs() < 1e-5 && (p.bbox.y2 - 1.0).abs() < 1e-5);
    }

    #[test]
    fn input_follows_the_frame_aspect() {
        assert_eq!(input_dims(640, 360, 384), (384, 224));
        assert_eq!(input_dims(360, 640, 384), (224, 384));
        assert_eq!(input_dims(320, 240, 384), (384, 288));
    }

    #[test]
    fn nms_keeps_the_best_of_duplicates() {
        let p = |x: f32, score: f32| Pose {
            bbox: BBox { x1: x, y1: 0.1, x2: x + 0.2, y2: 0.9 },
            score,
            keypoints: [Keypoint::default(); 17],
        };
        let mut people = vec![p(0.1, 0.3), p(0.11, 0.6), p(0.6, 0.2)];
        nms(&mut people, 0.6);
        assert_eq!(people.iter().map(|q| q.score).collect::<Vec<_>>(), vec![0.6, 0.2]);
    }

    #[test]
    fn drops_empty_boxes_and_nan_scores() {
        let lb = Letterbox::fit(100, 100, 64, 64, false);
        let mut data = person(&[], [0.5, 0.5, 0.5, 0.5], 0.9);
        data.extend(person(&[], [0.1, 0.1, 0.3, 0.3], f32::NAN));
        let mut out = Vec::new();
        decode_multipose(&data, &lb, 64, 64, 0.05, &mut out);
        assert!(out.is_empty());
    }
}
