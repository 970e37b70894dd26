//! How many threads a single image's forward pass is split across, chosen by timing the passes
//! themselves.
//!
//! Splitting every convolution across the cores pays while the cores are free: one image on two
//! free Zen 4 cores ran at 65 img/s split and 41 on one thread. Beside another busy process it
//! turns around. With a busy loop on one of the two cores the split ran at 25 img/s and one
//! thread at 41: three runnable threads now share two cores, and at each of the 106 joins the
//! pass waits for whichever of its threads the scheduler has just set aside (ONNX Runtime,
//! whose pool splits the same way, fell from 65 to 18 img/s there).
//!
//! So the passes measure themselves. Each single-image pass records its time per multiply-add
//! under the thread count it ran on, smoothed over the last 16 or so passes (which is what a
//! load that comes and goes needs: beside a process busy 50 ms of every 100, a split pass
//! takes 15 or 40 ms by the phase it falls in, one thread 24 ms in either, and the split's
//! average, the inverse of its throughput, is still the lower). Now and then one pass tries
//! a neighbouring count, and the count moves when that pass was at least [`MARGIN`] faster
//! than the smoothed time of the count in use:
//!
//! - on all threads, a probe with one fewer runs [`FIRST_INTERVAL`] passes after the count
//!   was taken (another process may be there from the start), then at intervals that double
//!   while the probes lose, up to one every [`BACKSTOP`] passes (16, 32, 64, ... 1,024: a
//!   first probe spoiled by something passing, such as the move of the weights onto huge
//!   pages after 8 passes, is tried again soon, and a steady load from the start is still
//!   found); and besides, whenever the smoothed time has risen [`RISE`] above the best it has
//!   been since the last probe (another process has come). On free cores the split's pace
//!   holds, and almost nothing is spent on probes (8 in the first 3,000 passes);
//! - on fewer threads, whose time does not show whether the other cores have come free, one
//!   more (or one fewer) is tried every [`FIRST_INTERVAL`] passes, backing off to every
//!   [`MAX_INTERVAL`] while the probes lose.
//!
//! The thread count changes the result only by rounding: a split cuts rows, channels or
//! tiles, never a sum, but whether Winograd pays on a map depends on its tiles per thread, as
//! it already does between a batch's groups (test
//! `a_single_image_agrees_on_one_thread_and_on_two`).

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

/// Passes between probes after a change of count (and at the start).
const FIRST_INTERVAL: u32 = 16;

/// The longest interval between probes, reached by doubling while probes lose.
const MAX_INTERVAL: u32 = 128;

/// On all threads, the longest interval between probes, reached by doubling while probes
/// lose: a probe runs at least this often, whatever the smoothed time says.
const BACKSTOP: u32 = 1024;

/// How far the smoothed time on all threads must rise above its best to call a probe.
const RISE: f64 = 0.25;

/// How much faster a probe must be than the smoothed time of the count in use to replace it.
const MARGIN: f64 = 0.10;

/// Weight of the newest pass in the smoothed time.
const SMOOTHING: f64 = 1.0 / 16.0;

/// Passes on a count before its smoothed time is compared with anything.
const MIN_PASSES: u32 = 8;

/// The thread count for a single image's forward pass on up to `max` threads (see the module).
/// Shared by every caller of one network; concurrent updates may interleave, which at worst
/// delays a change by a probe.
#[derive(Debug)]
pub(super) struct SplitChoice {
    max: usize,
    /// The count in use.
    current: AtomicUsize,
    /// Smoothed seconds per multiply-add under `current`, as `f64` bits.
    recent: AtomicU64,
    /// The lowest `recent` since the last probe (0: no probe on this count yet), as `f64` bits.
    best: AtomicU64,
    /// Passes recorded on `current` since it was taken.
    passes: AtomicU32,
    /// Passes since the last probe.
    since: AtomicU32,
    /// Passes between probes.
    interval: AtomicU32,
    /// Which way the next probe goes where both are possible: one more thread (true) or one
    /// fewer (false); the two alternate.
    up: AtomicBool,
    /// Passes recorded on each thread count (index 0 unused), probes included.
    on: Vec<AtomicU64>,
}

fn load(a: &AtomicU64) -> f64 {
    f64::from_bits(a.load(Ordering::Relaxed))
}

fn store(a: &AtomicU64, v: f64) {
    a.store(v.to_bits(), Ordering::Relaxed);
}

impl SplitChoice {
    /// Starts with all `max` threads.
    pub(super) fn new(max: usize) -> Self {
        let max = max.max(1);
        SplitChoice {
            max,
            current: AtomicUsize::new(max),
            recent: AtomicU64::new(0),
            best: AtomicU64::new(0),
            passes: AtomicU32::new(0),
            since: AtomicU32::new(0),
            interval: AtomicU32::new(FIRST_INTERVAL),
            up: AtomicBool::new(false),
            on: (0..=max).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// How many passes ran on each thread count so far, probes included: `(threads, passes)`
    /// for the counts that ran any.
    pub(super) fn passes_by_threads(&self) -> Vec<(usize, u64)> {
        (1..self.on.len())
            .map(|t| (t, self.on[t].load(Ordering::Relaxed)))
            .filter(|&(_, n)| n > 0)
            .collect()
    }

    /// The count in use now.
    pub(super) fn current(&self) -> usize {
        self.current.load(Ordering::Relaxed)
    }

    /// The thread count for the next pass: the count in use, or a probe's neighbour of it.
    pub(super) fn next(&self) -> usize {
        let current = self.current();
        if self.max == 1 {
            return 1;
        }
        let since = self.since.fetch_add(1, Ordering::Relaxed) + 1;
        if since < FIRST_INTERVAL || self.passes.load(Ordering::Relaxed) < MIN_PASSES {
            return current;
        }
        if since < self.interval.load(Ordering::Relaxed) {
            // Before the next scheduled probe, only a rise on all threads calls one.
            let (recent, best) = (load(&self.recent), load(&self.best));
            let rise = best != 0.0 && recent > best * (1.0 + RISE);
            if current != self.max || !rise {
                return current;
            }
        }
        self.since.store(0, Ordering::Relaxed);
        let up = if current == 1 {
            true
        } else if current == self.max {
            false
        } else {
            !self.up.fetch_xor(true, Ordering::Relaxed)
        };
        if up { current + 1 } else { current - 1 }
    }

    /// Records a pass of `macs` multiply-adds that took `elapsed` on `threads` threads.
    pub(super) fn record(&self, threads: usize, elapsed: Duration, macs: u64) {
        if let Some(n) = self.on.get(threads) {
            n.fetch_add(1, Ordering::Relaxed);
        }
        if self.max == 1 || macs == 0 {
            return;
        }
        let c = elapsed.as_secs_f64() / macs as f64;
        let passes = self.passes.load(Ordering::Relaxed);
        let recent = load(&self.recent);
        if threads == self.current() {
            let recent = if passes == 0 {
                c
            } else {
                recent + SMOOTHING * (c - recent)
            };
            store(&self.recent, recent);
            self.passes.store(passes + 1, Ordering::Relaxed);
            // The best is first set by a lost probe (see `next`), then follows the lows.
            let best = load(&self.best);
            if best != 0.0 && recent < best {
                store(&self.best, recent);
            }
            return;
        }
        // A probe: it takes over if it beat the smoothed time; else the best restarts from
        // now and the interval grows.
        if passes > 0 && c < recent * (1.0 - MARGIN) {
            self.current.store(threads, Ordering::Relaxed);
            self.interval.store(FIRST_INTERVAL, Ordering::Relaxed);
            store(&self.recent, c);
            store(&self.best, 0.0);
            self.passes.store(1, Ordering::Relaxed);
        } else {
            let most = if self.current() == self.max {
                BACKSTOP
            } else {
                MAX_INTERVAL
            };
            let i = self.interval.load(Ordering::Relaxed);
            self.interval.store((i * 2).min(most), Ordering::Relaxed);
            store(&self.best, recent);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `passes` passes in which a pass on `t` threads takes `time(t)` ms; returns the
    /// thread count of every pass.
    fn drive(
        choice: &SplitChoice,
        passes: usize,
        mut time: impl FnMut(usize) -> f64,
    ) -> Vec<usize> {
        (0..passes)
            .map(|_| {
                let t = choice.next();
                choice.record(t, Duration::from_secs_f64(time(t) / 1e3), 1_000_000);
                t
            })
            .collect()
    }

    #[test]
    fn free_cores_keep_the_split_and_probe_ever_less_often() {
        // Two threads 1.6x faster than one, as on two free cores: the split's pace holds, so
        // the only probes are the scheduled ones, 16, 32, 64, ... 1,024 passes apart.
        let choice = SplitChoice::new(2);
        let ran = drive(&choice, 3000, |t| if t == 2 { 15.0 } else { 24.0 });
        assert_eq!(choice.current(), 2);
        let probes: Vec<usize> = (0..ran.len()).filter(|&i| ran[i] == 1).collect();
        assert_eq!(probes, [15, 47, 111, 239, 495, 1007, 2031]);
        // Every pass is counted under the count it ran on, the probes too.
        assert_eq!(choice.passes_by_threads(), [(1, 7), (2, 2993)]);
        // A machine that slows down a little (the host's drift) calls no probe either.
        let ran = drive(&choice, 500, |t| if t == 2 { 18.0 } else { 28.8 });
        assert!(ran.iter().filter(|&&t| t == 1).count() <= 1, "{ran:?}");
    }

    #[test]
    fn a_busy_core_moves_the_pass_to_one_thread_and_back_when_it_is_free() {
        let choice = SplitChoice::new(2);
        let free = |t: usize| if t == 2 { 15.0 } else { 24.0 };
        let busy = |t: usize| if t == 2 { 40.0 } else { 24.0 };
        drive(&choice, 300, free);
        assert_eq!(choice.current(), 2);
        // Another process takes a core: within one backed-off interval the pass is on one
        // thread, and stays there.
        let ran = drive(&choice, 300, busy);
        // (The first pass of the run on one thread: a probe called before the smoothed time
        // caught up may lose first.)
        let moved = (1..ran.len())
            .find(|&i| ran[i - 1] == 1 && ran[i] == 1)
            .unwrap();
        assert!(
            moved <= 2 * FIRST_INTERVAL as usize,
            "moved after {moved} passes"
        );
        assert_eq!(choice.current(), 1);
        // From there only probes go back to two threads, backing off: 16, 32, 64, 128 apart.
        let twos: Vec<usize> = (moved..ran.len()).filter(|&i| ran[i] == 2).collect();
        assert!(
            twos.len() <= 4,
            "moved at {moved}, on two threads at {twos:?}"
        );
        // The core is free again: the first probe on two threads wins.
        let ran = drive(&choice, 200, free);
        let back = ran.iter().position(|&t| t == 2).unwrap();
        assert!(back < MAX_INTERVAL as usize, "back after {back} passes");
        // And stays there, probed on the schedule that restarts with the change.
        let probes: Vec<usize> = (back..ran.len()).filter(|&i| ran[i] == 1).collect();
        let due: Vec<usize> = [16, 48, 112]
            .iter()
            .map(|d| back + d)
            .filter(|&i| i < ran.len())
            .collect();
        assert_eq!(probes, due);
        assert_eq!(choice.current(), 2);
    }

    #[test]
    fn a_spoiled_first_probe_is_tried_again_soon() {
        // A busy core from the start: two threads 40 ms a pass, one 24. Passes 10 to 40 run
        // beside something passing (the weights' move to huge pages): one thread then takes
        // 48 ms, so the first probe loses. The next, 32 passes later, moves the pass.
        let choice = SplitChoice::new(2);
        let mut pass = 0;
        let ran = drive(&choice, 200, |t| {
            pass += 1;
            match t {
                2 => 40.0,
                _ if (10..40).contains(&pass) => 48.0,
                _ => 24.0,
            }
        });
        assert_eq!(ran[15], 1, "the first probe at pass 15");
        assert_eq!(ran[16], 2, "the first probe lost");
        let moved = (1..ran.len())
            .find(|&i| ran[i - 1] == 1 && ran[i] == 1)
            .unwrap();
        assert!(moved <= 48, "moved after {moved} passes");
        assert_eq!(choice.current(), 1);
    }

    #[test]
    fn the_count_walks_one_step_per_winning_probe_and_small_gains_do_not_move_it() {
        // Eight threads, each one fewer 2 % faster than the last down to five: below the
        // margin, so the count stays at eight (probed by the backstop only).
        let choice = SplitChoice::new(8);
        drive(&choice, 3000, |t| {
            10.0 * (1.0 - 0.02 * (8 - t.max(5)) as f64)
        });
        assert_eq!(choice.current(), 8);
        // Each one fewer 20 % faster down to six, slower below: the count settles at six.
        let choice = SplitChoice::new(8);
        drive(&choice, 3000, |t| {
            if t >= 6 {
                10.0 * 0.8f64.powi(8 - t as i32)
            } else {
                20.0
            }
        });
        assert_eq!(choice.current(), 6);
    }

    #[test]
    fn a_load_that_comes_and_goes_keeps_the_faster_mean() {
        // Another process busy 50 ms of every 100: a split pass takes 15 ms when it falls in the
        // quiet half and 40 ms in the busy one, one thread 24 ms in either. The split's mean is
        // the lower (3.3 passes of 15 ms and 1.25 of 40 per 100 ms: 21.8 ms a pass).
        let choice = SplitChoice::new(2);
        let mut clock = 0.0f64;
        let mut on = [0usize; 3];
        for _ in 0..5000 {
            let t = choice.next();
            let ms = match (t, clock % 100.0 < 50.0) {
                (2, true) => 15.0,
                (2, false) => 40.0,
                _ => 24.0,
            };
            clock += ms;
            on[t] += 1;
            choice.record(t, Duration::from_secs_f64(ms / 1e3), 1_000_000);
        }
        assert!(
            on[2] > 20 * on[1],
            "passes on one thread {}, on two {}",
            on[1],
            on[2]
        );
    }

    #[test]
    fn one_thread_never_probes() {
        let choice = SplitChoice::new(1);
        assert!(drive(&choice, 200, |_| 10.0).iter().all(|&t| t == 1));
    }
}
