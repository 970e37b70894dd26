//! Approximate nearest-face search: an HNSW graph (Malkov and Yashunin,
//! <https://arxiv.org/abs/1603.09320>) built with the `usearch` crate over the enrolled unit
//! embeddings, inner-product metric (for unit vectors the same order as L2).
//!
//! [`crate::SearchIndex`] builds one when a gallery holds at least [`ANN_MIN_FACES`] faces;
//! below that the exact matrix pass is fast enough (13.5 ms per query at 10^5 faces on one
//! core, `facenet bench search`) and has no build cost. The graph can be saved beside the
//! gallery and reloaded, keyed by the face ids it was built from, so that a CLI call does not
//! rebuild it.

use std::path::Path;

use serde::{Deserialize, Serialize};
use usearch::{Index, IndexOptions, MetricKind, ScalarKind};

use crate::{GalleryError, Result};

/// Galleries with at least this many faces are searched through the HNSW graph.
pub const ANN_MIN_FACES: usize = 50_000;

/// HNSW parameters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AnnConfig {
    /// Links per node (HNSW's M).
    pub connectivity: usize,
    /// Candidate list size while inserting (efConstruction).
    pub expansion_add: usize,
    /// Candidate list size while searching (ef).
    pub expansion_search: usize,
}

impl Default for AnnConfig {
    /// M = 16, efConstruction = 128, ef = 128. On 10^5 face-like embeddings (the test
    /// `ann_recall_on_100k`) the nearest identity agrees with exact search on every query;
    /// the nearest face itself (recall@1) varies between runs and machines, 0.98 to 1.000
    /// (threads insert in a different order each time; ef = 256 did not raise it).
    fn default() -> Self {
        Self {
            connectivity: 16,
            expansion_add: 128,
            expansion_search: 128,
        }
    }
}

/// Searches and insertions one graph serves at once. usearch keeps a working context per
/// concurrent caller, reserved ahead, and fails a call that finds none free; a service's
/// workers (`--workers`, 16 by default) and a Python program's threads search one shared
/// graph, so more contexts are reserved than they use, and callers beyond them wait
/// ([`AnnIndex`]'s gate) instead of failing.
pub const ANN_CONTEXTS: usize = 64;

/// An HNSW graph over rows `0..n` of an embedding matrix.
pub struct AnnIndex {
    index: Index,
    config: AnnConfig,
    dim: usize,
    /// Calls in progress, at most [`ANN_CONTEXTS`].
    busy: std::sync::Mutex<usize>,
    freed: std::sync::Condvar,
}

impl std::fmt::Debug for AnnIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AnnIndex")
            .field("faces", &self.index.size())
            .field("dim", &self.dim)
            .field("config", &self.config)
            .finish()
    }
}

fn err(what: &str, e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> GalleryError {
    GalleryError::Ann {
        what: what.into(),
        source: e.into(),
    }
}

impl AnnIndex {
    fn empty(dim: usize, config: AnnConfig) -> Result<Self> {
        let options = IndexOptions {
            dimensions: dim,
            metric: MetricKind::IP,
            quantization: ScalarKind::F32,
            connectivity: config.connectivity,
            expansion_add: config.expansion_add,
            expansion_search: config.expansion_search,
            multi: false,
        };
        let index = Index::new(&options).map_err(|e| err("create", e))?;
        Ok(Self {
            index,
            config,
            dim,
            busy: std::sync::Mutex::new(0),
            freed: std::sync::Condvar::new(),
        })
    }

    /// Runs `f` holding one of the [`ANN_CONTEXTS`] places (waiting for one if all are taken).
    fn gated<T>(&self, f: impl FnOnce() -> T) -> T {
        let lock = || self.busy.lock().unwrap_or_else(|p| p.into_inner());
        let mut busy = lock();
        while *busy >= ANN_CONTEXTS {
            busy = self.freed.wait(busy).unwrap_or_else(|p| p.into_inner());
        }
        *busy += 1;
        drop(busy);
        let out = f();
        *lock() -= 1;
        self.freed.notify_one();
        out
    }

    /// Reserves room for `capacity` rows and [`ANN_CONTEXTS`] concurrent calls.
    fn reserve(&self, capacity: usize) -> Result<()> {
        self.index
            .reserve_capacity_and_threads(capacity, ANN_CONTEXTS)
            .map_err(|e| err("reserve", e))
    }

    /// Builds the graph over the rows of `data` (`n x dim`, row-major) on `threads` threads.
    pub fn build(data: &[f32], dim: usize, config: AnnConfig, threads: usize) -> Result<Self> {
        if dim == 0 || !data.len().is_multiple_of(dim) {
            return Err(GalleryError::Invalid(format!(
                "approximate index: {} floats are not rows of {dim}",
                data.len()
            )));
        }
        let n = data.len() / dim;
        let threads = threads.clamp(1, n.max(1));
        let ann = Self::empty(dim, config)?;
        ann.index
            .reserve_capacity_and_threads(n, threads)
            .map_err(|e| err("reserve", e))?;
        // usearch inserts concurrently once capacity and threads are reserved.
        let failed = std::sync::Mutex::new(None);
        std::thread::scope(|s| {
            for t in 0..threads {
                let (ann, failed) = (&ann, &failed);
                s.spawn(move || {
                    for i in (t..n).step_by(threads) {
                        if let Err(e) = ann.index.add(i as u64, &data[i * dim..(i + 1) * dim]) {
                            *failed.lock().expect("lock") = Some(err("insert", e));
                            return;
                        }
                    }
                });
            }
        });
        if let Some(e) = failed.into_inner().expect("lock") {
            return Err(e);
        }
        // From here on the graph serves concurrent searches.
        ann.reserve(n)?;
        Ok(ann)
    }

    /// Adds row `key` (growing the graph's capacity by half when it is full).
    pub fn add(&self, key: u64, vector: &[f32]) -> Result<()> {
        if vector.len() != self.dim {
            return Err(GalleryError::Invalid(format!(
                "the embedding has {} values, the index {}",
                vector.len(),
                self.dim
            )));
        }
        self.gated(|| {
            if self.index.size() >= self.index.capacity() {
                let grown = (self.index.capacity() * 3 / 2).max(self.index.size() + 1024);
                self.reserve(grown)?;
            }
            self.index.add(key, vector).map_err(|e| err("insert", e))
        })
    }

    /// Removes row `key` from the graph (searches no longer return it).
    pub fn remove(&self, key: u64) -> Result<()> {
        self.gated(|| self.index.remove(key).map_err(|e| err("remove", e)))?;
        Ok(())
    }

    /// Number of faces in the graph.
    pub fn len(&self) -> usize {
        self.index.size()
    }

    /// Whether the graph is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The parameters it was built with.
    pub fn config(&self) -> AnnConfig {
        self.config
    }

    /// The (approximately) `k` nearest rows with their dot products, nearest first.
    pub fn nearest(&self, q: &[f32], k: usize) -> Result<Vec<(usize, f32)>> {
        if q.len() != self.dim {
            return Err(GalleryError::Invalid(format!(
                "query has {} values, the index {}",
                q.len(),
                self.dim
            )));
        }
        let m = self
            .gated(|| self.index.search(q, k))
            .map_err(|e| err("search", e))?;
        // usearch's IP distance is 1 - dot.
        Ok(m.keys
            .iter()
            .zip(&m.distances)
            .map(|(&key, &d)| (key as usize, 1.0 - d))
            .collect())
    }

    /// Writes the graph to `path` (atomically: a temporary file, then a rename).
    pub fn save(&self, path: &Path) -> Result<()> {
        let tmp = path.with_extension("tmp");
        let s = tmp
            .to_str()
            .ok_or_else(|| err("save", "path is not UTF-8"))?;
        self.index.save(s).map_err(|e| err("save", e))?;
        std::fs::rename(&tmp, path).map_err(|e| err("save", e))
    }

    /// Reads a graph written by [`AnnIndex::save`].
    pub fn load(path: &Path, dim: usize, config: AnnConfig) -> Result<Self> {
        let ann = Self::empty(dim, config)?;
        let s = path
            .to_str()
            .ok_or_else(|| err("load", "path is not UTF-8"))?;
        ann.index
            .load(s)
            .map_err(|e| err(&format!("load {}", path.display()), e))?;
        if ann.index.dimensions() != dim {
            return Err(err(
                &format!("load {}", path.display()),
                format!("{}-d index for {dim}-d embeddings", ann.index.dimensions()),
            ));
        }
        ann.index.change_expansion_search(config.expansion_search);
        ann.reserve(ann.index.size())?;
        Ok(ann)
    }
}
