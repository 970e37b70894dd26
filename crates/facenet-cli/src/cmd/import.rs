//! `facenet import-weights`.

use std::path::PathBuf;

use anyhow::Context;
use facenet::Standardization;
use facenet::model::Preset;

/// Arguments of `facenet import-weights`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The Keras model file (.h5).
    pub h5: PathBuf,
    /// Output safetensors file (default: the input with extension .safetensors).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Network preset the file holds.
    #[arg(long, value_enum, default_value = "keras-128")]
    pub model: Preset,
    /// Standardization the model was trained with (recorded in the file).
    #[arg(long, value_enum, default_value = "prewhiten")]
    pub standardization: Standardization,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let cfg = args.model.config();
    let standardization = args.standardization;
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
