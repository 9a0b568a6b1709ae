//! Criterion benches of the frame pipeline's hot stages.
//!
//! - letterbox: a 1920x1080 RGB frame into a 416 (NanoDet) and a 640
//!   (YOLOv8) tensor;
//! - decode + NMS of NanoDet outputs with a realistic number of candidates;
//! - the lane rule over 50 detections per frame;
//! - JPEG snapshot encode of a 640x360 frame;
//! - the default model end to end (letterbox + ONNX Runtime + decode), when
//!   ONNX Runtime and the model are available.
//!
//! Run: `cargo bench -p edge-agent` (after deploy/setup.sh).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use edge_agent::analytics::LaneRule;
use edge_agent::config::{Lane, ModelFormat};
use edge_agent::infer::decode::{self, Candidate};
use edge_agent::infer::detector::input_spec;
use edge_agent::infer::{BBox, Detection, Preprocessor};

/// A 1080p frame with some structure (gradients), not a flat colour.
fn frame(w: u32, h: u32) -> Vec<u8> {
    let mut v = Vec::with_capacity((w * h * 3) as usize);
    for y in 0..h {
        for x in 0..w {
            v.extend_from_slice(&[(x % 256) as u8, (y % 256) as u8, ((x + y) % 256) as u8]);
        }
    }
    v
}

fn letterbox(c: &mut Criterion) {
    let rgb = frame(1920, 1080);
    let mut nano = Preprocessor::new(input_spec(ModelFormat::Nanodet, 416));
    c.bench_function("letterbox 1920x1080 -> 416 NCHW (nanodet)", |b| {
        b.iter(|| black_box(nano.run(black_box(&rgb), 1920, 1080).unwrap()))
    });
    let mut v8 = Preprocessor::new(input_spec(ModelFormat::Yolov8, 640));
    c.bench_function("letterbox 1920x1080 -> 640 NCHW (yolov8)", |b| {
        b.iter(|| black_box(v8.run(black_box(&rgb), 1920, 1080).unwrap()))
    });
}

fn decode_nms(c: &mut Criterion) {
    // NanoDet-416 outputs: mostly background, a few hundred cells over 0.35.
    let classes = 80;
    let levels: Vec<(Vec<f32>, Vec<f32>)> = [2704usize, 676, 169]
        .iter()
        .map(|&cells| {
            let mut scores = vec![0.01f32; cells * classes];
            for cell in (0..cells).step_by(17) {
                scores[cell * classes + (cell % 3) * 2] = 0.4 + (cell % 50) as f32 / 100.0;
            }
            let boxes: Vec<f32> = (0..cells * 44).map(|i| ((i * 7) % 11) as f32 * 0.3).collect();
            (scores, boxes)
        })
        .collect();
    c.bench_function("nanodet decode + NMS (3 levels, ~210 candidates)", |b| {
        let mut found: Vec<Candidate> = Vec::with_capacity(512);
        b.iter(|| {
            found.clear();
            for (level, (scores, boxes)) in levels.iter().enumerate() {
                decode::nanodet(level, scores, boxes, classes, 416, 0.35, &mut found);
            }
            decode::nms(&mut found, 0.6, 100);
            black_box(found.len())
        })
    });
}

fn lane_rules(c: &mut Criterion) {
    let labels: Vec<String> = edge_agent::infer::COCO80.iter().map(|s| s.to_string()).collect();
    let lane = Lane {
        name: "lane".into(),
        polygon: vec![[0.1, 0.5], [0.9, 0.5], [1.0, 1.0], [0.0, 1.0]],
        classes: vec!["car".into(), "truck".into()],
        dwell_s: 30.0,
        clear_s: 3.0,
    };
    let mut rule = LaneRule::new(lane, &labels, 10.0);
    let dets: Vec<Detection> = (0..50)
        .map(|i| {
            let x = (i % 10) as f32 / 10.0;
            let y = 0.4 + (i / 10) as f32 / 10.0;
            Detection {
                bbox: BBox { x1: x, y1: y, x2: x + 0.08, y2: y + 0.1 },
                class_id: [0, 2, 7][i % 3],
                score: 0.6,
                track_id: None,
            }
        })
        .collect();
    let mut t = 0.0;
    c.bench_function("lane rule, 50 detections", |b| {
        b.iter(|| {
            t += 0.2;
            black_box(rule.observe(t, black_box(&dets)))
        })
    });
}

fn snapshot(c: &mut Criterion) {
    let rgb = frame(640, 360);
    let lane = [[0.1, 0.5], [0.9, 0.5], [1.0, 1.0], [0.0, 1.0]];
    let boxes = [BBox { x1: 0.2, y1: 0.5, x2: 0.4, y2: 0.8 }];
    c.bench_function("snapshot JPEG 640x360 q80", |b| {
        b.iter(|| {
            black_box(
                edge_agent::alert::snapshot::render(&rgb, 640, 360, 80, |c| {
                    c.polygon(&lane, edge_agent::overlay::YELLOW);
                    for b in &boxes {
                        c.rect(b, edge_agent::overlay::RED);
                    }
                })
                .unwrap()
                .len(),
            )
        })
    });
}

fn model(c: &mut Criterion) {
    let Some(model) = edge_agent::demo::find_in_project(edge_agent::demo::DEFAULT_MODEL) else { return };
    let Ok(env) = edge_agent::infer::runtime::init(None) else {
        eprintln!("ONNX Runtime not found: skipping the model bench (run deploy/setup.sh)");
        return;
    };
    let text = format!("path = \"{}\"\nformat = \"nanodet\"\ninput_size = 416\n", model.display());
    let cfg: edge_agent::config::Detector = toml::from_str(&text).unwrap();
    let detector = edge_agent::infer::Detector::load(&cfg, 80, cfg.score_threshold, env).unwrap();
    let rgb = frame(1920, 1080);
    let mut pre = detector.preprocessor();
    let mut out = Vec::new();
    c.bench_function("nanodet-416 end to end (letterbox + ort + decode), 1080p frame", |b| {
        b.iter(|| {
            let lb = pre.run(&rgb, 1920, 1080).unwrap();
            detector.detect(&pre, &lb, &mut out).unwrap();
            black_box(out.len())
        })
    });
}

criterion_group!(benches, letterbox, decode_nms, lane_rules, snapshot, model);
criterion_main!(benches);
