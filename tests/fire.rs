//! The fire path end to end, on real ONNX Runtime: a bring-your-own YOLOv8
//! layout model that this test writes itself, and the project's own
//! `models/fire.onnx`.
//!
//! The YOLOv8-layout model has synthetic weights: the point is the wiring
//! (class-name mapping, `[1, 4 + classes, anchors]` decoding, regions, the
//! temporal rule, the event and its snapshot), not accuracy. It is a real
//! ONNX graph — Conv, Sigmoid, Reshape, Concat — written with a few lines of
//! protobuf encoding, so the test needs no Python and no download.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use alleywatch_testkit::models_dir;
use edge_agent::alert::Outbound;
use edge_agent::camera::{CameraAnalyzer, FrameInput, Models};
use edge_agent::config::Config;
use edge_agent::metrics::Metrics;
use serde_json::Value;

/// Minimal protobuf writer: just what an ONNX ModelProto needs.
mod pb {
    pub fn varint(out: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }
    pub fn int(out: &mut Vec<u8>, field: u32, v: i64) {
        varint(out, (field as u64) << 3);
        varint(out, v as u64);
    }
    pub fn bytes(out: &mut Vec<u8>, field: u32, b: &[u8]) {
        varint(out, ((field as u64) << 3) | 2);
        varint(out, b.len() as u64);
        out.extend_from_slice(b);
    }
}

const FLOAT: i64 = 1;
const INT64: i64 = 7;

fn tensor(name: &str, dims: &[i64], data_type: i64, raw: &[u8]) -> Vec<u8> {
    let mut t = Vec::new();
    for &d in dims {
        pb::int(&mut t, 1, d);
    }
    pb::int(&mut t, 2, data_type);
    pb::bytes(&mut t, 8, name.as_bytes());
    pb::bytes(&mut t, 9, raw);
    t
}

fn f32_tensor(name: &str, dims: &[i64], v: &[f32]) -> Vec<u8> {
    tensor(name, dims, FLOAT, &v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<_>>())
}

/// A value's type; a negative dimension is symbolic (`dim_param`).
fn value_info(name: &str, dims: &[i64]) -> Vec<u8> {
    let mut shape = Vec::new();
    for &d in dims {
        let mut dim = Vec::new();
        if d < 0 {
            pb::bytes(&mut dim, 2, b"anchors");
        } else {
            pb::int(&mut dim, 1, d);
        }
        pb::bytes(&mut shape, 1, &dim);
    }
    let mut tt = Vec::new();
    pb::int(&mut tt, 1, FLOAT);
    pb::bytes(&mut tt, 2, &shape);
    let mut ty = Vec::new();
    pb::bytes(&mut ty, 1, &tt);
    let mut vi = Vec::new();
    pb::bytes(&mut vi, 1, name.as_bytes());
    pb::bytes(&mut vi, 2, &ty);
    vi
}

fn node(op: &str, inputs: &[&str], output: &str, attrs: &[(&str, Attr)]) -> Vec<u8> {
    let mut n = Vec::new();
    for i in inputs {
        pb::bytes(&mut n, 1, i.as_bytes());
    }
    pb::bytes(&mut n, 2, output.as_bytes());
    pb::bytes(&mut n, 3, output.as_bytes());
    pb::bytes(&mut n, 4, op.as_bytes());
    for (name, a) in attrs {
        let mut at = Vec::new();
        pb::bytes(&mut at, 1, name.as_bytes());
        match a {
            Attr::Int(v) => {
                pb::int(&mut at, 3, *v);
                pb::int(&mut at, 20, 2);
            }
            Attr::Ints(vs) => {
                for v in vs {
                    pb::int(&mut at, 8, *v);
                }
                pb::int(&mut at, 20, 7);
            }
        }
        pb::bytes(&mut n, 5, &at);
    }
    n
}

enum Attr {
    Int(i64),
    Ints(Vec<i64>),
}

const SIDE: i64 = 64;
const STRIDE: i64 = 8;
const CELLS: i64 = (SIDE / STRIDE) * (SIDE / STRIDE);

/// A YOLOv8-layout detector for two classes, `["flame", "smoke"]`, on a
/// 64 × 64 RGB input (0–1): one anchor per 8 × 8 cell with a fixed 16 × 16
/// box at the cell's centre; class 0 scores red-minus-blue over the cell,
/// class 1 green-minus-red. Output `[1, 6, 64]`, or `[1, 6, anchors]` with
/// `symbolic`, as exports with dynamic axes declare it.
fn yolov8_model(symbolic: bool) -> Vec<u8> {
    let k = (STRIDE * STRIDE) as usize;
    let mut w = vec![0f32; 2 * 3 * k];
    for i in 0..k {
        w[i] = 0.2; // flame ← +R
        w[2 * k + i] = -0.2; //       − B
        w[3 * k + k + i] = 0.2; // smoke ← +G
        w[3 * k + i] = -0.2; //          − R
    }
    let mut boxes = vec![0f32; 4 * CELLS as usize];
    let per_row = SIDE / STRIDE;
    for a in 0..CELLS {
        let (r, c) = (a / per_row, a % per_row);
        let a = a as usize;
        boxes[a] = (c * STRIDE + STRIDE / 2) as f32; // cx
        boxes[CELLS as usize + a] = (r * STRIDE + STRIDE / 2) as f32; // cy
        boxes[2 * CELLS as usize + a] = 16.0; // w
        boxes[3 * CELLS as usize + a] = 16.0; // h
    }
    let shape: Vec<u8> = [1i64, 2, CELLS].iter().flat_map(|v| v.to_le_bytes()).collect();
    let mut g = Vec::new();
    pb::bytes(
        &mut g,
        1,
        &node(
            "Conv",
            &["images", "w", "b"],
            "logits",
            &[("kernel_shape", Attr::Ints(vec![STRIDE, STRIDE])), ("strides", Attr::Ints(vec![STRIDE, STRIDE]))],
        ),
    );
    pb::bytes(&mut g, 1, &node("Sigmoid", &["logits"], "probs", &[]));
    pb::bytes(&mut g, 1, &node("Reshape", &["probs", "shape"], "scores", &[]));
    pb::bytes(&mut g, 1, &node("Concat", &["boxes", "scores"], "output0", &[("axis", Attr::Int(1))]));
    pb::bytes(&mut g, 2, b"synthetic-yolov8");
    pb::bytes(&mut g, 5, &f32_tensor("w", &[2, 3, STRIDE, STRIDE], &w));
    pb::bytes(&mut g, 5, &f32_tensor("b", &[2], &[-6.0, -6.0]));
    pb::bytes(&mut g, 5, &f32_tensor("boxes", &[1, 4, CELLS], &boxes));
    pb::bytes(&mut g, 5, &tensor("shape", &[3], INT64, &shape));
    pb::bytes(&mut g, 11, &value_info("images", &[1, 3, SIDE, SIDE]));
    pb::bytes(&mut g, 12, &value_info("output0", &[1, 6, if symbolic { -1 } else { CELLS }]));
    let mut m = Vec::new();
    pb::int(&mut m, 1, 8); // ir_version
    pb::bytes(&mut m, 2, b"alleywatch tests/fire.rs");
    pb::bytes(&mut m, 7, &g);
    let mut opset = Vec::new();
    pb::bytes(&mut opset, 1, b"");
    pb::int(&mut opset, 2, 17);
    pb::bytes(&mut m, 8, &opset);
    m
}

fn config(fire: &str) -> Config {
    let text = format!(
        r#"agent_id = "fire-test"
site = {{ district = "d", street = "s", community = "c" }}
broker = {{ host = "127.0.0.1" }}
detector = {{ path = "{det}", format = "nanodet", input_size = 416 }}
{fire}

[[cameras]]
id = "yard"
name = "Yard"
url = "file:///yard.mp4"
fps = 5
"#,
        det = models_dir().join("nanodet.onnx").display()
    );
    Config::from_text(&text, Path::new("fire-test.toml")).unwrap()
}

/// A 128 × 128 grey frame with a red square (top-left quadrant) and a
/// green one (bottom-right), each 32 px.
fn frame() -> Vec<u8> {
    let mut rgb = vec![128u8; 128 * 128 * 3];
    for y in 0..128 {
        for x in 0..128 {
            let px = match (x, y) {
                (16..48, 16..48) => [255, 0, 0],
                (80..112, 80..112) => [0, 255, 0],
                _ => continue,
            };
            rgb[(y * 128 + x) * 3..][..3].copy_from_slice(&px);
        }
    }
    rgb
}

/// Feeds `seconds` of one still frame at the camera's 5 fps; returns each
/// event message as (clip time, JSON, snapshot size).
fn run(config: &Config, rgb: &[u8], seconds: f64) -> Vec<(f64, Value, usize)> {
    let models = Models::load(config).unwrap();
    let camera = config.cameras[0].clone();
    let mut analyzer = CameraAnalyzer::new(config, &camera, models, Arc::new(Metrics::new()));
    let mut out = Vec::new();
    let mut events = Vec::new();
    for i in 0..(seconds * 5.0).round() as u64 {
        let t = i as f64 * 0.2;
        let input = FrameInput {
            rgb,
            width: 128,
            height: 128,
            t,
            wall: UNIX_EPOCH + Duration::from_secs_f64(1_800_000_000.0 + t),
        };
        analyzer.analyse(&input, &mut out).unwrap();
        for msg in out.drain(..) {
            if let Outbound::Event { event, snapshot } = msg {
                events.push((t, serde_json::to_value(&*event).unwrap(), snapshot.map_or(0, |s| s.len())));
            }
        }
    }
    events
}

fn schema() -> jsonschema::Validator {
    jsonschema::validator_for(&serde_json::from_str(alleywatch_contract::schema::EVENT).unwrap()).unwrap()
}

/// A YOLOv8 export whose classes are named `flame` and `smoke` works with
/// config alone: `fire.classes` maps the names, and each square becomes
/// its own event of the right kind, at the right place, on the k-th
/// analysed frame, with the window, the region and a snapshot.
#[test]
fn yolov8_layout_model_with_mapped_class_names_raises_fire_and_smoke() {
    raises_fire_and_smoke(yolov8_model(false));
}

/// The same model declaring its anchor count symbolic, as exports with
/// dynamic axes do: the agent sizes its output buffer from a first run at
/// load time (or ONNX Runtime infers it); the events must be the same.
#[test]
fn a_model_with_symbolic_output_sizes_gives_the_same_events() {
    raises_fire_and_smoke(yolov8_model(true));
}

/// The `[fire]` table for the YOLOv8-layout model at `model`, its classes
/// mapped by name, with `rules` (TOML lines) added.
fn byo_fire_table(model: &Path, rules: &str) -> String {
    format!(
        r#"[fire]
path = "{}"
format = "yolov8"
input_size = 64
labels = ["flame", "smoke"]
classes = {{ fire = ["flame"], smoke = ["smoke"] }}
{rules}"#,
        model.display()
    )
}

fn raises_fire_and_smoke(model_bytes: Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("byo-yolov8.onnx");
    std::fs::write(&model, model_bytes).unwrap();
    let fire = byo_fire_table(
        &model,
        "fire = { k = 2, n = 3, min_area = 0.01 }\nsmoke = { k = 2, n = 3, min_area = 0.01 }\nflicker = { enabled = false }",
    );
    let events = run(&config(&fire), &frame(), 3.0);
    let validator = schema();
    let starts: Vec<&(f64, Value, usize)> = events.iter().filter(|(_, e, _)| e["type"] == "start").collect();
    assert_eq!(starts.len(), 2, "{events:#?}");
    for (t, e, jpeg) in &starts {
        // `seq` is the publisher's to set; everything else is final here.
        let mut e = e.clone();
        e["seq"] = 1.into();
        let e = &e;
        let errors: Vec<String> = validator.iter_errors(e).map(|x| format!("{} at {}", x, x.instance_path())).collect();
        assert!(errors.is_empty(), "{errors:?}\n{e:#}");
        assert!(*jpeg > 1000, "snapshot of {} bytes", jpeg);
        // Fire runs at 2 fps on the 5 fps camera: frames 0.0 and 0.4 are
        // its first two analyses, and k = 2.
        assert!((t - 0.4).abs() < 1e-9, "start at {t}");
        let window = e["evidence"]["window"].as_array().unwrap();
        assert_eq!(window.len(), 2);
        assert!(window.iter().all(|w| w["score"].as_f64().unwrap() > 0.99), "{window:?}");
        assert_eq!(e["evidence"]["regions"].as_array().unwrap().len(), 2);
        assert_eq!(e["evidence"]["flicker"]["checked"], false);
        assert_eq!(e["model"]["format"], "yolov8");
    }
    let region = |kind: &str| -> Vec<f64> {
        let e = &starts.iter().find(|(_, e, _)| e["kind"] == kind).unwrap_or_else(|| panic!("no {kind}")).1;
        e["evidence"]["objects"][0]["box"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect()
    };
    // Red square 16–48 px of 128 → 0.125–0.375; the anchors' 16-px boxes
    // around its cells reach one cell (0.0625) further each way.
    let f = region("fire");
    for (got, want) in f.iter().zip([0.0625, 0.0625, 0.4375, 0.4375]) {
        assert!((got - want).abs() < 0.02, "fire region {f:?}");
    }
    let s = region("smoke");
    for (got, want) in s.iter().zip([0.5625, 0.5625, 0.9375, 0.9375]) {
        assert!((got - want).abs() < 0.02, "smoke region {s:?}");
    }
    let kinds: Vec<(&str, &str)> =
        starts.iter().map(|(_, e, _)| (e["kind"].as_str().unwrap(), e["severity"].as_str().unwrap())).collect();
    assert!(kinds.contains(&("fire", "critical")) && kinds.contains(&("smoke", "warning")), "{kinds:?}");

    // The same model with the names unmapped reports nothing, and a
    // mapping naming a class the model lacks is a config error naming it.
    let unmapped = fire.replace(
        r#"classes = { fire = ["flame"], smoke = ["smoke"] }"#,
        r#"classes = { fire = ["flame"], smoke = [] }"#,
    );
    let events = run(&config(&unmapped), &frame(), 3.0);
    assert!(events.iter().all(|(_, e, _)| e["kind"] == "fire"), "{events:#?}");
    let text = fire.replace(r#"fire = ["flame"]"#, r#"fire = ["Fire"]"#);
    let err = Config::from_text(
        &format!(
            "agent_id = \"a\"\nsite = {{ district = \"d\", street = \"s\", community = \"c\" }}\nbroker = {{ host = \"h\" }}\n\
             detector = {{ path = \"x.onnx\", format = \"nanodet\", input_size = 416 }}\n{text}\n[[cameras]]\nid = \"c\"\nname = \"c\"\nurl = \"test://\"\n"
        ),
        Path::new("byo.toml"),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("fire.classes.fire") && err.contains("\"Fire\""), "{err}");
}

/// The project's own heat-map model loads (its sha256 is checked against
/// the manifest), runs, and raises nothing on a plain grey scene.
#[test]
fn project_fire_model_loads_and_stays_quiet_on_a_plain_scene() {
    let fire = format!("[fire]\npath = \"{}\"", models_dir().join("fire.onnx").display());
    let grey = vec![120u8; 128 * 128 * 3];
    let events = run(&config(&fire), &grey, 6.0);
    assert!(events.is_empty(), "{events:#?}");
    // Labels that do not match the output channels are refused, naming the
    // model and the shape it needs.
    let bad = format!("{fire}\nlabels = [\"fire\"]");
    let Err(err) = Models::load(&config(&bad)) else { panic!("one label for a two-channel heat-map must be refused") };
    let msg = err.to_string();
    assert!(msg.contains("fire.onnx") && msg.contains("[1, 1, H, W]"), "{msg}");
}

/// `eval-images` end to end on a folder it writes: images through the
/// agent's own model path (the YOLOv8-layout model above), YOLO labels,
/// per-kind TP/FP/FN at the configured thresholds, the false positive named
/// and ranked, the curve, and a PNG plot that decodes.
#[test]
fn eval_images_scores_a_labelled_folder() {
    use edge_agent::replay::images;
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("byo-yolov8.onnx");
    std::fs::write(&model, yolov8_model(false)).unwrap();
    let fire = byo_fire_table(&model, "fire = { min_area = 0.01 }\nsmoke = { min_area = 0.01 }");
    let config = config(&fire);
    let set = dir.path().join("stills");
    std::fs::create_dir_all(set.join("images")).unwrap();
    std::fs::create_dir_all(set.join("labels")).unwrap();
    let square = |colour: [u8; 3]| {
        let mut rgb = vec![128u8; 128 * 128 * 3];
        for y in 16..48 {
            for x in 16..48 {
                rgb[(y * 128 + x) * 3..][..3].copy_from_slice(&colour);
            }
        }
        image::RgbImage::from_raw(128, 128, rgb).unwrap()
    };
    // a: fire, labelled; b: smoke, labelled; c: plain, no label file;
    // d: "fire" nobody labelled (a false positive).
    square([255, 0, 0]).save(set.join("images/a.png")).unwrap();
    square([0, 255, 0]).save(set.join("images/b.png")).unwrap();
    square([128, 128, 128]).save(set.join("images/c.png")).unwrap();
    square([255, 0, 0]).save(set.join("images/d.png")).unwrap();
    std::fs::write(set.join("labels/a.txt"), "0 0.25 0.25 0.25 0.25\n").unwrap();
    std::fs::write(set.join("labels/b.txt"), "1 0.25 0.25 0.25 0.25\n").unwrap();
    std::fs::write(set.join("labels/d.txt"), "").unwrap();
    let cfg = config.fire.clone().unwrap();
    let opts = images::ImageEvalOptions { names: Some(vec!["fire".into(), "smoke".into()]), top: 5 };
    let stills = images::load_set(&set, &opts, &cfg).unwrap();
    assert_eq!(stills.len(), 4);
    let models = Models::load(&config).unwrap();
    let model = models.fire.as_ref().expect("fire model loaded");
    let report = images::evaluate(&set, &stills, model, &cfg, &config.cameras[0], &mut |_| {}).unwrap();
    let f = &report.fire;
    assert_eq!((f.positives, f.negatives), (1, 3));
    assert_eq!((f.at_threshold.tp, f.at_threshold.fp, f.at_threshold.fn_), (1, 1, 0), "{f:#?}");
    assert_eq!(f.at_threshold.precision, 0.5);
    assert_eq!((f.boxes, f.boxes_found), (1, 1));
    assert_eq!(f.false_positives.len(), 1);
    assert!(f.false_positives[0].file.ends_with("d.png"), "{:?}", f.false_positives);
    assert!(f.false_positives[0].score > 0.99);
    let s = &report.smoke;
    assert_eq!((s.at_threshold.tp, s.at_threshold.fp, s.at_threshold.fn_), (1, 0, 0), "{s:#?}");
    assert_eq!(f.curve.len(), 19);
    assert!(f.curve.iter().all(|p| p.tp == 1 && p.fp == 1), "{:?}", f.curve);
    let summary = images::summary(&report, 5);
    assert!(summary.contains("d.png") && summary.contains("| fire | 1 | 3 |"), "{summary}");
    let png = images::plot(&report).unwrap();
    let plot = image::load_from_memory(&png).unwrap();
    assert_eq!((plot.width(), plot.height()), (640, 480));
}
