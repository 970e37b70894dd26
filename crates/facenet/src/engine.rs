//! How the networks are computed: which implementation ([`Engine`]) and which arithmetic
//! ([`Precision`]). Both the embedding network ([`crate::Embedder`]) and the detector
//! ([`crate::detect::Detector`]) take them.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Which implementation of a network runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum Engine {
    /// The fast CPU path ([`crate::fast`]) where the device is the CPU, else burn.
    #[default]
    Auto,
    /// The burn model's own forward pass.
    Burn,
}

impl Engine {
    /// `auto` or `burn`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Burn => "burn",
        }
    }
}

/// The arithmetic of the fast path's matrix products.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum Precision {
    /// IEEE single precision throughout: the mode the parity tests hold to 1e-4. The default.
    #[default]
    F32,
    /// Weights and activations rounded to bfloat16 (8-bit mantissa) for the products, sums
    /// and everything else in f32, on Intel AMX tiles or AVX-512 BF16 dot products: opt-in;
    /// several times the f32 matrix throughput on AMX, CPU-dependent on AVX-512 BF16 (`facenet
    /// bench embed` prints each instruction's rate); embeddings within cosine distance ~1e-4
    /// of the f32 ones on the reference crops, see the README for the LFW accuracy measured in
    /// both modes.
    Bf16,
    /// 8-bit activations (scales from a calibration run) and 7-bit per-channel weights in the
    /// 1x1, strided and narrow convolutions, integer sums, the rest f32: opt-in, on any CPU
    /// with AVX2; see the README for its speed and LFW accuracy.
    Int8,
}

impl Precision {
    /// Every precision.
    pub const ALL: [Precision; 3] = [Precision::F32, Precision::Bf16, Precision::Int8];

    /// `f32`, `bf16` or `int8`.
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
            Precision::Int8 => "int8",
        }
    }

    /// The precision of that name; the error names `what` (a flag, an argument) and lists the
    /// names.
    pub fn parse(name: &str, what: &'static str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|p| p.name() == name)
            .ok_or_else(|| Error::InvalidArgument {
                field: what,
                reason: format!("`{name}`: use \"f32\", \"bf16\" or \"int8\""),
            })
    }
}
