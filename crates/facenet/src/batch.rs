//! Batching of embedding work from many threads: a service's concurrent requests each bring a
//! face or two; one worker thread gathers them (up to a batch size, or for a few milliseconds)
//! and runs the network once for all, so that many small clients get batch throughput.
//!
//! The queue is bounded: when it is full, [`Batcher::embed`] fails at once with
//! [`Error::Busy`] instead of letting work pile up (a service answers 503 with
//! `Retry-After`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::time::{Duration, Instant};

use image::RgbImage;

use crate::embed::{Embedder, Embedding};
use crate::error::{Error, Result};

/// How the worker gathers work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchConfig {
    /// Most faces per forward pass.
    pub max_batch: usize,
    /// Longest wait for more work once the first request of a batch has arrived.
    pub max_wait: Duration,
    /// Most requests waiting; one more is refused with [`Error::Busy`].
    pub queue: usize,
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self {
            max_batch: 16,
            max_wait: Duration::from_millis(3),
            queue: 64,
        }
    }
}

/// Upper bounds of the batch-size histogram (faces per forward pass).
pub const BATCH_BUCKETS: [usize; 7] = [1, 2, 4, 8, 16, 32, 64];

/// Counters of a batcher, for metrics.
#[derive(Debug, Default)]
pub struct BatchStats {
    queued: AtomicUsize,
    batches: AtomicU64,
    faces: AtomicU64,
    /// Batches with at most `BATCH_BUCKETS[i]` faces (not cumulative), then the rest.
    sizes: [AtomicU64; BATCH_BUCKETS.len() + 1],
}

/// A copy of [`BatchStats`] at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchSnapshot {
    /// Requests waiting now.
    pub queued: usize,
    /// Forward passes run.
    pub batches: u64,
    /// Faces embedded.
    pub faces: u64,
    /// Cumulative counts of batches of at most `BATCH_BUCKETS[i]` faces; the last is all.
    pub cumulative: Vec<u64>,
}

impl BatchStats {
    /// The counters now.
    pub fn snapshot(&self) -> BatchSnapshot {
        let mut sum = 0;
        let cumulative = self
            .sizes
            .iter()
            .map(|c| {
                sum += c.load(Ordering::Relaxed);
                sum
            })
            .collect();
        BatchSnapshot {
            queued: self.queued.load(Ordering::Relaxed),
            batches: self.batches.load(Ordering::Relaxed),
            faces: self.faces.load(Ordering::Relaxed),
            cumulative,
        }
    }

    fn record(&self, n: usize) {
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.faces.fetch_add(n as u64, Ordering::Relaxed);
        let bucket = BATCH_BUCKETS
            .iter()
            .position(|&b| n <= b)
            .unwrap_or(BATCH_BUCKETS.len());
        self.sizes[bucket].fetch_add(1, Ordering::Relaxed);
    }
}

type Reply = mpsc::Sender<Result<(Vec<RgbImage>, Vec<Embedding>)>>;

struct Job {
    crops: Vec<RgbImage>,
    reply: Reply,
}

/// A worker thread that embeds crops for many callers, in shared batches.
#[derive(Debug)]
pub struct Batcher {
    tx: SyncSender<Job>,
    stats: Arc<BatchStats>,
    config: BatchConfig,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Job({} crops)", self.crops.len())
    }
}

impl Batcher {
    /// Starts the worker thread over `embedder`; it ends when the batcher is dropped.
    pub fn start(embedder: Arc<Embedder>, config: BatchConfig) -> Result<Self> {
        let config = BatchConfig {
            max_batch: config.max_batch.max(1),
            queue: config.queue.max(1),
            ..config
        };
        let (tx, rx) = mpsc::sync_channel(config.queue);
        let stats = Arc::new(BatchStats::default());
        let worker_stats = stats.clone();
        std::thread::Builder::new()
            .name("facenet-embed".into())
            .spawn(move || work(&embedder, &rx, config, &worker_stats))
            .map_err(|source| Error::Io {
                path: "the embedding worker thread".into(),
                source,
            })?;
        Ok(Self { tx, stats, config })
    }

    /// The configuration in force.
    pub fn config(&self) -> BatchConfig {
        self.config
    }

    /// The counters.
    pub fn stats(&self) -> BatchSnapshot {
        self.stats.snapshot()
    }

    /// Embeds `crops` in the next batch; gives them back with their embeddings. Fails at once
    /// with [`Error::Busy`] when the queue is full.
    pub fn embed(&self, crops: Vec<RgbImage>) -> Result<(Vec<RgbImage>, Vec<Embedding>)> {
        if crops.is_empty() {
            return Ok((crops, Vec::new()));
        }
        let (reply, answer) = mpsc::channel();
        self.stats.queued.fetch_add(1, Ordering::Relaxed);
        match self.tx.try_send(Job { crops, reply }) {
            Ok(()) => {}
            Err(e) => {
                let queued = self.stats.queued.fetch_sub(1, Ordering::Relaxed) - 1;
                return Err(match e {
                    TrySendError::Full(_) => Error::Busy { queued },
                    TrySendError::Disconnected(_) => Error::WorkerGone,
                });
            }
        }
        answer.recv().map_err(|_| Error::WorkerGone)?
    }
}

fn work(embedder: &Embedder, rx: &Receiver<Job>, config: BatchConfig, stats: &BatchStats) {
    while let Ok(first) = rx.recv() {
        let deadline = Instant::now() + config.max_wait;
        let mut n = first.crops.len();
        let mut jobs = vec![first];
        while n < config.max_batch {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(job) => {
                    n += job.crops.len();
                    jobs.push(job);
                }
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
            }
        }
        stats.queued.fetch_sub(jobs.len(), Ordering::Relaxed);
        run(embedder, jobs, stats);
    }
}

/// One forward pass for all jobs; if it fails, each job alone, so that each caller gets the
/// error of its own input.
fn run(embedder: &Embedder, jobs: Vec<Job>, stats: &BatchStats) {
    let counts: Vec<usize> = jobs.iter().map(|j| j.crops.len()).collect();
    let (replies, crops): (Vec<Reply>, Vec<Vec<RgbImage>>) =
        jobs.into_iter().map(|j| (j.reply, j.crops)).unzip();
    let all: Vec<RgbImage> = crops.into_iter().flatten().collect();
    match embedder.embed(&all) {
        Ok(embeddings) => {
            stats.record(all.len());
            let mut crops = all.into_iter();
            let mut embeddings = embeddings.into_iter();
            for (reply, n) in replies.into_iter().zip(counts) {
                let c: Vec<_> = crops.by_ref().take(n).collect();
                let e: Vec<_> = embeddings.by_ref().take(n).collect();
                // A caller that went away (timed out) no longer needs the answer.
                let _ = reply.send(Ok((c, e)));
            }
        }
        Err(_) if replies.len() > 1 => {
            let mut crops = all.into_iter();
            for (reply, n) in replies.into_iter().zip(counts) {
                let c: Vec<_> = crops.by_ref().take(n).collect();
                let result = embedder.embed(&c).map(|e| {
                    stats.record(n);
                    (c, e)
                });
                let _ = reply.send(result);
            }
        }
        Err(e) => {
            let _ = replies.into_iter().next().map(|r| r.send(Err(e)));
        }
    }
}
