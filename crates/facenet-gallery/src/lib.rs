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
//! assert_eq!(faces[0].identity.name(), "madonna");
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]

pub mod ann;
pub mod cluster;
mod cohort;
pub mod library;
pub mod live;
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
pub use facenet::eval::cohort::Scoring;
pub use live::{LiveIndex, Refresh};
pub use recognizer::{
    Calibration, ClusteredFace, DEFAULT_FIR, DEFAULT_THRESHOLD, DEFAULT_VERIFY_FAR, Enrolment,
    Identification, Identity, LabelledResult, PairVerification, PhotoEnrolment, Recognizer,
    Searcher, Threshold, ThresholdSource, UNKNOWN, Verification, cluster_folder,
    identification_threshold, impostor_table_for, verify_pair,
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
    /// No such person or face in the photo library.
    #[error("{0}")]
    NotInLibrary(String),
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

/// Unix time now, in seconds (0 before 1970).
pub(crate) fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
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
    /// A page of [`GalleryStore::identities`]: at most `limit` from `offset`, and how many
    /// identities there are in all. Stores page in their query language; this default reads
    /// the whole list.
    fn identities_page(
        &self,
        offset: usize,
        limit: usize,
    ) -> Result<(Vec<(String, usize)>, usize)> {
        let all = self.identities()?;
        let total = all.len();
        Ok((all.into_iter().skip(offset).take(limit).collect(), total))
    }
    /// A page of [`GalleryStore::faces`] (same order): at most `limit` from `offset`, and how
    /// many faces there are in all. Stores page in their query language; this default reads
    /// every face.
    fn faces_page(
        &self,
        identity: Option<&str>,
        offset: usize,
        limit: usize,
    ) -> Result<(Vec<FaceRecord>, usize)> {
        let all = self.faces(identity)?;
        let total = all.len();
        Ok((all.into_iter().skip(offset).take(limit).collect(), total))
    }
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
    /// for `probe` under `rule`, ranked by `scoring` (under [`Scoring::Cohort`] each match
    /// carries its cohort score). `None`: the caller searches in its own process.
    fn search(
        &self,
        _probe: &[f32],
        _k: usize,
        _rule: search::GalleryRule,
        _scoring: Scoring,
    ) -> Result<Option<Vec<search::Match>>> {
        Ok(None)
    }

    /// What changed in the gallery since generation `since` (0: since it was created): the
    /// gallery's generation now, the identities whose faces or names changed after `since`,
    /// and whether its settings did. Every write bumps the generation in its own transaction,
    /// so a [`crate::Recognizer`] catches up with other processes' writes by reading only what
    /// they touched. `None`: the store keeps no such record (then it searches itself, or every
    /// search reads it whole).
    fn changes(&self, _since: i64) -> Result<Option<Changes>> {
        Ok(None)
    }

    /// How many identities have faces, and how many gallery entries
    /// [`GalleryStore::search`] compares a probe with under `rule` (those identities under the
    /// centroid rule, their faces under nearest-sample); `None` when the store does not search
    /// itself.
    fn entries(&self, _rule: search::GalleryRule) -> Result<Option<(usize, usize)>> {
        Ok(None)
    }

    /// Adds identities (with their faces, sources, boxes and enrolment times as given) in one
    /// transaction: all or nothing. Existing identities keep their faces and gain these.
    /// Returns how many faces were added. Used by [`Export::import_into`].
    fn import(&self, batch: &ImportBatch) -> Result<usize>;

    /// Builds (`Some`) or drops (`None`) the store's own HNSW index over the gallery's faces
    /// and identity centroids. Only a database store keeps one; a SQLite gallery builds its
    /// graph in memory when it is large enough ([`ANN_MIN_FACES`]).
    fn set_index(&self, _params: Option<HnswParams>) -> Result<()> {
        Err(GalleryError::Invalid(format!(
            "{}: only a PostgreSQL gallery keeps a search index in the database; a SQLite \
             gallery builds its HNSW graph in memory from {ANN_MIN_FACES} faces on",
            self.location()
        )))
    }

    /// The store's own HNSW index, if it has one.
    fn index(&self) -> Result<Option<HnswParams>> {
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

/// What changed in a gallery after a generation ([`GalleryStore::changes`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// The gallery's generation now.
    pub generation: i64,
    /// Identities enrolled into, removed, renamed (old and new name) or with a face removed,
    /// by name.
    pub identities: Vec<String>,
    /// Whether the gallery's settings changed.
    pub settings: bool,
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
    /// Cohort-score thresholds measured on the user's own labelled photos (`facenet calibrate
    /// --store`, with 14 people or more), used instead of the table shipped for the weights.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cohort: Option<facenet::eval::cohort::CohortThresholds>,
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

/// Longest identity name accepted, in bytes of UTF-8.
pub const MAX_NAME_BYTES: usize = 256;

/// Checks an identity (subject) name before it is stored: not blank, at most
/// [`MAX_NAME_BYTES`], no control characters (they would rewrite terminals and log lines).
/// Everything else (quotes, `../`, SQL, any script) is stored and returned verbatim: names are
/// only ever bound as query parameters, never used as paths.
pub fn check_identity_name(name: &str) -> Result<()> {
    if name.trim().is_empty() {
        return Err(GalleryError::Invalid(
            "an identity name must not be empty".into(),
        ));
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(GalleryError::Invalid(format!(
            "identity name `{}...`: {} bytes, longer than the {MAX_NAME_BYTES} accepted",
            name.chars().take(24).collect::<String>(),
            name.len()
        )));
    }
    if let Some((i, c)) = name.chars().enumerate().find(|(_, c)| c.is_control()) {
        return Err(GalleryError::Invalid(format!(
            "identity name {:?}: control character U+{:04X} at position {i}",
            name.chars().take(40).collect::<String>(),
            c as u32
        )));
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

/// The parameters of a database store's HNSW index (`facenet gallery index`), as pgvector
/// names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HnswParams {
    /// Links per node (HNSW's M).
    pub m: u32,
    /// Candidate list size while building.
    pub ef_construction: u32,
    /// Candidate list size while searching (`hnsw.ef_search`).
    pub ef_search: u32,
}

impl Default for HnswParams {
    /// M = 16, ef_construction = 64 (pgvector's defaults), ef_search = 100: recall@1 against
    /// exact search is measured by `facenet bench search --gallery postgres://...` (README).
    fn default() -> Self {
        Self {
            m: 16,
            ef_construction: 64,
            ef_search: 100,
        }
    }
}

impl HnswParams {
    /// Refuses what pgvector would: M in 2..=100, ef_construction in 4..=1000 and at least
    /// 2 M, ef_search in 1..=1000.
    pub fn check(&self) -> Result<()> {
        let bad = |what: String| Err(GalleryError::Invalid(what));
        if !(2..=100).contains(&self.m) {
            return bad(format!("HNSW m {}: must lie in 2..=100", self.m));
        }
        if !(4..=1000).contains(&self.ef_construction) || self.ef_construction < 2 * self.m {
            return bad(format!(
                "HNSW ef_construction {}: must lie in 4..=1000 and be at least 2 m ({})",
                self.ef_construction,
                2 * self.m
            ));
        }
        if !(1..=1000).contains(&self.ef_search) {
            return bad(format!(
                "HNSW ef_search {}: must lie in 1..=1000",
                self.ef_search
            ));
        }
        Ok(())
    }
}

/// What [`GalleryStore::import`] adds: identities in name order, each with its faces and
/// their enrolment times (Unix seconds), under one model.
#[derive(Debug, Clone, Default)]
pub struct ImportBatch {
    /// The model of every face (None only when no identity has faces).
    pub model: Option<ModelInfo>,
    /// Identity, its faces, and each face's time of enrolment.
    pub identities: Vec<(String, Vec<NewFace>, Vec<i64>)>,
}

/// The format name of [`Export`] files.
pub const EXPORT_FORMAT: &str = "facenet-gallery/1";

/// A gallery location for messages: a URL's password replaced by `***`.
pub fn redact(location: &str) -> String {
    let Some((scheme, rest)) = location.split_once("://") else {
        return location.to_string();
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    match authority.rsplit_once('@') {
        Some((userinfo, host)) if userinfo.contains(':') => {
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{scheme}://{user}:***@{host}{path}")
        }
        _ => location.to_string(),
    }
}

/// Export format of `facenet gallery export` / `import`: every identity (also those without
/// faces), every face with its embedding (bit for bit: JSON numbers written as the shortest
/// text that reads back to the same `f32`), source, box and time of enrolment, and the
/// gallery's settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Export {
    /// Always `facenet-gallery/1`.
    pub format: String,
    /// The model of the embeddings.
    pub model: Option<ModelInfo>,
    /// Every identity by name, with or without faces (absent in older exports: then the
    /// faces' identities).
    #[serde(default)]
    pub identities: Vec<String>,
    /// Every face.
    pub faces: Vec<FaceRecord>,
    /// The gallery's own settings (absent in older exports).
    #[serde(default)]
    pub settings: Settings,
}

impl Export {
    /// Every identity and face of a store, with its model and settings.
    pub fn of(store: &dyn GalleryStore) -> Result<Self> {
        Ok(Self {
            format: EXPORT_FORMAT.into(),
            model: store.model()?,
            identities: store.identities()?.into_iter().map(|(n, _)| n).collect(),
            faces: store.faces(None)?,
            settings: store.settings()?,
        })
    }

    /// Adds everything to `store` in one transaction (the model must match the store's; an
    /// existing identity gains the faces). The settings are taken too when the store has none
    /// of its own. Returns how many faces were added.
    pub fn import_into(self, store: &dyn GalleryStore) -> Result<usize> {
        if self.format != EXPORT_FORMAT {
            return Err(GalleryError::Invalid(format!(
                "format `{}`: this facenet reads `{EXPORT_FORMAT}` exports",
                self.format.chars().take(40).collect::<String>()
            )));
        }
        if self.model.is_none() && !self.faces.is_empty() {
            return Err(GalleryError::Invalid(
                "model: the export has faces but does not name their model".into(),
            ));
        }
        let mut by_name: std::collections::BTreeMap<String, (Vec<NewFace>, Vec<i64>)> = self
            .identities
            .into_iter()
            .map(|n| (n, Default::default()))
            .collect();
        for f in self.faces {
            let e = by_name.entry(f.identity).or_default();
            e.0.push(NewFace {
                embedding: f.embedding,
                source: f.source,
                bbox: f.bbox,
            });
            e.1.push(f.created);
        }
        if let Some(m) = &self.model {
            for (faces, _) in by_name.values() {
                check_faces(faces, m)?;
            }
        }
        let batch = ImportBatch {
            model: self.model,
            identities: by_name.into_iter().map(|(n, (f, t))| (n, f, t)).collect(),
        };
        let n = store.import(&batch)?;
        if self.settings != Settings::default() && store.settings()? == Settings::default() {
            store.set_settings(&self.settings)?;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn redact_hides_passwords_only() {
        use super::redact;
        assert_eq!(
            redact("postgres://ann:s3cr:et@db.example:5432/faces"),
            "postgres://ann:***@db.example:5432/faces"
        );
        assert_eq!(redact("postgres://ann@db/faces"), "postgres://ann@db/faces");
        assert_eq!(redact("/home/ann/gallery.db"), "/home/ann/gallery.db");
    }
}
