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
    assert!(sw > 0 && sh > 0 && dw > 0 && dh > 0);
    let scale_x = sw as f64 / dw as f64;
    let scale_y = sh as f64 / dh as f64;
    let (tx, ty) = if scale_x >= 1.0 && scale_y >= 1.0 {
        (area_tab(sw, dw, scale_x), area_tab(sh, dh, scale_y))
    } else {
        (linear_tab(sw, dw, scale_x), linear_tab(sh, dh, scale_y))
    };
    // Separable: rows first into a (sh x dw) buffer, then columns.
    let mut tmp = vec![0f64; sh * dw * c];
    match c {
        // RGB, the detector's case: the three sums stay in registers.
        3 => horizontal::<3>(src, sw, &tx, &mut tmp, dw),
        _ => {
            for y in 0..sh {
                let row = &src[y * sw * c..(y + 1) * sw * c];
                let out = &mut tmp[y * dw * c..(y + 1) * dw * c];
                for (dx, taps) in tx.iter().enumerate() {
                    for &(sx, w) in taps {
                        for k in 0..c {
                            out[dx * c + k] += row[sx * c + k] * w;
                        }
                    }
                }
            }
        }
    }
    let mut dst = vec![0f64; dh * dw * c];
    for (dy, taps) in ty.iter().enumerate() {
        let out = &mut dst[dy * dw * c..(dy + 1) * dw * c];
        for &(sy, w) in taps {
            let row = &tmp[sy * dw * c..(sy + 1) * dw * c];
            for (o, r) in out.iter_mut().zip(row) {
                *o += r * w;
            }
        }
    }
    dst
}

/// The horizontal pass for `C` channels: each output pixel sums its taps in order (the same
/// additions, in the same order, as the general loop).
fn horizontal<const C: usize>(
    src: &[f64],
    sw: usize,
    tx: &[Vec<(usize, f64)>],
    tmp: &mut [f64],
    dw: usize,
) {
    for (row, out) in src.chunks_exact(sw * C).zip(tmp.chunks_exact_mut(dw * C)) {
        for (o, taps) in out.chunks_exact_mut(C).zip(tx) {
            let mut acc = [0f64; C];
            for &(sx, w) in taps {
                let p = &row[sx * C..sx * C + C];
                for k in 0..C {
                    acc[k] += p[k] * w;
                }
            }
            o.copy_from_slice(&acc);
        }
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
    fn identity_size_is_unchanged_and_channels_stay_apart() {
        let src: Vec<f64> = (0..2 * 3 * 3).map(|v| v as f64).collect();
        assert_eq!(resize_area(&src, 3, 2, 3, 3, 2), src);
    }
}
