//! Fault tests: the real `edge-agent` binary, real mosquitto (stopped,
//! restarted, with TLS and passwords), real RTSP servers (killed and
//! restored), real H.264, real models. Loopback only; every wait is bounded.
//!
//! 1. broker outage plus `kill -9` of the agent: every event arrives exactly
//!    once (by `seq`), in order, none lost;
//! 2. camera loss: one of two cameras dies and returns; the other keeps its
//!    analysed fps;
//! 3. reload: a `set` command and a SIGHUP change rules with no stream
//!    restart; an invalid reload is rejected;
//! 4. TLS with client certificates and a password file; a wrong password is
//!    a clear error; no credential appears in any output;
//!
//! plus the centre's closed loop (ack, resolve, escalate). Bad input has
//! its own file, `bad_input.rs`.
//!
//! The tests take a lock so they run one at a time: they measure frame
//! rates, and several agents at once on 2 cores would measure each other.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use alleywatch_devkit::{free_port, Mosquitto, RtspServer, DEMO_LANE};
use alleywatch_testkit::{
    camera_is, clip, http, is_event, lane_camera, serial, wait_until, write_config, Agent, Msg, Sub, BASE,
};
use rumqttc::{MqttOptions, Transport};
use serde_json::{json, Value};

fn kerb(name: &str, dwell_s: f64) -> String {
    format!("{{ name = \"{name}\", polygon = {DEMO_LANE}, classes = [\"car\", \"truck\", \"bus\"], dwell_s = {dwell_s}, clear_s = 2 }}")
}

#[test]
fn broker_outage_and_kill9_lose_no_event_and_keep_order() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    // Started as root, mosquitto drops to the `mosquitto` user, which cannot
    // write inside our private (0700) temp dir: it would run without saving
    // its sessions and the subscriber's queue would vanish with the restart.
    // So the broker's state gets a directory of its own that anyone may write.
    let persist_dir = tempfile::tempdir().unwrap();
    let persist = persist_dir.path();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(persist, std::fs::Permissions::from_mode(0o777)).unwrap();
    }
    let port = free_port().unwrap();
    // Persistence keeps the subscriber's session (and what is queued for
    // it) across the broker's restart.
    let conf = format!(
        "listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location {}/\nlog_type all\n",
        persist.display()
    );
    let mut broker = Mosquitto::start_with(port, &conf).expect("mosquitto");
    let server = RtspServer::start(&clip(), 0, "/cam").expect("rtsp server");
    let sub = Sub::start(MqttOptions::new("fault-outage-sub", "127.0.0.1", port), true);
    let http = free_port().unwrap();
    let url = format!("rtsp://127.0.0.1:{}/cam", server.port());
    let config = write_config(
        dir.path(),
        http,
        &format!("port = {port}"),
        "alerts = { update_interval_s = 1 }",
        // Three lanes over the parked cars: three starts a run.
        &lane_camera(
            "cam-1",
            &url,
            &format!("{}, {}, {}", kerb("kerb-a", 1.0), kerb("kerb-b", 2.0), kerb("kerb-c", 3.0)),
        ),
    );
    let a1 = Agent::spawn(&config, http, &[]);
    sub.wait_for("camera streaming", Duration::from_secs(30), |m| camera_is(m, "cam-1", "streaming"));

    // Outage: events are raised while the broker is down.
    broker.stop();
    wait_until("three events spooled during the outage", Duration::from_secs(60), || {
        let m = a1.metrics();
        http::metric(&m, "alleywatch_event_seq", &[]) >= 3.0
            && http::metric(&m, "alleywatch_mqtt_connected", &[]) == 0.0
    });
    let seq1 = a1.metric("alleywatch_event_seq", &[]);
    // And the agent dies hard, mid-outage.
    let log = broker.log();
    assert!(
        log.contains("Saving in-memory database") && !log.contains("Error saving"),
        "the broker saved its sessions:\n{log}"
    );
    let log1 = a1.kill9();
    assert!(log1.contains("alerts are spooled"), "the outage is logged: {log1}");

    let a2 = Agent::spawn(&config, http, &[]);
    wait_until("the restarted agent raises more events, still offline", Duration::from_secs(60), || {
        a2.metric("alleywatch_event_seq", &[]) >= seq1 + 3.0
    });
    let broker2 = Mosquitto::start_with(port, &conf).expect("mosquitto restart");
    wait_until("the spool drains after the broker returns", Duration::from_secs(60), || {
        let m = a2.metrics();
        http::metric(&m, "alleywatch_mqtt_connected", &[]) == 1.0
            && http::metric(&m, "alleywatch_spool_messages", &[]) == 0.0
    });
    let last = a2.metric("alleywatch_event_seq", &[]) as u64;
    assert!(last as f64 >= seq1 + 2.0);
    let events = |sub: &Sub| -> Vec<Value> {
        sub.all()
            .iter()
            .filter(|m| m.topic.contains("/events/") && !m.topic.ends_with("/snapshot"))
            .map(Msg::json)
            .collect()
    };
    let missing = || -> Vec<u64> {
        let got: std::collections::HashSet<u64> = events(&sub).iter().filter_map(|e| e["seq"].as_u64()).collect();
        (1..=last).filter(|s| !got.contains(s)).collect()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !missing().is_empty() {
        assert!(
            Instant::now() < deadline,
            "after 30 s the subscriber still lacks seq {:?} of 1..={last} (the agent's spool is empty: the broker acked them)\n\
             subscriber:\n{}\nbroker before the outage:\n{}\nbroker after:\n{}\nagent:\n{}",
            missing(),
            sub.trail(),
            broker.log(),
            broker2.log(),
            a2.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // Exactly once after deduplication by seq, and in order per camera.
    let all = events(&sub);
    let mut by_seq: BTreeMap<u64, Value> = BTreeMap::new();
    let mut first_order: HashMap<String, Vec<u64>> = HashMap::new();
    for e in &all {
        let seq = e["seq"].as_u64().unwrap();
        if let Some(prev) = by_seq.get(&seq) {
            assert_eq!((&prev["id"], &prev["type"]), (&e["id"], &e["type"]), "a resent seq is the same message");
            continue;
        }
        by_seq.insert(seq, e.clone());
        first_order.entry(e["camera"]["id"].as_str().unwrap().to_string()).or_default().push(seq);
    }
    // The premise: the broker kept the subscriber's session over its
    // restart, so what it took while the subscriber was away was queued.
    let trail = sub.trail();
    assert!(trail.contains("session_present=true"), "the subscriber's session survived the restart:\n{trail}");
    let lost: Vec<u64> = (1..=last).filter(|s| !by_seq.contains_key(s)).collect();
    assert_eq!(lost, Vec::<u64>::new(), "0 lost");
    for (camera, seqs) in &first_order {
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{camera}: out of order: {seqs:?}");
    }
    let starts = by_seq.values().filter(|e| e["type"] == "start").count();
    assert!(starts >= 2, "one start before the kill, one after: {starts}");
    eprintln!(
        "outage: {} messages (seq 1..={last}), {} duplicates delivered, {} before the kill",
        by_seq.len(),
        all.len() - by_seq.len(),
        seq1
    );
    drop(a2);
}

/// A live H.264 camera that never ends (videotestsrc → x264enc).
fn live_camera(port: u16) -> RtspServer {
    RtspServer::start_launch(
        "( videotestsrc is-live=true pattern=ball ! video/x-raw,width=640,height=360,framerate=25/1 ! \
         x264enc tune=zerolatency speed-preset=ultrafast key-int-max=25 bitrate=800 ! \
         rtph264pay name=pay0 pt=96 config-interval=-1 )",
        port,
        "/live",
    )
    .expect("rtsp server")
}

#[test]
fn a_camera_that_dies_returns_and_never_slows_the_other() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start().expect("mosquitto");
    let (good, bad) = (live_camera(0), live_camera(0));
    let bad_port = bad.port();
    let sub = Sub::plain(broker.port(), "fault-loss-sub");
    let http = free_port().unwrap();
    let lanes = kerb("kerb", 30.0);
    let cameras = format!(
        "{}{}",
        lane_camera("good", &format!("rtsp://127.0.0.1:{}/live", good.port()), &lanes),
        lane_camera("flaky", &format!("rtsp://127.0.0.1:{bad_port}/live"), &lanes)
    );
    let config = write_config(dir.path(), http, &format!("port = {}", broker.port()), "", &cameras);
    let agent = Agent::spawn(&config, http, &[]);
    sub.wait_for("good streaming", Duration::from_secs(30), |m| camera_is(m, "good", "streaming"));
    sub.wait_for("flaky streaming", Duration::from_secs(30), |m| camera_is(m, "flaky", "streaming"));

    let analysed = || agent.metric("alleywatch_frames_analysed_total", &[("camera", "good")]);
    let rate = |secs: u64| {
        let (n0, t0) = (analysed(), Instant::now());
        std::thread::sleep(Duration::from_secs(secs));
        (analysed() - n0) / t0.elapsed().as_secs_f64()
    };
    let before = rate(8);

    bad.stop();
    let t_down = Instant::now();
    let during = rate(8);
    sub.wait_for("flaky reconnecting", Duration::from_secs(20), |m| {
        camera_is(m, "flaky", "reconnecting") || camera_is(m, "flaky", "failed")
    });
    let _back = live_camera(bad_port);
    let returned = Instant::now();
    let n_before = sub.all().len();
    wait_until("flaky streaming again", Duration::from_secs(10), || {
        sub.all()[n_before..].iter().any(|m| camera_is(m, "flaky", "streaming"))
    });
    let back_after = returned.elapsed();
    eprintln!(
        "camera loss: good camera {before:.2} fps before, {during:.2} fps while flaky was down ({:.0} s); flaky back after {:.1} s",
        t_down.elapsed().as_secs_f64(),
        back_after.as_secs_f64()
    );
    assert!(before > 3.0, "the good camera analyses its 5 fps: {before}");
    assert!(during >= 0.9 * before, "the good camera slowed from {before:.2} to {during:.2} fps");
    assert!(back_after <= Duration::from_secs(10));
    assert!(agent.metric("alleywatch_camera_reconnects_total", &[("camera", "good")]) == 0.0);
    assert!(agent.metric("alleywatch_camera_reconnects_total", &[("camera", "flaky")]) >= 1.0);
    let cams = agent.api("/api/cameras");
    assert_eq!(cams.as_array().map(|a| a.len()), Some(2), "{cams}");
    drop(agent);
}

#[test]
fn reload_by_set_command_and_sighup_restarts_no_stream() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start().expect("mosquitto");
    let server = RtspServer::start(&clip(), 0, "/cam").expect("rtsp server");
    let sub = Sub::plain(broker.port(), "fault-reload-sub");
    let http = free_port().unwrap();
    let url = format!("rtsp://127.0.0.1:{}/cam", server.port());
    let broker_kv = format!("port = {}", broker.port());
    let config = write_config(dir.path(), http, &broker_kv, "", &lane_camera("cam-1", &url, &kerb("kerb", 1000.0)));
    // --no-watch: this test sends SIGHUP itself, and must know which
    // trigger did what.
    let agent = Agent::spawn(&config, http, &["--no-watch"]);
    sub.wait_for("camera streaming", Duration::from_secs(30), |m| camera_is(m, "cam-1", "streaming"));

    // 1. The centre lowers the dwell from 1000 s to 2 s.
    sub.publish(
        &format!("{BASE}/commands/set"),
        json!({"by": "centre-1", "request_id": "r1", "changes": {"cameras.cam-1.lanes.kerb.dwell_s": 2}}),
    );
    let reply = sub.wait_for("set reply", Duration::from_secs(10), |m| m.topic == format!("{BASE}/replies"));
    assert_eq!(
        (reply.json()["ok"].as_bool(), reply.json()["request_id"].as_str()),
        (Some(true), Some("r1")),
        "{:?}",
        reply.json()
    );
    let start = sub.wait_for("kerb start after the set", Duration::from_secs(30), |m| {
        is_event(m, "lane_blocked", "start") && m.json()["zone"] == "kerb"
    });
    assert_eq!(start.json()["rule"]["dwell_s"], 2.0, "the event carries the new parameter");
    let overlay = std::fs::read_to_string(dir.path().join("state/overlay.toml")).expect("the set is persisted");
    assert!(overlay.contains("cameras.cam-1.lanes.kerb.dwell_s"), "{overlay}");

    // 2. A rejected set: a bad value names its key, and changes nothing.
    sub.publish(
        &format!("{BASE}/commands/set"),
        json!({"by": "centre-1", "request_id": "r2", "changes": {"cameras.cam-1.lanes.kerb.dwell_s": -3}}),
    );
    let reply = sub.wait_for("rejected set reply", Duration::from_secs(10), |m| {
        m.topic.ends_with("/replies") && m.json()["request_id"] == "r2"
    });
    assert_eq!(reply.json()["ok"], false);
    assert!(reply.json()["error"].as_str().unwrap().contains("cameras[0].lanes[0].dwell_s"), "{}", reply.json());

    // 3. The operator adds a second lane in the file and sends SIGHUP.
    let cams = lane_camera("cam-1", &url, &format!("{}, {}", kerb("kerb", 1000.0), kerb("kerb-2", 1.0)));
    write_config(dir.path(), http, &broker_kv, "", &cams);
    agent.signal("-HUP");
    let start2 = sub.wait_for("kerb-2 start after SIGHUP", Duration::from_secs(30), |m| {
        is_event(m, "lane_blocked", "start") && m.json()["zone"] == "kerb-2"
    });
    assert_eq!(start2.json()["rule"]["dwell_s"], 1.0);

    // 4. An invalid file and SIGHUP: rejected, the running config stays.
    std::fs::write(&config, std::fs::read_to_string(&config).unwrap().replace("dwell_s = 1,", "dwell_s = -1,"))
        .unwrap();
    agent.signal("-HUP");
    wait_until("the invalid reload is rejected", Duration::from_secs(10), || {
        agent.metric("alleywatch_config_reloads_total", &[("result", "rejected")]) >= 2.0
    });

    // No stream restarted through all of it (the clip is 30 s long and
    // ends with a reconnect, so this is read well before).
    let m = agent.metrics();
    assert_eq!(
        http::metric(&m, "alleywatch_camera_reconnects_total", &[("camera", "cam-1")]),
        0.0,
        "a stream restarted"
    );
    // A restart by reload starts the camera anew (not a reconnect).
    assert_eq!(
        http::metric(&m, "alleywatch_camera_starts_total", &[("camera", "cam-1")]),
        1.0,
        "the camera was restarted"
    );
    assert!(http::metric(&m, "alleywatch_config_reloads_total", &[("result", "ok")]) >= 2.0);
    assert!(!sub.all().iter().any(|m| camera_is(m, "cam-1", "reconnecting")));
    let log = agent.stop();
    assert!(log.contains("trigger=\"SIGHUP\"") || log.contains("trigger=SIGHUP"), "{log}");
    assert!(log.contains("new configuration rejected") && log.contains("dwell_s"), "{log}");
    // The overlay still applies over the file at the next start.
    let reloaded = edge_agent::config::overlay::load(&config.with_file_name("agent.toml"));
    assert!(reloaded.is_err(), "the file itself is still invalid");
}

#[test]
fn centre_commands_ack_resolve_and_escalation() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start().expect("mosquitto");
    let server = RtspServer::start(&clip(), 0, "/cam").expect("rtsp server");
    let sub = Sub::plain(broker.port(), "fault-commands-sub");
    let http = free_port().unwrap();
    let url = format!("rtsp://127.0.0.1:{}/cam", server.port());
    let config = write_config(
        dir.path(),
        http,
        &format!("port = {}", broker.port()),
        "alerts = { update_interval_s = 1, acked_update_interval_s = 600, escalate_after_s = 2 }",
        &lane_camera("cam-1", &url, &kerb("kerb", 1.0)),
    );
    let agent = Agent::spawn(&config, http, &[]);
    let start = sub.wait_for("start", Duration::from_secs(40), |m| is_event(m, "lane_blocked", "start"));
    let id = start.json()["id"].as_str().unwrap().to_string();
    let esc =
        sub.wait_for("escalation to the street", Duration::from_secs(10), |m| is_event(m, "lane_blocked", "escalate"));
    let e = esc.json();
    assert_eq!(
        (e["id"].as_str(), e["escalation"]["level"].as_str(), e["escalation"]["site"].as_str()),
        (Some(id.as_str()), Some("street"), Some("d1/s1"))
    );

    sub.publish(&format!("{BASE}/commands/ack"), json!({"event_id": id, "by": "op-7", "note": "on the way"}));
    let reply = sub.wait_for("ack reply", Duration::from_secs(10), |m| m.topic.ends_with("/replies"));
    assert_eq!(reply.json()["ok"], true, "{}", reply.json());
    let after_ack = sub.all().len();
    sub.publish(&format!("{BASE}/commands/ack"), json!({"event_id": "no-such-event", "by": "op-7"}));
    let bad = sub.wait_for("unknown-event reply", Duration::from_secs(10), |m| {
        m.topic.ends_with("/replies") && m.json()["event_id"] == "no-such-event"
    });
    assert!(bad.json()["error"].as_str().unwrap().contains("no open event"), "{}", bad.json());
    // Acknowledged: no district escalation (due at 4 s), and any update is
    // throttled to one per 600 s (the unit tests cover the throttle).
    std::thread::sleep(Duration::from_secs(4));
    let quiet: Vec<Msg> = sub.all()[after_ack..]
        .iter()
        .filter(|m| m.topic.contains("/events/") && m.json()["id"] == id.as_str())
        .cloned()
        .collect();
    assert!(
        quiet.is_empty(),
        "acked event still chatty: {:?}",
        quiet.iter().map(|m| m.json()["type"].clone()).collect::<Vec<_>>()
    );

    sub.publish(&format!("{BASE}/commands/resolve"), json!({"event_id": id, "by": "op-7"}));
    let end = sub.wait_for("end from resolve", Duration::from_secs(10), |m| is_event(m, "lane_blocked", "end"));
    let end = end.json();
    assert_eq!(
        (end["id"].as_str(), end["resolved"]["by"].as_str(), end["ack"]["by"].as_str()),
        (Some(id.as_str()), Some("op-7"), Some("op-7"))
    );
    let m = agent.metrics();
    assert!(http::metric(&m, "alleywatch_commands_total", &[("command", "ack"), ("result", "ok")]) == 1.0);
    drop(agent);
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, as
/// PEM files in `dir`: (ca, server cert, server key, client cert, client key).
fn make_pki(dir: &Path) -> [PathBuf; 5] {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose};
    // Distinct subject names: OpenSSL takes a leaf whose subject equals its
    // issuer for self-signed, and rejects it.
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages =
        vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    ca_params.distinguished_name.push(DnType::CommonName, "alleywatch test CA");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let leaf = |names: Vec<String>| {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(names.clone()).unwrap();
        params.distinguished_name.push(DnType::CommonName, names[0].as_str());
        let cert = params.signed_by(&key, &ca).unwrap();
        (cert.pem(), key.serialize_pem())
    };
    let (server_cert, server_key) = leaf(vec!["127.0.0.1".into(), "localhost".into()]);
    let (client_cert, client_key) = leaf(vec!["test-agent".into()]);
    let files = [
        ("ca.pem", ca.pem()),
        ("server.pem", server_cert),
        ("server.key", server_key),
        ("client.pem", client_cert),
        ("client.key", client_key),
    ];
    files.map(|(name, pem)| {
        let p = dir.join(name);
        std::fs::write(&p, pem).unwrap();
        p
    })
}

const BROKER_PASSWORD: &str = "planted-broker-secret-9731";
const CAMERA_PASSWORD: &str = "planted-camera-secret-4410";

#[test]
fn tls_with_client_certificate_and_password_file_and_no_secret_anywhere() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let [ca, server_cert, server_key, client_cert, client_key] = make_pki(dir.path());
    let passwd = dir.path().join("mosquitto.passwd");
    let st = Command::new("mosquitto_passwd")
        .args(["-c", "-b"])
        .arg(&passwd)
        .args(["agent", BROKER_PASSWORD])
        .status()
        .unwrap();
    assert!(st.success());
    let port = free_port().unwrap();
    let conf = format!(
        "listener {port} 127.0.0.1\ncafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate true\n\
         allow_anonymous false\npassword_file {}\npersistence false\n",
        ca.display(),
        server_cert.display(),
        server_key.display(),
        passwd.display()
    );
    let broker = Mosquitto::start_with(port, &conf).expect("mosquitto with TLS");

    // The subscriber is a centre with its own certificate and the password.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut opts = MqttOptions::new("fault-tls-sub", "127.0.0.1", port);
    opts.set_credentials("agent", BROKER_PASSWORD);
    opts.set_transport(Transport::tls(
        std::fs::read(&ca).unwrap(),
        Some((std::fs::read(&client_cert).unwrap(), std::fs::read(&client_key).unwrap())),
        None,
    ));
    let sub = Sub::start(opts, false);

    let pw_file = dir.path().join("broker.password");
    std::fs::write(&pw_file, format!("{BROKER_PASSWORD}\n")).unwrap();
    let tls = |pw: &Path| {
        format!(
            "port = {port}, tls = true, ca_file = \"{}\", client_cert = \"{}\", client_key = \"{}\", username = \"agent\", password_file = \"{}\"",
            ca.display(),
            client_cert.display(),
            client_key.display(),
            pw.display()
        )
    };
    // One camera streams; one (with a password in its URL) cannot connect,
    // so its URL goes through every error path.
    let cameras = format!(
        "{}{}",
        lane_camera("pattern", "test://ball", ""),
        lane_camera("locked", &format!("rtsp://admin:{CAMERA_PASSWORD}@127.0.0.1:{}/cam", free_port().unwrap()), "")
    );
    let http = free_port().unwrap();
    let config = write_config(dir.path(), http, &tls(&pw_file), "", &cameras);
    let agent = Agent::spawn(&config, http, &[]);
    sub.wait_for("agent online over TLS", Duration::from_secs(30), |m| {
        m.topic == format!("{BASE}/status") && m.json()["state"] == "online"
    });
    sub.wait_for("camera status over TLS", Duration::from_secs(30), |m| camera_is(m, "pattern", "streaming"));
    sub.wait_for("the locked camera's error", Duration::from_secs(30), |m| {
        m.topic.ends_with("/cameras/locked/status") && m.json()["last_error"].is_string()
    });
    let api = http::get(http, "/api/cameras").unwrap().1;
    let metrics = http::get(http, "/metrics").unwrap().1;
    let (ready, _) = http::get(http, "/readyz").unwrap();
    assert_eq!(ready, 200);

    // A second agent with the wrong password: a clear error, no panic.
    let wrong = dir.path().join("wrong.password");
    std::fs::write(&wrong, "not-the-password\n").unwrap();
    let dir2 = tempfile::tempdir().unwrap();
    let http2 = free_port().unwrap();
    let config2 = write_config(dir2.path(), http2, &tls(&wrong), "", &lane_camera("pattern", "test://ball", ""));
    let mut agent2 = Agent::spawn(&config2, http2, &[]);
    wait_until("the wrong password is reported", Duration::from_secs(30), || {
        agent2.log().contains("bad username or password") || agent2.log().contains("not authorised")
    });
    assert!(!agent2.exited(), "a refused connection is retried, not fatal");
    assert_eq!(agent2.metric("alleywatch_mqtt_connected", &[]), 0.0);
    let log2 = agent2.stop();
    assert!(log2.contains("broker.username"), "the error says what to check: {log2}");

    let log = agent.stop();
    assert!(log.contains("MQTT connected"), "{log}");
    // No credential in any output: log, topics, payloads, /api, /metrics.
    let mut outputs =
        vec![("agent log".to_string(), log.into_bytes()), ("wrong-password log".into(), log2.into_bytes())];
    outputs.push(("/api/cameras".into(), api));
    outputs.push(("/metrics".into(), metrics));
    for m in sub.all() {
        outputs.push((format!("topic {}", m.topic), m.topic.clone().into_bytes()));
        outputs.push((format!("payload on {}", m.topic), m.payload));
    }
    for (what, bytes) in &outputs {
        let text = String::from_utf8_lossy(bytes);
        for secret in [BROKER_PASSWORD, CAMERA_PASSWORD] {
            assert!(!text.contains(secret), "{secret} leaked into {what}");
        }
    }
    drop(broker);
}
