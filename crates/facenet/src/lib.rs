//! facenet: FaceNet face recognition on burn.
//!
//! - [`model`]: Inception-ResNet-v1 (the Keras FaceNet network) as burn modules.
//! - [`weights`]: the shared Keras-to-burn name table, weight metadata and loading.
//! - [`image`]: decoding and standardization ([`Standardization`]).
//! - [`paths`]: the cache directory and default weights file.
//! - [`align`]: crop with margin or 5-landmark similarity alignment.
//! - [`detect`]: MTCNN face detection ([`detect::Detector`]).
//! - [`eval`]: pairs files and verification metrics (accuracy, VAL@FAR, ROC, AUC, EER).
//! - [`train`]: triplet loss, online mining, center loss, sampling, schedules.
//! - [`fast`]: the fast CPU inference path compiled from the burn model ([`fast::FastNet`]).
//! - [`embed`]: [`Embedder`], [`Embedding`] and [`Distance`].
//!
//! Schroff, Kalenichenko, Philbin, "FaceNet: A Unified Embedding for Face Recognition and
//! Clustering", CVPR 2015 (<https://arxiv.org/abs/1503.03832>).
#![deny(missing_docs)]

pub mod align;
pub mod batch;
pub mod bench;
pub mod detect;
pub mod draw;
pub mod embed;
pub mod engine;
pub mod error;
pub mod eval;
pub mod fast;
pub mod files;
pub mod image;
pub mod model;
pub mod paths;
pub mod pipeline;
pub mod train;
pub mod weights;

pub use burn::tensor::Device;
pub use embed::{Distance, Embedder, Embedding, Engine};
pub use engine::Precision;
pub use error::{Error, Result};
pub use image::Standardization;
pub use model::{InceptionResnetV1, InceptionResnetV1Config};

/// The device to compute on: CUDA device 0 when built with the `cuda` feature and `cuda` is
/// asked for, else the CPU (burn's flex backend, all cores).
pub fn device(cuda: bool) -> Result<Device> {
    if cuda {
        #[cfg(feature = "cuda")]
        {
            return Ok(Device::cuda(0));
        }
        #[cfg(not(feature = "cuda"))]
        return Err(Error::InvalidArgument {
            field: "device",
            reason: "this build has no CUDA support; rebuild with `--features cuda`".into(),
        });
    }
    Ok(Device::flex())
}
