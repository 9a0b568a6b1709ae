//! Streams scaling: the real agent with 1, 4, 8 and 16 live RTSP cameras,
//! each 640×360 H.264 at 25 fps (1 s GOP) analysed at 5 fps, and what each
//! count costs: analysed fps per camera, drop rate, CPU, RSS and the p50/p95
//! capture-to-decision latency. The largest count that keeps every camera
//! at its 5 fps with no drops beyond policy is the box's sustained count.
//!
//! ```text
//! cargo bench --bench streams                        # 1, 4, 8, 16 cameras, FP32 and INT8
//! STREAMS_COUNTS=5,6 STREAMS_SECONDS=60 STREAMS_PRECISION=int8 STREAMS_GATE_CAMERAS=0 cargo bench --bench streams
//! STREAMS_COUNTS= STREAMS_BATCH_COUNTS=8,12 STREAMS_GATE_CAMERAS=0 cargo bench --bench streams   # batching only
//! ```
//!
//! `STREAMS_DETECTOR` adds keys to every run's `[detector]` (for example
//! `threads = 2, sessions = 1`); `STREAMS_BATCH` sets the scaling table's
//! `detector.batch` (unset: the agent's default). A batching table runs
//! `STREAMS_BATCH_COUNTS` (8, 16) cameras with batch 1 and with
//! `STREAMS_BATCH_COMPARE` (4), to measure what batching gains.
//!
//! - **Cameras**: one in-process RTSP server (gstreamer-rtsp-server) serving
//!   a 2-minute clip (`bikes.mp4` street footage looped, scaled to 640×360,
//!   `x264enc` 800 kbit/s, made once under `target/bench-media/`); every
//!   camera is its own RTSP session with its own stream. The server runs in
//!   this process, so the agent's figures are its own.
//! - **Agent**: the release binary, the project's NanoDet detector at 416 on
//!   every camera's lane, `detector.fps = 5`, no pose or fire model.
//! - **Policy**: a count is sustained when every camera is analysed at
//!   ≥ 95 % of 5 fps and ≤ 1 % of the frames handed to analysis are dropped
//!   because it was still busy with an earlier one.
//! - The scaling table runs with the motion gate off, so every analysed
//!   frame is inferred (the worst case). A last run puts the same cameras
//!   on a still scene, gate off and on, and reports the CPU the gate saves.
//! - Latency is `alleywatch_stage_seconds{stage="capture_to_decision"}`:
//!   from a frame's arrival at the appsink to the rules' verdict on it;
//!   p50/p95 are interpolated within the histogram's buckets, as Prometheus'
//!   `histogram_quantile` does.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[path = "media.rs"]
mod media;

use alleywatch_devkit::{free_port, Mosquitto, RtspServer};
use edge_agent::config::Precision;
use edge_agent::project::{find_in_project, DEFAULT_MODEL};
use edge_agent::replay::frames::VideoFrames;

const ANALYSIS_FPS: f64 = 5.0;

fn env_or(key: &str, default: &str) -> String {
    std::env::var(key).unwrap_or_else(|_| default.to_string())
}

/// The camera clip: bikes.mp4 looped 12 times (120 s), 640×360, 25 fps, 1 s GOP.
fn clip() -> PathBuf {
    let dir = find_in_project("target").unwrap_or_else(|| PathBuf::from("target")).join("bench-media");
    let out = dir.join("bikes-360p-loop.mp4");
    if out.is_file() {
        return out;
    }
    std::fs::create_dir_all(&dir).expect("target/bench-media");
    let src = find_in_project(".deps/media/bikes.mp4").expect(".deps/media/bikes.mp4: run deploy/setup.sh");
    eprintln!("making {} (once) ...", out.display());
    let mut video = VideoFrames::open(&src, 640, false).expect("open bikes.mp4");
    let mut frames = Vec::new();
    while let Some(f) = video.next_frame().expect("decode bikes.mp4") {
        frames.push(f);
    }
    let (w, h) = (frames[0].width, frames[0].height);
    // Pushed with continuous timestamps: each loop follows the last.
    media::encode(&out, (w, h), (640, 360), 800, (0..12).flat_map(|_| frames.iter().map(|f| f.rgb.clone())));
    out
}

/// A still street scene with ±2 levels of fresh noise per frame (a camera
/// sensor's), 640×360, 25 fps, 1 s GOP, 150 s.
fn static_clip() -> PathBuf {
    let dir = find_in_project("target").unwrap_or_else(|| PathBuf::from("target")).join("bench-media");
    let out = dir.join("still-360p.mp4");
    if out.is_file() {
        return out;
    }
    std::fs::create_dir_all(&dir).expect("target/bench-media");
    let src = find_in_project(".deps/media/bikes.mp4").expect(".deps/media/bikes.mp4: run deploy/setup.sh");
    eprintln!("making {} (once) ...", out.display());
    let still = VideoFrames::open(&src, 640, false).expect("open bikes.mp4").next_frame().expect("decode");
    let still = still.expect("a first frame");
    let size = (still.width, still.height);
    media::encode(&out, size, (640, 360), 800, media::sensor_noise(still.rgb, 25 * 150));
    out
}

/// What one scrape of `/metrics` says.
#[derive(Debug, Default, Clone)]
struct Scrape {
    analysed: f64,
    decoded: f64,
    dropped: f64,
    up: f64,
    inferences: f64,
    inferred_frames: f64,
    /// (le, cumulative count) of capture_to_decision.
    buckets: Vec<(f64, f64)>,
}

fn scrape(port: u16) -> Option<Scrape> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    write!(s, "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    let mut out = Scrape::default();
    for line in body.lines().filter(|l| !l.starts_with('#')) {
        let Some((key, value)) = line.rsplit_once(' ') else { continue };
        let Ok(v) = value.parse::<f64>() else { continue };
        let name = key.split('{').next().unwrap_or(key);
        match name {
            "alleywatch_frames_analysed_total" => out.analysed += v,
            "alleywatch_frames_decoded_total" => out.decoded += v,
            "alleywatch_frames_dropped_total" if key.contains("analysis_busy") => out.dropped += v,
            "alleywatch_camera_up" => out.up += v,
            "alleywatch_detector_inferences" => out.inferences = v,
            "alleywatch_detector_inferred_frames" => out.inferred_frames = v,
            "alleywatch_stage_seconds_bucket" if key.contains("stage=\"capture_to_decision\"") => {
                let le = key.split("le=\"").nth(1).and_then(|r| r.split('"').next()).unwrap_or("+Inf");
                let le = if le == "+Inf" { f64::INFINITY } else { le.parse().unwrap_or(f64::INFINITY) };
                out.buckets.push((le, v));
            }
            _ => {}
        }
    }
    Some(out)
}

/// The `q` quantile of the observations between two scrapes, interpolated
/// linearly within its bucket (as `histogram_quantile`).
fn quantile(before: &[(f64, f64)], after: &[(f64, f64)], q: f64) -> f64 {
    let counts: Vec<(f64, f64)> =
        after.iter().map(|&(le, n)| (le, n - before.iter().find(|b| b.0 == le).map_or(0.0, |b| b.1))).collect();
    let total = counts.last().map_or(0.0, |c| c.1);
    if total <= 0.0 {
        return f64::NAN;
    }
    let rank = q * total;
    let mut lower = (0.0, 0.0);
    for &(le, n) in &counts {
        if n >= rank {
            if le.is_infinite() {
                return lower.0;
            }
            let within = (rank - lower.1) / (n - lower.1).max(1e-9);
            return lower.0 + (le - lower.0) * within;
        }
        lower = (le, n);
    }
    f64::NAN
}

/// CPU seconds (user + system) the process has used.
fn cpu_s(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at ')'.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    ticks / hz.max(1.0)
}

fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmRSS:")).map(str::to_string))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse::<f64>().ok()))
        .unwrap_or(0.0)
        / 1024.0
}

struct Row {
    cameras: usize,
    /// Frames per inference over the measured window.
    mean_batch: f64,
    fps_per_camera: f64,
    drop_rate: f64,
    cpu_pct: f64,
    rss_mib: f64,
    p50_ms: f64,
    p95_ms: f64,
}

impl Row {
    fn sustained(&self) -> bool {
        self.fps_per_camera >= 0.95 * ANALYSIS_FPS && self.drop_rate <= 0.01
    }
}

struct Stopper(Child);

impl Drop for Stopper {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.0.id().to_string()]).status();
        let _ = self.0.wait();
    }
}

fn run(
    cameras: usize,
    precision: &str,
    batch: Option<usize>,
    gate: bool,
    server: &RtspServer,
    broker: &Mosquitto,
    measure: Duration,
) -> Option<Row> {
    let dir = tempfile::tempdir().expect("tempdir");
    let model = find_in_project(DEFAULT_MODEL).expect("models/nanodet.onnx");
    let http = free_port().expect("port");
    // More detector keys, e.g. `threads = 2, sessions = 1`.
    let mut extra = match env_or("STREAMS_DETECTOR", "") {
        e if e.trim().is_empty() => String::new(),
        e => format!(", {e}"),
    };
    if let Some(b) = batch {
        extra.push_str(&format!(", batch = {b}"));
    }
    let mut config = format!(
        r#"agent_id = "streams"
site = {{ district = "d", street = "s", community = "c" }}
broker = {{ host = "127.0.0.1", port = {} }}
detector = {{ path = "{}", format = "nanodet", input_size = 416, fps = {ANALYSIS_FPS}, precision = "{precision}", motion_gate = {{ enabled = {gate} }}{extra} }}
spool = {{ path = "{}/spool.sqlite" }}
http = {{ bind = "127.0.0.1:{http}" }}
"#,
        broker.port(),
        model.display(),
        dir.path().display()
    );
    for i in 0..cameras {
        config.push_str(&format!(
            "[[cameras]]\nid = \"cam-{i}\"\nname = \"Lane {i}\"\nurl = \"{}\"\nfps = {ANALYSIS_FPS}\nfire = false\n\
             lanes = [{{ name = \"lane\", polygon = [[0, 0.5], [1, 0.5], [1, 1], [0, 1]], classes = [\"car\", \"truck\"], dwell_s = 30 }}]\n",
            server.url()
        ));
    }
    let path = dir.path().join("streams.toml");
    std::fs::write(&path, config).expect("write config");
    let agent = Command::new(env!("CARGO_BIN_EXE_edge-agent"))
        .args(["run", "--config"])
        .arg(&path)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("start edge-agent");
    let agent = Stopper(agent);
    let pid = agent.0.id();
    // Every camera streaming, then a warm-up: arenas and caches grow first.
    let t0 = Instant::now();
    while scrape(http).is_none_or(|s| (s.up as usize) < cameras) {
        if t0.elapsed() > Duration::from_secs(60) {
            eprintln!("{cameras} cameras: not all up within 60 s");
            return None;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(10));
    let (a, c0, w0) = (scrape(http)?, cpu_s(pid), Instant::now());
    std::thread::sleep(measure);
    let (b, c1, wall) = (scrape(http)?, cpu_s(pid), w0.elapsed().as_secs_f64());
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) as f64;
    let handed = (b.decoded - a.decoded).max(1.0);
    Some(Row {
        cameras,
        mean_batch: (b.inferred_frames - a.inferred_frames) / (b.inferences - a.inferences).max(1.0),
        fps_per_camera: (b.analysed - a.analysed) / wall / cameras as f64,
        drop_rate: (b.dropped - a.dropped) / handed,
        cpu_pct: (c1 - c0) / wall / cores * 100.0,
        rss_mib: rss_mib(pid),
        p50_ms: quantile(&a.buckets, &b.buckets, 0.5) * 1000.0,
        p95_ms: quantile(&a.buckets, &b.buckets, 0.95) * 1000.0,
    })
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else to parse.
    let counts: Vec<usize> = env_or("STREAMS_COUNTS", "1,4,8,16")
        .split(',')
        .filter(|c| !c.trim().is_empty())
        .map(|c| c.trim().parse().expect("STREAMS_COUNTS: numbers, comma-separated"))
        .collect();
    let measure = Duration::from_secs(env_or("STREAMS_SECONDS", "30").parse().expect("STREAMS_SECONDS"));
    let precisions: Vec<String> = env_or("STREAMS_PRECISION", "fp32,int8").split(',').map(str::to_string).collect();
    // Unset: the agent's default `detector.batch` (1 on the CPU).
    let batch: Option<usize> = std::env::var("STREAMS_BATCH")
        .ok()
        .map(|b| b.parse().expect("STREAMS_BATCH: the detector.batch of the scaling table"));
    let compare: usize = env_or("STREAMS_BATCH_COMPARE", "4").parse().expect("STREAMS_BATCH_COMPARE");
    // Batching's gain: the same counts with batch 1 and `batch`, alternated.
    let batch_counts: Vec<usize> = env_or("STREAMS_BATCH_COUNTS", "8,16")
        .split(',')
        .filter(|c| !c.trim().is_empty())
        .map(|c| c.trim().parse().expect("STREAMS_BATCH_COUNTS: numbers, comma-separated"))
        .collect();
    let clip = clip();
    let server = RtspServer::start(&clip, 0, "/lane").expect("rtsp server");
    let broker = Mosquitto::start().expect("mosquitto (run deploy/setup.sh)");
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    println!(
        "streams: 640x360 H.264 25 fps cameras analysed at {ANALYSIS_FPS} fps, NanoDet 416, detector.batch {}, {cores} cores, {} s per count",
        batch.map_or("default".to_string(), |b| b.to_string()),
        measure.as_secs()
    );
    let model = find_in_project(DEFAULT_MODEL).expect("models/nanodet.onnx");
    for precision in &precisions {
        let wanted = if precision == "int8" { Precision::Int8 } else { Precision::Fp32 };
        if let Err(e) = edge_agent::infer::runtime::variant_path(&model, wanted, "detector") {
            println!("\ndetector precision {precision}: skipped: {e}");
            continue;
        }
        println!("\ndetector precision {precision}");
        println!("| cameras | analysed fps/camera | drop rate | agent CPU (of {cores} cores) | RSS MiB | p50 ms | p95 ms | mean batch | sustained |");
        println!("|---|---|---|---|---|---|---|---|---|");
        let mut rows = Vec::new();
        for &n in &counts {
            let Some(row) = run(n, precision, batch, false, &server, &broker, measure) else { continue };
            println!(
                "| {} | {:.2} | {:.1} % | {:.0} % | {:.0} | {:.0} | {:.0} | {:.2} | {} |",
                row.cameras,
                row.fps_per_camera,
                row.drop_rate * 100.0,
                row.cpu_pct,
                row.rss_mib,
                row.p50_ms,
                row.p95_ms,
                row.mean_batch,
                if row.sustained() { "yes" } else { "no" }
            );
            rows.push(row);
        }
        let best = rows.iter().filter(|r| r.sustained()).map(|r| r.cameras).max();
        match best {
            Some(n) => println!("largest sustained count measured: {n} cameras"),
            None => println!("no count sustained"),
        }
        if let (Some(first), Some(last)) = (rows.first(), rows.last()) {
            if last.cameras > first.cameras {
                println!(
                    "RSS per added camera: {:.1} MiB ({:.0} MiB at {} → {:.0} MiB at {})",
                    (last.rss_mib - first.rss_mib) / (last.cameras - first.cameras) as f64,
                    first.rss_mib,
                    first.cameras,
                    last.rss_mib,
                    last.cameras
                );
            }
        }
    }
    if !batch_counts.is_empty() && compare > 1 {
        println!("\nbatching, FP32: the same cameras with detector.batch = 1 and {compare}");
        println!("| cameras | batch | mean batch | analysed fps/camera | drop rate | agent CPU | p50 ms | p95 ms |");
        println!("|---|---|---|---|---|---|---|---|");
        for &n in &batch_counts {
            for b in [1, compare] {
                let Some(row) = run(n, "fp32", Some(b), false, &server, &broker, measure) else { continue };
                println!(
                    "| {} | {b} | {:.2} | {:.2} | {:.1} % | {:.0} % | {:.0} | {:.0} |",
                    row.cameras,
                    row.mean_batch,
                    row.fps_per_camera,
                    row.drop_rate * 100.0,
                    row.cpu_pct,
                    row.p50_ms,
                    row.p95_ms
                );
            }
        }
    }
    server.stop();

    // Motion gating: the same cameras watching a scene where nothing moves.
    let n: usize = env_or("STREAMS_GATE_CAMERAS", "4").parse().expect("STREAMS_GATE_CAMERAS");
    if n == 0 {
        return;
    }
    let still = RtspServer::start(&static_clip(), 0, "/still").expect("rtsp server");
    println!("\nmotion gate, {n} cameras on a still scene (sensor-like noise), detector FP32 at 5 fps:");
    let off = run(n, "fp32", batch, false, &still, &broker, measure);
    let on = run(n, "fp32", batch, true, &still, &broker, measure);
    if let (Some(off), Some(on)) = (off, on) {
        println!(
            "agent CPU {:.0} % with the detector on every frame, {:.0} % gated (full check every 5 s): {:.0} % of the CPU saved",
            off.cpu_pct,
            on.cpu_pct,
            (1.0 - on.cpu_pct / off.cpu_pct.max(1e-9)) * 100.0
        );
    }
    still.stop();
}
