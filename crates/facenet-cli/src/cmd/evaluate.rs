//! `facenet evaluate`: the LFW verification protocol on our own detection and embeddings.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{Context, bail};
use facenet::align::{AlignConfig, FaceSelection, align, select};
use facenet::detect::Detection;
use facenet::eval::{Evaluation, Pairs, metrics};
use facenet::{Device, Distance, Embedder};
use indicatif::{ProgressBar, ProgressStyle};
use sha2::{Digest, Sha256};

use crate::cmd::align::{Method, Select};
use crate::common::{DetectorArg, Preprocess, WeightsArg};

/// Arguments of `facenet evaluate`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Pairs file (`pairs.txt`: folds of same / different pairs; or View 1 files).
    #[arg(long)]
    pub pairs: PathBuf,
    /// Image folder (`person/person_0001.jpg`).
    #[arg(long)]
    pub images: PathBuf,
    /// The images are already aligned face crops: skip detection.
    #[arg(long)]
    pub aligned: bool,
    /// Alignment method.
    #[arg(long, value_enum, default_value = "crop")]
    pub align: Method,
    /// Which face when a photo has several (LFW centres the person: center-weighted).
    #[arg(long, value_enum, default_value = "center-weighted")]
    pub select: Select,
    /// Crop margin in source pixels.
    #[arg(long, default_value_t = 32)]
    pub margin: u32,
    /// Crop size.
    #[arg(long, default_value_t = 160)]
    pub size: u32,
    /// Pixel standardization.
    #[arg(long = "preprocess", value_enum, default_value = "auto")]
    pub preprocess: Preprocess,
    /// Also embed the mirrored face and concatenate (davidsandberg's --use_flipped_images).
    #[arg(long)]
    pub flip: bool,
    /// Distance: l2, squared-l2 or cosine.
    #[arg(long, value_enum, default_value = "l2")]
    pub metric: Metric,
    /// Target false accept rate for VAL@FAR.
    #[arg(long, default_value_t = 1e-3)]
    pub far: f64,
    /// Use only the first K folds (a quicker check).
    #[arg(long)]
    pub folds: Option<usize>,
    /// Skip pairs whose images are missing (and report how many) instead of failing.
    #[arg(long)]
    pub skip_missing: bool,
    /// Write report.json, roc.png and distances.png here.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Embedding cache folder (default: eval-cache/ in the facenet cache).
    #[arg(long)]
    pub cache: Option<PathBuf>,
    /// Faces per forward pass.
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    #[command(flatten)]
    pub weights: WeightsArg,
    #[command(flatten)]
    pub detector: DetectorArg,
}

/// `--metric`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Metric {
    /// Euclidean distance between unit embeddings (0..2).
    L2,
    /// Squared Euclidean (0..4), davidsandberg's.
    SquaredL2,
    /// 1 - cosine similarity (0..2).
    Cosine,
}

impl Metric {
    pub fn distance(self) -> Distance {
        match self {
            Self::L2 => Distance::L2,
            Self::SquaredL2 => Distance::SquaredL2,
            Self::Cosine => Distance::Cosine,
        }
    }
    fn max(self) -> f64 {
        match self {
            Self::SquaredL2 => 4.0,
            Self::L2 | Self::Cosine => 2.0,
        }
    }
}

/// The result with what produced it, as written to report.json.
#[derive(Debug, serde::Serialize)]
pub struct Report {
    pub pairs_file: String,
    pub images: String,
    pub pairs_used: usize,
    pub pairs_skipped: usize,
    pub images_embedded: usize,
    pub no_face_fallbacks: Vec<String>,
    pub metric: String,
    pub unit: String,
    pub settings: serde_json::Value,
    pub evaluation: Evaluation,
}

pub fn run(args: Args, device: Device) -> anyhow::Result<()> {
    let pairs = Pairs::read(&args.pairs)?;
    let pairs = match args.folds {
        Some(k) => pairs.first_folds(k),
        None => pairs,
    };
    // Resolve image files; missing ones fail unless --skip-missing.
    let mut files: BTreeMap<String, PathBuf> = BTreeMap::new();
    let mut missing = Vec::new();
    for img in pairs.images() {
        match img.find(&args.images) {
            Some(p) => {
                files.insert(img.stem(), p);
            }
            None => missing.push(
                args.images
                    .join(&img.person)
                    .join(format!("{}.jpg", img.stem())),
            ),
        }
    }
    if !missing.is_empty() && !args.skip_missing {
        bail!(
            "{} image(s) of the pairs are missing, the first: {} (use --skip-missing to skip their pairs)",
            missing.len(),
            missing[0].display()
        );
    }
    let used: Vec<&facenet::eval::Pair> = pairs
        .pairs
        .iter()
        .filter(|p| files.contains_key(&p.a.stem()) && files.contains_key(&p.b.stem()))
        .collect();
    let skipped = pairs.pairs.len() - used.len();
    if skipped > 0 {
        eprintln!("skipping {skipped} pair(s) with missing images");
    }
    if used.is_empty() {
        bail!("no pair left to evaluate");
    }

    let embedder = args.weights.open(&device)?;
    let std = args.preprocess.resolve(embedder.standardization());
    let embedder = embedder
        .with_standardization(std)
        .with_batch_size(args.batch);
    let cfg = AlignConfig {
        method: args.align.into(),
        size: args.size,
        margin: args.margin,
    };
    let selection: FaceSelection = args.select.into();
    let mut settings = serde_json::json!({
        "fingerprint": embedder.metadata().fingerprint,
        "preprocess": std.name(),
        "aligned": args.aligned,
        "align": cfg.method,
        "select": selection,
        "margin": cfg.margin,
        "size": cfg.size,
        "flip": args.flip,
    });
    // Only bf16 adds a key, so that caches of f32 embeddings written before stay valid.
    if embedder.precision() != facenet::Precision::F32 {
        settings["precision"] = embedder.precision().name().into();
    }
    let cache_dir = args
        .cache
        .clone()
        .unwrap_or_else(|| facenet::paths::cache_dir().join("eval-cache"));
    let key = {
        let mut h = Sha256::new();
        h.update(settings.to_string());
        h.update(
            std::fs::canonicalize(&args.images)
                .unwrap_or(args.images.clone())
                .to_string_lossy()
                .as_bytes(),
        );
        h.finalize()
            .iter()
            .take(8)
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    let cache_file = cache_dir.join(format!("{key}.json"));
    let mut cache: BTreeMap<String, Vec<f32>> = std::fs::read(&cache_file)
        .ok()
        .and_then(|b| serde_json::from_slice::<CacheFile>(&b).ok())
        .filter(|c| c.settings == settings)
        .map(|c| c.embeddings)
        .unwrap_or_default();
    let todo: Vec<(String, PathBuf)> = files
        .iter()
        .filter(|(k, _)| !cache.contains_key(*k))
        .map(|(k, p)| (k.clone(), p.clone()))
        .collect();
    let mut fallbacks = Vec::new();
    if !todo.is_empty() {
        eprintln!(
            "embedding {} image(s) ({} cached)",
            todo.len(),
            files.len() - todo.len()
        );
        let (embs, fb) = embed_all(&args, &todo, &embedder, &device, &cfg, selection)?;
        fallbacks = fb;
        for ((k, _), e) in todo.iter().zip(embs) {
            cache.insert(k.clone(), e);
        }
        std::fs::create_dir_all(&cache_dir)
            .with_context(|| format!("creating {}", cache_dir.display()))?;
        let tmp = cache_file.with_extension("json.tmp");
        let body = serde_json::to_vec(&CacheFile {
            settings: settings.clone(),
            embeddings: cache.clone(),
        })?;
        std::fs::write(&tmp, body).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &cache_file)?;
    } else {
        eprintln!(
            "all {} embeddings from the cache {}",
            files.len(),
            cache_file.display()
        );
    }

    let metric = args.metric.distance();
    let dist: Vec<f64> = used
        .iter()
        .map(|p| metric.between(&cache[&p.a.stem()], &cache[&p.b.stem()]) as f64)
        .collect();
    let same: Vec<bool> = used.iter().map(|p| p.same).collect();
    let folds: Vec<usize> = used.iter().map(|p| p.fold).collect();
    let e = metrics::evaluate(
        &dist,
        &same,
        &folds,
        &metrics::grid(args.metric.max()),
        args.far,
    );
    println!(
        "pairs        {} ({} folds{})",
        used.len(),
        pairs.num_folds,
        if skipped > 0 {
            format!(", {skipped} skipped")
        } else {
            String::new()
        }
    );
    println!("accuracy     {:.4} ± {:.4}", e.accuracy, e.accuracy_std);
    println!(
        "VAL@FAR={:<6} {:.4} ± {:.4} (FAR {:.5})",
        args.far, e.val, e.val_std, e.far
    );
    println!("AUC          {:.4}", e.auc);
    println!("EER          {:.4}", e.eer);
    println!(
        "threshold    {:.3} (best accuracy {:.4} over all pairs); {:.3} for FAR {} (TAR {:.4})",
        e.best_threshold, e.best_accuracy, e.threshold_at_far, args.far, e.tar_at_far
    );
    println!("unit         {}", metric.unit());
    if !fallbacks.is_empty() {
        println!(
            "no face found in {} image(s): their centre was used",
            fallbacks.len()
        );
    }
    if let Some(out) = &args.out {
        std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
        let report = Report {
            pairs_file: args.pairs.display().to_string(),
            images: args.images.display().to_string(),
            pairs_used: used.len(),
            pairs_skipped: skipped,
            images_embedded: files.len(),
            no_face_fallbacks: fallbacks,
            metric: format!("{:?}", args.metric),
            unit: metric.unit().to_string(),
            settings,
            evaluation: e.clone(),
        };
        let path = out.join("report.json");
        std::fs::write(&path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
        crate::plot::roc(&out.join("roc.png"), &e, metric)?;
        crate::plot::distances(
            &out.join("distances.png"),
            &dist,
            &same,
            e.best_threshold,
            metric,
        )?;
        println!("report       {}", out.display());
    }
    Ok(())
}

/// A face crop, and whether it is the fallback centre crop (no face found).
type FaceResult = anyhow::Result<(image::RgbImage, bool)>;

#[derive(serde::Serialize, serde::Deserialize)]
struct CacheFile {
    settings: serde_json::Value,
    embeddings: BTreeMap<String, Vec<f32>>,
}

/// Detects, aligns (both cores) and embeds; returns embeddings in `todo` order and the images
/// where no face was found (their central region is used, a box of half the image).
fn embed_all(
    args: &Args,
    todo: &[(String, PathBuf)],
    embedder: &Embedder,
    device: &Device,
    cfg: &AlignConfig,
    selection: FaceSelection,
) -> anyhow::Result<(Vec<Vec<f32>>, Vec<String>)> {
    let bar = ProgressBar::new(todo.len() as u64).with_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} {msg} {elapsed} (eta {eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_message("faces");
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let faces: Vec<FaceResult> = if args.aligned {
        todo.iter()
            .map(|(_, p)| {
                bar.inc(1);
                Ok((facenet::image::load_rgb(p)?, false))
            })
            .collect()
    } else {
        let detectors = (0..threads)
            .map(|_| args.detector.open(device))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let next = AtomicUsize::new(0);
        let slots: Vec<std::sync::Mutex<Option<FaceResult>>> =
            todo.iter().map(|_| std::sync::Mutex::new(None)).collect();
        std::thread::scope(|s| {
            for det in &detectors {
                s.spawn(|| {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some((_, path)) = todo.get(i) else { break };
                        let r = face_of(det, path, cfg, selection);
                        if let Ok(mut slot) = slots[i].lock() {
                            *slot = Some(r);
                        }
                        bar.inc(1);
                    }
                });
            }
        });
        slots
            .into_iter()
            .map(|m| {
                m.into_inner()
                    .ok()
                    .flatten()
                    .unwrap_or_else(|| Err(anyhow::anyhow!("not processed")))
            })
            .collect()
    };
    let mut crops = Vec::with_capacity(todo.len());
    let mut fallbacks = Vec::new();
    for ((key, path), f) in todo.iter().zip(faces) {
        let (crop, fallback) = f.with_context(|| format!("processing {}", path.display()))?;
        if fallback {
            fallbacks.push(key.clone());
        }
        crops.push(crop);
    }
    bar.set_position(0);
    bar.set_message("embeddings");
    let mut out = Vec::with_capacity(crops.len());
    for chunk in crops.chunks(args.batch.max(1)) {
        let embs = embedder.embed(chunk)?;
        let flipped = if args.flip {
            let mirrored: Vec<_> = chunk.iter().map(image::imageops::flip_horizontal).collect();
            Some(embedder.embed(&mirrored)?)
        } else {
            None
        };
        for (i, e) in embs.into_iter().enumerate() {
            let v = match &flipped {
                Some(f) => {
                    let mut both = e.normalized.clone();
                    both.extend_from_slice(&f[i].normalized);
                    facenet::embed::l2_normalize(&both)
                }
                None => e.normalized,
            };
            out.push(v);
        }
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    Ok((out, fallbacks))
}

fn face_of(
    det: &facenet::detect::Detector,
    path: &Path,
    cfg: &AlignConfig,
    selection: FaceSelection,
) -> FaceResult {
    let img = facenet::image::load_rgb(path)?;
    let faces = det.detect(&img)?;
    let (w, h) = (img.width() as f32, img.height() as f32);
    match select(&faces, img.width(), img.height(), selection).first() {
        Some(face) => Ok((align(&img, face, cfg)?, false)),
        None => {
            let centre = Detection {
                bbox: [w * 0.25, h * 0.25, w * 0.75, h * 0.75],
                score: 0.0,
                landmarks: [[0.0; 2]; 5],
            };
            let cfg = AlignConfig {
                method: facenet::align::AlignMethod::Crop,
                ..*cfg
            };
            Ok((align(&img, &centre, &cfg)?, true))
        }
    }
}
