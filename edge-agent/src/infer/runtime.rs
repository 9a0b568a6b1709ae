//! Loading ONNX Runtime and verifying model files.
//!
//! `ort` is built with `load-dynamic`: the library is opened at run time, so
//! one binary runs on any box that has ONNX Runtime 1.31.x. The lookup order
//! is the config key `ort_library`, then `ORT_DYLIB_PATH`, then the setup
//! folder `.deps/onnxruntime/` (searched upwards from the binary and the
//! working directory). Every failure is one line that says how to fix it;
//! `ort` itself would panic on first use if no library were loaded, which is
//! why [`init`] must run before any session is built.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use sha2::{Digest, Sha256};

use super::InferError;

/// The ONNX Runtime version the setup script installs.
pub const ORT_VERSION: &str = "1.31.1";

static ENV: OnceLock<ort::environment::Environment> = OnceLock::new();

/// Finds the ONNX Runtime library without loading it.
pub fn find_library(configured: Option<&Path>) -> Result<PathBuf, InferError> {
    let mut tried = Vec::new();
    if let Some(p) = configured {
        if p.is_file() {
            return Ok(p.to_path_buf());
        }
        tried.push(format!("ort_library = {}", p.display()));
    }
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        if p.is_file() {
            return Ok(p);
        }
        tried.push(format!("ORT_DYLIB_PATH={}", p.display()));
    }
    let file = format!("libonnxruntime.so.{ORT_VERSION}");
    let mut starts = Vec::new();
    if let Ok(exe) = std::env::current_exe() {
        starts.push(exe);
    }
    if let Ok(cwd) = std::env::current_dir() {
        starts.push(cwd);
    }
    for start in &starts {
        for dir in start.ancestors() {
            let p = dir.join(".deps/onnxruntime").join(&file);
            if p.is_file() {
                return Ok(p);
            }
        }
    }
    tried.push(format!(".deps/onnxruntime/{file} above the binary and the working directory"));
    Err(InferError::RuntimeNotFound { tried: tried.join(", ") })
}

/// Loads ONNX Runtime once per process and returns the shared environment.
pub fn init(configured: Option<&Path>) -> Result<&'static ort::environment::Environment, InferError> {
    if let Some(env) = ENV.get() {
        return Ok(env);
    }
    let path = find_library(configured)?;
    let load_err = |reason: String| InferError::RuntimeLoad { path: path.display().to_string(), reason };
    let builder = ort::init_from(&path).map_err(|e| load_err(e.to_string()))?;
    let env = builder.with_name("alleywatch").build().map_err(|e| load_err(e.to_string()))?;
    tracing::info!(library = %path.display(), "ONNX Runtime loaded");
    Ok(ENV.get_or_init(|| env))
}

/// Hex sha256 of a file.
pub fn sha256_file(path: &Path) -> Result<String, InferError> {
    let bytes =
        std::fs::read(path).map_err(|source| InferError::ModelRead { path: path.display().to_string(), source })?;
    Ok(hex(&Sha256::digest(&bytes)))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The expected hash for a model file: the configured one, else the entry
/// for this file name in a `models.toml` manifest beside it. Returns the
/// hash and where it came from, for the error message.
pub fn expected_sha256(model: &Path, configured: Option<&str>) -> Option<(String, String)> {
    if let Some(h) = configured {
        return Some((h.to_ascii_lowercase(), "the sha256 set in the config".into()));
    }
    let manifest = model.parent()?.join("models.toml");
    let text = std::fs::read_to_string(&manifest).ok()?;
    let doc: toml::Table = toml::from_str(&text).ok()?;
    let name = model.file_name()?.to_str()?;
    doc.get("model")?.as_array()?.iter().find_map(|m| {
        let m = m.as_table()?;
        if m.get("file")?.as_str()? != name {
            return None;
        }
        Some((m.get("sha256")?.as_str()?.to_ascii_lowercase(), manifest.display().to_string()))
    })
}

/// Checks a model against its expected hash. A model with no known hash is
/// allowed (bring-your-own models) but logged.
pub fn verify_model(model: &Path, configured: Option<&str>) -> Result<String, InferError> {
    let actual = sha256_file(model)?;
    match expected_sha256(model, configured) {
        Some((expected, origin)) if expected != actual => {
            Err(InferError::ModelHash { path: model.display().to_string(), actual, expected, origin })
        }
        Some(_) => Ok(actual),
        None => {
            tracing::warn!(model = %model.display(), sha256 = %actual, "no expected sha256 for this model (set its sha256 in the config to pin it)");
            Ok(actual)
        }
    }
}

/// Whether new sessions' intra-op threads spin-wait between ops (ONNX
/// Runtime's default). Off in the agent: the cameras' GStreamer decoders
/// share the cores, and a spinning pool takes their CPU while it waits.
/// The throughput bench measured the difference on 2 cores (benches/README.md).
static SPIN: AtomicBool = AtomicBool::new(false);

/// Sets spin-waiting for sessions opened from now on (the throughput bench
/// uses it to measure bare inference at its best).
pub fn set_spinning(on: bool) {
    SPIN.store(on, Ordering::Relaxed);
}

/// Verifies a model file against its expected sha256, then opens an `ort`
/// session on it with `threads` intra-op threads. Returns the session, the
/// file's sha256 and what events report about the model.
pub fn open_session(
    path: &Path,
    sha256: Option<&str>,
    threads: usize,
    format: &str,
    env: &ort::environment::Environment,
) -> Result<(ort::session::Session, super::ModelInfo), InferError> {
    use ort::session::{builder::GraphOptimizationLevel, Session};
    let sha = verify_model(path, sha256)?;
    let session = Session::builder(env)
        .and_then(|b| b.with_optimization_level(GraphOptimizationLevel::All).map_err(Into::into))
        .and_then(|b| b.with_intra_threads(threads).map_err(Into::into))
        .and_then(|b| b.with_intra_op_spinning(SPIN.load(Ordering::Relaxed)).map_err(Into::into))
        .and_then(|mut b| b.commit_from_file(path))
        .map_err(|e| InferError::Model {
            path: path.display().to_string(),
            message: format!("not a loadable ONNX model: {e}"),
        })?;
    let name = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    Ok((session, super::ModelInfo { name, version: sha[..12].to_string(), format: format.to_string() }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_hash_mismatch_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join("m.onnx");
        std::fs::write(&model, b"not really a model").unwrap();
        let actual = sha256_file(&model).unwrap();
        std::fs::write(
            dir.path().join("models.toml"),
            format!("[[model]]\nname = \"m\"\nfile = \"m.onnx\"\nsha256 = \"{}\"\n", "0".repeat(64)),
        )
        .unwrap();
        let err = verify_model(&model, None).unwrap_err().to_string();
        assert!(err.contains(&actual) && err.contains("models.toml"), "{err}");
        // A configured hash wins over the manifest.
        assert_eq!(verify_model(&model, Some(&actual)).unwrap(), actual);
    }

    #[test]
    fn missing_model_file_names_the_path() {
        let err = verify_model(Path::new("/nonexistent/x.onnx"), None).unwrap_err().to_string();
        assert!(err.contains("/nonexistent/x.onnx"), "{err}");
    }

    #[test]
    fn configured_library_that_does_not_exist_is_named() {
        // Only meaningful when neither ORT_DYLIB_PATH nor .deps has one.
        if std::env::var_os("ORT_DYLIB_PATH").is_some() {
            return;
        }
        match find_library(Some(Path::new("/nope/libonnxruntime.so"))) {
            Ok(p) => assert!(p.ends_with(format!("libonnxruntime.so.{ORT_VERSION}"))),
            Err(e) => {
                let msg = e.to_string();
                assert!(msg.contains("/nope/libonnxruntime.so") && msg.contains("deploy/setup.sh"), "{msg}");
            }
        }
    }
}
