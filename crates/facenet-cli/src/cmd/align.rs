//! `facenet align`: the dataset aligner (like davidsandberg's `align_dataset_mtcnn`).

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{Context, bail};
use facenet::Device;
use facenet::align::{AlignConfig, AlignMethod, FaceSelection, align, select};
use indicatif::{ProgressBar, ProgressStyle};

use crate::common::DetectorArg;

/// Arguments of `facenet align`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Folder of `person/*.jpg` photos.
    pub input: PathBuf,
    /// Output folder; `person/` folders are mirrored, faces written as PNG.
    pub output: PathBuf,
    /// Output side in pixels.
    #[arg(long, default_value_t = 160)]
    pub size: u32,
    /// Margin around the box, in source pixels (half per side; `crop` only).
    #[arg(long, default_value_t = 32)]
    pub margin: u32,
    /// crop: box + margin, resized (what FaceNet was trained on); similarity: 5-landmark warp.
    #[arg(long, value_enum, default_value = "crop")]
    pub method: Method,
    /// Which face of a photo: largest, center-weighted (davidsandberg's rule) or all.
    #[arg(long, value_enum, default_value = "largest")]
    pub select: Select,
    /// Exit with status 1 if any photo had no face or could not be read.
    #[arg(long)]
    pub strict: bool,
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    #[command(flatten)]
    pub detector: DetectorArg,
}

/// `--method`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Method {
    /// Box + margin, resized.
    Crop,
    /// Five-landmark similarity transform.
    Similarity,
}

/// `--select`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Select {
    /// Largest box.
    Largest,
    /// Largest area minus twice the squared offset from the image centre.
    CenterWeighted,
    /// Every face (`name_0.png`, `name_1.png`, ...).
    All,
}

impl From<Method> for AlignMethod {
    fn from(m: Method) -> Self {
        match m {
            Method::Crop => AlignMethod::Crop,
            Method::Similarity => AlignMethod::Similarity,
        }
    }
}

impl From<Select> for FaceSelection {
    fn from(s: Select) -> Self {
        match s {
            Select::Largest => FaceSelection::Largest,
            Select::CenterWeighted => FaceSelection::CenterWeighted,
            Select::All => FaceSelection::All,
        }
    }
}

const IMAGE_EXTENSIONS: &[&str] = &["jpg", "jpeg", "png", "bmp", "webp", "tif", "tiff", "gif"];

/// `person/*.ext` files of a dataset folder, sorted.
pub fn dataset_files(dir: &Path) -> anyhow::Result<Vec<(String, PathBuf)>> {
    let mut people: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    people.sort();
    let mut out = Vec::new();
    for p in people {
        let name = p
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut files: Vec<PathBuf> = std::fs::read_dir(&p)
            .with_context(|| format!("reading {}", p.display()))?
            .flatten()
            .map(|e| e.path())
            .filter(|f| {
                f.is_file()
                    && f.extension().and_then(|e| e.to_str()).is_some_and(|e| {
                        IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str())
                    })
            })
            .collect();
        files.sort();
        out.extend(files.into_iter().map(|f| (name.clone(), f)));
    }
    Ok(out)
}

#[derive(Default)]
struct Summary {
    aligned: AtomicUsize,
    skipped_existing: AtomicUsize,
    no_face: Mutex<Vec<PathBuf>>,
    errors: Mutex<Vec<(PathBuf, String)>>,
}

pub fn run(args: Args, device: Device) -> anyhow::Result<()> {
    if !args.input.is_dir() {
        bail!("{}: not a folder of person/ folders", args.input.display());
    }
    let files = dataset_files(&args.input)?;
    if files.is_empty() {
        bail!("{}: no person/*.jpg images found", args.input.display());
    }
    let cfg = AlignConfig {
        method: args.method.into(),
        size: args.size,
        margin: args.margin,
    };
    let selection: FaceSelection = args.select.into();
    let threads = args
        .threads
        .unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        })
        .max(1);
    let bar = ProgressBar::new(files.len() as u64).with_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} photos  {elapsed} (eta {eta})  {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let summary = Summary::default();
    let next = AtomicUsize::new(0);
    let detectors = (0..threads)
        .map(|_| args.detector.open(&device))
        .collect::<anyhow::Result<Vec<_>>>()?;
    std::thread::scope(|scope| {
        for detector in &detectors {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some((person, path)) = files.get(i) else {
                        break;
                    };
                    let stem = path
                        .file_stem()
                        .map(|s| s.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    let dir = args.output.join(person);
                    let single = dir.join(format!("{stem}.png"));
                    let first_multi = dir.join(format!("{stem}_0.png"));
                    if single.exists() || first_multi.exists() {
                        summary.skipped_existing.fetch_add(1, Ordering::Relaxed);
                        bar.inc(1);
                        continue;
                    }
                    let result = (|| -> anyhow::Result<usize> {
                        let img = facenet::image::load_rgb(path)?;
                        let faces = detector.detect(&img)?;
                        let picked = select(&faces, img.width(), img.height(), selection);
                        if picked.is_empty() {
                            return Ok(0);
                        }
                        std::fs::create_dir_all(&dir)
                            .with_context(|| format!("creating {}", dir.display()))?;
                        for (k, face) in picked.iter().enumerate() {
                            let out = align(&img, face, &cfg)?;
                            let dest = if selection == FaceSelection::All {
                                dir.join(format!("{stem}_{k}.png"))
                            } else {
                                single.clone()
                            };
                            save_atomic(&out, &dest)?;
                        }
                        Ok(picked.len())
                    })();
                    match result {
                        Ok(0) => summary
                            .no_face
                            .lock()
                            .map(|mut v| v.push(path.clone()))
                            .unwrap_or(()),
                        Ok(_) => {
                            summary.aligned.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => summary
                            .errors
                            .lock()
                            .map(|mut v| v.push((path.clone(), format!("{e:#}"))))
                            .unwrap_or(()),
                    }
                    bar.inc(1);
                }
            });
        }
    });
    bar.finish_and_clear();
    let no_face = summary.no_face.into_inner().unwrap_or_default();
    let errors = summary.errors.into_inner().unwrap_or_default();
    for p in &no_face {
        eprintln!("no face: {}", p.display());
    }
    for (p, e) in &errors {
        eprintln!("error: {}: {e}", p.display());
    }
    let aligned = summary.aligned.into_inner();
    let kept = summary.skipped_existing.into_inner();
    let text = format!(
        "processed {}  aligned {aligned}  already done {kept}  no face {}  errors {}",
        files.len(),
        no_face.len(),
        errors.len()
    );
    println!("{text}");
    std::fs::create_dir_all(&args.output)?;
    let report = serde_json::json!({
        "processed": files.len(),
        "aligned": aligned,
        "already_done": kept,
        "no_face": no_face.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
        "errors": errors.iter().map(|(p, e)| serde_json::json!({"path": p.display().to_string(), "error": e})).collect::<Vec<_>>(),
        "settings": {"size": cfg.size, "margin": cfg.margin, "method": cfg.method, "select": selection},
    });
    let summary_path = args.output.join("align_summary.json");
    std::fs::write(&summary_path, serde_json::to_string_pretty(&report)?)
        .with_context(|| format!("writing {}", summary_path.display()))?;
    if args.strict && (!no_face.is_empty() || !errors.is_empty()) {
        bail!(
            "{} photo(s) without a face, {} error(s) (--strict)",
            no_face.len(),
            errors.len()
        );
    }
    Ok(())
}

/// Writes a PNG through a temporary file and a rename, so an interrupted run never leaves a
/// half-written face that a resumed run would then keep.
fn save_atomic(img: &image::RgbImage, dest: &Path) -> anyhow::Result<()> {
    let tmp = dest.with_extension("png.tmp");
    img.save_with_format(&tmp, image::ImageFormat::Png)
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, dest).with_context(|| format!("writing {}", dest.display()))?;
    Ok(())
}
