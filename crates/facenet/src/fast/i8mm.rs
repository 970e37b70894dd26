//! int8 matrix products for the opt-in [`super::Precision::Int8`] mode, on four kernel
//! families ([`Int8Kernel`]), picked at run time.
//!
//! A convolution's input (non-negative: every convolution quantized here reads ReLU outputs)
//! is rounded to unsigned 8-bit steps of a scale fixed by calibration (`x ≈ s_a * q`,
//! `q = 0..=255`), its weights to signed steps of one scale per output channel
//! (`w ≈ s_w[c] * v`, `v = -63..=63`); the sums of `q * v` are exact in 32-bit integers, and
//! `s_a * s_w[c]` turns them back into f32 before the usual epilogue.
//!
//! Weights are packed once into panels of [`NR`] columns and four consecutive `k` per 32-bit
//! lane (`[panel][k / 4][NR][4]`, zero past `k` and past the last column): per step of four
//! `k`, a panel is 64 bytes, two AVX registers or one AVX-512 register. The left operand is
//! quantized into a per-thread buffer, [`MC`] rows at a time, as it is read, and each row's
//! four bytes of a step are broadcast to every 32-bit lane.
//!
//! - [`Int8Kernel::Avx2`] multiplies with `vpmaddubsw` (32 unsigned by signed byte products,
//!   adjacent pairs summed into 16 bits) and `vpmaddwd` by ones (adjacent 16-bit pairs into
//!   32 bits): 32 multiply-adds in two multiplier instructions, against 8 for an f32 FMA; on
//!   two Zen 3 cores a chain of them ran 1.9x the multiply-adds per second of `vfmadd231ps`.
//!   Weights use 7 bits so that `vpmaddubsw`'s 16-bit pair sums cannot saturate
//!   (`2 * 255 * 63 = 32130 < 32767`), which makes every product exact. 4 rows x 16 columns.
//! - [`Int8Kernel::AvxVnni`] does the same in one instruction, `vpdpbusd` on AVX registers
//!   (AVX-VNNI): four byte products summed straight into each 32-bit lane. 6 rows x 16.
//! - [`Int8Kernel::Avx512Vnni`], `vpdpbusd` on AVX-512 registers: 64 multiply-adds per
//!   instruction; 8 rows x 32 columns (two panels), sixteen accumulators.
//! - [`Int8Kernel::Amx`], `tdpbusd` on Intel AMX tiles (`fast/amx.rs`): 16,384 multiply-adds
//!   per instruction; 32 rows x 32 columns (two panels), four 16x16 tiles of sums. A panel's
//!   16 steps are one right-operand tile, so its weights are packed as above with `k` padded
//!   to 64.
//!
//! All four compute the same exact integer sums and scale them alike, so their outputs are
//! equal bit for bit (the tests hold them to that); the 7-bit weights cost the VNNI families
//! nothing.

/// Columns per weight panel (two AVX registers of 32-bit sums, one AVX-512 register).
pub(crate) const NR: usize = 16;
/// Rows quantized and multiplied per block.
const MC: usize = 96;
// AMX multiplies 32 rows from any multiple of 32 below MC: they must lie in the block.
const _: () = assert!(MC.is_multiple_of(32));
/// The largest weight step: 7 bits (see the module comment).
const WMAX: f32 = 63.0;
/// The largest activation step.
const AMAX: f32 = 255.0;

/// The instructions that run the int8 products.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Int8Kernel {
    /// `tdpbusd` on Intel AMX tiles (AMX-INT8).
    Amx,
    /// `vpdpbusd` on AVX-512 registers (AVX-512 VNNI).
    Avx512Vnni,
    /// `vpdpbusd` on AVX registers (AVX-VNNI).
    AvxVnni,
    /// `vpmaddubsw` + `vpmaddwd` (AVX2).
    Avx2,
}

impl Int8Kernel {
    /// Every family, fastest first.
    pub const ALL: [Int8Kernel; 4] = [
        Int8Kernel::Amx,
        Int8Kernel::Avx512Vnni,
        Int8Kernel::AvxVnni,
        Int8Kernel::Avx2,
    ];

    /// Its name as `FACENET_INT8_KERNEL` and the benchmarks spell it.
    pub fn name(self) -> &'static str {
        match self {
            Int8Kernel::Amx => "amx-int8",
            Int8Kernel::Avx512Vnni => "avx512-vnni",
            Int8Kernel::AvxVnni => "avx-vnni",
            Int8Kernel::Avx2 => "avx2-int8",
        }
    }

    /// Whether this CPU runs it (checked once per process).
    pub fn available(self) -> bool {
        imp::available(self)
    }

    /// Whether its products replace the f32 Winograd ones in int8 mode (the 3x3, 1x7 and 7x1
    /// convolutions on enough tiles): `vpdpbusd` does four f32 FMAs' multiply-adds, as many
    /// as F(4x4, 3x3) saves before its transforms and more than F(2, 7)'s 1.75x (AMX's
    /// `tdpbusd` far more), while AVX2's
    /// `vpmaddubsw` pair does 1.9x. On two Zen 5 cores, `avx512-vnni` ran 1.2x more images per
    /// second with int8 in their place at batch 1 and 32; `avx-vnni` 1.06x at batch 1 and
    /// about as many at 32; `avx2-int8` 0.9-1.0x at batch 32, so it keeps Winograd.
    pub fn replaces_winograd(self) -> bool {
        self != Int8Kernel::Avx2
    }

    /// What the family needs, in words.
    pub fn requirement(self) -> &'static str {
        match self {
            Int8Kernel::Amx => {
                "Intel AMX (AMX-TILE and AMX-INT8: Xeon Sapphire Rapids or later) on Linux 5.16 \
                 or later"
            }
            Int8Kernel::Avx512Vnni => {
                "AVX-512 VNNI (Cascade Lake, Ice Lake, Sapphire Rapids or later, AMD Zen 4 or \
                 later)"
            }
            Int8Kernel::AvxVnni => "AVX-VNNI (Alder Lake, Sapphire Rapids or later, AMD Zen 5)",
            Int8Kernel::Avx2 => "AVX2",
        }
    }

    /// How the engine description names it.
    pub fn describe(self) -> &'static str {
        match self {
            Int8Kernel::Amx => "AMX tiles",
            Int8Kernel::Avx512Vnni => "AVX-512 VNNI dot products",
            Int8Kernel::AvxVnni => "AVX-VNNI dot products",
            Int8Kernel::Avx2 => "AVX2 int8 products",
        }
    }

    /// Parses a name of [`Int8Kernel::name`].
    pub fn from_name(name: &str) -> Option<Int8Kernel> {
        super::family::from_name(name)
    }

    /// The fastest family available here, `None` where none runs (no AVX2).
    pub fn best() -> Option<Int8Kernel> {
        super::family::best()
    }

    /// The family `Precision::Int8` uses: the one asked for (it must run here), else
    /// [`Int8Kernel::best`]. The error says what is missing.
    pub fn resolve(asked: Option<Self>) -> Result<Int8Kernel, String> {
        super::family::resolve(asked, || {
            Self::best().ok_or_else(|| {
                format!(
                    "int8 needs {}; this machine does not provide it, use f32",
                    Int8Kernel::Avx2.requirement()
                )
            })
        })
    }

    /// The family of that name, or an error listing the names (`what`: where it came from).
    pub fn parse(name: &str, what: &str) -> Result<Self, String> {
        super::family::parse(name, what)
    }

    /// Output rows per micro-kernel call.
    pub(crate) fn mr(self) -> usize {
        match self {
            Int8Kernel::Amx => 32,
            Int8Kernel::Avx512Vnni => 8,
            Int8Kernel::AvxVnni => 6,
            Int8Kernel::Avx2 => 4,
        }
    }
}

impl super::family::Family for Int8Kernel {
    const ALL: &'static [Self] = &Self::ALL;
    fn name(self) -> &'static str {
        Int8Kernel::name(self)
    }
    fn available(self) -> bool {
        Int8Kernel::available(self)
    }
    fn requirement(self) -> &'static str {
        Int8Kernel::requirement(self)
    }
}

/// A `k x n` weight matrix quantized per output channel and packed for the kernel, with the
/// activation scale of the convolution's input.
#[derive(Debug, Clone)]
pub(crate) struct Packed {
    k: usize,
    /// `k` rounded up to 4 (to 64, a tile's depth, for [`Int8Kernel::Amx`]).
    kp: usize,
    n: usize,
    data: Vec<i8>,
    /// Per column (padded to whole panels): `s_a * s_w[c]`.
    deq: Vec<f32>,
    /// `1 / s_a`.
    inv_act: f32,
    /// The family that multiplies by these weights.
    kernel: Int8Kernel,
}

impl Packed {
    /// Quantizes and packs `w` (`k` rows of `n` floats, row-major) for inputs in `0..=act_max`,
    /// for products on `kernel`.
    pub(crate) fn new(w: &[f32], k: usize, n: usize, act_max: f32, kernel: Int8Kernel) -> Self {
        assert_eq!(w.len(), k * n, "weights are k x n");
        let kp = k.next_multiple_of(if kernel == Int8Kernel::Amx { 64 } else { 4 });
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
            kernel,
        }
    }

    /// Where the packed weights lie ([`super::pages`]).
    pub(crate) fn span(&self) -> (usize, usize) {
        super::pages::span(&self.data)
    }

    /// Output rows per micro-kernel call of its family.
    pub(crate) fn mr(&self) -> usize {
        self.kernel.mr()
    }

    /// The row length of a quantized left operand: `k` rounded up to the family's depth.
    pub(crate) fn kp(&self) -> usize {
        self.kp
    }

    /// `dst[i] = round(src[i] / s_a)` clamped to `0..=255`: a run of a left operand's row
    /// quantized to these weights' activation scale, as [`gemm`] quantizes whole rows (so a
    /// row gathered run by run equals the row quantized at once, byte for byte).
    ///
    /// # Safety
    /// The CPU has AVX2 (every int8 family does); `dst` is as long as `src`.
    #[inline]
    pub(crate) unsafe fn quantize_run(&self, dst: &mut [u8], src: &[f32]) {
        debug_assert_eq!(dst.len(), src.len());
        // SAFETY: forwarded from the caller.
        unsafe { imp::quantize(src, dst, self.inv_act) }
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

thread_local! {
    /// Quantized rows of the left operand, kept per thread.
    static QROWS: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
}

/// `c[0..m, 0..n] (+)= beta * a[0..m, 0..k] x w[0..k, c0..c0 + n]` with `a` quantized to the
/// weights' activation scale and the products in integers.
///
/// # Safety
/// The CPU runs `w`'s kernel family; `a` holds `m` rows of `w.k` floats at stride `lda`; `c0` is a multiple
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
        // SAFETY: `q` holds MC >= mc rows of kp bytes (MC a multiple of 32); the output rows
        // from i0 as the caller vouches.
        unsafe { block(mc, n, &q, w, c0, out.skip_rows(i0)) };
    }
    QROWS.set(q);
}

/// [`gemm`] on a left operand already quantized to `w`'s activation scale
/// ([`Packed::quantize_run`]): `q` holds `m` rows of [`Packed::kp`] bytes, zeros past `k`,
/// and is readable up to `m` rounded up to 32 rows (AMX multiplies whole blocks of 32).
///
/// # Safety
/// As [`gemm`], for `q` in place of `a`.
pub(crate) unsafe fn gemm_quantized(
    m: usize,
    n: usize,
    q: &[u8],
    w: &Packed,
    c0: usize,
    out: super::sgemm::Out,
) {
    debug_assert!(c0.is_multiple_of(NR) && c0 + n <= w.n);
    debug_assert!(q.len() >= m.next_multiple_of(32) * w.kp);
    for i0 in (0..m).step_by(MC) {
        // SAFETY: rows i0.. of `q` as the caller vouches (i0 is a multiple of 32, so AMX's
        // blocks stay within `m` rounded up to 32); the output rows from i0 likewise.
        unsafe { block(MC.min(m - i0), n, &q[i0 * w.kp..], w, c0, out.skip_rows(i0)) };
    }
}

/// One block of at most [`MC`] quantized rows `q` (stride `w.kp`) times panels from `c0`.
///
/// # Safety
/// As [`gemm_quantized`], with `mc <= MC` rows and AMX's 32-row blocks readable in `q`.
unsafe fn block(mc: usize, n: usize, q: &[u8], w: &Packed, c0: usize, out: super::sgemm::Out) {
    let kp = w.kp;
    let p0 = c0 / NR;
    // Panels per micro-kernel call: two on AVX-512 and AMX (where at least two remain).
    let wide = match w.kernel {
        Int8Kernel::Amx | Int8Kernel::Avx512Vnni => 2,
        Int8Kernel::AvxVnni | Int8Kernel::Avx2 => 1,
    };
    let mr = w.kernel.mr();
    for jp in (0..n.div_ceil(NR)).step_by(wide) {
        let nr = (wide * NR).min(n - jp * NR);
        let p = p0 + jp;
        for ir in (0..mc).step_by(mr) {
            // SAFETY: panel p (and p + 1 where nr > NR) holds kp / 4 steps of NR x 4
            // bytes; rows and columns of `out` as the caller vouches. AMX reads 32 rows
            // from row ir of `q` (ir steps by 32; rows past mc are computed and not stored).
            unsafe {
                let tile = super::sgemm::Tile {
                    c: out.ptr.add(ir * out.ldc + jp * NR),
                    ldc: out.ldc,
                    mr: mr.min(mc - ir),
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
                imp::kernel(w.kernel, operands, tile);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod imp {
    use super::super::sgemm::{Tile, halves, store};
    use super::{AMAX, Int8Kernel, NR};
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

    /// Whether this CPU runs `k` (checked once per process by the standard library).
    pub(super) fn available(k: Int8Kernel) -> bool {
        let avx2 = is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma");
        match k {
            Int8Kernel::Amx => {
                avx2 && super::super::amx::available(super::super::amx::DataType::Int8)
            }
            Int8Kernel::Avx2 => avx2,
            Int8Kernel::AvxVnni => avx2 && is_x86_feature_detected!("avxvnni"),
            Int8Kernel::Avx512Vnni => {
                avx2 && is_x86_feature_detected!("avx512f")
                    && is_x86_feature_detected!("avx512vnni")
            }
        }
    }

    /// `tile (+)= beta * deq * (a x b)` on `family`: a full tile or a short one on a body of
    /// its own height.
    ///
    /// # Safety
    /// The CPU runs `family`; `o.a` holds `t.mr` (<= `family.mr()`) rows of `4 * o.steps`
    /// bytes, `o.b` one panel ([`NR`] columns; two consecutive ones for
    /// [`Int8Kernel::Avx512Vnni`] and [`Int8Kernel::Amx`] where `t.nr > NR`) of `o.steps`
    /// steps (a multiple of 16 for AMX, whose tiles read 32 rows of `o.a`); the tile is
    /// writable.
    #[inline]
    pub(super) unsafe fn kernel(family: Int8Kernel, o: Operands, t: Tile) {
        // SAFETY: forwarded from the caller.
        unsafe {
            match (family, t.mr) {
                (Int8Kernel::Amx, _) => amx_rows(o, t),
                (Int8Kernel::Avx2, 4) => avx2_rows::<4>(o, t),
                (Int8Kernel::Avx2, 3) => avx2_rows::<3>(o, t),
                (Int8Kernel::Avx2, 2) => avx2_rows::<2>(o, t),
                (Int8Kernel::Avx2, _) => avx2_rows::<1>(o, t),
                (Int8Kernel::AvxVnni, 6) => vnni_rows::<6>(o, t),
                (Int8Kernel::AvxVnni, 5) => vnni_rows::<5>(o, t),
                (Int8Kernel::AvxVnni, 4) => vnni_rows::<4>(o, t),
                (Int8Kernel::AvxVnni, 3) => vnni_rows::<3>(o, t),
                (Int8Kernel::AvxVnni, 2) => vnni_rows::<2>(o, t),
                (Int8Kernel::AvxVnni, _) => vnni_rows::<1>(o, t),
                (Int8Kernel::Avx512Vnni, mr) => {
                    macro_rules! rows {
                        ($p:literal) => {
                            match mr {
                                8 => vnni512_rows::<8, $p>(o, t),
                                7 => vnni512_rows::<7, $p>(o, t),
                                6 => vnni512_rows::<6, $p>(o, t),
                                5 => vnni512_rows::<5, $p>(o, t),
                                4 => vnni512_rows::<4, $p>(o, t),
                                3 => vnni512_rows::<3, $p>(o, t),
                                2 => vnni512_rows::<2, $p>(o, t),
                                _ => vnni512_rows::<1, $p>(o, t),
                            }
                        };
                    }
                    if t.nr > NR { rows!(2) } else { rows!(1) }
                }
            }
        }
    }

    /// How far ahead in a panel the kernels ask for its weights: 128 steps of 64 bytes, which
    /// keeps enough of them in flight that a batch of one's late blocks, whose weights come
    /// from memory once per image, are not held up by its latency.
    const PREFETCH_BYTES: usize = 128 * NR * 4;

    /// A micro-kernel on AVX registers for `R` rows, named `$name`, built for
    /// `$features`: per step, two 32-byte weight loads (16 columns x 4 `k`), one 4-byte
    /// broadcast per row, and per row and half `$dot(acc, x, b)`, the 32-bit sums of four
    /// byte products added to `acc`; the sums are scaled to f32 and stored as the f32
    /// kernel stores.
    macro_rules! ymm_kernel {
        ($name:ident, $features:literal, $dot:expr) => {
            /// # Safety
            /// As [`kernel`], with `t.mr == R` (and `o.steps >= 1`).
            #[target_feature(enable = $features)]
            unsafe fn $name<const R: usize>(o: Operands, t: Tile) {
                debug_assert_eq!(t.mr, R);
                let dot = $dot;
                // SAFETY: every pointer stays inside what the caller vouches for.
                unsafe {
                    // The first step's sums start from zeros in registers, as in the f32
                    // kernels (a zeroed array was set up on the stack on every call).
                    debug_assert!(o.steps > 0);
                    let b = [
                        _mm256_loadu_si256(o.b.cast()),
                        _mm256_loadu_si256(o.b.add(32).cast()),
                    ];
                    let mut acc: [[__m256i; 2]; R] = std::array::from_fn(|i| {
                        let x =
                            _mm256_set1_epi32(o.a.add(i * o.lda).cast::<i32>().read_unaligned());
                        let z = _mm256_setzero_si256();
                        [dot(z, x, b[0]), dot(z, x, b[1])]
                    });
                    let mut bp = o.b.add(NR * 4);
                    for s in 1..o.steps {
                        _mm_prefetch::<_MM_HINT_T0>(bp.wrapping_add(PREFETCH_BYTES).cast());
                        let b = [
                            _mm256_loadu_si256(bp.cast()),
                            _mm256_loadu_si256(bp.add(32).cast()),
                        ];
                        for (i, acc) in acc.iter_mut().enumerate() {
                            let row = o.a.add(i * o.lda + 4 * s);
                            let x = _mm256_set1_epi32(row.cast::<i32>().read_unaligned());
                            acc[0] = dot(acc[0], x, b[0]);
                            acc[1] = dot(acc[1], x, b[1]);
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
        };
    }

    /// The AMX block: up to 32 rows x 32 columns on `fast/amx.rs`'s tiles. Where one panel
    /// remains (`t.nr <= NR`), its tiles stand in for the second panel too, whose sums are
    /// not stored.
    ///
    /// # Safety
    /// As [`kernel`] for [`Int8Kernel::Amx`].
    unsafe fn amx_rows(o: Operands, t: Tile) {
        use super::super::amx;
        debug_assert!(o.steps.is_multiple_of(16));
        // SAFETY: forwarded from the caller: the panels, 32 rows of `o.a` (rows past `t.mr`
        // are computed and not stored), the tile.
        unsafe {
            let panel = o.steps * NR * 4;
            let tiles = amx::Int8Operands {
                a: o.a,
                lda: o.lda,
                b0: o.b,
                b1: if t.nr > NR { o.b.add(panel) } else { o.b },
                kb: o.steps / 16,
            };
            amx::int8_tile(tiles, o.deq, t, amx::int8_product());
        }
    }

    ymm_kernel!(avx2_rows, "avx2,fma", |acc, x, b| {
        let ones = _mm256_set1_epi16(1);
        _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(x, b), ones))
    });
    ymm_kernel!(vnni_rows, "avx2,fma,avxvnni", |acc, x, b| {
        _mm256_dpbusd_avx_epi32(acc, x, b)
    });

    /// The AVX-512 VNNI micro-kernel for `R` rows and `P` panels (16 columns each): per
    /// step, `P` 64-byte weight loads, one 4-byte broadcast per row, and `R * P`
    /// `vpdpbusd`; each panel's sums are scaled to f32 and stored as the f32 kernel stores.
    ///
    /// # Safety
    /// As [`kernel`], with `t.mr == R` and `P` panels at `o.b` (`t.nr > NR` for two).
    #[target_feature(enable = "avx2,fma,avx512f,avx512vnni")]
    unsafe fn vnni512_rows<const R: usize, const P: usize>(o: Operands, t: Tile) {
        debug_assert_eq!(t.mr, R);
        // SAFETY: every pointer stays inside what the caller vouches for.
        unsafe {
            let panel = o.steps * NR * 4;
            let mut acc = [[_mm512_setzero_si512(); P]; R];
            let mut bp = o.b;
            for s in 0..o.steps {
                for h in 0..P {
                    _mm_prefetch::<_MM_HINT_T0>(bp.wrapping_add(h * panel + PREFETCH_BYTES).cast());
                }
                let b: [__m512i; P] =
                    std::array::from_fn(|h| _mm512_loadu_si512(bp.add(h * panel).cast()));
                for (i, acc) in acc.iter_mut().enumerate() {
                    let row = o.a.add(i * o.lda + 4 * s);
                    let x = _mm512_set1_epi32(row.cast::<i32>().read_unaligned());
                    for h in 0..P {
                        acc[h] = _mm512_dpbusd_epi32(acc[h], x, b[h]);
                    }
                }
                bp = bp.add(NR * 4);
            }
            // `h` picks a panel in every row's sums.
            #[allow(clippy::needless_range_loop)]
            for h in 0..P {
                let d = _mm512_loadu_ps(o.deq.add(h * NR));
                let sums: [[__m256; 2]; R] = std::array::from_fn(|i| {
                    halves(_mm512_mul_ps(_mm512_cvtepi32_ps(acc[i][h]), d))
                });
                let half = Tile {
                    c: t.c.add(h * NR),
                    nr: (t.nr - h * NR).min(NR),
                    ..t
                };
                store(&sums, half);
            }
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

    /// No family runs off x86-64.
    pub(super) fn available(_: super::Int8Kernel) -> bool {
        false
    }

    /// Never called: the int8 kernel runs on x86-64 only.
    pub(super) unsafe fn kernel(_: super::Int8Kernel, _: Operands, _: Tile) {
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

    /// Shapes with short row tiles (every height below each family's tile), partial panels
    /// and panel pairs, `k` off the multiple of 4 and 32, a block of more than [`MC`] rows,
    /// row strides, a column offset and both store modes: `(m, k, n, c0, accumulate)`.
    const SHAPES: [(usize, usize, usize, usize, bool); 7] = [
        (1, 3, 5, 0, false),
        (7, 37, 33, 16, true),
        (13, 64, 48, 0, false),
        (101, 290, 40, 16, true),
        (4, 1792, 16, 0, false),
        (23, 100, 80, 32, false),
        (9, 36, 64, 16, true),
    ];

    /// One product of the shape on `family`: its inputs, the packed weights, the output
    /// before and after.
    struct Run {
        a: Vec<f32>,
        lda: usize,
        packed: Packed,
        ldc: usize,
        before: Vec<f32>,
        after: Vec<f32>,
    }

    fn run(family: Int8Kernel, shape: (usize, usize, usize, usize, bool)) -> Run {
        assert!(family.available(), "{} does not run here", family.name());
        product(family, shape)
    }

    /// [`run`] without asking whether the CPU runs `family` (for AMX on emulated tiles).
    fn product(family: Int8Kernel, (m, k, n, c0, acc): (usize, usize, usize, usize, bool)) -> Run {
        let mut seed = (m * 1000 + k) as u64;
        let w: Vec<f32> = (0..k * n).map(|_| lcg(&mut seed) - 0.5).collect();
        let lda = k + 3;
        let a: Vec<f32> = (0..m * lda).map(|_| 2.0 * lcg(&mut seed)).collect();
        let packed = Packed::new(&w, k, n, 2.0, family);
        let ldc = n - c0 + 2;
        let before: Vec<f32> = (0..m * ldc).map(|_| lcg(&mut seed)).collect();
        let mut after = before.clone();
        let out = super::super::sgemm::Out {
            ptr: after.as_mut_ptr(),
            ldc,
            accumulate: acc,
            beta: 0.5,
        };
        // SAFETY: the family runs here (asserted by `run`, or AMX's tiles are emulated); the
        // shapes are as `gemm` requires.
        unsafe { gemm(m, n - c0, a.as_ptr(), lda, &packed, c0, out) };
        Run {
            a,
            lda,
            packed,
            ldc,
            before,
            after,
        }
    }

    /// The AVX2 kernel against a plain product of the quantized operands: equal up to f32
    /// rounding of the final scaling, and nothing written past the block.
    #[test]
    fn int8_product_matches_the_quantized_reference() {
        assert!(
            Int8Kernel::Avx2.available(),
            "this machine lacks AVX2: run this test where it has it"
        );
        for shape in SHAPES {
            let (m, k, n, c0, acc) = shape;
            let r = run(Int8Kernel::Avx2, shape);
            let wq = r.packed.dequantized();
            let s_a = 1.0 / r.packed.inv_act;
            for i in 0..m {
                for j in 0..n - c0 {
                    let mut sum = 0.0f64;
                    for p in 0..k {
                        let q = (r.a[i * r.lda + p] * r.packed.inv_act)
                            .round_ties_even()
                            .clamp(0.0, 255.0);
                        sum += f64::from(q * s_a) * f64::from(wq[p * n + c0 + j]);
                    }
                    let base = if acc { r.before[i * r.ldc + j] } else { 0.0 };
                    let want = f64::from(base) + 0.5 * sum;
                    let got = f64::from(r.after[i * r.ldc + j]);
                    assert!(
                        (got - want).abs() <= 1e-4 * (1.0 + want.abs()),
                        "m={m} k={k} n={n} row {i} column {j}: {got} != {want}"
                    );
                }
                for j in n - c0..r.ldc {
                    assert_eq!(
                        r.after[i * r.ldc + j],
                        r.before[i * r.ldc + j],
                        "wrote past the block"
                    );
                }
            }
        }
    }

    /// `family`'s outputs equal the AVX2 kernel's bit for bit over [`SHAPES`]: the same exact
    /// integer sums, scaled alike.
    fn equals_avx2_bit_for_bit(family: Int8Kernel) {
        assert!(
            family.available(),
            "this machine lacks {}: run this test where it has it",
            family.requirement()
        );
        outputs_equal_avx2(family.name(), |shape| run(family, shape).after);
    }

    /// `outputs(shape)` equals the AVX2 kernel's outputs bit for bit over [`SHAPES`].
    fn outputs_equal_avx2(
        name: &str,
        outputs: impl Fn((usize, usize, usize, usize, bool)) -> Vec<f32>,
    ) {
        for shape in SHAPES {
            let want = run(Int8Kernel::Avx2, shape).after;
            let got = outputs(shape);
            let differ = want
                .iter()
                .zip(&got)
                .filter(|(w, g)| w.to_bits() != g.to_bits())
                .count();
            assert_eq!(differ, 0, "{name} on {shape:?}: {differ} outputs differ");
        }
    }

    /// The AMX family's packing, blocking and scaling on tiles emulated in plain Rust
    /// (`fast/amx.rs`, `tdpbusd` as Intel defines it), on every CPU: equal to the AVX2
    /// kernel's outputs bit for bit over [`SHAPES`] (short and full blocks of 32 rows, one
    /// panel and two, `k` off the tile's 64).
    #[test]
    fn amx_int8_product_on_emulated_tiles_equals_avx2_bit_for_bit() {
        assert!(
            Int8Kernel::Avx2.available(),
            "this machine lacks AVX2: run this test where it has it"
        );
        outputs_equal_avx2("amx-int8 on emulated tiles", |shape| {
            super::super::amx::emulating(|| product(Int8Kernel::Amx, shape)).after
        });
    }

    #[test]
    #[ignore = "needs Intel AMX (AMX-TILE, AMX-INT8): `cargo test --release -- --ignored amx` where the CPU has it"]
    fn amx_int8_product_equals_avx2_bit_for_bit() {
        equals_avx2_bit_for_bit(Int8Kernel::Amx);
    }

    #[test]
    #[ignore = "needs AVX-VNNI: `cargo test --release -- --ignored avx_vnni` where the CPU has it"]
    fn avx_vnni_int8_product_equals_avx2_bit_for_bit() {
        equals_avx2_bit_for_bit(Int8Kernel::AvxVnni);
    }

    #[test]
    #[ignore = "needs AVX-512 VNNI: `cargo test --release -- --ignored avx512_vnni` where the CPU has it"]
    fn avx512_vnni_int8_product_equals_avx2_bit_for_bit() {
        equals_avx2_bit_for_bit(Int8Kernel::Avx512Vnni);
    }

    /// The family names parse back, the best one runs here, and a name that is not one is
    /// refused by name.
    #[test]
    fn int8_kernel_families_parse_and_the_best_runs() {
        for k in Int8Kernel::ALL {
            assert_eq!(Int8Kernel::from_name(k.name()), Some(k));
        }
        assert_eq!(Int8Kernel::from_name("vnni"), None);
        assert!(Int8Kernel::best().is_some_and(Int8Kernel::available));
    }
}
