//! The database underneath the store, reduced to what the store's queries
//! need: run statements in one transaction, and read rows of plain values.
//! Every query is written once, in the SQL SQLite and PostgreSQL share
//! (`$1` placeholders, `ON CONFLICT`, `BIGINT`, `TEXT`, `DOUBLE
//! PRECISION`; times as milliseconds since the epoch), so a second backend
//! is one more arm here, not a second set of queries.
//!
//! SQLite runs on tokio's blocking pool, one connection behind a mutex: the
//! ingest writer is the only heavy writer, and WAL lets readers of other
//! connections (tests, a later console pool) read beside it.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::StoreError;

/// One value in or out of a query.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
}

impl Value {
    pub fn int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }

    pub fn real(&self) -> Option<f64> {
        match self {
            Value::Real(r) => Some(*r),
            Value::Int(i) => Some(*i as f64),
            _ => None,
        }
    }

    pub fn text(&self) -> Option<&str> {
        match self {
            Value::Text(s) => Some(s),
            _ => None,
        }
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Value {
        Value::Text(s.to_string())
    }
}
impl From<String> for Value {
    fn from(s: String) -> Value {
        Value::Text(s)
    }
}
impl From<i64> for Value {
    fn from(i: i64) -> Value {
        Value::Int(i)
    }
}
impl From<f64> for Value {
    fn from(r: f64) -> Value {
        Value::Real(r)
    }
}
impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Value {
        v.map_or(Value::Null, Into::into)
    }
}

/// One statement and its parameters (`$1` is `params[0]`).
#[derive(Debug, Clone)]
pub struct Stmt {
    pub sql: &'static str,
    pub params: Vec<Value>,
    /// The batch fails (and rolls back) when this statement changes no row:
    /// a guarded update is how a step of the loop checks, inside its own
    /// transaction, that the alert is still in the state it was read in.
    pub must_change: bool,
}

impl Stmt {
    pub fn new(sql: &'static str, params: Vec<Value>) -> Stmt {
        Stmt { sql, params, must_change: false }
    }

    /// See [`Stmt::must_change`].
    pub fn must_change(mut self) -> Stmt {
        self.must_change = true;
        self
    }
}

/// A row: the selected columns in order.
pub type Row = Vec<Value>;

/// An open database.
#[derive(Clone)]
pub enum Db {
    Sqlite(Arc<Mutex<rusqlite::Connection>>),
}

impl Db {
    /// Opens (creating) the SQLite file at `path`.
    pub async fn open_sqlite(path: &Path) -> Result<Db, StoreError> {
        let path = path.to_path_buf();
        let conn = tokio::task::spawn_blocking(move || -> Result<rusqlite::Connection, StoreError> {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .map_err(|e| StoreError::Open(format!("{}: cannot create folder: {e}", dir.display())))?;
            }
            let conn =
                rusqlite::Connection::open(&path).map_err(|e| StoreError::Open(format!("{}: {e}", path.display())))?;
            conn.busy_timeout(Duration::from_secs(10)).map_err(|e| StoreError::Open(e.to_string()))?;
            // WAL: readers beside the writer. FULL: a message is acknowledged
            // to the broker only after its commit, so the commit must survive
            // a power cut, not only a crash.
            conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;")
                .map_err(|e| StoreError::Open(format!("{}: {e}", path.display())))?;
            Ok(conn)
        })
        .await
        .map_err(|e| StoreError::Open(e.to_string()))??;
        Ok(Db::Sqlite(Arc::new(Mutex::new(conn))))
    }

    /// Runs `stmts` in one transaction; the rows each changed, in order.
    /// Nothing is applied if one fails.
    pub async fn batch(&self, stmts: Vec<Stmt>) -> Result<Vec<usize>, StoreError> {
        match self {
            Db::Sqlite(conn) => {
                let conn = conn.clone();
                blocking(move || {
                    let mut conn = conn.lock().map_err(|_| StoreError::Poisoned)?;
                    let tx = conn.transaction()?;
                    let mut changed = Vec::with_capacity(stmts.len());
                    for (i, s) in stmts.iter().enumerate() {
                        let mut prepared = tx.prepare_cached(&sqlite_sql(s.sql))?;
                        let n = prepared.execute(rusqlite::params_from_iter(s.params.iter().map(to_sqlite)))?;
                        if n == 0 && s.must_change {
                            // Dropping `tx` rolls back.
                            return Err(StoreError::Unchanged(i));
                        }
                        changed.push(n);
                    }
                    tx.commit()?;
                    Ok(changed)
                })
                .await
            }
        }
    }

    /// Runs a query and returns every row.
    pub async fn query(&self, sql: &'static str, params: Vec<Value>) -> Result<Vec<Row>, StoreError> {
        match self {
            Db::Sqlite(conn) => {
                let conn = conn.clone();
                blocking(move || {
                    let conn = conn.lock().map_err(|_| StoreError::Poisoned)?;
                    let mut stmt = conn.prepare_cached(&sqlite_sql(sql))?;
                    let columns = stmt.column_count();
                    let mut rows = stmt.query(rusqlite::params_from_iter(params.iter().map(to_sqlite)))?;
                    let mut out = Vec::new();
                    while let Some(row) = rows.next()? {
                        let mut values = Vec::with_capacity(columns);
                        for i in 0..columns {
                            values.push(from_sqlite(row.get_ref(i)?));
                        }
                        out.push(values);
                    }
                    Ok(out)
                })
                .await
            }
        }
    }

    /// Runs a script of DDL statements (a migration) and `then` in one
    /// transaction.
    pub async fn script(&self, ddl: &'static str, then: Stmt) -> Result<(), StoreError> {
        match self {
            Db::Sqlite(conn) => {
                let conn = conn.clone();
                blocking(move || {
                    let mut conn = conn.lock().map_err(|_| StoreError::Poisoned)?;
                    let tx = conn.transaction()?;
                    tx.execute_batch(ddl)?;
                    tx.execute(&sqlite_sql(then.sql), rusqlite::params_from_iter(then.params.iter().map(to_sqlite)))?;
                    tx.commit()?;
                    Ok(())
                })
                .await
            }
        }
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| StoreError::Open(format!("database task: {e}")))?
}

/// `$1` → `?1`: SQLite reads `$1` as a *named* parameter numbered by first
/// appearance, which would bind wrongly when a query names `$2` before
/// `$1`; `?1` is numbered as written.
fn sqlite_sql(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '$' && chars.peek().is_some_and(char::is_ascii_digit) {
            out.push('?');
        } else {
            out.push(c);
        }
    }
    out
}

fn to_sqlite(v: &Value) -> rusqlite::types::Value {
    use rusqlite::types::Value as S;
    match v {
        Value::Null => S::Null,
        Value::Int(i) => S::Integer(*i),
        Value::Real(r) => S::Real(*r),
        Value::Text(s) => S::Text(s.clone()),
    }
}

fn from_sqlite(v: rusqlite::types::ValueRef<'_>) -> Value {
    use rusqlite::types::ValueRef as S;
    match v {
        S::Null => Value::Null,
        S::Integer(i) => Value::Int(i),
        S::Real(r) => Value::Real(r),
        S::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
        S::Blob(b) => Value::Text(String::from_utf8_lossy(b).into_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_keep_their_numbers() {
        assert_eq!(sqlite_sql("SELECT $2, $1 WHERE x = '$'"), "SELECT ?2, ?1 WHERE x = '$'");
    }

    #[tokio::test]
    async fn a_failed_statement_rolls_back_the_batch() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open_sqlite(&dir.path().join("t.sqlite")).await.unwrap();
        db.batch(vec![Stmt::new("CREATE TABLE t (k TEXT PRIMARY KEY, v BIGINT)", vec![])]).await.unwrap();
        let insert = "INSERT INTO t (k, v) VALUES ($1, $2)";
        let err = db
            .batch(vec![
                Stmt::new(insert, vec!["a".into(), 1i64.into()]),
                Stmt::new(insert, vec!["a".into(), 2i64.into()]),
            ])
            .await;
        assert!(err.is_err());
        assert!(db.query("SELECT k FROM t", vec![]).await.unwrap().is_empty());
        let n = db
            .batch(vec![Stmt::new(
                "INSERT INTO t (v, k) VALUES ($2, $1) ON CONFLICT (k) DO NOTHING",
                vec!["b".into(), 7i64.into()],
            )])
            .await
            .unwrap();
        assert_eq!(n, vec![1]);
        let rows = db.query("SELECT k, v FROM t WHERE v = $1", vec![7i64.into()]).await.unwrap();
        assert_eq!(rows, vec![vec![Value::Text("b".into()), Value::Int(7)]]);
    }
}
