//! The centre's console end to end: the real `alleywatch-centre` (and, for
//! the loop, the real `edge-agent` on real H.264 from an in-process RTSP
//! server), a real mosquitto on a free loopback port, users made with the
//! centre's own `user add`, and the console driven as people drive it:
//! headless Chromium for the loop, its JSON API for scope and abuse.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use alleywatch_centre::config::Config;
use alleywatch_centre::store::Store;
use alleywatch_devkit::{free_port, Mosquitto, RtspServer, DEMO_LANE};
use alleywatch_testkit::browser::{Cdp, Chromium};
use alleywatch_testkit::centre::{add_user, write_centre_config_with, ConsoleUser};
use alleywatch_testkit::{
    clip, http, lane_camera, serial, wait_until, write_centre_config, write_config, Agent, Centre, Sub,
};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

const PASSWORD: &str = "a long test password";

/// An event message as an agent of `site` sends it.
fn event(id: &str, site: &str, agent: &str, kind: &str, severity: &str) -> Value {
    json!({
        "schema": "alleywatch.event.v1", "id": id, "seq": 1, "kind": kind, "type": "start",
        "severity": severity, "agent": agent, "site": site,
        "camera": {"id": "cam-1", "name": format!("{site} gate")}, "zone": null,
        "started_at": "2026-12-03T10:00:00.000Z", "updated_at": "2026-12-03T10:00:00.000Z", "ended_at": null,
        "duration_s": 0.0, "score": {"peak": 0.9, "current": 0.9},
        "evidence": {"objects": [], "track_ids": [], "occupancy": null, "keypoints": null},
        "rule": {}, "model": {"name": "m", "version": "0123456789ab", "format": "nanodet"}, "snapshot": null
    })
}

fn user(config: &std::path::Path, name: &str, role: &str, scope: &str) {
    let out = add_user(config, name, role, scope, PASSWORD);
    assert!(out.status.success(), "user add {name}: {}", String::from_utf8_lossy(&out.stderr));
}

fn ids(board: &Value) -> BTreeSet<String> {
    board["alerts"].as_array().unwrap().iter().map(|a| a["id"].as_str().unwrap().to_string()).collect()
}

#[test]
fn a_user_sees_and_acts_on_their_scope_only_and_the_loop_keeps_its_order() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start().unwrap();
    let port = free_port().unwrap();
    let config = write_centre_config(dir.path(), broker.port(), port, "d1");
    user(&config, "op-a", "operator", "d1/s1/c1");
    user(&config, "view-b", "viewer", "d1/s1/c2");
    user(&config, "street", "supervisor", "d1/s1");
    // No default account, no second user of a name, no scope outside the centre.
    assert!(!add_user(&config, "op-a", "operator", "d1/s1/c1", PASSWORD).status.success());
    let outside = add_user(&config, "x", "operator", "d2", PASSWORD);
    assert!(String::from_utf8_lossy(&outside.stderr).contains("outside this centre's site d1"));
    assert!(!add_user(&config, "y", "operator", "d1", "short").status.success());
    let centre = Centre::start(&config, port);

    // Nothing without a session, on every path.
    for path in
        ["/api/alerts", "/api/alerts/a-1", "/api/live", "/api/me", &format!("/api/snapshots/{}", "0".repeat(64))]
    {
        assert_eq!(http::get(port, path).unwrap().0, 401, "{path}");
    }
    let (status, page) = http::get(port, "/").unwrap();
    assert_eq!(status, 200);
    assert!(String::from_utf8_lossy(&page).contains("console.js"));

    let a = ConsoleUser::login(port, "op-a", PASSWORD).unwrap();
    let b = ConsoleUser::login(port, "view-b", PASSWORD).unwrap();
    let street = ConsoleUser::login(port, "street", PASSWORD).unwrap();
    let live_a = a.live();
    assert_eq!(live_a.status, 200);

    // One alert in each of three communities, each with a snapshot.
    let agent = Sub::plain(broker.port(), "fake-agents");
    let mut jpegs = std::collections::HashMap::new();
    for (id, site, box_id) in [("b-1", "d1/s1/c2", "box-b"), ("c-1", "d1/s2/c3", "box-c"), ("a-1", "d1/s1/c1", "box-a")]
    {
        let topic = format!("alleywatch/{site}/{box_id}/events/fire");
        agent.publish(&topic, event(id, site, box_id, "fire", "critical"));
        let jpeg: Vec<u8> = [&[0xFF, 0xD8, 0xFF, 0xE0][..], format!("snapshot of {id}").as_bytes()].concat();
        agent.client.publish(format!("{topic}/{id}/snapshot"), rumqttc::QoS::AtLeastOnce, false, jpeg.clone()).unwrap();
        jpegs.insert(id, format!("{:x}", Sha256::digest(&jpeg)));
    }
    wait_until("both of s1's alerts on the street's board", Duration::from_secs(20), || {
        let (_, board) = street.get("/api/alerts");
        ids(&board).len() == 2 && board["alerts"].as_array().unwrap().iter().all(|a| a["snapshot"].is_string())
    });
    wait_until("op-a's live stream heard its alert", Duration::from_secs(10), || {
        live_a.events().iter().any(|(_, d)| d.contains("a-1"))
    });

    // Board, detail, snapshot, stream and actions: each cut to the scope.
    let (_, board) = a.get("/api/alerts");
    assert_eq!(ids(&board), BTreeSet::from(["a-1".to_string()]));
    let (_, board) = street.get("/api/alerts");
    assert_eq!(ids(&board), BTreeSet::from(["a-1".to_string(), "b-1".to_string()]));
    assert_eq!(a.get("/api/alerts/a-1").0, 200);
    assert_eq!(a.get("/api/alerts/b-1").0, 404);
    assert_eq!(a.get("/api/alerts/c-1").0, 404);
    assert_eq!(a.get_bytes(&format!("/api/snapshots/{}", jpegs["a-1"])).0, 200);
    assert_eq!(a.get_bytes(&format!("/api/snapshots/{}", jpegs["b-1"])).0, 404);
    assert_eq!(b.get_bytes(&format!("/api/snapshots/{}", jpegs["b-1"])).0, 200);
    assert_eq!(a.post("/api/alerts/b-1/assess", &json!({"verdict": "real", "reason": "x"})).0, 404);
    let heard: Vec<String> = live_a.events().into_iter().map(|(_, d)| d).collect();
    assert!(heard.iter().all(|d| d.contains("a-1")), "op-a heard only its own alert: {heard:?}");

    // A viewer cannot act; no change without the CSRF token.
    let (status, body) = b.post("/api/alerts/b-1/assess", &json!({"verdict": "real", "reason": "x"}));
    assert_eq!(status, 403, "{body}");
    let (status, body) = a.post_without_csrf("/api/alerts/a-1/assess", &json!({"verdict": "real", "reason": "x"}));
    assert_eq!(status, 403, "{body}");

    // The loop's order, and every step recorded with who and when.
    let (status, body) = a.post("/api/alerts/a-1/dispatch", &json!({"handler": "grid worker 7"}));
    assert_eq!((status, body["error"].as_str()), (409, Some("assess the alert first")));
    let (status, body) = a.post("/api/alerts/a-1/assess", &json!({"verdict": "maybe"}));
    assert_eq!(status, 400, "{body}");
    let (status, body) = a.post("/api/alerts/a-1/assess", &json!({"verdict": "false_alarm", "reason": "sunset"}));
    assert_eq!((status, body["alert"]["state"].as_str()), (200, Some("assessed")), "{body}");
    let (status, _) = a.post("/api/alerts/a-1/dispatch", &json!({"handler": "grid worker 7"}));
    assert_eq!(status, 409, "a false alarm is not dispatched");
    let ack = agent.wait_for("the ack on box-a's command topic", Duration::from_secs(10), |m| {
        m.topic == "alleywatch/d1/s1/c1/box-a/commands/ack"
    });
    assert_eq!((ack.json()["event_id"].as_str(), ack.json()["by"].as_str()), (Some("a-1"), Some("op-a")));
    let (status, body) = a.post("/api/alerts/a-1/close", &json!({"note": "sun on the wall"}));
    assert_eq!((status, body["alert"]["state"].as_str()), (200, Some("closed")), "{body}");
    agent.wait_for("the resolve", Duration::from_secs(10), |m| m.topic.ends_with("box-a/commands/resolve"));
    assert!(ids(&a.get("/api/alerts").1).is_empty(), "a closed alert leaves the board");
    assert_eq!(ids(&a.get("/api/alerts?all=1").1), BTreeSet::from(["a-1".to_string()]));
    let (_, detail) = a.get("/api/alerts/a-1");
    let steps: Vec<(&str, &str)> = detail["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["step"].as_str().unwrap(), s["by"].as_str().unwrap()))
        .collect();
    assert_eq!(steps, [("assess", "op-a"), ("close", "op-a")]);
    assert!(detail["steps"][0]["at"].as_i64().unwrap() > 1_700_000_000_000);

    // Failed logins: past the limit even the right password is refused.
    for _ in 0..5 {
        assert_eq!(ConsoleUser::login(port, "street", "wrong password!").err().unwrap().0, 401);
    }
    assert_eq!(ConsoleUser::login(port, "street", PASSWORD).err().unwrap().0, 429);
    assert_eq!(ConsoleUser::login(port, "nobody", PASSWORD).err().unwrap().0, 401);

    // The audit log holds every action, with who.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let store = rt.block_on(Store::open(&Config::load(&config).unwrap())).unwrap();
    let audit: Vec<(Option<String>, String)> =
        rt.block_on(store.audit_log()).unwrap().into_iter().map(|e| (e.user, e.action)).collect();
    for want in [
        (Some("op-a"), "login"),
        (Some("op-a"), "assess"),
        (Some("op-a"), "close"),
        (Some("street"), "login_failed"),
        (Some("street"), "login_limited"),
        (None, "user_add"),
    ] {
        assert!(audit.iter().any(|(u, a)| u.as_deref() == want.0 && a == want.1), "{want:?} in {audit:?}");
    }
    let log = centre.log();
    assert!(!log.contains("panicked") && !log.contains(PASSWORD), "{log}");
}

#[test]
fn an_operator_runs_the_loop_in_chromium_and_the_agent_hears_ack_then_resolve() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start().unwrap();
    let rtsp = RtspServer::start(&clip(), free_port().unwrap(), "/cam").unwrap();
    let port = free_port().unwrap();
    let config = write_centre_config(dir.path(), broker.port(), port, "d1");
    user(&config, "op-1", "operator", "d1/s1/c1");
    user(&config, "sup-1", "supervisor", "d1/s1");
    let centre = Centre::start(&config, port);

    let browser = Chromium::start();
    let mut page = browser.page();
    page.call("Page.enable", json!({}));
    page.call("Page.navigate", json!({ "url": format!("http://127.0.0.1:{port}/") }));
    page.wait_for(
        "the login form",
        "!!document.getElementById('login-view') && !document.getElementById('login-view').hidden",
    );
    page.eval(&format!(
        "document.getElementById('login-name').value = 'op-1'; \
         document.getElementById('login-password').value = {PASSWORD:?}; true"
    ));
    page.click_on("#login-submit");
    page.wait_for(
        "the board",
        "!!document.getElementById('board') && document.getElementById('board').offsetParent !== null",
    );

    // The agent raises a lane alert while the page is open.
    let watcher = Sub::plain(broker.port(), "watcher");
    let lane = format!("{{ name = \"kerb\", polygon = {DEMO_LANE}, classes = [\"car\", \"truck\", \"bus\"], dwell_s = 3, clear_s = 2 }}");
    let agent_http = free_port().unwrap();
    let agent_config = write_config(
        dir.path(),
        agent_http,
        &format!("port = {}", broker.port()),
        "",
        &lane_camera("cam-1", &rtsp.url(), &lane),
    );
    let _agent = Agent::spawn(&agent_config, agent_http, &[]);
    let start = watcher.wait_for("the lane start", Duration::from_secs(60), |m| {
        alleywatch_testkit::is_event(m, "lane_blocked", "start")
    });
    let id = start.json()["id"].as_str().unwrap().to_string();
    let published = Instant::now();
    let row = format!("document.querySelector('#board tr[data-id=\"{id}\"]')");
    page.wait_for("the alert on the board without a reload", &format!("!!{row}"));
    eprintln!("alert on the board {:?} after the agent published it", published.elapsed());

    // Assess, dispatch, handled with a photo, close: all by clicks.
    // Clicks are the page's own (element.click()): the board re-renders on
    // every message the agent sends, so a mouse aimed at coordinates could
    // land on a row that moved; the handlers run the same either way.
    page.eval(&format!("document.querySelector('#board tr[data-id=\\\"{id}\\\"]').click(); true"));
    page.wait_for(
        "the detail with its actions",
        "!!document.getElementById('assess-submit') && !document.getElementById('assess-submit').disabled",
    );
    let step = |page: &mut Cdp, n: usize, fill: &str, button: &str| {
        page.eval(&format!("{fill}; true"));
        page.eval(&format!("document.getElementById('{button}').click(); true"));
        page.wait_for(
            &format!("step {n} stored or refused"),
            &format!(
                "document.getElementById('action-error').textContent !== '' || \
                 fetch('/api/alerts/{id}').then(r => r.json()).then(d => d.steps.length >= {n})"
            ),
        );
        let error = page.eval("document.getElementById('action-error').textContent");
        assert_eq!(error, json!(""), "step {n} ({button}) refused");
    };
    step(
        &mut page,
        1,
        "document.getElementById('assess-verdict').value = 'real'; document.getElementById('assess-reason').value = 'van on the fire lane'",
        "assess-submit",
    );
    watcher.wait_for("ack to the agent", Duration::from_secs(10), |m| m.topic.ends_with("/commands/ack"));
    page.wait_for("dispatch enabled", "!document.getElementById('dispatch-submit').disabled");
    step(
        &mut page,
        2,
        "document.getElementById('dispatch-handler').value = 'grid team 3'; document.getElementById('dispatch-note').value = 'move the van'",
        "dispatch-submit",
    );
    // The handler's photo, chosen in the file input as a person would.
    let photo = dir.path().join("photo.jpg");
    let snapshot = wait_until("a snapshot of the alert", Duration::from_secs(20), || {
        watcher.all().into_iter().find(|m| m.topic.ends_with(&format!("/{id}/snapshot"))).map(|m| m.payload)
    });
    std::fs::write(&photo, &snapshot).unwrap();
    let doc = page.call("DOM.getDocument", json!({}));
    let node = page.call("DOM.querySelector", json!({"nodeId": doc["root"]["nodeId"], "selector": "#handled-photo"}));
    page.call("DOM.setFileInputFiles", json!({"nodeId": node["nodeId"], "files": [photo.display().to_string()]}));
    page.wait_for("handled enabled", "!document.getElementById('handled-submit').disabled");
    step(&mut page, 3, "document.getElementById('handled-note').value = 'van moved'", "handled-submit");
    page.wait_for("close enabled", "!document.getElementById('close-submit').disabled");
    step(&mut page, 4, "document.getElementById('close-note').value = 'lane clear'", "close-submit");

    // The agent heard ack (twice: assess, dispatch) then resolve, and said ok to each.
    let replies = wait_until("three ok replies", Duration::from_secs(20), || {
        let r: Vec<Value> = watcher.all().iter().filter(|m| m.topic.ends_with("/replies")).map(|m| m.json()).collect();
        (r.len() >= 3).then_some(r)
    });
    let said: Vec<(&str, bool)> =
        replies.iter().map(|r| (r["command"].as_str().unwrap(), r["ok"].as_bool().unwrap())).collect();
    assert_eq!(said, [("ack", true), ("ack", true), ("resolve", true)], "{replies:?}");

    // The database holds each step, who and when, with the agent's reply.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let store = rt.block_on(Store::open(&Config::load(&config).unwrap())).unwrap();
    let steps = wait_until("every reply matched to its step", Duration::from_secs(10), || {
        let s = rt.block_on(store.steps(&id)).unwrap();
        s.iter().filter(|s| s.command.is_some()).all(|s| s.reply.is_some()).then_some(s)
    });
    let got: Vec<(&str, &str, Option<&str>, Option<bool>)> = steps
        .iter()
        .map(|s| (s.step.as_str(), s.by.as_str(), s.command.as_deref(), s.reply.as_ref().map(|r| r.0)))
        .collect();
    assert_eq!(
        got,
        [
            ("assess", "op-1", Some("ack"), Some(true)),
            ("dispatch", "op-1", Some("ack"), Some(true)),
            ("handled", "op-1", None, None),
            ("close", "op-1", Some("resolve"), Some(true)),
        ]
    );
    assert!(steps.windows(2).all(|w| w[0].at_ms <= w[1].at_ms));
    assert_eq!(steps[1].handler.as_deref(), Some("grid team 3"));
    let photo_sha = steps[2].photo.clone().expect("the handler's photo");
    assert_eq!(std::fs::read(store.files().path(&photo_sha).unwrap()).unwrap(), snapshot);
    let alert = rt.block_on(store.alerts()).unwrap().into_iter().find(|a| a.id == id).unwrap();
    assert_eq!((alert.state.as_str(), alert.verdict.as_deref()), ("closed", Some("real")));
    // Resolve made the agent end the event, and that end reached the centre.
    wait_until("the agent's end stored", Duration::from_secs(20), || {
        rt.block_on(store.alerts()).unwrap().iter().any(|a| a.id == id && a.phase == "end")
    });

    // Tuning: a supervisor changes the lane's dwell time; the agent's
    // running config has it. An operator may not tune.
    let tune = json!({"site": "d1/s1/c1", "agent": "test-agent", "camera": "cam-1",
                      "changes": {"lanes.kerb.dwell_s": 7}});
    let op = ConsoleUser::login(port, "op-1", PASSWORD).unwrap();
    assert_eq!(op.post("/api/tune", &tune).0, 403);
    let sup = ConsoleUser::login(port, "sup-1", PASSWORD).unwrap();
    let elsewhere = json!({"site": "d1/s1/c1", "agent": "test-agent", "camera": "cam-9", "changes": {"x": 1}});
    assert_eq!(sup.post("/api/tune", &elsewhere).0, 404, "an unknown camera");
    let (status, sent) = sup.post("/api/tune", &tune);
    assert_eq!(status, 200, "{sent}");
    let request = sent["request_id"].as_str().unwrap().to_string();
    let reply = wait_until("the agent's reply to set", Duration::from_secs(20), || {
        let (_, r) = sup.get(&format!("/api/replies/{request}"));
        (!r["reply"].is_null()).then(|| r["reply"].clone())
    });
    assert_eq!((reply["command"].as_str(), reply["ok"].as_bool()), (Some("set"), Some(true)), "{reply}");
    let (_, running) = http::get(agent_http, "/api/config").expect("the agent's /api/config");
    let running: Value = serde_json::from_slice(&running).unwrap();
    assert_eq!(running["cameras"][0]["lanes"][0]["dwell_s"].as_f64(), Some(7.0), "{running}");
    assert!(!centre.log().contains("panicked"));
}

#[test]
fn a_late_alert_goes_up_to_the_street_then_the_district_and_a_failed_camera_becomes_an_alert() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start().unwrap();
    let port = free_port().unwrap();
    // A fire must be assessed within 2 s here; a camera failed for 1 s is offline.
    let extra = "[[deadlines]]\nkind = \"fire\"\nassess_s = 2\ndispatch_s = 4\nclose_s = 8\n\n\
                 [fleet]\noffline_after_s = 1\n";
    let config = write_centre_config_with(dir.path(), broker.port(), port, "d1", extra);
    user(&config, "op-c1", "operator", "d1/s1/c1");
    user(&config, "street", "supervisor", "d1/s1");
    let centre = Centre::start(&config, port);
    let community = ConsoleUser::login(port, "op-c1", PASSWORD).unwrap();
    let street = ConsoleUser::login(port, "street", PASSWORD).unwrap();
    let street_live = street.live();

    let agent = Sub::plain(broker.port(), "fake-agent");
    let now = alleywatch_contract::time::rfc3339::format(&std::time::SystemTime::now());
    let mut fire = event("f-1", "d1/s1/c1", "box-a", "fire", "critical");
    fire["started_at"] = json!(now);
    fire["updated_at"] = json!(now);
    agent.publish("alleywatch/d1/s1/c1/box-a/events/fire", fire);
    let alert = |user: &ConsoleUser, id: &str| -> Option<Value> {
        let (_, board) = user.get("/api/alerts");
        board["alerts"].as_array()?.iter().find(|a| a["id"] == id).cloned()
    };
    let first = wait_until("the fire on the board, on time", Duration::from_secs(10), || alert(&community, "f-1"));
    assert_eq!((first["late"].as_bool(), first["escalated_to"].as_str()), (Some(false), None), "{first}");
    assert!(first["deadline_at"].as_i64().unwrap() > first["started_at"].as_i64().unwrap());

    // Not assessed in time: late, and on the street's board as escalated.
    let late = wait_until("the fire escalated to the street", Duration::from_secs(10), || {
        alert(&street, "f-1").filter(|a| a["escalated_to"] == "street")
    });
    assert_eq!(late["late"].as_bool(), Some(true));
    let theirs = alert(&community, "f-1").expect("the community still has it");
    assert_eq!((theirs["late"].as_bool(), theirs["state"].as_str()), (Some(true), Some("new")));
    wait_until("the street's stream told of it", Duration::from_secs(5), || {
        street_live.events().iter().any(|(e, d)| e == "step" && d.contains("f-1"))
    });
    wait_until("then up to the district", Duration::from_secs(10), || {
        alert(&street, "f-1").filter(|a| a["escalated_to"] == "district")
    });
    assert!(centre.metric("alleywatch_centre_late_alerts", &[]) >= 1.0);

    // A camera failed for longer than offline_after_s: a camera_offline
    // alert through the same loop (no command: the agent has no such event).
    let status = |state: &str| {
        json!({"camera": "cam-7", "name": "Lane 7", "state": state, "fps": 0.0, "last_frame_at": null,
               "last_error": if state == "failed" { json!("connection refused") } else { Value::Null },
               "reconnects": 3, "at": alleywatch_contract::time::rfc3339::format(&std::time::SystemTime::now())})
    };
    agent.publish("alleywatch/d1/s1/c1/box-a/cameras/cam-7/status", status("failed"));
    let offline = wait_until("camera_offline raised", Duration::from_secs(15), || {
        community.get("/api/alerts").1["alerts"].as_array()?.iter().find(|a| a["kind"] == "camera_offline").cloned()
    });
    assert_eq!((offline["camera"].as_str(), offline["camera_name"].as_str()), (Some("cam-7"), Some("Lane 7")));
    let (_, fleet) = community.get("/api/fleet");
    let cam = fleet["cameras"].as_array().unwrap().iter().find(|c| c["camera"] == "cam-7").unwrap().clone();
    assert_eq!((cam["state"].as_str(), cam["reconnects"].as_i64()), (Some("failed"), Some(3)));
    let id = offline["id"].as_str().unwrap();
    let (status_code, body) =
        community.post(&format!("/api/alerts/{id}/assess"), &json!({"verdict": "real", "reason": "cable cut"}));
    assert_eq!(status_code, 200, "{body}");
    let (_, detail) = community.get(&format!("/api/alerts/{id}"));
    assert!(detail["steps"][0]["command"].is_null(), "{detail}");
    // The camera comes back: the alert ends (and stays in the loop until closed).
    agent.publish("alleywatch/d1/s1/c1/box-a/cameras/cam-7/status", status("streaming"));
    wait_until("camera_offline ended", Duration::from_secs(10), || {
        alert(&community, id).filter(|a| a["phase"] == "end").map(|_| ())
    });
    assert!(agent.all().iter().all(|m| !m.topic.contains("/commands/")), "no command for camera_offline");
}
