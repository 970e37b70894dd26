//! `facenet detect`: faces with boxes, scores and landmarks.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use facenet::Device;
use facenet::detect::Detection;
use facenet::landmarks::{FaceParts, ShapePredictor};

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
    /// Landmarks per face: MTCNN's 5, or 68 from dlib's shape predictor placed on them
    /// (`facenet fetch --landmarks` first). With 68, the JSON gains "landmarks68" (the points)
    /// and "parts" (face_recognition's names: chin, left_eyebrow, ..., bottom_lip).
    #[arg(long, value_enum, default_value = "5")]
    pub landmarks: Landmarks,
    #[command(flatten)]
    pub detector: DetectorArg,
}

/// How many landmarks `facenet detect` gives per face.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Landmarks {
    /// MTCNN's five points.
    #[value(name = "5")]
    Five,
    /// dlib's 68 points.
    #[value(name = "68")]
    SixtyEight,
}

pub fn run(args: Args, device: Device) -> anyhow::Result<()> {
    let shapes = match args.landmarks {
        Landmarks::Five => None,
        Landmarks::SixtyEight => Some(ShapePredictor::open_cached()?),
    };
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
        let points: Vec<Option<Vec<[f32; 2]>>> = faces
            .iter()
            .map(|f| {
                shapes
                    .as_ref()
                    .and_then(|s| s.predict_from_five(&img, &f.landmarks))
            })
            .collect();
        if args.json {
            let line = serde_json::json!({
                "path": display(path),
                "width": img.width(),
                "height": img.height(),
                "faces": faces
                    .iter()
                    .zip(&points)
                    .map(|(f, p)| face_json(&img, f, p.as_deref()))
                    .collect::<Vec<_>>(),
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
            for (f, p) in faces.iter().zip(&points) {
                match p {
                    Some(points) => facenet::draw::detection_shape(&mut canvas, f, points),
                    None => facenet::draw::detection(&mut canvas, f),
                }
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

fn face_json(
    img: &image::RgbImage,
    f: &Detection,
    points: Option<&[[f32; 2]]>,
) -> serde_json::Value {
    let mut v = serde_json::json!({
        "box": f.bbox, "score": f.score, "landmarks": f.landmarks,
        "quality": f.quality(img),
    });
    if let Some(p) = points {
        v["landmarks68"] = serde_json::json!(p);
        v["parts"] = serde_json::json!(FaceParts::from_points(p));
    }
    v
}
