//! The service's tokio runtime.

use crate::ServeConfig;

/// Threads of the blocking pool beyond `--workers`: key checks and store operations (short).
pub const SPARE_BLOCKING_THREADS: usize = 8;

/// The service's runtime. Its blocking pool, where key checks, store operations and image work
/// run, is bounded to `--workers` + [`SPARE_BLOCKING_THREADS`] threads: each thread that has
/// run the network keeps its buffers (tens of MiB) for the next request, and tokio's default
/// of 512 threads let overload (thousands of key checks a second) grow the pool, and with it
/// the memory kept, to some 200 threads and 2.4 GiB.
pub fn runtime(config: &ServeConfig) -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(config.workers.max(1) + SPARE_BLOCKING_THREADS)
        .build()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn the_blocking_pool_is_bounded_by_the_workers() {
        let config = crate::ServeConfig {
            workers: 3,
            ..Default::default()
        };
        let rt = super::runtime(&config).unwrap();
        let (now, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        rt.block_on(async {
            let tasks: Vec<_> = (0..64)
                .map(|_| {
                    let (now, most) = (now.clone(), most.clone());
                    tokio::task::spawn_blocking(move || {
                        let n = now.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(n, Ordering::SeqCst);
                        std::thread::sleep(std::time::Duration::from_millis(20));
                        now.fetch_sub(1, Ordering::SeqCst);
                    })
                })
                .collect();
            for t in tasks {
                t.await.unwrap();
            }
        });
        // 64 blocking tasks at once ran on at most workers + spare threads (tokio's default
        // would have started 64), and more than one did run at a time.
        let most = most.load(Ordering::SeqCst);
        assert!(most <= 3 + super::SPARE_BLOCKING_THREADS, "{most} at once");
        assert!(most > 1, "{most} at once");
    }
}
