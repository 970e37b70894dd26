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
//! batch 8 and -2 to +10 % at batch 32 (two runs each). The transforms are generic over the
//! form's matrices; F(2x2, 3x3) (`F2`, whose transforms only add, subtract and halve) checks
//! them in the tests.

use super::{Buf, SendPtr, sgemm, team};
use gemm::Parallelism;

/// One Winograd form: output tile side `m`, input tile side `a = m + 2`, and its three
/// matrices (row-major): `B^T` (`a x a`, input transform), `G` (`a x 3`, weight transform)
/// and `A^T` (`m x a`, output transform).
#[derive(Debug)]
pub(super) struct Form {
    pub(super) m: usize,
    a: usize,
    bt: &'static [f32],
    g: &'static [f64],
    at: &'static [f32],
}

/// F(2x2, 3x3).
#[cfg(test)]
pub(super) const F2: Form = Form {
    m: 2,
    a: 4,
    #[rustfmt::skip]
    bt: &[
        1.0, 0.0, -1.0, 0.0,
        0.0, 1.0, 1.0, 0.0,
        0.0, -1.0, 1.0, 0.0,
        0.0, 1.0, 0.0, -1.0,
    ],
    #[rustfmt::skip]
    g: &[
        1.0, 0.0, 0.0,
        0.5, 0.5, 0.5,
        0.5, -0.5, 0.5,
        0.0, 0.0, 1.0,
    ],
    #[rustfmt::skip]
    at: &[
        1.0, 1.0, 1.0, 0.0,
        0.0, 1.0, -1.0, -1.0,
    ],
};

/// F(4x4, 3x3), on the points 0, 1, -1, 2, -2 and infinity.
pub(super) const F4: Form = Form {
    m: 4,
    a: 6,
    #[rustfmt::skip]
    bt: &[
        4.0, 0.0, -5.0, 0.0, 1.0, 0.0,
        0.0, -4.0, -4.0, 1.0, 1.0, 0.0,
        0.0, 4.0, -4.0, -1.0, 1.0, 0.0,
        0.0, -2.0, -1.0, 2.0, 1.0, 0.0,
        0.0, 2.0, -1.0, -2.0, 1.0, 0.0,
        0.0, 4.0, 0.0, -5.0, 0.0, 1.0,
    ],
    #[rustfmt::skip]
    g: &[
        1.0 / 4.0, 0.0, 0.0,
        -1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0,
        -1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0,
        1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0,
        1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0,
        0.0, 0.0, 1.0,
    ],
    #[rustfmt::skip]
    at: &[
        1.0, 1.0, 1.0, 1.0, 1.0, 0.0,
        0.0, 1.0, -1.0, 2.0, -2.0, 0.0,
        0.0, 1.0, 1.0, 4.0, 4.0, 0.0,
        0.0, 1.0, -1.0, 8.0, -8.0, 1.0,
    ],
};

impl Form {
    /// Transformed matrices per tile: `a * a`.
    pub(super) fn points(&self) -> usize {
        self.a * self.a
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
        let a = self.a;
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

/// `out = sum of c * x` over `terms`, element-wise, eight lanes at a time (one vector pass
/// over `out` whatever the number of terms).
#[inline]
fn combine(out: &mut [f32], terms: &[(f32, &[f32])]) {
    let n = out.len();
    let mut i = 0;
    while i + 8 <= n {
        let mut acc = [0.0f32; 8];
        for &(c, x) in terms {
            let x = &x[i..i + 8];
            for l in 0..8 {
                acc[l] += c * x[l];
            }
        }
        out[i..i + 8].copy_from_slice(&acc);
        i += 8;
    }
    for (j, o) in out.iter_mut().enumerate().skip(i) {
        *o = terms.iter().map(|&(c, x)| c * x[j]).sum();
    }
}

/// The nonzero coefficients of row `r` of a row-major matrix `width` wide, paired with the
/// vectors they multiply (`vec(column)`), in at most eight terms.
#[inline]
fn row_terms<'v>(
    mat: &[f32],
    width: usize,
    r: usize,
    vec: impl Fn(usize) -> &'v [f32],
) -> ([(f32, &'v [f32]); 8], usize) {
    let mut terms: [(f32, &[f32]); 8] = [(0.0, &[]); 8];
    let mut n = 0;
    for (col, &c) in mat[r * width..(r + 1) * width].iter().enumerate() {
        if c != 0.0 {
            terms[n] = (c, vec(col));
            n += 1;
        }
    }
    (terms, n)
}

/// Tiles per chunk on the `gemm` crate's products, for F(2x2, 3x3) (see [`Form::max_chunk`]).
pub(super) const TILES: usize = 256;

/// With the products on packed weights ([`sgemm`]), Winograd runs where every thread gets at
/// least this many tiles.
pub(super) const MIN_PACKED_TILES: usize = 32;
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
    let x = geo.x;
    let (form, cin, cout) = (u.form, u.cin, u.cout);
    let (a, m) = (form.a, form.m);
    let (th, tw) = (geo.oh.div_ceil(m), geo.ow.div_ceil(m));
    let (v, mo) = scratch.split_at_mut(a * a * cap * cin);
    let zeros = vec![0.0f32; cin];
    // Input transform V = B^T d B, as whole-channel-vector operations.
    let mut r = vec![0.0f32; a * a * cin];
    for j in 0..tc {
        let t = t0 + j;
        let (img, ty, tx) = (t / (th * tw), (t / tw) % th, t % tw);
        let mut d: [&[f32]; 64] = [&zeros[..]; 64];
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
        // Rows: r = B^T d.
        for (pk, out) in r.chunks_exact_mut(cin).enumerate() {
            let (p, k) = (pk / a, pk % a);
            let (terms, n) = row_terms(form.bt, a, p, |i| d[i * a + k]);
            combine(out, &terms[..n]);
        }
        // Columns: V = r B.
        for pq in 0..a * a {
            let (p, q) = (pq / a, pq % a);
            let (terms, n) = row_terms(form.bt, a, q, |k| &r[(p * a + k) * cin..][..cin]);
            combine(&mut v[(pq * cap + j) * cin..][..cin], &terms[..n]);
        }
    }
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
    // Output transform Y = A^T M A, plus bias and ReLU, again on whole channel vectors.
    let mut s = vec![0.0f32; m * a * cout];
    for j in 0..tc {
        let t = t0 + j;
        let (img, ty, tx) = (t / (th * tw), (t / tw) % th, t % tw);
        let g = |xi: usize| &mo[(xi * cap + j) * cout..][..cout];
        // s = A^T M (m x a vectors).
        for (iq, out) in s.chunks_exact_mut(cout).enumerate() {
            let (i, q) = (iq / a, iq % a);
            let (terms, n) = row_terms(form.at, a, i, |p| g(p * a + q));
            combine(out, &terms[..n]);
        }
        for i in 0..m {
            let oy = m * ty + i;
            if oy >= geo.oh {
                break;
            }
            for jj in 0..m {
                let ox = m * tx + jj;
                if ox >= geo.ow {
                    break;
                }
                let o = ((img * geo.oh + oy) * geo.ow + ox) * geo.oc + geo.ooff;
                // SAFETY: `cout` floats inside the output buffer; this tile's pixels belong
                // to this thread alone.
                let y = unsafe { std::slice::from_raw_parts_mut(dst.0.add(o), cout) };
                let (terms, n) = row_terms(form.at, a, jj, |q| &s[(i * a + q) * cout..][..cout]);
                combine(y, &terms[..n]);
                for (yv, b) in y.iter_mut().zip(bias) {
                    let v = *yv + b;
                    *yv = if relu { v.max(0.0) } else { v };
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fast::F32Kernel;

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
