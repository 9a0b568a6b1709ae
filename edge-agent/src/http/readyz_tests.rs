//! `/readyz` answers from the spool's last real write: it writes nothing
//! itself, and reports a failed write.

use std::sync::Arc;

use axum::body::to_bytes;
use axum::extract::State;
use axum::http::StatusCode;

use super::{readyz, HttpState};
use crate::alert::{topics_of, Ledger, Outbox, Spool};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::vocab::Phase;

fn config() -> Config {
    crate::config::minimal()
}

async fn ask(state: &HttpState) -> (StatusCode, serde_json::Value) {
    let r = readyz(State(state.clone())).await;
    let code = r.status();
    let body = to_bytes(r.into_body(), 1 << 16).await.unwrap();
    (code, serde_json::from_slice(&body).unwrap())
}

/// SQLite's count of commits by *other* connections to the file.
fn data_version(db: &rusqlite::Connection) -> i64 {
    db.query_row("PRAGMA data_version", [], |r| r.get(0)).unwrap()
}

#[tokio::test]
async fn readyz_writes_nothing_and_reports_a_failed_write() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spool.sqlite");
    let config = config();
    let metrics = Arc::new(Metrics::new());
    metrics.models_loaded.set(1);
    let spool = Spool::open(&path, 1 << 20).unwrap();
    let outbox = Outbox::new(spool, Ledger::new(&config.alerts, &config.site), topics_of(&config), metrics.clone());
    let (_config_tx, config_rx) = tokio::sync::watch::channel(Arc::new(config));
    let (requests, _requests_rx) = tokio::sync::mpsc::channel(1);
    let state = HttpState {
        metrics: metrics.clone(),
        outbox: outbox.clone(),
        frames: Default::default(),
        quality: 80,
        config: config_rx,
        requests,
        tokens: Default::default(),
    };

    let watcher = rusqlite::Connection::open(&path).unwrap();
    let before = (data_version(&watcher), outbox.spool().health().writes);
    for _ in 0..200 {
        let (code, body) = ask(&state).await;
        assert_eq!(code, StatusCode::OK, "{body}");
        assert_eq!(body["spool_ok"], true);
    }
    assert_eq!(
        (data_version(&watcher), outbox.spool().health().writes),
        before,
        "200 readiness probes committed nothing to the spool"
    );

    // A real store fails (the broker is down, so readiness rests on the spool).
    outbox
        .spool()
        .writer()
        .execute_batch("CREATE TRIGGER fail BEFORE INSERT ON outbox BEGIN SELECT RAISE(FAIL, 'disk full'); END;")
        .unwrap();
    outbox.event(crate::alert::event::sample("e1", Phase::Start, crate::vocab::Severity::Warning), None);
    let (code, body) = ask(&state).await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["spool_ok"], false);
    assert!(body["spool_last_error_at"].is_string(), "{body}");
    // Connected to the broker, the agent is ready all the same.
    metrics.mqtt_connected.set(1);
    assert_eq!(ask(&state).await.0, StatusCode::OK);
    metrics.mqtt_connected.set(0);

    // The publisher's retry stores the waiting message once writes work.
    outbox.spool().writer().execute_batch("DROP TRIGGER fail").unwrap();
    assert!(outbox.retry_spool());
    let (code, body) = ask(&state).await;
    assert_eq!((code, &body["spool_ok"]), (StatusCode::OK, &serde_json::json!(true)), "{body}");
    assert_eq!(outbox.spool().depth().unwrap().messages, 1, "the message that waited in memory is spooled");
}
