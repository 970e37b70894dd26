//! Helpers shared by the CLI's test binaries.

/// Trials of a crash-safety test, from `FACENET_CRASH_TRIALS` (default 10; docs/reliability.md
/// records runs of 50).
pub fn crash_trials() -> usize {
    std::env::var("FACENET_CRASH_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10)
}

/// A varying number below `n` (clock nanoseconds): when to kill.
pub fn jitter(n: u64) -> u64 {
    let ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    u64::from(ns) % n.max(1)
}
