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
//! The spool also owns the per-agent `seq`: a counter advanced, under the
//! writer's lock, for every message *before* its store is tried, and never
//! lowered, so a seq is never used twice even when the store fails (the
//! message then goes out from memory with it). It is written to disk with
//! every stored message, so it never goes back across restarts either, and
//! a gap a centre sees is a message the agent dropped (and counted).
//!
//! Analysis threads call [`Spool::push`] (durable before the frame's
//! analysis returns); the publisher reads with [`Spool::after`] on a second
//! connection (WAL: readers never wait for a writer's fsync) and deletes
//! with [`Spool::remove_many`]. A corrupt file is set aside at open.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, OptionalExtension};

use super::{Event, Topics};
use crate::vocab::Phase;

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool {}: {source}", path.display())]
    Open { path: PathBuf, source: rusqlite::Error },
    #[error("spool {}: cannot create its folder: {source}", path.display())]
    Folder { path: PathBuf, source: std::io::Error },
    #[error("spool {}: the file is corrupt and cannot be set aside as {}: {source}", path.display(), aside.display())]
    SetAsideFile { path: PathBuf, aside: PathBuf, source: std::io::Error },
    #[error("spool: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("spool: event encoding: {0}")]
    Encode(#[from] serde_json::Error),
}

/// One spooled message: an event and, when it has one, its snapshot (sent
/// first, so the picture is there when the centre reads the event).
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    /// Row id: the drain order.
    pub(crate) id: i64,
    pub(crate) seq: u64,
    pub(crate) camera: String,
    pub(crate) phase: String,
    pub(crate) event_id: String,
    pub(crate) topic: String,
    pub(crate) payload: Vec<u8>,
    pub(crate) snapshot: Option<(String, Vec<u8>)>,
    pub(crate) created_ms: i64,
}

/// What a full spool gave up to make room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Dropped {
    /// A whole `update` message (its seq is then a gap).
    Update { seq: u64, event_id: String },
    /// The snapshot of a `start`/`end`, whose event itself is kept.
    Snapshot { seq: u64, event_id: String },
}

/// After a push (which gave the event its `seq`): anything dropped to fit it.
#[derive(Debug)]
pub(crate) struct Pushed {
    pub(crate) dropped: Vec<Dropped>,
    /// The spool is over its bound with nothing left it may drop.
    pub(crate) over_bound: bool,
}

/// Depth figures for metrics and readiness.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Depth {
    pub(crate) messages: u64,
    pub(crate) bytes: u64,
    /// Age of the oldest message, seconds (0 when empty).
    pub(crate) oldest_age_s: f64,
}

/// The result of the spool's last real write, for readiness: `/readyz`
/// answers from this instead of writing itself.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Health {
    /// The last write (store, delete, set-aside, retry) succeeded.
    pub(crate) ok: bool,
    /// When a write last failed, and why.
    pub(crate) last_error_at: Option<SystemTime>,
    pub(crate) last_error: Option<String>,
    /// Writes that succeeded since the spool opened.
    pub(crate) writes: u64,
}

/// How many set-aside updates (and escalations) are kept for the operator
/// (newest first); older ones are deleted so a stream of refused messages
/// cannot fill the disk.
pub(crate) const SET_ASIDE_KEEP: i64 = 50;
/// Starts and ends set aside are kept up to this many (all phases
/// together): they are the ones an operator must be able to recover.
pub(crate) const SET_ASIDE_KEEP_ALL: i64 = 1000;

pub struct Spool {
    /// The writer: stores, deletes, set-asides.
    conn: Mutex<Connection>,
    /// Reads (drain, depth) on their own connection: with WAL a reader
    /// never waits for a writer's commit, so the publisher task is not held
    /// behind an analysis thread's fsync.
    reader: Mutex<Connection>,
    path: PathBuf,
    max_bytes: u64,
    /// The last seq handed out. Advanced (under the writer's lock, before
    /// the insert is tried) for every message, stored or not, and never
    /// decremented, so a failed store cannot make a seq be used twice. On
    /// disk it is `meta.seq`, written with every stored message.
    seq: Mutex<u64>,
    health: Mutex<Health>,
    /// Where a corrupt file found at open was moved.
    recovered: Option<PathBuf>,
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// Why opening the file failed: SQLite's error, or the integrity check's
/// first complaint.
enum OpenFailure {
    Sql(rusqlite::Error),
    Check(String),
}

impl From<rusqlite::Error> for OpenFailure {
    fn from(e: rusqlite::Error) -> Self {
        OpenFailure::Sql(e)
    }
}

impl OpenFailure {
    /// Corruption (the file must be set aside), as opposed to a fault
    /// that a retry or the operator fixes (permissions, a full disk).
    fn is_corrupt(&self) -> bool {
        match self {
            OpenFailure::Check(_) => true,
            OpenFailure::Sql(rusqlite::Error::SqliteFailure(e, _)) => {
                matches!(e.code, rusqlite::ErrorCode::NotADatabase | rusqlite::ErrorCode::DatabaseCorrupt)
            }
            OpenFailure::Sql(_) => false,
        }
    }

    fn into_sql(self) -> rusqlite::Error {
        match self {
            OpenFailure::Sql(e) => e,
            OpenFailure::Check(what) => rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CORRUPT),
                Some(format!("integrity check: {what}")),
            ),
        }
    }

    fn describe(&self) -> String {
        match self {
            OpenFailure::Sql(e) => e.to_string(),
            OpenFailure::Check(what) => format!("integrity check: {what}"),
        }
    }
}

/// Opens the writer connection, creates the schema and runs SQLite's
/// quick integrity check (every page and record, not index contents: fast
/// enough for a start, and it catches a truncated or overwritten file).
fn open_writer(path: &Path) -> Result<Connection, OpenFailure> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    let check: String = conn.query_row("PRAGMA quick_check(1)", [], |r| r.get(0))?;
    if check != "ok" {
        return Err(OpenFailure::Check(check));
    }
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
         CREATE INDEX IF NOT EXISTS outbox_phase ON outbox (phase, id);
         CREATE TABLE IF NOT EXISTS set_aside (
             id INTEGER PRIMARY KEY,
             seq INTEGER NOT NULL,
             camera TEXT NOT NULL,
             phase TEXT NOT NULL,
             event_id TEXT NOT NULL,
             topic TEXT NOT NULL,
             payload BLOB NOT NULL,
             snapshot_topic TEXT,
             snapshot BLOB,
             bytes INTEGER NOT NULL,
             created_ms INTEGER NOT NULL,
             set_aside_ms INTEGER NOT NULL,
             reason TEXT NOT NULL);",
    )?;
    Ok(conn)
}

/// `spool.sqlite` → `spool.sqlite.corrupt-20250102T030405Z` (and its
/// `-wal`/`-shm` beside it under the same stem, so `sqlite3` still opens
/// the pair for a post-mortem).
fn set_aside_file(path: &Path) -> Result<PathBuf, SpoolError> {
    let stamp = humantime::format_rfc3339_seconds(SystemTime::now()).to_string().replace([':', '-'], "");
    let aside = PathBuf::from(format!("{}.corrupt-{stamp}", path.display()));
    for suffix in ["", "-wal", "-shm"] {
        let from = PathBuf::from(format!("{}{suffix}", path.display()));
        let to = PathBuf::from(format!("{}{suffix}", aside.display()));
        match std::fs::rename(&from, &to) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(SpoolError::SetAsideFile { path: from, aside: to, source }),
        }
    }
    Ok(aside)
}

impl Spool {
    /// Opens (or creates) the spool at `path`, bounded to `max_bytes` of
    /// payload. Whatever an earlier run left unsent is kept and drains first.
    ///
    /// A corrupt file (not a database, or failing the integrity check) is
    /// renamed aside with a timestamp and an empty spool starts in its
    /// place, with an error line: an agent that stays down for ever
    /// (systemd restarting it every 5 s) loses every alert, a new spool
    /// loses only what the broken file held. [`Spool::recovered`] says so.
    pub fn open(path: &Path, max_bytes: u64) -> Result<Spool, SpoolError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| SpoolError::Folder { path: path.to_path_buf(), source })?;
        }
        let open_err = |f: OpenFailure| SpoolError::Open { path: path.to_path_buf(), source: f.into_sql() };
        let (conn, recovered) = match open_writer(path) {
            Ok(conn) => (conn, None),
            Err(f) if f.is_corrupt() => {
                let aside = set_aside_file(path)?;
                tracing::error!(
                    spool = %path.display(),
                    set_aside = %aside.display(),
                    error = %f.describe(),
                    "the spool file is corrupt: set it aside and started an empty spool (its unsent messages are lost)"
                );
                (open_writer(path).map_err(open_err)?, Some(aside))
            }
            Err(f) => return Err(open_err(f)),
        };
        let reader = Connection::open(path)
            .and_then(|c| c.busy_timeout(std::time::Duration::from_secs(5)).map(|()| c))
            .map_err(|source| SpoolError::Open { path: path.to_path_buf(), source })?;
        let seq: i64 = conn
            .query_row(
                "SELECT MAX(COALESCE((SELECT value FROM meta WHERE key = 'seq'), 0),
                            COALESCE((SELECT MAX(seq) FROM outbox), 0),
                            COALESCE((SELECT MAX(seq) FROM set_aside), 0))",
                [],
                |r| r.get(0),
            )
            .map_err(|source| SpoolError::Open { path: path.to_path_buf(), source })?;
        Ok(Spool {
            conn: Mutex::new(conn),
            reader: Mutex::new(reader),
            path: path.to_path_buf(),
            max_bytes,
            seq: Mutex::new(seq.max(0) as u64),
            health: Mutex::new(Health { ok: true, ..Health::default() }),
            recovered,
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Where a corrupt spool file found at open was moved, if one was.
    pub(crate) fn recovered(&self) -> Option<&Path> {
        self.recovered.as_deref()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn read(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.reader.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn next_seq(&self) -> u64 {
        let mut s = self.seq.lock().unwrap_or_else(|p| p.into_inner());
        *s += 1;
        *s
    }

    /// Records a real write's outcome for readiness.
    fn note<T>(&self, r: &Result<T, SpoolError>) {
        let mut h = self.health.lock().unwrap_or_else(|p| p.into_inner());
        match r {
            Ok(_) => {
                h.ok = true;
                h.writes += 1;
            }
            Err(e) => {
                h.ok = false;
                h.last_error_at = Some(SystemTime::now());
                h.last_error = Some(e.to_string());
            }
        }
    }

    /// Stores one event message: assigns its `seq`, encodes it, and makes
    /// room (oldest updates first, then old snapshots) when the spool is
    /// over its bound. Durable when this returns `Ok`.
    ///
    /// The seq is assigned (into `event.seq`) even when the store fails, and
    /// it is then never assigned again: the caller sends that message from
    /// memory with it.
    pub(crate) fn push(
        &self,
        event: &mut Event,
        snapshot: Option<&[u8]>,
        topics: &Topics,
    ) -> Result<Pushed, SpoolError> {
        let mut conn = self.lock();
        event.seq = self.next_seq();
        let r = store(&mut conn, event, snapshot, topics, self.max_bytes);
        drop(conn);
        self.note(&r);
        r.map(|(dropped, over_bound)| Pushed { dropped, over_bound })
    }

    /// Assigns the next seq without storing anything: for a message that
    /// must wait in memory behind older unstored ones (see
    /// [`Spool::push_assigned`]).
    pub(crate) fn assign_seq(&self, event: &mut Event) {
        let _conn = self.lock();
        event.seq = self.next_seq();
    }

    /// Stores a message whose seq was assigned earlier (one that waited in
    /// memory while the spool failed), keeping that seq.
    pub(crate) fn push_assigned(
        &self,
        event: &Event,
        snapshot: Option<&[u8]>,
        topics: &Topics,
    ) -> Result<Pushed, SpoolError> {
        let mut conn = self.lock();
        let r = store(&mut conn, event, snapshot, topics, self.max_bytes);
        drop(conn);
        self.note(&r);
        r.map(|(dropped, over_bound)| Pushed { dropped, over_bound })
    }

    /// Up to `limit` messages after row `after`, in drain order.
    pub(crate) fn after(&self, after: i64, limit: usize) -> Result<Vec<Entry>, SpoolError> {
        let conn = self.read();
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

    /// Deletes one message (the publisher deletes in batches).
    #[cfg(test)]
    pub(crate) fn remove(&self, id: i64) -> Result<(), SpoolError> {
        self.remove_many(&[id])
    }

    /// Deletes messages the broker acknowledged, in one transaction (one
    /// fsync for a burst of PUBACKs).
    pub(crate) fn remove_many(&self, ids: &[i64]) -> Result<(), SpoolError> {
        let r = (|| {
            let mut conn = self.lock();
            let tx = conn.transaction()?;
            for id in ids {
                tx.execute("DELETE FROM outbox WHERE id = ?1", params![id])?;
            }
            tx.commit()?;
            Ok(())
        })();
        self.note(&r);
        r
    }

    /// Moves a message the broker keeps refusing out of the drain into the
    /// `set_aside` table (the newest [`SET_ASIDE_KEEP`] are kept there for
    /// the operator). Returns the message's `(seq, event_id, phase, topic)`,
    /// or `None` when the row was already gone.
    pub(crate) fn set_aside(&self, id: i64, reason: &str) -> Result<Option<(u64, String, String, String)>, SpoolError> {
        let r = (|| {
            let mut conn = self.lock();
            let tx = conn.transaction()?;
            let row: Option<(i64, String, String, String)> = tx
                .query_row("SELECT seq, event_id, phase, topic FROM outbox WHERE id = ?1", params![id], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                })
                .optional()?;
            if row.is_some() {
                tx.execute(
                    "INSERT OR REPLACE INTO set_aside
                     SELECT id, seq, camera, phase, event_id, topic, payload, snapshot_topic, snapshot, bytes, created_ms, ?2, ?3
                     FROM outbox WHERE id = ?1",
                    params![id, now_ms(), reason],
                )?;
                tx.execute("DELETE FROM outbox WHERE id = ?1", params![id])?;
                // Updates beyond the newest few go; a start or an end is
                // kept for the operator unless thousands pile up.
                tx.execute(
                    "DELETE FROM set_aside WHERE (phase NOT IN ('start', 'end')
                       AND id NOT IN (SELECT id FROM set_aside WHERE phase NOT IN ('start', 'end') ORDER BY id DESC LIMIT ?1))
                       OR id NOT IN (SELECT id FROM set_aside ORDER BY id DESC LIMIT ?2)",
                    params![SET_ASIDE_KEEP, SET_ASIDE_KEEP_ALL],
                )?;
            }
            tx.commit()?;
            Ok(row.map(|(seq, e, p, t)| (seq as u64, e, p, t)))
        })();
        self.note(&r);
        r
    }

    /// How many messages were set aside and are still kept.
    #[cfg(test)]
    pub(crate) fn set_aside_count(&self) -> Result<u64, SpoolError> {
        Ok(self.read().query_row("SELECT COUNT(*) FROM set_aside", [], |r| r.get::<_, i64>(0))? as u64)
    }

    /// The last seq assigned (0 before the first message ever), stored or not.
    pub(crate) fn last_seq(&self) -> Result<u64, SpoolError> {
        Ok(*self.seq.lock().unwrap_or_else(|p| p.into_inner()))
    }

    pub(crate) fn depth(&self) -> Result<Depth, SpoolError> {
        let conn = self.read();
        let (messages, bytes, oldest): (i64, Option<i64>, Option<i64>) =
            conn.query_row("SELECT COUNT(*), SUM(bytes), MIN(created_ms) FROM outbox", [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })?;
        let oldest_age_s = oldest.map_or(0.0, |t| ((now_ms() - t).max(0) as f64) / 1000.0);
        Ok(Depth { messages: messages as u64, bytes: bytes.unwrap_or(0) as u64, oldest_age_s })
    }

    /// Whether the spool accepts writes (readiness): the outcome of the
    /// last real write, so asking costs nothing and writes nothing.
    pub(crate) fn healthy(&self) -> bool {
        self.health().ok
    }

    pub(crate) fn health(&self) -> Health {
        self.health.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// A real, tiny write (the persisted seq, rewritten), to learn whether
    /// a spool that failed accepts writes again. Called by the publisher
    /// at most every few seconds, and only while the last write failed.
    pub(crate) fn probe(&self) -> bool {
        let seq = self.last_seq().unwrap_or(0) as i64;
        let r = self
            .lock()
            .execute(
                "INSERT INTO meta (key, value) VALUES ('seq', ?1)
                 ON CONFLICT (key) DO UPDATE SET value = MAX(value, excluded.value)",
                params![seq],
            )
            .map(|_| ())
            .map_err(SpoolError::from);
        self.note(&r);
        r.is_ok()
    }

    /// The writer connection, for tests that make writes fail for real.
    #[cfg(test)]
    pub(crate) fn writer(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.lock()
    }
}

/// One message into the spool, in one transaction: the row, the persisted
/// seq (never lowered), and room made under the bound.
fn store(
    conn: &mut Connection,
    event: &Event,
    snapshot: Option<&[u8]>,
    topics: &Topics,
    max_bytes: u64,
) -> Result<(Vec<Dropped>, bool), SpoolError> {
    let tx = conn.transaction()?;
    let seq = event.seq;
    tx.execute(
        "INSERT INTO meta (key, value) VALUES ('seq', ?1)
         ON CONFLICT (key) DO UPDATE SET value = MAX(value, excluded.value)",
        params![seq as i64],
    )?;
    let kind = event.kind.as_str();
    let payload = serde_json::to_vec(event)?;
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
    let (dropped, over_bound) = make_room(&tx, max_bytes)?;
    tx.commit()?;
    Ok((dropped, over_bound))
}

fn phase_name(p: Phase) -> &'static str {
    p.as_str()
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
pub(crate) mod tests;
