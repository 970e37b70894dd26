//! int8 inference ([`crate::Precision::Int8`]): the calibration that fixes each
//! convolution's activation scale, stored next to the weights, and the embedder that runs on
//! it.
//!
//! A calibration runs the f32 network over a few hundred aligned faces and records the range
//! of every convolution's input. Those whose input is never negative (every one but the first,
//! which reads the standardized image, and the bottleneck) gets 8-bit inputs in steps of
//! `max / 255` (larger inputs saturate) and 7-bit weights per output channel (see
//! `fast/i8mm.rs`); where Winograd pays, those convolutions still run it, in f32. The ranges are stored as JSON beside the weights file
//! ([`Int8Calibration::path_for`]) with the weights' fingerprint, so that a calibration is
//! never applied to other weights. [`crate::eval::calibrate::calibrate_on_pairs`] calibrates on
//! the faces of a pairs file (`facenet quantize`).
//!
//! ```no_run
//! use facenet::{Device, Embedder, Precision};
//! use facenet::quantize::Int8Calibration;
//! # fn main() -> facenet::Result<()> {
//! let weights = facenet::paths::default_weights();
//! let mut f32 = Embedder::open(&weights, &Device::flex())?;
//! let faces: Vec<image::RgbImage> = Vec::new(); // a few hundred aligned 160x160 crops
//! let cal = f32.calibrate_int8(&faces, "my crops")?;
//! cal.save(&Int8Calibration::path_for(&weights))?;
//! // Later, anywhere: the calibration beside the weights is found by the precision.
//! let int8 = Embedder::open_with(&weights, &Device::flex(), Precision::Int8)?;
//! # Ok(()) }
//! ```

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::fast::InputRange;

/// The format tag of a calibration file.
pub const FORMAT: &str = "facenet-int8-calibration/1";

/// The input range of every convolution of the fast plan, measured on `images` faces.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Int8Calibration {
    /// Always [`FORMAT`].
    pub format: String,
    /// The fingerprint of the weights it was measured on.
    pub fingerprint: String,
    /// How many faces it saw.
    pub images: usize,
    /// Where they came from, in words.
    pub source: String,
    /// Per convolution of the plan, in its fixed order.
    pub ranges: Vec<InputRange>,
}

impl Int8Calibration {
    /// Where the calibration of a weights file lives: beside it, `<stem>.int8.json`.
    pub fn path_for(weights: &Path) -> PathBuf {
        weights.with_extension("int8.json")
    }

    /// Writes it atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        crate::files::write_json_atomic(path, self)
    }

    /// Reads a calibration file; a missing one is an error that says how to make it.
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::InvalidArgument {
                    field: "precision",
                    reason: format!(
                        "int8 needs a calibration of these weights and {} does not exist: run \
                         `facenet quantize` first",
                        path.display()
                    ),
                });
            }
            Err(e) => return Err(Error::io(path, e)),
        };
        let cal: Self = serde_json::from_slice(&bytes).map_err(|source| Error::Json {
            path: path.into(),
            what: "not an int8 calibration".into(),
            source,
        })?;
        if cal.format != FORMAT {
            return Err(Error::InvalidArgument {
                field: "format",
                reason: format!(
                    "{}: format `{}`, expected `{FORMAT}`",
                    path.display(),
                    cal.format
                ),
            });
        }
        Ok(cal)
    }

    /// A short digest of the ranges (which embeddings a cache of int8 results holds).
    pub fn digest(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        for r in &self.ranges {
            h.update(r.min.to_le_bytes());
            h.update(r.max.to_le_bytes());
        }
        h.finalize()[..6]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calibration_round_trips_and_missing_file_says_what_to_run() {
        let dir = std::env::temp_dir().join(format!("facenet-q-{}", std::process::id()));
        let path = Int8Calibration::path_for(&dir.join("w.safetensors"));
        assert_eq!(path.file_name().unwrap(), "w.int8.json");
        let err = Int8Calibration::load(&path).unwrap_err().to_string();
        assert!(err.contains("facenet quantize"), "{err}");
        let cal = Int8Calibration {
            format: FORMAT.into(),
            fingerprint: "abc".into(),
            images: 2,
            source: "test".into(),
            ranges: vec![InputRange { min: 0.0, max: 3.5 }],
        };
        cal.save(&path).unwrap();
        assert_eq!(Int8Calibration::load(&path).unwrap(), cal);
        std::fs::write(&path, b"{\"format\": 1}").unwrap();
        let err = Int8Calibration::load(&path).unwrap_err();
        assert!(err.to_string().contains("w.int8.json"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
