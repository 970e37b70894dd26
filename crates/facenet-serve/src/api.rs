//! The JSON API under `/api/v1`, and the service's own routes. Each handler translates the
//! request into one library call ([`facenet_gallery::Recognizer`],
//! [`facenet::pipeline::FacePipeline`]) and its result into JSON.

use std::path::Path as FsPath;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use facenet::detect::Detection;
use facenet::image::RgbImage;
use facenet::pipeline::{FaceChoice, FacePipeline};
use facenet_gallery::{GalleryStore, Identification, Threshold, check_rate, check_threshold};
use serde::{Deserialize, Serialize};
use utoipa::openapi::security::{ApiKey as KeyScheme, ApiKeyValue, SecurityScheme};
use utoipa::{IntoParams, IntoResponses, Modify, OpenApi, ToSchema};

use crate::error::{ApiError, ErrorBody};
use crate::input::{Body, Images, ImagesForm, ImagesJson, Path, Query, Upload};
use crate::{AppState, Tenant};

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

/// One detected face.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct FaceOut {
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
    /// Faces, largest first.
    pub faces: Vec<FaceOut>,
}

/// Faces per image.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct FacesResponse {
    /// One entry per uploaded image, in order.
    pub images: Vec<ImageFaces>,
}

fn face_out(d: Option<&Detection>, img: &RgbImage, embedding: Option<Vec<f32>>) -> FaceOut {
    let (w, h) = img.dimensions();
    FaceOut {
        bbox: d.map_or(vec![0.0, 0.0, w as f32, h as f32], |d| d.bbox.to_vec()),
        score: d.map_or(1.0, |d| d.score),
        landmarks: d.map_or_else(Vec::new, |d| {
            d.landmarks.iter().map(|p| p.to_vec()).collect()
        }),
        embedding,
    }
}

fn decode(p: &FacePipeline, u: &Upload) -> Result<RgbImage, ApiError> {
    Ok(p.decode(&u.bytes, FsPath::new(&u.label))?)
}

/// Detected faces (boxes, scores, landmarks) of each image.
#[utoipa::path(post, path = "/api/v1/detect", tag = "faces",
    request_body(content((ImagesForm = "multipart/form-data"), (ImagesJson = "application/json"))),
    responses((status = 200, body = FacesResponse), Errors), security(("api_key" = [])))]
async fn detect(
    State(s): State<Arc<AppState>>,
    _t: Tenant,
    images: Images,
) -> Result<Json<FacesResponse>, ApiError> {
    let p = s.pipeline.clone();
    s.work(move || {
        let mut out = Vec::new();
        for (index, u) in images.0.iter().enumerate() {
            let img = decode(&p, u)?;
            let mut found = match p.detector() {
                Some(det) => det.detect(&img)?,
                None => Vec::new(),
            };
            found.sort_by(|a, b| b.area().total_cmp(&a.area()));
            out.push(ImageFaces {
                index,
                name: u.label.clone(),
                width: img.width(),
                height: img.height(),
                faces: found
                    .iter()
                    .map(|d| face_out(Some(d), &img, None))
                    .collect(),
            });
        }
        Ok(Json(FacesResponse { images: out }))
    })
    .await
}

/// Every face of each image with its 128-d unit embedding.
#[utoipa::path(post, path = "/api/v1/embed", tag = "faces",
    request_body(content((ImagesForm = "multipart/form-data"), (ImagesJson = "application/json"))),
    responses((status = 200, body = FacesResponse), Errors), security(("api_key" = [])))]
async fn embed(
    State(s): State<Arc<AppState>>,
    _t: Tenant,
    images: Images,
) -> Result<Json<FacesResponse>, ApiError> {
    let p = s.pipeline.clone();
    s.work(move || {
        let mut out = Vec::new();
        for (index, u) in images.0.iter().enumerate() {
            let img = decode(&p, u)?;
            let faces = p.faces(&img)?;
            out.push(ImageFaces {
                index,
                name: u.label.clone(),
                width: img.width(),
                height: img.height(),
                faces: faces
                    .into_iter()
                    .map(|f| face_out(f.detection.as_ref(), &img, Some(f.embedding)))
                    .collect(),
            });
        }
        Ok(Json(FacesResponse { images: out }))
    })
    .await
}

/// Parameters of `/verify`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct VerifyParams {
    /// Compare the one image with this enrolled subject (else: send two images).
    pub subject: Option<String>,
    /// Decision threshold, L2 between unit embeddings in (0, 2]; default: the gallery's 1:1
    /// threshold (calibrated, else for a false accept rate of 1e-3).
    pub threshold: Option<f32>,
}

/// A 1:1 decision.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct VerifyResponse {
    /// `distance <= threshold`.
    pub verified: bool,
    /// L2 distance between the unit embeddings.
    pub distance: f32,
    /// Always `euclidean_l2`.
    pub distance_metric: String,
    /// The distance's unit and range.
    pub unit: String,
    /// The threshold that decided.
    pub threshold: f32,
    /// Where it came from: `explicit`, `calibrated`, `target-far`, `default`.
    pub threshold_source: String,
    /// The threshold's rule in words.
    pub threshold_detail: String,
    /// The model: `facenet` and its weights' fingerprint.
    pub model: String,
    /// The subject compared with, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// The faces compared, `[x1, y1, x2, y2]` (one for a subject).
    pub facial_areas: Vec<Vec<f32>>,
}

const UNIT: &str = "L2 distance between unit-length embeddings, 0 (same) to 2";

fn model_name(t: &Tenant) -> String {
    format!("facenet/{}", t.recognizer.model().short())
}

fn source_name(t: &Threshold) -> String {
    serde_json::to_value(t.source)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// Are two photos the same person, or is a photo the enrolled subject?
#[utoipa::path(post, path = "/api/v1/verify", tag = "recognition", params(VerifyParams),
    request_body(content((ImagesForm = "multipart/form-data"), (ImagesJson = "application/json"))),
    responses((status = 200, body = VerifyResponse), Errors), security(("api_key" = [])))]
async fn verify(
    State(s): State<Arc<AppState>>,
    t: Tenant,
    Query(q): Query<VerifyParams>,
    images: Images,
) -> Result<Json<VerifyResponse>, ApiError> {
    check_threshold(q.threshold)?;
    let want = if q.subject.is_some() { 1 } else { 2 };
    if images.0.len() != want {
        return Err(ApiError::bad_request(match &q.subject {
            Some(s) => format!(
                "verify with subject `{s}`: send one image, got {}",
                images.0.len()
            ),
            None => format!(
                "verify: send two images (or one and ?subject=NAME), got {}",
                images.0.len()
            ),
        }));
    }
    let p = s.pipeline.clone();
    s.work(move || {
        let model = model_name(&t);
        let r = &t.recognizer;
        let answer = |distance, threshold: Threshold, verified, subject, areas| VerifyResponse {
            verified,
            distance,
            distance_metric: "euclidean_l2".into(),
            unit: UNIT.into(),
            threshold: threshold.value,
            threshold_source: source_name(&threshold),
            threshold_detail: threshold.describe(),
            model,
            subject,
            facial_areas: areas,
        };
        let first = decode(&p, &images.0[0])?;
        match q.subject {
            Some(name) => {
                let v = r.verify(&first, &name, q.threshold)?.ok_or_else(|| {
                    ApiError::bad_request(format!("{}: no face found", images.0[0].label))
                })?;
                let areas = v.bbox.map(|b| b.to_vec()).into_iter().collect();
                Ok(Json(answer(
                    v.distance,
                    v.threshold,
                    v.verified,
                    Some(name),
                    areas,
                )))
            }
            None => {
                let second = decode(&p, &images.0[1])?;
                let v = r.verify_photos(
                    [(&images.0[0].label, &first), (&images.0[1].label, &second)],
                    q.threshold,
                )?;
                let areas = v.bboxes.iter().flatten().map(|b| b.to_vec()).collect();
                Ok(Json(answer(
                    v.distance,
                    v.threshold,
                    v.verified,
                    None,
                    areas,
                )))
            }
        }
    })
    .await
}

/// Parameters of `/identify`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct IdentifyParams {
    /// Candidates per face, 1 to 20 (default 1).
    pub top_k: Option<usize>,
    /// Decision threshold, L2 in (0, 2]; default: derived for the target false-identification
    /// rate and this gallery's size.
    pub threshold: Option<f32>,
    /// Target false-identification rate in (0, 1) (default: the gallery's, else 0.01).
    pub fir: Option<f64>,
}

/// A candidate subject.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Candidate {
    /// Subject name.
    pub subject: String,
    /// L2 distance (to the subject's centroid of faces).
    pub distance: f32,
}

/// One face, identified.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct IdentifiedFace {
    /// `[x1, y1, x2, y2]` in pixels.
    #[serde(rename = "box")]
    pub bbox: Vec<f32>,
    /// Detector probability.
    pub score: f32,
    /// The best subject within the threshold, or `unknown`.
    pub subject: String,
    /// Whether `subject` is a gallery member (`false`: `unknown`).
    pub known: bool,
    /// Distance to the best candidate (even when over the threshold); absent for an empty
    /// gallery.
    pub distance: Option<f32>,
    /// The best `top_k` candidates, nearest first.
    pub candidates: Vec<Candidate>,
}

/// The faces of one image, identified.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct IdentifiedImage {
    /// Position of the image in the request.
    pub index: usize,
    /// Its file name, or `images[i]`.
    pub name: String,
    /// Faces, largest first.
    pub faces: Vec<IdentifiedFace>,
}

/// Identification results.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct IdentifyResponse {
    /// The threshold applied.
    pub threshold: f32,
    /// Where it came from: `explicit`, `target-fir`, `default`.
    pub threshold_source: String,
    /// The threshold's rule in words.
    pub threshold_detail: String,
    /// The expected share of strangers named as someone at this threshold, when known.
    pub expected_fir: Option<f64>,
    /// The distance's unit.
    pub unit: String,
    /// One entry per image.
    pub images: Vec<IdentifiedImage>,
}

fn identified(i: Identification) -> IdentifiedFace {
    let known = i.identity != facenet_gallery::UNKNOWN;
    IdentifiedFace {
        bbox: i.bbox.map_or_else(Vec::new, |b| b.to_vec()),
        score: i.score.unwrap_or(1.0),
        subject: i.identity,
        known,
        distance: i.distance,
        candidates: i
            .candidates
            .into_iter()
            .map(|m| Candidate {
                subject: m.identity,
                distance: m.distance,
            })
            .collect(),
    }
}

/// Who is in these photos? Per face the best subjects, and `unknown` above the threshold.
#[utoipa::path(post, path = "/api/v1/identify", tag = "recognition", params(IdentifyParams),
    request_body(content((ImagesForm = "multipart/form-data"), (ImagesJson = "application/json"))),
    responses((status = 200, body = IdentifyResponse), Errors), security(("api_key" = [])))]
async fn identify(
    State(s): State<Arc<AppState>>,
    t: Tenant,
    Query(q): Query<IdentifyParams>,
    images: Images,
) -> Result<Json<IdentifyResponse>, ApiError> {
    check_threshold(q.threshold)?;
    if let Some(f) = q.fir {
        check_rate(f)?;
    }
    let top_k = q.top_k.unwrap_or(1);
    if !(1..=20).contains(&top_k) {
        return Err(ApiError::bad_request(format!("top_k {top_k}: use 1 to 20")));
    }
    let p = s.pipeline.clone();
    s.work(move || {
        let searcher = t.recognizer.searcher(q.threshold, q.fir)?;
        let th = searcher.threshold();
        let mut out = Vec::new();
        for (index, u) in images.0.iter().enumerate() {
            let img = decode(&p, u)?;
            let faces = t.recognizer.identify(&searcher, &img, top_k)?;
            out.push(IdentifiedImage {
                index,
                name: u.label.clone(),
                faces: faces.into_iter().map(identified).collect(),
            });
        }
        Ok(Json(IdentifyResponse {
            threshold: th.value,
            threshold_source: source_name(&th),
            threshold_detail: th.describe(),
            expected_fir: th.expected_fir,
            unit: UNIT.into(),
            images: out,
        }))
    })
    .await
}

/// Paging parameters.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct PageParams {
    /// Page number, from 1 (default 1).
    pub page: Option<usize>,
    /// Items per page, 1 to 1000 (default 100).
    pub per_page: Option<usize>,
    /// Only this subject's faces (`/faces`).
    pub subject: Option<String>,
}

fn page_of<T>(items: Vec<T>, q: &PageParams) -> Result<(Vec<T>, usize, usize, usize), ApiError> {
    let page = q.page.unwrap_or(1);
    let per = q.per_page.unwrap_or(100);
    if page == 0 || !(1..=1000).contains(&per) {
        return Err(ApiError::bad_request(format!(
            "page {page}, per_page {per}: pages count from 1, per_page is 1 to 1000"
        )));
    }
    let total = items.len();
    let list = items
        .into_iter()
        .skip((page - 1).saturating_mul(per))
        .take(per)
        .collect();
    Ok((list, total, page, per))
}

/// A subject and its number of faces.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Subject {
    /// Name.
    pub name: String,
    /// Enrolled faces.
    pub faces: usize,
}

/// A page of subjects.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SubjectPage {
    /// Subjects by name.
    pub subjects: Vec<Subject>,
    /// Subjects in the gallery.
    pub total: usize,
    /// This page.
    pub page: usize,
    /// Items per page.
    pub per_page: usize,
}

/// The subjects of the key's gallery, by name.
#[utoipa::path(get, path = "/api/v1/subjects", tag = "gallery", params(PageParams),
    responses((status = 200, body = SubjectPage), Errors), security(("api_key" = [])))]
async fn list_subjects(
    State(s): State<Arc<AppState>>,
    t: Tenant,
    Query(q): Query<PageParams>,
) -> Result<Json<SubjectPage>, ApiError> {
    s.work(move || {
        let all = t.recognizer.store().identities()?;
        let (list, total, page, per_page) = page_of(all, &q)?;
        Ok(Json(SubjectPage {
            subjects: list
                .into_iter()
                .map(|(name, faces)| Subject { name, faces })
                .collect(),
            total,
            page,
            per_page,
        }))
    })
    .await
}

/// A subject's name.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubjectName {
    /// Name (not empty).
    pub name: String,
}

fn store(t: &Tenant) -> &dyn GalleryStore {
    t.recognizer.store()
}

/// Creates a subject without faces.
#[utoipa::path(post, path = "/api/v1/subjects", tag = "gallery", request_body = SubjectName,
    responses((status = 201, body = Subject), Errors), security(("api_key" = [])))]
async fn create_subject(
    State(s): State<Arc<AppState>>,
    t: Tenant,
    Body(b): Body<SubjectName>,
) -> Result<Response, ApiError> {
    t.require_write("creating a subject")?;
    s.work(move || {
        store(&t).create_identity(&b.name)?;
        Ok((
            StatusCode::CREATED,
            Json(Subject {
                name: b.name,
                faces: 0,
            }),
        )
            .into_response())
    })
    .await
}

/// Renames a subject.
#[utoipa::path(put, path = "/api/v1/subjects/{name}", tag = "gallery",
    params(("name" = String, Path, description = "The subject")), request_body = SubjectName,
    responses((status = 200, body = Subject), Errors), security(("api_key" = [])))]
async fn rename_subject(
    State(s): State<Arc<AppState>>,
    t: Tenant,
    Path(name): Path<String>,
    Body(b): Body<SubjectName>,
) -> Result<Json<Subject>, ApiError> {
    t.require_write("renaming a subject")?;
    s.work(move || {
        let st = store(&t);
        st.rename(&name, &b.name)?;
        let faces = st.faces(Some(&b.name))?.len();
        Ok(Json(Subject {
            name: b.name,
            faces,
        }))
    })
    .await
}

/// A removal.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Removed {
    /// The subject.
    pub subject: String,
    /// Faces removed.
    pub faces_removed: usize,
}

/// Deletes a subject and its faces.
#[utoipa::path(delete, path = "/api/v1/subjects/{name}", tag = "gallery",
    params(("name" = String, Path, description = "The subject")),
    responses((status = 200, body = Removed), Errors), security(("api_key" = [])))]
async fn delete_subject(
    State(s): State<Arc<AppState>>,
    t: Tenant,
    Path(name): Path<String>,
) -> Result<Json<Removed>, ApiError> {
    t.require_write("deleting a subject")?;
    s.work(move || {
        let n = store(&t).remove(&name)?;
        Ok(Json(Removed {
            subject: name,
            faces_removed: n,
        }))
    })
    .await
}

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
    /// Why the image was refused.
    pub error: Option<String>,
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
}

/// Enrols the face of each image (the photo's main face) under a subject, created if new.
/// Images without a usable face are reported and skipped; the others are stored in one
/// transaction. 201 when at least one face was stored, 400 when none.
#[utoipa::path(post, path = "/api/v1/subjects/{name}/faces", tag = "gallery",
    params(("name" = String, Path, description = "The subject")),
    request_body(content((ImagesForm = "multipart/form-data"), (ImagesJson = "application/json"))),
    responses((status = 201, body = EnrolResponse), Errors), security(("api_key" = [])))]
async fn add_faces(
    State(s): State<Arc<AppState>>,
    t: Tenant,
    Path(name): Path<String>,
    images: Images,
) -> Result<Response, ApiError> {
    t.require_write("enrolling")?;
    let p = s.pipeline.clone();
    s.work(move || {
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
        let results = t
            .recognizer
            .enroll_each(&name, photos, FaceChoice::Primary)?;
        let enrolled = results.iter().filter(|r| r.face_id.is_some()).count();
        if enrolled == 0 {
            let why: Vec<String> = results
                .iter()
                .filter_map(|r| r.error.as_ref().map(|e| format!("{}: {e}", r.label)))
                .collect();
            return Err(ApiError::bad_request(format!(
                "no face enrolled: {}",
                why.join("; ")
            )));
        }
        let body = EnrolResponse {
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
                    error: r.error,
                })
                .collect(),
        };
        Ok((StatusCode::CREATED, Json(body)).into_response())
    })
    .await
}

/// A stored face.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct StoredFace {
    /// Id (for `DELETE /faces/{id}`).
    pub id: i64,
    /// Its subject.
    pub subject: String,
    /// The uploaded file's name.
    pub source: String,
    /// Its box in that photo.
    #[serde(rename = "box")]
    pub bbox: Option<Vec<f32>>,
    /// Unix time of enrolment.
    pub created: i64,
}

/// A page of faces.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct FacePage {
    /// Faces by subject, then id.
    pub faces: Vec<StoredFace>,
    /// Faces in the selection.
    pub total: usize,
    /// This page.
    pub page: usize,
    /// Items per page.
    pub per_page: usize,
}

fn stored(f: facenet_gallery::FaceRecord) -> StoredFace {
    StoredFace {
        id: f.id,
        subject: f.identity,
        source: f.source,
        bbox: f.bbox.map(|b| b.to_vec()),
        created: f.created,
    }
}

/// The faces of the gallery, or of one subject.
#[utoipa::path(get, path = "/api/v1/faces", tag = "gallery", params(PageParams),
    responses((status = 200, body = FacePage), Errors), security(("api_key" = [])))]
async fn list_faces(
    State(s): State<Arc<AppState>>,
    t: Tenant,
    Query(q): Query<PageParams>,
) -> Result<Json<FacePage>, ApiError> {
    s.work(move || {
        let all = store(&t).faces(q.subject.as_deref())?;
        let (list, total, page, per_page) = page_of(all, &q)?;
        Ok(Json(FacePage {
            faces: list.into_iter().map(stored).collect(),
            total,
            page,
            per_page,
        }))
    })
    .await
}

/// Deletes one face.
#[utoipa::path(delete, path = "/api/v1/faces/{id}", tag = "gallery",
    params(("id" = i64, Path, description = "The face's id")),
    responses((status = 200, body = StoredFace), Errors), security(("api_key" = [])))]
async fn delete_face(
    State(s): State<Arc<AppState>>,
    t: Tenant,
    Path(id): Path<i64>,
) -> Result<Json<StoredFace>, ApiError> {
    t.require_write("deleting a face")?;
    s.work(move || Ok(Json(stored(store(&t).remove_face(id)?))))
        .await
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
        engine: e.engine().into(),
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
          delete_subject, add_faces, list_faces, delete_face, healthz, readyz, metrics),
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
        .route("/faces/{id}", delete(delete_face));
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
