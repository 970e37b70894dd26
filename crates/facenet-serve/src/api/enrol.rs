//! Enrolment: `POST /subjects/{name}/faces`, a photo's main face stored under a subject.

use std::path::Path as FsPath;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use facenet::pipeline::FaceChoice;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::Errors;
use crate::error::ApiError;
use crate::input::{Images, ImagesForm, ImagesJson, Path, Query};
use crate::{AppState, Tenant};

/// What became of one image of an enrolment.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EnrolResult {
    /// Position of the image in the request.
    pub index: usize,
    /// Its file name, or `images[i]`.
    pub name: String,
    /// The stored face's id (absent when refused).
    pub face_id: Option<i64>,
    /// The face enrolled, `[x1, y1, x2, y2]`.
    #[serde(rename = "box")]
    pub bbox: Option<Vec<f32>>,
    /// The face's quality, also where it was too low to enrol.
    pub quality: Option<super::faces::QualityOut>,
    /// Why the image was refused.
    pub error: Option<String>,
}

/// Enrolment parameters.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct EnrolParams {
    /// The quality a face needs to be enrolled, 0 to 1 (default 0.3; 0 takes every face).
    pub min_quality: Option<f32>,
}

/// An enrolment.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EnrolResponse {
    /// The subject (created if new).
    pub subject: String,
    /// Faces stored by this request.
    pub enrolled: usize,
    /// One result per image, in order.
    pub results: Vec<EnrolResult>,
    /// What the gallery can do, when it needs saying: at its size and target FIR, the
    /// expected share of enrolled people's photos named with one and three photos each.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advice: Option<String>,
}

/// Enrols the face of each image (the photo's main face) under a subject, created if new.
/// Images without a usable face are reported and skipped; the others are stored in one
/// transaction. 201 when at least one face was stored, 400 when none.
#[utoipa::path(post, path = "/api/v1/subjects/{name}/faces", tag = "gallery",
    params(("name" = String, Path, description = "The subject"), EnrolParams),
    request_body(content((ImagesForm = "multipart/form-data"), (ImagesJson = "application/json"))),
    responses((status = 201, body = EnrolResponse), Errors), security(("api_key" = [])))]
pub(crate) async fn add_faces(
    State(s): State<Arc<AppState>>,
    t: Tenant,
    Path(name): Path<String>,
    Query(q): Query<EnrolParams>,
    images: Images,
) -> Result<Response, ApiError> {
    t.require_write("enrolling")?;
    let recognizer = match q.min_quality {
        Some(m) if !(0.0..=1.0).contains(&m) => {
            return Err(ApiError::bad_request(format!(
                "min_quality {m}: a quality is 0 to 1"
            )));
        }
        Some(m) => t.recognizer.clone().with_min_quality(m),
        None => t.recognizer.clone(),
    };
    let p = s.pipeline.clone();
    s.work_decoding(images.total_pixels(), move || {
        let photos = images
            .0
            .iter()
            .map(|u| {
                let img = p
                    .decode(&u.bytes, FsPath::new(&u.label))
                    .map_err(|e| crate::error::chain(&e));
                (u.label.clone(), img)
            })
            .collect();
        let results = recognizer.enroll_each(&name, photos, FaceChoice::Primary)?;
        let enrolled = results.iter().filter(|r| r.face_id.is_some()).count();
        if enrolled == 0 {
            let why: Vec<String> = results
                .iter()
                .filter_map(|r| {
                    let hint = r.no_face.as_ref().map(crate::error::no_face_hint);
                    r.error.as_ref().map(|e| match hint {
                        Some(h) => format!("{}: {e} ({h})", r.label),
                        None => format!("{}: {e}", r.label),
                    })
                })
                .collect();
            return Err(ApiError::bad_request(format!(
                "no face enrolled: {}",
                why.join("; ")
            )));
        }
        let advice = recognizer.advice()?;
        let body = EnrolResponse {
            advice,
            subject: name,
            enrolled,
            results: results
                .into_iter()
                .enumerate()
                .map(|(index, r)| EnrolResult {
                    index,
                    name: r.label,
                    face_id: r.face_id,
                    bbox: r.bbox.map(|b| b.to_vec()),
                    quality: r.quality.map(Into::into),
                    error: r.error,
                })
                .collect(),
        };
        Ok((StatusCode::CREATED, Json(body)).into_response())
    })
    .await
}
