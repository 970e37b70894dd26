//! `facenet train`: arguments into `facenet_train::TrainConfig`, a progress bar over
//! `facenet_train::Trainer`.

use std::path::PathBuf;

use anyhow::Context;
use facenet::Device;
use facenet_train::{LearningRateSchedule, TrainConfig, Trainer};

use crate::common::bar;

/// Arguments of `facenet train`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Training images: `person/*.png` aligned face crops (see `facenet align`).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Run directory (created).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Continue the run in this directory from its last checkpoint.
    #[arg(long, conflicts_with = "out")]
    pub resume: Option<PathBuf>,
    /// Schedule file, `epoch: rate` lines (an epoch is `--steps-per-epoch` steps); replaces --lr.
    #[arg(long)]
    pub lr_schedule: Option<PathBuf>,
    #[command(flatten)]
    pub config: TrainConfig,
}

pub fn run(args: Args, device: Device) -> anyhow::Result<()> {
    let loading = bar(0, "{spinner} loading {pos} images");
    let tick = || loading.inc(1);
    let mut trainer = match &args.resume {
        Some(dir) => {
            let t = Trainer::resume(dir, args.config.steps, &device, &tick)
                .with_context(|| format!("resuming {}", dir.display()))?;
            eprintln!("resuming at step {}", t.start_step());
            t
        }
        None => {
            let out = args
                .out
                .clone()
                .context("--out RUN_DIR (or --resume RUN_DIR) is required")?;
            let data = args.data.clone().context("--data DIR is required")?;
            let cfg = TrainConfig {
                network: args.config.model.config(),
                lr_schedule: match &args.lr_schedule {
                    Some(p) => Some(LearningRateSchedule::read(p)?.steps),
                    None => None,
                },
                git_revision: facenet_train::trainer::git_revision(),
                data,
                ..args.config
            };
            let pretrained = facenet::paths::default_weights();
            Trainer::create(&out, cfg, Some(&pretrained), &device, &tick)?
        }
    };
    loading.finish_and_clear();
    let cfg = trainer.config();
    let counts = trainer.data().counts();
    eprintln!(
        "{} identities, {} images; {:?} loss, {} net ({} px), {} steps",
        counts.len(),
        counts.iter().sum::<usize>(),
        cfg.loss,
        cfg.model.name(),
        cfg.network.image_size,
        cfg.steps
    );
    let pb = bar(
        cfg.steps,
        "{bar:30} {pos}/{len} steps {elapsed} (eta {eta}) {msg}",
    );
    pb.set_position(trainer.start_step() as u64);
    trainer.run(&mut |entry| {
        if let Some(l) = entry.get("loss").and_then(|l| l.as_f64()) {
            pb.set_message(format!("loss {l:.4}"));
        }
        if entry.get("step_seconds").is_some() {
            pb.inc(1);
        }
    })?;
    pb.finish_and_clear();
    println!(
        "done: {} steps; weights {}",
        trainer.config().steps,
        trainer.weights_path().display()
    );
    Ok(())
}
