//! The packet bookkeeping of one MQTT connection, apart from the client so
//! that it can be driven by a test: which submitted publish each packet id
//! is ([`Tag`]), how many packets of each message still wait for their
//! PUBACK ([`Packets`]), how spooled rows are queued in order
//! ([`queue_rows`]), and which rows are suspected of dropping the
//! connection ([`Suspects`]).
//!
//! A PUBACK names only a packet id, which rumqttc assigns when it sends:
//! every QoS 1 publish is tagged, in submission order, and the tag is bound
//! to the packet id when the event loop reports `Outgoing::Publish(pkid)`
//! (rumqttc sends requests in submission order).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Instant;

use super::SET_ASIDE_AFTER;
use crate::alert::spool::Entry;

/// Spooled messages in flight at once. Small: a reconnect resends them.
pub(super) const WINDOW: usize = 16;
/// What a submitted QoS 1 publish is, so its PUBACK can be matched.
#[derive(Debug, Clone, Copy)]
pub(super) enum Tag {
    /// One packet of a spooled message (row id).
    Spooled(i64),
    /// One packet of a message waiting in memory (its seq).
    Unspooled(u64),
    Other,
}

/// One connection's messages in flight, by packet.
#[derive(Debug, Default)]
pub(super) struct Packets {
    /// Tags of submitted QoS 1 publishes not yet given a packet id.
    pub(super) tags: VecDeque<Tag>,
    /// Packet id → tag, until the PUBACK.
    pkids: HashMap<u16, Tag>,
    /// Spooled row id → its packets not yet acknowledged (and when it went).
    pub(super) inflight: HashMap<i64, (u8, Instant)>,
    /// Highest spooled row fully queued on this connection.
    pub(super) cursor: i64,
    /// Fallback messages (by seq) → packets not yet acknowledged.
    pub(super) inflight_unspooled: HashMap<u64, u8>,
    /// Highest fallback seq queued on this connection.
    pub(super) unspooled_cursor: u64,
}

/// What a PUBACK completed.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Acked {
    /// Every packet of spooled row `id`: delete it.
    Row(i64),
    /// Every packet of the message waiting in memory with this seq.
    Unspooled(u64),
    /// A part of a message, a status or reply, or an unknown packet id.
    Nothing,
}

impl Packets {
    /// A new connection with a clean session: nothing of the last one is
    /// in flight, and the drain starts again from the oldest row.
    pub(super) fn reset(&mut self) {
        *self = Packets::default();
    }

    /// The event loop sent the oldest tagged publish as packet `pkid`.
    pub(super) fn sent(&mut self, pkid: u16) {
        if pkid == 0 {
            return; // QoS 0: nothing to match.
        }
        match self.tags.pop_front() {
            Some(tag) => {
                self.pkids.insert(pkid, tag);
            }
            None => tracing::debug!(pkid, "publish with no tag"),
        }
    }

    /// The broker acknowledged packet `pkid`.
    pub(super) fn puback(&mut self, pkid: u16) -> Acked {
        match self.pkids.remove(&pkid) {
            Some(Tag::Spooled(id)) => {
                let Some((left, _)) = self.inflight.get_mut(&id) else { return Acked::Nothing };
                *left -= 1;
                if *left > 0 {
                    return Acked::Nothing;
                }
                self.inflight.remove(&id);
                Acked::Row(id)
            }
            Some(Tag::Unspooled(seq)) => {
                let Some(left) = self.inflight_unspooled.get_mut(&seq) else { return Acked::Nothing };
                *left -= 1;
                if *left > 0 {
                    return Acked::Nothing;
                }
                self.inflight_unspooled.remove(&seq);
                Acked::Unspooled(seq)
            }
            Some(Tag::Other) | None => Acked::Nothing,
        }
    }
}

/// Queues one message (its snapshot first, if any) through `send` (the
/// client's `try_publish`), tagging each packet. Returns its packet count,
/// or `None` when a part could not be queued: the message is then not
/// queued at all as far as the bookkeeping goes (a snapshot already queued
/// is re-tagged `Other`, so its PUBACK cannot count for the row), and it
/// is sent whole, again, before anything after it.
pub(super) fn queue_message(
    send: &mut impl FnMut(&str, Vec<u8>) -> bool,
    tags: &mut VecDeque<Tag>,
    tag: Tag,
    snapshot: Option<(&str, Vec<u8>)>,
    topic: &str,
    payload: Vec<u8>,
) -> Option<u8> {
    let mut parts = 0u8;
    if let Some((t, jpeg)) = snapshot {
        if !send(t, jpeg) {
            return None;
        }
        tags.push_back(tag);
        parts += 1;
    }
    if !send(topic, payload) {
        if parts > 0 {
            if let Some(last) = tags.back_mut() {
                *last = Tag::Other;
            }
        }
        return None;
    }
    tags.push_back(tag);
    Some(parts + 1)
}

/// Queues spooled rows in order, moving `cursor` past a row only once
/// every part of it is queued; `skip` rows (acknowledged, being deleted)
/// are passed over. Returns false when a row could not be queued (the
/// client's queue is full): it is the first one sent next time.
pub(super) fn queue_rows(
    entries: Vec<Entry>,
    cursor: &mut i64,
    tags: &mut VecDeque<Tag>,
    send: &mut impl FnMut(&str, Vec<u8>) -> bool,
    skip: impl Fn(i64) -> bool,
    mut queued: impl FnMut(&Entry, u8),
) -> bool {
    for mut entry in entries {
        if skip(entry.id) {
            *cursor = entry.id;
            continue;
        }
        // The bytes go to the client; `queued` reads only the row's other
        // fields, so they are moved, not copied (a snapshot is up to 960 KB).
        let (snapshot_topic, jpeg) = entry.snapshot.take().unzip();
        let snapshot = snapshot_topic.as_deref().zip(jpeg);
        let payload = std::mem::take(&mut entry.payload);
        match queue_message(send, tags, Tag::Spooled(entry.id), snapshot, &entry.topic, payload) {
            Some(parts) => {
                *cursor = entry.id;
                queued(&entry, parts);
            }
            None => return false,
        }
    }
    true
}

/// Spooled rows suspected of making the broker (or the client) drop the
/// connection: a message over a size limit is refused with a disconnect,
/// and would otherwise be sent first again after every reconnect, blocking
/// everything behind it.
///
/// Every row in flight when a connection drops becomes a suspect. While
/// there are suspects, rows are sent one at a time, so a drop can be
/// blamed on the one row in flight: that row gets a strike. A suspect
/// leaves on its PUBACK; at [`SET_ASIDE_AFTER`] strikes it is set aside. A
/// flaky network therefore strikes a good row only if it drops the
/// connection that many times while that row alone is in flight.
#[derive(Debug, Default)]
pub(super) struct Suspects {
    strikes: BTreeMap<i64, u32>,
}

impl Suspects {
    /// How many rows may be in flight.
    pub(super) fn window(&self) -> usize {
        if self.strikes.is_empty() {
            WINDOW
        } else {
            1
        }
    }

    /// The connection dropped with `inflight` rows unacknowledged; returns
    /// the rows to set aside now.
    pub(super) fn lost(&mut self, inflight: &[i64]) -> Vec<i64> {
        let mut out = Vec::new();
        if let [only] = inflight {
            if let Some(n) = self.strikes.get_mut(only) {
                *n += 1;
                if *n >= SET_ASIDE_AFTER {
                    self.strikes.remove(only);
                    out.push(*only);
                }
                return out;
            }
        }
        for id in inflight {
            self.strikes.entry(*id).or_insert(0);
        }
        out
    }

    pub(super) fn acked(&mut self, id: i64) {
        self.strikes.remove(&id);
    }

    /// The drain reached row `next` (or the end, `i64::MAX`): suspects
    /// before it that are not in flight are gone from the spool (acked,
    /// or dropped to make room).
    pub(super) fn passed(&mut self, next: i64, inflight: &HashMap<i64, (u8, Instant)>) {
        self.strikes.retain(|id, _| *id >= next || inflight.contains_key(id));
    }
}
