//! A small pool of identical `ort` sessions for one model.
//!
//! `Session::run` needs `&mut`, so a session serves one frame at a time. One
//! session with every core as an intra-op thread makes those threads wait
//! for each other at every operator, and takes the cores the cameras'
//! decoders need; several single-threaded sessions let each camera's
//! analysis thread run its frame on one core, with no such waits, while
//! other cameras run theirs or decode on the others. The throughput and
//! streams benches measured both (benches/README.md).

use std::ops::{Deref, DerefMut};
use std::sync::{Condvar, Mutex};

pub(crate) struct Pool<S> {
    /// The sessions not in use.
    free: Mutex<Vec<S>>,
    returned: Condvar,
}

/// A session taken from the pool; it goes back when dropped.
pub(crate) struct Lease<'a, S> {
    pool: &'a Pool<S>,
    item: Option<S>,
}

impl<S> Pool<S> {
    /// A pool of the given sessions (at least one).
    pub(crate) fn new(sessions: Vec<S>) -> Pool<S> {
        assert!(!sessions.is_empty(), "a session pool needs a session");
        Pool { free: Mutex::new(sessions), returned: Condvar::new() }
    }

    /// A free session, else the first one to come back.
    pub(crate) fn get(&self) -> Lease<'_, S> {
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(item) = free.pop() {
                return Lease { pool: self, item: Some(item) };
            }
            free = self.returned.wait(free).unwrap_or_else(|p| p.into_inner());
        }
    }
}

impl<S> Deref for Lease<'_, S> {
    type Target = S;
    fn deref(&self) -> &S {
        self.item.as_ref().expect("a lease holds its session until dropped")
    }
}

impl<S> DerefMut for Lease<'_, S> {
    fn deref_mut(&mut self) -> &mut S {
        self.item.as_mut().expect("a lease holds its session until dropped")
    }
}

impl<S> Drop for Lease<'_, S> {
    fn drop(&mut self) {
        if let Some(item) = self.item.take() {
            self.pool.free.lock().unwrap_or_else(|p| p.into_inner()).push(item);
            self.pool.returned.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_waiting_caller_gets_the_first_session_back() {
        let pool = std::sync::Arc::new(Pool::new(vec![0u32, 1]));
        let a = pool.get();
        let b = pool.get();
        let (tx, rx) = std::sync::mpsc::channel();
        let p2 = pool.clone();
        let waiter = std::thread::spawn(move || tx.send(*p2.get()).unwrap());
        assert!(rx.recv_timeout(std::time::Duration::from_millis(100)).is_err(), "both sessions are busy");
        let back = *b;
        drop(b);
        assert_eq!(rx.recv().unwrap(), back, "the waiter got the one returned, not a fixed one");
        waiter.join().unwrap();
        drop(a);
        assert_eq!(pool.free.lock().unwrap().len(), 2, "both sessions are back in the pool");
    }

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
