//! What changed, as the console's live streams hear it: the ingest writer
//! says which alerts it stored (after the commit), the console which ones
//! a person moved on. A plain broadcast of small values: a slow stream
//! that falls behind is told to reload, never blocks the writer.

use tokio::sync::broadcast;

/// How many changes a stream may fall behind before it is told to reload.
const BACKLOG: usize = 1024;

/// One alert changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// `alert` (from an agent) or `step` (from a person).
    pub what: &'static str,
    pub id: String,
    pub district: String,
    pub street: String,
    pub community: String,
}

pub type Live = broadcast::Sender<Change>;

pub fn channel() -> Live {
    broadcast::channel(BACKLOG).0
}
