//! The command door of the publisher (issue 19): retained, oversize and
//! flooding commands, string limits, bounded queues, and a property test
//! over random command payloads. Kept in its own file beside
//! `publisher.rs`, whose delivery half others change.

use std::path::{Path, PathBuf};

use proptest::prelude::*;
use serde_json::json;

use super::super::*;
use super::*;
use crate::alert::{topics_of, Ledger, Spool};
use crate::metrics::Metrics;

const BASE: &str = "alleywatch/d/s/c/a";

/// A config file (and its model) in `dir`.
fn config_file(dir: &Path) -> PathBuf {
    crate::config::overlay::tests::base(dir)
}

/// A publisher state that is never connected (replies are returned or
/// sent on the reply channel, which is what these tests read).
fn state(file: &Path) -> State {
    let config = Config::load(file).unwrap();
    std::fs::create_dir_all(config.spool.path.parent().unwrap()).unwrap();
    let spool = Spool::open(&config.spool.path, config.spool.max_bytes()).unwrap();
    let outbox =
        Outbox::new(spool, Ledger::new(&config.alerts, &config.site), topics_of(&config), Arc::new(Metrics::new()));
    let (client, _eventloop) = AsyncClient::new(MqttOptions::new("t", "127.0.0.1", 1), 8);
    State::new(client, topics_of(&config), outbox, mpsc::unbounded_channel().0)
}

struct Door {
    _dir: tempfile::TempDir,
    file: PathBuf,
    s: State,
    requests: mpsc::Sender<Request>,
    queue: mpsc::Receiver<Request>,
    reply_tx: mpsc::Sender<Value>,
    replies: mpsc::Receiver<Value>,
}

fn door() -> Door {
    let dir = tempfile::tempdir().unwrap();
    let file = config_file(dir.path());
    let s = state(&file);
    let (requests, queue) = mpsc::channel(REQUEST_QUEUE);
    let (reply_tx, replies) = mpsc::channel(REPLY_QUEUE);
    Door { _dir: dir, file, s, requests, queue, reply_tx, replies }
}

impl Door {
    fn send(&mut self, command: &str, payload: &[u8], retain: bool) -> Option<Value> {
        let topic = format!("{BASE}/commands/{command}");
        self.s.on_command(&topic, payload, retain, &self.requests, &self.reply_tx)
    }

    fn json(&mut self, command: &str, body: Value) -> Option<Value> {
        self.send(command, body.to_string().as_bytes(), false)
    }
}

fn error(reply: &Value) -> &str {
    assert_eq!(reply["ok"], false, "{reply}");
    reply["error"].as_str().unwrap()
}

#[tokio::test]
async fn retained_commands_are_refused_and_never_run() {
    let mut d = door();
    let set = json!({"by": "c", "request_id": "r1", "changes": {"cameras.cam-1.lanes.kerb.dwell_s": 2}});
    for (command, body) in [
        ("set", set),
        ("reference", json!({"by": "c", "camera": "cam-1"})),
        ("resolve", json!({"by": "c", "event_id": "e"})),
    ] {
        let reply = d.send(command, body.to_string().as_bytes(), true).expect("answered at once");
        assert!(error(&reply).starts_with("retained commands are refused"), "{reply}");
        assert_eq!(reply["command"], command);
    }
    assert!(d.queue.try_recv().is_err(), "nothing reached the manager");
    let m = d.s.outbox.metrics().clone();
    assert_eq!(m.commands_refused.with_label_values(&["retained"]).get(), 3);
}

#[tokio::test]
async fn an_oversize_command_is_refused_naming_the_limit() {
    let mut d = door();
    let big =
        format!(r#"{{"by": "c", "changes": {{"falls.confirm_s": 1}}, "pad": "{}"}}"#, "x".repeat(MAX_COMMAND_BYTES));
    let reply = d.send("set", big.as_bytes(), false).unwrap();
    assert!(error(&reply).contains(&format!("a command is at most {MAX_COMMAND_BYTES} bytes")), "{reply}");
    assert!(d.queue.try_recv().is_err());
    // The client reads packets far larger than any command, so an oversize
    // one is refused here, not by dropping the connection.
    const { assert!(MAX_INCOMING_PACKET >= 64 * MAX_COMMAND_BYTES) };
}

#[tokio::test]
async fn commands_are_rate_limited_per_topic() {
    let mut d = door();
    let ack = json!({"event_id": "none", "by": "c"});
    for _ in 0..RATE_BURST as usize {
        let reply = d.json("ack", ack.clone()).unwrap();
        assert!(error(&reply).contains("no open event"), "{reply}");
    }
    let reply = d.json("ack", ack.clone()).unwrap();
    assert!(error(&reply).starts_with("rate limit: at most 10 at once and 2 per s on commands/ack"), "{reply}");
    // One reply per burst: a flood answered message for message would fill
    // the client's queue that alerts need.
    assert!(d.json("ack", ack.clone()).is_none(), "one refusal reply per burst");
    // Another topic has its own bucket; unknown names share one.
    let reply = d.json("resolve", json!({"event_id": "none", "by": "c"})).unwrap();
    assert!(error(&reply).contains("no open event"), "{reply}");
    for i in 0..RATE_BURST as usize {
        let reply = d.json(&format!("x{i}"), json!({})).unwrap();
        assert!(error(&reply).starts_with("unknown command"), "{reply}");
    }
    assert!(error(&d.json("y", json!({})).unwrap()).starts_with("rate limit"));
    // The bucket refills at RATE_PER_S.
    let later = Instant::now() + Duration::from_millis(600);
    assert!(d.s.commands.take("ack", later).is_ok());
    assert_eq!(d.s.outbox.metrics().commands_refused.with_label_values(&["rate_limited"]).get(), 3);
}

#[tokio::test]
async fn a_full_request_queue_and_too_many_waiting_commands_are_refused_as_busy() {
    let mut d = door();
    let set = json!({"by": "c", "changes": {"falls.confirm_s": 1}});
    for _ in 0..REQUEST_QUEUE {
        assert!(d.json("set", set.clone()).is_none(), "queued; answered later");
    }
    let reply = d.json("set", set.clone()).unwrap();
    assert!(error(&reply).contains("set: busy: 8 changes are already queued"), "{reply}");
    // The manager answers them: one reply each.
    for _ in 0..REQUEST_QUEUE {
        let r = d.queue.recv().await.unwrap();
        r.reply.send(Err("nope".into())).unwrap();
    }
    for _ in 0..REQUEST_QUEUE {
        let reply = tokio::time::timeout(Duration::from_secs(5), d.replies.recv()).await.unwrap().unwrap();
        assert_eq!(error(&reply), "nope");
    }
    // Commands waiting for an answer are bounded too (a reference waits for
    // the camera's next frame, which a stalled camera never has).
    d.s.commands.pending.store(MAX_PENDING, Ordering::Relaxed);
    let reply = d.json("reference", json!({"by": "c", "camera": "cam-1"})).unwrap();
    assert!(error(&reply).contains("busy: 16 commands are already waiting"), "{reply}");
    assert_eq!(d.s.outbox.metrics().commands_refused.with_label_values(&["busy"]).get(), 2);
}

#[tokio::test]
async fn long_strings_are_refused_naming_the_field_and_limit_and_never_echoed() {
    let mut d = door();
    let long_id = "r".repeat(129);
    let reply = d.json("ack", json!({"event_id": "e", "by": "c", "request_id": long_id})).unwrap();
    assert!(error(&reply).contains("field \"request_id\": 129 characters, at most 128"), "{reply}");
    assert_eq!(reply["request_id"], Value::Null, "an over-long field is not echoed");
    let reply = d.json("ack", json!({"event_id": "e", "by": "c", "note": "n".repeat(501)})).unwrap();
    assert!(error(&reply).contains("field \"note\": 501 characters, at most 500"), "{reply}");
    let reply = d.json("resolve", json!({"event_id": "e", "by": "b".repeat(65)})).unwrap();
    assert!(error(&reply).contains("field \"by\": 65 characters, at most 64"), "{reply}");
    let reply = d.json("reference", json!({"by": "c", "camera": "c".repeat(65)})).unwrap();
    assert!(error(&reply).contains("field \"camera\": 65 characters, at most 64"), "{reply}");
    let reply = d.json("ack", json!({"event_id": "e".repeat(65), "by": "c"})).unwrap();
    assert!(error(&reply).contains("field \"event_id\": 65 characters, at most 64"), "{reply}");
    let reply = d.json(&"z".repeat(500), json!({})).unwrap();
    assert_eq!(reply["command"].as_str().unwrap().len(), 64, "an unknown name is echoed truncated");
    assert!(d.queue.try_recv().is_err());
}

/// What the config file alone decides, as text.
fn local_part(c: &Config) -> String {
    format!(
        "{:?}",
        (
            format!("{:?}", (&c.broker, &c.http, &c.spool, &c.source, &c.ort_library)),
            (&c.detector.path, &c.detector.sha256, c.fire.as_ref().map(|f| &f.path)),
            c.cameras.iter().map(|k| (&k.id, &k.name, &k.url, k.fps)).collect::<Vec<_>>(),
        )
    )
}

/// Command names: the real ones, and others.
const NAMES: &[&str] = &["ack", "resolve", "set", "reference", "set/x", "", "nope", "+", "#"];

fn json_value() -> impl Strategy<Value = Value> {
    let keys = prop::sample::select(
        &[
            "by",
            "event_id",
            "request_id",
            "note",
            "camera",
            "lane",
            "changes",
            "cameras.cam-1.lanes.kerb.dwell_s",
            "cameras.cam-1.url",
            "cameras",
            "fire.path",
            "falls.confirm_s",
            "cameras.cam-1.lanes.new.polygon",
            "x",
        ][..],
    );
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|i| json!(i)),
        (0.0f64..100.0).prop_map(|f| json!(f)),
        "[a-z0-9 -]{0,10}".prop_map(Value::String),
        Just(json!("cam-1")),
        (60usize..70_000).prop_map(|n| Value::String("s".repeat(n))),
    ];
    leaf.prop_recursive(8, 64, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::vec((keys.clone(), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect())),
        ]
    })
}

/// A payload: JSON (an object most of the time), or raw bytes.
fn payload() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => json_value().prop_map(|v| v.to_string().into_bytes()),
        4 => (json_value(), json_value(), "[a-z]{0,8}").prop_map(|(by, changes, camera)| {
            json!({"by": by, "changes": changes, "camera": camera, "event_id": "e", "request_id": "r"}).to_string().into_bytes()
        }),
        1 => prop::collection::vec(any::<u8>(), 0..256),
        1 => Just(vec![b'['; 10_000]),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(COMMAND_CASES))]
    /// Random commands on every command topic: never a panic, exactly one
    /// reply each, and the config (changed by a manager that applies `set`
    /// through the overlay, as the agent's does) only ever changes through
    /// allowed leaves.
    #[test]
    fn random_commands_get_exactly_one_reply_and_change_only_allowed_leaves(
        commands in prop::collection::vec((prop::sample::select(NAMES), payload(), any::<bool>()), 1..6)
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        rt.block_on(async move {
            let mut d = door();
            let before = local_part(&crate::config::overlay::load(&d.file).unwrap());
            let file = d.file.clone();
            let mut queue = std::mem::replace(&mut d.queue, mpsc::channel(1).1);
            // The manager: `set` through the overlay, `reference` answered.
            tokio::spawn(async move {
                while let Some(r) = queue.recv().await {
                    let answer = match r.change {
                        Change::Set(changes) => crate::config::overlay::set(&file, &changes, &r.by).map(|_| ()).map_err(|e| e.to_string()),
                        Change::Reference { .. } => Ok(()),
                    };
                    let _ = r.reply.send(answer);
                }
            });
            for (name, payload, retain) in commands {
                let reply = match d.send(name, &payload, retain) {
                    Some(r) => r,
                    None => tokio::time::timeout(Duration::from_secs(10), d.replies.recv()).await.unwrap().unwrap(),
                };
                prop_assert!(reply["ok"].is_boolean(), "{reply}");
                prop_assert_eq!(reply["ok"] == false, reply["error"].is_string(), "{}", reply);
                for _ in 0..10 {
                    tokio::task::yield_now().await;
                }
                prop_assert!(d.replies.try_recv().is_err(), "a second reply");
                if retain || payload.len() > MAX_COMMAND_BYTES {
                    prop_assert_eq!(reply["ok"].as_bool(), Some(false));
                }
            }
            let (after, aside) = crate::config::overlay::load_at_start(&d.file).unwrap();
            prop_assert!(aside.is_none(), "a saved overlay always loads");
            prop_assert_eq!(local_part(&after), before);
            Ok(())
        })?;
    }
}

/// Property cases per run of the command door (reported in the notes).
const COMMAND_CASES: u32 = 256;
