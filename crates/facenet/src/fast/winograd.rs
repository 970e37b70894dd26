//! Winograd F(2x2, 3x3) convolution (Lavin and Gray, "Fast Algorithms for Convolutional
//! Neural Networks", <https://arxiv.org/abs/1509.09308>): each 2x2 output tile costs 16
//! multiplies per input-output channel pair instead of 36, a 2.25x cut, computed as 16 matrix
//! products over the tiles. F(2x2, 3x3) keeps the rounding error at the level of direct
//! convolution (its transforms only add, subtract and halve).

use super::{Buf, SendPtr, sgemm, team};
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

/// With the products on packed weights ([`sgemm`]), Winograd runs where every thread gets at
/// least this many tiles.
pub(super) const MIN_PACKED_TILES: usize = 32;

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

/// The whole convolution, tile chunks spread over `threads`. `u` is the transformed weights
/// and, where the f32 products run on [`sgemm`], the same packed.
///
/// # Safety
/// `dst` points to an output buffer of `x.n * oh * ow * oc` floats that nothing else
/// touches meanwhile.
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn conv(
    geo: &Geometry<'_>,
    u: (&[f32], Option<&[sgemm::Packed]>),
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
    // Chunks of at most TILES, claimed by the threads as they come free; on packed f32
    // weights (whose products stay efficient on short ones) several per thread, for balance.
    let chunks = match u.1 {
        Some(_) => {
            team::chunk_count(tiles, threads, MIN_PACKED_TILES / 2).max(tiles.div_ceil(TILES))
        }
        None => tiles.div_ceil(TILES),
    };
    let need = 16 * TILES * (cin + cout);
    team::split_mut(&mut scratch[..threads], chunks, |s, claims| {
        if s.len() < need {
            s.resize(need, 0.0);
        }
        for c in claims {
            let t = team::chunk_range(tiles, chunks, 1, c);
            // SAFETY: chunks are disjoint sets of tiles, so they write disjoint output
            // pixels.
            unsafe {
                chunk(
                    geo,
                    u,
                    bias,
                    cin,
                    cout,
                    relu,
                    dst,
                    (t.start, t.len()),
                    tiles,
                    s,
                )
            };
        }
    });
}

/// Tiles `t0..min(t0 + per, tiles)` (`per <= TILES`): input transform, 16 products, output
/// transform.
#[allow(clippy::too_many_arguments)]
unsafe fn chunk(
    geo: &Geometry<'_>,
    u: (&[f32], Option<&[sgemm::Packed]>),
    bias: &[f32],
    cin: usize,
    cout: usize,
    relu: bool,
    dst: SendPtr,
    (t0, per): (usize, usize),
    tiles: usize,
    scratch: &mut [f32],
) {
    let x = geo.x;
    let (th, tw) = (geo.oh.div_ceil(2), geo.ow.div_ceil(2));
    let tc = per.min(tiles - t0);
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
        if let Some(packed) = u.1 {
            let out = sgemm::Out {
                ptr: unsafe { m.as_mut_ptr().add(xi * TILES * cout) },
                ldc: cout,
                accumulate: false,
                beta: 1.0,
            };
            // SAFETY: as above; the packed weights exist only where the AVX2 kernel runs.
            unsafe {
                sgemm::gemm(
                    tc,
                    cout,
                    v.as_ptr().add(xi * TILES * cin),
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
                m.as_mut_ptr().add(xi * TILES * cout),
                1,
                cout as isize,
                false,
                v.as_ptr().add(xi * TILES * cin),
                1,
                cin as isize,
                u.0.as_ptr().add(xi * cin * cout),
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
