//! Fleet health as alerts: a camera failed, or an agent offline, for
//! longer than `fleet.offline_after_s` becomes a `camera_offline` alert
//! (one per camera, or one per agent with no camera), which then runs
//! through the same loop as any other; it ends when the camera or agent
//! comes back.

use sha2::{Digest, Sha256};

use super::db::Stmt;
use super::{text, Store, StoreError};
use crate::live::Change;

/// An agent's latest status.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentRow {
    pub site: String,
    pub agent: String,
    pub state: String,
    pub version: String,
    pub status_at_ms: i64,
    pub received_at_ms: i64,
}

/// A camera's latest status, all of it.
#[derive(Debug, Clone, PartialEq)]
pub struct FleetCamera {
    pub site: String,
    pub agent: String,
    pub camera: String,
    pub name: String,
    pub state: String,
    pub fps: f64,
    pub last_frame_at_ms: Option<i64>,
    pub last_error: Option<String>,
    pub reconnects: i64,
    pub status_at_ms: i64,
    pub failing_since_ms: Option<i64>,
}

/// The kind of the alerts this module raises.
pub const CAMERA_OFFLINE: &str = "camera_offline";

impl Store {
    /// Raises the `camera_offline` alerts now due and ends those whose
    /// camera or agent is back; the alerts that changed.
    pub async fn check_fleet(&self, now_ms: i64, after_ms: i64) -> Result<Vec<Change>, StoreError> {
        let cutoff = now_ms - after_ms;
        let mut down: Vec<(String, String, String, String, i64)> = self
            .db
            .query(
                "SELECT site, agent, camera, name, failing_since FROM cameras
                 WHERE failing_since IS NOT NULL AND failing_since <= $1",
                vec![cutoff.into()],
            )
            .await?
            .into_iter()
            .map(|r| (text(&r[0]), text(&r[1]), text(&r[2]), text(&r[3]), r[4].int().unwrap_or(0)))
            .collect();
        down.extend(
            self.db
                .query(
                    "SELECT site, agent, received_at FROM agents WHERE state = 'offline' AND received_at <= $1",
                    vec![cutoff.into()],
                )
                .await?
                .into_iter()
                .map(|r| {
                    let agent = text(&r[1]);
                    (text(&r[0]), agent.clone(), String::new(), format!("agent {agent}"), r[2].int().unwrap_or(0))
                }),
        );
        let mut stmts = Vec::new();
        let mut raised = Vec::new();
        for (site, agent, camera, name, since) in &down {
            let (district, street, community) = crate::access::site_levels(site);
            let (district, street, community) = (district.to_string(), street.to_string(), community.to_string());
            // One alert per outage: the same camera failing again later is a new one.
            let digest = Sha256::digest(format!("{site}/{agent}/{camera}/{since}").as_bytes());
            let id = format!("offline-{}", digest.iter().take(12).map(|b| format!("{b:02x}")).collect::<String>());
            stmts.push(Stmt::new(
                "INSERT INTO alerts (id, site, district, street, community, agent, camera, camera_name, kind,
                     zone, severity, severity_rank, phase, last_seq, started_at, updated_at, ended_at,
                     peak_score, escalated_to, first_received_at, last_received_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'camera_offline', NULL, 'warning', 1, 'start', 0, $9,
                     $10, NULL, 0, NULL, $10, $10)
                 ON CONFLICT (id) DO NOTHING",
                vec![
                    id.as_str().into(),
                    site.as_str().into(),
                    district.as_str().into(),
                    street.as_str().into(),
                    community.as_str().into(),
                    agent.as_str().into(),
                    camera.as_str().into(),
                    name.as_str().into(),
                    (*since).into(),
                    now_ms.into(),
                ],
            ));
            raised.push(Change { what: "alert", id, district, street, community });
        }
        let mut changes = Vec::new();
        if !stmts.is_empty() {
            let changed = self.db.batch(stmts).await?;
            changes.extend(raised.into_iter().zip(changed).filter(|(_, n)| *n == 1).map(|(c, _)| c));
        }
        // Back: the camera no longer failed, the agent no longer offline.
        let back = self
            .db
            .query(
                "SELECT a.id, a.district, a.street, a.community FROM alerts a
                 WHERE a.kind = 'camera_offline' AND a.phase <> 'end'
                   AND ((a.camera <> '' AND NOT EXISTS (SELECT 1 FROM cameras c WHERE c.site = a.site
                          AND c.agent = a.agent AND c.camera = a.camera AND c.failing_since = a.started_at))
                     OR (a.camera = '' AND NOT EXISTS (SELECT 1 FROM agents g WHERE g.site = a.site
                          AND g.agent = a.agent AND g.state = 'offline')))",
                vec![],
            )
            .await?;
        if !back.is_empty() {
            let stmts = back
                .iter()
                .map(|r| {
                    Stmt::new(
                        "UPDATE alerts SET phase = 'end', ended_at = $2, updated_at = $2 WHERE id = $1",
                        vec![text(&r[0]).into(), now_ms.into()],
                    )
                })
                .collect();
            self.db.batch(stmts).await?;
            changes.extend(back.into_iter().map(|r| Change {
                what: "alert",
                id: text(&r[0]),
                district: text(&r[1]),
                street: text(&r[2]),
                community: text(&r[3]),
            }));
        }
        Ok(changes)
    }

    /// The agents and cameras of `scope`, for the fleet view.
    pub async fn fleet(&self, scope: &crate::access::Scope) -> Result<(Vec<AgentRow>, Vec<FleetCamera>), StoreError> {
        let s = scope.to_string();
        let prefix = format!("{s}/");
        let params = || vec![s.as_str().into(), (prefix.len() as i64).into(), prefix.as_str().into()];
        let agents = self
            .db
            .query(
                "SELECT site, agent, state, version, status_at, received_at FROM agents
                 WHERE site = $1 OR substr(site, 1, $2) = $3 ORDER BY site, agent",
                params(),
            )
            .await?
            .into_iter()
            .map(|r| AgentRow {
                site: text(&r[0]),
                agent: text(&r[1]),
                state: text(&r[2]),
                version: text(&r[3]),
                status_at_ms: r[4].int().unwrap_or(0),
                received_at_ms: r[5].int().unwrap_or(0),
            })
            .collect();
        let cameras = self
            .db
            .query(
                "SELECT site, agent, camera, name, state, fps, last_frame_at, last_error, reconnects, status_at,
                     failing_since
                 FROM cameras WHERE site = $1 OR substr(site, 1, $2) = $3 ORDER BY site, agent, camera",
                params(),
            )
            .await?
            .into_iter()
            .map(|r| FleetCamera {
                site: text(&r[0]),
                agent: text(&r[1]),
                camera: text(&r[2]),
                name: text(&r[3]),
                state: text(&r[4]),
                fps: r[5].real().unwrap_or(0.0),
                last_frame_at_ms: r[6].int(),
                last_error: r[7].text().map(str::to_string),
                reconnects: r[8].int().unwrap_or(0),
                status_at_ms: r[9].int().unwrap_or(0),
                failing_since_ms: r[10].int(),
            })
            .collect();
        Ok((agents, cameras))
    }

    /// Whether a camera of this agent has reported a status.
    pub async fn camera_known(&self, site: &str, agent: &str, camera: &str) -> Result<bool, StoreError> {
        let rows = self
            .db
            .query(
                "SELECT 1 FROM cameras WHERE site = $1 AND agent = $2 AND camera = $3",
                vec![site.into(), agent.into(), camera.into()],
            )
            .await?;
        Ok(!rows.is_empty())
    }

    /// Alerts not yet closed, for supervision.
    pub async fn open_alerts(&self) -> Result<Vec<super::AlertRow>, StoreError> {
        let rows = self
            .db
            .query(concat!("SELECT ", super::alert_columns!(), " FROM alerts a WHERE a.state <> 'closed'"), vec![])
            .await?;
        Ok(rows.into_iter().map(super::alert_row).collect())
    }

    /// Marks `id` late and on `level`'s board; false when it was there
    /// already or has been closed meanwhile.
    pub async fn escalate(&self, id: &str, level: &str, now_ms: i64) -> Result<bool, StoreError> {
        let audit = super::AuditEntry::new(None, "late", Some(id), Some(format!("escalated to {level}")));
        let changed = self
            .db
            .batch(vec![
                Stmt::new(
                    "UPDATE alerts SET escalated_to = $2, late_at = COALESCE(late_at, $3)
                     WHERE id = $1 AND state <> 'closed' AND COALESCE(escalated_to, '') <> $2",
                    vec![id.into(), level.into(), now_ms.into()],
                ),
                audit.stmt(),
            ])
            .await?;
        Ok(changed[0] == 1)
    }
}
