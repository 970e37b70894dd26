//! The training loop: triplet loss with online mining, or softmax + center loss, with
//! checkpoints, resume and validation.
//!
//! ```text
//! facenet train --data aligned/ --loss triplet --model small --out runs/exp1
//! ```
//!
//! A run directory holds `config.json` (the settings, the git revision), `log.jsonl` (one line
//! per step), and `checkpoint/` (`model.safetensors`, usable by every command through
//! `--weights`, `optimizer.bin`, `state.json`), written every `checkpoint_every` steps and at
//! the end. [`Trainer::resume`] continues from its checkpoint.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::nn::{Linear, LinearConfig};
use burn::optim::decay::WeightDecayConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{AdaGradConfig, AdamConfig, GradientsParams, RmsPropConfig, SgdConfig};
use burn::store::{ModuleSnapshot, SafetensorsStore};
use burn::tensor::{Device, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::loss::{CenterLoss, l2_normalize_rows, triplet_loss};
use crate::{LearningRateSchedule, Rng, Selection, sample_people, select_triplets};
use facenet::error::{Error, Result};
use facenet::eval::Pairs;
use facenet::model::{InceptionResnetV1, InceptionResnetV1Config, Preset};
use facenet::{Distance, Standardization};

/// The loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum Loss {
    /// Triplet loss with online mining (FaceNet).
    Triplet,
    /// Softmax classification + center loss.
    Softmax,
}

/// Where the weights start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum Init {
    /// Random weights.
    Random,
    /// The pretrained Keras FaceNet weights (fine-tuning; keras-128 only).
    Pretrained,
}

/// The optimizer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum Optimizer {
    /// AdaGrad (the FaceNet paper's).
    Adagrad,
    /// Adam.
    Adam,
    /// RMSProp.
    Rmsprop,
    /// SGD with momentum 0.9.
    Sgd,
}

/// The settings of a run, saved as `config.json`. With the `clap` feature it is also the
/// command line's argument group (`facenet train --help`), with the same defaults as
/// [`TrainConfig::new`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
pub struct TrainConfig {
    /// Aligned training faces, `person/*.png`.
    #[cfg_attr(feature = "clap", arg(skip))]
    pub data: PathBuf,
    /// triplet (FaceNet) or softmax (+ center loss).
    #[cfg_attr(feature = "clap", arg(long, value_enum, default_value_t = Loss::Triplet))]
    pub loss: Loss,
    /// Network.
    #[cfg_attr(feature = "clap", arg(long, value_enum, default_value_t = Preset::Small))]
    pub model: Preset,
    /// Its configuration (from `model`).
    #[cfg_attr(feature = "clap", arg(skip = InceptionResnetV1Config::small()))]
    pub network: InceptionResnetV1Config,
    /// random, or pretrained (the imported Keras weights; keras-128 only).
    #[cfg_attr(feature = "clap", arg(long, value_enum, default_value_t = Init::Random))]
    pub init: Init,
    /// Start from this weights file instead (another run's `checkpoint/model.safetensors`,
    /// e.g. softmax pre-training before triplet fine-tuning); its network must be `--model`'s.
    #[cfg_attr(feature = "clap", arg(long, value_name = "FILE"))]
    #[serde(default)]
    pub init_weights: Option<PathBuf>,
    /// Optimizer steps (when resuming: the total to reach).
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 100))]
    pub steps: usize,
    /// Triplet mining.
    #[cfg_attr(feature = "clap", arg(long, value_enum, default_value_t = Selection::SemiHard))]
    pub selection: Selection,
    /// Triplet margin alpha (squared L2).
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 0.2))]
    pub alpha: f32,
    /// People per sampling round (davidsandberg: 45).
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 15))]
    pub people: usize,
    /// Images per person per round (davidsandberg: 40).
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 4))]
    pub per_person: usize,
    /// Triplets per optimizer step (the batch is 3x this many images).
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 30))]
    pub triplets_per_step: usize,
    /// Images per step for softmax training.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 60))]
    pub batch: usize,
    /// Center loss weight (softmax training).
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 0.01))]
    pub center_loss_factor: f32,
    /// Center update rate alpha (softmax training).
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 0.95))]
    pub center_alpha: f32,
    /// Optimizer.
    #[cfg_attr(feature = "clap", arg(long, value_enum, default_value_t = Optimizer::Adam))]
    pub optimizer: Optimizer,
    /// Learning rate (without a schedule).
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 0.001))]
    pub lr: f64,
    /// `(epoch, rate)` schedule (`--lr-schedule FILE` on the command line).
    #[cfg_attr(feature = "clap", arg(skip))]
    pub lr_schedule: Option<Vec<(usize, f64)>>,
    /// Steps per epoch of the schedule.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 100))]
    pub steps_per_epoch: usize,
    /// L2 weight decay.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 0.0))]
    pub weight_decay: f32,
    /// Random flips and crops.
    #[cfg_attr(feature = "clap", arg(long))]
    pub augment: bool,
    /// Seed of initialisation, sampling, mining and augmentation.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 666))]
    pub seed: u64,
    /// Checkpoint every N steps (and at the end).
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 50))]
    pub checkpoint_every: usize,
    /// Validation pairs file (images under --val-images, aligned).
    #[cfg_attr(feature = "clap", arg(long))]
    pub val_pairs: Option<PathBuf>,
    /// Aligned images of the validation pairs.
    #[cfg_attr(feature = "clap", arg(long))]
    pub val_images: Option<PathBuf>,
    /// Validate every N steps.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 50))]
    pub val_every: usize,
    /// `git rev-parse HEAD` where the run started, or `unknown`.
    #[cfg_attr(feature = "clap", arg(skip))]
    pub git_revision: String,
}

impl TrainConfig {
    /// Defaults (davidsandberg's where they apply, sized for a CPU) for `data` and `model`.
    pub fn new(data: PathBuf, model: Preset) -> Self {
        Self {
            data,
            loss: Loss::Triplet,
            model,
            network: model.config(),
            init: Init::Random,
            init_weights: None,
            steps: 100,
            selection: Selection::SemiHard,
            alpha: 0.2,
            people: 15,
            per_person: 4,
            triplets_per_step: 30,
            batch: 60,
            center_loss_factor: 0.01,
            center_alpha: 0.95,
            optimizer: Optimizer::Adam,
            lr: 0.001,
            lr_schedule: None,
            steps_per_epoch: 100,
            weight_decay: 0.0,
            augment: false,
            seed: 666,
            checkpoint_every: 50,
            val_pairs: None,
            val_images: None,
            val_every: 50,
            git_revision: git_revision(),
        }
    }
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

/// Training faces in memory, one list per identity.
#[derive(Debug)]
pub struct Dataset {
    /// Identity names.
    pub classes: Vec<String>,
    /// Faces per identity, resized to the network's side plus the augmentation slack.
    pub images: Vec<Vec<image::RgbImage>>,
}

impl Dataset {
    /// Reads `person/*.png` aligned faces resized to `side` pixels; `step` after each.
    pub fn load(dir: &Path, side: u32, step: &dyn Fn()) -> Result<Self> {
        let files = facenet::files::dataset_files(dir)?;
        if files.is_empty() {
            return Err(Error::InvalidArgument {
                field: "data",
                reason: format!(
                    "{}: nothing to train on (no person/*.png images)",
                    dir.display()
                ),
            });
        }
        let mut classes: Vec<String> = Vec::new();
        let mut images: Vec<Vec<image::RgbImage>> = Vec::new();
        for (person, path) in files {
            if classes.last() != Some(&person) {
                classes.push(person.clone());
                images.push(Vec::new());
            }
            let img = facenet::image::load_face(&path)?;
            if let Some(list) = images.last_mut() {
                list.push(facenet::image::resize_square(&img, side));
            }
            step();
        }
        Ok(Self { classes, images })
    }

    /// Images per identity.
    pub fn counts(&self) -> Vec<usize> {
        self.images.iter().map(Vec::len).collect()
    }
}

/// `git rev-parse HEAD` here, or `unknown`.
pub fn git_revision() -> String {
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

fn batch_tensor(imgs: &[image::RgbImage], device: &Device) -> Tensor<4> {
    let size = imgs[0].width() as usize;
    let data: Vec<f32> = imgs
        .iter()
        .flat_map(|i| Standardization::Prewhiten.apply(i))
        .collect();
    Tensor::from_data(TensorData::new(data, [imgs.len(), 3, size, size]), device)
}

fn rows(t: Tensor<2>) -> Result<Vec<Vec<f32>>> {
    let [_, d] = t.dims();
    let v = t
        .into_data()
        .try_into_vec::<f32>()
        .map_err(|source| Error::Data {
            what: "training output".into(),
            source,
        })?;
    Ok(v.chunks(d.max(1)).map(<[f32]>::to_vec).collect())
}

fn scalar(t: Tensor<1>) -> Result<f32> {
    Ok(rows(t.detach().reshape([1, 1]))?[0][0])
}

fn optimizer(cfg: &TrainConfig) -> burn::optim::ModuleOptimizer {
    let wd = (cfg.weight_decay > 0.0).then(|| WeightDecayConfig::new(cfg.weight_decay));
    match cfg.optimizer {
        Optimizer::Adagrad => AdaGradConfig::new().with_weight_decay(wd).init(),
        Optimizer::Adam => AdamConfig::new().with_weight_decay(wd).init(),
        Optimizer::Rmsprop => RmsPropConfig::new().with_weight_decay(wd).init(),
        Optimizer::Sgd => SgdConfig::new()
            .with_weight_decay(wd)
            .with_momentum(Some(MomentumConfig::new().with_dampening(0.0)))
            .init(),
    }
}

/// What one triplet step did.
#[derive(Debug, Clone, Copy)]
pub struct TripletStep {
    /// The triplet loss of the batch.
    pub loss: f32,
    /// Triplets whose hinge was active (positive loss).
    pub active: usize,
}

/// One triplet-loss step through the one shared network: `stack` holds the `t` anchors, then
/// the `t` positives, then the `t` negatives (`[3t, 3, s, s]`, on an autodiff device); the
/// three are embedded in one forward pass, and the optimizer steps on the summed gradient.
pub fn triplet_step(
    net: InceptionResnetV1,
    optim: &mut burn::optim::ModuleOptimizer,
    stack: Tensor<4>,
    alpha: f32,
    lr: f64,
) -> Result<(InceptionResnetV1, TripletStep)> {
    let t = stack.dims()[0] / 3;
    let e = l2_normalize_rows(net.forward(stack));
    let (a, p, n) = (
        e.clone().narrow(0, 0, t),
        e.clone().narrow(0, t, t),
        e.narrow(0, 2 * t, t),
    );
    let pos = (a.clone() - p.clone()).powi_scalar(2).sum_dim(1);
    let neg = (a.clone() - n.clone()).powi_scalar(2).sum_dim(1);
    let active = rows((pos - neg).add_scalar(alpha as f64).clamp_min(0.0).detach())?
        .iter()
        .filter(|r| r[0] > 0.0)
        .count();
    let loss = triplet_loss(a, p, n, alpha as f64);
    let value = scalar(loss.clone())?;
    let grads = GradientsParams::from_grads(loss.backward(), &net);
    let net = optim.step(lr, net, grads);
    Ok((
        net,
        TripletStep {
            loss: value,
            active,
        },
    ))
}

/// Median seconds of a [`triplet_step`] of `preset` (random weights, random input, Adam) on
/// `3 * triplets` images, over `steps` steps after one warm-up step.
pub fn time_triplet_steps(
    preset: Preset,
    triplets: usize,
    steps: usize,
    device: &Device,
) -> Result<f64> {
    let cfg = preset.config();
    let dev = device.clone().autodiff();
    let mut net = Some(cfg.init(&dev));
    let mut optim = AdamConfig::new().init();
    let (t, size) = (triplets.max(1), cfg.image_size);
    let mut times = Vec::new();
    for i in 0..=steps.max(1) {
        let dist = burn::tensor::Distribution::Normal(0.0, 1.0);
        let x = Tensor::<4>::random([3 * t, 3, size, size], dist, &dev);
        let start = Instant::now();
        let current = net.take().ok_or_else(lost)?;
        let (next, _) = triplet_step(current, &mut optim, x, 0.2, 1e-4)?;
        if i > 0 {
            times.push(start.elapsed().as_secs_f64());
        }
        net = Some(next);
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

/// A training run in progress.
pub struct Trainer {
    cfg: TrainConfig,
    run_dir: PathBuf,
    data: Dataset,
    net: Option<InceptionResnetV1>,
    head: Option<Linear>,
    optim: burn::optim::ModuleOptimizer,
    rng: Rng,
    centers: CenterLoss,
    start: usize,
    /// Validation pairs and their aligned faces (read once), keyed by image stem.
    val: Option<(Pairs, Vec<(String, image::RgbImage)>)>,
    device: Device,
}

impl std::fmt::Debug for Trainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trainer")
            .field("run_dir", &self.run_dir)
            .field("start", &self.start)
            .finish_non_exhaustive()
    }
}

/// The network is moved out of the trainer for each optimizer step; a step that failed took
/// it with it.
fn lost() -> Error {
    Error::Training {
        what: "the network was lost by an earlier failed step".into(),
        source: None,
    }
}

fn training_err(what: String, e: impl std::fmt::Debug) -> Error {
    Error::Training {
        what: format!("{what}: {e:?}"),
        source: None,
    }
}

impl Trainer {
    /// Starts a run in `run_dir` (created; `config.json` written). `pretrained` is the
    /// weights file for [`Init::Pretrained`]. `loading` is called per training image read.
    pub fn create(
        run_dir: &Path,
        cfg: TrainConfig,
        pretrained: Option<&Path>,
        device: &Device,
        loading: &dyn Fn(),
    ) -> Result<Self> {
        if cfg.init == Init::Pretrained && cfg.init_weights.is_some() {
            return Err(Error::InvalidArgument {
                field: "init-weights",
                reason: "give either --init pretrained or --init-weights, not both".into(),
            });
        }
        if cfg.init == Init::Pretrained && cfg.network != InceptionResnetV1Config::keras_128() {
            return Err(Error::InvalidArgument {
                field: "init",
                reason: "pretrained needs the keras-128 network (the pretrained weights' shape)"
                    .into(),
            });
        }
        facenet::files::write_json_atomic(&run_dir.join("config.json"), &cfg)?;
        let device = device.clone().autodiff();
        // Seeding the device makes weight init and dropout reproducible.
        device.seed(cfg.seed);
        if let Some(path) = &cfg.init_weights {
            let (net, meta) = facenet::weights::load(path, &device)?;
            if meta.config != cfg.network {
                return Err(Error::InvalidArgument {
                    field: "init-weights",
                    reason: format!(
                        "{} holds another network ({} px, {}-d) than --model {} ({} px, {}-d)",
                        path.display(),
                        meta.config.image_size,
                        meta.config.embedding_dim,
                        cfg.model.name(),
                        cfg.network.image_size,
                        cfg.network.embedding_dim
                    ),
                });
            }
            return Self::assemble(run_dir, cfg, net, device, loading);
        }
        let net = match (cfg.init, pretrained) {
            (Init::Random, _) => cfg.network.init(&device),
            (Init::Pretrained, Some(p)) => facenet::weights::load(p, &device)?.0,
            (Init::Pretrained, None) => {
                return Err(Error::InvalidArgument {
                    field: "init",
                    reason: "pretrained needs a weights file".into(),
                });
            }
        };
        Self::assemble(run_dir, cfg, net, device, loading)
    }

    /// Continues the run in `run_dir` from its checkpoint, up to `steps` steps in all.
    pub fn resume(
        run_dir: &Path,
        steps: usize,
        device: &Device,
        loading: &dyn Fn(),
    ) -> Result<Self> {
        let config = run_dir.join("config.json");
        let text = std::fs::read_to_string(&config).map_err(|e| Error::io(&config, e))?;
        let mut cfg: TrainConfig = serde_json::from_str(&text).map_err(|source| Error::Json {
            path: config.clone(),
            what: "not a training run's config".into(),
            source,
        })?;
        cfg.steps = steps;
        let device = device.clone().autodiff();
        device.seed(cfg.seed);
        let ckpt = run_dir.join("checkpoint");
        let net = facenet::weights::load(&ckpt.join("model.safetensors"), &device)?.0;
        let mut t = Self::assemble(run_dir, cfg, net, device, loading)?;
        let state_path = ckpt.join("state.json");
        let bytes = std::fs::read(&state_path).map_err(|e| Error::io(&state_path, e))?;
        let st: State = serde_json::from_slice(&bytes).map_err(|source| Error::Json {
            path: state_path.clone(),
            what: "unreadable checkpoint state".into(),
            source,
        })?;
        t.start = st.step;
        t.rng = Rng::new(st.rng);
        if let Some(c) = st.centers {
            t.centers.centers = c;
        }
        let optim = std::mem::replace(&mut t.optim, optimizer(&t.cfg));
        t.optim = optim
            .load(ckpt.join("optimizer.bin"))
            .map_err(|e| training_err(format!("{}: loading optimizer state", ckpt.display()), e))?;
        let head_path = ckpt.join("head.safetensors");
        if t.cfg.loss == Loss::Softmax
            && head_path.is_file()
            && let Some(head) = t.head.as_mut()
        {
            let mut store = SafetensorsStore::from_file(&head_path);
            head.load_from(&mut store).map_err(|source| Error::Store {
                path: head_path.clone(),
                source: Box::new(source),
            })?;
        }
        Ok(t)
    }

    fn assemble(
        run_dir: &Path,
        cfg: TrainConfig,
        net: InceptionResnetV1,
        device: Device,
        loading: &dyn Fn(),
    ) -> Result<Self> {
        let size = cfg.network.image_size as u32;
        let slack = if cfg.augment { size / 10 } else { 0 };
        let data = Dataset::load(&cfg.data, size + slack, loading)?;
        let head = LinearConfig::new(cfg.network.embedding_dim, data.classes.len()).init(&device);
        let val = match (&cfg.val_pairs, &cfg.val_images) {
            (Some(p), Some(dir)) => {
                let pairs = Pairs::read(p)?;
                let mut faces = Vec::new();
                for img in pairs.images() {
                    let Some(p) = img.find(dir) else { continue };
                    let face = facenet::image::load_face(&p)?;
                    faces.push((img.stem(), facenet::image::resize_square(&face, size)));
                }
                if faces.is_empty() {
                    return Err(Error::InvalidArgument {
                        field: "val_images",
                        reason: format!(
                            "{}: none of the validation pairs' images found",
                            dir.display()
                        ),
                    });
                }
                Some((pairs, faces))
            }
            _ => None,
        };
        Ok(Self {
            optim: optimizer(&cfg),
            rng: Rng::new(cfg.seed),
            centers: CenterLoss::new(
                data.classes.len(),
                cfg.network.embedding_dim,
                cfg.center_alpha,
            ),
            cfg,
            run_dir: run_dir.to_path_buf(),
            data,
            net: Some(net),
            head: Some(head),
            start: 0,
            val,
            device,
        })
    }

    /// The settings.
    pub fn config(&self) -> &TrainConfig {
        &self.cfg
    }

    /// The training data.
    pub fn data(&self) -> &Dataset {
        &self.data
    }

    /// The step the run continues from (0 for a new run).
    pub fn start_step(&self) -> usize {
        self.start
    }

    /// The checkpoint's weights file.
    pub fn weights_path(&self) -> PathBuf {
        self.run_dir.join("checkpoint").join("model.safetensors")
    }

    /// Runs the remaining steps. Each step's log entry (also appended to `log.jsonl`) is
    /// passed to `on_step`.
    pub fn run(&mut self, on_step: &mut dyn FnMut(&serde_json::Value)) -> Result<()> {
        let log_path = self.run_dir.join("log.jsonl");
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| Error::io(&log_path, e))?;
        let mut write_log = |entry: &serde_json::Value| {
            writeln!(log, "{entry}").map_err(|e| Error::io(&log_path, e))
        };
        let schedule = match &self.cfg.lr_schedule {
            Some(steps) => LearningRateSchedule {
                steps: steps.clone(),
            },
            None => LearningRateSchedule::constant(self.cfg.lr),
        };
        if self.start == 0 && self.val.is_some() {
            let (acc, v) = self.validate()?;
            let entry = serde_json::json!({"step": 0, "val_accuracy": acc, "val_at_far": v});
            write_log(&entry)?;
            on_step(&entry);
        }
        for step in self.start..self.cfg.steps {
            let t0 = Instant::now();
            let lr = schedule.at(step / self.cfg.steps_per_epoch.max(1));
            let mut entry = match self.cfg.loss {
                Loss::Triplet => self.triplet(step, lr)?,
                Loss::Softmax => self.softmax(step, lr)?,
            };
            entry["step_seconds"] = serde_json::json!(t0.elapsed().as_secs_f64());
            let done = step + 1;
            if self.val.is_some()
                && (done % self.cfg.val_every.max(1) == 0 || done == self.cfg.steps)
            {
                let (acc, v) = self.validate()?;
                entry["val_accuracy"] = serde_json::json!(acc);
                entry["val_at_far"] = serde_json::json!(v);
            }
            write_log(&entry)?;
            on_step(&entry);
            if done % self.cfg.checkpoint_every.max(1) == 0 || done == self.cfg.steps {
                self.checkpoint(done)?;
            }
        }
        Ok(())
    }

    fn net(&self) -> Result<&InceptionResnetV1> {
        self.net.as_ref().ok_or_else(lost)
    }

    /// Unit embeddings of faces by an inference copy of the current network.
    fn embed(&self, imgs: &[image::RgbImage]) -> Result<Vec<Vec<f32>>> {
        let plain = self.net()?.valid();
        let dev = self.device.clone().without_autodiff();
        let mut emb = Vec::with_capacity(imgs.len());
        for chunk in imgs.chunks(64) {
            emb.extend(rows(l2_normalize_rows(
                plain.forward(batch_tensor(chunk, &dev)),
            ))?);
        }
        Ok(emb)
    }

    fn triplet(&mut self, step: usize, lr: f64) -> Result<serde_json::Value> {
        let cfg = &self.cfg;
        let size = cfg.network.image_size as u32;
        // Sample P x K, embed them with the current network (inference copy), mine.
        let picks = sample_people(
            &self.data.counts(),
            cfg.people,
            cfg.per_person,
            &mut self.rng,
        );
        let imgs: Vec<image::RgbImage> = picks
            .iter()
            .map(|&(c, i)| view(&self.data.images[c][i], size, cfg.augment, &mut self.rng))
            .collect();
        let labels: Vec<usize> = picks.iter().map(|p| p.0).collect();
        let emb = self.embed(&imgs)?;
        let mut triplets = select_triplets(&emb, &labels, cfg.alpha, cfg.selection, &mut self.rng);
        let found = triplets.len();
        self.rng.shuffle(&mut triplets);
        triplets.truncate(cfg.triplets_per_step.max(1));
        if triplets.is_empty() {
            return Ok(
                serde_json::json!({"step": step, "triplets_selected": 0, "lr": lr, "note": "no triplet selected"}),
            );
        }
        let stack: Vec<image::RgbImage> = triplets
            .iter()
            .map(|x| imgs[x.a].clone())
            .chain(triplets.iter().map(|x| imgs[x.p].clone()))
            .chain(triplets.iter().map(|x| imgs[x.n].clone()))
            .collect();
        let t = triplets.len();
        let alpha = cfg.alpha;
        let net = self.net.take().ok_or_else(lost)?;
        let (net, r) = triplet_step(
            net,
            &mut self.optim,
            batch_tensor(&stack, &self.device),
            alpha,
            lr,
        )?;
        self.net = Some(net);
        Ok(serde_json::json!({
            "step": step, "loss": r.loss, "triplets_found": found, "triplets_used": t,
            "fraction_active": r.active as f64 / t as f64, "lr": lr,
        }))
    }

    fn softmax(&mut self, step: usize, lr: f64) -> Result<serde_json::Value> {
        let cfg = &self.cfg;
        let size = cfg.network.image_size as u32;
        let counts = self.data.counts();
        let flat: Vec<(usize, usize)> = counts
            .iter()
            .enumerate()
            .flat_map(|(c, &n)| (0..n).map(move |i| (c, i)))
            .collect();
        let picks: Vec<(usize, usize)> = (0..cfg.batch.max(2).min(flat.len()))
            .map(|_| flat[self.rng.below(flat.len())])
            .collect();
        let imgs: Vec<image::RgbImage> = picks
            .iter()
            .map(|&(c, i)| view(&self.data.images[c][i], size, cfg.augment, &mut self.rng))
            .collect();
        let labels: Vec<usize> = picks.iter().map(|p| p.0).collect();
        let model = Classifier {
            net: self.net.take().ok_or_else(lost)?,
            head: self.head.take().ok_or_else(lost)?,
        };
        let features = model.net.forward(batch_tensor(&imgs, &self.device));
        let logits = model.head.forward(features.clone());
        let targets = Tensor::<1, Int>::from_data(
            TensorData::new(
                labels.iter().map(|&l| l as i64).collect::<Vec<_>>(),
                [labels.len()],
            ),
            &self.device,
        );
        let xent = CrossEntropyLossConfig::new()
            .init(&self.device)
            .forward(logits, targets);
        let center = self.centers.loss_and_update(features, &labels);
        let xv = scalar(xent.clone())?;
        let cv = scalar(center.clone())?;
        let factor = cfg.center_loss_factor;
        let loss = xent + center.mul_scalar(factor as f64);
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        let model = self.optim.step(lr, model, grads);
        self.net = Some(model.net);
        self.head = Some(model.head);
        Ok(
            serde_json::json!({"step": step, "loss": xv + factor * cv, "cross_entropy": xv, "center_loss": cv, "lr": lr}),
        )
    }

    fn checkpoint(&mut self, done: usize) -> Result<()> {
        let ckpt = self.run_dir.join("checkpoint");
        facenet::weights::save(
            &self.net()?.valid(),
            &self.cfg.network,
            Standardization::Prewhiten,
            &ckpt.join("model.safetensors"),
            &format!("facenet train step {done}"),
        )?;
        self.optim
            .save(ckpt.join("optimizer.bin"))
            .map_err(|e| training_err(format!("{}: saving optimizer state", ckpt.display()), e))?;
        if self.cfg.loss == Loss::Softmax
            && let Some(head) = &self.head
        {
            let path = ckpt.join("head.safetensors");
            let mut store = SafetensorsStore::from_file(&path).overwrite(true);
            head.save_into(&mut store).map_err(|source| Error::Store {
                path,
                source: Box::new(source),
            })?;
        }
        let st = State {
            step: done,
            rng: self.rng.next_u64(),
            centers: (self.cfg.loss == Loss::Softmax).then(|| self.centers.centers.clone()),
        };
        facenet::files::write_json_atomic(&ckpt.join("state.json"), &st)
    }

    /// Accuracy (by the file's folds) and VAL@FAR=1e-3 on the aligned validation pairs.
    fn validate(&self) -> Result<(f64, f64)> {
        let Some((pairs, faces)) = &self.val else {
            return Ok((0.0, 0.0));
        };
        let imgs: Vec<image::RgbImage> = faces.iter().map(|f| f.1.clone()).collect();
        let emb: std::collections::BTreeMap<String, Vec<f32>> = faces
            .iter()
            .map(|f| f.0.clone())
            .zip(self.embed(&imgs)?)
            .collect();
        let (e, _) = facenet::eval::protocol::score_pairs(pairs, &emb, Distance::L2, 1e-3)?;
        Ok((e.accuracy, e.val))
    }
}
