//! The versioned schema: each migration runs once, in its own transaction
//! with the row that records it, in version order. A migration is never
//! edited after it ships; a change is a new one.

use super::db::{Db, Stmt};
use super::StoreError;

/// `(version, name, SQL)`, in order.
const MIGRATIONS: &[(i64, &str, &str)] =
    &[(1, "ingest", include_str!("migrations/0001_ingest.sql")), (2, "loop", include_str!("migrations/0002_loop.sql"))];

pub(super) async fn run(db: &Db) -> Result<(), StoreError> {
    db.batch(vec![Stmt::new(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, name TEXT NOT NULL,
             applied_at BIGINT NOT NULL)",
        vec![],
    )])
    .await?;
    let applied: Vec<i64> = db
        .query("SELECT version FROM schema_migrations ORDER BY version", vec![])
        .await?
        .iter()
        .filter_map(|r| r[0].int())
        .collect();
    if let Some(&newest) = applied.last() {
        let known = MIGRATIONS.last().map_or(0, |m| m.0);
        if newest > known {
            return Err(StoreError::Migration {
                version: newest,
                name: "unknown",
                message: format!(
                    "the database is at schema {newest}, newer than this centre knows ({known}); upgrade the centre"
                ),
            });
        }
    }
    for &(version, name, sql) in MIGRATIONS {
        if applied.contains(&version) {
            continue;
        }
        let record = Stmt::new(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
            vec![version.into(), name.into(), super::millis(std::time::SystemTime::now()).into()],
        );
        db.script(sql, record).await.map_err(|e| StoreError::Migration { version, name, message: e.to_string() })?;
        tracing::info!(version, name, "database migrated");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn migrations_run_once_and_a_newer_database_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open_sqlite(&dir.path().join("c.sqlite")).await.unwrap();
        run(&db).await.unwrap();
        run(&db).await.unwrap();
        let n = db.query("SELECT COUNT(*) FROM schema_migrations", vec![]).await.unwrap();
        assert_eq!(n[0][0].int(), Some(MIGRATIONS.len() as i64));
        db.batch(vec![Stmt::new("INSERT INTO schema_migrations VALUES (999, 'future', 0)", vec![])]).await.unwrap();
        let e = run(&db).await.unwrap_err().to_string();
        assert!(e.contains("schema 999, newer than this centre knows"), "{e}");
    }
}
