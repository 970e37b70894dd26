//! Arguments shared by the subcommands, and what turns them into library objects.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use facenet::detect::Detector;
use facenet::pipeline::{FaceChoice, FacePipeline};
use facenet::{Device, Embedder, Inference, Precision, Standardization};
use facenet_gallery::{GalleryStore, Recognizer};

/// `--weights` and `--precision`: the embedding network.
#[derive(Debug, Clone, clap::Args)]
pub struct WeightsArg {
    /// Weights file (safetensors from `facenet fetch` or `facenet import-weights`).
    /// Default: facenet_keras.safetensors in the cache ($FACENET_HOME, ~/.cache/facenet).
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// Arithmetic of the network on the CPU: f32 (default); bf16 (Intel AMX or AVX-512 BF16:
    /// faster, embeddings within ~1e-4 cosine distance; fails clearly where the CPU has
    /// neither; FACENET_BF16_KERNEL=amx|avx512-bf16 chooses the family); int8 (AVX2; needs
    /// the calibration `facenet quantize` writes beside the weights); auto (the fastest of
    /// those this CPU runs whose LFW accuracy is within 0.001 of f32's, timed once and cached).
    #[arg(long, value_enum, default_value = "f32")]
    pub precision: PrecisionArg,
    /// Embed each face together with its mirror image and average the two (test-time
    /// augmentation: twice the work; a gallery remembers whether it was enrolled so).
    #[arg(long)]
    pub mirror: bool,
}

/// `--precision`: one precision, or `auto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PrecisionArg {
    /// IEEE single precision (the parity mode).
    F32,
    /// bfloat16 products.
    Bf16,
    /// 8-bit products (with `facenet quantize`'s calibration).
    Int8,
    /// The fastest within 0.001 of f32's LFW accuracy on this CPU (`facenet::precision_auto`).
    Auto,
}

impl PrecisionArg {
    /// The flag's value.
    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::Bf16 => "bf16",
            Self::Int8 => "int8",
            Self::Auto => "auto",
        }
    }
}

impl WeightsArg {
    /// The weights file: the flag, else the cache's (which must exist).
    pub fn path(&self) -> anyhow::Result<PathBuf> {
        if let Some(p) = &self.weights {
            return Ok(p.clone());
        }
        let p = facenet::paths::default_weights();
        if !p.is_file() {
            bail!(
                "no weights at {}: run `facenet fetch` first (or pass --weights FILE)",
                p.display()
            );
        }
        Ok(p)
    }

    /// How the network runs: the device and `--precision`, with the kernel families and the
    /// helpers' spin window of the environment (`FACENET_F32_KERNEL`, ..., `FACENET_SPIN_US`).
    /// `auto` is resolved here (its choice and table go to stderr).
    pub fn inference(&self, device: &Device) -> anyhow::Result<Inference> {
        let fixed = match self.precision {
            PrecisionArg::F32 | PrecisionArg::Auto => Precision::F32,
            PrecisionArg::Bf16 => Precision::Bf16,
            PrecisionArg::Int8 => Precision::Int8,
        };
        let options = Inference::new(device.clone(), fixed).with_vars(|k| std::env::var(k).ok())?;
        if self.precision != PrecisionArg::Auto {
            return Ok(options);
        }
        let weights = self.path()?;
        let choice =
            facenet::precision_auto::choose(&weights, &options, &facenet::paths::cache_dir())
                .context("--precision auto")?;
        eprintln!("{}", choice.summary());
        Ok(Inference {
            precision: choice.precision,
            ..options
        })
    }

    /// The embedder with these weights and precision.
    pub fn open(&self, device: &Device) -> anyhow::Result<Embedder> {
        let path = self.path()?;
        let options = self.inference(device)?;
        Ok(Embedder::open_with_options(&path, &options)
            .with_context(|| {
                format!(
                    "loading weights from {} (--precision {})",
                    path.display(),
                    options.precision.name()
                )
            })?
            .with_mirror(self.mirror))
    }
}

/// `--mtcnn`: the detector.
#[derive(Debug, Clone, clap::Args)]
pub struct DetectorArg {
    /// MTCNN weights (safetensors from `facenet fetch`). Default: mtcnn.safetensors in the cache.
    #[arg(long)]
    pub mtcnn: Option<PathBuf>,
    /// Accept MTCNN's miss where it finds no face, instead of looking again at the photo
    /// padded and at lower thresholds (which finds profiles and faces that fill the frame).
    #[arg(long)]
    pub no_rescue: bool,
}

impl DetectorArg {
    /// The weights file: the flag, else the cache's (which must exist).
    pub fn path(&self) -> anyhow::Result<PathBuf> {
        if let Some(p) = &self.mtcnn {
            return Ok(p.clone());
        }
        let p = facenet::paths::cache_dir().join("mtcnn.safetensors");
        if !p.is_file() {
            bail!(
                "no MTCNN weights at {}: run `facenet fetch` first (or pass --mtcnn FILE)",
                p.display()
            );
        }
        Ok(p)
    }

    /// One detector per CPU for a run over many images, or none where the images are
    /// already aligned crops.
    pub fn pool(
        &self,
        device: &Device,
        aligned: bool,
    ) -> anyhow::Result<Option<facenet::pipeline::DetectorPool>> {
        if aligned {
            return Ok(None);
        }
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let path = self.path()?;
        let pool = facenet::pipeline::DetectorPool::open(&path, device, threads)
            .with_context(|| format!("loading MTCNN from {}", path.display()))?;
        Ok(Some(pool.with_config(self.config())))
    }

    /// The detector.
    pub fn open(&self, device: &Device) -> anyhow::Result<Detector> {
        let path = self.path()?;
        Ok(Detector::open(&path, device)
            .with_context(|| format!("loading MTCNN weights from {}", path.display()))?
            .with_config(self.config()))
    }

    /// The cascade's settings these flags ask for.
    pub fn config(&self) -> facenet::detect::MtcnnConfig {
        let mut config = facenet::detect::MtcnnConfig::default();
        if self.no_rescue {
            config.rescue = None;
        }
        config
    }
}

/// The options of every command that turns photos into embeddings.
#[derive(Debug, Clone, clap::Args)]
pub struct PipelineArgs {
    /// The images are already aligned face crops: no detection.
    #[arg(long)]
    pub aligned: bool,
    /// Pixel standardization: prewhiten, fixed (x-127.5)/128, unit (x/255, the course
    /// notebook's). Default: the one the weights were trained with.
    #[arg(long = "preprocess", value_enum)]
    pub preprocess: Option<Standardization>,
    #[command(flatten)]
    pub weights: WeightsArg,
    #[command(flatten)]
    pub detector: DetectorArg,
}

impl PipelineArgs {
    /// The pipeline these options describe.
    pub fn open(&self, device: &Device) -> anyhow::Result<FacePipeline> {
        let mut embedder = self.weights.open(device)?;
        if let Some(s) = self.preprocess {
            embedder = embedder.with_standardization(s);
        }
        let detector = if self.aligned {
            None
        } else {
            Some(self.detector.open(device)?)
        };
        Ok(FacePipeline::new(embedder, detector))
    }
}

/// `--gallery`.
#[derive(Debug, Clone, clap::Args)]
pub struct GalleryArgs {
    /// Gallery database (SQLite). Default: $FACENET_GALLERY, else gallery.db in the user data
    /// folder (~/.local/share/facenet).
    #[arg(long, global = true, env = "FACENET_GALLERY")]
    pub gallery: Option<PathBuf>,
    /// Which gallery of the file (the service keeps one per API key's gallery).
    #[arg(long, global = true, env = "FACENET_GALLERY_NAME", default_value = facenet_gallery::DEFAULT_GALLERY)]
    pub gallery_name: String,
}

impl GalleryArgs {
    /// The gallery's file.
    pub fn path(&self) -> PathBuf {
        self.gallery.clone().unwrap_or_else(|| {
            dirs::data_dir()
                .unwrap_or_else(|| PathBuf::from("."))
                .join("facenet")
                .join("gallery.db")
        })
    }

    /// Opens the gallery, creating it (`create`) or requiring it to exist.
    pub fn open(&self, create: bool) -> anyhow::Result<Arc<dyn GalleryStore>> {
        let p = self.path();
        facenet_gallery::open_store(&p.to_string_lossy(), create)
            .and_then(|store| store.gallery(&self.gallery_name))
            .with_context(|| {
                format!(
                    "opening the gallery {}",
                    facenet_gallery::redact(&p.to_string_lossy())
                )
            })
    }

    /// A recognizer over this gallery.
    pub fn recognizer(
        &self,
        pipeline: &PipelineArgs,
        create: bool,
        device: &Device,
    ) -> anyhow::Result<Recognizer> {
        let store = self.open(create)?;
        Ok(Recognizer::new(Arc::new(pipeline.open(device)?), store))
    }
}

/// `--largest` / `--face N`: which face of a photo with several.
#[derive(Debug, Clone, clap::Args)]
pub struct FaceArgs {
    /// In a photo with several comparable faces, take the largest. (By default the face of the
    /// photo is chosen by confidence, then nearness to the centre; a photo with two comparable
    /// faces is refused.)
    #[arg(long, conflicts_with = "face")]
    pub largest: bool,
    /// Take face N as `facenet detect` lists them (0 = the face of the photo).
    #[arg(long)]
    pub face: Option<usize>,
}

impl FaceArgs {
    /// The library's choice.
    pub fn choice(&self) -> FaceChoice {
        match (self.face, self.largest) {
            (Some(i), _) => FaceChoice::Index(i),
            (None, true) => FaceChoice::Largest,
            (None, false) => FaceChoice::Unambiguous,
        }
    }
}

/// A display name for a path.
pub fn display(p: &Path) -> String {
    p.display().to_string()
}

/// A progress bar on stderr.
pub fn bar(len: usize, template: &str) -> indicatif::ProgressBar {
    indicatif::ProgressBar::new(len as u64).with_style(
        indicatif::ProgressStyle::with_template(template)
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    )
}

/// A progress bar that follows a library run's phases (evaluation, calibration).
pub struct PhaseBar(pub indicatif::ProgressBar);

impl facenet::eval::protocol::Progress for PhaseBar {
    fn start(&self, phase: &str, total: usize) {
        self.0.set_length(total as u64);
        self.0.set_position(0);
        self.0.set_message(phase.to_string());
    }
    fn step(&self, n: usize) {
        self.0.inc(n as u64);
    }
}
