//! Helpers shared by the subcommands.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use facenet::{Device, Embedder, Standardization};

/// Standardization choices on the command line.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Preprocess {
    /// The weights' own (prewhiten for the Keras FaceNet model).
    Auto,
    /// `(x - mean) / max(std, 1/sqrt(n))` per image (davidsandberg's prewhiten).
    Prewhiten,
    /// `(x - 127.5) / 128`.
    Fixed,
    /// `x / 255` (the course notebook's img_to_encoding).
    Unit,
}

impl Preprocess {
    pub fn resolve(self, weights_default: Standardization) -> Standardization {
        match self {
            Self::Auto => weights_default,
            Self::Prewhiten => Standardization::Prewhiten,
            Self::Fixed => Standardization::Fixed,
            Self::Unit => Standardization::Unit,
        }
    }
}

/// The `--weights` option shared by commands that run the network.
#[derive(Debug, Clone, clap::Args)]
pub struct WeightsArg {
    /// Weights file (safetensors from `facenet fetch` or `facenet import-weights`).
    /// Default: facenet_keras.safetensors in the cache ($FACENET_HOME, ~/.cache/facenet).
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// Arithmetic of the network on the CPU: f32 (default) or bf16 (Intel AMX: faster,
    /// embeddings within ~1e-4 cosine distance; fails clearly where the CPU lacks AMX).
    #[arg(long, value_enum, default_value = "f32")]
    pub precision: PrecisionArg,
}

/// `--precision` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PrecisionArg {
    F32,
    Bf16,
}

impl PrecisionArg {
    pub fn precision(self) -> facenet::Precision {
        match self {
            Self::F32 => facenet::Precision::F32,
            Self::Bf16 => facenet::Precision::Bf16,
        }
    }
}

impl WeightsArg {
    pub fn path(&self) -> anyhow::Result<PathBuf> {
        if let Some(p) = &self.weights {
            return Ok(p.clone());
        }
        let p = facenet::paths::default_weights();
        if !p.is_file() {
            bail!(
                "no weights at {}: run `facenet fetch` first (or pass --weights FILE)",
                p.display()
            );
        }
        Ok(p)
    }

    pub fn open(&self, device: &Device) -> anyhow::Result<Embedder> {
        let path = self.path()?;
        Embedder::open(&path, device)
            .with_context(|| format!("loading weights from {}", path.display()))?
            .with_precision(self.precision.precision())
            .context("--precision")
    }
}

/// Reads face images, failing on the first unreadable one with its name.
pub fn load_images(paths: &[PathBuf]) -> anyhow::Result<Vec<image::RgbImage>> {
    paths
        .iter()
        .map(|p| facenet::image::load_face(p).map_err(anyhow::Error::from))
        .collect()
}

/// A display name for a path.
pub fn display(p: &Path) -> String {
    p.display().to_string()
}

/// The `--mtcnn` option: where the detector's weights are.
#[derive(Debug, Clone, clap::Args)]
pub struct DetectorArg {
    /// MTCNN weights (safetensors from `facenet fetch`). Default: mtcnn.safetensors in the cache.
    #[arg(long)]
    pub mtcnn: Option<PathBuf>,
}

impl DetectorArg {
    pub fn open(&self, device: &Device) -> anyhow::Result<facenet::detect::Detector> {
        let path = self
            .mtcnn
            .clone()
            .unwrap_or_else(|| facenet::paths::cache_dir().join("mtcnn.safetensors"));
        if self.mtcnn.is_none() && !path.is_file() {
            bail!(
                "no MTCNN weights at {}: run `facenet fetch` first (or pass --mtcnn FILE)",
                path.display()
            );
        }
        facenet::detect::Detector::open(&path, device)
            .with_context(|| format!("loading MTCNN weights from {}", path.display()))
    }
}
