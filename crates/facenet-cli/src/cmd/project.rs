//! `facenet project`: a 2-D picture of the embedding space. Embeds the aligned faces of the
//! people with the most images in a `person/*.png` folder and plots their first two principal
//! components, one colour per person. Before training, identities overlap; after, each forms
//! its own cluster.
//!
//! ```text
//! facenet project --images lfw-aligned/DevTest --people 10 --weights run/checkpoint/model.safetensors --out after.png
//! facenet project --images lfw-aligned/DevTest --people 10 --random small --out before.png
//! ```

use std::path::PathBuf;

use anyhow::{Context, bail};
use facenet::{Device, Embedder, InceptionResnetV1Config};

use crate::common::{WeightsArg, load_images};

/// Arguments of `facenet project`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Aligned faces, `person/*.png`.
    #[arg(long)]
    pub images: PathBuf,
    /// How many people (those with the most images; ties by name).
    #[arg(long, default_value_t = 10)]
    pub people: usize,
    /// Images per person at most.
    #[arg(long, default_value_t = 40)]
    pub per_person: usize,
    /// Use a randomly initialised network of this preset instead of weights (the "before
    /// training" picture): small, keras-128, facenet-512.
    #[arg(long, conflicts_with = "weights")]
    pub random: Option<String>,
    /// Seed of the random network.
    #[arg(long, default_value_t = 666)]
    pub seed: u64,
    /// Title above the plot.
    #[arg(long)]
    pub title: Option<String>,
    /// Output PNG.
    #[arg(long, default_value = "projection.png")]
    pub out: PathBuf,
    #[command(flatten)]
    pub weights: WeightsArg,
}

pub fn run(args: Args, device: Device) -> anyhow::Result<()> {
    let embedder = match &args.random {
        Some(preset) => {
            let cfg = InceptionResnetV1Config::preset(preset)
                .with_context(|| format!("--random {preset}: unknown preset"))?;
            device.seed(args.seed);
            let meta = facenet::weights::WeightsMetadata::random(cfg.clone());
            Embedder::new(cfg.init(&device), meta, device.clone())
        }
        None => args.weights.open(&device)?,
    };
    let mut people: Vec<(String, Vec<PathBuf>)> = std::fs::read_dir(&args.images)
        .with_context(|| format!("reading {}", args.images.display()))?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .map(|e| {
            let mut files = super::recognize::walk_images(&e.path());
            files.sort();
            (e.file_name().to_string_lossy().into_owned(), files)
        })
        .filter(|(_, f)| !f.is_empty())
        .collect();
    people.sort_by(|a, b| b.1.len().cmp(&a.1.len()).then(a.0.cmp(&b.0)));
    people.truncate(args.people.max(1));
    if people.len() < 2 {
        bail!(
            "{}: need at least two person folders with images",
            args.images.display()
        );
    }
    let mut labels = Vec::new();
    let mut points = Vec::new();
    for (i, (_, files)) in people.iter().enumerate() {
        let files = &files[..files.len().min(args.per_person.max(1))];
        let faces = load_images(files)?;
        for e in embedder.embed(&faces)? {
            labels.push(i);
            points.push(e.normalized);
        }
    }
    let xy = pca2(&points);
    let names: Vec<String> = people
        .iter()
        .map(|(n, f)| format!("{} ({})", n.replace('_', " "), f.len().min(args.per_person)))
        .collect();
    let title = args.title.clone().unwrap_or_else(|| match &args.random {
        Some(p) => format!("{p} network, random weights: PCA of unit embeddings"),
        None => "PCA of unit embeddings".into(),
    });
    let sep = separation(&points, &labels);
    crate::plot::scatter(&args.out, &title, &xy, &labels, &names)?;
    println!(
        "{} faces of {} people -> {}; mean distance to own centroid / to nearest other centroid: {:.3}",
        points.len(),
        people.len(),
        args.out.display(),
        sep
    );
    Ok(())
}

/// The first two principal components of the rows (power iteration with deflation on the
/// covariance; 128 x 128 at most, so no linear-algebra crate is needed for it).
fn pca2(rows: &[Vec<f32>]) -> Vec<(f64, f64)> {
    let d = rows[0].len();
    let n = rows.len() as f64;
    let mean: Vec<f64> = (0..d)
        .map(|j| rows.iter().map(|r| r[j] as f64).sum::<f64>() / n)
        .collect();
    let centred: Vec<Vec<f64>> = rows
        .iter()
        .map(|r| r.iter().zip(&mean).map(|(x, m)| *x as f64 - m).collect())
        .collect();
    let mut cov = vec![0.0f64; d * d];
    for r in &centred {
        for i in 0..d {
            for j in 0..d {
                cov[i * d + j] += r[i] * r[j];
            }
        }
    }
    let mut comps: Vec<Vec<f64>> = Vec::new();
    for c in 0..2 {
        let mut v: Vec<f64> = (0..d)
            .map(|i| 1.0 + ((i * 7 + c * 13) % 5) as f64)
            .collect();
        for _ in 0..500 {
            let mut w: Vec<f64> = (0..d)
                .map(|i| (0..d).map(|j| cov[i * d + j] * v[j]).sum())
                .collect();
            for p in &comps {
                let dot: f64 = w.iter().zip(p).map(|(a, b)| a * b).sum();
                w.iter_mut().zip(p).for_each(|(a, b)| *a -= dot * b);
            }
            let norm = w.iter().map(|x| x * x).sum::<f64>().sqrt().max(1e-30);
            v = w.into_iter().map(|x| x / norm).collect();
        }
        comps.push(v);
    }
    centred
        .iter()
        .map(|r| {
            let p = |c: &Vec<f64>| r.iter().zip(c).map(|(a, b)| a * b).sum::<f64>();
            (p(&comps[0]), p(&comps[1]))
        })
        .collect()
}

/// Mean distance of a face to its own person's centroid divided by the mean distance to the
/// nearest other centroid (in the full embedding space): below 1, people are separable.
fn separation(points: &[Vec<f32>], labels: &[usize]) -> f64 {
    let k = labels.iter().max().map_or(0, |m| m + 1);
    let d = points[0].len();
    let mut cent = vec![vec![0.0f64; d]; k];
    let mut count = vec![0usize; k];
    for (p, &l) in points.iter().zip(labels) {
        cent[l].iter_mut().zip(p).for_each(|(c, x)| *c += *x as f64);
        count[l] += 1;
    }
    for (c, n) in cent.iter_mut().zip(&count) {
        c.iter_mut().for_each(|x| *x /= *n as f64);
    }
    let dist = |p: &[f32], c: &[f64]| {
        p.iter()
            .zip(c)
            .map(|(a, b)| (*a as f64 - b).powi(2))
            .sum::<f64>()
            .sqrt()
    };
    let (mut own, mut other) = (0.0, 0.0);
    for (p, &l) in points.iter().zip(labels) {
        own += dist(p, &cent[l]);
        other += (0..k)
            .filter(|&j| j != l)
            .map(|j| dist(p, &cent[j]))
            .fold(f64::INFINITY, f64::min);
    }
    own / other
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pca_finds_the_spread_axis() {
        // Points along (1, 1, 0) with small noise on z: the first component is that axis.
        let rows: Vec<Vec<f32>> = (0..20)
            .map(|i| {
                let t = i as f32 - 10.0;
                vec![t, t, 0.01 * (i % 3) as f32]
            })
            .collect();
        let xy = pca2(&rows);
        let spread0 = xy.iter().map(|p| p.0 * p.0).sum::<f64>();
        let spread1 = xy.iter().map(|p| p.1 * p.1).sum::<f64>();
        assert!(spread0 > 1e4 * spread1, "{spread0} vs {spread1}");
        // The projection preserves distances along the axis: t runs over -10..=9 (mean
        // -0.5), so the first point sits 9.5 * sqrt(2) from the centre.
        assert!(
            (xy[0].0.abs() - 9.5 * 2f64.sqrt()).abs() < 1e-3,
            "{:?}",
            xy[0]
        );
    }

    #[test]
    fn separation_is_small_for_tight_clusters() {
        let pts = vec![
            vec![1.0, 0.0],
            vec![0.99, 0.01],
            vec![0.0, 1.0],
            vec![0.01, 0.99],
        ];
        assert!(separation(&pts, &[0, 0, 1, 1]) < 0.05);
        assert!(separation(&pts, &[0, 1, 0, 1]) > 0.5);
    }
}
