//! The durable alert spool: every event message (with its snapshot) is
//! written here, in one SQLite transaction, before it is published, and
//! leaves only after the broker's PUBACK for every packet of it.
//!
//! Why SQLite: a committed transaction survives `kill -9` and power loss
//! (WAL, `synchronous = FULL`), rows keep their insertion order (the drain
//! order, so each camera's messages go out in order), and "drop the oldest
//! update" is one indexed query. Events are rare (a few a minute), so a
//! fsync per message costs nothing that matters.
//!
//! The spool also owns the per-agent `seq`: it is assigned in the same
//! transaction that stores the message, so it never repeats and never goes
//! back, across restarts included, and a gap a centre sees is a message the
//! spool dropped (and counted) when it was full.
//!
//! Analysis threads call [`Spool::push`] directly (the message is durable
//! before the frame's analysis returns); the publisher task reads with
//! [`Spool::after`] and deletes with [`Spool::remove`].

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, OptionalExtension};

use super::{Event, Topics};
use crate::analytics::Phase;

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool {}: {source}", path.display())]
    Open { path: PathBuf, source: rusqlite::Error },
    #[error("spool {}: cannot create its folder: {source}", path.display())]
    Folder { path: PathBuf, source: std::io::Error },
    #[error("spool: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("spool: event encoding: {0}")]
    Encode(#[from] serde_json::Error),
}

/// One spooled message: an event and, when it has one, its snapshot (sent
/// first, so the picture is there when the centre reads the event).
#[derive(Debug, Clone)]
pub struct Entry {
    /// Row id: the drain order.
    pub id: i64,
    pub seq: u64,
    pub camera: String,
    pub phase: String,
    pub event_id: String,
    pub topic: String,
    pub payload: Vec<u8>,
    pub snapshot: Option<(String, Vec<u8>)>,
    pub created_ms: i64,
}

/// What a full spool gave up to make room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dropped {
    /// A whole `update` message (its seq is then a gap).
    Update { seq: u64, event_id: String },
    /// The snapshot of a `start`/`end`, whose event itself is kept.
    Snapshot { seq: u64, event_id: String },
}

/// After a push: the message's seq and anything dropped to fit it.
#[derive(Debug)]
pub struct Pushed {
    pub seq: u64,
    pub dropped: Vec<Dropped>,
    /// The spool is over its bound with nothing left it may drop.
    pub over_bound: bool,
}

/// Depth figures for metrics and readiness.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Depth {
    pub messages: u64,
    pub bytes: u64,
    /// Age of the oldest message, seconds (0 when empty).
    pub oldest_age_s: f64,
}

pub struct Spool {
    conn: Mutex<Connection>,
    path: PathBuf,
    max_bytes: u64,
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

impl Spool {
    /// Opens (or creates) the spool at `path`, bounded to `max_bytes` of
    /// payload. Whatever an earlier run left unsent is kept and drains first.
    pub fn open(path: &Path, max_bytes: u64) -> Result<Spool, SpoolError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| SpoolError::Folder { path: path.to_path_buf(), source })?;
        }
        let open = |path: &Path| -> Result<Connection, rusqlite::Error> {
            let conn = Connection::open(path)?;
            conn.busy_timeout(std::time::Duration::from_secs(5))?;
            conn.pragma_update(None, "journal_mode", "WAL")?;
            conn.pragma_update(None, "synchronous", "FULL")?;
            conn.execute_batch(
                "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
                 CREATE TABLE IF NOT EXISTS outbox (
                     id INTEGER PRIMARY KEY AUTOINCREMENT,
                     seq INTEGER NOT NULL,
                     camera TEXT NOT NULL,
                     phase TEXT NOT NULL,
                     event_id TEXT NOT NULL,
                     topic TEXT NOT NULL,
                     payload BLOB NOT NULL,
                     snapshot_topic TEXT,
                     snapshot BLOB,
                     bytes INTEGER NOT NULL,
                     created_ms INTEGER NOT NULL);
                 CREATE INDEX IF NOT EXISTS outbox_phase ON outbox (phase, id);",
            )?;
            Ok(conn)
        };
        let conn = open(path).map_err(|source| SpoolError::Open { path: path.to_path_buf(), source })?;
        Ok(Spool { conn: Mutex::new(conn), path: path.to_path_buf(), max_bytes })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stores one event message: assigns its `seq`, encodes it, and makes
    /// room (oldest updates first, then old snapshots) when the spool is
    /// over its bound. Durable when this returns.
    pub fn push(&self, event: &mut Event, snapshot: Option<&[u8]>, topics: &Topics) -> Result<Pushed, SpoolError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let last: Option<i64> =
            tx.query_row("SELECT value FROM meta WHERE key = 'seq'", [], |r| r.get(0)).optional()?;
        let seq = last.unwrap_or(0) as u64 + 1;
        tx.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('seq', ?1)", params![seq as i64])?;
        event.seq = seq;
        let kind = event.kind.as_str();
        let payload = serde_json::to_vec(&*event)?;
        let snapshot_topic = snapshot.as_ref().map(|_| topics.snapshot(kind, &event.id));
        let bytes = payload.len() + snapshot.as_ref().map_or(0, |s| s.len());
        tx.execute(
            "INSERT INTO outbox (seq, camera, phase, event_id, topic, payload, snapshot_topic, snapshot, bytes, created_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            params![
                seq as i64,
                event.camera.id,
                phase_name(event.phase),
                event.id,
                topics.event(kind),
                payload,
                snapshot_topic,
                snapshot,
                bytes as i64,
                now_ms()
            ],
        )?;
        let (dropped, over_bound) = make_room(&tx, self.max_bytes)?;
        tx.commit()?;
        Ok(Pushed { seq, dropped, over_bound })
    }

    /// Up to `limit` messages after row `after`, in drain order.
    pub fn after(&self, after: i64, limit: usize) -> Result<Vec<Entry>, SpoolError> {
        let conn = self.lock();
        let mut stmt = conn.prepare(
            "SELECT id, seq, camera, phase, event_id, topic, payload, snapshot_topic, snapshot, created_ms
             FROM outbox WHERE id > ?1 ORDER BY id LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![after, limit as i64], |r| {
            let snapshot_topic: Option<String> = r.get(7)?;
            let snapshot: Option<Vec<u8>> = r.get(8)?;
            Ok(Entry {
                id: r.get(0)?,
                seq: r.get::<_, i64>(1)? as u64,
                camera: r.get(2)?,
                phase: r.get(3)?,
                event_id: r.get(4)?,
                topic: r.get(5)?,
                payload: r.get(6)?,
                snapshot: snapshot_topic.zip(snapshot),
                created_ms: r.get(9)?,
            })
        })?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// Deletes a message the broker acknowledged.
    pub fn remove(&self, id: i64) -> Result<(), SpoolError> {
        self.lock().execute("DELETE FROM outbox WHERE id = ?1", params![id])?;
        Ok(())
    }

    /// The last seq assigned (0 before the first message ever).
    pub fn last_seq(&self) -> Result<u64, SpoolError> {
        let v: Option<i64> =
            self.lock().query_row("SELECT value FROM meta WHERE key = 'seq'", [], |r| r.get(0)).optional()?;
        Ok(v.unwrap_or(0) as u64)
    }

    pub fn depth(&self) -> Result<Depth, SpoolError> {
        let conn = self.lock();
        let (messages, bytes, oldest): (i64, Option<i64>, Option<i64>) =
            conn.query_row("SELECT COUNT(*), SUM(bytes), MIN(created_ms) FROM outbox", [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })?;
        let oldest_age_s = oldest.map_or(0.0, |t| ((now_ms() - t).max(0) as f64) / 1000.0);
        Ok(Depth { messages: messages as u64, bytes: bytes.unwrap_or(0) as u64, oldest_age_s })
    }

    /// Whether the spool accepts writes (readiness): a cheap write probe.
    pub fn healthy(&self) -> bool {
        self.lock().execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('probe', 1)", []).is_ok()
    }
}

fn phase_name(p: Phase) -> &'static str {
    crate::pipeline::camera::phase_str(p)
}

/// Drops until the payload total fits `max_bytes`: whole `update`s oldest
/// first, then snapshots of other messages oldest first. A `start`, `end` or
/// `escalate` message itself is never dropped.
fn make_room(tx: &rusqlite::Transaction, max_bytes: u64) -> Result<(Vec<Dropped>, bool), rusqlite::Error> {
    let mut dropped = Vec::new();
    let total = |tx: &rusqlite::Transaction| -> Result<u64, rusqlite::Error> {
        tx.query_row("SELECT COALESCE(SUM(bytes), 0) FROM outbox", [], |r| r.get::<_, i64>(0)).map(|v| v as u64)
    };
    let mut size = total(tx)?;
    while size > max_bytes {
        let update: Option<(i64, i64, String, i64)> = tx
            .query_row(
                "SELECT id, seq, event_id, bytes FROM outbox WHERE phase = 'update' ORDER BY id LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .optional()?;
        if let Some((id, seq, event_id, bytes)) = update {
            tx.execute("DELETE FROM outbox WHERE id = ?1", params![id])?;
            dropped.push(Dropped::Update { seq: seq as u64, event_id });
            size = size.saturating_sub(bytes as u64);
            continue;
        }
        let snap: Option<(i64, i64, String, i64)> = tx
            .query_row(
                "SELECT id, seq, event_id, LENGTH(snapshot) FROM outbox WHERE snapshot IS NOT NULL ORDER BY id LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .optional()?;
        let Some((id, seq, event_id, bytes)) = snap else { return Ok((dropped, true)) };
        tx.execute(
            "UPDATE outbox SET snapshot = NULL, snapshot_topic = NULL, bytes = LENGTH(payload) WHERE id = ?1",
            params![id],
        )?;
        dropped.push(Dropped::Snapshot { seq: seq as u64, event_id });
        size = size.saturating_sub(bytes as u64);
    }
    Ok((dropped, false))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::Severity;

    fn topics() -> Topics {
        let text = r#"agent_id = "a"
site = { district = "d", street = "s", community = "c" }
broker = { host = "127.0.0.1" }
detector = { path = "/m.onnx", format = "nanodet", input_size = 416 }
[[cameras]]
id = "cam"
name = "Cam"
url = "rtsp://h/s"
"#;
        Topics::new(&crate::config::Config::parse(text, Path::new("t.toml")).unwrap())
    }

    fn event(id: &str, phase: Phase) -> Event {
        crate::alert::event::sample(id, phase, Severity::Warning)
    }

    #[test]
    fn seq_survives_reopening_and_messages_drain_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/spool.sqlite");
        let t = topics();
        {
            let spool = Spool::open(&path, 1 << 20).unwrap();
            for (i, phase) in [Phase::Start, Phase::Update, Phase::End].into_iter().enumerate() {
                let mut e = event("e1", phase);
                let pushed = spool.push(&mut e, Some(&[7; 100]), &t).unwrap();
                assert_eq!((pushed.seq, e.seq), (i as u64 + 1, i as u64 + 1));
            }
            let first = spool.after(0, 10).unwrap();
            spool.remove(first[0].id).unwrap();
        }
        let spool = Spool::open(&path, 1 << 20).unwrap();
        assert_eq!(spool.last_seq().unwrap(), 3, "seq is on disk");
        let left = spool.after(0, 10).unwrap();
        assert_eq!(left.iter().map(|e| e.seq).collect::<Vec<_>>(), [2, 3], "unacked messages stay, in order");
        assert_eq!(
            left[0].snapshot.as_ref().map(|(topic, jpeg)| (topic.ends_with("/snapshot"), jpeg.len())),
            Some((true, 100))
        );
        let payload: serde_json::Value = serde_json::from_slice(&left[1].payload).unwrap();
        assert_eq!((payload["seq"].as_u64(), payload["type"].as_str()), (Some(3), Some("end")));
        let mut e = event("e2", Phase::Start);
        assert_eq!(spool.push(&mut e, None, &t).unwrap().seq, 4, "never repeats after a restart");
        assert_eq!(spool.depth().unwrap().messages, 3);
    }

    #[test]
    fn a_full_spool_drops_oldest_updates_then_snapshots_never_starts_or_ends() {
        let dir = tempfile::tempdir().unwrap();
        let t = topics();
        // Room for about four 1000-byte snapshots.
        let spool = Spool::open(&dir.path().join("s.sqlite"), 6000).unwrap();
        let push = |id: &str, phase| spool.push(&mut event(id, phase), Some(&[0; 1000]), &t).unwrap();
        push("a", Phase::Start);
        push("a", Phase::Update);
        push("a", Phase::Update);
        push("a", Phase::End);
        let mut dropped = Vec::new();
        for _ in 0..3 {
            dropped.extend(push("b", Phase::Start).dropped);
        }
        assert!(matches!(dropped[0], Dropped::Update { seq: 2, .. }), "{dropped:?}");
        assert!(matches!(dropped[1], Dropped::Update { seq: 3, .. }), "{dropped:?}");
        assert!(dropped[2..].iter().all(|d| matches!(d, Dropped::Snapshot { .. })), "{dropped:?}");
        let phases: Vec<String> = spool.after(0, 100).unwrap().into_iter().map(|e| e.phase).collect();
        assert_eq!(phases, ["start", "end", "start", "start", "start"], "starts and ends are all kept");
        assert!(spool.depth().unwrap().bytes <= 6000);
    }
}
