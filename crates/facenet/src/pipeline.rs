//! The face pipeline: decode -> detect -> select -> align -> embed, written once for every
//! front (CLI, HTTP service, Python package).
//!
//! ```text
//! facenet embed --detect group.jpg     # every face of a photo, with its box
//! ```
//!
//! A [`FacePipeline`] holds the embedding network and, unless its inputs are already aligned
//! face crops, the MTCNN detector. It takes a path, bytes (an upload) or an RGB image and
//! returns [`Face`]s: box, score, landmarks, the aligned crop and the unit embedding.
//! [`DetectorPool`] runs detection and alignment over many photos on all cores.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use image::RgbImage;

use crate::align::{AlignConfig, AlignMethod, FaceSelection, align, confident, order, select};
use crate::batch::{BatchConfig, BatchSnapshot, Batcher};
use crate::detect::{Detection, Detector};
use crate::embed::Embedder;
pub use crate::error::NoFace;
use crate::error::{Error, Result};
use crate::quality::Quality;

/// One face of a photo.
#[derive(Debug, Clone)]
pub struct Face {
    /// The detection (box, score, landmarks); `None` when the input was an aligned crop.
    pub detection: Option<Detection>,
    /// How usable the face is ([`crate::quality`]); `None` when the input was an aligned crop.
    pub quality: Option<Quality>,
    /// The aligned crop the network saw.
    pub crop: RgbImage,
    /// Unit-length embedding.
    pub embedding: Vec<f32>,
}

/// Which face of a photo to take when one is wanted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FaceChoice {
    /// The face of the photo ([`FaceSelection::Primary`]); a photo with two comparable faces
    /// (both within [`crate::align::SCORE_GAP`] of the best score) is refused as ambiguous.
    #[default]
    Unambiguous,
    /// The face of the photo by [`FaceSelection::Primary`], whatever else is in it.
    Primary,
    /// The largest face.
    Largest,
    /// Face `n` in the order of [`FacePipeline::faces`] ([`crate::align::order`]: 0 is the
    /// face of the photo).
    Index(usize),
}

/// Detect -> select -> align -> embed.
#[derive(Debug)]
pub struct FacePipeline {
    embedder: Arc<Embedder>,
    batcher: Option<Batcher>,
    detector: Option<Detector>,
    align: AlignConfig,
}

impl FacePipeline {
    /// A pipeline over photos (`Some(detector)`) or over aligned face crops (`None`).
    pub fn new(embedder: Embedder, detector: Option<Detector>) -> Self {
        Self {
            embedder: Arc::new(embedder),
            batcher: None,
            detector,
            align: AlignConfig::default(),
        }
    }

    /// Embeds on a worker thread that batches the faces of concurrent callers
    /// ([`crate::batch`]); a full queue makes calls fail with [`Error::Busy`].
    pub fn with_batching(mut self, config: BatchConfig) -> Result<Self> {
        self.batcher = Some(Batcher::start(self.embedder.clone(), config)?);
        Ok(self)
    }

    /// Runs the networks once on a blank image, so that the first request does not pay for
    /// their buffers.
    pub fn warm_up(&self) {
        let blank = RgbImage::new(self.align.size, self.align.size);
        if let Some(det) = &self.detector {
            let _ = det.detect(&blank);
        }
        let _ = self.embed_faces(vec![(None, None, blank)]);
    }

    /// The batching counters, when batching.
    pub fn batch_stats(&self) -> Option<BatchSnapshot> {
        self.batcher.as_ref().map(Batcher::stats)
    }

    /// Replaces the alignment settings (default: crop, margin 32, 160x160).
    pub fn with_align(mut self, align: AlignConfig) -> Self {
        self.align = align;
        self
    }

    /// The embedding network.
    pub fn embedder(&self) -> &Embedder {
        &self.embedder
    }

    /// The detector, absent when inputs are aligned crops.
    pub fn detector(&self) -> Option<&Detector> {
        self.detector.as_ref()
    }

    /// The alignment settings.
    pub fn align_config(&self) -> &AlignConfig {
        &self.align
    }

    /// Reads an image file for this pipeline: a photo, or (without a detector) a face crop of
    /// at least [`crate::image::MIN_FACE_SIDE`] pixels.
    pub fn load(&self, path: &Path) -> Result<RgbImage> {
        let img = crate::image::load_rgb(path)?;
        self.check(img, path)
    }

    /// [`FacePipeline::load`] from bytes (an upload); `label` names it in errors.
    pub fn decode(&self, bytes: &[u8], label: &Path) -> Result<RgbImage> {
        let img = crate::image::decode_rgb(bytes, label)?;
        self.check(img, label)
    }

    fn check(&self, img: RgbImage, label: &Path) -> Result<RgbImage> {
        match self.detector {
            Some(_) => Ok(img),
            None => crate::image::check_face(img, label),
        }
    }

    /// The faces of an image in the order every front lists them ([`crate::align::order`]:
    /// the face of the photo first), without crops or embeddings; empty without a detector.
    pub fn detect(&self, img: &RgbImage) -> Result<Vec<Detection>> {
        let Some(det) = &self.detector else {
            return Ok(Vec::new());
        };
        let mut found = det.detect(img)?;
        order(&mut found, img.width(), img.height());
        Ok(found)
    }

    /// Every face of an image with crops and embeddings (one forward pass for all), in the
    /// order of [`FacePipeline::detect`]. Without a detector the image is the one face.
    pub fn faces(&self, img: &RgbImage) -> Result<Vec<Face>> {
        if self.detector.is_none() {
            return self.embed_faces(vec![(None, None, img.clone())]);
        }
        let found = self.detect(img)?;
        let crops = found
            .into_iter()
            .map(|d| Ok((Some(d), Some(d.quality(img)), align(img, &d, &self.align)?)))
            .collect::<Result<Vec<_>>>()?;
        self.embed_faces(crops)
    }

    /// [`FacePipeline::faces`] of an image file.
    pub fn faces_in_file(&self, path: &Path) -> Result<Vec<Face>> {
        self.faces(&self.load(path)?)
    }

    /// One face of an image, chosen by `choice`; `Err(NoFace)` says why there is none.
    pub fn face(
        &self,
        img: &RgbImage,
        choice: FaceChoice,
    ) -> Result<std::result::Result<Face, NoFace>> {
        if self.detector.is_none() {
            return Ok(Ok(self.faces(img)?.remove(0)));
        }
        let found = self.detect(img)?;
        if found.is_empty() {
            return Ok(Err(NoFace::None));
        }
        let picked = match choice {
            FaceChoice::Index(i) => match found.get(i) {
                Some(d) => *d,
                None => {
                    return Ok(Err(NoFace::NoSuchIndex {
                        index: i,
                        found: found.len(),
                    }));
                }
            },
            FaceChoice::Largest => *found
                .iter()
                .max_by(|a, b| a.area().total_cmp(&b.area()))
                .expect("not empty"),
            FaceChoice::Unambiguous if confident(&found).len() > 1 => {
                return Ok(Err(NoFace::Ambiguous(confident(&found).len())));
            }
            // The face of the photo is the first of the order.
            FaceChoice::Unambiguous | FaceChoice::Primary => found[0],
        };
        let crop = align(img, &picked, &self.align)?;
        let quality = picked.quality(img);
        Ok(Ok(self
            .embed_faces(vec![(Some(picked), Some(quality), crop)])?
            .remove(0)))
    }

    /// [`FacePipeline::face`] of an image file, with a missing face as an error naming it.
    pub fn face_in_file(&self, path: &Path, choice: FaceChoice) -> Result<Face> {
        self.face(&self.load(path)?, choice)?
            .map_err(|why| Error::NoFace {
                path: path.into(),
                why,
            })
    }

    /// Embeds aligned crops (one forward pass per batch).
    fn embed_faces(
        &self,
        faces: Vec<(Option<Detection>, Option<Quality>, RgbImage)>,
    ) -> Result<Vec<Face>> {
        if faces.is_empty() {
            return Ok(Vec::new());
        }
        let mut detections = Vec::with_capacity(faces.len());
        let mut crops = Vec::with_capacity(faces.len());
        for (d, q, c) in faces {
            detections.push((d, q));
            crops.push(c);
        }
        let (crops, embs) = match &self.batcher {
            Some(b) => b.embed(crops)?,
            None => {
                let embs = self.embedder.embed(&crops)?;
                (crops, embs)
            }
        };
        Ok(detections
            .into_iter()
            .zip(crops)
            .zip(embs)
            .map(|(((detection, quality), crop), e)| Face {
                detection,
                quality,
                crop,
                embedding: e.normalized,
            })
            .collect())
    }
}

/// The crop of the central region (a box of half the image's sides), for photos where the
/// detector finds nothing but a face is known to be there (LFW's deep-funneled images are
/// centred on the person).
pub fn centre_crop(img: &RgbImage, cfg: &AlignConfig) -> Result<RgbImage> {
    let (w, h) = (img.width() as f32, img.height() as f32);
    let centre = Detection {
        bbox: [w * 0.25, h * 0.25, w * 0.75, h * 0.75],
        score: 0.0,
        landmarks: [[0.0; 2]; 5],
    };
    let cfg = AlignConfig {
        method: AlignMethod::Crop,
        ..*cfg
    };
    align(img, &centre, &cfg)
}

/// One detector per core, for detection and alignment over many photos (MTCNN runs its own
/// pyramid levels in parallel, but a whole photo per core keeps both cores busy through the
/// sequential R-Net and O-Net stages).
#[derive(Debug)]
pub struct DetectorPool {
    detectors: Vec<Detector>,
}

impl DetectorPool {
    /// `threads` detectors loaded from `mtcnn` (at least one).
    pub fn open(mtcnn: &Path, device: &crate::Device, threads: usize) -> Result<Self> {
        let detectors = (0..threads.max(1))
            .map(|_| Detector::open(mtcnn, device))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { detectors })
    }

    /// Gives every detector of the pool these settings.
    pub fn with_config(mut self, config: crate::detect::MtcnnConfig) -> Self {
        self.detectors = self
            .detectors
            .into_iter()
            .map(|d| d.with_config(config.clone()))
            .collect();
        self
    }

    /// The detectors' settings.
    pub fn config(&self) -> &crate::detect::MtcnnConfig {
        self.detectors[0].config()
    }

    /// Number of workers.
    pub fn len(&self) -> usize {
        self.detectors.len()
    }

    /// Whether the pool is empty (never: it holds at least one detector).
    pub fn is_empty(&self) -> bool {
        self.detectors.is_empty()
    }

    /// `f(detector, item)` for every item, spread over the detectors; results in item order.
    /// `done` is called after each item (progress).
    pub fn map<T: Sync, R: Send>(
        &self,
        items: &[T],
        f: impl Fn(&Detector, &T) -> R + Sync,
        done: &(dyn Fn() + Sync),
    ) -> Vec<R> {
        let next = AtomicUsize::new(0);
        let slots: Vec<Mutex<Option<R>>> = items.iter().map(|_| Mutex::new(None)).collect();
        std::thread::scope(|s| {
            for det in &self.detectors {
                s.spawn(|| {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(item) = items.get(i) else { break };
                        let r = f(det, item);
                        if let Ok(mut slot) = slots[i].lock() {
                            *slot = Some(r);
                        }
                        done();
                    }
                });
            }
        });
        slots
            .into_iter()
            .map(|m| {
                // Every index below items.len() was taken by exactly one worker, which
                // filled its slot before taking the next (a worker that panicked has
                // already propagated the panic out of the scope).
                m.into_inner()
                    .ok()
                    .flatten()
                    .expect("every slot is filled by the scope above")
            })
            .collect()
    }
}

/// What [`align_dataset`] did with one photo.
#[derive(Debug)]
pub enum AlignOutcome {
    /// Faces written (their number).
    Aligned(usize),
    /// The output was already there (a resumed run).
    AlreadyDone,
    /// No face in the photo.
    NoFace,
    /// The photo could not be read, or an output not written.
    Failed(Error),
}

/// Aligns a `person/photo` dataset into `output` (the same `person/` folders, faces as PNG,
/// `name.png`, or `name_K.png` with [`FaceSelection::All`]), skipping photos whose output
/// exists (so an interrupted run resumes), writing each face atomically. Returns the outcome
/// of each `(person, photo)` in order.
pub fn align_dataset(
    pool: &DetectorPool,
    files: &[(String, PathBuf)],
    output: &Path,
    cfg: &AlignConfig,
    selection: FaceSelection,
    done: &(dyn Fn() + Sync),
) -> Vec<AlignOutcome> {
    pool.map(
        files,
        |detector, (person, path)| {
            let stem = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            let dir = output.join(person);
            let single = dir.join(format!("{stem}.png"));
            if single.exists() || dir.join(format!("{stem}_0.png")).exists() {
                return AlignOutcome::AlreadyDone;
            }
            let result = (|| -> Result<usize> {
                let img = crate::image::load_rgb(path)?;
                let faces = detector.detect(&img)?;
                let picked = select(&faces, img.width(), img.height(), selection);
                for (k, face) in picked.iter().enumerate() {
                    let dest = if selection == FaceSelection::All {
                        dir.join(format!("{stem}_{k}.png"))
                    } else {
                        single.clone()
                    };
                    crate::files::save_image_atomic(&align(&img, face, cfg)?, &dest)?;
                }
                Ok(picked.len())
            })();
            match result {
                Ok(0) => AlignOutcome::NoFace,
                Ok(n) => AlignOutcome::Aligned(n),
                Err(e) => AlignOutcome::Failed(e),
            }
        },
        done,
    )
}
