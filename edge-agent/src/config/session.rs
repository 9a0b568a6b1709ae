//! How each model's ONNX Runtime session runs: its numeric precision (the
//! FP32 file or its INT8 variant from the manifest), its execution provider,
//! and its thread count. The same keys sit in `[detector]`, `[pose]` and
//! `[fire]`, because a box may put one model on a GPU and keep another on
//! the CPU, or run the detector in INT8 while the pose model stays FP32.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Which numeric variant of a model to load.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// The file `path` names.
    #[default]
    Fp32,
    /// Its INT8 (QDQ) variant: the `models.toml` entry with
    /// `variant_of` = the FP32 entry and `precision = "int8"`, else
    /// `<stem>-int8.onnx` beside it. Faster on CPUs with VNNI or dot-product
    /// instructions; the manifest records its accuracy against FP32.
    Int8,
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Precision::Fp32 => "fp32",
            Precision::Int8 => "int8",
        })
    }
}

/// The ONNX Runtime execution provider a model runs on.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    #[default]
    Cpu,
    Cuda,
    Tensorrt,
    Openvino,
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Provider::Cpu => "cpu",
            Provider::Cuda => "cuda",
            Provider::Tensorrt => "tensorrt",
            Provider::Openvino => "openvino",
        })
    }
}

/// The default intra-op threads of each session: one. A session's threads
/// wait for each other at every operator; on a box whose cores also decode
/// video, one single-threaded session per core serves more frames than one
/// session spread over every core (the throughput bench measured 1.2× on
/// 2 cores: benches/README.md).
pub fn default_threads() -> usize {
    1
}

/// The default number of sessions per model: one per core the process may
/// use, at most 8, so that many cameras' frames run at once.
pub fn default_sessions() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2).clamp(1, 8)
}
