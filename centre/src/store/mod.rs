//! Everything the centre keeps: what the agents sent (event messages,
//! snapshots, statuses, replies) and, in later migrations, what people did
//! about it. [`Store::write`] takes a batch of ingested messages in one
//! transaction, so the ingest task acknowledges them to the broker only
//! once they are safe; the read side answers the console's and the tests'
//! questions (the board, an alert's messages in `seq` order, gaps).
//!
//! - [`db`]: the database, SQL both backends share;
//! - [`migrations`]: the versioned schema;
//! - [`snapshots`]: the JPEG files, content-addressed;
//! - `people`: users, sessions and the audit log;
//! - `fleet`: failed cameras and silent agents as `camera_offline` alerts;
//! - `steps`: the loop's steps on an alert, each with who and when.

pub mod db;
mod fleet;
mod migrations;
mod people;
pub mod snapshots;
mod steps;

pub use fleet::{AgentRow, FleetCamera, CAMERA_OFFLINE};
pub use people::AuditEntry;
pub use steps::{Step, StepKind, StepRow};

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use alleywatch_contract::status::CameraState;
use alleywatch_contract::Phase;

use crate::access::Scope;
use crate::config::{Config, DatabaseUrl};
use crate::ingest::message::Ingested;
use db::{Db, Row, Stmt, Value};
use snapshots::SnapshotFiles;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the database: {0}")]
    Open(String),
    #[error("database: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("database connection poisoned by an earlier panic")]
    Poisoned,
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    /// A guarded statement (the `n`th of its batch) changed nothing.
    #[error("statement {0} of the batch changed nothing")]
    Unchanged(usize),
    #[error("migration {version} ({name}) failed: {message}")]
    Migration { version: i64, name: &'static str, message: String },
}

/// The centre's database and snapshot files.
#[derive(Clone)]
pub struct Store {
    db: Db,
    files: SnapshotFiles,
}

/// What one [`Store::write`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    /// Event messages whose `(id, seq)` was stored already.
    pub duplicates: usize,
}

/// One alert as the board lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertRow {
    pub id: String,
    pub site: String,
    pub district: String,
    pub street: String,
    pub community: String,
    pub agent: String,
    pub camera: String,
    pub camera_name: String,
    pub kind: String,
    pub zone: Option<String>,
    pub severity: String,
    pub phase: String,
    pub last_seq: i64,
    pub started_at_ms: i64,
    pub updated_at_ms: i64,
    pub ended_at_ms: Option<i64>,
    pub escalated_to: Option<String>,
    /// Where it is in the loop: new, assessed, dispatched, handled, closed.
    pub state: String,
    pub verdict: Option<String>,
    pub handler: Option<String>,
    /// When it first passed a deadline.
    pub late_at_ms: Option<i64>,
    /// The newest snapshot's sha256.
    pub snapshot: Option<String>,
}

/// The columns [`alert_row`] reads, in its order.
macro_rules! alert_columns {
    () => {
        "a.id, a.site, a.district, a.street, a.community, a.agent, a.camera, a.camera_name, a.kind, a.zone,
         a.severity, a.phase, a.last_seq, a.started_at, a.updated_at, a.ended_at, a.escalated_to, a.state,
         a.verdict, a.handler, a.late_at,
         (SELECT s.sha256 FROM snapshots s WHERE s.event_id = a.id ORDER BY s.received_at DESC, s.sha256 LIMIT 1)"
    };
}
pub(crate) use alert_columns;

/// The scope condition on an alert `a`, with the scope's district, street
/// and community as `$1`, `$2`, `$3` (an empty level matches any).
macro_rules! in_scope {
    () => {
        "a.district = $1 AND ($2 = '' OR a.street = $2) AND ($3 = '' OR a.community = $3)"
    };
}

fn scope_params(scope: &Scope) -> Vec<Value> {
    vec![scope.district.as_str().into(), scope.street.as_str().into(), scope.community.as_str().into()]
}

/// Event messages an agent sent that never arrived: `seq` from `first` to
/// `last`, both included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gap {
    pub site: String,
    pub agent: String,
    pub first: i64,
    pub last: i64,
}

/// One event message as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct MessageRow {
    pub seq: i64,
    pub phase: String,
    pub received_at_ms: i64,
    /// The agent's JSON, verbatim.
    pub payload: String,
}

/// An agent's reply to a command.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplyRow {
    pub site: String,
    pub command: String,
    pub ok: bool,
    pub error: Option<String>,
    pub at_ms: i64,
}

/// A snapshot of an alert.
#[derive(Debug, Clone, PartialEq)]
pub struct SnapshotRow {
    pub sha256: String,
    pub bytes: i64,
    pub received_at_ms: i64,
}

/// A camera's latest status.
#[derive(Debug, Clone, PartialEq)]
pub struct CameraRow {
    pub site: String,
    pub agent: String,
    pub camera: String,
    pub state: String,
    pub reconnects: i64,
    pub failing_since_ms: Option<i64>,
}

pub fn millis(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

impl Store {
    /// Opens the configured database, brings its schema up to date and
    /// opens the snapshot folder.
    pub async fn open(config: &Config) -> Result<Store, StoreError> {
        let db = match config.database_url() {
            DatabaseUrl::Sqlite(path) => Db::open_sqlite(&path).await?,
        };
        migrations::run(&db).await?;
        let files = SnapshotFiles::open(&config.snapshots.dir)?;
        Ok(Store { db, files })
    }

    pub fn files(&self) -> &SnapshotFiles {
        &self.files
    }

    /// Stores a batch in one transaction. Snapshot files are written first
    /// (a file without its row is harmless and found again by its hash; a
    /// row without its file would not be).
    pub async fn write(&self, batch: &[Ingested], received_at: SystemTime) -> Result<Written, StoreError> {
        let now = millis(received_at);
        let files = self.files.clone();
        let jpegs: Vec<Vec<u8>> = batch
            .iter()
            .filter_map(|m| match m {
                Ingested::Snapshot { jpeg, .. } => Some(jpeg.clone()),
                _ => None,
            })
            .collect();
        let hashes =
            tokio::task::spawn_blocking(move || jpegs.iter().map(|j| files.put(j)).collect::<Result<Vec<_>, _>>())
                .await
                .map_err(|e| StoreError::Open(format!("snapshot task: {e}")))??;
        let mut hashes = hashes.into_iter();
        let mut stmts = Vec::with_capacity(batch.len() * 2);
        // Index in `stmts` of each event message's insert, to count duplicates.
        let mut message_inserts = Vec::new();
        for m in batch {
            match m {
                Ingested::Event { origin, event, raw } => {
                    let site = origin.site();
                    message_inserts.push(stmts.len());
                    stmts.push(Stmt::new(
                        "INSERT INTO event_messages (id, seq, site, agent, kind, phase, received_at, payload)
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (id, seq) DO NOTHING",
                        vec![
                            event.id.as_str().into(),
                            (event.seq as i64).into(),
                            site.as_str().into(),
                            origin.agent.as_str().into(),
                            event.kind.as_str().into(),
                            event.phase.as_str().into(),
                            now.into(),
                            raw.as_str().into(),
                        ],
                    ));
                    // An escalation is not a step of the event's own life:
                    // it marks the alert and leaves its phase alone.
                    let phase = if event.phase == Phase::Escalate { Phase::Update } else { event.phase };
                    let escalated = event.centre.escalation.as_ref().map(|e| e.level.clone());
                    stmts.push(Stmt::new(
                        "INSERT INTO alerts (id, site, district, street, community, agent, camera, camera_name, kind,
                             zone, severity, severity_rank, phase, last_seq, started_at, updated_at, ended_at,
                             peak_score, escalated_to, first_received_at, last_received_at)
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18,
                             $19, $20, $20)
                         ON CONFLICT (id) DO UPDATE SET
                             camera_name = excluded.camera_name, zone = excluded.zone,
                             severity = excluded.severity, severity_rank = excluded.severity_rank,
                             phase = CASE WHEN $21 = 1 THEN alerts.phase ELSE excluded.phase END,
                             last_seq = excluded.last_seq, updated_at = excluded.updated_at,
                             ended_at = excluded.ended_at, peak_score = excluded.peak_score,
                             escalated_to = COALESCE(excluded.escalated_to, alerts.escalated_to),
                             last_received_at = excluded.last_received_at
                         WHERE alerts.last_seq < excluded.last_seq",
                        vec![
                            event.id.as_str().into(),
                            site.as_str().into(),
                            origin.district.as_str().into(),
                            origin.street.as_str().into(),
                            origin.community.as_str().into(),
                            origin.agent.as_str().into(),
                            event.camera.id.as_str().into(),
                            event.camera.name.as_str().into(),
                            event.kind.as_str().into(),
                            event.zone.clone().into(),
                            event.severity.as_str().into(),
                            (event.severity as i64).into(),
                            phase.as_str().into(),
                            (event.seq as i64).into(),
                            millis(event.started_at).into(),
                            millis(event.updated_at).into(),
                            event.ended_at.map(millis).into(),
                            f64::from(event.score.peak).into(),
                            escalated.into(),
                            now.into(),
                            i64::from(event.phase == Phase::Escalate).into(),
                        ],
                    ));
                }
                Ingested::Snapshot { origin, event_id, jpeg } => {
                    let sha = hashes.next().expect("one hash per snapshot");
                    stmts.push(Stmt::new(
                        "INSERT INTO snapshots (event_id, sha256, site, agent, bytes, received_at)
                         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (event_id, sha256) DO NOTHING",
                        vec![
                            event_id.as_str().into(),
                            sha.into(),
                            origin.site().into(),
                            origin.agent.as_str().into(),
                            (jpeg.len() as i64).into(),
                            now.into(),
                        ],
                    ));
                }
                Ingested::AgentStatus { origin, status, raw } => stmts.push(Stmt::new(
                    "INSERT INTO agents (site, agent, state, version, status_at, received_at, payload)
                     VALUES ($1, $2, $3, $4, $5, $6, $7)
                     ON CONFLICT (site, agent) DO UPDATE SET state = excluded.state, version = excluded.version,
                         status_at = excluded.status_at, received_at = excluded.received_at, payload = excluded.payload
                     WHERE agents.status_at <= excluded.status_at",
                    vec![
                        origin.site().into(),
                        origin.agent.as_str().into(),
                        status.state.as_str().into(),
                        status.version.as_str().into(),
                        millis(status.at).into(),
                        now.into(),
                        raw.as_str().into(),
                    ],
                )),
                Ingested::CameraStatus { origin, status } => {
                    let state = status.state.as_str();
                    let at = millis(status.at);
                    let failing_since = if status.state == CameraState::Failed { Some(at) } else { None };
                    stmts.push(Stmt::new(
                        "INSERT INTO cameras (site, agent, camera, name, state, fps, last_frame_at, last_error,
                             reconnects, status_at, failing_since, received_at)
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
                         ON CONFLICT (site, agent, camera) DO UPDATE SET name = excluded.name,
                             state = excluded.state, fps = excluded.fps, last_frame_at = excluded.last_frame_at,
                             last_error = excluded.last_error, reconnects = excluded.reconnects,
                             status_at = excluded.status_at, received_at = excluded.received_at,
                             failing_since = CASE WHEN excluded.state = 'failed'
                                 THEN COALESCE(cameras.failing_since, excluded.failing_since) ELSE NULL END
                         WHERE cameras.status_at <= excluded.status_at",
                        vec![
                            origin.site().into(),
                            origin.agent.as_str().into(),
                            status.camera.as_str().into(),
                            status.name.as_str().into(),
                            state.into(),
                            status.fps.into(),
                            status.last_frame_at.map(millis).into(),
                            status.last_error.clone().into(),
                            (status.reconnects.min(i64::MAX as u64) as i64).into(),
                            at.into(),
                            failing_since.into(),
                            now.into(),
                        ],
                    ));
                }
                Ingested::Reply { origin, reply } => stmts.push(Stmt::new(
                    "INSERT INTO replies (id, site, agent, command, request_id, event_id, by_whom, ok, error, at,
                         received_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                    vec![
                        uuid::Uuid::new_v4().to_string().into(),
                        origin.site().into(),
                        origin.agent.as_str().into(),
                        reply.command.as_str().into(),
                        reply.request_id.clone().into(),
                        reply.event_id.clone().into(),
                        reply.by.clone().into(),
                        i64::from(reply.ok).into(),
                        reply.error.clone().into(),
                        millis(reply.at).into(),
                        now.into(),
                    ],
                )),
            }
        }
        let changed = self.db.batch(stmts).await?;
        let duplicates = message_inserts.iter().filter(|&&i| changed[i] == 0).count();
        Ok(Written { duplicates })
    }

    /// Every alert, most severe first, then newest first.
    pub async fn alerts(&self) -> Result<Vec<AlertRow>, StoreError> {
        let rows = self
            .db
            .query(
                concat!("SELECT ", alert_columns!(), " FROM alerts a ORDER BY a.severity_rank DESC, a.started_at DESC"),
                vec![],
            )
            .await?;
        Ok(rows.into_iter().map(alert_row).collect())
    }

    /// The board of `scope`: its alerts not yet closed (or all, with
    /// `closed`), most severe first, then newest first; at most `limit`.
    pub async fn board(&self, scope: &Scope, closed: bool, limit: i64) -> Result<Vec<AlertRow>, StoreError> {
        let mut params = scope_params(scope);
        params.push(i64::from(closed).into());
        params.push(limit.into());
        let rows = self
            .db
            .query(
                concat!(
                    "SELECT ",
                    alert_columns!(),
                    " FROM alerts a WHERE ",
                    in_scope!(),
                    " AND ($4 = 1 OR a.state <> 'closed')
                     ORDER BY a.severity_rank DESC, a.started_at DESC LIMIT $5"
                ),
                params,
            )
            .await?;
        Ok(rows.into_iter().map(alert_row).collect())
    }

    /// One alert, if it exists and lies in `scope`.
    pub async fn alert(&self, scope: &Scope, id: &str) -> Result<Option<AlertRow>, StoreError> {
        let mut params = scope_params(scope);
        params.push(id.into());
        let rows = self
            .db
            .query(concat!("SELECT ", alert_columns!(), " FROM alerts a WHERE ", in_scope!(), " AND a.id = $4"), params)
            .await?;
        Ok(rows.into_iter().next().map(alert_row))
    }

    /// A camera's latest alerts in `scope`, newest first, but `except`.
    pub async fn camera_alerts(&self, scope: &Scope, of: &AlertRow, limit: i64) -> Result<Vec<AlertRow>, StoreError> {
        let mut params = scope_params(scope);
        params.extend([of.site.as_str().into(), of.agent.as_str().into(), of.camera.as_str().into()]);
        params.extend([of.id.as_str().into(), limit.into()]);
        let rows = self
            .db
            .query(
                concat!(
                    "SELECT ",
                    alert_columns!(),
                    " FROM alerts a WHERE ",
                    in_scope!(),
                    " AND a.site = $4 AND a.agent = $5 AND a.camera = $6 AND a.id <> $7
                     ORDER BY a.started_at DESC LIMIT $8"
                ),
                params,
            )
            .await?;
        Ok(rows.into_iter().map(alert_row).collect())
    }

    /// Whether a JPEG with this hash may be shown to `scope`: a snapshot of
    /// one of its alerts, or a photo a handler attached to one.
    pub async fn jpeg_visible(&self, scope: &Scope, sha256: &str) -> Result<bool, StoreError> {
        let mut params = scope_params(scope);
        params.push(sha256.into());
        let rows = self
            .db
            .query(
                concat!(
                    "SELECT 1 FROM alerts a WHERE ",
                    in_scope!(),
                    " AND (EXISTS (SELECT 1 FROM snapshots s WHERE s.event_id = a.id AND s.sha256 = $4)
                          OR EXISTS (SELECT 1 FROM alert_steps t WHERE t.alert_id = a.id AND t.photo = $4))
                     LIMIT 1"
                ),
                params,
            )
            .await?;
        Ok(!rows.is_empty())
    }

    /// One alert's event messages in `seq` order: `(seq, phase, payload)`.
    pub async fn messages(&self, id: &str) -> Result<Vec<(i64, String, String)>, StoreError> {
        Ok(self.timeline(id).await?.into_iter().map(|m| (m.seq, m.phase, m.payload)).collect())
    }

    /// One alert's event messages in `seq` order, with when each arrived.
    pub async fn timeline(&self, id: &str) -> Result<Vec<MessageRow>, StoreError> {
        let rows = self
            .db
            .query(
                "SELECT seq, phase, received_at, payload FROM event_messages WHERE id = $1 ORDER BY seq",
                vec![id.into()],
            )
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| MessageRow {
                seq: r[0].int().unwrap_or(0),
                phase: text(&r[1]),
                received_at_ms: r[2].int().unwrap_or(0),
                payload: text(&r[3]),
            })
            .collect())
    }

    /// The first reply to the command sent with `request_id`.
    pub async fn reply(&self, request_id: &str) -> Result<Option<ReplyRow>, StoreError> {
        let rows = self
            .db
            .query(
                "SELECT site, command, ok, error, at FROM replies WHERE request_id = $1 ORDER BY received_at LIMIT 1",
                vec![request_id.into()],
            )
            .await?;
        Ok(rows.into_iter().next().map(|r| ReplyRow {
            site: text(&r[0]),
            command: text(&r[1]),
            ok: r[2].int() == Some(1),
            error: r[3].text().map(str::to_string),
            at_ms: r[4].int().unwrap_or(0),
        }))
    }

    pub async fn snapshots(&self, event_id: &str) -> Result<Vec<SnapshotRow>, StoreError> {
        let rows = self
            .db
            .query(
                "SELECT sha256, bytes, received_at FROM snapshots WHERE event_id = $1 ORDER BY received_at, sha256",
                vec![event_id.into()],
            )
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| SnapshotRow {
                sha256: text(&r[0]),
                bytes: r[1].int().unwrap_or(0),
                received_at_ms: r[2].int().unwrap_or(0),
            })
            .collect())
    }

    pub async fn cameras(&self) -> Result<Vec<CameraRow>, StoreError> {
        let rows = self
            .db
            .query(
                "SELECT site, agent, camera, state, reconnects, failing_since FROM cameras ORDER BY site, agent, camera",
                vec![],
            )
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| CameraRow {
                site: text(&r[0]),
                agent: text(&r[1]),
                camera: text(&r[2]),
                state: text(&r[3]),
                reconnects: r[4].int().unwrap_or(0),
                failing_since_ms: r[5].int(),
            })
            .collect())
    }

    /// The agents' latest statuses: `(site, agent, state, version)`.
    pub async fn agents(&self) -> Result<Vec<(String, String, String, String)>, StoreError> {
        let rows = self.db.query("SELECT site, agent, state, version FROM agents ORDER BY site, agent", vec![]).await?;
        Ok(rows.into_iter().map(|r| (text(&r[0]), text(&r[1]), text(&r[2]), text(&r[3]))).collect())
    }

    /// Every run of missing `seq` between two messages an agent's events
    /// did arrive with. Computed from what is stored, so a late message
    /// that fills a gap closes it.
    pub async fn gaps(&self) -> Result<Vec<Gap>, StoreError> {
        let rows = self
            .db
            .query(
                "SELECT m.site, m.agent, m.seq + 1,
                     (SELECT MIN(n.seq) FROM event_messages n
                      WHERE n.site = m.site AND n.agent = m.agent AND n.seq > m.seq) - 1
                 FROM event_messages m
                 WHERE NOT EXISTS (SELECT 1 FROM event_messages n
                                   WHERE n.site = m.site AND n.agent = m.agent AND n.seq = m.seq + 1)
                   AND EXISTS (SELECT 1 FROM event_messages n
                               WHERE n.site = m.site AND n.agent = m.agent AND n.seq > m.seq)
                 ORDER BY m.site, m.agent, m.seq",
                vec![],
            )
            .await?;
        let mut gaps: Vec<Gap> = rows
            .into_iter()
            .map(|r| Gap {
                site: text(&r[0]),
                agent: text(&r[1]),
                first: r[2].int().unwrap_or(0),
                last: r[3].int().unwrap_or(0),
            })
            .collect();
        // Two ids may share a seq (an agent whose spool was reset): one gap.
        gaps.dedup();
        Ok(gaps)
    }

    /// Applies the snapshot retention: deletes what is older than
    /// `max_age_ms` and, past `max_total_bytes`, the oldest until under.
    /// Returns how many files went.
    pub async fn prune_snapshots(
        &self,
        now: SystemTime,
        max_age_ms: i64,
        max_total_bytes: i64,
    ) -> Result<usize, StoreError> {
        let rows = self
            .db
            .query(
                "SELECT sha256, MAX(received_at), MAX(bytes) FROM snapshots GROUP BY sha256
                 ORDER BY MAX(received_at) DESC, sha256",
                vec![],
            )
            .await?;
        let cutoff = millis(now) - max_age_ms;
        let mut total = 0i64;
        let mut doomed = Vec::new();
        for r in rows {
            let (sha, at, bytes) = (text(&r[0]), r[1].int().unwrap_or(0), r[2].int().unwrap_or(0));
            total += bytes;
            if at < cutoff || total > max_total_bytes {
                doomed.push(sha);
            }
        }
        for chunk in doomed.chunks(500) {
            let stmts = chunk
                .iter()
                .map(|sha| Stmt::new("DELETE FROM snapshots WHERE sha256 = $1", vec![sha.as_str().into()]))
                .collect();
            self.db.batch(stmts).await?;
            for sha in chunk {
                self.files.remove(sha)?;
            }
        }
        Ok(doomed.len())
    }

    /// Whether the database answers (for `/readyz`).
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.db.query("SELECT 1", vec![]).await.map(|_| ())
    }
}

fn text(v: &Value) -> String {
    v.text().unwrap_or_default().to_string()
}

fn alert_row(r: Row) -> AlertRow {
    let opt = |v: &Value| v.text().map(str::to_string);
    AlertRow {
        id: text(&r[0]),
        site: text(&r[1]),
        district: text(&r[2]),
        street: text(&r[3]),
        community: text(&r[4]),
        agent: text(&r[5]),
        camera: text(&r[6]),
        camera_name: text(&r[7]),
        kind: text(&r[8]),
        zone: opt(&r[9]),
        severity: text(&r[10]),
        phase: text(&r[11]),
        last_seq: r[12].int().unwrap_or(0),
        started_at_ms: r[13].int().unwrap_or(0),
        updated_at_ms: r[14].int().unwrap_or(0),
        ended_at_ms: r[15].int(),
        escalated_to: opt(&r[16]),
        state: text(&r[17]),
        verdict: opt(&r[18]),
        handler: opt(&r[19]),
        late_at_ms: r[20].int(),
        snapshot: opt(&r[21]),
    }
}
