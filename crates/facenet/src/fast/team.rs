//! Splitting one convolution across the cores with little synchronisation: a team of helper
//! threads that spin between jobs, as ONNX Runtime's and OpenMP's thread pools do.
//!
//! A single image runs 106 convolutions one after another, each split across the cores.
//! Forking and joining through rayon from outside its pool costs 20-55 µs per convolution on a
//! two-core virtual machine (the idle worker has gone to sleep and must be woken; measured with
//! a trivial 100 µs job), which at 8x8 and 3x3 maps is a third of the convolution itself. The
//! helpers here instead wait for the next job by spinning for [`spin_window`] (1 ms unless
//! `FACENET_SPIN_US` says otherwise) and only then sleep, so the jobs of one forward pass
//! reach them in about a microsecond, while an idle service costs no CPU.
//!
//! One team serves the process; a caller that finds it busy (another forward pass on another
//! thread) or too small splits through rayon instead, so concurrent callers never wait for
//! each other. `FACENET_SPIN_US=0` turns the team off (rayon only).

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, TryLockError};
use std::thread::Thread;
use std::time::{Duration, Instant};

/// How long an idle helper spins for the next job before it sleeps: `FACENET_SPIN_US`
/// microseconds, 1000 by default; 0 turns the team off.
pub(super) fn spin_window() -> Duration {
    static WINDOW: OnceLock<Duration> = OnceLock::new();
    *WINDOW.get_or_init(|| {
        let us = std::env::var("FACENET_SPIN_US")
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(1000);
        Duration::from_micros(us)
    })
}

/// The job of one split, on the caller's stack while the helpers run it.
struct Job<'a> {
    f: &'a (dyn Fn(usize) + Sync),
}

struct Shared {
    /// The current job's number (bumped once per job) and part count, in one word so that a
    /// helper reads both at once: `number << 16 | parts`.
    epoch: AtomicU64,
    /// The current job; written by the caller before it publishes `epoch`, read after by the
    /// helpers that have a part in it.
    job: UnsafeCell<*const Job<'static>>,
    /// Parts not yet finished by helpers.
    remaining: AtomicUsize,
    /// Whether a helper's part panicked.
    panicked: AtomicBool,
    /// Per helper: asleep (or about to be), so the caller must wake it.
    sleeping: Vec<AtomicBool>,
}

// SAFETY: `job` is written only by the caller that holds the team's lock, before it publishes
// `epoch`, and read only by helpers with a part in that epoch's job, after they loaded it; the
// caller neither returns nor writes the next job before those parts are done (`remaining`).
unsafe impl Sync for Shared {}
unsafe impl Send for Shared {}

struct Team {
    shared: Arc<Shared>,
    threads: Vec<Thread>,
    lock: Mutex<()>,
}

/// The process's team: one helper per core beyond the first (rayon's thread count), or none.
fn team() -> Option<&'static Team> {
    static TEAM: OnceLock<Option<Team>> = OnceLock::new();
    TEAM.get_or_init(|| {
        let helpers = rayon::current_num_threads().saturating_sub(1).min(255);
        if helpers == 0 || spin_window().is_zero() {
            return None;
        }
        let shared = Arc::new(Shared {
            epoch: AtomicU64::new(0),
            job: UnsafeCell::new(std::ptr::null()),
            remaining: AtomicUsize::new(0),
            panicked: AtomicBool::new(false),
            sleeping: (0..helpers).map(|_| AtomicBool::new(false)).collect(),
        });
        let mut threads = Vec::with_capacity(helpers);
        for i in 0..helpers {
            let sh = shared.clone();
            let handle = std::thread::Builder::new()
                .name(format!("facenet-split-{}", i + 1))
                .spawn(move || helper(&sh, i))
                .ok()?;
            threads.push(handle.thread().clone());
        }
        Some(Team {
            shared,
            threads,
            lock: Mutex::new(()),
        })
    })
    .as_ref()
}

fn helper(sh: &Shared, i: usize) {
    let part = i + 1;
    let window = spin_window();
    let mut seen = 0u64;
    loop {
        // Wait for the next epoch: spin, then sleep.
        let start = Instant::now();
        let mut spins = 0u32;
        while sh.epoch.load(Ordering::Acquire) == seen {
            spins = spins.wrapping_add(1);
            if spins.is_multiple_of(256) && start.elapsed() >= window {
                sh.sleeping[i].store(true, Ordering::SeqCst);
                while sh.epoch.load(Ordering::SeqCst) == seen {
                    std::thread::park();
                }
                sh.sleeping[i].store(false, Ordering::SeqCst);
                break;
            }
            std::hint::spin_loop();
        }
        seen = sh.epoch.load(Ordering::Acquire);
        if part < (seen & 0xffff) as usize {
            // SAFETY: see `Shared`: this helper has a part in the job published with `seen`,
            // so the pointer is that job's and the job stays alive until the part is done.
            let f = unsafe { (**sh.job.get()).f };
            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(part))).is_err() {
                sh.panicked.store(true, Ordering::Release);
            }
            sh.remaining.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// Waits until every helper part of the current job is done (also while unwinding from a
/// panic in the caller's own part: the helpers borrow the caller's stack).
struct Join<'a>(&'a Shared);

impl Drop for Join<'_> {
    fn drop(&mut self) {
        let mut spins = 0u32;
        while self.0.remaining.load(Ordering::Acquire) != 0 {
            spins = spins.wrapping_add(1);
            if spins > 4096 {
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
    }
}

/// Runs `f(0)`, ..., `f(parts - 1)` in parallel, part 0 on the calling thread; returns when
/// all are done. A panic in any part is raised here once all have finished.
pub(super) fn split(parts: usize, f: impl Fn(usize) + Sync) {
    if parts <= 1 {
        if parts == 1 {
            f(0);
        }
        return;
    }
    let team = team().filter(|t| t.threads.len() + 1 >= parts);
    // A panic in an earlier split poisons the lock but leaves the team whole (`Join` waited).
    let guard = team.and_then(|t| match t.lock.try_lock() {
        Ok(g) => Some((t, g)),
        Err(TryLockError::Poisoned(p)) => Some((t, p.into_inner())),
        Err(TryLockError::WouldBlock) => None,
    });
    let Some((team, _guard)) = guard else {
        let f = &f;
        rayon::scope(|s| {
            for i in 1..parts {
                s.spawn(move |_| f(i));
            }
            f(0);
        });
        return;
    };
    let sh = &*team.shared;
    let job = Job { f: &f };
    sh.panicked.store(false, Ordering::Relaxed);
    sh.remaining.store(parts - 1, Ordering::Relaxed);
    // SAFETY: this thread holds the team's lock; no helper reads `job` until the epoch below
    // is published, and `Join` keeps `job` alive until every helper part is done. The
    // lifetime is erased only for the pointer's type.
    unsafe {
        *sh.job.get() = (&job as *const Job<'_>).cast::<Job<'static>>();
    }
    let number = (sh.epoch.load(Ordering::Relaxed) >> 16) + 1;
    sh.epoch
        .store(number << 16 | parts as u64, Ordering::SeqCst);
    for (i, t) in team.threads.iter().enumerate().take(parts - 1) {
        if sh.sleeping[i].load(Ordering::SeqCst) {
            t.unpark();
        }
    }
    {
        let _join = Join(sh);
        f(0);
    }
    if sh.panicked.load(Ordering::Acquire) {
        panic!("fast path: a part of a split convolution panicked");
    }
}

/// [`split`] over `items`, part `i` getting `&mut items[i]` (per-thread scratch buffers).
pub(super) fn split_mut<T: Send>(items: &mut [T], f: impl Fn(usize, &mut T) + Sync) {
    struct Items<T>(*mut T);
    // SAFETY: each part dereferences only its own index, exactly once.
    unsafe impl<T: Send> Sync for Items<T> {}
    let base = Items(items.as_mut_ptr());
    let base = &base;
    split(items.len(), move |i| {
        // SAFETY: `i < items.len()` and no other part touches index `i`.
        f(i, unsafe { &mut *base.0.add(i) })
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_part_runs_once_on_the_team_and_on_rayon() {
        for parts in [0, 1, 2, 3, 5, 16] {
            for _ in 0..200 {
                let mut counts = vec![0u32; parts];
                split_mut(&mut counts, |i, c| {
                    assert_eq!(*c, 0, "part {i} ran twice");
                    *c += 1 + i as u32;
                });
                let want: Vec<u32> = (0..parts as u32).map(|i| 1 + i).collect();
                assert_eq!(counts, want, "parts {parts}");
            }
        }
    }

    #[test]
    fn concurrent_callers_each_get_all_their_parts() {
        // Several threads split at once: one gets the team, the others fall back to rayon.
        let total = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..300 {
                        let hits = AtomicUsize::new(0);
                        split(2, |_| {
                            hits.fetch_add(1, Ordering::Relaxed);
                        });
                        assert_eq!(hits.load(Ordering::Relaxed), 2);
                        total.fetch_add(2, Ordering::Relaxed);
                    }
                });
            }
        });
        assert_eq!(total.load(Ordering::Relaxed), 4 * 300 * 2);
    }

    #[test]
    fn a_panicking_part_is_raised_after_all_parts_finish() {
        for panicking in [0usize, 1] {
            let done = AtomicUsize::new(0);
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                split(2, |i| {
                    if i == panicking {
                        panic!("part {i}");
                    }
                    std::thread::sleep(Duration::from_millis(20));
                    done.fetch_add(1, Ordering::SeqCst);
                })
            }));
            assert!(r.is_err(), "the panic of part {panicking} was lost");
            assert_eq!(
                done.load(Ordering::SeqCst),
                1,
                "the other part had not finished"
            );
            // The team still works afterwards.
            let hits = AtomicUsize::new(0);
            split(2, |_| {
                hits.fetch_add(1, Ordering::Relaxed);
            });
            assert_eq!(hits.load(Ordering::Relaxed), 2);
        }
    }

    #[test]
    fn sleeping_helpers_are_woken() {
        // Longer than the spin window, so the helper has gone to sleep before each job.
        for _ in 0..3 {
            std::thread::sleep(spin_window() + Duration::from_millis(5));
            let hits = AtomicUsize::new(0);
            split(2, |_| {
                hits.fetch_add(1, Ordering::Relaxed);
            });
            assert_eq!(hits.load(Ordering::Relaxed), 2);
        }
    }
}
