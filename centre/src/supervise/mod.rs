//! Supervision: the centre's own clock on the loop. Every second it marks
//! the alerts past a deadline late and moves them up the chain of command
//! (see [`deadlines`]), raises and ends `camera_offline` alerts from the
//! fleet's statuses, and keeps the open and late gauges; every change is
//! announced to the live boards like an agent's.
//!
//! - [`deadlines`]: when a step is due, and how far up a late alert goes.

pub mod deadlines;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

use crate::config::Config;
use crate::live::{Change, Live};
use crate::metrics::Metrics;
use crate::store::{millis, Store, StoreError};

/// How often supervision runs: a deadline is seen passed within this.
const TICK: Duration = Duration::from_secs(1);

pub async fn run(
    config: Arc<Config>,
    store: Store,
    live: Live,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        if let Err(e) = tick(&config, &store, &live, &metrics).await {
            tracing::warn!("supervision: {e}");
        }
        tokio::select! {
            _ = tokio::time::sleep(TICK) => {}
            _ = shutdown.changed() => return,
        }
    }
}

async fn tick(config: &Config, store: &Store, live: &Live, metrics: &Metrics) -> Result<(), StoreError> {
    let now = millis(SystemTime::now());
    for change in store.check_fleet(now, config.fleet.offline_after_s as i64 * 1000).await? {
        tracing::info!(alert = %change.id, "camera_offline changed");
        let _ = live.send(change);
    }
    let open = store.open_alerts().await?;
    let mut late = 0;
    metrics.open_alerts.reset();
    for a in &open {
        metrics.open_alerts.with_label_values(&[a.state.as_str()]).inc();
        let Some(due) = deadlines::due_at(a, &config.deadlines) else { continue };
        let Some(level) = deadlines::escalation(a, due, now) else { continue };
        late += 1;
        if deadlines::rank(Some(level)) > deadlines::rank(a.escalated_to.as_deref())
            && store.escalate(&a.id, level, now).await?
        {
            tracing::info!(alert = %a.id, kind = %a.kind, state = %a.state, "late: escalated to the {level}");
            let _ = live.send(Change {
                what: "step",
                id: a.id.clone(),
                district: a.district.clone(),
                street: a.street.clone(),
                community: a.community.clone(),
            });
        }
    }
    metrics.late_alerts.set(late);
    Ok(())
}
