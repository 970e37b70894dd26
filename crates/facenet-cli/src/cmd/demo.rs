//! `facenet demo`: the setup step if needed, then enrolment and identification on the
//! 5-celebrity sample dataset (a real gallery: every `train/` photo; and the one-shot figure,
//! one photo per person), with a contact sheet.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use facenet::pipeline::FacePipeline;
use facenet::{Device, Embedder};
use facenet_gallery::{Recognizer, SqliteGallery, Threshold};

use crate::common::DetectorArg;

/// Arguments of `facenet demo`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Dataset with `train/person/*.jpg` and `val/person/*.jpg` (default: the sample dataset).
    #[arg(long)]
    pub dataset: Option<PathBuf>,
    /// Photos enrolled per person from train/ (0 = all, the default; 1 = one-shot).
    #[arg(long, default_value_t = 0)]
    pub enroll: usize,
    /// Unknown above this L2 distance (unit embeddings, 0..2). Default: derived for 1 % of
    /// strangers named as someone in a gallery of this size.
    #[arg(long)]
    pub threshold: Option<f32>,
    /// Contact sheet PNG of the val faces with their predictions.
    #[arg(long, default_value = "demo.png")]
    pub sheet: PathBuf,
}

/// A val photo with its face, truth, prediction and nearest identity.
struct Row {
    file: String,
    truth: String,
    predicted: String,
    nearest: String,
    distance: f32,
    face: image::RgbImage,
}

/// Enrols `per_person` photos of each person of `root/train` into a fresh in-memory gallery
/// and identifies the face of every photo of `root/val`; returns the rows, the number of
/// people and of faces enrolled.
fn one_run(
    pipeline: &Arc<FacePipeline>,
    root: &Path,
    per_person: usize,
    threshold: Option<f32>,
) -> anyhow::Result<(Vec<Row>, usize, usize, Threshold)> {
    let r = Recognizer::new(pipeline.clone(), Arc::new(SqliteGallery::in_memory()?));
    for (p, why) in r.enroll_folder(&root.join("train"), per_person)? {
        eprintln!("enroll: {}: {why}, skipped", p.display());
    }
    let people = r.store().identities()?.len();
    if people == 0 {
        bail!("nobody enrolled from {}", root.join("train").display());
    }
    let searcher = r.searcher(threshold, None)?;
    let mut rows = Vec::new();
    for res in r.identify_folder(&searcher, &root.join("val"))? {
        let (Some(id), Some(face)) = (res.identification, res.crop) else {
            eprintln!("identify: no face in {}", res.path.display());
            continue;
        };
        let file = res
            .path
            .file_name()
            .map(|s| s.to_string_lossy().into_owned());
        rows.push(Row {
            file: file.unwrap_or_default(),
            truth: res.truth,
            nearest: id
                .candidates
                .first()
                .map(|c| c.identity.clone())
                .unwrap_or_default(),
            predicted: id.identity.name().to_string(),
            distance: id.distance.unwrap_or(f32::NAN),
            face,
        });
    }
    let faces = r.store().faces(None)?.len();
    Ok((rows, people, faces, searcher.threshold()))
}

/// Right predictions, and right nearest identities.
fn correct(rows: &[Row]) -> (usize, usize) {
    let count = |f: &dyn Fn(&Row) -> bool| rows.iter().filter(|r| f(r)).count();
    (
        count(&|r| r.truth == r.predicted),
        count(&|r| r.truth == r.nearest),
    )
}

pub fn run(args: Args, device: Device) -> anyhow::Result<()> {
    let paths = facenet_import::fetch::ensure(&facenet::paths::cache_dir(), &mut |l| {
        eprintln!("fetch: {l}")
    })
    .context("setting up the weights and sample photos")?;
    let root = args.dataset.clone().unwrap_or_else(|| paths.dataset());
    let embedder = Embedder::open(&paths.weights(), &device)?;
    let detector = DetectorArg {
        no_rescue: false,
        mtcnn: Some(paths.mtcnn_weights()),
    }
    .open(&device)?;
    let pipeline = Arc::new(FacePipeline::new(embedder, Some(detector)));
    let (rows, people, faces, t) = one_run(&pipeline, &root, args.enroll, args.threshold)?;
    println!(
        "enrolled {people} people from {faces} photo(s) ({} per person); threshold {:.3} (L2 between unit embeddings; {})",
        if args.enroll == 0 {
            "all".to_string()
        } else {
            args.enroll.to_string()
        },
        t.value,
        t.describe()
    );
    println!(
        "{:<44} {:<15} {:<15} {:>8}",
        "file", "truth", "predicted", "distance"
    );
    for r in &rows {
        let mark = if r.truth == r.predicted {
            ""
        } else {
            "  <- wrong"
        };
        let name: String = r.file.chars().take(43).collect();
        println!(
            "{name:<44} {:<15} {:<15} {:>8.3}{mark}",
            r.truth, r.predicted, r.distance
        );
    }
    let (ok, nearest) = correct(&rows);
    let pct = |k: usize, n: usize| 100.0 * k as f64 / n.max(1) as f64;
    let n = rows.len();
    println!(
        "accuracy: {ok}/{n} = {:.1} % (with `unknown` above the threshold); nearest identity: {nearest}/{n} = {:.1} %",
        pct(ok, n),
        pct(nearest, n)
    );
    if args.enroll != 1 {
        let (one, _, _, t1) = one_run(&pipeline, &root, 1, args.threshold)?;
        let (ok1, near1) = correct(&one);
        let n1 = one.len();
        println!(
            "one-shot (one train/ photo per person, threshold {:.3}): {ok1}/{n1} = {:.1} %; nearest identity: {near1}/{n1} = {:.1} %",
            t1.value,
            pct(ok1, n1),
            pct(near1, n1)
        );
    }
    let tiles: Vec<_> = rows
        .iter()
        .map(|r| facenet_plot::Tile {
            face: &r.face,
            title: r.predicted.clone(),
            subtitle: match r.truth == r.predicted {
                true => format!("d={:.3}", r.distance),
                false => format!("d={:.3} (is {})", r.distance, r.truth),
            },
            ok: r.truth == r.predicted,
        })
        .collect();
    facenet_plot::contact_sheet(&args.sheet, &tiles)?;
    println!("contact sheet: {}", args.sheet.display());
    Ok(())
}
