//! How a launch's blocks are shared between the pool's threads: each
//! thread owns a contiguous range and takes blocks from its front; a thread
//! whose range is empty steals the back half of the largest range left.
//!
//! Why ranges and not a shared counter: a decode GEMV is a stream of weight
//! rows in block order, and a hardware prefetcher follows a stream only once
//! it has seen a few misses of it. With one shared counter (guided
//! self-scheduling) each thread's successive grabs are far apart, so every
//! grab starts a new stream: 17 to 30 grabs per launch. Here a thread's
//! successive takes are adjacent, one stream per thread until the steals at
//! the very end (stepped decode of the 134M Llama: 2.08 -> 1.65 ms a step
//! above the weights' read time; its 2.4 MB projections still read below
//! the 98 MB head, 26-29 against 32-35 GB/s, for reasons not found). The
//! steals keep the tail balanced (a fixed split left the caller waiting
//! for 7% of a decode), and
//! a thread the OS delays, or a worker that never joins, only loses what is
//! then stolen from it.

use std::sync::atomic::{AtomicU64, Ordering};

/// Most threads a launch splits between; threads past these take no part.
pub(crate) const MAX_THREADS: usize = 64;

/// A thread's range of blocks, `lo | hi << 32`, on a cache line of its own:
/// its owner's takes do not bounce the other owners' lines.
#[repr(align(64))]
struct Range(AtomicU64);

fn pack(lo: u32, hi: u32) -> u64 {
    lo as u64 | (hi as u64) << 32
}

fn unpack(r: u64) -> (u32, u32) {
    (r as u32, (r >> 32) as u32)
}

/// The ranges of one launch.
pub(crate) struct Split {
    ranges: [Range; MAX_THREADS],
    threads: usize,
}

impl Split {
    /// `blocks` split evenly into `threads` contiguous ranges (`threads`
    /// clamped to `1..=MAX_THREADS`; `blocks` must fit in 32 bits).
    pub fn new(blocks: u32, threads: usize) -> Split {
        let threads = threads.clamp(1, MAX_THREADS);
        let at = |t: usize| (blocks as u64 * t as u64 / threads as u64) as u32;
        Split {
            ranges: std::array::from_fn(|t| {
                Range(AtomicU64::new(if t < threads {
                    pack(at(t), at(t + 1))
                } else {
                    0
                }))
            }),
            threads,
        }
    }

    /// Runs blocks for thread `me` until no range has any left:
    /// `run(begin, end)` for each piece taken. Pieces of its own range come
    /// in order, an eighth of what is left at a time (at least one block),
    /// so the last pieces are small enough for a thief to balance the tail.
    pub fn run(&self, me: usize, run: &mut dyn FnMut(usize, usize)) {
        if me >= self.threads {
            return;
        }
        loop {
            let own = &self.ranges[me].0;
            let mut r = own.load(Ordering::Acquire);
            loop {
                let (lo, hi) = unpack(r);
                if lo >= hi {
                    break;
                }
                let take = ((hi - lo) / 8).max(1);
                match own.compare_exchange_weak(
                    r,
                    pack(lo + take, hi),
                    Ordering::AcqRel,
                    Ordering::Acquire,
                ) {
                    Ok(_) => {
                        run(lo as usize, (lo + take) as usize);
                        r = own.load(Ordering::Acquire);
                    }
                    Err(now) => r = now,
                }
            }
            if !self.steal(me) {
                return;
            }
        }
    }

    /// Moves the back half of the largest other range to `me`'s (empty)
    /// range; `false` when every range is empty.
    fn steal(&self, me: usize) -> bool {
        loop {
            let victim = (0..self.threads)
                .filter(|&t| t != me)
                .map(|t| (t, self.ranges[t].0.load(Ordering::Acquire)))
                .max_by_key(|&(_, r)| {
                    let (lo, hi) = unpack(r);
                    hi.saturating_sub(lo)
                });
            let Some((t, r)) = victim else {
                return false;
            };
            let (lo, hi) = unpack(r);
            if lo >= hi {
                return false;
            }
            let half = (hi - lo).div_ceil(2);
            if self.ranges[t]
                .0
                .compare_exchange(r, pack(lo, hi - half), Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                // Our range is empty, so no one steals from it until this
                // store: the stolen blocks become ours alone.
                self.ranges[me]
                    .0
                    .store(pack(hi - half, hi), Ordering::Release);
                return true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU8;

    /// Every block is run exactly once, whichever threads take part.
    fn check(blocks: u32, threads: usize, joining: usize) {
        let split = Split::new(blocks, threads);
        let seen: Vec<AtomicU8> = (0..blocks).map(|_| AtomicU8::new(0)).collect();
        std::thread::scope(|s| {
            for me in 0..joining {
                let (split, seen) = (&split, &seen);
                s.spawn(move || {
                    split.run(me, &mut |b, e| {
                        for x in &seen[b..e] {
                            x.fetch_add(1, Ordering::Relaxed);
                        }
                    })
                });
            }
        });
        for (i, x) in seen.iter().enumerate() {
            assert_eq!(
                x.load(Ordering::Relaxed),
                1,
                "block {i} of {blocks}, {threads} threads, {joining} joining"
            );
        }
    }

    #[test]
    fn every_block_runs_once() {
        for blocks in [0, 1, 2, 3, 7, 64, 192, 1000, 8000] {
            for threads in [1, 2, 3, 8] {
                check(blocks, threads, threads);
            }
        }
    }

    #[test]
    fn ranges_of_threads_that_never_join_are_stolen() {
        // Only the caller runs: it takes every other range by stealing.
        check(500, 4, 1);
        check(192, 2, 1);
        check(1000, 8, 3);
    }

    #[test]
    fn threads_past_the_split_take_no_part() {
        let split = Split::new(10, 2);
        let mut ran = 0;
        split.run(5, &mut |b, e| ran += e - b);
        assert_eq!(ran, 0);
        check(300, 2, 5);
    }

    #[test]
    fn a_lone_thread_reads_its_range_in_order() {
        let split = Split::new(100, 2);
        let mut pieces = Vec::new();
        split.run(0, &mut |b, e| pieces.push((b, e)));
        // Its own half first, in adjacent pieces, then the other half,
        // stolen back half first.
        assert_eq!(pieces[0].0, 0);
        let own: Vec<_> = pieces.iter().take_while(|p| p.1 <= 50).collect();
        assert!(own.windows(2).all(|w| w[0].1 == w[1].0), "{own:?}");
        assert_eq!(own.last().unwrap().1, 50);
        let total: usize = pieces.iter().map(|(b, e)| e - b).sum();
        assert_eq!(total, 100);
    }
}
