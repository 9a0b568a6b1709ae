//! The centre's Prometheus series: ingest (rate, lag, refusals, duplicates,
//! gaps), the database's latency and errors, and the broker session.
//! Labels are fixed sets (subjects, reasons, operations); never a topic or
//! an id a publisher chose, so a hostile publisher cannot grow the series.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

pub struct Metrics {
    registry: Registry,
    /// Messages stored, by subject (event, snapshot, agent_status, camera_status, reply).
    pub messages: IntCounterVec,
    /// Messages not stored, by reason (see `ingest::message::Refused`).
    pub refused: IntCounterVec,
    /// Event messages whose `(id, seq)` was stored already.
    pub duplicates: IntCounter,
    /// Event messages missing between ones that arrived, over all agents.
    pub seq_missing: IntGauge,
    /// Seconds from an event's `updated_at` at the agent to its arrival here
    /// (includes the time the centre or the network was down).
    pub lag_seconds: Histogram,
    pub db_seconds: HistogramVec,
    pub db_errors: IntCounter,
    pub batch_size: Histogram,
    pub connected: IntGauge,
    pub reconnects: IntCounter,
    pub snapshots_pruned: IntCounter,
    /// Alerts not closed, by where they are in the loop.
    pub open_alerts: IntGaugeVec,
    /// Open alerts past a deadline.
    pub late_alerts: IntGauge,
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        fn reg<T: prometheus::core::Collector + Clone + 'static>(r: &Registry, c: T) -> T {
            r.register(Box::new(c.clone())).expect("metric names are unique");
            c
        }
        let ns = |name: &str, help: &str| Opts::new(format!("alleywatch_centre_{name}"), help);
        let hist = |name: &str, help: &str, buckets: Vec<f64>| {
            HistogramOpts::new(format!("alleywatch_centre_{name}"), help).buckets(buckets)
        };
        let r = &registry;
        Metrics {
            messages: reg(
                r,
                IntCounterVec::new(ns("messages_total", "Messages stored, by subject"), &["subject"]).unwrap(),
            ),
            refused: reg(
                r,
                IntCounterVec::new(ns("messages_refused_total", "Messages not stored, by reason"), &["reason"])
                    .unwrap(),
            ),
            duplicates: reg(
                r,
                IntCounter::with_opts(ns("duplicates_total", "Event messages already stored (same id and seq)"))
                    .unwrap(),
            ),
            seq_missing: reg(
                r,
                IntGauge::with_opts(ns("seq_missing", "Event messages missing between ones that arrived")).unwrap(),
            ),
            lag_seconds: reg(
                r,
                Histogram::with_opts(hist(
                    "ingest_lag_seconds",
                    "Seconds from an event's updated_at to its arrival",
                    vec![0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 15.0, 60.0, 300.0, 3600.0],
                ))
                .unwrap(),
            ),
            db_seconds: reg(
                r,
                HistogramVec::new(
                    hist(
                        "db_seconds",
                        "Database time per operation",
                        vec![0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0],
                    ),
                    &["op"],
                )
                .unwrap(),
            ),
            db_errors: reg(
                r,
                IntCounter::with_opts(ns("db_errors_total", "Failed database writes (retried)")).unwrap(),
            ),
            batch_size: reg(
                r,
                Histogram::with_opts(hist(
                    "batch_messages",
                    "Messages per ingest transaction",
                    vec![1.0, 2.0, 5.0, 10.0, 50.0, 100.0, 500.0],
                ))
                .unwrap(),
            ),
            connected: reg(r, IntGauge::with_opts(ns("mqtt_connected", "1 while subscribed to the broker")).unwrap()),
            reconnects: reg(
                r,
                IntCounter::with_opts(ns("mqtt_connection_errors_total", "Broker connection errors")).unwrap(),
            ),
            snapshots_pruned: reg(
                r,
                IntCounter::with_opts(ns("snapshots_pruned_total", "Snapshot files removed by retention")).unwrap(),
            ),
            open_alerts: reg(
                r,
                IntGaugeVec::new(ns("open_alerts", "Alerts not closed, by loop state"), &["state"]).unwrap(),
            ),
            late_alerts: reg(r, IntGauge::with_opts(ns("late_alerts", "Open alerts past a deadline")).unwrap()),
            registry,
        }
    }

    pub fn render(&self) -> String {
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
