//! Unit tests of `alert::spool`.

use super::*;
use crate::alert::topics_of;
use crate::vocab::Severity;

fn topics() -> Topics {
    topics_of(&crate::config::minimal())
}

fn event(id: &str, phase: Phase) -> Event {
    crate::alert::event::sample(id, phase, Severity::Warning)
}

#[test]
fn seq_survives_reopening_and_messages_drain_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state/spool.sqlite");
    let t = topics();
    {
        let spool = Spool::open(&path, 1 << 20).unwrap();
        for (i, phase) in [Phase::Start, Phase::Update, Phase::End].into_iter().enumerate() {
            let mut e = event("e1", phase);
            let pushed = spool.push(&mut e, Some(&[7; 100]), &t).unwrap();
            let _ = pushed;
            assert_eq!(e.seq, i as u64 + 1);
        }
        let first = spool.after(0, 10).unwrap();
        spool.remove(first[0].id).unwrap();
    }
    let spool = Spool::open(&path, 1 << 20).unwrap();
    assert_eq!(spool.last_seq().unwrap(), 3, "seq is on disk");
    let left = spool.after(0, 10).unwrap();
    assert_eq!(left.iter().map(|e| e.seq).collect::<Vec<_>>(), [2, 3], "unacked messages stay, in order");
    assert_eq!(
        left[0].snapshot.as_ref().map(|(topic, jpeg)| (topic.ends_with("/snapshot"), jpeg.len())),
        Some((true, 100))
    );
    let payload: serde_json::Value = serde_json::from_slice(&left[1].payload).unwrap();
    assert_eq!((payload["seq"].as_u64(), payload["type"].as_str()), (Some(3), Some("end")));
    let mut e = event("e2", Phase::Start);
    spool.push(&mut e, None, &t).unwrap();
    assert_eq!(e.seq, 4, "never repeats after a restart");
    assert_eq!(spool.depth().unwrap().messages, 3);
}

#[test]
fn a_full_spool_drops_oldest_updates_then_snapshots_never_starts_or_ends() {
    let dir = tempfile::tempdir().unwrap();
    let t = topics();
    // Room for about four 1000-byte snapshots.
    let spool = Spool::open(&dir.path().join("s.sqlite"), 6000).unwrap();
    let push = |id: &str, phase| spool.push(&mut event(id, phase), Some(&[0; 1000]), &t).unwrap();
    push("a", Phase::Start);
    push("a", Phase::Update);
    push("a", Phase::Update);
    push("a", Phase::End);
    let mut dropped = Vec::new();
    for _ in 0..3 {
        dropped.extend(push("b", Phase::Start).dropped);
    }
    assert!(matches!(dropped[0], Dropped::Update { seq: 2, .. }), "{dropped:?}");
    assert!(matches!(dropped[1], Dropped::Update { seq: 3, .. }), "{dropped:?}");
    assert!(dropped[2..].iter().all(|d| matches!(d, Dropped::Snapshot { .. })), "{dropped:?}");
    let phases: Vec<String> = spool.after(0, 100).unwrap().into_iter().map(|e| e.phase).collect();
    assert_eq!(phases, ["start", "end", "start", "start", "start"], "starts and ends are all kept");
    assert!(spool.depth().unwrap().bytes <= 6000);
}

/// Makes every insert into the outbox fail for real, as a full disk
/// does (the statement aborts and the transaction rolls back).
pub(crate) fn fail_inserts(spool: &Spool, fail: bool) {
    let sql = if fail {
        "CREATE TRIGGER fail BEFORE INSERT ON outbox BEGIN SELECT RAISE(FAIL, 'disk full'); END;"
    } else {
        "DROP TRIGGER fail"
    };
    spool.writer().execute_batch(sql).unwrap();
}

#[test]
fn a_failed_store_never_makes_a_seq_be_used_twice() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.sqlite");
    let t = topics();
    let mut seqs = Vec::new();
    {
        let spool = Spool::open(&path, 1 << 20).unwrap();
        let mut push = |phase, ok: bool| {
            let mut e = event("e", phase);
            let r = spool.push(&mut e, Some(&[1; 10]), &t);
            assert_eq!(r.is_ok(), ok, "{r:?}");
            seqs.push(e.seq);
        };
        push(Phase::Start, true);
        fail_inserts(&spool, true);
        push(Phase::Update, false);
        push(Phase::Update, false);
        push(Phase::End, false);
        assert!(!spool.healthy(), "the failed write is what readiness sees");
        fail_inserts(&spool, false);
        push(Phase::Start, true);
        assert!(spool.healthy());
        assert_eq!(spool.after(0, 10).unwrap().iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 5]);
    }
    // The counter persisted with the last store; a restart goes on.
    let spool = Spool::open(&path, 1 << 20).unwrap();
    let mut e = event("f", Phase::Start);
    spool.push(&mut e, None, &t).unwrap();
    seqs.push(e.seq);
    assert_eq!(seqs, [1, 2, 3, 4, 5, 6], "strictly increasing, unique, across failure, recovery and restart");
}

#[test]
fn a_corrupt_file_is_set_aside_and_an_empty_spool_starts() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spool.sqlite");
    let garbage: Vec<u8> = (0..8192u32).map(|i| (i * 7919 % 251) as u8).collect();
    std::fs::write(&path, &garbage).unwrap();
    let spool = Spool::open(&path, 1 << 20).expect("a corrupt spool never keeps the agent down");
    let aside = spool.recovered().expect("reported").to_path_buf();
    assert!(aside.file_name().unwrap().to_string_lossy().starts_with("spool.sqlite.corrupt-"), "{aside:?}");
    assert_eq!(std::fs::read(&aside).unwrap(), garbage, "the broken file is kept for a post-mortem");
    let mut e = event("e", Phase::Start);
    spool.push(&mut e, None, &topics()).unwrap();
    assert_eq!(e.seq, 1, "an empty, working spool");
    assert_eq!(spool.depth().unwrap().messages, 1);
    // The metric and the outbox see it.
    let metrics = std::sync::Arc::new(crate::metrics::Metrics::new());
    let config = crate::config::Config::parse(
        "agent_id = \"a\"\nsite = { district = \"d\", street = \"s\", community = \"c\" }\nbroker = { host = \"h\" }\ndetector = { path = \"/m.onnx\", format = \"nanodet\", input_size = 416 }\n[[cameras]]\nid = \"cam\"\nname = \"Cam\"\nurl = \"rtsp://h/s\"\n",
        Path::new("t.toml"),
    )
    .unwrap();
    let ledger = crate::alert::Ledger::new(&config.alerts, &config.site);
    let _outbox = crate::alert::Outbox::new(spool, ledger, topics(), metrics.clone());
    assert_eq!(metrics.spool_corrupt.get(), 1);
    // A healthy file is opened as it is.
    let spool = Spool::open(&path, 1 << 20).unwrap();
    assert!(spool.recovered().is_none());
    assert_eq!(spool.depth().unwrap().messages, 1);
}

#[test]
fn a_set_aside_row_leaves_the_drain_and_is_kept_for_the_operator() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(&dir.path().join("s.sqlite"), 1 << 20).unwrap();
    let t = topics();
    for phase in [Phase::Start, Phase::End] {
        spool.push(&mut event("e", phase), Some(&[9; 50]), &t).unwrap();
    }
    let rows = spool.after(0, 10).unwrap();
    let got = spool.set_aside(rows[0].id, "refused").unwrap();
    assert_eq!(got.map(|(seq, id, phase, _)| (seq, id, phase)), Some((1, "e".into(), "start".into())));
    assert_eq!(spool.after(0, 10).unwrap().iter().map(|e| e.seq).collect::<Vec<_>>(), [2]);
    assert_eq!(spool.set_aside_count().unwrap(), 1);
    assert_eq!(spool.set_aside(rows[0].id, "again").unwrap(), None, "already gone");
    for _ in 0..SET_ASIDE_KEEP + 5 {
        spool.push(&mut event("x", Phase::Update), None, &t).unwrap();
        let id = spool.after(0, 100).unwrap().last().unwrap().id;
        spool.set_aside(id, "refused").unwrap();
    }
    assert_eq!(
        spool.set_aside_count().unwrap() as i64,
        SET_ASIDE_KEEP + 1,
        "updates bounded; the start set aside first is still kept"
    );
    // Seqs of set-aside rows are never handed out again after a restart.
    drop(spool);
    let spool = Spool::open(&dir.path().join("s.sqlite"), 1 << 20).unwrap();
    assert_eq!(spool.last_seq().unwrap(), 2 + SET_ASIDE_KEEP as u64 + 5);
}
