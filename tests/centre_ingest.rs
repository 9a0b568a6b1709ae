//! The centre's ingest end to end: the real `alleywatch-centre` and
//! `edge-agent` binaries, a real mosquitto on a free loopback port, real
//! H.264 from an in-process RTSP server, and the centre's SQLite database
//! read back through the centre's own store.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use alleywatch_centre::config::Config;
use alleywatch_centre::store::Store;
use alleywatch_devkit::{free_port, Mosquitto, RtspServer, DEMO_LANE};
use alleywatch_testkit::{
    centre_bin, clip, lane_camera, serial, wait_until, write_centre_config, write_config, Agent, Centre, Sub,
};
use serde_json::{json, Value};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

/// The centre's store, opened beside the running centre (SQLite in WAL
/// mode lets a second connection read).
fn store(rt: &tokio::runtime::Runtime, config: &Path) -> Store {
    rt.block_on(Store::open(&Config::load(config).unwrap())).unwrap()
}

/// `(id, seq)` of every event message in `msgs`.
fn event_keys(msgs: &[alleywatch_testkit::Msg]) -> BTreeSet<(String, i64)> {
    msgs.iter()
        .filter(|m| m.topic.contains("/events/") && !m.topic.ends_with("/snapshot"))
        .map(|m| {
            let v = m.json();
            (v["id"].as_str().unwrap().to_string(), v["seq"].as_i64().unwrap())
        })
        .collect()
}

#[test]
fn alerts_raised_while_the_centre_is_down_arrive_once_each_when_it_returns() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start().unwrap();
    let rtsp = RtspServer::start(&clip(), free_port().unwrap(), "/cam").unwrap();
    let centre_http = free_port().unwrap();
    let centre_config = write_centre_config(dir.path(), broker.port(), centre_http, "d1");

    // The first run registers the centre's persistent session; then it goes away.
    Centre::start(&centre_config, centre_http).stop();

    // Three cameras on the parked-cars clip: three lane alerts while the
    // centre is down. A plain subscriber sees what the agent published.
    let watcher = Sub::plain(broker.port(), "watcher");
    let lane = format!("{{ name = \"kerb\", polygon = {DEMO_LANE}, classes = [\"car\", \"truck\", \"bus\"], dwell_s = 3, clear_s = 2 }}");
    let cameras: String = (1..=3).map(|i| lane_camera(&format!("cam-{i}"), &rtsp.url(), &lane)).collect();
    let agent_http = free_port().unwrap();
    let agent_config = write_config(dir.path(), agent_http, &format!("port = {}", broker.port()), "", &cameras);
    let agent = Agent::spawn(&agent_config, agent_http, &[]);
    wait_until("three lane starts, one per camera", Duration::from_secs(60), || {
        let starts: BTreeSet<String> = watcher
            .all()
            .iter()
            .filter(|m| alleywatch_testkit::is_event(m, "lane_blocked", "start"))
            .map(|m| m.json()["camera"]["id"].as_str().unwrap_or_default().to_string())
            .collect();
        starts.len() == 3
    });
    // A graceful stop ends the open events too: a finite set to compare.
    agent.stop();
    let published = event_keys(&watcher.all());
    let alert_ids: BTreeSet<&str> = published.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(alert_ids.len(), 3, "three alerts: {published:?}");

    let centre = Centre::start(&centre_config, centre_http);
    let rt = runtime();
    let store = store(&rt, &centre_config);
    wait_until("every event message stored", Duration::from_secs(20), || {
        let mut stored = BTreeSet::new();
        for a in rt.block_on(store.alerts()).unwrap() {
            for (seq, _, _) in rt.block_on(store.messages(&a.id)).unwrap() {
                stored.insert((a.id.clone(), seq));
            }
        }
        stored == published
    });
    let alerts = rt.block_on(store.alerts()).unwrap();
    assert_eq!(alerts.len(), 3, "{alerts:?}");
    for a in &alerts {
        assert_eq!((a.kind.as_str(), a.zone.as_deref(), a.site.as_str()), ("lane_blocked", Some("kerb"), "d1/s1/c1"));
        assert_eq!(a.phase, "end", "the agent's stop ended it: {a:?}");
        let messages = rt.block_on(store.messages(&a.id)).unwrap();
        let seqs: Vec<i64> = messages.iter().map(|m| m.0).collect();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "in seq order, once each: {seqs:?}");
        assert_eq!(messages.first().map(|m| m.1.as_str()), Some("start"));
        assert_eq!(a.last_seq, *seqs.last().unwrap());
        let snapshots = rt.block_on(store.snapshots(&a.id)).unwrap();
        assert!(!snapshots.is_empty(), "the start's snapshot is stored for {}", a.id);
        let file = store.files().path(&snapshots[0].sha256).unwrap();
        assert_eq!(std::fs::metadata(&file).unwrap().len() as i64, snapshots[0].bytes);
    }
    let cameras = rt.block_on(store.cameras()).unwrap();
    assert_eq!(cameras.iter().map(|c| c.camera.as_str()).collect::<Vec<_>>(), ["cam-1", "cam-2", "cam-3"]);
    let agents = rt.block_on(store.agents()).unwrap();
    assert_eq!(agents.len(), 1);
    assert_eq!((agents[0].1.as_str(), agents[0].2.as_str()), ("test-agent", "offline"), "the agent's last word");
    assert_eq!(centre.metric("alleywatch_centre_messages_total", &[("subject", "event")]), published.len() as f64);
    assert_eq!(centre.metric("alleywatch_centre_duplicates_total", &[]), 0.0);
    assert!(rt.block_on(store.gaps()).unwrap().is_empty());
    drop(rtsp);
}

/// An event message as an agent sends it, for the hand-made cases.
fn event(id: &str, seq: u64, phase: &str) -> Value {
    json!({
        "schema": "alleywatch.event.v1", "id": id, "seq": seq, "kind": "fire", "type": phase,
        "severity": "critical", "agent": "box-9", "site": "d1/s2/c3",
        "camera": {"id": "cam-9", "name": "Back lane"}, "zone": null,
        "started_at": "2026-12-03T10:00:00.000Z", "updated_at": "2026-12-03T10:00:05.000Z", "ended_at": null,
        "duration_s": 5.0, "score": {"peak": 0.9, "current": 0.8},
        "evidence": {"objects": [], "track_ids": [], "occupancy": null, "keypoints": null},
        "rule": {}, "model": {"name": "fire", "version": "0123456789ab", "format": "nanodet"}, "snapshot": null
    })
}

#[test]
fn duplicates_are_stored_once_gaps_are_shown_and_garbage_never_stops_ingest() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start().unwrap();
    let http = free_port().unwrap();
    let config = write_centre_config(dir.path(), broker.port(), http, "d1");
    let centre = Centre::start(&config, http);
    let publisher = Sub::plain(broker.port(), "fake-agent");
    let base = "alleywatch/d1/s2/c3/box-9";
    let events = format!("{base}/events/fire");

    // Garbage on every topic an agent publishes on, and on some it does not.
    let garbage: [(&str, &[u8]); 9] = [
        ("status", b"{"),
        ("cameras/cam-9/status", b"not json"),
        ("events/fire", b"\xC3\x28"),
        ("events/fire", br#"{"schema": "alleywatch.event.v1", "id": "x"}"#),
        ("events/fire/e-1/snapshot", b"GIF89a"),
        ("replies", b"[]"),
        ("events/flood", b"{}"),
        ("cameras/cam-9/status", br#"{"camera":"cam-8","name":"x","state":"failed","fps":0,"last_frame_at":null,"last_error":null,"reconnects":0,"at":"2026-12-03T10:00:00.000Z"}"#),
        ("status", br#"{"state":"online","agent":"someone-else","site":"d1/s2/c3","version":"1","cameras":[],"at":"2026-12-03T10:00:00.000Z"}"#),
    ];
    for (sub, payload) in garbage {
        publisher.client.publish(format!("{base}/{sub}"), rumqttc::QoS::AtLeastOnce, false, payload.to_vec()).unwrap();
    }
    // seq 1, 2, 2 again, 4 (3 never came), 5, and a snapshot.
    for (seq, phase) in [(1, "start"), (2, "update"), (2, "update"), (4, "update"), (5, "end")] {
        let mut e = event("e-1", seq, phase);
        if phase == "end" {
            e["ended_at"] = json!("2026-12-03T10:01:00.000Z");
        }
        publisher.publish(&events, e);
    }
    let jpeg = b"\xFF\xD8\xFF\xE0fake-but-marked-jpeg".to_vec();
    publisher.client.publish(format!("{events}/e-1/snapshot"), rumqttc::QoS::AtLeastOnce, false, jpeg.clone()).unwrap();

    let rt = runtime();
    let store = store(&rt, &config);
    wait_until("the last message stored", Duration::from_secs(20), || {
        centre.metric("alleywatch_centre_messages_total", &[("subject", "snapshot")]) == 1.0
            && rt.block_on(store.alerts()).unwrap().first().is_some_and(|a| a.last_seq == 5)
    });
    let seqs: Vec<i64> = rt.block_on(store.messages("e-1")).unwrap().iter().map(|m| m.0).collect();
    assert_eq!(seqs, [1, 2, 4, 5]);
    let alert = &rt.block_on(store.alerts()).unwrap()[0];
    assert_eq!((alert.phase.as_str(), alert.severity.as_str(), alert.ended_at_ms.is_some()), ("end", "critical", true));
    let gaps = rt.block_on(store.gaps()).unwrap();
    assert_eq!(gaps.len(), 1);
    assert_eq!((gaps[0].agent.as_str(), gaps[0].first, gaps[0].last), ("box-9", 3, 3));
    assert_eq!(centre.metric("alleywatch_centre_duplicates_total", &[]), 1.0);
    wait_until("the gap gauge", Duration::from_secs(30), || centre.metric("alleywatch_centre_seq_missing", &[]) == 1.0);
    let refused: HashMap<&str, f64> = ["json", "topic", "mismatch", "not_jpeg"]
        .into_iter()
        .map(|r| (r, centre.metric("alleywatch_centre_messages_refused_total", &[("reason", r)])))
        .collect();
    assert_eq!(refused, HashMap::from([("json", 5.0), ("topic", 1.0), ("mismatch", 2.0), ("not_jpeg", 1.0)]));
    let snapshots = rt.block_on(store.snapshots("e-1")).unwrap();
    assert_eq!(std::fs::read(store.files().path(&snapshots[0].sha256).unwrap()).unwrap(), jpeg);

    // The late seq 3 fills the gap.
    publisher.publish(&events, event("e-1", 3, "update"));
    wait_until("the gap filled", Duration::from_secs(10), || rt.block_on(store.gaps()).unwrap().is_empty());
    assert_eq!(rt.block_on(store.alerts()).unwrap()[0].phase, "end", "a late update does not reopen the alert");
    let log = centre.log();
    assert!(!log.contains("panicked"), "{log}");

    // The command line shows the same board.
    let out = Command::new(centre_bin()).args(["alerts", "--config"]).arg(&config).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains(r#""id":"e-1""#) && text.contains(r#""snapshots":1"#), "{text}");
}

#[test]
fn check_config_accepts_a_good_file_and_names_the_line_of_a_bad_one() {
    let dir = tempfile::tempdir().unwrap();
    let good = write_centre_config(dir.path(), 1883, 8090, "shapingba");
    let out = Command::new(centre_bin()).args(["check-config", "--config"]).arg(&good).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("subscribes to alleywatch/shapingba/#"), "{text}");
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, std::fs::read_to_string(&good).unwrap().replace("keep_alive_s = 5", "keep_alive_s = 1"))
        .unwrap();
    let out = Command::new(centre_bin()).args(["check-config", "--config"]).arg(&bad).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("bad.toml:9: broker.keep_alive_s: 1 must be 5–3600"), "{err}");

    // The example a technician starts from is itself valid.
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/centre.example.toml");
    let out = Command::new(centre_bin()).args(["check-config", "--config"]).arg(&example).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("subscribes to alleywatch/shapingba/#"), "{text}");
}
