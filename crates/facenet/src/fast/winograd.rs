//! Winograd convolution F(m x m, 3x3) (Lavin and Gray, "Fast Algorithms for Convolutional
//! Neural Networks", <https://arxiv.org/abs/1509.09308>): the input is cut into overlapping
//! `a x a` tiles (`a = m + 2`) whose outputs are `m x m` pixels, and each tile costs `a * a`
//! multiplies per input-output channel pair instead of `9 * m * m`, computed as `a * a`
//! matrix products over the tiles.
//!
//! The network runs [`F4`], F(4x4, 3x3): 36 multiplies per 16 outputs, a 4x cut (F(2x2, 3x3)
//! cuts 2.25x). Its transforms have coefficients up to 8 and down to 1/24, yet in f32 the
//! Keras network's embeddings stay within 2e-6 of F(2x2, 3x3)'s (raw values up to 1.5), well inside
//! the parity tests' tolerances. Alternating with F(2x2, 3x3) image batch by image batch in
//! one process on two Zen 3 cores, it ran 4-7 % more images per second at batch 1, 7-15 % at
//! batch 8 and -2 to +10 % at batch 32 (two runs each).
//!
//! The transforms run on eight channels at a time with each form's sums written out
//! ([`Tile`]), the two-dimensional transform of a tile kept in registers and the L1 cache,
//! built twice (for AVX2 and FMA, and without) and picked at run time. In a one-core profile
//! at batch 4 they take 6.9 % of the time, against 17.8 % when they were computed from the
//! transform matrices one channel vector at a time. F(2x2, 3x3) (`F2`, whose transforms
//! only add, subtract and halve) is kept for the tests, which hold both forms to direct
//! convolution.

use super::{Buf, SendPtr, sgemm, team};
use gemm::Parallelism;

/// One Winograd form: output tile side `m`, input tile side `a = m + 2`, the weight transform
/// `G` (`a x 3`, row-major) and the input and output transforms ([`Tile`]).
#[derive(Debug)]
pub(super) struct Form {
    pub(super) m: usize,
    g: &'static [f64],
    transforms: Transforms,
}

/// F(2x2, 3x3): `B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1]`,
/// `A^T = [1 1 1 0; 0 1 -1 -1]`.
#[cfg(test)]
pub(super) const F2: Form = Form {
    m: 2,
    #[rustfmt::skip]
    g: &[
        1.0, 0.0, 0.0,
        0.5, 0.5, 0.5,
        0.5, -0.5, 0.5,
        0.0, 0.0, 1.0,
    ],
    transforms: Transforms::of::<T2>(),
};

/// F(4x4, 3x3), on the points 0, 1, -1, 2, -2 and infinity (transforms in [`T4`]).
pub(super) const F4: Form = Form {
    m: 4,
    #[rustfmt::skip]
    g: &[
        1.0 / 4.0, 0.0, 0.0,
        -1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0,
        -1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0,
        1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0,
        1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0,
        0.0, 0.0, 1.0,
    ],
    transforms: Transforms::of::<T4>(),
};

/// Eight channels, the unit the transforms compute on (one AVX register).
type V = [f32; 8];

#[inline(always)]
fn add(a: V, b: V) -> V {
    std::array::from_fn(|l| a[l] + b[l])
}

#[inline(always)]
fn sub(a: V, b: V) -> V {
    std::array::from_fn(|l| a[l] - b[l])
}

#[inline(always)]
fn mul(c: f32, a: V) -> V {
    std::array::from_fn(|l| c * a[l])
}

/// A form's one-dimensional transforms on eight channels at once: `input` applies `B^T` to
/// `a` values (the first `a` of six), `output` applies `A^T` (the first `m` of four).
pub(super) trait Tile {
    const M: usize;
    const A: usize;
    fn input(d: [V; 6]) -> [V; 6];
    fn output(m: [V; 6]) -> [V; 4];
}

#[cfg(test)]
struct T2;

#[cfg(test)]
impl Tile for T2 {
    const M: usize = 2;
    const A: usize = 4;
    #[inline(always)]
    fn input([d0, d1, d2, d3, ..]: [V; 6]) -> [V; 6] {
        let z = [0.0; 8];
        [sub(d0, d2), add(d1, d2), sub(d2, d1), sub(d1, d3), z, z]
    }
    #[inline(always)]
    fn output([m0, m1, m2, m3, ..]: [V; 6]) -> [V; 4] {
        let z = [0.0; 8];
        [add(add(m0, m1), m2), sub(sub(m1, m2), m3), z, z]
    }
}

/// F(4x4, 3x3): `B^T` =
/// `[4 0 -5 0 1 0; 0 -4 -4 1 1 0; 0 4 -4 -1 1 0; 0 -2 -1 2 1 0; 0 2 -1 -2 1 0; 0 4 0 -5 0 1]`,
/// `A^T = [1 1 1 1 1 0; 0 1 -1 2 -2 0; 0 1 1 4 4 0; 0 1 -1 8 -8 1]`, with their shared
/// sums computed once.
struct T4;

impl Tile for T4 {
    const M: usize = 4;
    const A: usize = 6;
    #[inline(always)]
    fn input([d0, d1, d2, d3, d4, d5]: [V; 6]) -> [V; 6] {
        let (s42, s31) = (sub(d4, d2), sub(d3, d1));
        [
            add(sub(mul(4.0, d0), mul(5.0, d2)), d4),
            sub(add(d3, d4), mul(4.0, add(d1, d2))),
            add(sub(d4, d3), mul(4.0, sub(d1, d2))),
            add(s42, mul(2.0, s31)),
            sub(s42, mul(2.0, s31)),
            add(sub(mul(4.0, d1), mul(5.0, d3)), d5),
        ]
    }
    #[inline(always)]
    fn output([m0, m1, m2, m3, m4, m5]: [V; 6]) -> [V; 4] {
        let (a12, s12, a34, s34) = (add(m1, m2), sub(m1, m2), add(m3, m4), sub(m3, m4));
        [
            add(add(m0, a12), a34),
            add(s12, mul(2.0, s34)),
            add(a12, mul(4.0, a34)),
            add(add(s12, mul(8.0, s34)), m5),
        ]
    }
}

/// A form's input and output transform of a chunk of tiles, compiled for AVX2 and FMA and
/// without, picked per call.
#[derive(Debug)]
struct Transforms {
    inputs: [InputsFn; 2],
    outputs: [OutputsFn; 2],
}

type InputsFn = unsafe fn(&Geometry<'_>, usize, &mut [f32], (usize, usize, usize));
type OutputsFn =
    unsafe fn(&Geometry<'_>, &[f32], (usize, &[f32], bool), SendPtr, (usize, usize, usize));

impl Transforms {
    const fn of<T: Tile>() -> Self {
        Self {
            inputs: [inputs::<T>, inputs_avx2::<T>],
            outputs: [outputs::<T>, outputs_avx2::<T>],
        }
    }
}

/// `src[ch..ch + w]` (`w <= 8`), zero-padded to eight lanes.
#[inline(always)]
fn load(src: &[f32], ch: usize, w: usize) -> V {
    if w == 8 {
        src[ch..ch + 8].try_into().unwrap()
    } else {
        let mut v = [0.0; 8];
        v[..w].copy_from_slice(&src[ch..ch + w]);
        v
    }
}

#[inline(always)]
fn store(dst: &mut [f32], ch: usize, w: usize, v: &V) {
    if w == 8 {
        dst[ch..ch + 8].copy_from_slice(v);
    } else {
        dst[ch..ch + w].copy_from_slice(&v[..w]);
    }
}

/// Input transform `V = B^T d B` of tiles `t0..t0 + tc` into `v` (`[a * a][cap][cin]`).
///
/// # Safety
/// None beyond the arguments' shapes (unsafe only to share a type with [`inputs_avx2`]).
#[inline(always)]
unsafe fn inputs<T: Tile>(
    geo: &Geometry<'_>,
    cin: usize,
    v: &mut [f32],
    (t0, tc, cap): (usize, usize, usize),
) {
    let (x, a, m) = (geo.x, T::A, T::M);
    let (th, tw) = (geo.oh.div_ceil(m), geo.ow.div_ceil(m));
    let zeros = vec![0.0f32; cin];
    for j in 0..tc {
        let t = t0 + j;
        let (img, ty, tx) = (t / (th * tw), (t / tw) % th, t % tw);
        let mut d: [&[f32]; 36] = [&zeros[..]; 36];
        for i in 0..a {
            let iy = (m * ty + i) as isize - geo.pad_top as isize;
            if iy < 0 || iy >= x.h as isize {
                continue;
            }
            for k in 0..a {
                let ix = (m * tx + k) as isize - geo.pad_left as isize;
                if ix < 0 || ix >= x.w as isize {
                    continue;
                }
                let o = ((img * x.h + iy as usize) * x.w + ix as usize) * x.c + geo.xoff;
                d[i * a + k] = &x.data[o..o + cin];
            }
        }
        for ch in (0..cin).step_by(8) {
            let w = 8.min(cin - ch);
            let mut r = [[[0.0f32; 8]; 6]; 6];
            // Columns first (B^T d), then rows ((B^T d) B).
            for k in 0..a {
                let col = T::input(std::array::from_fn(|i| {
                    if i < a {
                        load(d[i * a + k], ch, w)
                    } else {
                        [0.0; 8]
                    }
                }));
                for p in 0..a {
                    r[p][k] = col[p];
                }
            }
            for (p, rp) in r.iter().enumerate().take(a) {
                let row = T::input(*rp);
                for (q, vq) in row.iter().enumerate().take(a) {
                    store(v, ((p * a + q) * cap + j) * cin + ch, w, vq);
                }
            }
        }
    }
}
/// Output transform `Y = A^T M A` of tiles `t0..t0 + tc` from `mo` (`[a * a][cap][cout]`),
/// plus bias and ReLU, stored into the output map's pixels.
///
/// # Safety
/// `dst` is the output map `geo` describes, and nothing else writes these tiles' pixels
/// meanwhile.
#[inline(always)]
#[allow(clippy::needless_range_loop)] // s[i][q] is filled column by column
unsafe fn outputs<T: Tile>(
    geo: &Geometry<'_>,
    mo: &[f32],
    (cout, bias, relu): (usize, &[f32], bool),
    dst: SendPtr,
    (t0, tc, cap): (usize, usize, usize),
) {
    let (a, m) = (T::A, T::M);
    let (th, tw) = (geo.oh.div_ceil(m), geo.ow.div_ceil(m));
    for j in 0..tc {
        let t = t0 + j;
        let (img, ty, tx) = (t / (th * tw), (t / tw) % th, t % tw);
        // The tile's output pixels inside the map.
        let mut px: [Option<&mut [f32]>; 16] = Default::default();
        for i in 0..m {
            for jj in 0..m {
                let (oy, ox) = (m * ty + i, m * tx + jj);
                if oy < geo.oh && ox < geo.ow {
                    let o = ((img * geo.oh + oy) * geo.ow + ox) * geo.oc + geo.ooff;
                    // SAFETY: `cout` floats inside the output map (see the function's
                    // contract), one pixel per slot.
                    px[i * m + jj] =
                        Some(unsafe { std::slice::from_raw_parts_mut(dst.0.add(o), cout) });
                }
            }
        }
        for ch in (0..cout).step_by(8) {
            let w = 8.min(cout - ch);
            let b = load(bias, ch, w);
            let mut s = [[[0.0f32; 8]; 6]; 4];
            for q in 0..a {
                let col = T::output(std::array::from_fn(|p| {
                    if p < a {
                        load(mo, ((p * a + q) * cap + j) * cout + ch, w)
                    } else {
                        [0.0; 8]
                    }
                }));
                for i in 0..m {
                    s[i][q] = col[i];
                }
            }
            for (i, si) in s.iter().enumerate().take(m) {
                let y = T::output(*si);
                for (jj, yv) in y.iter().enumerate().take(m) {
                    if let Some(p) = &mut px[i * m + jj] {
                        let v = add(*yv, b);
                        let v = if relu { v.map(|e| e.max(0.0)) } else { v };
                        store(p, ch, w, &v);
                    }
                }
            }
        }
    }
}

/// [`inputs`] compiled for AVX2 and FMA.
///
/// # Safety
/// The CPU has AVX2 and FMA.
#[cfg_attr(target_arch = "x86_64", target_feature(enable = "avx2,fma"))]
unsafe fn inputs_avx2<T: Tile>(
    geo: &Geometry<'_>,
    cin: usize,
    v: &mut [f32],
    tiles: (usize, usize, usize),
) {
    // SAFETY: as for `inputs`.
    unsafe { inputs::<T>(geo, cin, v, tiles) }
}

/// [`outputs`] compiled for AVX2 and FMA.
///
/// # Safety
/// The CPU has AVX2 and FMA, and `outputs`' contract holds.
#[cfg_attr(target_arch = "x86_64", target_feature(enable = "avx2,fma"))]
unsafe fn outputs_avx2<T: Tile>(
    geo: &Geometry<'_>,
    mo: &[f32],
    epilogue: (usize, &[f32], bool),
    dst: SendPtr,
    tiles: (usize, usize, usize),
) {
    // SAFETY: as for `outputs`.
    unsafe { outputs::<T>(geo, mo, epilogue, dst, tiles) }
}

impl Form {
    /// The input tile's side.
    fn a(&self) -> usize {
        self.m + 2
    }

    /// Transformed matrices per tile: `a * a`.
    pub(super) fn points(&self) -> usize {
        self.a() * self.a()
    }

    /// Tiles covering an `oh x ow` output, per image.
    pub(super) fn tiles(&self, oh: usize, ow: usize) -> usize {
        oh.div_ceil(self.m) * ow.div_ceil(self.m)
    }

    /// Tiles per chunk on the `gemm` crate's products (which pack the weights on every call,
    /// so chunks are large): the transformed input and output blocks of a chunk take as much
    /// memory as 256 tiles of F(2x2, 3x3).
    fn max_chunk(&self) -> usize {
        16 * TILES / self.points()
    }

    /// `U = G g G^T` for every (input, output) channel pair, stored `[a * a][cin][cout]`,
    /// from weights stored `[(dy * 3 + dx) * cin + ci][cout]`.
    pub(super) fn weights(&self, w: &[f32], cin: usize, cout: usize) -> Vec<f32> {
        let a = self.a();
        let g = |r: usize, c: usize| self.g[r * 3 + c];
        let mut u = vec![0.0f32; a * a * cin * cout];
        for ci in 0..cin {
            for co in 0..cout {
                let k = |dy: usize, dx: usize| w[((dy * 3 + dx) * cin + ci) * cout + co] as f64;
                // t = G k (a x 3), then U = t G^T (a x a).
                let mut t = [[0.0f64; 3]; 8];
                for (p, row) in t.iter_mut().take(a).enumerate() {
                    for (dx, v) in row.iter_mut().enumerate() {
                        *v = (0..3).map(|dy| g(p, dy) * k(dy, dx)).sum();
                    }
                }
                for p in 0..a {
                    for q in 0..a {
                        let v: f64 = (0..3).map(|dx| t[p][dx] * g(q, dx)).sum();
                        u[((p * a + q) * cin + ci) * cout + co] = v as f32;
                    }
                }
            }
        }
        u
    }
}

/// Tiles per chunk on the `gemm` crate's products, for F(2x2, 3x3) (see [`Form::max_chunk`]).
const TILES: usize = 256;

/// With the products on packed weights ([`sgemm`]), Winograd runs where every thread gets at
/// least this many tiles.
const MIN_PACKED_TILES: usize = 32;

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

/// A convolution's weights in one Winograd form: `a * a` matrices `[cin][cout]`, unpacked
/// for the `gemm` crate's products or packed for [`sgemm`]'s.
#[derive(Debug, Clone)]
pub(super) struct Weights {
    pub(super) form: &'static Form,
    cin: usize,
    cout: usize,
    /// `[a * a][cin][cout]` (empty where `packed` holds them).
    u: Vec<f32>,
    packed: Option<Vec<sgemm::Packed>>,
}

impl Weights {
    /// From weights stored `[(dy * 3 + dx) * cin + ci][cout]`; `packed` where the f32
    /// products run on [`sgemm`].
    pub(super) fn new(
        form: &'static Form,
        w: &[f32],
        (cin, cout): (usize, usize),
        packed: bool,
    ) -> Self {
        let u = form.weights(w, cin, cout);
        let (u, packed) = if packed {
            let p = u
                .chunks_exact(cin * cout)
                .map(|m| sgemm::Packed::new(m, cin, cout))
                .collect();
            (Vec::new(), Some(p))
        } else {
            (u, None)
        };
        Self {
            form,
            cin,
            cout,
            u,
            packed,
        }
    }

    /// Tiles each thread needs for this form to beat im2col: on packed f32 weights short
    /// products stay efficient, so a chunk of [`MIN_PACKED_TILES`] pays; the `gemm` crate
    /// wants a full chunk.
    pub(super) fn min_tiles(&self) -> usize {
        match self.packed {
            Some(_) => MIN_PACKED_TILES,
            None => self.form.max_chunk(),
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
    u: &Weights,
    bias: &[f32],
    relu: bool,
    dst: SendPtr,
    scratch: &mut [Vec<f32>],
    threads: usize,
) {
    let (form, cin, cout) = (u.form, u.cin, u.cout);
    let tiles = geo.x.n * form.tiles(geo.oh, geo.ow);
    // Chunks claimed by the threads as they come free; on packed f32 weights (whose products
    // stay efficient on short ones) several per thread, for balance, and each small enough
    // that its transformed blocks stay in the core's cache.
    let chunks = match u.packed {
        Some(_) => {
            let fit = (PACKED_CHUNK_FLOATS / (form.points() * (cin + cout))).max(1);
            team::chunk_count(tiles, threads, MIN_PACKED_TILES / 2).max(tiles.div_ceil(fit))
        }
        None => tiles.div_ceil(form.max_chunk()),
    };
    let per = tiles.div_ceil(chunks.max(1));
    let need = form.points() * per * (cin + cout);
    team::split_mut(&mut scratch[..threads], chunks, |s, claims| {
        if s.len() < need {
            s.resize(need, 0.0);
        }
        for c in claims {
            let t = team::chunk_range(tiles, chunks, 1, c);
            // SAFETY: chunks are disjoint sets of tiles, so they write disjoint output
            // pixels.
            unsafe { chunk(geo, u, bias, relu, dst, (t.start, t.len(), per), s) };
        }
    });
}

/// Floats of transformed input and output per chunk on packed f32 weights: 512 KiB.
const PACKED_CHUNK_FLOATS: usize = 128 * 1024;

/// Tiles `t0..t0 + tc` (`tc <= cap`) of `u`'s form: input transform, `a * a` products, output transform.
/// `scratch` holds `a * a * cap * (cin + cout)` floats.
#[allow(clippy::too_many_arguments)]
unsafe fn chunk(
    geo: &Geometry<'_>,
    u: &Weights,
    bias: &[f32],
    relu: bool,
    dst: SendPtr,
    (t0, tc, cap): (usize, usize, usize),
    scratch: &mut [f32],
) {
    let (form, cin, cout) = (u.form, u.cin, u.cout);
    let a = form.a();
    let (v, mo) = scratch.split_at_mut(a * a * cap * cin);
    let simd = usize::from(sgemm::avx2_available() && !plain_forced());
    // SAFETY: `v` holds `a * a * cap * cin` floats; AVX2 and FMA where `simd` is 1.
    unsafe { (form.transforms.inputs[simd])(geo, cin, v, (t0, tc, cap)) };
    // a * a products: M_xi [tc, cout] = V_xi [tc, cin] x U_xi [cin, cout].
    for xi in 0..a * a {
        // SAFETY: V_xi holds tc rows of cin floats, U_xi cin rows of cout, M_xi tc rows of
        // cout; all inside their buffers.
        if let Some(packed) = &u.packed {
            let out = sgemm::Out {
                ptr: unsafe { mo.as_mut_ptr().add(xi * cap * cout) },
                ldc: cout,
                accumulate: false,
                beta: 1.0,
            };
            // SAFETY: as above; the packed weights exist only where the AVX2 kernel runs.
            unsafe {
                sgemm::gemm(
                    tc,
                    cout,
                    v.as_ptr().add(xi * cap * cin),
                    cin,
                    &packed[xi],
                    0,
                    out,
                )
            };
            continue;
        }
        unsafe {
            gemm::gemm(
                tc,
                cout,
                cin,
                mo.as_mut_ptr().add(xi * cap * cout),
                1,
                cout as isize,
                false,
                v.as_ptr().add(xi * cap * cin),
                1,
                cin as isize,
                u.u.as_ptr().add(xi * cin * cout),
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
    // SAFETY: `mo` holds the products; `dst` as this function's contract says; AVX2 and
    // FMA where `simd` is 1.
    unsafe { (form.transforms.outputs[simd])(geo, mo, (cout, bias, relu), dst, (t0, tc, cap)) };
}

/// Whether the transforms' build without AVX2 is forced (by a test; never otherwise).
fn plain_forced() -> bool {
    #[cfg(test)]
    return tests::PLAIN.load(std::sync::atomic::Ordering::Relaxed);
    #[cfg(not(test))]
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fast::F32Kernel;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// Forces the transforms' build without AVX2: set by the test below for its second pass
    /// (both builds give the same results, so other tests running meanwhile are unaffected).
    pub(super) static PLAIN: AtomicBool = AtomicBool::new(false);

    /// Direct 3x3 convolution (f64 sums) of an NHWC map, bias and optional ReLU.
    #[allow(clippy::too_many_arguments)]
    fn direct(
        x: &Buf,
        w: &[f32],
        b: &[f32],
        pad: [usize; 2],
        (oh, ow): (usize, usize),
        cout: usize,
        relu: bool,
    ) -> Vec<f32> {
        let cin = x.c;
        let mut y = vec![0.0f32; x.n * oh * ow * cout];
        for img in 0..x.n {
            for oy in 0..oh {
                for ox in 0..ow {
                    for co in 0..cout {
                        let mut s = b[co] as f64;
                        for dy in 0..3 {
                            for dx in 0..3 {
                                let (iy, ix) = (
                                    (oy + dy) as isize - pad[0] as isize,
                                    (ox + dx) as isize - pad[1] as isize,
                                );
                                if iy < 0 || ix < 0 || iy >= x.h as isize || ix >= x.w as isize {
                                    continue;
                                }
                                for ci in 0..cin {
                                    let xv = x.data[((img * x.h + iy as usize) * x.w
                                        + ix as usize)
                                        * cin
                                        + ci];
                                    s += xv as f64
                                        * w[((dy * 3 + dx) * cin + ci) * cout + co] as f64;
                                }
                            }
                        }
                        let v = s as f32;
                        y[((img * oh + oy) * ow + ox) * cout + co] =
                            if relu { v.max(0.0) } else { v };
                    }
                }
            }
        }
        y
    }

    /// Both forms, on the `gemm` crate's products and (where the CPU runs them) on packed
    /// weights, on 1 and 3 threads, against direct convolution: maps whose sides are not
    /// multiples of the tile (partial tiles at the edges), "same" and "valid" padding, a
    /// batch of two, channel counts off the 8-lane vectors. Tolerances relative to the largest
    /// output: F(2x2, 3x3) rounds like direct convolution (measured 2e-7, held to 1e-6),
    /// F(4x4, 3x3) about 20 times more (measured up to 4e-6, held to 1e-5).
    #[test]
    fn both_forms_match_direct_convolution() {
        forms_match_direct_convolution();
        // The transforms' build without AVX2 (what CPUs without it run).
        PLAIN.store(true, Ordering::Relaxed);
        forms_match_direct_convolution();
        PLAIN.store(false, Ordering::Relaxed);
    }

    fn forms_match_direct_convolution() {
        let mut packed = vec![false];
        if F32Kernel::Avx2.available() {
            packed.push(true);
        }
        let mut seed = 7u32;
        let mut rnd = move || {
            seed = seed.wrapping_mul(1664525).wrapping_add(1013904223);
            (seed >> 8) as f32 / (1 << 24) as f32 * 2.0 - 1.0
        };
        for (n, h, w, cin, cout, pad) in [
            (2, 11, 9, 8, 16, 1),
            (1, 17, 17, 13, 24, 0),
            (1, 6, 7, 32, 19, 1),
        ] {
            let x = Buf {
                data: (0..n * h * w * cin).map(|_| rnd()).collect(),
                n,
                h,
                w,
                c: cin,
            };
            let wt: Vec<f32> = (0..9 * cin * cout).map(|_| rnd() * 0.3).collect();
            let b: Vec<f32> = (0..cout).map(|_| rnd()).collect();
            let (oh, ow) = (h + 2 * pad - 2, w + 2 * pad - 2);
            for relu in [false, true] {
                let want = direct(&x, &wt, &b, [pad, pad], (oh, ow), cout, relu);
                for form in [&F2, &F4] {
                    for &p in &packed {
                        let u = Weights::new(form, &wt, (cin, cout), p);
                        for threads in [1, 3] {
                            let mut got = vec![f32::NAN; want.len()];
                            let geo = Geometry::new(&x, 0, [pad; 4], (oh, ow), cout, 0);
                            let mut scratch = vec![Vec::new(); threads];
                            // SAFETY: `got` is shaped as `geo` describes.
                            unsafe {
                                conv(
                                    &geo,
                                    &u,
                                    &b,
                                    relu,
                                    SendPtr(got.as_mut_ptr()),
                                    &mut scratch,
                                    threads,
                                )
                            };
                            let err = got
                                .iter()
                                .zip(&want)
                                .fold(0f32, |m, (g, w)| m.max((g - w).abs()));
                            let scale = want.iter().fold(1f32, |m, v| m.max(v.abs()));
                            let tol = if form.m == 2 { 1e-6 } else { 1e-5 };
                            assert!(
                                err <= tol * scale,
                                "F({m}x{m}) packed={p} threads={threads} {n}x{h}x{w}x{cin}->{cout} pad {pad} relu {relu}: max abs diff {err}",
                                m = form.m
                            );
                        }
                    }
                }
            }
        }
    }
}
