//! The MQTT publisher: QoS 1 events and snapshots, retained statuses, and a
//! last will that marks the agent `offline` when it dies.
//!
//! The rumqttc event loop is polled in its own task: it must keep running
//! (keep-alives, PUBACKs, reconnects) even while this task waits for the
//! next event, and a connection error there must never stop publishing
//! here. While the broker is away, rumqttc queues requests and resends
//! unacknowledged QoS 1 publishes after reconnecting; when its queue is
//! full, `publish` waits, the channel from the analysis threads fills, and
//! analysis drops frames, never events.
//!
//! Seam for the durable spool: [`Publisher::run`] is the only consumer of
//! the [`Outbound`] channel. A spool goes between the two: write each
//! message to disk, publish it, and delete it on PUBACK, which the event
//! loop task below already sees.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rumqttc::{AsyncClient, Event as MqttEvent, LastWill, MqttOptions, Packet, QoS, Transport};
use serde_json::json;
use tokio::sync::mpsc;

use super::{Outbound, Topics};
use crate::config::Config;

#[derive(Debug, thiserror::Error)]
pub enum PublisherError {
    #[error("broker.ca_file {path}: {source}")]
    CaFile { path: String, source: std::io::Error },
    #[error("MQTT client: {0}")]
    Client(#[from] rumqttc::ClientError),
    #[error("event encoding: {0}")]
    Encode(#[from] serde_json::Error),
}

pub struct Publisher {
    client: AsyncClient,
    topics: Topics,
    seq: u64,
    connected: Arc<AtomicBool>,
    poller: tokio::task::JoinHandle<()>,
}

impl Publisher {
    /// Connects (in the background) and announces the agent `online`.
    pub fn start(config: &Config) -> Result<Publisher, PublisherError> {
        let topics = Topics::new(config);
        let b = &config.broker;
        let mut opts = MqttOptions::new(format!("alleywatch-{}", config.agent_id), &b.host, b.port);
        opts.set_keep_alive(Duration::from_secs(b.keep_alive_s));
        // Keep the session so the broker holds our QoS 1 state across a
        // short disconnect.
        opts.set_clean_session(false);
        // Snapshots are a few hundred KB at most; the default is 10 KB.
        opts.set_max_packet_size(1 << 20, 8 << 20);
        opts.set_last_will(LastWill::new(
            topics.agent_status(),
            agent_status(config, "offline"),
            QoS::AtLeastOnce,
            true,
        ));
        if let (Some(user), password) = (&b.username, &b.password) {
            opts.set_credentials(user, password.clone().unwrap_or_default());
        }
        if b.tls {
            // rustls is built without a default provider to keep aws-lc out
            // of the build; install ring once per process.
            let _ = rustls::crypto::ring::default_provider().install_default();
            let path = b.ca_file.clone().unwrap_or_default();
            let ca = std::fs::read(&path)
                .map_err(|source| PublisherError::CaFile { path: path.display().to_string(), source })?;
            opts.set_transport(Transport::tls(ca, None, None));
        }
        let (client, mut eventloop) = AsyncClient::new(opts, 256);
        let connected = Arc::new(AtomicBool::new(false));
        let online = agent_status(config, "online");
        let status_topic = topics.agent_status();
        let (c2, conn) = (client.clone(), connected.clone());
        let endpoint = format!("{}:{}", b.host, b.port);
        let poller = tokio::spawn(async move {
            let mut delay = Duration::from_millis(500);
            loop {
                match eventloop.poll().await {
                    Ok(MqttEvent::Incoming(Packet::ConnAck(_))) => {
                        tracing::info!(broker = %endpoint, "MQTT connected");
                        conn.store(true, Ordering::SeqCst);
                        delay = Duration::from_millis(500);
                        // Every (re)connect re-announces us: the will may
                        // have marked us offline in between.
                        if let Err(e) = c2.try_publish(&status_topic, QoS::AtLeastOnce, true, online.clone()) {
                            tracing::warn!(error = %e, "cannot queue online status");
                        }
                    }
                    Ok(MqttEvent::Outgoing(rumqttc::Outgoing::Disconnect)) => {
                        conn.store(false, Ordering::SeqCst);
                        break;
                    }
                    Ok(_) => {}
                    Err(e) => {
                        if conn.swap(false, Ordering::SeqCst) {
                            tracing::warn!(broker = %endpoint, error = %e, "MQTT connection lost");
                        } else {
                            tracing::debug!(broker = %endpoint, error = %e, "MQTT connect failed");
                        }
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_secs(10));
                    }
                }
            }
        });
        Ok(Publisher { client, topics, seq: 0, connected, poller })
    }

    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::SeqCst)
    }

    /// A handle on the connection state, for metrics and readiness.
    pub fn connected_flag(&self) -> Arc<AtomicBool> {
        self.connected.clone()
    }

    /// Publishes every message from `rx` until every sender is gone (the
    /// sources and analysis threads have stopped, so whatever they sent
    /// last still goes out), then marks the agent offline and disconnects.
    pub async fn run(mut self, mut rx: mpsc::Receiver<Outbound>, config: Config) -> Result<(), PublisherError> {
        while let Some(msg) = rx.recv().await {
            self.publish(msg).await?;
        }
        self.client
            .publish(self.topics.agent_status(), QoS::AtLeastOnce, true, agent_status(&config, "offline"))
            .await?;
        self.client.disconnect().await?;
        // Give the event loop a moment to flush what is queued.
        let _ = tokio::time::timeout(Duration::from_secs(5), self.poller).await;
        Ok(())
    }

    /// Publishes one message, in order: a snapshot goes out before its
    /// event, so the picture is there when the centre reads the event.
    pub async fn publish(&mut self, msg: Outbound) -> Result<(), PublisherError> {
        match msg {
            Outbound::Event { mut event, snapshot } => {
                self.seq += 1;
                event.seq = self.seq;
                let kind = event.kind.as_str();
                if let Some(jpeg) = snapshot {
                    self.client.publish(self.topics.snapshot(kind, &event.id), QoS::AtLeastOnce, false, jpeg).await?;
                }
                let payload = serde_json::to_vec(&event)?;
                tracing::info!(kind, phase = ?event.phase, camera = %event.camera.id, zone = ?event.zone, id = %event.id, seq = event.seq, "event");
                self.client.publish(self.topics.event(kind), QoS::AtLeastOnce, false, payload).await?;
            }
            Outbound::Camera(status) => {
                let payload = serde_json::to_vec(&status)?;
                self.client.publish(self.topics.camera_status(&status.camera), QoS::AtLeastOnce, true, payload).await?;
            }
        }
        Ok(())
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
        "at": super::rfc3339::format(&SystemTime::now()),
    })
    .to_string()
    .into_bytes()
}
