//! Cross-camera batching: frames that find every session busy run together.
//!
//! Each camera's analysis thread hands its job (its tensor and its output
//! buffer, moved in, not copied) to [`Batcher::submit`] and waits. Whoever
//! finds a free session becomes the leader: it takes up to `max_batch`
//! waiting jobs, its own or not, runs them as one inference, puts the
//! results where their owners look, and wakes them. No thread is added and
//! no camera waits for a batch to fill: a batch is whatever queued while
//! the sessions were busy, so a quiet box runs every frame alone, at once,
//! and a loaded one amortises each run over several cameras.
//!
//! With `max_batch = 1` this is the session pool (`pool.rs`) with a queue:
//! the first session back takes the oldest frame.
//!
//! Jobs and batches are moved, never allocated per frame: queue and
//! finished lists grow to the number of cameras once and are reused.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};

pub(crate) struct Batcher<S, J> {
    state: Mutex<State<S, J>>,
    changed: Condvar,
    max_batch: usize,
    /// Inferences run, and the jobs they carried: their ratio is the mean
    /// batch.
    runs: AtomicU64,
    jobs: AtomicU64,
}

struct State<S, J> {
    /// Idle sessions, each with its (empty) batch list.
    free: Vec<(S, Vec<(u64, J)>)>,
    /// Jobs waiting for a session, oldest first.
    queue: VecDeque<(u64, J)>,
    /// Jobs run, waiting for their owners to collect them.
    done: Vec<(u64, J)>,
    next_id: u64,
}

impl<S, J> Batcher<S, J> {
    /// A batcher over the given sessions (at least one), running up to
    /// `max_batch` jobs (at least 1) per inference.
    pub(crate) fn new(sessions: Vec<S>, max_batch: usize) -> Batcher<S, J> {
        assert!(!sessions.is_empty(), "a batcher needs a session");
        let max_batch = max_batch.max(1);
        Batcher {
            state: Mutex::new(State {
                free: sessions.into_iter().map(|s| (s, Vec::with_capacity(max_batch))).collect(),
                queue: VecDeque::with_capacity(16),
                done: Vec::with_capacity(16),
                next_id: 0,
            }),
            changed: Condvar::new(),
            max_batch,
            runs: AtomicU64::new(0),
            jobs: AtomicU64::new(0),
        }
    }

    pub(crate) fn max_batch(&self) -> usize {
        self.max_batch
    }

    /// (inferences run, jobs they carried) so far.
    pub(crate) fn stats(&self) -> (u64, u64) {
        (self.runs.load(Ordering::Relaxed), self.jobs.load(Ordering::Relaxed))
    }

    /// Queues `job`, and returns it once `run` has processed it, in a batch
    /// of 1 to `max_batch` jobs on some session; the calling thread may be
    /// the one that runs it (and others' jobs with it). Should `run` panic,
    /// `failed` marks each job of that batch, and the session goes back.
    pub(crate) fn submit(&self, job: J, run: impl Fn(&mut S, &mut [(u64, J)]), failed: impl Fn(&mut J)) -> J {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let id = st.next_id;
        st.next_id += 1;
        st.queue.push_back((id, job));
        loop {
            if let Some(at) = st.done.iter().position(|(i, _)| *i == id) {
                return st.done.swap_remove(at).1;
            }
            // Only a thread whose own frame still waits leads a batch (with
            // its frame in it): a thread whose frame is already in another
            // batch must not get stuck running someone else's. Every queued
            // frame's owner is waiting here and is woken when a session
            // comes back, so no queued frame is left behind.
            let mine = st.queue.iter().position(|(i, _)| *i == id);
            if let (Some(at), false) = (mine, st.free.is_empty()) {
                let (mut session, mut batch) = st.free.pop().expect("checked: a session is free");
                batch.extend(st.queue.remove(at));
                let others = st.queue.len().min(self.max_batch - 1);
                batch.extend(st.queue.drain(..others));
                drop(st);
                self.runs.fetch_add(1, Ordering::Relaxed);
                self.jobs.fetch_add(batch.len() as u64, Ordering::Relaxed);
                let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(&mut session, &mut batch)));
                if ran.is_err() {
                    tracing::error!(frames = batch.len(), "a model run panicked; its frames fail, the session stays");
                    batch.iter_mut().for_each(|(_, j)| failed(j));
                }
                st = self.state.lock().unwrap_or_else(|p| p.into_inner());
                st.done.append(&mut batch);
                st.free.push((session, batch));
                self.changed.notify_all();
                continue;
            }
            st = self.changed.wait(st).unwrap_or_else(|p| p.into_inner());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Barrier};

    #[test]
    fn a_lone_job_runs_alone_at_once() {
        let b: Batcher<u32, u32> = Batcher::new(vec![7], 4);
        let sizes = Mutex::new(Vec::new());
        let out = b.submit(
            5,
            |s, jobs| {
                sizes.lock().unwrap().push(jobs.len());
                for (_, j) in jobs.iter_mut() {
                    *j += *s;
                }
            },
            |_| {},
        );
        assert_eq!(out, 12);
        assert_eq!(*sizes.lock().unwrap(), vec![1]);
    }

    #[test]
    fn jobs_queued_behind_a_busy_session_run_as_one_batch() {
        // One session. Thread 0's job holds it until the other three have
        // queued; they must then run together, each getting its own result.
        let b = Arc::new(Batcher::<(), (usize, usize)>::new(vec![()], 4));
        let queued = Arc::new(Barrier::new(4));
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let first = {
            let (b, queued, sizes) = (b.clone(), queued.clone(), sizes.clone());
            std::thread::spawn(move || {
                b.submit(
                    (0, 0),
                    |_, jobs| {
                        sizes.lock().unwrap().push(jobs.len());
                        if jobs.iter().any(|(_, j)| j.0 == 0) {
                            // The others are about to queue: wait until all
                            // three are in the queue.
                            queued.wait();
                            while b.state.lock().unwrap().queue.len() < 3 {
                                std::thread::yield_now();
                            }
                        }
                        for (_, j) in jobs.iter_mut() {
                            j.1 = j.0 * 10;
                        }
                    },
                    |_| {},
                )
            })
        };
        let others: Vec<_> = (1..4)
            .map(|k| {
                let (b, queued, sizes) = (b.clone(), queued.clone(), sizes.clone());
                std::thread::spawn(move || {
                    queued.wait();
                    b.submit(
                        (k, 0),
                        |_, jobs| {
                            sizes.lock().unwrap().push(jobs.len());
                            for (_, j) in jobs.iter_mut() {
                                j.1 = j.0 * 10;
                            }
                        },
                        |_| {},
                    )
                })
            })
            .collect();
        assert_eq!(first.join().unwrap(), (0, 0));
        let mut got: Vec<_> = others.into_iter().map(|t| t.join().unwrap()).collect();
        got.sort();
        assert_eq!(got, vec![(1, 10), (2, 20), (3, 30)], "each owner gets its own job back, run");
        assert_eq!(*sizes.lock().unwrap(), vec![1, 3], "the three waiting jobs ran as one batch");
    }

    #[test]
    fn a_batch_never_exceeds_max_batch() {
        let b = Arc::new(Batcher::<(), u32>::new(vec![()], 2));
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let threads: Vec<_> = (0..8)
            .map(|k| {
                let (b, sizes) = (b.clone(), sizes.clone());
                std::thread::spawn(move || {
                    b.submit(
                        k,
                        |_, jobs| {
                            sizes.lock().unwrap().push(jobs.len());
                            std::thread::sleep(std::time::Duration::from_millis(2));
                        },
                        |_| {},
                    )
                })
            })
            .collect();
        let mut back: Vec<u32> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        back.sort();
        assert_eq!(back, (0..8).collect::<Vec<_>>());
        let sizes = sizes.lock().unwrap();
        assert!(sizes.iter().all(|&n| (1..=2).contains(&n)), "{sizes:?}");
        assert_eq!(sizes.iter().sum::<usize>(), 8, "every job ran exactly once");
    }

    #[test]
    fn a_panicking_run_fails_its_frames_and_keeps_the_session() {
        let b: Batcher<(), (u32, bool)> = Batcher::new(vec![()], 4);
        let out = b.submit((1, false), |_, _| panic!("model run blew up"), |j| j.1 = true);
        assert_eq!(out, (1, true), "the frame came back, marked failed");
        let out = b.submit((2, false), |_, _| {}, |j| j.1 = true);
        assert_eq!(out, (2, false), "the session is still there for the next frame");
    }
}
