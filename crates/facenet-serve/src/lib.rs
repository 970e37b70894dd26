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
mod config;
pub mod error;
pub mod input;
pub mod keys;
mod layers;
pub mod metrics;
mod page;
mod runtime;
mod state;
mod tenant;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::HeaderName;
use axum::middleware;
use facenet::pipeline::FacePipeline;
use facenet_gallery::Tenants;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::{DefaultOnResponse, TraceLayer};

pub use config::ServeConfig;
pub use error::{ApiError, ErrorBody};
use layers::{hide_internal, read_body, refuse_oversized, timeout};
pub use runtime::{SPARE_BLOCKING_THREADS, runtime};
pub use state::AppState;
pub use tenant::{API_KEY_HEADER, Tenant};

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
