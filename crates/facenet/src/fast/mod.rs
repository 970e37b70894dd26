//! A fast CPU inference path for Inception-ResNet-v1, compiled from the burn model.
//!
//! The burn model ([`InceptionResnetV1`]) stays the one definition of the architecture and of
//! the weights; [`FastNet::compile`] walks it once and produces a plan that computes the same
//! function with fewer passes over memory:
//!
//! - every BatchNorm is folded into the convolution before it (`w * gamma / sqrt(var + eps)`,
//!   bias `beta - mean * gamma / sqrt(var + eps)`), and the bottleneck BatchNorm into the
//!   bottleneck matrix;
//! - activations stay in one layout, NHWC, end to end, so a 1x1 convolution is a plain matrix
//!   product over the `n * h * w` rows and a kxk one is an im2col (built in bounded chunks)
//!   followed by one;
//! - the parallel 1x1 convolutions that open the branches of a block read the same input and
//!   run as one wider product;
//! - each branch writes its output straight into its channel slot of the concatenation (the
//!   product's destination has a row stride), so no concatenation is ever copied;
//! - the residual sum `x + scale * (W concat + b)` is accumulated by the matrix product itself
//!   into the block's input buffer, followed by one pass for bias and ReLU;
//! - the 3x3 stride-1 convolutions on large maps run as Winograd F(4x4, 3x3), the 1x7 and
//!   7x1 ones as F(2, 7) along their long axis;
//! - a batch is split into groups of up to four images, one group per core (single-threaded
//!   products, no synchronisation); a single image splits each product across the cores, by
//!   rows where the map is large and by output channels where it is small, on a team of
//!   helper threads that spin between a forward pass's convolutions instead of sleeping
//!   (`fast/team.rs`; [`set_spin_window`], `FACENET_SPIN_US` in the fronts), on as many
//!   threads as the passes measure fastest (`fast/adapt.rs`: all of them on free cores, fewer
//!   beside other busy processes);
//! - after a few images the weights move onto 2 MiB pages (`fast/pages.rs`), so that reading
//!   all of them once per image does not wait on page walks.
//!
//! The matrix products run on kernels of our own (`fast/sgemm.rs`), [`F32Kernel::Avx512`] on
//! CPUs with AVX-512F and [`F32Kernel::Avx2`] on those with AVX2 and FMA only: weights packed
//! once at compile time, no packing per product, so that a single image's products split
//! across cores by rows without each core repacking the weights. Elsewhere they use the `gemm`
//! crate (already under burn's CPU backend), which packs per product. The loops here (im2col, pooling,
//! epilogues) are plain Rust because no crate offers these NHWC steps over strided slots.
//!
//! [`Precision::Bf16`] (opt-in, [`FastNet::with_precision`]) runs every product in bf16 instead
//! (`fast/bf16mm.rs`), on Intel AMX tiles or, on CPUs without AMX, AVX-512 BF16 dot products
//! ([`Bf16Kernel`]): weights packed once, im2col rows gathered from the input rounded to bf16
//! once, f32 sums and epilogues. [`Precision::Int8`] (opt-in, calibrated: [`FastNet::with_int8`]) runs
//! most products in integers (`fast/i8mm.rs`, [`Int8Kernel`]: Intel AMX tiles (`fast/amx.rs`),
//! AVX-512 VNNI, AVX-VNNI or AVX2).
//! The same machinery runs MTCNN ([`FastMtcnn`]).

use gemm::Parallelism;

pub use crate::engine::Precision;
use crate::error::{Error, Result};
use crate::model::InceptionResnetV1;
use crate::model::inception_resnet_v1::{BasicConv2d, Block8, Block17, Block35, Mixed6a, Mixed7a};
use burn::nn::PaddingConfig2d;
use burn::nn::conv::Conv2d;
use burn::nn::pool::MaxPool2d;
use burn::tensor::Tensor;

mod adapt;
#[cfg(target_arch = "x86_64")]
mod amx;
mod bf16mm;
mod blocks;
mod buffers;
mod conv;
mod direct;
mod family;
mod i8mm;
mod layers;
mod mtcnn;
mod pages;
mod sgemm;
mod team;
mod winograd;

#[cfg(target_arch = "x86_64")]
pub(crate) use amx::{
    DataType as TileType, available as tiles_available, multiply_adds_per_product,
    peak_loop as tile_peak_loop,
};
pub use bf16mm::Bf16Kernel;
use blocks::*;
use buffers::*;
pub use conv::InputRange;
use conv::*;
pub use i8mm::Int8Kernel;
pub use layers::{LayerShape, LayerTime};
pub use mtcnn::{FastMtcnn, ONET_OUT, PNET_OUT, RNET_OUT};
pub use sgemm::F32Kernel;
pub use team::set_spin_window;

/// Whether [`Precision::Bf16`] can run on this machine: Intel AMX (AMX-TILE, AMX-BF16 and the
/// operating system's permission for the tiles) or AVX-512 BF16 (see [`Bf16Kernel`]).
pub fn bf16_available() -> bool {
    Bf16Kernel::best().is_some()
}

/// im2col is built in chunks of at most this many floats (4 MiB), so that memory stays bounded
/// and each chunk is still hundreds of rows, enough for an efficient matrix product.
const IM2COL_CHUNK_FLOATS: usize = 1 << 20;

/// A convolution is split across threads only if each gets at least this many output rows.
const MIN_ROWS_PER_THREAD: usize = 32;

/// A short product on packed f32 weights is split by output channels when each thread gets at
/// least this many (four panels of [`sgemm::NR`]).
const MIN_COLS_PER_THREAD: usize = 64;

/// A batch is cut into groups of at most this many images, one group per task: the
/// activations of a small group stay in the caches (measured at batch 32 on two cores: groups
/// of 4 ran at 63.7 img/s, groups of 16 at 45.9).
const MAX_GROUP: usize = 4;

/// A batch of `n` images cut into groups for `threads` threads: each group takes its share
/// of the images left (`left / threads`, between `min` and `max`), so the first groups are
/// full and the last ones small (guided self-scheduling; 8 images, groups of 1 to 4: 4, 2, 1,
/// 1). The threads claim them in this order as they come free, so a thread slowed by other
/// work on the machine takes fewer, and the last groups end close together; with equal
/// halves (8 images: 4 and 4) a slowed thread held the whole batch to its pace. Beside a
/// process busy 50 ms of every 100, f32 batches of 8 and 32 ran 1-12 % faster so on two Zen 4
/// cores, and alone the same (README, *Beside other work*).
fn guided_groups(
    n: usize,
    threads: usize,
    (min, max): (usize, usize),
) -> Vec<std::ops::Range<usize>> {
    debug_assert!(threads >= 1 && 1 <= min && min <= max);
    let mut groups = Vec::new();
    let mut start = 0;
    while start < n {
        let left = n - start;
        let size = left.div_ceil(threads).clamp(min, max).min(left);
        groups.push(start..start + size);
        start += size;
    }
    groups
}

/// [`MAX_GROUP`] for f32 on the AVX-512 kernel: each group streams the weights once, and
/// twice the rows per product paid there. Batch 32, `bench embed`, two builds alternated three
/// times: 90.3 / 93.0 / 87.1 img/s with groups of 4, 103.9 / 97.9 / 94.2 with 8 (two cores of
/// an Intel Xeon with AVX-512, no AMX); on two Zen 5 cores groups of 8 read the same as 4
/// (median ratio 1.00).
const MAX_GROUP_AVX512_F32: usize = 8;

/// The convolution (index in `FastNet::convs_mut`) that stays f32 in int8 mode although its
/// input is never negative: the stem's second, Conv2d_2a_3x3 (32 -> 32 channels on the first
/// one's ReLU output), which runs f32 Winograd. With its products in int8 the reference crops'
/// embeddings moved up to 1.9e-2 in cosine distance from the Keras model's, against at most
/// 8.2e-4 with any other 3x3, 1x7 or 7x1 convolution's in int8 and 5.8e-4 with all of them
/// (4.3e-4 with none of them).
const STAYS_F32_IN_INT8: usize = 1;

/// Inception-ResNet-v1 compiled for fast CPU inference (see the module documentation).
#[derive(Debug)]
pub struct FastNet {
    /// Stem convolutions; the max pool sits after the third.
    stem: Vec<Conv>,
    repeat_1: Vec<Residual>,
    mixed_6a: Mixed,
    repeat_2: Vec<Residual>,
    mixed_7a: Mixed,
    repeat_3: Vec<Residual>,
    /// Bottleneck with its BatchNorm folded, as a 1x1 convolution over a 1x1 map.
    bottleneck: Conv,
    threads: usize,
    /// How many of `threads` a single image's pass splits across, chosen by timing the passes
    /// (`fast/adapt.rs`).
    split: adapt::SplitChoice,
    precision: Precision,
    /// The bf16 kernel family, in bf16 mode.
    bf16_kernel: Option<Bf16Kernel>,
    /// The int8 kernel family, in [`Precision::Int8`].
    int8_kernel: Option<Int8Kernel>,
    /// The f32 kernel family (f32 mode).
    f32_kernel: F32Kernel,
    /// Where the weights lie, in every form the plan holds (set by [`FastNet::with_winograd`],
    /// the last step of every packing).
    spans: Vec<(usize, usize)>,
    /// Images run since the weights were packed.
    images: std::sync::atomic::AtomicUsize,
    /// Regions of the weights moved onto 2 MiB pages, and refused (`fast/pages.rs`), once
    /// [`HUGE_PAGES_AFTER`] images have run.
    huge_pages: std::sync::Arc<std::sync::OnceLock<(usize, usize)>>,
}

/// Images after which the weights are moved onto 2 MiB pages (`fast/pages.rs`), on a thread
/// of its own: a command that embeds a face or two does not wait for the move (0.2-0.4 s of
/// copying on two Zen 4 cores), and a longer run gets it after a fraction of a second: after 8
/// single images, or with its first batch of 8 or more (counting passes instead, a run of
/// batches of 32 had it a few seconds in, while its rate was being measured).
const HUGE_PAGES_AFTER: usize = 8;

impl FastNet {
    /// Compiles a network (its weights as they are now; running statistics for BatchNorm).
    pub fn compile(net: &InceptionResnetV1) -> Result<Self> {
        check_pool(&net.maxpool_3a)?;
        check_pool(&net.mixed_6a.branch2)?;
        check_pool(&net.mixed_7a.branch3)?;
        let stem = [
            &net.conv2d_1a,
            &net.conv2d_2a,
            &net.conv2d_2b,
            &net.conv2d_3b,
            &net.conv2d_4a,
            &net.conv2d_4b,
        ]
        .into_iter()
        .map(Conv::basic)
        .collect::<Result<Vec<_>>>()?;
        let m6: &Mixed6a = &net.mixed_6a;
        let mixed_6a = Mixed::new(
            vec![
                (None, std::slice::from_ref(&m6.branch0)),
                (Some(&m6.branch1[0]), &m6.branch1[1..]),
            ],
            Some(stem[5].cout),
        )?;
        let m7: &Mixed7a = &net.mixed_7a;
        let mixed_7a = Mixed::new(
            vec![
                (Some(&m7.branch0[0]), &m7.branch0[1..]),
                (Some(&m7.branch1[0]), &m7.branch1[1..]),
                (Some(&m7.branch2[0]), &m7.branch2[1..]),
            ],
            Some(mixed_6a.out_channels()),
        )?;
        let mut repeat_3 = net
            .repeat_3
            .iter()
            .map(Residual::block8)
            .collect::<Result<Vec<_>>>()?;
        repeat_3.push(Residual::block8(&net.block8)?);
        // Dense (weight stored (in, out)) then BatchNorm: fold into one (in, out) matrix.
        let [din, dout] = net.last_linear.weight.dims();
        let lw = tensor_vec(net.last_linear.weight.val(), "last_linear.weight")?;
        let (s, t) = bn_affine(&net.last_bn)?;
        let w = (0..din * dout).map(|i| lw[i] * s[i % dout]).collect();
        let bottleneck = Conv::dense(din, dout, w, t);
        Ok(Self {
            stem,
            repeat_1: net
                .repeat_1
                .iter()
                .map(Residual::block35)
                .collect::<Result<_>>()?,
            mixed_6a,
            repeat_2: net
                .repeat_2
                .iter()
                .map(Residual::block17)
                .collect::<Result<_>>()?,
            mixed_7a,
            repeat_3,
            bottleneck,
            threads: rayon::current_num_threads().max(1),
            split: adapt::SplitChoice::new(rayon::current_num_threads()),
            precision: Precision::F32,
            bf16_kernel: None,
            int8_kernel: None,
            f32_kernel: F32Kernel::best(),
            spans: Vec::new(),
            images: Default::default(),
            huge_pages: Default::default(),
        }
        .with_kernels(Precision::F32, None)
        .with_winograd(true))
    }

    /// Uses at most `n` threads of rayon's pool (default: the pool's size, i.e. all cores).
    pub fn with_threads(mut self, n: usize) -> Self {
        self.threads = n.max(1);
        self.split = adapt::SplitChoice::new(self.threads);
        self
    }

    /// Every convolution of the plan (fused heads, branch chains, residual projections and
    /// the bottleneck included).
    fn convs_mut(&mut self) -> Vec<&mut Conv> {
        let mut all: Vec<&mut Conv> = self.stem.iter_mut().collect();
        let mut mixed: Vec<&mut Mixed> = vec![&mut self.mixed_6a, &mut self.mixed_7a];
        for r in self
            .repeat_1
            .iter_mut()
            .chain(self.repeat_2.iter_mut())
            .chain(self.repeat_3.iter_mut())
        {
            all.push(&mut r.up);
            mixed.push(&mut r.mixed);
        }
        for m in mixed {
            all.extend(m.head.as_mut());
            for b in &mut m.branches {
                if let Branch::Convs { chain, .. } = b {
                    all.extend(chain.iter_mut());
                }
            }
        }
        all.push(&mut self.bottleneck);
        all
    }

    /// Turns the Winograd path of the 3x3, 1x7 and 7x1 convolutions off (im2col for all), or back on
    /// (f32 and int8 only: in bf16 mode every product runs on the bf16 kernels; in int8 mode
    /// these convolutions keep f32 Winograd, which cuts their multiplies 1.75-4x, where the
    /// int8 family does not do better ([`Int8Kernel::replaces_winograd`])).
    pub fn with_winograd(mut self, on: bool) -> Self {
        let on = on && self.precision != Precision::Bf16;
        let int8_first = self.int8_kernel.is_some_and(Int8Kernel::replaces_winograd);
        for c in self.convs_mut() {
            let packed = c.f32w.as_ref().map(sgemm::Packed::kernel);
            c.wino = winograd::form_for(c.kh, c.kw)
                .filter(|_| on && c.stride == 1)
                .filter(|_| c.i8w.is_none() || !int8_first)
                .map(|f| winograd::Weights::new(f, &c.row_major(), (c.cin, c.cout), packed));
        }
        let mut spans = Vec::new();
        for c in self.convs_mut() {
            c.spans(&mut spans);
        }
        self.spans = spans;
        self.images = Default::default();
        self.huge_pages = Default::default();
        self
    }

    /// How many 2 MiB regions of the weights are on huge pages, and how many the kernel
    /// refused (`None` until the move, which starts after 8 images, is done).
    pub fn huge_pages(&self) -> Option<(usize, usize)> {
        self.huge_pages.get().copied()
    }

    /// How many single-image passes ran on each thread count so far (`fast/adapt.rs` chooses
    /// it as they run), probes included: `(threads, passes)` for the counts that ran any.
    pub fn single_image_passes(&self) -> Vec<(usize, u64)> {
        self.split.passes_by_threads()
    }

    /// Counts a pass of `n` images; once [`HUGE_PAGES_AFTER`] have run, moves the weights onto 2 MiB pages on a
    /// thread of its own (`fast/pages.rs`).
    fn after_pass(&self, n: usize) {
        use std::sync::atomic::Ordering;
        let before = self.images.fetch_add(n, Ordering::Relaxed);
        if before >= HUGE_PAGES_AFTER || before + n < HUGE_PAGES_AFTER {
            return;
        }
        let (spans, done) = (self.spans.clone(), self.huge_pages.clone());
        // Where no thread can be had, the weights stay on small pages: they are read as
        // before, and `huge_pages` stays `None`.
        let _ = std::thread::Builder::new()
            .name("facenet-pages".into())
            .spawn(move || {
                done.get_or_init(|| pages::collapse(&spans));
            });
    }

    /// Chooses the arithmetic: f32 (the default, the parity-tested one) or bf16 products
    /// ([`Precision::Bf16`]) on the family [`Bf16Kernel::resolve`] picks; fails with a clear
    /// error where the CPU provides none.
    pub fn with_precision(self, precision: Precision) -> Result<Self> {
        match precision {
            Precision::F32 => Ok(self.with_kernels(Precision::F32, None).with_winograd(true)),
            Precision::Int8 if self.precision == Precision::Int8 => Ok(self),
            Precision::Int8 => Err(Error::InvalidArgument {
                field: "precision",
                reason: "int8 needs the activation ranges of a calibration run (`facenet \
                         quantize`, or `Embedder::calibrate_int8` and `with_int8`)"
                    .into(),
            }),
            Precision::Bf16 => {
                let kernel =
                    Bf16Kernel::resolve(None).map_err(|reason| Error::InvalidArgument {
                        field: "precision",
                        reason,
                    })?;
                self.with_bf16_kernel(kernel)
            }
        }
    }

    /// bf16 products on this kernel family, which must run here.
    pub fn with_bf16_kernel(self, kernel: Bf16Kernel) -> Result<Self> {
        if !kernel.available() {
            return Err(Error::InvalidArgument {
                field: "precision",
                reason: format!(
                    "bf16 on {} needs {}; this machine does not provide it",
                    kernel.name(),
                    kernel.requirement()
                ),
            });
        }
        Ok(self
            .with_kernels(Precision::Bf16, Some(kernel))
            .with_winograd(true))
    }

    /// f32 products on this kernel family ([`F32Kernel`]), which must run here; the default
    /// is [`F32Kernel::best`].
    pub fn with_f32_kernel(mut self, kernel: F32Kernel) -> Result<Self> {
        if !kernel.available() {
            return Err(Error::InvalidArgument {
                field: "f32 kernel",
                reason: format!(
                    "{} needs {}; this machine does not provide it",
                    kernel.name(),
                    kernel.requirement()
                ),
            });
        }
        self.f32_kernel = kernel;
        let (precision, bf16) = (self.precision, self.bf16_kernel);
        Ok(self.with_kernels(precision, bf16).with_winograd(true))
    }

    /// Records the range of every convolution's input from now on (`on`), or stops recording
    /// and forgets it: the calibration of [`FastNet::with_int8`].
    pub fn observe(&mut self, on: bool) {
        for c in self.convs_mut() {
            c.seen = on.then(Default::default);
        }
    }

    /// Times every convolution of the plan from now on (`on`), or stops timing and forgets
    /// the times: [`FastNet::layer_times`] reads them (`facenet bench embed --layers`).
    pub fn time_layers(&mut self, on: bool) {
        for c in self.convs_mut() {
            c.timer = on.then(Default::default);
        }
    }

    /// What every convolution's timer recorded since [`FastNet::time_layers`], one entry per
    /// convolution of the plan in a fixed order (empty when not timing).
    pub fn layer_times(&mut self) -> Vec<LayerTime> {
        self.convs_mut()
            .iter()
            .filter_map(|c| {
                let shape = LayerShape {
                    kernel: (c.kh, c.kw),
                    stride: c.stride,
                    channels: (c.cin, c.cout),
                };
                c.timer.as_ref().map(|t| t.read(shape))
            })
            .collect()
    }

    /// The input ranges recorded since [`FastNet::observe`], one per convolution of the plan
    /// in a fixed order (empty when not observing).
    pub fn observed(&mut self) -> Vec<InputRange> {
        self.convs_mut()
            .iter()
            .filter_map(|c| c.seen.as_ref())
            .map(|s| *s.lock().unwrap_or_else(|e| e.into_inner()))
            .collect()
    }

    /// int8 products ([`Precision::Int8`]) with activation scales from `ranges` (as
    /// [`FastNet::observed`] returns them): every convolution whose input was never negative
    /// gets 8-bit inputs and 7-bit per-channel weights, all but the stem's first (whose input
    /// is the standardized image), its second (Conv2d_2a_3x3: in int8 it moved embeddings over
    /// 20 times more than any other) and the bottleneck. The products are int8, on the family
    /// [`Int8Kernel::resolve`] picks, except that on the AVX2 family Winograd keeps the 3x3
    /// and 1x7 / 7x1 convolutions where it pays (enough tiles, 1.75-4x fewer multiplies), in
    /// f32 ([`Int8Kernel::replaces_winograd`]). Fails where the CPU lacks AVX2 or the ranges
    /// do not fit the plan.
    pub fn with_int8(self, ranges: &[InputRange]) -> Result<Self> {
        self.with_int8_on(ranges, None)
    }

    /// [`FastNet::with_int8`] on the family asked for (it must run here), else the fastest.
    pub fn with_int8_on(self, ranges: &[InputRange], kernel: Option<Int8Kernel>) -> Result<Self> {
        let kernel = Int8Kernel::resolve(kernel).map_err(|reason| Error::InvalidArgument {
            field: "precision",
            reason,
        })?;
        self.with_int8_family(ranges, kernel)
    }

    /// [`FastNet::with_int8_on`] once the family is known to run here (or, in the tests, to
    /// be emulated).
    fn with_int8_family(self, ranges: &[InputRange], kernel: Int8Kernel) -> Result<Self> {
        let mut net = self.with_kernels(Precision::Int8, None);
        net.int8_kernel = Some(kernel);
        let convs = net.convs_mut();
        if convs.len() != ranges.len() {
            return Err(Error::InvalidArgument {
                field: "int8 calibration",
                reason: format!(
                    "{} activation ranges for a network of {} convolutions",
                    ranges.len(),
                    convs.len()
                ),
            });
        }
        for (i, (c, r)) in convs.into_iter().zip(ranges).enumerate() {
            let k = c.kh * c.kw * c.cin;
            c.i8w = (i != STAYS_F32_IN_INT8 && r.min >= 0.0 && r.max > 0.0 && r.max.is_finite())
                .then(|| i8mm::Packed::new(&c.row_major(), k, c.cout, r.max, kernel));
        }
        Ok(net.with_winograd(true))
    }

    /// How many convolutions run int8 products (0 outside [`Precision::Int8`]).
    pub fn int8_convolutions(&mut self) -> usize {
        self.convs_mut().iter().filter(|c| c.i8w.is_some()).count()
    }

    /// Packs every convolution's weights for `precision` (bf16 on `kernel`; f32 on
    /// [`FastNet::f32_kernel`]; int8 weights kept in int8). The Winograd weights are left for
    /// the caller to rebuild ([`FastNet::with_winograd`]), once the plan is complete.
    fn with_kernels(mut self, precision: Precision, kernel: Option<Bf16Kernel>) -> Self {
        self.precision = precision;
        self.bf16_kernel = kernel;
        if precision != Precision::Int8 {
            self.int8_kernel = None;
        }
        let f32_kernel = self.f32_kernel;
        let f32_packed = precision != Precision::Bf16 && f32_kernel != F32Kernel::Gemm;
        for c in self.convs_mut() {
            let k = c.kh * c.kw * c.cin;
            // Moved, not copied, where the row-major copy is still there.
            let w = if c.w.is_empty() {
                c.row_major().into_owned()
            } else {
                std::mem::take(&mut c.w)
            };
            c.bf16w = kernel.map(|kind| bf16mm::Packed::new(&w, k, c.cout, kind));
            c.f32w = f32_packed.then(|| sgemm::Packed::new(&w, k, c.cout, f32_kernel));
            if precision != Precision::Int8 {
                c.i8w = None;
            }
            // One f32 copy of the weights: the packed one where there is one (it unpacks
            // exactly, for a later change of kernel or precision).
            c.w = if c.f32w.is_some() { Vec::new() } else { w };
        }
        self
    }

    /// The f32 kernel family (used in f32 mode).
    pub fn f32_kernel(&self) -> F32Kernel {
        self.f32_kernel
    }

    /// The bf16 kernel family in use (`None` in f32).
    pub fn bf16_kernel(&self) -> Option<Bf16Kernel> {
        self.bf16_kernel
    }

    /// The int8 kernel family in use (`None` outside int8).
    pub fn int8_kernel(&self) -> Option<Int8Kernel> {
        self.int8_kernel
    }

    /// The arithmetic in use.
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// Size of the embedding.
    pub fn embedding_dim(&self) -> usize {
        self.bottleneck.cout
    }

    /// Multiply-adds of one image of `h`x`w` pixels through this plan (the fused heads count
    /// as the convolutions they replace; the count equals the burn model's).
    pub fn multiply_adds(&self, h: usize, w: usize) -> u64 {
        let mut total = 0;
        let mut hw = (h, w);
        for (i, c) in self.stem.iter().enumerate() {
            total += c.macs(hw.0, hw.1);
            hw = c.out_hw(hw.0, hw.1);
            if i == 2 {
                hw = pool_hw(hw.0, hw.1);
            }
        }
        let res = |blocks: &[Residual], hw: (usize, usize)| -> u64 {
            blocks
                .iter()
                .map(|b| b.mixed.macs(hw.0, hw.1) + b.up.macs(hw.0, hw.1))
                .sum()
        };
        total += res(&self.repeat_1, hw);
        total += self.mixed_6a.macs(hw.0, hw.1);
        hw = pool_hw(hw.0, hw.1);
        total += res(&self.repeat_2, hw);
        total += self.mixed_7a.macs(hw.0, hw.1);
        hw = pool_hw(hw.0, hw.1);
        total += res(&self.repeat_3, hw);
        total + (self.bottleneck.cin * self.bottleneck.cout) as u64
    }

    /// Runs the network on standardized images in NCHW order (`[n, 3, h, w]`, as the burn
    /// model takes them) and returns the raw embeddings, `n * embedding_dim` floats.
    pub fn forward_nchw(&self, input: &[f32], n: usize, h: usize, w: usize) -> Result<Vec<f32>> {
        if n == 0 || input.len() != n * 3 * h * w {
            return Err(Error::InvalidArgument {
                field: "input",
                reason: format!("expected {n} x 3 x {h} x {w} floats, got {}", input.len()),
            });
        }
        let min = crate::model::InceptionResnetV1Config::min_input_size();
        if h < min || w < min {
            return Err(Error::InvalidArgument {
                field: "input",
                reason: format!("{h}x{w} is smaller than the network's minimum {min}x{min}"),
            });
        }
        let dim = self.embedding_dim();
        self.after_pass(n);
        if self.threads == 1 {
            return Ok(self.forward_group(input, n, h, w, Par::Single));
        }
        if n == 1 {
            // Split across as many threads as last measured fastest (`fast/adapt.rs`).
            let threads = self.split.next();
            let start = std::time::Instant::now();
            let out = self.forward_with(input, h, w, threads);
            self.split
                .record(threads, start.elapsed(), self.multiply_adds(h, w));
            return Ok(out);
        }
        // Groups of images, each run single-threaded: no synchronisation inside the network,
        // and every matrix product still has a group's worth of rows ([`guided_groups`]).
        let max_group = if self.precision == Precision::F32 && self.f32_kernel == F32Kernel::Avx512
        {
            MAX_GROUP_AVX512_F32
        } else {
            MAX_GROUP
        };
        // bf16 keeps whole groups: its products run in blocks of 32 rows, which a small
        // group's late maps (9 or 64 rows per image) leave partly empty (batch 8 on two Zen 4
        // cores: groups of 4, 2, 2 ran 3-11 % slower than 4 and 4 on a quiet machine).
        let min_group = if self.precision == Precision::Bf16 {
            max_group
        } else {
            1
        };
        let groups = guided_groups(n, self.threads, (min_group, max_group));
        let image = 3 * h * w;
        let mut out = vec![0.0f32; n * dim];
        // Each of `threads` tasks claims the next group as it comes free, largest first.
        let next = std::sync::atomic::AtomicUsize::new(0);
        let done = std::sync::Mutex::new(Vec::with_capacity(groups.len()));
        rayon::scope(|scope| {
            for _ in 0..self.threads.min(groups.len()) {
                scope.spawn(|_| {
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(g) = groups.get(i) else { break };
                        let emb = self.forward_group(
                            &input[g.start * image..g.end * image],
                            g.len(),
                            h,
                            w,
                            Par::Single,
                        );
                        done.lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push((g.start, emb));
                    }
                });
            }
        });
        for (start, emb) in done.into_inner().unwrap_or_else(|e| e.into_inner()) {
            out[start * dim..start * dim + emb.len()].copy_from_slice(&emb);
        }
        Ok(out)
    }

    /// One image on `threads` threads.
    fn forward_with(&self, input: &[f32], h: usize, w: usize, threads: usize) -> Vec<f32> {
        let par = if threads > 1 {
            Par::Split(threads)
        } else {
            Par::Single
        };
        self.forward_group(input, 1, h, w, par)
    }

    fn forward_group(&self, input: &[f32], n: usize, h: usize, w: usize, par: Par) -> Vec<f32> {
        with_workspace(|ws| self.forward_group_in(input, n, h, w, par, ws))
    }

    fn forward_group_in(
        &self,
        input: &[f32],
        n: usize,
        h: usize,
        w: usize,
        par: Par,
        ws: &mut Workspace,
    ) -> Vec<f32> {
        // NCHW -> NHWC.
        let mut x = ws.take(n, h, w, 3);
        for img in 0..n {
            for c in 0..3 {
                let plane = &input[(img * 3 + c) * h * w..][..h * w];
                for (p, v) in plane.iter().enumerate() {
                    x.data[(img * h * w + p) * 3 + c] = *v;
                }
            }
        }
        for (i, conv) in self.stem.iter().enumerate() {
            let (oh, ow) = conv.out_hw(x.h, x.w);
            let mut y = ws.take(n, oh, ow, conv.cout);
            conv.run(&x, 0, &mut y, 0, Epilogue::BiasRelu, &mut ws.im2col, par);
            ws.give(std::mem::replace(&mut x, y));
            if i == 2 {
                let (ph, pw) = pool_hw(x.h, x.w);
                let mut y = ws.take(n, ph, pw, x.c);
                max_pool_3x3_s2(&x, &mut y, 0);
                ws.give(std::mem::replace(&mut x, y));
            }
        }
        for b in &self.repeat_1 {
            b.forward(&mut x, ws, par);
        }
        let y = self.mixed_6a.forward(&x, ws, par);
        ws.give(std::mem::replace(&mut x, y));
        for b in &self.repeat_2 {
            b.forward(&mut x, ws, par);
        }
        let y = self.mixed_7a.forward(&x, ws, par);
        ws.give(std::mem::replace(&mut x, y));
        for b in &self.repeat_3 {
            b.forward(&mut x, ws, par);
        }
        // Global average pool -> [n, 1, 1, c].
        let mut pooled = ws.take(n, 1, 1, x.c);
        pooled.data.fill(0.0);
        let hw = x.h * x.w;
        for img in 0..n {
            let dst = &mut pooled.data[img * x.c..(img + 1) * x.c];
            for p in 0..hw {
                let src = &x.data[(img * hw + p) * x.c..][..x.c];
                for (d, s) in dst.iter_mut().zip(src) {
                    *d += s;
                }
            }
            let inv = 1.0 / hw as f32;
            dst.iter_mut().for_each(|d| *d *= inv);
        }
        let mut emb = ws.take(n, 1, 1, self.bottleneck.cout);
        self.bottleneck
            .run(&pooled, 0, &mut emb, 0, Epilogue::Bias, &mut ws.im2col, par);
        // Every map goes back to the workspace, the embeddings' too (copied out): a buffer
        // kept out of it would be allocated again, and a smaller one grown and zeroed in its
        // place, on the next pass.
        let out = emb.data.clone();
        for b in [x, pooled, emb] {
            ws.give(b);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::InceptionResnetV1Config;
    use burn::tensor::{Device, Distribution};

    /// Random network with non-trivial BatchNorm statistics, so folding is exercised.
    fn random_net(cfg: &InceptionResnetV1Config, device: &Device) -> InceptionResnetV1 {
        use burn::module::{Module, ModuleMapper, Param};
        struct Perturb;
        impl ModuleMapper for Perturb {
            fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
                param.map(|t| {
                    let noise = t.random_like(Distribution::Uniform(0.5, 1.5));
                    t.clone() * noise.clone() + noise * 0.01
                })
            }
        }
        cfg.init(device).map(&mut Perturb)
    }

    fn compare(batch: usize, threads: usize) {
        let device = Device::flex();
        let cfg = InceptionResnetV1Config::small();
        let net = random_net(&cfg, &device);
        let (h, w) = (96, 104);
        let x = Tensor::<4>::random([batch, 3, h, w], Distribution::Normal(0.0, 1.0), &device);
        let data: Vec<f32> = x.clone().into_data().try_into_vec().unwrap();
        let want: Vec<f32> = net.forward(x).into_data().try_into_vec().unwrap();
        let fast = FastNet::compile(&net).unwrap().with_threads(threads);
        let got = fast.forward_nchw(&data, batch, h, w).unwrap();
        assert_eq!(got.len(), want.len());
        let (err, scale) = max_diff(&want, &got);
        assert!(err <= 1e-4 * scale, "max abs diff {err} (scale {scale})");
    }

    /// The largest absolute difference between `reference` and `other`, and the scale it is
    /// held to: the largest magnitude in `reference`, at least 1.
    fn max_diff(reference: &[f32], other: &[f32]) -> (f32, f32) {
        let scale = reference.iter().fold(1f32, |m, v| m.max(v.abs()));
        let err = reference
            .iter()
            .zip(other)
            .fold(0f32, |m, (p, q)| m.max((p - q).abs()));
        (err, scale)
    }

    #[test]
    fn matches_burn_model_batch_of_one_on_all_threads() {
        compare(1, 2);
    }

    #[test]
    fn matches_burn_model_batch_split_across_threads() {
        compare(5, 2);
    }

    /// `n` deterministic 160x160 RGB images in NCHW order, values in [-1, 1).
    fn ramp_images(n: usize) -> Vec<f32> {
        (0..n * 3 * 160 * 160)
            .map(|i| ((i * 7919) % 255) as f32 / 128.0 - 1.0)
            .collect()
    }

    /// A pass gives every map it took back to the thread's workspace, the last ones too, so
    /// the passes after the first allocate none.
    #[test]
    fn later_passes_take_every_map_from_the_workspace() {
        let net = random_net(&InceptionResnetV1Config::small(), &Device::flex());
        let fast = FastNet::compile(&net).unwrap().with_threads(1);
        let x = ramp_images(2);
        let allocated = || {
            let ws = WORKSPACE.take();
            let n = ws.allocated;
            WORKSPACE.set(ws);
            n
        };
        let before = allocated();
        fast.forward_nchw(&x, 2, 160, 160).unwrap();
        let first = allocated();
        assert!(first > before, "the first pass took no new map");
        for pass in 2..=4 {
            fast.forward_nchw(&x, 2, 160, 160).unwrap();
            assert_eq!(allocated(), first, "pass {pass} allocated maps");
        }
    }

    #[test]
    fn a_single_image_agrees_on_one_thread_and_on_two() {
        // The thread count of a single image's pass is chosen at run time (`adapt.rs`). A split
        // cuts rows, channels or tiles, never a sum, but whether Winograd pays on a map depends
        // on its tiles per thread, so a few convolutions change algorithm (as between a batch's
        // groups): the results agree to rounding, as Winograd and im2col do.
        let net = random_net(&InceptionResnetV1Config::small(), &Device::flex());
        let x = ramp_images(1);
        let fast = FastNet::compile(&net).unwrap();
        let one = fast.forward_with(&x, 160, 160, 1);
        let two = fast.forward_with(&x, 160, 160, 2);
        assert_eq!(one.len(), fast.embedding_dim());
        let (err, scale) = max_diff(&one, &two);
        assert!(err <= 1e-5 * scale, "max abs diff {err} (scale {scale})");
    }

    #[test]
    fn winograd_and_im2col_agree() {
        let net = random_net(&InceptionResnetV1Config::small(), &Device::flex());
        // 160 x 160: Block17's maps are 8 x 8, so that a batch of two has enough tiles for its
        // 1x7 and 7x1 forms.
        let x = ramp_images(2);
        let mut on = FastNet::compile(&net).unwrap().with_threads(1);
        assert!(
            on.stem.iter().any(|c| c.wino.is_some()),
            "Winograd F(4x4, 3x3) not in use"
        );
        for (kh, kw) in [(1, 7), (7, 1)] {
            assert!(
                on.convs_mut()
                    .iter()
                    .any(|c| (c.kh, c.kw) == (kh, kw) && c.wino.is_some()),
                "Winograd F(2, 7) not in use on the {kh}x{kw} convolutions"
            );
        }
        let a = on.forward_nchw(&x, 2, 160, 160).unwrap();
        let mut off = on.with_winograd(false);
        assert!(off.convs_mut().iter().all(|c| c.wino.is_none()));
        let b = off.forward_nchw(&x, 2, 160, 160).unwrap();
        let (err, scale) = max_diff(&b, &a);
        assert!(err <= 1e-5 * scale, "max abs diff {err} (scale {scale})");
    }

    /// A batch's groups cover its images once, in order, each within the bounds; the first
    /// are full and the sizes never grow, so the last groups are the small ones.
    #[test]
    fn guided_groups_cover_the_batch_largest_first() {
        assert_eq!(guided_groups(8, 2, (1, 4)), [0..4, 4..6, 6..7, 7..8]);
        assert_eq!(
            guided_groups(32, 2, (1, 8)),
            [0..8, 8..16, 16..24, 24..28, 28..30, 30..31, 31..32]
        );
        // bf16's whole groups, and a remainder smaller than the minimum.
        assert_eq!(guided_groups(8, 2, (4, 4)), [0..4, 4..8]);
        assert_eq!(guided_groups(6, 2, (4, 4)), [0..4, 4..6]);
        for n in 1..70 {
            for threads in 1..5 {
                for (min, max) in [(1, 4), (1, 8), (2, 4), (4, 4)] {
                    let g = guided_groups(n, threads, (min, max));
                    assert_eq!(g.first().map(|r| r.start), Some(0));
                    assert_eq!(g.last().map(|r| r.end), Some(n));
                    assert!(g.windows(2).all(|w| w[0].end == w[1].start));
                    assert!(g.windows(2).all(|w| w[0].len() >= w[1].len()), "{g:?}");
                    assert!(g.iter().all(|r| r.len() <= max && !r.is_empty()));
                    assert!(g[..g.len() - 1].iter().all(|r| r.len() >= min));
                }
            }
        }
    }

    /// The layer timers see every convolution of the plan once per image group, with the
    /// network's multiply-adds in all, the Winograd path where it runs, and the same outputs
    /// as without them; turned off, they report nothing.
    #[test]
    fn layer_timers_count_every_convolution() {
        let net = random_net(&InceptionResnetV1Config::small(), &Device::flex());
        let x = ramp_images(2);
        let mut fast = FastNet::compile(&net).unwrap().with_threads(2);
        let plain = fast.forward_nchw(&x, 2, 160, 160).unwrap();
        assert!(fast.layer_times().is_empty(), "timers before they were set");
        fast.time_layers(true);
        let convs = fast.convs_mut().len();
        // A batch of two (one image group per thread), then a single image split across both.
        let timed = fast.forward_nchw(&x, 2, 160, 160).unwrap();
        fast.forward_nchw(&x[..3 * 160 * 160], 1, 160, 160).unwrap();
        assert_eq!(timed, plain, "the timers changed the outputs");
        let times = fast.layer_times();
        assert_eq!(times.len(), convs);
        assert!(times.iter().all(|t| t.calls == 3), "{times:?}");
        let macs: u64 = times.iter().map(|t| t.multiply_adds).sum();
        assert_eq!(macs, 3 * fast.multiply_adds(160, 160));
        assert!(times.iter().all(|t| t.seconds > 0.0));
        // The stem's first convolution reads the image; a 3x3 stride-1 one runs Winograd at a
        // batch of two on 160x160 (the image groups run one image per thread).
        let first = times
            .iter()
            .find(|t| t.shape.channels.0 == 3)
            .expect("the stem's first convolution");
        assert_eq!((first.map, first.shape.stride), ((160, 160), 2));
        assert!(first.label().starts_with("3x3/2 3->"), "{}", first.label());
        let wino = times
            .iter()
            .find(|t| t.winograd_calls > 0)
            .expect("no convolution ran Winograd");
        assert!(wino.label().ends_with(", Winograd"), "{}", wino.label());
        let table = crate::bench::report::layer_table(1, 3, &times);
        assert!(table.len() > 2 && table.len() < convs + 2, "{table:?}");
        let shares: f64 = table[1..table.len() - 1]
            .iter()
            .map(|l| {
                l[1..]
                    .trim_start()
                    .split(' ')
                    .next()
                    .unwrap()
                    .parse::<f64>()
                    .unwrap()
            })
            .sum();
        assert!((shares - 100.0).abs() < 0.5, "shares add up to {shares}");
        fast.time_layers(false);
        assert!(fast.layer_times().is_empty());
    }

    /// The int8 calibration of `net` on `n` 160x160 `images`: each convolution's input range.
    fn int8_ranges(net: &InceptionResnetV1, images: &[f32], n: usize) -> Vec<InputRange> {
        let mut observer = FastNet::compile(net).unwrap();
        observer.observe(true);
        observer.forward_nchw(images, n, 160, 160).unwrap();
        observer.observed()
    }

    /// The int8 network on AMX's family, its tiles emulated (`fast/amx.rs`), against the AVX2
    /// family. With Winograd off every int8 convolution runs the same exact integer sums on
    /// both, so the outputs are equal bit for bit: for a batch (one group per thread) and for
    /// a single image split across the threads (the blocks of 32 rows, the column ranges).
    #[test]
    #[cfg(target_arch = "x86_64")]
    fn int8_on_emulated_amx_tiles_equals_avx2_bit_for_bit() {
        assert!(
            Int8Kernel::Avx2.available(),
            "this machine lacks AVX2: run this test where it has it"
        );
        let net = random_net(&InceptionResnetV1Config::small(), &Device::flex());
        let x = ramp_images(3);
        let ranges = int8_ranges(&net, &x, 3);
        let int8 = |kernel| {
            FastNet::compile(&net)
                .unwrap()
                .with_threads(2)
                .with_int8_family(&ranges, kernel)
                .unwrap()
                .with_winograd(false)
        };
        let mut avx2 = int8(Int8Kernel::Avx2);
        let mut amx_net = int8(Int8Kernel::Amx);
        assert!(avx2.int8_convolutions() > 10);
        assert_eq!(amx_net.int8_convolutions(), avx2.int8_convolutions());
        for n in [3, 1] {
            let input = &x[..n * 3 * 160 * 160];
            let want = avx2.forward_nchw(input, n, 160, 160).unwrap();
            let got = amx::emulating(|| amx_net.forward_nchw(input, n, 160, 160).unwrap());
            assert_eq!(got.len(), want.len());
            let differ = got
                .iter()
                .zip(&want)
                .filter(|(g, w)| g.to_bits() != w.to_bits())
                .count();
            assert_eq!(
                differ,
                0,
                "batch {n}: {differ} of {} outputs differ",
                want.len()
            );
        }
    }

    /// The input of the patch tests for a convolution reading `cin` channels: two images of
    /// 9 x 11 (odd sizes: padding on every side, strides off the edge), values from `lo` to
    /// `lo + 10`, 8 channels more than the convolution reads, which reads from the returned
    /// channel offset (3) on.
    fn odd_input(cin: usize, lo: f32) -> (Buf, usize) {
        let (n, h, w, c) = (2, 9, 11, cin + 8);
        let data = (0..n * h * w * c)
            .map(|i| ((i * 7919) % 1001) as f32 / 100.0 + lo)
            .collect();
        (Buf { data, n, h, w, c }, 3)
    }

    /// The call of the patch tests: `conv` on `buf` from channel `xoff`, its input converted
    /// (`q`) or not.
    fn patch_job<'a>(
        conv: &Conv,
        buf: &'a Buf,
        xoff: usize,
        q: Option<Converted<'a>>,
    ) -> RowJob<'a> {
        RowJob {
            x: buf,
            xoff,
            oc: conv.cout,
            ooff: 0,
            epilogue: Epilogue::Bias,
            q,
        }
    }

    /// With bf16 weights every convolution's patches, gathered from its input rounded once
    /// (`round_input`, on one thread and split in two, which must agree), equal its f32 patches
    /// rounded to bf16 (zeros past `k`).
    #[test]
    #[ignore = "needs AVX-512 BF16: `cargo test --release -- --ignored avx512_bf16` where the CPU has it"]
    #[cfg(target_arch = "x86_64")]
    fn avx512_bf16_patches_from_the_rounded_input_equal_the_f32_patches_rounded() {
        assert!(
            Bf16Kernel::Avx512.available(),
            "this machine lacks AVX-512 BF16: run this test where it has it"
        );
        let net = random_net(&InceptionResnetV1Config::small(), &Device::flex());
        let mut bf16 = FastNet::compile(&net)
            .unwrap()
            .with_bf16_kernel(Bf16Kernel::Avx512)
            .unwrap();
        let mut checked = 0;
        for conv in bf16.convs_mut() {
            if conv.pointwise() || conv.bf16w.is_none() {
                continue;
            }
            let (buf, xoff) = odd_input(conv.cin, -5.0);
            let (n, h, wd) = (buf.n, buf.h, buf.w);
            let (oh, ow) = conv.out_hw(h, wd);
            let rows = n * oh * ow;
            let k = conv.kh * conv.kw * conv.cin;
            let kp = bf16mm::padded_k(k);
            let mut f32_rows = vec![0f32; rows * k];
            conv.im2col(&buf, xoff, 0, rows, (oh, ow), &mut f32_rows);
            let mut want = vec![0u16; rows.next_multiple_of(32) * kp];
            for (d, a) in want.chunks_exact_mut(kp).zip(f32_rows.chunks_exact(k)) {
                for (d, a) in d.iter_mut().zip(a) {
                    *d = bf16mm::bf16(*a);
                }
            }
            let mut map = vec![0u16; n * h * wd * conv.cin];
            let mut split = vec![0u16; map.len()];
            // SAFETY: AVX-512 BF16 (asserted above) implies AVX-512F and BW; the maps hold
            // every pixel's `cin` values.
            unsafe {
                conv.round_input(&buf, xoff, &mut map, 1);
                conv.round_input(&buf, xoff, &mut split, 2);
            }
            let what = format!("{}x{} {}->{}", conv.kh, conv.kw, conv.cin, conv.cout);
            assert!(map == split, "{what}: the input rounded split differs");
            let job = patch_job(conv, &buf, xoff, Some(Converted::Bf16(&map[..])));
            let mut got = vec![0u16; want.len()];
            conv.in_patches(&job, 0, rows, &mut Vec::new(), |r0, m, p| {
                let Patches::Bf16(b) = p else {
                    panic!("bf16 weights gathered other than bf16 patches")
                };
                got[r0 * kp..(r0 + m) * kp].copy_from_slice(&b[..m * kp]);
            });
            assert!(got == want, "{what}: patches from the rounded input differ");
            checked += 1;
        }
        assert!(
            checked >= 5,
            "only {checked} bf16 convolutions with patches"
        );
    }

    /// With int8 weights the patches are gathered from the input quantized once
    /// (`quantize_input`, on one thread and split in two, which must agree). For every int8
    /// convolution, its rows (the patches, or a pointwise convolution's input rows quantized
    /// directly) built by `in_patches` and by `quantize_rows` equal its f32 rows quantized as
    /// [`i8mm::gemm`] quantizes them, byte for byte (zeros past `k`), and the product on them
    /// equals `i8mm::gemm` on the f32 rows bit for bit.
    #[test]
    #[cfg(target_arch = "x86_64")]
    fn quantized_patches_equal_the_f32_patches_quantized() {
        assert!(
            Int8Kernel::Avx2.available(),
            "this machine lacks AVX2: run this test where it has it"
        );
        let net = random_net(&InceptionResnetV1Config::small(), &Device::flex());
        let x = ramp_images(1);
        let ranges = int8_ranges(&net, &x, 1);
        let mut int8 = FastNet::compile(&net)
            .unwrap()
            .with_int8_family(&ranges, Int8Kernel::best().expect("AVX2 is here"))
            .unwrap()
            .with_winograd(false);
        let (mut patches, mut pointwise) = (0, 0);
        for conv in int8.convs_mut() {
            let Some(w) = conv.i8w.as_ref() else { continue };
            // Values from below zero (clamped) to past the activation range.
            let (buf, xoff) = odd_input(conv.cin, -1.0);
            let (n, h, wd, c) = (buf.n, buf.h, buf.w, buf.c);
            let (oh, ow) = conv.out_hw(h, wd);
            let rows = n * oh * ow;
            let (k, kp) = (conv.kh * conv.kw * conv.cin, w.kp());
            let mut f32_rows = vec![0f32; rows * k];
            if conv.pointwise() {
                for (r, row) in f32_rows.chunks_exact_mut(k).enumerate() {
                    row.copy_from_slice(&buf.data[r * c + xoff..][..k]);
                }
                pointwise += 1;
            } else {
                conv.im2col(&buf, xoff, 0, rows, (oh, ow), &mut f32_rows);
                patches += 1;
            }
            let mut want = vec![0u8; rows.next_multiple_of(32) * kp];
            for (q, a) in want.chunks_exact_mut(kp).zip(f32_rows.chunks_exact(k)) {
                // SAFETY: AVX2 (asserted above); equal lengths.
                unsafe { w.quantize_run(&mut q[..k], a) };
            }
            let what = format!("{}x{} {}->{}", conv.kh, conv.kw, conv.cin, conv.cout);
            // The input quantized once (as `Conv::run` does for patches), on one thread and
            // split in two.
            let mut map = vec![0u8; n * h * wd * conv.cin];
            let mut split = vec![0u8; map.len()];
            // SAFETY: AVX2 (asserted above); the maps hold every pixel's `cin` bytes.
            unsafe {
                conv.quantize_input(&buf, xoff, w, &mut map, 1);
                conv.quantize_input(&buf, xoff, w, &mut split, 2);
            }
            assert!(map == split, "{what}: the input quantized split differs");
            // As `Conv::run` builds it: the quantized input only where there are patches.
            let q = (!conv.pointwise()).then_some(Converted::U8(&map[..]));
            let job = patch_job(conv, &buf, xoff, q);
            let mut got = vec![0u8; want.len()];
            // SAFETY: AVX2 (asserted above); `got` holds the rows rounded up to 32.
            unsafe { conv.quantize_rows(&job, rows, (oh, ow), &mut got, w) };
            assert!(got == want, "{what}: rows quantized at once differ");
            if !conv.pointwise() {
                let mut chunked = vec![0u8; want.len()];
                conv.in_patches(&job, 0, rows, &mut Vec::new(), |r0, m, p| {
                    let Patches::U8(q) = p else {
                        panic!("int8 weights gathered other than quantized patches")
                    };
                    chunked[r0 * kp..(r0 + m) * kp].copy_from_slice(&q[..m * kp]);
                });
                assert!(
                    chunked == want,
                    "{what}: patches from the quantized input differ"
                );
            }
            let n_out = conv.cout;
            let product = |quantized: bool| {
                let mut c = vec![0f32; rows * n_out];
                let out = sgemm::Out {
                    ptr: c.as_mut_ptr(),
                    ldc: n_out,
                    accumulate: false,
                    beta: 1.0,
                };
                // SAFETY: the family runs here; `f32_rows` holds rows x k, `got` the rows
                // rounded up to 32 of kp; `c` rows x n_out.
                unsafe {
                    if quantized {
                        i8mm::gemm_quantized(rows, n_out, &got, w, 0, out);
                    } else {
                        i8mm::gemm(rows, n_out, f32_rows.as_ptr(), k, w, 0, out);
                    }
                }
                c
            };
            let (a, b) = (product(false), product(true));
            assert!(
                a.iter().zip(&b).all(|(p, q)| p.to_bits() == q.to_bits()),
                "{what}: the product on quantized rows differs"
            );
        }
        assert!(
            patches >= 5 && pointwise >= 5,
            "only {patches} int8 convolutions with patches and {pointwise} pointwise ones"
        );
    }

    /// After [`HUGE_PAGES_AFTER`] images (single ones, or one batch) the weights move onto
    /// huge pages on a thread of its own, and the outputs stay the same bit for bit.
    #[test]
    fn weights_move_to_huge_pages_and_outputs_stay() {
        let net = random_net(&InceptionResnetV1Config::small(), &Device::flex());
        let x = ramp_images(1);
        let fast = FastNet::compile(&net).unwrap().with_threads(1);
        let first = fast.forward_nchw(&x, 1, 160, 160).unwrap();
        for _ in 1..HUGE_PAGES_AFTER {
            assert_eq!(
                fast.huge_pages(),
                None,
                "moved before {HUGE_PAGES_AFTER} images"
            );
            fast.forward_nchw(&x, 1, 160, 160).unwrap();
        }
        let start = std::time::Instant::now();
        let (collapsed, refused) = loop {
            if let Some(done) = fast.huge_pages() {
                break done;
            }
            assert!(
                start.elapsed().as_secs() < 30,
                "the move did not finish in 30 s"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        };
        assert!(
            collapsed + refused > 0,
            "no region of the weights was asked for"
        );
        assert_eq!(fast.forward_nchw(&x, 1, 160, 160).unwrap(), first);
        // A new packing starts the count again; a batch of 8 counts as 8.
        let fast = fast.with_winograd(false).with_threads(2);
        assert_eq!(fast.huge_pages(), None);
        fast.forward_nchw(&ramp_images(8), 8, 160, 160).unwrap();
        let start = std::time::Instant::now();
        while fast.huge_pages().is_none() {
            assert!(start.elapsed().as_secs() < 30, "no move after a batch of 8");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    /// Where the weights are packed for the AVX2 kernel only the packed copy is kept, and a
    /// change of kernel and back unpacks it without loss: the same outputs, bit for bit.
    #[test]
    fn packed_weights_are_the_only_copy_and_unpack_exactly() {
        if !F32Kernel::Avx2.available() {
            eprintln!("skipped: needs AVX2 and FMA (the packed f32 weights)");
            return;
        }
        let net = random_net(&InceptionResnetV1Config::small(), &Device::flex());
        let x: Vec<f32> = (0..3 * 96 * 96)
            .map(|i| ((i * 7919) % 255) as f32 / 128.0 - 1.0)
            .collect();
        let fast = FastNet::compile(&net)
            .unwrap()
            .with_f32_kernel(F32Kernel::Avx2)
            .unwrap();
        let a = fast.forward_nchw(&x, 1, 96, 96).unwrap();
        let mut fast = fast;
        let convs = fast.convs_mut();
        assert!(convs.iter().all(|c| c.f32w.is_some() && c.w.is_empty()));
        let gemm = fast.with_f32_kernel(F32Kernel::Gemm).unwrap();
        let b = gemm.forward_nchw(&x, 1, 96, 96).unwrap();
        let (err, scale) = max_diff(&a, &b);
        assert!(err <= 1e-5 * scale, "gemm against avx2: max abs diff {err}");
        let back = gemm.with_f32_kernel(F32Kernel::Avx2).unwrap();
        assert_eq!(back.forward_nchw(&x, 1, 96, 96).unwrap(), a);
    }

    #[test]
    fn counts_the_same_multiply_adds_as_the_model() {
        let cfg = InceptionResnetV1Config::keras_128();
        let net = cfg.init(&Device::flex());
        let fast = FastNet::compile(&net).unwrap();
        assert_eq!(fast.multiply_adds(160, 160), net.multiply_adds(160));
    }

    #[test]
    fn rejects_wrong_input_length_and_tiny_images() {
        let net = InceptionResnetV1Config::small().init(&Device::flex());
        let fast = FastNet::compile(&net).unwrap();
        assert!(fast.forward_nchw(&[0.0; 10], 1, 96, 96).is_err());
        assert!(
            fast.forward_nchw(&vec![0.0; 3 * 40 * 40], 1, 40, 40)
                .is_err()
        );
    }
}
