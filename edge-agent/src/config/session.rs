//! How each model's ONNX Runtime session runs: its numeric precision (the
//! FP32 file or its INT8 variant from the manifest), its execution provider,
//! and its thread count. The same keys sit in `[detector]`, `[pose]` and
//! `[fire]`, because a box may put one model on a GPU and keep another on
//! the CPU, or run the detector in INT8 while the pose model stays FP32.

use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::check::{fail, Check};
use super::Config;

/// One model's session keys, as every model section (`[detector]`,
/// `[pose]`, `[fire]`) writes them: what `infer::runtime` opens a session
/// from, and what is checked the same way for each.
///
/// The keys stay written out in each section's struct rather than
/// `#[serde(flatten)]`ed from one: with `flatten`, serde accepts unknown
/// keys silently (a misspelt `threds` would be ignored) and reports a bad
/// value as the whole table, without the key or its line — the opposite of
/// what this config promises a technician.
#[derive(Debug, Clone)]
pub struct ModelSession<'a> {
    /// The config section, for error messages (`detector`, `pose`, `fire`).
    pub(crate) section: &'static str,
    pub(crate) path: &'a Path,
    pub(crate) sha256: Option<&'a str>,
    pub(crate) threads: usize,
    /// Sessions of the model the cameras share (sections that pool them).
    pub(crate) sessions: Option<usize>,
    pub(crate) precision: Precision,
    pub(crate) provider: Provider,
    pub(crate) fallback: bool,
}

impl<'a> ModelSession<'a> {
    /// A CPU FP32 session on `path` (benches, tools).
    pub fn cpu(path: &'a Path, threads: usize) -> ModelSession<'a> {
        ModelSession {
            section: "model",
            path,
            sha256: None,
            threads,
            sessions: None,
            precision: Precision::Fp32,
            provider: Provider::Cpu,
            fallback: false,
        }
    }

    /// Every model the config names.
    pub fn all_of(c: &'a Config) -> Vec<ModelSession<'a>> {
        let mut all = vec![c.detector.session()];
        all.extend(c.pose.as_ref().map(|p| p.session()));
        all.extend(c.fire.as_ref().map(|f| f.session()));
        all
    }

    /// The same range checks for every section's keys.
    pub(super) fn validate(&self) -> Check {
        let key = |k: &str| format!("{}.{k}", self.section);
        if self.threads == 0 || self.threads > 64 {
            return fail(&key("threads"), "must be 1–64");
        }
        if self.sessions.is_some_and(|n| n == 0 || n > 64) {
            return fail(&key("sessions"), "must be 1–64");
        }
        if let Some(h) = self.sha256 {
            if h.len() != 64 || !h.bytes().all(|c| c.is_ascii_hexdigit()) {
                return fail(&key("sha256"), "must be 64 hex digits");
            }
        }
        Ok(())
    }
}

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
/// session spread over every core (the throughput bench compares the two:
/// benches/README.md).
pub(crate) fn default_threads() -> usize {
    1
}

/// The default number of sessions per model: one per core the process may
/// use, at most 8, so that many cameras' frames run at once.
pub(crate) fn default_sessions() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2).clamp(1, 8)
}
