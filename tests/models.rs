//! Model sessions as the config asks for them: the INT8 variant found
//! through the manifest, and execution providers the loaded ONNX Runtime
//! library lacks (the PyPI CPU build has none but the CPU's).

use std::path::Path;

use alleywatch_testkit::model;
use edge_agent::camera::Models;
use edge_agent::config::{Config, Precision};
use edge_agent::infer::runtime;

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

/// A street-like 640x360 frame with a red "car" whose place depends on `k`.
fn frame(k: u32) -> Vec<u8> {
    let (w, h) = (640u32, 360u32);
    let mut rgb = vec![0u8; (w * h * 3) as usize];
    for (p, px) in rgb.chunks_exact_mut(3).enumerate() {
        let (x, y) = (p as u32 % w, p as u32 / w);
        let v = (60 + (x / 8 + y / 8) % 40) as u8;
        px.copy_from_slice(&[v, v, v + 10]);
    }
    let (bx, by) = (40 + k * 120, 200 + (k % 2) * 30);
    for y in by..(by + 70).min(h) {
        for x in bx..(bx + 140).min(w) {
            let o = ((y * w + x) * 3) as usize;
            rgb[o..o + 3].copy_from_slice(&[200, 30, 30]);
        }
    }
    rgb
}

/// Four cameras' frames arriving together at one busy session run as one
/// batch (NanoDet has a dynamic batch axis), and each camera gets exactly
/// the detections its frame gives alone.
#[test]
fn frames_waiting_together_run_as_one_batch_with_the_same_results() {
    use std::sync::{Arc, Barrier};
    let alone = Models::load(&config("sessions = 1\nbatch = 1", "").unwrap()).expect("NanoDet loads");
    let batched = Arc::new(Models::load(&config("sessions = 1\nbatch = 4", "").unwrap()).expect("NanoDet loads"));
    assert_eq!(alone.detector.max_batch(), 1);
    assert_eq!(batched.detector.max_batch(), 4, "nanodet.onnx has a dynamic batch axis");

    let frames: Vec<Vec<u8>> = (0..4).map(frame).collect();
    let want: Vec<_> = frames
        .iter()
        .map(|f| {
            let mut pre = alone.detector.preprocessor();
            let lb = pre.run(f, 640, 360).unwrap();
            let mut out = Vec::new();
            alone.detector.detect(&mut pre, &lb, &mut out).unwrap();
            out
        })
        .collect();
    assert!(want.iter().any(|d| !d.is_empty()), "nothing detected: the comparison would prove little");

    // Timing decides how the four arrivals split into batches; retry until
    // one run carried more than one frame, checking results every round.
    for round in 0..10 {
        let before = batched.detector.batch_stats();
        let start = Arc::new(Barrier::new(4));
        let threads: Vec<_> = frames
            .iter()
            .cloned()
            .map(|f| {
                let (models, start) = (batched.clone(), start.clone());
                std::thread::spawn(move || {
                    let mut pre = models.detector.preprocessor();
                    let lb = pre.run(&f, 640, 360).unwrap();
                    let mut out = Vec::new();
                    start.wait();
                    models.detector.detect(&mut pre, &lb, &mut out).unwrap();
                    out
                })
            })
            .collect();
        for (k, (t, want)) in threads.into_iter().zip(&want).enumerate() {
            let got = t.join().unwrap();
            assert_eq!(got.len(), want.len(), "camera {k}: {got:?} against alone {want:?}");
            for (g, w) in got.iter().zip(want) {
                assert_eq!(g.class_id, w.class_id, "camera {k}");
                assert!((g.score - w.score).abs() < 1e-4, "camera {k}: {g:?} against {w:?}");
                assert!((g.bbox.x1 - w.bbox.x1).abs() < 1e-4 && (g.bbox.y2 - w.bbox.y2).abs() < 1e-4, "camera {k}");
            }
        }
        let after = batched.detector.batch_stats();
        let (runs, carried) = (after.0 - before.0, after.1 - before.1);
        assert_eq!(carried, 4, "every frame ran exactly once");
        if runs < carried {
            println!("round {round}: 4 frames in {runs} runs");
            return;
        }
    }
    panic!("in 10 rounds, four frames arriving together never shared a run");
}

/// A model run writes into buffers sized at load time; where a model leaves
/// an output size symbolic (the project's heat-map model does) and no probe
/// shape is given, it runs through `ort`'s own path. Both give the same
/// output.
#[test]
fn preallocated_and_plain_runs_agree() {
    use edge_agent::infer::run::{Input, ModelRun};
    let path = model("fire.onnx");
    let cfg: edge_agent::config::Fire = toml::from_str(&format!("path = \"{}\"", path.display())).unwrap();
    let env = runtime::init(None).unwrap();
    let open = || runtime::open_session(&edge_agent::config::ModelSession::cpu(&path, 1), "heatmap", env).unwrap().0;
    let side = cfg.input_size as i64;
    let dims = [1, 3, side, side];
    let mut plain = ModelRun::new(open(), 1, "fire.onnx", None).unwrap();
    let mut fixed = ModelRun::new(open(), 1, "fire.onnx", Some(dims)).unwrap();
    assert!(!plain.preallocated(), "fire.onnx declares a symbolic output size");
    assert!(fixed.preallocated(), "the probe run sized its buffers");
    let input: Vec<f32> = (0..(3 * side * side) as usize).map(|i| ((i * 7919) % 255) as f32 / 64.0 - 2.0).collect();
    plain.run(Input::F32(&dims, &input)).unwrap();
    fixed.run(Input::F32(&dims, &input)).unwrap();
    let (mut a, mut b) = ([0; 6], [0; 6]);
    let (na, nb) = (plain.output_shape(0, &mut a), fixed.output_shape(0, &mut b));
    assert_eq!(&a[..na], &b[..nb]);
    assert!(!plain.output(0).is_empty());
    assert_eq!(plain.output(0), fixed.output(0));
    // A wrong input size is an error, not a crash.
    assert!(fixed.run(Input::F32(&dims, &input[..10])).is_err());
}
