//! Convolutions and their epilogues: folded BatchNorm, the im2col gather (f32 rows, bf16 rows
//! and int8 rows copied from the input rounded or quantized once per convolution), the matrix
//! products (gemm, or the kernels of `sgemm`, `bf16mm` and `i8mm`) split across threads.

#[allow(unused_imports)]
use super::*;

/// Output rows per product on packed weights before their epilogue runs: the block (at most
/// 96 x 1,792 floats here) is still in the second-level cache when its bias and activation
/// are applied. A multiple of 32 (the rows of a bf16 or int8 patch block) and of the products'
/// own row blocks, so that each row's sums are computed as on the whole range.
const EPILOGUE_ROWS: usize = 96;
const _: () = assert!(EPILOGUE_ROWS.is_multiple_of(32) && EPILOGUE_ROWS.is_multiple_of(sgemm::MC));

/// Below this many values an int8 or bf16 convolution's input is converted on the calling
/// thread ([`Conv::convert_input`]): a split costs more than it saves.
const CONVERT_SPLIT_VALUES: usize = 1 << 15;

/// What happens to a convolution's product before it is stored.
#[derive(Debug, Clone, Copy)]
pub(super) enum Epilogue {
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
pub(super) struct Conv {
    pub(super) kh: usize,
    pub(super) kw: usize,
    pub(super) stride: usize,
    /// top, left, bottom, right.
    pub(super) pad: [usize; 4],
    pub(super) cin: usize,
    pub(super) cout: usize,
    /// The weights, row-major; empty where `f32w` holds them (see [`Conv::row_major`]).
    pub(super) w: Vec<f32>,
    pub(super) b: Vec<f32>,
    /// Winograd form of `w` for 3x3, 1x7 and 7x1 stride-1 convolutions (see [`winograd`]); `None` runs
    /// im2col.
    pub(super) wino: Option<winograd::Weights>,
    /// PReLU slopes per output channel, for [`Epilogue::BiasPrelu`] (empty otherwise).
    pub(super) prelu: Vec<f32>,
    /// `w` packed for bf16 products ([`Precision::Bf16`]); `None` runs f32 products.
    pub(super) bf16w: Option<bf16mm::Packed>,
    /// `w` packed for [`F32Kernel::Avx2`] products; `None` runs them on the `gemm` crate.
    pub(super) f32w: Option<sgemm::Packed>,
    /// `w` quantized for int8 products ([`Precision::Int8`]); where set, products run on it.
    pub(super) i8w: Option<i8mm::Packed>,
    /// Where set (calibration), the range of every input this convolution reads is merged in.
    pub(super) seen: Option<std::sync::Arc<std::sync::Mutex<InputRange>>>,
    /// Where set ([`FastNet::time_layers`]), every call's time is added in.
    pub(super) timer: Option<std::sync::Arc<layers::LayerTimer>>,
}

/// The smallest and largest input value a convolution has read.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct InputRange {
    /// Smallest value.
    pub min: f32,
    /// Largest value.
    pub max: f32,
}

impl Default for InputRange {
    fn default() -> Self {
        Self {
            min: f32::INFINITY,
            max: f32::NEG_INFINITY,
        }
    }
}

impl Conv {
    /// Where its weights lie, in every form it holds ([`super::pages`]).
    pub(super) fn spans(&self, out: &mut Vec<(usize, usize)>) {
        use super::pages::span;
        out.extend([span(&self.w), span(&self.b), span(&self.prelu)]);
        if let Some(u) = &self.wino {
            u.spans(out);
        }
        out.extend(self.bf16w.as_ref().map(bf16mm::Packed::span));
        out.extend(self.f32w.as_ref().map(sgemm::Packed::span));
        out.extend(self.i8w.as_ref().map(i8mm::Packed::span));
    }
}

pub(super) fn tensor_vec<const D: usize>(t: Tensor<D>, name: &str) -> Result<Vec<f32>> {
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
    pub(super) fn from_burn(conv: &Conv2d, affine: Option<(Vec<f32>, Vec<f32>)>) -> Result<Self> {
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
            bf16w: None,
            i8w: None,
            seen: None,
            timer: None,
            f32w: None,
        })
    }

    /// A dense layer `(cin, cout)` (weights row-major `(in, out)`) as a 1x1 convolution.
    pub(super) fn dense(cin: usize, cout: usize, w: Vec<f32>, b: Vec<f32>) -> Self {
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
            bf16w: None,
            i8w: None,
            seen: None,
            timer: None,
            f32w: None,
        }
    }

    /// conv -> BatchNorm (running statistics) folded into one convolution.
    pub(super) fn basic(layer: &BasicConv2d) -> Result<Self> {
        let (s, t) = bn_affine(&layer.bn)?;
        Self::from_burn(&layer.conv, Some((s, t)))
    }

    /// Concatenates the outputs of convolutions that share their input and geometry.
    pub(super) fn fuse(parts: &[&Conv]) -> Self {
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
            bf16w: None,
            i8w: None,
            seen: None,
            timer: None,
            f32w: None,
            ..first.clone()
        }
    }

    /// The weights as a row-major `[kh * kw * cin, cout]` matrix, whichever copy holds them.
    pub(super) fn row_major(&self) -> std::borrow::Cow<'_, [f32]> {
        match &self.f32w {
            Some(p) if self.w.is_empty() => p.unpack().into(),
            _ => self.w.as_slice().into(),
        }
    }

    pub(super) fn out_hw(&self, h: usize, w: usize) -> (usize, usize) {
        let [t, l, b, r] = self.pad;
        (
            (h + t + b - self.kh) / self.stride + 1,
            (w + l + r - self.kw) / self.stride + 1,
        )
    }

    pub(super) fn pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.stride == 1 && self.pad == [0; 4]
    }

    pub(super) fn macs(&self, h: usize, w: usize) -> u64 {
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
    pub(super) fn run(
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
        if let Some(seen) = &self.seen {
            let mut r = InputRange::default();
            for px in x.data.chunks_exact(x.c).take(x.rows()) {
                for &v in &px[xoff..xoff + self.cin] {
                    r.min = r.min.min(v);
                    r.max = r.max.max(v);
                }
            }
            let mut s = seen.lock().unwrap_or_else(|e| e.into_inner());
            s.min = s.min.min(r.min);
            s.max = s.max.max(r.max);
        }
        let oc = out.c;
        let threads = match par {
            Par::Split(t) => t,
            Par::Single => 1,
        };
        if scratch.len() < threads {
            scratch.resize_with(threads, Vec::new);
        }
        let dst = SendMut(out.data.as_mut_ptr());
        // Winograd pays off once every thread has a full chunk of tiles, or (packed weights)
        // enough output channels of enough tiles; below that, its transforms and short
        // products cost more than im2col saves.
        let wino = self.wino.as_ref().filter(|u| {
            u.pays(out.n * u.form.tiles(oh, ow), threads)
                && matches!(epilogue, Epilogue::BiasRelu | Epilogue::Bias)
        });
        // Timed from here to the return ([`FastNet::time_layers`]).
        let _timing = self.timer.as_deref().map(|t| {
            let macs = self.macs(x.h, x.w) * x.n as u64;
            t.start(macs, (x.h, x.w), wino.is_some())
        });
        if let Some(u) = wino {
            let relu = matches!(epilogue, Epilogue::BiasRelu);
            let geo = winograd::Geometry::new(x, xoff, self.pad, (oh, ow), oc, ooff);
            // SAFETY: `dst` is `out.data`, shaped (asserted above) as `geo` describes.
            unsafe { winograd::conv(&geo, u, &self.b, relu, dst, scratch, threads) };
            return;
        }
        // int8 and bf16 patches are gathered from the input converted once, not converted as
        // gathered: a 3x3 convolution's im2col reads each input value 9 times.
        // The per-thread buffer is taken only where a conversion runs (and put back at the end
        // of this call).
        let (mut bytes, mut halves): (Reused<u8>, Reused<u16>);
        let values = x.n * x.h * x.w * self.cin;
        let t = if values < CONVERT_SPLIT_VALUES {
            1
        } else {
            threads
        };
        let q = match (&self.i8w, &self.bf16w) {
            _ if self.pointwise() => None,
            (Some(w), _) => {
                bytes = Reused::take(&U8_INPUT);
                let map = bytes.fill(values);
                // SAFETY: int8 weights exist only where an int8 kernel family runs, which
                // implies AVX2; `map` holds every pixel's `cin` values.
                unsafe { self.quantize_input(x, xoff, w, map, t) };
                Some(Converted::U8(&*map))
            }
            (None, Some(_)) => {
                halves = Reused::take(&BF16_INPUT);
                let map = halves.fill(values);
                // SAFETY: bf16 weights exist only where a bf16 kernel family runs, which
                // implies AVX-512F and BW; `map` holds every pixel's `cin` values.
                unsafe { self.round_input(x, xoff, map, t) };
                Some(Converted::Bf16(&*map))
            }
            (None, None) => None,
        };
        let job = RowJob {
            x,
            xoff,
            oc,
            ooff,
            epilogue,
            q,
        };
        // With the `gemm` crate each thread packs the whole weight matrix, so rows are split
        // only when they outnumber the weights' columns; packed weights (bf16, or f32 on
        // the AVX2 kernel) are packed once, and a row split then avoids rounding (bf16) or
        // gathering the same rows on every thread.
        let packed = self.bf16w.is_some() || self.f32w.is_some() || self.i8w.is_some();
        // On packed f32 weights a thread with less than one row block streams the whole weight
        // matrix for a few rows, and its last tile is short. For a batch of one's 8x8 maps (64
        // rows, Block17 on two threads) one core ran 32 rows x 256 columns at 63-66 GFLOP/s
        // and 64 rows x 128 columns at 76-82 (k = 896, weights from memory, Zen 3), so such
        // products split by columns.
        let few_rows = self.f32w.is_some()
            && rows < threads * sgemm::MC
            && self.cout >= threads * MIN_COLS_PER_THREAD;
        let by_rows =
            rows >= threads * MIN_ROWS_PER_THREAD && (packed || rows >= 2 * self.cout) && !few_rows;
        let by_cols = self.cout >= threads * 16;
        if threads == 1 || !(by_rows || by_cols) {
            // SAFETY: `dst` is `out.data`, which holds `rows * oc` floats (asserted above).
            unsafe { self.run_rows(&job, dst, 0, rows, 0..self.cout, &mut scratch[0]) };
        } else if by_rows {
            // Chunks claimed by the threads as they come free; bounds at whole micro-kernel
            // tiles (32-row blocks in bf16).
            let align = match (&self.bf16w, &self.i8w) {
                (Some(_), _) => 32,
                (None, Some(w)) => w.mr(),
                (None, None) => self.f32w.as_ref().map_or(sgemm::MR, sgemm::Packed::mr),
            };
            let chunks = match packed {
                true => team::chunk_count(rows, threads, MIN_ROWS_PER_THREAD),
                // The `gemm` crate packs the weights again for every product: one per thread.
                false => threads,
            };
            team::split_mut(&mut scratch[..threads], chunks, |scr, claims| {
                for c in claims {
                    let r = team::chunk_range(rows, chunks, align, c);
                    if !r.is_empty() {
                        // SAFETY: the chunks write disjoint row ranges of `out.data`.
                        unsafe { self.run_rows(&job, dst, r.start, r.len(), 0..self.cout, scr) }
                    }
                }
            });
        } else {
            // By columns: im2col once (if any), products and epilogues split by channels.
            if self.f32w.is_some() {
                // Packed f32 weights: each thread gathers the (few) rows itself, once (per chunk
                // only where they exceed IM2COL_CHUNK_FLOATS), so that no thread waits for a
                // serial im2col; chunks of whole panels.
                let chunks = team::chunk_count(self.cout, threads, 2 * sgemm::NR);
                let k = self.kh * self.kw * self.cin;
                let whole = !self.pointwise() && rows * k <= IM2COL_CHUNK_FLOATS;
                // int8 weights: the rows (patches, or the input of a pointwise convolution)
                // are quantized once per thread, not once per chunk of channels.
                let quantized = self.i8w.is_some() && rows * k <= IM2COL_CHUNK_FLOATS;
                let align = self
                    .f32w
                    .as_ref()
                    .map_or(sgemm::NR, sgemm::Packed::col_align);
                team::split_mut(&mut scratch[..threads], chunks, |scr, claims| {
                    let mut gathered = false;
                    let mut q = if quantized {
                        U8_PATCHES.take()
                    } else {
                        Vec::new()
                    };
                    for c in claims {
                        let cols = team::chunk_range(self.cout, chunks, align, c);
                        if cols.is_empty() {
                            continue;
                        }
                        if let (true, Some(w)) = (quantized, &self.i8w) {
                            let len = rows.next_multiple_of(32) * w.kp();
                            if !gathered {
                                if q.len() < len {
                                    q.resize(len, 0);
                                }
                                // SAFETY: int8 weights exist only where an int8 kernel family
                                // runs, which implies AVX2; `q` holds `len` bytes.
                                unsafe { self.quantize_rows(&job, rows, (oh, ow), &mut q, w) };
                                gathered = true;
                            }
                            let p = Patches::U8(&q[..len]);
                            // SAFETY: the chunks write disjoint column ranges of `out.data`;
                            // `p` holds all `rows`, rounded up to 32.
                            unsafe { self.gemm_block(&job, dst, 0, rows, cols, Some(p)) };
                            continue;
                        }
                        if !whole {
                            // SAFETY: the chunks write disjoint column ranges of `out.data`.
                            unsafe { self.run_rows(&job, dst, 0, rows, cols, scr) };
                            continue;
                        }
                        if !gathered {
                            if scr.len() < rows * k {
                                scr.resize(rows * k, 0.0);
                            }
                            self.im2col(x, xoff, 0, rows, (oh, ow), &mut scr[..rows * k]);
                            gathered = true;
                        }
                        let p = Patches::F32(&scr[..rows * k]);
                        // SAFETY: as above; `p` holds the patches of all `rows`.
                        unsafe { self.gemm_block(&job, dst, 0, rows, cols, Some(p)) };
                    }
                    if quantized {
                        U8_PATCHES.set(q);
                    }
                });
                return;
            }
            let cols = self.cout.div_ceil(threads).next_multiple_of(16);
            let ranges: Vec<_> = (0..self.cout)
                .step_by(cols)
                .map(|c0| c0..(c0 + cols).min(self.cout))
                .collect();
            let each = |r0: usize, m: usize, lhs: Option<Patches<'_>>| {
                team::split(threads, ranges.len(), |i| {
                    // SAFETY: the parts write disjoint column ranges of `out.data`.
                    unsafe { self.gemm_block(&job, dst, r0, m, ranges[i].clone(), lhs) }
                });
            };
            if self.pointwise() {
                each(0, rows, None);
            } else {
                self.in_patches(&job, 0, rows, &mut scratch[0], |r0, m, p| {
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
    pub(super) unsafe fn run_rows(
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
        self.in_patches(job, r0, m, scratch, |r, c, p| {
            // SAFETY: forwarded from the caller.
            unsafe { self.gemm_block(job, dst, r, c, cols.clone(), Some(p)) }
        });
    }

    /// Builds the im2col patches of output rows `r0..r0 + m` in bounded chunks and hands each
    /// chunk (first row, row count, patches) to `f`. With bf16 or int8 weights the patches are
    /// copied from the input rounded or quantized once (`job.q`, which [`Conv::run`] fills for
    /// every such convolution with patches); no f32 copy is written.
    pub(super) fn in_patches(
        &self,
        job: &RowJob<'_>,
        r0: usize,
        m: usize,
        scratch: &mut Vec<f32>,
        mut f: impl FnMut(usize, usize, Patches<'_>),
    ) {
        let (x, xoff) = (job.x, job.xoff);
        let (oh, ow) = self.out_hw(x.h, x.w);
        let k = self.kh * self.kw * self.cin;
        let chunk = (IM2COL_CHUNK_FLOATS / k).clamp(1, m.max(1));
        if self.bf16w.is_some() {
            let kp = bf16mm::padded_k(k);
            let Some(Converted::Bf16(q)) = job.q else {
                panic!("fast path: bf16 patches are gathered from the input rounded first")
            };
            let mut buf = BF16_PATCHES.take();
            let gather = |r, c, b: &mut [u16]| self.im2col_converted(x, q, r, c, (oh, ow), b, kp);
            in_chunks(
                &mut buf,
                (r0, m, chunk, kp),
                gather,
                |b| Patches::Bf16(b),
                &mut f,
            );
            BF16_PATCHES.set(buf);
            return;
        }
        if let Some(w) = &self.i8w {
            let Some(Converted::U8(q)) = job.q else {
                panic!("fast path: int8 patches are gathered from the input quantized first")
            };
            let mut buf = U8_PATCHES.take();
            let gather =
                |r, c, b: &mut [u8]| self.im2col_converted(x, q, r, c, (oh, ow), b, w.kp());
            in_chunks(
                &mut buf,
                (r0, m, chunk, w.kp()),
                gather,
                |b| Patches::U8(b),
                &mut f,
            );
            U8_PATCHES.set(buf);
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

    /// [`Conv::im2col`] from the input converted once (`q`: `x`'s pixels, `cin` bytes or bf16
    /// values each, from [`Conv::quantize_input`] or [`Conv::round_input`]) into rows of
    /// `row_len` (zeros past `k`): the patches of an int8 or bf16 product.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn im2col_converted<T: Copy + Default>(
        &self,
        x: &Buf,
        q: &[T],
        r0: usize,
        m: usize,
        oh_ow: (usize, usize),
        dst: &mut [T],
        row_len: usize,
    ) {
        let src = Src {
            data: q,
            h: x.h,
            w: x.w,
            c: self.cin,
            off: 0,
        };
        self.gather(src, r0, m, oh_ow, (dst, row_len, T::default()));
    }

    /// Channels `xoff..xoff + cin` of every pixel of `x`, quantized to `w`'s activation scale
    /// into `map` ([`Conv::convert_input`]), byte for byte as [`i8mm::gemm`] quantizes its f32
    /// rows.
    ///
    /// # Safety
    /// The CPU has AVX2; `map` holds `x.n * x.h * x.w * cin` bytes.
    pub(super) unsafe fn quantize_input(
        &self,
        x: &Buf,
        xoff: usize,
        w: &i8mm::Packed,
        map: &mut [u8],
        threads: usize,
    ) {
        self.convert_input(x, xoff, map, threads, |d, s| {
            // SAFETY: AVX2 (the caller's); runs of equal length.
            unsafe { w.quantize_run(d, s) }
        });
    }

    /// Channels `xoff..xoff + cin` of every pixel of `x`, rounded to bf16 into `map`
    /// ([`Conv::convert_input`]), as [`bf16mm::gemm`] rounds its f32 rows.
    ///
    /// # Safety
    /// The CPU has AVX-512F and AVX-512BW; `map` holds `x.n * x.h * x.w * cin` values.
    pub(super) unsafe fn round_input(&self, x: &Buf, xoff: usize, map: &mut [u16], threads: usize) {
        self.convert_input(x, xoff, map, threads, |d, s| {
            // SAFETY: AVX-512F and BW (the caller's).
            unsafe { bf16mm::round_into(d, s) }
        });
    }

    /// Channels `xoff..xoff + cin` of every pixel of `x`, converted by `convert` (a run of
    /// values at a time) into `map` (`cin` per pixel, in pixel order), split across `threads`:
    /// the int8 and bf16 patches are then gathered from it ([`Conv::im2col_converted`]), and
    /// each value is converted once, not once per kernel tap.
    fn convert_input<T: Send>(
        &self,
        x: &Buf,
        xoff: usize,
        map: &mut [T],
        threads: usize,
        convert: impl Fn(&mut [T], &[f32]) + Sync,
    ) {
        let (cin, pixels) = (self.cin, x.n * x.h * x.w);
        assert!(
            map.len() == pixels * cin && xoff + cin <= x.c && x.data.len() >= pixels * x.c,
            "fast path: converted input does not fit the convolution"
        );
        let base = SendMut(map.as_mut_ptr());
        let part = |p: std::ops::Range<usize>| {
            // SAFETY: pixels `p` of `map` are this part's alone (the parts are disjoint);
            // `p.end <= pixels` (asserted above).
            let dst =
                unsafe { std::slice::from_raw_parts_mut(base.at(p.start * cin), p.len() * cin) };
            if xoff == 0 && cin == x.c {
                convert(dst, &x.data[p.start * cin..p.end * cin]);
                return;
            }
            for (i, d) in p.zip(dst.chunks_exact_mut(cin)) {
                convert(d, &x.data[i * x.c + xoff..][..cin]);
            }
        };
        if threads <= 1 {
            part(0..pixels);
            return;
        }
        let chunks = team::chunk_count(pixels, threads, CONVERT_SPLIT_VALUES / 4 / cin);
        team::split(threads, chunks, |c| {
            part(team::chunk_range(pixels, chunks, 1, c))
        });
    }

    /// The left operand of all `rows` output rows quantized for `w`, into `dst` (rows of
    /// `w.kp()` bytes): the patches, from the input quantized once (`job.q`), or for a
    /// pointwise convolution the input rows themselves, as [`i8mm::gemm`] would quantize them.
    ///
    /// # Safety
    /// The CPU has AVX2; `dst` holds `rows` rows of `w.kp()`.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn quantize_rows(
        &self,
        job: &RowJob<'_>,
        rows: usize,
        oh_ow: (usize, usize),
        dst: &mut [u8],
        w: &i8mm::Packed,
    ) {
        let (x, xoff) = (job.x, job.xoff);
        if !self.pointwise() {
            let Some(Converted::U8(q)) = job.q else {
                panic!("fast path: int8 patches are gathered from the input quantized first")
            };
            self.im2col_converted(x, q, 0, rows, oh_ow, dst, w.kp());
            return;
        }
        let (k, kp) = (self.cin, w.kp());
        for (r, row) in dst.chunks_exact_mut(kp).take(rows).enumerate() {
            let src = &x.data[r * x.c + xoff..][..k];
            // SAFETY: AVX2 (the caller's); runs of equal length.
            unsafe { w.quantize_run(&mut row[..k], src) };
            row[k..].fill(0);
        }
    }

    /// One matrix product and its epilogue: output rows `r0..r0 + m`, channels `cols`. The
    /// left operand is `patches` (im2col rows `r0..r0 + m`) or, for a pointwise convolution,
    /// the input itself. On packed weights the rows go [`EPILOGUE_ROWS`] at a time, each
    /// block's epilogue right after its product, while the block is still in cache.
    ///
    /// # Safety
    /// As [`Conv::run_rows`].
    pub(super) unsafe fn gemm_block(
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
            ..
        } = *job;
        let (read_dst, beta) = match epilogue {
            Epilogue::Residual { scale, .. } => (true, scale),
            _ => (false, 1.0),
        };
        let n = cols.end - cols.start;
        let k = self.kh * self.kw * self.cin;
        // SAFETY (of every block below): the output rows `r0..r0 + m` (stride `oc`) and
        // channels `ooff + cols` lie inside the output buffer and no other thread touches them
        // (caller); the left operand holds the block's rows as each arm says; the weights are
        // `k x cout`, read at columns `cols`; the output does not overlap the inputs; each
        // packed family was checked available when its weights were packed, and column
        // ranges start at multiples of 16 (see `run`), the panels' width.
        let d = unsafe { dst.0.add(r0 * oc + ooff + cols.start) };
        let out = sgemm::Out {
            ptr: d,
            ldc: oc,
            accumulate: read_dst,
            beta,
        };
        let bf16_out = bf16mm::Out {
            ptr: d,
            ldd: oc,
            accumulate: read_dst,
            beta,
        };
        // The f32 left operand: patches, or the input itself (pointwise: input row r is
        // output row r, and `r * x.c + xoff + cin` stays inside `x.data`, checked in `run`).
        let (lhs, lhs_rs) = match patches {
            Some(Patches::F32(p)) => {
                debug_assert!(p.len() >= m * k);
                (p.as_ptr(), k)
            }
            _ => (x.data.as_ptr().wrapping_add(r0 * x.c + xoff), x.c),
        };
        let product = |r: usize, mr: usize| unsafe {
            match (patches, &self.i8w, &self.bf16w, &self.f32w) {
                // Patches rounded or quantized once: `in_patches` built the rows
                // `r0..r0 + m` rounded up to 32, of the weights' padded depth; blocks start at
                // multiples of 32.
                (Some(Patches::Bf16(p)), _, Some(w), _) => {
                    let kp = bf16mm::padded_k(k);
                    bf16mm::gemm_bf16(mr, n, &p[r * kp..], w, cols.start, bf16_out.skip_rows(r));
                }
                (Some(Patches::U8(q)), Some(w), _, _) => {
                    i8mm::gemm_quantized(mr, n, &q[r * w.kp()..], w, cols.start, out.skip_rows(r));
                }
                (Some(Patches::Bf16(_) | Patches::U8(_)), ..) => {
                    unreachable!("rounded or quantized patches come with their weights")
                }
                (_, Some(w), _, _) => {
                    i8mm::gemm(
                        mr,
                        n,
                        lhs.add(r * lhs_rs),
                        lhs_rs,
                        w,
                        cols.start,
                        out.skip_rows(r),
                    );
                }
                (_, _, Some(w), _) => {
                    bf16mm::gemm(
                        mr,
                        n,
                        lhs.add(r * lhs_rs),
                        lhs_rs,
                        w,
                        cols.start,
                        bf16_out.skip_rows(r),
                    );
                }
                (_, _, _, Some(w)) => {
                    sgemm::gemm(
                        mr,
                        n,
                        lhs.add(r * lhs_rs),
                        lhs_rs,
                        w,
                        cols.start,
                        out.skip_rows(r),
                    );
                }
                (_, None, None, None) => unreachable!("the `gemm` crate's products run whole"),
            }
        };
        if self.i8w.is_none() && self.bf16w.is_none() && self.f32w.is_none() {
            // The `gemm` crate packs the weights again for every product: one for all rows.
            unsafe {
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
                self.epilogue(d, oc, m, cols, epilogue);
            }
            return;
        }
        for r in (0..m).step_by(EPILOGUE_ROWS) {
            let mr = EPILOGUE_ROWS.min(m - r);
            product(r, mr);
            // SAFETY: rows r..r + mr of the block, as above.
            unsafe { self.epilogue(d.add(r * oc), oc, mr, cols.clone(), epilogue) };
        }
    }

    /// Bias and activation over output rows `0..m` (stride `oc`) from `d`, channels `cols`.
    /// On AVX2 the same loops run on 8-lane registers instead of the baseline's 4 (the same
    /// operations on each value, so the same results).
    ///
    /// # Safety
    /// `d` points to `m` rows of at least `cols.len()` floats at stride `oc` that no other
    /// thread touches meanwhile.
    pub(super) unsafe fn epilogue(
        &self,
        d: *mut f32,
        oc: usize,
        m: usize,
        cols: std::ops::Range<usize>,
        epilogue: Epilogue,
    ) {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: AVX2 is here; the rest is forwarded from the caller.
            return unsafe { self.epilogue_avx2(d, oc, m, cols, epilogue) };
        }
        // SAFETY: forwarded from the caller.
        unsafe { self.epilogue_loops(d, oc, m, cols, epilogue) }
    }

    /// [`Conv::epilogue`] compiled for AVX2.
    ///
    /// # Safety
    /// As [`Conv::epilogue`], on a CPU with AVX2.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn epilogue_avx2(
        &self,
        d: *mut f32,
        oc: usize,
        m: usize,
        cols: std::ops::Range<usize>,
        epilogue: Epilogue,
    ) {
        // SAFETY: forwarded from the caller.
        unsafe { self.epilogue_loops(d, oc, m, cols, epilogue) }
    }

    /// The loops of [`Conv::epilogue`], inlined into each of its versions.
    ///
    /// # Safety
    /// As [`Conv::epilogue`].
    #[inline(always)]
    unsafe fn epilogue_loops(
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
    pub(super) fn im2col(
        &self,
        x: &Buf,
        xoff: usize,
        r0: usize,
        m: usize,
        oh_ow: (usize, usize),
        dst: &mut [f32],
    ) {
        let k = self.kh * self.kw * self.cin;
        self.gather(Src::of(x, xoff), r0, m, oh_ow, (dst, k, 0.0));
    }

    /// The one im2col gather behind [`Conv::im2col`] (f32 rows) and [`Conv::im2col_converted`]
    /// (bytes or bf16 values, from the input converted once): `x` is the map read, `sink` is
    /// `(rows, row length, zero)`, and row values past `k` are zero.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    pub(super) fn gather<T: Copy>(
        &self,
        x: Src<'_, T>,
        r0: usize,
        m: usize,
        oh_ow: (usize, usize),
        sink: (&mut [T], usize, T),
    ) {
        let (dst, row_len, zero) = sink;
        let (oh, ow) = oh_ow;
        let (cin, k, xoff) = (self.cin, self.kh * self.kw * self.cin, x.off);
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
                    copy_run(&mut row[dy * run..(dy + 1) * run], &x.data[src..src + run]);
                    continue;
                }
                for dx in 0..self.kw {
                    let ix = (ox * self.stride + dx) as isize - self.pad[1] as isize;
                    let seg = &mut row[(dy * self.kw + dx) * cin..][..cin];
                    if iy < 0 || ix < 0 || iy >= x.h as isize || ix >= x.w as isize {
                        seg.fill(zero);
                    } else {
                        let src = ((img * x.h + iy as usize) * x.w + ix as usize) * x.c + xoff;
                        copy_run(seg, &x.data[src..src + cin]);
                    }
                }
            }
        }
    }
}

/// `dst.copy_from_slice(src)`, without a `memmove` call for the short runs of a few-channel
/// im2col (3 to 48 floats per kernel row in MTCNN, where the calls took longer than the copies;
/// 32 to 96 bytes per kernel row of the int8 stem).
#[inline]
pub(super) fn copy_run<T: Copy>(dst: &mut [T], src: &[T]) {
    const LANES: usize = 16;
    if dst.len() >= 8 * LANES {
        dst.copy_from_slice(src);
        return;
    }
    let mut d = dst.chunks_exact_mut(LANES);
    let mut s = src.chunks_exact(LANES);
    for (d, s) in (&mut d).zip(&mut s) {
        let v: [T; LANES] = s.try_into().expect("chunk of LANES");
        d.copy_from_slice(&v);
    }
    for (d, s) in d.into_remainder().iter_mut().zip(s.remainder()) {
        *d = *s;
    }
}

/// Rows `r0..r0 + m` gathered `chunk` at a time (rounded up to 32, the rows of a bf16 or int8
/// block) into `buf`, rows of `kp` values: `gather(first row, rows, rows of buf)` fills a
/// chunk, and `f` gets each chunk's first row, row count and its rows (rounded up to 32) as
/// `wrap` makes them patches.
fn in_chunks<T: Copy + Default>(
    buf: &mut Vec<T>,
    (r0, m, chunk, kp): (usize, usize, usize, usize),
    mut gather: impl FnMut(usize, usize, &mut [T]),
    wrap: impl Fn(&[T]) -> Patches<'_>,
    f: &mut impl FnMut(usize, usize, Patches<'_>),
) {
    let chunk = chunk.next_multiple_of(32);
    if buf.len() < chunk * kp {
        buf.resize(chunk * kp, T::default());
    }
    let mut done = 0;
    while done < m {
        let c = chunk.min(m - done);
        gather(r0 + done, c, &mut buf[..chunk * kp]);
        f(r0 + done, c, wrap(&buf[..c.next_multiple_of(32) * kp]));
        done += c;
    }
}
