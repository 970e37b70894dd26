//! The Inception blocks: parallel branches with a fused 1x1 head, pooling, and the residual
//! blocks `x = act(x + scale * up(concat(branches(x))))`.

#[allow(unused_imports)]
use super::*;

/// BatchNorm in inference as a per-channel affine map `x * s + t`.
pub(super) fn bn_affine(bn: &burn::nn::BatchNorm) -> Result<(Vec<f32>, Vec<f32>)> {
    let gamma = tensor_vec(bn.gamma.val(), "bn.gamma")?;
    let beta = tensor_vec(bn.beta.val(), "bn.beta")?;
    let mean = tensor_vec(bn.running_mean.value(), "bn.running_mean")?;
    let var = tensor_vec(bn.running_var.value(), "bn.running_var")?;
    let eps = bn.epsilon;
    let s: Vec<f32> = gamma
        .iter()
        .zip(&var)
        .map(|(g, v)| (*g as f64 / (*v as f64 + eps).sqrt()) as f32)
        .collect();
    let t = beta
        .iter()
        .zip(&mean)
        .zip(&s)
        .map(|((b, m), s)| b - m * s)
        .collect();
    Ok((s, t))
}

/// 3x3 stride-2 valid max pooling of `x` into channels `ooff..ooff + x.c` of `out` (on AVX2
/// the same loops on 8-lane registers).
pub(super) fn max_pool_3x3_s2(x: &Buf, out: &mut Buf, ooff: usize) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 is here.
        return unsafe { max_pool_avx2(x, out, ooff) };
    }
    max_pool_loops(x, out, ooff)
}

/// [`max_pool_3x3_s2`] compiled for AVX2.
///
/// # Safety
/// The CPU has AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn max_pool_avx2(x: &Buf, out: &mut Buf, ooff: usize) {
    max_pool_loops(x, out, ooff)
}

/// The loops of [`max_pool_3x3_s2`], inlined into each of its versions.
#[inline(always)]
fn max_pool_loops(x: &Buf, out: &mut Buf, ooff: usize) {
    let c = x.c;
    for img in 0..out.n {
        for oy in 0..out.h {
            for ox in 0..out.w {
                let o = ((img * out.h + oy) * out.w + ox) * out.c + ooff;
                let dst = &mut out.data[o..o + c];
                dst.fill(f32::NEG_INFINITY);
                for dy in 0..3 {
                    for dx in 0..3 {
                        let i = ((img * x.h + oy * 2 + dy) * x.w + ox * 2 + dx) * c;
                        for (d, s) in dst.iter_mut().zip(&x.data[i..i + c]) {
                            *d = d.max(*s);
                        }
                    }
                }
            }
        }
    }
}

pub(super) fn pool_hw(h: usize, w: usize) -> (usize, usize) {
    ((h - 3) / 2 + 1, (w - 3) / 2 + 1)
}

pub(super) fn check_pool(p: &MaxPool2d) -> Result<()> {
    if p.kernel_size != [3, 3] || p.stride != [2, 2] || p.padding != PaddingConfig2d::Valid {
        return Err(Error::Tensor {
            name: "max_pool".into(),
            reason: "only 3x3 stride-2 valid pooling is supported".into(),
        });
    }
    Ok(())
}

/// Where a branch reads from.
#[derive(Debug, Clone, Copy)]
pub(super) enum Source {
    /// The block's input.
    Input,
    /// Columns `off..off + width` of the fused 1x1 head's output.
    Head { off: usize },
}

#[derive(Debug)]
pub(super) enum Branch {
    /// Convolutions (possibly none: the head slice itself is the output).
    Convs {
        source: Source,
        chain: Vec<Conv>,
        width: usize,
    },
    /// 3x3 stride-2 max pooling of the block's input.
    MaxPool { width: usize },
}

impl Branch {
    pub(super) fn width(&self) -> usize {
        match self {
            Branch::Convs { width, .. } | Branch::MaxPool { width } => *width,
        }
    }
}

/// Parallel branches whose outputs are concatenated along channels.
#[derive(Debug)]
pub(super) struct Mixed {
    /// The branches' leading 1x1 convolutions, fused into one.
    pub(super) head: Option<Conv>,
    pub(super) branches: Vec<Branch>,
    /// Output spatial size relative to input: same (residual blocks) or pooled (reductions).
    pub(super) reduces: bool,
}

/// One branch as the burn model has it: its leading 1x1 convolution (if it has one that can
/// join the fused head) and the convolutions after it.
pub(super) type BranchParts<'a> = (Option<&'a BasicConv2d>, &'a [BasicConv2d]);

impl Mixed {
    /// Builds the branches; `pool` adds a max-pool branch of that many channels.
    pub(super) fn new(parts: Vec<BranchParts<'_>>, pool: Option<usize>) -> Result<Self> {
        let mut heads = Vec::new();
        let mut branches = Vec::new();
        let mut off = 0;
        for (head, rest) in parts {
            let chain = rest.iter().map(Conv::basic).collect::<Result<Vec<_>>>()?;
            let (source, head_width) = match head {
                Some(h) => {
                    let conv = Conv::basic(h)?;
                    let s = Source::Head { off };
                    let w = conv.cout;
                    off += w;
                    heads.push(conv);
                    (s, w)
                }
                None => (Source::Input, 0),
            };
            let width = chain.last().map_or(head_width, |c| c.cout);
            branches.push(Branch::Convs {
                source,
                chain,
                width,
            });
        }
        let reduces = pool.is_some();
        if let Some(width) = pool {
            branches.push(Branch::MaxPool { width });
        }
        let head = (!heads.is_empty()).then(|| Conv::fuse(&heads.iter().collect::<Vec<_>>()));
        Ok(Self {
            head,
            branches,
            reduces,
        })
    }

    pub(super) fn out_channels(&self) -> usize {
        self.branches.iter().map(Branch::width).sum()
    }

    pub(super) fn forward(&self, x: &Buf, ws: &mut Workspace, par: Par) -> Buf {
        let (oh, ow) = if self.reduces {
            pool_hw(x.h, x.w)
        } else {
            (x.h, x.w)
        };
        let mut out = ws.take(x.n, oh, ow, self.out_channels());
        let head = self.head.as_ref().map(|h| {
            let mut hb = ws.take(x.n, x.h, x.w, h.cout);
            h.run(x, 0, &mut hb, 0, Epilogue::BiasRelu, &mut ws.im2col, par);
            hb
        });
        let mut ooff = 0;
        for branch in &self.branches {
            match branch {
                Branch::MaxPool { .. } => max_pool_3x3_s2(x, &mut out, ooff),
                Branch::Convs {
                    source,
                    chain,
                    width,
                } => {
                    let (src, soff) = match source {
                        Source::Input => (x, 0),
                        Source::Head { off } => (head.as_ref().expect("fused head ran"), *off),
                    };
                    if chain.is_empty() {
                        let rows = out.data.chunks_exact_mut(out.c);
                        for (o, i) in rows.zip(src.data.chunks_exact(src.c)) {
                            o[ooff..ooff + width].copy_from_slice(&i[soff..soff + width]);
                        }
                    } else {
                        run_chain(chain, src, soff, &mut out, ooff, ws, par);
                    }
                }
            }
            ooff += branch.width();
        }
        if let Some(h) = head {
            ws.give(h);
        }
        out
    }

    pub(super) fn macs(&self, h: usize, w: usize) -> u64 {
        let mut total = self.head.as_ref().map_or(0, |c| c.macs(h, w));
        for b in &self.branches {
            if let Branch::Convs { chain, .. } = b {
                let mut hw = (h, w);
                for c in chain {
                    total += c.macs(hw.0, hw.1);
                    hw = c.out_hw(hw.0, hw.1);
                }
            }
        }
        total
    }
}

/// Runs `chain` on channels `soff..` of `src`; the last convolution writes into channels
/// `ooff..` of `out`.
pub(super) fn run_chain(
    chain: &[Conv],
    src: &Buf,
    soff: usize,
    out: &mut Buf,
    ooff: usize,
    ws: &mut Workspace,
    par: Par,
) {
    let mut cur: Option<Buf> = None;
    for (i, conv) in chain.iter().enumerate() {
        let (input, ioff) = match &cur {
            Some(b) => (b, 0),
            None => (src, soff),
        };
        if i + 1 == chain.len() {
            conv.run(
                input,
                ioff,
                out,
                ooff,
                Epilogue::BiasRelu,
                &mut ws.im2col,
                par,
            );
        } else {
            let (oh, ow) = conv.out_hw(input.h, input.w);
            let mut next = ws.take(input.n, oh, ow, conv.cout);
            conv.run(
                input,
                ioff,
                &mut next,
                0,
                Epilogue::BiasRelu,
                &mut ws.im2col,
                par,
            );
            if let Some(old) = cur.replace(next) {
                ws.give(old);
            }
        }
    }
    if let Some(old) = cur {
        ws.give(old);
    }
}

/// A residual block: `x = act(x + scale * up(concat(branches(x))))`.
#[derive(Debug)]
pub(super) struct Residual {
    pub(super) mixed: Mixed,
    pub(super) up: Conv,
    pub(super) scale: f32,
    pub(super) relu: bool,
}

impl Residual {
    pub(super) fn block35(b: &Block35) -> Result<Self> {
        let mixed = Mixed::new(
            vec![
                (Some(&b.branch0), &[][..]),
                (Some(&b.branch1[0]), &b.branch1[1..]),
                (Some(&b.branch2[0]), &b.branch2[1..]),
            ],
            None,
        )?;
        Self::with_up(mixed, &b.conv2d, b.scale, true)
    }

    pub(super) fn block17(b: &Block17) -> Result<Self> {
        Self::two_branch(&b.branch0, &b.branch1, &b.conv2d, b.scale, true)
    }

    pub(super) fn block8(b: &Block8) -> Result<Self> {
        Self::two_branch(&b.branch0, &b.branch1, &b.conv2d, b.scale, b.activate)
    }

    /// Block17 and Block8: a 1x1 branch and a chain, both led by a 1x1 convolution.
    pub(super) fn two_branch(
        branch0: &BasicConv2d,
        branch1: &[BasicConv2d],
        up: &Conv2d,
        scale: f64,
        relu: bool,
    ) -> Result<Self> {
        let mixed = Mixed::new(
            vec![(Some(branch0), &[][..]), (Some(&branch1[0]), &branch1[1..])],
            None,
        )?;
        Self::with_up(mixed, up, scale, relu)
    }

    pub(super) fn with_up(mixed: Mixed, up: &Conv2d, scale: f64, relu: bool) -> Result<Self> {
        Ok(Self {
            mixed,
            up: Conv::from_burn(up, None)?,
            scale: scale as f32,
            relu,
        })
    }

    pub(super) fn forward(&self, x: &mut Buf, ws: &mut Workspace, par: Par) {
        let cat = self.mixed.forward(x, ws, par);
        let epilogue = Epilogue::Residual {
            scale: self.scale,
            relu: self.relu,
        };
        self.up.run(&cat, 0, x, 0, epilogue, &mut ws.im2col, par);
        ws.give(cat);
    }
}
