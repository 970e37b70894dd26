//! Faces: `/detect` and `/embed`, and the shapes of a found face that the other routes share.

use std::path::Path as FsPath;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use facenet::detect::Detection;
use facenet::image::RgbImage;
use facenet::pipeline::FacePipeline;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::Errors;
use crate::error::ApiError;
use crate::input::{Images, ImagesForm, ImagesJson, Upload};
use crate::{AppState, Tenant};

/// One detected face.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct FaceOut {
    /// How usable the face is for recognition (absent for an aligned crop).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quality: Option<QualityOut>,
    /// `[x1, y1, x2, y2]` in pixels of the uploaded image.
    #[serde(rename = "box")]
    pub bbox: Vec<f32>,
    /// Detector probability (0..1).
    pub score: f32,
    /// Left eye, right eye, nose, left and right mouth corners, `[x, y]` each.
    pub landmarks: Vec<Vec<f32>>,
    /// Unit-length embedding (`/embed` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub embedding: Option<Vec<f32>>,
}

/// The faces of one uploaded image.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ImageFaces {
    /// Position of the image in the request.
    pub index: usize,
    /// Its file name, or `images[i]`.
    pub name: String,
    /// Width in pixels (after EXIF orientation).
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Faces, the face of the photo first (the order of every front).
    pub faces: Vec<FaceOut>,
}

/// Faces per image.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct FacesResponse {
    /// One entry per uploaded image, in order.
    pub images: Vec<ImageFaces>,
}

/// How usable a face is for recognition: four parts in 0..1 and the score, the smallest of
/// them. Enrolment refuses faces below `min_quality` (default 0.3).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct QualityOut {
    /// The smallest part, 0..1.
    pub score: f32,
    /// Size: 0 at 20 pixels across and below, 1 from 60.
    pub size: f32,
    /// Sharpness (variance of the Laplacian): 1 from 40.
    pub sharpness: f32,
    /// Pose: 1 frontal, 0 in profile (the nose 1.5 half eye-distances off the eyes' midline).
    pub pose: f32,
    /// The detector's confidence: 0 at 0.5, 1 from 0.9.
    pub confidence: f32,
    /// The part that sets the score: size, sharpness, pose or confidence.
    pub weakest: String,
    /// The weakest part in words.
    pub reason: String,
}

impl From<facenet::quality::Quality> for QualityOut {
    fn from(q: facenet::quality::Quality) -> Self {
        Self {
            score: q.score,
            size: q.size,
            sharpness: q.sharpness,
            pose: q.pose,
            confidence: q.confidence,
            weakest: q.weakest().into(),
            reason: q.reason(),
        }
    }
}

fn face_out(d: Option<&Detection>, img: &RgbImage, embedding: Option<Vec<f32>>) -> FaceOut {
    let (w, h) = img.dimensions();
    FaceOut {
        quality: d.map(|d| d.quality(img).into()),
        bbox: d.map_or(vec![0.0, 0.0, w as f32, h as f32], |d| d.bbox.to_vec()),
        score: d.map_or(1.0, |d| d.score),
        landmarks: d.map_or_else(Vec::new, |d| {
            d.landmarks.iter().map(|p| p.to_vec()).collect()
        }),
        embedding,
    }
}

pub(crate) fn decode(p: &FacePipeline, u: &Upload) -> Result<RgbImage, ApiError> {
    Ok(p.decode(&u.bytes, FsPath::new(&u.label))?)
}

/// Detected faces (boxes, scores, landmarks) of each image.
#[utoipa::path(post, path = "/api/v1/detect", tag = "faces",
    request_body(content((ImagesForm = "multipart/form-data"), (ImagesJson = "application/json"))),
    responses((status = 200, body = FacesResponse), Errors), security(("api_key" = [])))]
pub(crate) async fn detect(
    State(s): State<Arc<AppState>>,
    _t: Tenant,
    images: Images,
) -> Result<Json<FacesResponse>, ApiError> {
    each_image(&s, images, |p, img| {
        Ok(p.detect(img)?
            .iter()
            .map(|d| face_out(Some(d), img, None))
            .collect())
    })
    .await
}

/// Every face of each image with its 128-d unit embedding.
#[utoipa::path(post, path = "/api/v1/embed", tag = "faces",
    request_body(content((ImagesForm = "multipart/form-data"), (ImagesJson = "application/json"))),
    responses((status = 200, body = FacesResponse), Errors), security(("api_key" = [])))]
pub(crate) async fn embed(
    State(s): State<Arc<AppState>>,
    _t: Tenant,
    images: Images,
) -> Result<Json<FacesResponse>, ApiError> {
    each_image(&s, images, |p, img| {
        Ok(p.faces(img)?
            .into_iter()
            .map(|f| face_out(f.detection.as_ref(), img, Some(f.embedding)))
            .collect())
    })
    .await
}

/// `faces` of each uploaded image, decoded in turn, as queued decoding work.
async fn each_image(
    s: &Arc<AppState>,
    images: Images,
    faces: impl Fn(&FacePipeline, &RgbImage) -> Result<Vec<FaceOut>, ApiError> + Send + 'static,
) -> Result<Json<FacesResponse>, ApiError> {
    let p = s.pipeline.clone();
    s.work_decoding(images.peak_pixels(), move || {
        let mut out = Vec::new();
        for (index, u) in images.0.iter().enumerate() {
            let img = decode(&p, u)?;
            out.push(ImageFaces {
                index,
                name: u.label.clone(),
                width: img.width(),
                height: img.height(),
                faces: faces(&p, &img)?,
            });
        }
        Ok(Json(FacesResponse { images: out }))
    })
    .await
}
