//! bf16 matrix products for the opt-in [`super::Precision::Bf16`] mode, on one of two kernel
//! families ([`Bf16Kernel`]), chosen at run time:
//!
//! - **Intel AMX** multiplies 16x32 bf16 tiles by 32x16 ones into 16x16 f32 accumulators in
//!   one instruction (`tdpbf16ps`): 8,192 multiply-adds, against 16 for one AVX-512 FMA. The
//!   AMX intrinsics are not stable in Rust, so the instructions are written as inline
//!   assembly, in one 32x32 kernel that the int8 products share (`fast/amx.rs`, with the
//!   tile configuration). Use needs the CPU (CPUID AMX-TILE and AMX-BF16: Xeon Sapphire
//!   Rapids or later) and the kernel's permission for the tile state
//!   (`arch_prctl(ARCH_REQ_XCOMP_PERM)`, Linux 5.16+).
//! - **AVX-512 BF16** (`vdpbf16ps`, CPUID AVX512_BF16: Cooper Lake, Sapphire Rapids without
//!   the tile state, AMD Zen 4 and later) adds two bf16 products per f32 lane, 32 multiply-adds
//!   per instruction: twice an f32 FMA's, and half the bytes per operand. Its 32x32 kernel
//!   ([`dp_kernel_32x32`]) computes exactly what the AMX one does, from the same packed
//!   weights: AMX's B-tile rows (16 channels x 2 consecutive k) are the pairs `vdpbf16ps`
//!   multiplies, so one packing serves both.
//!
//! Weights and activations are rounded to bf16 (8-bit mantissa); the sums stay f32.
//! Everything around the kernels (packing, rounding, the edges) is plain Rust. No crate offers
//! these products (the `gemm` crate stops at f32 AVX-512).

/// The instructions that run the bf16 products.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bf16Kernel {
    /// Intel AMX tiles (`tdpbf16ps`).
    Amx,
    /// AVX-512 BF16 dot products (`vdpbf16ps`), for CPUs with AVX512_BF16 and no AMX.
    Avx512,
}

impl Bf16Kernel {
    /// Every family, fastest first.
    pub const ALL: [Bf16Kernel; 2] = [Bf16Kernel::Amx, Bf16Kernel::Avx512];

    /// Its name as `FACENET_BF16_KERNEL` and the benchmarks spell it.
    pub fn name(self) -> &'static str {
        match self {
            Bf16Kernel::Amx => "amx",
            Bf16Kernel::Avx512 => "avx512-bf16",
        }
    }

    /// Whether this CPU (and, for AMX, the operating system) runs it (checked once per
    /// process).
    pub fn available(self) -> bool {
        match self {
            Bf16Kernel::Amx => imp::amx_available(),
            Bf16Kernel::Avx512 => imp::avx512_bf16_available(),
        }
    }

    /// The fastest family available here, `None` where none runs.
    pub fn best() -> Option<Bf16Kernel> {
        super::family::best()
    }

    /// The family `Precision::Bf16` uses: the one asked for (it must run here), else
    /// [`Bf16Kernel::best`]. The error says what is missing.
    pub fn resolve(asked: Option<Self>) -> Result<Bf16Kernel, String> {
        super::family::resolve(asked, || {
            Self::best().ok_or_else(|| {
                format!(
                    "bf16 needs {} or {}; this machine has neither, use f32",
                    Bf16Kernel::Amx.requirement(),
                    Bf16Kernel::Avx512.requirement()
                )
            })
        })
    }

    /// The family of that name, or an error listing the names (`what`: where it came from).
    pub fn parse(name: &str, what: &str) -> Result<Self, String> {
        super::family::parse(name, what)
    }

    /// What the family needs, in words.
    pub fn requirement(self) -> &'static str {
        match self {
            Bf16Kernel::Amx => {
                "Intel AMX (AMX-TILE and AMX-BF16: Xeon Sapphire Rapids or later) on Linux 5.16 \
                 or later"
            }
            Bf16Kernel::Avx512 => {
                "AVX-512 BF16 (Cooper Lake, Sapphire Rapids or later, AMD Zen 4 or later)"
            }
        }
    }

    /// How `facenet bench embed` and the engine description name it.
    pub fn describe(self) -> &'static str {
        match self {
            Bf16Kernel::Amx => "AMX tiles",
            Bf16Kernel::Avx512 => "AVX-512 BF16 dot products",
        }
    }

    /// Parses a name of [`Bf16Kernel::name`].
    pub fn from_name(name: &str) -> Option<Bf16Kernel> {
        super::family::from_name(name)
    }
}

impl super::family::Family for Bf16Kernel {
    const ALL: &'static [Self] = &Self::ALL;
    fn name(self) -> &'static str {
        Bf16Kernel::name(self)
    }
    fn available(self) -> bool {
        Bf16Kernel::available(self)
    }
    fn requirement(self) -> &'static str {
        Bf16Kernel::requirement(self)
    }
}

/// A weight matrix `[k, cout]` in AMX's B-tile layout: for every block of 16 output channels
/// and 32 rows of `k`, 16 rows of 16 (channel) x 2 (consecutive k) bf16 values, 1 KiB per
/// block; blocks of one channel block are contiguous along `k`. One zero channel block is
/// added at the end, so that a pair of blocks can start at any multiple of 16.
#[derive(Debug, Clone)]
pub(super) struct Packed {
    data: Vec<u16>,
    /// The family that multiplies by these weights.
    kernel: Bf16Kernel,
    /// Blocks of 32 along `k`.
    kb: usize,
    k: usize,
    cout: usize,
}

/// bf16 values per (16 channels x 32 k) block.
const BLOCK: usize = 512;

/// Length of a bf16 left-operand row for `k` inputs: `k` rounded up to the tile's 32.
pub(super) fn padded_k(k: usize) -> usize {
    k.next_multiple_of(32)
}

/// Where a product goes: rows of floats at stride `ldd` from `ptr`, set to `beta * product`
/// or, with `accumulate`, increased by it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Out {
    pub ptr: *mut f32,
    pub ldd: usize,
    pub accumulate: bool,
    pub beta: f32,
}

impl Out {
    /// The same destination from row `r` on.
    ///
    /// # Safety
    /// Row `r` lies inside the destination.
    pub(in crate::fast) unsafe fn skip_rows(self, r: usize) -> Self {
        Self {
            // SAFETY: forwarded from the caller.
            ptr: unsafe { self.ptr.add(r * self.ldd) },
            ..self
        }
    }
}

/// Rounds to the nearest bf16, ties to even (the conversion AMX's own tools use).
pub(super) fn bf16(x: f32) -> u16 {
    let b = x.to_bits();
    (b.wrapping_add(0x7fff + ((b >> 16) & 1)) >> 16) as u16
}

impl Packed {
    /// Where the packed weights lie ([`super::pages`]).
    pub(super) fn span(&self) -> (usize, usize) {
        super::pages::span(&self.data)
    }

    /// Packs a row-major `[k, cout]` weight matrix for `kernel`.
    pub(super) fn new(w: &[f32], k: usize, cout: usize, kernel: Bf16Kernel) -> Self {
        assert_eq!(w.len(), k * cout);
        let kb = k.div_ceil(32);
        let nb = cout.div_ceil(16) + 1;
        let mut data = vec![0u16; nb * kb * BLOCK];
        for j in 0..cout.div_ceil(16) {
            for b in 0..kb {
                let block = &mut data[(j * kb + b) * BLOCK..][..BLOCK];
                for p in 0..16 {
                    for col in 0..16 {
                        for q in 0..2 {
                            let (row, c) = (b * 32 + 2 * p + q, j * 16 + col);
                            if row < k && c < cout {
                                block[p * 32 + col * 2 + q] = bf16(w[row * cout + c]);
                            }
                        }
                    }
                }
            }
        }
        Self {
            data,
            kernel,
            kb,
            k,
            cout,
        }
    }
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
mod imp {
    use super::{BLOCK, Bf16Kernel, Out, Packed, bf16};
    use std::cell::RefCell;
    use std::sync::OnceLock;

    /// Whether this CPU has AVX-512 F, BW and BF16 (checked once per process).
    pub(super) fn avx512_bf16_available() -> bool {
        static OK: OnceLock<bool> = OnceLock::new();
        *OK.get_or_init(|| {
            is_x86_feature_detected!("avx512f")
                && is_x86_feature_detected!("avx512bw")
                && is_x86_feature_detected!("avx512bf16")
        })
    }

    /// Whether this CPU and kernel run AMX bf16 products (checked once per process).
    pub(super) fn amx_available() -> bool {
        super::super::amx::available(super::super::amx::DataType::Bf16)
    }

    thread_local! {
        /// bf16 rows of the left operand (32 x k) and the 32x32 f32 result.
        static SCRATCH: RefCell<(Vec<u16>, Vec<f32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
    }

    /// The AMX product (`fast/amx.rs`) on AVX-512 BF16: the same operands and result for the first `rows`
    /// rows (rounded up to 8; the rest of `c` is left as it was), in blocks of 8 rows x 32
    /// channels (16 accumulators; each weight pair is loaded once per block and each row's
    /// activation pair broadcast to all 16 lanes). A batch of one's late blocks have 9 rows:
    /// two blocks of 8 instead of four.
    ///
    /// # Safety
    /// The CPU has AVX-512 F and BF16; `c` holds 32 rows of 32 floats at stride `ldc`, `a`
    /// 32 rows of `32 * kb` bf16 values at stride `lda`, `b0` and `b1` `kb` blocks each;
    /// `rows <= 32`.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f,avx512bf16")]
    unsafe fn dp_kernel_32x32(
        a: *const u16,
        lda: usize,
        b0: *const u16,
        b1: *const u16,
        kb: usize,
        c: *mut f32,
        ldc: usize,
        rows: usize,
    ) {
        use std::arch::x86_64::{
            __m512bh, _MM_HINT_T0, _mm_prefetch, _mm512_dpbf16_ps, _mm512_loadu_si512,
            _mm512_set1_epi32, _mm512_setzero_ps, _mm512_storeu_ps,
        };
        const ROWS: usize = 8;
        // Weights asked for 128 pairs (8 KiB) ahead, as the f32 and int8 kernels ask for
        // theirs: a batch of one's late blocks read them from memory.
        const AHEAD: usize = 128 * 32;
        debug_assert!(rows <= 32);
        for r0 in (0..rows).step_by(ROWS) {
            let mut acc = [[_mm512_setzero_ps(); 2]; ROWS];
            for p in 0..kb * 16 {
                let off = (p / 16) * BLOCK + (p % 16) * 32;
                // SAFETY: pair p of both channel blocks and of the 8 rows lies inside the
                // operands (caller's contract); `__m512bh` has the layout of 32 u16 values.
                unsafe {
                    _mm_prefetch::<_MM_HINT_T0>(b0.wrapping_add(off + AHEAD).cast());
                    _mm_prefetch::<_MM_HINT_T0>(b1.wrapping_add(off + AHEAD).cast());
                    let w0: __m512bh = std::mem::transmute(_mm512_loadu_si512(b0.add(off).cast()));
                    let w1: __m512bh = std::mem::transmute(_mm512_loadu_si512(b1.add(off).cast()));
                    for (r, acc) in acc.iter_mut().enumerate() {
                        let pair = a.add((r0 + r) * lda + 2 * p).cast::<i32>().read_unaligned();
                        let x: __m512bh = std::mem::transmute(_mm512_set1_epi32(pair));
                        acc[0] = _mm512_dpbf16_ps(acc[0], x, w0);
                        acc[1] = _mm512_dpbf16_ps(acc[1], x, w1);
                    }
                }
            }
            for (r, acc) in acc.iter().enumerate() {
                // SAFETY: row r0 + r < 32 of `c`, 32 floats.
                unsafe {
                    let row = c.add((r0 + r) * ldc);
                    _mm512_storeu_ps(row, acc[0]);
                    _mm512_storeu_ps(row.add(16), acc[1]);
                }
            }
        }
    }

    /// Rounds `src` to bf16 into `dst` (the same length), vectorized for AVX-512.
    #[target_feature(enable = "avx512f,avx512bw")]
    pub(in crate::fast) fn round_into(dst: &mut [u16], src: &[f32]) {
        for (d, s) in dst.iter_mut().zip(src) {
            *d = bf16(*s);
        }
    }

    /// `out[r][c] (=, or += if accumulating) beta * sum_k lhs[r][k] * w[k][c0 + c]` for
    /// `r < m`, `c < n`, with `lhs` and `w` rounded to bf16.
    ///
    /// # Safety
    /// [`available`] is true; `lhs` holds `m` rows of `w.k` floats at stride `lhs_rs`; `out`
    /// holds `m` rows of `n` floats at its stride, not overlapping `lhs`, and no other thread
    /// writes them meanwhile; `c0` is a multiple of 16 and `c0 + n <= w.cout`.
    pub(in crate::fast) unsafe fn gemm(
        m: usize,
        n: usize,
        lhs: *const f32,
        lhs_rs: usize,
        w: &Packed,
        c0: usize,
        out: Out,
    ) {
        let (k, kp) = (w.k, w.kb * 32);
        SCRATCH.with(|s| {
            let (a, c) = &mut *s.borrow_mut();
            a.resize(32 * kp, 0);
            c.resize(32 * 32, 0.0);
            for r0 in (0..m).step_by(32) {
                let rows = 32.min(m - r0);
                for r in 0..32 {
                    let row = &mut a[r * kp..(r + 1) * kp];
                    if r < rows {
                        // SAFETY: row r0 + r < m of `lhs` (caller's contract).
                        let src =
                            unsafe { std::slice::from_raw_parts(lhs.add((r0 + r) * lhs_rs), k) };
                        // SAFETY: both families imply AVX-512 F and BW (the weights were
                        // packed for one found available).
                        unsafe { round_into(&mut row[..k], src) };
                        row[k..].fill(0);
                    } else {
                        row.fill(0);
                    }
                }
                // SAFETY: `a` holds 32 rows of kp; row r0 < m of `out`; the rest forwarded.
                unsafe { rows_block(a, kp, rows, n, w, c0, out.skip_rows(r0), c) };
            }
        });
    }

    /// As [`gemm`], with the left operand already rounded: `a` holds `m` rows (rounded up to
    /// 32) of `padded_k(w.k)` bf16 values, zeros past `w.k`.
    ///
    /// # Safety
    /// As [`gemm`] for `out`; `a.len() >= m.next_multiple_of(32) * padded_k(w.k)`.
    pub(in crate::fast) unsafe fn gemm_bf16(
        m: usize,
        n: usize,
        a: &[u16],
        w: &Packed,
        c0: usize,
        out: Out,
    ) {
        let kp = w.kb * 32;
        assert!(
            a.len() >= m.next_multiple_of(32) * kp,
            "bf16 rows too short"
        );
        SCRATCH.with(|s| {
            let (_, c) = &mut *s.borrow_mut();
            c.resize(32 * 32, 0.0);
            for r0 in (0..m).step_by(32) {
                let rows = 32.min(m - r0);
                // SAFETY: 32 rows of kp from row r0 lie in `a` (asserted); the rest forwarded.
                unsafe { rows_block(&a[r0 * kp..], kp, rows, n, w, c0, out.skip_rows(r0), c) };
            }
        });
    }

    /// One block of 32 bf16 rows (`a`, row length `kp`) times channels `c0..c0 + n`; the
    /// first `rows` rows of the result go to `out`. Compiled for AVX-512, which both families
    /// imply, so that the sums are scaled and stored 16 lanes at a time (the baseline's
    /// 4-lane loop was 5 % of a bf16 batch on Zen 4, and more beside AMX's tile products).
    ///
    /// # Safety
    /// `a` holds 32 rows of `kp`; `out` holds `rows` rows of `n`; as [`gemm`].
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f,avx512bw")]
    unsafe fn rows_block(
        a: &[u16],
        kp: usize,
        rows: usize,
        n: usize,
        w: &Packed,
        c0: usize,
        out: Out,
        c: &mut [f32],
    ) {
        debug_assert!(c0.is_multiple_of(16) && c0 + n <= w.cout && a.len() >= 32 * kp);
        if w.kernel == Bf16Kernel::Amx {
            // SAFETY: the weights were packed for AMX, which was found available.
            unsafe { super::super::amx::configure() };
        }
        let kb = w.kb;
        for j in (0..n).step_by(32) {
            let blk = (c0 + j) / 16;
            let (b0, b1) = (
                // SAFETY: the two channel blocks exist (one zero block is packed past the
                // last).
                unsafe { w.data.as_ptr().add(blk * kb * BLOCK) },
                unsafe { w.data.as_ptr().add((blk + 1) * kb * BLOCK) },
            );
            // SAFETY: `a` is 32 x kp, `c` is 32 x 32; the weights were packed for a family
            // found available (AMX tiles configured above).
            unsafe {
                match w.kernel {
                    // Strides in bytes: rows of kp bf16 values and of 32 floats.
                    Bf16Kernel::Amx => super::super::amx::bf16_32x32(
                        a.as_ptr().cast(),
                        kp * 2,
                        b0.cast(),
                        b1.cast(),
                        kb,
                        c.as_mut_ptr().cast(),
                        32 * 4,
                    ),
                    Bf16Kernel::Avx512 => {
                        dp_kernel_32x32(a.as_ptr(), kp, b0, b1, kb, c.as_mut_ptr(), 32, rows)
                    }
                }
            };
            let cols = 32.min(n - j);
            for r in 0..rows {
                // SAFETY: row r < rows, columns j..j + cols <= n of `out`.
                let d =
                    unsafe { std::slice::from_raw_parts_mut(out.ptr.add(r * out.ldd + j), cols) };
                let acc = &c[r * 32..r * 32 + cols];
                if out.accumulate {
                    for (d, v) in d.iter_mut().zip(acc) {
                        *d += out.beta * v;
                    }
                } else {
                    for (d, v) in d.iter_mut().zip(acc) {
                        *d = out.beta * v;
                    }
                }
            }
        }
    }
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
mod imp {
    use super::{Out, Packed};

    pub(super) fn amx_available() -> bool {
        false
    }

    pub(super) fn avx512_bf16_available() -> bool {
        false
    }

    pub(in crate::fast) unsafe fn gemm(
        _m: usize,
        _n: usize,
        _lhs: *const f32,
        _lhs_rs: usize,
        _w: &Packed,
        _c0: usize,
        _out: Out,
    ) {
        unreachable!("no bf16 kernel is reported available on this platform")
    }

    pub(in crate::fast) unsafe fn gemm_bf16(
        _m: usize,
        _n: usize,
        _a: &[u16],
        _w: &Packed,
        _c0: usize,
        _out: Out,
    ) {
        unreachable!("no bf16 kernel is reported available on this platform")
    }

    pub(in crate::fast) fn round_into(dst: &mut [u16], src: &[f32]) {
        for (d, s) in dst.iter_mut().zip(src) {
            *d = super::bf16(*s);
        }
    }
}

pub(super) use imp::{gemm, gemm_bf16, round_into};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_to_nearest_even() {
        assert_eq!(bf16(1.0), 0x3f80);
        // 1 + 2^-8 lies halfway between 1 and 1 + 2^-7: ties to the even one, 1.
        assert_eq!(bf16(f32::from_bits(0x3f80_8000)), 0x3f80);
        // Just above halfway rounds up.
        assert_eq!(bf16(f32::from_bits(0x3f80_8001)), 0x3f81);
        assert_eq!(bf16(-2.5), 0xc020);
    }

    /// The AMX product against f64 sums of the same bf16-rounded values (it runs only where
    /// the CPU has AMX).
    #[test]
    #[ignore = "needs Intel AMX (AMX-TILE, AMX-BF16): `cargo test --release -- --ignored amx` where the CPU has it"]
    fn amx_product_matches_rounded_reference() {
        product_matches_rounded_reference(Bf16Kernel::Amx);
    }

    /// The same for the AVX-512 BF16 kernel (`vdpbf16ps`).
    #[test]
    #[ignore = "needs AVX-512 BF16: `cargo test --release -- --ignored avx512_bf16` where the CPU has it"]
    fn avx512_bf16_product_matches_rounded_reference() {
        product_matches_rounded_reference(Bf16Kernel::Avx512);
    }

    #[test]
    fn kernel_names_round_trip() {
        for k in Bf16Kernel::ALL {
            assert_eq!(Bf16Kernel::from_name(k.name()), Some(k));
        }
        assert_eq!(Bf16Kernel::from_name("sse"), None);
        // The best family is one that runs, and the fastest of those.
        if let Some(best) = Bf16Kernel::best() {
            assert!(best.available());
            assert!(best == Bf16Kernel::Amx || !Bf16Kernel::Amx.available());
        }
    }

    fn product_matches_rounded_reference(kernel: Bf16Kernel) {
        assert!(
            kernel.available(),
            "this machine lacks {}: run this test where it has it",
            kernel.requirement()
        );
        let back = |v: f32| f32::from_bits((bf16(v) as u32) << 16) as f64;
        // Odd sizes: k not a multiple of 32, rows and columns past a tile edge, an offset
        // column block, accumulation with a scale.
        let (m, k, cout) = (37, 45, 80);
        let lhs: Vec<f32> = (0..m * 50)
            .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
            .collect();
        let w: Vec<f32> = (0..k * cout)
            .map(|i| ((i * 104_729) % 1000) as f32 / 500.0 - 1.0)
            .collect();
        let packed = Packed::new(&w, k, cout, kernel);
        let (c0, n, ldd) = (16, 60, 70);
        let mut dst = vec![1.0f32; m * ldd];
        // SAFETY: the kernel is available; lhs rows of k at stride 50, dst m x 70 >= n.
        let out = Out {
            ptr: dst.as_mut_ptr(),
            ldd,
            accumulate: true,
            beta: 0.5,
        };
        unsafe { gemm(m, n, lhs.as_ptr(), 50, &packed, c0, out) };
        for r in 0..m {
            for c in 0..ldd {
                let want = if c < n {
                    1.0 + 0.5
                        * (0..k)
                            .map(|i| back(lhs[r * 50 + i]) * back(w[i * cout + c0 + c]))
                            .sum::<f64>()
                } else {
                    1.0
                };
                let got = dst[r * ldd + c] as f64;
                assert!((got - want).abs() < 1e-4, "({r}, {c}): {got} vs {want}");
            }
        }
    }
}
