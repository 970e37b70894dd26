//! Face detection: the MTCNN cascade (image pyramid -> P-Net -> R-Net -> O-Net).
//!
//! Follows davidsandberg/facenet `src/align/detect_face.py` step by step (the pipeline the
//! pretrained FaceNet models were aligned with): OpenCV `INTER_AREA` resizing ([`resize`]),
//! the pyramid `m * factor^k` with `m = 12 / min_face_size`, NMS per scale (0.5, union) and
//! across scales (0.7, union), box regression, squaring, zero padding at the borders, R-Net
//! (threshold 0.7, NMS 0.7 union) and O-Net (threshold 0.7, landmarks, NMS 0.7 "min").
//!
//! ```text
//! facenet detect --json photo.jpg
//! ```

pub mod bbox;
pub mod resize;

use std::path::Path;

use burn::store::{ModuleSnapshot, SafetensorsStore};
use burn::tensor::{Device, Tensor, TensorData};
use image::RgbImage;
use serde::{Deserialize, Serialize};

use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::fast::{FastMtcnn, ONET_OUT, PNET_OUT, RNET_OUT};
use crate::model::mtcnn::{Mtcnn, face_probability};
use bbox::{Candidate, Overlap, fix, nms, pad, regress, square};
use rayon::prelude::*;

/// Settings of the cascade; the defaults are MTCNN's published ones.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MtcnnConfig {
    /// Smallest face to find, in pixels.
    pub min_face_size: f64,
    /// Pyramid scale step.
    pub factor: f64,
    /// Score thresholds of P-Net, R-Net and O-Net.
    pub thresholds: [f64; 3],
    /// NMS IoU within one pyramid level (union).
    pub nms_pnet_scale: f64,
    /// NMS IoU across pyramid levels (union).
    pub nms_pnet_all: f64,
    /// NMS IoU after R-Net (union).
    pub nms_rnet: f64,
    /// NMS overlap after O-Net ("min": intersection over the smaller box).
    pub nms_onet: f64,
    /// What to try when the cascade finds nothing; `None` accepts the miss.
    #[serde(default)]
    pub rescue: Option<Rescue>,
}

/// A second look at a photo where the cascade found no face.
///
/// Faces that fill the frame (face crops, CFP-style tight photos) and profiles are what
/// MTCNN misses at its published settings: P-Net's 12x12 window needs context around the
/// face, and a profile scores below the 0.7 of R-Net and O-Net. The rescue pads the photo with
/// black on every side by each of `pads` (a fraction of the longer side) in turn and runs the
/// cascade again at `thresholds`, stopping at the first pad where a face is found. Boxes and
/// landmarks come back in the photo's own coordinates (they may reach past its edges). It
/// costs nothing on photos where a face is found at once.
///
/// Measured on the 1,000 profiles of the CFP development half (`bench recall`): 48 without a
/// face at the published settings, 2 with the default rescue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rescue {
    /// Padding on each side, as fractions of the photo's longer side, tried in order.
    pub pads: Vec<f64>,
    /// Score thresholds of P-Net, R-Net and O-Net for the second look.
    pub thresholds: [f64; 3],
}

impl Default for Rescue {
    fn default() -> Self {
        Self {
            pads: vec![0.2, 0.3],
            thresholds: [0.3, 0.3, 0.3],
        }
    }
}

impl Default for MtcnnConfig {
    fn default() -> Self {
        Self {
            min_face_size: 20.0,
            factor: 0.709,
            thresholds: [0.6, 0.7, 0.7],
            nms_pnet_scale: 0.5,
            nms_pnet_all: 0.7,
            nms_rnet: 0.7,
            nms_onet: 0.7,
            rescue: Some(Rescue::default()),
        }
    }
}

impl MtcnnConfig {
    /// Pyramid scales for a `w`x`h` image: `m * factor^k` while `min(w, h) * scale >= 12`.
    pub fn pyramid_scales(&self, w: usize, h: usize) -> Vec<f64> {
        let m = 12.0 / self.min_face_size;
        let mut minl = w.min(h) as f64 * m;
        let mut scales = Vec::new();
        let mut k = 0;
        while minl >= 12.0 {
            scales.push(m * self.factor.powf(k as f64));
            minl *= self.factor;
            k += 1;
        }
        scales
    }
}

/// One detected face.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Detection {
    /// `[x1, y1, x2, y2]` in pixels (not clipped to the image).
    pub bbox: [f32; 4],
    /// O-Net face probability.
    pub score: f32,
    /// Left eye, right eye, nose, left and right mouth corners (`[x, y]`, image left/right).
    pub landmarks: [[f32; 2]; 5],
}

impl Detection {
    /// How usable this face of `img` is for recognition ([`crate::quality`]).
    pub fn quality(&self, img: &RgbImage) -> crate::quality::Quality {
        crate::quality::measure(img, self.bbox, self.score, &self.landmarks)
    }

    /// Box area in pixels.
    pub fn area(&self) -> f32 {
        (self.bbox[2] - self.bbox[0]) * (self.bbox[3] - self.bbox[1])
    }
}

impl std::fmt::Display for Detection {
    /// `box [x1, y1, x2, y2] score s eyes (x,y) (x,y)`, as `facenet detect` prints it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (b, l) = (self.bbox, self.landmarks);
        write!(
            f,
            "box [{:.1}, {:.1}, {:.1}, {:.1}] score {:.4} eyes ({:.0},{:.0}) ({:.0},{:.0})",
            b[0], b[1], b[2], b[3], self.score, l[0][0], l[0][1], l[1][0], l[1][1]
        )
    }
}

/// Boxes handed from one stage to the next, for inspection and tests.
#[derive(Debug, Clone, Default)]
pub struct Trace {
    /// Pyramid scales used.
    pub scales: Vec<f64>,
    /// Boxes fed to R-Net (after P-Net, NMS, regression, squaring, truncation).
    pub rnet_input: Vec<[f64; 4]>,
    /// Boxes fed to O-Net.
    pub onet_input: Vec<[f64; 4]>,
}

/// The MTCNN face detector.
#[derive(Debug)]
pub struct Detector {
    nets: Mtcnn,
    /// The networks compiled for the CPU ([`FastMtcnn`]); `None` runs the burn modules.
    fast: Option<FastMtcnn>,
    device: Device,
    config: MtcnnConfig,
}

/// An RGB image, interleaved (HWC).
struct Pixels<'a> {
    w: usize,
    h: usize,
    data: &'a [u8],
}

const MEAN: f64 = 127.5;
const SCALE: f64 = 0.0078125;

/// Crops per task when R-Net and O-Net run on the fast path: enough rows for efficient
/// products, small enough to spread a few dozen boxes over the cores.
const CROPS_PER_TASK: usize = 16;

/// The refinement stages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// R-Net, 24x24 crops.
    R,
    /// O-Net, 48x48 crops.
    O,
}

impl Stage {
    fn size(self) -> usize {
        match self {
            Stage::R => 24,
            Stage::O => 48,
        }
    }

    /// Values per crop: logits (2), box offsets (4) and for O-Net landmarks (10).
    fn width(self) -> usize {
        match self {
            Stage::R => RNET_OUT,
            Stage::O => ONET_OUT,
        }
    }
}

impl Detector {
    /// Loads the networks from a safetensors file written by `facenet fetch`.
    pub fn open(path: &Path, device: &Device) -> Result<Self> {
        let mut nets = Mtcnn::new(device);
        if !path.is_file() {
            return Err(Error::io(
                path,
                std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
            ));
        }
        let mut store = SafetensorsStore::from_file(path).allow_partial(true);
        let r = nets.load_from(&mut store).map_err(|source| Error::Store {
            path: path.into(),
            source: Box::new(source),
        })?;
        crate::weights::check_applied(&r, path)?;
        Self::new(nets, device.clone(), MtcnnConfig::default())
    }

    /// Wraps networks already in memory. On the CPU they are also compiled for the fast path
    /// ([`Engine::Auto`]).
    pub fn new(nets: Mtcnn, device: Device, config: MtcnnConfig) -> Result<Self> {
        let fast = if device == Device::flex() {
            Some(FastMtcnn::compile(&nets)?)
        } else {
            None
        };
        Ok(Self {
            nets,
            fast,
            device,
            config,
        })
    }

    /// Chooses the implementation of the networks (see [`Engine`]).
    pub fn with_engine(mut self, engine: Engine) -> Result<Self> {
        self.fast = match (engine, self.fast.take()) {
            (Engine::Burn, _) => None,
            (Engine::Auto, Some(fast)) => Some(fast),
            (Engine::Auto, None) if self.device == Device::flex() => {
                Some(FastMtcnn::compile(&self.nets)?)
            }
            (Engine::Auto, None) => None,
        };
        Ok(self)
    }

    /// The implementation in use.
    pub fn engine(&self) -> &'static str {
        if self.fast.is_some() {
            "fast (NHWC, gemm, parallel pyramid)"
        } else {
            "burn"
        }
    }

    /// Replaces the settings.
    pub fn with_config(mut self, config: MtcnnConfig) -> Self {
        self.config = config;
        self
    }

    /// The settings.
    pub fn config(&self) -> &MtcnnConfig {
        &self.config
    }

    /// Finds every face, best score first after the final NMS. Where the cascade finds none,
    /// the configured [`Rescue`] looks again.
    pub fn detect(&self, img: &RgbImage) -> Result<Vec<Detection>> {
        let found = self.detect_traced(img)?.0;
        match &self.config.rescue {
            Some(rescue) if found.is_empty() => self.rescue(img, rescue),
            _ => Ok(found),
        }
    }

    /// The second look of [`Rescue`]: the photo padded by each of its pads in turn.
    fn rescue(&self, img: &RgbImage, rescue: &Rescue) -> Result<Vec<Detection>> {
        let longer = img.width().max(img.height()) as f64;
        for &frac in &rescue.pads {
            let p = (longer * frac).round().max(1.0) as u32;
            let mut padded = RgbImage::new(img.width() + 2 * p, img.height() + 2 * p);
            image::imageops::replace(&mut padded, img, p as i64, p as i64);
            let found = self.cascade(&padded, rescue.thresholds)?.0;
            if !found.is_empty() {
                let shift = p as f32;
                return Ok(found
                    .into_iter()
                    .map(|mut d| {
                        d.bbox = d.bbox.map(|v| v - shift);
                        d.landmarks = d.landmarks.map(|l| l.map(|v| v - shift));
                        d
                    })
                    .collect());
            }
        }
        Ok(Vec::new())
    }

    /// The cascade alone at the configured settings (no [`Rescue`]), also returning the boxes
    /// passed between stages.
    pub fn detect_traced(&self, img: &RgbImage) -> Result<(Vec<Detection>, Trace)> {
        self.cascade(img, self.config.thresholds)
    }

    fn cascade(&self, img: &RgbImage, t: [f64; 3]) -> Result<(Vec<Detection>, Trace)> {
        let (w, h) = (img.width() as usize, img.height() as usize);
        let px = Pixels {
            w,
            h,
            data: img.as_raw(),
        };
        let mut trace = Trace {
            scales: self.config.pyramid_scales(w, h),
            ..Trace::default()
        };

        // Stage 1: P-Net over the pyramid, resized in one pass over the photo. On the fast
        // path the levels run in parallel (each on one thread); their areas halve, so two cores
        // split the work about evenly.
        let sizes: Vec<(usize, usize)> = trace
            .scales
            .iter()
            .map(|&s| {
                (
                    (w as f64 * s).ceil() as usize,
                    (h as f64 * s).ceil() as usize,
                )
            })
            .collect();
        let pyramid = match &self.fast {
            Some(_) => pyramid_parallel(px.data, w, h, &sizes),
            None => resize::pyramid_rgb(px.data, w, h, &sizes),
        };
        let work: Vec<(f64, (usize, usize), &Vec<u8>)> = trace
            .scales
            .iter()
            .zip(&sizes)
            .zip(&pyramid)
            .map(|((&s, &size), level)| (s, size, level))
            .collect();
        let levels: Vec<Vec<Candidate>> = match &self.fast {
            Some(fast) => work
                .par_iter()
                .map(|&(scale, size, level)| self.pnet_level(level, size, scale, t[0], Some(fast)))
                .collect::<Result<_>>()?,
            None => work
                .iter()
                .map(|&(scale, size, level)| self.pnet_level(level, size, scale, t[0], None))
                .collect::<Result<_>>()?,
        };
        let total: Vec<Candidate> = levels.into_iter().flatten().collect();
        if total.is_empty() {
            return Ok((Vec::new(), trace));
        }
        let pick = nms(&total, self.config.nms_pnet_all, Overlap::Union);
        let mut boxes: Vec<[f64; 4]> = pick
            .into_iter()
            .map(|i| {
                let mut c = total[i];
                regress(&mut c, false);
                square(&mut c.bbox);
                fix(&mut c.bbox);
                c.bbox
            })
            .collect();
        trace.rnet_input = boxes.clone();

        // Stage 2: R-Net on 24x24 crops.
        let (out, kept) = self.refine(&px, &boxes, Stage::R)?;
        let s = Stage::R.width();
        let mut cands: Vec<Candidate> = kept
            .iter()
            .enumerate()
            .map(|(k, &i)| Candidate {
                bbox: boxes[i],
                score: face_probability(out[k * s], out[k * s + 1]),
                reg: std::array::from_fn(|j| out[k * s + 2 + j] as f64),
            })
            .filter(|c| c.score > t[1])
            .collect();
        let pick = nms(&cands, self.config.nms_rnet, Overlap::Union);
        cands = pick.into_iter().map(|i| cands[i]).collect();
        boxes = cands
            .iter_mut()
            .map(|c| {
                regress(c, true);
                square(&mut c.bbox);
                fix(&mut c.bbox);
                c.bbox
            })
            .collect();
        trace.onet_input = boxes.clone();
        if boxes.is_empty() {
            return Ok((Vec::new(), trace));
        }

        // Stage 3: O-Net on 48x48 crops.
        let (out, kept) = self.refine(&px, &boxes, Stage::O)?;
        let s = Stage::O.width();
        let mut faces: Vec<(Candidate, [[f64; 2]; 5])> = Vec::new();
        for (k, &i) in kept.iter().enumerate() {
            let o = &out[k * s..(k + 1) * s];
            let score = face_probability(o[0], o[1]);
            if score <= t[2] {
                continue;
            }
            let b = boxes[i];
            let bw = b[2] - b[0] + 1.0;
            let bh = b[3] - b[1] + 1.0;
            let m = &o[6..16];
            let lm = std::array::from_fn(|p| {
                [
                    bw * m[p] as f64 + b[0] - 1.0,
                    bh * m[5 + p] as f64 + b[1] - 1.0,
                ]
            });
            let mut c = Candidate {
                bbox: b,
                score,
                reg: std::array::from_fn(|j| o[2 + j] as f64),
            };
            regress(&mut c, true);
            faces.push((c, lm));
        }
        let cands: Vec<Candidate> = faces.iter().map(|f| f.0).collect();
        let pick = nms(&cands, self.config.nms_onet, Overlap::Min);
        let dets = pick
            .into_iter()
            .map(|i| {
                let (c, lm) = faces[i];
                Detection {
                    bbox: c.bbox.map(|v| v as f32),
                    score: c.score as f32,
                    landmarks: lm.map(|p| p.map(|v| v as f32)),
                }
            })
            .collect();
        Ok((dets, trace))
    }

    /// One pyramid level (8-bit RGB, `(ws, hs)`): P-Net, candidate boxes above the threshold,
    /// NMS.
    fn pnet_level(
        &self,
        level: &[u8],
        (ws, hs): (usize, usize),
        scale: f64,
        threshold: f64,
        fast: Option<&FastMtcnn>,
    ) -> Result<Vec<Candidate>> {
        let (mh, mw, prob, reg): (usize, usize, Vec<f64>, Vec<f32>) = match fast {
            Some(fast) => {
                let (mh, mw, cells) = fast.pnet_rgb8(level, hs, ws, |v| standardize(v as f64))?;
                let plane = mh * mw;
                let mut reg = vec![0f32; 4 * plane];
                let prob = cells
                    .chunks_exact(PNET_OUT)
                    .enumerate()
                    .map(|(i, cell)| {
                        for c in 0..4 {
                            reg[c * plane + i] = cell[2 + c];
                        }
                        face_probability(cell[0], cell[1])
                    })
                    .collect();
                (mh, mw, prob, reg)
            }
            None => {
                let input: Vec<f32> = level.iter().map(|&v| standardize(v as f64)).collect();
                let (logits, reg) = self.nets.pnet.forward_logits(self.nchw(&input, 1, hs, ws));
                let [_, _, mh, mw] = logits.dims();
                let logits = to_vec(logits)?;
                let plane = mh * mw;
                let prob = (0..plane)
                    .map(|i| face_probability(logits[i], logits[plane + i]))
                    .collect();
                (mh, mw, prob, to_vec(reg)?)
            }
        };
        let boxes = bbox::generate(&prob, &reg, mh, mw, scale, threshold);
        let pick = nms(&boxes, self.config.nms_pnet_scale, Overlap::Union);
        Ok(pick.into_iter().map(|i| boxes[i]).collect())
    }

    /// R-Net or O-Net on crops of `boxes`: per kept box ([`Stage::width`] values each, logits
    /// first) and the indices of the boxes kept (boxes of zero size are skipped).
    fn refine(
        &self,
        px: &Pixels,
        boxes: &[[f64; 4]],
        stage: Stage,
    ) -> Result<(Vec<f32>, Vec<usize>)> {
        let size = stage.size();
        if let Some(fast) = &self.fast {
            let parts = boxes
                .par_chunks(CROPS_PER_TASK)
                .enumerate()
                .map(|(ci, chunk)| {
                    let (data, kept) = crops(px, chunk, size);
                    let out = match stage {
                        Stage::R => fast.rnet(&data, kept.len())?,
                        Stage::O => fast.onet(&data, kept.len())?,
                    };
                    Ok((out, kept.into_iter().map(move |k| ci * CROPS_PER_TASK + k)))
                })
                .collect::<Result<Vec<_>>>()?;
            let mut out = Vec::new();
            let mut kept = Vec::new();
            for (o, k) in parts {
                out.extend(o);
                kept.extend(k);
            }
            return Ok((out, kept));
        }
        let (data, kept) = crops(px, boxes, size);
        if kept.is_empty() {
            return Ok((Vec::new(), kept));
        }
        let input = self.nchw(&data, kept.len(), size, size);
        let parts = match stage {
            Stage::R => {
                let (logits, reg) = self.nets.rnet.forward_logits(input);
                vec![(to_vec(logits)?, 2), (to_vec(reg)?, 4)]
            }
            Stage::O => {
                let (logits, reg, marks) = self.nets.onet.forward_logits(input);
                vec![
                    (to_vec(logits)?, 2),
                    (to_vec(reg)?, 4),
                    (to_vec(marks)?, 10),
                ]
            }
        };
        let mut out = Vec::with_capacity(kept.len() * stage.width());
        for k in 0..kept.len() {
            for (v, n) in &parts {
                out.extend_from_slice(&v[k * n..(k + 1) * n]);
            }
        }
        Ok((out, kept))
    }

    /// Interleaved HWC images to an NCHW tensor.
    fn nchw(&self, hwc: &[f32], n: usize, h: usize, w: usize) -> Tensor<4> {
        let plane = h * w;
        let mut out = vec![0f32; n * 3 * plane];
        for b in 0..n {
            for i in 0..plane {
                for c in 0..3 {
                    out[(b * 3 + c) * plane + i] = hwc[(b * plane + i) * 3 + c];
                }
            }
        }
        Tensor::from_data(TensorData::new(out, [n, 3, h, w]), &self.device)
    }
}

/// [`resize::pyramid_rgb`] with the levels shared among the cores: each core makes a group of
/// levels in its own pass over the photo, the groups balanced by the levels' widths (the cost
/// of a level per source row), largest first to the least loaded.
fn pyramid_parallel(src: &[u8], w: usize, h: usize, sizes: &[(usize, usize)]) -> Vec<Vec<u8>> {
    let groups = rayon::current_num_threads().clamp(1, sizes.len().max(1));
    let mut order: Vec<usize> = (0..sizes.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(sizes[i].0));
    let mut members: Vec<Vec<usize>> = vec![Vec::new(); groups];
    let mut load = vec![0usize; groups];
    for i in order {
        let g = (0..groups).min_by_key(|&g| load[g]).unwrap_or(0);
        load[g] += sizes[i].0;
        members[g].push(i);
    }
    let made: Vec<(Vec<usize>, Vec<Vec<u8>>)> = members
        .into_par_iter()
        .map(|m| {
            let subset: Vec<(usize, usize)> = m.iter().map(|&i| sizes[i]).collect();
            let levels = resize::pyramid_rgb(src, w, h, &subset);
            (m, levels)
        })
        .collect();
    let mut out: Vec<Vec<u8>> = vec![Vec::new(); sizes.len()];
    for (m, levels) in made {
        for (i, level) in m.into_iter().zip(levels) {
            out[i] = level;
        }
    }
    out
}

fn standardize(v: f64) -> f32 {
    ((v - MEAN) * SCALE) as f32
}

/// Zero-padded crops of `boxes`, resized to `size`x`size` and standardized, interleaved one
/// after another, with the indices of the boxes they hold (boxes of zero size are skipped).
fn crops(px: &Pixels, boxes: &[[f64; 4]], size: usize) -> (Vec<f32>, Vec<usize>) {
    let mut data = Vec::with_capacity(boxes.len() * size * size * 3);
    let mut kept = Vec::new();
    let mut crop = vec![0f64; size * size * 3];
    for (i, b) in boxes.iter().enumerate() {
        let Some(p) = pad(b, px.w, px.h) else {
            continue;
        };
        // The box's pixels, zero outside the image, row by row.
        let cols = p.src[2] - p.src[0];
        resize::resize_rgb8(p.tmp_w, p.tmp_h, size, size, &mut crop, |y| {
            (y >= p.dst[1] && y < p.dst[1] + (p.src[3] - p.src[1])).then(|| {
                let s = ((p.src[1] + y - p.dst[1]) * px.w + p.src[0]) * 3;
                (p.dst[0], &px.data[s..s + cols * 3])
            })
        });
        data.extend(crop.iter().map(|&v| standardize(v)));
        kept.push(i);
    }
    (data, kept)
}

fn to_vec<const D: usize>(t: Tensor<D>) -> Result<Vec<f32>> {
    t.into_data()
        .try_into_vec::<f32>()
        .map_err(|source| Error::Data {
            what: "an MTCNN output".into(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pyramid_scales_by_hand() {
        // 200x300 photo (shared/reference mtcnn.json, ben_afflek_1): 0.6 * 0.709^k, 7 levels.
        let s = MtcnnConfig::default().pyramid_scales(200, 300);
        let want = [
            0.6, 0.4254, 0.3016086, 0.2138405, 0.1516129, 0.1074936, 0.0762129,
        ];
        assert_eq!(s.len(), want.len());
        for (a, b) in s.iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "{a} vs {b}");
        }
        // Too small for one 12x12 cell at min face 20: none.
        assert!(MtcnnConfig::default().pyramid_scales(19, 100).is_empty());
    }

    #[test]
    fn random_weights_run_on_blank_and_tiny_images() {
        let det = Detector::new(
            Mtcnn::new(&Device::flex()),
            Device::flex(),
            MtcnnConfig::default(),
        )
        .unwrap();
        let img = RgbImage::from_pixel(40, 30, image::Rgb([128, 128, 128]));
        let _ = det.detect(&img).unwrap();
        let tiny = RgbImage::from_pixel(1, 1, image::Rgb([0, 0, 0]));
        assert!(det.detect(&tiny).unwrap().is_empty());
    }
}
