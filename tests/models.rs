//! Model sessions as the config asks for them: the INT8 variant found
//! through the manifest, and execution providers the loaded ONNX Runtime
//! library lacks (the PyPI CPU build has none but the CPU's).

use std::path::{Path, PathBuf};

use edge_agent::config::{Config, Precision};
use edge_agent::infer::runtime;
use edge_agent::pipeline::Models;

fn model(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../models").join(name)
}

fn config(detector_extra: &str, pose_extra: &str) -> Result<Config, String> {
    let text = format!(
        r#"agent_id = "models"
site = {{ district = "d", street = "s", community = "c" }}
broker = {{ host = "127.0.0.1" }}

[detector]
path = "{}"
format = "nanodet"
input_size = 416
{detector_extra}

[pose]
path = "{}"
{pose_extra}

[[cameras]]
id = "cam"
name = "cam"
url = "test://ball"
"#,
        model("nanodet.onnx").display(),
        model("movenet-multipose.onnx").display()
    );
    Config::parse(&text, Path::new("models.toml")).map_err(|e| e.to_string())
}

#[test]
fn int8_variants_come_from_the_manifest_and_load() {
    for (fp32, int8) in
        [("nanodet.onnx", "nanodet-int8.onnx"), ("movenet-multipose.onnx", "movenet-multipose-int8.onnx")]
    {
        let path = runtime::variant_path(&model(fp32), Precision::Int8, "detector").unwrap();
        assert_eq!(path, model(int8));
        assert_eq!(runtime::variant_path(&model(fp32), Precision::Fp32, "detector").unwrap(), model(fp32));
    }
    let models =
        Models::load(&config("precision = \"int8\"", "precision = \"int8\"").unwrap()).expect("INT8 models load");
    assert_eq!(models.detector.info().name, "nanodet-int8");
    assert_eq!(models.pose.as_ref().unwrap().info().name, "movenet-multipose-int8");
}

#[test]
fn a_model_without_an_int8_variant_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let lone = dir.path().join("lone.onnx");
    std::fs::copy(model("nanodet.onnx"), &lone).unwrap();
    let e = runtime::variant_path(&lone, Precision::Int8, "detector").unwrap_err().to_string();
    assert!(e.contains("detector.precision") && e.contains("lone.onnx") && e.contains("lone-int8.onnx"), "{e}");
}

#[test]
fn a_provider_the_library_lacks_is_refused_or_falls_back() {
    if runtime::provider_available(edge_agent::config::Provider::Cuda) {
        eprintln!("this ONNX Runtime has CUDA: the refusal is not testable here");
        return;
    }
    let e = match Models::load(&config("execution_provider = \"cuda\"", "").unwrap()) {
        Ok(_) => panic!("CUDA accepted by a library without it"),
        Err(e) => e.to_string(),
    };
    assert!(e.contains("detector.execution_provider = \"cuda\"") && e.contains("this library has: cpu"), "{e}");
    assert!(e.contains("fallback = true"), "{e}");
    let e = match Models::load(&config("", "execution_provider = \"openvino\"").unwrap()) {
        Ok(_) => panic!("OpenVINO accepted by a library without it"),
        Err(e) => e.to_string(),
    };
    assert!(e.contains("pose.execution_provider = \"openvino\""), "{e}");
    let models = Models::load(&config("execution_provider = \"tensorrt\"\nfallback = true", "").unwrap())
        .expect("fallback = true runs on the CPU");
    assert_eq!(models.detector.info().name, "nanodet");
}
