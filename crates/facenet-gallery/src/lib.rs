//! The gallery: enrolled identities with their face embeddings, persisted in SQLite, and the
//! search that answers "who is this?".
//!
//! One-shot enrolment is what a metric embedding buys: adding a person is storing a vector,
//! no retraining. Distances are L2 between unit-length embeddings (0..2).
//!
//! ```text
//! facenet enroll "Ada Lovelace" ada.jpg
//! facenet identify group.jpg
//! ```
#![deny(missing_docs)]

pub mod ann;
pub mod cluster;
pub mod search;
pub mod sqlite;
pub mod synthetic;

use serde::{Deserialize, Serialize};

pub use ann::{ANN_MIN_FACES, AnnConfig, AnnIndex};
pub use search::{Match, SearchIndex};
pub use sqlite::SqliteGallery;

/// Errors of the gallery.
#[derive(Debug, thiserror::Error)]
pub enum GalleryError {
    /// The database could not be opened or queried.
    #[error("gallery {path}")]
    Sqlite {
        /// The database file.
        path: String,
        /// The SQLite error.
        #[source]
        source: rusqlite::Error,
    },
    /// The file exists but is not a facenet gallery.
    #[error("gallery {path}: {reason}")]
    Corrupt {
        /// The database file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// Embeddings from another model than the gallery's.
    #[error(
        "the gallery holds embeddings of model {gallery} ({gallery_dim}-d), these come from model {given} ({given_dim}-d); \
         distances between different models mean nothing: use another gallery (--gallery) or re-enrol"
    )]
    ModelMismatch {
        /// The gallery's model fingerprint (short).
        gallery: String,
        /// Its dimension.
        gallery_dim: usize,
        /// The offered model fingerprint (short).
        given: String,
        /// Its dimension.
        given_dim: usize,
    },
    /// No identity of that name.
    #[error("no identity named `{0}` in the gallery")]
    UnknownIdentity(String),
    /// The name is taken.
    #[error("an identity named `{0}` already exists")]
    NameTaken(String),
    /// Invalid input (empty name, wrong vector length...).
    #[error("{0}")]
    Invalid(String),
}

/// Result alias of the gallery.
pub type Result<T, E = GalleryError> = std::result::Result<T, E>;

/// Which model produced the embeddings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelInfo {
    /// Weights fingerprint (sha256 hex).
    pub fingerprint: String,
    /// Embedding dimension.
    pub dim: usize,
}

impl ModelInfo {
    /// The first 12 hex digits, for messages.
    pub fn short(&self) -> String {
        self.fingerprint.chars().take(12).collect()
    }
}

/// A face to store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewFace {
    /// Unit-length embedding.
    pub embedding: Vec<f32>,
    /// Where it came from (file path).
    pub source: String,
    /// Face box in the source photo, if detected.
    pub bbox: Option<[f32; 4]>,
}

/// A stored face.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaceRecord {
    /// Row id.
    pub id: i64,
    /// Identity name.
    pub identity: String,
    /// Unit-length embedding.
    pub embedding: Vec<f32>,
    /// Source path.
    pub source: String,
    /// Face box in the source photo.
    pub bbox: Option<[f32; 4]>,
    /// Unix time of enrolment.
    pub created: i64,
}

/// Storage of identities and faces. The SQLite store is the one in use; the trait keeps the
/// commands independent of it (a server store can come later).
pub trait GalleryStore {
    /// The model whose embeddings the gallery holds (None while empty of faces).
    fn model(&self) -> Result<Option<ModelInfo>>;
    /// Adds faces to an identity (created if new) in one transaction: all or nothing.
    fn enroll(&mut self, identity: &str, faces: &[NewFace], model: &ModelInfo) -> Result<usize>;
    /// Identities with their number of faces, by name.
    fn identities(&self) -> Result<Vec<(String, usize)>>;
    /// Faces of one identity, or of all.
    fn faces(&self, identity: Option<&str>) -> Result<Vec<FaceRecord>>;
    /// Removes an identity and its faces; returns the number of faces removed.
    fn remove(&mut self, identity: &str) -> Result<usize>;
    /// Renames an identity.
    fn rename(&mut self, old: &str, new: &str) -> Result<()>;
    /// A stored setting.
    fn setting(&self, key: &str) -> Result<Option<String>>;
    /// Stores a setting.
    fn set_setting(&mut self, key: &str, value: &str) -> Result<()>;
}

/// Export format of `facenet gallery export` / `import`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Export {
    /// Always `facenet-gallery/1`.
    pub format: String,
    /// The model of the embeddings.
    pub model: Option<ModelInfo>,
    /// Every face.
    pub faces: Vec<FaceRecord>,
}
