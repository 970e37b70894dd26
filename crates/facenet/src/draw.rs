//! Drawing boxes and landmarks onto images (for `facenet detect --annotate` and contact sheets).
//!
//! Written by hand: a hollow rectangle and filled dots are a few lines, and the drawing crates
//! (imageproc) bring a large dependency tree for them.

use image::{Rgb, RgbImage};

use crate::detect::Detection;

/// Green for boxes.
const BOX: Rgb<u8> = Rgb([0, 220, 0]);
/// Red for landmarks.
const MARK: Rgb<u8> = Rgb([230, 20, 20]);

fn put(img: &mut RgbImage, x: i64, y: i64, c: Rgb<u8>) {
    if x >= 0 && y >= 0 && (x as u32) < img.width() && (y as u32) < img.height() {
        img.put_pixel(x as u32, y as u32, c);
    }
}

/// Draws a rectangle outline of the given thickness (clipped to the image).
pub fn rect(img: &mut RgbImage, b: [f32; 4], thickness: i64, c: Rgb<u8>) {
    let [x1, y1, x2, y2] = b.map(|v| v.round() as i64);
    for t in 0..thickness {
        for x in x1..=x2 {
            put(img, x, y1 + t, c);
            put(img, x, y2 - t, c);
        }
        for y in y1..=y2 {
            put(img, x1 + t, y, c);
            put(img, x2 - t, y, c);
        }
    }
}

/// Draws a filled dot.
pub fn dot(img: &mut RgbImage, x: f32, y: f32, r: i64, c: Rgb<u8>) {
    let (cx, cy) = (x.round() as i64, y.round() as i64);
    for dy in -r..=r {
        for dx in -r..=r {
            if dx * dx + dy * dy <= r * r {
                put(img, cx + dx, cy + dy, c);
            }
        }
    }
}

/// Draws a detection: its box and five landmarks, sized to the box.
pub fn detection(img: &mut RgbImage, d: &Detection) {
    let (_, t) = framed(img, d);
    for [x, y] in d.landmarks {
        dot(img, x, y, t + 1, MARK);
    }
}

/// Draws a detection's box with a line as thick as its size calls for; returns the box's
/// longer side and that thickness.
fn framed(img: &mut RgbImage, d: &Detection) -> (f32, i64) {
    let side = (d.bbox[2] - d.bbox[0]).max(d.bbox[3] - d.bbox[1]);
    let t = ((side / 80.0).round() as i64).max(1);
    rect(img, d.bbox, t, BOX);
    (side, t)
}

/// Yellow for the 68-point shape.
const SHAPE: Rgb<u8> = Rgb([255, 210, 0]);

/// A detection's box with its 68-point shape ([`crate::landmarks`]) as dots sized to the face.
pub fn detection_shape(img: &mut RgbImage, d: &Detection, points: &[[f32; 2]]) {
    let (side, _) = framed(img, d);
    let r = ((side / 100.0).round() as i64).max(1);
    for &[x, y] in points {
        dot(img, x, y, r, SHAPE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rect_is_clipped_and_hollow() {
        let mut img = RgbImage::new(10, 10);
        rect(&mut img, [2.0, 2.0, 12.0, 7.0], 1, BOX);
        assert_eq!(*img.get_pixel(2, 2), BOX);
        assert_eq!(*img.get_pixel(9, 7), BOX);
        assert_eq!(*img.get_pixel(5, 5), Rgb([0, 0, 0]));
        dot(&mut img, -5.0, -5.0, 2, MARK); // fully outside: no panic
    }
}
