//! int8 matrix products for the opt-in [`super::Precision::Int8`] mode, on AVX2.
//!
//! A convolution's input (non-negative: every convolution quantized here reads ReLU outputs)
//! is rounded to unsigned 8-bit steps of a scale fixed by calibration (`x ≈ s_a * q`,
//! `q = 0..=255`), its weights to signed steps of one scale per output channel
//! (`w ≈ s_w[c] * v`, `v = -63..=63`); the sums of `q * v` are exact in 32-bit integers, and
//! `s_a * s_w[c]` turns them back into f32 before the usual epilogue.
//!
//! The AVX2 micro-kernel multiplies with `vpmaddubsw` (32 unsigned by signed byte products,
//! adjacent pairs summed into 16 bits) and `vpmaddwd` by ones (adjacent 16-bit pairs into 32
//! bits): 32 multiply-adds in two multiplier instructions, against 8 for an f32 FMA; on two
//! Zen 3 cores a chain of them ran 1.9x the multiply-adds per second of `vfmadd231ps`. Weights
//! use 7 bits so that `vpmaddubsw`'s 16-bit pair sums cannot saturate
//! (`2 * 255 * 63 = 32130 < 32767`), which makes every product exact.
//!
//! Weights are packed once into panels of [`NR`] columns and four consecutive `k` per 32-bit
//! lane (`[panel][k / 4][NR][4]`, zero past `k` and past the last column); the left operand is
//! quantized into a per-thread buffer, [`MC`] rows at a time, as it is read.

/// Columns per weight panel (two AVX registers of 32-bit sums).
pub(crate) const NR: usize = 16;
/// Output rows per micro-kernel call.
pub(crate) const MR: usize = 4;
/// Rows quantized and multiplied per block.
const MC: usize = 96;
/// The largest weight step: 7 bits (see the module comment).
const WMAX: f32 = 63.0;
/// The largest activation step.
const AMAX: f32 = 255.0;

/// A `k x n` weight matrix quantized per output channel and packed for the kernel, with the
/// activation scale of the convolution's input.
#[derive(Debug, Clone)]
pub(crate) struct Packed {
    k: usize,
    /// `k` rounded up to 4.
    kp: usize,
    n: usize,
    data: Vec<i8>,
    /// Per column (padded to whole panels): `s_a * s_w[c]`.
    deq: Vec<f32>,
    /// `1 / s_a`.
    inv_act: f32,
}

impl Packed {
    /// Quantizes and packs `w` (`k` rows of `n` floats, row-major) for inputs in `0..=act_max`.
    pub(crate) fn new(w: &[f32], k: usize, n: usize, act_max: f32) -> Self {
        assert_eq!(w.len(), k * n, "weights are k x n");
        let kp = k.next_multiple_of(4);
        let panels = n.div_ceil(NR);
        let s_a = if act_max > 0.0 { act_max / AMAX } else { 1.0 };
        let mut deq = vec![0.0f32; panels * NR];
        let mut s_w = vec![0.0f32; n];
        for (c, s) in s_w.iter_mut().enumerate() {
            let m = (0..k).map(|r| w[r * n + c].abs()).fold(0.0f32, f32::max);
            *s = if m > 0.0 { m / WMAX } else { 1.0 };
            deq[c] = s_a * *s;
        }
        let mut data = vec![0i8; panels * kp * NR];
        for p in 0..panels {
            for r in 0..k {
                for j in 0..NR.min(n - p * NR) {
                    let c = p * NR + j;
                    let v = (w[r * n + c] / s_w[c]).round().clamp(-WMAX, WMAX) as i8;
                    data[p * kp * NR + (r / 4) * NR * 4 + j * 4 + r % 4] = v;
                }
            }
        }
        Self {
            k,
            kp,
            n,
            data,
            deq,
            inv_act: 1.0 / s_a,
        }
    }

    /// The weights as the kernel sees them, back in f32 (`s_w[c] * v`), `k x n` row-major:
    /// for the tests' reference product.
    #[cfg(test)]
    fn dequantized(&self) -> Vec<f32> {
        let s_a = 1.0 / self.inv_act;
        let mut w = vec![0.0f32; self.k * self.n];
        for r in 0..self.k {
            for c in 0..self.n {
                let (p, j) = (c / NR, c % NR);
                let v = self.data[p * self.kp * NR + (r / 4) * NR * 4 + j * 4 + r % 4];
                w[r * self.n + c] = f32::from(v) * self.deq[c] / s_a;
            }
        }
        w
    }
}

/// Whether this CPU runs the int8 kernel (AVX2).
pub(crate) fn available() -> bool {
    super::sgemm::avx2_available()
}

thread_local! {
    /// Quantized rows of the left operand, kept per thread.
    static QROWS: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
}

/// `c[0..m, 0..n] (+)= beta * a[0..m, 0..k] x w[0..k, c0..c0 + n]` with `a` quantized to the
/// weights' activation scale and the products in integers.
///
/// # Safety
/// The CPU has AVX2; `a` holds `m` rows of `w.k` floats at stride `lda`; `c0` is a multiple
/// of [`NR`] and `c0 + n <= w.n`; `out` holds `m` rows of `n` floats at stride `out.ldc`,
/// overlapping neither `a` nor `w`, and nothing else touches it meanwhile.
pub(crate) unsafe fn gemm(
    m: usize,
    n: usize,
    a: *const f32,
    lda: usize,
    w: &Packed,
    c0: usize,
    out: super::sgemm::Out,
) {
    debug_assert!(c0.is_multiple_of(NR) && c0 + n <= w.n);
    let (k, kp) = (w.k, w.kp);
    let p0 = c0 / NR;
    let mut q = QROWS.take();
    if q.len() < MC * kp {
        q.resize(MC * kp, 0);
    }
    for i0 in (0..m).step_by(MC) {
        let mc = MC.min(m - i0);
        for r in 0..mc {
            // SAFETY: row i0 + r of `a` holds k floats (caller); the row of `q` holds kp.
            unsafe {
                let src = std::slice::from_raw_parts(a.add((i0 + r) * lda), k);
                imp::quantize(src, &mut q[r * kp..(r + 1) * kp], w.inv_act);
            }
        }
        for jp in 0..n.div_ceil(NR) {
            let nr = NR.min(n - jp * NR);
            let p = p0 + jp;
            for ir in (0..mc).step_by(MR) {
                let mr = MR.min(mc - ir);
                // SAFETY: panel p holds kp / 4 steps of NR x 4 bytes; rows and columns of
                // `out` as the caller vouches.
                unsafe {
                    let tile = super::sgemm::Tile {
                        c: out.ptr.add((i0 + ir) * out.ldc + jp * NR),
                        ldc: out.ldc,
                        mr,
                        nr,
                        overwrite: !out.accumulate,
                        beta: out.beta,
                    };
                    let operands = imp::Operands {
                        steps: kp / 4,
                        a: q.as_ptr().add(ir * kp),
                        lda: kp,
                        b: w.data.as_ptr().add(p * kp * NR),
                        deq: w.deq.as_ptr().add(p * NR),
                    };
                    imp::kernel(operands, tile);
                }
            }
        }
    }
    QROWS.set(q);
}

#[cfg(target_arch = "x86_64")]
mod imp {
    use super::super::sgemm::{Tile, store};
    use super::{AMAX, MR, NR};
    use std::arch::x86_64::*;

    /// One micro-kernel call's inputs: `steps` groups of four `k`, the quantized rows `a`
    /// (stride `lda` bytes), the panel `b` (`steps` x [`NR`] x 4 bytes) and its [`NR`]
    /// dequantization factors `deq`.
    #[derive(Clone, Copy)]
    pub(super) struct Operands {
        pub(super) steps: usize,
        pub(super) a: *const u8,
        pub(super) lda: usize,
        pub(super) b: *const i8,
        pub(super) deq: *const f32,
    }

    /// `dst[..src.len()] = round(src * inv)` clamped to `0..=255`, zeros after.
    ///
    /// # Safety
    /// AVX2.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn quantize(src: &[f32], dst: &mut [u8], inv: f32) {
        let k = src.len();
        let body = k - k % 32;
        // SAFETY: 32 floats are read from `src[j..]` and 32 bytes written to `dst[j..]` for
        // j + 32 <= body <= k <= dst.len().
        unsafe {
            let s = _mm256_set1_ps(inv);
            let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
            for j in (0..body).step_by(32) {
                let p = src.as_ptr().add(j);
                let i: [__m256i; 4] = std::array::from_fn(|h| {
                    _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(p.add(8 * h)), s))
                });
                let lo = _mm256_packs_epi32(i[0], i[1]);
                let hi = _mm256_packs_epi32(i[2], i[3]);
                let u = _mm256_permutevar8x32_epi32(_mm256_packus_epi16(lo, hi), order);
                _mm256_storeu_si256(dst.as_mut_ptr().add(j).cast(), u);
            }
        }
        for (d, x) in dst[body..k].iter_mut().zip(&src[body..]) {
            *d = (x * inv).round_ties_even().clamp(0.0, AMAX) as u8;
        }
        dst[k..].fill(0);
    }

    /// `tile (+)= beta * deq * (a x b)`: a full tile or a short one on a body of its own
    /// height.
    ///
    /// # Safety
    /// AVX2; `o.a` holds `t.mr` (<= [`MR`]) rows of `4 * o.steps` bytes; the tile is writable.
    #[inline]
    pub(super) unsafe fn kernel(o: Operands, t: Tile) {
        // SAFETY: forwarded from the caller.
        unsafe {
            match t.mr {
                MR => kernel_rows::<4>(o, t),
                3 => kernel_rows::<3>(o, t),
                2 => kernel_rows::<2>(o, t),
                _ => kernel_rows::<1>(o, t),
            }
        }
    }

    /// The micro-kernel for `R` rows: per step, two 32-byte weight loads (16 columns x 4
    /// `k`), one 4-byte broadcast per row, and per row and half `vpmaddubsw`, `vpmaddwd` by
    /// ones and an add; the sums are scaled to f32 and stored as the f32 kernel stores.
    ///
    /// # Safety
    /// As [`kernel`], with `t.mr == R`.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn kernel_rows<const R: usize>(o: Operands, t: Tile) {
        debug_assert_eq!(t.mr, R);
        // SAFETY: every pointer stays inside what the caller vouches for.
        unsafe {
            let ones = _mm256_set1_epi16(1);
            let mut acc = [[_mm256_setzero_si256(); 2]; R];
            let mut bp = o.b;
            for s in 0..o.steps {
                let b0 = _mm256_loadu_si256(bp.cast());
                let b1 = _mm256_loadu_si256(bp.add(32).cast());
                for (i, acc) in acc.iter_mut().enumerate() {
                    let row = o.a.add(i * o.lda + 4 * s);
                    let x = _mm256_set1_epi32(row.cast::<i32>().read_unaligned());
                    let p0 = _mm256_madd_epi16(_mm256_maddubs_epi16(x, b0), ones);
                    let p1 = _mm256_madd_epi16(_mm256_maddubs_epi16(x, b1), ones);
                    acc[0] = _mm256_add_epi32(acc[0], p0);
                    acc[1] = _mm256_add_epi32(acc[1], p1);
                }
                bp = bp.add(NR * 4);
            }
            let d = [_mm256_loadu_ps(o.deq), _mm256_loadu_ps(o.deq.add(8))];
            let sums: [[__m256; 2]; R] = std::array::from_fn(|i| {
                std::array::from_fn(|h| _mm256_mul_ps(_mm256_cvtepi32_ps(acc[i][h]), d[h]))
            });
            store(&sums, t);
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod imp {
    use super::super::sgemm::Tile;

    /// Never built: the int8 kernel is unavailable off x86-64.
    #[derive(Clone, Copy)]
    pub(super) struct Operands {
        pub(super) steps: usize,
        pub(super) a: *const u8,
        pub(super) lda: usize,
        pub(super) b: *const i8,
        pub(super) deq: *const f32,
    }

    /// Never called: the int8 kernel runs on x86-64 only.
    pub(super) unsafe fn quantize(_: &[f32], _: &mut [u8], _: f32) {
        unreachable!("the int8 kernel runs on x86-64 only")
    }

    /// Never called: the int8 kernel runs on x86-64 only.
    pub(super) unsafe fn kernel(_: Operands, _: Tile) {
        unreachable!("the int8 kernel runs on x86-64 only")
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;

    fn lcg(seed: &mut u64) -> f32 {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((*seed >> 40) as f32) / (1u64 << 24) as f32
    }

    /// The kernel against a plain product of the quantized operands, over shapes with short
    /// row tiles, partial panels, `k` off the multiple of 4 and 32, row strides, a column
    /// offset and both store modes: equal up to f32 rounding of the final scaling.
    #[test]
    fn int8_product_matches_the_quantized_reference() {
        assert!(
            available(),
            "this machine lacks AVX2: run this test where it has it"
        );
        let mut seed = 7;
        for &(m, k, n, c0, acc) in &[
            (1, 3, 5, 0, false),
            (7, 37, 33, 16, true),
            (13, 64, 48, 0, false),
            (101, 290, 40, 16, true),
            (4, 1792, 16, 0, false),
        ] {
            let w: Vec<f32> = (0..k * n).map(|_| lcg(&mut seed) - 0.5).collect();
            let lda = k + 3;
            let a: Vec<f32> = (0..m * lda).map(|_| 2.0 * lcg(&mut seed)).collect();
            let packed = Packed::new(&w, k, n, 2.0);
            let wq = packed.dequantized();
            let ncols = n - c0;
            let ldc = ncols + 2;
            let mut c: Vec<f32> = (0..m * ldc).map(|_| lcg(&mut seed)).collect();
            let before = c.clone();
            let beta = 0.5;
            let out = super::super::sgemm::Out {
                ptr: c.as_mut_ptr(),
                ldc,
                accumulate: acc,
                beta,
            };
            // SAFETY: AVX2 asserted above; the shapes are as `gemm` requires.
            unsafe { gemm(m, ncols, a.as_ptr(), lda, &packed, c0, out) };
            let s_a = 1.0 / packed.inv_act;
            for i in 0..m {
                for j in 0..ncols {
                    let mut sum = 0.0f64;
                    for r in 0..k {
                        let q = (a[i * lda + r] * packed.inv_act)
                            .round_ties_even()
                            .clamp(0.0, 255.0);
                        sum += f64::from(q * s_a) * f64::from(wq[r * n + c0 + j]);
                    }
                    let base = if acc { before[i * ldc + j] } else { 0.0 };
                    let want = f64::from(base) + f64::from(beta) * sum;
                    let got = f64::from(c[i * ldc + j]);
                    assert!(
                        (got - want).abs() <= 1e-4 * (1.0 + want.abs()),
                        "m={m} k={k} n={n} row {i} column {j}: {got} != {want}"
                    );
                }
                for j in ncols..ldc {
                    assert_eq!(c[i * ldc + j], before[i * ldc + j], "wrote past the block");
                }
            }
        }
    }
}
