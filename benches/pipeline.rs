//! Criterion benches of the frame pipeline's hot stages.
//!
//! - letterbox: a 1920x1080 RGB frame into a 416 (NanoDet) and a 640
//!   (YOLOv8) tensor;
//! - decode + NMS of NanoDet outputs with a realistic number of candidates,
//!   and of YOLOX-nano's real output on a real frame (when the development
//!   model is there);
//! - the lane rule over 50 detections per frame, and the object tracker
//!   plus lane rule over 50 moving objects;
//! - the person tracker plus fall rule over 6 people, and the motion
//!   thumbnail the fall rule's vanish path needs;
//! - the fire path's flicker thumbnail, its region measurement over a 2 s
//!   window, and the fire rule over a frame's candidates;
//! - the class-agnostic obstruction cue on one lane (half the frame) against
//!   its clear reference;
//! - JPEG snapshot encode of a 640x360 frame;
//! - the default model and the pose model end to end (letterbox + ONNX
//!   Runtime + decode), when ONNX Runtime and the models are available.
//!
//! Run: `cargo bench -p edge-agent` (after deploy/setup.sh).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use edge_agent::analytics::LaneRule;
use edge_agent::config::{Lane, ModelFormat};
use edge_agent::infer::decode::{self, Candidate};
use edge_agent::infer::detector::input_spec;
use edge_agent::infer::{Detection, Preprocessor};
use edge_agent::vocab::BBox;

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
    // The agent's default analysis width.
    let small = frame(640, 360);
    c.bench_function("letterbox 640x360 -> 416 NCHW (nanodet)", |b| {
        b.iter(|| black_box(nano.run(black_box(&small), 640, 360).unwrap()))
    });
    // What the letterbox was before its own resize: fast_image_resize (SIMD,
    // but it rebuilds its filter tables and allocates on every call), then a
    // lookup-table write into the tensor.
    for (w, h, rgb) in [(1920u32, 1080u32, &rgb), (640, 360, &small)] {
        let mut fir = ReferenceLetterbox::new(416);
        c.bench_function(&format!("reference letterbox (fast_image_resize) {w}x{h} -> 416 NCHW"), |b| {
            b.iter(|| black_box(fir.run(black_box(rgb), w, h)))
        });
    }
}

/// fast_image_resize into an RGB scratch, then a lookup-table write into an
/// NCHW f32 tensor (NanoDet's normalisation).
struct ReferenceLetterbox {
    size: u32,
    resizer: fast_image_resize::Resizer,
    scratch: Vec<u8>,
    tensor: Vec<f32>,
    lut: [[f32; 256]; 3],
}

impl ReferenceLetterbox {
    fn new(size: u32) -> ReferenceLetterbox {
        let spec = input_spec(ModelFormat::Nanodet, size);
        let lut = [0, 1, 2].map(|c| {
            let mut t = [0.0; 256];
            for (v, x) in t.iter_mut().enumerate() {
                *x = (v as f32 - spec.mean[c]) / spec.std[c];
            }
            t
        });
        ReferenceLetterbox {
            size,
            resizer: fast_image_resize::Resizer::new(),
            scratch: Vec::new(),
            tensor: vec![0.0; (size * size * 3) as usize],
            lut,
        }
    }

    fn run(&mut self, rgb: &[u8], fw: u32, fh: u32) -> f32 {
        use fast_image_resize::{images::Image, images::ImageRef, PixelType, ResizeAlg, ResizeOptions};
        let lb = edge_agent::infer::Letterbox::new(fw, fh, self.size, false);
        let (w, h) = lb.inner(self.size);
        self.scratch.resize((w * h * 3) as usize, 0);
        let src = ImageRef::new(fw, fh, rgb, PixelType::U8x3).unwrap();
        let mut dst = Image::from_slice_u8(w, h, &mut self.scratch, PixelType::U8x3).unwrap();
        let opts = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(fast_image_resize::FilterType::Bilinear));
        self.resizer.resize(&src, &mut dst, &opts).unwrap();
        let plane = (self.size * self.size) as usize;
        let (c0, rest) = self.tensor.split_at_mut(plane);
        let (c1, c2) = rest.split_at_mut(plane);
        for y in 0..h as usize {
            let row = &self.scratch[y * w as usize * 3..(y + 1) * w as usize * 3];
            let base = y * self.size as usize;
            for (i, px) in row.chunks_exact(3).enumerate() {
                c0[base + i] = self.lut[0][px[2] as usize];
                c1[base + i] = self.lut[1][px[1] as usize];
                c2[base + i] = self.lut[2][px[0] as usize];
            }
        }
        self.tensor[plane / 2]
    }
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

/// YOLOX decode + NMS on the real output of YOLOX-nano 416 for a real frame
/// (bikes.mp4 at 6.6 s: parked cars behind a fence), when the development
/// model (`../shared/models`, or `BENCH_YOLOX`) and ONNX Runtime are there.
fn yolox_decode_nms(c: &mut Criterion) {
    let path = std::env::var_os("BENCH_YOLOX")
        .map(std::path::PathBuf::from)
        .or_else(|| edge_agent::project::find_in_project("../shared/models/yolox_nano_coco80_416.onnx"));
    let (Some(path), Some(clip)) = (path, edge_agent::project::find_in_project(".deps/media/bikes.mp4")) else {
        eprintln!("no YOLOX model or bikes.mp4: skipping the YOLOX decode bench");
        return;
    };
    let Ok(env) = edge_agent::infer::runtime::init(None) else { return };
    let (mut session, _) =
        edge_agent::infer::runtime::open_session(&edge_agent::config::ModelSession::cpu(&path, 2), "yolox", env)
            .unwrap();
    let mut video = edge_agent::replay::frames::VideoFrames::open(&clip, 640, false).unwrap();
    let mut frame = video.next_frame().unwrap().unwrap();
    while frame.t < 6.6 {
        frame = video.next_frame().unwrap().unwrap();
    }
    let mut pre = Preprocessor::new(input_spec(ModelFormat::Yolox, 416));
    pre.run(&frame.rgb, frame.width, frame.height).unwrap();
    let input = ort::value::TensorRef::from_array_view((pre.shape(), pre.tensor())).unwrap();
    let outs = session.run(ort::inputs![input]).unwrap();
    let (_, data) = outs[0].try_extract_tensor::<f32>().unwrap();
    let raw: Vec<f32> = data.to_vec();
    let mut found: Vec<Candidate> = Vec::with_capacity(512);
    decode::yolox(&raw, 80, 416, 0.35, &mut found);
    let candidates = found.len();
    decode::nms(&mut found, 0.6, 100);
    eprintln!("YOLOX on bikes.mp4 at 6.6 s: {candidates} candidates over 0.35, {} after NMS", found.len());
    c.bench_function("yolox-416 decode + NMS (real output, 3549 anchors)", |b| {
        b.iter(|| {
            found.clear();
            decode::yolox(black_box(&raw), 80, 416, 0.35, &mut found);
            decode::nms(&mut found, 0.6, 100);
            black_box(found.len())
        })
    });
    // The same real output in the YOLOv8 / YOLO11 layout: boxes decoded to
    // centre/size in input pixels, class scores = objectness × class, and
    // transposed to [4 + 80, anchors] (no registry ships a YOLOv8 ONNX
    // model, so the real numbers come from YOLOX).
    let row = 85;
    let anchors = raw.len() / row;
    let mut v8 = vec![0f32; 84 * anchors];
    let mut a = 0;
    for s in [8usize, 16, 32] {
        let g = 416 / s;
        for cy in 0..g {
            for cx in 0..g {
                let r = &raw[a * row..(a + 1) * row];
                let sf = s as f32;
                v8[a] = (r[0] + cx as f32) * sf;
                v8[anchors + a] = (r[1] + cy as f32) * sf;
                v8[2 * anchors + a] = r[2].exp() * sf;
                v8[3 * anchors + a] = r[3].exp() * sf;
                for k in 0..80 {
                    v8[(4 + k) * anchors + a] = r[4] * r[5 + k];
                }
                a += 1;
            }
        }
    }
    found.clear();
    decode::yolov8(&v8, 80, anchors, 0.35, &mut found);
    decode::nms(&mut found, 0.6, 100);
    eprintln!("the same output in YOLOv8 layout: {} after NMS", found.len());
    c.bench_function("yolov8-layout decode + NMS (real YOLOX output transposed, 3549 anchors)", |b| {
        b.iter(|| {
            found.clear();
            decode::yolov8(black_box(&v8), 80, anchors, 0.35, &mut found);
            decode::nms(&mut found, 0.6, 100);
            black_box(found.len())
        })
    });
}

fn lane_rules(c: &mut Criterion) {
    let labels: Vec<String> = edge_agent::config::COCO80.iter().map(|s| s.to_string()).collect();
    let lane = Lane {
        name: "lane".into(),
        polygon: vec![[0.1, 0.5], [0.9, 0.5], [1.0, 1.0], [0.0, 1.0]],
        classes: vec!["car".into(), "truck".into()],
        dwell_s: 30.0,
        clear_s: 3.0,
        cue: Default::default(),
        min_occupancy: 0.3,
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

fn tracking(c: &mut Criterion) {
    use edge_agent::analytics::{FallRule, Tracker, TrackerParams};
    use edge_agent::infer::motion::{MotionHistory, Thumb};
    use edge_agent::infer::pose::{Keypoint, Pose};

    // 50 objects drifting right, through the object tracker into a lane rule.
    let labels: Vec<String> = edge_agent::config::COCO80.iter().map(|s| s.to_string()).collect();
    let lane = Lane {
        name: "lane".into(),
        polygon: vec![[0.0, 0.5], [1.0, 0.5], [1.0, 1.0], [0.0, 1.0]],
        classes: vec!["car".into()],
        dwell_s: 30.0,
        clear_s: 3.0,
        cue: Default::default(),
        min_occupancy: 0.3,
    };
    let mut rule = LaneRule::new(lane, &labels, 10.0);
    let params = TrackerParams {
        high: 0.35,
        low: 0.15,
        match_iou: 0.3,
        low_match_iou: 0.2,
        min_hits: 2,
        max_age_s: 2.0,
        predict: true,
    };
    let mut tracker = Tracker::new(params);
    let mut t = 0.0;
    let mut dets: Vec<Detection> = Vec::with_capacity(50);
    let mut tracked: Vec<Detection> = Vec::with_capacity(64);
    c.bench_function("object tracker + lane rule, 50 moving objects", |b| {
        b.iter(|| {
            t += 0.2;
            dets.clear();
            for i in 0..50 {
                let (x, y) = ((i % 10) as f32 * 0.1 + (t as f32 * 0.01) % 0.05, (i / 10) as f32 * 0.2);
                dets.push(Detection {
                    bbox: BBox { x1: x, y1: y, x2: x + 0.06, y2: y + 0.1 },
                    class_id: [0, 2, 7][i % 3],
                    score: 0.3 + (i % 7) as f32 * 0.1,
                    track_id: None,
                });
            }
            tracker.update(t, &dets);
            tracked.clear();
            tracked.extend(tracker.confirmed().filter(|t| t.is_visible()).map(|t| t.detection()));
            black_box(rule.observe(t, &tracked))
        })
    });

    // 6 people (MultiPose's maximum) through the person tracker and the fall rule.
    let mut people = Tracker::new(TrackerParams { high: 0.2, low: 0.05, predict: false, ..params });
    let mut falls = FallRule::new(Default::default(), 0.2);
    let still = Thumb { w: 96, h: 54, px: vec![50; 96 * 54] };
    let mut poses: Vec<Pose> = Vec::with_capacity(6);
    let mut pdets: Vec<Detection> = Vec::with_capacity(6);
    let mut out = Vec::new();
    let mut t = 0.0;
    c.bench_function("person tracker + fall rule, 6 people", |b| {
        b.iter(|| {
            t += 0.2;
            poses.clear();
            for i in 0..6 {
                let x = i as f32 * 0.15 + (t as f32 * 0.01) % 0.02;
                poses.push(Pose {
                    bbox: BBox { x1: x, y1: 0.2, x2: x + 0.08, y2: 0.8 },
                    score: 0.5,
                    keypoints: [Keypoint::default(); 17],
                });
            }
            pdets.clear();
            pdets.extend(poses.iter().map(|p| Detection { bbox: p.bbox, class_id: 0, score: p.score, track_id: None }));
            people.update(t, &pdets);
            falls.observe(t, people.tracks(), &poses, Some((&still, &still)), 16.0 / 9.0, &mut out);
            black_box(out.len())
        })
    });

    let rgb = frame(640, 360);
    let mut history = MotionHistory::new(4);
    let mut t = 0.0;
    c.bench_function("motion thumbnail 640x360 -> 96x54", |b| {
        b.iter(|| {
            t += 0.2;
            history.push(t, black_box(&rgb), 640, 360)
        })
    });
}

/// The low-light check on every pose frame, and the stretch of the pose
/// input on a dim one (`infer::lowlight`): its whole cost to the fall path.
fn low_light(c: &mut Criterion) {
    use edge_agent::infer::lowlight::Stretch;

    // The check reads the motion thumbnail the fall path already makes.
    let dim: Vec<u8> = frame(1920, 1080).iter().map(|v| v / 8).collect();
    let mut thumb = edge_agent::infer::motion::Thumb::default();
    thumb.fill(&dim, 1920, 1080);
    c.bench_function("low-light check, 96x54 motion thumbnail of a 1080p frame", |b| {
        b.iter(|| Stretch::measure(black_box(&thumb.px), 70.0))
    });
    let s = Stretch::measure(&thumb.px, 70.0).expect("a dim frame is stretched");
    let mut tensor = vec![7i32; 384 * 224 * 3];
    c.bench_function("low-light stretch of the 384x224 pose input", |b| b.iter(|| s.apply_i32(black_box(&mut tensor))));
}

fn fire_path(c: &mut Criterion) {
    use edge_agent::analytics::flicker::{measure, FlickerHistory};
    use edge_agent::analytics::FireRule;
    use edge_agent::config::FireKind;
    use edge_agent::infer::fire::FireHit;

    let rgb = frame(640, 360);
    let mut history = FlickerHistory::new(2.5);
    let mut t = 0.0;
    c.bench_function("flicker thumbnail 640x360 -> 160x90 YCbCr", |b| {
        b.iter(|| {
            t += 0.2;
            history.push(t, black_box(&rgb), 640, 360)
        })
    });
    let region = BBox { x1: 0.3, y1: 0.3, x2: 0.5, y2: 0.6 };
    c.bench_function("flicker measure, 10 thumbnails, region 20% x 30%", |b| {
        b.iter(|| black_box(measure(&history, t, 2.0, black_box(&region))))
    });

    let cfg: edge_agent::config::Fire = toml::from_str("path = \"x.onnx\"").unwrap();
    let mut rule = FireRule::new(&cfg, 10.0);
    let hits: Vec<FireHit> = (0..8)
        .map(|i| {
            let x = i as f32 * 0.12;
            let kind = if i % 2 == 0 { FireKind::Fire } else { FireKind::Smoke };
            FireHit { kind, score: 0.9, bbox: BBox { x1: x, y1: 0.4, x2: x + 0.08, y2: 0.5 } }
        })
        .collect();
    let mut out = Vec::new();
    let mut now = 0.0;
    let mut stats = |_: FireKind, _: &BBox| edge_agent::analytics::flicker::FlickerStats::default();
    c.bench_function("fire rule, 8 candidate regions", |b| {
        b.iter(|| {
            now += 0.5;
            rule.observe(now, black_box(&hits), &mut stats, &mut out);
            out.clear();
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
                    c.polygon(&lane, edge_agent::draw::YELLOW);
                    for b in &boxes {
                        c.rect(b, edge_agent::draw::RED);
                    }
                })
                .unwrap()
                .len(),
            )
        })
    });
}

fn model(c: &mut Criterion) {
    let Some(model) = edge_agent::project::find_in_project(edge_agent::project::DEFAULT_MODEL) else { return };
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
            detector.detect(&mut pre, &lb, &mut out).unwrap();
            black_box(out.len())
        })
    });

    if let Some(fire_file) = edge_agent::project::find_in_project("models/fire.onnx") {
        let text = format!("path = \"{}\"\n", fire_file.display());
        let cfg: edge_agent::config::Fire = toml::from_str(&text).unwrap();
        let fire = edge_agent::infer::fire::FireModel::load(&cfg, env).unwrap();
        let rgb = frame(640, 360);
        let mut pre = fire.preprocessor();
        let mut hits = Vec::new();
        c.bench_function("fire heat-map 640 end to end (letterbox + ort + regions), 640x360 frame", |b| {
            b.iter(|| {
                let lb = pre.run(&rgb, 640, 360).unwrap();
                fire.detect(&mut pre, &lb, &mut hits).unwrap();
                black_box(hits.len())
            })
        });
    }

    let Some(pose_file) = edge_agent::project::find_in_project("models/movenet-multipose.onnx") else { return };
    let text = format!("path = \"{}\"\n", pose_file.display());
    let cfg: edge_agent::config::Pose = toml::from_str(&text).unwrap();
    let pose = edge_agent::infer::pose::PoseModel::load(&cfg, env).unwrap();
    let rgb = frame(640, 360);
    let mut pre = pose.preprocessor(640, 360);
    let mut people = Vec::new();
    c.bench_function("movenet-multipose 384x224 end to end (letterbox + ort + decode), 640x360 frame", |b| {
        b.iter(|| {
            let lb = pre.run(&rgb, 640, 360).unwrap();
            pose.detect(&pre, &lb, &mut people).unwrap();
            black_box(people.len())
        })
    });
}

/// The obstruction cue per lane per analysed frame: the lane covers the
/// lower half of the frame (~100 cells), a stack of goods a quarter of it.
/// The 160x90 thumbnail it reads is the fire path's (benched above), made
/// once per frame for every lane.
fn obstruction(c: &mut Criterion) {
    use edge_agent::analytics::flicker::ColourThumb;
    use edge_agent::analytics::obstruction::ObstructionCue;
    use edge_agent::config::ObstructionParams;
    use edge_agent::vocab::geometry::Polygon;
    let rgb = frame(640, 360);
    let mut clear = ColourThumb::default();
    clear.fill(&rgb, 640, 360);
    let mut blocked = clear.clone();
    for y in 60..90 {
        for x in 40..120 {
            blocked.px[(y * clear.w + x) as usize] = [200, 110, 135];
        }
    }
    let lane = Polygon::new(&[[0.0, 0.5], [1.0, 0.5], [1.0, 1.0], [0.0, 1.0]]);
    let mut cue = ObstructionCue::new(lane, ObstructionParams::default());
    cue.set_reference(0.0, &clear);
    let mut t = 0.0;
    cue.observe(t, &blocked, &[]);
    c.bench_function("obstruction cue, one lane (half a 160x90 thumbnail), blocked", |b| {
        b.iter(|| {
            t += 0.5;
            black_box(cue.observe(t, black_box(&blocked), &[]))
        })
    });
}

criterion_group!(
    benches,
    letterbox,
    decode_nms,
    yolox_decode_nms,
    lane_rules,
    tracking,
    low_light,
    fire_path,
    obstruction,
    snapshot,
    model
);
criterion_main!(benches);
