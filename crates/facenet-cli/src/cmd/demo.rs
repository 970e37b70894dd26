//! `facenet demo`: the setup step if needed, then one-shot enrolment and identification on the
//! 5-celebrity sample dataset, with a contact sheet.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use facenet::Device;
use facenet::align::{AlignConfig, FaceSelection, align, select};
use facenet::detect::Detector;
use facenet_gallery::{GalleryStore, NewFace, SearchIndex, SqliteGallery};
use facenet_import::fetch::cache_dir;

use crate::cmd::recognize::{DEFAULT_THRESHOLD, Pipeline};
use crate::common::{DetectorArg, WeightsArg};

/// Arguments of `facenet demo`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Dataset with `train/person/*.jpg` and `val/person/*.jpg` (default: the sample dataset).
    #[arg(long)]
    pub dataset: Option<PathBuf>,
    /// Photos enrolled per person from train/ (1 = one-shot; 0 = all).
    #[arg(long, default_value_t = 1)]
    pub enroll: usize,
    /// Unknown above this L2 distance (unit embeddings, 0..2).
    #[arg(long, default_value_t = DEFAULT_THRESHOLD)]
    pub threshold: f32,
    /// Contact sheet PNG of the val faces with their predictions.
    #[arg(long, default_value = "demo.png")]
    pub sheet: PathBuf,
}

struct Row {
    file: String,
    truth: String,
    predicted: String,
    nearest: String,
    distance: f32,
    face: image::RgbImage,
}

pub fn run(args: Args, device: Device) -> anyhow::Result<()> {
    let paths = super::fetch::ensure(&cache_dir())?;
    let root = args.dataset.clone().unwrap_or_else(|| paths.dataset());
    let weights = WeightsArg {
        weights: Some(paths.weights()),
        precision: crate::common::PrecisionArg::F32,
    };
    let det_arg = DetectorArg {
        mtcnn: Some(paths.mtcnn_weights()),
    };
    let p = Pipeline::new(&weights, &det_arg, true, &device)?;
    let detector = det_arg.open(&device)?;

    // Enrol: the largest face of the first `enroll` photos of each person.
    let mut gallery = SqliteGallery::in_memory()?;
    let train = per_person(&root.join("train"), args.enroll)?;
    for (person, file) in &train {
        let Some(face) = face_of(&detector, file)? else {
            eprintln!("enroll: no face in {}, skipped", file.display());
            continue;
        };
        let e = p.embedder.embed(std::slice::from_ref(&face))?.remove(0);
        gallery.enroll(
            person,
            &[NewFace {
                embedding: e.normalized,
                source: file.display().to_string(),
                bbox: None,
            }],
            &p.model(),
        )?;
    }
    let ids = gallery.identities()?;
    if ids.is_empty() {
        bail!("nobody enrolled from {}", root.join("train").display());
    }
    let idx = SearchIndex::new(&gallery.faces(None)?);
    println!(
        "enrolled {} people from {} photo(s) ({} per person); threshold {:.2} (L2 between unit embeddings)",
        ids.len(),
        idx.len(),
        if args.enroll == 0 {
            "all".to_string()
        } else {
            args.enroll.to_string()
        },
        args.threshold
    );

    // Identify every val photo.
    let mut rows = Vec::new();
    for (person, file) in per_person(&root.join("val"), 0)? {
        let Some(face) = face_of(&detector, &file)? else {
            eprintln!("identify: no face in {}", file.display());
            continue;
        };
        let e = p.embedder.embed(std::slice::from_ref(&face))?.remove(0);
        let best = idx.search(&e.normalized, 1).remove(0);
        let nearest = best.identity.clone();
        let predicted = if best.distance < args.threshold {
            best.identity
        } else {
            "unknown".into()
        };
        rows.push(Row {
            file: file
                .file_name()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default(),
            truth: person,
            predicted,
            nearest,
            distance: best.distance,
            face,
        });
    }
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
    let correct = rows.iter().filter(|r| r.truth == r.predicted).count();
    let nearest = rows.iter().filter(|r| r.truth == r.nearest).count();
    let pct = |k: usize| 100.0 * k as f64 / rows.len().max(1) as f64;
    println!(
        "accuracy: {correct}/{} = {:.1} % (with `unknown` above the threshold); nearest identity: {nearest}/{} = {:.1} %",
        rows.len(),
        pct(correct),
        rows.len(),
        pct(nearest)
    );
    contact_sheet(&args.sheet, &rows)?;
    println!("contact sheet: {}", args.sheet.display());
    Ok(())
}

fn face_of(detector: &Detector, file: &Path) -> anyhow::Result<Option<image::RgbImage>> {
    let img = facenet::image::load_rgb(file)?;
    let found = detector.detect(&img)?;
    match select(&found, img.width(), img.height(), FaceSelection::Largest).pop() {
        Some(f) => Ok(Some(align(&img, &f, &AlignConfig::default())?)),
        None => Ok(None),
    }
}

/// The first `n` photos of each person (all when `n` is 0).
fn per_person(dir: &Path, n: usize) -> anyhow::Result<Vec<(String, PathBuf)>> {
    let mut seen: std::collections::HashMap<String, usize> = Default::default();
    Ok(super::align::dataset_files(dir)?
        .into_iter()
        .filter(|(person, _)| {
            let k = seen.entry(person.clone()).or_default();
            *k += 1;
            n == 0 || *k <= n
        })
        .collect())
}

/// A grid of the faces, each captioned with its prediction and distance; wrong ones framed red.
fn contact_sheet(path: &Path, rows: &[Row]) -> anyhow::Result<()> {
    use plotters::prelude::*;
    crate::plot::fonts();
    const TILE: u32 = 160;
    const CAPTION: u32 = 40;
    let cols = 5u32;
    let nrows = (rows.len() as u32).div_ceil(cols).max(1);
    let (w, h) = (cols * TILE, nrows * (TILE + CAPTION));
    let mut canvas = image::RgbImage::from_pixel(w, h, image::Rgb([255, 255, 255]));
    for (i, r) in rows.iter().enumerate() {
        let (x, y) = (
            (i as u32 % cols) * TILE,
            (i as u32 / cols) * (TILE + CAPTION),
        );
        image::imageops::replace(&mut canvas, &r.face, x as i64, y as i64);
        if r.truth != r.predicted {
            facenet::draw::rect(
                &mut canvas,
                [
                    x as f32,
                    y as f32,
                    (x + TILE - 1) as f32,
                    (y + TILE - 1) as f32,
                ],
                4,
                image::Rgb([220, 0, 0]),
            );
        }
    }
    {
        let mut buf = canvas.as_flat_samples_mut();
        let root = BitMapBackend::with_buffer(buf.as_mut_slice(), (w, h)).into_drawing_area();
        for (i, r) in rows.iter().enumerate() {
            let (x, y) = (
                (i as u32 % cols) * TILE,
                (i as u32 / cols) * (TILE + CAPTION) + TILE,
            );
            let ok = r.truth == r.predicted;
            let color = if ok {
                RGBColor(0, 110, 0)
            } else {
                RGBColor(200, 0, 0)
            };
            let style = ("sans-serif", 15).into_font().color(&color);
            root.draw_text(&r.predicted, &style, (x as i32 + 4, y as i32 + 3))
                .map_err(|e| anyhow::anyhow!("drawing {}: {e:?}", path.display()))?;
            let sub = format!(
                "d={:.3}{}",
                r.distance,
                if ok {
                    String::new()
                } else {
                    format!(" (is {})", r.truth)
                }
            );
            root.draw_text(
                &sub,
                &("sans-serif", 13).into_font().color(&BLACK),
                (x as i32 + 4, y as i32 + 21),
            )
            .map_err(|e| anyhow::anyhow!("drawing {}: {e:?}", path.display()))?;
        }
        root.present()
            .map_err(|e| anyhow::anyhow!("drawing {}: {e:?}", path.display()))?;
    }
    canvas
        .save(path)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
