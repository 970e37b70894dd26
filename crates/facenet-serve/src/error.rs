//! Every error of the API has one JSON shape, `{"error": "...", "detail": "..."}`, and a
//! status that says whose fault it is.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use facenet_gallery::GalleryError;
use serde::Serialize;
use utoipa::ToSchema;

/// The body of every error response.
#[derive(Debug, Clone, Serialize, serde::Deserialize, ToSchema)]
pub struct ErrorBody {
    /// A short machine-readable kind: `bad_request`, `unauthorized`, `forbidden`,
    /// `not_found`, `conflict`, `payload_too_large`, `busy`, `timeout`, `internal`.
    pub error: String,
    /// What is wrong, naming the request part (header, field, image, parameter).
    pub detail: String,
}

/// An error answer.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Body.
    pub body: ErrorBody,
}

impl ApiError {
    /// An error of this status with this detail.
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        let error = match status {
            StatusCode::BAD_REQUEST => "bad_request",
            StatusCode::UNAUTHORIZED => "unauthorized",
            StatusCode::FORBIDDEN => "forbidden",
            StatusCode::NOT_FOUND => "not_found",
            StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
            StatusCode::CONFLICT => "conflict",
            StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
            StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
            StatusCode::SERVICE_UNAVAILABLE => "busy",
            StatusCode::GATEWAY_TIMEOUT => "timeout",
            s if s.is_client_error() => "bad_request",
            _ => "internal",
        };
        Self {
            status,
            body: ErrorBody {
                error: error.into(),
                detail: detail.into(),
            },
        }
    }

    /// 400.
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, detail)
    }

    /// 503 with `Retry-After`.
    pub fn busy(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, detail)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let retry = self.status == StatusCode::SERVICE_UNAVAILABLE;
        let mut r = (self.status, Json(self.body)).into_response();
        if retry {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        r
    }
}

impl From<facenet::Error> for ApiError {
    fn from(e: facenet::Error) -> Self {
        ApiError::from_ref(&e, chain(&e))
    }
}

impl From<GalleryError> for ApiError {
    fn from(e: GalleryError) -> Self {
        use GalleryError as G;
        let status = match &e {
            G::Facenet(inner) => return ApiError::from_ref(inner, chain(&e)),
            G::UnknownIdentity(_) | G::UnknownFace(_) | G::NotInLibrary(_) => StatusCode::NOT_FOUND,
            G::NameTaken(_) | G::ModelMismatch { .. } => StatusCode::CONFLICT,
            G::Invalid(_) => StatusCode::BAD_REQUEST,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        // A 500's detail is logged and replaced by the router (`hide_internal`).
        Self::new(status, chain(&e))
    }
}

impl ApiError {
    fn from_ref(e: &facenet::Error, detail: String) -> Self {
        use facenet::Error as E;
        let status = match e {
            E::Decode { .. } | E::BadImage { .. } | E::NoFace { .. } => StatusCode::BAD_REQUEST,
            E::Busy { .. } => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let detail = match e {
            E::NoFace { why, .. } => format!("{detail}; {}", no_face_hint(why)),
            _ => detail,
        };
        Self::new(status, detail)
    }
}

/// The service's advice for a photo without the face asked for.
pub fn no_face_hint(why: &facenet::pipeline::NoFace) -> &'static str {
    use facenet::pipeline::NoFace;
    match why {
        NoFace::None => {
            "send a photo where the face is larger and turned to the camera \
             (POST /api/v1/detect shows what the detector finds)"
        }
        NoFace::Ambiguous(_) => "send a photo of this person alone, or crop it to their face",
        NoFace::NoSuchIndex { .. } => "POST /api/v1/detect lists the faces in order",
        NoFace::LowQuality { .. } => {
            "send a sharper, larger, frontal photo, or pass min_quality=0 to take this one"
        }
    }
}

/// An error and its sources, `: `-joined.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        let t = inner.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        src = inner.source();
    }
    s
}

macro_rules! rejection {
    ($($t:ty),*) => {$(
        impl From<$t> for ApiError {
            fn from(r: $t) -> Self {
                ApiError::new(r.status(), r.body_text())
            }
        }
    )*};
}

rejection!(
    axum::extract::rejection::JsonRejection,
    axum::extract::rejection::QueryRejection,
    axum::extract::rejection::PathRejection,
    axum::extract::rejection::BytesRejection,
    axum::extract::multipart::MultipartRejection,
    axum::extract::multipart::MultipartError
);
