//! `facenet bench`: throughput and memory, printed as machine-readable lines.
//!
//! Each batch size runs in a fresh process (this binary, re-invoked), so its peak resident
//! memory is its own. As in `shared/bench/ort_facenet.py`, only the forward pass on a ready
//! `[B, 3, 160, 160]` tensor is timed: no decoding, standardization or normalization.

use std::process::Command;

use anyhow::{Context, bail};
use facenet::bench::peak_rss_mib;
use facenet::model::Preset;
use facenet::{Device, Embedder, Engine};

use crate::common::WeightsArg;

/// Benchmarks.
#[derive(Debug, clap::Subcommand)]
pub enum Bench {
    /// Embedding throughput: `embed batch=B img_per_s=X peak_rss_mib=Y` per batch size.
    Embed(EmbedArgs),
    /// Detection speed: `detect engine=E photos_per_s=X` over a folder of photos, and
    /// `detect engine=E size=WxH ms=Y` for a photo enlarged to 640x480 and 1920x1080.
    Detect(DetectArgs),
    /// End to end: `photos precision=P size=S photos_per_s=X faces_per_s=Y`, each photo read,
    /// decoded, its faces detected, aligned and embedded, one photo after another; at the
    /// photos' own size and enlarged to 1920x1080 JPEGs.
    Photos(PhotosArgs),
    /// Detection recall: `recall settings=published|rescue found=F photos=N photos_per_s=X`,
    /// over a folder of photos or of frame-filling crops cut from them (`--crop`).
    Recall(RecallArgs),
    /// Gallery search: `search n=N ms_per_query=X kind=exact|exact-cohort|hnsw` over N face-like unit
    /// vectors, with the HNSW index's build time and recall@1.
    Search(SearchArgs),
    /// Training step (triplet loss, forward + backward + Adam): `train model=M batch=B
    /// s_per_step=X peak_rss_mib=Y`, one process per model.
    Train(TrainArgs),
    /// The HTTP service under concurrent clients (`/embed`, `/identify`): requests/s, faces/s,
    /// p50/p99 latency, shed load, against the library alone on the same photos.
    Serve(crate::cmd::serve::BenchArgs),
}

/// Arguments of `facenet bench train`.
#[derive(Debug, clap::Args)]
pub struct TrainArgs {
    /// Presets, comma separated.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "small,keras-128"
    )]
    pub models: Vec<Preset>,
    /// Triplets per step (the batch is three times this).
    #[arg(long, default_value_t = 30)]
    pub triplets: usize,
    /// Timed steps (after one warm-up step).
    #[arg(long, default_value_t = 3)]
    pub steps: usize,
    /// Internal: run this preset in this process.
    #[arg(long, value_enum, hide = true)]
    pub worker: Option<Preset>,
}

/// Runs this executable with `args` (a benchmark worker in a fresh process, so that its peak
/// memory is its own); returns its standard output.
fn run_worker(args: &[String]) -> anyhow::Result<String> {
    let exe = std::env::current_exe().context("locating this executable")?;
    // The device flags (global options) go to the worker too, so that it measures the device
    // this process was asked for.
    let device_flags = std::env::args().filter(|a| a == "--cuda" || a == "--gpu");
    let out = Command::new(&exe)
        .args(device_flags)
        .args(args)
        .output()
        .context("running the benchmark worker")?;
    if !out.status.success() {
        bail!(
            "benchmark worker `{}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn train_bench(args: &TrainArgs, device: Device) -> anyhow::Result<()> {
    let Some(model) = args.worker else {
        for m in &args.models {
            let worker = format!("bench train --worker {}", m.name());
            let rest = format!(" --triplets {} --steps {}", args.triplets, args.steps);
            let argv: Vec<String> = (worker + &rest).split(' ').map(String::from).collect();
            print!("{}", run_worker(&argv)?);
        }
        return Ok(());
    };
    let s = facenet_train::trainer::time_triplet_steps(model, args.triplets, args.steps, &device)?;
    println!(
        "train model={} batch={} s_per_step={s:.2} peak_rss_mib={:.0}",
        model.name(),
        3 * args.triplets.max(1),
        peak_rss_mib()
    );
    Ok(())
}

/// Arguments of `facenet bench search`.
#[derive(Debug, clap::Args)]
pub struct SearchArgs {
    /// Gallery sizes for exact search, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "10000,100000,1000000")]
    pub sizes: Vec<usize>,
    /// Gallery sizes for the HNSW index (build time, query time, recall@1 against exact).
    #[arg(long, value_delimiter = ',', default_value = "10000,100000")]
    pub ann_sizes: Vec<usize>,
    /// Queries per size.
    #[arg(long, default_value_t = 200)]
    pub queries: usize,
    /// Search inside this PostgreSQL database instead (postgres://USER@HOST:PORT/DB): each
    /// size in a scratch gallery, deleted afterwards; exact search under both rules, then the
    /// HNSW index at the --ann-sizes.
    #[arg(long)]
    pub store: Option<String>,
    /// The index's ef_search with --store.
    #[arg(long, default_value_t = facenet_gallery::HnswParams::default().ef_search)]
    pub ef_search: u32,
}

/// Face-like synthetic galleries (10 faces per identity, see `facenet_gallery::synthetic`):
/// exact search on one core, then the HNSW graph.
fn search_bench(args: &SearchArgs) -> anyhow::Result<()> {
    let threads = rayon::current_num_threads();
    if args.sizes.iter().chain(&args.ann_sizes).any(|&n| n == 0) {
        anyhow::bail!("--sizes and --ann-sizes: a gallery size must be at least 1");
    }
    let mut sizes: Vec<usize> = args.sizes.iter().chain(&args.ann_sizes).copied().collect();
    sizes.sort_unstable();
    sizes.dedup();
    if let Some(url) = &args.store {
        return store_search_bench(args, url, &sizes);
    }
    for n in sizes {
        let hnsw = args.ann_sizes.contains(&n);
        let r = facenet_gallery::synthetic::search_bench(n, args.queries, hnsw, threads)?;
        if args.sizes.contains(&n) {
            let ms = r.exact_ms;
            println!("search n={n} dim=128 ms_per_query={ms:.3} threads=1 kind=exact");
        }
        if let Some((list_s, ms, update_ms)) = r.cohort {
            println!(
                "search n={n} dim=128 ms_per_query={ms:.3} threads=1 kind=exact-cohort \
                 lists_s={list_s:.2} list_threads={threads} update_ms={update_ms:.1}"
            );
        }
        if let Some((ms, build_s, recall)) = r.hnsw {
            println!(
                "search n={n} dim=128 ms_per_query={ms:.3} threads=1 kind=hnsw build_s={build_s:.1} \
                 build_threads={threads} recall_at_1={recall:.4} speedup={:.1}",
                r.exact_ms / ms
            );
        }
    }
    Ok(())
}

/// `bench search --store`: search inside a PostgreSQL database, a scratch gallery per size.
fn store_search_bench(args: &SearchArgs, url: &str, sizes: &[usize]) -> anyhow::Result<()> {
    let store = facenet_gallery::postgres::PostgresGallery::connect(url)
        .context("connecting to the benchmark's database")?;
    for &n in sizes {
        let name = format!("bench-search-{n}-{}", std::process::id());
        let g = store.open_gallery(&name)?;
        let hnsw = args
            .ann_sizes
            .contains(&n)
            .then_some(facenet_gallery::HnswParams {
                ef_search: args.ef_search,
                ..Default::default()
            });
        let r =
            facenet_gallery::synthetic::store_search_bench(&g, n, args.queries, hnsw, &|step| {
                eprintln!("n={n}: {step}")
            });
        g.delete_gallery()?;
        let r = r?;
        for line in r.lines(args.ef_search) {
            println!("{line}");
        }
    }
    Ok(())
}

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

fn detect_bench(args: &DetectArgs, device: Device) -> anyhow::Result<()> {
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

fn photos_bench(args: &PhotosArgs, device: Device) -> anyhow::Result<()> {
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

fn recall_bench(args: &RecallArgs, device: Device) -> anyhow::Result<()> {
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

/// Arguments of `facenet bench embed`.
#[derive(Debug, clap::Args)]
pub struct EmbedArgs {
    /// Batch sizes, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "1,8,32")]
    pub batch: Vec<usize>,
    /// Implementation: `auto` (the fast CPU path) or `burn` (the burn model as is).
    #[arg(long, value_enum, default_value = "auto")]
    pub engine: Engine,
    /// Timed runs per batch size (the median is printed).
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// Minimum seconds per timed run.
    #[arg(long, default_value_t = 1.0)]
    pub min_run_s: f64,
    /// Network preset when no weights file is found (random weights): keras-128, small.
    #[arg(long, value_enum, default_value = "keras-128")]
    pub model: Preset,
    /// Internal: run one batch size in this process.
    #[arg(long, hide = true)]
    pub worker: Option<usize>,
    #[command(flatten)]
    pub weights: WeightsArg,
}

pub fn run(bench: Bench, device: Device) -> anyhow::Result<()> {
    match bench {
        Bench::Embed(args) => match args.worker {
            Some(b) => worker(&args, b, device),
            None => parent(&args, &device),
        },
        Bench::Detect(args) => detect_bench(&args, device),
        Bench::Photos(args) => photos_bench(&args, device),
        Bench::Recall(args) => recall_bench(&args, device),
        Bench::Search(args) => search_bench(&args),
        Bench::Train(args) => train_bench(&args, device),
        Bench::Serve(args) => crate::cmd::serve::bench(args, device),
    }
}

fn parent(args: &EmbedArgs, device: &Device) -> anyhow::Result<()> {
    use facenet::bench::report::{EmbedRow, embed_header, embed_table};
    let cfg = args.model.config();
    let macs = cfg.multiply_adds();
    let threads = rayon::current_num_threads();
    let model = (args.model.name(), cfg.image_size, macs);
    let (header, peak) = embed_header(model, threads, *device == Device::flex());
    header.iter().for_each(|l| println!("{l}"));
    let mut rows = Vec::new();
    for &b in &args.batch {
        let mut argv: Vec<String> = format!(
            "bench embed --worker {b} --runs {} --min-run-s {} --model {} --engine {} --precision {}",
            args.runs,
            args.min_run_s,
            args.model.name(),
            args.engine.name(),
            args.weights.precision.name()
        )
        .split(' ')
        .map(String::from)
        .collect();
        if let Some(w) = &args.weights.weights {
            argv.extend(["--weights".into(), w.display().to_string()]);
        }
        let text = run_worker(&argv)?;
        for line in text.lines() {
            println!("{line}");
            rows.extend(EmbedRow::parse(b, line));
        }
    }
    let title = format!(
        "engine {} {}",
        args.engine.name(),
        args.weights.precision.name()
    );
    for line in embed_table(&title, macs, peak.as_ref(), &rows) {
        println!("{line}");
    }
    Ok(())
}

fn worker(args: &EmbedArgs, batch: usize, device: Device) -> anyhow::Result<()> {
    let (embedder, source) = match args.weights.path() {
        Ok(p) => (Embedder::open(&p, &device)?, p.display().to_string()),
        Err(_) => {
            let cfg = args.model.config();
            let meta = facenet::weights::WeightsMetadata::random(cfg.clone());
            (
                Embedder::new(cfg.init(&device), meta, device.clone())?,
                "random weights".to_string(),
            )
        }
    };
    let options = facenet::Inference {
        engine: args.engine,
        ..args.weights.inference(&device)?
    };
    let embedder = embedder
        .with_inference(&options, args.weights.path().ok().as_deref())
        .with_context(|| format!("--precision {}", options.precision.name()))?;
    let size = 160.min(args.model.config().image_size);
    let median =
        facenet::bench::embed_throughput(&embedder, batch, size, (args.runs, args.min_run_s))?;
    let rates = args.runs.max(1);
    println!(
        "embed batch={batch} img_per_s={median:.2} peak_rss_mib={:.0} precision={} kernel={}",
        peak_rss_mib(),
        embedder.precision().name(),
        embedder.kernel()
    );
    println!(
        "# batch {batch}: median of {rates} runs, {source}, engine {}",
        embedder.engine()
    );
    if let Some((on, refused)) = embedder.huge_pages() {
        println!("# weights on 2 MiB pages: {on} regions ({refused} refused by the kernel)");
    }
    Ok(())
}
