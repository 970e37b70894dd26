//! How usable a detected face is for recognition: one score in 0..1 from four parts, each
//! also in 0..1, and the part that limits it.
//!
//! - **size**: the shorter side of the box in the photo's pixels; 0 at [`SIZE_MIN_PX`] and
//!   below, 1 from [`SIZE_FULL_PX`] on (the network sees 160x160; below ~40 pixels it is
//!   looking at an enlarged blur).
//! - **sharpness**: the variance of the Laplacian of the face's grey levels, with the face
//!   resized to 112x112 so that the measure does not depend on its size in the photo; 0 at 0,
//!   1 from [`SHARP_FULL`] on.
//! - **pose**: from the five landmarks: how far the nose sits from the line midway between
//!   the eyes, in half eye-distances (0 frontal, 1 where the nose is over an eye, above 1 in
//!   profile); the part is 1 frontal and 0 from [`YAW_LIMIT`] on.
//! - **confidence**: the detector's face probability; 0 at 0.5 and below, 1 from 0.9 on (the
//!   published cascade keeps faces from 0.7, the [`Rescue`](crate::detect::Rescue) from 0.3).
//!
//! The score is the smallest part: a face is as usable as its worst aspect, and the reason
//! for a low score is that part. Enrolment refuses faces below [`ENROL_MIN`] by default.
//!
//! ```text
//! facenet detect --json photo.jpg     # each face with its quality
//! ```

use image::RgbImage;
use serde::{Deserialize, Serialize};

/// Below this shorter side (pixels) the size part is 0.
pub const SIZE_MIN_PX: f32 = 20.0;
/// From this shorter side (pixels) on the size part is 1.
pub const SIZE_FULL_PX: f32 = 60.0;
/// From this variance of the Laplacian on the sharpness part is 1.
pub const SHARP_FULL: f32 = 40.0;
/// The nose's offset (in half eye-distances) at which the pose part reaches 0.
pub const YAW_LIMIT: f32 = 1.5;
/// The quality enrolment asks for by default.
pub const ENROL_MIN: f32 = 0.3;

/// A face's quality ([module docs](self)).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Quality {
    /// The smallest of the parts, 0..1.
    pub score: f32,
    /// The size part, 0..1.
    pub size: f32,
    /// The sharpness part, 0..1.
    pub sharpness: f32,
    /// The pose part, 0..1.
    pub pose: f32,
    /// The confidence part, 0..1.
    pub confidence: f32,
    /// The box's shorter side, in pixels.
    pub face_px: f32,
    /// The variance of the Laplacian of the face at 112x112.
    pub laplacian_var: f32,
    /// The nose's offset from the eyes' midline, in half eye-distances (signed: positive
    /// toward the image's right).
    pub yaw: f32,
}

impl Quality {
    /// The part that sets the score, named: `"size"`, `"sharpness"`, `"pose"` or
    /// `"confidence"`.
    pub fn weakest(&self) -> &'static str {
        [
            ("size", self.size),
            ("sharpness", self.sharpness),
            ("pose", self.pose),
            ("confidence", self.confidence),
        ]
        .into_iter()
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .map_or("size", |p| p.0)
    }

    /// Why the score is what it is, in words a user can act on.
    pub fn reason(&self) -> String {
        match self.weakest() {
            "size" => format!(
                "the face is {:.0} pixels across (clear from {SIZE_FULL_PX:.0})",
                self.face_px
            ),
            "sharpness" => format!(
                "the face is blurred (sharpness {:.0}, clear from {SHARP_FULL:.0})",
                self.laplacian_var
            ),
            "pose" => format!(
                "the face is turned away (nose {:.2} half eye-distances off centre)",
                self.yaw.abs()
            ),
            _ => format!(
                "the detector is unsure it is a face (confidence {:.2})",
                self.confidence * 0.4 + 0.5
            ),
        }
    }
}

impl std::fmt::Display for Quality {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "quality {:.2} ({})", self.score, self.weakest())
    }
}

/// The quality of the face with box `bbox` (`[x1, y1, x2, y2]`), detector probability `score`
/// and five `landmarks` in `img` ([`crate::detect::Detection::quality`] calls it).
pub fn measure(img: &RgbImage, bbox: [f32; 4], score: f32, landmarks: &[[f32; 2]; 5]) -> Quality {
    let [x1, y1, x2, y2] = bbox;
    let face_px = (x2 - x1).min(y2 - y1).max(0.0);
    let laplacian_var = sharpness(img, bbox);
    let yaw = yaw(landmarks);
    let unit = |v: f32| {
        if v.is_finite() {
            v.clamp(0.0, 1.0)
        } else {
            0.0
        }
    };
    let size = unit((face_px - SIZE_MIN_PX) / (SIZE_FULL_PX - SIZE_MIN_PX));
    let sharpness = unit(laplacian_var / SHARP_FULL);
    let pose = unit(1.0 - yaw.abs() / YAW_LIMIT);
    let confidence = unit((score - 0.5) / 0.4);
    Quality {
        score: size.min(sharpness).min(pose).min(confidence),
        size,
        sharpness,
        pose,
        confidence,
        face_px,
        laplacian_var,
        yaw,
    }
}

/// The nose's signed offset from the perpendicular bisector of the eyes, in half
/// eye-distances.
fn yaw(l: &[[f32; 2]; 5]) -> f32 {
    let (le, re, nose) = (l[0], l[1], l[2]);
    let axis = [re[0] - le[0], re[1] - le[1]];
    let dist = (axis[0] * axis[0] + axis[1] * axis[1]).sqrt();
    if dist < 1e-3 {
        return 1.0;
    }
    let mid = [(le[0] + re[0]) / 2.0, (le[1] + re[1]) / 2.0];
    let along = ((nose[0] - mid[0]) * axis[0] + (nose[1] - mid[1]) * axis[1]) / dist;
    along / (dist / 2.0)
}

/// Variance of the 4-neighbour Laplacian of the box's grey levels, the box (clipped to the
/// photo) resized to 112x112.
fn sharpness(img: &RgbImage, bbox: [f32; 4]) -> f32 {
    const SIDE: u32 = 112;
    let clip = |v: f32, hi: u32| v.round().clamp(0.0, hi as f32) as u32;
    let (l, t) = (clip(bbox[0], img.width()), clip(bbox[1], img.height()));
    let (r, b) = (clip(bbox[2], img.width()), clip(bbox[3], img.height()));
    if r <= l + 2 || b <= t + 2 {
        return 0.0;
    }
    let cut = image::imageops::crop_imm(img, l, t, r - l, b - t).to_image();
    let grey = image::imageops::grayscale(&cut);
    let grey = image::imageops::resize(&grey, SIDE, SIDE, image::imageops::FilterType::Triangle);
    let at = |x: u32, y: u32| grey.get_pixel(x, y).0[0] as f32;
    let mut values = Vec::with_capacity(((SIDE - 2) * (SIDE - 2)) as usize);
    for y in 1..SIDE - 1 {
        for x in 1..SIDE - 1 {
            values.push(at(x - 1, y) + at(x + 1, y) + at(x, y - 1) + at(x, y + 1) - 4.0 * at(x, y));
        }
    }
    let n = values.len() as f32;
    let mean = values.iter().sum::<f32>() / n;
    values.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Detection {
        bbox: [f32; 4],
        score: f32,
        landmarks: [[f32; 2]; 5],
    }

    fn assess(img: &RgbImage, d: &Detection) -> Quality {
        measure(img, d.bbox, d.score, &d.landmarks)
    }

    fn frontal(bbox: [f32; 4], score: f32) -> Detection {
        let (x, y, w) = (bbox[0], bbox[1], bbox[2] - bbox[0]);
        Detection {
            bbox,
            score,
            landmarks: [
                [x + 0.3 * w, y + 0.4 * w],
                [x + 0.7 * w, y + 0.4 * w],
                [x + 0.5 * w, y + 0.6 * w],
                [x + 0.35 * w, y + 0.8 * w],
                [x + 0.65 * w, y + 0.8 * w],
            ],
        }
    }

    fn checkerboard(side: u32, cell: u32) -> RgbImage {
        RgbImage::from_fn(side, side, |x, y| {
            image::Rgb(
                [if (x / cell + y / cell).is_multiple_of(2) {
                    0
                } else {
                    255
                }; 3],
            )
        })
    }

    #[test]
    fn each_part_by_hand() {
        let img = checkerboard(200, 4);
        let q = assess(&img, &frontal([20.0, 20.0, 180.0, 180.0], 0.99));
        assert_eq!((q.size, q.pose, q.confidence), (1.0, 1.0, 1.0));
        assert!(q.yaw.abs() < 1e-6, "{}", q.yaw);
        assert_eq!(
            q.sharpness, 1.0,
            "a checkerboard is sharp: {}",
            q.laplacian_var
        );
        assert_eq!(q.score, 1.0);
        // 40 pixels across: half way from 20 to 60.
        let q = assess(&img, &frontal([20.0, 20.0, 60.0, 60.0], 0.99));
        assert!(
            (q.size - 0.5).abs() < 1e-6 && q.weakest() == "size",
            "{q:?}"
        );
        assert!(q.reason().contains("40 pixels"), "{}", q.reason());
        // Confidence 0.7 is half way from 0.5 to 0.9.
        let q = assess(&img, &frontal([20.0, 20.0, 180.0, 180.0], 0.7));
        assert!((q.confidence - 0.5).abs() < 1e-6 && q.weakest() == "confidence");
        // A nose over the right eye: one half eye-distance off, pose 1 - 1/1.5; past 1.5 of
        // them (a profile), 0.
        let mut d = frontal([20.0, 20.0, 180.0, 180.0], 0.99);
        d.landmarks[2][0] = d.landmarks[1][0];
        let q = assess(&img, &d);
        assert!(
            (q.yaw - 1.0).abs() < 1e-5 && (q.pose - 1.0 / 3.0).abs() < 1e-5,
            "{q:?}"
        );
        assert!(
            q.weakest() == "pose" && q.reason().contains("turned"),
            "{}",
            q.reason()
        );
        d.landmarks[2][0] = d.landmarks[0][0] - 0.2 * 160.0;
        let q = assess(&img, &d);
        assert!(q.yaw < -1.5 && q.pose == 0.0 && q.score == 0.0, "{q:?}");
        // A flat grey face has no sharpness; a box outside the photo neither (no panic).
        let grey = RgbImage::from_pixel(200, 200, image::Rgb([128; 3]));
        let q = assess(&grey, &frontal([20.0, 20.0, 180.0, 180.0], 0.99));
        assert_eq!((q.sharpness, q.weakest()), (0.0, "sharpness"));
        let q = assess(&img, &frontal([300.0, 300.0, 400.0, 400.0], 0.99));
        assert_eq!(q.sharpness, 0.0);
    }

    #[test]
    fn blurring_lowers_sharpness() {
        let img = checkerboard(200, 6);
        let d = frontal([0.0, 0.0, 200.0, 200.0], 0.99);
        let sharp = assess(&img, &d).laplacian_var;
        let blurred = assess(&image::imageops::blur(&img, 4.0), &d).laplacian_var;
        assert!(blurred < sharp / 10.0, "{blurred} vs {sharp}");
    }
}
