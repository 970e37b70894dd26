//! Direct convolutions for MTCNN's few-channel layers on AVX-512: no im2col, no packing.
//!
//! P-Net's layers have 3 to 16 input and 10 to 32 output channels. Through im2col and the
//! `gemm` crate, a profile of 1080p detection put 15-18 % of the time in the gather and a
//! quarter in products whose 10 to 32 columns fill the micro-kernels badly. Here a block of
//! output pixels of one row keeps every output channel in registers (one to four vectors of
//! 16) while the kernel's taps stream past: each input value is broadcast once per pixel and
//! multiplied into every channel. The bias starts the sums; PReLU (a slope of 1 for the plain
//! bias of the heads) ends them.
//!
//! The sums run in another order than the product's, so outputs differ from the im2col path
//! by rounding (within 1e-5 of the values here, `avx512f_direct_equals_im2col`).

use super::sgemm::avx512_available;
use super::{Buf, Conv, Epilogue};

/// Output channels per vector.
const LANES: usize = 16;

/// A stride-1, unpadded convolution of at most [`MAX_VECTORS`] x 16 output channels, with
/// its weights laid out `[kh][kw][cin][vectors * 16]` (zero past `cout`).
#[derive(Debug, Clone)]
pub(super) struct Direct {
    kh: usize,
    kw: usize,
    cin: usize,
    cout: usize,
    vectors: usize,
    w: Vec<f32>,
    b: Vec<f32>,
    slopes: Vec<f32>,
}

/// The most output vectors kept in registers (64 channels).
const MAX_VECTORS: usize = 4;

impl Direct {
    /// `conv` with its epilogue as a direct convolution, where this CPU has AVX-512F and the
    /// convolution fits: stride 1, no padding, at most 64 output channels, a bias or PReLU
    /// epilogue. `None`: run it through im2col.
    pub(super) fn new(conv: &Conv, epilogue: Epilogue) -> Option<Self> {
        if !avx512_available() {
            return None;
        }
        Self::layout(conv, epilogue)
    }

    fn layout(conv: &Conv, epilogue: Epilogue) -> Option<Self> {
        let vectors = conv.cout.div_ceil(LANES);
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
        let width = vectors * LANES;
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
        assert!(x.data.len() >= x.rows() * x.c && out.data.len() >= out.rows() * out.c);
        // SAFETY: `Direct` is only made where AVX-512F is present (`new`, or the tests'
        // check); the buffers hold their `rows * c` values (asserted above) and every read
        // and write below stays inside them (see `block`).
        #[cfg(target_arch = "x86_64")]
        unsafe {
            match self.vectors {
                1 => self.rows::<12, 1>(x, out),
                2 => self.rows::<8, 2>(x, out),
                3 => self.rows::<6, 3>(x, out),
                _ => self.rows::<4, 4>(x, out),
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        unreachable!("a direct convolution is only made where the CPU has AVX-512F");
    }

    /// Every output row, in blocks of `P` pixels and a tail of single pixels.
    ///
    /// # Safety
    /// AVX-512F is present; `x` and `out` fit (see [`Direct::run`]).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn rows<const P: usize, const V: usize>(&self, x: &Buf, out: &mut Buf) {
        let (oh, ow) = (out.h, out.w);
        let dst = out.data.as_mut_ptr();
        for img in 0..x.n {
            for oy in 0..oh {
                let mut ox = 0;
                while ox + P <= ow {
                    // SAFETY: pixels `ox..ox + P` of row `oy` exist in the output, and their
                    // taps in the input (the caller's guarantee).
                    unsafe { self.block::<P, V>(x, img, oy, ox, dst) };
                    ox += P;
                }
                while ox < ow {
                    // SAFETY: as above, for one pixel.
                    unsafe { self.block::<1, V>(x, img, oy, ox, dst) };
                    ox += 1;
                }
            }
        }
    }

    /// Output pixels `ox..ox + P` of row `oy` of image `img`: all channels, in `V` vectors.
    ///
    /// # Safety
    /// AVX-512F is present; those pixels lie in the output (`ox + P <= out.w`), so their
    /// taps (rows `oy..oy + kh`, columns `ox..ox + P + kw - 1`) lie in `x`.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn block<const P: usize, const V: usize>(
        &self,
        x: &Buf,
        img: usize,
        oy: usize,
        ox: usize,
        dst: *mut f32,
    ) {
        use std::arch::x86_64::*;
        let (oh, ow) = self.out_hw(x.h, x.w);
        let cin = self.cin;
        let width = self.vectors * LANES;
        let src = x.data.as_ptr();
        let wp = self.w.as_ptr();
        // SAFETY: every pointer below stays inside its buffer (the caller's guarantee for
        // `x` and `dst`; `w`, `b` and `slopes` hold `width` values per tap and channel).
        unsafe {
            let mut acc = [[_mm512_setzero_ps(); V]; P];
            for row in acc.iter_mut() {
                for (v, a) in row.iter_mut().enumerate() {
                    *a = _mm512_loadu_ps(self.b.as_ptr().add(v * LANES));
                }
            }
            for dy in 0..self.kh {
                let line = src.add(((img * x.h + oy + dy) * x.w + ox) * cin);
                for dx in 0..self.kw {
                    let taps = wp.add((dy * self.kw + dx) * cin * width);
                    let pixels = line.add(dx * cin);
                    for ic in 0..cin {
                        let mut wv = [_mm512_setzero_ps(); V];
                        for (v, w) in wv.iter_mut().enumerate() {
                            *w = _mm512_loadu_ps(taps.add(ic * width + v * LANES));
                        }
                        for (p, row) in acc.iter_mut().enumerate() {
                            let xv = _mm512_set1_ps(*pixels.add(p * cin + ic));
                            for (a, w) in row.iter_mut().zip(&wv) {
                                *a = _mm512_fmadd_ps(xv, *w, *a);
                            }
                        }
                    }
                }
            }
            let zero = _mm512_setzero_ps();
            let tail = self.cout - (V - 1) * LANES;
            let last: __mmask16 = if tail >= LANES {
                0xffff
            } else {
                (1u16 << tail) - 1
            };
            for (p, row) in acc.iter().enumerate() {
                let o = dst.add(((img * oh + oy) * ow + ox + p) * self.cout);
                for (v, a) in row.iter().enumerate() {
                    // max(t, 0) + slope * min(t, 0), as the im2col path's epilogue.
                    let s = _mm512_loadu_ps(self.slopes.as_ptr().add(v * LANES));
                    let y = _mm512_fmadd_ps(s, _mm512_min_ps(*a, zero), _mm512_max_ps(*a, zero));
                    let mask = if v + 1 == V { last } else { 0xffff };
                    _mm512_mask_storeu_ps(o.add(v * LANES), mask, y);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fast::Par;

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
    /// vector: the same outputs as im2col and the product, within 1e-5, on maps whose width
    /// leaves a tail of single pixels.
    #[test]
    #[ignore = "needs AVX-512F: `cargo test --release -- --ignored avx512f` where the CPU has it"]
    fn avx512f_direct_equals_im2col() {
        assert!(avx512_available(), "this CPU has no AVX-512F");
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
        for (i, &(kh, kw, cin, cout)) in shapes.iter().enumerate() {
            let c = conv(kh, kw, cin, cout, i as u32 + 1);
            for epilogue in [Epilogue::BiasPrelu, Epilogue::Bias] {
                let d = Direct::new(&c, epilogue).expect("fits");
                let (n, h, w) = (2, 9 + i, 23 + 2 * i);
                let mut s = 7u32 + i as u32;
                let data: Vec<f32> = (0..n * h * w * cin)
                    .map(|_| {
                        s = s.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                        (s >> 9) as f32 / (1u32 << 23) as f32 - 0.5
                    })
                    .collect();
                let x = Buf {
                    data,
                    n,
                    h,
                    w,
                    c: cin,
                };
                let (oh, ow) = c.out_hw(h, w);
                let blank = || Buf {
                    data: vec![f32::NAN; n * oh * ow * cout],
                    n,
                    h: oh,
                    w: ow,
                    c: cout,
                };
                let (mut want, mut got) = (blank(), blank());
                c.run(&x, 0, &mut want, 0, epilogue, &mut Vec::new(), Par::Single);
                d.run(&x, &mut got);
                for (j, (a, b)) in got.data.iter().zip(&want.data).enumerate() {
                    assert!(
                        (a - b).abs() <= 1e-5 * (1.0 + b.abs()),
                        "{kh}x{kw} {cin}->{cout} {epilogue:?}: value {j}: {a} against {b}"
                    );
                }
            }
        }
        // Shapes that do not fit are left to im2col.
        let mut strided = conv(3, 3, 3, 10, 1);
        strided.stride = 2;
        assert!(Direct::new(&strided, Epilogue::BiasPrelu).is_none());
        assert!(Direct::new(&conv(3, 3, 3, 80, 1), Epilogue::Bias).is_none());
        assert!(Direct::new(&conv(3, 3, 3, 10, 1), Epilogue::BiasRelu).is_none());
    }
}
