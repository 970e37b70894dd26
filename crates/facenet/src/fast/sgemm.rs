//! f32 matrix products on weights packed once, for CPUs with AVX2 and FMA or AVX-512F.
//!
//! The `gemm` crate packs the right-hand operand (here: the weights) on every call. For a
//! single image that is most of the work in the late blocks (a block8 projection multiplies
//! 9 rows by a 384 x 1792 matrix: packing copies the matrix to use each value 9 times), and
//! with a product split by rows each thread packs it again. Here the weights are packed once,
//! when the network is compiled, into panels of [`NR`] columns (`[panel][k][NR]`, zero past
//! the last column), and the left operand (im2col rows, or the activations themselves for a
//! 1x1 convolution) is read in place, row by row, as MLAS does. The [`F32Kernel::Avx2`]
//! micro-kernel keeps a 6 x 16 block of the output in twelve AVX registers: per step of k it
//! loads 16 weights and broadcasts 6 activations, 12 FMAs; the last tile of a block, when
//! shorter, runs a body of its own height, so that no multiply-add is spent on rows that are
//! not stored (a batch of one's 3x3 late maps are 9 rows: 6 + 3). Products are blocked by
//! [`MC`] rows (the rows' block stays in L2 while the panels pass) and, past [`KC`] steps of
//! k, by depth.
//!
//! On CPUs with AVX-512F the weights run on [`F32Kernel::Avx512`]: a 12 x 32 block of the
//! output (two panels) in 24 AVX-512 registers, per step of k two loads of 16 weights, 12
//! broadcasts and 24 FMAs. On two Zen 5 cores it ran a batch of one 1.25x and a batch of 32
//! 1.07x faster than the `gemm` crate's AVX-512 kernels, which pack the weights again on every
//! product. For it the panels are stored in interleaved pairs (`[n / 32][k][32]`), so that a
//! micro-kernel call reads one contiguous run of weights instead of two. `FACENET_F32_KERNEL`
//! picks a family, for comparing them on one machine.
//!
//! A batch of one reads the 91 MB of weights from memory once per image (the late blocks'
//! maps are 3x3 and 8x8: each weight is used 9 or 64 times), which the hardware prefetchers
//! alone kept to 17-28 GB/s on one Zen 5 core. The kernels therefore ask for the weights
//! [`imp::PREFETCH_STEPS`] steps of k ahead of the ones they multiply, and a product split
//! by columns between threads cuts at whole pairs ([`Packed::col_align`]).

/// Columns per weight panel (two AVX registers of f32).
pub(crate) const NR: usize = 16;
/// Output rows per micro-kernel call.
pub(crate) const MR: usize = 6;
/// Output rows per call of the AVX-512 micro-kernel (32 columns: two panels).
const MR_512: usize = 12;
/// Steps of k per block: a 4096 x 16 weight panel is 256 KiB, half of a Zen 3 core's L2.
/// Products of this network (k <= 2304) run their whole depth in one pass, each tile's sums
/// in registers from the first step to the last: measured on Zen 3 (best of 7, interleaved),
/// that beat blocks of 256 steps by 0-4 % with the weights in cache and by 5-20 % where they
/// stream from memory (9 to 64 rows, a batch of one's late blocks).
const KC: usize = 4096;
/// Rows per block (a multiple of [`MR`]): their patches stay in L2 while the panels pass.
pub(crate) const MC: usize = 96;

/// The instructions that run the f32 products.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum F32Kernel {
    /// The `gemm` crate (AVX-512, AVX2 or SSE, picked by the crate), weights packed per call.
    Gemm,
    /// This module's AVX2 + FMA kernel on weights packed once.
    Avx2,
    /// This module's AVX-512 kernel on the same packed weights.
    Avx512,
}

impl F32Kernel {
    /// Every family, fastest first.
    pub const ALL: [F32Kernel; 3] = [F32Kernel::Avx512, F32Kernel::Avx2, F32Kernel::Gemm];

    /// Its name as `FACENET_F32_KERNEL` and the benchmarks spell it.
    pub fn name(self) -> &'static str {
        match self {
            F32Kernel::Gemm => "gemm",
            F32Kernel::Avx2 => "avx2-fma",
            F32Kernel::Avx512 => "avx512-fma",
        }
    }

    /// The family of that name.
    pub fn from_name(name: &str) -> Option<Self> {
        super::family::from_name(name)
    }

    /// What the family needs of the CPU.
    pub fn requirement(self) -> &'static str {
        match self {
            F32Kernel::Gemm => "nothing",
            F32Kernel::Avx2 => "AVX2 and FMA",
            F32Kernel::Avx512 => "AVX-512F",
        }
    }

    /// Whether this CPU runs it.
    pub fn available(self) -> bool {
        match self {
            F32Kernel::Gemm => true,
            F32Kernel::Avx2 => avx2_available(),
            F32Kernel::Avx512 => avx2_available() && avx512_available(),
        }
    }

    /// The default here: [`F32Kernel::Avx512`] on CPUs with AVX-512F, [`F32Kernel::Avx2`] on
    /// those with AVX2 and FMA only, otherwise [`F32Kernel::Gemm`] (its SSE kernels).
    pub fn best() -> Self {
        super::family::best().unwrap_or(F32Kernel::Gemm)
    }

    /// The family asked for (it must run here), else [`F32Kernel::best`].
    pub fn resolve(asked: Option<Self>) -> Result<Self, String> {
        super::family::resolve(asked, || Ok(Self::best()))
    }

    /// The family of that name, or an error listing the names (`what`: where it came from).
    pub fn parse(name: &str, what: &str) -> Result<Self, String> {
        super::family::parse(name, what)
    }
}

impl super::family::Family for F32Kernel {
    const ALL: &'static [Self] = &Self::ALL;
    fn name(self) -> &'static str {
        F32Kernel::name(self)
    }
    fn available(self) -> bool {
        F32Kernel::available(self)
    }
    fn requirement(self) -> &'static str {
        F32Kernel::requirement(self)
    }
}

#[cfg(target_arch = "x86_64")]
pub(super) fn avx2_available() -> bool {
    std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
}

#[cfg(not(target_arch = "x86_64"))]
pub(super) fn avx2_available() -> bool {
    false
}

#[cfg(target_arch = "x86_64")]
pub(super) fn avx512_available() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
}

#[cfg(not(target_arch = "x86_64"))]
pub(super) fn avx512_available() -> bool {
    false
}

/// A `k x n` weight matrix in panels of [`NR`] columns: `[n / NR][k][NR]`, zero-padded; on
/// AVX-512 in interleaved pairs of panels, `[n / (2 NR)][k][2 NR]`.
#[derive(Debug, Clone)]
pub(crate) struct Packed {
    k: usize,
    n: usize,
    data: Vec<f32>,
    /// The family that multiplies by these weights ([`F32Kernel::Avx2`] or
    /// [`F32Kernel::Avx512`]).
    kernel: F32Kernel,
}

impl Packed {
    /// Where the packed weights lie ([`super::pages`]).
    pub(crate) fn span(&self) -> (usize, usize) {
        super::pages::span(&self.data)
    }

    /// Packs `w`, `k` rows of `n` floats (row-major), for products on `kernel`.
    pub(crate) fn new(w: &[f32], k: usize, n: usize, kernel: F32Kernel) -> Self {
        debug_assert!(kernel != F32Kernel::Gemm, "the gemm crate packs its own");
        assert_eq!(w.len(), k * n, "weights are k x n");
        let mut packed = Self {
            k,
            n,
            data: Vec::new(),
            kernel,
        };
        let panels = n.div_ceil(NR).next_multiple_of(packed.group());
        packed.data = vec![0.0f32; panels * k * NR];
        for p in 0..n.div_ceil(NR) {
            let (c0, width) = (p * NR, NR.min(n - p * NR));
            for r in 0..k {
                let at = packed.at(p, r);
                packed.data[at..][..width].copy_from_slice(&w[r * n + c0..][..width]);
            }
        }
        packed
    }

    /// Panels stored interleaved, row by row: two on AVX-512 (whose micro-kernel reads two
    /// panels at a time, so that it streams one contiguous run of weights, which a batch of
    /// one's late blocks read from memory once per image), else one.
    fn group(&self) -> usize {
        match self.kernel {
            F32Kernel::Avx512 => 2,
            _ => 1,
        }
    }

    /// Floats from one row of a panel to the next.
    fn step(&self) -> usize {
        self.group() * NR
    }

    /// Columns per group of interleaved panels: a split by columns cuts at multiples of this,
    /// so that no two threads read halves of the same rows of weights.
    pub(crate) fn col_align(&self) -> usize {
        self.step()
    }

    /// Where row `r` of panel `p` starts in `data`.
    fn at(&self, p: usize, r: usize) -> usize {
        let g = self.group();
        ((p / g) * self.k + r) * g * NR + (p % g) * NR
    }

    /// The family that multiplies by these weights.
    pub(crate) fn kernel(&self) -> F32Kernel {
        self.kernel
    }

    /// Output rows per micro-kernel call of its family.
    pub(crate) fn mr(&self) -> usize {
        match self.kernel {
            F32Kernel::Avx512 => MR_512,
            _ => MR,
        }
    }

    /// The `k x n` row-major matrix back (exactly: packing only moves floats).
    pub(crate) fn unpack(&self) -> Vec<f32> {
        let (k, n) = (self.k, self.n);
        let mut w = vec![0.0f32; k * n];
        for p in 0..n.div_ceil(NR) {
            let (c0, width) = (p * NR, NR.min(n - p * NR));
            for r in 0..k {
                w[r * n + c0..][..width].copy_from_slice(&self.data[self.at(p, r)..][..width]);
            }
        }
        w
    }
}

/// Where a product goes: `m` rows at stride `ldc` from `ptr` (the first column of the block);
/// with `accumulate` the result is `c + beta * a b`, else `beta * a b`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Out {
    pub(crate) ptr: *mut f32,
    pub(crate) ldc: usize,
    pub(crate) accumulate: bool,
    pub(crate) beta: f32,
}

impl Out {
    /// The same destination from row `r` on (as [`super::bf16mm`]'s).
    ///
    /// # Safety
    /// Row `r` lies inside the destination.
    pub(crate) unsafe fn skip_rows(self, r: usize) -> Self {
        Self {
            // SAFETY: forwarded from the caller.
            ptr: unsafe { self.ptr.add(r * self.ldc) },
            ..self
        }
    }
}

/// `c[0..m, 0..n] (+)= beta * a[0..m, 0..k] x w[0..k, c0..c0 + n]` on `w`'s family
/// ([`F32Kernel::Avx2`] or [`F32Kernel::Avx512`]).
///
/// # Safety
/// The CPU runs `w`'s family; `a` holds `m` rows of `w.k` floats at stride `lda`; `c0` is a
/// multiple of [`NR`] and `c0 + n <= w.n`; `out` holds `m` rows of `n` floats at stride
/// `out.ldc`, overlapping neither `a` nor `w`, and nothing else touches it meanwhile.
pub(crate) unsafe fn gemm(
    m: usize,
    n: usize,
    a: *const f32,
    lda: usize,
    w: &Packed,
    c0: usize,
    out: Out,
) {
    debug_assert!(c0.is_multiple_of(NR) && c0 + n <= w.n);
    let k = w.k;
    let p0 = c0 / NR;
    // Equal blocks of at most KC (one block for every product of this network).
    let kb = k.div_ceil(k.div_ceil(KC).max(1)).max(1);
    for i0 in (0..m).step_by(MC) {
        let mc = MC.min(m - i0);
        for k0 in (0..k).step_by(kb) {
            let kc = kb.min(k - k0);
            let overwrite = k0 == 0 && !out.accumulate;
            // Panels per micro-kernel call: two on AVX-512 (where at least two remain).
            let wide = if w.kernel == F32Kernel::Avx512 { 2 } else { 1 };
            let tile_rows = w.mr();
            for jp in (0..n.div_ceil(NR)).step_by(wide) {
                let nr = (wide * NR).min(n - jp * NR);
                // SAFETY: panel `p0 + jp` exists (c0 + n <= w.n) and holds k rows of NR.
                let b = unsafe { w.data.as_ptr().add(w.at(p0 + jp, k0)) };
                // From the first panel's rows to the second's (where there is one).
                let second = if nr > NR {
                    w.at(p0 + jp + 1, k0) - w.at(p0 + jp, k0)
                } else {
                    0
                };
                for ir in (0..mc).step_by(tile_rows) {
                    let mr = tile_rows.min(mc - ir);
                    // SAFETY: rows i0 + ir .. + mr of `a` and `out` exist (caller), columns
                    // k0..k0 + kc of `a` and jp * NR .. + nr of `out` too; panel p0 + jp + 1
                    // exists where nr > NR.
                    unsafe {
                        let tile = Tile {
                            c: out.ptr.add((i0 + ir) * out.ldc + jp * NR),
                            ldc: out.ldc,
                            mr,
                            nr,
                            overwrite,
                            beta: out.beta,
                        };
                        let a = a.add((i0 + ir) * lda + k0);
                        match w.kernel {
                            F32Kernel::Avx512 => {
                                imp::kernel_512(kc, a, lda, (b, second, w.step()), tile)
                            }
                            _ => imp::kernel(kc, a, lda, b, tile),
                        }
                    }
                }
            }
        }
    }
}

/// One micro-kernel call's output block (also the int8 kernel's, which stores through
/// [`store`]).
#[derive(Clone, Copy)]
pub(super) struct Tile {
    pub(super) c: *mut f32,
    pub(super) ldc: usize,
    /// Valid rows (<= MR) and columns (<= NR).
    pub(super) mr: usize,
    pub(super) nr: usize,
    /// `c = beta * p` instead of `c += beta * p`.
    pub(super) overwrite: bool,
    pub(super) beta: f32,
}

#[cfg(target_arch = "x86_64")]
pub(super) use imp::{halves, store};

#[cfg(target_arch = "x86_64")]
mod imp {
    use super::{MR, NR, Tile};
    use std::arch::x86_64::*;

    /// `tile (+)= beta * a[0..mr, 0..kc] x b[0..kc, 0..NR]`: a full tile on the unrolled
    /// six-row body, a short one (the last rows of a block) on [`kernel_rows`] sized to it,
    /// so that no multiply-add is spent on rows that are not stored.
    ///
    /// # Safety
    /// AVX2 and FMA; `a` holds `tile.mr` (<= [`MR`]) rows of `kc >= 1` floats at stride
    /// `lda`, `b` `kc` rows of [`NR`]; the tile is writable.
    #[inline]
    pub(super) unsafe fn kernel(kc: usize, a: *const f32, lda: usize, b: *const f32, t: Tile) {
        // SAFETY: forwarded from the caller.
        unsafe {
            match t.mr {
                MR => kernel_6x16(kc, a, lda, b, t),
                5 => kernel_rows::<5>(kc, a, lda, b, t),
                4 => kernel_rows::<4>(kc, a, lda, b, t),
                3 => kernel_rows::<3>(kc, a, lda, b, t),
                2 => kernel_rows::<2>(kc, a, lda, b, t),
                _ => kernel_rows::<1>(kc, a, lda, b, t),
            }
        }
    }

    /// `tile (+)= beta * a[0..mr, 0..kc] x b[0..kc, 0..nr]` on AVX-512 registers, for up to
    /// two panels: `b` is the first, the second (where `t.nr > NR`) `panel` floats after it;
    /// each panel's rows are `step` floats apart.
    ///
    /// # Safety
    /// AVX-512F, AVX2 and FMA; `a` holds `t.mr` (<= [`super::MR_512`]) rows of `kc >= 1`
    /// floats at stride `lda`, each panel `kc` rows of [`NR`] at stride `step`; the tile is
    /// writable.
    #[inline]
    pub(super) unsafe fn kernel_512(
        kc: usize,
        a: *const f32,
        lda: usize,
        (b, panel, step): (*const f32, usize, usize),
        t: Tile,
    ) {
        macro_rules! rows {
            ($p:literal) => {
                match t.mr {
                    12 => avx512_rows::<12, $p>(kc, a, lda, (b, panel, step), t),
                    11 => avx512_rows::<11, $p>(kc, a, lda, (b, panel, step), t),
                    10 => avx512_rows::<10, $p>(kc, a, lda, (b, panel, step), t),
                    9 => avx512_rows::<9, $p>(kc, a, lda, (b, panel, step), t),
                    8 => avx512_rows::<8, $p>(kc, a, lda, (b, panel, step), t),
                    7 => avx512_rows::<7, $p>(kc, a, lda, (b, panel, step), t),
                    6 => avx512_rows::<6, $p>(kc, a, lda, (b, panel, step), t),
                    5 => avx512_rows::<5, $p>(kc, a, lda, (b, panel, step), t),
                    4 => avx512_rows::<4, $p>(kc, a, lda, (b, panel, step), t),
                    3 => avx512_rows::<3, $p>(kc, a, lda, (b, panel, step), t),
                    2 => avx512_rows::<2, $p>(kc, a, lda, (b, panel, step), t),
                    _ => avx512_rows::<1, $p>(kc, a, lda, (b, panel, step), t),
                }
            };
        }
        // SAFETY: forwarded from the caller.
        unsafe { if t.nr > NR { rows!(2) } else { rows!(1) } }
    }

    /// How many steps of k ahead the kernels ask for their weights. A batch of one's late
    /// blocks read theirs from memory once per image (9 rows: each weight is used 9 times);
    /// on two Zen 5 cores, asking 128 steps ahead (16 KiB on AVX-512) raised such a product
    /// (9 x 1792 x 384, weights from memory, one core) from 105-128 to 186-215 GFLOP/s, while
    /// products on weights in cache ran as fast as before.
    const PREFETCH_STEPS: usize = 128;

    /// The AVX-512 micro-kernel for `R` rows and `P` panels: per step of k, `P` loads of 16
    /// weights, one broadcast per row and `R * P` FMAs into as many AVX-512 registers (24 for
    /// a full tile of 12 x 32); each panel's sums are stored as [`store`] stores.
    ///
    /// # Safety
    /// As [`kernel_512`], with `t.mr == R` and `P` panels.
    #[target_feature(enable = "avx2,fma,avx512f")]
    unsafe fn avx512_rows<const R: usize, const P: usize>(
        kc: usize,
        a: *const f32,
        lda: usize,
        (b, panel, step): (*const f32, usize, usize),
        t: Tile,
    ) {
        debug_assert_eq!(t.mr, R);
        // SAFETY: every pointer stays inside what the caller vouches for.
        unsafe {
            let rows: [*const f32; R] = std::array::from_fn(|i| a.add(i * lda));
            // The first step multiplies (as an FMA onto zeros would, exactly): the sums then
            // start in registers, where zeroed arrays were set up on the stack on every call.
            debug_assert!(kc > 0);
            let w: [__m512; P] = std::array::from_fn(|h| _mm512_loadu_ps(b.add(h * panel)));
            let mut acc: [[__m512; P]; R] = std::array::from_fn(|i| {
                let x = _mm512_set1_ps(*rows[i]);
                std::array::from_fn(|h| _mm512_mul_ps(x, w[h]))
            });
            let mut bp = b.add(step);
            for p in 1..kc {
                for h in 0..P {
                    let ahead = bp.wrapping_add(h * panel + PREFETCH_STEPS * step);
                    _mm_prefetch::<_MM_HINT_T0>(ahead.cast::<i8>());
                }
                let w: [__m512; P] = std::array::from_fn(|h| _mm512_loadu_ps(bp.add(h * panel)));
                for i in 0..R {
                    let x = _mm512_set1_ps(*rows[i].add(p));
                    for h in 0..P {
                        acc[i][h] = _mm512_fmadd_ps(x, w[h], acc[i][h]);
                    }
                }
                bp = bp.add(step);
            }
            // `h` picks a panel in every row's sums.
            #[allow(clippy::needless_range_loop)]
            for h in 0..P {
                let sums: [[__m256; 2]; R] = std::array::from_fn(|i| halves(acc[i][h]));
                let t = Tile {
                    c: t.c.add(h * NR),
                    nr: (t.nr - h * NR).min(NR),
                    ..t
                };
                store(&sums, t);
            }
        }
    }

    /// An AVX-512 register's two AVX halves, low first.
    ///
    /// # Safety
    /// AVX-512F.
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(in crate::fast) unsafe fn halves(v: __m512) -> [__m256; 2] {
        let hi = _mm512_extractf64x4_pd::<1>(_mm512_castps_pd(v));
        [_mm512_castps512_ps256(v), _mm256_castpd_ps(hi)]
    }

    /// [`kernel_6x16`] for a tile of exactly `R < MR` rows.
    ///
    /// # Safety
    /// As [`kernel_6x16`], with `t.mr == R`.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn kernel_rows<const R: usize>(
        kc: usize,
        a: *const f32,
        lda: usize,
        b: *const f32,
        t: Tile,
    ) {
        debug_assert_eq!(t.mr, R);
        // SAFETY: every pointer stays inside what the caller vouches for.
        unsafe {
            let rows: [*const f32; R] = std::array::from_fn(|i| a.add(i * lda));
            // The first step multiplies, as in `avx512_rows`.
            debug_assert!(kc > 0);
            let w = [_mm256_loadu_ps(b), _mm256_loadu_ps(b.add(8))];
            let mut acc: [[__m256; 2]; R] = std::array::from_fn(|i| {
                let x = _mm256_broadcast_ss(&*rows[i]);
                [_mm256_mul_ps(x, w[0]), _mm256_mul_ps(x, w[1])]
            });
            let mut bp = b.add(NR);
            for p in 1..kc {
                _mm_prefetch::<_MM_HINT_T0>(bp.wrapping_add(PREFETCH_STEPS * NR).cast());
                let b0 = _mm256_loadu_ps(bp);
                let b1 = _mm256_loadu_ps(bp.add(8));
                for i in 0..R {
                    let x = _mm256_broadcast_ss(&*rows[i].add(p));
                    acc[i][0] = _mm256_fmadd_ps(x, b0, acc[i][0]);
                    acc[i][1] = _mm256_fmadd_ps(x, b1, acc[i][1]);
                }
                bp = bp.add(NR);
            }
            store(&acc, t);
        }
    }

    /// The most rows [`store`] takes (the int8 kernels' tiles are up to 8 rows high).
    const STORE_ROWS: usize = 16;

    /// Stores a tile's sums (`acc[i]`: row i's two halves, at most [`STORE_ROWS`] rows) as `t`
    /// asks.
    ///
    /// # Safety
    /// The tile is writable; AVX2 and FMA.
    #[inline(always)]
    pub(in crate::fast) unsafe fn store(acc: &[[__m256; 2]], t: Tile) {
        assert!(acc.len() <= STORE_ROWS, "a tile of {} rows", acc.len());
        // SAFETY: the caller vouches for the tile.
        unsafe {
            let beta = _mm256_set1_ps(t.beta);
            if t.nr == NR {
                for (i, acc) in acc.iter().enumerate().take(t.mr) {
                    for (h, v) in acc.iter().enumerate() {
                        let d = t.c.add(i * t.ldc + 8 * h);
                        let r = if t.overwrite {
                            _mm256_mul_ps(beta, *v)
                        } else {
                            _mm256_fmadd_ps(beta, *v, _mm256_loadu_ps(d))
                        };
                        _mm256_storeu_ps(d, r);
                    }
                }
            } else {
                let mut tmp = [0.0f32; STORE_ROWS * NR];
                for (i, acc) in acc.iter().enumerate() {
                    _mm256_storeu_ps(tmp.as_mut_ptr().add(i * NR), acc[0]);
                    _mm256_storeu_ps(tmp.as_mut_ptr().add(i * NR + 8), acc[1]);
                }
                for i in 0..t.mr {
                    for j in 0..t.nr {
                        let d = t.c.add(i * t.ldc + j);
                        let p = t.beta * tmp[i * NR + j];
                        *d = if t.overwrite { p } else { *d + p };
                    }
                }
            }
        }
    }

    /// `tile (+)= beta * a[0..MR, 0..kc] x b[0..kc, 0..NR]`, the body unrolled by hand.
    ///
    /// # Safety
    /// AVX2 and FMA; `a` holds `tile.mr` (<= [`MR`]) rows of `kc >= 1` floats at stride
    /// `lda`, `b` `kc` rows of [`NR`]; the tile is writable.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn kernel_6x16(kc: usize, a: *const f32, lda: usize, b: *const f32, t: Tile) {
        debug_assert_eq!(t.mr, MR);
        // SAFETY: every pointer stays inside what the caller vouches for.
        unsafe {
            let row = |i: usize| a.add(i * lda);
            let (a0, a1, a2, a3, a4, a5) = (row(0), row(1), row(2), row(3), row(4), row(5));
            let z = _mm256_setzero_ps();
            let (mut c00, mut c01, mut c10, mut c11, mut c20, mut c21) = (z, z, z, z, z, z);
            let (mut c30, mut c31, mut c40, mut c41, mut c50, mut c51) = (z, z, z, z, z, z);
            let mut bp = b;
            for p in 0..kc {
                _mm_prefetch::<_MM_HINT_T0>(bp.wrapping_add(PREFETCH_STEPS * NR).cast());
                let b0 = _mm256_loadu_ps(bp);
                let b1 = _mm256_loadu_ps(bp.add(8));
                let x = _mm256_broadcast_ss(&*a0.add(p));
                c00 = _mm256_fmadd_ps(x, b0, c00);
                c01 = _mm256_fmadd_ps(x, b1, c01);
                let x = _mm256_broadcast_ss(&*a1.add(p));
                c10 = _mm256_fmadd_ps(x, b0, c10);
                c11 = _mm256_fmadd_ps(x, b1, c11);
                let x = _mm256_broadcast_ss(&*a2.add(p));
                c20 = _mm256_fmadd_ps(x, b0, c20);
                c21 = _mm256_fmadd_ps(x, b1, c21);
                let x = _mm256_broadcast_ss(&*a3.add(p));
                c30 = _mm256_fmadd_ps(x, b0, c30);
                c31 = _mm256_fmadd_ps(x, b1, c31);
                let x = _mm256_broadcast_ss(&*a4.add(p));
                c40 = _mm256_fmadd_ps(x, b0, c40);
                c41 = _mm256_fmadd_ps(x, b1, c41);
                let x = _mm256_broadcast_ss(&*a5.add(p));
                c50 = _mm256_fmadd_ps(x, b0, c50);
                c51 = _mm256_fmadd_ps(x, b1, c51);
                bp = bp.add(NR);
            }
            let acc = [
                [c00, c01],
                [c10, c11],
                [c20, c21],
                [c30, c31],
                [c40, c41],
                [c50, c51],
            ];
            store(&acc, t);
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod imp {
    use super::Tile;

    /// Never called: [`super::F32Kernel::Avx2`] is unavailable off x86-64.
    pub(super) unsafe fn kernel(_: usize, _: *const f32, _: usize, _: *const f32, _: Tile) {
        unreachable!("the AVX2 kernel runs on x86-64 only")
    }

    /// Never called: [`super::F32Kernel::Avx512`] is unavailable off x86-64.
    pub(super) unsafe fn kernel_512(
        _: usize,
        _: *const f32,
        _: usize,
        _: (*const f32, usize, usize),
        _: Tile,
    ) {
        unreachable!("the AVX-512 kernel runs on x86-64 only")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_names_round_trip() {
        for k in F32Kernel::ALL {
            assert_eq!(F32Kernel::from_name(k.name()), Some(k));
        }
        assert_eq!(F32Kernel::from_name("sse"), None);
        assert!(F32Kernel::best().available());
    }

    /// The AVX2 product against f64 sums (see [`product_matches_f64_reference`]).
    #[test]
    #[cfg_attr(
        not(target_arch = "x86_64"),
        ignore = "needs AVX2 and FMA (x86-64): `cargo test --release -- --ignored avx2` where the CPU has them"
    )]
    fn avx2_product_matches_f64_reference() {
        product_matches_f64_reference(F32Kernel::Avx2);
    }

    /// The AVX-512 product against f64 sums (see [`product_matches_f64_reference`]).
    #[test]
    #[ignore = "needs AVX-512F: `cargo test --release -- --ignored avx512f` where the CPU has it"]
    fn avx512f_product_matches_f64_reference() {
        product_matches_f64_reference(F32Kernel::Avx512);
    }

    /// `kernel`'s product against f64 sums, over shapes that cross every block edge: rows past
    /// a tile (every short tile height) and a 96-row block, k past a [`KC`] block, columns
    /// past a 16-wide panel and a pair of them, an offset column block, a row stride wider
    /// than k, and accumulation with a scale.
    fn product_matches_f64_reference(kernel: F32Kernel) {
        assert!(
            kernel.available(),
            "this machine lacks {}: run this test where it has it",
            kernel.requirement()
        );
        let val = |i: usize, p: usize| ((i * p) % 1000) as f32 / 500.0 - 1.0;
        for &(m, k, n, c0, cols) in &[
            (1, 1, 16, 0, 16),
            (5, 7, 20, 16, 4),
            (13, 300, 50, 16, 34),
            (101, 513, 48, 0, 48),
            (200, 64, 33, 0, 33),
            (9, 40, 32, 16, 16),
            (64, 30, 48, 0, 48),
            (7, KC + 5, 16, 0, 16),
            (25, 19, 80, 16, 64),
            (11, 33, 40, 0, 40),
        ] {
            let lda = k + 3;
            let a: Vec<f32> = (0..m * lda).map(|i| val(i, 7919)).collect();
            let w: Vec<f32> = (0..k * n).map(|i| val(i, 104_729)).collect();
            let packed = Packed::new(&w, k, n, kernel);
            for (accumulate, beta) in [(false, 1.0f32), (true, 0.5)] {
                let ldc = cols + 5;
                let mut c = vec![1.0f32; m * ldc];
                let out = Out {
                    ptr: c.as_mut_ptr(),
                    ldc,
                    accumulate,
                    beta,
                };
                // SAFETY: the family runs here (asserted above); shapes as documented.
                unsafe { gemm(m, cols, a.as_ptr(), lda, &packed, c0, out) };
                for r in 0..m {
                    for j in 0..ldc {
                        let want = if j < cols {
                            let p: f64 = (0..k)
                                .map(|i| a[r * lda + i] as f64 * w[i * n + c0 + j] as f64)
                                .sum();
                            beta as f64 * p + if accumulate { 1.0 } else { 0.0 }
                        } else {
                            1.0
                        };
                        let got = c[r * ldc + j] as f64;
                        assert!(
                            (got - want).abs() < 1e-3,
                            "{} m={m} k={k} n={n} ({r}, {j}): {got} vs {want}",
                            kernel.name()
                        );
                    }
                }
            }
        }
    }
}
