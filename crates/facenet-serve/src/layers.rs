//! The layers around every route: a 500's cause kept for the log, a body refused when
//! announced over the limit and otherwise read whole before the handler runs, and the
//! request's time limit.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::Response;

use crate::{ApiError, AppState, error};

/// A 500 tells the client only that it happened and under which request id; its cause (an
/// error chain that may name files and servers) goes to the log, in the request's span.
pub(crate) async fn hide_internal(req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_string();
    let r = next.run(req).await;
    if r.status() != StatusCode::INTERNAL_SERVER_ERROR {
        return r;
    }
    let body = axum::body::to_bytes(r.into_body(), 1 << 20)
        .await
        .unwrap_or_default();
    let cause = serde_json::from_slice::<error::ErrorBody>(&body)
        .map(|b| b.detail)
        .unwrap_or_else(|_| String::from_utf8_lossy(&body).into_owned());
    tracing::error!(request_id = %id, "internal error: {cause}");
    axum::response::IntoResponse::into_response(ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        format!("internal error (request id {id}); the server's log has its cause"),
    ))
}

/// A body announced larger than the limit is refused before any of it is read (a chunked body
/// is cut at the limit by the extractors).
pub(crate) async fn refuse_oversized(
    State(limit): State<usize>,
    req: Request,
    next: Next,
) -> Response {
    let announced = req
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match announced {
        Some(n) if n > limit as u64 => axum::response::IntoResponse::into_response(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "request body of {n} bytes, over the limit of {limit} bytes (--body-limit-mib)"
            ),
        )),
        _ => next.run(req).await,
    }
}

/// Reads the whole body (up to the limit) before the handler runs, so that a request refused
/// early (401, 403, 404) still has its upload read and the client its answer, instead of a
/// connection closed under a client that is still sending.
pub(crate) async fn read_body(State(limit): State<usize>, req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    match axum::body::to_bytes(body, limit).await {
        Ok(bytes) => {
            next.run(Request::from_parts(parts, axum::body::Body::from(bytes)))
                .await
        }
        Err(e) => {
            let too_large = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
            let err = if too_large {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("request body over the limit of {limit} bytes (--body-limit-mib)"),
                )
            } else {
                ApiError::bad_request(format!("reading the request body: {e}"))
            };
            axum::response::IntoResponse::into_response(err)
        }
    }
}

/// Answers 504 when the handler takes longer than the service's `--timeout-s`.
pub(crate) async fn timeout(
    State(state): State<Arc<AppState>>,
    req: Request,
    next: Next,
) -> Response {
    let limit = Duration::from_secs(state.config.timeout_s.max(1));
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(r) => r,
        Err(_) => axum::response::IntoResponse::into_response(ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            format!(
                "the request took longer than {} s (--timeout-s)",
                limit.as_secs()
            ),
        )),
    }
}
