//! Winograd convolution (Lavin and Gray, "Fast Algorithms for Convolutional Neural
//! Networks", <https://arxiv.org/abs/1509.09308>): F(m x m, 3x3) cuts the input into
//! overlapping `a x a` tiles (`a = m + 2`) whose outputs are `m x m` pixels, and each tile
//! costs `a * a` multiplies per input-output channel pair instead of `9 * m * m`, computed as
//! `a * a` matrix products over the tiles. A [`Form`] may differ along the two axes, which
//! gives the one-dimensional forms of the 1x7 and 7x1 convolutions.
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
//! transform matrices one channel vector at a time. A third build runs sixteen channels at a
//! time on AVX-512 registers, beside the AVX-512 products: in a two-core profile at batch 32
//! on Zen 5 the transforms' share fell from 11.2 % to 8.3 % of the samples. F(2x2, 3x3) (`F2`, whose transforms
//! only add, subtract and halve) is kept for the tests, which hold every form to direct
//! convolution.
//!
//! Block17's 1x7 and 7x1 convolutions (128 -> 128 channels on 8x8 maps, a tenth of the
//! network's multiplies) run F(2, 7) along their long axis ([`F27_ROW`], [`F27_COL`]): eight
//! multiplies per two outputs instead of fourteen. Its transforms have coefficients up to 21
//! and down to 1/360, and in f32 the network's raw embeddings moved by at most 5.4e-7.
//! Alternating with im2col batch by batch in one process on two Zen 3 cores, it ran +0.8 to
//! +10 % more images per second at batch 8 (mean +5.5 % over five runs) and -0.2 to +5 % at
//! batch 32 (mean +2.3 %), where the same runs read -0.5 to +6 % at batch 1, which it did not
//! change then (on two threads a batch of one has too few tiles): the machine's noise.
//!
//! Where the tiles are too few to give every thread a chunk (a batch of one on two or more
//! threads: 25 tiles of F(4x4, 3x3) on Mixed_6a's 17x17 map, 32 of F(2, 7) on Block17's 8x8;
//! Block35's 32-channel ones are too narrow), the threads split the output channels instead,
//! each transforming all the tiles' inputs itself ([`Weights::by_cols`]); those convolutions
//! ran im2col before.
//! Alternating the two choices image by image in one process on two Zen 3 cores, a batch of one
//! ran 0.9-3.6 % more images per second (F(4x4, 3x3) alone 0.9-2.4 %, F(2, 7) alone 0.1-1.1 %).

use super::{Buf, SendPtr, sgemm, team};
use gemm::Parallelism;

/// One Winograd form, possibly different along the two axes: per axis an output tile side
/// `m`, a kernel side `r` and an input tile side `a = m + r - 1`, the weight transforms `G`
/// (`a x r`, row-major; down the rows, then across), and the input and output transforms
/// ([`Tile`], one per axis).
#[derive(Debug)]
pub(super) struct Form {
    /// Output tile sides (rows, columns).
    m: [usize; 2],
    /// Kernel sides (rows, columns).
    r: [usize; 2],
    g: [&'static [f64]; 2],
    transforms: Transforms,
}

/// The identity along an axis of kernel side 1: `G = [1]`.
const G1: &[f64] = &[1.0];

/// F(2x2, 3x3): `B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1]`,
/// `A^T = [1 1 1 0; 0 1 -1 -1]`.
#[cfg(test)]
const F2: Form = Form {
    m: [2, 2],
    r: [3, 3],
    g: [G2, G2],
    transforms: Transforms::of::<T2, T2>(),
};

#[cfg(test)]
#[rustfmt::skip]
const G2: &[f64] = &[
    1.0, 0.0, 0.0,
    0.5, 0.5, 0.5,
    0.5, -0.5, 0.5,
    0.0, 0.0, 1.0,
];

/// F(4x4, 3x3), on the points 0, 1, -1, 2, -2 and infinity (transforms in [`T4`]).
const F4: Form = Form {
    m: [4, 4],
    r: [3, 3],
    g: [G4, G4],
    transforms: Transforms::of::<T4, T4>(),
};

#[rustfmt::skip]
const G4: &[f64] = &[
    1.0 / 4.0, 0.0, 0.0,
    -1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0,
    -1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0,
    1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0,
    1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0,
    0.0, 0.0, 1.0,
];

/// F(1x2, 1x7), for the 1x7 convolutions: two outputs of a row from eight inputs, eight
/// multiplies against fourteen, on the points 0, 1, -1, 2, -2, 1/2, -1/2 and infinity
/// (transforms in [`T27`]).
const F27_ROW: Form = Form {
    m: [1, 2],
    r: [1, 7],
    g: [G1, G27],
    transforms: Transforms::of::<T1, T27>(),
};

/// F(2x1, 7x1), for the 7x1 convolutions: [`F27_ROW`] down the columns.
const F27_COL: Form = Form {
    m: [2, 1],
    r: [7, 1],
    g: [G27, G1],
    transforms: Transforms::of::<T27, T1>(),
};

#[rustfmt::skip]
const G27: &[f64] = &[
    1.0 / 4.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0,
    1.0 / 18.0, 1.0 / 18.0, 1.0 / 18.0, 1.0 / 18.0, 1.0 / 18.0, 1.0 / 18.0, 1.0 / 18.0,
    1.0 / 18.0, -1.0 / 18.0, 1.0 / 18.0, -1.0 / 18.0, 1.0 / 18.0, -1.0 / 18.0, 1.0 / 18.0,
    1.0 / 360.0, 1.0 / 180.0, 1.0 / 90.0, 1.0 / 45.0, 2.0 / 45.0, 4.0 / 45.0, 8.0 / 45.0,
    1.0 / 360.0, -1.0 / 180.0, 1.0 / 90.0, -1.0 / 45.0, 2.0 / 45.0, -4.0 / 45.0, 8.0 / 45.0,
    16.0 / 45.0, 8.0 / 45.0, 4.0 / 45.0, 2.0 / 45.0, 1.0 / 45.0, 1.0 / 90.0, 1.0 / 180.0,
    16.0 / 45.0, -8.0 / 45.0, 4.0 / 45.0, -2.0 / 45.0, 1.0 / 45.0, -1.0 / 90.0, 1.0 / 180.0,
    0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0 / 4.0,
];

/// The form for a stride-1 convolution of this kernel shape, if there is one.
pub(super) fn form_for(kh: usize, kw: usize) -> Option<&'static Form> {
    match (kh, kw) {
        (3, 3) => Some(&F4),
        (1, 7) => Some(&F27_ROW),
        (7, 1) => Some(&F27_COL),
        _ => None,
    }
}

/// `L` channels, the unit the transforms compute on: eight (one AVX register) or sixteen
/// (one AVX-512 register).
type V<const L: usize> = [f32; L];

#[inline(always)]
fn add<const L: usize>(a: V<L>, b: V<L>) -> V<L> {
    std::array::from_fn(|l| a[l] + b[l])
}

#[inline(always)]
fn sub<const L: usize>(a: V<L>, b: V<L>) -> V<L> {
    std::array::from_fn(|l| a[l] - b[l])
}

#[inline(always)]
fn mul<const L: usize>(c: f32, a: V<L>) -> V<L> {
    std::array::from_fn(|l| c * a[l])
}

/// A form's one-dimensional transforms on `L` channels at once: `input` applies `B^T` to
/// `a` values (the first `a` of eight), `output` applies `A^T` (the first `m` of four).
trait Tile {
    const M: usize;
    const A: usize;
    fn input<const L: usize>(d: [V<L>; 8]) -> [V<L>; 8];
    fn output<const L: usize>(m: [V<L>; 8]) -> [V<L>; 4];
}

/// The identity, along an axis of kernel side 1.
struct T1;

impl Tile for T1 {
    const M: usize = 1;
    const A: usize = 1;
    #[inline(always)]
    fn input<const L: usize>([d0, ..]: [V<L>; 8]) -> [V<L>; 8] {
        let z = [0.0; L];
        [d0, z, z, z, z, z, z, z]
    }
    #[inline(always)]
    fn output<const L: usize>([m0, ..]: [V<L>; 8]) -> [V<L>; 4] {
        let z = [0.0; L];
        [m0, z, z, z]
    }
}

#[cfg(test)]
struct T2;

#[cfg(test)]
impl Tile for T2 {
    const M: usize = 2;
    const A: usize = 4;
    #[inline(always)]
    fn input<const L: usize>([d0, d1, d2, d3, ..]: [V<L>; 8]) -> [V<L>; 8] {
        let z = [0.0; L];
        [
            sub(d0, d2),
            add(d1, d2),
            sub(d2, d1),
            sub(d1, d3),
            z,
            z,
            z,
            z,
        ]
    }
    #[inline(always)]
    fn output<const L: usize>([m0, m1, m2, m3, ..]: [V<L>; 8]) -> [V<L>; 4] {
        let z = [0.0; L];
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
    fn input<const L: usize>([d0, d1, d2, d3, d4, d5, ..]: [V<L>; 8]) -> [V<L>; 8] {
        let (s42, s31) = (sub(d4, d2), sub(d3, d1));
        let z = [0.0; L];
        [
            add(sub(mul(4.0, d0), mul(5.0, d2)), d4),
            sub(add(d3, d4), mul(4.0, add(d1, d2))),
            add(sub(d4, d3), mul(4.0, sub(d1, d2))),
            add(s42, mul(2.0, s31)),
            sub(s42, mul(2.0, s31)),
            add(sub(mul(4.0, d1), mul(5.0, d3)), d5),
            z,
            z,
        ]
    }
    #[inline(always)]
    fn output<const L: usize>([m0, m1, m2, m3, m4, m5, ..]: [V<L>; 8]) -> [V<L>; 4] {
        let (a12, s12, a34, s34) = (add(m1, m2), sub(m1, m2), add(m3, m4), sub(m3, m4));
        [
            add(add(m0, a12), a34),
            add(s12, mul(2.0, s34)),
            add(a12, mul(4.0, a34)),
            add(add(s12, mul(8.0, s34)), m5),
        ]
    }
}

/// F(2, 7) on the points 0, 1, -1, 2, -2, 1/2, -1/2 and infinity: `B^T` =
/// `[4 0 -21 0 21 0 -4 0; 0 -4 -4 17 17 -4 -4 0; 0 4 -4 -17 17 4 -4 0;
///   0 2 1 -10 -5 8 4 0; 0 -2 1 10 -5 -8 4 0; 0 4 8 -5 -10 1 2 0; 0 -4 8 5 -10 -1 2 0;
///   0 -4 0 21 0 -21 0 4]`, `A^T = [1 1 1 1 1 1 1 0; 0 1 -1 2 -2 1/2 -1/2 1]`; each pair of
/// opposite points shares its even and odd sums.
struct T27;

impl Tile for T27 {
    const M: usize = 2;
    const A: usize = 8;
    #[inline(always)]
    fn input<const L: usize>([d0, d1, d2, d3, d4, d5, d6, d7]: [V<L>; 8]) -> [V<L>; 8] {
        let lin =
            |c: [f32; 3], x: [V<L>; 3]| add(add(mul(c[0], x[0]), mul(c[1], x[1])), mul(c[2], x[2]));
        let (odd, even) = ([d1, d3, d5], [d2, d4, d6]);
        let (e1, o1) = (lin([-4.0, 17.0, -4.0], even), lin([-4.0, 17.0, -4.0], odd));
        let (e2, o2) = (lin([1.0, -5.0, 4.0], even), lin([2.0, -10.0, 8.0], odd));
        let (e3, o3) = (lin([8.0, -10.0, 2.0], even), lin([4.0, -5.0, 1.0], odd));
        [
            add(mul(4.0, sub(d0, d6)), mul(21.0, sub(d4, d2))),
            add(e1, o1),
            sub(e1, o1),
            add(e2, o2),
            sub(e2, o2),
            add(e3, o3),
            sub(e3, o3),
            add(mul(4.0, sub(d7, d1)), mul(21.0, sub(d3, d5))),
        ]
    }
    #[inline(always)]
    fn output<const L: usize>([m0, m1, m2, m3, m4, m5, m6, m7]: [V<L>; 8]) -> [V<L>; 4] {
        let z = [0.0; L];
        let (a12, a34, a56) = (add(m1, m2), add(m3, m4), add(m5, m6));
        let (s12, s34, s56) = (sub(m1, m2), sub(m3, m4), sub(m5, m6));
        [
            add(add(add(m0, a12), a34), a56),
            add(add(add(s12, mul(2.0, s34)), mul(0.5, s56)), m7),
            z,
            z,
        ]
    }
}

/// A form's input and output transform of a chunk of tiles, compiled three times and picked
/// per call ([`Level`]): without AVX2, for AVX2 and FMA on eight channels at a time, and for
/// AVX-512 on sixteen.
#[derive(Debug)]
struct Transforms {
    inputs: [InputsFn; 3],
    outputs: [OutputsFn; 3],
}

type InputsFn = unsafe fn(&Geometry<'_>, usize, &mut [f32], (usize, usize, usize));
type OutputsFn =
    unsafe fn(&Geometry<'_>, &[f32], (usize, &[f32], bool), SendPtr, (usize, usize, usize));

impl Transforms {
    /// `H` down the rows, `W` across.
    const fn of<H: Tile, W: Tile>() -> Self {
        Self {
            inputs: [
                inputs::<H, W, 8>,
                inputs_avx2::<H, W>,
                inputs_avx512::<H, W>,
            ],
            outputs: [
                outputs::<H, W, 8>,
                outputs_avx2::<H, W>,
                outputs_avx512::<H, W>,
            ],
        }
    }
}

/// `src[ch..ch + w]` (`w <= L`), zero-padded to `L` lanes.
#[inline(always)]
fn load<const L: usize>(src: &[f32], ch: usize, w: usize) -> V<L> {
    if w == L {
        src[ch..ch + L].try_into().unwrap()
    } else {
        let mut v = [0.0; L];
        v[..w].copy_from_slice(&src[ch..ch + w]);
        v
    }
}

#[inline(always)]
fn store<const L: usize>(dst: &mut [f32], ch: usize, w: usize, v: &V<L>) {
    if w == L {
        dst[ch..ch + L].copy_from_slice(v);
    } else {
        dst[ch..ch + w].copy_from_slice(&v[..w]);
    }
}

/// What the input transforms read for padding: enough for every convolution of the networks
/// here (at most 1,792 input channels).
static ZEROS: [f32; 2048] = [0.0; 2048];

/// Input transform `V = B_H^T d B_W` of tiles `t0..t0 + tc` into `v`
/// (`[a_h * a_w][cap][cin]`), `L` channels at a time: `H` down the rows, `W` across.
///
/// # Safety
/// None beyond the arguments' shapes (unsafe only to share a type with [`inputs_avx2`]).
#[inline(always)]
unsafe fn inputs<H: Tile, W: Tile, const L: usize>(
    geo: &Geometry<'_>,
    cin: usize,
    v: &mut [f32],
    (t0, tc, cap): (usize, usize, usize),
) {
    let x = geo.x;
    let (ah, aw, mh, mw) = (H::A, W::A, H::M, W::M);
    let (th, tw) = (geo.oh.div_ceil(mh), geo.ow.div_ceil(mw));
    // Padding reads zeros: from a static block where `cin` fits it.
    let owned;
    let zeros: &[f32] = if cin <= ZEROS.len() {
        &ZEROS[..cin]
    } else {
        owned = vec![0.0f32; cin];
        &owned
    };
    // The tile's matrices live across the loops, so that they are zeroed once per call
    // rather than once per eight channels (slots past a form's side are never read).
    let mut r = [[[0.0f32; L]; 8]; 8];
    let mut col = [[0.0f32; L]; 8];
    for j in 0..tc {
        let t = t0 + j;
        let (img, ty, tx) = (t / (th * tw), (t / tw) % th, t % tw);
        let mut d: [&[f32]; 64] = [zeros; 64];
        for i in 0..ah {
            let iy = (mh * ty + i) as isize - geo.pad_top as isize;
            if iy < 0 || iy >= x.h as isize {
                continue;
            }
            for k in 0..aw {
                let ix = (mw * tx + k) as isize - geo.pad_left as isize;
                if ix < 0 || ix >= x.w as isize {
                    continue;
                }
                let o = ((img * x.h + iy as usize) * x.w + ix as usize) * x.c + geo.xoff;
                d[i * aw + k] = &x.data[o..o + cin];
            }
        }
        for ch in (0..cin).step_by(L) {
            let w = L.min(cin - ch);
            // Columns first (B_H^T d), then rows ((B_H^T d) B_W): `r[p][k]`.
            for k in 0..aw {
                for (i, c) in col.iter_mut().enumerate().take(ah) {
                    *c = load(d[i * aw + k], ch, w);
                }
                let t = H::input(col);
                for p in 0..ah {
                    r[p][k] = t[p];
                }
            }
            for (p, rp) in r.iter().enumerate().take(ah) {
                let row = W::input(*rp);
                for (q, vq) in row.iter().enumerate().take(aw) {
                    store(v, ((p * aw + q) * cap + j) * cin + ch, w, vq);
                }
            }
        }
    }
}

/// Output transform `Y = A_H^T M A_W` of tiles `t0..t0 + tc` from `mo`
/// (`[a_h * a_w][cap][cout]`), plus bias and ReLU, stored into the output map's pixels, `L`
/// channels at a time.
///
/// # Safety
/// `dst` is the output map `geo` describes, and nothing else writes these tiles' pixels
/// meanwhile.
#[inline(always)]
#[allow(clippy::needless_range_loop)] // s[i][q] is filled column by column
unsafe fn outputs<H: Tile, W: Tile, const L: usize>(
    geo: &Geometry<'_>,
    mo: &[f32],
    (cout, bias, relu): (usize, &[f32], bool),
    dst: SendPtr,
    (t0, tc, cap): (usize, usize, usize),
) {
    let (ah, aw, mh, mw) = (H::A, W::A, H::M, W::M);
    let (th, tw) = (geo.oh.div_ceil(mh), geo.ow.div_ceil(mw));
    // As in `inputs`: zeroed once per call.
    let mut s = [[[0.0f32; L]; 8]; 4];
    let mut col = [[0.0f32; L]; 8];
    for j in 0..tc {
        let t = t0 + j;
        let (img, ty, tx) = (t / (th * tw), (t / tw) % th, t % tw);
        // The tile's output pixels inside the map.
        let mut px: [Option<&mut [f32]>; 16] = Default::default();
        for i in 0..mh {
            for jj in 0..mw {
                let (oy, ox) = (mh * ty + i, mw * tx + jj);
                if oy < geo.oh && ox < geo.ow {
                    let o = ((img * geo.oh + oy) * geo.ow + ox) * geo.oc + geo.ooff;
                    // SAFETY: `cout` floats inside the output map (see the function's
                    // contract), one pixel per slot.
                    px[i * mw + jj] =
                        Some(unsafe { std::slice::from_raw_parts_mut(dst.0.add(o), cout) });
                }
            }
        }
        for ch in (0..cout).step_by(L) {
            let w = L.min(cout - ch);
            let b = load::<L>(bias, ch, w);
            // Columns first (A_H^T M), then rows: `s[i][q]`.
            for q in 0..aw {
                for (p, c) in col.iter_mut().enumerate().take(ah) {
                    *c = load(mo, ((p * aw + q) * cap + j) * cout + ch, w);
                }
                let t = H::output(col);
                for i in 0..mh {
                    s[i][q] = t[i];
                }
            }
            for (i, si) in s.iter().enumerate().take(mh) {
                let y = W::output(*si);
                for (jj, yv) in y.iter().enumerate().take(mw) {
                    if let Some(p) = &mut px[i * mw + jj] {
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
unsafe fn inputs_avx2<H: Tile, W: Tile>(
    geo: &Geometry<'_>,
    cin: usize,
    v: &mut [f32],
    tiles: (usize, usize, usize),
) {
    // SAFETY: as for `inputs`.
    unsafe { inputs::<H, W, 8>(geo, cin, v, tiles) }
}

/// [`inputs`] compiled for AVX-512, sixteen channels at a time.
///
/// # Safety
/// The CPU has AVX-512F, AVX2 and FMA.
#[cfg_attr(target_arch = "x86_64", target_feature(enable = "avx2,fma,avx512f"))]
unsafe fn inputs_avx512<H: Tile, W: Tile>(
    geo: &Geometry<'_>,
    cin: usize,
    v: &mut [f32],
    tiles: (usize, usize, usize),
) {
    // SAFETY: as for `inputs`.
    unsafe { inputs::<H, W, 16>(geo, cin, v, tiles) }
}

/// [`outputs`] compiled for AVX2 and FMA.
///
/// # Safety
/// The CPU has AVX2 and FMA, and `outputs`' contract holds.
#[cfg_attr(target_arch = "x86_64", target_feature(enable = "avx2,fma"))]
unsafe fn outputs_avx2<H: Tile, W: Tile>(
    geo: &Geometry<'_>,
    mo: &[f32],
    epilogue: (usize, &[f32], bool),
    dst: SendPtr,
    tiles: (usize, usize, usize),
) {
    // SAFETY: as for `outputs`.
    unsafe { outputs::<H, W, 8>(geo, mo, epilogue, dst, tiles) }
}

/// [`outputs`] compiled for AVX-512, sixteen channels at a time.
///
/// # Safety
/// The CPU has AVX-512F, AVX2 and FMA, and `outputs`' contract holds.
#[cfg_attr(target_arch = "x86_64", target_feature(enable = "avx2,fma,avx512f"))]
unsafe fn outputs_avx512<H: Tile, W: Tile>(
    geo: &Geometry<'_>,
    mo: &[f32],
    epilogue: (usize, &[f32], bool),
    dst: SendPtr,
    tiles: (usize, usize, usize),
) {
    // SAFETY: as for `outputs`.
    unsafe { outputs::<H, W, 16>(geo, mo, epilogue, dst, tiles) }
}

impl Form {
    /// The input tile's sides (rows, columns).
    fn a(&self) -> [usize; 2] {
        [self.m[0] + self.r[0] - 1, self.m[1] + self.r[1] - 1]
    }

    /// Transformed matrices per tile: `a_h * a_w`.
    pub(super) fn points(&self) -> usize {
        let [ah, aw] = self.a();
        ah * aw
    }

    /// Tiles covering an `oh x ow` output, per image.
    pub(super) fn tiles(&self, oh: usize, ow: usize) -> usize {
        oh.div_ceil(self.m[0]) * ow.div_ceil(self.m[1])
    }

    /// Tiles per chunk on the `gemm` crate's products (which pack the weights on every call,
    /// so chunks are large): the transformed input and output blocks of a chunk take as much
    /// memory as 256 tiles of F(2x2, 3x3).
    fn max_chunk(&self) -> usize {
        16 * TILES / self.points()
    }

    /// `U = G_H g G_W^T` for every (input, output) channel pair, stored
    /// `[a_h * a_w][cin][cout]`, from weights stored `[(dy * r_w + dx) * cin + ci][cout]`.
    pub(super) fn weights(&self, w: &[f32], cin: usize, cout: usize) -> Vec<f32> {
        let ([ah, aw], [rh, rw]) = (self.a(), self.r);
        let gh = |p: usize, dy: usize| self.g[0][p * rh + dy];
        let gw = |q: usize, dx: usize| self.g[1][q * rw + dx];
        let mut u = vec![0.0f32; ah * aw * cin * cout];
        for ci in 0..cin {
            for co in 0..cout {
                let k = |dy: usize, dx: usize| w[((dy * rw + dx) * cin + ci) * cout + co] as f64;
                // t = G_H k (a_h x r_w), then U = t G_W^T (a_h x a_w).
                let mut t = [[0.0f64; 8]; 8];
                for (p, row) in t.iter_mut().take(ah).enumerate() {
                    for (dx, v) in row.iter_mut().take(rw).enumerate() {
                        *v = (0..rh).map(|dy| gh(p, dy) * k(dy, dx)).sum();
                    }
                }
                for p in 0..ah {
                    for q in 0..aw {
                        let v: f64 = (0..rw).map(|dx| t[p][dx] * gw(q, dx)).sum();
                        u[((p * aw + q) * cin + ci) * cout + co] = v as f32;
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
#[derive(Clone, Copy)]
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

/// A convolution's weights in one Winograd form: `a_h * a_w` matrices `[cin][cout]`, unpacked
/// for the `gemm` crate's products or packed for [`sgemm`]'s.
#[derive(Debug, Clone)]
pub(super) struct Weights {
    pub(super) form: &'static Form,
    cin: usize,
    cout: usize,
    /// `[a_h * a_w][cin][cout]` (empty where `packed` holds them).
    u: Vec<f32>,
    packed: Option<Vec<sgemm::Packed>>,
}

impl Weights {
    /// Where the transformed weights lie ([`super::pages`]).
    pub(super) fn spans(&self, out: &mut Vec<(usize, usize)>) {
        out.push(super::pages::span(&self.u));
        out.extend(self.packed.iter().flatten().map(sgemm::Packed::span));
    }

    /// From weights stored `[(dy * r_w + dx) * cin + ci][cout]`; `packed`: the family where
    /// the f32 products run on [`sgemm`]'s packed weights.
    pub(super) fn new(
        form: &'static Form,
        w: &[f32],
        (cin, cout): (usize, usize),
        packed: Option<sgemm::F32Kernel>,
    ) -> Self {
        let u = form.weights(w, cin, cout);
        let (u, packed) = if let Some(kernel) = packed {
            let p = u
                .chunks_exact(cin * cout)
                .map(|m| sgemm::Packed::new(m, cin, cout, kernel))
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
    fn min_tiles(&self) -> usize {
        match self.packed {
            Some(_) => MIN_PACKED_TILES,
            None => self.form.max_chunk(),
        }
    }

    /// Whether Winograd pays for `tiles` tiles (all images) on `threads`: split by tiles
    /// where every thread gets [`Weights::min_tiles`] of them, or else split by output
    /// channels ([`Weights::by_cols`]).
    pub(super) fn pays(&self, tiles: usize, threads: usize) -> bool {
        tiles >= threads * self.min_tiles() || self.by_cols(tiles, threads)
    }

    /// Which build of the transforms runs ([`Transforms`]' index): the AVX-512 one beside the
    /// AVX-512 products, the AVX2 one beside any other where the CPU has AVX2 and FMA, else
    /// the plain one (also where a test forces it).
    fn transforms(&self) -> usize {
        let avx512 = self
            .packed
            .as_ref()
            .and_then(|p| p.first())
            .is_some_and(|p| p.kernel() == sgemm::F32Kernel::Avx512);
        match (plain_forced(), avx512, sgemm::avx2_available()) {
            (true, ..) | (false, false, false) => 0,
            (false, true, _) => 2,
            (false, false, true) => 1,
        }
    }

    /// Whether the tiles are too few to split between the threads but enough to split the
    /// output channels instead (packed weights; every thread at least two panels): a batch of
    /// one's 17x17 maps (25 tiles of F(4x4, 3x3)) and 8x8 maps (32 tiles of F(2, 7)) on two
    /// or more threads. Each thread then transforms all the tiles' inputs itself.
    fn by_cols(&self, tiles: usize, threads: usize) -> bool {
        self.packed.is_some()
            && threads > 1
            && tiles < threads * MIN_PACKED_TILES
            && tiles >= MIN_COL_TILES
            && self.cout >= threads * 2 * sgemm::NR
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
    if let Some(packed) = u.packed.as_deref().filter(|_| u.by_cols(tiles, threads)) {
        // SAFETY: forwarded from the caller.
        unsafe {
            conv_by_cols(
                geo,
                (u, packed),
                (bias, relu),
                dst,
                scratch,
                (tiles, threads),
            )
        };
        return;
    }
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

/// The whole convolution, output channels (whole weight panels) spread over `threads`; each
/// thread transforms every tile's input once, then runs the products and output transform of
/// the channel chunks it claims.
///
/// # Safety
/// As for [`conv`]; `packed` are `u`'s packed weights and `tiles` its tiles over all images.
unsafe fn conv_by_cols(
    geo: &Geometry<'_>,
    (u, packed): (&Weights, &[sgemm::Packed]),
    (bias, relu): (&[f32], bool),
    dst: SendPtr,
    scratch: &mut [Vec<f32>],
    (tiles, threads): (usize, usize),
) {
    let (form, cin, cout) = (u.form, u.cin, u.cout);
    let points = form.points();
    let chunks = team::chunk_count(cout, threads, 2 * sgemm::NR);
    let align = packed.first().map_or(sgemm::NR, sgemm::Packed::col_align);
    let widest = (0..chunks)
        .map(|c| team::chunk_range(cout, chunks, align, c).len())
        .max()
        .unwrap_or(0);
    let need = points * tiles * (cin + widest);
    let level = u.transforms();
    team::split_mut(&mut scratch[..threads], chunks, |s, claims| {
        if s.len() < need {
            s.resize(need, 0.0);
        }
        let (v, mo) = s.split_at_mut(points * tiles * cin);
        let mut transformed = false;
        for c in claims {
            let cols = team::chunk_range(cout, chunks, align, c);
            let n = cols.len();
            if n == 0 {
                continue;
            }
            if !transformed {
                // SAFETY: `v` holds `points * tiles * cin` floats; the CPU runs `level`.
                unsafe { (form.transforms.inputs[level])(geo, cin, v, (0, tiles, tiles)) };
                transformed = true;
            }
            // SAFETY: `v` holds the transformed inputs, `mo` `points * tiles * widest` floats;
            // `cols` starts at a panel bound.
            unsafe { packed_products(packed, (v, cin), mo, (tiles, tiles), cols.clone()) };
            // These channels only: their slot of the output map and their biases.
            let sub = Geometry {
                ooff: geo.ooff + cols.start,
                ..*geo
            };
            // SAFETY: the chunks write disjoint channel ranges of the output map; the CPU runs
            // `level`.
            unsafe {
                (form.transforms.outputs[level])(
                    &sub,
                    mo,
                    (n, &bias[cols], relu),
                    dst,
                    (0, tiles, tiles),
                )
            };
        }
    });
}

/// The `a_h * a_w` products on packed weights, output channels `cols` only:
/// `M_xi [tc, n] = V_xi [tc, cin] x U_xi [cin, cols]` (`n = cols.len()`), `V_xi` at
/// `v[xi * cap * cin..]` and `M_xi` at `mo[xi * cap * n..]`.
///
/// # Safety
/// `v` holds `a_h * a_w * cap` rows of `cin` floats and `mo` as many of `n`; `tc <= cap`;
/// `cols` starts at a multiple of [`sgemm::NR`] and ends inside the weights' channels; packed
/// weights exist only where the AVX2 kernel runs.
unsafe fn packed_products(
    packed: &[sgemm::Packed],
    (v, cin): (&[f32], usize),
    mo: &mut [f32],
    (tc, cap): (usize, usize),
    cols: std::ops::Range<usize>,
) {
    let n = cols.len();
    for (xi, w) in packed.iter().enumerate() {
        debug_assert!(v.len() >= (xi + 1) * cap * cin && mo.len() >= (xi + 1) * cap * n);
        let out = sgemm::Out {
            // SAFETY: inside `mo` (the contract).
            ptr: unsafe { mo.as_mut_ptr().add(xi * cap * n) },
            ldc: n,
            accumulate: false,
            beta: 1.0,
        };
        // SAFETY: V_xi inside `v`, the columns inside the weights, AVX2 (the contract).
        unsafe {
            sgemm::gemm(
                tc,
                n,
                v.as_ptr().add(xi * cap * cin),
                cin,
                w,
                cols.start,
                out,
            )
        };
    }
}

/// Tiles below which a split by output channels ([`Weights::by_cols`]) is not tried: the
/// products of fewer rows read their weights (`a_h * a_w` times the im2col weights' size)
/// for too little work.
const MIN_COL_TILES: usize = 16;

/// Floats of transformed input and output per chunk on packed f32 weights: 512 KiB.
const PACKED_CHUNK_FLOATS: usize = 128 * 1024;

/// Tiles `t0..t0 + tc` (`tc <= cap`) of `u`'s form: input transform, `a_h * a_w` products, output transform.
/// `scratch` holds `a_h * a_w * cap * (cin + cout)` floats.
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
    let points = form.points();
    let (v, mo) = scratch.split_at_mut(points * cap * cin);
    let level = u.transforms();
    // SAFETY: `v` holds `points * cap * cin` floats; the CPU runs `level`.
    unsafe { (form.transforms.inputs[level])(geo, cin, v, (t0, tc, cap)) };
    // a_h * a_w products: M_xi [tc, cout] = V_xi [tc, cin] x U_xi [cin, cout].
    if let Some(packed) = &u.packed {
        // SAFETY: `v` and `mo` hold `points * cap` rows of `cin` and `cout` floats.
        unsafe { packed_products(packed, (v, cin), mo, (tc, cap), 0..cout) };
    } else {
        for xi in 0..points {
            // SAFETY: V_xi holds tc rows of cin floats, U_xi cin rows of cout, M_xi tc rows of
            // cout; all inside their buffers.
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
    }
    // SAFETY: `mo` holds the products; `dst` as this function's contract says; the CPU runs
    // `level`.
    unsafe { (form.transforms.outputs[level])(geo, mo, (cout, bias, relu), dst, (t0, tc, cap)) };
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

    /// Direct `kh x kw` convolution (f64 sums) of an NHWC map, bias and optional ReLU.
    #[allow(clippy::too_many_arguments)]
    fn direct(
        x: &Buf,
        (w, [kh, kw]): (&[f32], [usize; 2]),
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
                        for dy in 0..kh {
                            for dx in 0..kw {
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
                                        * w[((dy * kw + dx) * cin + ci) * cout + co] as f64;
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

    /// Every form, on the `gemm` crate's products and (where the CPU runs them) on packed
    /// weights of each family (the AVX-512 one with the 16-lane transforms), on 1 and 3
    /// threads, against direct convolution: maps whose sides are not multiples of the tile
    /// (partial tiles at the edges), "same" and "valid" padding, a batch of two, channel
    /// counts off the 8- and 16-lane vectors. Tolerances relative to the largest output:
    /// F(2x2, 3x3) rounds like direct convolution (measured 2e-7, held to 1e-6),
    /// F(4x4, 3x3) about 20 times more (measured up to 4e-6, held to 1e-5), F(2, 7) along
    /// either axis in between (measured up to 9e-7, held to 5e-6).
    #[test]
    fn every_form_matches_direct_convolution() {
        forms_match_direct_convolution();
        // The transforms' build without AVX2 (what CPUs without it run).
        PLAIN.store(true, Ordering::Relaxed);
        forms_match_direct_convolution();
        PLAIN.store(false, Ordering::Relaxed);
    }

    fn forms_match_direct_convolution() {
        let mut packed = vec![None];
        for k in [F32Kernel::Avx2, F32Kernel::Avx512] {
            if k.available() {
                packed.push(Some(k));
            }
        }
        // The forms seen split by output channels.
        let mut by_cols = Vec::new();
        let mut seed = 7u32;
        let mut rnd = move || {
            seed = seed.wrapping_mul(1664525).wrapping_add(1013904223);
            (seed >> 8) as f32 / (1 << 24) as f32 * 2.0 - 1.0
        };
        // (map, padding): "same" (1) or "valid" (0).
        for (n, h, w, cin, cout, same) in [
            (2, 11, 9, 8, 16, 1),
            (1, 17, 17, 13, 24, 0),
            (1, 6, 7, 32, 19, 1),
            (2, 8, 8, 16, 24, 1),
            // Few tiles, many channels: split by output channels on 2 and 3 threads
            // (`Weights::by_cols`), with a last chunk narrower than a panel.
            (1, 17, 17, 24, 72, 1),
            (1, 8, 8, 16, 100, 1),
        ] {
            let x = Buf {
                data: (0..n * h * w * cin).map(|_| rnd()).collect(),
                n,
                h,
                w,
                c: cin,
            };
            let b: Vec<f32> = (0..cout).map(|_| rnd()).collect();
            for (form, tol) in [(&F2, 1e-6), (&F4, 1e-5), (&F27_ROW, 5e-6), (&F27_COL, 5e-6)] {
                let [kh, kw] = form.r;
                let wt: Vec<f32> = (0..kh * kw * cin * cout).map(|_| rnd() * 0.3).collect();
                let pad = [same * (kh - 1) / 2, same * (kw - 1) / 2];
                let (oh, ow) = (h + 2 * pad[0] + 1 - kh, w + 2 * pad[1] + 1 - kw);
                for relu in [false, true] {
                    let want = direct(&x, (&wt, form.r), &b, pad, (oh, ow), cout, relu);
                    for &p in &packed {
                        let u = Weights::new(form, &wt, (cin, cout), p);
                        for threads in [1, 2, 3] {
                            let tiles = n * form.tiles(oh, ow);
                            if u.by_cols(tiles, threads) {
                                by_cols.push(form.r);
                            }
                            let mut got = vec![f32::NAN; want.len()];
                            let geo = Geometry::new(
                                &x,
                                0,
                                [pad[0], pad[1], pad[0], pad[1]],
                                (oh, ow),
                                cout,
                                0,
                            );
                            let mut scratch = vec![Vec::new(); threads];
                            // SAFETY: `got` is shaped as `geo` describes.
                            unsafe {
                                conv(
                                    &geo,
                                    &u,
                                    &b,
                                    relu,
                                    crate::fast::SendMut(got.as_mut_ptr()),
                                    &mut scratch,
                                    threads,
                                )
                            };
                            let err = got
                                .iter()
                                .zip(&want)
                                .fold(0f32, |m, (g, w)| m.max((g - w).abs()));
                            let scale = want.iter().fold(1f32, |m, v| m.max(v.abs()));
                            assert!(
                                err <= tol * scale,
                                "F({m:?}, {kh}x{kw}) packed={p:?} threads={threads} {n}x{h}x{w}x{cin}->{cout} pad {pad:?} relu {relu}: max abs diff {err}",
                                m = form.m
                            );
                        }
                    }
                }
            }
        }
        if packed.len() > 1 {
            for r in [[3, 3], [1, 7], [7, 1]] {
                assert!(
                    by_cols.contains(&r),
                    "no {r:?} form ran split by output channels"
                );
            }
        }
    }
}
