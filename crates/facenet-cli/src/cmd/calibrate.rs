//! `facenet calibrate`: thresholds from the user's own labelled faces.

use std::path::PathBuf;

use anyhow::bail;
use facenet::Distance;
use facenet::eval::metrics;
use facenet_gallery::GalleryStore;

use crate::cmd::recognize::{GalleryArgs, Pipeline};
use crate::common::{DetectorArg, WeightsArg};

/// Arguments of `facenet calibrate`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Labelled folder: `person/*.jpg` (at least two people, some with two or more photos).
    pub dir: PathBuf,
    /// Target false accept rate.
    #[arg(long, default_value_t = 1e-3)]
    pub far: f64,
    /// Photos are already aligned face crops.
    #[arg(long)]
    pub aligned: bool,
    /// Store a threshold as the gallery's default (used by verify and identify):
    /// `far` (the one for --far) or `accuracy` (the one of best accuracy).
    #[arg(long, value_enum)]
    pub store: Option<Which>,
    #[command(flatten)]
    pub gallery: GalleryArgs,
    #[command(flatten)]
    pub weights: WeightsArg,
    #[command(flatten)]
    pub detector: DetectorArg,
}

/// `--store`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Which {
    /// The threshold for the target false accept rate.
    Far,
    /// The threshold of best accuracy.
    Accuracy,
}

pub fn run(args: Args, device: facenet::Device) -> anyhow::Result<()> {
    let p = Pipeline::new(&args.weights, &args.detector, args.aligned, &device)?;
    let files = super::align::dataset_files(&args.dir)?;
    let mut emb: Vec<(String, Vec<f32>)> = Vec::new();
    for (person, file) in &files {
        match p.faces(file)?.into_iter().next() {
            Some(f) => emb.push((person.clone(), f.embedding)),
            None => eprintln!("{}: no face found, skipped", file.display()),
        }
    }
    let (mut dist, mut same) = (Vec::new(), Vec::new());
    for i in 0..emb.len() {
        for j in i + 1..emb.len() {
            dist.push(Distance::L2.between(&emb[i].1, &emb[j].1) as f64);
            same.push(emb[i].0 == emb[j].0);
        }
    }
    let positives = same.iter().filter(|&&s| s).count();
    if positives == 0 || positives == same.len() {
        bail!(
            "{}: need at least two people and one person with two photos ({} same-person and {} different-person pairs)",
            args.dir.display(),
            positives,
            same.len() - positives
        );
    }
    let folds = vec![0; dist.len()];
    let e = metrics::evaluate(&dist, &same, &folds, &metrics::grid(2.0), args.far);
    println!(
        "{} faces of {} people: {} same-person and {} different-person pairs",
        emb.len(),
        files
            .iter()
            .map(|f| &f.0)
            .collect::<std::collections::BTreeSet<_>>()
            .len(),
        positives,
        same.len() - positives
    );
    println!(
        "threshold for FAR {}: {:.3} (expected TAR {:.4})",
        args.far, e.threshold_at_far, e.tar_at_far
    );
    println!(
        "threshold of best accuracy: {:.3} (accuracy {:.4})",
        e.best_threshold, e.best_accuracy
    );
    println!("unit: {}", Distance::L2.unit());
    if (same.len() - positives) < (1.0 / args.far) as usize {
        println!(
            "note: {} different-person pairs cannot measure a FAR of {} precisely; add people",
            same.len() - positives,
            args.far
        );
    }
    if let Some(which) = args.store {
        let t = match which {
            Which::Far => e.threshold_at_far,
            Which::Accuracy => e.best_threshold,
        };
        let mut g = args.gallery.open()?;
        g.set_setting("threshold", &format!("{t:.4}"))?;
        println!(
            "stored {t:.3} as the default threshold of {}",
            args.gallery.path().display()
        );
    }
    Ok(())
}
