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
//! - the 3x3 stride-1 convolutions on large maps run as Winograd F(2x2, 3x3);
//! - a batch is split into groups of up to four images, one group per core (single-threaded
//!   products, no synchronisation); a single image splits each product across the cores, by
//!   rows where the map is large and by output channels where it is small.
//!
//! The matrix products use the `gemm` crate (already under burn's CPU backend), which picks its
//! AVX-512 / AVX2 / SSE kernels by runtime feature detection. The loops here (im2col, pooling,
//! epilogues) are plain Rust because no crate offers these NHWC steps over strided slots.
//!
//! [`Precision::Bf16`] (opt-in, [`FastNet::with_precision`]) runs every product on Intel AMX
//! tiles instead (`fast/amx.rs`): weights packed once into tile layout, im2col rows rounded to bf16
//! as they are gathered, f32 sums and epilogues. The same machinery runs MTCNN ([`FastMtcnn`]).

use gemm::Parallelism;

pub use crate::engine::Precision;
use crate::error::{Error, Result};
use crate::model::InceptionResnetV1;
use crate::model::inception_resnet_v1::{BasicConv2d, Block8, Block17, Block35, Mixed6a, Mixed7a};
use burn::nn::PaddingConfig2d;
use burn::nn::conv::Conv2d;
use burn::nn::pool::MaxPool2d;
use burn::tensor::Tensor;

mod amx;
mod mtcnn;
pub use mtcnn::{FastMtcnn, ONET_OUT, PNET_OUT, RNET_OUT};

/// Whether [`Precision::Bf16`] can run on this machine: Intel AMX-TILE and AMX-BF16, and the
/// kernel's permission to use the tiles (checked once per process).
pub fn bf16_available() -> bool {
    amx::available()
}

/// im2col is built in chunks of at most this many floats (4 MiB), so that memory stays bounded
/// and each chunk is still hundreds of rows, enough for an efficient matrix product.
const IM2COL_CHUNK_FLOATS: usize = 1 << 20;

/// A convolution is split across threads only if each gets at least this many output rows.
const MIN_ROWS_PER_THREAD: usize = 32;

/// A batch is cut into groups of at most this many images, one group per task: the
/// activations of a small group stay in the caches (measured at batch 32 on two cores: groups
/// of 4 ran at 63.7 img/s, groups of 16 at 45.9).
const MAX_GROUP: usize = 4;

/// How a forward pass uses the threads.
#[derive(Debug, Clone, Copy)]
enum Par {
    /// Everything on the calling thread.
    Single,
    /// Each convolution split across this many threads (by rows or by output channels).
    Split(usize),
}

/// The fixed inputs of one convolution call, shared by the threads that split its rows.
#[derive(Clone, Copy)]
struct RowJob<'a> {
    x: &'a Buf,
    xoff: usize,
    oc: usize,
    ooff: usize,
    epilogue: Epilogue,
}

/// The output buffer's base pointer, shared by threads that write disjoint parts of it.
#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
// SAFETY: only used for writes to disjoint regions, each by one thread, inside a scope that
// outlives the buffer's borrow.
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

/// An activation map in NHWC layout: `data[((img * h + y) * w + x) * c + channel]`.
#[derive(Debug, Default)]
struct Buf {
    data: Vec<f32>,
    n: usize,
    h: usize,
    w: usize,
    c: usize,
}

impl Buf {
    fn rows(&self) -> usize {
        self.n * self.h * self.w
    }
}

/// Reuses buffers within one forward pass.
#[derive(Default)]
struct Workspace {
    free: Vec<Vec<f32>>,
    /// One im2col scratch per thread that splits a convolution.
    im2col: Vec<Vec<f32>>,
}

impl Workspace {
    fn take(&mut self, n: usize, h: usize, w: usize, c: usize) -> Buf {
        let len = n * h * w * c;
        // Prefer the smallest free buffer that is large enough.
        let pick = self
            .free
            .iter()
            .enumerate()
            .filter(|(_, v)| v.capacity() >= len)
            .min_by_key(|(_, v)| v.capacity())
            .map(|(i, _)| i);
        let mut data = match pick {
            Some(i) => self.free.swap_remove(i),
            None => self.free.pop().unwrap_or_default(),
        };
        // Every consumer overwrites its buffer before reading it, so stale values are kept
        // rather than zeroed (only growth writes new memory).
        data.truncate(len);
        data.resize(len, 0.0);
        Buf { data, n, h, w, c }
    }

    fn give(&mut self, buf: Buf) {
        self.free.push(buf.data);
    }
}

thread_local! {
    /// Buffers kept between forward passes on each thread, so that activation maps are not
    /// allocated (page faults, zeroing) again for every image group (page faults and zeroing
    /// were ~6 % of a bf16 batch-32 profile before). A few tens of MiB per thread that runs
    /// the network.
    static WORKSPACE: std::cell::Cell<Workspace> = std::cell::Cell::new(Workspace::default());
}

/// Runs `f` with this thread's [`Workspace`]; a nested call (none is expected) gets an empty
/// one rather than a conflict.
fn with_workspace<T>(f: impl FnOnce(&mut Workspace) -> T) -> T {
    let mut ws = WORKSPACE.take();
    let out = f(&mut ws);
    WORKSPACE.set(ws);
    out
}

/// One chunk of im2col rows: f32, or already rounded to bf16 for AMX (rows of
/// [`amx::padded_k`] values, the row count rounded up to the kernel's 32).
#[derive(Clone, Copy)]
enum Patches<'a> {
    F32(&'a [f32]),
    Bf16(&'a [u16]),
}

thread_local! {
    /// bf16 im2col chunks (AMX mode), kept per thread.
    static BF16_PATCHES: std::cell::Cell<Vec<u16>> = const { std::cell::Cell::new(Vec::new()) };
}

/// What happens to a convolution's product before it is stored.
#[derive(Debug, Clone, Copy)]
enum Epilogue {
    /// `max(p + b, 0)`: a folded conv-BN-ReLU.
    BiasRelu,
    /// `p + b`.
    Bias,
    /// `dst + scale * (p + b)`, then ReLU if asked: the residual sum.
    Residual { scale: f32, relu: bool },
    /// `p + b`, then PReLU with the convolution's per-channel slopes ([`Conv::prelu`]).
    BiasPrelu,
}

/// A convolution with its BatchNorm folded in, weights as a `[kh * kw * cin, cout]` matrix
/// whose rows are ordered (dy, dx, input channel), as im2col lays out a patch.
#[derive(Debug, Clone)]
struct Conv {
    kh: usize,
    kw: usize,
    stride: usize,
    /// top, left, bottom, right.
    pad: [usize; 4],
    cin: usize,
    cout: usize,
    w: Vec<f32>,
    b: Vec<f32>,
    /// Winograd F(2x2, 3x3) form of `w` for 3x3 stride-1 convolutions (see [`winograd`]).
    wino: Option<Vec<f32>>,
    /// PReLU slopes per output channel, for [`Epilogue::BiasPrelu`] (empty otherwise).
    prelu: Vec<f32>,
    /// `w` packed for AMX bf16 products ([`Precision::Bf16`]); `None` runs f32 products.
    amx: Option<amx::Packed>,
}

fn tensor_vec<const D: usize>(t: Tensor<D>, name: &str) -> Result<Vec<f32>> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .map_err(|source| Error::Data {
            what: format!("tensor `{name}`"),
            source,
        })
}

impl Conv {
    /// Reads a burn convolution (OIHW weight), with an optional per-output-channel affine map
    /// `(scale, shift)` applied after it (a folded BatchNorm).
    fn from_burn(conv: &Conv2d, affine: Option<(Vec<f32>, Vec<f32>)>) -> Result<Self> {
        let [cout, cin, kh, kw] = conv.weight.dims();
        if conv.groups != 1 || conv.dilation != [1, 1] || conv.stride[0] != conv.stride[1] {
            return Err(Error::Tensor {
                name: "conv".into(),
                reason: "grouped, dilated or anisotropic-stride convolutions are not supported"
                    .into(),
            });
        }
        let stride = conv.stride[0];
        let pad = match conv.padding {
            PaddingConfig2d::Valid => [0; 4],
            PaddingConfig2d::Same if stride == 1 => {
                let (t, l) = ((kh - 1) / 2, (kw - 1) / 2);
                [t, l, kh - 1 - t, kw - 1 - l]
            }
            PaddingConfig2d::Explicit(t, l, b, r) => [t, l, b, r],
            PaddingConfig2d::Same => {
                return Err(Error::Tensor {
                    name: "conv".into(),
                    reason: "`same` padding with stride > 1 is not supported".into(),
                });
            }
        };
        let oihw = tensor_vec(conv.weight.val(), "conv.weight")?;
        let mut b = match &conv.bias {
            Some(bias) => tensor_vec(bias.val(), "conv.bias")?,
            None => vec![0.0; cout],
        };
        let mut scale = vec![1.0f32; cout];
        if let Some((s, t)) = affine {
            for o in 0..cout {
                b[o] = b[o] * s[o] + t[o];
                scale[o] = s[o];
            }
        }
        let mut w = vec![0.0f32; kh * kw * cin * cout];
        for o in 0..cout {
            for i in 0..cin {
                for y in 0..kh {
                    for x in 0..kw {
                        let src = ((o * cin + i) * kh + y) * kw + x;
                        let row = (y * kw + x) * cin + i;
                        w[row * cout + o] = oihw[src] * scale[o];
                    }
                }
            }
        }
        Ok(Self {
            kh,
            kw,
            stride,
            pad,
            cin,
            cout,
            w,
            b,
            // Set by `FastNet::with_winograd`: MTCNN's few-channel convolutions go without.
            wino: None,
            prelu: Vec::new(),
            amx: None,
        })
    }

    /// A dense layer `(cin, cout)` (weights row-major `(in, out)`) as a 1x1 convolution.
    fn dense(cin: usize, cout: usize, w: Vec<f32>, b: Vec<f32>) -> Self {
        debug_assert!(w.len() == cin * cout && b.len() == cout);
        Self {
            kh: 1,
            kw: 1,
            stride: 1,
            pad: [0; 4],
            cin,
            cout,
            w,
            b,
            wino: None,
            prelu: Vec::new(),
            amx: None,
        }
    }

    /// conv -> BatchNorm (running statistics) folded into one convolution.
    fn basic(layer: &BasicConv2d) -> Result<Self> {
        let (s, t) = bn_affine(&layer.bn)?;
        Self::from_burn(&layer.conv, Some((s, t)))
    }

    /// Concatenates the outputs of convolutions that share their input and geometry.
    fn fuse(parts: &[&Conv]) -> Self {
        let first = parts[0];
        let cout: usize = parts.iter().map(|c| c.cout).sum();
        let k = first.kh * first.kw * first.cin;
        let mut w = vec![0.0f32; k * cout];
        let mut b = Vec::with_capacity(cout);
        let mut col = 0;
        for p in parts {
            debug_assert_eq!(
                (p.kh, p.kw, p.stride, p.pad, p.cin),
                (first.kh, first.kw, first.stride, first.pad, first.cin)
            );
            for r in 0..k {
                w[r * cout + col..r * cout + col + p.cout]
                    .copy_from_slice(&p.w[r * p.cout..(r + 1) * p.cout]);
            }
            b.extend_from_slice(&p.b);
            col += p.cout;
        }
        debug_assert!(first.wino.is_none(), "only 1x1 convolutions are fused");
        debug_assert!(
            parts
                .iter()
                .all(|p| p.prelu.is_empty() == first.prelu.is_empty())
        );
        Self {
            cout,
            w,
            b,
            prelu: parts.iter().flat_map(|p| p.prelu.iter().copied()).collect(),
            amx: None,
            ..first.clone()
        }
    }

    fn out_hw(&self, h: usize, w: usize) -> (usize, usize) {
        let [t, l, b, r] = self.pad;
        (
            (h + t + b - self.kh) / self.stride + 1,
            (w + l + r - self.kw) / self.stride + 1,
        )
    }

    fn pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.stride == 1 && self.pad == [0; 4]
    }

    fn macs(&self, h: usize, w: usize) -> u64 {
        let (oh, ow) = self.out_hw(h, w);
        (oh * ow * self.kh * self.kw * self.cin * self.cout) as u64
    }

    /// Computes this convolution of channels `xoff..xoff + cin` of `x` into channels
    /// `ooff..ooff + cout` of `out` (already shaped to the output size).
    ///
    /// With [`Par::Split`], tall products (many output rows) are split by rows, each thread
    /// building its own im2col; short ones (a batch of one in the late blocks) by output
    /// channels, so that no thread packs the whole weight matrix for a few rows.
    #[allow(clippy::too_many_arguments)]
    fn run(
        &self,
        x: &Buf,
        xoff: usize,
        out: &mut Buf,
        ooff: usize,
        epilogue: Epilogue,
        scratch: &mut Vec<Vec<f32>>,
        par: Par,
    ) {
        let (oh, ow) = self.out_hw(x.h, x.w);
        assert!(
            out.n == x.n && out.h == oh && out.w == ow && ooff + self.cout <= out.c,
            "fast path: output buffer does not fit the convolution"
        );
        assert!(
            xoff + self.cin <= x.c,
            "fast path: input channels out of range"
        );
        let rows = out.rows();
        let oc = out.c;
        let threads = match par {
            Par::Split(t) => t,
            Par::Single => 1,
        };
        if scratch.len() < threads {
            scratch.resize_with(threads, Vec::new);
        }
        let job = RowJob {
            x,
            xoff,
            oc,
            ooff,
            epilogue,
        };
        let dst = SendPtr(out.data.as_mut_ptr());
        let tiles = out.n * oh.div_ceil(2) * ow.div_ceil(2);
        // Winograd pays off once every thread has a full chunk of tiles; below that, its
        // transforms and short products cost more than im2col saves.
        let wino = tiles >= threads * winograd::TILES
            && matches!(epilogue, Epilogue::BiasRelu | Epilogue::Bias);
        if let (Some(u), true) = (&self.wino, wino) {
            let relu = matches!(epilogue, Epilogue::BiasRelu);
            let geo = winograd::Geometry::new(x, xoff, self.pad, (oh, ow), oc, ooff);
            // SAFETY: `dst` is `out.data`, shaped (asserted above) as `geo` describes.
            unsafe {
                winograd::conv(
                    &geo, u, &self.b, self.cin, self.cout, relu, dst, scratch, threads,
                )
            };
            return;
        }
        // With f32 products each thread packs the whole weight matrix, so rows are split only
        // when they outnumber the weights' columns; AMX weights are packed once, and a row
        // split then avoids rounding the same rows on every thread.
        let by_rows =
            rows >= threads * MIN_ROWS_PER_THREAD && (self.amx.is_some() || rows >= 2 * self.cout);
        let by_cols = self.cout >= threads * 16;
        if threads == 1 || !(by_rows || by_cols) {
            // SAFETY: `dst` is `out.data`, which holds `rows * oc` floats (asserted above).
            unsafe { self.run_rows(&job, dst, 0, rows, 0..self.cout, &mut scratch[0]) };
        } else if by_rows {
            // Whole 32-row tiles per thread on AMX.
            let per = match self.amx {
                Some(_) => rows.div_ceil(threads).next_multiple_of(32),
                None => rows.div_ceil(threads),
            };
            rayon::scope(|s| {
                for (i, scr) in scratch.iter_mut().enumerate().take(threads) {
                    let (r0, job) = (i * per, &job);
                    if r0 >= rows {
                        break;
                    }
                    let m = per.min(rows - r0);
                    // SAFETY: the threads write disjoint row ranges of `out.data`.
                    s.spawn(move |_| unsafe { self.run_rows(job, dst, r0, m, 0..self.cout, scr) });
                }
            });
        } else {
            // By columns: im2col once (if any), products and epilogues split by channels.
            let cols = self.cout.div_ceil(threads).next_multiple_of(16);
            let ranges: Vec<_> = (0..self.cout)
                .step_by(cols)
                .map(|c0| c0..(c0 + cols).min(self.cout))
                .collect();
            let each = |r0: usize, m: usize, lhs: Option<Patches<'_>>| {
                rayon::scope(|s| {
                    for range in &ranges {
                        let (job, range) = (&job, range.clone());
                        // SAFETY: the threads write disjoint column ranges of `out.data`.
                        s.spawn(move |_| unsafe { self.gemm_block(job, dst, r0, m, range, lhs) });
                    }
                });
            };
            if self.pointwise() {
                each(0, rows, None);
            } else {
                self.in_patches(x, xoff, 0, rows, &mut scratch[0], |r0, m, p| {
                    each(r0, m, Some(p))
                });
            }
        }
    }

    /// Output rows `r0..r0 + m`, channels `cols` (relative to this convolution), on this
    /// thread.
    ///
    /// # Safety
    /// `dst` points to the output buffer (`rows * job.oc` floats) and no other thread touches
    /// these rows and channels meanwhile.
    unsafe fn run_rows(
        &self,
        job: &RowJob<'_>,
        dst: SendPtr,
        r0: usize,
        m: usize,
        cols: std::ops::Range<usize>,
        scratch: &mut Vec<f32>,
    ) {
        if self.pointwise() {
            // SAFETY: forwarded from the caller.
            unsafe { self.gemm_block(job, dst, r0, m, cols, None) };
            return;
        }
        self.in_patches(job.x, job.xoff, r0, m, scratch, |r, c, p| {
            // SAFETY: forwarded from the caller.
            unsafe { self.gemm_block(job, dst, r, c, cols.clone(), Some(p)) }
        });
    }

    /// Builds the im2col patches of output rows `r0..r0 + m` in bounded chunks and hands each
    /// chunk (first row, row count, patches) to `f`. With AMX weights the patches are rounded
    /// to bf16 as they are gathered (no f32 copy is written).
    fn in_patches(
        &self,
        x: &Buf,
        xoff: usize,
        r0: usize,
        m: usize,
        scratch: &mut Vec<f32>,
        mut f: impl FnMut(usize, usize, Patches<'_>),
    ) {
        let (oh, ow) = self.out_hw(x.h, x.w);
        let k = self.kh * self.kw * self.cin;
        let chunk = (IM2COL_CHUNK_FLOATS / k).clamp(1, m.max(1));
        if self.amx.is_some() {
            let kp = amx::padded_k(k);
            let chunk = chunk.next_multiple_of(32);
            let mut buf = BF16_PATCHES.take();
            if buf.len() < chunk * kp {
                buf.resize(chunk * kp, 0);
            }
            let mut done = 0;
            while done < m {
                let c = chunk.min(m - done);
                // SAFETY: AMX weights exist only where `amx::available()` held, which implies
                // AVX-512; `buf` holds `chunk >= c` rows of `kp`.
                unsafe { self.im2col_bf16(x, xoff, r0 + done, c, (oh, ow), &mut buf, kp) };
                f(
                    r0 + done,
                    c,
                    Patches::Bf16(&buf[..c.next_multiple_of(32) * kp]),
                );
                done += c;
            }
            BF16_PATCHES.set(buf);
            return;
        }
        if scratch.len() < chunk * k {
            scratch.resize(chunk * k, 0.0);
        }
        let mut done = 0;
        while done < m {
            let c = chunk.min(m - done);
            let patches = &mut scratch[..c * k];
            self.im2col(x, xoff, r0 + done, c, (oh, ow), patches);
            f(r0 + done, c, Patches::F32(patches));
            done += c;
        }
    }

    /// [`Conv::im2col`] into bf16 rows of `kp` values (zeros past `k`).
    ///
    /// # Safety
    /// The CPU has AVX-512F and AVX-512BW; `dst` holds `m` rows of `kp`.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f,avx512bw")]
    unsafe fn im2col_bf16(
        &self,
        x: &Buf,
        xoff: usize,
        r0: usize,
        m: usize,
        oh_ow: (usize, usize),
        dst: &mut [u16],
        kp: usize,
    ) {
        // This function's AVX-512F/BW (the caller's guarantee) is what `round_into` needs.
        self.gather(x, xoff, r0, m, oh_ow, (dst, kp, 0), |d, s| {
            amx::round_into(d, s)
        });
    }

    /// One matrix product and its epilogue: output rows `r0..r0 + m`, channels `cols`. The
    /// left operand is `patches` (im2col rows `r0..r0 + m`) or, for a pointwise convolution,
    /// the input itself.
    ///
    /// # Safety
    /// As [`Conv::run_rows`].
    unsafe fn gemm_block(
        &self,
        job: &RowJob<'_>,
        dst: SendPtr,
        r0: usize,
        m: usize,
        cols: std::ops::Range<usize>,
        patches: Option<Patches<'_>>,
    ) {
        let RowJob {
            x,
            xoff,
            oc,
            ooff,
            epilogue,
        } = *job;
        let (read_dst, beta) = match epilogue {
            Epilogue::Residual { scale, .. } => (true, scale),
            _ => (false, 1.0),
        };
        let (lhs, lhs_rs, k) = match patches {
            Some(Patches::F32(p)) => {
                let k = self.kh * self.kw * self.cin;
                debug_assert!(p.len() >= m * k);
                (p.as_ptr(), k, k)
            }
            Some(Patches::Bf16(p)) => {
                let packed = self
                    .amx
                    .as_ref()
                    .expect("bf16 patches come with AMX weights");
                // SAFETY: `p` holds the rows `r0..r0 + m` rounded up to 32, of `padded_k`
                // values (built by `in_patches`); the output as below.
                unsafe {
                    let d = dst.0.add(r0 * oc + ooff + cols.start);
                    let out = amx::Out {
                        ptr: d,
                        ldd: oc,
                        accumulate: read_dst,
                        beta,
                    };
                    amx::gemm_bf16(m, cols.end - cols.start, p, packed, cols.start, out);
                    self.epilogue(d, oc, m, cols, epilogue);
                }
                return;
            }
            // SAFETY: pointwise: input row r is output row r, and `r * x.c + xoff + cin`
            // stays inside `x.data` for r < rows (checked in `run`).
            None => (
                unsafe { x.data.as_ptr().add(r0 * x.c + xoff) },
                x.c,
                self.cin,
            ),
        };
        let n = cols.end - cols.start;
        // SAFETY: the output rows `r0..r0 + m` (stride `oc`) and channels
        // `ooff + cols` lie inside the output buffer; `lhs` holds `m` rows of `k` floats at
        // stride `lhs_rs`; the weights are `k x cout`, read at columns `cols`. The output
        // does not overlap the inputs.
        unsafe {
            let d = dst.0.add(r0 * oc + ooff + cols.start);
            if let Some(packed) = &self.amx {
                // Column ranges start at multiples of 16 (see `run`); AMX was checked
                // available when the weights were packed.
                let out = amx::Out {
                    ptr: d,
                    ldd: oc,
                    accumulate: read_dst,
                    beta,
                };
                amx::gemm(m, n, lhs, lhs_rs, packed, cols.start, out);
            } else {
                gemm::gemm(
                    m,
                    n,
                    k,
                    d,
                    1,
                    oc as isize,
                    read_dst,
                    lhs,
                    1,
                    lhs_rs as isize,
                    self.w.as_ptr().add(cols.start),
                    1,
                    self.cout as isize,
                    1.0,
                    beta,
                    false,
                    false,
                    false,
                    Parallelism::None,
                );
            }
            self.epilogue(d, oc, m, cols, epilogue);
        }
    }

    /// Bias and activation over output rows `0..m` (stride `oc`) from `d`, channels `cols`.
    ///
    /// # Safety
    /// `d` points to `m` rows of at least `cols.len()` floats at stride `oc` that no other
    /// thread touches meanwhile.
    unsafe fn epilogue(
        &self,
        d: *mut f32,
        oc: usize,
        m: usize,
        cols: std::ops::Range<usize>,
        epilogue: Epilogue,
    ) {
        let n = cols.end - cols.start;
        // SAFETY: forwarded from the caller.
        unsafe {
            let b = &self.b[cols.clone()];
            for r in 0..m {
                let row = std::slice::from_raw_parts_mut(d.add(r * oc), n);
                match epilogue {
                    Epilogue::BiasRelu => {
                        for (v, b) in row.iter_mut().zip(b) {
                            *v = (*v + b).max(0.0);
                        }
                    }
                    Epilogue::Bias => {
                        for (v, b) in row.iter_mut().zip(b) {
                            *v += b;
                        }
                    }
                    Epilogue::Residual { scale, relu } => {
                        for (v, b) in row.iter_mut().zip(b) {
                            *v += b * scale;
                            if relu {
                                *v = v.max(0.0);
                            }
                        }
                    }
                    Epilogue::BiasPrelu => {
                        // Branch-free (max + slope * min), so that the loop vectorizes; the
                        // same value as `if t > 0 { t } else { a * t }`.
                        let a = &self.prelu[cols.clone()];
                        for ((v, b), a) in row.iter_mut().zip(b).zip(a) {
                            let t = *v + b;
                            *v = t.max(0.0) + a * t.min(0.0);
                        }
                    }
                }
            }
        }
    }

    /// im2col: output rows `r0..r0 + m` of this convolution's patch matrix (each row a
    /// `kh x kw x cin` patch, ordered as the weight rows) gathered from channels
    /// `xoff..xoff + cin` of `x` into `dst` (`m` rows of `k` floats), zero outside the image.
    fn im2col(
        &self,
        x: &Buf,
        xoff: usize,
        r0: usize,
        m: usize,
        oh_ow: (usize, usize),
        dst: &mut [f32],
    ) {
        let k = self.kh * self.kw * self.cin;
        self.gather(x, xoff, r0, m, oh_ow, (dst, k, 0.0), copy_run);
    }

    /// The one im2col gather behind [`Conv::im2col`] (f32 rows) and [`Conv::im2col_bf16`]
    /// (bf16 rows padded to the AMX kernel's depth): `sink` is `(rows, row length, zero)`,
    /// row values past `k` are zero, `put` stores a run of input values into a run of a row.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn gather<T: Copy>(
        &self,
        x: &Buf,
        xoff: usize,
        r0: usize,
        m: usize,
        oh_ow: (usize, usize),
        sink: (&mut [T], usize, T),
        put: impl Fn(&mut [T], &[f32]),
    ) {
        let (dst, row_len, zero) = sink;
        let (oh, ow) = oh_ow;
        let (cin, k) = (self.cin, self.kh * self.kw * self.cin);
        let contiguous = xoff == 0 && cin == x.c;
        for (i, row) in dst.chunks_exact_mut(row_len).take(m).enumerate() {
            let r = r0 + i;
            let img = r / (oh * ow);
            let oy = (r / ow) % oh;
            let ox = r % ow;
            row[k..].fill(zero);
            for dy in 0..self.kh {
                let iy = (oy * self.stride + dy) as isize - self.pad[0] as isize;
                let ix0 = (ox * self.stride) as isize - self.pad[1] as isize;
                // Whole input row inside the image and the channels contiguous: the kw
                // segments of this kernel row are one contiguous run of the input.
                if contiguous
                    && iy >= 0
                    && (iy as usize) < x.h
                    && ix0 >= 0
                    && ix0 as usize + self.kw <= x.w
                {
                    let src = ((img * x.h + iy as usize) * x.w + ix0 as usize) * x.c;
                    let run = self.kw * cin;
                    put(&mut row[dy * run..(dy + 1) * run], &x.data[src..src + run]);
                    continue;
                }
                for dx in 0..self.kw {
                    let ix = (ox * self.stride + dx) as isize - self.pad[1] as isize;
                    let seg = &mut row[(dy * self.kw + dx) * cin..][..cin];
                    if iy < 0 || ix < 0 || iy >= x.h as isize || ix >= x.w as isize {
                        seg.fill(zero);
                    } else {
                        let src = ((img * x.h + iy as usize) * x.w + ix as usize) * x.c + xoff;
                        put(seg, &x.data[src..src + cin]);
                    }
                }
            }
        }
    }
}

/// `dst.copy_from_slice(src)`, without a `memmove` call for the short runs of a few-channel
/// im2col (3 to 48 floats per kernel row in MTCNN, where the calls took longer than the copies).
#[inline]
fn copy_run(dst: &mut [f32], src: &[f32]) {
    const LANES: usize = 16;
    if dst.len() >= 8 * LANES {
        dst.copy_from_slice(src);
        return;
    }
    let mut d = dst.chunks_exact_mut(LANES);
    let mut s = src.chunks_exact(LANES);
    for (d, s) in (&mut d).zip(&mut s) {
        let v: [f32; LANES] = s.try_into().expect("chunk of LANES");
        d.copy_from_slice(&v);
    }
    for (d, s) in d.into_remainder().iter_mut().zip(s.remainder()) {
        *d = *s;
    }
}

/// Winograd F(2x2, 3x3) convolution (Lavin and Gray, "Fast Algorithms for Convolutional
/// Neural Networks", <https://arxiv.org/abs/1509.09308>): each 2x2 output tile costs 16
/// multiplies per input-output channel pair instead of 36, a 2.25x cut, computed as 16 matrix
/// products over the tiles. F(2x2, 3x3) keeps the rounding error at the level of direct
/// convolution (its transforms only add, subtract and halve).
mod winograd {
    use super::{Buf, SendPtr};
    use gemm::Parallelism;

    /// `out = a + sign * b`, element-wise.
    #[inline]
    fn lin(out: &mut [f32], a: &[f32], b: &[f32], sign: f32) {
        for ((o, a), b) in out.iter_mut().zip(a).zip(b) {
            *o = a + sign * b;
        }
    }

    /// Tiles per chunk: the 16 transformed input and output blocks of a chunk stay in cache.
    pub(super) const TILES: usize = 256;

    /// `U = G g G^T` for every (input, output) channel pair, stored `[16][cin][cout]`, from
    /// weights stored `[(dy * 3 + dx) * cin + ci][cout]`.
    pub(super) fn weights(w: &[f32], cin: usize, cout: usize) -> Vec<f32> {
        const G: [[f64; 3]; 4] = [
            [1.0, 0.0, 0.0],
            [0.5, 0.5, 0.5],
            [0.5, -0.5, 0.5],
            [0.0, 0.0, 1.0],
        ];
        let mut u = vec![0.0f32; 16 * cin * cout];
        for ci in 0..cin {
            for co in 0..cout {
                let g = |dy: usize, dx: usize| w[((dy * 3 + dx) * cin + ci) * cout + co] as f64;
                // t = G g (4x3), then U = t G^T (4x4).
                let mut t = [[0.0f64; 3]; 4];
                for (a, row) in t.iter_mut().enumerate() {
                    for (dx, v) in row.iter_mut().enumerate() {
                        *v = (0..3).map(|dy| G[a][dy] * g(dy, dx)).sum();
                    }
                }
                for a in 0..4 {
                    for b in 0..4 {
                        let v: f64 = (0..3).map(|dx| t[a][dx] * G[b][dx]).sum();
                        u[((a * 4 + b) * cin + ci) * cout + co] = v as f32;
                    }
                }
            }
        }
        u
    }

    /// Where the convolution reads and writes.
    pub(super) struct Geometry<'a> {
        x: &'a Buf,
        xoff: usize,
        pad_top: usize,
        pad_left: usize,
        oh: usize,
        ow: usize,
        oc: usize,
        ooff: usize,
    }

    impl<'a> Geometry<'a> {
        pub(super) fn new(
            x: &'a Buf,
            xoff: usize,
            pad: [usize; 4],
            (oh, ow): (usize, usize),
            oc: usize,
            ooff: usize,
        ) -> Self {
            Self {
                x,
                xoff,
                pad_top: pad[0],
                pad_left: pad[1],
                oh,
                ow,
                oc,
                ooff,
            }
        }
    }

    /// The whole convolution, tile chunks spread over `threads`.
    ///
    /// # Safety
    /// `dst` points to an output buffer of `x.n * oh * ow * oc` floats that nothing else
    /// touches meanwhile.
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn conv(
        geo: &Geometry<'_>,
        u: &[f32],
        bias: &[f32],
        cin: usize,
        cout: usize,
        relu: bool,
        dst: SendPtr,
        scratch: &mut [Vec<f32>],
        threads: usize,
    ) {
        let (th, tw) = (geo.oh.div_ceil(2), geo.ow.div_ceil(2));
        let tiles = geo.x.n * th * tw;
        let chunks = tiles.div_ceil(TILES);
        let threads = threads.min(chunks).max(1);
        let need = 16 * TILES * (cin + cout);
        if threads == 1 {
            let s = &mut scratch[0];
            if s.len() < need {
                s.resize(need, 0.0);
            }
            for c in 0..chunks {
                // SAFETY: forwarded from the caller.
                unsafe { chunk(geo, u, bias, cin, cout, relu, dst, c * TILES, tiles, s) };
            }
            return;
        }
        rayon::scope(|sc| {
            for (i, s) in scratch.iter_mut().enumerate().take(threads) {
                sc.spawn(move |_| {
                    if s.len() < need {
                        s.resize(need, 0.0);
                    }
                    for c in (i..chunks).step_by(threads) {
                        // SAFETY: chunks are disjoint sets of tiles, so the threads write
                        // disjoint output pixels.
                        unsafe { chunk(geo, u, bias, cin, cout, relu, dst, c * TILES, tiles, s) };
                    }
                });
            }
        });
    }

    /// Tiles `t0..min(t0 + TILES, tiles)`: input transform, 16 products, output transform.
    #[allow(clippy::too_many_arguments)]
    unsafe fn chunk(
        geo: &Geometry<'_>,
        u: &[f32],
        bias: &[f32],
        cin: usize,
        cout: usize,
        relu: bool,
        dst: SendPtr,
        t0: usize,
        tiles: usize,
        scratch: &mut [f32],
    ) {
        let x = geo.x;
        let (th, tw) = (geo.oh.div_ceil(2), geo.ow.div_ceil(2));
        let tc = TILES.min(tiles - t0);
        let (v, m) = scratch.split_at_mut(16 * TILES * cin);
        let zeros = vec![0.0f32; cin];
        // Input transform V = B^T d B, B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1], as
        // whole-channel-vector operations (they vectorize; per-channel scalars did not).
        let mut r = vec![0.0f32; 16 * cin];
        for j in 0..tc {
            let t = t0 + j;
            let (img, ty, tx) = (t / (th * tw), (t / tw) % th, t % tw);
            let mut d: [&[f32]; 16] = [&zeros[..]; 16];
            for i in 0..4 {
                let iy = (2 * ty + i) as isize - geo.pad_top as isize;
                if iy < 0 || iy >= x.h as isize {
                    continue;
                }
                for k in 0..4 {
                    let ix = (2 * tx + k) as isize - geo.pad_left as isize;
                    if ix < 0 || ix >= x.w as isize {
                        continue;
                    }
                    let o = ((img * x.h + iy as usize) * x.w + ix as usize) * x.c + geo.xoff;
                    d[i * 4 + k] = &x.data[o..o + cin];
                }
            }
            // Rows: r = B^T d.
            for k in 0..4 {
                let (d0, d1, d2, d3) = (d[k], d[4 + k], d[8 + k], d[12 + k]);
                let rows = &mut r[..];
                let (r0, rest) = rows[k * cin..].split_at_mut(cin);
                let _ = rest;
                lin(r0, d0, d2, -1.0);
                lin(&mut rows[(4 + k) * cin..(5 + k) * cin], d1, d2, 1.0);
                lin(&mut rows[(8 + k) * cin..(9 + k) * cin], d2, d1, -1.0);
                lin(&mut rows[(12 + k) * cin..(13 + k) * cin], d1, d3, -1.0);
            }
            // Columns: V = r B.
            for a in 0..4 {
                let q = |i: usize| &r[(a * 4 + i) * cin..(a * 4 + i + 1) * cin];
                let at = |b: usize| ((a * 4 + b) * TILES + j) * cin;
                lin(&mut v[at(0)..at(0) + cin], q(0), q(2), -1.0);
                lin(&mut v[at(1)..at(1) + cin], q(1), q(2), 1.0);
                lin(&mut v[at(2)..at(2) + cin], q(2), q(1), -1.0);
                lin(&mut v[at(3)..at(3) + cin], q(1), q(3), -1.0);
            }
        }
        // 16 products: M_xi [tc, cout] = V_xi [tc, cin] x U_xi [cin, cout].
        for xi in 0..16 {
            // SAFETY: V_xi holds tc rows of cin floats, U_xi cin rows of cout, M_xi tc rows of
            // cout; all inside their buffers.
            unsafe {
                gemm::gemm(
                    tc,
                    cout,
                    cin,
                    m.as_mut_ptr().add(xi * TILES * cout),
                    1,
                    cout as isize,
                    false,
                    v.as_ptr().add(xi * TILES * cin),
                    1,
                    cin as isize,
                    u.as_ptr().add(xi * cin * cout),
                    1,
                    cout as isize,
                    1.0,
                    1.0,
                    false,
                    false,
                    false,
                    Parallelism::None,
                );
            }
        }
        // Output transform Y = A^T M A, A^T = [1 1 1 0; 0 1 -1 -1], plus bias and ReLU, again
        // on whole channel vectors.
        let mut sa = vec![0.0f32; 8 * cout];
        let mut y = vec![0.0f32; cout];
        for j in 0..tc {
            let t = t0 + j;
            let (img, ty, tx) = (t / (th * tw), (t / tw) % th, t % tw);
            let g = |xi: usize| &m[(xi * TILES + j) * cout..(xi * TILES + j + 1) * cout];
            // s = A^T M (2x4 vectors).
            for b in 0..4 {
                let (s0, s1) = sa.split_at_mut(4 * cout);
                let s0 = &mut s0[b * cout..(b + 1) * cout];
                let s1 = &mut s1[b * cout..(b + 1) * cout];
                for ((((o0, o1), m0), m1), (m2, m3)) in s0
                    .iter_mut()
                    .zip(s1.iter_mut())
                    .zip(g(b))
                    .zip(g(4 + b))
                    .zip(g(8 + b).iter().zip(g(12 + b)))
                {
                    *o0 = m0 + m1 + m2;
                    *o1 = m1 - m2 - m3;
                }
            }
            for a in 0..2 {
                let oy = 2 * ty + a;
                if oy >= geo.oh {
                    continue;
                }
                let q = |i: usize| &sa[(a * 4 + i) * cout..(a * 4 + i + 1) * cout];
                for bcol in 0..2 {
                    let ox = 2 * tx + bcol;
                    if ox >= geo.ow {
                        continue;
                    }
                    let (q0, q1, q2, q3) = (q(0), q(1), q(2), q(3));
                    for (co, yv) in y.iter_mut().enumerate() {
                        let v = if bcol == 0 {
                            q0[co] + q1[co] + q2[co]
                        } else {
                            q1[co] - q2[co] - q3[co]
                        } + bias[co];
                        *yv = if relu { v.max(0.0) } else { v };
                    }
                    let o = ((img * geo.oh + oy) * geo.ow + ox) * geo.oc + geo.ooff;
                    // SAFETY: `cout` floats inside the output buffer; this tile's pixels belong
                    // to this thread alone.
                    unsafe { std::ptr::copy_nonoverlapping(y.as_ptr(), dst.0.add(o), cout) };
                }
            }
        }
    }
}

/// BatchNorm in inference as a per-channel affine map `x * s + t`.
fn bn_affine(bn: &burn::nn::BatchNorm) -> Result<(Vec<f32>, Vec<f32>)> {
    let gamma = tensor_vec(bn.gamma.val(), "bn.gamma")?;
    let beta = tensor_vec(bn.beta.val(), "bn.beta")?;
    let mean = tensor_vec(bn.running_mean.value(), "bn.running_mean")?;
    let var = tensor_vec(bn.running_var.value(), "bn.running_var")?;
    let eps = bn.epsilon;
    let s: Vec<f32> = gamma
        .iter()
        .zip(&var)
        .map(|(g, v)| (*g as f64 / (*v as f64 + eps).sqrt()) as f32)
        .collect();
    let t = beta
        .iter()
        .zip(&mean)
        .zip(&s)
        .map(|((b, m), s)| b - m * s)
        .collect();
    Ok((s, t))
}

/// 3x3 stride-2 valid max pooling of `x` into channels `ooff..ooff + x.c` of `out`.
fn max_pool_3x3_s2(x: &Buf, out: &mut Buf, ooff: usize) {
    let c = x.c;
    for img in 0..out.n {
        for oy in 0..out.h {
            for ox in 0..out.w {
                let o = ((img * out.h + oy) * out.w + ox) * out.c + ooff;
                let dst = &mut out.data[o..o + c];
                dst.fill(f32::NEG_INFINITY);
                for dy in 0..3 {
                    for dx in 0..3 {
                        let i = ((img * x.h + oy * 2 + dy) * x.w + ox * 2 + dx) * c;
                        for (d, s) in dst.iter_mut().zip(&x.data[i..i + c]) {
                            *d = d.max(*s);
                        }
                    }
                }
            }
        }
    }
}

fn pool_hw(h: usize, w: usize) -> (usize, usize) {
    ((h - 3) / 2 + 1, (w - 3) / 2 + 1)
}

fn check_pool(p: &MaxPool2d) -> Result<()> {
    if p.kernel_size != [3, 3] || p.stride != [2, 2] || p.padding != PaddingConfig2d::Valid {
        return Err(Error::Tensor {
            name: "max_pool".into(),
            reason: "only 3x3 stride-2 valid pooling is supported".into(),
        });
    }
    Ok(())
}

/// Where a branch reads from.
#[derive(Debug, Clone, Copy)]
enum Source {
    /// The block's input.
    Input,
    /// Columns `off..off + width` of the fused 1x1 head's output.
    Head { off: usize },
}

#[derive(Debug)]
enum Branch {
    /// Convolutions (possibly none: the head slice itself is the output).
    Convs {
        source: Source,
        chain: Vec<Conv>,
        width: usize,
    },
    /// 3x3 stride-2 max pooling of the block's input.
    MaxPool { width: usize },
}

impl Branch {
    fn width(&self) -> usize {
        match self {
            Branch::Convs { width, .. } | Branch::MaxPool { width } => *width,
        }
    }
}

/// Parallel branches whose outputs are concatenated along channels.
#[derive(Debug)]
struct Mixed {
    /// The branches' leading 1x1 convolutions, fused into one.
    head: Option<Conv>,
    branches: Vec<Branch>,
    /// Output spatial size relative to input: same (residual blocks) or pooled (reductions).
    reduces: bool,
}

/// One branch as the burn model has it: its leading 1x1 convolution (if it has one that can
/// join the fused head) and the convolutions after it.
type BranchParts<'a> = (Option<&'a BasicConv2d>, &'a [BasicConv2d]);

impl Mixed {
    /// Builds the branches; `pool` adds a max-pool branch of that many channels.
    fn new(parts: Vec<BranchParts<'_>>, pool: Option<usize>) -> Result<Self> {
        let mut heads = Vec::new();
        let mut branches = Vec::new();
        let mut off = 0;
        for (head, rest) in parts {
            let chain = rest.iter().map(Conv::basic).collect::<Result<Vec<_>>>()?;
            let (source, head_width) = match head {
                Some(h) => {
                    let conv = Conv::basic(h)?;
                    let s = Source::Head { off };
                    let w = conv.cout;
                    off += w;
                    heads.push(conv);
                    (s, w)
                }
                None => (Source::Input, 0),
            };
            let width = chain.last().map_or(head_width, |c| c.cout);
            branches.push(Branch::Convs {
                source,
                chain,
                width,
            });
        }
        let reduces = pool.is_some();
        if let Some(width) = pool {
            branches.push(Branch::MaxPool { width });
        }
        let head = (!heads.is_empty()).then(|| Conv::fuse(&heads.iter().collect::<Vec<_>>()));
        Ok(Self {
            head,
            branches,
            reduces,
        })
    }

    fn out_channels(&self) -> usize {
        self.branches.iter().map(Branch::width).sum()
    }

    fn forward(&self, x: &Buf, ws: &mut Workspace, par: Par) -> Buf {
        let (oh, ow) = if self.reduces {
            pool_hw(x.h, x.w)
        } else {
            (x.h, x.w)
        };
        let mut out = ws.take(x.n, oh, ow, self.out_channels());
        let head = self.head.as_ref().map(|h| {
            let mut hb = ws.take(x.n, x.h, x.w, h.cout);
            h.run(x, 0, &mut hb, 0, Epilogue::BiasRelu, &mut ws.im2col, par);
            hb
        });
        let mut ooff = 0;
        for branch in &self.branches {
            match branch {
                Branch::MaxPool { .. } => max_pool_3x3_s2(x, &mut out, ooff),
                Branch::Convs {
                    source,
                    chain,
                    width,
                } => {
                    let (src, soff) = match source {
                        Source::Input => (x, 0),
                        Source::Head { off } => (head.as_ref().expect("fused head ran"), *off),
                    };
                    if chain.is_empty() {
                        let rows = out.data.chunks_exact_mut(out.c);
                        for (o, i) in rows.zip(src.data.chunks_exact(src.c)) {
                            o[ooff..ooff + width].copy_from_slice(&i[soff..soff + width]);
                        }
                    } else {
                        run_chain(chain, src, soff, &mut out, ooff, ws, par);
                    }
                }
            }
            ooff += branch.width();
        }
        if let Some(h) = head {
            ws.give(h);
        }
        out
    }

    fn macs(&self, h: usize, w: usize) -> u64 {
        let mut total = self.head.as_ref().map_or(0, |c| c.macs(h, w));
        for b in &self.branches {
            if let Branch::Convs { chain, .. } = b {
                let mut hw = (h, w);
                for c in chain {
                    total += c.macs(hw.0, hw.1);
                    hw = c.out_hw(hw.0, hw.1);
                }
            }
        }
        total
    }
}

/// Runs `chain` on channels `soff..` of `src`; the last convolution writes into channels
/// `ooff..` of `out`.
fn run_chain(
    chain: &[Conv],
    src: &Buf,
    soff: usize,
    out: &mut Buf,
    ooff: usize,
    ws: &mut Workspace,
    par: Par,
) {
    let mut cur: Option<Buf> = None;
    for (i, conv) in chain.iter().enumerate() {
        let (input, ioff) = match &cur {
            Some(b) => (b, 0),
            None => (src, soff),
        };
        if i + 1 == chain.len() {
            conv.run(
                input,
                ioff,
                out,
                ooff,
                Epilogue::BiasRelu,
                &mut ws.im2col,
                par,
            );
        } else {
            let (oh, ow) = conv.out_hw(input.h, input.w);
            let mut next = ws.take(input.n, oh, ow, conv.cout);
            conv.run(
                input,
                ioff,
                &mut next,
                0,
                Epilogue::BiasRelu,
                &mut ws.im2col,
                par,
            );
            if let Some(old) = cur.replace(next) {
                ws.give(old);
            }
        }
    }
    if let Some(old) = cur {
        ws.give(old);
    }
}

/// A residual block: `x = act(x + scale * up(concat(branches(x))))`.
#[derive(Debug)]
struct Residual {
    mixed: Mixed,
    up: Conv,
    scale: f32,
    relu: bool,
}

impl Residual {
    fn block35(b: &Block35) -> Result<Self> {
        let mixed = Mixed::new(
            vec![
                (Some(&b.branch0), &[][..]),
                (Some(&b.branch1[0]), &b.branch1[1..]),
                (Some(&b.branch2[0]), &b.branch2[1..]),
            ],
            None,
        )?;
        Self::with_up(mixed, &b.conv2d, b.scale, true)
    }

    fn block17(b: &Block17) -> Result<Self> {
        Self::two_branch(&b.branch0, &b.branch1, &b.conv2d, b.scale, true)
    }

    fn block8(b: &Block8) -> Result<Self> {
        Self::two_branch(&b.branch0, &b.branch1, &b.conv2d, b.scale, b.activate)
    }

    /// Block17 and Block8: a 1x1 branch and a chain, both led by a 1x1 convolution.
    fn two_branch(
        branch0: &BasicConv2d,
        branch1: &[BasicConv2d],
        up: &Conv2d,
        scale: f64,
        relu: bool,
    ) -> Result<Self> {
        let mixed = Mixed::new(
            vec![(Some(branch0), &[][..]), (Some(&branch1[0]), &branch1[1..])],
            None,
        )?;
        Self::with_up(mixed, up, scale, relu)
    }

    fn with_up(mixed: Mixed, up: &Conv2d, scale: f64, relu: bool) -> Result<Self> {
        Ok(Self {
            mixed,
            up: Conv::from_burn(up, None)?,
            scale: scale as f32,
            relu,
        })
    }

    fn forward(&self, x: &mut Buf, ws: &mut Workspace, par: Par) {
        let cat = self.mixed.forward(x, ws, par);
        let epilogue = Epilogue::Residual {
            scale: self.scale,
            relu: self.relu,
        };
        self.up.run(&cat, 0, x, 0, epilogue, &mut ws.im2col, par);
        ws.give(cat);
    }
}

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
    precision: Precision,
}

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
            precision: Precision::F32,
        }
        .with_winograd(true))
    }

    /// Uses at most `n` threads of rayon's pool (default: the pool's size, i.e. all cores).
    pub fn with_threads(mut self, n: usize) -> Self {
        self.threads = n.max(1);
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

    /// Turns the Winograd path of the 3x3 convolutions off (im2col for all), or back on
    /// (f32 only: in bf16 mode every product runs on AMX).
    pub fn with_winograd(mut self, on: bool) -> Self {
        let on = on && self.precision == Precision::F32;
        for c in self.convs_mut() {
            c.wino = (on && c.kh == 3 && c.kw == 3 && c.stride == 1)
                .then(|| winograd::weights(&c.w, c.cin, c.cout));
        }
        self
    }

    /// Chooses the arithmetic: f32 (the default, the parity-tested one) or bf16 products on
    /// AMX ([`Precision::Bf16`]), which fails with a clear error where the CPU or the
    /// operating system does not provide AMX.
    pub fn with_precision(mut self, precision: Precision) -> Result<Self> {
        if precision == Precision::Bf16 && !amx::available() {
            return Err(Error::InvalidArgument {
                field: "precision",
                reason: "bf16 needs Intel AMX (AMX-TILE and AMX-BF16: Xeon Sapphire Rapids or \
                         later) on Linux 5.16 or later; this machine does not provide it, use f32"
                    .into(),
            });
        }
        self.precision = precision;
        for c in self.convs_mut() {
            c.amx = (precision == Precision::Bf16)
                .then(|| amx::Packed::new(&c.w, c.kh * c.kw * c.cin, c.cout));
        }
        Ok(self.with_winograd(precision == Precision::F32))
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
        if n == 1 || self.threads == 1 {
            let par = if self.threads > 1 {
                Par::Split(self.threads)
            } else {
                Par::Single
            };
            return Ok(self.forward_group(input, n, h, w, par));
        }
        // Groups of images, each run single-threaded: no synchronisation inside the network,
        // and every matrix product still has a group's worth of rows.
        let per = n.div_ceil(self.threads).min(MAX_GROUP);
        let image = 3 * h * w;
        let mut out = vec![0.0f32; n * dim];
        use rayon::prelude::*;
        input
            .par_chunks(per * image)
            .zip(out.par_chunks_mut(per * dim))
            .for_each(|(inp, dst)| {
                let k = inp.len() / image;
                dst.copy_from_slice(&self.forward_group(inp, k, h, w, Par::Single));
            });
        Ok(out)
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
        emb.data
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
        let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
        let err = got
            .iter()
            .zip(&want)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(
            err <= 1e-4 * scale.max(1.0),
            "max abs diff {err} (scale {scale})"
        );
    }

    #[test]
    fn matches_burn_model_batch_of_one_on_all_threads() {
        compare(1, 2);
    }

    #[test]
    fn matches_burn_model_batch_split_across_threads() {
        compare(5, 2);
    }

    #[test]
    fn winograd_and_im2col_agree() {
        let net = random_net(&InceptionResnetV1Config::small(), &Device::flex());
        let x: Vec<f32> = (0..2 * 3 * 96 * 96)
            .map(|i| ((i * 7919) % 255) as f32 / 128.0 - 1.0)
            .collect();
        let on = FastNet::compile(&net).unwrap().with_threads(1);
        assert!(
            on.stem.iter().any(|c| c.wino.is_some()),
            "Winograd not in use"
        );
        let a = on.forward_nchw(&x, 2, 96, 96).unwrap();
        let off = on.with_winograd(false);
        assert!(off.stem.iter().all(|c| c.wino.is_none()));
        let b = off.forward_nchw(&x, 2, 96, 96).unwrap();
        let scale = b.iter().fold(0f32, |m, v| m.max(v.abs())).max(1.0);
        let err = a
            .iter()
            .zip(&b)
            .fold(0f32, |m, (p, q)| m.max((p - q).abs()));
        assert!(err <= 1e-5 * scale, "max abs diff {err} (scale {scale})");
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
