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
    /// A PyTorch file could not be read.
    #[error("{path}: cannot read PyTorch tensors")]
    Pytorch {
        /// The file.
        path: PathBuf,
        /// The reader's error.
        #[source]
        source: burn::store::PytorchStoreError,
    },
    /// The package download or extraction failed.
    #[error("{reason}")]
    Fetch {
        /// What failed, and what to do.
        reason: String,
        /// The underlying error, where there is one.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
}

impl ImportError {
    pub(crate) fn fetch(reason: String) -> Self {
        Self::Fetch {
            reason,
            source: None,
        }
    }

    pub(crate) fn fetch_with(
        reason: String,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self::Fetch {
            reason,
            source: Some(source.into()),
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}

/// Result alias of the importer.
pub type Result<T, E = ImportError> = std::result::Result<T, E>;
