//! Request parts: images as multipart `file` parts or JSON base64, and the JSON, query and
//! path extractors whose rejections answer in the API's error shape.

use axum::extract::{FromRequest, FromRequestParts, Multipart, Request};
use axum::http::{StatusCode, header, request::Parts};
use base64::Engine as _;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use utoipa::ToSchema;

use crate::error::ApiError;

/// Most images in one request.
pub const MAX_IMAGES: usize = 64;

/// Images as JSON: base64 (standard alphabet; a `data:image/...;base64,` prefix is allowed).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImagesJson {
    /// One image.
    pub image: Option<String>,
    /// Several images.
    pub images: Option<Vec<String>>,
}

/// Images as a multipart form: one or more parts named `file`.
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct ImagesForm {
    /// The image files (JPEG, PNG, WebP, BMP, TIFF, GIF, PNM).
    #[schema(value_type = Vec<String>, format = Binary)]
    file: Vec<Vec<u8>>,
}

/// One uploaded image, not yet decoded.
#[derive(Debug, Clone)]
pub struct Upload {
    /// Its name in errors and results: the part's file name, or `images[i]`.
    pub label: String,
    /// Its bytes.
    pub bytes: Vec<u8>,
}

/// The images of a request.
#[derive(Debug)]
pub struct Images(pub Vec<Upload>);

impl Images {
    fn pixels(&self) -> impl Iterator<Item = u64> + '_ {
        self.0.iter().map(|u| {
            facenet::image::header_dimensions(&u.bytes).map_or(0, |(w, h)| w as u64 * h as u64)
        })
    }

    /// Pixels of the largest image (from the headers): what a route that decodes one image
    /// at a time holds.
    pub fn peak_pixels(&self) -> u64 {
        self.pixels().max().unwrap_or(0)
    }

    /// Pixels of all the images: what a route that decodes them all before its work holds.
    pub fn total_pixels(&self) -> u64 {
        self.pixels().sum()
    }
}

const HOW: &str = "send images as multipart/form-data parts named `file`, or as JSON \
                   {\"images\": [\"<base64>\", ...]}";

impl<S: Send + Sync> FromRequest<S> for Images {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let ct = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        let mut out = Vec::new();
        if ct.starts_with("multipart/form-data") {
            let mut form = Multipart::from_request(req, state).await?;
            while let Some(field) = form.next_field().await? {
                let name = field.name().unwrap_or("").to_string();
                if name != "file" {
                    return Err(ApiError::bad_request(format!(
                        "multipart part `{name}`: expected parts named `file`"
                    )));
                }
                let label = field
                    .file_name()
                    .filter(|f| !f.is_empty())
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("file[{}]", out.len()));
                let bytes = field.bytes().await?.to_vec();
                out.push(Upload { label, bytes });
                if out.len() > MAX_IMAGES {
                    break;
                }
            }
        } else if ct.starts_with("application/json") {
            let axum::Json(body) = axum::Json::<ImagesJson>::from_request(req, state).await?;
            let list: Vec<(String, String)> = match (body.image, body.images) {
                (Some(one), None) => vec![("image".into(), one)],
                (None, Some(many)) => many
                    .into_iter()
                    .enumerate()
                    .map(|(i, b)| (format!("images[{i}]"), b))
                    .collect(),
                (Some(_), Some(_)) => {
                    return Err(ApiError::bad_request(
                        "JSON body: give `image` or `images`, not both",
                    ));
                }
                (None, None) => Vec::new(),
            };
            for (label, text) in list.into_iter().take(MAX_IMAGES + 1) {
                let data = match text.split_once(',') {
                    Some((head, data)) if head.starts_with("data:") => data,
                    _ => text.as_str(),
                };
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(data.trim())
                    .map_err(|e| {
                        ApiError::bad_request(format!("{label}: not valid base64 ({e})"))
                    })?;
                out.push(Upload { label, bytes });
            }
        } else {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!(
                    "content-type `{}`: {HOW}",
                    ct.chars().take(60).collect::<String>()
                ),
            ));
        }
        if out.is_empty() {
            return Err(ApiError::bad_request(format!(
                "no image in the request: {HOW}"
            )));
        }
        if out.len() > MAX_IMAGES {
            return Err(ApiError::bad_request(format!(
                "more than {MAX_IMAGES} images in one request"
            )));
        }
        Ok(Images(out))
    }
}

/// A JSON body whose rejection is an [`ApiError`].
#[derive(Debug)]
pub struct Body<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let axum::Json(v) = axum::Json::<T>::from_request(req, state).await?;
        Ok(Body(v))
    }
}

/// Query parameters whose rejection is an [`ApiError`].
#[derive(Debug)]
pub struct Query<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let axum::extract::Query(v) =
            axum::extract::Query::<T>::from_request_parts(parts, state).await?;
        Ok(Query(v))
    }
}

/// Path parameters whose rejection is an [`ApiError`].
#[derive(Debug)]
pub struct Path<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for Path<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let axum::extract::Path(v) =
            axum::extract::Path::<T>::from_request_parts(parts, state).await?;
        Ok(Path(v))
    }
}
