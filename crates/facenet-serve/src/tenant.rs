//! The caller of a request, from its API key.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::{StatusCode, request::Parts};
use facenet_gallery::{ApiKey, Recognizer, Role};

use crate::{ApiError, AppState};

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
