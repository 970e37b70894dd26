//! `facenet calibrate`: thresholds from the user's own labelled faces.

use std::path::PathBuf;

use facenet::Distance;

use crate::common::{GalleryArgs, PhaseBar, PipelineArgs, bar};

/// Arguments of `facenet calibrate`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Labelled folder: `person/*.jpg` (at least two people, some with two or more photos).
    pub dir: PathBuf,
    /// Target false accept rate.
    #[arg(long, default_value_t = 1e-3)]
    pub far: f64,
    /// Store a threshold as the gallery's default (used by verify and identify):
    /// `far` (the one for --far) or `accuracy` (the one of best accuracy).
    #[arg(long, value_enum)]
    pub store: Option<Which>,
    #[command(flatten)]
    pub gallery: GalleryArgs,
    #[command(flatten)]
    pub pipeline: PipelineArgs,
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
    let r = args
        .gallery
        .recognizer(&args.pipeline, args.store.is_some(), &device)?;
    let files = facenet::files::dataset_files(&args.dir)?;
    let pb = PhaseBar(bar(
        0,
        "{msg:17} {wide_bar} {pos}/{len} {per_sec} ETA {eta}",
    ));
    let c = r.calibrate(&files, args.far, &pb)?;
    pb.0.finish_and_clear();
    for p in &c.skipped {
        eprintln!("{}: no face found, skipped", p.display());
    }
    let e = &c.evaluation;
    println!(
        "{} faces of {} people: {} same-person and {} different-person pairs",
        c.faces, c.people, c.positives, c.negatives
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
    if c.negatives < (1.0 / args.far) as usize {
        println!(
            "note: {} different-person pairs cannot measure a FAR of {} precisely; add people",
            c.negatives, args.far
        );
    }
    match &c.cohort {
        Some(t) => {
            let at = |fir: f64, n: usize| t.threshold_for_fir(fir, n).unwrap_or(f32::NAN);
            let sizes: Vec<String> = t.sizes.iter().map(usize::to_string).collect();
            println!(
                "cohort score: thresholds measured on galleries of {} people drawn from these \
                 (one photo each, a photo of each other person as a stranger); for FIR 0.01: \
                 {}",
                sizes.join(", "),
                t.sizes
                    .iter()
                    .map(|&n| format!("{:.3} at {n}", at(0.01, n)))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            let (n, searches) = (t.sizes[0], t.searches[0]);
            let strictest = t.targets.iter().copied().fold(1.0, f64::min);
            if (searches as f64) * strictest < 10.0 {
                println!(
                    "note: {searches} stranger searches at {n} people set the threshold for FIR \
                     {strictest} from fewer than 10 strangers named; add people"
                );
            }
        }
        None => println!(
            "cohort score: {} people, fewer than {}: not measured (identification by the \
             distance, with these photos' impostor distances)",
            c.people,
            facenet::eval::cohort::COHORT_MIN_PEOPLE
        ),
    }
    if let Some(which) = args.store {
        let t = match which {
            Which::Far => e.threshold_at_far,
            Which::Accuracy => e.best_threshold,
        } as f32;
        let mut s = r.store().settings()?;
        s.threshold = Some(t);
        s.impostor = Some(c.impostor.clone());
        s.cohort = c.cohort.clone();
        r.store().set_settings(&s)?;
        println!(
            "stored {t:.3} as the 1:1 threshold of {}, and these photos' {} different-person distances for deriving identification thresholds",
            args.gallery.path().display(),
            c.negatives
        );
        if let Some(t) = &c.cohort {
            println!(
                "stored the cohort score's thresholds: identify derives its threshold from \
                 them (galleries larger than {} people keep that size's: from FIR 0.01 up, the \
                 strict side)",
                t.sizes.last().copied().unwrap_or(0)
            );
        }
    }
    Ok(())
}
