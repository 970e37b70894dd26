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

mod photos;
mod search;

pub use photos::{DetectArgs, PhotosArgs, RecallArgs};
pub use search::SearchArgs;

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
    /// After the timed runs, time every convolution over two more seconds of batches and
    /// print where the time went (per geometry and input map: share, ms per batch, GFLOP/s),
    /// slowest first. Fast CPU path only.
    #[arg(long)]
    pub layers: bool,
    /// After the timed runs, time each batch one by one over two more seconds and print
    /// their spread (10th, 50th, 90th, 99th percentile and longest, in ms): whether a slow run
    /// was every pass slower alike or a few long ones.
    #[arg(long)]
    pub pass_times: bool,
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
        Bench::Detect(args) => photos::detect_bench(&args, device),
        Bench::Photos(args) => photos::photos_bench(&args, device),
        Bench::Recall(args) => photos::recall_bench(&args, device),
        Bench::Search(args) => search::search_bench(&args),
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
        if args.layers {
            argv.push("--layers".into());
        }
        if args.pass_times {
            argv.push("--pass-times".into());
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
    let mut embedder = embedder
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
    let passes = embedder.single_image_passes();
    if !passes.is_empty() {
        let each: Vec<String> = passes
            .iter()
            .map(|(t, n)| format!("{n} on {t} thread{}", if *t == 1 { "" } else { "s" }))
            .collect();
        println!("# single-image passes: {}", each.join(", "));
    }
    // Before the layer timers go on, which add their own time to every pass.
    if args.pass_times {
        let times = facenet::bench::embed_passes(&embedder, batch, size, 2.0)?;
        println!("{}", facenet::bench::report::pass_time_line(batch, &times));
    }
    if args.layers {
        embedder
            .time_layers(true)
            .context("--layers needs the fast CPU path (--engine auto, no GPU flag)")?;
        let passes = facenet::bench::embed_passes(&embedder, batch, size, 2.0)?.len() as u64;
        let times = embedder.layer_times();
        for line in facenet::bench::report::layer_table(batch, passes, &times) {
            println!("{line}");
        }
    }
    Ok(())
}
