//! Inception-ResNet-v1, the FaceNet embedding network.
//!
//! Szegedy et al., "Inception-v4, Inception-ResNet and the Impact of Residual Connections on
//! Learning" (<https://arxiv.org/abs/1602.07261>), as trained for faces by Schroff et al.,
//! "FaceNet" (<https://arxiv.org/abs/1503.03832>) and davidsandberg/facenet.
//!
//! The topology follows the graph stored in the Keras file `facenet_keras.h5` (its
//! `model_config`), not any `.py` source: each residual block sums
//! `shortcut + scale * up(concat(branches))`, then applies ReLU (except the last Block8).
//!
//! Field names follow facenet-pytorch (`conv2d_1a`, `repeat_1`, `branch1.0`, `last_bn`, ...),
//! so a parameter's path in the module tree is its key in the safetensors file.
//!
//! ```text
//! facenet embed --preprocess prewhiten face.png
//! ```

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Dropout, DropoutConfig, Linear, LinearConfig};
use burn::nn::{Initializer, PaddingConfig2d};
use burn::tensor::activation::relu;
use burn::tensor::module::adaptive_avg_pool2d;
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

/// BatchNorm epsilon of the Keras and TensorFlow FaceNet models.
pub const BN_EPSILON: f64 = 0.001;
/// BatchNorm momentum in burn's convention (`running = (1-m) running + m batch`).
/// davidsandberg trains with a moving-average decay of 0.995, i.e. m = 0.005.
pub const BN_MOMENTUM: f64 = 0.005;

/// Shape of an Inception-ResNet-v1.
///
/// Channel counts are those of the paper divided by `width_divisor`; `repeats` are the
/// numbers of Block35, Block17 and Block8 (the last Block8 without ReLU is extra).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InceptionResnetV1Config {
    /// Size of the embedding (the bottleneck layer).
    pub embedding_dim: usize,
    /// Square input size in pixels.
    pub image_size: usize,
    /// Number of Block35, Block17 and Block8 (with ReLU) repeats.
    pub repeats: [usize; 3],
    /// Every channel count is divided by this (1 for the published network).
    pub width_divisor: usize,
    /// Dropout rate before the bottleneck (training only).
    pub dropout: f64,
}

/// The named network configurations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Preset {
    /// The Keras FaceNet model: 128-d, 160x160 ([`InceptionResnetV1Config::keras_128`]).
    #[serde(rename = "keras-128")]
    #[cfg_attr(feature = "clap", value(name = "keras-128"))]
    Keras128,
    /// facenet-pytorch's 512-d variant ([`InceptionResnetV1Config::facenet_512`]).
    #[serde(rename = "facenet-512")]
    #[cfg_attr(feature = "clap", value(name = "facenet-512"))]
    Facenet512,
    /// Quarter width, one block per stage, 96x96 ([`InceptionResnetV1Config::small`]).
    #[serde(rename = "small")]
    Small,
}

impl Preset {
    /// The configuration.
    pub fn config(self) -> InceptionResnetV1Config {
        match self {
            Self::Keras128 => InceptionResnetV1Config::keras_128(),
            Self::Facenet512 => InceptionResnetV1Config::facenet_512(),
            Self::Small => InceptionResnetV1Config::small(),
        }
    }

    /// `keras-128`, `facenet-512` or `small`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Keras128 => "keras-128",
            Self::Facenet512 => "facenet-512",
            Self::Small => "small",
        }
    }
}

impl InceptionResnetV1Config {
    /// The Keras FaceNet model (`facenet_keras.h5`, davidsandberg 20170512-110547):
    /// 128-d embeddings of 160x160 faces.
    pub fn keras_128() -> Self {
        Self {
            embedding_dim: 128,
            image_size: 160,
            repeats: [5, 10, 5],
            width_divisor: 1,
            dropout: 0.2,
        }
    }

    /// The 512-d variant (davidsandberg 2018 models, facenet-pytorch VGGFace2/CASIA-WebFace).
    pub fn facenet_512() -> Self {
        Self {
            embedding_dim: 512,
            ..Self::keras_128()
        }
    }

    /// A small network (a quarter of the channels, one block per stage, 96x96 input),
    /// for tests and training on a CPU.
    pub fn small() -> Self {
        Self {
            embedding_dim: 64,
            image_size: 96,
            repeats: [1, 1, 1],
            width_divisor: 4,
            dropout: 0.2,
        }
    }

    /// Looks up a preset by name: `keras-128`, `facenet-512` or `small`.
    pub fn preset(name: &str) -> Option<Self> {
        match name {
            "keras-128" | "keras_128" => Some(Self::keras_128()),
            "facenet-512" | "facenet_512" => Some(Self::facenet_512()),
            "small" => Some(Self::small()),
            _ => None,
        }
    }

    /// The smallest input side the network accepts (the final feature map must be non-empty).
    pub fn min_input_size() -> usize {
        // 75 -> 37 -> 35 -> 35 -> 17 -> 17 -> 15 -> 7 -> 3 -> 1
        75
    }

    /// Checks that this configuration describes a network this code builds: embedding size 1
    /// to 4096, input side from [`Self::min_input_size`] to 1024, at most 64 blocks per stage,
    /// width divisor 1 to 64, dropout in [0, 1). Configurations read from files pass here
    /// before a network is built from them.
    pub fn check(&self) -> std::result::Result<(), String> {
        let min = Self::min_input_size();
        if !(1..=4096).contains(&self.embedding_dim) {
            return Err(format!(
                "embedding_dim {}: use 1 to 4096",
                self.embedding_dim
            ));
        }
        if !(min..=1024).contains(&self.image_size) {
            return Err(format!("image_size {}: use {min} to 1024", self.image_size));
        }
        if self.repeats.iter().any(|&r| r > 64) {
            return Err(format!(
                "repeats {:?}: at most 64 blocks per stage",
                self.repeats
            ));
        }
        if !(1..=64).contains(&self.width_divisor) {
            return Err(format!("width_divisor {}: use 1 to 64", self.width_divisor));
        }
        if !(self.dropout.is_finite() && (0.0..1.0).contains(&self.dropout)) {
            return Err(format!("dropout {}: use a rate in [0, 1)", self.dropout));
        }
        Ok(())
    }

    fn ch(&self, c: usize) -> usize {
        (c / self.width_divisor).max(1)
    }

    /// Creates the network with random weights.
    pub fn init(&self, device: &Device) -> InceptionResnetV1 {
        InceptionResnetV1::new(self, device)
    }

    /// Multiply-accumulate operations of one forward pass of one image, counted from the
    /// layer shapes (convolutions and the bottleneck; pooling and element-wise ops excluded).
    pub fn multiply_adds(&self) -> u64 {
        let net = self.init(&Device::flex());
        net.multiply_adds(self.image_size)
    }
}

impl Default for InceptionResnetV1Config {
    fn default() -> Self {
        Self::keras_128()
    }
}

/// Convolution, BatchNorm without learned scale (gamma stays one), ReLU.
#[derive(Module, Debug)]
pub struct BasicConv2d {
    /// The convolution (no bias).
    pub conv: Conv2d,
    /// The batch normalization.
    pub bn: BatchNorm,
}

impl BasicConv2d {
    fn new(
        channels: [usize; 2],
        kernel: [usize; 2],
        stride: usize,
        padding: PaddingConfig2d,
        device: &Device,
    ) -> Self {
        let conv = Conv2dConfig::new(channels, kernel)
            .with_stride([stride, stride])
            .with_padding(padding)
            .with_bias(false)
            .with_initializer(truncated_normal_like())
            .init(device);
        let bn = BatchNormConfig::new(channels[1])
            .with_epsilon(BN_EPSILON)
            .with_momentum(BN_MOMENTUM)
            .init(device);
        Self { conv, bn }
    }

    fn same(channels: [usize; 2], kernel: [usize; 2], device: &Device) -> Self {
        Self::new(channels, kernel, 1, PaddingConfig2d::Same, device)
    }

    fn valid(channels: [usize; 2], kernel: usize, stride: usize, device: &Device) -> Self {
        Self::new(
            channels,
            [kernel, kernel],
            stride,
            PaddingConfig2d::Valid,
            device,
        )
    }

    /// conv -> bn -> relu.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        relu(self.bn.forward(self.conv.forward(x)))
    }
}

fn truncated_normal_like() -> Initializer {
    // Xavier/Glorot uniform, the Keras default kernel initializer.
    Initializer::XavierUniform { gain: 1.0 }
}

fn up_conv(channels: [usize; 2], device: &Device) -> Conv2d {
    Conv2dConfig::new(channels, [1, 1])
        .with_bias(true)
        .with_initializer(truncated_normal_like())
        .init(device)
}

fn run_seq(seq: &[BasicConv2d], x: Tensor<4>) -> Tensor<4> {
    seq.iter().fold(x, |x, layer| layer.forward(x))
}

/// `shortcut + scale * up`, then ReLU unless this is the final block.
fn scale_sum(shortcut: Tensor<4>, up: Tensor<4>, scale: f64, activate: bool) -> Tensor<4> {
    let sum = shortcut + up.mul_scalar(scale);
    if activate { relu(sum) } else { sum }
}

/// 35x35 residual block (17x17 at 160x160 input), Keras `Block35_n`.
#[derive(Module, Debug)]
pub struct Block35 {
    /// 1x1.
    pub branch0: BasicConv2d,
    /// 1x1 -> 3x3.
    pub branch1: Vec<BasicConv2d>,
    /// 1x1 -> 3x3 -> 3x3.
    pub branch2: Vec<BasicConv2d>,
    /// The "up" 1x1 convolution with bias, back to the block's width.
    pub conv2d: Conv2d,
    /// Residual scale (0.17).
    pub scale: f64,
}

impl Block35 {
    fn new(cfg: &InceptionResnetV1Config, device: &Device) -> Self {
        let c = cfg.ch(256);
        let b = cfg.ch(32);
        Self {
            branch0: BasicConv2d::same([c, b], [1, 1], device),
            branch1: vec![
                BasicConv2d::same([c, b], [1, 1], device),
                BasicConv2d::same([b, b], [3, 3], device),
            ],
            branch2: vec![
                BasicConv2d::same([c, b], [1, 1], device),
                BasicConv2d::same([b, b], [3, 3], device),
                BasicConv2d::same([b, b], [3, 3], device),
            ],
            conv2d: up_conv([3 * b, c], device),
            scale: 0.17,
        }
    }

    /// Forward pass.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let up = self.up(x.clone());
        scale_sum(x, up, self.scale, true)
    }

    /// The residual branch before its scale: the branches, concatenated, through the up 1x1.
    pub fn up(&self, x: Tensor<4>) -> Tensor<4> {
        let x0 = self.branch0.forward(x.clone());
        let x1 = run_seq(&self.branch1, x.clone());
        let x2 = run_seq(&self.branch2, x);
        self.conv2d.forward(Tensor::cat(vec![x0, x1, x2], 1))
    }
}

/// Reduction block A, Keras `Mixed_6a`.
#[derive(Module, Debug)]
pub struct Mixed6a {
    /// 3x3 stride 2.
    pub branch0: BasicConv2d,
    /// 1x1 -> 3x3 -> 3x3 stride 2.
    pub branch1: Vec<BasicConv2d>,
    /// 3x3 max pool stride 2.
    pub branch2: MaxPool2d,
}

impl Mixed6a {
    fn new(cfg: &InceptionResnetV1Config, device: &Device) -> Self {
        let c = cfg.ch(256);
        Self {
            branch0: BasicConv2d::valid([c, cfg.ch(384)], 3, 2, device),
            branch1: vec![
                BasicConv2d::same([c, cfg.ch(192)], [1, 1], device),
                BasicConv2d::same([cfg.ch(192), cfg.ch(192)], [3, 3], device),
                BasicConv2d::valid([cfg.ch(192), cfg.ch(256)], 3, 2, device),
            ],
            branch2: max_pool_3x3_s2(),
        }
    }

    /// Forward pass.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let x0 = self.branch0.forward(x.clone());
        let x1 = run_seq(&self.branch1, x.clone());
        let x2 = self.branch2.forward(x);
        Tensor::cat(vec![x0, x1, x2], 1)
    }
}

fn max_pool_3x3_s2() -> MaxPool2d {
    MaxPool2dConfig::new([3, 3]).with_strides([2, 2]).init()
}

/// 17x17 residual block (8x8 at 160x160 input), Keras `Block17_n`.
#[derive(Module, Debug)]
pub struct Block17 {
    /// 1x1.
    pub branch0: BasicConv2d,
    /// 1x1 -> 1x7 -> 7x1.
    pub branch1: Vec<BasicConv2d>,
    /// The "up" 1x1 convolution with bias.
    pub conv2d: Conv2d,
    /// Residual scale (0.1).
    pub scale: f64,
}

impl Block17 {
    fn new(cfg: &InceptionResnetV1Config, device: &Device) -> Self {
        let c = cfg.ch(896);
        let b = cfg.ch(128);
        Self {
            branch0: BasicConv2d::same([c, b], [1, 1], device),
            branch1: vec![
                BasicConv2d::same([c, b], [1, 1], device),
                BasicConv2d::same([b, b], [1, 7], device),
                BasicConv2d::same([b, b], [7, 1], device),
            ],
            conv2d: up_conv([2 * b, c], device),
            scale: 0.1,
        }
    }

    /// Forward pass.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let up = self.up(x.clone());
        scale_sum(x, up, self.scale, true)
    }

    /// The residual branch before its scale.
    pub fn up(&self, x: Tensor<4>) -> Tensor<4> {
        let x0 = self.branch0.forward(x.clone());
        let x1 = run_seq(&self.branch1, x);
        self.conv2d.forward(Tensor::cat(vec![x0, x1], 1))
    }
}

/// Reduction block B, Keras `Mixed_7a`.
#[derive(Module, Debug)]
pub struct Mixed7a {
    /// 1x1 -> 3x3 stride 2.
    pub branch0: Vec<BasicConv2d>,
    /// 1x1 -> 3x3 stride 2.
    pub branch1: Vec<BasicConv2d>,
    /// 1x1 -> 3x3 -> 3x3 stride 2.
    pub branch2: Vec<BasicConv2d>,
    /// 3x3 max pool stride 2.
    pub branch3: MaxPool2d,
}

impl Mixed7a {
    fn new(cfg: &InceptionResnetV1Config, device: &Device) -> Self {
        let c = cfg.ch(896);
        let b = cfg.ch(256);
        Self {
            branch0: vec![
                BasicConv2d::same([c, b], [1, 1], device),
                BasicConv2d::valid([b, cfg.ch(384)], 3, 2, device),
            ],
            branch1: vec![
                BasicConv2d::same([c, b], [1, 1], device),
                BasicConv2d::valid([b, b], 3, 2, device),
            ],
            branch2: vec![
                BasicConv2d::same([c, b], [1, 1], device),
                BasicConv2d::same([b, b], [3, 3], device),
                BasicConv2d::valid([b, b], 3, 2, device),
            ],
            branch3: max_pool_3x3_s2(),
        }
    }

    /// Forward pass.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let x0 = run_seq(&self.branch0, x.clone());
        let x1 = run_seq(&self.branch1, x.clone());
        let x2 = run_seq(&self.branch2, x.clone());
        let x3 = self.branch3.forward(x);
        Tensor::cat(vec![x0, x1, x2, x3], 1)
    }
}

/// 8x8 residual block (3x3 at 160x160 input), Keras `Block8_n`.
#[derive(Module, Debug)]
pub struct Block8 {
    /// 1x1.
    pub branch0: BasicConv2d,
    /// 1x1 -> 1x3 -> 3x1.
    pub branch1: Vec<BasicConv2d>,
    /// The "up" 1x1 convolution with bias.
    pub conv2d: Conv2d,
    /// Residual scale (0.2, or 1.0 for the final block).
    pub scale: f64,
    /// Whether ReLU follows the sum (false for the final block).
    pub activate: bool,
}

impl Block8 {
    fn new(cfg: &InceptionResnetV1Config, scale: f64, activate: bool, device: &Device) -> Self {
        let c = cfg.ch(1792);
        let b = cfg.ch(192);
        Self {
            branch0: BasicConv2d::same([c, b], [1, 1], device),
            branch1: vec![
                BasicConv2d::same([c, b], [1, 1], device),
                BasicConv2d::same([b, b], [1, 3], device),
                BasicConv2d::same([b, b], [3, 1], device),
            ],
            conv2d: up_conv([2 * b, c], device),
            scale,
            activate,
        }
    }

    /// Forward pass.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let up = self.up(x.clone());
        scale_sum(x, up, self.scale, self.activate)
    }

    /// The residual branch before its scale.
    pub fn up(&self, x: Tensor<4>) -> Tensor<4> {
        let x0 = self.branch0.forward(x.clone());
        let x1 = run_seq(&self.branch1, x);
        self.conv2d.forward(Tensor::cat(vec![x0, x1], 1))
    }
}

/// Inception-ResNet-v1 up to the bottleneck BatchNorm. Its output is the *raw* embedding;
/// L2 normalization belongs to [`crate::embed`].
#[derive(Module, Debug)]
pub struct InceptionResnetV1 {
    /// Stem: 3x3 stride 2, valid.
    pub conv2d_1a: BasicConv2d,
    /// Stem: 3x3, valid.
    pub conv2d_2a: BasicConv2d,
    /// Stem: 3x3, same.
    pub conv2d_2b: BasicConv2d,
    /// Stem: 3x3 max pool stride 2.
    pub maxpool_3a: MaxPool2d,
    /// Stem: 1x1.
    pub conv2d_3b: BasicConv2d,
    /// Stem: 3x3, valid.
    pub conv2d_4a: BasicConv2d,
    /// Stem: 3x3 stride 2, valid.
    pub conv2d_4b: BasicConv2d,
    /// Block35 repeats.
    pub repeat_1: Vec<Block35>,
    /// Reduction A.
    pub mixed_6a: Mixed6a,
    /// Block17 repeats.
    pub repeat_2: Vec<Block17>,
    /// Reduction B.
    pub mixed_7a: Mixed7a,
    /// Block8 repeats (with ReLU).
    pub repeat_3: Vec<Block8>,
    /// Final Block8 (scale 1, no ReLU).
    pub block8: Block8,
    /// Dropout before the bottleneck (identity at inference).
    pub dropout: Dropout,
    /// Bottleneck dense layer without bias; weight is (in, out) as burn's `Linear` stores it.
    pub last_linear: Linear,
    /// Bottleneck BatchNorm (no learned scale in the Keras model).
    pub last_bn: BatchNorm,
}

impl InceptionResnetV1 {
    /// Creates the network with random weights.
    pub fn new(cfg: &InceptionResnetV1Config, device: &Device) -> Self {
        let ch = |c| cfg.ch(c);
        Self {
            conv2d_1a: BasicConv2d::valid([3, ch(32)], 3, 2, device),
            conv2d_2a: BasicConv2d::valid([ch(32), ch(32)], 3, 1, device),
            conv2d_2b: BasicConv2d::same([ch(32), ch(64)], [3, 3], device),
            maxpool_3a: max_pool_3x3_s2(),
            conv2d_3b: BasicConv2d::valid([ch(64), ch(80)], 1, 1, device),
            conv2d_4a: BasicConv2d::valid([ch(80), ch(192)], 3, 1, device),
            conv2d_4b: BasicConv2d::valid([ch(192), ch(256)], 3, 2, device),
            repeat_1: (0..cfg.repeats[0])
                .map(|_| Block35::new(cfg, device))
                .collect(),
            mixed_6a: Mixed6a::new(cfg, device),
            repeat_2: (0..cfg.repeats[1])
                .map(|_| Block17::new(cfg, device))
                .collect(),
            mixed_7a: Mixed7a::new(cfg, device),
            repeat_3: (0..cfg.repeats[2])
                .map(|_| Block8::new(cfg, 0.2, true, device))
                .collect(),
            block8: Block8::new(cfg, 1.0, false, device),
            dropout: DropoutConfig::new(cfg.dropout).init(),
            last_linear: LinearConfig::new(ch(1792), cfg.embedding_dim)
                .with_bias(false)
                .with_initializer(truncated_normal_like())
                .init(device),
            last_bn: BatchNormConfig::new(cfg.embedding_dim)
                .with_epsilon(BN_EPSILON)
                .with_momentum(BN_MOMENTUM)
                .init(device),
        }
    }

    /// Runs the stem (up to `Conv2d_4b_3x3`).
    pub fn stem(&self, x: Tensor<4>) -> Tensor<4> {
        let x = self.conv2d_1a.forward(x);
        let x = self.conv2d_2a.forward(x);
        let x = self.conv2d_2b.forward(x);
        let x = self.maxpool_3a.forward(x);
        let x = self.conv2d_3b.forward(x);
        let x = self.conv2d_4a.forward(x);
        self.conv2d_4b.forward(x)
    }

    /// Runs everything up to the global average pool; output `[b, 1792]`.
    pub fn features(&self, x: Tensor<4>) -> Tensor<2> {
        let x = self.stem(x);
        let x = self.repeat_1.iter().fold(x, |x, b| b.forward(x));
        let x = self.mixed_6a.forward(x);
        let x = self.repeat_2.iter().fold(x, |x, b| b.forward(x));
        let x = self.mixed_7a.forward(x);
        let x = self.repeat_3.iter().fold(x, |x, b| b.forward(x));
        let x = self.block8.forward(x);
        let [b, c, _, _] = x.dims();
        adaptive_avg_pool2d(x, [1, 1]).reshape([b, c])
    }

    /// Input `[b, 3, h, w]` standardized RGB; output `[b, embedding_dim]`, not normalized.
    ///
    /// On an autodiff device BatchNorm uses batch statistics and dropout is active (training);
    /// elsewhere the stored running statistics are used.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        let x = self.features(x);
        let x = self.dropout.forward(x);
        let x = self.last_linear.forward(x);
        self.last_bn.forward(x)
    }

    /// Names of the residual blocks in order (`Block35_1` ... `Block8_6`, Keras's names).
    pub fn residual_block_names(&self) -> Vec<String> {
        let mut names = Vec::new();
        for (kind, count) in [
            ("Block35", self.repeat_1.len()),
            ("Block17", self.repeat_2.len()),
            ("Block8", self.repeat_3.len() + 1),
        ] {
            names.extend((1..=count).map(|i| format!("{kind}_{i}")));
        }
        names
    }

    /// [`InceptionResnetV1::forward`] with the residual block `skip` (an index into
    /// [`InceptionResnetV1::residual_block_names`]) left out: its input passes on unchanged,
    /// as if its residual branch gave zero.
    pub fn forward_skipping(&self, x: Tensor<4>, skip: usize) -> Tensor<2> {
        let mut k = 0;
        let mut block = |x: Tensor<4>, f: &dyn Fn(Tensor<4>) -> Tensor<4>| {
            k += 1;
            if k - 1 == skip { x } else { f(x) }
        };
        let x = self.stem(x);
        let x = self
            .repeat_1
            .iter()
            .fold(x, |x, b| block(x, &|x| b.forward(x)));
        let x = self.mixed_6a.forward(x);
        let x = self
            .repeat_2
            .iter()
            .fold(x, |x, b| block(x, &|x| b.forward(x)));
        let x = self.mixed_7a.forward(x);
        let x = self
            .repeat_3
            .iter()
            .fold(x, |x, b| block(x, &|x| b.forward(x)));
        let x = block(x, &|x| self.block8.forward(x));
        let [b, c, _, _] = x.dims();
        let x = adaptive_avg_pool2d(x, [1, 1]).reshape([b, c]);
        self.last_bn.forward(self.last_linear.forward(x))
    }

    /// For each residual block, the size of what it adds against what it is given:
    /// `|scale * up(x)| / |x|` (Frobenius norms over the batch), in block order.
    pub fn residual_shares(&self, x: Tensor<4>) -> Vec<f64> {
        let norm = |t: Tensor<4>| f64::from(t.powf_scalar(2.0).sum().into_scalar::<f32>()).sqrt();
        let mut out = Vec::new();
        let mut x = self.stem(x);
        for b in &self.repeat_1 {
            out.push(b.scale * norm(b.up(x.clone())) / norm(x.clone()));
            x = b.forward(x);
        }
        let mut x = self.mixed_6a.forward(x);
        for b in &self.repeat_2 {
            out.push(b.scale * norm(b.up(x.clone())) / norm(x.clone()));
            x = b.forward(x);
        }
        let mut x = self.mixed_7a.forward(x);
        for b in self.repeat_3.iter().chain(std::iter::once(&self.block8)) {
            out.push(b.scale * norm(b.up(x.clone())) / norm(x.clone()));
            x = b.forward(x);
        }
        out
    }

    /// Multiply-adds of one forward pass at `size`x`size` (see
    /// [`InceptionResnetV1Config::multiply_adds`]).
    pub fn multiply_adds(&self, size: usize) -> u64 {
        self.summary(size).iter().map(|r| r.multiply_adds).sum()
    }
}

/// What one residual block does to the embeddings of a batch of faces
/// ([`InceptionResnetV1::residual_effects`]).
#[derive(Debug, Clone, PartialEq)]
pub struct ResidualEffect {
    /// Keras's name of the block (`Block35_1` ...).
    pub block: String,
    /// `|scale * up(x)| / |x|`: the size of what it adds to its input.
    pub adds: f64,
    /// How far the unit embeddings move (L2) when the block is left out: mean over the faces.
    pub moved_mean: f32,
    /// The same, the largest.
    pub moved_max: f32,
}

impl InceptionResnetV1 {
    /// For each residual block, what it adds ([`Self::residual_shares`]) and how far each
    /// face's unit embedding moves when it is left out ([`Self::forward_skipping`]).
    pub fn residual_effects(&self, x: Tensor<4>) -> Vec<ResidualEffect> {
        use crate::distance::{Distance, l2_normalize};
        let unit = |t: Tensor<2>| -> Vec<Vec<f32>> {
            let d = t.dims()[1];
            let v = t.into_data().try_into_vec::<f32>().unwrap_or_default();
            v.chunks(d).map(l2_normalize).collect()
        };
        let full = unit(self.forward(x.clone()));
        let shares = self.residual_shares(x.clone());
        let names = self.residual_block_names();
        names
            .into_iter()
            .zip(shares)
            .enumerate()
            .map(|(k, (block, adds))| {
                let skipped = unit(self.forward_skipping(x.clone(), k));
                let moved: Vec<f32> = full
                    .iter()
                    .zip(&skipped)
                    .map(|(a, b)| Distance::L2.between(a, b))
                    .collect();
                ResidualEffect {
                    block,
                    adds,
                    moved_mean: moved.iter().sum::<f32>() / moved.len().max(1) as f32,
                    moved_max: moved.iter().cloned().fold(0.0, f32::max),
                }
            })
            .collect()
    }
}

/// One row of the architecture table ([`InceptionResnetV1::summary`]): a stage of the network
/// at one input size.
#[derive(Debug, Clone, PartialEq)]
pub struct StageSummary {
    /// The stage's name (Keras's layer names for the stem; blocks by kind and count).
    pub name: String,
    /// What it does.
    pub kind: String,
    /// Output (channels, height, width) of one image.
    pub output: [usize; 3],
    /// Parameters: every stored value (burn's `num_params`, which counts BatchNorm's moving
    /// mean and variance, and its scale, ones in the imported Keras model).
    pub params: usize,
    /// Multiply-adds of one image (convolutions and the bottleneck).
    pub multiply_adds: u64,
}

fn stage(
    name: &str,
    kind: &str,
    c: usize,
    (h, w): (usize, usize),
    params: usize,
    multiply_adds: u64,
) -> StageSummary {
    StageSummary {
        name: name.into(),
        kind: kind.into(),
        output: [c, h, w],
        params,
        multiply_adds,
    }
}

fn out_channels(c: &Conv2d) -> usize {
    c.weight.dims()[0]
}

fn last_out(layers: &[BasicConv2d]) -> usize {
    layers.last().map_or(0, |l| out_channels(&l.conv))
}

impl InceptionResnetV1 {
    /// The network stage by stage at a `size`x`size` input: output shape, parameters and
    /// multiply-adds (`facenet model` prints it). The multiply-adds add up to
    /// [`InceptionResnetV1::multiply_adds`], the parameters to `num_params`.
    pub fn summary(&self, size: usize) -> Vec<StageSummary> {
        const A: &str = "Inception-ResNet-A: branches 1x1; 1x1-3x3; 1x1-3x3-3x3; concatenated, 1x1 up, x + 0.17 up";
        const RA: &str = "Reduction-A: 3x3 s2; 1x1-3x3-3x3 s2; max pool s2; concatenated";
        const B: &str =
            "Inception-ResNet-B: branches 1x1; 1x1-1x7-7x1; concatenated, 1x1 up, x + 0.10 up";
        const RB: &str = "Reduction-B: 1x1-3x3 s2 (two); 1x1-3x3-3x3 s2; max pool s2; concatenated";
        const C: &str =
            "Inception-ResNet-C: branches 1x1; 1x1-1x3-3x1; concatenated, 1x1 up, x + 0.20 up";
        let mut rows = Vec::new();
        let mut m = MacCounter::default();
        let mut hw = (size, size);
        let mut c = 0;
        let stem: [(&str, &str, Option<&BasicConv2d>); 7] = [
            ("Conv2d_1a_3x3", "3x3 conv, stride 2", Some(&self.conv2d_1a)),
            ("Conv2d_2a_3x3", "3x3 conv", Some(&self.conv2d_2a)),
            (
                "Conv2d_2b_3x3",
                "3x3 conv, same padding",
                Some(&self.conv2d_2b),
            ),
            ("MaxPool_3a_3x3", "3x3 max pool, stride 2", None),
            ("Conv2d_3b_1x1", "1x1 conv", Some(&self.conv2d_3b)),
            ("Conv2d_4a_3x3", "3x3 conv", Some(&self.conv2d_4a)),
            ("Conv2d_4b_3x3", "3x3 conv, stride 2", Some(&self.conv2d_4b)),
        ];
        for (name, kind, layer) in stem {
            let before = m.total;
            let p = match layer {
                Some(l) => {
                    hw = m.basic(l, hw);
                    c = out_channels(&l.conv);
                    l.num_params()
                }
                None => {
                    hw = ((hw.0 - 3) / 2 + 1, (hw.1 - 3) / 2 + 1);
                    0
                }
            };
            rows.push(stage(name, kind, c, hw, p, m.total - before));
        }
        let before = m.total;
        for b in &self.repeat_1 {
            m.basic(&b.branch0, hw);
            m.seq(&seq(&b.branch1), hw);
            m.seq(&seq(&b.branch2), hw);
            m.conv(&b.conv2d, hw);
        }
        let p = self.repeat_1.iter().map(Module::num_params).sum();
        let name = format!("Block35 x{}", self.repeat_1.len());
        rows.push(stage(&name, A, c, hw, p, m.total - before));
        let (x, before) = (&self.mixed_6a, m.total);
        m.basic(&x.branch0, hw);
        hw = m.seq(&seq(&x.branch1), hw);
        c += out_channels(&x.branch0.conv) + last_out(&x.branch1);
        let p = x.num_params();
        rows.push(stage("Mixed_6a", RA, c, hw, p, m.total - before));
        let before = m.total;
        for b in &self.repeat_2 {
            m.two_branch(&b.branch0, &b.branch1, &b.conv2d, hw);
        }
        let p = self.repeat_2.iter().map(Module::num_params).sum();
        let name = format!("Block17 x{}", self.repeat_2.len());
        rows.push(stage(&name, B, c, hw, p, m.total - before));
        let (x, before) = (&self.mixed_7a, m.total);
        m.seq(&seq(&x.branch0), hw);
        m.seq(&seq(&x.branch1), hw);
        hw = m.seq(&seq(&x.branch2), hw);
        c += last_out(&x.branch0) + last_out(&x.branch1) + last_out(&x.branch2);
        let p = x.num_params();
        rows.push(stage("Mixed_7a", RB, c, hw, p, m.total - before));
        let before = m.total;
        for b in &self.repeat_3 {
            m.two_branch(&b.branch0, &b.branch1, &b.conv2d, hw);
        }
        let p = self.repeat_3.iter().map(Module::num_params).sum();
        let name = format!("Block8 x{}", self.repeat_3.len());
        rows.push(stage(&name, C, c, hw, p, m.total - before));
        let (b, before) = (&self.block8, m.total);
        m.two_branch(&b.branch0, &b.branch1, &b.conv2d, hw);
        let kind = "Inception-ResNet-C, x + up, no ReLU";
        rows.push(stage(
            "Block8",
            kind,
            c,
            hw,
            b.num_params(),
            m.total - before,
        ));
        rows.push(stage("AvgPool", "global average pool", c, (1, 1), 0, 0));
        let [i, o] = self.last_linear.weight.dims();
        let p = self.last_linear.num_params() + self.last_bn.num_params();
        let kind = "dense without bias, then BatchNorm";
        rows.push(stage("Bottleneck", kind, o, (1, 1), p, (i * o) as u64));
        rows.push(stage(
            "L2 normalize",
            "onto the unit hypersphere",
            o,
            (1, 1),
            0,
            0,
        ));
        rows
    }
}

/// The layers of a branch, as [`MacCounter::seq`] takes them.
fn seq(layers: &[BasicConv2d]) -> Vec<&BasicConv2d> {
    layers.iter().collect()
}

/// Counts convolution multiply-adds while walking the layer shapes.
#[derive(Default)]
struct MacCounter {
    total: u64,
}

impl MacCounter {
    fn conv(&mut self, c: &Conv2d, (h, w): (usize, usize)) -> (usize, usize) {
        let [o, i, kh, kw] = c.weight.dims();
        let (oh, ow) = match c.padding {
            PaddingConfig2d::Same => (h.div_ceil(c.stride[0]), w.div_ceil(c.stride[1])),
            _ => ((h - kh) / c.stride[0] + 1, (w - kw) / c.stride[1] + 1),
        };
        self.total += (o * i * kh * kw * oh * ow) as u64;
        (oh, ow)
    }

    fn basic(&mut self, l: &BasicConv2d, hw: (usize, usize)) -> (usize, usize) {
        self.conv(&l.conv, hw)
    }

    fn seq(&mut self, layers: &[&BasicConv2d], hw: (usize, usize)) -> (usize, usize) {
        layers.iter().fold(hw, |hw, l| self.basic(l, hw))
    }

    /// A Block17 or Block8: two branches and the up convolution, at the block's size.
    fn two_branch(
        &mut self,
        b0: &BasicConv2d,
        b1: &[BasicConv2d],
        up: &Conv2d,
        hw: (usize, usize),
    ) {
        self.basic(b0, hw);
        self.seq(&seq(b1), hw);
        self.conv(up, hw);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keras_net_costs_1_417_gmac() {
        // shared/reference/README.md: 1.417 GMAC per 160x160 image.
        let macs = InceptionResnetV1Config::keras_128().multiply_adds();
        assert!((macs as f64 / 1e9 - 1.417).abs() < 0.001, "{macs}");
    }

    #[test]
    fn check_accepts_the_presets_and_refuses_what_cannot_be_built() {
        for cfg in [
            InceptionResnetV1Config::keras_128(),
            InceptionResnetV1Config::facenet_512(),
            InceptionResnetV1Config::small(),
        ] {
            assert_eq!(cfg.check(), Ok(()));
        }
        let k = InceptionResnetV1Config::keras_128;
        for (cfg, word) in [
            (
                InceptionResnetV1Config {
                    width_divisor: 0,
                    ..k()
                },
                "width_divisor",
            ),
            (
                InceptionResnetV1Config {
                    dropout: 1.2,
                    ..k()
                },
                "dropout",
            ),
            (
                InceptionResnetV1Config {
                    dropout: f64::NAN,
                    ..k()
                },
                "dropout",
            ),
            (
                InceptionResnetV1Config {
                    embedding_dim: 1 << 40,
                    ..k()
                },
                "embedding_dim",
            ),
            (
                InceptionResnetV1Config {
                    image_size: 12,
                    ..k()
                },
                "image_size",
            ),
            (
                InceptionResnetV1Config {
                    repeats: [5, 1 << 30, 5],
                    ..k()
                },
                "repeats",
            ),
        ] {
            let e = cfg.check().unwrap_err();
            assert!(e.starts_with(word), "{e}");
        }
    }

    #[test]
    fn skipping_a_block_changes_only_that_block() {
        let device = Device::flex();
        let cfg = InceptionResnetV1Config::small();
        let net = cfg.init(&device);
        let x = Tensor::<4>::random([2, 3, 96, 96], burn::tensor::Distribution::Default, &device);
        let names = net.residual_block_names();
        assert_eq!(names, ["Block35_1", "Block17_1", "Block8_1", "Block8_2"]);
        let full = net.forward(x.clone());
        for (k, name) in names.iter().enumerate() {
            let d = (net.forward_skipping(x.clone(), k) - full.clone())
                .abs()
                .max();
            assert!(
                d.into_scalar::<f32>() > 0.0,
                "skipping {name} changed nothing"
            );
        }
        // An index past the blocks skips nothing.
        let d = (net.forward_skipping(x.clone(), names.len()) - full)
            .abs()
            .max();
        assert_eq!(d.into_scalar::<f32>(), 0.0);
        let shares = net.residual_shares(x);
        assert_eq!(shares.len(), names.len());
        assert!(
            shares.iter().all(|s| s.is_finite() && *s > 0.0),
            "{shares:?}"
        );
    }

    #[test]
    fn summary_adds_up_to_the_network() {
        let cfg = InceptionResnetV1Config::keras_128();
        let net = cfg.init(&Device::flex());
        let rows = net.summary(160);
        // (The multiply-adds are the rows' sum by definition; keras_net_costs_1_417_gmac checks
        // that total against the reference.)
        let params: usize = rows.iter().map(|r| r.params).sum();
        assert_eq!(params, net.num_params());
        // The shapes of the Keras model (model.summary()).
        let shape = |name: &str| rows.iter().find(|r| r.name == name).unwrap().output;
        assert_eq!(shape("Conv2d_1a_3x3"), [32, 79, 79]);
        assert_eq!(shape("Conv2d_4b_3x3"), [256, 17, 17]);
        assert_eq!(shape("Block35 x5"), [256, 17, 17]);
        assert_eq!(shape("Mixed_6a"), [896, 8, 8]);
        assert_eq!(shape("Mixed_7a"), [1792, 3, 3]);
        assert_eq!(shape("Bottleneck"), [128, 1, 1]);
    }

    #[test]
    fn small_net_output_shape_on_non_square_input() {
        let device = Device::flex();
        let cfg = InceptionResnetV1Config::small();
        let net = cfg.init(&device);
        let x = Tensor::<4>::ones([2, 3, 96, 112], &device);
        assert_eq!(net.forward(x).dims(), [2, cfg.embedding_dim]);
    }

    #[test]
    fn training_mode_uses_batch_statistics() {
        // On an autodiff device the bottleneck BatchNorm normalizes with the batch's own
        // statistics: with gamma = 1 and beta = 0 each output feature has mean 0 over the batch.
        let device = Device::flex().autodiff();
        let cfg = InceptionResnetV1Config {
            dropout: 0.0,
            ..InceptionResnetV1Config::small()
        };
        let net = cfg.init(&device);
        let x = Tensor::<4>::random(
            [6, 3, 96, 96],
            burn::tensor::Distribution::Normal(0.0, 1.0),
            &device,
        );
        let y = net.forward(x.clone());
        let mean = y.clone().mean_dim(0).abs().max().into_scalar::<f32>();
        assert!(mean < 1e-4, "batch mean {mean}");
        // In inference (running statistics: mean 0, var 1 at init), the output is not centred.
        let inf = cfg
            .init(&Device::flex())
            .forward(Tensor::from_data(x.into_data(), &Device::flex()));
        let inf_mean = inf.mean_dim(0).abs().max().into_scalar::<f32>();
        assert!(inf_mean > 1e-3, "inference mean {inf_mean}");
    }
}
