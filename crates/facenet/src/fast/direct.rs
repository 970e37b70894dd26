//! Direct convolutions for MTCNN's few-channel layers (AVX-512F, or AVX2 and FMA): no
//! im2col, no packing.
//!
//! P-Net's layers have 3 to 16 input and 10 to 32 output channels. Through im2col and the
//! `gemm` crate, a profile of 1080p detection put 15-18 % of the time in the gather and a
//! quarter in products whose 10 to 32 columns fill the micro-kernels badly. Here a block of
//! output pixels of one row keeps every output channel in registers (one to four vectors)
//! while the kernel's taps stream past: each input value is broadcast once per pixel and
//! multiplied into every channel. The bias starts the sums; PReLU (a slope of 1 for the plain
//! bias of the heads) ends them. One body serves both instruction sets ([`kernel!`]).
//!
//! The sums run in another order than the product's, so outputs differ from the im2col path
//! by rounding (within 1e-5 of the values here, `avx512f_direct_equals_im2col` and
//! `avx2_direct_equals_im2col`).

use super::sgemm::{avx2_available, avx512_available};
use super::{Buf, Conv, Epilogue};

/// The most output vectors kept in registers: 64 channels on AVX-512, 32 on AVX2.
const MAX_VECTORS: usize = 4;

/// The instruction set a [`Direct`] runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Isa {
    /// 16 lanes, 32 registers.
    Avx512,
    /// 8 lanes, 16 registers.
    Avx2,
}

impl Isa {
    fn lanes(self) -> usize {
        match self {
            Isa::Avx512 => 16,
            Isa::Avx2 => 8,
        }
    }

    /// The best this CPU has.
    fn here() -> Option<Self> {
        if avx512_available() {
            Some(Isa::Avx512)
        } else if avx2_available() {
            Some(Isa::Avx2)
        } else {
            None
        }
    }
}

/// A stride-1, unpadded convolution of at most [`MAX_VECTORS`] vectors of output channels,
/// with its weights laid out `[kh][kw][cin][vectors * lanes]` (zero past `cout`).
#[derive(Debug, Clone)]
pub(super) struct Direct {
    isa: Isa,
    kh: usize,
    kw: usize,
    cin: usize,
    cout: usize,
    vectors: usize,
    w: Vec<f32>,
    b: Vec<f32>,
    slopes: Vec<f32>,
}

impl Direct {
    /// `conv` with its epilogue as a direct convolution, where this CPU has AVX-512F (or AVX2
    /// and FMA) and the convolution fits: stride 1, no padding, at most 64 (32) output
    /// channels, a bias or PReLU epilogue. `None`: run it through im2col.
    pub(super) fn new(conv: &Conv, epilogue: Epilogue) -> Option<Self> {
        Self::layout(conv, epilogue, Isa::here()?)
    }

    fn layout(conv: &Conv, epilogue: Epilogue, isa: Isa) -> Option<Self> {
        let lanes = isa.lanes();
        let vectors = conv.cout.div_ceil(lanes);
        let fits = conv.stride == 1
            && conv.pad == [0; 4]
            && (1..=MAX_VECTORS).contains(&vectors)
            && conv.bf16w.is_none()
            && conv.i8w.is_none()
            && conv.seen.is_none();
        let slopes = match epilogue {
            Epilogue::BiasPrelu => conv.prelu.clone(),
            Epilogue::Bias => vec![1.0; conv.cout],
            _ => return None,
        };
        if !fits || slopes.len() != conv.cout {
            return None;
        }
        let width = vectors * lanes;
        let k = conv.kh * conv.kw * conv.cin;
        let src = conv.row_major();
        let mut w = vec![0.0; k * width];
        for (row, out) in src.chunks_exact(conv.cout).zip(w.chunks_exact_mut(width)) {
            out[..conv.cout].copy_from_slice(row);
        }
        let pad = |v: &[f32], fill: f32| {
            let mut p = vec![fill; width];
            p[..v.len()].copy_from_slice(v);
            p
        };
        Some(Self {
            isa,
            kh: conv.kh,
            kw: conv.kw,
            cin: conv.cin,
            cout: conv.cout,
            vectors,
            w,
            b: pad(&conv.b, 0.0),
            slopes: pad(&slopes, 1.0),
        })
    }

    /// Output channels.
    pub(super) fn cout(&self) -> usize {
        self.cout
    }

    /// Output size for an `h` x `w` input.
    pub(super) fn out_hw(&self, h: usize, w: usize) -> (usize, usize) {
        (h + 1 - self.kh, w + 1 - self.kw)
    }

    /// The convolution of `x` (all of its channels) into `out` (all of its channels).
    pub(super) fn run(&self, x: &Buf, out: &mut Buf) {
        let (oh, ow) = self.out_hw(x.h, x.w);
        assert!(
            x.c == self.cin && out.c == self.cout && out.n == x.n && (out.h, out.w) == (oh, ow),
            "fast path: direct convolution buffers do not fit"
        );
        let len = out.rows() * out.c;
        assert!(x.data.len() >= x.rows() * x.c && out.data.capacity() >= len);
        let row = self.row_fn();
        let dst = out.data.as_mut_ptr();
        for img in 0..x.n {
            for oy in 0..oh {
                // SAFETY: the row function is for an instruction set this CPU has (`new`, or
                // the tests' check); `x` holds its `rows * c` values and `out` has room for
                // its own (asserted above), and row `oy` of image `img` starts at this offset.
                unsafe { row(self, x, img, oy, dst.add((img * oh + oy) * ow * self.cout)) };
            }
        }
        // SAFETY: every value of every pixel of every output row was written (each row in
        // blocks and single pixels up to `ow`, each pixel's `cout` lanes), so the first `len`
        // values are set, whether `out` came empty (`Workspace::take_empty`) or full.
        unsafe { out.data.set_len(out.data.len().max(len)) };
    }

    /// The convolution of `x` followed by `k`x`k` max pooling of stride `k` (ceil mode,
    /// windows cut at the border, as `mtcnn::max_pool_ceil`), without the convolution's map:
    /// the `k` rows of each window row are computed into `scratch` and pooled at once, so the
    /// full-size map is never written out and read back. The values are those of the two
    /// steps apart, bit for bit (each window's maximum of the same values; see [`pool_row`]
    /// on why the order does not matter). `out` (the pooled size, `cout` channels) is
    /// overwritten.
    pub(super) fn run_pooled(&self, x: &Buf, k: usize, out: &mut Buf, scratch: &mut Vec<f32>) {
        let (oh, ow) = self.out_hw(x.h, x.w);
        let (ph, pw) = ceil_pool_hw(oh, ow, k, k);
        let c = self.cout;
        assert!(
            k > 0 && x.c == self.cin && out.c == c && out.n == x.n && (out.h, out.w) == (ph, pw),
            "fast path: pooled direct convolution buffers do not fit"
        );
        assert!(x.data.len() >= x.rows() * x.c);
        scratch.clear();
        scratch.resize(k * ow * c, 0.0);
        out.data.clear();
        out.data.reserve(out.rows() * c);
        let row = self.row_fn();
        let mut pooled = vec![0f32; pw * c];
        let mut columns = Vec::with_capacity(ow * c);
        for img in 0..x.n {
            for py in 0..ph {
                let rows = py * k..(py * k + k).min(oh);
                for (i, oy) in rows.clone().enumerate() {
                    // SAFETY: as in `run`; scratch row `i` holds `ow * cout` values.
                    unsafe { row(self, x, img, oy, scratch.as_mut_ptr().add(i * ow * c)) };
                }
                let rows = &scratch[..rows.len() * ow * c];
                match c {
                    // P-Net's first layer and O-Net's third: the channel loop unrolled.
                    10 => pool_row::<10>(rows, ow, k, &mut columns, &mut pooled),
                    64 => pool_row::<64>(rows, ow, k, &mut columns, &mut pooled),
                    _ => pool_row_any(rows, ow, k, c, &mut pooled),
                }
                out.data.extend_from_slice(&pooled);
            }
        }
    }

    /// The kernel's one-row function for this layer's instruction set and width.
    fn row_fn(&self) -> RowFn {
        #[cfg(target_arch = "x86_64")]
        {
            // Pixels per block: as many accumulators as leave registers for the weights and
            // the broadcast.
            match (self.isa, self.vectors) {
                (Isa::Avx512, 1) => Self::row_avx512::<12, 1>,
                (Isa::Avx512, 2) => Self::row_avx512::<8, 2>,
                (Isa::Avx512, 3) => Self::row_avx512::<6, 3>,
                (Isa::Avx512, _) => Self::row_avx512::<4, 4>,
                (Isa::Avx2, 1) => Self::row_avx2::<12, 1>,
                (Isa::Avx2, 2) => Self::row_avx2::<6, 2>,
                (Isa::Avx2, 3) => Self::row_avx2::<4, 3>,
                (Isa::Avx2, _) => Self::row_avx2::<3, 4>,
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        unreachable!("a direct convolution is only made where the CPU has AVX-512F or AVX2");
    }
}

/// Max pooling of `rows` (one window's rows of a map `ow` pixels wide, `C` channels) into
/// `pooled` (one output row), windows `k` wide cut at the border: the rows' maximum first,
/// column by column (into `columns`), then each window's pixels. PReLU's outputs are never
/// NaN or -0.0, so the maximum is the same value in any order, bit for bit, as
/// `mtcnn::max_pool_ceil` gives.
fn pool_row<const C: usize>(
    rows: &[f32],
    ow: usize,
    k: usize,
    columns: &mut Vec<f32>,
    pooled: &mut [f32],
) {
    let mut lines = rows.chunks_exact(ow * C);
    let first = lines.next().expect("a window row");
    columns.clear();
    match lines.next() {
        Some(second) => columns.extend(
            first
                .iter()
                .zip(second)
                .map(|(&a, &b)| if b > a { b } else { a }),
        ),
        None => columns.extend_from_slice(first),
    }
    for line in lines {
        for (d, &v) in columns.iter_mut().zip(line) {
            *d = if v > *d { v } else { *d };
        }
    }
    for (px, window) in pooled.chunks_exact_mut(C).enumerate() {
        let window: &mut [f32; C] = window.try_into().expect("C channels");
        let first = px * k;
        *window = columns[first * C..(first + 1) * C]
            .try_into()
            .expect("C channels");
        for ix in first + 1..(first + k).min(ow) {
            let v: &[f32; C] = columns[ix * C..(ix + 1) * C]
                .try_into()
                .expect("C channels");
            for (d, &v) in window.iter_mut().zip(v) {
                *d = if v > *d { v } else { *d };
            }
        }
    }
}

/// [`pool_row`] for any number of channels.
fn pool_row_any(rows: &[f32], ow: usize, k: usize, c: usize, pooled: &mut [f32]) {
    pooled.fill(f32::NEG_INFINITY);
    for (px, window) in pooled.chunks_exact_mut(c).enumerate() {
        for line in rows.chunks_exact(ow * c) {
            for ix in px * k..(px * k + k).min(ow) {
                for (d, &v) in window.iter_mut().zip(&line[ix * c..(ix + 1) * c]) {
                    *d = if v > *d { v } else { *d };
                }
            }
        }
    }
}

/// Output size of a ceil-mode pooling without padding (every window starts inside the map).
pub(super) fn ceil_pool_hw(h: usize, w: usize, k: usize, s: usize) -> (usize, usize) {
    (
        h.saturating_sub(k).div_ceil(s) + 1,
        w.saturating_sub(k).div_ceil(s) + 1,
    )
}

/// One output row of a direct convolution: `(layer, x, image, row, where the row goes)`.
///
/// # Safety
/// The CPU has the row function's instruction set; `x` fits the layer, the row lies in its
/// output, and the destination has room for the row's `ow * cout` values.
type RowFn = unsafe fn(&Direct, &Buf, usize, usize, *mut f32);

/// The kernel for one instruction set: `$rows` runs one output row in blocks of `P` pixels
/// and a tail of single pixels, `$block` one block (all channels, in `V` vectors). The
/// vector operations are the instruction set's intrinsics; `$store` writes the first `n`
/// lanes of a vector.
macro_rules! kernel {
    ($feature:literal, $rows:ident, $block:ident, $lanes:literal,
     zero: $zero:path, load: $load:path, splat: $splat:path, fma: $fma:path,
     min: $min:path, max: $max:path, store: $store:path) => {
        #[cfg(target_arch = "x86_64")]
        impl Direct {
            /// Output row `oy` of image `img` into `line`, in blocks of `P` pixels and a tail
            /// of single pixels.
            ///
            /// # Safety
            /// As [`RowFn`].
            #[target_feature(enable = $feature)]
            unsafe fn $rows<const P: usize, const V: usize>(
                &self,
                x: &Buf,
                img: usize,
                oy: usize,
                line: *mut f32,
            ) {
                let (_, ow) = self.out_hw(x.h, x.w);
                let mut ox = 0;
                while ox + P <= ow {
                    // SAFETY: pixels `ox..ox + P` of row `oy` exist in the output, and their
                    // taps in the input (the caller's guarantee).
                    unsafe { self.$block::<P, V>(x, img, oy, ox, line) };
                    ox += P;
                }
                while ox < ow {
                    // SAFETY: as above, for one pixel.
                    unsafe { self.$block::<1, V>(x, img, oy, ox, line) };
                    ox += 1;
                }
            }

            /// # Safety
            /// The CPU has the instruction set; pixels `ox..ox + P` of row `oy` lie in the
            /// output, so their taps (rows `oy..oy + kh`, columns `ox..ox + P + kw - 1`) lie
            /// in `x`.
            #[target_feature(enable = $feature)]
            #[inline]
            unsafe fn $block<const P: usize, const V: usize>(
                &self,
                x: &Buf,
                img: usize,
                oy: usize,
                ox: usize,
                line: *mut f32,
            ) {
                const LANES: usize = $lanes;
                let cin = self.cin;
                let width = self.vectors * LANES;
                let src = x.data.as_ptr();
                let wp = self.w.as_ptr();
                // SAFETY: every pointer below stays inside its buffer (the caller's guarantee
                // for `x` and `dst`; `w`, `b` and `slopes` hold `width` values per tap and
                // channel).
                unsafe {
                    let mut acc = [[$zero(); V]; P];
                    for row in acc.iter_mut() {
                        for (v, a) in row.iter_mut().enumerate() {
                            *a = $load(self.b.as_ptr().add(v * LANES));
                        }
                    }
                    for dy in 0..self.kh {
                        let line = src.add(((img * x.h + oy + dy) * x.w + ox) * cin);
                        for dx in 0..self.kw {
                            let taps = wp.add((dy * self.kw + dx) * cin * width);
                            let pixels = line.add(dx * cin);
                            for ic in 0..cin {
                                let mut wv = [$zero(); V];
                                for (v, w) in wv.iter_mut().enumerate() {
                                    *w = $load(taps.add(ic * width + v * LANES));
                                }
                                for (p, row) in acc.iter_mut().enumerate() {
                                    let xv = $splat(*pixels.add(p * cin + ic));
                                    for (a, w) in row.iter_mut().zip(&wv) {
                                        *a = $fma(xv, *w, *a);
                                    }
                                }
                            }
                        }
                    }
                    let zero = $zero();
                    for (p, row) in acc.iter().enumerate() {
                        let o = line.add((ox + p) * self.cout);
                        for (v, a) in row.iter().enumerate() {
                            // max(t, 0) + slope * min(t, 0), as the im2col path's epilogue.
                            let s = $load(self.slopes.as_ptr().add(v * LANES));
                            let y = $fma(s, $min(*a, zero), $max(*a, zero));
                            let n = (self.cout - v * LANES).min(LANES);
                            $store(o.add(v * LANES), y, n);
                        }
                    }
                }
            }
        }
    };
}

kernel!("avx512f", row_avx512, block_avx512, 16,
    zero: std::arch::x86_64::_mm512_setzero_ps, load: std::arch::x86_64::_mm512_loadu_ps,
    splat: std::arch::x86_64::_mm512_set1_ps, fma: std::arch::x86_64::_mm512_fmadd_ps,
    min: std::arch::x86_64::_mm512_min_ps, max: std::arch::x86_64::_mm512_max_ps,
    store: store_avx512);

kernel!("avx2,fma", row_avx2, block_avx2, 8,
    zero: std::arch::x86_64::_mm256_setzero_ps, load: std::arch::x86_64::_mm256_loadu_ps,
    splat: std::arch::x86_64::_mm256_set1_ps, fma: std::arch::x86_64::_mm256_fmadd_ps,
    min: std::arch::x86_64::_mm256_min_ps, max: std::arch::x86_64::_mm256_max_ps,
    store: store_avx2);

/// The first `n` (1 to 16) lanes of `v` to `p`.
///
/// # Safety
/// AVX-512F is present; `p` has room for `n` floats.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn store_avx512(p: *mut f32, v: std::arch::x86_64::__m512, n: usize) {
    let mask = if n >= 16 { 0xffff } else { (1u16 << n) - 1 };
    // SAFETY: the masked store writes only the first `n` floats (the caller's guarantee).
    unsafe { std::arch::x86_64::_mm512_mask_storeu_ps(p, mask, v) }
}

/// The first `n` (1 to 8) lanes of `v` to `p`.
///
/// # Safety
/// AVX2 is present; `p` has room for `n` floats.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn store_avx2(p: *mut f32, v: std::arch::x86_64::__m256, n: usize) {
    use std::arch::x86_64::*;
    // SAFETY: a whole vector where `n` is 8; else the lanes go through a copy, `n` floats.
    unsafe {
        if n >= 8 {
            _mm256_storeu_ps(p, v);
        } else {
            let mut lanes = [0f32; 8];
            _mm256_storeu_ps(lanes.as_mut_ptr(), v);
            std::ptr::copy_nonoverlapping(lanes.as_ptr(), p, n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fast::{Par, Workspace};

    /// An `n`x`h`x`w`x`c` map of values in [-0.5, 0.5) from `seed`.
    fn random_map(n: usize, h: usize, w: usize, c: usize, seed: u32) -> Buf {
        let mut s = seed;
        let data = (0..n * h * w * c)
            .map(|_| {
                s = s.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                (s >> 9) as f32 / (1u32 << 23) as f32 - 0.5
            })
            .collect();
        Buf { data, n, h, w, c }
    }

    /// A map of NaNs, for outputs that must be written whole.
    fn nan_map(n: usize, h: usize, w: usize, c: usize) -> Buf {
        Buf {
            data: vec![f32::NAN; n * h * w * c],
            n,
            h,
            w,
            c,
        }
    }

    fn conv(kh: usize, kw: usize, cin: usize, cout: usize, seed: u32) -> Conv {
        let mut s = seed;
        let mut next = move || {
            s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (s >> 8) as f32 / (1u32 << 24) as f32 - 0.5
        };
        let w: Vec<f32> = (0..kh * kw * cin * cout).map(|_| next()).collect();
        let b: Vec<f32> = (0..cout).map(|_| next()).collect();
        let mut c = Conv::dense(kh * kw * cin, cout, w, b);
        (c.kh, c.kw, c.cin) = (kh, kw, cin);
        c.prelu = (0..cout).map(|_| next() + 0.5).collect();
        c
    }

    /// Every shape of MTCNN's layers that runs direct (P-Net's, R-Net's and O-Net's first
    /// layers, the 2x2 and 1x1 ones, the heads), and channel counts that leave a partial
    /// vector, on `isa`: the same outputs as im2col and the product, within 1e-5, on maps
    /// whose width leaves a tail of single pixels. Shapes beyond the instruction set's
    /// registers, strided ones and other epilogues are left to im2col.
    fn direct_equals_im2col(isa: Isa) {
        let shapes = [
            (3, 3, 3, 10),
            (3, 3, 10, 16),
            (3, 3, 16, 32),
            (1, 1, 32, 6),
            (3, 3, 3, 28),
            (2, 2, 48, 64),
            (3, 3, 7, 45),
            (1, 1, 5, 1),
        ];
        let mut ran = 0;
        for (i, &(kh, kw, cin, cout)) in shapes.iter().enumerate() {
            let c = conv(kh, kw, cin, cout, i as u32 + 1);
            for epilogue in [Epilogue::BiasPrelu, Epilogue::Bias] {
                let Some(d) = Direct::layout(&c, epilogue, isa) else {
                    assert!(cout > MAX_VECTORS * isa.lanes(), "{kh}x{kw} {cin}->{cout}");
                    continue;
                };
                ran += 1;
                let (n, h, w) = (2, 9 + i, 23 + 2 * i);
                let x = random_map(n, h, w, cin, 7 + i as u32);
                let (oh, ow) = c.out_hw(h, w);
                let blank = || nan_map(n, oh, ow, cout);
                let (mut want, mut got) = (blank(), blank());
                c.run(&x, 0, &mut want, 0, epilogue, &mut Vec::new(), Par::Single);
                d.run(&x, &mut got);
                // Into an empty buffer (`Workspace::take_empty`, stale values past its
                // length): the same values, every one written and the length set.
                let mut ws = Workspace::default();
                ws.give(Buf {
                    data: vec![f32::NAN; n * oh * ow * cout + 5],
                    ..blank()
                });
                let mut empty = ws.take_empty(n, oh, ow, cout);
                assert!(empty.data.is_empty());
                d.run(&x, &mut empty);
                assert!(
                    empty
                        .data
                        .iter()
                        .map(|v| v.to_bits())
                        .eq(got.data.iter().map(|v| v.to_bits())),
                    "{isa:?} {kh}x{kw} {cin}->{cout}: an empty buffer was not filled as a full one"
                );
                for (j, (a, b)) in got.data.iter().zip(&want.data).enumerate() {
                    assert!(
                        (a - b).abs() <= 1e-5 * (1.0 + b.abs()),
                        "{isa:?} {kh}x{kw} {cin}->{cout} {epilogue:?}: value {j}: {a} against {b}"
                    );
                }
            }
        }
        assert!(ran >= 12, "{isa:?}: only {ran} shapes ran direct");
        let mut strided = conv(3, 3, 3, 10, 1);
        strided.stride = 2;
        assert!(Direct::layout(&strided, Epilogue::BiasPrelu, isa).is_none());
        assert!(Direct::layout(&conv(3, 3, 3, 80, 1), Epilogue::Bias, isa).is_none());
        assert!(Direct::layout(&conv(3, 3, 3, 10, 1), Epilogue::BiasRelu, isa).is_none());
    }

    /// A direct convolution with the pooling after it in one pass gives the bits of the two
    /// steps apart: P-Net's first layer and its 2x2 pooling, O-Net's third and its 2x2,
    /// partial vectors of 45 and 21 channels (the unspecialised pooling) with 2x2 and 3x3
    /// windows, on maps of odd and even sizes (windows cut at the border).
    fn pooled_equals_conv_then_pool(isa: Isa) {
        let mut ran = 0;
        for (i, &(kh, kw, cin, cout, k)) in [
            (3, 3, 3, 10, 2),
            (3, 3, 64, 64, 2),
            (3, 3, 7, 45, 2),
            (3, 3, 7, 45, 3),
            (2, 2, 5, 10, 2),
            (3, 3, 4, 21, 3),
        ]
        .iter()
        .enumerate()
        {
            let c = conv(kh, kw, cin, cout, 40 + i as u32);
            let Some(d) = Direct::layout(&c, Epilogue::BiasPrelu, isa) else {
                continue;
            };
            for (h, w) in [(13, 17), (12, 16), (5, 4)] {
                ran += 1;
                let n = 2;
                let x = random_map(n, h, w, cin, 3 + (h * w) as u32);
                let (oh, ow) = d.out_hw(h, w);
                let mut map = Buf {
                    data: Vec::with_capacity(n * oh * ow * cout),
                    n,
                    h: oh,
                    w: ow,
                    c: cout,
                };
                d.run(&x, &mut map);
                let (ph, pw) = ceil_pool_hw(oh, ow, k, k);
                let blank = || nan_map(n, ph, pw, cout);
                let (mut want, mut got) = (blank(), blank());
                crate::fast::mtcnn::max_pool_ceil(&map, k, k, &mut want);
                d.run_pooled(&x, k, &mut got, &mut Vec::new());
                assert!(
                    got.data
                        .iter()
                        .map(|v| v.to_bits())
                        .eq(want.data.iter().map(|v| v.to_bits())),
                    "{isa:?} {kh}x{kw} {cin}->{cout}, pool {k}, {h}x{w}"
                );
                assert!(want.data.iter().all(|v| v.is_finite()));
            }
        }
        assert!(ran >= 9, "{isa:?}: only {ran} pooled runs");
    }

    #[test]
    #[ignore = "needs AVX-512F: `cargo test --release -- --ignored avx512f` where the CPU has it"]
    fn avx512f_direct_equals_im2col() {
        assert!(avx512_available(), "this CPU has no AVX-512F");
        direct_equals_im2col(Isa::Avx512);
        pooled_equals_conv_then_pool(Isa::Avx512);
        // Where the CPU has AVX-512F, that is what runs.
        let c = conv(3, 3, 3, 10, 1);
        let d = Direct::new(&c, Epilogue::BiasPrelu).unwrap();
        assert_eq!(d.isa, Isa::Avx512);
    }

    #[test]
    #[cfg_attr(
        not(target_arch = "x86_64"),
        ignore = "needs AVX2 and FMA (x86-64): `cargo test --release -- --ignored avx2` where the CPU has them"
    )]
    fn avx2_direct_equals_im2col() {
        assert!(avx2_available(), "this CPU has no AVX2 and FMA");
        direct_equals_im2col(Isa::Avx2);
        pooled_equals_conv_then_pool(Isa::Avx2);
    }
}
