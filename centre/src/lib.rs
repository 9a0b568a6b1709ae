//! alleywatch's command centre: receives what the edge agents publish
//! under its part of the site tree and keeps it, so that the district's
//! loop (assess, dispatch, supervise, handle, feed back) can run on it.
//!
//! The data path, in module order:
//!
//! - [`ingest`]: the persistent MQTT session and the writer behind it;
//!   [`ingest::message`] reads one message against the contract;
//! - [`store`]: the database (one schema for SQLite and PostgreSQL,
//!   versioned migrations) and the content-addressed snapshot files;
//! - [`supervise`]: deadlines, late alerts going up a level, and fleet
//!   health as `camera_offline` alerts;
//! - [`live`]: what changed, for the console's live streams;
//! - [`console`]: the web console, where people run the loop, cut to
//!   each user's scope ([`access`]: users, roles, scopes, sessions);
//! - [`commands`]: the way back to the agents (`ack`, `resolve`);
//! - [`http`]: health, readiness and metrics beside the console;
//!
//! beside them [`config`] (the TOML file) and [`metrics`].

pub mod access;
pub mod commands;
pub mod config;
pub mod console;
pub mod http;
pub mod ingest;
pub mod live;
pub mod metrics;
pub mod store;
pub mod supervise;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

use config::Config;
use metrics::Metrics;
use store::Store;

/// What `/readyz` reports: set by the ingest task as it goes.
#[derive(Debug, Default)]
pub struct Health {
    connected: AtomicBool,
    db_error: Mutex<Option<String>>,
}

impl Health {
    pub fn set_connected(&self, up: bool) {
        self.connected.store(up, Ordering::Relaxed);
    }

    pub fn set_db(&self, error: Option<String>) {
        if let Ok(mut e) = self.db_error.lock() {
            *e = error;
        }
    }

    /// Why the centre is not ready, or `None` when it is.
    pub fn not_ready(&self) -> Option<String> {
        if let Some(e) = self.db_error.lock().ok().and_then(|e| e.clone()) {
            return Some(format!("database: {e}"));
        }
        if !self.connected.load(Ordering::Relaxed) {
            return Some("not subscribed to the broker".into());
        }
        None
    }
}

/// How often retention and the gap count run.
const HOUSEKEEPING: Duration = Duration::from_secs(15);

/// Runs the centre until `shutdown` turns true: ingest, housekeeping and
/// the HTTP port on `listener`.
pub async fn run(
    config: Arc<Config>,
    store: Store,
    listener: tokio::net::TcpListener,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let metrics = Arc::new(Metrics::new());
    let health = Arc::new(Health::default());
    let live = live::channel();
    let (client, eventloop) = rumqttc::AsyncClient::new(ingest::mqtt_options(&config), 64);
    let commands = commands::Commands::new(client.clone(), &config.broker.root);
    let console = Arc::new(console::Console::new(config.clone(), store.clone(), live.clone(), commands));
    let app = http::router(metrics.clone(), health.clone()).merge(console::router(console));
    let mut http_shutdown = shutdown.clone();
    let server = tokio::spawn(async move {
        axum::serve(listener, app.into_make_service_with_connect_info::<std::net::SocketAddr>())
            .with_graceful_shutdown(async move {
                while http_shutdown.changed().await.is_ok() {
                    if *http_shutdown.borrow() {
                        break;
                    }
                }
            })
            .await
    });
    let supervisor =
        tokio::spawn(supervise::run(config.clone(), store.clone(), live.clone(), metrics.clone(), shutdown.clone()));
    let keeper = tokio::spawn(housekeeping(config.clone(), store.clone(), metrics.clone(), shutdown.clone()));
    ingest::run(config, store, client, eventloop, live, metrics, health, shutdown).await;
    keeper.abort();
    supervisor.abort();
    server.await??;
    Ok(())
}

/// Snapshot retention, expired sessions and the gap gauge, every
/// [`HOUSEKEEPING`].
async fn housekeeping(config: Arc<Config>, store: Store, metrics: Arc<Metrics>, mut shutdown: watch::Receiver<bool>) {
    let max_age_ms = i64::from(config.snapshots.retention_days) * 86_400_000;
    let max_bytes = (config.snapshots.max_total_mib as i64).saturating_mul(1 << 20);
    loop {
        match store.gaps().await {
            Ok(gaps) => metrics.seq_missing.set(gaps.iter().map(|g| g.last - g.first + 1).sum()),
            Err(e) => tracing::warn!("cannot count gaps: {e}"),
        }
        if let Err(e) = store.prune_sessions(SystemTime::now()).await {
            tracing::warn!("cannot prune sessions: {e}");
        }
        match store.prune_snapshots(SystemTime::now(), max_age_ms, max_bytes).await {
            Ok(0) => {}
            Ok(n) => {
                metrics.snapshots_pruned.inc_by(n as u64);
                tracing::info!("retention removed {n} snapshot(s)");
            }
            Err(e) => tracing::warn!("snapshot retention: {e}"),
        }
        tokio::select! {
            _ = tokio::time::sleep(HOUSEKEEPING) => {}
            _ = shutdown.changed() => return,
        }
    }
}
