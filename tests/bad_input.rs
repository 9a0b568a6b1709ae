//! Bad input, as a new user or a hostile one gives it: malformed configs
//! and URLs are refused naming the key, broken model files stop the agent
//! naming the file, and cameras that send garbage, nothing or the wrong
//! media each fail with a clear error while the good camera keeps running.
//! The real `edge-agent` binary, real mosquitto, real RTSP servers and
//! models; loopback only; no panic anywhere.

use std::io::Write;
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use alleywatch_devkit::{free_port, Mosquitto, RtspServer, DEMO_LANE};
use alleywatch_testkit::{agent_bin, detector, lane_camera, serial, wait_until, write_config, Agent};

fn kerb(name: &str, dwell_s: f64) -> String {
    format!("{{ name = \"{name}\", polygon = {DEMO_LANE}, classes = [\"car\", \"truck\", \"bus\"], dwell_s = {dwell_s}, clear_s = 2 }}")
}

/// A TCP server that answers every connection with garbage bytes.
fn garbage_server() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut s in l.incoming().map_while(Result::ok) {
            std::thread::spawn(move || {
                let mut x: u32 = 0x1234_5678;
                for _ in 0..2000 {
                    let bytes: Vec<u8> = (0..512)
                        .map(|_| {
                            x ^= x << 13;
                            x ^= x >> 17;
                            x ^= x << 5;
                            x as u8
                        })
                        .collect();
                    if s.write_all(&bytes).is_err() {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
            });
        }
    });
    port
}

/// A TCP server that accepts and then never says a word.
fn silent_server() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in l.incoming().map_while(Result::ok) {
            held.push(s);
        }
    });
    port
}

/// A config for `check-config` and `run`: the default detector, one
/// broker, `extra` top-level keys and `cameras`.
fn base(cameras: &str, extra: &str) -> String {
    format!(
        "agent_id = \"a\"\nsite = {{ district = \"d\", street = \"s\", community = \"c\" }}\n\
         broker = {{ host = \"127.0.0.1\" }}\n\
         detector = {{ path = \"{}\", format = \"nanodet\", input_size = 416 }}\n{extra}\n{cameras}",
        detector().display()
    )
}

/// A `[[cameras]]` block with id `c1` and `url`.
fn cam(url: &str) -> String {
    format!("[[cameras]]\nid = \"c1\"\nname = \"c1\"\nurl = \"{url}\"\n")
}

#[test]
fn bad_input_gets_a_clear_error_and_no_panic_and_good_cameras_keep_running() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let mut checked = 0;
    bad_configs_and_urls_are_refused_naming_the_key(dir.path(), &mut checked);
    bad_model_files_stop_the_agent_naming_the_file(dir.path(), &mut checked);
    bad_cameras_fail_clearly_and_the_good_one_keeps_running(dir.path(), &mut checked);
    assert!(checked >= 30, "{checked} bad inputs checked");
}

/// Configs and URLs: `check-config` refuses each bad one in one line that
/// names the file and the key (and line), with no panic; a missing file too.
fn bad_configs_and_urls_are_refused_naming_the_key(dir: &Path, checked: &mut usize) {
    let ok_cam = cam("rtsp://127.0.0.1/s");
    let lane = |l: &str| format!("{ok_cam}lanes = [{l}]\n");
    let cases: Vec<(&str, String, &str)> = vec![
        ("syntax", "agent_id = \"a\nsite = 1".into(), "(syntax)"),
        ("unknown key", base(&ok_cam, "colour = 1"), "colour: unknown field"),
        ("wrong type", base(&ok_cam, "alerts = { update_interval_s = \"ten\" }"), "alerts.update_interval_s"),
        ("no cameras", base("", "cameras = []"), "cameras: at least one camera"),
        ("duplicate id", base(&format!("{ok_cam}{ok_cam}"), ""), "cameras[1].id: duplicate camera id"),
        ("unsafe id", base(&cam("rtsp://h/s").replace("\"c1\"\nname", "\"c/1\"\nname"), ""), "cameras[0].id"),
        ("negative dwell", base(&lane(&kerb("k", -1.0)), ""), "cameras[0].lanes[0].dwell_s"),
        (
            "two-point polygon",
            base(&lane("{ name = \"k\", polygon = [[0, 0], [1, 1]], classes = [\"car\"], dwell_s = 5 }"), ""),
            "cameras[0].lanes[0].polygon",
        ),
        (
            "polygon off the frame",
            base(&lane("{ name = \"k\", polygon = [[0, 0], [2, 0], [1, 1]], classes = [\"car\"], dwell_s = 5 }"), ""),
            "cameras[0].lanes[0].polygon",
        ),
        (
            "unknown class",
            base(
                &lane("{ name = \"k\", polygon = [[0, 0], [1, 0], [1, 1]], classes = [\"dragon\"], dwell_s = 5 }"),
                "",
            ),
            "cameras[0].lanes[0].classes",
        ),
        ("fps zero", base(&format!("{ok_cam}fps = 0\n"), ""), "cameras[0].fps"),
        (
            "broker port zero",
            base(&ok_cam, "").replace("host = \"127.0.0.1\"", "host = \"127.0.0.1\", port = 0"),
            "broker.port",
        ),
        (
            "tls without ca",
            base(&ok_cam, "").replace("host = \"127.0.0.1\"", "host = \"h\", tls = true"),
            "broker.ca_file",
        ),
        (
            "password without user",
            base(&ok_cam, "").replace("host = \"127.0.0.1\"", "host = \"h\", password = \"x\""),
            "broker.username",
        ),
        (
            "password twice",
            base(&ok_cam, "").replace(
                "host = \"127.0.0.1\"",
                "host = \"h\", username = \"u\", password = \"x\", password_file = \"/p\"",
            ),
            "broker.password_file",
        ),
        (
            "cert without key",
            base(&ok_cam, "")
                .replace("host = \"127.0.0.1\"", "host = \"h\", tls = true, ca_file = \"/ca\", client_cert = \"/c\""),
            "broker.client_key",
        ),
        ("spool bound", base(&ok_cam, "spool = { max_mb = 0 }"), "spool.max_mb"),
        ("escalation", base(&ok_cam, "alerts = { escalate_after_s = -1 }"), "alerts.escalate_after_s"),
        ("severity", base(&ok_cam, "alerts = { escalate_min_severity = \"dire\" }"), "alerts.escalate_min_severity"),
        ("input size", base(&ok_cam, "").replace("input_size = 416", "input_size = 100"), "detector.input_size"),
        (
            "score",
            base(&ok_cam, "").replace("input_size = 416", "input_size = 416, score_threshold = 1.5"),
            "detector.score_threshold",
        ),
        ("http url", base(&cam("http://cam/stream"), ""), "cameras[0].url"),
        ("empty url", base(&cam(""), ""), "cameras[0].url"),
        ("not a url", base(&cam("camera one"), ""), "cameras[0].url"),
        ("rtsp without host", base(&cam("rtsp://"), ""), "cameras[0].url"),
        ("bad http bind", base(&ok_cam, "http = { bind = \"everywhere\" }"), "http.bind"),
    ];
    let run = |args: &[&str]| {
        let out = Command::new(agent_bin()).args(args).output().unwrap();
        (
            out.status.success(),
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
        )
    };
    for (name, text, want) in &cases {
        let file = dir.join(format!("{}.toml", name.replace(' ', "-")));
        std::fs::write(&file, text).unwrap();
        let (ok, out) = run(&["check-config", file.to_str().unwrap()]);
        assert!(!ok, "{name}: accepted");
        assert!(out.contains(file.file_name().unwrap().to_str().unwrap()), "{name}: names the file: {out}");
        assert!(out.contains(want), "{name}: wanted {want:?} in: {out}");
        assert!(!out.contains("panicked"), "{name}: {out}");
        assert_eq!(out.trim().lines().count(), 1, "{name}: one line: {out}");
        *checked += 1;
    }
    let (ok, out) = run(&["check-config", dir.join("missing.toml").to_str().unwrap()]);
    assert!(!ok && out.contains("missing.toml: cannot read config"), "{out}");
    *checked += 1;
}

/// Model files (truncated, not a model, empty, wrong sha256, absent): the
/// agent refuses to start, naming the file, with no panic.
fn bad_model_files_stop_the_agent_naming_the_file(dir: &Path, checked: &mut usize) {
    let good_model = detector();
    let good_bytes = std::fs::read(&good_model).unwrap();
    let models: Vec<(&str, Vec<u8>, Option<&str>, &str)> = vec![
        ("truncated.onnx", good_bytes[..good_bytes.len() / 3].to_vec(), None, "truncated.onnx"),
        ("text.onnx", b"this is not a model\n".to_vec(), None, "text.onnx"),
        ("empty.onnx", Vec::new(), None, "empty.onnx"),
        ("mismatch.onnx", good_bytes.clone(), Some("0"), "sha256"),
        ("absent.onnx", Vec::new(), None, "absent.onnx"),
    ];
    for (file, bytes, sha, want) in &models {
        let path = dir.join(file);
        if *file != "absent.onnx" {
            std::fs::write(&path, bytes).unwrap();
        }
        let sha = sha.map(|_| format!(", sha256 = \"{}\"", "0".repeat(64))).unwrap_or_default();
        let state = format!("spool = {{ path = \"{}/s.sqlite\" }}\nhttp = {{ bind = \"127.0.0.1:0\" }}", dir.display());
        let text = base(&cam("test://ball"), &state)
            .replace(&format!("path = \"{}\"", good_model.display()), &format!("path = \"{}\"{sha}", path.display()));
        let cfg = dir.join(format!("model-case-{checked}.toml"));
        std::fs::write(&cfg, text).unwrap();
        let out = Command::new(agent_bin()).args(["run", "--config", cfg.to_str().unwrap()]).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{file}: the agent ran with a bad model");
        assert!(err.contains(want), "{file}: wanted {want:?} in: {err}");
        assert!(!err.contains("panicked"), "{file}: {err}");
        *checked += 1;
    }
}

/// Streams: each bad camera (audio only, wrong path, garbage, silence,
/// refused, no such host, missing or junk file) reports a clear error of
/// its failing step, while the good camera keeps being analysed.
fn bad_cameras_fail_clearly_and_the_good_one_keeps_running(dir: &Path, checked: &mut usize) {
    let broker = Mosquitto::start().expect("mosquitto");
    let audio = RtspServer::start_launch(
        "( audiotestsrc is-live=true ! audioconvert ! opusenc ! rtpopuspay name=pay0 pt=97 )",
        0,
        "/audio",
    )
    .expect("audio rtsp server");
    let junk = dir.join("junk.mp4");
    std::fs::write(&junk, vec![0x42u8; 100_000]).unwrap();
    let refused = free_port().unwrap();
    let bad: Vec<(&str, String)> = vec![
        ("audio-only", format!("rtsp://127.0.0.1:{}/audio", audio.port())),
        ("wrong-path", format!("rtsp://127.0.0.1:{}/no-such-stream", audio.port())),
        ("garbage", format!("rtsp://127.0.0.1:{}/cam", garbage_server())),
        ("hangs", format!("rtsp://127.0.0.1:{}/cam", silent_server())),
        ("refused", format!("rtsp://127.0.0.1:{refused}/cam")),
        ("no-such-host", "rtsp://no-such-host.invalid/cam".into()),
        ("missing-file", format!("file://{}/nope.mp4", dir.display())),
        ("junk-file", format!("file://{}", junk.display())),
    ];
    let mut cameras = lane_camera("good", "test://ball", "");
    for (id, url) in &bad {
        cameras.push_str(&lane_camera(id, url, ""));
    }
    let http = free_port().unwrap();
    let config = write_config(dir, http, &format!("port = {}", broker.port()), "", &cameras);
    let agent = Agent::spawn(&config, http, &[]);
    wait_until("every bad camera reports an error", Duration::from_secs(60), || {
        let cams = agent.api("/api/cameras");
        bad.iter().all(|(id, _)| {
            cams.as_array().into_iter().flatten().any(|c| {
                c["camera"] == *id
                    && c["state"] != "streaming"
                    && c["last_error"].as_str().is_some_and(|e| !e.is_empty())
            })
        })
    });
    let n0 = agent.metric("alleywatch_frames_analysed_total", &[("camera", "good")]);
    wait_until("the good camera keeps being analysed", Duration::from_secs(20), || {
        agent.metric("alleywatch_frames_analysed_total", &[("camera", "good")]) >= n0 + 10.0
    });
    let cams = agent.api("/api/cameras");
    for (id, _) in &bad {
        let c = cams.as_array().unwrap().iter().find(|c| c["camera"] == *id).unwrap();
        eprintln!("{id:>13}: {} — {}", c["state"], c["last_error"]);
        *checked += 1;
    }
    // The connection failures say which step failed, not only rtspsrc's
    // one message for all of them.
    let error_of = |id: &str| {
        cams.as_array().unwrap().iter().find(|c| c["camera"] == id).unwrap()["last_error"].as_str().unwrap().to_string()
    };
    assert!(error_of("refused").contains("refused the connection"), "{}", error_of("refused"));
    assert!(error_of("no-such-host").contains("does not resolve"), "{}", error_of("no-such-host"));
    assert!(error_of("wrong-path").to_lowercase().contains("not found"), "{}", error_of("wrong-path"));
    let good = cams.as_array().unwrap().iter().find(|c| c["camera"] == "good").unwrap();
    assert_eq!(good["state"], "streaming", "{cams}");
    let log = agent.stop();
    assert!(!log.contains("panicked"), "{log}");
}
