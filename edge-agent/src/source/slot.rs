//! The latest-frame slot: a one-frame mailbox between a camera's decoder and
//! its analysis thread.
//!
//! The decoder's appsink callback must never block on analysis (that would
//! back-pressure into the RTSP jitter buffer and lose the stream), and a
//! queue would only grow and add latency. So the slot holds at most one
//! frame: a newer frame replaces an unread one, which is counted as dropped.
//! Pixel buffers circulate between the two sides (`spare`), so steady-state
//! operation allocates nothing.

use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// One decoded frame, packed RGB (no row padding).
#[derive(Debug)]
pub struct Frame {
    pub data: Vec<u8>,
    pub width: u32,
    pub height: u32,
    /// Arrival at the appsink, monotonic: the rules' clock.
    pub captured: Instant,
    /// Arrival at the appsink, wall clock: what events report.
    pub wall: SystemTime,
    /// Stream position, when the source gives one.
    pub pts: Option<Duration>,
}

#[derive(Default)]
struct State {
    latest: Option<Frame>,
    spare: Vec<Vec<u8>>,
    closed: bool,
    decoded: u64,
    dropped: u64,
    last_frame: Option<(Instant, SystemTime)>,
}

/// Counters the supervisor and metrics read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct SlotStats {
    pub(crate) decoded: u64,
    pub(crate) dropped: u64,
}

#[derive(Default)]
pub struct FrameSlot {
    state: Mutex<State>,
    ready: Condvar,
    /// Times the copy from the decoder into the slot (`decode_to_slot`).
    timer: Option<prometheus::Histogram>,
}

impl FrameSlot {
    pub fn new() -> FrameSlot {
        FrameSlot::default()
    }

    /// A slot that reports each frame's copy time to `timer`.
    pub(crate) fn with_timer(timer: prometheus::Histogram) -> FrameSlot {
        FrameSlot { timer: Some(timer), ..FrameSlot::default() }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stores a new frame. `fill` writes the pixels into a recycled buffer
    /// and returns the frame's (width, height), or `None` to discard it.
    /// Returns true when an unread frame was dropped to make room.
    pub(crate) fn put(&self, pts: Option<Duration>, fill: impl FnOnce(&mut Vec<u8>) -> Option<(u32, u32)>) -> bool {
        let (mut buf, dropped) = {
            let mut s = self.lock();
            match s.latest.take() {
                Some(old) => {
                    s.dropped += 1;
                    (old.data, true)
                }
                None => (s.spare.pop().unwrap_or_default(), false),
            }
        };
        // Copy outside the lock: analysis may be taking the previous frame.
        let t0 = Instant::now();
        let filled = fill(&mut buf);
        if let Some(t) = &self.timer {
            t.observe(t0.elapsed().as_secs_f64());
        }
        let mut s = self.lock();
        match filled {
            Some((width, height)) => {
                let (captured, wall) = (Instant::now(), SystemTime::now());
                s.decoded += 1;
                s.last_frame = Some((captured, wall));
                s.latest = Some(Frame { data: buf, width, height, captured, wall, pts });
                drop(s);
                self.ready.notify_one();
            }
            None => s.spare.push(buf),
        }
        dropped
    }

    /// Waits up to `timeout` for a frame. `None` on timeout or when closed.
    pub fn take(&self, timeout: Duration) -> Option<Frame> {
        let mut s = self.lock();
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(f) = s.latest.take() {
                return Some(f);
            }
            if s.closed {
                return None;
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            s = self.ready.wait_timeout(s, deadline - now).unwrap_or_else(|p| p.into_inner()).0;
        }
    }

    /// Returns a frame's buffer for reuse.
    pub(crate) fn recycle(&self, buf: Vec<u8>) {
        let mut s = self.lock();
        if s.spare.len() < 2 {
            s.spare.push(buf);
        }
    }

    /// Wakes the reader for good (shutdown).
    pub(crate) fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_all();
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.lock().closed
    }

    pub(crate) fn stats(&self) -> SlotStats {
        let s = self.lock();
        SlotStats { decoded: s.decoded, dropped: s.dropped }
    }

    /// When the last frame arrived (monotonic, wall).
    pub(crate) fn last_frame(&self) -> Option<(Instant, SystemTime)> {
        self.lock().last_frame
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn fill(v: u8) -> impl FnOnce(&mut Vec<u8>) -> Option<(u32, u32)> {
        move |b: &mut Vec<u8>| {
            b.clear();
            b.extend_from_slice(&[v; 3]);
            Some((1, 1))
        }
    }

    #[test]
    fn newer_frame_replaces_unread_and_counts_drop() {
        let slot = FrameSlot::new();
        assert!(!slot.put(None, fill(1)));
        assert!(slot.put(None, fill(2)));
        let f = slot.take(Duration::ZERO).unwrap();
        assert_eq!(f.data, vec![2, 2, 2]);
        assert_eq!(slot.stats(), SlotStats { decoded: 2, dropped: 1 });
        assert!(slot.take(Duration::ZERO).is_none());
    }

    #[test]
    fn buffers_are_recycled() {
        let slot = FrameSlot::new();
        slot.put(None, fill(1));
        let f = slot.take(Duration::ZERO).unwrap();
        let ptr = f.data.as_ptr();
        slot.recycle(f.data);
        slot.put(None, fill(3));
        assert_eq!(slot.take(Duration::ZERO).unwrap().data.as_ptr(), ptr);
    }

    #[test]
    fn reader_wakes_on_put_and_on_close() {
        let slot = Arc::new(FrameSlot::new());
        let s2 = slot.clone();
        let reader = std::thread::spawn(move || s2.take(Duration::from_secs(30)).map(|f| f.data));
        slot.put(None, fill(7));
        assert_eq!(reader.join().unwrap(), Some(vec![7, 7, 7]));
        let s3 = slot.clone();
        let reader = std::thread::spawn(move || s3.take(Duration::from_secs(30)).is_none());
        slot.close();
        assert!(reader.join().unwrap());
    }

    #[test]
    fn discarded_fill_is_not_a_frame() {
        let slot = FrameSlot::new();
        slot.put(None, |_| None);
        assert_eq!(slot.stats().decoded, 0);
        assert!(slot.take(Duration::ZERO).is_none());
    }
}
