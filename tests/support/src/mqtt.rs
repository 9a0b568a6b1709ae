//! MQTT as a command centre sees it: [`Sub`], a subscriber to everything
//! the agent publishes that rides out broker restarts, its messages
//! ([`Msg`]) and the predicates the tests wait on.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rumqttc::{Client, Event, MqttOptions, Packet, QoS};
use serde_json::Value;

/// One message the subscriber received.
#[derive(Clone, Debug)]
pub struct Msg {
    pub topic: String,
    pub payload: Vec<u8>,
}

impl Msg {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.payload).unwrap_or(Value::Null)
    }
}

/// A subscriber to `alleywatch/#` that rides out broker restarts.
pub struct Sub {
    pub client: Client,
    pub seen: Arc<Mutex<Vec<Msg>>>,
    /// The connection's story (connects, session flags, errors) for a
    /// failure message.
    pub trail: Arc<Mutex<Vec<String>>>,
}

impl Sub {
    /// `persistent`: a broker-side session (clean_session = false), so the
    /// broker queues what is published while this subscriber is away.
    pub fn start(opts: MqttOptions, persistent: bool) -> Sub {
        let mut opts = opts;
        // Above the agent's incoming limit: hostile_commands leaves a
        // bigger retained command on the broker.
        opts.set_max_packet_size(32 << 20, 1 << 20);
        opts.set_clean_session(!persistent);
        opts.set_keep_alive(Duration::from_secs(5));
        let (client, mut conn) = Client::new(opts, 64);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let trail = Arc::new(Mutex::new(Vec::new()));
        let (sink, c2, story) = (seen.clone(), client.clone(), trail.clone());
        let t0 = Instant::now();
        let note = move |what: String| story.lock().unwrap().push(format!("{:.2}s {what}", t0.elapsed().as_secs_f64()));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut last_error: Option<String> = None;
            for ev in conn.iter() {
                match ev {
                    Ok(Event::Incoming(Packet::ConnAck(a))) => {
                        last_error = None;
                        note(format!("connack session_present={} code={:?}", a.session_present, a.code));
                        let _ = c2.try_subscribe("alleywatch/#", QoS::AtLeastOnce);
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        note("suback".into());
                        let _ = ready_tx.send(());
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        sink.lock().unwrap().push(Msg { topic: p.topic.clone(), payload: p.payload.to_vec() })
                    }
                    Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => return,
                    Ok(_) => {}
                    // The broker is away: rumqttc reconnects on the next poll.
                    Err(e) => {
                        if std::env::var_os("E2E_AGENT_LOG").is_some() {
                            eprintln!("subscriber: {e}");
                        }
                        let e = e.to_string();
                        if last_error.as_deref() != Some(e.as_str()) {
                            note(format!("error: {e}"));
                            last_error = Some(e);
                        }
                        std::thread::sleep(Duration::from_millis(200))
                    }
                }
            }
        });
        ready_rx.recv_timeout(Duration::from_secs(15)).expect("subscription acknowledged");
        Sub { client, seen, trail }
    }

    /// The connection's story, one line per connect, ack or error.
    pub fn trail(&self) -> String {
        self.trail.lock().unwrap().join("\n")
    }

    pub fn plain(port: u16, id: &str) -> Sub {
        Sub::start(MqttOptions::new(id, "127.0.0.1", port), false)
    }

    pub fn all(&self) -> Vec<Msg> {
        self.seen.lock().unwrap().clone()
    }

    pub fn wait_for(&self, what: &str, timeout: Duration, pred: impl Fn(&Msg) -> bool) -> Msg {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(m) = self.seen.lock().unwrap().iter().find(|m| pred(m)) {
                return m.clone();
            }
            if Instant::now() > deadline {
                let seen: Vec<String> = self
                    .all()
                    .iter()
                    .map(|m| format!("{} {}", m.topic, String::from_utf8_lossy(&m.payload[..m.payload.len().min(160)])))
                    .collect();
                panic!("timed out after {timeout:?} waiting for {what}; saw:\n{}", seen.join("\n"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn publish(&self, topic: &str, body: Value) {
        self.client.publish(topic, QoS::AtLeastOnce, false, body.to_string()).unwrap();
    }
}

/// An event of `kind` with phase `ty` (`start`, `end`, ...).
pub fn is_event(m: &Msg, kind: &str, ty: &str) -> bool {
    m.topic.ends_with(&format!("/events/{kind}")) && m.json()["type"] == ty
}

/// A camera status message saying `camera` is in `state`.
pub fn camera_is(m: &Msg, camera: &str, state: &str) -> bool {
    m.topic.ends_with(&format!("/cameras/{camera}/status")) && m.json()["state"] == state
}
