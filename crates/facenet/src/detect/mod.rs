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

use crate::error::{Error, Result};
use crate::model::mtcnn::{Mtcnn, face_probability};
use bbox::{Candidate, Overlap, fix, nms, pad, regress, square};
use resize::resize_area;

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
    /// Box area in pixels.
    pub fn area(&self) -> f32 {
        (self.bbox[2] - self.bbox[0]) * (self.bbox[3] - self.bbox[1])
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
    device: Device,
    config: MtcnnConfig,
}

/// An RGB image as interleaved f64 (HWC), the cascade's working format.
struct Pixels {
    w: usize,
    h: usize,
    data: Vec<f64>,
}

const MEAN: f64 = 127.5;
const SCALE: f64 = 0.0078125;

impl Detector {
    /// Loads the networks from a safetensors file written by `facenet fetch`.
    pub fn open(path: &Path, device: &Device) -> Result<Self> {
        let mut nets = Mtcnn::new(device);
        let bad = |reason: String| Error::Weights {
            path: path.into(),
            reason,
        };
        if !path.is_file() {
            return Err(Error::io(
                path,
                std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
            ));
        }
        let mut store = SafetensorsStore::from_file(path).allow_partial(true);
        let r = nets
            .load_from(&mut store)
            .map_err(|e| bad(format!("cannot read tensors: {e}")))?;
        crate::weights::check_applied(&r).map_err(bad)?;
        Ok(Self::new(nets, device.clone(), MtcnnConfig::default()))
    }

    /// Wraps networks already in memory.
    pub fn new(nets: Mtcnn, device: Device, config: MtcnnConfig) -> Self {
        Self {
            nets,
            device,
            config,
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

    /// Finds every face, best score first after the final NMS.
    pub fn detect(&self, img: &RgbImage) -> Result<Vec<Detection>> {
        Ok(self.detect_traced(img)?.0)
    }

    /// [`Detector::detect`], also returning the boxes passed between stages.
    pub fn detect_traced(&self, img: &RgbImage) -> Result<(Vec<Detection>, Trace)> {
        let (w, h) = (img.width() as usize, img.height() as usize);
        let px = Pixels {
            w,
            h,
            data: img.as_raw().iter().map(|&v| v as f64).collect(),
        };
        let mut trace = Trace {
            scales: self.config.pyramid_scales(w, h),
            ..Trace::default()
        };
        let t = self.config.thresholds;

        // Stage 1: P-Net over the pyramid.
        let mut total = Vec::new();
        for &scale in &trace.scales {
            let hs = (h as f64 * scale).ceil() as usize;
            let ws = (w as f64 * scale).ceil() as usize;
            let mut level = resize_area(&px.data, w, h, 3, ws, hs);
            // The pyramid is resized as uint8 (rounded, saturated).
            for v in level.iter_mut() {
                *v = v.round_ties_even().clamp(0.0, 255.0);
            }
            let input = self.to_tensor(&level, 1, hs, ws);
            let (logits, reg) = self.nets.pnet.forward_logits(input);
            let [_, _, mh, mw] = logits.dims();
            let logits = to_vec(logits)?;
            let plane = mh * mw;
            let prob: Vec<f64> = (0..plane)
                .map(|i| face_probability(logits[i], logits[plane + i]))
                .collect();
            let reg = to_vec(reg)?;
            let boxes = bbox::generate(&prob, &reg, mh, mw, scale, t[0]);
            let pick = nms(&boxes, self.config.nms_pnet_scale, Overlap::Union);
            total.extend(pick.into_iter().map(|i| boxes[i]));
        }
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
        let (input, kept) = self.crops(&px, &boxes, 24);
        if kept.is_empty() {
            return Ok((Vec::new(), trace));
        }
        let (logits, reg) = self.nets.rnet.forward_logits(input);
        let (prob, reg) = (probabilities(logits)?, to_vec(reg)?);
        let mut cands: Vec<Candidate> = kept
            .iter()
            .enumerate()
            .filter(|(k, _)| prob[*k] > t[1])
            .map(|(k, &i)| Candidate {
                bbox: boxes[i],
                score: prob[k],
                reg: std::array::from_fn(|j| reg[k * 4 + j] as f64),
            })
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
        let (input, kept) = self.crops(&px, &boxes, 48);
        if kept.is_empty() {
            return Ok((Vec::new(), trace));
        }
        let (logits, reg, marks) = self.nets.onet.forward_logits(input);
        let (prob, reg, marks) = (probabilities(logits)?, to_vec(reg)?, to_vec(marks)?);
        let mut faces: Vec<(Candidate, [[f64; 2]; 5])> = Vec::new();
        for (k, &i) in kept.iter().enumerate() {
            if prob[k] <= t[2] {
                continue;
            }
            let b = boxes[i];
            let bw = b[2] - b[0] + 1.0;
            let bh = b[3] - b[1] + 1.0;
            let m = &marks[k * 10..k * 10 + 10];
            let lm = std::array::from_fn(|p| {
                [
                    bw * m[p] as f64 + b[0] - 1.0,
                    bh * m[5 + p] as f64 + b[1] - 1.0,
                ]
            });
            let mut c = Candidate {
                bbox: b,
                score: prob[k],
                reg: std::array::from_fn(|j| reg[k * 4 + j] as f64),
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

    /// Zero-padded crops of `boxes`, resized to `size`, standardized, as one batch. Returns the
    /// batch and the indices of the boxes it holds (boxes of zero size are skipped).
    fn crops(&self, px: &Pixels, boxes: &[[f64; 4]], size: usize) -> (Tensor<4>, Vec<usize>) {
        let mut data = Vec::with_capacity(boxes.len() * size * size * 3);
        let mut kept = Vec::new();
        for (i, b) in boxes.iter().enumerate() {
            let Some(p) = pad(b, px.w, px.h) else {
                continue;
            };
            let mut tmp = vec![0f64; p.tmp_w * p.tmp_h * 3];
            let rows = p.src[3] - p.src[1];
            let cols = p.src[2] - p.src[0];
            for r in 0..rows {
                let s = ((p.src[1] + r) * px.w + p.src[0]) * 3;
                let d = ((p.dst[1] + r) * p.tmp_w + p.dst[0]) * 3;
                tmp[d..d + cols * 3].copy_from_slice(&px.data[s..s + cols * 3]);
            }
            data.extend(resize_area(&tmp, p.tmp_w, p.tmp_h, 3, size, size));
            kept.push(i);
        }
        let n = kept.len();
        (self.to_tensor(&data, n.max(1), size, size), kept)
    }

    /// Interleaved HWC images (already at the network size) to a standardized NCHW tensor.
    fn to_tensor(&self, hwc: &[f64], n: usize, h: usize, w: usize) -> Tensor<4> {
        let plane = h * w;
        let mut out = vec![0f32; n * 3 * plane];
        for b in 0..n {
            for i in 0..plane {
                for c in 0..3 {
                    let v = hwc.get((b * plane + i) * 3 + c).copied().unwrap_or(MEAN);
                    out[(b * 3 + c) * plane + i] = ((v - MEAN) * SCALE) as f32;
                }
            }
        }
        Tensor::from_data(TensorData::new(out, [n, 3, h, w]), &self.device)
    }
}

/// Face probabilities of `[b, 2]` logits.
fn probabilities(logits: Tensor<2>) -> Result<Vec<f64>> {
    Ok(to_vec(logits)?
        .chunks_exact(2)
        .map(|l| face_probability(l[0], l[1]))
        .collect())
}

fn to_vec<const D: usize>(t: Tensor<D>) -> Result<Vec<f32>> {
    t.into_data()
        .try_into_vec::<f32>()
        .map_err(|e| Error::InvalidArgument {
            field: "tensor",
            reason: format!("{e:?}"),
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
        );
        let img = RgbImage::from_pixel(40, 30, image::Rgb([128, 128, 128]));
        let _ = det.detect(&img).unwrap();
        let tiny = RgbImage::from_pixel(1, 1, image::Rgb([0, 0, 0]));
        assert!(det.detect(&tiny).unwrap().is_empty());
    }
}
