//! `facenet serve`: the face pipeline and galleries of the library as an HTTP service.
//!
//! - JSON API under `/api/v1` (detect, embed, verify, identify, subjects and faces), images as
//!   multipart `file` parts or JSON base64, errors as `{"error", "detail"}`;
//! - API keys ([`facenet_gallery::tenants`]): each key opens one gallery of the store, `read`
//!   or `write`;
//! - the network on a worker thread that batches the faces of concurrent requests
//!   ([`facenet::batch`]); a bounded number of requests in progress, beyond which the answer
//!   is 503 with `Retry-After` at once;
//! - `/healthz`, `/readyz`, `/metrics` (Prometheus), `/openapi.json`, `/docs` (Swagger UI) and
//!   a web page at `/`.
//!
//! ```text
//! facenet keys create --gallery acme --role write
//! facenet serve --listen 127.0.0.1:8080
//! curl -H "x-api-key: $KEY" -F file=@photo.jpg http://127.0.0.1:8080/api/v1/identify
//! ```
//!
//! Every flow is the library's ([`facenet_gallery::Recognizer`], [`facenet::pipeline`]); this
//! crate translates HTTP to calls and results to JSON.
#![deny(missing_docs)]

pub mod api;
pub mod bench;
pub mod error;
pub mod input;
pub mod keys;
mod layers;
pub mod metrics;
mod page;
mod runtime;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRequestParts, Request};
use axum::http::{HeaderName, StatusCode, request::Parts};
use axum::middleware;
use facenet::batch::BatchConfig;
use facenet::pipeline::FacePipeline;
use facenet_gallery::{ApiKey, Recognizer, Role, Tenants};
use tokio::sync::Semaphore;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::{DefaultOnResponse, TraceLayer};

pub use error::{ApiError, ErrorBody};
use layers::{hide_internal, read_body, refuse_oversized, timeout};
pub use runtime::{SPARE_BLOCKING_THREADS, runtime};

/// Settings of the service.
#[derive(Debug, Clone)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
pub struct ServeConfig {
    /// Address to listen on (port 0: any free port; the address is printed).
    #[cfg_attr(feature = "clap", arg(long, default_value = "127.0.0.1:8080"))]
    pub listen: SocketAddr,
    /// Largest request body, MiB (larger: 413).
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 10))]
    pub body_limit_mib: usize,
    /// Longest a request may take, seconds (longer: 504).
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 30))]
    pub timeout_s: u64,
    /// Most requests in progress at once; one more is answered 503 with Retry-After.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 64))]
    pub queue: usize,
    /// Most faces per forward pass of the network, gathered across requests.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 16))]
    pub batch: usize,
    /// Longest wait for more faces once a batch has begun, milliseconds.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 3))]
    pub batch_wait_ms: u64,
    /// Most requests decoding images and finding faces at once; more wait their turn (within
    /// `--queue` and `--timeout-s`). Bounds the memory of the work in progress (some 20 MiB a
    /// request); 16 keeps the network's batches full.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 16))]
    pub workers: usize,
    /// Most image pixels decoded at once over all requests, megapixels (3 bytes each: 512 is
    /// 1.5 GiB). A request needing more than all of it: 413; while others hold it: 503. A
    /// small compressed upload can decode to a huge image; this bounds the memory it takes.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 512))]
    pub decode_budget_mp: u64,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            body_limit_mib: 10,
            timeout_s: 30,
            queue: 64,
            batch: 16,
            batch_wait_ms: 3,
            workers: 16,
            decode_budget_mp: 512,
        }
    }
}

/// The whole decode budget (`--decode-budget-mp`, 1 to 2^20 megapixels), in kilopixels.
fn budget_kilopixels(config: &ServeConfig) -> u32 {
    kilopixels(config.decode_budget_mp.clamp(1, 1 << 20) << 20)
}

/// Pixels in units of 1024 (rounded up), as the decode budget counts them.
fn kilopixels(pixels: u64) -> u32 {
    pixels.div_ceil(1024).min(u32::MAX as u64) as u32
}

/// Errors of starting or running the service.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The address could not be bound.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The runtime or the server failed.
    #[error("the server failed")]
    Io(#[from] std::io::Error),
    /// The pipeline could not be set up.
    #[error(transparent)]
    Facenet(#[from] facenet::Error),
    /// A gallery or key operation failed.
    #[error(transparent)]
    Gallery(#[from] facenet_gallery::GalleryError),
}

/// What every handler shares.
#[derive(Debug)]
pub struct AppState {
    pipeline: Arc<FacePipeline>,
    tenants: Arc<dyn Tenants>,
    permits: Arc<Semaphore>,
    /// The decode budget, in units of 1024 pixels.
    decode_budget: Arc<Semaphore>,
    /// Image work in progress (`--workers`).
    workers: Arc<Semaphore>,
    config: ServeConfig,
    metrics: metrics::Metrics,
    ready: AtomicBool,
    /// One recognizer per gallery opened so far: each holds its gallery in memory and
    /// catches up with other processes' writes before each search.
    galleries: std::sync::Mutex<std::collections::HashMap<String, Recognizer>>,
    /// The photo library of each gallery opened so far (SQLite stores).
    libraries: api::library::Libraries,
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

/// The caller, from its `x-api-key`: its key and a recognizer over its gallery.
#[derive(Debug)]
pub struct Tenant {
    /// The key (without secret).
    pub key: ApiKey,
    /// The recognizer over the key's gallery.
    pub recognizer: Recognizer,
}

impl Tenant {
    /// Refuses a read key (403) for `what`.
    pub fn require_write(&self, what: &str) -> Result<(), ApiError> {
        if self.key.role == Role::Write {
            Ok(())
        } else {
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                format!("this key's role is `read`: {what} needs a `write` key"),
            ))
        }
    }
}

/// The header that carries the key.
pub const API_KEY_HEADER: &str = "x-api-key";

impl FromRequestParts<Arc<AppState>> for Tenant {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, ApiError> {
        let unauthorized = |d: &str| ApiError::new(StatusCode::UNAUTHORIZED, d);
        let presented = parts
            .headers
            .get(API_KEY_HEADER)
            .ok_or_else(|| {
                unauthorized(
                    "missing x-api-key header: create a key with \
                     `facenet keys create --gallery NAME --role read`",
                )
            })?
            .to_str()
            .map_err(|_| unauthorized("x-api-key header: not a valid key"))?
            .trim()
            .to_string();
        let state = state.clone();
        tokio::task::spawn_blocking(move || {
            let key = facenet_gallery::tenants::authenticate(state.tenants.as_ref(), &presented)?
                .ok_or_else(|| unauthorized("x-api-key header: not a valid key"))?;
            Ok(Tenant {
                recognizer: state.recognizer(&key.gallery)?,
                key,
            })
        })
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
    }
}

/// The whole application: API, docs, metrics, page, with request ids, tracing, metrics,
/// timeout and body limit.
pub fn router(state: Arc<AppState>) -> Router {
    let request_id = HeaderName::from_static("x-request-id");
    let limit = state.config.body_limit_mib.saturating_mul(1 << 20);
    api::routes(state.clone())
        .merge(page::routes())
        .layer(middleware::from_fn_with_state(state.clone(), timeout))
        .layer(DefaultBodyLimit::max(limit))
        .layer(middleware::from_fn_with_state(limit, read_body))
        .layer(middleware::from_fn_with_state(limit, refuse_oversized))
        .layer(middleware::from_fn_with_state(state, metrics::record))
        .layer(middleware::from_fn(hide_internal))
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|req: &Request| {
                    let id = req
                        .headers()
                        .get("x-request-id")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("-");
                    tracing::info_span!("request", id, method = %req.method(), uri = %req.uri().path())
                })
                .on_response(DefaultOnResponse::new().level(tracing::Level::INFO))
                // Designed 503s are not failures; 500s are logged with their cause.
                .on_failure(()),
        )
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
}

/// Runs the service until SIGINT or SIGTERM, then drains the requests in progress. Prints
/// `listening on http://ADDR` on stdout once it accepts connections.
pub fn serve(
    config: ServeConfig,
    pipeline: FacePipeline,
    tenants: Arc<dyn Tenants>,
) -> Result<(), ServeError> {
    let runtime = runtime(&config)?;
    runtime.block_on(async move {
        let addr = config.listen;
        let state = AppState::new(pipeline, tenants, config)?;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| ServeError::Bind { addr, source })?;
        let local = listener.local_addr()?;
        println!("listening on http://{local}");
        tracing::info!(%local, "listening");
        let warm = state.clone();
        tokio::task::spawn_blocking(move || {
            warm.pipeline.warm_up();
            warm.ready.store(true, Ordering::Release);
        });
        axum::serve(listener, router(state))
            .with_graceful_shutdown(shutdown_signal())
            .await?;
        tracing::info!("stopped");
        Ok(())
    })
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down: finishing the requests in progress");
}
