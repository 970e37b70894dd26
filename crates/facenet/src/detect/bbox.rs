//! Box arithmetic of the MTCNN cascade, as davidsandberg's `detect_face.py` defines it.
//!
//! Boxes are `[x1, y1, x2, y2]` in pixels with *inclusive* corners: width is `x2 - x1 + 1`.

/// A candidate face: box, score and the regression offsets that refine it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    /// `[x1, y1, x2, y2]`.
    pub bbox: [f64; 4],
    /// Face probability.
    pub score: f64,
    /// Regression `(dx1, dy1, dx2, dy2)` in units of the box size.
    pub reg: [f64; 4],
}

/// How NMS measures overlap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overlap {
    /// Intersection over union.
    Union,
    /// Intersection over the smaller area (used after O-Net).
    Min,
}

fn area(b: &[f64; 4]) -> f64 {
    (b[2] - b[0] + 1.0) * (b[3] - b[1] + 1.0)
}

/// Overlap of two boxes (inclusive corners).
pub fn overlap(a: &[f64; 4], b: &[f64; 4], mode: Overlap) -> f64 {
    let w = (a[2].min(b[2]) - a[0].max(b[0]) + 1.0).max(0.0);
    let h = (a[3].min(b[3]) - a[1].max(b[1]) + 1.0).max(0.0);
    let inter = w * h;
    match mode {
        Overlap::Union => inter / (area(a) + area(b) - inter),
        Overlap::Min => inter / area(a).min(area(b)),
    }
}

/// Greedy non-maximum suppression: keeps the best-scoring box, drops the others that overlap
/// it by more than `threshold`, repeats. Returns kept indices, best first.
///
/// Confident faces often score exactly 1.0 (f32 softmax), so the order among equal scores
/// decides which of two overlapping boxes survives. The reference sorts with numpy's default
/// `argsort` (an unstable introsort); [`numpy_argsort`] reproduces it.
pub fn nms(boxes: &[Candidate], threshold: f64, mode: Overlap) -> Vec<usize> {
    let scores: Vec<f64> = boxes.iter().map(|b| b.score).collect();
    let mut order = numpy_argsort(&scores);
    let mut pick = Vec::new();
    while let Some(i) = order.pop() {
        pick.push(i);
        order.retain(|&j| overlap(&boxes[i].bbox, &boxes[j].bbox, mode) <= threshold);
    }
    pick
}

/// numpy's default `argsort` (`kind="quicksort"`: introsort with median-of-3 partitioning and
/// insertion sort below 17 elements, `npysort/quicksort.cpp` `aquicksort_`), so that equal
/// scores come out in the same order as in the reference. Written by hand because the order of
/// ties is the point; no sorting crate promises numpy's.
pub fn numpy_argsort(v: &[f64]) -> Vec<usize> {
    const SMALL_QUICKSORT: usize = 16;
    let less = |a: usize, b: usize| v[a] < v[b];
    let mut t: Vec<usize> = (0..v.len()).collect();
    if t.len() < 2 {
        return t;
    }
    let mut stack: Vec<(usize, usize)> = Vec::new();
    let (mut pl, mut pr) = (0usize, t.len() - 1);
    loop {
        while pr - pl > SMALL_QUICKSORT {
            let pm = pl + ((pr - pl) >> 1);
            if less(t[pm], t[pl]) {
                t.swap(pm, pl);
            }
            if less(t[pr], t[pm]) {
                t.swap(pr, pm);
            }
            if less(t[pm], t[pl]) {
                t.swap(pm, pl);
            }
            let vp = v[t[pm]];
            let mut pi = pl;
            let mut pj = pr - 1;
            t.swap(pm, pj);
            loop {
                pi += 1;
                while v[t[pi]] < vp {
                    pi += 1;
                }
                pj -= 1;
                while vp < v[t[pj]] {
                    pj -= 1;
                }
                if pi >= pj {
                    break;
                }
                t.swap(pi, pj);
            }
            t.swap(pi, pr - 1);
            if pi - pl < pr - pi {
                stack.push((pi + 1, pr));
                pr = pi - 1;
            } else {
                stack.push((pl, pi - 1));
                pl = pi + 1;
            }
        }
        for pi in pl + 1..=pr {
            let vi = t[pi];
            let mut pj = pi;
            while pj > pl && v[vi] < v[t[pj - 1]] {
                t[pj] = t[pj - 1];
                pj -= 1;
            }
            t[pj] = vi;
        }
        match stack.pop() {
            Some((l, r)) => (pl, pr) = (l, r),
            None => break,
        }
    }
    t
}

/// Applies the regression: each corner moves by `reg * size`, where size is the box's
/// width/height. `inclusive` adds the +1 of davidsandberg's `bbreg` (R-Net, O-Net); the P-Net
/// stage uses `x2 - x1` without it.
pub fn regress(b: &mut Candidate, inclusive: bool) {
    let one = if inclusive { 1.0 } else { 0.0 };
    let w = b.bbox[2] - b.bbox[0] + one;
    let h = b.bbox[3] - b.bbox[1] + one;
    b.bbox = [
        b.bbox[0] + b.reg[0] * w,
        b.bbox[1] + b.reg[1] * h,
        b.bbox[2] + b.reg[2] * w,
        b.bbox[3] + b.reg[3] * h,
    ];
}

/// Turns a box into a square of side max(w, h) with the same centre (`rerec`).
pub fn square(b: &mut [f64; 4]) {
    let w = b[2] - b[0];
    let h = b[3] - b[1];
    let l = w.max(h);
    b[0] += w * 0.5 - l * 0.5;
    b[1] += h * 0.5 - l * 0.5;
    b[2] = b[0] + l;
    b[3] = b[1] + l;
}

/// Truncates toward zero (`np.fix`).
pub fn fix(b: &mut [f64; 4]) {
    for v in b.iter_mut() {
        *v = v.trunc();
    }
}

/// The part of a (fixed, integer) box inside a `w`x`h` image, for cropping with zero padding
/// (`pad`). Coordinates here are 0-based and half-open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PadCrop {
    /// Size of the padded crop (the whole box).
    pub tmp_w: usize,
    /// Height of the padded crop.
    pub tmp_h: usize,
    /// Where the image part goes in the crop: `[dx, dy, edx, edy)`.
    pub dst: [usize; 4],
    /// Which image pixels: `[x, y, ex, ey)`.
    pub src: [usize; 4],
}

/// Computes [`PadCrop`] for a box with integer corners (1-based arithmetic as `pad()`).
pub fn pad(b: &[f64; 4], w: usize, h: usize) -> Option<PadCrop> {
    let tmp_w = (b[2] - b[0] + 1.0) as i64;
    let tmp_h = (b[3] - b[1] + 1.0) as i64;
    if tmp_w <= 0 || tmp_h <= 0 {
        return None;
    }
    let (mut dx, mut dy, mut edx, mut edy) = (1i64, 1i64, tmp_w, tmp_h);
    let (mut x, mut y, mut ex, mut ey) = (b[0] as i64, b[1] as i64, b[2] as i64, b[3] as i64);
    let (w, h) = (w as i64, h as i64);
    if ex > w {
        edx = -ex + w + tmp_w;
        ex = w;
    }
    if ey > h {
        edy = -ey + h + tmp_h;
        ey = h;
    }
    if x < 1 {
        dx = 2 - x;
        x = 1;
    }
    if y < 1 {
        dy = 2 - y;
        y = 1;
    }
    // numpy slices [dy-1:edy] and [y-1:ey]; empty when the box lies outside the image.
    if edx < dx || edy < dy || ex < x || ey < y {
        return Some(PadCrop {
            tmp_w: tmp_w as usize,
            tmp_h: tmp_h as usize,
            dst: [0, 0, 0, 0],
            src: [0, 0, 0, 0],
        });
    }
    Some(PadCrop {
        tmp_w: tmp_w as usize,
        tmp_h: tmp_h as usize,
        dst: [
            (dx - 1) as usize,
            (dy - 1) as usize,
            edx as usize,
            edy as usize,
        ],
        src: [(x - 1) as usize, (y - 1) as usize, ex as usize, ey as usize],
    })
}

/// P-Net output cells above `threshold` as candidate boxes in image pixels
/// (`generateBoundingBox`: stride 2, cell 12). `prob` is `[h, w]`, `reg` is `[4, h, w]`.
pub fn generate(
    prob: &[f64],
    reg: &[f32],
    h: usize,
    w: usize,
    scale: f64,
    threshold: f64,
) -> Vec<Candidate> {
    const STRIDE: f64 = 2.0;
    const CELL: f64 = 12.0;
    let plane = h * w;
    let mut out = Vec::new();
    // davidsandberg scans the transposed map: x (column) outer, y inner.
    for x in 0..w {
        for y in 0..h {
            let i = y * w + x;
            let score = prob[i];
            if score < threshold {
                continue;
            }
            let q1x = ((STRIDE * x as f64 + 1.0) / scale).trunc();
            let q1y = ((STRIDE * y as f64 + 1.0) / scale).trunc();
            let q2x = ((STRIDE * x as f64 + CELL) / scale).trunc();
            let q2y = ((STRIDE * y as f64 + CELL) / scale).trunc();
            out.push(Candidate {
                bbox: [q1x, q1y, q2x, q2y],
                score,
                reg: [
                    reg[i] as f64,
                    reg[plane + i] as f64,
                    reg[2 * plane + i] as f64,
                    reg[3 * plane + i] as f64,
                ],
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(b: [f64; 4], score: f64) -> Candidate {
        Candidate {
            bbox: b,
            score,
            reg: [0.0; 4],
        }
    }

    #[test]
    fn iou_by_hand() {
        // Two 10x10 boxes (inclusive 0..9) shifted by 5: inter 5x10 = 50, union 150.
        let a = [0.0, 0.0, 9.0, 9.0];
        let b = [5.0, 0.0, 14.0, 9.0];
        assert!((overlap(&a, &b, Overlap::Union) - 50.0 / 150.0).abs() < 1e-12);
        assert!((overlap(&a, &b, Overlap::Min) - 0.5).abs() < 1e-12);
        assert_eq!(overlap(&a, &[20.0, 20.0, 30.0, 30.0], Overlap::Union), 0.0);
    }

    #[test]
    fn nms_union_and_min() {
        let boxes = [
            cand([0.0, 0.0, 9.0, 9.0], 0.9),
            cand([5.0, 0.0, 14.0, 9.0], 0.8), // IoU 1/3 with the first
            cand([1.0, 1.0, 8.0, 8.0], 0.95), // inside the first: IoU 0.64, Min 1.0
            cand([50.0, 50.0, 60.0, 60.0], 0.5),
        ];
        assert_eq!(nms(&boxes, 0.5, Overlap::Union), vec![2, 1, 3]);
        assert_eq!(nms(&boxes, 0.7, Overlap::Union), vec![2, 0, 1, 3]);
        assert_eq!(nms(&boxes, 0.7, Overlap::Min), vec![2, 1, 3]);
    }

    #[test]
    fn numpy_argsort_sorts_and_orders_ties_as_numpy() {
        let v = [3.0, 1.0, 2.0, 1.0];
        assert_eq!(numpy_argsort(&v), vec![1, 3, 2, 0]); // small: stable
        // Expected orders from numpy 1.26.4 `np.argsort` (default kind) on the same arrays, with
        // its scalar sort (NPY_DISABLE_CPU_FEATURES="AVX512F AVX512_SKX ..."; on AVX-512 CPUs
        // numpy dispatches to x86-simd-sort, which orders ties differently):
        // v = [1.0 if i % 7 == 3 else i / 100 for i in range(20)]
        let v: Vec<f64> = (0..20)
            .map(|i| if i % 7 == 3 { 1.0 } else { i as f64 / 100.0 })
            .collect();
        let want = [
            0, 1, 2, 4, 5, 6, 7, 8, 9, 11, 12, 13, 14, 15, 16, 18, 19, 10, 17, 3,
        ];
        assert_eq!(numpy_argsort(&v), want);
        // v = [1.0 if i % 3 == 0 else (i % 5) / 10 for i in range(25)]: ties everywhere.
        let v: Vec<f64> = (0..25)
            .map(|i| {
                if i % 3 == 0 {
                    1.0
                } else {
                    (i % 5) as f64 / 10.0
                }
            })
            .collect();
        let want = [
            5, 20, 10, 1, 16, 11, 17, 2, 22, 7, 13, 23, 8, 4, 14, 19, 21, 0, 12, 15, 9, 6, 3, 18,
            24,
        ];
        assert_eq!(numpy_argsort(&v), want);
    }

    #[test]
    fn regression_by_hand() {
        let mut c = Candidate {
            bbox: [10.0, 20.0, 29.0, 59.0],
            score: 1.0,
            reg: [0.1, -0.1, 0.2, 0.05],
        };
        regress(&mut c, true); // w = 20, h = 40
        assert_eq!(c.bbox, [12.0, 16.0, 33.0, 61.0]);
        let mut c = Candidate {
            bbox: [10.0, 20.0, 30.0, 60.0],
            score: 1.0,
            reg: [0.1, 0.0, 0.0, 0.0],
        };
        regress(&mut c, false); // w = 20
        assert_eq!(c.bbox[0], 12.0);
    }

    #[test]
    fn square_keeps_centre() {
        let mut b = [10.0, 0.0, 20.0, 30.0]; // w 10, h 30
        square(&mut b);
        assert_eq!(b, [0.0, 0.0, 30.0, 30.0]);
    }

    #[test]
    fn pad_at_borders() {
        // Box -2..5 x 3..12 in a 4x10 image (1-based corners, inclusive).
        let p = pad(&[-2.0, 3.0, 5.0, 12.0], 4, 10).unwrap();
        assert_eq!((p.tmp_w, p.tmp_h), (8, 10));
        // x < 1: dx = 2 - (-2) = 4 -> dst starts at 3; ex > w: edx = -5 + 4 + 8 = 7.
        assert_eq!(p.dst, [3, 0, 7, 8]);
        assert_eq!(p.src, [0, 2, 4, 10]);
        assert_eq!(p.dst[2] - p.dst[0], p.src[2] - p.src[0]);
        assert_eq!(p.dst[3] - p.dst[1], p.src[3] - p.src[1]);
    }

    #[test]
    fn generate_maps_cells_to_pixels() {
        // 2x3 map, one cell above threshold at (y=1, x=2), scale 0.5:
        // q1 = fix((2*2+1)/0.5, (2*1+1)/0.5) = (10, 6); q2 = fix((4+12)/0.5, (2+12)/0.5) = (32, 28).
        let mut prob = vec![0.0f64; 6];
        prob[5] = 0.9;
        let mut reg = vec![0.0f32; 24];
        reg[5] = 0.25;
        let c = generate(&prob, &reg, 2, 3, 0.5, 0.6);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].bbox, [10.0, 6.0, 32.0, 28.0]);
        assert!((c[0].score - 0.9).abs() < 1e-6);
        assert_eq!(c[0].reg[0], 0.25);
    }
}
