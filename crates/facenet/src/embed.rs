//! The embedder: standardize -> batch -> forward -> L2-normalize.
//!
//! ```text
//! facenet embed crops/*.png
//! ```

use std::path::Path;

use burn::tensor::{Device, Tensor, TensorData};
use image::RgbImage;
use serde::{Deserialize, Serialize};

pub use crate::distance::{Distance, l2_normalize};
pub use crate::engine::{Engine, Precision};
use crate::error::{Error, Result};
use crate::fast::FastNet;
use crate::image::{Standardization, resize_square};
use crate::model::InceptionResnetV1;
pub use crate::options::Inference;
use crate::quantize::Int8Calibration;
use crate::weights::{self, WeightsMetadata};

/// One face's embedding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Embedding {
    /// The network's bottleneck output.
    pub raw: Vec<f32>,
    /// `raw / |raw|`: a point on the unit hypersphere.
    pub normalized: Vec<f32>,
}

impl Embedding {
    /// Wraps a raw bottleneck output and normalizes it.
    pub fn from_raw(raw: Vec<f32>) -> Self {
        let normalized = l2_normalize(&raw);
        Self { raw, normalized }
    }

    /// Distance between the normalized embeddings.
    pub fn distance(&self, other: &Embedding, metric: Distance) -> f32 {
        metric.between(&self.normalized, &other.normalized)
    }
}

/// Computes embeddings of face crops with a loaded network.
#[derive(Debug)]
pub struct Embedder {
    model: InceptionResnetV1,
    fast: Option<FastNet>,
    metadata: WeightsMetadata,
    device: Device,
    standardization: Standardization,
    batch_size: usize,
    /// The digest of the int8 calibration in use ([`Precision::Int8`]).
    int8: Option<String>,
    /// Test-time augmentation: each face is embedded with its mirror image and the two unit
    /// embeddings are averaged ([`Embedder::with_mirror`]).
    mirror: bool,
}

impl Embedder {
    /// Loads weights from a safetensors file onto `device`.
    pub fn open(path: &Path, device: &Device) -> Result<Self> {
        let (model, metadata) = weights::load(path, device)?;
        Self::new(model, metadata, device.clone())
    }

    /// Wraps a network already in memory. On the CPU it is compiled for the fast path
    /// ([`Engine::Auto`]); a network the fast path cannot compile is an error here (choose
    /// [`Engine::Burn`] through [`Embedder::with_engine`] to run it as it is).
    pub fn new(
        model: InceptionResnetV1,
        metadata: WeightsMetadata,
        device: Device,
    ) -> Result<Self> {
        let standardization = metadata.standardization;
        let fast = if device == Device::flex() {
            Some(FastNet::compile(&model)?)
        } else {
            None
        };
        Ok(Self {
            model,
            fast,
            metadata,
            device,
            standardization,
            batch_size: 16,
            int8: None,
            mirror: false,
        })
    }

    /// Loads weights and sets the precision; [`Precision::Int8`] reads the calibration beside
    /// the weights ([`Int8Calibration::path_for`]), and fails, naming the command that makes
    /// it, where there is none.
    pub fn open_with(path: &Path, device: &Device, precision: Precision) -> Result<Self> {
        Self::open_with_options(path, &Inference::new(device.clone(), precision))
    }

    /// Opens the weights and applies `options` ([`Embedder::with_inference`]): the way the
    /// fronts make their embedder. int8 reads the calibration beside the weights.
    pub fn open_with_options(path: &Path, options: &Inference) -> Result<Self> {
        Self::open(path, &options.device)?.with_inference(options, Some(path))
    }

    /// Applies everything of `options` but the device: the engine, the kernel families and
    /// the precision, the threads, the helpers' spin window (process-wide). int8 needs the
    /// calibration beside `weights`.
    pub fn with_inference(self, options: &Inference, weights: Option<&Path>) -> Result<Self> {
        if let Some(spin) = options.spin {
            crate::fast::set_spin_window(spin);
        }
        let mut e = self.with_engine(options.engine)?;
        if let Some(n) = options.threads {
            e = e.with_threads(n);
        }
        if let Some(k) = options.f32_kernel {
            e = e.with_f32_kernel(k)?;
        }
        let wrong = |reason: String| Error::InvalidArgument {
            field: "precision",
            reason,
        };
        match options.precision {
            Precision::F32 => Ok(e),
            Precision::Bf16 => {
                let k = crate::fast::Bf16Kernel::resolve(options.bf16_kernel).map_err(wrong)?;
                e.with_bf16_kernel(k)
            }
            Precision::Int8 => {
                let weights = weights.ok_or_else(|| {
                    wrong("int8 needs the calibration beside the weights file".into())
                })?;
                let cal = Int8Calibration::load(&Int8Calibration::path_for(weights))?;
                e.with_int8_on(&cal, options.int8_kernel)
            }
        }
    }

    /// Runs `faces` through the f32 fast path and records every convolution's input range:
    /// the calibration of [`Embedder::with_int8`]. Needs the fast path in f32.
    pub fn calibrate_int8(&mut self, faces: &[RgbImage], source: &str) -> Result<Int8Calibration> {
        let wrong = |reason: &str| Error::InvalidArgument {
            field: "precision",
            reason: reason.into(),
        };
        if faces.is_empty() {
            return Err(wrong("int8 calibration needs at least one face"));
        }
        if self.precision() != Precision::F32 {
            return Err(wrong("int8 calibration runs on an f32 embedder"));
        }
        let fast = self
            .fast
            .as_mut()
            .ok_or_else(|| wrong("int8 runs on the fast CPU path only (engine auto on the CPU)"))?;
        fast.observe(true);
        let run = self.embed(faces);
        let fast = self.fast.as_mut().expect("checked above");
        let ranges = fast.observed();
        fast.observe(false);
        run?;
        Ok(Int8Calibration {
            format: crate::quantize::FORMAT.into(),
            fingerprint: self.metadata.fingerprint.clone(),
            images: faces.len(),
            source: source.into(),
            ranges,
        })
    }

    /// Runs the products of int8 (see [`Precision::Int8`]) on this calibration, which must
    /// have been measured on these weights.
    pub fn with_int8(self, cal: &Int8Calibration) -> Result<Self> {
        self.with_int8_on(cal, None)
    }

    /// [`Embedder::with_int8`] on the int8 kernel family asked for (it must run here), else
    /// the fastest.
    pub fn with_int8_on(
        mut self,
        cal: &Int8Calibration,
        kernel: Option<crate::fast::Int8Kernel>,
    ) -> Result<Self> {
        if cal.fingerprint != self.metadata.fingerprint {
            return Err(Error::InvalidArgument {
                field: "int8 calibration",
                reason: format!(
                    "measured on weights {}, these are {}: run `facenet quantize` for them",
                    cal.fingerprint, self.metadata.fingerprint
                ),
            });
        }
        self.fast = match self.fast.take() {
            Some(fast) => Some(fast.with_int8_on(&cal.ranges, kernel)?),
            None => {
                return Err(Error::InvalidArgument {
                    field: "precision",
                    reason: "int8 runs on the fast CPU path only (engine auto on the CPU)".into(),
                });
            }
        };
        self.int8 = Some(cal.digest());
        Ok(self)
    }

    /// How many convolutions run int8 products (0 outside int8).
    pub fn int8_convolutions(&mut self) -> usize {
        self.fast.as_mut().map_or(0, FastNet::int8_convolutions)
    }

    /// The digest of the int8 calibration in use (`None` outside int8).
    pub fn int8_calibration(&self) -> Option<&str> {
        self.int8
            .as_deref()
            .filter(|_| self.precision() == Precision::Int8)
    }

    /// Uses another standardization than the one the weights were trained with.
    pub fn with_standardization(mut self, s: Standardization) -> Self {
        self.standardization = s;
        self
    }

    /// Runs each forward pass of the fast path on at most `n` threads of rayon's pool (default:
    /// all of them).
    pub fn with_threads(mut self, n: usize) -> Self {
        self.fast = self.fast.take().map(|f| f.with_threads(n));
        self
    }

    /// Chooses the implementation of the forward pass (see [`Engine`]).
    pub fn with_engine(mut self, engine: Engine) -> Result<Self> {
        self.fast = match (engine, self.fast.take()) {
            (Engine::Burn, _) => None,
            // Already compiled by `new`: keep it.
            (Engine::Auto, Some(fast)) => Some(fast),
            (Engine::Auto, None) if self.device == Device::flex() => {
                Some(FastNet::compile(&self.model)?)
            }
            (Engine::Auto, None) => None,
        };
        Ok(self)
    }

    /// The implementation in use.
    pub fn engine(&self) -> String {
        match &self.fast {
            Some(f) => match (f.bf16_kernel(), f.int8_kernel()) {
                (Some(k), _) => format!("fast bf16 (folded BatchNorm, NHWC, {})", k.describe()),
                (None, Some(k)) => format!("fast int8 (folded BatchNorm, NHWC, {})", k.describe()),
                (None, None) => format!("fast (folded BatchNorm, NHWC, {})", f.f32_kernel().name()),
            },
            None => "burn".into(),
        }
    }

    /// Chooses the fast path's arithmetic (see [`Precision`]). `Bf16` needs the fast path
    /// (the CPU, [`Engine::Auto`]) and a CPU with AMX or AVX-512 BF16 (see
    /// [`crate::fast::Bf16Kernel`]); otherwise this fails and says why.
    pub fn with_precision(mut self, precision: Precision) -> Result<Self> {
        self.fast = match self.fast.take() {
            Some(fast) => Some(fast.with_precision(precision)?),
            None if precision == Precision::F32 => None,
            None => {
                return Err(Error::InvalidArgument {
                    field: "precision",
                    reason: format!(
                        "{} runs on the fast CPU path only (engine auto on the CPU)",
                        precision.name()
                    ),
                });
            }
        };
        Ok(self)
    }

    /// bf16 products on this kernel family (the AMX machine's way to run the AVX-512 BF16
    /// kernel, for tests and benchmarks); fails where the fast path is off or the CPU lacks
    /// the family.
    pub fn with_bf16_kernel(mut self, kernel: crate::fast::Bf16Kernel) -> Result<Self> {
        self.fast = match self.fast.take() {
            Some(fast) => Some(fast.with_bf16_kernel(kernel)?),
            None => {
                return Err(Error::InvalidArgument {
                    field: "precision",
                    reason: "bf16 runs on the fast CPU path only (engine auto on the CPU)".into(),
                });
            }
        };
        Ok(self)
    }

    /// How many 2 MiB regions of the fast path's weights are on huge pages, and how many the
    /// kernel refused (`None` off the fast path, and until the move that starts after a few
    /// passes is done).
    pub fn huge_pages(&self) -> Option<(usize, usize)> {
        self.fast.as_ref().and_then(|f| f.huge_pages())
    }

    /// How many single-image passes of the fast path ran on each thread count so far, probes
    /// included (`(threads, passes)`; empty off the fast path or before any): how often the
    /// pass moved to fewer threads beside other work.
    pub fn single_image_passes(&self) -> Vec<(usize, u64)> {
        self.fast
            .as_ref()
            .map(|f| f.single_image_passes())
            .unwrap_or_default()
    }

    /// Times every convolution of the fast path from now on (`on`), or stops timing and
    /// forgets the times ([`Embedder::layer_times`] reads them). Fails off the fast path.
    pub fn time_layers(&mut self, on: bool) -> Result<()> {
        let fast = self.fast.as_mut().ok_or_else(|| Error::InvalidArgument {
            field: "engine",
            reason: "per-convolution timers run on the fast CPU path only (engine auto on the CPU)"
                .into(),
        })?;
        fast.time_layers(on);
        Ok(())
    }

    /// What every convolution's timer recorded since [`Embedder::time_layers`], one entry per
    /// convolution (empty when not timing); [`crate::bench::report::layer_table`] sums them
    /// up.
    pub fn layer_times(&mut self) -> Vec<crate::fast::LayerTime> {
        self.fast
            .as_mut()
            .map(|f| f.layer_times())
            .unwrap_or_default()
    }

    /// The products' kernel family, as `bench embed` prints it: `amx` or `avx512-bf16` in
    /// bf16, `amx-int8`, `avx512-vnni`, `avx-vnni` or `avx2-int8` in int8, `avx512-fma`, `avx2-fma` or
    /// `gemm` in f32, `burn` off the fast path.
    pub fn kernel(&self) -> &'static str {
        match &self.fast {
            Some(f) => match (f.bf16_kernel(), f.int8_kernel()) {
                (Some(k), _) => k.name(),
                (None, Some(k)) => k.name(),
                (None, None) => f.f32_kernel().name(),
            },
            None => "burn",
        }
    }

    /// Runs the f32 products on this kernel family (default: [`crate::fast::F32Kernel::best`]);
    /// fails where the CPU lacks it or off the fast path.
    pub fn with_f32_kernel(mut self, kernel: crate::fast::F32Kernel) -> Result<Self> {
        self.fast = match self.fast.take() {
            Some(fast) => Some(fast.with_f32_kernel(kernel)?),
            None => {
                return Err(Error::InvalidArgument {
                    field: "f32 kernel",
                    reason:
                        "kernel families apply to the fast CPU path only (engine auto on the CPU)"
                            .into(),
                });
            }
        };
        Ok(self)
    }

    /// The bf16 kernel family in use (`None` in f32).
    pub fn bf16_kernel(&self) -> Option<crate::fast::Bf16Kernel> {
        self.fast.as_ref().and_then(FastNet::bf16_kernel)
    }

    /// The arithmetic in use (f32 unless [`Embedder::with_precision`] chose bf16 or
    /// [`Embedder::with_int8`] int8).
    pub fn precision(&self) -> Precision {
        self.fast
            .as_ref()
            .map(FastNet::precision)
            .unwrap_or(Precision::F32)
    }

    /// Sets how many faces go through the network at once (at least 1).
    pub fn with_batch_size(mut self, n: usize) -> Self {
        self.batch_size = n.max(1);
        self
    }

    /// The weights' metadata (model config, fingerprint).
    pub fn metadata(&self) -> &WeightsMetadata {
        &self.metadata
    }

    /// The standardization in use.
    pub fn standardization(&self) -> Standardization {
        self.standardization
    }

    /// The network.
    pub fn model(&self) -> &InceptionResnetV1 {
        &self.model
    }

    /// The device the network runs on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Input side length in pixels.
    pub fn image_size(&self) -> u32 {
        self.metadata.config.image_size as u32
    }

    /// Standardizes face crops (resized to the input size if needed) into `[b, 3, s, s]`
    /// floats.
    fn input_data(&self, faces: &[RgbImage]) -> Result<(Vec<f32>, [usize; 4])> {
        let size = self.image_size();
        if faces.is_empty() {
            return Err(Error::InvalidArgument {
                field: "faces",
                reason: "no face to embed".into(),
            });
        }
        let mut data = Vec::with_capacity(faces.len() * 3 * (size * size) as usize);
        for face in faces {
            let face = resize_square(face, size);
            data.extend(self.standardization.apply(&face));
        }
        Ok((data, [faces.len(), 3, size as usize, size as usize]))
    }

    /// Standardizes face crops (resized to the input size if needed) into one input tensor.
    pub fn input_tensor(&self, faces: &[RgbImage]) -> Result<Tensor<4>> {
        let (data, shape) = self.input_data(faces)?;
        Ok(Tensor::from_data(
            TensorData::new(data, shape),
            &self.device,
        ))
    }

    /// Runs the network on a standardized `[b, 3, h, w]` tensor and returns the raw outputs.
    pub fn forward_raw(&self, input: Tensor<4>) -> Result<Vec<Vec<f32>>> {
        let shape = input.dims();
        if self.fast.is_some() {
            let data = input
                .into_data()
                .convert::<f32>()
                .try_into_vec::<f32>()
                .map_err(|source| Error::Data {
                    what: "the input tensor".into(),
                    source,
                })?;
            return self.forward_data(&data, shape);
        }
        let out = self.model.forward(input);
        let dim = out.dims()[1];
        let flat = out
            .into_data()
            .try_into_vec::<f32>()
            .map_err(|source| Error::Data {
                what: "the network's output".into(),
                source,
            })?;
        debug_assert_eq!(flat.len(), shape[0] * dim);
        Ok(flat.chunks_exact(dim).map(<[f32]>::to_vec).collect())
    }

    /// Runs the network on standardized `[b, 3, h, w]` floats.
    fn forward_data(&self, data: &[f32], shape: [usize; 4]) -> Result<Vec<Vec<f32>>> {
        let [b, _, h, w] = shape;
        match &self.fast {
            Some(fast) => {
                let flat = fast.forward_nchw(data, b, h, w)?;
                let dim = fast.embedding_dim();
                Ok(flat.chunks_exact(dim).map(<[f32]>::to_vec).collect())
            }
            None => self.forward_raw(Tensor::from_data(
                TensorData::new(data.to_vec(), shape),
                &self.device,
            )),
        }
    }

    /// Test-time augmentation: with `on`, each face is embedded together with its mirror image
    /// (in the same batch) and the embedding is the normalized mean of the two unit
    /// embeddings. It costs twice the network's work. Embeddings made with and without it
    /// differ (by about as much as two photos of one moment), so a gallery records it.
    pub fn with_mirror(mut self, on: bool) -> Self {
        self.mirror = on;
        self
    }

    /// Whether faces are embedded with their mirror images ([`Embedder::with_mirror`]).
    pub fn mirror(&self) -> bool {
        self.mirror
    }

    /// Embeds face crops, `batch_size` at a time.
    pub fn embed(&self, faces: &[RgbImage]) -> Result<Vec<Embedding>> {
        if self.mirror {
            return self.embed_mirrored(faces);
        }
        self.embed_plain(faces)
    }

    /// [`Embedder::embed`] with [`Embedder::with_mirror`]: each chunk and its mirror images in
    /// one batch.
    fn embed_mirrored(&self, faces: &[RgbImage]) -> Result<Vec<Embedding>> {
        let mut out = Vec::with_capacity(faces.len());
        for chunk in faces.chunks(self.batch_size.div_ceil(2).max(1)) {
            let mut both = chunk.to_vec();
            both.extend(chunk.iter().map(image::imageops::flip_horizontal));
            let embs = self.embed_plain(&both)?;
            let (plain, mirrored) = embs.split_at(chunk.len());
            out.extend(plain.iter().zip(mirrored).map(|(a, b)| {
                let mean: Vec<f32> = a
                    .normalized
                    .iter()
                    .zip(&b.normalized)
                    .map(|(x, y)| (x + y) / 2.0)
                    .collect();
                Embedding::from_raw(mean)
            }));
        }
        Ok(out)
    }

    fn embed_plain(&self, faces: &[RgbImage]) -> Result<Vec<Embedding>> {
        let mut out = Vec::with_capacity(faces.len());
        for chunk in faces.chunks(self.batch_size) {
            let (data, shape) = self.input_data(chunk)?;
            out.extend(
                self.forward_data(&data, shape)?
                    .into_iter()
                    .map(Embedding::from_raw),
            );
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distances_by_hand() {
        let a = [1.0, 0.0];
        let b = [0.0, 1.0];
        assert!((Distance::L2.between(&a, &b) - 2f32.sqrt()).abs() < 1e-6);
        assert!((Distance::SquaredL2.between(&a, &b) - 2.0).abs() < 1e-6);
        assert!((Distance::Cosine.between(&a, &b) - 1.0).abs() < 1e-6);
        assert!(Distance::L2.between(&a, &a).abs() < 1e-6);
        let c = [-1.0, 0.0];
        assert!((Distance::Cosine.between(&a, &c) - 2.0).abs() < 1e-6);
    }

    #[test]
    fn normalize_by_hand() {
        assert_eq!(l2_normalize(&[3.0, 4.0]), vec![0.6, 0.8]);
        assert_eq!(l2_normalize(&[0.0, 0.0]), vec![0.0, 0.0]);
    }
}
