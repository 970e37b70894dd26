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

use anyhow::bail;
use facenet::model::Preset;
use facenet::{Device, Embedder};

use crate::common::WeightsArg;

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
    #[arg(long, value_enum, conflicts_with = "weights")]
    pub random: Option<Preset>,
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
    let embedder = match args.random {
        Some(preset) => {
            let cfg = preset.config();
            device.seed(args.seed);
            let meta = facenet::weights::WeightsMetadata::random(cfg.clone());
            Embedder::new(cfg.init(&device), meta, device.clone())?
        }
        None => args.weights.open(&device)?,
    };
    let mut people: Vec<(String, Vec<PathBuf>)> = Vec::new();
    for (person, file) in facenet::files::dataset_files(&args.images)? {
        match people.last_mut() {
            Some((p, files)) if *p == person => files.push(file),
            _ => people.push((person, vec![file])),
        }
    }
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
        let faces = files
            .iter()
            .map(|f| facenet::image::load_face(f))
            .collect::<Result<Vec<_>, _>>()?;
        for e in embedder.embed(&faces)? {
            labels.push(i);
            points.push(e.normalized);
        }
    }
    let xy = facenet::eval::pca::pca2(&points);
    let names: Vec<String> = people
        .iter()
        .map(|(n, f)| format!("{} ({})", n.replace('_', " "), f.len().min(args.per_person)))
        .collect();
    let title = args.title.clone().unwrap_or_else(|| match &args.random {
        Some(p) => format!(
            "{} network, random weights: PCA of unit embeddings",
            p.name()
        ),
        None => "PCA of unit embeddings".into(),
    });
    let sep = facenet::eval::pca::separation(&points, &labels);
    facenet_plot::scatter(&args.out, &title, &xy, &labels, &names)?;
    println!(
        "{} faces of {} people -> {}; mean distance to own centroid / to nearest other centroid: {:.3}",
        points.len(),
        people.len(),
        args.out.display(),
        sep
    );
    Ok(())
}
