//! `facenet serve`, `facenet keys` and `facenet bench serve`: arguments, then the service crate.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use facenet::Device;

use crate::common::{GalleryArgs, PipelineArgs};

/// Arguments of `facenet serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    #[command(flatten)]
    config: facenet_serve::ServeConfig,
    #[command(flatten)]
    pipeline: PipelineArgs,
    #[command(flatten)]
    gallery: GalleryArgs,
}

pub fn serve(args: ServeArgs, device: Device) -> anyhow::Result<()> {
    let path = args.gallery.path();
    let store = facenet_gallery::open_store(&path.to_string_lossy(), true).with_context(|| {
        format!(
            "opening the gallery store {}",
            facenet_gallery::redact(&path.to_string_lossy())
        )
    })?;
    let pipeline = args.pipeline.open(&device)?;
    facenet_serve::serve(args.config, pipeline, store).context("facenet serve")
}

/// Arguments of `facenet keys`.
#[derive(Debug, clap::Args)]
pub struct KeysArgs {
    /// The store (the SQLite file `facenet serve --gallery` serves). Default: $FACENET_GALLERY,
    /// else gallery.db in the user data folder.
    #[arg(long, env = "FACENET_GALLERY")]
    store: Option<PathBuf>,
    #[command(subcommand)]
    cmd: facenet_serve::keys::KeysCmd,
}

pub fn keys(args: KeysArgs) -> anyhow::Result<()> {
    let path = GalleryArgs {
        gallery: args.store,
        gallery_name: String::new(),
    }
    .path();
    let store = facenet_gallery::open_store(&path.to_string_lossy(), true).with_context(|| {
        format!(
            "opening the gallery store {}",
            facenet_gallery::redact(&path.to_string_lossy())
        )
    })?;
    print!("{}", facenet_serve::keys::run(args.cmd, store.as_ref())?);
    Ok(())
}

/// Arguments of `facenet bench serve`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Routes, comma separated: `embed`, `identify`, `detect`.
    #[arg(long, value_delimiter = ',', default_value = "embed,identify")]
    routes: Vec<String>,
    /// Concurrent clients, comma separated: one run per value and route.
    #[arg(long, value_delimiter = ',', default_value = "1,16,256")]
    clients: Vec<usize>,
    /// Requests per run (at least two per client).
    #[arg(long, default_value_t = 160)]
    requests: usize,
    /// Longest one run may take, seconds.
    #[arg(long, default_value_t = 120)]
    max_time_s: u64,
    /// Synthetic face-like faces beside the enrolled photos, comma separated: one service and
    /// gallery per value (e.g. `0,10000,100000,1000000`), so that `/identify`'s latency and
    /// memory are shown as the gallery grows.
    #[arg(long, value_delimiter = ',', default_value = "0")]
    synthetic_faces: Vec<usize>,
    /// Enrol at most this many `train/` photos per person (0: all of them).
    #[arg(long, default_value_t = 0)]
    enrol_per_person: usize,
    /// Sample dataset (`train/PERSON/*.jpg` are enrolled, `val/*/*.jpg` are sent). Default:
    /// the one `facenet fetch` downloads.
    #[arg(long)]
    data: Option<PathBuf>,
    #[command(flatten)]
    config: facenet_serve::ServeConfig,
    #[command(flatten)]
    pipeline: PipelineArgs,
}

pub fn bench(args: BenchArgs, device: Device) -> anyhow::Result<()> {
    let data = args
        .data
        .unwrap_or_else(|| facenet::paths::cache_dir().join("5-celebrity-faces-dataset"));
    let mut bench = facenet_serve::bench::ServeBench::from_dataset(&data, args.config)?;
    (bench.clients, bench.requests) = (args.clients, args.requests);
    bench.routes = args
        .routes
        .iter()
        .map(|r| format!("/api/v1/{}", r.trim_start_matches('/')))
        .collect();
    bench.max_time = Duration::from_secs(args.max_time_s);
    bench.synthetic_faces = args.synthetic_faces;
    bench.keep_per_person(args.enrol_per_person);
    print!(
        "{}",
        facenet_serve::bench::serve_bench(args.pipeline.open(&device)?, &bench)?
    );
    Ok(())
}
