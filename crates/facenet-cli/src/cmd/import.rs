//! `facenet import-weights`.

use std::path::PathBuf;

use anyhow::{Context, anyhow};
use facenet::{InceptionResnetV1Config, Standardization};

/// Arguments of `facenet import-weights`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The Keras model file (.h5).
    pub h5: PathBuf,
    /// Output safetensors file (default: the input with extension .safetensors).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Network preset the file holds: keras-128, facenet-512 or small.
    #[arg(long, default_value = "keras-128")]
    pub model: String,
    /// Standardization the model was trained with (recorded in the file).
    #[arg(long, default_value = "prewhiten")]
    pub standardization: String,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let cfg = InceptionResnetV1Config::preset(&args.model).ok_or_else(|| {
        anyhow!(
            "--model {}: unknown preset (keras-128, facenet-512, small)",
            args.model
        )
    })?;
    let standardization = Standardization::from_name(&args.standardization).ok_or_else(|| {
        anyhow!(
            "--standardization {}: unknown (prewhiten, fixed, unit)",
            args.standardization
        )
    })?;
    let out = args
        .out
        .unwrap_or_else(|| args.h5.with_extension("safetensors"));
    let rep = facenet_import::import_keras(&args.h5, &out, &cfg, standardization)
        .with_context(|| format!("importing {}", args.h5.display()))?;
    println!(
        "{} -> {}: {} Keras tensors, {} burn tensors, {} values, keras {}, fingerprint {}",
        args.h5.display(),
        out.display(),
        rep.keras_tensors,
        rep.written_tensors,
        rep.values,
        rep.keras_version.as_deref().unwrap_or("?"),
        &rep.metadata.fingerprint[..16]
    );
    Ok(())
}
