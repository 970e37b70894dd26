//! The photo library under `/api/v1/library`: people, naming, merging, moving a face, a
//! person's faces and photos, thumbnails, and finding photos by face. Each handler is one
//! call of [`facenet_gallery::library::Library`], over the key's gallery; indexing is
//! `facenet library add` on the same file. The routes that change the library are in
//! [`edit`].

pub mod edit;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use facenet_gallery::library::{FaceHit, Library, LibraryFace, Person, PhotoRow};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::Errors;
use crate::error::ApiError;
use crate::input::{Images, ImagesForm, ImagesJson, Path};
use crate::{AppState, Tenant};

/// The library of each gallery, opened once.
#[derive(Debug, Default)]
pub struct Libraries(Mutex<HashMap<String, Arc<Library>>>);

/// Side of the thumbnails, in pixels.
pub const THUMBNAIL: u32 = 112;

impl AppState {
    /// The photo library of the caller's gallery (in the gallery's store, SQLite or
    /// PostgreSQL).
    fn library(&self, t: &Tenant) -> Result<Arc<Library>, ApiError> {
        let mut held = self.libraries.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(l) = held.get(&t.key.gallery) {
            return Ok(l.clone());
        }
        let lib = Arc::new(Library::new(
            facenet_gallery::library::store_of(self.tenants.as_ref(), &t.key.gallery)?,
            t.recognizer.clone(),
        )?);
        held.insert(t.key.gallery.clone(), lib.clone());
        Ok(lib)
    }

    /// `f` on the caller's library, as queued work ([`AppState::work`]).
    async fn with_library<T: Send + 'static>(
        self: &Arc<Self>,
        t: Tenant,
        f: impl FnOnce(&Library) -> Result<T, ApiError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let s = self.clone();
        self.work(move || f(&*s.library(&t)?)).await
    }
}

/// People of the library.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PeopleOut {
    /// Named first, then by faces.
    pub people: Vec<PersonOut>,
}

/// A person.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PersonOut {
    /// Id.
    pub id: i64,
    /// Name, once given.
    pub name: Option<String>,
    /// Faces.
    pub faces: usize,
    /// Photos.
    pub photos: usize,
    /// Their best face (for a thumbnail).
    pub cover: Option<i64>,
}

pub(super) fn person_out(p: Person) -> PersonOut {
    PersonOut {
        id: p.id,
        name: p.name,
        faces: p.faces,
        photos: p.photos,
        cover: p.cover,
    }
}

/// A face of the library.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct FaceOut {
    /// Id.
    pub id: i64,
    /// Its photo's path.
    pub path: String,
    /// `[x1, y1, x2, y2]`.
    #[serde(rename = "box")]
    pub bbox: [f32; 4],
    /// Quality, 0 to 1.
    pub quality: f32,
    /// Its person.
    pub person: Option<i64>,
    /// Placed by a user.
    pub pinned: bool,
}

pub(super) fn face_out(f: LibraryFace) -> FaceOut {
    FaceOut {
        id: f.id,
        path: f.path,
        bbox: f.bbox,
        quality: f.quality,
        person: f.person,
        pinned: f.pinned,
    }
}

/// A photo with the person's faces in it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PhotoOut {
    /// Id (`/api/v1/library/photos/{id}` serves it).
    pub id: i64,
    /// Path.
    pub path: String,
    /// Pixels.
    pub width: u32,
    /// Pixels.
    pub height: u32,
    /// The person's faces in it.
    pub faces: Vec<FaceOut>,
}

/// Every person with face and photo counts.
#[utoipa::path(get, path = "/api/v1/library/people", tag = "library",
    responses((status = 200, body = PeopleOut), Errors), security(("api_key" = [])))]
pub(crate) async fn people(
    State(s): State<Arc<AppState>>,
    t: Tenant,
) -> Result<Json<PeopleOut>, ApiError> {
    s.with_library(t, move |lib| {
        let people = lib.people()?.into_iter().map(person_out).collect();
        Ok(Json(PeopleOut { people }))
    })
    .await
}

/// A person's faces, best first.
#[utoipa::path(get, path = "/api/v1/library/people/{person}/faces", tag = "library",
    params(("person" = String, Path, description = "Id or name")),
    responses((status = 200, body = [FaceOut]), Errors), security(("api_key" = [])))]
pub(crate) async fn faces(
    State(s): State<Arc<AppState>>,
    t: Tenant,
    Path(person): Path<String>,
) -> Result<Json<Vec<FaceOut>>, ApiError> {
    s.with_library(t, move |lib| {
        Ok(Json(
            lib.faces_of(&person)?.into_iter().map(face_out).collect(),
        ))
    })
    .await
}

/// The photos a person is in, with their faces' boxes.
#[utoipa::path(get, path = "/api/v1/library/people/{person}/photos", tag = "library",
    params(("person" = String, Path, description = "Id or name")),
    responses((status = 200, body = [PhotoOut]), Errors), security(("api_key" = [])))]
pub(crate) async fn photos(
    State(s): State<Arc<AppState>>,
    t: Tenant,
    Path(person): Path<String>,
) -> Result<Json<Vec<PhotoOut>>, ApiError> {
    s.with_library(t, move |lib| {
        let mut faces: HashMap<String, Vec<FaceOut>> = HashMap::new();
        for f in lib.faces_of(&person)? {
            faces.entry(f.path.clone()).or_default().push(face_out(f));
        }
        let rows: Vec<PhotoRow> = lib.find_people(&[person])?;
        Ok(Json(
            rows.into_iter()
                .map(|r| PhotoOut {
                    id: r.id,
                    faces: faces.remove(&r.path).unwrap_or_default(),
                    path: r.path,
                    width: r.width,
                    height: r.height,
                })
                .collect(),
        ))
    })
    .await
}

/// A face's thumbnail (JPEG, aligned, 112 pixels), cut from its photo once and cached.
#[utoipa::path(get, path = "/api/v1/library/faces/{id}/thumbnail", tag = "library",
    params(("id" = i64, Path, description = "The face")),
    responses((status = 200, description = "JPEG", content_type = "image/jpeg", body = Vec<u8>), Errors),
    security(("api_key" = [])))]
pub(crate) async fn thumbnail(
    State(s): State<Arc<AppState>>,
    t: Tenant,
    Path(id): Path<i64>,
) -> Result<Response, ApiError> {
    s.with_library(t, move |lib| {
        let jpeg = lib.thumbnail_jpeg(id, THUMBNAIL)?;
        Ok((
            [
                (header::CONTENT_TYPE, "image/jpeg"),
                (header::CACHE_CONTROL, "private, max-age=3600"),
            ],
            jpeg,
        )
            .into_response())
    })
    .await
}

/// A photo of the library, as its file is (the page draws the person's boxes over it).
#[utoipa::path(get, path = "/api/v1/library/photos/{id}", tag = "library",
    params(("id" = i64, Path, description = "The photo")),
    responses((status = 200, description = "The photo file", content_type = "image/*", body = Vec<u8>), Errors),
    security(("api_key" = [])))]
pub(crate) async fn photo(
    State(s): State<Arc<AppState>>,
    t: Tenant,
    Path(id): Path<i64>,
) -> Result<Response, ApiError> {
    s.with_library(t, move |lib| {
        let (bytes, kind) = lib.photo_file(id)?;
        Ok((
            [
                (header::CONTENT_TYPE, kind),
                (header::CACHE_CONTROL, "private, max-age=3600"),
            ],
            bytes,
        )
            .into_response())
    })
    .await
}

/// Photos found by face.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct FindOut {
    /// Nearest first.
    pub photos: Vec<HitOut>,
}

/// A photo containing the face.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct HitOut {
    /// Path.
    pub path: String,
    /// Its nearest face.
    pub face: i64,
    /// L2 distance to the probe.
    pub distance: f32,
    /// That face's person.
    pub person: Option<String>,
    /// Its box.
    #[serde(rename = "box")]
    pub bbox: [f32; 4],
}

fn hit_out(h: FaceHit) -> HitOut {
    HitOut {
        path: h.path,
        face: h.face,
        distance: h.distance,
        person: h.person,
        bbox: h.bbox,
    }
}

/// Photos of the library containing the main face of the image, nearest first.
#[utoipa::path(post, path = "/api/v1/library/find", tag = "library",
    request_body(content((ImagesForm = "multipart/form-data"), (ImagesJson = "application/json"))),
    responses((status = 200, body = FindOut), Errors), security(("api_key" = [])))]
pub(crate) async fn find(
    State(s): State<Arc<AppState>>,
    t: Tenant,
    images: Images,
) -> Result<Json<FindOut>, ApiError> {
    if images.0.len() != 1 {
        return Err(ApiError::bad_request(format!(
            "send one image (got {}): the face to look for",
            images.0.len()
        )));
    }
    let s2 = s.clone();
    let p = s.pipeline.clone();
    s.work_decoding(images.peak_pixels(), move || {
        let lib = s2.library(&t)?;
        let u = &images.0[0];
        let img = crate::api::faces::decode(&p, u)?;
        let face = p
            .face(&img, facenet::pipeline::FaceChoice::Primary)?
            .map_err(|why| facenet::Error::NoFace {
                path: u.label.clone().into(),
                why,
            })?;
        let hits = lib.find_face(&face.embedding, 100)?;
        Ok(Json(FindOut {
            photos: hits.into_iter().map(hit_out).collect(),
        }))
    })
    .await
}
