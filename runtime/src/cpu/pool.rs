//! The CPU executor's fork-join pool: the calling thread plus `threads - 1`
//! workers that spin on a job word between launches.
//!
//! A decode step is a few hundred launches of 10–100 µs each. Waking a
//! sleeping thread costs about as much as a small launch (a futex wake and a
//! context switch), so workers spin for a while after each job and only then
//! sleep on a condition variable; a steady stream of launches never sleeps.
//!
//! A job is *open* while the caller works on it. Workers join an open job,
//! and the caller, once it has run out of work, closes it and waits only for
//! the workers that joined. A worker the OS has descheduled (another process
//! on the core) therefore never holds a launch up: the caller does its share
//! of the work, and the worker, when it runs again, finds the job closed.
//! Jobs hand out their work themselves (the executor's chunk counter), so
//! whoever runs takes it.

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long an idle worker spins before it sleeps.
const SPIN: Duration = Duration::from_millis(2);

/// A job: called on the caller (index 0) and on each worker that joins it
/// (its index); it must hand out its work itself, so that any subset of
/// the threads completes it.
type Job<'a> = &'a (dyn Fn(usize) + Sync);

/// The low bit of `state`: the current job is open.
const OPEN: u64 = 1;

struct Shared {
    /// `(job number << 1) | OPEN` while a job is open.
    state: AtomicU64,
    /// Workers inside the current job.
    active: AtomicUsize,
    /// The current job, erased to `'static`: [`Pool::run`] does not return
    /// while a worker is inside it, and closes it before returning.
    job: UnsafeCell<Option<Job<'static>>>,
    /// Workers asleep (or about to sleep) on `wake`.
    sleepers: AtomicUsize,
    lock: Mutex<()>,
    wake: Condvar,
    stop: AtomicBool,
}

// SAFETY: `job` is written only by the thread inside `Pool::run`, before it
// opens the job (SeqCst store of `state`) and after it has closed the job
// and seen `active == 0`; workers read it only between joining (`active`
// incremented, then `state` seen open) and leaving.
unsafe impl Sync for Shared {}

/// The pool.
pub(crate) struct Pool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    /// Jobs started (numbers them).
    jobs: AtomicU64,
    /// A `run` is in progress: a second, concurrent one runs alone on its
    /// caller (one job slot).
    busy: AtomicBool,
}

impl Pool {
    /// A pool of `threads` threads in all (the caller is one of them).
    pub fn new(threads: usize) -> std::io::Result<Pool> {
        let shared = Arc::new(Shared {
            state: AtomicU64::new(0),
            active: AtomicUsize::new(0),
            job: UnsafeCell::new(None),
            sleepers: AtomicUsize::new(0),
            lock: Mutex::new(()),
            wake: Condvar::new(),
            stop: AtomicBool::new(false),
        });
        let mut workers = Vec::new();
        for index in 1..threads.max(1) {
            let s = shared.clone();
            workers.push(
                std::thread::Builder::new()
                    .name(format!("kiln-cpu-{index}"))
                    .spawn(move || worker(&s, index))?,
            );
        }
        Ok(Pool {
            shared,
            workers,
            jobs: AtomicU64::new(0),
            busy: AtomicBool::new(false),
        })
    }

    /// Threads in the pool, the caller included.
    pub fn threads(&self) -> usize {
        self.workers.len() + 1
    }

    /// Runs `job` on the caller and on whichever workers join while it is
    /// open, and returns when all of them have left it.
    pub fn run(&self, job: &(dyn Fn(usize) + Sync)) {
        if self.workers.is_empty() || self.busy.swap(true, Ordering::Acquire) {
            job(0);
            return;
        }
        let s = &*self.shared;
        let n = self.jobs.fetch_add(1, Ordering::Relaxed) + 1;
        // SAFETY: see `Shared::job`: no worker is inside a job now (the last
        // `run` waited for `active == 0` after closing it), and the lifetime
        // is erased only until this call returns, which it does only after
        // closing this job and waiting for the workers inside it.
        unsafe {
            *s.job.get() = Some(std::mem::transmute::<Job<'_>, Job<'static>>(job));
        }
        s.state.store(n << 1 | OPEN, Ordering::SeqCst);
        if s.sleepers.load(Ordering::SeqCst) > 0 {
            let _g = s.lock.lock().unwrap_or_else(|e| e.into_inner());
            s.wake.notify_all();
        }
        job(0);
        // Close, then wait for the workers that joined (SeqCst against the
        // worker's increment-then-check: one side sees the other).
        s.state.store(n << 1, Ordering::SeqCst);
        let mut spins = 0u32;
        while s.active.load(Ordering::SeqCst) > 0 {
            spins += 1;
            if spins < 1 << 14 {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
        self.busy.store(false, Ordering::Release);
    }
}

fn worker(s: &Shared, index: usize) {
    let mut seen = 0u64;
    loop {
        let mut idle_since = Instant::now();
        let mut spins = 0u32;
        let state = loop {
            let st = s.state.load(Ordering::Acquire);
            if st & OPEN != 0 && st != seen {
                break st;
            }
            if s.stop.load(Ordering::Relaxed) {
                return;
            }
            std::hint::spin_loop();
            spins += 1;
            if spins.is_multiple_of(1024) && idle_since.elapsed() > SPIN {
                let g = s.lock.lock().unwrap_or_else(|e| e.into_inner());
                s.sleepers.fetch_add(1, Ordering::SeqCst);
                // Re-check under the lock: `run` notifies while holding it.
                let st = s.state.load(Ordering::SeqCst);
                let idle = (st & OPEN == 0 || st == seen) && !s.stop.load(Ordering::SeqCst);
                let g = if idle {
                    s.wake.wait(g).unwrap_or_else(|e| e.into_inner())
                } else {
                    g
                };
                s.sleepers.fetch_sub(1, Ordering::SeqCst);
                drop(g);
                idle_since = Instant::now();
            }
        };
        seen = state;
        s.active.fetch_add(1, Ordering::SeqCst);
        if s.state.load(Ordering::SeqCst) == state {
            // SAFETY: joined while the job is open (see `Shared::job`).
            if let Some(job) = unsafe { *s.job.get() } {
                job(index);
            }
        }
        s.active.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        {
            let _g = self.shared.lock.lock().unwrap_or_else(|e| e.into_inner());
            self.shared.wake.notify_all();
        }
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every piece of every job runs exactly once, whoever takes it.
    fn pieces(pool: &Pool, rounds: usize, pieces: usize) {
        for round in 0..rounds {
            let next = AtomicUsize::new(0);
            let done: Vec<AtomicUsize> = (0..pieces).map(|_| AtomicUsize::new(0)).collect();
            pool.run(&|_| loop {
                let p = next.fetch_add(1, Ordering::Relaxed);
                if p >= pieces {
                    break;
                }
                done[p].fetch_add(round + 1, Ordering::Relaxed);
            });
            for d in &done {
                assert_eq!(d.load(Ordering::Relaxed), round + 1);
            }
        }
    }

    #[test]
    fn every_piece_of_every_job_runs_once() {
        for threads in [1, 2, 3] {
            let pool = Pool::new(threads).unwrap();
            assert_eq!(pool.threads(), threads);
            pieces(&pool, 2000, 8);
        }
    }

    #[test]
    fn workers_join_jobs() {
        // Long jobs: the worker, spinning, joins; each thread counts itself.
        let pool = Pool::new(2).unwrap();
        let seen = [AtomicUsize::new(0), AtomicUsize::new(0)];
        for _ in 0..50 {
            pool.run(&|i| {
                seen[i].fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(1));
            });
        }
        assert_eq!(seen[0].load(Ordering::Relaxed), 50);
        assert!(
            seen[1].load(Ordering::Relaxed) > 0,
            "the worker never joined"
        );
    }

    #[test]
    fn sleeping_workers_wake_for_the_next_job() {
        let pool = Pool::new(2).unwrap();
        pieces(&pool, 1, 8);
        // Long enough for the worker to stop spinning and sleep.
        std::thread::sleep(SPIN * 3);
        pieces(&pool, 100, 8);
    }
}
