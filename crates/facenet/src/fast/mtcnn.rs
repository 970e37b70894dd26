//! The MTCNN networks on the fast path: the same NHWC convolutions as [`super::FastNet`], with
//! PReLU folded into the convolutions' epilogues, Caffe's ceil-mode max pooling (in one pass
//! with the direct convolution before it where its stride is its size), the class and
//! regression heads of each network fused into one product, and the dense layers read in NHWC
//! order (their weights reordered once from Caffe's (w, h, c) flattening).
//!
//! Each call runs on the calling thread: the detector parallelizes across pyramid levels and
//! across chunks of crops, where the work is independent (see [`crate::detect`]).

use burn::nn::conv::Conv2d;
use burn::nn::pool::MaxPool2d;
use burn::nn::{Linear, PRelu};

use super::direct::{Direct, ceil_pool_hw};
use super::{Buf, Conv, Epilogue, Par, Workspace, tensor_vec, with_workspace};
use crate::error::{Error, Result};
use crate::model::mtcnn::{Mtcnn, Onet, Pnet, Rnet};

/// One step of a network.
#[derive(Debug, Clone)]
enum Op {
    /// A convolution and its epilogue, run direct where it fits ([`Direct`]), else through
    /// im2col and a product.
    Conv(Box<Conv>, Epilogue, Option<Box<Direct>>),
    /// Max pooling, `k`x`k`, stride `s`, no padding, output size rounded up (Caffe).
    Pool { k: usize, s: usize },
    /// A direct convolution and the `k`x`k` stride-`k` pooling after it, in one pass
    /// ([`Direct::run_pooled`]: the convolution's map is never written out whole).
    ConvPool(Box<Direct>, usize),
    /// `(h, w, c)` map to a `(1, 1, h * w * c)` vector, NHWC order (the next dense layer's
    /// weights were reordered to match).
    Flatten,
}

/// A chain of steps.
#[derive(Debug, Clone)]
struct Seq {
    ops: Vec<Op>,
}

impl Seq {
    /// The steps, with each direct convolution that a pooling of stride equal to its size
    /// follows run together with it ([`Op::ConvPool`]).
    fn new(ops: Vec<Op>) -> Self {
        let mut fused: Vec<Op> = Vec::with_capacity(ops.len());
        for op in ops {
            match (fused.last_mut(), op) {
                (Some(last @ Op::Conv(_, _, Some(_))), Op::Pool { k, s }) if k == s => {
                    let Op::Conv(_, _, Some(direct)) = std::mem::replace(last, Op::Flatten) else {
                        unreachable!("matched a direct convolution");
                    };
                    *last = Op::ConvPool(direct, k);
                }
                (_, op) => fused.push(op),
            }
        }
        Seq { ops: fused }
    }

    fn forward(&self, mut x: Buf, ws: &mut Workspace) -> Buf {
        for op in &self.ops {
            x = match op {
                Op::Conv(conv, epilogue, direct) => {
                    let (oh, ow) = conv.out_hw(x.h, x.w);
                    let y = match direct {
                        Some(d) => {
                            let mut y = ws.take_empty(x.n, oh, ow, conv.cout);
                            d.run(&x, &mut y);
                            y
                        }
                        None => {
                            let mut y = ws.take(x.n, oh, ow, conv.cout);
                            conv.run(&x, 0, &mut y, 0, *epilogue, &mut ws.im2col, Par::Single);
                            y
                        }
                    };
                    ws.give(x);
                    y
                }
                Op::Pool { k, s } => {
                    let (oh, ow) = ceil_pool_hw(x.h, x.w, *k, *s);
                    let mut y = ws.take(x.n, oh, ow, x.c);
                    max_pool_ceil(&x, *k, *s, &mut y);
                    ws.give(x);
                    y
                }
                Op::ConvPool(direct, k) => {
                    let (oh, ow) = direct.out_hw(x.h, x.w);
                    let (ph, pw) = ceil_pool_hw(oh, ow, *k, *k);
                    let mut y = ws.take_empty(x.n, ph, pw, direct.cout());
                    let mut scratch = ws.take_empty(1, *k, ow, direct.cout());
                    direct.run_pooled(&x, *k, &mut y, &mut scratch.data);
                    ws.give(scratch);
                    ws.give(x);
                    y
                }
                Op::Flatten => Buf {
                    c: x.h * x.w * x.c,
                    h: 1,
                    w: 1,
                    ..x
                },
            };
        }
        x
    }
}

/// Ceil-mode max pooling of `x` into `out`: windows that run past the border are cut there.
pub(super) fn max_pool_ceil(x: &Buf, k: usize, s: usize, out: &mut Buf) {
    let c = x.c;
    for img in 0..out.n {
        for oy in 0..out.h {
            let ys = oy * s..(oy * s + k).min(x.h);
            for ox in 0..out.w {
                let xs = ox * s..(ox * s + k).min(x.w);
                let o = ((img * out.h + oy) * out.w + ox) * c;
                let dst = &mut out.data[o..o + c];
                dst.fill(f32::NEG_INFINITY);
                for iy in ys.clone() {
                    for ix in xs.clone() {
                        let i = ((img * x.h + iy) * x.w + ix) * c;
                        // A comparison, not `f32::max`: the same value (the running maximum
                        // starts at -inf and never takes a NaN), one `maxps` per vector
                        // without `f32::max`'s NaN checks (pooling went from 10.4 % to 7.4 %
                        // of detection's time).
                        for (d, &v) in dst.iter_mut().zip(&x.data[i..i + c]) {
                            *d = if v > *d { v } else { *d };
                        }
                    }
                }
            }
        }
    }
}

fn check_pool(p: &MaxPool2d, k: usize, s: usize) -> Result<()> {
    if p.kernel_size != [k, k]
        || p.stride != [s, s]
        || p.padding != burn::nn::PaddingConfig2d::Valid
        || !p.ceil_mode
    {
        return Err(Error::Tensor {
            name: "max_pool".into(),
            reason: format!("expected {k}x{k} stride-{s} ceil-mode pooling without padding"),
        });
    }
    Ok(())
}

/// PReLU slopes, one per channel (a single shared slope is repeated).
fn slopes(p: &PRelu, channels: usize) -> Result<Vec<f32>> {
    let a = tensor_vec(p.alpha.val(), "prelu.alpha")?;
    match a.len() {
        1 => Ok(vec![a[0]; channels]),
        n if n == channels => Ok(a),
        n => Err(Error::Tensor {
            name: "prelu.alpha".into(),
            reason: format!("{n} slopes for {channels} channels"),
        }),
    }
}

/// A convolution step: direct where it fits and the CPU has AVX-512F or AVX2 (see
/// [`Direct::new`]), else im2col.
fn conv_op(c: Conv, epilogue: Epilogue) -> Op {
    let direct = Direct::new(&c, epilogue).map(Box::new);
    Op::Conv(Box::new(c), epilogue, direct)
}

/// A convolution followed by PReLU.
fn conv_prelu(conv: &Conv2d, prelu: &PRelu) -> Result<Op> {
    // Without Winograd: with few channels im2col and one product beat its transforms.
    let mut c = Conv::from_burn(conv, None)?;
    c.prelu = slopes(prelu, c.cout)?;
    Ok(conv_op(c, Epilogue::BiasPrelu))
}

/// Output heads that read the same input, fused into one product (plain bias epilogue).
fn heads(parts: &[&Conv2d]) -> Result<Op> {
    let convs = parts
        .iter()
        .map(|c| Conv::from_burn(c, None))
        .collect::<Result<Vec<_>>>()?;
    let refs: Vec<&Conv> = convs.iter().collect();
    Ok(conv_op(Conv::fuse(&refs), Epilogue::Bias))
}

/// A dense layer (weight `(in, out)`) over a flattened `(h, w, c)` map as a 1x1 convolution
/// over the NHWC vector: Caffe flattened in (w, h, c) order, so input row `(x * h + y) * c + ch`
/// of the weight becomes row `(y * w + x) * c + ch`.
fn dense(lin: &Linear, hwc: (usize, usize, usize)) -> Result<Conv> {
    let [din, dout] = lin.weight.dims();
    let (h, w, c) = hwc;
    if din != h * w * c {
        return Err(Error::Tensor {
            name: "linear.weight".into(),
            reason: format!("{din} inputs for a {h}x{w}x{c} map"),
        });
    }
    let src = tensor_vec(lin.weight.val(), "linear.weight")?;
    let mut wt = vec![0f32; din * dout];
    for y in 0..h {
        for x in 0..w {
            for ch in 0..c {
                let from = ((x * h + y) * c + ch) * dout;
                let to = ((y * w + x) * c + ch) * dout;
                wt[to..to + dout].copy_from_slice(&src[from..from + dout]);
            }
        }
    }
    linear_conv(lin, wt)
}

/// A dense layer on a vector as a 1x1 convolution, with weights `wt` (`(in, out)`).
fn linear_conv(lin: &Linear, wt: Vec<f32>) -> Result<Conv> {
    let [din, dout] = lin.weight.dims();
    let b = match &lin.bias {
        Some(b) => tensor_vec(b.val(), "linear.bias")?,
        None => vec![0.0; dout],
    };
    Ok(Conv::dense(din, dout, wt, b))
}

fn dense_prelu(lin: &Linear, hwc: (usize, usize, usize), prelu: &PRelu) -> Result<Op> {
    let mut c = dense(lin, hwc)?;
    c.prelu = slopes(prelu, c.cout)?;
    Ok(conv_op(c, Epilogue::BiasPrelu))
}

fn dense_heads(parts: &[&Linear]) -> Result<Op> {
    let convs = parts
        .iter()
        .map(|l| linear_conv(l, tensor_vec(l.weight.val(), "linear.weight")?))
        .collect::<Result<Vec<_>>>()?;
    let refs: Vec<&Conv> = convs.iter().collect();
    Ok(conv_op(Conv::fuse(&refs), Epilogue::Bias))
}

/// MTCNN compiled for the CPU: P-Net, R-Net and O-Net as NHWC plans.
#[derive(Debug, Clone)]
pub struct FastMtcnn {
    pnet: Seq,
    rnet: Seq,
    onet: Seq,
}

/// Values per P-Net cell and per R-Net crop: two class logits, then four box offsets.
pub const PNET_OUT: usize = 6;
/// Values per R-Net crop (as [`PNET_OUT`]).
pub const RNET_OUT: usize = 6;
/// Values per O-Net crop: two logits, four box offsets, five landmark x then five y.
pub const ONET_OUT: usize = 16;

impl FastMtcnn {
    /// Compiles the three networks from their burn definitions (weights as they are now).
    pub fn compile(m: &Mtcnn) -> Result<Self> {
        Ok(Self {
            pnet: Self::pnet_plan(&m.pnet)?,
            rnet: Self::rnet_plan(&m.rnet)?,
            onet: Self::onet_plan(&m.onet)?,
        })
    }

    fn pnet_plan(p: &Pnet) -> Result<Seq> {
        check_pool(&p.pool1, 2, 2)?;
        Ok(Seq::new(vec![
            conv_prelu(&p.conv1, &p.prelu1)?,
            Op::Pool { k: 2, s: 2 },
            conv_prelu(&p.conv2, &p.prelu2)?,
            conv_prelu(&p.conv3, &p.prelu3)?,
            heads(&[&p.conv4_1, &p.conv4_2])?,
        ]))
    }

    fn rnet_plan(r: &Rnet) -> Result<Seq> {
        check_pool(&r.pool1, 3, 2)?;
        check_pool(&r.pool2, 3, 2)?;
        // 24 -> conv 22 -> pool 11 -> conv 9 -> pool 4 -> conv 3: a 3x3x64 map.
        let c3 = r.conv3.weight.dims()[0];
        Ok(Seq::new(vec![
            conv_prelu(&r.conv1, &r.prelu1)?,
            Op::Pool { k: 3, s: 2 },
            conv_prelu(&r.conv2, &r.prelu2)?,
            Op::Pool { k: 3, s: 2 },
            conv_prelu(&r.conv3, &r.prelu3)?,
            Op::Flatten,
            dense_prelu(&r.dense4, (3, 3, c3), &r.prelu4)?,
            dense_heads(&[&r.dense5_1, &r.dense5_2])?,
        ]))
    }

    fn onet_plan(o: &Onet) -> Result<Seq> {
        check_pool(&o.pool1, 3, 2)?;
        check_pool(&o.pool2, 3, 2)?;
        check_pool(&o.pool3, 2, 2)?;
        // 48 -> 46 -> 23 -> 21 -> 10 -> 8 -> 4 -> conv 3: a 3x3x128 map.
        let c4 = o.conv4.weight.dims()[0];
        Ok(Seq::new(vec![
            conv_prelu(&o.conv1, &o.prelu1)?,
            Op::Pool { k: 3, s: 2 },
            conv_prelu(&o.conv2, &o.prelu2)?,
            Op::Pool { k: 3, s: 2 },
            conv_prelu(&o.conv3, &o.prelu3)?,
            Op::Pool { k: 2, s: 2 },
            conv_prelu(&o.conv4, &o.prelu4)?,
            Op::Flatten,
            dense_prelu(&o.dense5, (3, 3, c4), &o.prelu5)?,
            dense_heads(&[&o.dense6_1, &o.dense6_2, &o.dense6_3])?,
        ]))
    }

    /// P-Net over one standardized `h`x`w` RGB image (interleaved, `h * w * 3` floats, both
    /// sides at least 12). Returns the map's `(h', w')` and its cells, [`PNET_OUT`] values each,
    /// row-major.
    pub fn pnet(&self, hwc: &[f32], h: usize, w: usize) -> Result<(usize, usize, Vec<f32>)> {
        if h < 12 || w < 12 || hwc.len() != h * w * 3 {
            return Err(Error::InvalidArgument {
                field: "image",
                reason: format!(
                    "P-Net needs an RGB image of at least 12x12 ({} floats for {h}x{w})",
                    hwc.len()
                ),
            });
        }
        let out = self.run(&self.pnet, 1, h, w, |x| x.extend_from_slice(hwc));
        Ok((out.h, out.w, out.data))
    }

    /// [`Self::pnet`] over an 8-bit RGB image (`h * w * 3` bytes), each value standardized by
    /// `standardize` straight into the network's input buffer (no float copy of the image).
    pub fn pnet_rgb8(
        &self,
        rgb: &[u8],
        h: usize,
        w: usize,
        standardize: impl Fn(u8) -> f32,
    ) -> Result<(usize, usize, Vec<f32>)> {
        if h < 12 || w < 12 || rgb.len() != h * w * 3 {
            return Err(Error::InvalidArgument {
                field: "image",
                reason: format!(
                    "P-Net needs an RGB image of at least 12x12 ({} bytes for {h}x{w})",
                    rgb.len()
                ),
            });
        }
        let out = self.run(&self.pnet, 1, h, w, |x| {
            x.extend(rgb.iter().map(|&v| standardize(v)))
        });
        Ok((out.h, out.w, out.data))
    }

    /// R-Net over `n` standardized 24x24 RGB crops; [`RNET_OUT`] values per crop.
    pub fn rnet(&self, hwc: &[f32], n: usize) -> Result<Vec<f32>> {
        self.crops(&self.rnet, hwc, n, 24)
    }

    /// O-Net over `n` standardized 48x48 RGB crops; [`ONET_OUT`] values per crop.
    pub fn onet(&self, hwc: &[f32], n: usize) -> Result<Vec<f32>> {
        self.crops(&self.onet, hwc, n, 48)
    }

    fn crops(&self, seq: &Seq, hwc: &[f32], n: usize, size: usize) -> Result<Vec<f32>> {
        if hwc.len() != n * size * size * 3 {
            return Err(Error::InvalidArgument {
                field: "crops",
                reason: format!(
                    "{} floats for {n} RGB crops of {size}x{size} ({} expected)",
                    hwc.len(),
                    n * size * size * 3
                ),
            });
        }
        if n == 0 {
            return Ok(Vec::new());
        }
        Ok(self
            .run(seq, n, size, size, |x| x.extend_from_slice(hwc))
            .data)
    }

    /// `seq` over `n` images of `h`x`w`x3, which `input` appends to an empty buffer.
    fn run(
        &self,
        seq: &Seq,
        n: usize,
        h: usize,
        w: usize,
        input: impl FnOnce(&mut Vec<f32>),
    ) -> Buf {
        with_workspace(|ws| {
            let mut x = ws.take_empty(n, h, w, 3);
            input(&mut x.data);
            assert_eq!(
                x.data.len(),
                x.rows() * x.c,
                "an MTCNN input of {n}x{h}x{w}x3"
            );
            let y = seq.forward(x, ws);
            // The output is small (a few values per cell or crop): copy it out and keep the
            // buffer for the next call.
            let out = Buf {
                data: y.data.clone(),
                ..y
            };
            ws.give(y);
            out
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, Distribution, Tensor, TensorData};

    /// NHWC floats to a burn NCHW tensor.
    fn nchw(hwc: &[f32], n: usize, h: usize, w: usize, device: &Device) -> Tensor<4> {
        let mut out = vec![0f32; hwc.len()];
        for b in 0..n {
            for i in 0..h * w {
                for c in 0..3 {
                    out[(b * 3 + c) * h * w + i] = hwc[(b * h * w + i) * 3 + c];
                }
            }
        }
        Tensor::from_data(TensorData::new(out, [n, 3, h, w]), device)
    }

    fn random(len: usize, device: &Device) -> Vec<f32> {
        Tensor::<1>::random([len], Distribution::Uniform(-1.0, 1.0), device)
            .into_data()
            .try_into_vec::<f32>()
            .unwrap()
    }

    fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.into_data().try_into_vec::<f32>().unwrap()
    }

    /// Random networks with PReLU slopes away from burn's default, so that a misplaced slope
    /// shows.
    fn nets(device: &Device) -> Mtcnn {
        let mut m = Mtcnn::new(device);
        for p in [
            &mut m.pnet.prelu1,
            &mut m.pnet.prelu2,
            &mut m.pnet.prelu3,
            &mut m.rnet.prelu1,
            &mut m.rnet.prelu4,
            &mut m.onet.prelu2,
            &mut m.onet.prelu5,
        ] {
            let n = p.alpha.dims()[0];
            let a = Tensor::<1>::random([n], Distribution::Uniform(0.0, 0.6), device);
            *p = PRelu {
                alpha: burn::module::Param::from_tensor(a),
                alpha_value: p.alpha_value,
            };
        }
        m
    }

    fn close(a: &[f32], b: &[f32], what: &str) {
        assert_eq!(a.len(), b.len(), "{what}: lengths");
        let worst = a
            .iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        assert!(worst < 1e-4, "{what}: max |difference| {worst}");
    }

    #[test]
    fn pnet_matches_burn_on_odd_sizes() {
        let d = Device::flex();
        let m = nets(&d);
        let fast = FastMtcnn::compile(&m).unwrap();
        // Odd sides exercise the ceil-mode pooling's cut windows.
        for (h, w) in [(12, 12), (31, 24), (57, 43)] {
            let x = random(h * w * 3, &d);
            let (mh, mw, got) = fast.pnet(&x, h, w).unwrap();
            let (logits, reg) = m.pnet.forward_logits(nchw(&x, 1, h, w, &d));
            let [_, _, bh, bw] = logits.dims();
            assert_eq!((mh, mw), (bh, bw), "{h}x{w}: map size");
            let (logits, reg) = (values(logits), values(reg));
            let plane = mh * mw;
            let mut want = Vec::with_capacity(plane * PNET_OUT);
            for i in 0..plane {
                want.extend([logits[i], logits[plane + i]]);
                want.extend((0..4).map(|c| reg[c * plane + i]));
            }
            close(&got, &want, &format!("pnet {h}x{w}"));
        }
        // Where the first layer runs direct (x86-64), it and its pooling are one step.
        #[cfg(target_arch = "x86_64")]
        assert!(
            matches!(fast.pnet.ops[0], Op::ConvPool(_, 2)),
            "P-Net's first layer and its pooling are not one step"
        );
        // From 8-bit pixels: exactly what their standardized floats give.
        let rgb: Vec<u8> = (0..31 * 24 * 3).map(|i| (i * 37 % 256) as u8).collect();
        let standardize = |v: u8| (v as f32 - 127.5) * 0.0078125;
        let floats: Vec<f32> = rgb.iter().map(|&v| standardize(v)).collect();
        assert_eq!(
            fast.pnet(&floats, 31, 24).unwrap(),
            fast.pnet_rgb8(&rgb, 31, 24, standardize).unwrap()
        );
        assert!(fast.pnet_rgb8(&rgb, 24, 24, standardize).is_err());
    }

    #[test]
    fn rnet_and_onet_match_burn() {
        let d = Device::flex();
        let m = nets(&d);
        let fast = FastMtcnn::compile(&m).unwrap();
        let n = 3;
        let x = random(n * 24 * 24 * 3, &d);
        let got = fast.rnet(&x, n).unwrap();
        let (logits, reg) = m.rnet.forward_logits(nchw(&x, n, 24, 24, &d));
        let (logits, reg) = (values(logits), values(reg));
        let want: Vec<f32> = (0..n)
            .flat_map(|b| {
                let mut v = logits[b * 2..b * 2 + 2].to_vec();
                v.extend_from_slice(&reg[b * 4..b * 4 + 4]);
                v
            })
            .collect();
        close(&got, &want, "rnet");

        let x = random(n * 48 * 48 * 3, &d);
        let got = fast.onet(&x, n).unwrap();
        let (logits, reg, marks) = m.onet.forward_logits(nchw(&x, n, 48, 48, &d));
        let (logits, reg, marks) = (values(logits), values(reg), values(marks));
        let want: Vec<f32> = (0..n)
            .flat_map(|b| {
                let mut v = logits[b * 2..b * 2 + 2].to_vec();
                v.extend_from_slice(&reg[b * 4..b * 4 + 4]);
                v.extend_from_slice(&marks[b * 10..b * 10 + 10]);
                v
            })
            .collect();
        close(&got, &want, "onet");
    }

    #[test]
    fn ceil_pooling_by_hand() {
        // 3x3 map, one channel, 2x2 stride 2 ceil: windows {0,1}x{0,1}, {0,1}x{2}, ...
        let x = Buf {
            data: (1..=9).map(|v| v as f32).collect(),
            n: 1,
            h: 3,
            w: 3,
            c: 1,
        };
        assert_eq!(ceil_pool_hw(3, 3, 2, 2), (2, 2));
        let mut y = Buf {
            data: vec![0.0; 4],
            n: 1,
            h: 2,
            w: 2,
            c: 1,
        };
        max_pool_ceil(&x, 2, 2, &mut y);
        assert_eq!(y.data, vec![5.0, 6.0, 8.0, 9.0]);
    }

    #[test]
    fn rejects_bad_sizes() {
        let d = Device::flex();
        let fast = FastMtcnn::compile(&Mtcnn::new(&d)).unwrap();
        assert!(fast.pnet(&[0.0; 11 * 11 * 3], 11, 11).is_err());
        assert!(fast.pnet(&[0.0; 10], 12, 12).is_err());
        assert!(fast.rnet(&[0.0; 24 * 24 * 3 + 1], 1).is_err());
        assert!(fast.onet(&[], 0).unwrap().is_empty());
    }
}
