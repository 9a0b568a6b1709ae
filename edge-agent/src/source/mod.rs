//! Stage 1 of the data path: camera streams in, decoded RGB frames out.
//!
//! - [`slot`]: the latest-frame slot between decode and analysis. Decode
//!   never waits: a frame analysis has not taken yet is replaced and counted
//!   as dropped.
//! - [`pipeline`]: builds one GStreamer pipeline per camera (RTSP, file or
//!   test pattern), rate-limited and scaled before colour conversion.
//! - [`supervisor`]: runs a camera's pipeline forever, reconnecting with
//!   capped exponential backoff and reporting its status.

pub mod pipeline;
pub(crate) mod probe;
pub(crate) mod slot;
pub(crate) mod supervisor;

pub use slot::{Frame, FrameSlot};
pub(crate) use supervisor::{CameraState, CameraStatus};

/// Errors building or running a camera pipeline. Texts are already redacted.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SourceError {
    #[error("GStreamer init failed: {0}")]
    Init(String),
    #[error("missing GStreamer element {0:?} (install the GStreamer plugins: deploy/setup.sh)")]
    MissingElement(&'static str),
    #[error("pipeline: {0}")]
    Build(String),
    #[error("{element}: {message}")]
    Stream { element: String, message: String },
    #[error("stream ended")]
    Eos,
    #[error("no frame for {0:.0} s (stalled)")]
    Stalled(f64),
}

/// Initialises GStreamer once; safe to call many times.
pub fn init() -> Result<(), SourceError> {
    gstreamer::init().map_err(|e| SourceError::Init(e.to_string()))
}
