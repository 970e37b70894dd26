//! What every handler shares: the pipeline, the store, the galleries opened so far, and the
//! permits that bound the work in progress.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use axum::http::StatusCode;
use facenet::batch::BatchConfig;
use facenet::pipeline::FacePipeline;
use facenet_gallery::{Recognizer, Tenants};
use tokio::sync::Semaphore;

use crate::config::{budget_kilopixels, kilopixels};
use crate::{ApiError, ServeConfig, ServeError, api, metrics};

/// What every handler shares.
#[derive(Debug)]
pub struct AppState {
    pub(crate) pipeline: Arc<FacePipeline>,
    pub(crate) tenants: Arc<dyn Tenants>,
    permits: Arc<Semaphore>,
    /// The decode budget, in units of 1024 pixels.
    decode_budget: Arc<Semaphore>,
    /// Image work in progress (`--workers`).
    workers: Arc<Semaphore>,
    pub(crate) config: ServeConfig,
    pub(crate) metrics: metrics::Metrics,
    pub(crate) ready: AtomicBool,
    /// One recognizer per gallery opened so far: each holds its gallery in memory and
    /// catches up with other processes' writes before each search.
    galleries: std::sync::Mutex<std::collections::HashMap<String, Recognizer>>,
    /// The photo library of each gallery opened so far (SQLite stores).
    pub(crate) libraries: api::library::Libraries,
}

impl AppState {
    /// State over a pipeline (batching is switched on here) and a store.
    pub fn new(
        pipeline: FacePipeline,
        tenants: Arc<dyn Tenants>,
        config: ServeConfig,
    ) -> Result<Arc<Self>, ServeError> {
        let pipeline = pipeline.with_batching(BatchConfig {
            max_batch: config.batch.max(1),
            max_wait: Duration::from_millis(config.batch_wait_ms),
            queue: config.queue.max(1),
        })?;
        Ok(Self::with_pipeline(Arc::new(pipeline), tenants, config))
    }

    /// State over a pipeline already set up (batching included) and shared, e.g. by several
    /// services in one process.
    pub fn with_pipeline(
        pipeline: Arc<FacePipeline>,
        tenants: Arc<dyn Tenants>,
        config: ServeConfig,
    ) -> Arc<Self> {
        Arc::new(Self {
            pipeline,
            tenants,
            permits: Arc::new(Semaphore::new(config.queue.max(1))),
            decode_budget: Arc::new(Semaphore::new(budget_kilopixels(&config) as usize)),
            workers: Arc::new(Semaphore::new(config.workers.max(1))),
            config,
            metrics: metrics::Metrics::default(),
            ready: AtomicBool::new(false),
            galleries: Default::default(),
            libraries: Default::default(),
        })
    }

    /// Runs blocking work (decoding, the network, the store) on the blocking pool, holding one
    /// of the `queue` permits; without a free permit, 503 at once.
    pub async fn work<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let permit = self
            .permits
            .clone()
            .try_acquire_owned()
            .map_err(|_| self.full())?;
        self.blocking(move || {
            let _permit = permit;
            f()
        })
        .await
    }

    fn full(&self) -> ApiError {
        ApiError::busy(format!(
            "{} requests are in progress, the most this server takes (--queue); retry shortly",
            self.config.queue
        ))
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
    ) -> Result<T, ApiError> {
        tokio::task::spawn_blocking(f).await.map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("the request's worker failed: {e}"),
            )
        })?
    }

    /// [`AppState::work`] for work that decodes images holding `pixels` at its peak: within
    /// the `--queue` permits it waits for one of the `--workers`, then takes that much of the
    /// decode budget (`--decode-budget-mp`): more than the whole budget is 413 at once, more
    /// than is free now 503.
    pub async fn work_decoding<T: Send + 'static>(
        &self,
        pixels: u64,
        f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let need = kilopixels(pixels);
        let budget = self.config.decode_budget_mp;
        if need > budget_kilopixels(&self.config) {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "the images of this request decode to {:.1} megapixels at once; this server \
                     decodes at most {budget} (--decode-budget-mp): send fewer or smaller images",
                    pixels as f64 / (1u64 << 20) as f64
                ),
            ));
        }
        let permit = self
            .permits
            .clone()
            .try_acquire_owned()
            .map_err(|_| self.full())?;
        // Waiting for a worker holds only the request's body.
        let worker = self
            .workers
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "shutting down"))?;
        let held = self
            .decode_budget
            .clone()
            .try_acquire_many_owned(need)
            .map_err(|_| {
                ApiError::busy(format!(
                    "other requests are decoding images; this one needs {:.1} of the {budget} \
                     megapixels decoded at once (--decode-budget-mp); retry shortly",
                    pixels as f64 / (1u64 << 20) as f64
                ))
            })?;
        self.blocking(move || {
            let _held = (held, permit, worker);
            f()
        })
        .await
    }

    /// Requests in progress now.
    pub fn in_progress(&self) -> usize {
        self.config.queue.max(1) - self.permits.available_permits()
    }

    /// The face pipeline.
    pub fn pipeline(&self) -> &Arc<FacePipeline> {
        &self.pipeline
    }

    /// The recognizer of a gallery: the one this service holds, opened on first use.
    pub fn recognizer(&self, gallery: &str) -> Result<Recognizer, facenet_gallery::GalleryError> {
        let mut held = self.galleries.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(r) = held.get(gallery) {
            return Ok(r.clone());
        }
        let r = Recognizer::new(self.pipeline.clone(), self.tenants.gallery(gallery)?);
        held.insert(gallery.to_string(), r.clone());
        Ok(r)
    }
}
