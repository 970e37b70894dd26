//! `facenet demo`: fetch if needed, embed sample faces, print their distance matrix.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use facenet::align::{AlignConfig, FaceSelection, align, select};
use facenet::detect::Detector;
use facenet::{Device, Distance, Embedder};
use facenet_import::fetch::cache_dir;

/// Arguments of `facenet demo`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Folder of `person/*.jpg` photos (default: the sample dataset's val/ photos).
    #[arg(long)]
    pub images: Option<PathBuf>,
    /// Photos per person.
    #[arg(long, default_value_t = 2)]
    pub per_person: usize,
}

pub fn run(args: Args, device: Device) -> anyhow::Result<()> {
    let paths = super::fetch::ensure(&cache_dir())?;
    let dir = args.images.unwrap_or_else(|| paths.dataset().join("val"));
    let samples = collect(&dir, args.per_person)?;
    if samples.is_empty() {
        bail!("{}: no person/*.jpg images", dir.display());
    }
    let embedder = Embedder::open(&paths.weights(), &device)
        .with_context(|| format!("loading {}", paths.weights().display()))?;
    let detector = Detector::open(&paths.mtcnn_weights(), &device)
        .with_context(|| format!("loading {}", paths.mtcnn_weights().display()))?;
    let mut faces = Vec::new();
    for (_, p) in &samples {
        let img = facenet::image::load_rgb(p)?;
        let found = detector.detect(&img)?;
        let Some(face) = select(&found, img.width(), img.height(), FaceSelection::Largest).pop()
        else {
            bail!("{}: no face found", p.display());
        };
        faces.push(align(&img, &face, &AlignConfig::default())?);
    }
    let embs = embedder.embed(&faces)?;
    let labels: Vec<String> = samples
        .iter()
        .enumerate()
        .map(|(i, (person, _))| format!("{}{}", short(person), i % args.per_person.max(1) + 1))
        .collect();
    println!("{}", Distance::L2.unit());
    print!("{:>10}", "");
    for l in &labels {
        print!("{l:>10}");
    }
    println!();
    let (mut same, mut diff) = (Vec::new(), Vec::new());
    for (i, a) in embs.iter().enumerate() {
        print!("{:>10}", labels[i]);
        for (j, b) in embs.iter().enumerate() {
            let d = a.distance(b, Distance::L2);
            print!("{d:>10.3}");
            if i < j {
                if samples[i].0 == samples[j].0 {
                    &mut same
                } else {
                    &mut diff
                }
                .push(d);
            }
        }
        println!();
    }
    let mean = |v: &[f32]| v.iter().sum::<f32>() / v.len().max(1) as f32;
    println!(
        "mean distance: same person {:.3} ({} pairs), different people {:.3} ({} pairs)",
        mean(&same),
        same.len(),
        mean(&diff),
        diff.len()
    );
    Ok(())
}

fn short(name: &str) -> String {
    name.split('_')
        .next()
        .unwrap_or(name)
        .chars()
        .take(8)
        .collect()
}

/// The first `per_person` photos of each person.
fn collect(dir: &Path, per_person: usize) -> anyhow::Result<Vec<(String, PathBuf)>> {
    let mut seen: std::collections::HashMap<String, usize> = Default::default();
    Ok(super::align::dataset_files(dir)?
        .into_iter()
        .filter(|(person, _)| {
            let n = seen.entry(person.clone()).or_default();
            *n += 1;
            *n <= per_person
        })
        .collect())
}
