//! The gallery: enrolled identities with their face embeddings, persisted in SQLite, the
//! search that answers "who is this?", and the [`Recognizer`] that joins the face pipeline to
//! a store (enrol, verify, identify, calibrate), which every front calls.
//!
//! One-shot enrolment is what a metric embedding buys: adding a person is storing a vector,
//! no retraining. Distances are L2 between unit-length embeddings (0..2).
//!
//! ```text
//! facenet enroll "Ada Lovelace" ada.jpg
//! facenet identify group.jpg
//! ```
//!
//! The same through the library (weights and sample photos from `facenet fetch`):
//!
//! ```
//! use std::sync::Arc;
//! use facenet::pipeline::{FaceChoice, FacePipeline};
//! use facenet::{Device, Embedder, detect::Detector, paths::cache_dir};
//! use facenet_gallery::{Recognizer, SqliteGallery};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let (cache, cpu) = (cache_dir(), Device::flex());
//! let embedder = Embedder::open(&cache.join("facenet_keras.safetensors"), &cpu)?;
//! let detector = Detector::open(&cache.join("mtcnn.safetensors"), &cpu)?;
//! let pipeline = Arc::new(FacePipeline::new(embedder, Some(detector)));
//! let gallery = Recognizer::new(pipeline, Arc::new(SqliteGallery::in_memory()?));
//!
//! let photos = cache.join("5-celebrity-faces-dataset");
//! let first = |dir: &str| facenet::files::walk_images(&photos.join(dir)).map(|f| f[0].clone());
//! gallery.enroll_files("madonna", &[first("train/madonna")?], FaceChoice::Unambiguous)?;
//! gallery.enroll_files("ben", &[first("train/ben_afflek")?], FaceChoice::Unambiguous)?;
//!
//! let searcher = gallery.searcher(None, None)?; // threshold for 1 % false identifications
//! let photo = gallery.pipeline().load(&first("val/madonna")?)?;
//! let faces = gallery.identify(&searcher, &photo, 1)?;
//! assert_eq!(faces[0].identity, "madonna");
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]

pub mod ann;
pub mod cluster;
#[cfg(feature = "postgres")]
pub mod postgres;
pub mod recognizer;
pub mod search;
pub mod sqlite;
#[cfg(test)]
mod store_tests;
pub mod synthetic;
pub mod tenants;

use serde::{Deserialize, Serialize};

pub use ann::{ANN_MIN_FACES, AnnConfig, AnnIndex};
pub use recognizer::{
    Calibration, ClusteredFace, DEFAULT_FIR, DEFAULT_THRESHOLD, DEFAULT_VERIFY_FAR, Enrolment,
    Identification, LabelledResult, PairVerification, PhotoEnrolment, Recognizer, Searcher,
    Threshold, ThresholdSource, UNKNOWN, Verification, cluster_folder,
};
pub use search::{GalleryRule, Match, SearchIndex};
pub use sqlite::SqliteGallery;

/// Opens a store by location: a `postgres://` URL (with the `postgres` feature), else an
/// SQLite file (created if `create`, else required to exist).
pub fn open_store(location: &str, create: bool) -> Result<std::sync::Arc<dyn Tenants>> {
    #[cfg(feature = "postgres")]
    if postgres::is_url(location) {
        return Ok(std::sync::Arc::new(postgres::PostgresGallery::connect(
            location,
        )?));
    }
    let path = std::path::Path::new(location);
    Ok(std::sync::Arc::new(if create {
        SqliteGallery::open(path)?
    } else {
        SqliteGallery::open_existing(path)?
    }))
}
pub use tenants::{ApiKey, DEFAULT_GALLERY, Role, Tenants};

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
    /// No face of that id in the gallery.
    #[error("no face with id {0} in the gallery")]
    UnknownFace(i64),
    /// The name is taken.
    #[error("an identity named `{0}` already exists")]
    NameTaken(String),
    /// Invalid input (empty name, wrong vector length...).
    #[error("{0}")]
    Invalid(String),
    /// No gallery at this location.
    #[error(
        "no gallery at {0}: enrol someone first (`facenet enroll NAME PHOTO`) or pass --gallery"
    )]
    Missing(String),
    /// A file beside the gallery (the HNSW graph, its key) could not be read or written.
    #[error("{path}")]
    Io {
        /// The file.
        path: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The database server failed or could not be reached.
    #[error("gallery {location}")]
    Server {
        /// The server and database (without password).
        location: String,
        /// The client's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The approximate (HNSW) index failed.
    #[error("approximate index: {what}")]
    Ann {
        /// The step (create, insert, search, save, load).
        what: String,
        /// usearch's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The face pipeline failed (a photo, the weights, the network).
    #[error(transparent)]
    Facenet(#[from] facenet::Error),
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

/// Storage of identities and faces, shared by threads (a service's handlers hold one store).
/// SQLite is one implementation; a server store implements the same trait.
pub trait GalleryStore: Send + Sync + std::fmt::Debug {
    /// Where the gallery is, for messages (a file path or a server URL without password).
    fn location(&self) -> String;
    /// Where an HNSW graph of the gallery may be saved, if the store keeps files.
    fn ann_path(&self) -> Option<std::path::PathBuf> {
        None
    }
    /// The model whose embeddings the gallery holds (None while empty of faces).
    fn model(&self) -> Result<Option<ModelInfo>>;
    /// Adds faces to an identity (created if new) in one transaction: all or nothing. Returns
    /// the new faces' ids.
    fn enroll(&self, identity: &str, faces: &[NewFace], model: &ModelInfo) -> Result<Vec<i64>>;
    /// Creates an identity without faces; an existing name is refused.
    fn create_identity(&self, identity: &str) -> Result<()>;
    /// Identities with their number of faces, by name.
    fn identities(&self) -> Result<Vec<(String, usize)>>;
    /// Faces of one identity, or of all.
    fn faces(&self, identity: Option<&str>) -> Result<Vec<FaceRecord>>;
    /// Removes an identity and its faces; returns the number of faces removed.
    fn remove(&self, identity: &str) -> Result<usize>;
    /// Removes one face by id; returns it.
    fn remove_face(&self, id: i64) -> Result<FaceRecord>;
    /// Renames an identity.
    fn rename(&self, old: &str, new: &str) -> Result<()>;
    /// The gallery's decision settings.
    fn settings(&self) -> Result<Settings>;
    /// Replaces the gallery's decision settings (checked first: a threshold in (0, 2], a
    /// rate in (0, 1)).
    fn set_settings(&self, settings: &Settings) -> Result<()>;

    /// Searches in the store itself, where it can (a database server): the best `k` identities
    /// for `probe` under `rule`, exact. `None`: the caller searches in its own process.
    fn search(
        &self,
        _probe: &[f32],
        _k: usize,
        _rule: search::GalleryRule,
    ) -> Result<Option<Vec<search::Match>>> {
        Ok(None)
    }

    /// How many gallery entries [`GalleryStore::search`] compares a probe with under `rule`
    /// (identities with faces under the centroid rule, faces under nearest-sample); `None`
    /// when the store does not search itself.
    fn entries(&self, _rule: search::GalleryRule) -> Result<Option<usize>> {
        Ok(None)
    }

    /// Refuses `model` if the gallery holds embeddings of another.
    fn check_model(&self, model: &ModelInfo) -> Result<()> {
        match self.model()? {
            Some(have) if have != *model => Err(GalleryError::ModelMismatch {
                gallery: have.short(),
                gallery_dim: have.dim,
                given: model.short(),
                given_dim: model.dim,
            }),
            _ => Ok(()),
        }
    }
}

/// A gallery's own decision settings; each absent one falls back to the library's default.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    /// The 1:1 (verification) threshold calibrated on the user's photos
    /// (`facenet calibrate --store`), L2 between unit embeddings.
    pub threshold: Option<f32>,
    /// The false-identification rate identification aims at in this gallery.
    pub target_fir: Option<f64>,
    /// Impostor distances measured on the user's own labelled photos (`facenet calibrate
    /// --store`), used instead of the table shipped for the weights.
    pub impostor: Option<facenet::eval::openset::ImpostorTable>,
}

impl Settings {
    /// Refuses out-of-range values.
    pub fn check(&self) -> Result<()> {
        check_threshold(self.threshold)?;
        self.target_fir.map_or(Ok(()), check_rate)
    }
}

/// Checks a target false-identification rate: in (0, 1).
pub fn check_rate(f: f64) -> Result<()> {
    if f > 0.0 && f < 1.0 {
        Ok(())
    } else {
        Err(GalleryError::Invalid(format!(
            "target false-identification rate {f}: a rate lies in (0, 1)"
        )))
    }
}

/// Checks faces before they are stored: each embedding has the model's length and finite
/// values.
pub fn check_faces(faces: &[NewFace], model: &ModelInfo) -> Result<()> {
    for f in faces {
        if f.embedding.len() != model.dim {
            return Err(GalleryError::Invalid(format!(
                "{}: embedding has {} values, the model's have {}",
                f.source,
                f.embedding.len(),
                model.dim
            )));
        }
        if f.embedding.iter().any(|v| !v.is_finite()) {
            return Err(GalleryError::Invalid(format!(
                "{}: embedding has a value that is not a finite number",
                f.source
            )));
        }
    }
    Ok(())
}

/// Checks a threshold before it is stored: an L2 distance between unit vectors, in (0, 2].
pub fn check_threshold(t: Option<f32>) -> Result<()> {
    match t {
        Some(t) if !(t > 0.0 && t <= 2.0) => Err(GalleryError::Invalid(format!(
            "threshold {t}: an L2 distance between unit embeddings lies in (0, 2]"
        ))),
        _ => Ok(()),
    }
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

impl Export {
    /// Every face of a store, with its model.
    pub fn of(store: &dyn GalleryStore) -> Result<Self> {
        Ok(Self {
            format: "facenet-gallery/1".into(),
            model: store.model()?,
            faces: store.faces(None)?,
        })
    }

    /// Adds the faces to `store` (one transaction per identity; the model must match the
    /// store's); returns how many were added.
    pub fn import_into(self, store: &dyn GalleryStore) -> Result<usize> {
        let Some(model) = self.model else {
            return Ok(0);
        };
        let mut by_name: std::collections::BTreeMap<String, Vec<NewFace>> = Default::default();
        for f in self.faces {
            by_name.entry(f.identity).or_default().push(NewFace {
                embedding: f.embedding,
                source: f.source,
                bbox: f.bbox,
            });
        }
        let mut n = 0;
        for (name, faces) in by_name {
            n += store.enroll(&name, &faces, &model)?.len();
        }
        Ok(n)
    }
}
