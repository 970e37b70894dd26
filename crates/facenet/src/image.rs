//! Image decoding and standardization (the network's input contract).
//!
//! Any format the `image` crate decodes (JPEG, PNG, BMP, WebP, TIFF, GIF) is read,
//! converted to 8-bit RGB (grey and alpha are dropped or expanded), then standardized
//! per [`Standardization`] into a `(3, h, w)` planar float buffer.

use std::path::Path;

pub use image::RgbImage;
use image::{ImageReader, imageops::FilterType};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Largest image accepted, in pixels (width x height): 64 megapixels, about 192 MiB as RGB.
/// Larger files are refused before they are decoded, so a hostile header cannot exhaust memory.
pub const MAX_PIXELS: u64 = 64 * 1024 * 1024;

/// How pixel values are mapped to the network's input range.
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Standardization {
    /// Per-image standardization, davidsandberg's `prewhiten`:
    /// `(x - mean) / max(std, 1/sqrt(n))` over all values of the image (population std).
    /// The Keras FaceNet model was trained with this.
    #[default]
    Prewhiten,
    /// Fixed standardization, `(x - 127.5) / 128` (facenet-pytorch, davidsandberg 2018 models).
    Fixed,
    /// `x / 255`, the deep-learning course notebook's `img_to_encoding`.
    Unit,
}

impl Standardization {
    /// The name used on the command line and in weight metadata.
    pub fn name(self) -> &'static str {
        match self {
            Self::Prewhiten => "prewhiten",
            Self::Fixed => "fixed",
            Self::Unit => "unit",
        }
    }

    /// Parses [`Standardization::name`].
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "prewhiten" => Some(Self::Prewhiten),
            "fixed" => Some(Self::Fixed),
            "unit" | "div255" => Some(Self::Unit),
            _ => None,
        }
    }

    /// Standardizes an RGB image into planar `(3, h, w)` floats.
    pub fn apply(self, img: &RgbImage) -> Vec<f32> {
        let (w, h) = img.dimensions();
        let plane = (w * h) as usize;
        let raw = img.as_raw();
        let mut out = vec![0f32; 3 * plane];
        match self {
            Self::Prewhiten => {
                // float64 statistics, as numpy does in the reference.
                let n = raw.len() as f64;
                let mean = raw.iter().map(|&v| v as f64).sum::<f64>() / n;
                let var = raw
                    .iter()
                    .map(|&v| {
                        let d = v as f64 - mean;
                        d * d
                    })
                    .sum::<f64>()
                    / n;
                let std_adj = var.sqrt().max(1.0 / n.sqrt());
                for (i, px) in raw.chunks_exact(3).enumerate() {
                    for c in 0..3 {
                        out[c * plane + i] = ((px[c] as f64 - mean) / std_adj) as f32;
                    }
                }
            }
            Self::Fixed | Self::Unit => {
                let (sub, div) = if self == Self::Fixed {
                    (127.5f32, 128f32)
                } else {
                    (0.0, 255.0)
                };
                for (i, px) in raw.chunks_exact(3).enumerate() {
                    for c in 0..3 {
                        out[c * plane + i] = (px[c] as f32 - sub) / div;
                    }
                }
            }
        }
        out
    }
}

/// Reads an image file as 8-bit RGB ([`decode_rgb`]), refusing folders and empty files with an
/// error that names the file.
pub fn load_rgb(path: &Path) -> Result<RgbImage> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if meta.is_dir() {
        return Err(Error::BadImage {
            path: path.into(),
            reason: "is a directory, not an image file".into(),
        });
    }
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    decode_rgb(&bytes, path)
}

/// Width and height from an image's header, without decoding its pixels (`None` when the
/// format is not recognised or the header is unreadable: decoding then gives the error).
pub fn header_dimensions(bytes: &[u8]) -> Option<(u32, u32)> {
    ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .ok()?
        .into_dimensions()
        .ok()
}

/// Decodes image bytes (any supported format, guessed from the content) as 8-bit RGB, upright:
/// the EXIF orientation that phones write instead of rotating the pixels is applied. Empty,
/// truncated, undecodable and oversized ([`MAX_PIXELS`], checked from the header before the
/// pixels are decoded) inputs are refused; `label` (a path, or a name such as an upload's
/// field) is named in every error.
pub fn decode_rgb(bytes: &[u8], label: &Path) -> Result<RgbImage> {
    use image::ImageDecoder;
    if bytes.is_empty() {
        return Err(Error::BadImage {
            path: label.into(),
            reason: "empty file".into(),
        });
    }
    let decode_err = |source| Error::Decode {
        path: label.into(),
        source,
    };
    let reader = ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| Error::io(label, e))?;
    let mut decoder = reader.into_decoder().map_err(decode_err)?;
    let (w, h) = decoder.dimensions();
    check_size(label, w, h)?;
    // A missing or unreadable EXIF block leaves the image as stored.
    let orientation = decoder
        .orientation()
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut img = image::DynamicImage::from_decoder(decoder).map_err(decode_err)?;
    img.apply_orientation(orientation);
    Ok(img.to_rgb8())
}

/// Smallest face crop accepted by [`load_face`], in pixels per side. Smaller images carry too
/// little of a face to embed; they are usually a wrong file.
pub const MIN_FACE_SIDE: u32 = 16;

/// Reads a face crop: [`load_rgb`], then [`check_face`].
pub fn load_face(path: &Path) -> Result<RgbImage> {
    check_face(load_rgb(path)?, path)
}

/// Refuses images smaller than [`MIN_FACE_SIDE`] as face crops; `label` names the image.
pub fn check_face(img: RgbImage, label: &Path) -> Result<RgbImage> {
    let (w, h) = img.dimensions();
    if w < MIN_FACE_SIDE || h < MIN_FACE_SIDE {
        return Err(Error::BadImage {
            path: label.into(),
            reason: format!(
                "image is {w}x{h}; a face crop must be at least {MIN_FACE_SIDE}x{MIN_FACE_SIDE} pixels"
            ),
        });
    }
    Ok(img)
}

fn check_size(path: &Path, w: u32, h: u32) -> Result<()> {
    if w == 0 || h == 0 {
        return Err(Error::BadImage {
            path: path.into(),
            reason: format!("image has zero size ({w}x{h})"),
        });
    }
    if w as u64 * h as u64 > MAX_PIXELS {
        return Err(Error::BadImage {
            path: path.into(),
            reason: format!(
                "image is {w}x{h} = {} pixels, over the limit of {MAX_PIXELS}",
                w as u64 * h as u64
            ),
        });
    }
    Ok(())
}

/// Encodes `img` as a JPEG that carries an EXIF `Orientation` tag (1..=8) and nothing else
/// in its EXIF block, as a phone writes it. For tests and samples of sideways photos:
/// [`decode_rgb`] must undo the stored rotation.
pub fn jpeg_with_orientation(img: &RgbImage, orientation: u16) -> Result<Vec<u8>> {
    let mut jpeg = Vec::new();
    img.write_to(
        &mut std::io::Cursor::new(&mut jpeg),
        image::ImageFormat::Jpeg,
    )
    .map_err(|source| Error::Encode {
        path: "<jpeg>".into(),
        source,
    })?;
    // APP1 "Exif\0\0" + little-endian TIFF header + one IFD entry: 0x0112 SHORT 1 value.
    let mut tiff = vec![b'I', b'I', 42, 0, 8, 0, 0, 0, 1, 0];
    tiff.extend_from_slice(&0x0112u16.to_le_bytes());
    tiff.extend_from_slice(&3u16.to_le_bytes());
    tiff.extend_from_slice(&1u32.to_le_bytes());
    tiff.extend_from_slice(&orientation.to_le_bytes());
    tiff.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    let mut app1 = b"Exif\0\0".to_vec();
    app1.extend_from_slice(&tiff);
    let len = (app1.len() + 2) as u16;
    let mut out = jpeg[..2].to_vec(); // SOI
    out.extend_from_slice(&[0xFF, 0xE1]);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&app1);
    out.extend_from_slice(&jpeg[2..]);
    Ok(out)
}

/// Resizes to `size`x`size` with a triangle (bilinear, antialiased) filter, as Pillow's
/// `BILINEAR` does; images already at that size are returned unchanged.
pub fn resize_square(img: &RgbImage, size: u32) -> RgbImage {
    if img.dimensions() == (size, size) {
        img.clone()
    } else {
        image::imageops::resize(img, size, size, FilterType::Triangle)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn img(w: u32, h: u32, f: impl Fn(u32, u32, usize) -> u8) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| {
            image::Rgb([f(x, y, 0), f(x, y, 1), f(x, y, 2)])
        })
    }

    #[test]
    fn prewhiten_has_zero_mean_unit_std() {
        let im = img(5, 3, |x, y, c| (x * 40 + y * 7 + c as u32 * 3) as u8);
        let v = Standardization::Prewhiten.apply(&im);
        let n = v.len() as f64;
        let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n;
        let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n;
        assert!(mean.abs() < 1e-6, "mean {mean}");
        assert!((var - 1.0).abs() < 1e-5, "var {var}");
    }

    #[test]
    fn prewhiten_of_constant_image_uses_floor_std() {
        // std = 0, so the divisor is 1/sqrt(n) and every value is (x - mean) * sqrt(n) = 0.
        let im = img(4, 4, |_, _, _| 200);
        assert!(
            Standardization::Prewhiten
                .apply(&im)
                .iter()
                .all(|&x| x == 0.0)
        );
    }

    #[test]
    fn fixed_and_unit_by_hand() {
        let im = img(1, 1, |_, _, c| [0u8, 255, 128][c]);
        assert_eq!(
            Standardization::Fixed.apply(&im),
            vec![-127.5 / 128.0, 127.5 / 128.0, 0.5 / 128.0]
        );
        assert_eq!(
            Standardization::Unit.apply(&im),
            vec![0.0, 1.0, 128.0 / 255.0]
        );
    }

    #[test]
    fn output_is_planar_rgb() {
        // A 2x1 image: pixel 0 = (1,2,3), pixel 1 = (4,5,6) -> planes R=[1,4], G=[2,5], B=[3,6].
        let im = img(2, 1, |x, _, c| (x * 3 + c as u32 + 1) as u8);
        let v = Standardization::Unit.apply(&im);
        let back: Vec<u8> = v.iter().map(|x| (x * 255.0).round() as u8).collect();
        assert_eq!(back, vec![1, 4, 2, 5, 3, 6]);
    }

    #[test]
    fn names_round_trip() {
        for s in [
            Standardization::Prewhiten,
            Standardization::Fixed,
            Standardization::Unit,
        ] {
            assert_eq!(Standardization::from_name(s.name()), Some(s));
        }
        assert_eq!(Standardization::from_name("nope"), None);
    }

    #[test]
    fn bad_files_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.jpg");
        std::fs::write(&empty, b"").unwrap();
        let junk = dir.path().join("junk.png");
        std::fs::write(&junk, b"this is not an image at all").unwrap();
        let trunc = dir.path().join("trunc.png");
        let mut bytes = Vec::new();
        img(32, 32, |x, y, c| (x + y + c as u32) as u8)
            .write_to(
                &mut std::io::Cursor::new(&mut bytes),
                image::ImageFormat::Png,
            )
            .unwrap();
        std::fs::write(&trunc, &bytes[..bytes.len() / 2]).unwrap();
        for p in [&empty, &junk, &trunc, &dir.path().to_path_buf()] {
            let err = load_rgb(p).unwrap_err().to_string();
            assert!(err.contains(&p.display().to_string()), "{err}");
        }
        let tiny = dir.path().join("tiny.png");
        img(1, 1, |_, _, _| 9).save(&tiny).unwrap();
        assert!(load_rgb(&tiny).is_ok());
        let err = load_face(&tiny).unwrap_err().to_string();
        assert!(err.contains("tiny.png") && err.contains("1x1"), "{err}");
        let missing = dir.path().join("missing.png");
        assert!(
            load_rgb(&missing)
                .unwrap_err()
                .to_string()
                .contains("missing.png")
        );
    }

    #[test]
    fn exif_orientation_is_applied() {
        // An upright 40x24 image whose left half is dark and right half bright.
        let upright = img(40, 24, |x, _, _| if x < 20 { 20 } else { 230 });
        // Orientation 6: stored turned 90 degrees counter-clockwise, shown turned clockwise.
        let stored6 = image::imageops::rotate270(&upright);
        // Orientation 8: stored turned clockwise, shown turned counter-clockwise.
        let stored8 = image::imageops::rotate90(&upright);
        for (stored, tag) in [(stored6, 6), (stored8, 8), (upright.clone(), 1)] {
            let bytes = jpeg_with_orientation(&stored, tag).unwrap();
            let got = decode_rgb(&bytes, Path::new("phone.jpg")).unwrap();
            assert_eq!(got.dimensions(), (40, 24), "orientation {tag}");
            let (left, right) = (got.get_pixel(5, 12)[0], got.get_pixel(34, 12)[0]);
            assert!(
                left < 60 && right > 190,
                "orientation {tag}: {left} {right}"
            );
        }
        // Bytes with no EXIF block decode as stored.
        let plain = jpeg_with_orientation(&upright, 1).unwrap();
        assert_eq!(
            decode_rgb(&plain, Path::new("p.jpg")).unwrap().dimensions(),
            (40, 24)
        );
        let err = decode_rgb(b"", Path::new("upload `file`")).unwrap_err();
        assert!(err.to_string().contains("upload `file`"), "{err}");
    }

    #[test]
    fn pgm_is_read_as_grey_rgb() {
        let mut pgm = b"P5\n3 2\n255\n".to_vec();
        pgm.extend_from_slice(&[0, 100, 200, 50, 150, 250]);
        let got = decode_rgb(&pgm, Path::new("s1/1.pgm")).unwrap();
        assert_eq!(got.dimensions(), (3, 2));
        assert_eq!(got.get_pixel(1, 0).0, [100, 100, 100]);
    }
}
