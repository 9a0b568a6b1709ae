//! The publisher's spool writes — deleting acknowledged rows, setting a
//! suspect aside, storing escalations and resolves — batched and run on a
//! blocking thread, never on the async runtime's workers: each commits
//! with an fsync, which can take a second on an SD card.

use super::{State, SET_ASIDE_AFTER};
use crate::alert::Event;

/// Spool writes the publisher asks for. They run on a blocking thread, one
/// batch at a time, never on the async runtime's workers: each commits with
/// an fsync, which can take a second on an SD card.
pub(super) enum Write {
    /// Delete rows the broker acknowledged (one transaction).
    Remove(Vec<i64>),
    /// Move a row the broker keeps refusing out of the drain.
    SetAside(i64),
    /// A fallback message was acknowledged: forget it.
    UnspooledAcked(u64),
    /// Store what waits in memory, or probe a spool whose write failed.
    Retry,
    /// Escalations to spool.
    Events(Vec<Event>),
}

/// What a [`Write`] batch did, reported back to the publisher task.
pub(super) enum Done {
    Removed(Vec<i64>, Result<(), String>),
    SetAside(i64, Result<Option<(u64, String, String, String)>, String>),
    Other,
}

impl State {
    /// Starts the next batch of spool writes on a blocking thread, unless
    /// one is running.
    pub(super) fn start_writes(&mut self) {
        if self.writing || (self.acked.is_empty() && self.writes.is_empty()) {
            return;
        }
        let mut batch = std::mem::take(&mut self.writes);
        if !self.acked.is_empty() {
            batch.insert(0, Write::Remove(std::mem::take(&mut self.acked)));
        }
        let (outbox, done_tx) = (self.outbox.clone(), self.done_tx.clone());
        self.writing = true;
        tokio::task::spawn_blocking(move || {
            let spool = outbox.spool();
            let done: Vec<Done> = batch
                .into_iter()
                .map(|w| match w {
                    Write::Remove(ids) => {
                        let r = spool.remove_many(&ids).map_err(|e| e.to_string());
                        Done::Removed(ids, r)
                    }
                    Write::SetAside(id) => {
                        let reason = format!("the connection dropped {SET_ASIDE_AFTER} times with it alone in flight");
                        Done::SetAside(id, spool.set_aside(id, &reason).map_err(|e| e.to_string()))
                    }
                    Write::UnspooledAcked(seq) => {
                        outbox.unspooled_acked(seq);
                        Done::Other
                    }
                    Write::Retry => {
                        outbox.retry_spool();
                        Done::Other
                    }
                    Write::Events(events) => {
                        for ev in events {
                            outbox.event(ev, None);
                        }
                        Done::Other
                    }
                })
                .collect();
            let _ = done_tx.send(done);
        });
    }

    /// A write batch finished.
    pub(super) fn on_written(&mut self, done: Vec<Done>) {
        self.writing = false;
        let m = self.outbox.metrics().clone();
        for d in done {
            match d {
                Done::Removed(ids, r) => {
                    if let Err(e) = r {
                        // They will be sent again: a duplicate, never a loss.
                        tracing::error!(error = %e, "cannot delete acknowledged messages from the spool");
                    }
                    for id in ids {
                        self.deleting.remove(&id);
                    }
                }
                Done::SetAside(id, r) => {
                    self.deleting.remove(&id);
                    match r {
                        Ok(Some((seq, event_id, phase, topic))) => {
                            m.spool_set_aside.inc();
                            let kind = topic.rsplit('/').next().unwrap_or("");
                            tracing::error!(
                                event = %event_id, kind, phase = %phase, seq,
                                "set aside a spooled message: the connection dropped {SET_ASIDE_AFTER} times while it alone was in flight (over the broker's size limit, or refused by its ACL?); it stays in the spool's set_aside table"
                            );
                        }
                        Ok(None) => {}
                        Err(e) => tracing::error!(error = %e, row = id, "cannot set aside a spooled message"),
                    }
                }
                Done::Other => {}
            }
        }
    }
}
