//! `facenet evaluate`: the LFW verification protocol (`facenet::eval::protocol`) with plots.

use std::path::PathBuf;

use anyhow::Context;
use facenet::align::{AlignConfig, AlignMethod, FaceSelection};
use facenet::eval::Pairs;
use facenet::eval::protocol::{self, Progress, ProtocolConfig};
use facenet::pipeline::DetectorPool;
use facenet::{Device, Distance, Standardization};

use crate::common::{DetectorArg, WeightsArg, bar};

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
    pub align: AlignMethod,
    /// Which face when a photo has several (LFW centres the person: center-weighted).
    #[arg(long, value_enum, default_value = "center-weighted")]
    pub select: FaceSelection,
    /// Crop margin in source pixels.
    #[arg(long, default_value_t = 32)]
    pub margin: u32,
    /// Crop size.
    #[arg(long, default_value_t = 160)]
    pub size: u32,
    /// Pixel standardization (default: the weights' own).
    #[arg(long = "preprocess", value_enum)]
    pub preprocess: Option<Standardization>,
    /// Also embed the mirrored face and concatenate (davidsandberg's --use_flipped_images).
    #[arg(long)]
    pub flip: bool,
    /// Distance: l2, squared-l2 or cosine.
    #[arg(long, value_enum, default_value = "l2")]
    pub metric: Distance,
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

/// The progress bar of a protocol run.
struct Bar(indicatif::ProgressBar);

impl Progress for Bar {
    fn start(&self, phase: &str, total: usize) {
        self.0.set_length(total as u64);
        self.0.set_position(0);
        self.0.set_message(phase.to_string());
    }
    fn step(&self, n: usize) {
        self.0.inc(n as u64);
    }
}

pub fn run(args: Args, device: Device) -> anyhow::Result<()> {
    let pairs = Pairs::read(&args.pairs)?;
    let pairs = match args.folds {
        Some(k) => pairs.first_folds(k),
        None => pairs,
    };
    let mut embedder = args.weights.open(&device)?.with_batch_size(args.batch);
    if let Some(s) = args.preprocess {
        embedder = embedder.with_standardization(s);
    }
    let pool = if args.aligned {
        None
    } else {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        Some(DetectorPool::open(
            &args.detector.path()?,
            &device,
            threads,
        )?)
    };
    let cfg = ProtocolConfig {
        images: args.images.clone(),
        aligned: args.aligned,
        align: AlignConfig {
            method: args.align,
            size: args.size,
            margin: args.margin,
        },
        selection: args.select,
        flip: args.flip,
        metric: args.metric,
        far: args.far,
        skip_missing: args.skip_missing,
        cache: Some(
            args.cache
                .clone()
                .unwrap_or_else(|| facenet::paths::cache_dir().join("eval-cache")),
        ),
    };
    let pb = Bar(bar(0, "{bar:40} {pos}/{len} {msg} {elapsed} (eta {eta})"));
    let r = protocol::run(&pairs, &cfg, &embedder, pool.as_ref(), &pb)?;
    pb.0.finish_and_clear();
    if r.images_cached == r.images_embedded {
        eprintln!("all {} embeddings from the cache", r.images_embedded);
    } else {
        eprintln!(
            "embedded {} image(s) ({} from the cache)",
            r.images_embedded - r.images_cached,
            r.images_cached
        );
    }
    let e = &r.evaluation;
    let skipped = match r.pairs_skipped {
        0 => String::new(),
        n => format!(", {n} skipped"),
    };
    println!(
        "pairs        {} ({} folds{skipped})",
        r.pairs_used, r.num_folds
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
    println!("unit         {}", r.unit);
    if !r.no_face_fallbacks.is_empty() {
        println!(
            "no face found in {} image(s): their centre was used",
            r.no_face_fallbacks.len()
        );
    }
    if let Some(out) = &args.out {
        let mut report = serde_json::to_value(&r)?;
        report["pairs_file"] = args.pairs.display().to_string().into();
        report["images"] = args.images.display().to_string().into();
        report["metric"] = serde_json::to_value(args.metric)?;
        facenet::files::write_json_atomic(&out.join("report.json"), &report)?;
        facenet_plot::roc(&out.join("roc.png"), e, args.metric)?;
        let (dist, same): (Vec<f64>, Vec<bool>) = r.distances.iter().copied().unzip();
        facenet_plot::distances(
            &out.join("distances.png"),
            &dist,
            &same,
            e.best_threshold,
            args.metric,
        )
        .context("plotting distances")?;
        println!("report       {}", out.display());
    }
    Ok(())
}
