//! The gallery: `/subjects` and `/faces` (enrolment is [`super::enrol`]).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use facenet_gallery::GalleryStore;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::Errors;
use crate::error::ApiError;
use crate::input::{Body, Path, Query};
use crate::{AppState, Tenant};

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

/// The page asked for: `(page, per_page, offset)`, checked.
fn page_of(q: &PageParams) -> Result<(usize, usize, usize), ApiError> {
    let page = q.page.unwrap_or(1);
    let per = q.per_page.unwrap_or(100);
    if page == 0 || !(1..=1000).contains(&per) {
        return Err(ApiError::bad_request(format!(
            "page {page}, per_page {per}: pages count from 1, per_page is 1 to 1000"
        )));
    }
    Ok((page, per, (page - 1).saturating_mul(per)))
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
    /// What identification in this gallery does at its size and target rate.
    pub identification: GalleryCapability,
}

/// What a gallery's identification does at its size and target false-identification rate
/// (the threshold `identify` applies by default, and what it is expected to name).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct GalleryCapability {
    /// The default threshold.
    pub threshold: f32,
    /// What it applies to: `cohort` (the cohort score) or `distance`.
    pub scoring: String,
    /// The target false-identification rate it was derived for, when derived.
    pub target_fir: Option<f64>,
    /// The expected share of strangers named as someone.
    pub expected_fir: Option<f64>,
    /// The expected share of enrolled people's photos named, with one photo per person and
    /// with three, when the table tells.
    pub expected_dir: Option<[f64; 2]>,
    /// Whether it was derived from tables measured on the gallery's own labelled photos
    /// (`facenet calibrate --store`) rather than those shipped for the weights.
    pub own_table: bool,
    /// All of it in words.
    pub detail: String,
}

impl From<facenet_gallery::Threshold> for GalleryCapability {
    fn from(t: facenet_gallery::Threshold) -> Self {
        Self {
            threshold: t.value,
            scoring: t.scoring.name().into(),
            target_fir: t.target,
            expected_fir: t.expected_fir,
            expected_dir: t.expected_dir,
            own_table: t.own_table,
            detail: t.describe(),
        }
    }
}

/// The subjects of the key's gallery, by name, and what identification in it can do.
#[utoipa::path(get, path = "/api/v1/subjects", tag = "gallery", params(PageParams),
    responses((status = 200, body = SubjectPage), Errors), security(("api_key" = [])))]
pub(crate) async fn list_subjects(
    State(s): State<Arc<AppState>>,
    t: Tenant,
    Query(q): Query<PageParams>,
) -> Result<Json<SubjectPage>, ApiError> {
    s.work(move || {
        let (page, per_page, offset) = page_of(&q)?;
        let (list, total) = t.recognizer.store().identities_page(offset, per_page)?;
        let identification = t.recognizer.searcher(None, None)?.threshold().into();
        Ok(Json(SubjectPage {
            identification,
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
pub(crate) async fn create_subject(
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
pub(crate) async fn rename_subject(
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
pub(crate) async fn delete_subject(
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
pub(crate) async fn list_faces(
    State(s): State<Arc<AppState>>,
    t: Tenant,
    Query(q): Query<PageParams>,
) -> Result<Json<FacePage>, ApiError> {
    s.work(move || {
        let (page, per_page, offset) = page_of(&q)?;
        let (list, total) = store(&t).faces_page(q.subject.as_deref(), offset, per_page)?;
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
pub(crate) async fn delete_face(
    State(s): State<Arc<AppState>>,
    t: Tenant,
    Path(id): Path<i64>,
) -> Result<Json<StoredFace>, ApiError> {
    t.require_write("deleting a face")?;
    s.work(move || Ok(Json(stored(store(&t).remove_face(id)?))))
        .await
}
