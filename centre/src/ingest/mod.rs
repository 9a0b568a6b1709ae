//! From the broker to the database: the centre's one MQTT session and the
//! writer behind it.
//!
//! The session is persistent (`clean_session = false`, a fixed client id)
//! and subscribes at QoS 1, so the broker queues what agents publish while
//! the centre is down and hands it over when it comes back. Acknowledgements
//! are manual: a message is acknowledged only after the transaction that
//! stores it has committed, so a centre that dies mid-batch gets the batch
//! again rather than losing it (and the store's `(id, seq)` key makes the
//! second copy harmless).
//!
//! - [`message`]: what one message is, or why it is refused.

pub mod message;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, Publish, QoS};
use tokio::sync::{mpsc, watch};

use crate::config::Config;
use crate::live::Live;
use crate::metrics::Metrics;
use crate::store::Store;
use crate::Health;
use message::{classify, Ingested, Limits, Refused};

/// Messages waiting between the session and the writer. When the writer
/// falls behind (or the database is down) the session stops reading, and
/// the broker keeps the rest.
const QUEUE: usize = 1024;

/// Largest MQTT packet the session reads. It is not the payload limit
/// (that is checked per topic, and counted): a larger packet would make
/// the client drop the connection, and the broker would redeliver it on
/// every reconnect, so it is set high and the broker's own
/// `message_size_limit` is the place to bound packets (deploy/mosquitto).
const MAX_PACKET: usize = 64 << 20;

/// The MQTT options of the centre's session.
pub fn mqtt_options(config: &Config) -> MqttOptions {
    let mut opts = MqttOptions::new(config.client_id(), &config.broker.host, config.broker.port);
    opts.set_keep_alive(Duration::from_secs(config.broker.keep_alive_s));
    opts.set_clean_session(false);
    opts.set_manual_acks(true);
    opts.set_max_packet_size(MAX_PACKET, 1 << 20);
    opts.set_inflight(100);
    if let Some(user) = &config.broker.username {
        let password = config.broker.password_env.as_ref().and_then(|v| std::env::var(v).ok()).unwrap_or_default();
        opts.set_credentials(user, password);
    }
    opts
}

/// Runs the session (of `client`, polled through `eventloop`) and the
/// writer until `shutdown` turns true; every stored alert is announced on
/// `live`.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    config: Arc<Config>,
    store: Store,
    client: AsyncClient,
    eventloop: EventLoop,
    live: Live,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    shutdown: watch::Receiver<bool>,
) {
    let (tx, rx) = mpsc::channel(QUEUE);
    let session =
        tokio::spawn(session(config.clone(), client.clone(), eventloop, tx, metrics.clone(), health.clone(), shutdown));
    writer(config, store, client.clone(), rx, live, metrics, health).await;
    let _ = session.await;
    let _ = client.try_disconnect();
}

/// Polls the broker connection: subscribes on every connect, hands each
/// publish to the writer, and reconnects with backoff.
async fn session(
    config: Arc<Config>,
    client: AsyncClient,
    mut eventloop: EventLoop,
    tx: mpsc::Sender<Publish>,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    mut shutdown: watch::Receiver<bool>,
) {
    let filter = config.topic_filter();
    let mut backoff = Duration::from_millis(200);
    loop {
        let event = tokio::select! {
            e = eventloop.poll() => e,
            _ = shutdown.changed() => break,
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                backoff = Duration::from_millis(200);
                tracing::info!(filter, session_present = ack.session_present, "connected to the broker");
                // Also when the session is present: subscribing again is
                // harmless, and covers a broker that lost its sessions.
                if let Err(e) = client.try_subscribe(filter.as_str(), QoS::AtLeastOnce) {
                    tracing::warn!("cannot subscribe to {filter}: {e}");
                }
            }
            Ok(Event::Incoming(Packet::SubAck(_))) => {
                health.set_connected(true);
                metrics.connected.set(1);
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                if tx.send(p).await.is_err() {
                    break;
                }
            }
            Ok(_) => {}
            Err(e) => {
                health.set_connected(false);
                metrics.connected.set(0);
                metrics.reconnects.inc();
                tracing::warn!("broker {}:{}: {e}; retrying in {backoff:?}", config.broker.host, config.broker.port);
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.changed() => break,
                }
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
    }
    health.set_connected(false);
}

/// Takes what the session received in batches, stores each batch in one
/// transaction (retrying until it commits), then acknowledges it.
async fn writer(
    config: Arc<Config>,
    store: Store,
    client: AsyncClient,
    mut rx: mpsc::Receiver<Publish>,
    live: Live,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
) {
    let root = config.broker.root.clone();
    let site: Vec<String> = config.site_levels().into_iter().map(str::to_string).collect();
    let site: Vec<&str> = site.iter().map(String::as_str).collect();
    let limits = Limits {
        max_json: config.ingest.max_json_kib as usize * 1024,
        max_snapshot: config.snapshots.max_snapshot_kib as usize * 1024,
    };
    let mut batch: Vec<Publish> = Vec::with_capacity(config.ingest.batch);
    while rx.recv_many(&mut batch, config.ingest.batch).await > 0 {
        let received = SystemTime::now();
        let mut stored: Vec<Ingested> = Vec::with_capacity(batch.len());
        for p in &batch {
            match classify(&root, &site, &p.topic, &p.payload, limits) {
                Ok(m) => stored.push(m),
                Err(refused) => refuse(&metrics, &p.topic, &refused),
            }
        }
        let mut backoff = Duration::from_millis(100);
        loop {
            let t0 = Instant::now();
            match store.write(&stored, received).await {
                Ok(written) => {
                    metrics.db_seconds.with_label_values(&["write"]).observe(t0.elapsed().as_secs_f64());
                    metrics.duplicates.inc_by(written.duplicates as u64);
                    health.set_db(None);
                    break;
                }
                Err(e) => {
                    // Nothing is acknowledged: the broker keeps the batch
                    // until this commits, however long the database is down.
                    metrics.db_errors.inc();
                    tracing::error!("cannot store {} message(s), retrying in {backoff:?}: {e}", stored.len());
                    health.set_db(Some(e.to_string()));
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
        for m in &stored {
            metrics.messages.with_label_values(&[m.subject()]).inc();
            if let Some(change) = m.change() {
                // No receiver (no board open) is not an error.
                let _ = live.send(change);
            }
            if let Ingested::Event { event, .. } = m {
                if let Ok(lag) = received.duration_since(event.updated_at) {
                    metrics.lag_seconds.observe(lag.as_secs_f64());
                }
            }
        }
        metrics.batch_size.observe(batch.len() as f64);
        for p in batch.drain(..) {
            if p.qos != QoS::AtMostOnce {
                if let Err(e) = client.ack(&p).await {
                    tracing::warn!("cannot acknowledge a message: {e}");
                }
            }
        }
    }
}

/// Counts and logs a refused message; the topic is shown escaped and cut
/// short, since whoever sent it chose it.
fn refuse(metrics: &Metrics, topic: &str, refused: &Refused) {
    metrics.refused.with_label_values(&[refused.reason()]).inc();
    match refused {
        Refused::Command | Refused::Empty => tracing::debug!(topic = %shown(topic), "skipped: {refused}"),
        _ => tracing::warn!(topic = %shown(topic), "refused: {refused}"),
    }
}

fn shown(topic: &str) -> String {
    let mut s: String = topic.escape_debug().take(200).collect();
    if topic.len() > 200 {
        s.push('…');
    }
    s
}
