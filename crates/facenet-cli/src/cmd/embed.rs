//! `facenet embed` and `facenet compare`.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use facenet::{Device, Distance};

use crate::common::{PipelineArgs, display};

/// Arguments of `facenet embed`.
#[derive(Debug, clap::Args)]
pub struct EmbedArgs {
    /// Face images (aligned crops; other sizes are resized to the network's input), or photos
    /// with --detect.
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
    /// Faces per forward pass.
    #[arg(long, default_value_t = 16)]
    pub batch: usize,
    /// Print the raw bottleneck output instead of the L2-normalized embedding (crops only).
    #[arg(long, conflicts_with = "detect")]
    pub raw: bool,
    /// The images are photos: detect every face (MTCNN), crop it (margin 32, 160x160) and
    /// print one line per face with its box and score.
    #[arg(long)]
    pub detect: bool,
    #[command(flatten)]
    pub pipeline: PipelineArgs,
}

pub fn run_embed(mut args: EmbedArgs, device: Device) -> anyhow::Result<()> {
    args.pipeline.aligned = !args.detect;
    let p = args.pipeline.open(&device)?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if args.detect {
        for path in &args.images {
            let faces = p.faces_in_file(path)?;
            if faces.is_empty() {
                eprintln!("{}: no face found", path.display());
            }
            for (i, f) in faces.into_iter().enumerate() {
                let d = f.detection;
                let line = serde_json::json!({
                    "path": display(path), "face": i, "box": d.map(|d| d.bbox),
                    "score": d.map(|d| d.score), "quality": f.quality,
                    "embedding": f.embedding
                });
                writeln!(out, "{line}")?;
            }
        }
        return Ok(());
    }
    let embedder = p.embedder();
    for chunk in args.images.chunks(args.batch.max(1)) {
        let faces = chunk
            .iter()
            .map(|path| p.load(path))
            .collect::<Result<Vec<_>, _>>()?;
        let embs = embedder.embed(&faces).context("running the network")?;
        for (path, e) in chunk.iter().zip(embs) {
            let v = if args.raw { e.raw } else { e.normalized };
            writeln!(
                out,
                "{}",
                serde_json::json!({ "path": display(path), "embedding": v })
            )?;
        }
    }
    Ok(())
}

/// Arguments of `facenet compare`.
#[derive(Debug, clap::Args)]
pub struct CompareArgs {
    /// First face image (an aligned crop; a photo with --detect).
    pub a: PathBuf,
    /// Second face image.
    pub b: PathBuf,
    /// The images are photos: compare the face of each (detected and aligned).
    #[arg(long)]
    pub detect: bool,
    #[command(flatten)]
    pub pipeline: PipelineArgs,
}

pub fn run_compare(mut args: CompareArgs, device: Device) -> anyhow::Result<()> {
    args.pipeline.aligned = !args.detect;
    let p = args.pipeline.open(&device)?;
    let choice = facenet::pipeline::FaceChoice::Primary;
    let a = p.face_in_file(&args.a, choice)?;
    let b = p.face_in_file(&args.b, choice)?;
    let d = Distance::L2.between(&a.embedding, &b.embedding);
    println!("{d:.4}");
    eprintln!(
        "unit: {}; preprocessing: {}",
        Distance::L2.unit(),
        p.embedder().standardization().name()
    );
    Ok(())
}
