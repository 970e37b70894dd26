//! Distances between embeddings, and the L2 normalization that puts embeddings on the unit
//! hypersphere. Below the network and the embedder: both use them.

use serde::{Deserialize, Serialize};

/// How the distance between two embeddings is measured. Thresholds carry this unit.
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Distance {
    /// Euclidean distance between unit vectors, in [0, 2] (facenet-pytorch's `.norm()`,
    /// the course notebook's `np.linalg.norm`).
    #[default]
    L2,
    /// Squared Euclidean distance between unit vectors, in [0, 4] (davidsandberg's
    /// "distance_metric 0", the FaceNet paper's threshold unit).
    SquaredL2,
    /// Cosine distance `1 - cos`, in [0, 2].
    Cosine,
}

impl Distance {
    /// The unit, for printing next to a number.
    pub fn unit(self) -> &'static str {
        match self {
            Self::L2 => "L2 distance between unit-length embeddings (0 = identical, 2 = opposite)",
            Self::SquaredL2 => "squared L2 distance between unit-length embeddings (0..4)",
            Self::Cosine => "cosine distance 1 - cos(angle) (0..2)",
        }
    }

    /// The largest value between unit vectors: 4 for squared L2, else 2.
    pub fn max(self) -> f64 {
        match self {
            Self::SquaredL2 => 4.0,
            Self::L2 | Self::Cosine => 2.0,
        }
    }

    /// Distance between two vectors of equal length (normalized embeddings expected).
    pub fn between(self, a: &[f32], b: &[f32]) -> f32 {
        match self {
            Self::L2 => Self::SquaredL2.between(a, b).sqrt(),
            Self::SquaredL2 => a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum(),
            Self::Cosine => {
                let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
                let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
                let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
                1.0 - dot / (na * nb).max(f32::MIN_POSITIVE)
            }
        }
    }
}

/// `v / max(|v|, 1e-10)`, as `tf.nn.l2_normalize` does.
pub fn l2_normalize(v: &[f32]) -> Vec<f32> {
    let norm = v
        .iter()
        .map(|x| (*x as f64) * (*x as f64))
        .sum::<f64>()
        .sqrt();
    let norm = norm.max(1e-10);
    v.iter().map(|x| (*x as f64 / norm) as f32).collect()
}
