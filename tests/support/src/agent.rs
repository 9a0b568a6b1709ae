//! The `edge-agent` binary as the tests run it: the process with its
//! captured log, its HTTP port and the metrics and API behind it, plus the
//! config files the fault tests write for it.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::files::detector;
use crate::http;

/// The agent's log filter unless a test asks for another.
pub const LOG_FILTER: &str = "info,edge_agent=debug,ort=warn";

/// The `edge-agent` binary under test: `EDGE_AGENT_BIN` (a copy of the
/// binary, for worktrees that share one target folder, where each build
/// replaces the others' binary), else the one cargo built for these tests.
pub fn agent_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("EDGE_AGENT_BIN") {
        return bin.into();
    }
    // Cargo sets this when it builds integration tests (for `env!`, which
    // only the test crate itself could read) and, in recent versions, when it
    // runs them.
    if let Some(bin) = std::env::var_os("CARGO_BIN_EXE_edge-agent") {
        return bin.into();
    }
    // Else beside the test binary: target/<profile>/deps/<test>-<hash> →
    // target/<profile>/edge-agent.
    let exe = std::env::current_exe().expect("the test binary's path");
    let bin = exe.parent().and_then(Path::parent).map(|d| d.join("edge-agent")).expect("target/<profile>/");
    assert!(bin.is_file(), "edge-agent binary not at {} (run the tests with cargo test)", bin.display());
    bin
}

/// How to start the agent beyond its config: [`Agent::spawn`] takes the
/// defaults and extra arguments.
#[derive(Clone, Copy)]
pub struct Launch<'a> {
    /// Arguments after `run --config FILE`.
    pub args: &'a [&'a str],
    /// More environment variables for the agent.
    pub env: &'a [(&'a str, &'a OsStr)],
    /// `RUST_LOG` for the agent.
    pub log_filter: &'a str,
}

impl Default for Launch<'_> {
    fn default() -> Self {
        Launch { args: &[], env: &[], log_filter: LOG_FILTER }
    }
}

/// A running agent: its process, HTTP port and captured log (stderr).
/// Killed on drop; [`Agent::stop`] stops it gracefully.
pub struct Agent {
    pub child: Child,
    pub http: u16,
    log: Arc<Mutex<String>>,
    /// Closed when the log reader has seen the end of stderr.
    log_done: mpsc::Receiver<()>,
}

impl Agent {
    /// `edge-agent run --config CONFIG EXTRA_ARGS`, serving HTTP on `http`.
    pub fn spawn(config: &Path, http: u16, extra_args: &[&str]) -> Agent {
        Agent::launch(config, http, Launch { args: extra_args, ..Launch::default() })
    }

    /// Starts the agent as `how` says. `E2E_AGENT_LOG=1` echoes its log
    /// live, for debugging.
    pub fn launch(config: &Path, http: u16, how: Launch) -> Agent {
        let mut child = Command::new(agent_bin())
            .args(["run", "--config"])
            .arg(config)
            .args(how.args)
            .env("RUST_LOG", how.log_filter)
            .envs(how.env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start edge-agent");
        let log = Arc::new(Mutex::new(String::new()));
        let (stderr, sink) = (child.stderr.take().unwrap(), log.clone());
        let (done, log_done) = mpsc::channel::<()>();
        let echo = std::env::var_os("E2E_AGENT_LOG").is_some();
        std::thread::spawn(move || {
            let _done = done;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if echo {
                    eprintln!("agent: {line}");
                }
                let mut l = sink.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        Agent { child, http, log, log_done }
    }

    /// The Prometheus text at `/metrics` ("" when unreachable).
    pub fn metrics(&self) -> String {
        http::get(self.http, "/metrics").map(|(_, b)| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()
    }

    /// One series of [`Agent::metrics`] (see [`http::metric`]).
    pub fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        http::metric(&self.metrics(), name, labels)
    }

    /// The JSON at `path` (`Null` when unreachable or not JSON).
    pub fn api(&self, path: &str) -> Value {
        http::get(self.http, path).and_then(|(_, b)| serde_json::from_slice(&b).ok()).unwrap_or(Value::Null)
    }

    /// What the agent logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Sends a signal, as `kill` names it (`-HUP`, `-TERM`, ...).
    pub fn signal(&self, sig: &str) {
        Command::new("kill").args([sig, &self.child.id().to_string()]).status().unwrap();
    }

    /// Kills the agent hard; returns the whole log.
    pub fn kill9(mut self) -> String {
        self.signal("-KILL");
        let _ = self.child.wait();
        self.whole_log()
    }

    /// Graceful stop; returns the whole log.
    pub fn stop(mut self) -> String {
        self.signal("-TERM");
        let _ = self.child.wait();
        self.whole_log()
    }

    /// SIGTERM, then SIGKILL if the agent has not exited within `grace`.
    pub fn terminate(&mut self, grace: Duration) {
        if self.exited() {
            return;
        }
        self.signal("-TERM");
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if self.exited() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// The log once the reader has seen stderr close (the agent exited),
    /// or after 5 s.
    fn whole_log(&self) -> String {
        let _ = self.log_done.recv_timeout(Duration::from_secs(5));
        self.log()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The site of the agents [`write_config`] makes: the prefix of every
/// topic they publish on.
pub const BASE: &str = "alleywatch/d1/s1/c1/test-agent";

/// An agent config: `broker` is the inline table's body, `cameras` the
/// `[[cameras]]` blocks, `extra` more top-level keys.
pub fn write_config(dir: &Path, http: u16, broker: &str, extra: &str, cameras: &str) -> PathBuf {
    let text = format!(
        r#"agent_id = "test-agent"
site = {{ district = "d1", street = "s1", community = "c1" }}
broker = {{ host = "127.0.0.1", keep_alive_s = 5, {broker} }}
detector = {{ path = "{model}", format = "nanodet", input_size = 416, threads = 1 }}
source = {{ backoff_initial_s = 0.2, backoff_max_s = 1, stall_timeout_s = 3 }}
spool = {{ path = "{spool}" }}
http = {{ bind = "127.0.0.1:{http}" }}
{extra}
{cameras}"#,
        model = detector().display(),
        spool = dir.join("state/spool.sqlite").display(),
    );
    let path = dir.join("agent.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// A `[[cameras]]` block at 5 fps, fire off, with `lanes` (inline tables).
pub fn lane_camera(id: &str, url: &str, lanes: &str) -> String {
    format!("[[cameras]]\nid = \"{id}\"\nname = \"Camera {id}\"\nurl = \"{url}\"\nfps = 5\nfire = false\nlanes = [{lanes}]\n")
}
