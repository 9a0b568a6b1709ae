//! The control plane: changes asked of a running agent, by a command centre
//! (an MQTT command, `alert::publisher`) or by the technician's page
//! (`http`), handed to the one task that owns the configuration and the
//! cameras (`agent`). Both doors speak these types, so the manager never
//! knows which one a change came through, only who asked.

use serde_json::Value;
use tokio::sync::oneshot;

/// A change asked for by a centre (command) or the technician's page,
/// handed to whoever owns the configuration and the cameras (the agent's
/// manager). The answer is the reply's error text, if any.
pub struct Request {
    pub change: Change,
    pub(crate) by: String,
    pub reply: oneshot::Sender<Result<(), String>>,
}

/// What a [`Request`] changes.
#[derive(Debug, Clone)]
pub enum Change {
    /// `set`: key path → value, through the validated overlay.
    Set(serde_json::Map<String, Value>),
    /// `reference`: "the lane is clear now" — the camera's next analysed frame
    /// becomes the clear-lane reference of `lane` (of every lane using the
    /// obstruction cue when `None`).
    Reference { camera: String, lane: Option<String> },
}

/// Changes (`set`, `reference`, from the centres and the technician's page
/// together) queued for the manager at once; beyond it a change is refused
/// as busy rather than queued without bound.
pub(crate) const REQUEST_QUEUE: usize = 8;
