//! MTCNN's three networks: P-Net, R-Net and O-Net.
//!
//! Zhang et al., "Joint Face Detection and Alignment using Multi-task Cascaded Convolutional
//! Networks", IEEE SPL 2016 (<https://arxiv.org/abs/1604.02878>). Layer names follow
//! facenet-pytorch (`conv1`, `prelu1`, `dense5_1`, ...), whose `pnet.pt`/`rnet.pt`/`onet.pt`
//! hold the original Caffe weights (the same values as davidsandberg's `det1-3.npy`) laid out
//! for images in the usual (h, w) orientation. The cascade around them is [`crate::detect`].
//!
//! ```text
//! facenet detect photo.jpg
//! ```

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{Linear, LinearConfig, PRelu, PReluConfig};
use burn::tensor::activation::softmax;
use burn::tensor::{Device, Tensor};

fn conv(c_in: usize, c_out: usize, k: usize, device: &Device) -> Conv2d {
    Conv2dConfig::new([c_in, c_out], [k, k]).init(device)
}

fn prelu(c: usize, device: &Device) -> PRelu {
    PReluConfig::new().with_num_parameters(c).init(device)
}

/// Caffe-style max pooling: the output size is rounded up (`ceil_mode`).
fn pool(k: usize, s: usize) -> MaxPool2d {
    MaxPool2dConfig::new([k, k])
        .with_strides([s, s])
        .with_ceil_mode(true)
        .init()
}

/// Flattens `[b, c, h, w]` in Caffe's (w, h, c) order, as the dense layers were trained.
fn flatten_caffe(x: Tensor<4>) -> Tensor<2> {
    let [b, c, h, w] = x.dims();
    x.permute([0, 3, 2, 1]).reshape([b, c * h * w])
}

/// Face probability from the two class logits, `softmax([l0, l1])[1]`, computed in f32 as
/// TensorFlow does (`exp(l - max) / sum`). Confident faces saturate to exactly 1.0, as in the
/// reference; NMS then breaks the ties as numpy's `argsort` does (see [`crate::detect::bbox`]).
pub fn face_probability(not_face: f32, face: f32) -> f64 {
    let m = not_face.max(face);
    let e0 = (not_face - m).exp();
    let e1 = (face - m).exp();
    (e1 / (e0 + e1)) as f64
}

/// Proposal network: fully convolutional over a pyramid level. 12x12 receptive field, stride 2.
#[derive(Module, Debug)]
pub struct Pnet {
    /// 3 -> 10, 3x3.
    pub conv1: Conv2d,
    /// PReLU.
    pub prelu1: PRelu,
    /// 2x2 max pool, stride 2, ceil.
    pub pool1: MaxPool2d,
    /// 10 -> 16, 3x3.
    pub conv2: Conv2d,
    /// PReLU.
    pub prelu2: PRelu,
    /// 16 -> 32, 3x3.
    pub conv3: Conv2d,
    /// PReLU.
    pub prelu3: PRelu,
    /// Face / not-face logits.
    pub conv4_1: Conv2d,
    /// Box regression (dx1, dy1, dx2, dy2).
    pub conv4_2: Conv2d,
}

impl Pnet {
    /// Random weights.
    pub fn new(device: &Device) -> Self {
        Self {
            conv1: conv(3, 10, 3, device),
            prelu1: prelu(10, device),
            pool1: pool(2, 2),
            conv2: conv(10, 16, 3, device),
            prelu2: prelu(16, device),
            conv3: conv(16, 32, 3, device),
            prelu3: prelu(32, device),
            conv4_1: conv(32, 2, 1, device),
            conv4_2: conv(32, 4, 1, device),
        }
    }

    /// Input `[b, 3, h, w]` (standardized); returns (face probability `[b, h', w']`,
    /// regression `[b, 4, h', w']`).
    pub fn forward(&self, x: Tensor<4>) -> (Tensor<3>, Tensor<4>) {
        let (logits, reg) = self.forward_logits(x);
        let prob = softmax(logits, 1);
        let [b, _, h, w] = prob.dims();
        (prob.narrow(1, 1, 1).reshape([b, h, w]), reg)
    }

    /// As [`Pnet::forward`], with the two class logits `[b, 2, h', w']` instead of the
    /// probability (the detector computes the probability in f64, see [`face_probability`]).
    pub fn forward_logits(&self, x: Tensor<4>) -> (Tensor<4>, Tensor<4>) {
        let x = self.prelu1.forward(self.conv1.forward(x));
        let x = self.pool1.forward(x);
        let x = self.prelu2.forward(self.conv2.forward(x));
        let x = self.prelu3.forward(self.conv3.forward(x));
        (self.conv4_1.forward(x.clone()), self.conv4_2.forward(x))
    }
}

/// Refinement network on 24x24 crops.
#[derive(Module, Debug)]
pub struct Rnet {
    /// 3 -> 28, 3x3.
    pub conv1: Conv2d,
    /// PReLU.
    pub prelu1: PRelu,
    /// 3x3 max pool, stride 2, ceil.
    pub pool1: MaxPool2d,
    /// 28 -> 48, 3x3.
    pub conv2: Conv2d,
    /// PReLU.
    pub prelu2: PRelu,
    /// 3x3 max pool, stride 2, ceil.
    pub pool2: MaxPool2d,
    /// 48 -> 64, 2x2.
    pub conv3: Conv2d,
    /// PReLU.
    pub prelu3: PRelu,
    /// 576 -> 128.
    pub dense4: Linear,
    /// PReLU.
    pub prelu4: PRelu,
    /// Face / not-face logits.
    pub dense5_1: Linear,
    /// Box regression.
    pub dense5_2: Linear,
}

impl Rnet {
    /// Random weights.
    pub fn new(device: &Device) -> Self {
        Self {
            conv1: conv(3, 28, 3, device),
            prelu1: prelu(28, device),
            pool1: pool(3, 2),
            conv2: conv(28, 48, 3, device),
            prelu2: prelu(48, device),
            pool2: pool(3, 2),
            conv3: conv(48, 64, 2, device),
            prelu3: prelu(64, device),
            dense4: LinearConfig::new(576, 128).init(device),
            prelu4: prelu(128, device),
            dense5_1: LinearConfig::new(128, 2).init(device),
            dense5_2: LinearConfig::new(128, 4).init(device),
        }
    }

    /// Input `[b, 3, 24, 24]`; returns (face probability `[b]`, regression `[b, 4]`).
    pub fn forward(&self, x: Tensor<4>) -> (Tensor<1>, Tensor<2>) {
        let (logits, reg) = self.forward_logits(x);
        let prob = softmax(logits, 1);
        let [b, _] = prob.dims();
        (prob.narrow(1, 1, 1).reshape([b]), reg)
    }

    /// As [`Rnet::forward`], with the class logits `[b, 2]` instead of the probability.
    pub fn forward_logits(&self, x: Tensor<4>) -> (Tensor<2>, Tensor<2>) {
        let x = self
            .pool1
            .forward(self.prelu1.forward(self.conv1.forward(x)));
        let x = self
            .pool2
            .forward(self.prelu2.forward(self.conv2.forward(x)));
        let x = self.prelu3.forward(self.conv3.forward(x));
        let x = self.prelu4.forward(self.dense4.forward(flatten_caffe(x)));
        (self.dense5_1.forward(x.clone()), self.dense5_2.forward(x))
    }
}

/// Output network on 48x48 crops: score, box regression and five landmarks.
#[derive(Module, Debug)]
pub struct Onet {
    /// 3 -> 32, 3x3.
    pub conv1: Conv2d,
    /// PReLU.
    pub prelu1: PRelu,
    /// 3x3 max pool, stride 2, ceil.
    pub pool1: MaxPool2d,
    /// 32 -> 64, 3x3.
    pub conv2: Conv2d,
    /// PReLU.
    pub prelu2: PRelu,
    /// 3x3 max pool, stride 2, ceil.
    pub pool2: MaxPool2d,
    /// 64 -> 64, 3x3.
    pub conv3: Conv2d,
    /// PReLU.
    pub prelu3: PRelu,
    /// 2x2 max pool, stride 2, ceil.
    pub pool3: MaxPool2d,
    /// 64 -> 128, 2x2.
    pub conv4: Conv2d,
    /// PReLU.
    pub prelu4: PRelu,
    /// 1152 -> 256.
    pub dense5: Linear,
    /// PReLU.
    pub prelu5: PRelu,
    /// Face / not-face logits.
    pub dense6_1: Linear,
    /// Box regression.
    pub dense6_2: Linear,
    /// Landmarks: 5 x then 5 y, relative to the box.
    pub dense6_3: Linear,
}

impl Onet {
    /// Random weights.
    pub fn new(device: &Device) -> Self {
        Self {
            conv1: conv(3, 32, 3, device),
            prelu1: prelu(32, device),
            pool1: pool(3, 2),
            conv2: conv(32, 64, 3, device),
            prelu2: prelu(64, device),
            pool2: pool(3, 2),
            conv3: conv(64, 64, 3, device),
            prelu3: prelu(64, device),
            pool3: pool(2, 2),
            conv4: conv(64, 128, 2, device),
            prelu4: prelu(128, device),
            dense5: LinearConfig::new(1152, 256).init(device),
            prelu5: prelu(256, device),
            dense6_1: LinearConfig::new(256, 2).init(device),
            dense6_2: LinearConfig::new(256, 4).init(device),
            dense6_3: LinearConfig::new(256, 10).init(device),
        }
    }

    /// Input `[b, 3, 48, 48]`; returns (face probability `[b]`, regression `[b, 4]`,
    /// landmarks `[b, 10]`).
    pub fn forward(&self, x: Tensor<4>) -> (Tensor<1>, Tensor<2>, Tensor<2>) {
        let (logits, reg, marks) = self.forward_logits(x);
        let prob = softmax(logits, 1);
        let [b, _] = prob.dims();
        (prob.narrow(1, 1, 1).reshape([b]), reg, marks)
    }

    /// As [`Onet::forward`], with the class logits `[b, 2]` instead of the probability.
    pub fn forward_logits(&self, x: Tensor<4>) -> (Tensor<2>, Tensor<2>, Tensor<2>) {
        let x = self
            .pool1
            .forward(self.prelu1.forward(self.conv1.forward(x)));
        let x = self
            .pool2
            .forward(self.prelu2.forward(self.conv2.forward(x)));
        let x = self
            .pool3
            .forward(self.prelu3.forward(self.conv3.forward(x)));
        let x = self.prelu4.forward(self.conv4.forward(x));
        let x = self.prelu5.forward(self.dense5.forward(flatten_caffe(x)));
        (
            self.dense6_1.forward(x.clone()),
            self.dense6_2.forward(x.clone()),
            self.dense6_3.forward(x),
        )
    }
}

/// The three MTCNN networks; keys in the weights file are `pnet.*`, `rnet.*`, `onet.*`.
#[derive(Module, Debug)]
pub struct Mtcnn {
    /// Proposal network.
    pub pnet: Pnet,
    /// Refinement network.
    pub rnet: Rnet,
    /// Output network.
    pub onet: Onet,
}

impl Mtcnn {
    /// Random weights.
    pub fn new(device: &Device) -> Self {
        Self {
            pnet: Pnet::new(device),
            rnet: Rnet::new(device),
            onet: Onet::new(device),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_shapes() {
        let d = Device::flex();
        let m = Mtcnn::new(&d);
        // 12x12 -> one cell; 20x30 -> ceil pooling: conv 18x28, pool 9x14, conv 7x12, 5x10.
        let (p, r) = m.pnet.forward(Tensor::zeros([1, 3, 20, 30], &d));
        assert_eq!(p.dims(), [1, 5, 10]);
        assert_eq!(r.dims(), [1, 4, 5, 10]);
        let (p, r) = m.rnet.forward(Tensor::zeros([3, 3, 24, 24], &d));
        assert_eq!((p.dims(), r.dims()), ([3], [3, 4]));
        let (p, r, l) = m.onet.forward(Tensor::zeros([2, 3, 48, 48], &d));
        assert_eq!((p.dims(), r.dims(), l.dims()), ([2], [2, 4], [2, 10]));
    }

    #[test]
    fn face_probability_by_hand() {
        assert!((face_probability(0.0, 0.0) - 0.5).abs() < 1e-15);
        assert!((face_probability(0.0, 2f32.ln()) - 2.0 / 3.0).abs() < 1e-7);
        // Saturated in f32, as TensorFlow's softmax is.
        assert_eq!(face_probability(-10.0, 10.0), 1.0);
    }

    #[test]
    fn caffe_flatten_order_is_w_h_c() {
        // [1, 2, 1, 2]: c0 = [a, b], c1 = [c, d] along w; Caffe order: (w0,c0) (w0,c1) (w1,c0) (w1,c1).
        let d = Device::flex();
        let x = Tensor::<4>::from_floats([[[[1.0, 2.0]], [[3.0, 4.0]]]], &d);
        let v = flatten_caffe(x).into_data().try_into_vec::<f32>().unwrap();
        assert_eq!(v, vec![1.0, 3.0, 2.0, 4.0]);
    }
}
