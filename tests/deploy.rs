//! Deployment checks with the real tools: Prometheus (Debian's package)
//! scraping a running agent through its token, headless Chromium drawing a
//! lane on the technician's page, the token gate itself, and every deploy
//! artefact validated by `tests/deploy/check.sh` (systemd, promtool,
//! Kubernetes schemas, the Grafana dashboard, install.sh run twice).
//!
//! Each test starts its own agent on free loopback ports with a real RTSP
//! camera and a real broker; every wait is bounded.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use alleywatch_devkit::{free_port, Mosquitto, RtspServer, DEMO_LANE};
use alleywatch_testkit::browser::{which, Chromium};
use alleywatch_testkit::{agent_bin, clip, detector, http, project_file, serial, wait_until, Agent, Launch};
use serde_json::{json, Value};

const TOKEN: &str = "0123456789abcdef-deploy-test";

fn get_json(port: u16, path: &str) -> Option<Value> {
    let auth = format!("Bearer {TOKEN}");
    let (status, body) = http::request(port, "GET", path, &[("Authorization", &auth)], "")?;
    (status == 200).then(|| serde_json::from_slice(&body).ok()).flatten()
}

/// A deployed box: the agent with one RTSP camera that has one lane, its
/// HTTP guarded by [`TOKEN`] (from a token file), its broker and its
/// folder. Stopped gracefully on drop (SIGTERM, at most 10 s).
struct Deployed {
    agent: Agent,
    http: u16,
    dir: tempfile::TempDir,
    _broker: Mosquitto,
    _server: RtspServer,
}

impl Deployed {
    fn start() -> Deployed {
        Deployed::start_with(&[])
    }

    /// With extra environment variables for the agent.
    fn start_with(env: &[(&str, &std::ffi::OsStr)]) -> Deployed {
        let dir = tempfile::tempdir().unwrap();
        let broker = Mosquitto::start().expect("mosquitto");
        let server = RtspServer::start(&clip(), 0, "/cam").expect("rtsp server");
        let model = detector();
        let http = free_port().unwrap();
        std::fs::write(dir.path().join("http.token"), format!("{TOKEN}\n")).unwrap();
        let config = format!(
            r#"agent_id = "deploy-agent"
site = {{ district = "d1", street = "s1", community = "c1" }}
broker = {{ host = "127.0.0.1", port = {broker} }}
detector = {{ path = "{model}", format = "nanodet", input_size = 416, threads = 1 }}
spool = {{ path = "state/spool.sqlite" }}
http = {{ bind = "127.0.0.1:{http}", token_file = "http.token" }}

[[cameras]]
id = "cam-1"
name = "Back lane"
url = "rtsp://127.0.0.1:{rtsp}/cam"
fps = 5
fire = false
lanes = [{{ name = "kerb", polygon = {DEMO_LANE}, classes = ["car"], dwell_s = 30 }}]
"#,
            broker = broker.port(),
            model = model.display(),
            rtsp = server.port(),
        );
        let path = dir.path().join("agent.toml");
        std::fs::write(&path, config).unwrap();
        let agent = Agent::launch(&path, http, Launch { env, log_filter: "info", ..Launch::default() });
        let deployed = Deployed { agent, http, dir, _broker: broker, _server: server };
        wait_until("camera streaming (via /api/cameras)", Duration::from_secs(60), || {
            let cams = get_json(http, "/api/cameras")?;
            (cams[0]["state"] == "streaming").then_some(())
        });
        deployed
    }

    fn metric(&self, name: &str) -> f64 {
        let auth = format!("Bearer {TOKEN}");
        let (_, body) = http::request(self.http, "GET", "/metrics", &[("Authorization", &auth)], "").expect("metrics");
        http::metric(&String::from_utf8_lossy(&body), name, &[])
    }
}

impl Drop for Deployed {
    fn drop(&mut self) {
        self.agent.terminate(Duration::from_secs(10));
    }
}

#[test]
fn the_token_guards_everything_but_health() {
    let _serial = serial();
    let agent = Deployed::start();
    for path in ["/", "/metrics", "/api/cameras", "/api/config", "/api/events", "/api/cameras/cam-1/snapshot.jpg"] {
        let (status, _) = http::get(agent.http, path).unwrap();
        assert_eq!(status, 401, "{path} without a token");
        let (status, _) =
            http::request(agent.http, "GET", path, &[("Authorization", "Bearer wrong-token-wrong-token")], "").unwrap();
        assert_eq!(status, 401, "{path} with a wrong token");
        let auth = format!("Bearer {TOKEN}");
        let (status, _) = http::request(agent.http, "GET", path, &[("Authorization", &auth)], "").unwrap();
        assert_eq!(status, 200, "{path} with the token");
    }
    for path in ["/healthz", "/readyz"] {
        assert_eq!(http::get(agent.http, path).unwrap().0, 200, "{path} is open to probes");
    }
    let (status, _) =
        http::request(agent.http, "POST", "/api/cameras/cam-1/lanes", &[("Content-Type", "application/json")], "{}")
            .unwrap();
    assert_eq!(status, 401, "saving a lane needs the token too");

    // A bad lane is refused by the config's own validation, naming the key.
    let auth = format!("Bearer {TOKEN}");
    let bad = json!({ "name": "tiny", "polygon": [[0.1, 0.1], [0.2, 0.2]], "classes": ["car"], "dwell_s": 5 });
    let (status, body) = http::request(
        agent.http,
        "POST",
        "/api/cameras/cam-1/lanes",
        &[("Authorization", &auth), ("Content-Type", "application/json")],
        &bad.to_string(),
    )
    .unwrap();
    let answer: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!((status, &answer["ok"]), (400, &json!(false)), "{answer}");
    assert!(answer["error"].as_str().unwrap().contains("cameras[0].lanes[1].polygon"), "{answer}");
    let config = get_json(agent.http, "/api/config").unwrap();
    assert_eq!(config["cameras"][0]["lanes"].as_array().unwrap().len(), 1, "the bad lane is not in force");
    // What decides the box's load is on the page too.
    assert_eq!(config["cameras"][0]["decode"], json!("all"), "{config}");
    assert_eq!(config["detector"]["motion_gate"]["enabled"], json!(true), "{config}");
    assert_eq!(config["detector"]["precision"], json!("fp32"), "{config}");
    assert_eq!(config["detector"]["batch"], json!(1), "{config}");
    let text = config.to_string();
    assert!(!text.contains("rtsp://") && !text.contains(TOKEN), "no URLs or secrets in /api/config");
}

/// systemd's side of `Type=notify` and `WatchdogSec=`, played by the test:
/// a datagram socket in `NOTIFY_SOCKET` and a 2 s `WATCHDOG_USEC`.
#[test]
fn systemd_hears_ready_then_watchdog_pings_then_stopping() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let agent = Deployed::start_with(&[("NOTIFY_SOCKET", path.as_os_str()), ("WATCHDOG_USEC", "2000000".as_ref())]);
    let mut heard: Vec<String> = Vec::new();
    let listen_for = |what: &str, heard: &mut Vec<String>| -> Instant {
        let mut buf = [0u8; 4096];
        loop {
            let n = sock.recv(&mut buf).unwrap_or_else(|e| panic!("waiting for {what}: {e}; heard {heard:?}"));
            let msg = String::from_utf8_lossy(&buf[..n]).to_string();
            heard.push(msg.clone());
            if msg.lines().any(|l| l == what) {
                return Instant::now();
            }
        }
    };
    listen_for("READY=1", &mut heard);
    // Drop what queued up while the camera started, then time two pings.
    sock.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 4096];
    while sock.recv(&mut buf).is_ok() {}
    sock.set_nonblocking(false).unwrap();
    let first = listen_for("WATCHDOG=1", &mut heard);
    let second = listen_for("WATCHDOG=1", &mut heard);
    let gap = second - first;
    assert!(
        (Duration::from_millis(500)..Duration::from_millis(1500)).contains(&gap),
        "pings at half the 2 s watchdog timeout, got {gap:?}"
    );
    agent.agent.signal("-TERM");
    listen_for("STOPPING=1", &mut heard);
    assert_eq!(heard.iter().filter(|m| m.lines().any(|l| l == "READY=1")).count(), 1, "{heard:?}");
}

#[test]
fn prometheus_scrapes_the_agent_through_its_token() {
    let Some(prometheus) = which(&["prometheus"]) else {
        panic!("prometheus not found: tests/run.sh installs it (Debian package `prometheus`)");
    };
    let _serial = serial();
    let agent = Deployed::start();
    let dir = agent.dir.path();
    let alerts = project_file("deploy/prometheus/alerts.yml");
    let config = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {alerts}\nscrape_configs:\n  \
         - job_name: alleywatch\n    authorization:\n      type: Bearer\n      credentials_file: {token}\n    \
         static_configs:\n      - targets: ['127.0.0.1:{port}']\n",
        alerts = alerts.display(),
        token = dir.join("http.token").display(),
        port = agent.http,
    );
    std::fs::write(dir.join("prometheus.yml"), config).unwrap();
    let web = free_port().unwrap();
    let mut prom = Command::new(prometheus)
        .arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
        .arg(format!("--storage.tsdb.path={}", dir.join("tsdb").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{web}"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start prometheus");
    let api = |q: &str| -> Option<Value> {
        let (status, body) = http::get(web, q)?;
        let v: Value = serde_json::from_slice(&body).ok()?;
        (status == 200 && v["status"] == "success").then_some(v["data"].clone())
    };
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let target = wait_until("the agent's target up in Prometheus", Duration::from_secs(60), || {
            let t = api("/api/v1/targets")?;
            let t = t["activeTargets"].as_array()?.first()?.clone();
            (t["health"] == "up").then_some(t)
        });
        assert_eq!(target["labels"]["job"], "alleywatch");
        let names = wait_until("alleywatch series stored", Duration::from_secs(30), || {
            let n = api("/api/v1/label/__name__/values")?;
            let n: Vec<String> = n.as_array()?.iter().filter_map(|v| v.as_str().map(String::from)).collect();
            n.iter().any(|x| x == "alleywatch_frames_analysed_total").then_some(n)
        });
        for want in [
            "alleywatch_frames_decoded_total",
            "alleywatch_frames_analysed_total",
            "alleywatch_camera_up",
            "alleywatch_camera_last_frame_age_seconds",
            "alleywatch_stage_seconds_bucket",
            "alleywatch_mqtt_connected",
            "alleywatch_spool_messages",
            "alleywatch_spool_oldest_age_seconds",
            "alleywatch_models_loaded",
        ] {
            assert!(names.iter().any(|n| n == want), "{want} scraped; have {names:?}");
        }
        let analysed = wait_until("frames analysed > 0 in Prometheus", Duration::from_secs(30), || {
            let r = api("/api/v1/query?query=alleywatch_frames_analysed_total%7Bcamera%3D%22cam-1%22%7D")?;
            let v: f64 = r["result"][0]["value"][1].as_str()?.parse().ok()?;
            (v > 0.0).then_some(v)
        });
        assert!(analysed > 0.0);
        // The project's alert rules load in the real Prometheus.
        let rules = api("/api/v1/rules").expect("rules API");
        let groups = rules["groups"].as_array().expect("rule groups");
        assert!(!groups.is_empty(), "deploy/prometheus/alerts.yml loaded: {rules}");
    }));
    let _ = prom.kill();
    let _ = prom.wait();
    if let Err(e) = result {
        let mut log = String::new();
        if let Some(mut err) = prom.stderr.take() {
            let _ = err.read_to_string(&mut log);
        }
        eprintln!("prometheus log:\n{}", &log[log.len().saturating_sub(4000)..]);
        std::panic::resume_unwind(e);
    }
}

#[test]
fn technician_draws_a_lane_in_chromium_and_the_agent_applies_it() {
    let _serial = serial();
    let agent = Deployed::start();
    let browser = Chromium::start();
    let mut page = browser.page();
    page.call("Page.enable", json!({}));
    // The token once in the address: the agent turns it into a cookie and
    // redirects, as a technician's first visit would.
    page.call("Page.navigate", json!({ "url": format!("http://127.0.0.1:{}/?token={TOKEN}", agent.http) }));
    page.wait_for("the page at / with the cookie", "location.pathname === '/' && document.readyState === 'complete'");

    // 1–2: the page loads, with the camera and its latest frame.
    page.wait_for(
        "the camera listed as streaming",
        "[...document.querySelectorAll('#cameras tr.camera')].some(r => r.textContent.includes('streaming'))",
    );
    page.wait_for("the snapshot", "document.getElementById('snapshot').naturalWidth > 0");
    page.wait_for("the configured lane drawn", "document.querySelectorAll('#overlay polygon.lane').length === 1");
    assert_eq!(page.eval("document.getElementById('snapshot').naturalWidth"), json!(640), "analysis width");

    // 3: draw a polygon with real clicks on the picture.
    page.click_on("#draw");
    let rect = page.eval(
        "(() => { const r = document.getElementById('overlay').getBoundingClientRect(); \
         return [r.left, r.top, r.width, r.height]; })()",
    );
    let (left, top, w, h) =
        (rect[0].as_f64().unwrap(), rect[1].as_f64().unwrap(), rect[2].as_f64().unwrap(), rect[3].as_f64().unwrap());
    let corners = [(0.1, 0.5), (0.6, 0.5), (0.6, 0.9), (0.1, 0.9)];
    for (x, y) in corners {
        page.click(left + x * w, top + y * h);
    }
    page.wait_for("a 4-point draft", "document.querySelectorAll('#overlay circle.vertex').length === 4");
    page.eval("document.getElementById('lane-name').value = 'drawn-lane'; document.getElementById('lane-dwell').value = '5'; true");

    // 4: save.
    page.click_on("#save");
    page.wait_for("the save confirmed", "document.getElementById('status').className === 'ok'");
    page.wait_for("both lanes drawn", "document.querySelectorAll('#overlay polygon.lane').length === 2");

    // 5: the agent's running config has the lane, from the clicks, with no
    // stream restart, and the overlay file keeps it for the next start.
    let config = get_json(agent.http, "/api/config").unwrap();
    let lanes = config["cameras"][0]["lanes"].as_array().unwrap().clone();
    let lane = lanes.iter().find(|l| l["name"] == "drawn-lane").expect("drawn-lane in the running config");
    let polygon: Vec<(f64, f64)> =
        lane["polygon"].as_array().unwrap().iter().map(|p| (p[0].as_f64().unwrap(), p[1].as_f64().unwrap())).collect();
    assert_eq!(polygon.len(), 4);
    for ((x, y), (ex, ey)) in polygon.iter().zip(corners) {
        assert!((x - ex).abs() < 0.01 && (y - ey).abs() < 0.01, "clicked {ex},{ey}, saved {x},{y}");
    }
    assert_eq!(lane["dwell_s"], 5.0);
    assert_eq!(agent.metric("alleywatch_camera_reconnects_total"), 0.0, "no stream reconnect");
    assert_eq!(agent.metric("alleywatch_camera_starts_total"), 1.0, "no camera restart");
    let overlay = std::fs::read_to_string(agent.dir.path().join("state/overlay.toml")).expect("overlay.toml");
    assert!(overlay.contains("drawn-lane"), "{overlay}");
    assert_eq!(lane["cue"], "both", "the page's default cue");

    // 6: "Lane is clear now" on the new lane: the latest frame becomes its
    // clear reference, saved beside the spool at once.
    page.wait_for(
        "the clear-now button of drawn-lane",
        "!!document.querySelector('#thresholds button[data-lane=\"drawn-lane\"]')",
    );
    page.eval("document.querySelector('#thresholds button[data-lane=\"drawn-lane\"]').click(); true");
    page.wait_for(
        "the reference confirmed",
        "document.getElementById('status').className === 'ok' && document.getElementById('status').textContent.includes('clear now')",
    );
    let dir = agent.dir.path().join("state/references/cam-1");
    let reference = ["day", "night"].map(|l| dir.join(format!("drawn-lane-{l}.png"))).into_iter().find(|p| p.is_file());
    let png = image::open(reference.expect("the reference PNG beside the spool")).unwrap();
    assert_eq!(png.width(), 160, "the cue's 160-px thumbnail");
    assert_eq!(png.height(), 68, "the demo clip's 640x272 aspect");

    // 7: a screenshot of the page with both lanes.
    let shot = page.call("Page.captureScreenshot", json!({ "format": "png" }));
    use base64::Engine as _;
    let png = base64::engine::general_purpose::STANDARD.decode(shot["data"].as_str().unwrap()).expect("base64");
    let img = image::load_from_memory(&png).expect("screenshot is a PNG");
    assert!(img.width() >= 1000 && img.height() >= 600, "{}x{}", img.width(), img.height());
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("technician-page.png");
    std::fs::write(&out, &png).unwrap();
    eprintln!("screenshot: {}", out.display());
}

#[test]
fn deploy_artefacts_validate() {
    let script = project_file("tests/deploy/check.sh");
    let out = Command::new("bash")
        .arg(&script)
        .env("EDGE_AGENT_BIN", agent_bin())
        .output()
        .expect("run tests/deploy/check.sh");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "deploy checks failed:\n{text}");
}
