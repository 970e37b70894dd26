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
//! Each split cuts its convolution into a few chunks per thread (rows, output channels or
//! Winograd tiles). A thread takes its own share's chunks first, so the same rows or channels
//! stay on the same core from one convolution to the next, and then whatever is left of the
//! others' shares; the caller waits only for chunks already started. On a two-core virtual
//! machine, where a vCPU is now and then away for tens to hundreds of microseconds, four
//! chunks per thread made the convolutions of one image 8 % faster than one per thread,
//! measured within one run (alternate images, per-convolution timers).
//!
//! One team serves the process; a caller that finds it busy (another forward pass on another
//! thread) or too small splits through rayon instead, so concurrent callers never wait for
//! each other. A spin window of zero ([`set_spin_window`]; `FACENET_SPIN_US=0` in the fronts) turns the team
//! off (rayon only).

use std::cell::UnsafeCell;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, TryLockError};
use std::thread::Thread;
use std::time::{Duration, Instant};

/// How long an idle helper spins for the next job before it sleeps, in microseconds.
static SPIN_US: AtomicU64 = AtomicU64::new(1000);

/// How long an idle helper spins for the next job before it sleeps: 1 ms unless
/// [`set_spin_window`] said otherwise; zero turns the team off.
pub(super) fn spin_window() -> Duration {
    Duration::from_micros(SPIN_US.load(Ordering::Relaxed))
}

/// Sets how long the helper threads of the fast path spin for the next job before they sleep
/// (process-wide; default 1 ms, `Duration::ZERO` turns the team off and leaves the splits to
/// rayon). [`crate::Embedder::with_inference`] applies [`crate::options::Inference::spin`].
pub fn set_spin_window(window: Duration) {
    SPIN_US.store(
        window.as_micros().min(u64::MAX as u128) as u64,
        Ordering::Relaxed,
    );
}

/// Chunk `c` of `chunks` over `0..total`: nearly equal parts with their bounds at multiples
/// of `align` (a micro-kernel's rows or columns), except the end.
pub(super) fn chunk_range(total: usize, chunks: usize, align: usize, c: usize) -> Range<usize> {
    let bound = |i: usize| {
        if i >= chunks {
            total
        } else {
            ((i * total / chunks + align / 2) / align * align).min(total)
        }
    };
    bound(c)..bound(c + 1)
}

/// How many chunks to cut `total` into for `threads`: up to [`CHUNKS_PER_THREAD`] each while
/// every chunk keeps at least `min`, as a multiple of `threads` (equally fast threads then
/// finish together); at least one per thread (one in all when `threads` is 1).
pub(super) fn chunk_count(total: usize, threads: usize, min: usize) -> usize {
    if threads <= 1 {
        return 1;
    }
    let fit = (total / min.max(1)).min(threads * CHUNKS_PER_THREAD);
    (fit / threads * threads).max(threads.min(total)).max(1)
}

/// Chunks per thread in a split: enough that a thread slowed for a while (another process, a
/// virtual machine's vCPU away) is made up for by the others within a fraction of the
/// convolution, few enough that each chunk is still an efficient matrix product.
const CHUNKS_PER_THREAD: usize = 4;

/// The next unclaimed chunk of one thread's share, on a cache line of its own.
#[repr(align(64))]
struct Counter(AtomicUsize);

/// The chunks of one split as one thread takes them: first its own share (a contiguous run,
/// the same rows or channels on the same thread from one convolution to the next, so its
/// caches keep what it wrote), then what is left of the others' shares. A late or slowed
/// thread (a two-core virtual machine's vCPU is sometimes away for hundreds of
/// microseconds) leaves the rest of its share to the others instead of holding up the join.
pub(super) struct Claims<'a> {
    next: &'a [Counter],
    chunks: usize,
    slot: usize,
    /// Which share this thread takes from now: its own (0), then the following slots'.
    victim: usize,
}

impl Claims<'_> {
    fn new(next: &[Counter], chunks: usize, slot: usize) -> Claims<'_> {
        Claims {
            next,
            chunks,
            slot,
            victim: 0,
        }
    }
}

/// Where slot `s` of `threads` starts its share of `chunks`.
fn share_start(chunks: usize, threads: usize, s: usize) -> usize {
    s * chunks / threads
}

fn counters(chunks: usize, threads: usize) -> Vec<Counter> {
    (0..threads)
        .map(|s| Counter(AtomicUsize::new(share_start(chunks, threads, s))))
        .collect()
}

impl Iterator for Claims<'_> {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        let threads = self.next.len();
        while self.victim < threads {
            let v = (self.slot + self.victim) % threads;
            let end = share_start(self.chunks, threads, v + 1);
            let counter = &self.next[v].0;
            if counter.load(Ordering::Relaxed) < end {
                let c = counter.fetch_add(1, Ordering::Relaxed);
                if c < end {
                    return Some(c);
                }
            }
            self.victim += 1;
        }
        None
    }
}

/// The job of one split, on the caller's stack while the helpers run it: `f(slot, claims)`.
struct Job<'a> {
    f: &'a (dyn Fn(usize, Claims<'_>) + Sync),
    next: Vec<Counter>,
    chunks: usize,
}

/// [`Shared::gate`]: the job's number above this bit, the closed flag on it, and below it the
/// number of helpers that entered the job.
const GATE_SHIFT: u32 = 17;
const GATE_CLOSED: u64 = 1 << 16;
const GATE_ENTERED: u64 = GATE_CLOSED - 1;

struct Shared {
    /// The current job's number (bumped once per job) and the number of threads that may
    /// join it (caller included), in one word: `number << 16 | threads`.
    epoch: AtomicU64,
    /// A helper enters the current job here, while it is open (see [`GATE_SHIFT`]); once
    /// its chunks are all claimed the caller closes it and waits only for the helpers that
    /// entered, so a helper that comes late never touches the job.
    gate: AtomicU64,
    /// The current job; written by the caller before it publishes `epoch`, read by helpers
    /// only after they entered through `gate`.
    job: UnsafeCell<*const Job<'static>>,
    /// Helpers of the current job that entered and have finished.
    finished: AtomicUsize,
    /// Whether a helper's chunk panicked.
    panicked: AtomicBool,
    /// Per helper: asleep (or about to be), so the caller must wake it.
    sleeping: Vec<AtomicBool>,
}

// SAFETY: `job` is written only by the caller that holds the team's lock, before it publishes
// `epoch`, and read only by helpers that entered that job through `gate`; the caller neither
// returns nor writes the next job before every helper that entered has finished.
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
            gate: AtomicU64::new(GATE_CLOSED),
            job: UnsafeCell::new(std::ptr::null()),
            finished: AtomicUsize::new(0),
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

/// Enters job `number` if it is still open.
fn enter(gate: &AtomicU64, number: u64) -> bool {
    let mut g = gate.load(Ordering::Acquire);
    loop {
        if g >> GATE_SHIFT != number & (u64::MAX >> GATE_SHIFT) || g & GATE_CLOSED != 0 {
            return false;
        }
        match gate.compare_exchange_weak(g, g + 1, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => return true,
            Err(now) => g = now,
        }
    }
}

fn helper(sh: &Shared, i: usize) {
    let slot = i + 1;
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
        if slot >= (seen & 0xffff) as usize || !enter(&sh.gate, seen >> 16) {
            continue;
        }
        // SAFETY: see `Shared`: this helper entered the job numbered in `seen`, so the
        // pointer is that job's and the job stays alive until this helper has finished.
        let job = unsafe { &**sh.job.get() };
        let claims = Claims::new(&job.next, job.chunks, slot);
        let f = job.f;
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(slot, claims))).is_err() {
            sh.panicked.store(true, Ordering::Release);
        }
        sh.finished.fetch_add(1, Ordering::AcqRel);
    }
}

/// Closes the current job and waits until every helper that entered it has finished (also
/// while unwinding from a panic on the caller's side: the helpers borrow the caller's stack).
struct Join<'a>(&'a Shared);

impl Drop for Join<'_> {
    fn drop(&mut self) {
        let entered = (self.0.gate.fetch_or(GATE_CLOSED, Ordering::AcqRel) & GATE_ENTERED) as usize;
        let mut spins = 0u32;
        while self.0.finished.load(Ordering::Acquire) != entered {
            spins = spins.wrapping_add(1);
            if spins > 4096 {
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
    }
}

/// Runs every chunk in `0..chunks` on at most `slots.len()` threads, the calling thread among
/// them: each thread calls `f(slot, claims)` once, with a slot of its own (scratch buffers)
/// and the chunks it is to run as [`Claims`] (perhaps none), so that it can prepare once for
/// all of them. Returns when all chunks are done; a panic in any is raised here once every
/// thread has finished.
pub(super) fn split_mut<T: Send>(
    slots: &mut [T],
    chunks: usize,
    f: impl Fn(&mut T, Claims<'_>) + Sync,
) {
    struct Slots<T>(*mut T);
    // SAFETY: each thread dereferences only its own slot index, which no other thread has.
    unsafe impl<T: Send> Sync for Slots<T> {}
    let threads = slots.len().min(chunks);
    let base = Slots(slots.as_mut_ptr());
    let base = &base;
    run(threads, chunks, &move |slot: usize, claims: Claims<'_>| {
        // SAFETY: `slot < threads <= slots.len()`, and one thread has it (see `run`).
        f(unsafe { &mut *base.0.add(slot) }, claims)
    });
}

/// [`split_mut`] without slots: `f(chunk)` for every chunk, on up to `threads` threads.
pub(super) fn split(threads: usize, chunks: usize, f: impl Fn(usize) + Sync) {
    run(threads.min(chunks), chunks, &|_, claims: Claims<'_>| {
        claims.for_each(&f)
    });
}

/// `f(slot, claims)` on `threads` threads (slot 0 the caller's), each slot on one thread.
fn run(threads: usize, chunks: usize, f: &(dyn Fn(usize, Claims<'_>) + Sync)) {
    let threads = threads.max(1);
    let next = counters(chunks, threads);
    if threads == 1 {
        if chunks > 0 {
            f(0, Claims::new(&next, chunks, 0));
        }
        return;
    }
    let team = team().filter(|t| t.threads.len() + 1 >= threads);
    // A panic in an earlier split poisons the lock but leaves the team whole (`Join` waited).
    let guard = team.and_then(|t| match t.lock.try_lock() {
        Ok(g) => Some((t, g)),
        Err(TryLockError::Poisoned(p)) => Some((t, p.into_inner())),
        Err(TryLockError::WouldBlock) => None,
    });
    let Some((team, _guard)) = guard else {
        let next = &next;
        rayon::scope(|s| {
            for slot in 1..threads {
                s.spawn(move |_| f(slot, Claims::new(next, chunks, slot)));
            }
            f(0, Claims::new(next, chunks, 0));
        });
        return;
    };
    let sh = &*team.shared;
    let job = Job { f, next, chunks };
    sh.panicked.store(false, Ordering::Relaxed);
    sh.finished.store(0, Ordering::Relaxed);
    // SAFETY: this thread holds the team's lock and the gate is closed (the last job's
    // `Join` closed it), so no helper reads `job` until the epoch below opens it; `Join` keeps
    // `job` alive until every helper that entered has finished. The lifetime is erased only
    // for the pointer's type.
    unsafe {
        *sh.job.get() = (&job as *const Job<'_>).cast::<Job<'static>>();
    }
    let number = (sh.epoch.load(Ordering::Relaxed) >> 16) + 1;
    sh.gate.store(number << GATE_SHIFT, Ordering::SeqCst);
    sh.epoch
        .store(number << 16 | threads as u64, Ordering::SeqCst);
    for (i, t) in team.threads.iter().enumerate().take(threads - 1) {
        if sh.sleeping[i].load(Ordering::SeqCst) {
            t.unpark();
        }
    }
    {
        let _join = Join(sh);
        f(0, Claims::new(&job.next, chunks, 0));
    }
    if sh.panicked.load(Ordering::Acquire) {
        panic!("fast path: a chunk of a split convolution panicked");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Splits `chunks` chunks over `threads` slots; checks every chunk ran once and no slot
    /// was used by two threads at once.
    fn check(threads: usize, chunks: usize) {
        let counts: Vec<AtomicUsize> = (0..chunks).map(|_| AtomicUsize::new(0)).collect();
        let mut slots: Vec<(AtomicBool, usize)> =
            (0..threads).map(|_| (AtomicBool::new(false), 0)).collect();
        split_mut(&mut slots, chunks, |slot, claims| {
            assert!(
                !slot.0.swap(true, Ordering::SeqCst),
                "a slot on two threads"
            );
            for c in claims {
                counts[c].fetch_add(1, Ordering::Relaxed);
                slot.1 += 1;
            }
            slot.0.store(false, Ordering::SeqCst);
        });
        for (c, n) in counts.iter().enumerate() {
            assert_eq!(
                n.load(Ordering::Relaxed),
                1,
                "chunk {c} of {chunks} ({threads} threads)"
            );
        }
        assert_eq!(slots.iter().map(|s| s.1).sum::<usize>(), chunks);
    }

    #[test]
    fn every_chunk_runs_once_on_the_team_and_on_rayon() {
        for threads in [1, 2, 3, 5] {
            for chunks in [0, 1, 2, 3, 7, 16] {
                for _ in 0..100 {
                    check(threads, chunks);
                }
            }
        }
    }

    #[test]
    fn chunk_ranges_tile_the_whole_range_at_aligned_bounds() {
        for (total, chunks, align) in [
            (289, 8, 6),
            (289, 8, 32),
            (64, 2, 32),
            (160, 4, 16),
            (5, 8, 6),
            (81, 4, 1),
        ] {
            let ranges: Vec<_> = (0..chunks)
                .map(|c| chunk_range(total, chunks, align, c))
                .collect();
            assert_eq!(ranges[0].start, 0);
            assert_eq!(ranges[chunks - 1].end, total);
            for w in ranges.windows(2) {
                assert_eq!(w[0].end, w[1].start, "{total} in {chunks} at {align}");
                assert!(
                    w[0].end % align == 0 || w[0].end == total,
                    "{total} in {chunks} at {align}"
                );
            }
        }
        assert_eq!(chunk_count(289, 2, 32), 8);
        assert_eq!(chunk_count(160, 2, 32), 4);
        assert_eq!(chunk_count(81, 2, 16), 4);
        assert_eq!(chunk_count(10, 2, 32), 2);
        assert_eq!(chunk_count(1000, 1, 32), 1);
    }

    #[test]
    fn split_without_slots_runs_every_chunk() {
        for chunks in [0, 1, 5, 40] {
            let hits: Vec<AtomicUsize> = (0..chunks).map(|_| AtomicUsize::new(0)).collect();
            split(2, chunks, |c| {
                hits[c].fetch_add(1, Ordering::Relaxed);
            });
            assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1));
        }
    }

    #[test]
    fn a_stalled_thread_leaves_its_share_to_the_other() {
        // Chunk 0 waits until the other 19 are done, which only the other thread can do;
        // with a fixed share per thread it would time out with about half of them done.
        let done = AtomicUsize::new(0);
        let mut slots = vec![0usize; 2];
        split_mut(&mut slots, 20, |n, claims| {
            for c in claims {
                if c == 0 {
                    let t = Instant::now();
                    while done.load(Ordering::SeqCst) < 19 && t.elapsed() < Duration::from_secs(20)
                    {
                        std::thread::yield_now();
                    }
                }
                done.fetch_add(1, Ordering::SeqCst);
                *n += 1;
            }
        });
        slots.sort();
        assert_eq!(slots, vec![1, 19], "chunks per thread");
    }

    #[test]
    fn concurrent_callers_each_get_all_their_chunks() {
        // Several threads split at once: one gets the team, the others fall back to rayon.
        let total = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..300 {
                        let hits = AtomicUsize::new(0);
                        split(2, 3, |_| {
                            hits.fetch_add(1, Ordering::Relaxed);
                        });
                        assert_eq!(hits.load(Ordering::Relaxed), 3);
                        total.fetch_add(3, Ordering::Relaxed);
                    }
                });
            }
        });
        assert_eq!(total.load(Ordering::Relaxed), 4 * 300 * 3);
    }

    #[test]
    fn a_panicking_chunk_is_raised_after_all_threads_finish() {
        for panicking in [0usize, 1] {
            let running = AtomicUsize::new(0);
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                split(2, 2, |c| {
                    running.fetch_add(1, Ordering::SeqCst);
                    if c == panicking {
                        running.fetch_sub(1, Ordering::SeqCst);
                        panic!("chunk {c}");
                    }
                    std::thread::sleep(Duration::from_millis(20));
                    running.fetch_sub(1, Ordering::SeqCst);
                })
            }));
            assert!(r.is_err(), "the panic of chunk {panicking} was lost");
            assert_eq!(
                running.load(Ordering::SeqCst),
                0,
                "a chunk was still running after the split returned"
            );
            // The team still works afterwards.
            let hits = AtomicUsize::new(0);
            split(2, 2, |_| {
                hits.fetch_add(1, Ordering::Relaxed);
            });
            assert_eq!(hits.load(Ordering::Relaxed), 2);
        }
    }

    #[test]
    fn sleeping_helpers_are_woken() {
        // Longer than the spin window, so the helper has gone to sleep before each job; the
        // caller's first chunk waits for the other to start, which only a woken helper can.
        for _ in 0..3 {
            std::thread::sleep(spin_window() + Duration::from_millis(5));
            let started = AtomicUsize::new(0);
            let mut slots = vec![0usize; 2];
            split_mut(&mut slots, 2, |n, claims| {
                for _ in claims {
                    started.fetch_add(1, Ordering::SeqCst);
                    let t = Instant::now();
                    while started.load(Ordering::SeqCst) < 2 && t.elapsed() < Duration::from_secs(5)
                    {
                        std::hint::spin_loop();
                    }
                    *n += 1;
                }
            });
            assert_eq!(slots, vec![1, 1], "the helper never ran");
        }
    }
}
