//! The library's routes that change it: naming, merging, forgetting, moving a face,
//! regrouping. Each needs a `write` key.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{FaceOut, PersonOut, face_out, person_out};
use crate::api::Errors;
use crate::error::ApiError;
use crate::input::{Body, Path};
use crate::{AppState, Tenant};

/// A name.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NameIn {
    /// The person's name (a gallery subject of that name gets their best faces).
    pub name: String,
}

/// Names (or renames) a person; they become a subject of the gallery.
#[utoipa::path(put, path = "/api/v1/library/people/{person}/name", tag = "library",
    params(("person" = String, Path, description = "Id or name")), request_body = NameIn,
    responses((status = 200, body = PersonOut), Errors), security(("api_key" = [])))]
pub(crate) async fn name(
    State(s): State<Arc<AppState>>,
    t: Tenant,
    Path(person): Path<String>,
    Body(b): Body<NameIn>,
) -> Result<Json<PersonOut>, ApiError> {
    t.require_write("naming a person")?;
    s.with_library(t, move |lib| {
        let p = lib.name(&person, &b.name)?;
        Ok(Json(person_out(p)))
    })
    .await
}

/// People to merge.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MergeIn {
    /// Ids or names of the people merged into this one.
    pub people: Vec<String>,
}

/// Merges people into this one.
#[utoipa::path(post, path = "/api/v1/library/people/{person}/merge", tag = "library",
    params(("person" = String, Path, description = "Id or name of the person that stays")),
    request_body = MergeIn,
    responses((status = 200, body = PersonOut), Errors), security(("api_key" = [])))]
pub(crate) async fn merge(
    State(s): State<Arc<AppState>>,
    t: Tenant,
    Path(person): Path<String>,
    Body(b): Body<MergeIn>,
) -> Result<Json<PersonOut>, ApiError> {
    t.require_write("merging people")?;
    if b.people.is_empty() {
        return Err(ApiError::bad_request(
            "people: name at least one person to merge",
        ));
    }
    s.with_library(t, move |lib| {
        let p = lib.merge(&person, &b.people)?;
        Ok(Json(person_out(p)))
    })
    .await
}

/// Forgotten.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Forgotten {
    /// Faces whose embeddings were erased.
    pub faces: usize,
}

/// Forgets a person: the name (the gallery subject too) and their faces' embeddings.
#[utoipa::path(delete, path = "/api/v1/library/people/{person}", tag = "library",
    params(("person" = String, Path, description = "Id or name")),
    responses((status = 200, body = Forgotten), Errors), security(("api_key" = [])))]
pub(crate) async fn forget(
    State(s): State<Arc<AppState>>,
    t: Tenant,
    Path(person): Path<String>,
) -> Result<Json<Forgotten>, ApiError> {
    t.require_write("forgetting a person")?;
    s.with_library(t, move |lib| {
        Ok(Json(Forgotten {
            faces: lib.forget(&person)?,
        }))
    })
    .await
}

/// Where a face goes.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MoveIn {
    /// A person (id or name), `new` for a person of its own, or null for no one.
    pub to: Option<String>,
}

/// Moves a face: it stays where it is put, and never goes back to the person it left.
#[utoipa::path(post, path = "/api/v1/library/faces/{id}/move", tag = "library",
    params(("id" = i64, Path, description = "The face")), request_body = MoveIn,
    responses((status = 200, body = FaceOut), Errors), security(("api_key" = [])))]
pub(crate) async fn move_face(
    State(s): State<Arc<AppState>>,
    t: Tenant,
    Path(id): Path<i64>,
    Body(b): Body<MoveIn>,
) -> Result<Json<FaceOut>, ApiError> {
    t.require_write("moving a face")?;
    s.with_library(t, move |lib| {
        lib.move_face(id, b.to.as_deref())?;
        Ok(Json(face_out(lib.db().face(id)?)))
    })
    .await
}

/// What a regrouping did.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ReclusterOut {
    /// Faces that joined a person.
    pub joined: usize,
    /// People formed.
    pub new_people: usize,
    /// Faces with a person.
    pub assigned: usize,
    /// Faces without.
    pub unassigned: usize,
}

/// Regroups every face no user vouched for (names, moved faces and "not this person" kept).
#[utoipa::path(post, path = "/api/v1/library/recluster", tag = "library",
    responses((status = 200, body = ReclusterOut), Errors), security(("api_key" = [])))]
pub(crate) async fn recluster(
    State(s): State<Arc<AppState>>,
    t: Tenant,
) -> Result<Json<ReclusterOut>, ApiError> {
    t.require_write("regrouping the library")?;
    s.with_library(t, move |lib| {
        let r = lib.recluster()?;
        Ok(Json(ReclusterOut {
            joined: r.joined,
            new_people: r.new_people,
            assigned: r.assigned,
            unassigned: r.unassigned,
        }))
    })
    .await
}
