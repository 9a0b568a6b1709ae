//! Stages 2–4 of the data path: preprocess, inference, output decoding.
//!
//! - [`motion`]: grey thumbnails of recent frames and how much of a region
//!   changed: what the gate below measures, and the fall rule's cue for
//!   people the pose model loses.
//! - [`gate`]: whether the detector must run on a frame at all (motion since
//!   its last run, or the periodic full check).
//! - [`letterbox`]: frame → model tensor (aspect kept, padded), into a buffer
//!   each camera reuses, so no frame allocates.
//! - [`runtime`]: finding and loading the ONNX Runtime library, checking
//!   model files against their manifest hash, and opening sessions on the
//!   configured precision (FP32 / INT8 variant) and execution provider.
//! - [`detector`]: the object detector, run on a few `ort` sessions every
//!   camera shares, with frames that queue behind busy sessions run as one
//!   batch ([`batch`]); the pose model uses a plain [`pool`].
//! - [`run`]: one model run into buffers the session owns, with no Rust
//!   allocation (ONNX Runtime's C `Run` on preallocated outputs).
//! - [`decode`]: model outputs → boxes, for each supported layout, plus NMS.
//! - [`fire`]: the fire/smoke model (the project's heat-map or a
//!   bring-your-own YOLO export) → candidate regions per kind.
//! - [`pose`]: the shared MoveNet MultiPose session and its decoding into
//!   people with 17 keypoints each; [`lowlight`] stretches a dim frame's
//!   levels before it.
//!
//! Everything leaving this module is in *normalised frame coordinates*
//! (0–1, origin top-left), so rules never care about resolutions.

pub(crate) mod batch;
pub mod decode;
pub mod detector;
pub mod fire;
pub(crate) mod gate;
pub(crate) mod letterbox;
pub mod lowlight;
pub mod motion;
pub(crate) mod pool;
pub mod pose;
pub mod run;
pub mod runtime;

pub use detector::{Detector, ModelInfo};
pub use letterbox::{Letterbox, Preprocessor};

use crate::vocab::BBox;

/// One detected object.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Detection {
    pub bbox: BBox,
    pub class_id: usize,
    pub score: f32,
    /// Set once the tracker has assigned the object an identity.
    pub track_id: Option<u64>,
}

/// Errors from loading or running a model.
#[derive(Debug, thiserror::Error)]
pub enum InferError {
    #[error(
        "ONNX Runtime library not found (looked for {tried}). Fix: run deploy/setup.sh, \
         or set `ort_library` in the config, or export ORT_DYLIB_PATH=/path/to/libonnxruntime.so.1.31.1"
    )]
    RuntimeNotFound { tried: String },
    #[error("cannot load ONNX Runtime from {path}: {reason}. Fix: point `ort_library` or ORT_DYLIB_PATH at libonnxruntime.so.1.31.1 (deploy/setup.sh installs it)")]
    RuntimeLoad { path: String, reason: String },
    #[error("model {path}: cannot read: {source}")]
    ModelRead { path: String, source: std::io::Error },
    #[error("model {path}: sha256 is {actual}, expected {expected} ({origin}); the file is corrupt or not the model the config names")]
    ModelHash { path: String, actual: String, expected: String, origin: String },
    #[error("model {path}: no pinned sha256 (neither {field} nor an entry in the models.toml beside it), and require_model_hash = true. Fix: set {field} to the file's sha256 (`sha256sum`), or add the file to models.toml")]
    Unpinned { path: String, field: String },
    #[error("model {path}: {message}")]
    Model { path: String, message: String },
    #[error("{field} = \"{precision}\": no {precision} variant of {path} (no models.toml entry with variant_of and precision = \"{precision}\", and no {tried}). Fix: run models/quantize.sh, or set {field} = \"fp32\"")]
    NoVariant { field: String, path: String, precision: String, tried: String },
    #[error("{field} = \"{provider}\": {reason}; this library has: {available}. Fix: install an ONNX Runtime build with that provider, set {field} = \"cpu\", or set fallback = true to run on the CPU with a warning")]
    Provider { field: String, provider: String, reason: String, available: String },
    #[error("inference failed: {0}")]
    Run(String),
    #[error("preprocess: {0}")]
    Preprocess(String),
}
