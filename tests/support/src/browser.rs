//! Headless Chromium for the tests that drive a real page: the browser on
//! a free DevTools port, and a Chrome DevTools Protocol session on one of
//! its pages (JSON over a WebSocket; no driver needed).

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::{http, wait_until};

/// The first of `candidates` on `PATH`.
pub fn which(candidates: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    candidates.iter().flat_map(|c| std::env::split_paths(&path).map(move |d| d.join(c))).find(|p| p.is_file())
}

/// A Chrome DevTools Protocol session on one page (the protocol is JSON
/// over a WebSocket; no driver needed).
pub struct Cdp {
    ws: tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<TcpStream>>,
    next: u64,
}

impl Cdp {
    pub fn call(&mut self, method: &str, params: Value) -> Value {
        self.next += 1;
        let id = self.next;
        let msg = json!({ "id": id, "method": method, "params": params }).to_string();
        self.ws.send(tungstenite::Message::text(msg)).expect("CDP send");
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let msg = match self.ws.read() {
                Ok(m) => m,
                Err(tungstenite::Error::Io(e))
                    if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) =>
                {
                    continue
                }
                Err(e) => panic!("CDP read: {e}"),
            };
            let Ok(text) = msg.to_text() else { continue };
            let v: Value = serde_json::from_str(text).unwrap_or_default();
            if v["id"] == id {
                assert!(v["error"].is_null(), "CDP {method}: {}", v["error"]);
                return v["result"].clone();
            }
        }
        panic!("CDP {method}: no answer in 30 s");
    }

    /// Evaluates `js` in the page (awaiting a promise) and returns its value.
    pub fn eval(&mut self, js: &str) -> Value {
        let r = self.call("Runtime.evaluate", json!({ "expression": js, "returnByValue": true, "awaitPromise": true }));
        assert!(r["exceptionDetails"].is_null(), "page script failed: {js}: {}", r["exceptionDetails"]);
        r["result"]["value"].clone()
    }

    /// A real mouse click (pressed and released) at page coordinates.
    pub fn click(&mut self, x: f64, y: f64) {
        for kind in ["mousePressed", "mouseReleased"] {
            self.call(
                "Input.dispatchMouseEvent",
                json!({ "type": kind, "x": x, "y": y, "button": "left", "clickCount": 1 }),
            );
        }
    }

    /// Clicks the centre of the element `selector`.
    pub fn click_on(&mut self, selector: &str) {
        let r = self.eval(&format!(
            "(() => {{ const r = document.querySelector({selector:?}).getBoundingClientRect(); \
             return [r.left + r.width / 2, r.top + r.height / 2]; }})()"
        ));
        self.click(r[0].as_f64().unwrap(), r[1].as_f64().unwrap());
    }

    pub fn wait_for(&mut self, what: &str, js: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.eval(js) != json!(true) {
            assert!(Instant::now() < deadline, "timed out waiting in the page for {what} ({js})");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// Headless Chromium with remote debugging on a free port; killed on drop.
pub struct Chromium {
    child: Child,
    pub port: u16,
    _profile: tempfile::TempDir,
}

impl Chromium {
    pub fn start() -> Chromium {
        let bin = std::env::var_os("CHROMIUM")
            .map(PathBuf::from)
            .or_else(|| which(&["chromium", "chromium-browser", "google-chrome"]))
            .expect("chromium not found: tests/run.sh installs it (Debian package `chromium`)");
        let profile = tempfile::tempdir().unwrap();
        let mut child = Command::new(bin)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
                "--window-size=1280,1100",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start chromium");
        // "DevTools listening on ws://127.0.0.1:PORT/devtools/browser/…"
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("ws://127.0.0.1:").nth(1) {
                    let _ = tx.send(rest.split('/').next().unwrap_or("").parse::<u16>().ok());
                }
            }
        });
        let port = rx.recv_timeout(Duration::from_secs(60)).ok().flatten().expect("chromium's DevTools port");
        Chromium { child, port, _profile: profile }
    }

    pub fn page(&self) -> Cdp {
        let url = wait_until("a page target", Duration::from_secs(20), || {
            let (_, body) = http::get(self.port, "/json/list")?;
            let list: Value = serde_json::from_slice(&body).ok()?;
            list.as_array()?.iter().find(|t| t["type"] == "page")?["webSocketDebuggerUrl"].as_str().map(String::from)
        });
        let (ws, _) = tungstenite::connect(url.as_str()).expect("CDP websocket");
        if let tungstenite::stream::MaybeTlsStream::Plain(s) = ws.get_ref() {
            s.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
        }
        Cdp { ws, next: 0 }
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
