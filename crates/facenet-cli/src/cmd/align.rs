//! `facenet align`: the dataset aligner (like davidsandberg's `align_dataset_mtcnn`).

use std::path::PathBuf;

use anyhow::bail;
use facenet::Device;
use facenet::align::{AlignConfig, AlignMethod, FaceSelection};
use facenet::pipeline::{AlignOutcome, DetectorPool, align_dataset};

use crate::common::{DetectorArg, bar};

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
    pub method: AlignMethod,
    /// Which face of a photo: largest, center-weighted (davidsandberg's rule), primary
    /// (confidence first, then centre-weighted) or all.
    #[arg(long, value_enum, default_value = "largest")]
    pub select: FaceSelection,
    /// Exit with status 1 if any photo had no face or could not be read.
    #[arg(long)]
    pub strict: bool,
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    #[command(flatten)]
    pub detector: DetectorArg,
}

pub fn run(args: Args, device: Device) -> anyhow::Result<()> {
    if !args.input.is_dir() {
        bail!("{}: not a folder of person/ folders", args.input.display());
    }
    let files = facenet::files::dataset_files(&args.input)?;
    if files.is_empty() {
        bail!("{}: no person/*.jpg images found", args.input.display());
    }
    let cfg = AlignConfig {
        method: args.method,
        size: args.size,
        margin: args.margin,
    };
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let pool = DetectorPool::open(&args.detector.path()?, &device, threads)?;
    let pb = bar(
        files.len(),
        "{bar:40} {pos}/{len} photos  {elapsed} (eta {eta})  {msg}",
    );
    let outcomes = align_dataset(&pool, &files, &args.output, &cfg, args.select, &|| {
        pb.inc(1)
    });
    pb.finish_and_clear();
    let (mut aligned, mut kept, mut no_face, mut errors) = (0, 0, Vec::new(), Vec::new());
    for ((_, path), o) in files.iter().zip(outcomes) {
        match o {
            AlignOutcome::Aligned(_) => aligned += 1,
            AlignOutcome::AlreadyDone => kept += 1,
            AlignOutcome::NoFace => {
                eprintln!("no face: {}", path.display());
                no_face.push(path.display().to_string());
            }
            AlignOutcome::Failed(e) => {
                let e = format!("{:#}", anyhow::Error::from(e));
                eprintln!("error: {}: {e}", path.display());
                errors.push(serde_json::json!({"path": path.display().to_string(), "error": e}));
            }
        }
    }
    println!(
        "processed {}  aligned {aligned}  already done {kept}  no face {}  errors {}",
        files.len(),
        no_face.len(),
        errors.len()
    );
    let report = serde_json::json!({
        "processed": files.len(), "aligned": aligned, "already_done": kept,
        "no_face": no_face, "errors": errors,
        "settings": {"size": cfg.size, "margin": cfg.margin, "method": cfg.method, "select": args.select},
    });
    facenet::files::write_json_atomic(&args.output.join("align_summary.json"), &report)?;
    if args.strict && (!no_face.is_empty() || !errors.is_empty()) {
        bail!(
            "{} photo(s) without a face, {} error(s) (--strict)",
            no_face.len(),
            errors.len()
        );
    }
    Ok(())
}
