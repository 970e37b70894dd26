//! `facenet train`: triplet loss with online mining, or softmax + center loss.
//!
//! A run directory holds `config.json` (the settings, the git revision), `log.jsonl` (one line
//! per step), and `checkpoint/` (`model.safetensors`, usable by every command through
//! `--weights`, `optimizer.bin`, `state.json`), written every `--checkpoint-every` steps and at
//! the end. `--resume RUN_DIR` continues from its checkpoint.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail};
use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::nn::{Linear, LinearConfig};
use burn::optim::decay::WeightDecayConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{AdaGradConfig, AdamConfig, GradientsParams, RmsPropConfig, SgdConfig};
use burn::store::{ModuleSnapshot, SafetensorsStore};
use burn::tensor::{Device, Int, Tensor, TensorData};
use facenet::train::loss::{CenterLoss, l2_normalize_rows, triplet_loss};
use facenet::train::{LearningRateSchedule, Rng, Selection, sample_people, select_triplets};
use facenet::weights::{FORMAT, WeightsMetadata};
use facenet::{InceptionResnetV1, InceptionResnetV1Config, Standardization};
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};

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
    pub loss: LossKind,
    /// Network: keras-128, facenet-512, small.
    #[arg(long, default_value = "small")]
    pub model: String,
    /// random, or pretrained (the imported Keras weights; keras-128 only).
    #[arg(long, value_enum, default_value = "random")]
    pub init: Init,
    /// Optimizer steps.
    #[arg(long, default_value_t = 100)]
    pub steps: usize,
    /// Triplet mining: semi-hard, margin-violators, hard, batch-all.
    #[arg(long, value_enum, default_value = "semi-hard")]
    pub selection: SelectionArg,
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
    pub optimizer: OptimizerKind,
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

/// `--loss`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
pub enum LossKind {
    /// Triplet loss with online mining.
    Triplet,
    /// Softmax classification + center loss.
    Softmax,
}

/// `--init`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
pub enum Init {
    /// Random weights.
    Random,
    /// The pretrained Keras FaceNet weights (fine-tuning).
    Pretrained,
}

/// `--selection`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
pub enum SelectionArg {
    /// FaceNet: d(a,p) < d(a,n) < d(a,p) + alpha.
    SemiHard,
    /// davidsandberg: d(a,n) - d(a,p) < alpha.
    MarginViolators,
    /// The closest negative.
    Hard,
    /// Every margin violator.
    BatchAll,
}

/// `--optimizer`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
pub enum OptimizerKind {
    /// AdaGrad (the FaceNet paper's).
    Adagrad,
    /// Adam.
    Adam,
    /// RMSProp.
    Rmsprop,
    /// SGD with momentum 0.9.
    Sgd,
}

/// What is saved in `config.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunConfig {
    pub data: PathBuf,
    pub loss: LossKind,
    pub model: String,
    pub network: InceptionResnetV1Config,
    pub init: Init,
    pub steps: usize,
    pub selection: SelectionArg,
    pub alpha: f32,
    pub people: usize,
    pub per_person: usize,
    pub triplets_per_step: usize,
    pub batch: usize,
    pub center_loss_factor: f32,
    pub center_alpha: f32,
    pub optimizer: OptimizerKind,
    pub lr: f64,
    pub lr_schedule: Option<Vec<(usize, f64)>>,
    pub steps_per_epoch: usize,
    pub weight_decay: f32,
    pub augment: bool,
    pub seed: u64,
    pub checkpoint_every: usize,
    pub val_pairs: Option<PathBuf>,
    pub val_images: Option<PathBuf>,
    pub val_every: usize,
    pub git_revision: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct State {
    step: usize,
    rng: u64,
    centers: Option<Vec<f32>>,
}

/// Face network plus the classification head of softmax training (discarded afterwards).
#[derive(Module, Debug)]
pub struct Classifier {
    /// The embedding network.
    pub net: InceptionResnetV1,
    /// Logits over the training identities.
    pub head: Linear,
}

struct Dataset {
    classes: Vec<String>,
    images: Vec<Vec<image::RgbImage>>,
}

fn load_dataset(dir: &Path, size: u32, margin: u32) -> anyhow::Result<Dataset> {
    let files = super::align::dataset_files(dir)?;
    if files.is_empty() {
        bail!("{}: no person/*.png images", dir.display());
    }
    let mut classes: Vec<String> = Vec::new();
    let mut images: Vec<Vec<image::RgbImage>> = Vec::new();
    let bar = ProgressBar::new(files.len() as u64).with_message("loading");
    for (person, path) in files {
        if classes.last() != Some(&person) {
            classes.push(person.clone());
            images.push(Vec::new());
        }
        let img = facenet::image::load_face(&path)?;
        let side = size + margin;
        images
            .last_mut()
            .expect("pushed above")
            .push(facenet::image::resize_square(&img, side));
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(Dataset { classes, images })
}

fn git_revision() -> String {
    std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

/// Crops (random with `augment`, else centre) to `size` and flips at random with `augment`.
fn view(img: &image::RgbImage, size: u32, augment: bool, rng: &mut Rng) -> image::RgbImage {
    let slack = img.width().saturating_sub(size);
    let (x, y) = if augment && slack > 0 {
        (
            rng.below(slack as usize + 1) as u32,
            rng.below(slack as usize + 1) as u32,
        )
    } else {
        (slack / 2, slack / 2)
    };
    let crop = image::imageops::crop_imm(img, x, y, size.min(img.width()), size.min(img.height()))
        .to_image();
    let crop = facenet::image::resize_square(&crop, size);
    if augment && rng.below(2) == 1 {
        image::imageops::flip_horizontal(&crop)
    } else {
        crop
    }
}

fn batch_tensor(imgs: &[image::RgbImage], s: Standardization, device: &Device) -> Tensor<4> {
    let size = imgs[0].width() as usize;
    let data: Vec<f32> = imgs.iter().flat_map(|i| s.apply(i)).collect();
    Tensor::from_data(TensorData::new(data, [imgs.len(), 3, size, size]), device)
}

fn rows(t: Tensor<2>) -> anyhow::Result<Vec<Vec<f32>>> {
    let [_, d] = t.dims();
    let v = t
        .into_data()
        .try_into_vec::<f32>()
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    Ok(v.chunks(d).map(<[f32]>::to_vec).collect())
}

/// Saves the embedding network as a weights file usable by `--weights`.
pub fn save_weights(
    net: &InceptionResnetV1,
    cfg: &InceptionResnetV1Config,
    path: &Path,
    source: &str,
) -> anyhow::Result<()> {
    let net = net.valid();
    let mut h = sha2::Sha256::new();
    use sha2::Digest;
    let mut tensors = net.collect(None, None, false);
    tensors.sort_by(|a, b| a.name.cmp(&b.name));
    for t in &tensors {
        h.update(t.name.as_bytes());
        let bytes = t.to_bytes().map_err(|e| anyhow::anyhow!("{e:?}"))?;
        let bytes: &[u8] = &bytes;
        h.update(bytes);
    }
    let fingerprint: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    let meta = WeightsMetadata {
        format: FORMAT.into(),
        config: cfg.clone(),
        standardization: Standardization::Prewhiten,
        source: source.into(),
        source_sha256: String::new(),
        fingerprint,
    };
    let mut store = SafetensorsStore::from_bytes(None);
    for (k, v) in meta.to_map()? {
        store = store.metadata(k, v);
    }
    net.save_into(&mut store)
        .map_err(|e| anyhow::anyhow!("saving weights: {e}"))?;
    let bytes = store
        .get_bytes()
        .map_err(|e| anyhow::anyhow!("saving weights: {e}"))?;
    facenet_import::convert::write_atomic(path, &bytes)?;
    Ok(())
}

fn optimizer(cfg: &RunConfig) -> burn::optim::ModuleOptimizer {
    let wd = (cfg.weight_decay > 0.0).then(|| WeightDecayConfig::new(cfg.weight_decay));
    match cfg.optimizer {
        OptimizerKind::Adagrad => AdaGradConfig::new().with_weight_decay(wd).init(),
        OptimizerKind::Adam => AdamConfig::new().with_weight_decay(wd).init(),
        OptimizerKind::Rmsprop => RmsPropConfig::new().with_weight_decay(wd).init(),
        OptimizerKind::Sgd => SgdConfig::new()
            .with_weight_decay(wd)
            .with_momentum(Some(MomentumConfig::new().with_dampening(0.0)))
            .init(),
    }
}

pub fn run(args: Args, cpu_or_cuda: Device) -> anyhow::Result<()> {
    let device = cpu_or_cuda.autodiff();
    let (run_dir, cfg, resume) = match &args.resume {
        Some(dir) => {
            let text = std::fs::read_to_string(dir.join("config.json")).with_context(|| {
                format!("{}: not a run directory (no config.json)", dir.display())
            })?;
            let mut cfg: RunConfig = serde_json::from_str(&text)
                .with_context(|| format!("{}: unreadable config.json", dir.display()))?;
            // --steps is the total to reach.
            cfg.steps = args.steps;
            (dir.clone(), cfg, true)
        }
        None => {
            let out = args
                .out
                .clone()
                .context("--out RUN_DIR (or --resume RUN_DIR) is required")?;
            let data = args.data.clone().context("--data DIR is required")?;
            let network = InceptionResnetV1Config::preset(&args.model).with_context(|| {
                format!(
                    "--model {}: unknown (keras-128, facenet-512, small)",
                    args.model
                )
            })?;
            if args.init == Init::Pretrained && network != InceptionResnetV1Config::keras_128() {
                bail!("--init pretrained needs --model keras-128 (the pretrained weights' shape)");
            }
            let lr_schedule = match &args.lr_schedule {
                Some(p) => Some(LearningRateSchedule::read(p)?.steps),
                None => None,
            };
            let cfg = RunConfig {
                data,
                loss: args.loss,
                model: args.model.clone(),
                network,
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
                lr_schedule,
                steps_per_epoch: args.steps_per_epoch.max(1),
                weight_decay: args.weight_decay,
                augment: args.augment,
                seed: args.seed,
                checkpoint_every: args.checkpoint_every.max(1),
                val_pairs: args.val_pairs.clone(),
                val_images: args.val_images.clone(),
                val_every: args.val_every.max(1),
                git_revision: git_revision(),
            };
            std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
            std::fs::write(out.join("config.json"), serde_json::to_string_pretty(&cfg)?)?;
            (out, cfg, false)
        }
    };
    let size = cfg.network.image_size as u32;
    let data = load_dataset(&cfg.data, size, if cfg.augment { size / 10 } else { 0 })?;
    let counts: Vec<usize> = data.images.iter().map(Vec::len).collect();
    eprintln!(
        "{} identities, {} images; {} loss, {} net ({} px), {} steps",
        data.classes.len(),
        counts.iter().sum::<usize>(),
        match cfg.loss {
            LossKind::Triplet => "triplet",
            LossKind::Softmax => "softmax + center",
        },
        cfg.model,
        size,
        cfg.steps
    );

    // Model, optimizer, state. Seeding the device makes weight init and dropout reproducible.
    device.seed(cfg.seed);
    let ckpt = run_dir.join("checkpoint");
    let mut net = if resume {
        facenet::weights::load(&ckpt.join("model.safetensors"), &device)
            .with_context(|| format!("loading {}", ckpt.display()))?
            .0
    } else {
        match cfg.init {
            Init::Random => cfg.network.init(&device),
            Init::Pretrained => {
                let p = facenet::paths::default_weights();
                facenet::weights::load(&p, &device)
                    .with_context(|| {
                        format!(
                            "loading pretrained weights {} (run `facenet fetch`)",
                            p.display()
                        )
                    })?
                    .0
            }
        }
    };
    let mut head = LinearConfig::new(cfg.network.embedding_dim, data.classes.len()).init(&device);
    let mut optim = optimizer(&cfg);
    let mut start = 0;
    let mut rng = Rng::new(cfg.seed);
    let mut centers = CenterLoss::new(
        data.classes.len(),
        cfg.network.embedding_dim,
        cfg.center_alpha,
    );
    if resume {
        let st: State = serde_json::from_slice(&std::fs::read(ckpt.join("state.json"))?)
            .context("reading checkpoint/state.json")?;
        start = st.step;
        rng = Rng::new(st.rng);
        if let Some(c) = st.centers {
            centers.centers = c;
        }
        optim = optim
            .load(ckpt.join("optimizer.bin"))
            .map_err(|e| anyhow::anyhow!("loading optimizer state: {e:?}"))?;
        if cfg.loss == LossKind::Softmax && ckpt.join("head.safetensors").is_file() {
            let mut store = SafetensorsStore::from_file(ckpt.join("head.safetensors"));
            head.load_from(&mut store)
                .map_err(|e| anyhow::anyhow!("loading head: {e}"))?;
        }
        eprintln!("resuming at step {start}");
    }
    let schedule = match &cfg.lr_schedule {
        Some(steps) => LearningRateSchedule {
            steps: steps.clone(),
        },
        None => LearningRateSchedule::constant(cfg.lr),
    };
    let val = match (&cfg.val_pairs, &cfg.val_images) {
        (Some(p), Some(d)) => Some((facenet::eval::Pairs::read(p)?, d.clone())),
        _ => None,
    };
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(run_dir.join("log.jsonl"))
        .context("opening log.jsonl")?;
    let bar = ProgressBar::new(cfg.steps as u64).with_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} steps {elapsed} (eta {eta}) {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_position(start as u64);
    let std = Standardization::Prewhiten;
    let ce = CrossEntropyLossConfig::new().init(&device);
    let selection = match cfg.selection {
        SelectionArg::SemiHard => Selection::SemiHard,
        SelectionArg::MarginViolators => Selection::MarginViolators,
        SelectionArg::Hard => Selection::Hard,
        SelectionArg::BatchAll => Selection::BatchAll,
    };
    if start == 0
        && let Some((pairs, dir)) = &val
    {
        let (acc, v) = validate(&net, pairs, dir, size, &device)?;
        writeln!(
            log,
            "{}",
            serde_json::json!({"step": 0, "val_accuracy": acc, "val_at_far": v})
        )?;
        eprintln!("step 0: validation accuracy {acc:.4}");
    }
    for step in start..cfg.steps {
        let t0 = Instant::now();
        let lr = schedule.at(step / cfg.steps_per_epoch);
        let entry = match cfg.loss {
            LossKind::Triplet => {
                // Sample P x K, embed them with the current network (inference copy), mine.
                let picks = sample_people(&counts, cfg.people, cfg.per_person, &mut rng);
                let imgs: Vec<image::RgbImage> = picks
                    .iter()
                    .map(|&(c, i)| view(&data.images[c][i], size, cfg.augment, &mut rng))
                    .collect();
                let labels: Vec<usize> = picks.iter().map(|p| p.0).collect();
                let plain = net.valid();
                let mut emb = Vec::with_capacity(imgs.len());
                for chunk in imgs.chunks(64) {
                    let x = batch_tensor(chunk, std, &plain_device(&device));
                    emb.extend(rows(l2_normalize_rows(plain.forward(x)))?);
                }
                let mut triplets = select_triplets(&emb, &labels, cfg.alpha, selection, &mut rng);
                let found = triplets.len();
                rng.shuffle(&mut triplets);
                triplets.truncate(cfg.triplets_per_step);
                if triplets.is_empty() {
                    serde_json::json!({"step": step, "triplets_selected": 0, "lr": lr, "note": "no triplet selected"})
                } else {
                    // A, P and N stacked through the one network.
                    let t = triplets.len();
                    let stack: Vec<image::RgbImage> = triplets
                        .iter()
                        .map(|x| imgs[x.a].clone())
                        .chain(triplets.iter().map(|x| imgs[x.p].clone()))
                        .chain(triplets.iter().map(|x| imgs[x.n].clone()))
                        .collect();
                    let e = l2_normalize_rows(net.forward(batch_tensor(&stack, std, &device)));
                    let (a, p, n) = (
                        e.clone().narrow(0, 0, t),
                        e.clone().narrow(0, t, t),
                        e.narrow(0, 2 * t, t),
                    );
                    let pos = (a.clone() - p.clone()).powi_scalar(2).sum_dim(1);
                    let neg = (a.clone() - n.clone()).powi_scalar(2).sum_dim(1);
                    let active = rows(
                        (pos - neg)
                            .add_scalar(cfg.alpha as f64)
                            .clamp_min(0.0)
                            .detach(),
                    )?
                    .iter()
                    .filter(|r| r[0] > 0.0)
                    .count();
                    let loss = triplet_loss(a, p, n, cfg.alpha as f64);
                    let loss_value = rows(loss.clone().detach().reshape([1, 1]))?[0][0];
                    let grads = GradientsParams::from_grads(loss.backward(), &net);
                    net = optim.step(lr, net, grads);
                    serde_json::json!({
                        "step": step, "loss": loss_value, "triplets_found": found, "triplets_used": t,
                        "fraction_active": active as f64 / t as f64, "lr": lr,
                    })
                }
            }
            LossKind::Softmax => {
                let total: usize = counts.iter().sum();
                let flat: Vec<(usize, usize)> = counts
                    .iter()
                    .enumerate()
                    .flat_map(|(c, &n)| (0..n).map(move |i| (c, i)))
                    .collect();
                let picks: Vec<(usize, usize)> = (0..cfg.batch.min(total))
                    .map(|_| flat[rng.below(flat.len())])
                    .collect();
                let imgs: Vec<image::RgbImage> = picks
                    .iter()
                    .map(|&(c, i)| view(&data.images[c][i], size, cfg.augment, &mut rng))
                    .collect();
                let labels: Vec<usize> = picks.iter().map(|p| p.0).collect();
                let model = Classifier { net, head };
                let features = model.net.forward(batch_tensor(&imgs, std, &device));
                let logits = model.head.forward(features.clone());
                let targets = Tensor::<1, Int>::from_data(
                    TensorData::new(
                        labels.iter().map(|&l| l as i64).collect::<Vec<_>>(),
                        [labels.len()],
                    ),
                    &device,
                );
                let xent = ce.forward(logits, targets);
                let center = centers.loss_and_update(features, &labels);
                let xv = rows(xent.clone().detach().reshape([1, 1]))?[0][0];
                let cv = rows(center.clone().detach().reshape([1, 1]))?[0][0];
                let loss = xent + center.mul_scalar(cfg.center_loss_factor as f64);
                let grads = GradientsParams::from_grads(loss.backward(), &model);
                let model = optim.step(lr, model, grads);
                net = model.net;
                head = model.head;
                serde_json::json!({"step": step, "loss": xv + cfg.center_loss_factor * cv, "cross_entropy": xv, "center_loss": cv, "lr": lr})
            }
        };
        let mut entry = entry;
        entry["step_seconds"] = serde_json::json!(t0.elapsed().as_secs_f64());
        let done = step + 1;
        if let Some((pairs, dir)) = &val
            && (done % cfg.val_every == 0 || done == cfg.steps)
        {
            let (acc, v) = validate(&net, pairs, dir, size, &device)?;
            entry["val_accuracy"] = serde_json::json!(acc);
            entry["val_at_far"] = serde_json::json!(v);
        }
        writeln!(log, "{entry}")?;
        if let Some(l) = entry.get("loss").and_then(|l| l.as_f64()) {
            bar.set_message(format!("loss {l:.4}"));
        }
        bar.inc(1);
        if done % cfg.checkpoint_every == 0 || done == cfg.steps {
            std::fs::create_dir_all(&ckpt)?;
            save_weights(
                &net,
                &cfg.network,
                &ckpt.join("model.safetensors"),
                &format!("facenet train step {done}"),
            )?;
            optim
                .save(ckpt.join("optimizer.bin"))
                .map_err(|e| anyhow::anyhow!("saving optimizer state: {e:?}"))?;
            if cfg.loss == LossKind::Softmax {
                let mut store =
                    SafetensorsStore::from_file(ckpt.join("head.safetensors")).overwrite(true);
                head.save_into(&mut store)
                    .map_err(|e| anyhow::anyhow!("saving head: {e}"))?;
            }
            let st = State {
                step: done,
                rng: rng.next_u64(),
                centers: (cfg.loss == LossKind::Softmax).then(|| centers.centers.clone()),
            };
            facenet_import::convert::write_atomic(
                &ckpt.join("state.json"),
                &serde_json::to_vec(&st)?,
            )?;
        }
    }
    bar.finish_and_clear();
    println!(
        "done: {} steps; weights {}; log {}",
        cfg.steps,
        ckpt.join("model.safetensors").display(),
        run_dir.join("log.jsonl").display()
    );
    Ok(())
}

fn plain_device(device: &Device) -> Device {
    device.clone().without_autodiff()
}

/// Accuracy (10-fold or as many folds as the file has) and VAL@FAR=1e-3 on aligned pairs.
fn validate(
    net: &InceptionResnetV1,
    pairs: &facenet::eval::Pairs,
    dir: &Path,
    size: u32,
    device: &Device,
) -> anyhow::Result<(f64, f64)> {
    let plain = net.valid();
    let dev = plain_device(device);
    let mut emb = std::collections::BTreeMap::new();
    let images = pairs.images();
    let mut keys = Vec::new();
    let mut imgs = Vec::new();
    for img in &images {
        let Some(p) = img.find(dir) else { continue };
        keys.push(img.stem());
        imgs.push(facenet::image::resize_square(
            &facenet::image::load_face(&p)?,
            size,
        ));
    }
    for (k, chunk) in keys.chunks(64).zip(imgs.chunks(64)) {
        let e = rows(l2_normalize_rows(plain.forward(batch_tensor(
            chunk,
            Standardization::Prewhiten,
            &dev,
        ))))?;
        for (key, v) in k.iter().zip(e) {
            emb.insert(key.clone(), v);
        }
    }
    let used: Vec<&facenet::eval::Pair> = pairs
        .pairs
        .iter()
        .filter(|p| emb.contains_key(&p.a.stem()) && emb.contains_key(&p.b.stem()))
        .collect();
    if used.is_empty() {
        bail!(
            "{}: none of the validation pairs' images found",
            dir.display()
        );
    }
    let d: Vec<f64> = used
        .iter()
        .map(|p| facenet::Distance::L2.between(&emb[&p.a.stem()], &emb[&p.b.stem()]) as f64)
        .collect();
    let same: Vec<bool> = used.iter().map(|p| p.same).collect();
    let folds: Vec<usize> = used.iter().map(|p| p.fold).collect();
    let e = facenet::eval::metrics::evaluate(
        &d,
        &same,
        &folds,
        &facenet::eval::metrics::grid(2.0),
        1e-3,
    );
    Ok((e.accuracy, e.val))
}
