//! The `alleywatch-centre` binary as the tests run it: the process with its
//! log in a file, its HTTP port, and the config the tests write for it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::http;
use crate::wait::wait_until;

/// The centre binary: `CENTRE_BIN`, else the one cargo built beside the
/// test binary (`target/<profile>/alleywatch-centre`).
pub fn centre_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("CENTRE_BIN").or_else(|| std::env::var_os("CARGO_BIN_EXE_alleywatch-centre")) {
        return bin.into();
    }
    let exe = std::env::current_exe().expect("the test binary's path");
    let bin = exe.parent().and_then(Path::parent).map(|d| d.join("alleywatch-centre")).expect("target/<profile>/");
    assert!(bin.is_file(), "alleywatch-centre binary not at {} (run the tests with cargo test)", bin.display());
    bin
}

/// A district centre's config in `dir` for district `district`, the
/// broker on loopback `broker_port`, HTTP on `http`; SQLite in `dir`.
pub fn write_centre_config(dir: &Path, broker_port: u16, http: u16, district: &str) -> PathBuf {
    write_centre_config_with(dir, broker_port, http, district, "")
}

/// [`write_centre_config`] with more tables (`extra`) at the end.
pub fn write_centre_config_with(dir: &Path, broker_port: u16, http: u16, district: &str, extra: &str) -> PathBuf {
    let text = format!(
        r#"[centre]
name = "test-centre"
level = "district"
site = "{district}"

[broker]
host = "127.0.0.1"
port = {broker_port}
keep_alive_s = 5

[database]
url = "sqlite:centre.sqlite"

[http]
bind = "127.0.0.1:{http}"

{extra}
"#
    );
    let path = dir.join("centre.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// A running centre, killed on drop.
pub struct Centre {
    pub child: Child,
    pub http: u16,
    log: PathBuf,
}

impl Centre {
    /// `alleywatch-centre run --config CONFIG`, logging to `CONFIG.log`,
    /// and waits until `/readyz` says it is subscribed.
    pub fn start(config: &Path, http: u16) -> Centre {
        let log = config.with_extension("log");
        let file = std::fs::OpenOptions::new().create(true).append(true).open(&log).unwrap();
        let child = Command::new(centre_bin())
            .args(["run", "--config"])
            .arg(config)
            .env("RUST_LOG", "info,alleywatch_centre=debug")
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("start alleywatch-centre");
        let mut centre = Centre { child, http, log };
        wait_until("the centre to be ready", Duration::from_secs(20), || {
            assert!(!centre.exited(), "the centre exited:\n{}", centre.log());
            http::get(http, "/readyz").is_some_and(|(code, _)| code == 200)
        });
        centre
    }

    pub fn metrics(&self) -> String {
        http::get(self.http, "/metrics").map(|(_, b)| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()
    }

    pub fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        http::metric(&self.metrics(), name, labels)
    }

    /// Everything the centre logged (this run and earlier ones on the same config).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// SIGTERM and wait for the exit.
    pub fn stop(mut self) {
        Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().unwrap();
        wait_until("the centre to exit", Duration::from_secs(15), || self.exited());
    }
}

impl Drop for Centre {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `alleywatch-centre user add`, the password on standard input.
pub fn add_user(config: &Path, name: &str, role: &str, scope: &str, password: &str) -> std::process::Output {
    use std::io::Write;
    let mut child = Command::new(centre_bin())
        .args(["user", "add", "--config"])
        .arg(config)
        .args([name, "--role", role, "--scope", scope])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run alleywatch-centre user add");
    child.stdin.take().unwrap().write_all(format!("{password}\n").as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

/// A logged-in console user, speaking the console's JSON API as the page
/// does: the session cookie on every request, the CSRF token on changes.
pub struct ConsoleUser {
    pub port: u16,
    pub cookie: String,
    pub csrf: String,
}

impl ConsoleUser {
    /// Logs in; the status and body of a refusal otherwise.
    pub fn login(port: u16, name: &str, password: &str) -> Result<ConsoleUser, (u16, String)> {
        let body = serde_json::json!({"name": name, "password": password}).to_string();
        let (status, head, body) =
            http::exchange(port, "POST", "/api/login", &[("Content-Type", "application/json")], &body)
                .ok_or((0, "no answer".to_string()))?;
        let text = String::from_utf8_lossy(&body).into_owned();
        if status != 200 {
            return Err((status, text));
        }
        let cookie = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                (k.eq_ignore_ascii_case("set-cookie")).then(|| v.trim().split(';').next().unwrap_or("").to_string())
            })
            .ok_or((status, format!("no Set-Cookie in {head}")))?;
        let me: serde_json::Value = serde_json::from_str(&text).map_err(|e| (status, e.to_string()))?;
        Ok(ConsoleUser { port, cookie, csrf: me["csrf"].as_str().unwrap_or_default().to_string() })
    }

    /// GET with the session: (status, JSON body or Null).
    pub fn get(&self, path: &str) -> (u16, serde_json::Value) {
        self.raw("GET", path, &[], "")
    }

    /// GET with the session: (status, raw body).
    pub fn get_bytes(&self, path: &str) -> (u16, Vec<u8>) {
        http::request(self.port, "GET", path, &[("Cookie", &self.cookie)], "").unwrap_or((0, Vec::new()))
    }

    /// POST JSON with the session and its CSRF token.
    pub fn post(&self, path: &str, body: &serde_json::Value) -> (u16, serde_json::Value) {
        let csrf = self.csrf.clone();
        self.raw("POST", path, &[("X-CSRF-Token", &csrf), ("Content-Type", "application/json")], &body.to_string())
    }

    /// POST with the session cookie but without the CSRF token, as a
    /// cross-site form would.
    pub fn post_without_csrf(&self, path: &str, body: &serde_json::Value) -> (u16, serde_json::Value) {
        self.raw("POST", path, &[("Content-Type", "application/json")], &body.to_string())
    }

    fn raw(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> (u16, serde_json::Value) {
        let mut all = vec![("Cookie", self.cookie.as_str())];
        all.extend_from_slice(headers);
        let (status, body) = http::request(self.port, method, path, &all, body).unwrap_or((0, Vec::new()));
        (status, serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null))
    }

    /// Opens the live stream (`/api/live`) as this user.
    pub fn live(&self) -> LiveStream {
        LiveStream::open(self.port, &self.cookie)
    }
}

/// A reader of the console's server-sent events: a thread collects
/// `(event, data)` pairs as they arrive.
pub struct LiveStream {
    pub status: u16,
    events: std::sync::Arc<std::sync::Mutex<Vec<(String, String)>>>,
    stream: std::net::TcpStream,
}

impl LiveStream {
    fn open(port: u16, cookie: &str) -> LiveStream {
        use std::io::{BufRead, BufReader, Write};
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect to the console");
        write!(
            stream,
            "GET /api/live HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nCookie: {cookie}\r\nAccept: text/event-stream\r\n\r\n"
        )
        .unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut status_line = String::new();
        reader.read_line(&mut status_line).unwrap();
        let status = status_line.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        let events = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = events.clone();
        std::thread::spawn(move || {
            let mut event = String::new();
            // Chunk-size lines and headers are neither `event:` nor `data:`.
            for line in reader.lines().map_while(Result::ok) {
                if let Some(e) = line.strip_prefix("event:") {
                    event = e.trim().to_string();
                } else if let Some(d) = line.strip_prefix("data:") {
                    sink.lock().unwrap().push((std::mem::take(&mut event), d.trim().to_string()));
                }
            }
        });
        LiveStream { status, events, stream }
    }

    /// Every `(event, data)` so far.
    pub fn events(&self) -> Vec<(String, String)> {
        self.events.lock().unwrap().clone()
    }
}

impl Drop for LiveStream {
    fn drop(&mut self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }
}
