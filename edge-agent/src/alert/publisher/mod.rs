//! The MQTT publisher: drains the spool to the broker at QoS 1, deleting
//! each message only on its PUBACK; keeps the retained agent and camera
//! statuses; takes the centres' commands; raises escalations.
//!
//! One task owns the rumqttc event loop *and* decides what to publish, so
//! the two never race. The reason is packet-id bookkeeping: a PUBACK names
//! only a packet id, which rumqttc assigns when it sends. Every QoS 1 publish
//! this task submits is tagged, in order, and the tag is bound to the packet
//! id when the event loop reports `Outgoing::Publish(pkid)` (rumqttc sends
//! requests in submission order). The broker session is clean, so after a
//! reconnect rumqttc resends nothing of its own: this task resends every
//! spooled message not yet acknowledged, oldest first, and a message is
//! delivered at least once; centres deduplicate by `seq`.
//!
//! The event loop's `poll` is never cancelled half-way (its future is kept
//! across `select!` rounds), because a cancelled poll can lose a packet it
//! had already taken from the queue.
//!
//! - `packets`: which packet is which message, and what a PUBACK
//!   completes (driven by tests without a broker);
//! - `commands`: the centres' commands, bounded, parsed and answered;
//! - `writes`: the spool writes, batched off the runtime;
//! - `connection`: what a lost connection says.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant, SystemTime};

use alleywatch_contract::status::{AgentState, AgentStatus};
use rumqttc::{
    AsyncClient, ConnectionError, Event as MqttEvent, EventLoop, LastWill, MqttOptions, Outgoing, Packet, QoS,
    Transport,
};
use serde_json::Value;
use tokio::sync::mpsc;

use super::outbox::{Outbox, Unspooled};
use super::{topics_of, Topics};
use crate::config::Config;
use crate::control::Request;
use crate::shutdown::Shutdown;

mod commands;
mod connection;
mod packets;
mod writes;

#[cfg(test)]
mod delivery_tests;

use commands::Commands;
use connection::{describe, implicates_outgoing, incoming_too_large, COMMANDS_BACKOFF_MAX, COMMANDS_BACKOFF_MIN};
use packets::{queue_message, queue_rows, Acked, Packets, Suspects, Tag, WINDOW};
use writes::{Done, Write};

#[derive(Debug, thiserror::Error)]
pub enum PublisherError {
    #[error("broker.{key} {}: {source}", path.display())]
    File { key: &'static str, path: std::path::PathBuf, source: std::io::Error },
    #[error("broker.password_file {}: the file is empty", .0.display())]
    EmptyPassword(std::path::PathBuf),
}

/// Largest incoming packet the MQTT client reads. rumqttc drops the
/// connection on a larger one (and a retained one would then drop it after
/// every SUBACK, so the spool never drains), so this sits far above
/// [`MAX_COMMAND_BYTES`]: an oversize command is read and refused, never a
/// lost connection. The broker's `max_packet_size` should be at or below it.
pub const MAX_INCOMING_PACKET: usize = 16 << 20;
/// Replies waiting to be published.
const REPLY_QUEUE: usize = 64;

/// How long a graceful stop waits for the spool to drain.
const DRAIN_ON_STOP: Duration = Duration::from_secs(5);
/// A spooled message that was alone in flight when the connection dropped
/// this many times is set aside (see [`Suspects`]).
pub(crate) const SET_ASIDE_AFTER: u32 = 5;
/// How often a spool whose last write failed is retried (one real write).
const SPOOL_RETRY: Duration = Duration::from_secs(5);

pub struct Publisher {
    client: AsyncClient,
    eventloop: EventLoop,
    topics: Topics,
    endpoint: String,
    online: Vec<u8>,
    offline: Vec<u8>,
}

type PollFuture = Pin<Box<dyn Future<Output = (EventLoop, Result<MqttEvent, ConnectionError>)> + Send>>;

fn poll_after(mut eventloop: EventLoop, delay: Option<Duration>) -> PollFuture {
    Box::pin(async move {
        if let Some(d) = delay {
            tokio::time::sleep(d).await;
        }
        let r = eventloop.poll().await;
        (eventloop, r)
    })
}

/// Reads a secret file's first line.
fn read_secret(key: &'static str, path: &std::path::Path) -> Result<Vec<u8>, PublisherError> {
    std::fs::read(path).map_err(|source| PublisherError::File { key, path: path.to_path_buf(), source })
}

impl Publisher {
    /// Prepares the connection (it opens in [`Publisher::run`]).
    pub(crate) fn new(config: &Config) -> Result<Publisher, PublisherError> {
        let topics = topics_of(config);
        let b = &config.broker;
        let mut opts = MqttOptions::new(format!("alleywatch-{}", config.agent_id), &b.host, b.port);
        opts.set_keep_alive(Duration::from_secs(b.keep_alive_s));
        // The spool, not the broker session, carries unacknowledged
        // messages across a reconnect (see the module notes).
        opts.set_clean_session(true);
        // Snapshots are a few hundred KB at most; the default is 10 KB.
        // Incoming: see MAX_INCOMING_PACKET (commands are refused above
        // MAX_COMMAND_BYTES).
        opts.set_max_packet_size(MAX_INCOMING_PACKET, 8 << 20);
        let offline = agent_status(config, AgentState::Offline);
        opts.set_last_will(LastWill::new(topics.agent_status(), offline.clone(), QoS::AtLeastOnce, true));
        let password = match (&b.password, &b.password_file) {
            (Some(p), _) => Some(p.clone()),
            (None, Some(f)) => {
                let text = String::from_utf8_lossy(&read_secret("password_file", f)?).into_owned();
                let line = text.lines().next().unwrap_or("").trim_end().to_string();
                if line.is_empty() {
                    return Err(PublisherError::EmptyPassword(f.clone()));
                }
                Some(line)
            }
            (None, None) => None,
        };
        if let Some(user) = &b.username {
            opts.set_credentials(user, password.unwrap_or_default());
        }
        if b.tls {
            // rustls is built without a default provider to keep aws-lc out
            // of the build; install ring once per process.
            let _ = rustls::crypto::ring::default_provider().install_default();
            let ca = read_secret("ca_file", b.ca_file.as_deref().unwrap_or(std::path::Path::new("")))?;
            let client_auth = match (&b.client_cert, &b.client_key) {
                (Some(c), Some(k)) => Some((read_secret("client_cert", c)?, read_secret("client_key", k)?)),
                _ => None,
            };
            opts.set_transport(Transport::tls(ca, client_auth, None));
        }
        // Deep enough for a window of spooled messages plus every camera's
        // status; this task never waits on it (`try_publish`).
        let (client, eventloop) = AsyncClient::new(opts, 4096);
        Ok(Publisher {
            client,
            eventloop,
            topics,
            endpoint: format!("{}:{}", b.host, b.port),
            online: agent_status(config, AgentState::Online),
            offline,
        })
    }

    /// Runs until `closing` fires and the data path has stopped: drains
    /// the spool while connected, then (on stop) waits briefly for what is
    /// in flight, marks the agent offline and disconnects. What is not
    /// acknowledged stays in the spool for the next start.
    pub(crate) async fn run(self, outbox: Outbox, requests: mpsc::Sender<Request>, closing: Shutdown) {
        let Publisher { client, eventloop, topics, endpoint, online, offline } = self;
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Vec<Done>>();
        let mut s = State::new(client, topics, outbox, done_tx.clone());
        let metrics = s.outbox.metrics().clone();
        let (reply_tx, mut reply_rx) = mpsc::channel::<Value>(REPLY_QUEUE);
        let mut poll = poll_after(eventloop, None);
        let mut delay = Duration::from_millis(250);
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut stop_by: Option<tokio::time::Instant> = None;
        loop {
            tokio::select! {
                (el, ev) = &mut poll => {
                    let mut next_delay = None;
                    match ev {
                        Ok(MqttEvent::Incoming(Packet::ConnAck(_))) => {
                            tracing::info!(broker = %endpoint, "MQTT connected");
                            delay = Duration::from_millis(250);
                            s.on_connect(&online);
                        }
                        Ok(MqttEvent::Incoming(Packet::PubAck(ack))) => s.on_puback(ack.pkid),
                        Ok(MqttEvent::Outgoing(Outgoing::Publish(pkid))) => s.packets.sent(pkid),
                        Ok(MqttEvent::Incoming(Packet::Publish(p))) => {
                            if let Some(reply) = s.on_command(&p.topic, &p.payload, p.retain, &requests, &reply_tx) {
                                s.publish_other(&s.topics.replies(), false, reply.to_string().into_bytes());
                            }
                        }
                        Ok(MqttEvent::Outgoing(Outgoing::Disconnect)) => break,
                        Ok(_) => {}
                        Err(e) => {
                            metrics.publish_failures.inc();
                            s.on_disconnect(&endpoint, &e);
                            next_delay = Some(delay);
                            delay = (delay * 2).min(Duration::from_secs(10));
                        }
                    }
                    metrics.mqtt_connected.set(s.connected as i64);
                    poll = poll_after(el, next_delay);
                }
                Some(reply) = reply_rx.recv() => {
                    s.publish_other(&s.topics.replies(), false, reply.to_string().into_bytes());
                }
                _ = s.outbox.woken() => {}
                Some(done) = done_rx.recv() => s.on_written(done),
                _ = tick.tick() => s.on_tick(),
                _ = closing.wait(), if stop_by.is_none() => {
                    stop_by = Some(tokio::time::Instant::now() + DRAIN_ON_STOP);
                }
            }
            s.pump();
            if let Some(deadline) = stop_by {
                let drained = s.packets.inflight.is_empty()
                    && !s.writing
                    && s.acked.is_empty()
                    && s.outbox.spool().depth().map(|d| d.messages == 0).unwrap_or(true);
                if drained || tokio::time::Instant::now() >= deadline || !s.connected {
                    break;
                }
            }
        }
        if s.connected {
            let _ = s.client.try_publish(s.topics.agent_status(), QoS::AtLeastOnce, true, offline);
            let _ = s.client.try_disconnect();
            // Let the event loop send the status and the DISCONNECT.
            let _ = tokio::time::timeout(Duration::from_secs(2), async {
                let (mut el, _) = poll.await;
                loop {
                    match el.poll().await {
                        Ok(MqttEvent::Outgoing(Outgoing::Disconnect)) | Err(_) => break,
                        _ => {}
                    }
                }
            })
            .await;
        }
        s.on_tick();
        // Deletions of acknowledged messages still pending: finish them, so
        // the next start does not send them again.
        if s.writing {
            if let Ok(Some(done)) = tokio::time::timeout(Duration::from_secs(5), done_rx.recv()).await {
                s.on_written(done);
            }
        }
        s.start_writes();
        s.subscribe_when_drained();
        if s.writing {
            if let Ok(Some(done)) = tokio::time::timeout(Duration::from_secs(5), done_rx.recv()).await {
                s.on_written(done);
            }
        }
        if let Ok(d) = s.outbox.spool().depth() {
            if d.messages > 0 {
                tracing::info!(messages = d.messages, "unsent messages stay in the spool for the next start");
            }
        }
    }
}

struct State {
    client: AsyncClient,
    topics: Topics,
    outbox: Outbox,
    connected: bool,
    /// This connection's messages in flight.
    packets: Packets,
    last_error: Option<String>,
    suspects: Suspects,
    /// Rows acknowledged, to delete in the next write batch.
    acked: Vec<i64>,
    /// Rows acknowledged or being set aside whose write has not finished:
    /// never sent again.
    deleting: HashSet<i64>,
    /// Other writes for the next batch.
    writes: Vec<Write>,
    /// A write batch is running.
    writing: bool,
    done_tx: mpsc::UnboundedSender<Vec<Done>>,
    last_retry: Instant,
    commands: Commands,
    /// Subscribed to the commands topic on this connection.
    subscribed: bool,
    /// An incoming message over the packet limit dropped a connection:
    /// commands wait until the spool is drained.
    commands_deferred: bool,
    /// Not before then (doubling from 30 s to 10 min each time).
    commands_retry_at: Instant,
    commands_backoff: Duration,
}

impl State {
    fn new(client: AsyncClient, topics: Topics, outbox: Outbox, done_tx: mpsc::UnboundedSender<Vec<Done>>) -> State {
        State {
            client,
            topics,
            outbox,
            connected: false,
            packets: Packets::default(),
            last_error: None,
            suspects: Suspects::default(),
            acked: Vec::new(),
            deleting: HashSet::new(),
            writes: Vec::new(),
            writing: false,
            done_tx,
            last_retry: Instant::now(),
            commands: Commands::default(),
            subscribed: false,
            commands_deferred: false,
            commands_retry_at: Instant::now(),
            commands_backoff: Duration::ZERO,
        }
    }

    fn on_connect(&mut self, online: &[u8]) {
        self.connected = true;
        self.last_error = None;
        // A clean session: nothing of the last connection is in flight.
        self.packets.reset();
        self.subscribed = false;
        if !self.commands_deferred {
            self.subscribe_commands();
        }
        // Every (re)connect re-announces us and every camera: the will may
        // have marked us offline in between.
        self.publish_other(&self.topics.agent_status(), true, online.to_vec());
        let (all, removed) = self.outbox.take_dirty_statuses(true);
        self.publish_statuses(all, removed);
    }

    fn subscribe_commands(&mut self) {
        match self.client.try_subscribe(self.topics.commands(), QoS::AtLeastOnce) {
            Ok(()) => self.subscribed = true,
            Err(e) => tracing::warn!(error = %e, "cannot subscribe to commands"),
        }
    }

    /// After an oversize incoming message: subscribe again once every
    /// spooled and fallback message is acknowledged and the backoff has
    /// passed, so alerts never wait behind a command that cannot be read.
    fn subscribe_when_drained(&mut self) {
        if !self.connected || self.subscribed || !self.commands_deferred || Instant::now() < self.commands_retry_at {
            return;
        }
        let drained = self.packets.inflight.is_empty()
            && self.packets.inflight_unspooled.is_empty()
            && self.outbox.spool().depth().map(|d| d.messages == 0).unwrap_or(false);
        if drained {
            tracing::info!("spool drained; subscribing to commands again");
            self.commands_deferred = false;
            self.subscribe_commands();
        }
    }

    fn on_disconnect(&mut self, endpoint: &str, e: &ConnectionError) {
        let what = describe(e);
        if self.connected {
            tracing::warn!(broker = %endpoint, error = %what, "MQTT connection lost; alerts are spooled until it is back");
        } else if self.last_error.as_deref() != Some(what.as_str()) {
            // Once per distinct error, not once per retry.
            tracing::error!(broker = %endpoint, error = %what, "cannot connect to the MQTT broker; alerts are spooled");
        }
        self.last_error = Some(what);
        if incoming_too_large(e) {
            // A command (often a retained one) over the client's packet
            // limit: the broker sends it again right after every SUBACK.
            // Until the spool is drained, reconnect without the commands.
            if !self.commands_deferred {
                tracing::error!(
                    limit = MAX_INCOMING_PACKET,
                    "a message over the incoming packet limit arrived on the commands topic and dropped the connection; \
                     commands are now subscribed only once the spool is drained (set the broker's max_packet_size to \
                     at most this limit, and clear the retained message)"
                );
            }
            self.commands_deferred = true;
            // Each time it happens again, the next try waits longer.
            self.commands_backoff = (self.commands_backoff * 2).clamp(COMMANDS_BACKOFF_MIN, COMMANDS_BACKOFF_MAX);
            self.commands_retry_at = Instant::now() + self.commands_backoff;
            self.outbox.metrics().commands_refused.with_label_values(&["too_large"]).inc();
        }
        if self.connected && implicates_outgoing(e) {
            let inflight: Vec<i64> = self.packets.inflight.keys().copied().collect();
            for id in self.suspects.lost(&inflight) {
                self.deleting.insert(id);
                self.writes.push(Write::SetAside(id));
            }
        }
        self.connected = false;
    }

    fn on_puback(&mut self, pkid: u16) {
        match self.packets.puback(pkid) {
            Acked::Row(id) => {
                self.suspects.acked(id);
                // Deleted off the runtime, in the next write batch; until
                // then the row is skipped, never sent again.
                self.deleting.insert(id);
                self.acked.push(id);
            }
            Acked::Unspooled(seq) => self.writes.push(Write::UnspooledAcked(seq)),
            Acked::Nothing => {}
        }
    }

    fn publish_other(&mut self, topic: &str, retain: bool, payload: Vec<u8>) {
        if !self.connected {
            return;
        }
        match self.client.try_publish(topic, QoS::AtLeastOnce, retain, payload) {
            Ok(()) => self.packets.tags.push_back(Tag::Other),
            Err(e) => tracing::warn!(error = %e, topic, "cannot queue publish"),
        }
    }

    fn publish_statuses(&mut self, statuses: Vec<crate::source::CameraStatus>, removed: Vec<String>) {
        for st in statuses {
            match serde_json::to_vec(&st) {
                Ok(payload) => self.publish_other(&self.topics.camera_status(&st.camera), true, payload),
                Err(e) => tracing::warn!(error = %e, "cannot encode camera status"),
            }
        }
        for camera in removed {
            // An empty retained message clears the topic.
            self.publish_other(&self.topics.camera_status(&camera), true, Vec::new());
        }
    }

    /// Sends what is waiting: statuses, then spooled messages up to the
    /// window, then (once every spooled one is queued, so none overtakes an
    /// older one) the messages waiting in memory. Starts pending spool
    /// writes.
    fn pump(&mut self) {
        self.start_writes();
        if !self.connected {
            return;
        }
        let (dirty, removed) = self.outbox.take_dirty_statuses(false);
        self.publish_statuses(dirty, removed);
        if self.pump_spooled() {
            self.pump_unspooled();
        }
    }

    /// Queues spooled rows; true once every row is queued (or the spool
    /// cannot be read: then what waits in memory still goes out).
    fn pump_spooled(&mut self) -> bool {
        loop {
            let window = self.suspects.window();
            if self.packets.inflight.len() >= window {
                return false;
            }
            let entries = match self.outbox.spool().after(self.packets.cursor, window - self.packets.inflight.len()) {
                Ok(e) => e,
                Err(e) => {
                    tracing::error!(error = %e, "cannot read the spool");
                    return true;
                }
            };
            let Some(first) = entries.first() else {
                self.suspects.passed(i64::MAX, &self.packets.inflight);
                return true;
            };
            self.suspects.passed(first.id, &self.packets.inflight);
            let (client, tags, inflight, deleting, cursor, outbox) = (
                &mut self.client,
                &mut self.packets.tags,
                &mut self.packets.inflight,
                &self.deleting,
                &mut self.packets.cursor,
                &self.outbox,
            );
            let mut send =
                |topic: &str, payload: Vec<u8>| client.try_publish(topic, QoS::AtLeastOnce, false, payload).is_ok();
            let all = queue_rows(
                entries,
                cursor,
                tags,
                &mut send,
                |id| deleting.contains(&id),
                |entry, parts| {
                    inflight.insert(entry.id, (parts, Instant::now()));
                    let m = outbox.metrics();
                    let kind = entry.topic.rsplit('/').next().unwrap_or("");
                    m.published.with_label_values(&[kind, &entry.phase]).inc();
                    let age = (now_ms() - entry.created_ms).max(0) as f64 / 1000.0;
                    m.stage("capture_to_publish").observe(age);
                    tracing::info!(kind, phase = %entry.phase, camera = %entry.camera, id = %entry.event_id, seq = entry.seq, "event");
                },
            );
            if !all {
                return false;
            }
        }
    }

    /// Queues the messages waiting in memory that are not yet in flight on
    /// this connection, oldest first; each stays there until its PUBACK, so
    /// a reconnect sends it again.
    fn pump_unspooled(&mut self) {
        let room = WINDOW.saturating_sub(self.packets.inflight.len() + self.packets.inflight_unspooled.len());
        if room == 0 {
            return;
        }
        // Never wait here for an analysis thread that holds the queue
        // while it writes the spool: it wakes us when it is done.
        let Some(waiting) = self.outbox.try_unspooled_after(self.packets.unspooled_cursor, room) else { return };
        for Unspooled { event, snapshot } in waiting {
            let kind = event.kind.as_str();
            let Ok(payload) = serde_json::to_vec(&event) else { continue };
            let snapshot_topic = self.topics.snapshot(kind, &event.id);
            let snapshot = snapshot.map(|jpeg| (snapshot_topic.as_str(), jpeg));
            let topic = self.topics.event(kind);
            let client = &mut self.client;
            let mut send =
                |topic: &str, payload: Vec<u8>| client.try_publish(topic, QoS::AtLeastOnce, false, payload).is_ok();
            match queue_message(&mut send, &mut self.packets.tags, Tag::Unspooled(event.seq), snapshot, &topic, payload)
            {
                Some(parts) => {
                    self.packets.unspooled_cursor = event.seq;
                    self.packets.inflight_unspooled.insert(event.seq, parts);
                    tracing::info!(kind, id = %event.id, seq = event.seq, "event sent from memory (the spool refused it)");
                }
                None => return,
            }
        }
    }

    /// Once a second: escalations and the spool gauges.
    fn on_tick(&mut self) {
        let due = self.outbox.ledger().due_escalations(Instant::now());
        for ev in &due {
            let e = ev.centre.escalation.as_ref();
            tracing::warn!(id = %ev.id, level = e.map(|e| e.level.as_str()).unwrap_or(""), "escalating an unacknowledged event");
        }
        if !due.is_empty() {
            // Spooled (an fsync) on the blocking thread, not here.
            self.writes.push(Write::Events(due));
        }
        let m = self.outbox.metrics();
        let healthy = self.outbox.spool().healthy();
        m.spool_write_ok.set(healthy as i64);
        let waiting = m.spool_fallback_messages.get() > 0;
        if (!healthy || waiting) && self.last_retry.elapsed() >= SPOOL_RETRY {
            self.last_retry = Instant::now();
            self.writes.push(Write::Retry);
        }
        if let Ok(d) = self.outbox.spool().depth() {
            m.spool_messages.set(d.messages as i64);
            m.spool_bytes.set(d.bytes as i64);
            m.spool_oldest_age.set(d.oldest_age_s);
        }
    }
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// The retained agent status payload.
fn agent_status(config: &Config, state: AgentState) -> Vec<u8> {
    let status = AgentStatus {
        state,
        agent: config.agent_id.clone(),
        site: config.site.path(),
        version: env!("CARGO_PKG_VERSION").into(),
        cameras: config.cameras.iter().map(|c| c.id.clone()).collect(),
        at: SystemTime::now(),
    };
    serde_json::to_vec(&status).unwrap_or_default()
}
