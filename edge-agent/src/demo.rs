//! The self-contained demo, and the two local services it (and the
//! end-to-end tests) stand up: an in-process RTSP camera serving the demo
//! clip, and a mosquitto broker on a free loopback port.
//!
//! The demo runs the real agent ([`crate::agent::run`]) against them,
//! subscribes to everything the agent publishes and prints it readably.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::config::Config;

/// Where the setup script puts the demo clip, relative to the project root.
pub const DEMO_CLIP: &str = ".deps/media/demo_lane.mp4";
/// The default detector, relative to the project root.
pub const DEFAULT_MODEL: &str = "models/nanodet.onnx";

/// Finds `rel` in the working directory, above it, or above the binary:
/// the demo and tests run from a checkout.
pub fn find_in_project(rel: &str) -> Option<PathBuf> {
    let mut starts = Vec::new();
    if let Ok(cwd) = std::env::current_dir() {
        starts.push(cwd);
    }
    if let Ok(exe) = std::env::current_exe() {
        starts.push(exe);
    }
    starts.iter().flat_map(|s| s.ancestors()).map(|d| d.join(rel)).find(|p| p.exists())
}

/// A free TCP port on loopback (bound, then released).
pub fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A private mosquitto on loopback, stopped on drop.
pub struct Mosquitto {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Mosquitto {
    /// Starts mosquitto on a free port and waits until it accepts
    /// connections.
    pub fn start() -> std::io::Result<Mosquitto> {
        Mosquitto::start_on(free_port()?)
    }

    /// Starts mosquitto on `port` (to restart a broker where clients expect it).
    pub fn start_on(port: u16) -> std::io::Result<Mosquitto> {
        Mosquitto::start_with(port, &format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"))
    }

    /// Starts mosquitto on `port` with the given configuration lines (they
    /// must open a listener on `port`): TLS, passwords, persistence.
    pub fn start_with(port: u16, conf_lines: &str) -> std::io::Result<Mosquitto> {
        let bin = ["mosquitto", "/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"]
            .into_iter()
            .find(|b| Command::new(b).arg("-h").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok())
            .ok_or_else(|| {
                std::io::Error::new(std::io::ErrorKind::NotFound, "mosquitto not installed (run deploy/setup.sh)")
            })?;
        let dir = tempfile::tempdir()?;
        let conf = dir.path().join("mosquitto.conf");
        std::fs::write(&conf, format!("{conf_lines}\nlog_dest stderr\n"))?;
        let log = std::fs::File::create(dir.path().join("mosquitto.log"))?;
        let child = Command::new(bin).arg("-c").arg(&conf).stdout(Stdio::null()).stderr(log).spawn()?;
        let mut m = Mosquitto { child, port, _dir: dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        // Wait for the listener: the event we need is "port accepts".
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = m.child.try_wait()? {
                let log = std::fs::read_to_string(m._dir.path().join("mosquitto.log")).unwrap_or_default();
                return Err(std::io::Error::other(format!("mosquitto exited at start ({status}): {}", log.trim())));
            }
            if Instant::now() > deadline {
                return Err(std::io::Error::other("mosquitto did not start listening within 10 s"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(m)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops the broker now (the tests' broker outage). SIGTERM, so a
    /// broker with persistence saves its sessions.
    pub fn stop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// What the broker logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("mosquitto.log")).unwrap_or_default()
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The demo's configuration: one camera looking at the parked cars, one
/// lane over them, the default detector, a local broker.
pub fn demo_config(
    rtsp_url: &str,
    broker_port: u16,
    model: &Path,
    state: &Path,
) -> Result<Config, crate::config::ConfigError> {
    let text = format!(
        r#"
agent_id = "demo-agent"
site = {{ district = "demo-district", street = "demo-street", community = "demo-community" }}
broker = {{ host = "127.0.0.1", port = {broker_port} }}
detector = {{ path = "{model}", format = "nanodet", input_size = 416, score_threshold = 0.35 }}
alerts = {{ update_interval_s = 5 }}
source = {{ backoff_initial_s = 0.5, backoff_max_s = 5 }}
spool = {{ path = "{spool}" }}
http = {{ bind = "127.0.0.1:{http_port}" }}

[[cameras]]
id = "demo-cam"
name = "Demo street, parked cars"
url = "{rtsp_url}"
fps = 5
lanes = [{{ name = "kerb-lane", polygon = {polygon}, classes = ["car", "truck", "bus"], dwell_s = 4, clear_s = 2 }}]
"#,
        model = model.display(),
        polygon = DEMO_LANE,
        spool = state.join("spool.sqlite").display(),
        http_port = free_port().unwrap_or(9464),
    );
    Config::parse(&text, Path::new("<demo>"))
}

/// The demo lane: covers the cars parked behind the fence in the clip's
/// "street" still (see `deploy/make-demo-clip.sh`).
pub const DEMO_LANE: &str = "[[0.0, 0.35], [1.0, 0.35], [1.0, 0.85], [0.0, 0.85]]";

/// One line per MQTT message, as the demo prints it.
pub fn describe(topic: &str, payload: &[u8], t: Duration) -> String {
    let at = format!("[{:6.1}s]", t.as_secs_f64());
    if topic.ends_with("/snapshot") {
        return format!("{at} snapshot  {:.1} KB JPEG  {}", payload.len() as f64 / 1024.0, topic);
    }
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(payload) else {
        return format!("{at} {topic}: {} bytes", payload.len());
    };
    let s = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("?").to_string();
    if topic.contains("/events/") {
        let objects: Vec<String> = v["evidence"]["objects"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|o| {
                        format!("{} {:.2}", o["label"].as_str().unwrap_or("?"), o["score"].as_f64().unwrap_or(0.0))
                    })
                    .collect()
            })
            .unwrap_or_default();
        format!(
            "{at} {:<12} {:<6} camera={} zone={} objects=[{}] occupancy={:.0}% peak={:.2} duration={:.1}s seq={} id={}",
            s("kind"),
            s("type").to_uppercase(),
            v["camera"]["id"].as_str().unwrap_or("?"),
            s("zone"),
            objects.join(", "),
            v["evidence"]["occupancy"].as_f64().unwrap_or(0.0) * 100.0,
            v["score"]["peak"].as_f64().unwrap_or(0.0),
            v["duration_s"].as_f64().unwrap_or(0.0),
            v["seq"],
            s("id"),
        )
    } else if topic.contains("/cameras/") {
        let err = v.get("last_error").and_then(|e| e.as_str()).map(|e| format!(" ({e})")).unwrap_or_default();
        format!("{at} camera {} is {}{err}", s("camera"), s("state"))
    } else {
        format!("{at} agent {} is {}", s("agent"), s("state"))
    }
}
