//! A small pool of identical `ort` sessions for one model.
//!
//! `Session::run` needs `&mut`, so a session serves one frame at a time. One
//! session with every core as an intra-op thread makes those threads wait
//! for each other at every operator, and takes the cores the cameras'
//! decoders need; several single-threaded sessions let each camera's
//! analysis thread run its frame on one core, with no such waits, while
//! other cameras run theirs or decode on the others. The throughput and
//! streams benches measured both (benches/README.md).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, TryLockError};

pub struct Pool<S> {
    slots: Vec<Mutex<S>>,
    next: AtomicUsize,
}

impl<S> Pool<S> {
    /// A pool of the given sessions (at least one).
    pub fn new(sessions: Vec<S>) -> Pool<S> {
        assert!(!sessions.is_empty(), "a session pool needs a session");
        Pool { slots: sessions.into_iter().map(Mutex::new).collect(), next: AtomicUsize::new(0) }
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// A free session, else waits for one. Callers start at different
    /// slots, so waiting spreads over the pool.
    pub fn get(&self) -> MutexGuard<'_, S> {
        let n = self.slots.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        for i in 0..n {
            match self.slots[(start + i) % n].try_lock() {
                Ok(guard) => return guard,
                Err(TryLockError::Poisoned(p)) => return p.into_inner(),
                Err(TryLockError::WouldBlock) => {}
            }
        }
        self.slots[start].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The first session (for load-time checks of inputs and outputs).
    pub fn first(&self) -> MutexGuard<'_, S> {
        self.slots[0].lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_busy_session_is_passed_over_for_a_free_one() {
        let pool = Pool::new(vec![0u32, 1, 2]);
        let a = pool.get();
        let b = pool.get();
        let c = pool.get();
        let mut got = vec![*a, *b, *c];
        got.sort();
        assert_eq!(got, vec![0, 1, 2], "three callers, three different sessions");
        drop(b);
        let d = pool.get();
        assert_eq!(*d, 1, "the one free session");
    }
}
