//! The publisher's delivery bookkeeping, without a broker: the spool
//! cursor and packet tags when the client's queue is full, and which rows
//! are set aside after repeated connection losses.

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use super::connection::{implicates_outgoing, incoming_too_large};
use super::packets::{queue_message, queue_rows, Acked, Packets, Suspects, Tag, WINDOW};
use super::SET_ASIDE_AFTER;
use crate::alert::spool::Entry;

fn entry(id: i64) -> Entry {
    Entry {
        id,
        seq: id as u64,
        camera: "cam".into(),
        phase: "start".into(),
        event_id: format!("e{id}"),
        topic: "events/fire".into(),
        payload: format!("p{id}").into_bytes(),
        snapshot: Some(("events/fire/e/snapshot".into(), format!("s{id}").into_bytes())),
        created_ms: 0,
    }
}

/// A client queue with room for `room` more packets, recording what it took.
struct FakeClient {
    room: usize,
    sent: Vec<String>,
}

impl FakeClient {
    fn send(&mut self, _topic: &str, payload: Vec<u8>) -> bool {
        if self.room == 0 {
            return false;
        }
        self.room -= 1;
        self.sent.push(String::from_utf8(payload).unwrap());
        true
    }
}

#[test]
fn a_row_whose_parts_are_not_all_queued_is_sent_whole_next_time_in_order() {
    let spool: Vec<Entry> = (1..=3).map(entry).collect();
    let mut client = FakeClient { room: 3, sent: Vec::new() };
    let (mut cursor, mut tags, mut queued) = (0i64, VecDeque::new(), Vec::new());
    // Room for row 1 and row 2's snapshot only.
    let all = queue_rows(
        spool.clone(),
        &mut cursor,
        &mut tags,
        &mut |t, p| client.send(t, p),
        |_| false,
        |e, parts| queued.push((e.id, parts)),
    );
    assert!(!all);
    assert_eq!(cursor, 1, "the cursor stays before the half-queued row");
    assert_eq!(queued, [(1, 2)]);
    assert!(
        matches!(tags.iter().collect::<Vec<_>>()[..], [Tag::Spooled(1), Tag::Spooled(1), Tag::Other]),
        "the orphan snapshot's PUBACK cannot count for row 2: {tags:?}"
    );
    // The queue drains; the next pump reads after the cursor.
    client.room = 100;
    let next: Vec<Entry> = spool.into_iter().filter(|e| e.id > cursor).collect();
    assert!(queue_rows(
        next,
        &mut cursor,
        &mut tags,
        &mut |t, p| client.send(t, p),
        |_| false,
        |e, parts| { queued.push((e.id, parts)) }
    ));
    assert_eq!(cursor, 3);
    assert_eq!(queued, [(1, 2), (2, 2), (3, 2)]);
    let payloads: Vec<&String> = client.sent.iter().filter(|p| p.starts_with('p')).collect();
    assert_eq!(payloads, ["p1", "p2", "p3"], "every event once, in order");
    // Row 2's snapshot went twice (a harmless duplicate), and before its event.
    assert_eq!(client.sent, ["s1", "p1", "s2", "s2", "p2", "s3", "p3"]);
}

#[test]
fn rows_being_deleted_are_passed_over() {
    let mut client = FakeClient { room: 100, sent: Vec::new() };
    let (mut cursor, mut tags) = (0i64, VecDeque::new());
    let rows = (1..=3).map(entry).collect();
    assert!(queue_rows(rows, &mut cursor, &mut tags, &mut |t, p| client.send(t, p), |id| id == 2, |_, _| {}));
    assert_eq!((cursor, client.sent.len()), (3, 4));
}

#[test]
fn a_row_the_connection_keeps_dropping_on_is_set_aside_after_n_tries_alone() {
    let mut s = Suspects::default();
    assert_eq!(s.window(), WINDOW);
    // A full window is lost: all suspects, nobody struck yet.
    assert!(s.lost(&[3, 4, 5]).is_empty());
    assert_eq!(s.window(), 1, "suspects go one at a time");
    // Row 3 alone is acknowledged: cleared.
    s.acked(3);
    let mut inflight = HashMap::new();
    // Row 4 alone: the connection drops with it every time.
    for attempt in 1..SET_ASIDE_AFTER {
        assert!(s.lost(&[4]).is_empty(), "attempt {attempt}");
    }
    assert_eq!(s.lost(&[4]), [4], "set aside after {SET_ASIDE_AFTER} losses alone in flight");
    // Row 5 is acknowledged; a later row is never struck in a full window.
    s.acked(5);
    assert_eq!(s.window(), WINDOW);
    for _ in 0..10 {
        assert!(s.lost(&[6, 7]).is_empty());
        s.passed(6, &inflight);
    }
    // Rows that left the spool otherwise (dropped to make room) stop
    // holding the window at one.
    inflight.insert(7, (1u8, Instant::now()));
    s.passed(i64::MAX, &inflight);
    assert_eq!(s.window(), 1, "row 7 is still in flight");
    inflight.clear();
    s.passed(i64::MAX, &inflight);
    assert_eq!(s.window(), WINDOW);
}

#[test]
fn only_a_drop_that_may_be_our_message_strikes_the_row_in_flight() {
    use rumqttc::{ConnectionError as C, StateError as S};
    let io = || std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
    assert!(implicates_outgoing(&C::Io(io())));
    assert!(implicates_outgoing(&C::MqttState(S::Io(io()))));
    assert!(implicates_outgoing(&C::MqttState(S::Deserialization(rumqttc::Error::OutgoingPacketTooLarge {
        pkt_size: 2,
        max: 1
    }))));
    // A command over the incoming limit (the broker resends a retained one
    // after every SUBACK) must never get good alerts set aside.
    let big = C::MqttState(S::Deserialization(rumqttc::Error::PayloadSizeLimitExceeded(20 << 20)));
    assert!(!implicates_outgoing(&big) && incoming_too_large(&big));
    for other in [C::NetworkTimeout, C::MqttState(S::AwaitPingResp), C::FlushTimeout] {
        assert!(!implicates_outgoing(&other) && !incoming_too_large(&other), "{other}");
    }
}

/// Queues spooled row `id` (snapshot and event: two packets) the way the
/// publisher does, and records it in flight.
fn queue_row(p: &mut Packets, id: i64) {
    let mut send = |_: &str, _: Vec<u8>| true;
    let parts = queue_message(&mut send, &mut p.tags, Tag::Spooled(id), Some(("s", vec![1])), "e", vec![2]).unwrap();
    p.inflight.insert(id, (parts, Instant::now()));
}

/// A row is done only when every one of its packets is acknowledged, in
/// whatever order the PUBACKs come.
#[test]
fn a_row_is_acked_by_its_last_packet_whatever_the_order() {
    let mut p = Packets::default();
    queue_row(&mut p, 7);
    queue_row(&mut p, 8);
    for pkid in [1, 2, 3, 4] {
        p.sent(pkid);
    }
    assert_eq!(p.puback(4), Acked::Nothing, "row 8's event before its snapshot");
    assert_eq!(p.puback(1), Acked::Nothing, "row 7's snapshot");
    assert_eq!(p.puback(3), Acked::Row(8));
    assert_eq!(p.puback(2), Acked::Row(7));
    assert!(p.inflight.is_empty());
    assert_eq!(p.puback(2), Acked::Nothing, "a repeated PUBACK acks nothing twice");
}

/// QoS 0 packets take no tag; statuses and replies, and packet ids this
/// connection never sent, complete nothing.
#[test]
fn only_tagged_packets_of_messages_count() {
    let mut p = Packets::default();
    p.tags.push_back(Tag::Other);
    queue_row(&mut p, 3);
    p.sent(0);
    p.sent(10);
    p.sent(11);
    p.sent(12);
    assert_eq!(p.puback(10), Acked::Nothing, "a status");
    assert_eq!(p.puback(99), Acked::Nothing, "never sent");
    assert_eq!(p.puback(11), Acked::Nothing);
    assert_eq!(p.puback(12), Acked::Row(3), "pkid 0 did not shift the tags");
    p.sent(13);
    assert_eq!(p.puback(13), Acked::Nothing, "a publish with no tag left");
}

/// A new (clean) session forgets the last one: its late PUBACKs ack
/// nothing, and the drain starts again from the oldest row.
#[test]
fn a_reconnect_forgets_what_was_in_flight() {
    let mut p = Packets::default();
    queue_row(&mut p, 5);
    p.cursor = 5;
    p.sent(1);
    p.sent(2);
    p.reset();
    assert_eq!((p.cursor, p.inflight.len(), p.tags.len()), (0, 0, 0));
    assert_eq!(p.puback(1), Acked::Nothing);
    assert_eq!(p.puback(2), Acked::Nothing);
}

/// A message waiting in memory (the spool refused it) completes on its
/// last packet too, by seq.
#[test]
fn a_message_from_memory_is_acked_by_seq() {
    let mut p = Packets::default();
    let mut send = |_: &str, _: Vec<u8>| true;
    let parts = queue_message(&mut send, &mut p.tags, Tag::Unspooled(42), None, "e", vec![1]).unwrap();
    p.inflight_unspooled.insert(42, parts);
    p.sent(5);
    assert_eq!(p.puback(5), Acked::Unspooled(42));
    assert!(p.inflight_unspooled.is_empty());
}
