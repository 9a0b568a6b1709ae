//! The retained status messages: an agent's on `{base}/status` (its last
//! will says `offline`) and each camera's on `{base}/cameras/{camera}/status`.
//! A centre's fleet view is these, read back.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

/// `{base}/status`, retained.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AgentStatus {
    pub state: AgentState,
    pub agent: String,
    /// `district/street/community`.
    pub site: String,
    /// The agent's version (`CARGO_PKG_VERSION`).
    pub version: String,
    /// The ids of the cameras it runs.
    pub cameras: Vec<String>,
    #[serde(with = "crate::time::rfc3339")]
    pub at: SystemTime,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AgentState {
    Online,
    /// A graceful stop, or the broker's delivery of the last will.
    Offline,
}

impl AgentState {
    pub fn as_str(&self) -> &'static str {
        match self {
            AgentState::Online => "online",
            AgentState::Offline => "offline",
        }
    }
}

/// `{base}/cameras/{camera}/status`, retained.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CameraStatus {
    pub camera: String,
    pub name: String,
    pub state: CameraState,
    /// Decoded frames per second (after the analysis rate limit).
    pub fps: f64,
    #[serde(with = "crate::time::rfc3339_opt")]
    pub last_frame_at: Option<SystemTime>,
    /// Credentials already removed.
    pub last_error: Option<String>,
    pub reconnects: u64,
    #[serde(with = "crate::time::rfc3339")]
    pub at: SystemTime,
}

/// What a camera's retained status says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CameraState {
    /// Frames are arriving.
    Streaming,
    /// The stream failed or ended; retrying with backoff.
    Reconnecting,
    /// Several attempts in a row produced no frame. Still retrying, at the
    /// capped delay, but an operator should look.
    Failed,
}

impl CameraState {
    pub fn as_str(&self) -> &'static str {
        match self {
            CameraState::Streaming => "streaming",
            CameraState::Reconnecting => "reconnecting",
            CameraState::Failed => "failed",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_read_back_the_same() {
        let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(1_796_284_800_250);
        let a = AgentStatus {
            state: AgentState::Offline,
            agent: "box-7".into(),
            site: "d/s/c".into(),
            version: "0.1.0".into(),
            cameras: vec!["cam-1".into()],
            at,
        };
        let json = serde_json::to_string(&a).unwrap();
        assert!(json.contains(r#""state":"offline""#), "{json}");
        assert_eq!(serde_json::from_str::<AgentStatus>(&json).unwrap(), a);
        let c = CameraStatus {
            camera: "cam-1".into(),
            name: "Lane 4".into(),
            state: CameraState::Failed,
            fps: 0.0,
            last_frame_at: None,
            last_error: Some("connection refused".into()),
            reconnects: 3,
            at,
        };
        let json = serde_json::to_string(&c).unwrap();
        assert!(json.contains(r#""state":"failed""#) && json.contains(r#""last_frame_at":null"#), "{json}");
        assert_eq!(serde_json::from_str::<CameraStatus>(&json).unwrap(), c);
    }
}
