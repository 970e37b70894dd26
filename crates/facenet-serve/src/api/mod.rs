//! The JSON API under `/api/v1`, and the service's own routes. Each handler translates the
//! request into one library call ([`facenet_gallery::Recognizer`],
//! [`facenet::pipeline::FacePipeline`]) and its result into JSON.

pub mod enrol;
pub mod faces;
pub mod gallery;
pub mod library;
pub mod recognition;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::openapi::security::{ApiKey as KeyScheme, ApiKeyValue, SecurityScheme};
use utoipa::{IntoResponses, Modify, OpenApi, ToSchema};

use crate::AppState;
use crate::error::{ApiError, ErrorBody};
use enrol::*;
use faces::*;
use gallery::*;
use recognition::*;

/// The error answers every API route may give.
#[derive(IntoResponses)]
#[allow(dead_code)]
pub enum Errors {
    /// The request is malformed: an undecodable or oversized image, a bad parameter.
    #[response(status = 400)]
    BadRequest(#[to_schema] ErrorBody),
    /// No or an unknown `x-api-key`.
    #[response(status = 401)]
    Unauthorized(ErrorBody),
    /// The key's role may not do this.
    #[response(status = 403)]
    Forbidden(ErrorBody),
    /// No such subject or face in the key's gallery.
    #[response(status = 404)]
    NotFound(ErrorBody),
    /// The name is taken, or the gallery holds another model's embeddings.
    #[response(status = 409)]
    Conflict(ErrorBody),
    /// The body is over the limit (`--body-limit-mib`).
    #[response(status = 413)]
    TooLarge(ErrorBody),
    /// The body is neither multipart nor JSON.
    #[response(status = 415)]
    UnsupportedMedia(ErrorBody),
    /// Parameters of the right types with unusable values.
    #[response(status = 422)]
    Unprocessable(ErrorBody),
    /// The server is at capacity (`--queue`): retry after the `Retry-After` seconds.
    #[response(status = 503)]
    Busy(ErrorBody),
    /// The request took longer than `--timeout-s`.
    #[response(status = 504)]
    Timeout(ErrorBody),
}

/// Liveness.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// `ok`.
    pub status: String,
}

/// The process answers.
#[utoipa::path(get, path = "/healthz", tag = "service", responses((status = 200, body = Health)))]
async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
    })
}

/// Readiness.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Ready {
    /// The networks are loaded and have run once.
    pub ready: bool,
    /// The embedding model: `facenet/` and its weights' fingerprint.
    pub model: String,
    /// The execution engine.
    pub engine: String,
}

/// Ready to serve: the model is loaded and warmed up (503 until then).
#[utoipa::path(get, path = "/readyz", tag = "service",
    responses((status = 200, body = Ready), (status = 503, body = Ready)))]
async fn readyz(State(s): State<Arc<AppState>>) -> Response {
    let e = s.pipeline.embedder();
    let ready = s.ready.load(Ordering::Acquire);
    let body = Ready {
        ready,
        model: format!(
            "facenet/{}",
            e.metadata()
                .fingerprint
                .chars()
                .take(12)
                .collect::<String>()
        ),
        engine: e.engine(),
    };
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

/// Prometheus metrics.
#[utoipa::path(get, path = "/metrics", tag = "service",
    responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain")))]
async fn metrics(State(s): State<Arc<AppState>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        crate::metrics::render(&s),
    )
        .into_response()
}

struct KeyAuth;

impl Modify for KeyAuth {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        let c = api.components.get_or_insert_with(Default::default);
        c.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(KeyScheme::Header(ApiKeyValue::new(crate::API_KEY_HEADER))),
        );
    }
}

/// The OpenAPI document.
#[derive(OpenApi)]
#[openapi(
    info(title = "facenet", description = "Face detection, embedding, verification and identification (FaceNet, Inception-ResNet-v1). Keys: `facenet keys create --gallery NAME --role read|write`; send as `x-api-key`."),
    paths(detect, embed, verify, identify, list_subjects, create_subject, rename_subject,
          delete_subject, add_faces, list_faces, delete_face, healthz, readyz, metrics,
          library::people, library::faces, library::photos, library::edit::name,
          library::edit::merge, library::edit::forget, library::edit::move_face,
          library::thumbnail, library::photo, library::find, library::edit::recluster),
    components(schemas(ErrorBody)),
    modifiers(&KeyAuth)
)]
pub struct ApiDoc;

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "no such route: see /docs")
}

async fn not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed on this route: see /docs",
    )
}

/// The API, the service routes, `/openapi.json` and `/docs`.
pub fn routes(state: Arc<AppState>) -> Router {
    let api = Router::new()
        .route("/detect", post(detect))
        .route("/embed", post(embed))
        .route("/verify", post(verify))
        .route("/identify", post(identify))
        .route("/subjects", get(list_subjects).post(create_subject))
        .route(
            "/subjects/{name}",
            put(rename_subject).delete(delete_subject),
        )
        .route("/subjects/{name}/faces", post(add_faces))
        .route("/faces", get(list_faces))
        .route("/faces/{id}", delete(delete_face))
        .route("/library/people", get(library::people))
        .route("/library/people/{person}", delete(library::edit::forget))
        .route("/library/people/{person}/faces", get(library::faces))
        .route("/library/people/{person}/photos", get(library::photos))
        .route("/library/people/{person}/name", put(library::edit::name))
        .route("/library/people/{person}/merge", post(library::edit::merge))
        .route("/library/faces/{id}/move", post(library::edit::move_face))
        .route("/library/faces/{id}/thumbnail", get(library::thumbnail))
        .route("/library/photos/{id}", get(library::photo))
        .route("/library/find", post(library::find))
        .route("/library/recluster", post(library::edit::recluster));
    Router::new()
        .nest("/api/v1", api)
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .merge(utoipa_swagger_ui::SwaggerUi::new("/docs").url("/openapi.json", ApiDoc::openapi()))
        .fallback(not_found)
        .method_not_allowed_fallback(not_allowed)
        .with_state(state)
}
