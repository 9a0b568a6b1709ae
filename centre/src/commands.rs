//! The way back to the agents: a step of the loop that the agent must hear
//! (`ack` when an alert is assessed or dispatched, `resolve` when it is
//! closed), and a camera's tuning (`set`), is published on that agent's
//! command topic, through the centre's one MQTT session, at QoS 1 and never retained (the agent
//! refuses retained commands). The agent's reply arrives through ingest
//! like any other message and is matched by `request_id`.

use alleywatch_contract::command::{Ack, Resolve, Set};
use alleywatch_contract::Topics;
use rumqttc::{AsyncClient, QoS};
use serde::Serialize;

use crate::store::AlertRow;

#[derive(Clone)]
pub struct Commands {
    client: AsyncClient,
    root: String,
}

impl Commands {
    pub fn new(client: AsyncClient, root: &str) -> Commands {
        Commands { client, root: root.to_string() }
    }

    /// Sends `ack` or `resolve` about `alert` to the agent that raised it.
    /// It is queued while the broker is away and sent on reconnect.
    pub async fn send(
        &self,
        alert: &AlertRow,
        name: &str,
        by: &str,
        note: Option<&str>,
        request_id: &str,
    ) -> Result<(), String> {
        let (event_id, by, request_id) = (alert.id.clone(), by.to_string(), Some(request_id.to_string()));
        let payload = match name {
            "ack" => json(&Ack { event_id, by, note: note.map(|n| n.chars().take(500).collect()), request_id }),
            "resolve" => json(&Resolve { event_id, by, request_id }),
            other => return Err(format!("no command {other:?}")),
        }?;
        let topic = Topics::new(&self.root, &alert.site, &alert.agent).command(name);
        self.client.publish(topic, QoS::AtLeastOnce, false, payload).await.map_err(|e| e.to_string())
    }
}

impl Commands {
    /// Sends `set` with `changes` (full key paths) to the agent `agent` at
    /// `site`.
    pub async fn set(
        &self,
        site: &str,
        agent: &str,
        changes: serde_json::Map<String, serde_json::Value>,
        by: &str,
        request_id: &str,
    ) -> Result<(), String> {
        let payload = json(&Set { by: by.to_string(), changes, request_id: Some(request_id.to_string()) })?;
        let topic = Topics::new(&self.root, site, agent).command("set");
        self.client.publish(topic, QoS::AtLeastOnce, false, payload).await.map_err(|e| e.to_string())
    }
}

fn json(v: &impl Serialize) -> Result<Vec<u8>, String> {
    serde_json::to_vec(v).map_err(|e| e.to_string())
}
