//! OpenCV-compatible `INTER_AREA` resizing of interleaved float images.
//!
//! MTCNN's published pipeline (davidsandberg's `detect_face`) resizes with
//! `cv2.resize(..., interpolation=cv2.INTER_AREA)`: a box filter over exact pixel-area overlaps
//! when shrinking, and OpenCV's "area-mode" bilinear weights when enlarging. The detector's
//! scores depend on those exact pixels, and no Rust image crate reproduces OpenCV's rule, so it
//! is written here (following `modules/imgproc/src/resize.cpp`: `computeResizeAreaTab` and the
//! `area_mode` branch of the linear coefficient table). Weights are computed in f32, as OpenCV
//! does.

/// Resizes an interleaved `sw`x`sh` image with `c` channels to `dw`x`dh`.
pub fn resize_area(src: &[f64], sw: usize, sh: usize, c: usize, dw: usize, dh: usize) -> Vec<f64> {
    assert_eq!(src.len(), sw * sh * c);
    let mut dst = vec![0f64; dw * dh * c];
    resize_area_rows(sw, sh, c, dw, dh, &mut dst, |y, row| {
        row.copy_from_slice(&src[y * sw * c..(y + 1) * sw * c])
    });
    dst
}

/// [`resize_area`] of an image given row by row: `fill(y, row)` writes source row `y` (`sw * c`
/// values) into `row`. Rows are asked for once each, in order, and only those that some output
/// row uses; nothing of the size of the source image is allocated. `dst` (`dw * dh * c`
/// values) is overwritten.
///
/// OpenCV's separable pass (rows first, then columns), with one change of arithmetic: the
/// pixels that share a weight (the interior of a box-filter cell, all at `1 / cell`) are summed
/// first and multiplied once, where OpenCV multiplies each. For 8-bit pixels those sums are
/// exact integers, so a value differs from OpenCV's only in the last bits of an f64. The
/// column taps of an output row are applied as their source rows stream by, in increasing row
/// order, which is the order of the taps.
pub fn resize_area_rows<T: Pixel>(
    sw: usize,
    sh: usize,
    c: usize,
    dw: usize,
    dh: usize,
    dst: &mut [f64],
    mut fill: impl FnMut(usize, &mut [T]),
) {
    assert!(sw > 0 && sh > 0 && dw > 0 && dh > 0);
    assert_eq!(dst.len(), dw * dh * c);
    // A cell's 8-bit sum fits a u32 up to 16 million pixels wide.
    assert!(sw / dw < 1 << 24, "shrinking {sw} pixels to {dw}");
    let Plan { tx, feeds, .. } = Plan::new(sw, sh, dw, dh);
    dst.fill(0.0);
    let mut row = vec![T::default(); sw * c];
    let mut across = vec![0f64; dw * c];
    for (sy, outs) in feeds.iter().enumerate() {
        if outs.is_empty() {
            continue;
        }
        fill(sy, &mut row);
        match c {
            // RGB, the detector's case: the three sums stay in registers.
            3 => horizontal::<T, 3>(&row, &tx, &mut across),
            1 => horizontal::<T, 1>(&row, &tx, &mut across),
            _ => {
                for k in 0..c {
                    let plane: Vec<T> = row.iter().skip(k).step_by(c).copied().collect();
                    let mut one = vec![0f64; dw];
                    horizontal::<T, 1>(&plane, &tx, &mut one);
                    for (dx, v) in one.into_iter().enumerate() {
                        across[dx * c + k] = v;
                    }
                }
            }
        }
        for &(dy, w) in outs {
            let out = &mut dst[dy * dw * c..(dy + 1) * dw * c];
            for (o, r) in out.iter_mut().zip(&across) {
                *o += r * w;
            }
        }
    }
}

/// Every level of an image pyramid at once, as 8-bit RGB: `levels` are `(dw, dh)` sizes, each
/// resized from the interleaved RGB `src` (`sw`x`sh`) as [`resize_area_rows`] resizes it, then
/// rounded half to even and saturated, as OpenCV stores an 8-bit result. One pass over the
/// source rows makes them all.
///
/// Each source row is read once, into running sums per channel; a run of taps of one weight is
/// then the difference of two running sums (exact integers), so a level's horizontal pass costs
/// one step per output pixel and run instead of one per source pixel. That matters because
/// every level covers the whole photo: a 1080p photo has 13 levels from 20-pixel faces up.
/// Only the output rows still receiving sums are held in f64.
///
/// On x86-64 with AVX2 the horizontal pass takes one output pixel per vector (its three
/// channels' running sums in one 128-bit load, its runs in a fixed shape of three), and the
/// vertical pass and the rounding are compiled for AVX2 too. The arithmetic is the same
/// operations in the same order, so the levels are the same bytes
/// (`simd_and_scalar_pyramids_are_the_same_bytes`).
pub fn pyramid_rgb(src: &[u8], sw: usize, sh: usize, levels: &[(usize, usize)]) -> Vec<Vec<u8>> {
    #[cfg(target_arch = "x86_64")]
    if simd::usable(sw) {
        // SAFETY: the CPU has AVX2.
        return unsafe { simd::pyramid_avx2(src, sw, sh, levels) };
    }
    pyramid_with(src, sw, sh, levels, false)
}

/// The running sums of one source row, four lanes per pixel boundary: `sums[x * 4 + k]` is
/// channel k's sum over pixels `0..x` (lane 3 stays 0), so one 128-bit load gives a
/// boundary's three sums. i32 holds a row of up to [`simd::usable`]'s width exactly; wider rows
/// wrap, and a run's difference is still exact as long as the run's own sum fits.
struct RowSums {
    sums: Vec<i32>,
}

impl RowSums {
    fn new(sw: usize) -> Self {
        RowSums {
            sums: vec![0; (sw + 1) * 4],
        }
    }

    #[inline(always)]
    fn fill(&mut self, row: &[u8]) {
        self.fill_padded(0, row);
    }

    /// The sums of a row that is zero but for `pixels` (RGB), which start at pixel `at`.
    #[inline(always)]
    fn fill_padded(&mut self, at: usize, pixels: &[u8]) {
        let (before, rest) = self.sums.split_at_mut((at + 1) * 4);
        before.fill(0);
        let (inside, after) = rest.split_at_mut(pixels.len() / 3 * 4);
        let mut run = [0i32; 4];
        for (p, s) in pixels.chunks_exact(3).zip(inside.chunks_exact_mut(4)) {
            for k in 0..3 {
                run[k] = run[k].wrapping_add(p[k] as i32);
            }
            s.copy_from_slice(&run);
        }
        for s in after.chunks_exact_mut(4) {
            s.copy_from_slice(&run);
        }
    }
}

/// [`resize_area_rows`] of an 8-bit RGB image whose row `y` is zero but for the pixels that
/// `row(y)` gives and where they start (`None`: all zero), as MTCNN's zero-padded crops are:
/// the same values, from running sums (as [`pyramid_rgb`] reads a row), on AVX2 one output
/// pixel per vector. No row is copied. `dst` (`dw * dh * 3` values) is overwritten.
pub fn resize_rgb8<'a>(
    sw: usize,
    sh: usize,
    dw: usize,
    dh: usize,
    dst: &mut [f64],
    row: impl FnMut(usize) -> Option<(usize, &'a [u8])>,
) {
    #[cfg(target_arch = "x86_64")]
    if simd::usable(sw) {
        // SAFETY: the CPU has AVX2.
        return unsafe { simd::resize_rgb8_avx2(sw, sh, dw, dh, dst, row) };
    }
    resize_rgb8_with(sw, sh, dw, dh, dst, row, false)
}

/// [`resize_rgb8`]'s pass over the source rows; with `vector` (only where the caller checked
/// for AVX2) the horizontal pass reads [`Slot`]s, as [`pyramid_with`]'s does.
#[inline(always)]
fn resize_rgb8_with<'a>(
    sw: usize,
    sh: usize,
    dw: usize,
    dh: usize,
    dst: &mut [f64],
    mut row: impl FnMut(usize) -> Option<(usize, &'a [u8])>,
    vector: bool,
) {
    const C: usize = 3;
    assert!(sw > 0 && sh > 0 && dw > 0 && dh > 0 && sw / dw < 1 << 24);
    assert_eq!(dst.len(), dw * dh * C);
    let plan = Plan::new(sw, sh, dw, dh);
    let slots = if vector { slots(&plan.tx, dw) } else { None };
    let mut sums = RowSums::new(sw);
    let width = dw * C;
    let mut across = vec![0f64; width + 1];
    dst.fill(0.0);
    for (sy, outs) in plan.feeds.iter().enumerate() {
        if outs.is_empty() {
            continue;
        }
        match row(sy) {
            Some((at, pixels)) => {
                assert!(
                    at + pixels.len() / C <= sw,
                    "row {sy} runs past {sw} pixels"
                );
                sums.fill_padded(at, pixels)
            }
            None => sums.sums.fill(0),
        }
        across_row(&sums, slots.as_deref(), &plan.tx, &mut across);
        for &(dy, w) in outs {
            for (o, r) in dst[dy * width..(dy + 1) * width].iter_mut().zip(&across) {
                *o += r * w;
            }
        }
    }
}

/// One row's horizontal pass into `across` (interleaved RGB, with one value of slack past
/// the row): through the slots where there are some (they exist only where AVX2 was
/// checked for), else run by run.
#[inline(always)]
fn across_row(sums: &RowSums, slots: Option<&[[Slot; 3]]>, tx: &Runs, across: &mut [f64]) {
    match slots {
        #[cfg(target_arch = "x86_64")]
        Some(slots) => {
            // SAFETY: slots exist only where the caller checked for AVX2; `across` has a
            // value to spare past the row.
            unsafe { simd::horizontal_slots(&sums.sums, slots, &mut across[..slots.len() * 3 + 1]) }
        }
        _ => {
            let width = across.len() - 1;
            horizontal_runs(&sums.sums, tx, &mut across[..width])
        }
    }
}

/// One pyramid level being made.
struct Level {
    dw: usize,
    plan: Plan,
    /// The horizontal taps as three slots per output pixel, for the vector pass (`None` on
    /// the scalar path, or where some pixel has more than three runs).
    slots: Option<Vec<[Slot; 3]>>,
    /// Output rows being summed, oldest first.
    open: std::collections::VecDeque<(usize, Vec<f64>)>,
    out: Vec<u8>,
}

/// One run of a pixel's horizontal taps in a fixed shape: pixels `lo..hi` at weight `w`.
/// Pixels with fewer than three runs end in empty runs of weight 0, which add +0.0 to a sum
/// of non-negative terms: the same value.
#[derive(Clone, Copy, Default)]
struct Slot {
    lo: u32,
    hi: u32,
    w: f64,
}

/// Every output pixel's runs as three [`Slot`]s, or `None` where a pixel has more than
/// three runs (or a boundary past u32), which the vector pass cannot take.
fn slots(tx: &Runs, dw: usize) -> Option<Vec<[Slot; 3]>> {
    (0..dw)
        .map(|dx| {
            let runs = tx.of(dx);
            let mut s = [Slot::default(); 3];
            if runs.len() > 3 {
                return None;
            }
            for (slot, r) in s.iter_mut().zip(runs) {
                *slot = Slot {
                    lo: u32::try_from(r.first).ok()?,
                    hi: u32::try_from(r.first + r.len).ok()?,
                    w: r.weight,
                };
            }
            Some(s)
        })
        .collect()
}

/// The pyramid's pass over the source rows. With `vector` the horizontal pass reads the
/// [`Slot`]s through `simd::horizontal_slots` (the caller enables AVX2 around this function,
/// which is inlined there, so that the loops below are compiled for it too); else it reads
/// the runs one by one.
#[inline(always)]
fn pyramid_with(
    src: &[u8],
    sw: usize,
    sh: usize,
    levels: &[(usize, usize)],
    vector: bool,
) -> Vec<Vec<u8>> {
    const C: usize = 3;
    assert_eq!(src.len(), sw * sh * C);
    let mut plans: Vec<Level> = levels
        .iter()
        .map(|&(dw, dh)| {
            assert!(dw > 0 && dh > 0 && sw / dw < 1 << 24);
            let plan = Plan::new(sw, sh, dw, dh);
            Level {
                dw,
                slots: if vector { slots(&plan.tx, dw) } else { None },
                plan,
                open: std::collections::VecDeque::new(),
                out: vec![0u8; dw * dh * C],
            }
        })
        .collect();
    let widest = levels.iter().map(|l| l.0).max().unwrap_or(0);
    let mut sums = RowSums::new(sw);
    // One value of slack: the vector pass stores four lanes per pixel.
    let mut across = vec![0f64; widest * C + 1];
    let mut spare: Vec<Vec<f64>> = Vec::new();
    for sy in 0..sh {
        if plans.iter().all(|l| l.plan.feeds[sy].is_empty()) {
            continue;
        }
        sums.fill(&src[sy * sw * C..(sy + 1) * sw * C]);
        for l in &mut plans {
            if l.plan.feeds[sy].is_empty() {
                continue;
            }
            let width = l.dw * C;
            across_row(
                &sums,
                l.slots.as_deref(),
                &l.plan.tx,
                &mut across[..width + 1],
            );
            let across = &across[..width];
            for &(dy, w) in &l.plan.feeds[sy] {
                let at = match l.open.iter().position(|(d, _)| *d == dy) {
                    Some(i) => i,
                    None => {
                        let mut buf = spare.pop().unwrap_or_default();
                        buf.clear();
                        buf.resize(width, 0.0);
                        l.open.push_back((dy, buf));
                        l.open.len() - 1
                    }
                };
                // A product, then a sum (no fused multiply-add): each lane rounds as the
                // scalar code does.
                for (o, r) in l.open[at].1.iter_mut().zip(across) {
                    *o += r * w;
                }
            }
            // Rows whose last source row this was are complete.
            while let Some(i) = l.open.iter().position(|(d, _)| l.plan.last[*d] <= sy) {
                let (dy, buf) = l.open.remove(i).expect("an open row");
                for (o, v) in l.out[dy * width..(dy + 1) * width].iter_mut().zip(&buf) {
                    *o = v.round_ties_even().clamp(0.0, 255.0) as u8;
                }
                spare.push(buf);
            }
        }
    }
    plans.into_iter().map(|l| l.out).collect()
}

/// The horizontal pass from a row's running sums, run by run, into interleaved RGB.
#[inline(always)]
fn horizontal_runs(sums: &[i32], tx: &Runs, out: &mut [f64]) {
    for (dx, o) in out.chunks_exact_mut(3).enumerate() {
        let mut acc = [0f64; 3];
        for r in tx.of(dx) {
            let (a, b) = (r.first * 4, (r.first + r.len) * 4);
            for k in 0..3 {
                acc[k] += sums[b + k].wrapping_sub(sums[a + k]) as u32 as f64 * r.weight;
            }
        }
        o.copy_from_slice(&acc);
    }
}

#[cfg(target_arch = "x86_64")]
mod simd {
    use super::Slot;
    use std::arch::x86_64::*;

    /// Whether the vector passes can take rows `sw` pixels wide here: the CPU has AVX2, and
    /// a row's running sums fit i32, as their signed conversion needs (every sum is at most
    /// 255 per pixel).
    pub(super) fn usable(sw: usize) -> bool {
        std::arch::is_x86_feature_detected!("avx2") && sw.saturating_mul(255) < i32::MAX as usize
    }

    /// [`super::pyramid_rgb`] compiled for AVX2.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn pyramid_avx2(
        src: &[u8],
        sw: usize,
        sh: usize,
        levels: &[(usize, usize)],
    ) -> Vec<Vec<u8>> {
        super::pyramid_with(src, sw, sh, levels, true)
    }

    /// [`super::resize_rgb8`] compiled for AVX2.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn resize_rgb8_avx2<'a>(
        sw: usize,
        sh: usize,
        dw: usize,
        dh: usize,
        dst: &mut [f64],
        row: impl FnMut(usize) -> Option<(usize, &'a [u8])>,
    ) {
        super::resize_rgb8_with(sw, sh, dw, dh, dst, row, true)
    }

    /// The horizontal pass one output pixel at a time, its three channels in the lanes of one
    /// vector: per slot, the two boundaries' sums loaded, differenced, converted, weighted and
    /// added in slot order, as the scalar pass adds its runs. Each pixel stores four lanes at
    /// `dx * 3`; the fourth (0) is overwritten by the next pixel, or lands in the one value of
    /// slack that `out` has past the row.
    ///
    /// # Safety
    /// The CPU must have AVX2; every slot's `hi` must be a boundary of the row whose sums
    /// `sums` holds; `out.len() == slots.len() * 3 + 1`.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn horizontal_slots(sums: &[i32], slots: &[[Slot; 3]], out: &mut [f64]) {
        assert_eq!(out.len(), slots.len() * 3 + 1);
        let base = sums.as_ptr();
        let dst = out.as_mut_ptr();
        for (dx, s) in slots.iter().enumerate() {
            let mut acc = _mm256_setzero_pd();
            for r in s {
                debug_assert!((r.hi as usize + 1) * 4 <= sums.len() && r.lo <= r.hi);
                // SAFETY: lo <= hi are boundaries of the row (0..=sw), whose four lanes each
                // lie in `sums`.
                unsafe {
                    let a = _mm_loadu_si128(base.add(r.lo as usize * 4).cast());
                    let b = _mm_loadu_si128(base.add(r.hi as usize * 4).cast());
                    let d = _mm256_cvtepi32_pd(_mm_sub_epi32(b, a));
                    acc = _mm256_add_pd(acc, _mm256_mul_pd(d, _mm256_set1_pd(r.w)));
                }
            }
            // SAFETY: dx * 3 + 4 <= slots.len() * 3 + 1 = out.len().
            unsafe { _mm256_storeu_pd(dst.add(dx * 3), acc) };
        }
    }
}

/// The horizontal pass of one row for `C` channels: per output pixel, per run of taps of one
/// weight, the run's pixels summed, then weighted.
fn horizontal<T: Pixel, const C: usize>(row: &[T], tx: &Runs, out: &mut [f64]) {
    for (dx, o) in out.chunks_exact_mut(C).enumerate() {
        let mut acc = [0f64; C];
        for run in tx.of(dx) {
            let mut sum = [T::Sum::default(); C];
            for p in row[run.first * C..(run.first + run.len) * C].chunks_exact(C) {
                for k in 0..C {
                    sum[k] += p[k].widen();
                }
            }
            for k in 0..C {
                acc[k] += sum[k].into() * run.weight;
            }
        }
        o.copy_from_slice(&acc);
    }
}

/// A pixel value the resize reads, with the type its sums are kept in: 8-bit values are
/// summed as exact integers (one-cycle additions), floats as f64.
pub trait Pixel: Copy + Default {
    /// The sum's type.
    type Sum: Copy + Default + std::ops::AddAssign + Into<f64>;
    /// The value as a term of a sum.
    fn widen(self) -> Self::Sum;
}

impl Pixel for u8 {
    type Sum = u32;
    fn widen(self) -> u32 {
        self as u32
    }
}

impl Pixel for f64 {
    type Sum = f64;
    fn widen(self) -> f64 {
        self
    }
}

/// The taps of one resize: per output column its runs, per source row the output rows it
/// feeds (and with what weight), per output row its last source row.
struct Plan {
    tx: Runs,
    feeds: Vec<Vec<(usize, f64)>>,
    last: Vec<usize>,
}

impl Plan {
    /// OpenCV's rule: box-filter taps when shrinking both ways, area-mode linear otherwise.
    fn new(sw: usize, sh: usize, dw: usize, dh: usize) -> Self {
        let scale_x = sw as f64 / dw as f64;
        let scale_y = sh as f64 / dh as f64;
        let (tx, ty) = if scale_x >= 1.0 && scale_y >= 1.0 {
            (area_tab(sw, dw, scale_x), area_tab(sh, dh, scale_y))
        } else {
            (linear_tab(sw, dw, scale_x), linear_tab(sh, dh, scale_y))
        };
        let mut feeds: Vec<Vec<(usize, f64)>> = vec![Vec::new(); sh];
        for (dy, taps) in ty.iter().enumerate() {
            for &(sy, w) in taps {
                feeds[sy].push((dy, w));
            }
        }
        let last = ty
            .iter()
            .map(|t| t.iter().map(|p| p.0).max().unwrap_or(0))
            .collect();
        Plan {
            tx: Runs::new(&tx),
            feeds,
            last,
        }
    }
}

/// Consecutive source pixels of one weight.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Run {
    first: usize,
    len: usize,
    weight: f64,
}

/// Every output pixel's taps as runs, in flat arrays (no pointer to follow per pixel).
struct Runs {
    /// Output pixel `d`'s runs are `runs[at[d]..at[d + 1]]`.
    at: Vec<usize>,
    runs: Vec<Run>,
}

impl Runs {
    fn new(taps: &[Vec<(usize, f64)>]) -> Self {
        let mut t = Runs {
            at: vec![0],
            runs: Vec::new(),
        };
        for list in taps {
            let from = t.runs.len();
            for &(s, w) in list {
                match t.runs[from..].last_mut() {
                    Some(r) if r.weight == w && r.first + r.len == s => r.len += 1,
                    _ => t.runs.push(Run {
                        first: s,
                        len: 1,
                        weight: w,
                    }),
                }
            }
            t.at.push(t.runs.len());
        }
        t
    }

    fn of(&self, d: usize) -> &[Run] {
        &self.runs[self.at[d]..self.at[d + 1]]
    }
}

/// Box-filter taps when shrinking (`computeResizeAreaTab`).
fn area_tab(ssize: usize, dsize: usize, scale: f64) -> Vec<Vec<(usize, f64)>> {
    (0..dsize)
        .map(|dx| {
            let fsx1 = dx as f64 * scale;
            let fsx2 = fsx1 + scale;
            let cell = scale.min(ssize as f64 - fsx1);
            let mut sx1 = fsx1.ceil() as usize;
            let sx2 = (fsx2.floor() as usize).min(ssize - 1);
            sx1 = sx1.min(sx2);
            let mut taps = Vec::new();
            if sx1 as f64 - fsx1 > 1e-3 {
                taps.push((sx1 - 1, ((sx1 as f64 - fsx1) / cell) as f32 as f64));
            }
            for sx in sx1..sx2 {
                taps.push((sx, (1.0 / cell) as f32 as f64));
            }
            if fsx2 - sx2 as f64 > 1e-3 {
                let w = (fsx2 - sx2 as f64).min(1.0).min(cell) / cell;
                taps.push((sx2, w as f32 as f64));
            }
            taps
        })
        .collect()
}

/// Two-tap linear coefficients in OpenCV's area mode (used when enlarging).
fn linear_tab(ssize: usize, dsize: usize, scale: f64) -> Vec<Vec<(usize, f64)>> {
    let inv = 1.0 / scale;
    (0..dsize)
        .map(|dx| {
            let mut sx = (dx as f64 * scale).floor() as isize;
            let f = ((dx + 1) as f64 - (sx + 1) as f64 * inv) as f32;
            let mut f = if f <= 0.0 { 0.0 } else { f - f.floor() };
            if sx < 0 {
                f = 0.0;
                sx = 0;
            }
            let sx = sx as usize;
            if sx + 1 >= ssize {
                vec![(ssize - 1, 1.0)]
            } else {
                vec![(sx, (1.0 - f) as f64), (sx + 1, f as f64)]
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn halving_averages_2x2_blocks() {
        // 4x2, one channel -> 2x1: means of [1,2,5,6] and [3,4,7,8].
        let src = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0];
        assert_eq!(resize_area(&src, 4, 2, 1, 2, 1), vec![3.5, 5.5]);
    }

    #[test]
    fn non_integer_shrink_weights_overlaps() {
        // 3 -> 2: cells [0, 1.5) and [1.5, 3): (a + b/2) / 1.5 and (b/2 + c) / 1.5.
        let v = resize_area(&[3.0, 6.0, 9.0], 3, 1, 1, 2, 1);
        assert!(
            (v[0] - 4.0).abs() < 1e-6 && (v[1] - 8.0).abs() < 1e-6,
            "{v:?}"
        );
    }

    #[test]
    fn enlarging_uses_area_mode_linear_weights() {
        // 2 -> 4 (scale 0.5): dx=0: sx=0, f=(1-2)<=0 -> 0 -> a; dx=1: sx=0, f=2-2=0 -> a;
        // dx=2: sx=1 -> last pixel -> b; dx=3 -> b. OpenCV gives [a, a, b, b] here.
        assert_eq!(
            resize_area(&[1.0, 3.0], 2, 1, 1, 4, 1),
            vec![1.0, 1.0, 3.0, 3.0]
        );
        // 2 -> 3 (scale 2/3): dx=1: sx=0, f = 2 - 1.5 = 0.5 -> (a + b) / 2.
        let v = resize_area(&[1.0, 3.0], 2, 1, 1, 3, 1);
        assert_eq!(v, vec![1.0, 2.0, 3.0]);
    }

    #[test]
    fn rgb_pass_equals_one_channel_at_a_time() {
        // The specialised three-channel loop gives exactly what the general one gives to each
        // channel alone, shrinking and enlarging.
        let (sw, sh) = (37, 23);
        let rgb: Vec<f64> = (0..sw * sh * 3)
            .map(|i| ((i * 7919) % 256) as f64)
            .collect();
        for (dw, dh) in [(12, 9), (20, 15), (50, 31)] {
            let all = resize_area(&rgb, sw, sh, 3, dw, dh);
            for c in 0..3 {
                let plane: Vec<f64> = rgb.iter().skip(c).step_by(3).copied().collect();
                let one = resize_area(&plane, sw, sh, 1, dw, dh);
                let got: Vec<f64> = all.iter().skip(c).step_by(3).copied().collect();
                assert_eq!(got, one, "{dw}x{dh}, channel {c}");
            }
        }
    }

    #[test]
    fn the_pyramid_in_one_pass_equals_each_level_resized_alone() {
        let (sw, sh) = (61, 47);
        let rgb: Vec<u8> = (0..sw * sh * 3)
            .map(|i| ((i * 7919 + 13) % 256) as u8)
            .collect();
        let levels = [(37, 29), (26, 20), (12, 9), (61, 47), (80, 60)];
        let all = pyramid_rgb(&rgb, sw, sh, &levels);
        let f: Vec<f64> = rgb.iter().map(|&v| v as f64).collect();
        for (&(dw, dh), got) in levels.iter().zip(&all) {
            let mut want = vec![0f64; dw * dh * 3];
            resize_area_rows(sw, sh, 3, dw, dh, &mut want, |y, row: &mut [u8]| {
                row.copy_from_slice(&rgb[y * sw * 3..(y + 1) * sw * 3])
            });
            let rounded: Vec<u8> = want
                .iter()
                .map(|v| v.round_ties_even().clamp(0.0, 255.0) as u8)
                .collect();
            assert_eq!(got, &rounded, "{dw}x{dh}");
            // OpenCV's tap-by-tap sums agree before rounding to the last bits of an f64.
            let cv = tap_by_tap(&f, sw, sh, 3, dw, dh);
            let worst = cv
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f64::max);
            assert!(worst < 1e-9, "{dw}x{dh}: {worst}");
        }
    }

    #[test]
    fn simd_and_scalar_pyramids_are_the_same_bytes() {
        // A photo whose width is no multiple of 8, levels shrinking by non-integer factors,
        // one enlarging (two-tap linear runs, merged where both weights are 0.5), the size
        // itself, and one pixel; values up to 255 so that the sums are large.
        let (sw, sh) = (203, 157);
        let rgb: Vec<u8> = (0..sw * sh * 3)
            .map(|i| ((i * 2654435761usize) >> 7) as u8)
            .collect();
        let levels = [
            (122, 95),
            (87, 67),
            (61, 48),
            (9, 7),
            (203, 157),
            (406, 314),
            (250, 190),
            (1, 1),
        ];
        #[cfg(target_arch = "x86_64")]
        {
            assert!(
                std::arch::is_x86_feature_detected!("avx2"),
                "the vector pyramid needs AVX2, which every x86-64 CPU we build for has"
            );
            for &(dw, dh) in &levels {
                let plan = Plan::new(sw, sh, dw, dh);
                assert!(
                    slots(&plan.tx, dw).is_some(),
                    "{dw}x{dh} left to the scalar pass"
                );
            }
        }
        let scalar = pyramid_with(&rgb, sw, sh, &levels, false);
        let fast = pyramid_rgb(&rgb, sw, sh, &levels);
        for ((&(dw, dh), a), b) in levels.iter().zip(&scalar).zip(&fast) {
            assert_eq!(a, b, "{dw}x{dh}");
        }
    }

    #[test]
    fn padded_rgb8_resize_equals_the_general_one() {
        // A 41x29 crop holding an image part at columns 5..35 of rows 3..21, zero elsewhere
        // (as a box that runs past the photo's edges), shrunk and enlarged.
        let (sw, sh) = (41, 29);
        let part: Vec<u8> = (0..30 * 18 * 3)
            .map(|i| ((i * 2654435761usize) >> 9) as u8)
            .collect();
        let row = |y: usize| {
            (3..21)
                .contains(&y)
                .then(|| (5, &part[(y - 3) * 90..(y - 2) * 90]))
        };
        for (dw, dh) in [(24, 24), (12, 9), (48, 48), (7, 5), (41, 29)] {
            let mut want = vec![0f64; dw * dh * 3];
            resize_area_rows(sw, sh, 3, dw, dh, &mut want, |y, r: &mut [u8]| {
                r.fill(0);
                if let Some((at, px)) = row(y) {
                    r[at * 3..at * 3 + px.len()].copy_from_slice(px);
                }
            });
            assert!(want.iter().any(|&v| v > 0.0));
            let mut scalar = vec![f64::NAN; dw * dh * 3];
            resize_rgb8_with(sw, sh, dw, dh, &mut scalar, row, false);
            let mut fast = vec![f64::NAN; dw * dh * 3];
            resize_rgb8(sw, sh, dw, dh, &mut fast, row);
            assert_eq!(scalar, want, "{dw}x{dh}, run by run");
            assert_eq!(fast, want, "{dw}x{dh}");
        }
    }

    /// OpenCV's order of arithmetic: every tap multiplied, rows first then columns.
    fn tap_by_tap(src: &[f64], sw: usize, sh: usize, c: usize, dw: usize, dh: usize) -> Vec<f64> {
        let (sx, sy) = (sw as f64 / dw as f64, sh as f64 / dh as f64);
        let (tx, ty) = if sx >= 1.0 && sy >= 1.0 {
            (area_tab(sw, dw, sx), area_tab(sh, dh, sy))
        } else {
            (linear_tab(sw, dw, sx), linear_tab(sh, dh, sy))
        };
        let mut tmp = vec![0f64; sh * dw * c];
        for y in 0..sh {
            for (dx, taps) in tx.iter().enumerate() {
                for &(x, w) in taps {
                    for k in 0..c {
                        tmp[(y * dw + dx) * c + k] += src[(y * sw + x) * c + k] * w;
                    }
                }
            }
        }
        let mut dst = vec![0f64; dh * dw * c];
        for (dy, taps) in ty.iter().enumerate() {
            for &(y, w) in taps {
                for i in 0..dw * c {
                    dst[dy * dw * c + i] += tmp[y * dw * c + i] * w;
                }
            }
        }
        dst
    }

    #[test]
    fn identity_size_is_unchanged_and_channels_stay_apart() {
        let src: Vec<f64> = (0..2 * 3 * 3).map(|v| v as f64).collect();
        assert_eq!(resize_area(&src, 3, 2, 3, 3, 2), src);
    }
}
