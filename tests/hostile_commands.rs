//! Hostile commands (issue 19, items 1–3) against the real binary, a real
//! mosquitto and the in-process RTSP server:
//!
//! - retained `set` and `reference` commands, and a retained command larger
//!   than the client's old 1 MiB packet limit, waiting on the broker before
//!   the agent starts: each is refused with a reply that says why, none is
//!   applied, the connection is never lost, and a `lane_blocked` event is
//!   still delivered;
//! - a corrupt `overlay.toml` at start is set aside (renamed, counted in
//!   `alleywatch_overlay_set_aside_total`) and the agent starts from the
//!   config file alone;
//! - a retained command over even the client's 16 MiB incoming limit costs
//!   one dropped connection, never an alert: the agent reconnects without
//!   the commands until the spool is drained, and the alert in flight is
//!   not blamed (set aside) for the drop.

use std::time::Duration;

use alleywatch_devkit::{free_port, Mosquitto, RtspServer, DEMO_LANE};
use alleywatch_testkit::{clip, http, is_event, lane_camera, serial, wait_until, write_config, Agent, Sub, BASE};
use rumqttc::{Client, Event, MqttOptions, Packet, QoS};
use serde_json::{json, Value};

/// Publishes retained messages and waits for each PUBACK, with an outgoing
/// limit large enough for the oversize command.
fn publish_retained(port: u16, messages: &[(String, Vec<u8>)]) {
    let mut opts = MqttOptions::new("hostile-publisher", "127.0.0.1", port);
    opts.set_max_packet_size(1 << 20, 8 << 20);
    let (client, mut conn) = Client::new(opts, 16);
    for (topic, payload) in messages {
        client.publish(topic.as_str(), QoS::AtLeastOnce, true, payload.clone()).unwrap();
    }
    let mut acked = 0;
    for ev in conn.iter() {
        if let Event::Incoming(Packet::PubAck(_)) = ev.expect("publisher connection") {
            acked += 1;
            if acked == messages.len() {
                break;
            }
        }
    }
    client.disconnect().unwrap();
}

/// A broker, the demo clip over RTSP, and an agent config watching it
/// with a one-second lane over the parked cars.
struct Scene {
    dir: tempfile::TempDir,
    broker: Mosquitto,
    _server: RtspServer,
    http: u16,
    config: std::path::PathBuf,
}

impl Scene {
    fn new() -> Scene {
        let dir = tempfile::tempdir().unwrap();
        let broker = Mosquitto::start().expect("mosquitto");
        let server = RtspServer::start(&clip(), 0, "/cam").expect("rtsp server");
        let http = free_port().unwrap();
        let url = format!("rtsp://127.0.0.1:{}/cam", server.port());
        let lane = format!(
            "{{ name = \"kerb\", polygon = {DEMO_LANE}, classes = [\"car\", \"truck\", \"bus\"], dwell_s = 1, clear_s = 2 }}"
        );
        let config = write_config(
            dir.path(),
            http,
            &format!("port = {}", broker.port()),
            "",
            &lane_camera("cam-1", &url, &lane),
        );
        Scene { dir, broker, _server: server, http, config }
    }
}

fn reply_to<'a>(replies: &'a [Value], command: &str) -> Option<&'a Value> {
    replies.iter().find(|r| r["command"] == command)
}

#[test]
fn retained_and_oversize_commands_are_refused_and_a_corrupt_overlay_is_set_aside() {
    let _serial = serial();
    let Scene { dir, broker, _server, http, config } = Scene::new();
    // A corrupt overlay, as a power cut halfway through a write leaves it.
    std::fs::create_dir_all(dir.path().join("state")).unwrap();
    std::fs::write(dir.path().join("state/overlay.toml"), "[[set]]\nkey = \"cameras.cam-1.lanes.kerb.dw").unwrap();

    // Waiting on the broker before the agent subscribes.
    let set = json!({"by": "attacker", "request_id": "r-set", "changes": {"cameras.cam-1.lanes.kerb.dwell_s": 3}});
    let reference = json!({"by": "attacker", "request_id": "r-ref", "camera": "cam-1"});
    let oversize = json!({"by": "attacker", "event_id": "e", "note": "x".repeat(2 << 20)});
    publish_retained(
        broker.port(),
        &[
            (format!("{BASE}/commands/set"), set.to_string().into_bytes()),
            (format!("{BASE}/commands/reference"), reference.to_string().into_bytes()),
            (format!("{BASE}/commands/ack"), oversize.to_string().into_bytes()),
        ],
    );

    let sub = Sub::plain(broker.port(), "hostile-sub");
    let agent = Agent::spawn(&config, http, &["--no-watch"]);
    let replies = || -> Vec<Value> {
        sub.all().iter().filter(|m| m.topic == format!("{BASE}/replies")).map(|m| m.json()).collect()
    };
    wait_until("three replies", Duration::from_secs(40), || replies().len() >= 3);
    let replies = replies();
    for (command, request_id, why) in [
        ("set", Some("r-set"), "retained commands are refused"),
        ("reference", Some("r-ref"), "retained commands are refused"),
        ("ack", None, "a command is at most 65536 bytes"),
    ] {
        let r = reply_to(&replies, command).unwrap_or_else(|| panic!("no {command} reply in {replies:?}"));
        assert_eq!(r["ok"], false, "{r}");
        assert!(r["error"].as_str().unwrap().contains(why), "{command}: {r}");
        assert_eq!(r["request_id"].as_str(), request_id, "{r}");
    }

    // The set was not applied: the lane keeps the file's dwell, and no
    // overlay was written.
    let start = sub.wait_for("lane_blocked start", Duration::from_secs(40), |m| is_event(m, "lane_blocked", "start"));
    assert_eq!(start.json()["rule"]["dwell_s"], 1.0, "the retained set changed the lane");
    assert!(!dir.path().join("state/overlay.toml").exists(), "the corrupt overlay is set aside and no set is saved");
    let aside: Vec<String> = std::fs::read_dir(dir.path().join("state"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("overlay.toml.refused-"))
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");

    // The event was delivered (the spool drains) and the connection held.
    wait_until("the spool drains", Duration::from_secs(20), || agent.metric("alleywatch_spool_messages", &[]) == 0.0);
    let m = agent.metrics();
    assert_eq!(http::metric(&m, "alleywatch_mqtt_connected", &[]), 1.0);
    assert_eq!(http::metric(&m, "alleywatch_mqtt_failures_total", &[]), 0.0, "the connection was lost");
    assert_eq!(http::metric(&m, "alleywatch_commands_refused_total", &[("reason", "retained")]), 2.0);
    assert_eq!(http::metric(&m, "alleywatch_commands_refused_total", &[("reason", "too_large")]), 1.0);
    assert_eq!(http::metric(&m, "alleywatch_overlay_set_aside_total", &[]), 1.0);
    let log = agent.stop();
    assert!(!log.contains("MQTT connection lost"), "{log}");
    assert!(log.contains("overlay refused: set aside") && log.contains("overlay.toml"), "{log}");
}

/// A retained command larger than even the client's incoming limit
/// (16 MiB): the client must drop the connection on it, so the agent
/// reconnects without the commands subscription until its alerts are
/// delivered, and never blames (or sets aside) the alert in flight.
#[test]
fn a_command_over_the_packet_limit_never_holds_back_or_strikes_an_alert() {
    let _serial = serial();
    let Scene { dir: _dir, broker, _server, http, config } = Scene::new();
    let huge = vec![b'x'; edge_agent::alert::MAX_INCOMING_PACKET + (1 << 20)];
    let mut opts = MqttOptions::new("hostile-giant", "127.0.0.1", broker.port());
    opts.set_max_packet_size(1 << 20, 64 << 20);
    let (client, mut conn) = Client::new(opts, 4);
    client.publish(format!("{BASE}/commands/ack"), QoS::AtLeastOnce, true, huge).unwrap();
    for ev in conn.iter() {
        if let Event::Incoming(Packet::PubAck(_)) = ev.expect("publisher connection") {
            break;
        }
    }
    client.disconnect().unwrap();

    let sub = Sub::plain(broker.port(), "giant-sub");
    let agent = Agent::spawn(&config, http, &["--no-watch"]);
    sub.wait_for("lane_blocked start", Duration::from_secs(60), |m| is_event(m, "lane_blocked", "start"));
    wait_until("the spool drains", Duration::from_secs(30), || agent.metric("alleywatch_spool_messages", &[]) == 0.0);
    wait_until("connected again", Duration::from_secs(10), || agent.metric("alleywatch_mqtt_connected", &[]) == 1.0);
    let m = agent.metrics();
    assert_eq!(http::metric(&m, "alleywatch_spool_set_aside_total", &[]), 0.0, "an alert was blamed for the command");
    assert!(http::metric(&m, "alleywatch_commands_refused_total", &[("reason", "too_large")]) >= 1.0);
    let failures = http::metric(&m, "alleywatch_mqtt_failures_total", &[]);
    assert!((1.0..=2.0).contains(&failures), "one drop, then the commands wait: {failures} drops");
    let log = agent.stop();
    assert!(log.contains("over the incoming packet limit"), "{log}");
}
