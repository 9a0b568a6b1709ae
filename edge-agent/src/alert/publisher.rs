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

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use rumqttc::{
    AsyncClient, ConnectReturnCode, ConnectionError, Event as MqttEvent, EventLoop, LastWill, MqttOptions, Outgoing,
    Packet, QoS, Transport,
};
use serde_json::{json, Value};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot};

use super::ledger::{MAX_BY_CHARS, MAX_NOTE_CHARS};
use super::outbox::{Outbox, Unspooled};
use super::spool::Entry;
use super::{Event, Topics};
use crate::config::Config;
use crate::control::{Change, Request, REQUEST_QUEUE};
use crate::shutdown::Shutdown;

#[derive(Debug, thiserror::Error)]
pub enum PublisherError {
    #[error("broker.{key} {}: {source}", path.display())]
    File { key: &'static str, path: std::path::PathBuf, source: std::io::Error },
    #[error("broker.password_file {}: the file is empty", .0.display())]
    EmptyPassword(std::path::PathBuf),
}

/// Largest command payload, in bytes. A `set` of a whole lane is under
/// 1 KiB; anything far larger is a mistake or an attack, refused unread.
pub const MAX_COMMAND_BYTES: usize = 64 * 1024;
/// Largest incoming packet the MQTT client reads. rumqttc drops the
/// connection on a larger one (and a retained one would then drop it after
/// every SUBACK, so the spool never drains), so this sits far above
/// [`MAX_COMMAND_BYTES`]: an oversize command is read and refused, never a
/// lost connection. The broker's `max_packet_size` should be at or below it.
pub const MAX_INCOMING_PACKET: usize = 16 << 20;
/// Commands waiting for the manager's answer at once (a `reference` waits
/// for the camera's next frame, which a stalled camera never has).
const MAX_PENDING: usize = 16;
/// How long a command waits for the manager's answer before its reply says so.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);
/// Rate limit of each command topic: a burst of this many…
pub const RATE_BURST: f64 = 10.0;
/// …then this many per second.
pub const RATE_PER_S: f64 = 2.0;
/// Longest `request_id`, in characters.
const MAX_REQUEST_ID_CHARS: usize = 128;
/// Longest `event_id`, `camera` and `lane`, in characters.
const MAX_NAME_CHARS: usize = 64;
/// Replies waiting to be published.
const REPLY_QUEUE: usize = 64;

/// Spooled messages in flight at once. Small: a reconnect resends them.
const WINDOW: usize = 16;
/// How long a graceful stop waits for the spool to drain.
const DRAIN_ON_STOP: Duration = Duration::from_secs(5);
/// A spooled message that was alone in flight when the connection dropped
/// this many times is set aside (see [`Suspects`]).
pub const SET_ASIDE_AFTER: u32 = 5;
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

/// What a submitted QoS 1 publish is, so its PUBACK can be matched.
#[derive(Debug, Clone, Copy)]
enum Tag {
    /// One packet of a spooled message (row id).
    Spooled(i64),
    /// One packet of a message waiting in memory (its seq).
    Unspooled(u64),
    Other,
}

/// Spool writes the publisher asks for. They run on a blocking thread, one
/// batch at a time, never on the async runtime's workers: each commits with
/// an fsync, which can take a second on an SD card.
enum Write {
    /// Delete rows the broker acknowledged (one transaction).
    Remove(Vec<i64>),
    /// Move a row the broker keeps refusing out of the drain.
    SetAside(i64),
    /// A fallback message was acknowledged: forget it.
    UnspooledAcked(u64),
    /// Store what waits in memory, or probe a spool whose write failed.
    Retry,
    /// Escalations to spool.
    Events(Vec<Event>),
}

/// What a [`Write`] batch did, reported back to the publisher task.
enum Done {
    Removed(Vec<i64>, Result<(), String>),
    SetAside(i64, Result<Option<(u64, String, String, String)>, String>),
    Other,
}

/// Spooled rows suspected of making the broker (or the client) drop the
/// connection: a message over a size limit is refused with a disconnect,
/// and would otherwise be sent first again after every reconnect, blocking
/// everything behind it.
///
/// Every row in flight when a connection drops becomes a suspect. While
/// there are suspects, rows are sent one at a time, so a drop can be
/// blamed on the one row in flight: that row gets a strike. A suspect
/// leaves on its PUBACK; at [`SET_ASIDE_AFTER`] strikes it is set aside. A
/// flaky network therefore strikes a good row only if it drops the
/// connection that many times while that row alone is in flight.
#[derive(Debug, Default)]
struct Suspects {
    strikes: BTreeMap<i64, u32>,
}

impl Suspects {
    /// How many rows may be in flight.
    fn window(&self) -> usize {
        if self.strikes.is_empty() {
            WINDOW
        } else {
            1
        }
    }

    /// The connection dropped with `inflight` rows unacknowledged; returns
    /// the rows to set aside now.
    fn lost(&mut self, inflight: &[i64]) -> Vec<i64> {
        let mut out = Vec::new();
        if let [only] = inflight {
            if let Some(n) = self.strikes.get_mut(only) {
                *n += 1;
                if *n >= SET_ASIDE_AFTER {
                    self.strikes.remove(only);
                    out.push(*only);
                }
                return out;
            }
        }
        for id in inflight {
            self.strikes.entry(*id).or_insert(0);
        }
        out
    }

    fn acked(&mut self, id: i64) {
        self.strikes.remove(&id);
    }

    /// The drain reached row `next` (or the end, `i64::MAX`): suspects
    /// before it that are not in flight are gone from the spool (acked,
    /// or dropped to make room).
    fn passed(&mut self, next: i64, inflight: &HashMap<i64, (u8, Instant)>) {
        self.strikes.retain(|id, _| *id >= next || inflight.contains_key(id));
    }
}

#[cfg(test)]
#[path = "publisher_delivery_tests.rs"]
mod delivery_tests;

/// Queues one message (its snapshot first, if any) through `send` (the
/// client's `try_publish`), tagging each packet. Returns its packet count,
/// or `None` when a part could not be queued: the message is then not
/// queued at all as far as the bookkeeping goes (a snapshot already queued
/// is re-tagged `Other`, so its PUBACK cannot count for the row), and it
/// is sent whole, again, before anything after it.
fn queue_message(
    send: &mut impl FnMut(&str, Vec<u8>) -> bool,
    tags: &mut VecDeque<Tag>,
    tag: Tag,
    snapshot: Option<(&str, Vec<u8>)>,
    topic: &str,
    payload: Vec<u8>,
) -> Option<u8> {
    let mut parts = 0u8;
    if let Some((t, jpeg)) = snapshot {
        if !send(t, jpeg) {
            return None;
        }
        tags.push_back(tag);
        parts += 1;
    }
    if !send(topic, payload) {
        if parts > 0 {
            if let Some(last) = tags.back_mut() {
                *last = Tag::Other;
            }
        }
        return None;
    }
    tags.push_back(tag);
    Some(parts + 1)
}

/// Queues spooled rows in order, moving `cursor` past a row only once
/// every part of it is queued; `skip` rows (acknowledged, being deleted)
/// are passed over. Returns false when a row could not be queued (the
/// client's queue is full): it is the first one sent next time.
fn queue_rows(
    entries: Vec<Entry>,
    cursor: &mut i64,
    tags: &mut VecDeque<Tag>,
    send: &mut impl FnMut(&str, Vec<u8>) -> bool,
    skip: impl Fn(i64) -> bool,
    mut queued: impl FnMut(&Entry, u8),
) -> bool {
    for mut entry in entries {
        if skip(entry.id) {
            *cursor = entry.id;
            continue;
        }
        // The bytes go to the client; `queued` reads only the row's other
        // fields, so they are moved, not copied (a snapshot is up to 960 KB).
        let (snapshot_topic, jpeg) = entry.snapshot.take().unzip();
        let snapshot = snapshot_topic.as_deref().zip(jpeg);
        let payload = std::mem::take(&mut entry.payload);
        match queue_message(send, tags, Tag::Spooled(entry.id), snapshot, &entry.topic, payload) {
            Some(parts) => {
                *cursor = entry.id;
                queued(&entry, parts);
            }
            None => return false,
        }
    }
    true
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
    pub fn new(config: &Config) -> Result<Publisher, PublisherError> {
        let topics = Topics::new(config);
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
        let offline = agent_status(config, "offline");
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
            online: agent_status(config, "online"),
            offline,
        })
    }

    /// Runs until `closing` fires and the data path has stopped: drains
    /// the spool while connected, then (on stop) waits briefly for what is
    /// in flight, marks the agent offline and disconnects. What is not
    /// acknowledged stays in the spool for the next start.
    pub async fn run(self, outbox: Outbox, requests: mpsc::Sender<Request>, closing: Shutdown) {
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
                        Ok(MqttEvent::Outgoing(Outgoing::Publish(pkid))) => s.on_sent(pkid),
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
                let drained = s.inflight.is_empty()
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
    /// Tags of submitted QoS 1 publishes not yet given a packet id.
    tags: VecDeque<Tag>,
    /// Packet id → tag, until the PUBACK.
    pkids: HashMap<u16, Tag>,
    /// Spooled row id → its packets not yet acknowledged (and when it went).
    inflight: HashMap<i64, (u8, Instant)>,
    /// Highest spooled row fully queued on this connection.
    cursor: i64,
    last_error: Option<String>,
    /// Fallback messages (by seq) → packets not yet acknowledged.
    inflight_unspooled: HashMap<u64, u8>,
    /// Highest fallback seq queued on this connection.
    unspooled_cursor: u64,
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

/// The bounds on the centres' commands: a token bucket per command topic
/// and the count of commands waiting for the manager's answer.
#[derive(Default)]
struct Commands {
    /// Command → (tokens, last refill, refusing since the last allowed one).
    buckets: HashMap<&'static str, (f64, Instant, bool)>,
    pending: Arc<AtomicUsize>,
}

impl Commands {
    /// Takes a token of `command`'s bucket. `Err(first)`: refused, `first`
    /// when it is the first refusal since the last allowed command (logged
    /// once, not once per message of a flood).
    fn take(&mut self, command: &'static str, now: Instant) -> Result<(), bool> {
        let (tokens, at, refusing) = self.buckets.entry(command).or_insert((RATE_BURST, now, false));
        *tokens = (*tokens + now.saturating_duration_since(*at).as_secs_f64() * RATE_PER_S).min(RATE_BURST);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            *refusing = false;
            Ok(())
        } else {
            Err(!std::mem::replace(refusing, true))
        }
    }
}

/// The command named by a topic's last level, as a bounded label.
fn command_name(name: &str) -> &'static str {
    match name {
        "ack" => "ack",
        "resolve" => "resolve",
        "set" => "set",
        "reference" => "reference",
        _ => "unknown",
    }
}

impl State {
    fn new(client: AsyncClient, topics: Topics, outbox: Outbox, done_tx: mpsc::UnboundedSender<Vec<Done>>) -> State {
        State {
            client,
            topics,
            outbox,
            connected: false,
            tags: VecDeque::new(),
            pkids: HashMap::new(),
            inflight: HashMap::new(),
            cursor: 0,
            last_error: None,
            inflight_unspooled: HashMap::new(),
            unspooled_cursor: 0,
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
        self.tags.clear();
        self.pkids.clear();
        self.inflight.clear();
        self.cursor = 0;
        self.inflight_unspooled.clear();
        self.unspooled_cursor = 0;
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
        let drained = self.inflight.is_empty()
            && self.inflight_unspooled.is_empty()
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
            let inflight: Vec<i64> = self.inflight.keys().copied().collect();
            for id in self.suspects.lost(&inflight) {
                self.deleting.insert(id);
                self.writes.push(Write::SetAside(id));
            }
        }
        self.connected = false;
    }

    fn on_sent(&mut self, pkid: u16) {
        if pkid == 0 {
            return; // QoS 0: nothing to match.
        }
        match self.tags.pop_front() {
            Some(tag) => {
                self.pkids.insert(pkid, tag);
            }
            None => tracing::debug!(pkid, "publish with no tag"),
        }
    }

    fn on_puback(&mut self, pkid: u16) {
        match self.pkids.remove(&pkid) {
            Some(Tag::Spooled(id)) => {
                let Some((left, _)) = self.inflight.get_mut(&id) else { return };
                *left -= 1;
                if *left > 0 {
                    return;
                }
                self.inflight.remove(&id);
                self.suspects.acked(id);
                // Deleted off the runtime, in the next write batch; until
                // then the row is skipped, never sent again.
                self.deleting.insert(id);
                self.acked.push(id);
            }
            Some(Tag::Unspooled(seq)) => {
                let Some(left) = self.inflight_unspooled.get_mut(&seq) else { return };
                *left -= 1;
                if *left == 0 {
                    self.inflight_unspooled.remove(&seq);
                    self.writes.push(Write::UnspooledAcked(seq));
                }
            }
            Some(Tag::Other) | None => {}
        }
    }

    /// Starts the next batch of spool writes on a blocking thread, unless
    /// one is running.
    fn start_writes(&mut self) {
        if self.writing || (self.acked.is_empty() && self.writes.is_empty()) {
            return;
        }
        let mut batch = std::mem::take(&mut self.writes);
        if !self.acked.is_empty() {
            batch.insert(0, Write::Remove(std::mem::take(&mut self.acked)));
        }
        let (outbox, done_tx) = (self.outbox.clone(), self.done_tx.clone());
        self.writing = true;
        tokio::task::spawn_blocking(move || {
            let spool = outbox.spool();
            let done: Vec<Done> = batch
                .into_iter()
                .map(|w| match w {
                    Write::Remove(ids) => {
                        let r = spool.remove_many(&ids).map_err(|e| e.to_string());
                        Done::Removed(ids, r)
                    }
                    Write::SetAside(id) => {
                        let reason = format!("the connection dropped {SET_ASIDE_AFTER} times with it alone in flight");
                        Done::SetAside(id, spool.set_aside(id, &reason).map_err(|e| e.to_string()))
                    }
                    Write::UnspooledAcked(seq) => {
                        outbox.unspooled_acked(seq);
                        Done::Other
                    }
                    Write::Retry => {
                        outbox.retry_spool();
                        Done::Other
                    }
                    Write::Events(events) => {
                        for ev in events {
                            outbox.event(ev, None);
                        }
                        Done::Other
                    }
                })
                .collect();
            let _ = done_tx.send(done);
        });
    }

    /// A write batch finished.
    fn on_written(&mut self, done: Vec<Done>) {
        self.writing = false;
        let m = self.outbox.metrics().clone();
        for d in done {
            match d {
                Done::Removed(ids, r) => {
                    if let Err(e) = r {
                        // They will be sent again: a duplicate, never a loss.
                        tracing::error!(error = %e, "cannot delete acknowledged messages from the spool");
                    }
                    for id in ids {
                        self.deleting.remove(&id);
                    }
                }
                Done::SetAside(id, r) => {
                    self.deleting.remove(&id);
                    match r {
                        Ok(Some((seq, event_id, phase, topic))) => {
                            m.spool_set_aside.inc();
                            let kind = topic.rsplit('/').next().unwrap_or("");
                            tracing::error!(
                                event = %event_id, kind, phase = %phase, seq,
                                "set aside a spooled message: the connection dropped {SET_ASIDE_AFTER} times while it alone was in flight (over the broker's size limit, or refused by its ACL?); it stays in the spool's set_aside table"
                            );
                        }
                        Ok(None) => {}
                        Err(e) => tracing::error!(error = %e, row = id, "cannot set aside a spooled message"),
                    }
                }
                Done::Other => {}
            }
        }
    }

    fn publish_other(&mut self, topic: &str, retain: bool, payload: Vec<u8>) {
        if !self.connected {
            return;
        }
        match self.client.try_publish(topic, QoS::AtLeastOnce, retain, payload) {
            Ok(()) => self.tags.push_back(Tag::Other),
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
            if self.inflight.len() >= window {
                return false;
            }
            let entries = match self.outbox.spool().after(self.cursor, window - self.inflight.len()) {
                Ok(e) => e,
                Err(e) => {
                    tracing::error!(error = %e, "cannot read the spool");
                    return true;
                }
            };
            let Some(first) = entries.first() else {
                self.suspects.passed(i64::MAX, &self.inflight);
                return true;
            };
            self.suspects.passed(first.id, &self.inflight);
            let (client, tags, inflight, deleting, cursor, outbox) =
                (&mut self.client, &mut self.tags, &mut self.inflight, &self.deleting, &mut self.cursor, &self.outbox);
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
        let room = WINDOW.saturating_sub(self.inflight.len() + self.inflight_unspooled.len());
        if room == 0 {
            return;
        }
        // Never wait here for an analysis thread that holds the queue
        // while it writes the spool: it wakes us when it is done.
        let Some(waiting) = self.outbox.try_unspooled_after(self.unspooled_cursor, room) else { return };
        for Unspooled { event, snapshot } in waiting {
            let kind = event.kind.as_str();
            let Ok(payload) = serde_json::to_vec(&event) else { continue };
            let snapshot_topic = self.topics.snapshot(kind, &event.id);
            let snapshot = snapshot.map(|jpeg| (snapshot_topic.as_str(), jpeg));
            let topic = self.topics.event(kind);
            let client = &mut self.client;
            let mut send =
                |topic: &str, payload: Vec<u8>| client.try_publish(topic, QoS::AtLeastOnce, false, payload).is_ok();
            match queue_message(&mut send, &mut self.tags, Tag::Unspooled(event.seq), snapshot, &topic, payload) {
                Some(parts) => {
                    self.unspooled_cursor = event.seq;
                    self.inflight_unspooled.insert(event.seq, parts);
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
            tracing::warn!(id = %ev.id, level = e.map(|e| e.level).unwrap_or(""), "escalating an unacknowledged event");
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

    /// Handles a message on the commands topic; returns the reply to publish
    /// now (`set` and `reference` reply later, once the manager answers).
    /// Every command gets exactly one reply. Before it is read, a command is
    /// refused when its topic is over its rate, when it is larger than
    /// [`MAX_COMMAND_BYTES`], or when it is retained: a retained command
    /// would run again after every reconnect.
    fn on_command(
        &mut self,
        topic: &str,
        payload: &[u8],
        retain: bool,
        requests: &mpsc::Sender<Request>,
        reply_tx: &mpsc::Sender<Value>,
    ) -> Option<Value> {
        let prefix = format!("{}/commands/", self.topics.base());
        let name = topic.strip_prefix(&prefix)?;
        let label = command_name(name);
        // An unknown name is echoed, but never at any length.
        let command: String =
            if label == "unknown" { name.chars().take(MAX_NAME_CHARS).collect() } else { name.into() };
        let m = self.outbox.metrics().clone();
        if let Err(first) = self.commands.take(label, Instant::now()) {
            let e = format!(
                "rate limit: at most {RATE_BURST} at once and {RATE_PER_S} per s on commands/{command}; refused, send it again later"
            );
            if first {
                tracing::warn!(command = %command, "commands over the rate limit are refused (logged once per burst)");
            }
            // One reply per burst, not one per message: a flood answered
            // message for message would fill the client's queue that
            // alerts need. The rest are counted.
            let reply = self.refuse(&command, &Value::Null, "rate_limited", e, &m, false);
            return first.then_some(reply);
        }
        if payload.len() > MAX_COMMAND_BYTES {
            let e = format!(
                "payload of {} bytes refused unread: a command is at most {MAX_COMMAND_BYTES} bytes",
                payload.len()
            );
            return Some(self.refuse(&command, &Value::Null, "too_large", e, &m, true));
        }
        let parsed: Result<Value, String> = match serde_json::from_slice(payload) {
            Ok(v @ Value::Object(_)) => Ok(v),
            Ok(_) => Err("payload must be a JSON object".into()),
            Err(e) => Err(format!("payload is not JSON: {e}")),
        };
        if retain {
            let e = "retained commands are refused, never run: the broker delivers a retained message again on \
                     every (re)connect, so it would run again each time; publish commands with retain = false, and \
                     clear this one (publish an empty retained message to its topic)"
                .to_string();
            let body = parsed.unwrap_or(Value::Null);
            return Some(self.refuse(&command, &body, "retained", e, &m, true));
        }
        let body = match parsed {
            Ok(b) => b,
            Err(e) => return Some(self.reply(&command, &Value::Null, Err(e), &m)),
        };
        let result: Result<(), String> = match label {
            "ack" => (|| {
                let (id, by) = (need(&body, &command, "event_id")?, need(&body, &command, "by")?);
                let note = field(&body, &command, "note")?;
                field(&body, &command, "request_id")?;
                self.outbox.ledger().ack(&id, &by, note).map_err(|e| format!("{command}: {e}"))?;
                tracing::info!(id = %id, by = %by, "event acknowledged");
                Ok(())
            })(),
            "resolve" => (|| {
                let (id, by) = (need(&body, &command, "event_id")?, need(&body, &command, "by")?);
                field(&body, &command, "request_id")?;
                let end = self.outbox.ledger().resolve(&id, &by).map_err(|e| format!("{command}: {e}"))?;
                tracing::info!(id = %id, by = %by, "event resolved by the centre");
                // Stored (with its fsync) on the blocking write thread, like
                // every other write of this task.
                self.writes.push(Write::Events(vec![end]));
                Ok(())
            })(),
            "set" | "reference" => match change_of(&command, &body) {
                Err(e) => Err(e),
                Ok((by, change)) => match self.ask(&command, by, change, &body, requests, reply_tx) {
                    Ok(()) => return None,
                    Err((reason, e)) => {
                        if let Some(reason) = reason {
                            m.commands_refused.with_label_values(&[reason]).inc();
                        }
                        Err(e)
                    }
                },
            },
            _ => Err(format!("unknown command {command:?} (known: ack, resolve, set, reference)")),
        };
        Some(self.reply(&command, &body, result, &m))
    }

    /// Hands a change to the manager; a task publishes the reply once it
    /// answers (or after [`ANSWER_TIMEOUT`]). Refused as busy when the
    /// queue is full or too many commands already wait for an answer.
    fn ask(
        &mut self,
        command: &str,
        by: String,
        change: Change,
        body: &Value,
        requests: &mpsc::Sender<Request>,
        reply_tx: &mpsc::Sender<Value>,
    ) -> Result<(), (Option<&'static str>, String)> {
        let busy = |what: String| (Some("busy"), format!("{command}: busy: {what}; send it again later"));
        let pending = self.commands.pending.clone();
        if pending.load(Ordering::Relaxed) >= MAX_PENDING {
            return Err(busy(format!("{MAX_PENDING} commands are already waiting for an answer")));
        }
        let (tx, rx) = oneshot::channel();
        match requests.try_send(Request { change, by, reply: tx }) {
            Err(TrySendError::Full(_)) => return Err(busy(format!("{REQUEST_QUEUE} changes are already queued"))),
            Err(TrySendError::Closed(_)) => return Err((None, format!("{command}: the agent is stopping"))),
            Ok(()) => {}
        }
        pending.fetch_add(1, Ordering::Relaxed);
        let m = self.outbox.metrics().clone();
        let (reply_tx, body, command) = (reply_tx.clone(), body.clone(), command.to_string());
        tokio::spawn(async move {
            let result = match tokio::time::timeout(ANSWER_TIMEOUT, rx).await {
                Ok(Ok(r)) => r,
                Ok(Err(_)) => Err(format!("{command}: no answer")),
                Err(_) => Err(format!("{command}: no answer within {} s", ANSWER_TIMEOUT.as_secs())),
            };
            let label = if result.is_ok() { "ok" } else { "error" };
            m.commands.with_label_values(&[&command, label]).inc();
            if let Err(e) = &result {
                tracing::warn!(command = %command, error = %e, "command rejected");
            }
            let _ = reply_tx.send(reply_body(&command, &body, result)).await;
            pending.fetch_sub(1, Ordering::Relaxed);
        });
        Ok(())
    }

    /// A command refused unread (`reason`: a `commands_refused` label).
    fn refuse(
        &self,
        command: &str,
        body: &Value,
        reason: &'static str,
        error: String,
        m: &crate::metrics::Metrics,
        log: bool,
    ) -> Value {
        m.commands_refused.with_label_values(&[reason]).inc();
        m.commands.with_label_values(&[command_name(command), "error"]).inc();
        if log {
            tracing::warn!(command, reason, "command refused");
        }
        reply_body(command, body, Err(error))
    }

    fn reply(&self, command: &str, body: &Value, result: Result<(), String>, m: &crate::metrics::Metrics) -> Value {
        let label = if result.is_ok() { "ok" } else { "error" };
        m.commands.with_label_values(&[command_name(command), label]).inc();
        if let Err(e) = &result {
            tracing::warn!(command, error = %e, "command rejected");
        }
        reply_body(command, body, result)
    }
}

/// The longest a command's string `field` may be, in characters.
fn max_chars(field: &str) -> usize {
    match field {
        "note" => MAX_NOTE_CHARS,
        "by" => MAX_BY_CHARS,
        "request_id" => MAX_REQUEST_ID_CHARS,
        _ => MAX_NAME_CHARS,
    }
}

/// An optional string field of a command, within its length limit.
fn field(body: &Value, command: &str, k: &str) -> Result<Option<String>, String> {
    match body.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => {
            let (got, max) = (s.chars().count(), max_chars(k));
            if got > max {
                return Err(format!("{command}: field {k:?}: {got} characters, at most {max}"));
            }
            Ok(Some(s.clone()))
        }
        Some(_) => Err(format!("{command}: field {k:?} must be a string")),
    }
}

/// A required string field of a command, within its length limit.
fn need(body: &Value, command: &str, k: &str) -> Result<String, String> {
    field(body, command, k)?.ok_or_else(|| format!("{command}: field {k:?} (a string) is required"))
}

/// The change a `set` or `reference` command asks for, and who asks.
fn change_of(command: &str, body: &Value) -> Result<(String, Change), String> {
    let by = need(body, command, "by")?;
    field(body, command, "request_id")?;
    let change = if command == "set" {
        Change::Set(
            body.get("changes")
                .and_then(Value::as_object)
                .cloned()
                .ok_or_else(|| "set: field \"changes\" (an object of key path → value) is required".to_string())?,
        )
    } else {
        Change::Reference { camera: need(body, command, "camera")?, lane: field(body, command, "lane")? }
    };
    Ok((by, change))
}

/// The reply on `{base}/replies`: which command, for which event or
/// request, and whether it took effect.
/// Echoed fields are strings within their limits, or null.
fn reply_body(command: &str, body: &Value, result: Result<(), String>) -> Value {
    let echo = |k: &str| body.get(k).and_then(Value::as_str).filter(|s| s.chars().count() <= max_chars(k));
    json!({
        "command": command,
        "request_id": echo("request_id"),
        "event_id": echo("event_id"),
        "by": echo("by"),
        "ok": result.is_ok(),
        "error": result.err(),
        "at": crate::vocab::time::rfc3339::format(&SystemTime::now()),
    })
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// Whether a lost connection may be the fault of a message this agent
/// sent (the broker closing on it, the client refusing to send it): only
/// then do the rows in flight get a strike. A timeout, a refused login or an
/// incoming packet the client cannot read says nothing about them.
fn implicates_outgoing(e: &ConnectionError) -> bool {
    use rumqttc::StateError;
    matches!(
        e,
        ConnectionError::Io(_)
            | ConnectionError::MqttState(StateError::Io(_))
            | ConnectionError::MqttState(StateError::ConnectionAborted)
            | ConnectionError::MqttState(StateError::Deserialization(rumqttc::Error::OutgoingPacketTooLarge { .. }))
    )
}

/// An incoming packet over the client's limit (rumqttc closes the
/// connection on it).
fn incoming_too_large(e: &ConnectionError) -> bool {
    matches!(
        e,
        ConnectionError::MqttState(rumqttc::StateError::Deserialization(rumqttc::Error::PayloadSizeLimitExceeded(_)))
    )
}

/// How long commands wait after an oversize incoming message first dropped
/// the connection, and at most after it kept doing so.
const COMMANDS_BACKOFF_MIN: Duration = Duration::from_secs(30);
const COMMANDS_BACKOFF_MAX: Duration = Duration::from_secs(600);

/// A connection error in words a technician can act on.
fn describe(e: &ConnectionError) -> String {
    match e {
        ConnectionError::ConnectionRefused(code) => match code {
            ConnectReturnCode::BadUserNamePassword => {
                "the broker refused the connection: bad username or password (check broker.username and broker.password_file)".into()
            }
            ConnectReturnCode::NotAuthorized => {
                "the broker refused the connection: not authorised (check broker.username, the password and the broker's ACL)".into()
            }
            other => format!("the broker refused the connection: {other:?}"),
        },
        ConnectionError::Tls(t) => format!("TLS: {t} (check broker.ca_file, broker.client_cert and broker.client_key)"),
        other => other.to_string(),
    }
}

/// The retained agent status payload.
fn agent_status(config: &Config, state: &str) -> Vec<u8> {
    json!({
        "state": state,
        "agent": config.agent_id,
        "site": config.site.path(),
        "version": env!("CARGO_PKG_VERSION"),
        "cameras": config.cameras.iter().map(|c| &c.id).collect::<Vec<_>>(),
        "at": crate::vocab::time::rfc3339::format(&SystemTime::now()),
    })
    .to_string()
    .into_bytes()
}

#[cfg(test)]
#[path = "publisher_commands_tests.rs"]
mod commands_tests;
