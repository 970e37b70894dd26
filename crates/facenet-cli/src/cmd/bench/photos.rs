//! `facenet bench detect`, `photos` and `recall`: detection speed, photos end to end, and
//! detection recall over a folder of photos.

use anyhow::{Context, bail};
use facenet::{Device, Engine};

use crate::common::WeightsArg;

/// Arguments of `facenet bench detect`.
#[derive(Debug, clap::Args)]
pub struct DetectArgs {
    /// Photos to detect in (default: ../shared/reference/photos/*.png if present, else the
    /// sample dataset's val/ photos).
    #[arg(long)]
    pub photos: Option<std::path::PathBuf>,
    /// Passes over the photos (the median pass is printed).
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// Implementation: `auto` (the fast CPU path) or `burn` (the burn modules as they are).
    #[arg(long, value_enum, default_value = "auto")]
    pub engine: Engine,
    #[command(flatten)]
    pub detector: crate::common::DetectorArg,
}

pub(super) fn detect_bench(args: &DetectArgs, device: Device) -> anyhow::Result<()> {
    let detector = args.detector.open(&device)?.with_engine(args.engine)?;
    let engine = args.engine.name();
    let dir = match &args.photos {
        Some(p) => p.clone(),
        None => {
            let shared = std::path::PathBuf::from("../shared/reference/photos");
            if shared.is_dir() {
                shared
            } else {
                facenet::paths::cache_dir().join("5-celebrity-faces-dataset/val")
            }
        }
    };
    let mut files = facenet::bench::photo_list(&dir)?;
    // The reference folder holds each photo as .jpg and .png: keep the lossless copy.
    if files
        .iter()
        .any(|p| p.extension().is_some_and(|e| e == "png"))
    {
        files.retain(|p| p.extension().is_some_and(|e| e == "png"));
    }
    let imgs = files
        .iter()
        .map(|p| facenet::image::load_rgb(p))
        .collect::<Result<Vec<_>, _>>()?;
    let pixels: f64 = imgs
        .iter()
        .map(|i| (i.width() * i.height()) as f64)
        .sum::<f64>()
        / imgs.len() as f64;
    let all = || {
        imgs.iter()
            .try_for_each(|img| detector.detect(img).map(drop))
    };
    all()?; // warm-up
    let ms = facenet::bench::median_ms(args.runs, all)?;
    println!(
        "detect engine={engine} photos_per_s={:.2} photos={} mean_pixels={pixels:.0}",
        imgs.len() as f64 * 1000.0 / ms,
        imgs.len(),
    );
    for (w, h) in [(640u32, 480u32), (1920, 1080)] {
        let img = image::imageops::resize(&imgs[0], w, h, image::imageops::FilterType::Triangle);
        detector.detect(&img)?;
        let ms = facenet::bench::median_ms(args.runs, || detector.detect(&img).map(drop))?;
        println!("detect engine={engine} size={w}x{h} ms={ms:.1}");
    }
    Ok(())
}

/// Arguments of `facenet bench photos`.
#[derive(Debug, clap::Args)]
pub struct PhotosArgs {
    /// Photos (default: the sample dataset's val/, 25 photos).
    #[arg(long)]
    pub photos: Option<std::path::PathBuf>,
    /// Passes over the photos (the median pass is printed).
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Sizes to run at: `native` (the files as they are) and/or WxH (each photo enlarged to
    /// that size and written as a JPEG first), comma separated.
    #[arg(long, value_delimiter = ',', default_value = "native,1920x1080")]
    pub sizes: Vec<String>,
    #[command(flatten)]
    pub weights: WeightsArg,
    #[command(flatten)]
    pub detector: crate::common::DetectorArg,
}

pub(super) fn photos_bench(args: &PhotosArgs, device: Device) -> anyhow::Result<()> {
    let dir = args
        .photos
        .clone()
        .unwrap_or_else(|| facenet::paths::cache_dir().join("5-celebrity-faces-dataset/val"));
    let files = facenet::bench::photo_list(&dir)?;
    let embedder = args.weights.open(&device)?;
    let precision = embedder.precision().name();
    let kernel = embedder.kernel();
    let pipeline =
        facenet::pipeline::FacePipeline::new(embedder, Some(args.detector.open(&device)?));
    for size in &args.sizes {
        let (n, photos, faces) = facenet::bench::photos_at_size(&pipeline, &files, size, args.runs)
            .with_context(|| format!("--sizes {size}"))?;
        println!(
            "photos precision={precision} kernel={kernel} size={size} photos_per_s={photos:.2} \
             faces_per_s={faces:.2} photos={n}"
        );
    }
    Ok(())
}

/// Arguments of `facenet bench recall`.
#[derive(Debug, clap::Args)]
pub struct RecallArgs {
    /// Folder of photos (searched recursively).
    #[arg(long)]
    pub photos: std::path::PathBuf,
    /// Keep only files whose name contains this (`_01` picks CFP's profiles).
    #[arg(long)]
    pub name_contains: Option<String>,
    /// Keep every Nth file of the sorted list.
    #[arg(long, default_value_t = 1)]
    pub every: usize,
    /// Replace each photo by a 150x150 crop of its face (the published cascade's box, grown
    /// by this fraction of its size), so that the face fills the frame.
    #[arg(long)]
    pub crop: Option<f32>,
    /// Print the photos without a face.
    #[arg(long)]
    pub list_missed: bool,
    #[command(flatten)]
    pub detector: crate::common::DetectorArg,
}

pub(super) fn recall_bench(args: &RecallArgs, device: Device) -> anyhow::Result<()> {
    use facenet::bench::recall::{photo_set, recall};
    use facenet::detect::{MtcnnConfig, Rescue};
    let published = MtcnnConfig {
        rescue: None,
        ..MtcnnConfig::default()
    };
    let cutter = args.detector.open(&device)?.with_config(published.clone());
    let crop = args.crop.map(|margin| (&cutter, margin));
    let (kept, imgs): (Vec<_>, Vec<_>) = photo_set(
        &args.photos,
        args.name_contains.as_deref(),
        args.every,
        crop,
    )?
    .into_iter()
    .unzip();
    if imgs.is_empty() {
        bail!("{}: no photos match", args.photos.display());
    }
    let settings = [
        ("published", published),
        (
            "rescue",
            MtcnnConfig {
                rescue: Some(Rescue::default()),
                ..MtcnnConfig::default()
            },
        ),
    ];
    for (name, config) in settings {
        let r = recall(args.detector.open(&device)?, config, &imgs)?;
        println!(
            "recall settings={name} found={} photos={} photos_per_s={:.1}",
            r.found, r.photos, r.photos_per_s
        );
        if args.list_missed {
            for i in r.missed {
                println!("  missed {}", kept[i].display());
            }
        }
    }
    Ok(())
}
