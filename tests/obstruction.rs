//! The class-agnostic obstruction cue, end to end: footage made here with
//! GStreamer (frames drawn in the test, encoded by `x264enc` into MP4),
//! served by the in-process RTSP server as real H.264, analysed by the real
//! agent binary with the real detector, events on a real mosquitto.
//!
//! The scene is a paved lane under a brick wall. Three clips:
//! - **goods**: a stack of cardboard boxes is put in the lane, stays past the
//!   dwell, and is taken away → one `start` and one `end`, cause
//!   `obstruction` (no detector class names a box);
//! - **ramp**: the light falls to half and rises to 130 % → nothing;
//! - **walker**: a person-sized figure walks the length of the lane, in it
//!   longer than the dwell and covering more than `min_occupancy` → nothing.
//!
//! And the clear-lane reference: set by an operator's `reference` command
//! (with learning switched off, so only the command can give one), saved,
//! and used after a restart with the goods already in place.

use std::path::{Path, PathBuf};
use std::time::Duration;

use alleywatch_devkit::{free_port, Mosquitto, RtspServer};
use alleywatch_testkit::{camera_is, event_schema, is_event, serial, wait_until, write_config, Agent, Msg, Sub, BASE};
use edge_agent::replay::annotate::Annotator;
use serde_json::{json, Value};

const W: u32 = 640;
const H: u32 = 360;
const FPS: f64 = 10.0;
/// The lane: the lower middle of the picture.
const LANE: &str = "[[0.3, 0.5], [0.7, 0.5], [0.7, 0.95], [0.3, 0.95]]";

/// Deterministic noise in 0..1 from a position (no RNG crate needed).
fn hash(x: u32, y: u32) -> f32 {
    let mut h = x.wrapping_mul(374_761_393) ^ y.wrapping_mul(668_265_263);
    h = (h ^ (h >> 13)).wrapping_mul(1_274_126_177);
    (h ^ (h >> 16)) as f32 / u32::MAX as f32
}

/// The empty scene: a brick wall above a lane of paving stones.
fn scene() -> Vec<u8> {
    let mut px = Vec::with_capacity((W * H * 3) as usize);
    for y in 0..H {
        for x in 0..W {
            let rgb = if y < H / 3 {
                // Bricks 40 × 14 with mortar, rows offset by half a brick.
                let (bx, by) = ((x + (y / 14) % 2 * 20) / 40, y / 14);
                let mortar = y % 14 < 2 || (x + (y / 14) % 2 * 20) % 40 < 2;
                let v = 0.75 + 0.25 * hash(bx, by + 1000);
                if mortar {
                    [170.0, 165.0, 150.0]
                } else {
                    [150.0 * v, 70.0 * v, 50.0 * v]
                }
            } else {
                // Paving stones 24 × 24, each its own shade, dark joints,
                // with fine grain.
                let joint = x % 24 < 2 || y % 24 < 2;
                let v = 0.7 + 0.3 * hash(x / 24, y / 24) + 0.08 * (hash(x, y) - 0.5);
                if joint {
                    [60.0, 58.0, 55.0]
                } else {
                    [140.0 * v, 135.0 * v, 120.0 * v]
                }
            };
            px.extend(rgb.map(|v: f32| v.clamp(0.0, 255.0) as u8));
        }
    }
    px
}

fn fill(px: &mut [u8], x0: i64, y0: i64, x1: i64, y1: i64, c: [u8; 3]) {
    for y in y0.max(0)..y1.min(H as i64) {
        for x in x0.max(0)..x1.min(W as i64) {
            let i = ((y as u32 * W + x as u32) * 3) as usize;
            px[i..i + 3].copy_from_slice(&c);
        }
    }
}

/// A stack of four cardboard boxes with tape, in the lane.
fn goods(px: &mut [u8]) {
    let (x0, y0, x1, y1) = ((0.36 * W as f64) as i64, (0.55 * H as f64) as i64, (0.62 * W as f64) as i64, 335);
    let (mx, my) = ((x0 + x1) / 2, (y0 + y1) / 2);
    for (a, b, c, d, shade) in
        [(x0, y0, mx, my, 1.0), (mx, y0, x1, my, 0.9), (x0, my, mx, y1, 0.85), (mx, my, x1, y1, 1.05)]
    {
        let card = [(185.0 * shade) as u8, (135.0 * shade) as u8, (85.0 * shade) as u8];
        fill(px, a, b, c, d, card);
        fill(px, a, b, c, b + 3, [90, 60, 30]); // box edges
        fill(px, a, b, a + 3, d, [90, 60, 30]);
        fill(px, (a + c) / 2 - 4, b, (a + c) / 2 + 4, d, [215, 200, 160]); // tape
    }
}

/// A person-sized figure (90 × 220 px: the camera is close) at `x`, legs
/// swinging with `phase`, in a striped shirt.
fn walker(px: &mut [u8], x: i64, phase: f64) {
    let top = 125;
    fill(px, x + 30, top, x + 60, top + 32, [205, 160, 130]); // head
    for (i, sx) in (x..x + 90).step_by(10).enumerate() {
        let c = if i % 2 == 0 { [40, 70, 160] } else { [225, 225, 230] };
        fill(px, sx, top + 34, sx + 10, top + 120, c); // shirt
    }
    let swing = (phase.sin() * 14.0) as i64;
    fill(px, x + 15 + swing, top + 120, x + 42 + swing, top + 220, [35, 35, 45]); // legs
    fill(px, x + 48 - swing, top + 120, x + 75 - swing, top + 220, [35, 35, 45]);
}

/// Encodes `seconds` of frames drawn by `draw(t, frame)` to an MP4 (H.264).
fn clip(dir: &Path, name: &str, seconds: f64, draw: impl Fn(f64, &mut Vec<u8>)) -> PathBuf {
    let path = dir.join(format!("{name}.mp4"));
    let base = scene();
    let mut enc = Annotator::create(&path, W, H, FPS).expect("x264enc pipeline");
    let frames = (seconds * FPS) as u32;
    for i in 0..frames {
        let t = i as f64 / FPS;
        let mut frame = base.clone();
        draw(t, &mut frame);
        enc.push(frame, W, H, t, 1.0 / FPS).expect("frame encoded");
    }
    enc.finish().expect("clip written");
    path
}

/// Goods put down at `put`, taken away at `taken` (seconds).
fn goods_clip(dir: &Path, name: &str, put: f64, taken: f64, seconds: f64) -> PathBuf {
    clip(dir, name, seconds, |t, f| {
        if (put..taken).contains(&t) {
            goods(f)
        }
    })
}

fn lane_camera(id: &str, url: &str) -> String {
    format!(
        "[[cameras]]\nid = \"{id}\"\nname = \"Camera {id}\"\nurl = \"{url}\"\nfps = 5\nfire = false\n\
         lanes = [{{ name = \"escape\", polygon = {LANE}, classes = [], cue = \"obstruction\", \
         min_occupancy = 0.25, dwell_s = 3, clear_s = 2 }}]\n"
    )
}

fn lane_event(m: &Msg, camera: &str, ty: &str) -> bool {
    is_event(m, "lane_blocked", ty) && m.json()["camera"]["id"] == camera
}

fn assert_valid(v: &Value) {
    alleywatch_testkit::assert_valid(&event_schema(), v);
}

/// Checks a `start` raised by the cue and returns its id.
fn assert_obstruction_start(sub: &Sub, start: &Msg) -> String {
    let v = start.json();
    assert_valid(&v);
    assert_eq!(v["zone"], "escape");
    assert_eq!(v["evidence"]["cause"], "obstruction", "{v}");
    assert!(v["evidence"]["objects"].as_array().unwrap().is_empty(), "no detector class named the goods");
    let o = &v["evidence"]["obstruction"];
    let occupancy = o["occupancy"].as_f64().unwrap();
    assert!((0.25..=1.0).contains(&occupancy), "the goods cover about half the lane: {o}");
    assert!(!o["changed"].as_array().unwrap().is_empty(), "the changed cells are in the evidence");
    assert!(v["duration_s"].as_f64().unwrap() >= 3.0, "only after the dwell: {v}");
    // The snapshot: published before the event, a JPEG with the reference
    // inset in its top-right corner (a white frame around it).
    let topic = v["snapshot"]["topic"].as_str().unwrap();
    let jpeg = sub.all().into_iter().find(|m| m.topic == topic).expect("snapshot before the event").payload;
    let img = image::load_from_memory(&jpeg).expect("snapshot decodes").to_rgb8();
    let frame = img.get_pixel(W - 4 - W / 4 - 1, 10);
    assert!(frame.0.iter().all(|&c| c > 200), "the reference inset's white frame: {frame:?}");
    v["id"].as_str().unwrap().to_string()
}

#[test]
fn goods_in_the_lane_raise_start_and_end_while_light_and_passers_by_do_not() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    // 10 s clear (the cue learns), goods for 12 s, 12 s clear.
    let goods = goods_clip(dir.path(), "goods", 10.0, 22.0, 34.0);
    // 8 s steady, the light falls to 50 % over 10 s, then rises to 130 %.
    let ramp = clip(dir.path(), "ramp", 32.0, |t, f| {
        let gain = if t < 8.0 {
            1.0
        } else if t < 18.0 {
            1.0 - 0.05 * (t - 8.0)
        } else {
            0.5 + 0.8 * ((t - 18.0) / 12.0).min(1.0)
        };
        for v in f.iter_mut() {
            *v = (*v as f64 * gain).min(255.0) as u8;
        }
    });
    // 8 s clear, then a walk of 40 px/s along the lane (in it about 8 s,
    // wholly inside it about 4 s, covering about 35 % of it), then clear.
    let walk = clip(dir.path(), "walker", 30.0, |t, f| {
        if (8.0..20.0).contains(&t) {
            walker(f, 110 + ((t - 8.0) * 40.0) as i64, t * 6.0);
        }
    });
    let servers: Vec<RtspServer> =
        [&goods, &ramp, &walk].iter().map(|c| RtspServer::start(c, 0, "/cam").expect("rtsp server")).collect();
    let broker = Mosquitto::start().expect("mosquitto");
    let sub = Sub::plain(broker.port(), "obstruction-sub");
    let http = free_port().unwrap();
    let cameras: String =
        ["goods", "ramp", "walker"].iter().zip(&servers).map(|(id, s)| lane_camera(id, &s.url())).collect();
    let config =
        write_config(dir.path(), http, &format!("port = {}", broker.port()), "[obstruction]\nlearn_s = 3\n", &cameras);
    let agent = Agent::spawn(&config, http, &[]);

    let start = sub.wait_for("goods: lane_blocked start", Duration::from_secs(90), |m| lane_event(m, "goods", "start"));
    let id = assert_obstruction_start(&sub, &start);
    let end = sub.wait_for("goods: lane_blocked end", Duration::from_secs(40), |m| lane_event(m, "goods", "end"));
    let end = end.json();
    assert_valid(&end);
    assert_eq!(end["id"], id.as_str(), "the end closes the same event");
    let d = end["duration_s"].as_f64().unwrap();
    assert!((8.0..=20.0).contains(&d), "the goods stood 12 s (less the dwell, plus the clear time): {d}");

    // The other two clips were analysed to their end (the stream's EOS
    // makes the camera reconnect) without a single lane event.
    for cam in ["ramp", "walker"] {
        sub.wait_for(&format!("{cam}: clip played to its end"), Duration::from_secs(60), |m| {
            camera_is(m, cam, "reconnecting")
        });
    }
    let analysed = |cam: &str| agent.metric("alleywatch_frames_analysed_total", &[("camera", cam)]);
    assert!(analysed("ramp") >= 100.0 && analysed("walker") >= 100.0, "each clip analysed at 5 fps");
    let events: Vec<Value> = sub
        .all()
        .iter()
        .filter(|m| m.topic.contains("/events/"))
        .map(Msg::json)
        .filter(|v| v.is_object() && v["camera"]["id"] != "goods") // not the snapshots (JPEG)
        .collect();
    assert!(events.is_empty(), "the light ramp and the passer-by raised events: {events:#?}");
    let count = |ty: &str| sub.all().iter().filter(|m| lane_event(m, "goods", ty)).count();
    assert_eq!((count("start"), count("end")), (1, 1), "exactly one start and one end for the goods");
    let log = agent.stop();
    assert!(!log.contains("panicked"), "{log}");
}

#[test]
fn an_operators_reference_takes_effect_and_survives_a_restart() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let goods = goods_clip(dir.path(), "goods", 10.0, 22.0, 34.0);
    // For after the restart: the goods are there from the first frame.
    let already = goods_clip(dir.path(), "already", 0.0, 12.0, 22.0);
    let broker = Mosquitto::start().expect("mosquitto");
    let sub = Sub::plain(broker.port(), "reference-sub");
    // Learning off (10 minutes): only the operator's command can give the
    // lane a reference within this test.
    let config = |url: &str, http: u16| {
        write_config(
            dir.path(),
            http,
            &format!("port = {}", broker.port()),
            "[obstruction]\nlearn_s = 600\n",
            &lane_camera("cam-1", url),
        )
    };

    let server = RtspServer::start(&goods, 0, "/cam").expect("rtsp server");
    let http = free_port().unwrap();
    let agent = Agent::spawn(&config(&server.url(), http), http, &[]);
    // The agent subscribes to its commands before it says it is online.
    sub.wait_for("agent online", Duration::from_secs(60), |m| {
        m.topic == format!("{BASE}/status") && m.json()["state"] == "online"
    });
    wait_until("the first analysed frames", Duration::from_secs(60), || {
        agent.metric("alleywatch_frames_analysed_total", &[("camera", "cam-1")]) >= 3.0
    });
    let reply = |request_id: &str| {
        let id = request_id.to_string();
        sub.wait_for(&format!("reply to {id}"), Duration::from_secs(15), move |m| {
            m.topic == format!("{BASE}/replies") && m.json()["request_id"] == id.as_str()
        })
        .json()
    };
    // Wrong lane, wrong camera: clear answers, nothing changes.
    sub.publish(
        &format!("{BASE}/commands/reference"),
        json!({ "camera": "cam-1", "lane": "nope", "by": "op", "request_id": "r0" }),
    );
    let r = reply("r0");
    assert_eq!(r["ok"], false);
    assert!(r["error"].as_str().unwrap().contains("no lane \"nope\""), "{r}");
    sub.publish(&format!("{BASE}/commands/reference"), json!({ "camera": "cam-9", "by": "op", "request_id": "r1" }));
    assert!(reply("r1")["error"].as_str().unwrap().contains("no camera \"cam-9\""));
    // "The lane is clear now" (during the clip's first 10 s).
    sub.publish(
        &format!("{BASE}/commands/reference"),
        json!({ "camera": "cam-1", "lane": "escape", "by": "op", "request_id": "r2" }),
    );
    let r = reply("r2");
    assert_eq!((r["ok"].clone(), r["command"].clone()), (json!(true), json!("reference")), "{r}");
    let saved = dir.path().join("state/references/cam-1/escape-day.png");
    assert!(saved.is_file(), "the reference is saved at once");

    let start = sub.wait_for("lane_blocked start", Duration::from_secs(40), |m| lane_event(m, "cam-1", "start"));
    let id = assert_obstruction_start(&sub, &start);
    sub.wait_for("lane_blocked end", Duration::from_secs(40), |m| {
        lane_event(m, "cam-1", "end") && m.json()["id"] == id.as_str()
    });
    let log = agent.stop();
    assert!(log.contains("clear-lane reference set by an operator"), "{log}");
    drop(server);

    // Restart on the same state folder, the goods already in the lane: the
    // saved reference sees them at once (with learning off, nothing else
    // could).
    let server = RtspServer::start(&already, 0, "/cam").expect("rtsp server");
    let http = free_port().unwrap();
    let agent = Agent::spawn(&config(&server.url(), http), http, &[]);
    let start = sub.wait_for("lane_blocked start after the restart", Duration::from_secs(60), |m| {
        lane_event(m, "cam-1", "start") && m.json()["id"] != id.as_str()
    });
    assert_obstruction_start(&sub, &start);
    let log = agent.stop();
    assert!(log.contains("clear-lane reference loaded"), "{log}");
}
