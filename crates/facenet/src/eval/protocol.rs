//! The pairs protocol (LFW's): find each image of a pairs file, detect and align it (or take
//! it as an aligned crop), embed it once, cache the embeddings, and score the pairs by folds.
//!
//! ```text
//! facenet evaluate --pairs lfw-protocol/pairs.txt --images lfw/ --out report/
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::align::{AlignConfig, FaceSelection, align, select};
use crate::embed::{Distance, Embedder, l2_normalize};
use crate::error::{Error, Result};
use crate::eval::metrics::{self, Evaluation};
use crate::eval::{Pair, Pairs};
use crate::pipeline::{DetectorPool, centre_crop};

/// Settings of a protocol run.
#[derive(Debug, Clone)]
pub struct ProtocolConfig {
    /// Image folder (`person/person_0001.jpg`).
    pub images: PathBuf,
    /// The images are aligned crops: no detection.
    pub aligned: bool,
    /// Alignment of detected faces.
    pub align: AlignConfig,
    /// Which face of a photo with several.
    pub selection: FaceSelection,
    /// Also embed the mirrored face and concatenate (davidsandberg's `--use_flipped_images`).
    pub flip: bool,
    /// The distance the pairs are scored by.
    pub metric: Distance,
    /// Target false accept rate of VAL@FAR.
    pub far: f64,
    /// Pairs with a missing image are skipped (and counted) instead of failing the run.
    pub skip_missing: bool,
    /// Embedding cache folder; `None` caches nothing.
    pub cache: Option<PathBuf>,
}

impl ProtocolConfig {
    /// The settings LFW is evaluated with by default (`facenet evaluate`'s defaults): faces
    /// detected under `images`, cropped with a 32-pixel margin to 160x160, the centre-most face
    /// of a photo, no mirrored copy, L2 distance, VAL at FAR 1e-3, missing images skipped, no
    /// cache.
    pub fn lfw(images: PathBuf) -> Self {
        Self {
            images,
            aligned: false,
            align: AlignConfig {
                method: crate::align::AlignMethod::Crop,
                size: 160,
                margin: 32,
            },
            selection: FaceSelection::CenterWeighted,
            flip: false,
            metric: Distance::L2,
            far: 1e-3,
            skip_missing: true,
            cache: None,
        }
    }
}

/// What a run measured, with what produced it (the CLI writes it as `report.json`).
#[derive(Debug, Clone, Serialize)]
pub struct ProtocolReport {
    /// Pairs scored.
    pub pairs_used: usize,
    /// Pairs skipped for missing images.
    pub pairs_skipped: usize,
    /// Folds of the pairs file.
    pub num_folds: usize,
    /// Distinct images embedded (or read from the cache).
    pub images_embedded: usize,
    /// Images read from the cache.
    pub images_cached: usize,
    /// Images where no face was found and the central region was used.
    pub no_face_fallbacks: Vec<String>,
    /// The distance's unit.
    pub unit: String,
    /// The settings that key the embedding cache.
    pub settings: serde_json::Value,
    /// The scores.
    pub evaluation: Evaluation,
    /// Each scored pair's distance and label (for plots).
    #[serde(skip)]
    pub distances: Vec<(f64, bool)>,
}

impl std::fmt::Display for ProtocolReport {
    /// The figures as `facenet evaluate` prints them.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let e = &self.evaluation;
        let skipped = match self.pairs_skipped {
            0 => String::new(),
            n => format!(", {n} skipped"),
        };
        writeln!(
            f,
            "pairs        {} ({} folds{skipped})",
            self.pairs_used, self.num_folds
        )?;
        writeln!(f, "accuracy     {:.4} ± {:.4}", e.accuracy, e.accuracy_std)?;
        writeln!(
            f,
            "VAL@FAR={:<6} {:.4} ± {:.4} (FAR {:.5})",
            e.far_target, e.val, e.val_std, e.far
        )?;
        writeln!(f, "AUC          {:.4}", e.auc)?;
        writeln!(f, "EER          {:.4}", e.eer)?;
        writeln!(
            f,
            "threshold    {:.3} (best accuracy {:.4} over all pairs); {:.3} for FAR {} (TAR {:.4})",
            e.best_threshold, e.best_accuracy, e.threshold_at_far, e.far_target, e.tar_at_far
        )?;
        writeln!(f, "unit         {}", self.unit)?;
        if !self.no_face_fallbacks.is_empty() {
            let n = self.no_face_fallbacks.len();
            writeln!(f, "no face found in {n} image(s): their centre was used")?;
        }
        Ok(())
    }
}

#[derive(Deserialize)]
struct CacheFile {
    settings: serde_json::Value,
    embeddings: BTreeMap<String, Vec<f32>>,
}

/// Progress of a run.
pub trait Progress: Sync {
    /// A phase begins (`"faces"`, `"embeddings"`) with this many steps.
    fn start(&self, phase: &str, total: usize);
    /// One step of the phase is done.
    fn step(&self, n: usize);
}

/// No progress report.
impl Progress for () {
    fn start(&self, _: &str, _: usize) {}
    fn step(&self, _: usize) {}
}

/// Runs the protocol. `pool` detects (ignored with `aligned`); `embedder` carries its
/// standardization, precision and batch size.
pub fn run(
    pairs: &Pairs,
    cfg: &ProtocolConfig,
    embedder: &Embedder,
    pool: Option<&DetectorPool>,
    progress: &dyn Progress,
) -> Result<ProtocolReport> {
    let mut files: BTreeMap<String, PathBuf> = BTreeMap::new();
    let mut missing = Vec::new();
    for img in pairs.images() {
        match img.find(&cfg.images) {
            Some(p) => {
                files.insert(img.stem(), p);
            }
            None => missing.push(
                cfg.images
                    .join(&img.person)
                    .join(format!("{}.jpg", img.stem())),
            ),
        }
    }
    if !missing.is_empty() && !cfg.skip_missing {
        return Err(Error::BadImage {
            path: missing[0].clone(),
            reason: format!(
                "{} image(s) of the pairs are missing, the first is this one (use --skip-missing to skip their pairs)",
                missing.len()
            ),
        });
    }
    let emb = embed_images(&files, cfg, embedder, pool, progress)?;
    let (evaluation, distances) = score_pairs(pairs, &emb.embeddings, cfg.metric, cfg.far)?;
    Ok(ProtocolReport {
        pairs_used: distances.len(),
        pairs_skipped: pairs.pairs.len() - distances.len(),
        num_folds: pairs.num_folds,
        images_embedded: files.len(),
        images_cached: emb.cached,
        no_face_fallbacks: emb.fallbacks,
        unit: cfg.metric.unit().into(),
        settings: emb.settings,
        evaluation,
        distances,
    })
}

/// Scores the pairs whose two images have an embedding in `emb` (keyed by image stem): the
/// evaluation by the pairs file's folds, and each scored pair's distance and label. No pair
/// to score is an error.
pub fn score_pairs(
    pairs: &Pairs,
    emb: &BTreeMap<String, Vec<f32>>,
    metric: Distance,
    far: f64,
) -> Result<(Evaluation, Vec<(f64, bool)>)> {
    let used: Vec<&Pair> = pairs
        .pairs
        .iter()
        .filter(|p| emb.contains_key(&p.a.stem()) && emb.contains_key(&p.b.stem()))
        .collect();
    if used.is_empty() {
        return Err(Error::InvalidArgument {
            field: "pairs",
            reason: "no pair left to evaluate (none has both images)".into(),
        });
    }
    let distances: Vec<(f64, bool)> = used
        .iter()
        .map(|p| {
            (
                metric.between(&emb[&p.a.stem()], &emb[&p.b.stem()]) as f64,
                p.same,
            )
        })
        .collect();
    let dist: Vec<f64> = distances.iter().map(|d| d.0).collect();
    let same: Vec<bool> = distances.iter().map(|d| d.1).collect();
    let folds: Vec<usize> = used.iter().map(|p| p.fold).collect();
    let e = metrics::evaluate(&dist, &same, &folds, &metrics::grid(metric.max()), far);
    Ok((e, distances))
}

/// Embeddings of image files, keyed as the caller keys them.
#[derive(Debug, Clone)]
pub struct Embedded {
    /// Unit embedding per key.
    pub embeddings: BTreeMap<String, Vec<f32>>,
    /// How many came from the cache.
    pub cached: usize,
    /// Keys of images where no face was found (their central region was used).
    pub fallbacks: Vec<String>,
    /// The settings that key the cache.
    pub settings: serde_json::Value,
}

/// Detects, aligns and embeds every image of `files` (key -> path) as `cfg` says, through the
/// embedding cache of `cfg.cache` (keyed by the weights' fingerprint, the settings and the
/// image folder): a rerun embeds only what is new.
pub fn embed_images(
    files: &BTreeMap<String, PathBuf>,
    cfg: &ProtocolConfig,
    embedder: &Embedder,
    pool: Option<&DetectorPool>,
    progress: &dyn Progress,
) -> Result<Embedded> {
    let mut settings = serde_json::json!({
        "fingerprint": embedder.metadata().fingerprint,
        "preprocess": embedder.standardization().name(),
        "aligned": cfg.aligned,
        "align": cfg.align.method,
        "select": cfg.selection,
        "margin": cfg.align.margin,
        "size": cfg.align.size,
        "flip": cfg.flip,
    });
    // Only bf16 and int8 add keys, so that caches of f32 embeddings written before stay valid.
    if embedder.precision() != crate::Precision::F32 {
        settings["precision"] = embedder.precision().name().into();
    }
    if embedder.mirror() {
        settings["mirror"] = true.into();
    }
    // Likewise only the detector's rescue adds a key (caches from before it had none).
    if let Some(rescue) = pool
        .and_then(|p| p.config().rescue.clone())
        .filter(|_| !cfg.aligned)
    {
        settings["rescue"] = serde_json::to_value(rescue).map_err(|e| Error::InvalidArgument {
            field: "rescue",
            reason: e.to_string(),
        })?;
    }
    if let Some(d) = embedder.int8_calibration() {
        settings["int8_calibration"] = d.into();
        // The families differ in which convolutions run int8 (the AVX2 one keeps Winograd's
        // in f32).
        settings["int8_kernel"] = embedder.kernel().into();
    }
    let cache_file = cfg.cache.as_ref().map(|dir| {
        let mut h = Sha256::new();
        h.update(settings.to_string());
        h.update(
            std::fs::canonicalize(&cfg.images)
                .unwrap_or(cfg.images.clone())
                .to_string_lossy()
                .as_bytes(),
        );
        let key: String = h.finalize()[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        dir.join(format!("{key}.json"))
    });
    let mut cache: BTreeMap<String, Vec<f32>> = cache_file
        .as_ref()
        .and_then(|f| std::fs::read(f).ok())
        .and_then(|b| serde_json::from_slice::<CacheFile>(&b).ok())
        .filter(|c| c.settings == settings)
        .map(|c| c.embeddings)
        .unwrap_or_default();
    let todo: Vec<(String, PathBuf)> = files
        .iter()
        .filter(|(k, _)| !cache.contains_key(*k))
        .map(|(k, p)| (k.clone(), p.clone()))
        .collect();
    let cached = files.len() - todo.len();
    let mut fallbacks = Vec::new();
    if !todo.is_empty() {
        let (embs, fb) = embed_all(&todo, cfg, embedder, pool, progress)?;
        fallbacks = fb;
        for ((k, _), e) in todo.iter().zip(embs) {
            cache.insert(k.clone(), e);
        }
        if let Some(f) = &cache_file {
            // Compact, and serialized from borrows: the cache of all LFW is ~30 MB.
            #[derive(Serialize)]
            struct CacheRef<'a> {
                settings: &'a serde_json::Value,
                embeddings: &'a BTreeMap<String, Vec<f32>>,
            }
            let body = CacheRef {
                settings: &settings,
                embeddings: &cache,
            };
            let bytes = serde_json::to_vec(&body).map_err(|source| Error::Json {
                path: f.clone(),
                what: "cannot encode the embedding cache".into(),
                source,
            })?;
            crate::files::write_atomic(f, &bytes)?;
        }
    }
    cache.retain(|k, _| files.contains_key(k));
    Ok(Embedded {
        embeddings: cache,
        cached,
        fallbacks,
        settings,
    })
}

/// Every photo of a labelled `person/photo` folder embedded through [`embed_images`] (its
/// cache): `(person, embedding)` in file order. Keys are the file stems where they are unique
/// (LFW's are, so the pairs protocol's cache serves), else `person/stem`.
pub fn embed_folder(
    cfg: &ProtocolConfig,
    embedder: &Embedder,
    pool: Option<&DetectorPool>,
    progress: &dyn Progress,
) -> Result<Vec<(String, Vec<f32>)>> {
    let files = crate::files::dataset_files(&cfg.images)?;
    let stem = |p: &std::path::Path| {
        p.file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    let stems: std::collections::BTreeSet<String> = files.iter().map(|f| stem(&f.1)).collect();
    let key = |(p, f): &(String, PathBuf)| match stems.len() == files.len() {
        true => stem(f),
        false => format!("{p}/{}", stem(f)),
    };
    let map = files.iter().map(|f| (key(f), f.1.clone())).collect();
    let mut emb = embed_images(&map, cfg, embedder, pool, progress)?.embeddings;
    Ok(files
        .iter()
        .map(|f| (f.0.clone(), emb.remove(&key(f)).unwrap_or_default()))
        .collect())
}

/// The quality ([`crate::quality`]) of the face `cfg` selects in each image of the folder
/// `cfg.images`, in [`embed_folder`]'s order; 0 where no face is found. Detected on the pool.
pub fn face_qualities(
    cfg: &ProtocolConfig,
    pool: &DetectorPool,
    progress: &dyn Progress,
) -> Result<Vec<f32>> {
    let files = crate::files::dataset_files(&cfg.images)?;
    progress.start("quality", files.len());
    pool.map(
        &files,
        |det, (_, path)| {
            let img = crate::image::load_rgb(path)?;
            let found = det.detect(&img)?;
            let face = select(&found, img.width(), img.height(), cfg.selection);
            Ok(face.first().map_or(0.0, |d| d.quality(&img).score))
        },
        &|| progress.step(1),
    )
    .into_iter()
    .collect()
}

/// Detects, aligns (on the pool) and embeds; returns embeddings in `todo` order and the
/// images where no face was found (their central region is used).
fn embed_all(
    todo: &[(String, PathBuf)],
    cfg: &ProtocolConfig,
    embedder: &Embedder,
    pool: Option<&DetectorPool>,
    progress: &dyn Progress,
) -> Result<(Vec<Vec<f32>>, Vec<String>)> {
    let (crops, fallbacks) = aligned_faces(todo, cfg, pool, progress)?;
    progress.start("embeddings", crops.len());
    let mut out = Vec::with_capacity(crops.len());
    for chunk in crops.chunks(64) {
        let embs = embedder.embed(chunk)?;
        let flipped = if cfg.flip {
            let mirrored: Vec<_> = chunk.iter().map(image::imageops::flip_horizontal).collect();
            Some(embedder.embed(&mirrored)?)
        } else {
            None
        };
        for (i, e) in embs.into_iter().enumerate() {
            out.push(match &flipped {
                Some(f) => {
                    let mut both = e.normalized;
                    both.extend_from_slice(&f[i].normalized);
                    l2_normalize(&both)
                }
                None => e.normalized,
            });
        }
        progress.step(chunk.len());
    }
    Ok((out, fallbacks))
}

/// Detects and aligns (on the pool) every image of `todo` as `cfg` says, or loads them as
/// they are with `cfg.aligned`; returns the crops in `todo` order and the keys of the images
/// where no face was found (their central region is used).
pub fn aligned_faces(
    todo: &[(String, PathBuf)],
    cfg: &ProtocolConfig,
    pool: Option<&DetectorPool>,
    progress: &dyn Progress,
) -> Result<(Vec<image::RgbImage>, Vec<String>)> {
    progress.start("faces", todo.len());
    let faces: Vec<Result<(image::RgbImage, bool)>> = match (cfg.aligned, pool) {
        (true, _) => todo
            .iter()
            .map(|(_, p)| {
                progress.step(1);
                Ok((crate::image::load_rgb(p)?, false))
            })
            .collect(),
        (false, Some(pool)) => pool.map(
            todo,
            |det, (_, path)| {
                let img = crate::image::load_rgb(path)?;
                let found = det.detect(&img)?;
                match select(&found, img.width(), img.height(), cfg.selection).first() {
                    Some(face) => Ok((align(&img, face, &cfg.align)?, false)),
                    None => Ok((centre_crop(&img, &cfg.align)?, true)),
                }
            },
            &|| progress.step(1),
        ),
        (false, None) => {
            return Err(Error::InvalidArgument {
                field: "detector",
                reason: "photos that are not aligned crops need a detector".into(),
            });
        }
    };
    let mut crops = Vec::with_capacity(todo.len());
    let mut fallbacks = Vec::new();
    for ((key, _), f) in todo.iter().zip(faces) {
        let (crop, fallback) = f?;
        if fallback {
            fallbacks.push(key.clone());
        }
        crops.push(crop);
    }
    Ok((crops, fallbacks))
}

/// Scores labelled embeddings against each other (every pair of two faces), as `calibrate`
/// does on a user's own photos: one fold, thresholds for `far` and for best accuracy.
/// Returns the evaluation and the numbers of same-person and different-person pairs.
pub fn all_pairs(
    faces: &[(String, Vec<f32>)],
    metric: Distance,
    far: f64,
) -> Result<(Evaluation, usize, usize)> {
    let (mut dist, mut same) = (Vec::new(), Vec::new());
    for i in 0..faces.len() {
        for j in i + 1..faces.len() {
            dist.push(metric.between(&faces[i].1, &faces[j].1) as f64);
            same.push(faces[i].0 == faces[j].0);
        }
    }
    let positives = same.iter().filter(|&&s| s).count();
    let negatives = same.len() - positives;
    if positives == 0 || negatives == 0 {
        return Err(Error::InvalidArgument {
            field: "labelled faces",
            reason: format!(
                "need at least two people and one person with two photos ({positives} same-person and {negatives} different-person pairs)"
            ),
        });
    }
    let folds = vec![0; dist.len()];
    let e = metrics::evaluate(&dist, &same, &folds, &metrics::grid(metric.max()), far);
    Ok((e, positives, negatives))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_pairs_counts_and_separates() {
        let faces = vec![
            ("a".to_string(), vec![1.0, 0.0]),
            ("a".to_string(), vec![0.99, 0.14]),
            ("b".to_string(), vec![0.0, 1.0]),
        ];
        let (e, pos, neg) = all_pairs(&faces, Distance::L2, 1e-3).unwrap();
        assert_eq!((pos, neg), (1, 2));
        assert!((e.best_accuracy - 1.0).abs() < 1e-12);
        let one = &faces[..1];
        assert!(all_pairs(one, Distance::L2, 1e-3).is_err());
    }
}
