//! Losses on embedding tensors.

use burn::tensor::Tensor;

/// FaceNet's triplet loss: `mean(max(|a - p|^2 - |a - n|^2 + alpha, 0))` over rows of
/// L2-normalized embeddings `[t, d]`. Returns a one-element tensor.
pub fn triplet_loss(a: Tensor<2>, p: Tensor<2>, n: Tensor<2>, alpha: f64) -> Tensor<1> {
    let pos = (a.clone() - p).powi_scalar(2).sum_dim(1);
    let neg = (a - n).powi_scalar(2).sum_dim(1);
    (pos - neg).add_scalar(alpha).clamp_min(0.0).mean()
}

/// Row-wise L2 normalization, `x / max(|x|, 1e-10)` (as `tf.nn.l2_normalize`).
pub fn l2_normalize_rows(x: Tensor<2>) -> Tensor<2> {
    let norm = x.clone().powi_scalar(2).sum_dim(1).sqrt().clamp_min(1e-10);
    x / norm
}

/// The same loss, computed by a plain loop (the reference for tests).
pub fn triplet_loss_naive(a: &[Vec<f32>], p: &[Vec<f32>], n: &[Vec<f32>], alpha: f32) -> f32 {
    let total: f32 = triplet_hinge_arguments_naive(a, p, n, alpha)
        .iter()
        .map(|v| v.max(0.0))
        .sum();
    total / a.len().max(1) as f32
}

/// Each triplet's hinge argument `|a-p|^2 - |a-n|^2 + alpha` (the loss is its positive part),
/// by a plain loop.
pub fn triplet_hinge_arguments_naive(
    a: &[Vec<f32>],
    p: &[Vec<f32>],
    n: &[Vec<f32>],
    alpha: f32,
) -> Vec<f32> {
    let sq = |x: &[f32], y: &[f32]| x.iter().zip(y).map(|(u, v)| (u - v) * (u - v)).sum::<f32>();
    (0..a.len())
        .map(|i| sq(&a[i], &p[i]) - sq(&a[i], &n[i]) + alpha)
        .collect()
}

/// Center loss: `mean |f - c_y|^2` with class centres kept outside the network and moved
/// towards each batch's features by `c_y -= (1 - alpha) (c_y - f)` (davidsandberg's
/// `center_loss`, alpha = 0.95 by default).
#[derive(Debug, Clone)]
pub struct CenterLoss {
    /// One centre per class, `num_classes x dim`, row-major.
    pub centers: Vec<f32>,
    /// Feature dimension.
    pub dim: usize,
    /// Centre update rate (`alfa` in davidsandberg's code): 0.95.
    pub alpha: f32,
}

impl CenterLoss {
    /// Zero centres.
    pub fn new(num_classes: usize, dim: usize, alpha: f32) -> Self {
        Self {
            centers: vec![0.0; num_classes * dim],
            dim,
            alpha,
        }
    }

    /// The loss for features `[b, dim]` with labels; the centres used are the current ones
    /// (constants for autodiff), then updated with the batch.
    pub fn loss_and_update(&mut self, features: Tensor<2>, labels: &[usize]) -> Tensor<1> {
        let device = features.device();
        let [b, d] = features.dims();
        let batch_centers: Vec<f32> = labels
            .iter()
            .flat_map(|&l| self.centers[l * d..(l + 1) * d].to_vec())
            .collect();
        let c = Tensor::<2>::from_data(
            burn::tensor::TensorData::new(batch_centers, [b, d]),
            &device,
        );
        let f = features
            .clone()
            .detach()
            .into_data()
            .try_into_vec::<f32>()
            .unwrap_or_default();
        for (i, &l) in labels.iter().enumerate() {
            for k in 0..d {
                let ck = &mut self.centers[l * d + k];
                *ck -= (1.0 - self.alpha) * (*ck - f[i * d + k]);
            }
        }
        (features - c).powi_scalar(2).sum_dim(1).mean()
    }
}
