//! facenet: FaceNet face recognition on burn.
//!
//! - [`model`]: Inception-ResNet-v1 (the Keras FaceNet network) as burn modules.
//! - [`weights`]: the shared Keras-to-burn name table, weight metadata and loading.
//! - [`image`]: decoding and standardization ([`Standardization`]).
//! - [`paths`]: the cache directory and default weights file.
//! - [`align`]: crop with margin or 5-landmark similarity alignment.
//! - [`detect`]: MTCNN face detection ([`detect::Detector`]).
//! - [`landmarks`]: 68-point landmarks (dlib's shape predictor).
//! - [`eval`]: pairs files and verification metrics (accuracy, VAL@FAR, ROC, AUC, EER).
//! - [`options`]: how the networks run ([`Inference`]), resolved once by each front.
//! - Training (triplet loss, online mining, center loss) is the crate `facenet-train`.
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
pub mod distance;
pub mod draw;
pub mod embed;
pub mod engine;
pub mod error;
pub mod eval;
pub mod fast;
pub mod files;
pub mod image;
pub mod landmarks;
pub mod model;
pub mod options;
pub mod paths;
pub mod pipeline;
pub mod precision_auto;
pub mod quality;
pub mod quantize;
pub mod rng;
pub mod weights;

pub use burn::tensor::Device;
pub use embed::{Distance, Embedder, Embedding, Engine};
pub use engine::Precision;
pub use error::{Error, Result};
pub use image::Standardization;
pub use model::{InceptionResnetV1, InceptionResnetV1Config};
pub use options::Inference;

/// Where the network runs: the CPU (burn's flex backend and the fast path), CUDA device 0
/// (`cuda` feature), or the first GPU through wgpu / Vulkan (`gpu` feature).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceChoice {
    /// The CPU, all cores.
    #[default]
    Cpu,
    /// CUDA device 0 (a build with `--features cuda`).
    Cuda,
    /// The first discrete GPU through wgpu (a build with `--features gpu`).
    Gpu,
}

/// The device to compute on; a choice this build was compiled without is an error that names
/// the feature to build with.
pub fn device_for(choice: DeviceChoice) -> Result<Device> {
    match choice {
        DeviceChoice::Cpu => Ok(Device::flex()),
        DeviceChoice::Cuda => {
            #[cfg(feature = "cuda")]
            {
                Ok(Device::cuda(0))
            }
            #[cfg(not(feature = "cuda"))]
            Err(Error::InvalidArgument {
                field: "device",
                reason: "this build has no CUDA support; rebuild with `--features cuda`".into(),
            })
        }
        DeviceChoice::Gpu => {
            #[cfg(feature = "gpu")]
            {
                gpu_device()
            }
            #[cfg(not(feature = "gpu"))]
            Err(Error::InvalidArgument {
                field: "device",
                reason: "this build has no GPU (wgpu) support; rebuild with `--features gpu`"
                    .into(),
            })
        }
    }
}

/// The first discrete GPU through wgpu, opened once per process: a machine without one (no
/// Vulkan driver, or only a software adapter) gets an error that lists the adapters wgpu found,
/// in place of a panic at the first tensor.
#[cfg(feature = "gpu")]
fn gpu_device() -> Result<Device> {
    static GPU: std::sync::OnceLock<std::result::Result<Device, String>> =
        std::sync::OnceLock::new();
    GPU.get_or_init(|| {
        Device::wgpu_options()
            .device_kind(burn::tensor::DeviceKind::DiscreteGpu(0))
            .init()
            .map_err(|e| e.to_string())
    })
    .clone()
    .map_err(|reason| Error::InvalidArgument {
        field: "device",
        reason: format!("no GPU could be opened through wgpu (Vulkan): {reason}"),
    })
}

/// The device to compute on: CUDA device 0 when built with the `cuda` feature and `cuda` is
/// asked for, else the CPU (burn's flex backend, all cores).
pub fn device(cuda: bool) -> Result<Device> {
    device_for(if cuda {
        DeviceChoice::Cuda
    } else {
        DeviceChoice::Cpu
    })
}
