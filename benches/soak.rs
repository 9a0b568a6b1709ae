//! Soak bench (on demand, not in CI): the real agent with 4 live H.264
//! RTSP cameras and a real broker for a configurable time, reporting the
//! agent's resident memory and open file descriptors at the start and the
//! end, so a leak shows up as growth.
//!
//! ```text
//! SOAK_SECONDS=900 cargo bench --bench soak      # 15 minutes (the default)
//! ```
//!
//! The cameras are in-process RTSP servers encoding a moving test pattern
//! (640×360, 25 fps, 1 s GOP); each has a lane, so the detector runs at its
//! 2 fps and the tracker and lane rule see every result. The "start" sample
//! is taken after a warm-up (models loaded, every camera streaming, first
//! minute done), since allocators and ONNX Runtime arenas grow to their
//! working size first.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use alleywatch_devkit::{free_port, Mosquitto, RtspServer};
use edge_agent::project::{find_in_project, DEFAULT_MODEL};

const CAMERAS: usize = 4;
const WARM_UP: Duration = Duration::from_secs(60);

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmRSS:")).map(|l| l.to_string()))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}

fn metric(port: u16, name: &str) -> f64 {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else { return 0.0 };
    let _ = write!(s, "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    let mut body = String::new();
    let _ = s.read_to_string(&mut body);
    body.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn main() {
    let seconds: u64 = std::env::var("SOAK_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(900);
    // `cargo bench` passes `--bench`; nothing else to parse.
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Mosquitto::start().expect("mosquitto (run deploy/setup.sh)");
    let servers: Vec<RtspServer> = (0..CAMERAS)
        .map(|_| {
            RtspServer::start_launch(
                "( videotestsrc is-live=true pattern=ball ! video/x-raw,width=640,height=360,framerate=25/1 ! \
                 x264enc tune=zerolatency speed-preset=ultrafast key-int-max=25 bitrate=800 ! \
                 rtph264pay name=pay0 pt=96 config-interval=-1 )",
                0,
                "/live",
            )
            .expect("rtsp server")
        })
        .collect();
    let model = find_in_project(DEFAULT_MODEL).expect("models/nanodet.onnx");
    let http = free_port().expect("port");
    let mut config = format!(
        r#"agent_id = "soak"
site = {{ district = "d", street = "s", community = "c" }}
broker = {{ host = "127.0.0.1", port = {} }}
detector = {{ path = "{}", format = "nanodet", input_size = 416, threads = 1 }}
spool = {{ path = "{}/spool.sqlite" }}
http = {{ bind = "127.0.0.1:{http}" }}
"#,
        broker.port(),
        model.display(),
        dir.path().display()
    );
    for (i, s) in servers.iter().enumerate() {
        config.push_str(&format!(
            "[[cameras]]\nid = \"cam-{i}\"\nname = \"Soak {i}\"\nurl = \"rtsp://127.0.0.1:{}/live\"\nfps = 5\nfire = false\n\
             lanes = [{{ name = \"lane\", polygon = [[0, 0.3], [1, 0.3], [1, 1], [0, 1]], classes = [\"sports ball\", \"car\"], dwell_s = 10 }}]\n",
            s.port()
        ));
    }
    let path = dir.path().join("soak.toml");
    std::fs::write(&path, config).expect("write config");
    let mut agent = Command::new(env!("CARGO_BIN_EXE_edge-agent"))
        .args(["run", "--config"])
        .arg(&path)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("start edge-agent");
    let pid = agent.id();
    println!(
        "soak: {CAMERAS} cameras (640x360 H.264, 25 fps, analysed at 5 fps), {seconds} s after a {} s warm-up",
        WARM_UP.as_secs()
    );
    std::thread::sleep(WARM_UP);
    let up = metric(http, "alleywatch_camera_up");
    let (rss0, fd0, frames0, t0) =
        (rss_kib(pid), fds(pid), metric(http, "alleywatch_frames_analysed_total"), Instant::now());
    println!("start: RSS {:.1} MiB, {fd0} open fds, {up} of {CAMERAS} cameras up", rss0 as f64 / 1024.0);
    let mut peak = rss0;
    while t0.elapsed() < Duration::from_secs(seconds) {
        std::thread::sleep(Duration::from_secs(30).min(Duration::from_secs(seconds).saturating_sub(t0.elapsed())));
        let rss = rss_kib(pid);
        peak = peak.max(rss);
        println!("  {:>5.0} s: RSS {:.1} MiB, {} fds", t0.elapsed().as_secs_f64(), rss as f64 / 1024.0, fds(pid));
    }
    let (rss1, fd1) = (rss_kib(pid), fds(pid));
    let frames = metric(http, "alleywatch_frames_analysed_total") - frames0;
    let growth = (rss1 as f64 - rss0 as f64) / rss0.max(1) as f64 * 100.0;
    println!("end:   RSS {:.1} MiB, {fd1} open fds (peak RSS {:.1} MiB)", rss1 as f64 / 1024.0, peak as f64 / 1024.0);
    println!(
        "soak result: RSS growth {growth:+.2}% over {seconds} s, fds {fd0} -> {fd1}, {:.1} frames/s analysed across {CAMERAS} cameras, \
         {} reconnects",
        frames / t0.elapsed().as_secs_f64(),
        metric(http, "alleywatch_camera_reconnects_total")
    );
    let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status();
    let _ = agent.wait();
    drop(servers);
}
