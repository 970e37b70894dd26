//! Detection recall: in how many photos the detector finds a face, at MTCNN's published
//! settings and with the [`Rescue`](crate::detect::Rescue), and what each costs.
//!
//! ```text
//! facenet bench recall --photos ../shared/data/cfp-dev --name-contains _01
//! facenet bench recall --photos ../shared/data/lfw --every 7 --crop 0.0
//! ```

use std::path::{Path, PathBuf};
use std::time::Instant;

use image::RgbImage;

use crate::detect::{Detection, Detector, MtcnnConfig};
use crate::error::Result;

/// A face crop that the face fills: `face`'s box grown by `margin` (a fraction of the box's
/// width and height, half on each side), clipped to the photo and resized to `side`x`side`.
/// The kind of crop face datasets and browser face libraries hand out.
pub fn frame_filling_crop(img: &RgbImage, face: &Detection, margin: f32, side: u32) -> RgbImage {
    let [x1, y1, x2, y2] = face.bbox;
    let (dw, dh) = ((x2 - x1) * margin / 2.0, (y2 - y1) * margin / 2.0);
    let clip = |v: f32, hi: u32| v.round().clamp(0.0, hi as f32) as u32;
    let (l, t) = (clip(x1 - dw, img.width()), clip(y1 - dh, img.height()));
    let (r, b) = (clip(x2 + dw, img.width()), clip(y2 + dh, img.height()));
    let cut = image::imageops::crop_imm(img, l, t, (r - l).max(1), (b - t).max(1)).to_image();
    image::imageops::resize(&cut, side, side, image::imageops::FilterType::Triangle)
}

/// The photos of a recall run: every image under `dir` whose file name contains
/// `name_contains`, every `every`-th of the sorted list; with `crop`, each replaced by a
/// 150x150 [`frame_filling_crop`] of its face as `cutter` finds it (the face of the photo,
/// [`crate::align::order`]), grown by that margin, and photos where it finds none left out.
/// Returns each photo's path beside its image.
pub fn photo_set(
    dir: &Path,
    name_contains: Option<&str>,
    every: usize,
    crop: Option<(&Detector, f32)>,
) -> Result<Vec<(PathBuf, RgbImage)>> {
    let mut files = crate::files::walk_images(dir)?;
    files.sort();
    files.retain(|p| {
        name_contains.is_none_or(|s| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().contains(s))
        })
    });
    let mut out = Vec::new();
    for p in files.into_iter().step_by(every.max(1)) {
        let img = crate::image::load_rgb(&p)?;
        match crop {
            None => out.push((p, img)),
            Some((cutter, margin)) => {
                let mut faces = cutter.detect(&img)?;
                crate::align::order(&mut faces, img.width(), img.height());
                if let Some(face) = faces.first() {
                    let c = frame_filling_crop(&img, face, margin, 150);
                    out.push((p, c));
                }
            }
        }
    }
    Ok(out)
}

/// What one setting of the detector found.
#[derive(Debug, Clone)]
pub struct Recall {
    /// Photos with at least one face.
    pub found: usize,
    /// Photos tried.
    pub photos: usize,
    /// Indices of the photos without a face.
    pub missed: Vec<usize>,
    /// Photos per second over the whole set.
    pub photos_per_s: f64,
}

/// Runs `detector` with `config` over `imgs` (one thread: the cascade spreads its pyramid
/// over the cores itself).
pub fn recall(detector: Detector, config: MtcnnConfig, imgs: &[RgbImage]) -> Result<Recall> {
    let detector = detector.with_config(config);
    let start = Instant::now();
    let mut missed = Vec::new();
    for (i, img) in imgs.iter().enumerate() {
        if detector.detect(img)?.is_empty() {
            missed.push(i);
        }
    }
    Ok(Recall {
        found: imgs.len() - missed.len(),
        photos: imgs.len(),
        photos_per_s: imgs.len() as f64 / start.elapsed().as_secs_f64().max(1e-9),
        missed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_filling_crop_is_the_box_and_its_margin() {
        // A 100x80 photo whose left half is white: a box over x 40..60 with margin 1.0 spans
        // x 30..70, so the crop is half white, half black.
        let mut img = RgbImage::new(100, 80);
        for y in 0..80 {
            for x in 0..50 {
                img.put_pixel(x, y, image::Rgb([255; 3]));
            }
        }
        let face = Detection {
            bbox: [40.0, 20.0, 60.0, 40.0],
            score: 1.0,
            landmarks: [[0.0; 2]; 5],
        };
        let crop = frame_filling_crop(&img, &face, 1.0, 40);
        assert_eq!(crop.dimensions(), (40, 40));
        assert_eq!(crop.get_pixel(5, 20).0, [255; 3]);
        assert_eq!(crop.get_pixel(35, 20).0, [0; 3]);
        // A box past the photo's edge is clipped, not a panic.
        let edge = Detection {
            bbox: [-30.0, -30.0, 10.0, 10.0],
            ..face
        };
        assert_eq!(
            frame_filling_crop(&img, &edge, 0.5, 16).dimensions(),
            (16, 16)
        );
    }
}
