//! From a detected face to the network's input crop.
//!
//! Two methods, named for what they do:
//! - [`AlignMethod::Crop`]: the box grown by a margin (in pixels of the source image, half on
//!   each side), clipped to the image, resized to `size`x`size`. This is davidsandberg's
//!   `align_dataset_mtcnn`, what the pretrained FaceNet models were trained on: the default.
//! - [`AlignMethod::Similarity`]: a rotation + uniform scale + shift taking the five landmarks
//!   onto a template (the common 112x112 five-point template scaled to `size`), then a
//!   bilinear warp. Faces come out upright with eyes at fixed places.
//!
//! ```text
//! facenet align photos/ aligned/ --margin 32 --size 160
//! ```

use image::{Rgb, RgbImage};
use serde::{Deserialize, Serialize};

use crate::detect::Detection;
use crate::error::{Error, Result};
use crate::image::resize_square;

/// How a face is cut out.
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum AlignMethod {
    /// Box + margin, resized (davidsandberg; what the Keras FaceNet model was trained on).
    #[default]
    Crop,
    /// Five-landmark similarity transform to a template.
    Similarity,
}

/// Which faces of a photo to keep.
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum FaceSelection {
    /// The face of the photo: confidence first (a detection scoring more than
    /// [`SCORE_GAP`] below the best one does not compete: a hand at 0.86 beside a face at
    /// 0.99), then davidsandberg's centre-weighted rule among the rest.
    #[default]
    Primary,
    /// The largest box (by area).
    Largest,
    /// davidsandberg's rule: the largest `area - 2 * squared distance from the image centre`.
    CenterWeighted,
    /// Every face.
    All,
}

/// Alignment settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AlignConfig {
    /// Method.
    pub method: AlignMethod,
    /// Output side in pixels.
    pub size: u32,
    /// Margin for [`AlignMethod::Crop`], in source pixels (half on each side).
    pub margin: u32,
}

impl Default for AlignConfig {
    fn default() -> Self {
        Self {
            method: AlignMethod::Crop,
            size: 160,
            margin: 32,
        }
    }
}

/// How far below the best detection's score a detection may score and still count as a face
/// of the photo for [`FaceSelection::Primary`] (and as a rival face when enrolment asks
/// whether a photo is ambiguous).
pub const SCORE_GAP: f32 = 0.05;

/// The detections that compete for "the face of this photo": those scoring within
/// [`SCORE_GAP`] of the best.
pub fn confident(faces: &[Detection]) -> Vec<Detection> {
    let best = faces.iter().map(|d| d.score).fold(f32::MIN, f32::max);
    faces
        .iter()
        .filter(|d| d.score >= best - SCORE_GAP)
        .copied()
        .collect()
}

/// The one order in which every front lists the faces of a photo (`facenet detect`,
/// `embed --detect`, `identify`, the HTTP API, Python) and `--face N` counts them: the face of
/// the photo first ([`FaceSelection::Primary`]), then the other confident faces (within
/// [`SCORE_GAP`] of the best score), then the rest; within each group by davidsandberg's
/// centre-weighted key (area less twice the squared distance of the box's centre from the
/// image's), ties by score.
pub fn order(faces: &mut [Detection], width: u32, height: u32) {
    let best = faces.iter().map(|d| d.score).fold(f32::MIN, f32::max);
    let (cx, cy) = (width as f32 / 2.0, height as f32 / 2.0);
    let key = |d: &Detection| {
        let ox = (d.bbox[0] + d.bbox[2]) / 2.0 - cx;
        let oy = (d.bbox[1] + d.bbox[3]) / 2.0 - cy;
        (
            d.score >= best - SCORE_GAP,
            d.area() - 2.0 * (ox * ox + oy * oy),
        )
    };
    faces.sort_by(|a, b| {
        let (ka, kb) = (key(a), key(b));
        kb.0.cmp(&ka.0)
            .then(kb.1.total_cmp(&ka.1))
            .then(b.score.total_cmp(&a.score))
    });
}

/// Picks faces per `selection`; for one-face rules the result has at most one element.
pub fn select(
    faces: &[Detection],
    width: u32,
    height: u32,
    selection: FaceSelection,
) -> Vec<Detection> {
    let best = |key: &dyn Fn(&Detection) -> f32| {
        faces
            .iter()
            .max_by(|a, b| key(a).total_cmp(&key(b)))
            .copied()
            .into_iter()
            .collect()
    };
    let (cx, cy) = (width as f32 / 2.0, height as f32 / 2.0);
    let centre_weighted = |d: &Detection| {
        let ox = (d.bbox[0] + d.bbox[2]) / 2.0 - cx;
        let oy = (d.bbox[1] + d.bbox[3]) / 2.0 - cy;
        d.area() - 2.0 * (ox * ox + oy * oy)
    };
    match selection {
        FaceSelection::All => faces.to_vec(),
        FaceSelection::Largest => best(&|d| d.area()),
        FaceSelection::CenterWeighted => best(&centre_weighted),
        FaceSelection::Primary => {
            let mut all = faces.to_vec();
            order(&mut all, width, height);
            all.truncate(1);
            all
        }
    }
}

/// The integer crop rectangle `[x0, y0, x1, y1)` of [`AlignMethod::Crop`]: the box grown by
/// `margin / 2` per side, clipped to the image, truncated to integers (as `np.int32`).
pub fn crop_rect(det: &Detection, width: u32, height: u32, margin: u32) -> [u32; 4] {
    let m = margin as f32 / 2.0;
    let b = det.bbox;
    [
        (b[0] - m).max(0.0) as u32,
        (b[1] - m).max(0.0) as u32,
        (b[2] + m).min(width as f32).max(0.0) as u32,
        (b[3] + m).min(height as f32).max(0.0) as u32,
    ]
}

/// The five-point template on a 112x112 face (left eye, right eye, nose, mouth corners).
pub const TEMPLATE_112: [[f32; 2]; 5] = [
    [38.2946, 51.6963],
    [73.5318, 51.5014],
    [56.0252, 71.7366],
    [41.5493, 92.3655],
    [70.7299, 92.2041],
];

/// Least-squares similarity transform (rotation, uniform scale, shift; no reflection) taking
/// `src` points onto `dst` (Umeyama 1991 in 2-D). Returns `[a, b, tx, ty]` for
/// `x' = a x - b y + tx`, `y' = b x + a y + ty`.
pub fn similarity(src: &[[f32; 2]], dst: &[[f32; 2]]) -> [f64; 4] {
    let n = src.len() as f64;
    let mean = |p: &[[f32; 2]]| {
        let (sx, sy) = p
            .iter()
            .fold((0.0, 0.0), |(x, y), q| (x + q[0] as f64, y + q[1] as f64));
        (sx / n, sy / n)
    };
    let (msx, msy) = mean(src);
    let (mdx, mdy) = mean(dst);
    let (mut num_a, mut num_b, mut den) = (0.0, 0.0, 0.0);
    for (s, d) in src.iter().zip(dst) {
        let (sx, sy) = (s[0] as f64 - msx, s[1] as f64 - msy);
        let (dx, dy) = (d[0] as f64 - mdx, d[1] as f64 - mdy);
        num_a += sx * dx + sy * dy;
        num_b += sx * dy - sy * dx;
        den += sx * sx + sy * sy;
    }
    let den = den.max(f64::MIN_POSITIVE);
    let (a, b) = (num_a / den, num_b / den);
    [a, b, mdx - (a * msx - b * msy), mdy - (b * msx + a * msy)]
}

/// Cuts one face out of `img` per `cfg`.
pub fn align(img: &RgbImage, det: &Detection, cfg: &AlignConfig) -> Result<RgbImage> {
    if cfg.size == 0 {
        return Err(Error::InvalidArgument {
            field: "size",
            reason: "the output size must be at least 1 pixel".into(),
        });
    }
    match cfg.method {
        AlignMethod::Crop => {
            let [x0, y0, x1, y1] = crop_rect(det, img.width(), img.height(), cfg.margin);
            if x1 <= x0 || y1 <= y0 {
                return Err(Error::InvalidArgument {
                    field: "face",
                    reason: format!("the face box {:?} lies outside the image", det.bbox),
                });
            }
            let crop = image::imageops::crop_imm(img, x0, y0, x1 - x0, y1 - y0).to_image();
            Ok(resize_square(&crop, cfg.size))
        }
        AlignMethod::Similarity => {
            let k = cfg.size as f32 / 112.0;
            let dst: Vec<[f32; 2]> = TEMPLATE_112.iter().map(|p| [p[0] * k, p[1] * k]).collect();
            let [a, b, tx, ty] = similarity(&det.landmarks, &dst);
            Ok(warp_inverse(img, [a, b, tx, ty], cfg.size))
        }
    }
}

/// Samples `img` through the inverse of a similarity transform, bilinear, black outside.
fn warp_inverse(img: &RgbImage, [a, b, tx, ty]: [f64; 4], size: u32) -> RgbImage {
    let det = a * a + b * b;
    let (w, h) = (img.width() as i64, img.height() as i64);
    let px = |x: i64, y: i64, c: usize| -> f64 {
        if x < 0 || y < 0 || x >= w || y >= h {
            0.0
        } else {
            img.get_pixel(x as u32, y as u32)[c] as f64
        }
    };
    RgbImage::from_fn(size, size, |u, v| {
        // Inverse of [a -b; b a]: [a b; -b a] / (a^2 + b^2).
        let (du, dv) = (u as f64 - tx, v as f64 - ty);
        let sx = (a * du + b * dv) / det;
        let sy = (-b * du + a * dv) / det;
        let (x0, y0) = (sx.floor() as i64, sy.floor() as i64);
        let (fx, fy) = (sx - x0 as f64, sy - y0 as f64);
        Rgb(std::array::from_fn(|c| {
            let v = px(x0, y0, c) * (1.0 - fx) * (1.0 - fy)
                + px(x0 + 1, y0, c) * fx * (1.0 - fy)
                + px(x0, y0 + 1, c) * (1.0 - fx) * fy
                + px(x0 + 1, y0 + 1, c) * fx * fy;
            v.round().clamp(0.0, 255.0) as u8
        }))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn det(b: [f32; 4]) -> Detection {
        Detection {
            bbox: b,
            score: 1.0,
            landmarks: [[0.0; 2]; 5],
        }
    }

    #[test]
    fn crop_rect_by_hand() {
        // margin 32 -> 16 per side; clipped at 0 and at the image size; truncated.
        let d = det([10.7, 40.2, 100.9, 150.5]);
        assert_eq!(crop_rect(&d, 110, 160, 32), [0, 24, 110, 160]);
        let d = det([39.49, 55.41, 156.94, 219.81]);
        assert_eq!(crop_rect(&d, 200, 300, 32), [23, 39, 172, 235]);
    }

    #[test]
    fn selection_rules() {
        // A big face off-centre and a smaller one in the middle of a 200x200 image.
        let big = det([0.0, 0.0, 80.0, 80.0]); // area 6400, centre (40,40): offset^2 = 7200
        let mid = det([80.0, 80.0, 130.0, 130.0]); // area 2500, centre (105,105): offset^2 = 50
        let faces = [big, mid];
        assert_eq!(select(&faces, 200, 200, FaceSelection::Largest), vec![big]);
        assert_eq!(
            select(&faces, 200, 200, FaceSelection::CenterWeighted),
            vec![mid]
        );
        assert_eq!(select(&faces, 200, 200, FaceSelection::All).len(), 2);
        assert!(select(&[], 200, 200, FaceSelection::Largest).is_empty());
        assert!(select(&[], 200, 200, FaceSelection::Primary).is_empty());
    }

    #[test]
    fn primary_face_puts_confidence_first() {
        // The Elton John case: a face (0.991, small) and a larger hand (0.860) nearer the
        // centre. The hand does not compete; among comparable faces the centre-weighted rule
        // decides.
        let face = Detection {
            score: 0.991,
            ..det([10.0, 10.0, 44.0, 56.0])
        };
        let hand = Detection {
            score: 0.860,
            ..det([80.0, 70.0, 115.0, 129.0])
        };
        assert_eq!(
            select(&[hand, face], 200, 200, FaceSelection::Largest),
            vec![hand]
        );
        assert_eq!(
            select(&[hand, face], 200, 200, FaceSelection::Primary),
            vec![face]
        );
        assert_eq!(confident(&[hand, face]), vec![face]);
        let rival = Detection {
            score: 0.97,
            ..det([80.0, 80.0, 130.0, 130.0])
        };
        assert_eq!(confident(&[face, rival]).len(), 2);
        assert_eq!(
            select(&[face, rival], 200, 200, FaceSelection::Primary),
            vec![rival]
        );
    }

    #[test]
    fn similarity_recovers_a_known_transform() {
        // dst = 2 * R(90deg) * src + (5, -3): a = 0, b = 2.
        let src = [[1.0, 0.0], [0.0, 1.0], [2.0, 3.0], [-1.0, 4.0], [3.0, -2.0]];
        let dst: Vec<[f32; 2]> = src
            .iter()
            .map(|p: &[f32; 2]| [-2.0 * p[1] + 5.0, 2.0 * p[0] - 3.0])
            .collect();
        let [a, b, tx, ty] = similarity(&src, &dst);
        for (got, want) in [a, b, tx, ty].iter().zip([0.0, 2.0, 5.0, -3.0]) {
            assert!((got - want).abs() < 1e-6, "{got} vs {want}");
        }
    }

    #[test]
    fn similarity_warp_of_template_is_identity() {
        // Landmarks already at the template positions of a 112 image: output = input.
        let img = RgbImage::from_fn(112, 112, |x, y| Rgb([x as u8, y as u8, 7]));
        let mut d = det([0.0, 0.0, 112.0, 112.0]);
        d.landmarks = TEMPLATE_112;
        let cfg = AlignConfig {
            method: AlignMethod::Similarity,
            size: 112,
            margin: 0,
        };
        let out = align(&img, &d, &cfg).unwrap();
        assert_eq!(out.get_pixel(50, 60), img.get_pixel(50, 60));
    }

    #[test]
    fn crop_outside_the_image_is_an_error() {
        let img = RgbImage::new(50, 50);
        let d = det([200.0, 200.0, 300.0, 300.0]);
        assert!(align(&img, &d, &AlignConfig::default()).is_err());
    }
}
