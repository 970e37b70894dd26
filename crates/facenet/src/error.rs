//! The library's error type.

use std::path::PathBuf;

/// Errors of the facenet library. Each variant names the file, tensor or field at fault.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read or written.
    #[error("{path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// An image file could not be decoded.
    #[error("{path}: not a readable image")]
    Decode {
        /// The file.
        path: PathBuf,
        /// The decoder's error.
        #[source]
        source: image::ImageError,
    },

    /// An image is unusable for the requested operation (too small, too large, empty).
    #[error("{path}: {reason}")]
    BadImage {
        /// The file (or a label for in-memory images).
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// A photo without the face asked for (none found, several comparable, an index past
    /// the faces found).
    #[error("{path}: {why}")]
    NoFace {
        /// The file (or a label for in-memory images).
        path: PathBuf,
        /// Why there is no face.
        why: NoFace,
    },

    /// The embedding queue is full: the caller should retry later (a service answers 503).
    #[error("busy: {queued} embedding requests are already waiting; retry shortly")]
    Busy {
        /// Requests waiting when this one was refused.
        queued: usize,
    },

    /// The embedding worker stopped (the process is shutting down, or it panicked).
    #[error("the embedding worker has stopped")]
    WorkerGone,

    /// A weights file is malformed or does not fit the model.
    #[error("{path}: {reason}")]
    Weights {
        /// The weights file.
        path: PathBuf,
        /// What is wrong, naming the first offending tensor.
        reason: String,
    },

    /// A tensor is missing, extra, or has the wrong shape.
    #[error("tensor `{name}`: {reason}")]
    Tensor {
        /// The tensor's key.
        name: String,
        /// What is wrong.
        reason: String,
    },

    /// A weights file's tensors could not be read.
    #[error("{path}: cannot read tensors")]
    Store {
        /// The weights file.
        path: PathBuf,
        /// The store's error.
        #[source]
        source: Box<burn::store::SafetensorsStoreError>,
    },

    /// A tensor of a weights file does not fit the network it is loaded into.
    #[error("{path}: tensor does not fit the network")]
    Apply {
        /// The weights file.
        path: PathBuf,
        /// The first mismatch.
        #[source]
        source: Box<burn::store::ApplyError>,
    },

    /// Tensor data could not be read as the expected element type.
    #[error("cannot read {what} as f32")]
    Data {
        /// Which tensor or value.
        what: String,
        /// burn's error.
        #[source]
        source: burn::tensor::DataError,
    },

    /// A JSON document (weights metadata, a cache or checkpoint file) could not be read or
    /// written.
    #[error("{path}: {what}")]
    Json {
        /// The file.
        path: PathBuf,
        /// What was being read or written.
        what: String,
        /// serde_json's error.
        #[source]
        source: serde_json::Error,
    },

    /// An image could not be encoded or written.
    #[error("{path}: cannot write the image")]
    Encode {
        /// The file.
        path: PathBuf,
        /// The encoder's error.
        #[source]
        source: image::ImageError,
    },

    /// A training run failed (optimizer or checkpoint state).
    #[error("{what}")]
    Training {
        /// What failed.
        what: String,
        /// The underlying error, where there is one.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },

    /// A text file (pairs, learning-rate schedule) does not parse.
    #[error("{path}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Where and why.
        #[source]
        source: ParseError,
    },

    /// An argument is out of its valid range.
    #[error("invalid {field}: {reason}")]
    InvalidArgument {
        /// The argument or configuration field.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
}

impl Error {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}

/// Why a line of a text file does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct ParseError {
    /// 1-based line number (0: the file as a whole).
    pub line: usize,
    /// What is wrong with it.
    pub reason: String,
}

impl ParseError {
    /// An error at `line`.
    pub fn at(line: usize, reason: impl Into<String>) -> Self {
        Self {
            line,
            reason: reason.into(),
        }
    }
}

/// Result alias of the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a photo gave no face for a [`crate::pipeline::FaceChoice`]. Its message names no front's option: each
/// front adds its own hint (a CLI flag, a query parameter, a Python argument).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum NoFace {
    /// The detector found nothing.
    #[error("no face found")]
    None,
    /// Several comparable faces and no choice made; their number.
    #[error("{0} faces found, none clearly the face of the photo")]
    Ambiguous(usize),
    /// `FaceChoice::Index` past the faces found.
    #[error("face {index} asked for, but {found} face(s) found")]
    NoSuchIndex {
        /// The index asked for.
        index: usize,
        /// Faces found.
        found: usize,
    },
    /// The face's quality is below what was asked for (enrolment).
    #[error("face quality {:.2} is below {minimum:.2}: {}", quality.score, quality.reason())]
    LowQuality {
        /// The face's quality.
        quality: crate::quality::Quality,
        /// The quality asked for.
        minimum: f32,
    },
}
