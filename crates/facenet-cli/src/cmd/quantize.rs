//! `facenet quantize`: the int8 calibration of the embedding network, written beside the
//! weights, where `--precision int8` finds it.
//!
//! ```text
//! facenet quantize --pairs ../shared/data/lfw-protocol/pairsDevTrain.txt \
//!     --exclude ../shared/data/lfw-protocol/pairs.txt --images ../shared/data/lfw
//! facenet embed --precision int8 face.jpg
//! ```

use std::path::PathBuf;

use anyhow::Context;
use facenet::eval::Pairs;
use facenet::eval::calibrate::calibrate_on_pairs;
use facenet::eval::protocol::ProtocolConfig;
use facenet::quantize::Int8Calibration;
use facenet::{Device, Embedder};

use crate::common::{DetectorArg, PhaseBar, bar};

/// Arguments of `facenet quantize`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Pairs file whose images calibrate (LFW's pairsDevTrain.txt: none of them is in the
    /// 10-fold test).
    #[arg(long)]
    pub pairs: PathBuf,
    /// Image folder (`person/person_0001.jpg`).
    #[arg(long)]
    pub images: PathBuf,
    /// Leave out the images of this pairs file (LFW's pairs.txt, so that the 10-fold test
    /// sees no calibration face).
    #[arg(long)]
    pub exclude: Option<PathBuf>,
    /// How many faces, evenly spaced over the pairs file's images.
    #[arg(long, default_value_t = 300)]
    pub count: usize,
    /// The images are already aligned face crops: skip detection.
    #[arg(long)]
    pub aligned: bool,
    /// Weights file (default: facenet_keras.safetensors in the cache).
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// Where to write the calibration (default: beside the weights, `<stem>.int8.json`,
    /// where `--precision int8` looks).
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub detector: DetectorArg,
}

pub fn run(args: Args, device: Device) -> anyhow::Result<()> {
    let weights = crate::common::WeightsArg {
        mirror: false,
        weights: args.weights.clone(),
        precision: crate::common::PrecisionArg::F32,
    }
    .path()?;
    let mut embedder = Embedder::open(&weights, &device)
        .with_context(|| format!("loading weights from {}", weights.display()))?;
    let pool = args.detector.pool(&device, args.aligned)?;
    let cfg = ProtocolConfig {
        aligned: args.aligned,
        ..ProtocolConfig::lfw(args.images.clone())
    };
    let pairs = Pairs::read(&args.pairs)?;
    let exclude = args.exclude.as_deref().map(Pairs::read).transpose()?;
    let pb = PhaseBar(bar(0, "{bar:40} {pos}/{len} {msg} {elapsed}"));
    let cal = calibrate_on_pairs(
        &mut embedder,
        &pairs,
        exclude.as_ref(),
        &cfg,
        pool.as_ref(),
        args.count,
        &pb,
    )?;
    pb.0.finish_and_clear();
    let out = args
        .out
        .unwrap_or_else(|| Int8Calibration::path_for(&weights));
    cal.save(&out)?;
    let mut int8 = embedder
        .with_int8(&cal)
        .context("applying the calibration")?;
    println!(
        "calibrated on {}: {} of the network's convolutions run int8 products ({})\nwritten to {}",
        cal.source,
        int8.int8_convolutions(),
        int8.engine(),
        out.display()
    );
    Ok(())
}
