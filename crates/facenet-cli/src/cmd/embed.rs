//! `facenet embed` and `facenet compare`.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use facenet::{Device, Distance};

use facenet::align::{AlignConfig, align};

use crate::common::{DetectorArg, Preprocess, WeightsArg, display, load_images};

/// Arguments of `facenet embed`.
#[derive(Debug, clap::Args)]
pub struct EmbedArgs {
    /// Face images (aligned crops; other sizes are resized to the network's input).
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
    /// Pixel standardization; `auto` uses the one the weights were trained with.
    #[arg(long = "preprocess", value_enum, default_value = "auto")]
    pub preprocess: Preprocess,
    /// Faces per forward pass.
    #[arg(long, default_value_t = 16)]
    pub batch: usize,
    /// Print the raw bottleneck output instead of the L2-normalized embedding.
    #[arg(long)]
    pub raw: bool,
    /// The images are photos: detect every face (MTCNN), crop it (margin 32, 160x160) and
    /// print one line per face with its box.
    #[arg(long)]
    pub detect: bool,
    #[command(flatten)]
    pub weights: WeightsArg,
    #[command(flatten)]
    pub detector: DetectorArg,
}

pub fn run_embed(args: EmbedArgs, device: Device) -> anyhow::Result<()> {
    let embedder = args.weights.open(&device)?;
    let std = args.preprocess.resolve(embedder.standardization());
    let embedder = embedder
        .with_standardization(std)
        .with_batch_size(args.batch);
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if args.detect {
        let detector = args.detector.open(&device)?;
        let cfg = AlignConfig::default();
        for path in &args.images {
            let img = facenet::image::load_rgb(path)?;
            let faces = detector
                .detect(&img)
                .with_context(|| format!("detecting faces in {}", path.display()))?;
            if faces.is_empty() {
                eprintln!("{}: no face found", path.display());
                continue;
            }
            let crops = faces
                .iter()
                .map(|f| align(&img, f, &cfg))
                .collect::<Result<Vec<_>, _>>()?;
            let embs = embedder.embed(&crops).context("running the network")?;
            for (i, (f, e)) in faces.iter().zip(embs).enumerate() {
                let v = if args.raw { e.raw } else { e.normalized };
                let line = serde_json::json!({
                    "path": display(path), "face": i, "box": f.bbox, "score": f.score, "embedding": v
                });
                writeln!(out, "{line}")?;
            }
        }
        return Ok(());
    }
    for chunk in args.images.chunks(args.batch.max(1)) {
        let faces = load_images(chunk)?;
        let embs = embedder.embed(&faces).context("running the network")?;
        for (path, e) in chunk.iter().zip(embs) {
            let v = if args.raw { e.raw } else { e.normalized };
            let line = serde_json::json!({ "path": display(path), "embedding": v });
            writeln!(out, "{line}")?;
        }
    }
    Ok(())
}

/// Arguments of `facenet compare`.
#[derive(Debug, clap::Args)]
pub struct CompareArgs {
    /// First face image.
    pub a: PathBuf,
    /// Second face image.
    pub b: PathBuf,
    /// Pixel standardization.
    #[arg(long = "preprocess", value_enum, default_value = "auto")]
    pub preprocess: Preprocess,
    #[command(flatten)]
    pub weights: WeightsArg,
}

pub fn run_compare(args: CompareArgs, device: Device) -> anyhow::Result<()> {
    let embedder = args.weights.open(&device)?;
    let std = args.preprocess.resolve(embedder.standardization());
    let embedder = embedder.with_standardization(std);
    let faces = load_images(&[args.a.clone(), args.b.clone()])?;
    let e = embedder.embed(&faces)?;
    let d = e[0].distance(&e[1], Distance::L2);
    println!("{d:.4}");
    eprintln!(
        "unit: {}; preprocessing: {}",
        Distance::L2.unit(),
        std.name()
    );
    Ok(())
}
