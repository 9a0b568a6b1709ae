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
use crate::config::{ModelSession, Precision, Provider};

/// The ONNX Runtime version the setup script installs.
pub(crate) const ORT_VERSION: &str = "1.31.1";

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
#[cfg(test)]
pub(crate) fn sha256_file(path: &Path) -> Result<String, InferError> {
    Ok(hex(&Sha256::digest(read_model(path)?)))
}

fn read_model(path: &Path) -> Result<Vec<u8>, InferError> {
    std::fs::read(path).map_err(|source| InferError::ModelRead { path: path.display().to_string(), source })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The expected hash for a model file: the configured one, else the entry
/// for this file name in a `models.toml` manifest beside it. Returns the
/// hash and where it came from, for the error message.
pub(crate) fn expected_sha256(model: &Path, configured: Option<&str>) -> Option<(String, String)> {
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
/// allowed (bring-your-own models) but logged; `require_model_hash`
/// refuses it before this ([`require_pinned`]).
pub fn verify_model(model: &Path, configured: Option<&str>) -> Result<String, InferError> {
    read_verified(model, configured).map(|(_, sha)| sha)
}

/// Reads a model once and checks *those bytes* against its expected hash;
/// the session is then built from the same bytes. Hashing the file and
/// opening it again by name would let a file swapped in between load
/// unchecked.
pub(crate) fn read_verified(model: &Path, configured: Option<&str>) -> Result<(Vec<u8>, String), InferError> {
    let bytes = read_model(model)?;
    let actual = hex(&Sha256::digest(&bytes));
    match expected_sha256(model, configured) {
        Some((expected, origin)) if expected != actual => {
            Err(InferError::ModelHash { path: model.display().to_string(), actual, expected, origin })
        }
        Some(_) => Ok((bytes, actual)),
        None => {
            tracing::warn!(model = %model.display(), sha256 = %actual, "no expected sha256 for this model (set its sha256 in the config to pin it)");
            Ok((bytes, actual))
        }
    }
}

/// With `require_model_hash = true`: refuses a model section whose file
/// (the variant its precision loads) has no expected hash, neither the
/// section's `sha256` nor an entry in the `models.toml` beside it.
pub fn require_pinned(spec: &ModelSession<'_>) -> Result<(), InferError> {
    let path = variant_path(spec.path, spec.precision, spec.section)?;
    let pinned = if path == spec.path { spec.sha256 } else { None };
    match expected_sha256(&path, pinned) {
        Some(_) => Ok(()),
        None => {
            Err(InferError::Unpinned { path: path.display().to_string(), field: format!("{}.sha256", spec.section) })
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

/// The file to load for `precision`: `path` itself for FP32; for INT8 the
/// manifest entry that is `variant_of` the FP32 entry with
/// `precision = "int8"`, else `<stem>-int8.onnx` beside it.
pub fn variant_path(path: &Path, precision: Precision, section: &str) -> Result<PathBuf, InferError> {
    if precision == Precision::Fp32 {
        return Ok(path.to_path_buf());
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    let wanted = precision.to_string();
    if let Some(file) = manifest_entries(path).and_then(|entries| {
        let base = entries.iter().find(|m| m.get("file").and_then(|f| f.as_str()) == Some(name))?;
        let base_name = base.get("name")?.as_str()?;
        entries.iter().find_map(|m| {
            let variant = m.get("variant_of")?.as_str()? == base_name
                && m.get("precision")?.as_str()?.eq_ignore_ascii_case(&wanted);
            variant.then(|| m.get("file")?.as_str().map(str::to_string)).flatten()
        })
    }) {
        let found = dir.join(file);
        if !found.is_file() {
            return Err(InferError::NoVariant {
                field: format!("{section}.precision"),
                path: path.display().to_string(),
                precision: wanted,
                tried: format!("{} (named by models.toml, but missing)", found.display()),
            });
        }
        return Ok(found);
    }
    let stem = path.file_stem().and_then(|n| n.to_str()).unwrap_or_default();
    let beside = dir.join(format!("{stem}-{wanted}.onnx"));
    if beside.is_file() {
        return Ok(beside);
    }
    Err(InferError::NoVariant {
        field: format!("{section}.precision"),
        path: path.display().to_string(),
        precision: wanted,
        tried: beside.display().to_string(),
    })
}

/// The `[[model]]` tables of the `models.toml` beside `model`.
fn manifest_entries(model: &Path) -> Option<Vec<toml::Table>> {
    let manifest = model.parent()?.join("models.toml");
    let text = std::fs::read_to_string(manifest).ok()?;
    let doc: toml::Table = toml::from_str(&text).ok()?;
    Some(doc.get("model")?.as_array()?.iter().filter_map(|m| m.as_table().cloned()).collect())
}

/// Whether the loaded ONNX Runtime library was built with `provider`.
pub fn provider_available(provider: Provider) -> bool {
    use ort::ep::ExecutionProvider;
    let found = match provider {
        Provider::Cpu => return true,
        Provider::Cuda => ort::ep::CUDA::is_available(),
        Provider::Tensorrt => ort::ep::TensorRT::is_available(),
        Provider::Openvino => ort::ep::OpenVINO::is_available(),
    };
    found.unwrap_or(false)
}

/// The providers of [`Provider`] the loaded library has, for messages.
pub(crate) fn available_providers() -> Vec<Provider> {
    [Provider::Cpu, Provider::Cuda, Provider::Tensorrt, Provider::Openvino]
        .into_iter()
        .filter(|&p| provider_available(p))
        .collect()
}

fn provider_dispatch(provider: Provider) -> Option<ort::ep::ExecutionProviderDispatch> {
    match provider {
        Provider::Cpu => None,
        Provider::Cuda => Some(ort::ep::CUDA::default().build().error_on_failure()),
        Provider::Tensorrt => Some(ort::ep::TensorRT::default().build().error_on_failure()),
        Provider::Openvino => Some(ort::ep::OpenVINO::default().build().error_on_failure()),
    }
}

/// Picks the file for the spec's precision, verifies it against its expected
/// sha256, then opens an `ort` session with the spec's threads and execution
/// provider. A provider the library lacks (or cannot start) is an error that
/// names `{section}.execution_provider` and what the library has; with
/// `fallback = true` it is a warning and the session runs on the CPU.
/// Returns the session and what events report about the model.
pub fn open_session(
    spec: &ModelSession<'_>,
    format: &str,
    env: &ort::environment::Environment,
) -> Result<(ort::session::Session, super::ModelInfo), InferError> {
    use ort::session::{builder::GraphOptimizationLevel, Session};
    let path = variant_path(spec.path, spec.precision, spec.section)?;
    // A configured sha256 pins the configured file, not its variant: the
    // variant is checked against its own manifest entry.
    let pinned = if path == spec.path { spec.sha256 } else { None };
    if pinned.is_none() && spec.sha256.is_some() {
        tracing::warn!(
            field = %format!("{}.sha256", spec.section),
            variant = %path.display(),
            "the configured sha256 pins the FP32 file; the {} variant is checked against its models.toml entry",
            spec.precision
        );
    }
    let (bytes, sha) = read_verified(&path, pinned)?;
    let model_err = |e: ort::Error| InferError::Model {
        path: path.display().to_string(),
        message: format!("not a loadable ONNX model: {e}"),
    };
    let mut builder = Session::builder(env)
        .and_then(|b| b.with_optimization_level(GraphOptimizationLevel::All).map_err(Into::into))
        .and_then(|b| b.with_intra_threads(spec.threads).map_err(Into::into))
        .and_then(|b| b.with_intra_op_spinning(SPIN.load(Ordering::Relaxed)).map_err(Into::into))
        .map_err(model_err)?;
    let mut provider = spec.provider;
    if let Some(ep) = provider_dispatch(provider) {
        let refused = if !provider_available(provider) {
            Some("the loaded ONNX Runtime library was not built with it".to_string())
        } else {
            match builder.with_execution_providers([ep]) {
                Ok(b) => {
                    builder = b;
                    None
                }
                Err(e) => {
                    let reason = e.to_string();
                    builder = e.recover();
                    Some(reason)
                }
            }
        };
        if let Some(reason) = refused {
            let has: Vec<String> = available_providers().iter().map(|p| p.to_string()).collect();
            if !spec.fallback {
                return Err(InferError::Provider {
                    field: format!("{}.execution_provider", spec.section),
                    provider: provider.to_string(),
                    reason,
                    available: has.join(", "),
                });
            }
            tracing::warn!(
                field = %format!("{}.execution_provider", spec.section),
                provider = %provider,
                reason = %reason,
                available = %has.join(", "),
                "execution provider unavailable; fallback = true, so this model runs on the CPU"
            );
            provider = Provider::Cpu;
        }
    }
    let session = builder.commit_from_memory(&bytes).map_err(model_err)?;
    tracing::info!(
        model = %path.display(),
        precision = %spec.precision,
        provider = %provider,
        threads = spec.threads,
        "model loaded"
    );
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
    fn require_model_hash_refuses_unpinned_files_and_variants() {
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join("m.onnx");
        std::fs::write(&model, b"fp32").unwrap();
        std::fs::write(dir.path().join("m-int8.onnx"), b"int8").unwrap();
        let spec =
            |precision, sha256| ModelSession { section: "detector", precision, sha256, ..ModelSession::cpu(&model, 1) };
        let err = require_pinned(&spec(Precision::Fp32, None)).unwrap_err().to_string();
        assert!(
            err.contains("m.onnx") && err.contains("detector.sha256") && err.contains("require_model_hash"),
            "{err}"
        );
        let sha = sha256_file(&model).unwrap();
        require_pinned(&spec(Precision::Fp32, Some(&sha))).expect("pinned in the config");
        // The config's hash pins the FP32 file only: its INT8 variant needs
        // its own manifest entry.
        let err = require_pinned(&spec(Precision::Int8, Some(&sha))).unwrap_err().to_string();
        assert!(err.contains("m-int8.onnx"), "{err}");
        let int8 = sha256_file(&dir.path().join("m-int8.onnx")).unwrap();
        std::fs::write(
            dir.path().join("models.toml"),
            format!(
                "[[model]]\nname = \"m\"\nfile = \"m.onnx\"\nsha256 = \"{sha}\"\n\n\
                 [[model]]\nname = \"m-int8\"\nfile = \"m-int8.onnx\"\nvariant_of = \"m\"\nprecision = \"int8\"\nsha256 = \"{int8}\"\n"
            ),
        )
        .unwrap();
        require_pinned(&spec(Precision::Int8, None)).expect("the variant's manifest entry pins it");
        require_pinned(&spec(Precision::Fp32, None)).expect("the manifest pins the FP32 file");
    }

    #[test]
    fn the_bytes_checked_are_the_bytes_returned() {
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join("m.onnx");
        std::fs::write(&model, b"the model").unwrap();
        let sha = sha256_file(&model).unwrap();
        let (bytes, got) = read_verified(&model, Some(&sha)).unwrap();
        assert_eq!((bytes.as_slice(), got.as_str()), (&b"the model"[..], sha.as_str()));
        std::fs::write(&model, b"swapped").unwrap();
        assert!(matches!(read_verified(&model, Some(&sha)), Err(InferError::ModelHash { .. })));
    }

    #[test]
    fn every_shipped_model_is_pinned() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "onnx") {
                let expected = expected_sha256(&path, None).map(|(h, _)| h);
                assert_eq!(expected, Some(sha256_file(&path).unwrap()), "{}", path.display());
                n += 1;
            }
        }
        assert!(n >= 5, "FP32 and INT8 files: {n}");
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
