//! `facenet detect`: faces with boxes, scores and landmarks.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use facenet::Device;
use facenet::detect::Detection;

use crate::common::{DetectorArg, display};

/// Arguments of `facenet detect`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Photos.
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
    /// One JSON object per image: {"path", "width", "height", "faces": [{box, score, landmarks,
    /// quality}]}.
    #[arg(long)]
    pub json: bool,
    /// Write a PNG per image into this folder with boxes and landmarks drawn.
    #[arg(long)]
    pub annotate: Option<PathBuf>,
    #[command(flatten)]
    pub detector: DetectorArg,
}

pub fn run(args: Args, device: Device) -> anyhow::Result<()> {
    let detector = args.detector.open(&device)?;
    if let Some(dir) = &args.annotate {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for path in &args.images {
        let img = facenet::image::load_rgb(path)?;
        let mut faces = detector
            .detect(&img)
            .with_context(|| format!("detecting faces in {}", path.display()))?;
        // The order of every front: `--face N` of enroll and compare counts in it.
        facenet::align::order(&mut faces, img.width(), img.height());
        if args.json {
            let line = serde_json::json!({
                "path": display(path),
                "width": img.width(),
                "height": img.height(),
                "faces": faces.iter().map(|f| face_json(&img, f)).collect::<Vec<_>>(),
            });
            writeln!(out, "{line}")?;
        } else {
            writeln!(out, "{}: {} face(s)", display(path), faces.len())?;
            for (i, f) in faces.iter().enumerate() {
                let q = f.quality(&img);
                writeln!(out, "  #{i} {f} {q}")?;
            }
        }
        if let Some(dir) = &args.annotate {
            let mut canvas = img.clone();
            for f in &faces {
                facenet::draw::detection(&mut canvas, f);
            }
            let stem = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "image".into());
            let dest = dir.join(format!("{stem}.png"));
            canvas
                .save(&dest)
                .with_context(|| format!("writing {}", dest.display()))?;
        }
    }
    Ok(())
}

fn face_json(img: &image::RgbImage, f: &Detection) -> serde_json::Value {
    serde_json::json!({
        "box": f.bbox, "score": f.score, "landmarks": f.landmarks,
        "quality": f.quality(img),
    })
}
