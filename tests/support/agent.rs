//! The harness shared by the integration tests that run the real agent
//! binary: the agent process with its log, an MQTT subscriber that rides out
//! broker restarts, config writing, and waits on observable events.
//! Included with `#[path]` next to `support/http.rs` (as `mod http`).
#![allow(dead_code)] // each test file uses its own part

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use alleywatch_devkit::DEMO_CLIP;
use edge_agent::project::{find_in_project, DEFAULT_MODEL};
use rumqttc::{Client, Event, MqttOptions, Packet, QoS};
use serde_json::Value;

use super::http;

pub static SERIAL: Mutex<()> = Mutex::new(());

pub fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

pub fn clip() -> PathBuf {
    find_in_project(DEMO_CLIP).expect("demo clip missing: run deploy/setup.sh")
}

pub fn model() -> PathBuf {
    find_in_project(DEFAULT_MODEL).expect("models/nanodet.onnx")
}

/// Polls `cond` every 50 ms until it holds; panics with `what` after
/// `timeout`. The conditions are observable events (a metric, a message).
pub fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A running agent: its config, HTTP port and captured log.
pub struct Agent {
    pub child: Child,
    pub http: u16,
    pub log: Arc<Mutex<String>>,
}

impl Agent {
    pub fn spawn(config: &Path, http: u16, extra_args: &[&str]) -> Agent {
        // EDGE_AGENT_BIN: a copy of the binary, for worktrees that share one
        // target folder (each build there replaces the others' binary).
        let bin = std::env::var_os("EDGE_AGENT_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_edge-agent").into());
        let mut child = Command::new(bin)
            .args(["run", "--config"])
            .arg(config)
            .args(extra_args)
            .env("RUST_LOG", "info,edge_agent=debug,ort=warn")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start edge-agent");
        let log = Arc::new(Mutex::new(String::new()));
        let (stderr, sink) = (child.stderr.take().unwrap(), log.clone());
        let echo = std::env::var_os("E2E_AGENT_LOG").is_some();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if echo {
                    eprintln!("agent: {line}");
                }
                let mut l = sink.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        Agent { child, http, log }
    }

    pub fn metrics(&self) -> String {
        http::get(self.http, "/metrics").map(|(_, b)| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()
    }

    pub fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        http::metric(&self.metrics(), name, labels)
    }

    pub fn api(&self, path: &str) -> Value {
        http::get(self.http, path).and_then(|(_, b)| serde_json::from_slice(&b).ok()).unwrap_or(Value::Null)
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    pub fn signal(&self, sig: &str) {
        Command::new("kill").args([sig, &self.child.id().to_string()]).status().unwrap();
    }

    pub fn kill9(mut self) -> String {
        self.signal("-KILL");
        let _ = self.child.wait();
        self.log()
    }

    /// Graceful stop; returns the whole log.
    pub fn stop(mut self) -> String {
        self.signal("-TERM");
        let _ = self.child.wait();
        // The reader thread sees EOF right after exit.
        std::thread::sleep(Duration::from_millis(100));
        self.log()
    }

    pub fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Clone, Debug)]
pub struct Msg {
    pub topic: String,
    pub payload: Vec<u8>,
}

impl Msg {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.payload).unwrap_or(Value::Null)
    }
}

/// A subscriber to `alleywatch/#` that rides out broker restarts.
pub struct Sub {
    pub client: Client,
    pub seen: Arc<Mutex<Vec<Msg>>>,
    /// The connection's story (connects, session flags, errors) for a
    /// failure message.
    pub trail: Arc<Mutex<Vec<String>>>,
}

impl Sub {
    /// `persistent`: a broker-side session (clean_session = false), so the
    /// broker queues what is published while this subscriber is away.
    pub fn start(opts: MqttOptions, persistent: bool) -> Sub {
        let mut opts = opts;
        // Above the agent's incoming limit: hostile_commands leaves a
        // bigger retained command on the broker.
        opts.set_max_packet_size(32 << 20, 1 << 20);
        opts.set_clean_session(!persistent);
        opts.set_keep_alive(Duration::from_secs(5));
        let (client, mut conn) = Client::new(opts, 64);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let trail = Arc::new(Mutex::new(Vec::new()));
        let (sink, c2, story) = (seen.clone(), client.clone(), trail.clone());
        let t0 = Instant::now();
        let note = move |what: String| story.lock().unwrap().push(format!("{:.2}s {what}", t0.elapsed().as_secs_f64()));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut last_error: Option<String> = None;
            for ev in conn.iter() {
                match ev {
                    Ok(Event::Incoming(Packet::ConnAck(a))) => {
                        last_error = None;
                        note(format!("connack session_present={} code={:?}", a.session_present, a.code));
                        let _ = c2.try_subscribe("alleywatch/#", QoS::AtLeastOnce);
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        note("suback".into());
                        let _ = ready_tx.send(());
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        sink.lock().unwrap().push(Msg { topic: p.topic.clone(), payload: p.payload.to_vec() })
                    }
                    Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => return,
                    Ok(_) => {}
                    // The broker is away: rumqttc reconnects on the next poll.
                    Err(e) => {
                        if std::env::var_os("E2E_AGENT_LOG").is_some() {
                            eprintln!("subscriber: {e}");
                        }
                        let e = e.to_string();
                        if last_error.as_deref() != Some(e.as_str()) {
                            note(format!("error: {e}"));
                            last_error = Some(e);
                        }
                        std::thread::sleep(Duration::from_millis(200))
                    }
                }
            }
        });
        ready_rx.recv_timeout(Duration::from_secs(15)).expect("subscription acknowledged");
        Sub { client, seen, trail }
    }

    /// The connection's story, one line per connect, ack or error.
    pub fn trail(&self) -> String {
        self.trail.lock().unwrap().join("\n")
    }

    pub fn plain(port: u16, id: &str) -> Sub {
        Sub::start(MqttOptions::new(id, "127.0.0.1", port), false)
    }

    pub fn all(&self) -> Vec<Msg> {
        self.seen.lock().unwrap().clone()
    }

    pub fn wait_for(&self, what: &str, timeout: Duration, pred: impl Fn(&Msg) -> bool) -> Msg {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(m) = self.seen.lock().unwrap().iter().find(|m| pred(m)) {
                return m.clone();
            }
            if Instant::now() > deadline {
                let seen: Vec<String> = self
                    .all()
                    .iter()
                    .map(|m| format!("{} {}", m.topic, String::from_utf8_lossy(&m.payload[..m.payload.len().min(160)])))
                    .collect();
                panic!("timed out after {timeout:?} waiting for {what}; saw:\n{}", seen.join("\n"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn publish(&self, topic: &str, body: Value) {
        self.client.publish(topic, QoS::AtLeastOnce, false, body.to_string()).unwrap();
    }
}

pub fn is_event(m: &Msg, kind: &str, ty: &str) -> bool {
    m.topic.ends_with(&format!("/events/{kind}")) && m.json()["type"] == ty
}

pub fn camera_is(m: &Msg, camera: &str, state: &str) -> bool {
    m.topic.ends_with(&format!("/cameras/{camera}/status")) && m.json()["state"] == state
}

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
        model = model().display(),
        spool = dir.join("state/spool.sqlite").display(),
    );
    let path = dir.join("agent.toml");
    std::fs::write(&path, text).unwrap();
    path
}

pub fn lane_camera(id: &str, url: &str, lanes: &str) -> String {
    format!("[[cameras]]\nid = \"{id}\"\nname = \"Camera {id}\"\nurl = \"{url}\"\nfps = 5\nfire = false\nlanes = [{lanes}]\n")
}
