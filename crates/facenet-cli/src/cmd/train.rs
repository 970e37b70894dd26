//! `facenet train`: arguments into `facenet::train::TrainConfig`, a progress bar over
//! `facenet::train::Trainer`.

use std::path::PathBuf;

use anyhow::Context;
use facenet::Device;
use facenet::model::Preset;
use facenet::train::{
    Init, LearningRateSchedule, Loss, Optimizer, Selection, TrainConfig, Trainer,
};

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
    /// triplet (FaceNet) or softmax (+ center loss).
    #[arg(long, value_enum, default_value = "triplet")]
    pub loss: Loss,
    /// Network.
    #[arg(long, value_enum, default_value = "small")]
    pub model: Preset,
    /// random, or pretrained (the imported Keras weights; keras-128 only).
    #[arg(long, value_enum, default_value = "random")]
    pub init: Init,
    /// Optimizer steps (with --resume: the total to reach).
    #[arg(long, default_value_t = 100)]
    pub steps: usize,
    /// Triplet mining.
    #[arg(long, value_enum, default_value = "semi-hard")]
    pub selection: Selection,
    /// Triplet margin alpha (squared L2).
    #[arg(long, default_value_t = 0.2)]
    pub alpha: f32,
    /// People per sampling round (davidsandberg: 45).
    #[arg(long, default_value_t = 15)]
    pub people: usize,
    /// Images per person per round (davidsandberg: 40).
    #[arg(long, default_value_t = 4)]
    pub per_person: usize,
    /// Triplets per optimizer step (the batch is 3x this many images).
    #[arg(long, default_value_t = 30)]
    pub triplets_per_step: usize,
    /// Images per step for softmax training.
    #[arg(long, default_value_t = 60)]
    pub batch: usize,
    /// Center loss weight (softmax training).
    #[arg(long, default_value_t = 0.01)]
    pub center_loss_factor: f32,
    /// Center update rate alpha (softmax training).
    #[arg(long, default_value_t = 0.95)]
    pub center_alpha: f32,
    /// Optimizer.
    #[arg(long, value_enum, default_value = "adam")]
    pub optimizer: Optimizer,
    /// Learning rate (ignored with --lr-schedule).
    #[arg(long, default_value_t = 0.001)]
    pub lr: f64,
    /// Schedule file, `epoch: rate` lines; an epoch is `--steps-per-epoch` steps.
    #[arg(long)]
    pub lr_schedule: Option<PathBuf>,
    /// Steps per epoch for the schedule.
    #[arg(long, default_value_t = 100)]
    pub steps_per_epoch: usize,
    /// L2 weight decay.
    #[arg(long, default_value_t = 0.0)]
    pub weight_decay: f32,
    /// Random flips and crops.
    #[arg(long)]
    pub augment: bool,
    /// Seed of sampling, mining and augmentation.
    #[arg(long, default_value_t = 666)]
    pub seed: u64,
    /// Checkpoint every N steps (and at the end).
    #[arg(long, default_value_t = 50)]
    pub checkpoint_every: usize,
    /// Validation pairs file (images under --val-images, aligned).
    #[arg(long)]
    pub val_pairs: Option<PathBuf>,
    /// Aligned images of the validation pairs.
    #[arg(long)]
    pub val_images: Option<PathBuf>,
    /// Validate every N steps.
    #[arg(long, default_value_t = 50)]
    pub val_every: usize,
}

pub fn run(args: Args, device: Device) -> anyhow::Result<()> {
    let loading = bar(0, "{spinner} loading {pos} images");
    let tick = || loading.inc(1);
    let mut trainer = match &args.resume {
        Some(dir) => {
            let t = Trainer::resume(dir, args.steps, &device, &tick)
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
                loss: args.loss,
                init: args.init,
                steps: args.steps,
                selection: args.selection,
                alpha: args.alpha,
                people: args.people,
                per_person: args.per_person,
                triplets_per_step: args.triplets_per_step.max(1),
                batch: args.batch.max(2),
                center_loss_factor: args.center_loss_factor,
                center_alpha: args.center_alpha,
                optimizer: args.optimizer,
                lr: args.lr,
                lr_schedule: match &args.lr_schedule {
                    Some(p) => Some(LearningRateSchedule::read(p)?.steps),
                    None => None,
                },
                steps_per_epoch: args.steps_per_epoch.max(1),
                weight_decay: args.weight_decay,
                augment: args.augment,
                seed: args.seed,
                checkpoint_every: args.checkpoint_every.max(1),
                val_pairs: args.val_pairs.clone(),
                val_images: args.val_images.clone(),
                val_every: args.val_every.max(1),
                ..TrainConfig::new(data, args.model)
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
