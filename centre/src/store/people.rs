//! Users, sessions and the audit log in the database. Passwords and
//! tokens arrive here already hashed (see [`crate::access`]).

use std::time::SystemTime;

use super::db::{Stmt, Value};
use super::{millis, text, Store, StoreError};
use crate::access::{Role, Scope, User};

/// One line of the audit log.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEntry {
    pub at_ms: i64,
    pub user: Option<String>,
    pub action: String,
    pub target: Option<String>,
    pub detail: Option<String>,
    pub remote: Option<String>,
}

impl AuditEntry {
    pub fn new(user: Option<&str>, action: &str, target: Option<&str>, detail: Option<String>) -> AuditEntry {
        AuditEntry {
            at_ms: millis(SystemTime::now()),
            user: user.map(str::to_string),
            action: action.to_string(),
            target: target.map(str::to_string),
            detail,
            remote: None,
        }
    }

    pub fn from(mut self, remote: impl ToString) -> AuditEntry {
        self.remote = Some(remote.to_string());
        self
    }

    pub(super) fn stmt(&self) -> Stmt {
        Stmt::new(
            "INSERT INTO audit (id, at, user_name, action, target, detail, remote) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            vec![
                uuid::Uuid::new_v4().to_string().into(),
                self.at_ms.into(),
                self.user.clone().into(),
                self.action.as_str().into(),
                self.target.clone().into(),
                self.detail.clone().into(),
                self.remote.clone().into(),
            ],
        )
    }
}

impl Store {
    /// Adds a user; false when the name is taken.
    pub async fn add_user(&self, name: &str, phc: &str, role: Role, scope: &Scope) -> Result<bool, StoreError> {
        let audit = AuditEntry::new(None, "user_add", Some(name), Some(format!("{} {scope}", role.as_str())))
            .from("command line");
        let changed = self
            .db
            .batch(vec![
                Stmt::new(
                    "INSERT INTO users (name, password_hash, role, scope, created_at) VALUES ($1, $2, $3, $4, $5)
                     ON CONFLICT (name) DO NOTHING",
                    vec![
                        name.into(),
                        phc.into(),
                        role.as_str().into(),
                        scope.to_string().into(),
                        millis(SystemTime::now()).into(),
                    ],
                ),
                audit.stmt(),
            ])
            .await?;
        Ok(changed[0] == 1)
    }

    /// Removes a user and their sessions; false when there was none.
    pub async fn remove_user(&self, name: &str) -> Result<bool, StoreError> {
        let audit = AuditEntry::new(None, "user_remove", Some(name), None).from("command line");
        let changed = self
            .db
            .batch(vec![
                Stmt::new("DELETE FROM sessions WHERE user_name = $1", vec![name.into()]),
                Stmt::new("DELETE FROM users WHERE name = $1", vec![name.into()]),
                audit.stmt(),
            ])
            .await?;
        Ok(changed[1] == 1)
    }

    /// `(name, role, scope)` of every user.
    pub async fn users(&self) -> Result<Vec<(String, String, String)>, StoreError> {
        let rows = self.db.query("SELECT name, role, scope FROM users ORDER BY name", vec![]).await?;
        Ok(rows.into_iter().map(|r| (text(&r[0]), text(&r[1]), text(&r[2]))).collect())
    }

    /// A user's stored password hash, role and scope.
    pub async fn user_login(&self, name: &str) -> Result<Option<(String, Role, Scope)>, StoreError> {
        let rows =
            self.db.query("SELECT password_hash, role, scope FROM users WHERE name = $1", vec![name.into()]).await?;
        Ok(rows.into_iter().next().and_then(|r| {
            let role = Role::parse(r[1].text()?)?;
            let scope = Scope::parse(r[2].text()?).ok()?;
            Some((text(&r[0]), role, scope))
        }))
    }

    /// Records a session by its token's hash.
    pub async fn add_session(
        &self,
        token_sha256: &str,
        user: &str,
        csrf: &str,
        now: SystemTime,
        expires_ms: i64,
        audit: AuditEntry,
    ) -> Result<(), StoreError> {
        self.db
            .batch(vec![
                Stmt::new(
                    "INSERT INTO sessions (token_sha256, user_name, csrf, created_at, expires_at)
                     VALUES ($1, $2, $3, $4, $5)",
                    vec![token_sha256.into(), user.into(), csrf.into(), millis(now).into(), expires_ms.into()],
                ),
                audit.stmt(),
            ])
            .await?;
        Ok(())
    }

    /// The user of a live session.
    pub async fn session_user(&self, token_sha256: &str, now: SystemTime) -> Result<Option<User>, StoreError> {
        let rows = self
            .db
            .query(
                "SELECT u.name, u.role, u.scope, s.csrf FROM sessions s JOIN users u ON u.name = s.user_name
                 WHERE s.token_sha256 = $1 AND s.expires_at > $2",
                vec![token_sha256.into(), millis(now).into()],
            )
            .await?;
        Ok(rows.into_iter().next().and_then(|r| {
            Some(User {
                name: text(&r[0]),
                role: Role::parse(r[1].text()?)?,
                scope: Scope::parse(r[2].text()?).ok()?,
                csrf: text(&r[3]),
            })
        }))
    }

    pub async fn end_session(&self, token_sha256: &str, audit: AuditEntry) -> Result<(), StoreError> {
        self.db
            .batch(vec![
                Stmt::new("DELETE FROM sessions WHERE token_sha256 = $1", vec![token_sha256.into()]),
                audit.stmt(),
            ])
            .await?;
        Ok(())
    }

    /// Deletes expired sessions; how many.
    pub async fn prune_sessions(&self, now: SystemTime) -> Result<usize, StoreError> {
        let n = self
            .db
            .batch(vec![Stmt::new("DELETE FROM sessions WHERE expires_at <= $1", vec![millis(now).into()])])
            .await?;
        Ok(n[0])
    }

    pub async fn audit(&self, entry: AuditEntry) -> Result<(), StoreError> {
        self.db.batch(vec![entry.stmt()]).await.map(|_| ())
    }

    /// The audit log, oldest first.
    pub async fn audit_log(&self) -> Result<Vec<AuditEntry>, StoreError> {
        let rows = self
            .db
            .query("SELECT at, user_name, action, target, detail, remote FROM audit ORDER BY at, id", vec![])
            .await?;
        let opt = |v: &Value| v.text().map(str::to_string);
        Ok(rows
            .into_iter()
            .map(|r| AuditEntry {
                at_ms: r[0].int().unwrap_or(0),
                user: opt(&r[1]),
                action: text(&r[2]),
                target: opt(&r[3]),
                detail: opt(&r[4]),
                remote: opt(&r[5]),
            })
            .collect())
    }
}
