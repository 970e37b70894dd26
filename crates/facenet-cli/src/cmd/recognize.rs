//! Recognition: `enroll`, `verify`, `identify`, `gallery`, `cluster` (on
//! `facenet_gallery::Recognizer`).

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, bail};
use facenet::Device;
use facenet::eval::cohort::Scoring;
use facenet_gallery::cluster::Method;
use facenet_gallery::{DEFAULT_THRESHOLD, GalleryRule};

use crate::common::{FaceArgs, GalleryArgs, PipelineArgs, display};

/// Arguments of `facenet enroll`.
#[derive(Debug, clap::Args)]
pub struct EnrollArgs {
    /// The person's name.
    pub name: String,
    /// Photos (one is enough); each is kept as a separate sample.
    #[arg(required = true)]
    pub photos: Vec<PathBuf>,
    #[command(flatten)]
    pub face: FaceArgs,
    /// The quality a face needs to be enrolled, 0 to 1: size, sharpness, pose and the
    /// detector's confidence, the weakest of them (`facenet detect PHOTO` prints it). 0 takes
    /// every face.
    #[arg(long, default_value_t = facenet::quality::ENROL_MIN, value_parser = unit_interval)]
    pub min_quality: f32,
    #[command(flatten)]
    pub gallery: GalleryArgs,
    #[command(flatten)]
    pub pipeline: PipelineArgs,
}

fn unit_interval(s: &str) -> Result<f32, String> {
    match s.parse::<f32>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err(format!("{s}: a quality is a number from 0 to 1")),
    }
}

pub fn enroll(args: EnrollArgs, device: Device) -> anyhow::Result<()> {
    let r = args
        .gallery
        .recognizer(&args.pipeline, true, &device)?
        .with_min_quality(args.min_quality);
    let e = r.enroll_files(&args.name, &args.photos, args.face.choice())?;
    println!(
        "enrolled {} face(s) as {} in {}",
        e.faces,
        e.identity,
        args.gallery.path().display()
    );
    if let Some(advice) = r.advice()? {
        eprintln!("note: {advice}");
    }
    Ok(())
}

/// Arguments of `facenet verify`.
#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// The photo to check.
    pub photo: PathBuf,
    /// The identity it claims to be.
    #[arg(long = "as")]
    pub name: String,
    /// Accept when the L2 distance (unit embeddings, 0..2) is below this. Default: the gallery's
    /// calibrated threshold (`facenet calibrate --store`), else the one that accepts 0.1 % of
    /// impostor pairs (0.985 for the Keras model with prewhiten input; the course notebook's
    /// 0.7 belongs to its x/255 input).
    #[arg(long)]
    pub threshold: Option<f32>,
    #[command(flatten)]
    pub gallery: GalleryArgs,
    #[command(flatten)]
    pub pipeline: PipelineArgs,
}

/// Whether the photo is the person.
pub fn verify(args: VerifyArgs, device: Device) -> anyhow::Result<bool> {
    let r = args.gallery.recognizer(&args.pipeline, false, &device)?;
    let img = r.pipeline().load(&args.photo)?;
    let Some(v) = r.verify(&img, &args.name, args.threshold)? else {
        bail!("{}: no face found", args.photo.display());
    };
    println!(
        "{}: {} {} (distance {:.3} {} threshold {:.3}; L2 between unit embeddings, 0..2; threshold: {})",
        display(&args.photo),
        if v.verified { "is" } else { "is NOT" },
        v.identity,
        v.distance,
        if v.verified { "<" } else { ">=" },
        v.threshold.value,
        v.threshold.describe(),
    );
    Ok(v.verified)
}

/// Arguments of `facenet identify`.
#[derive(Debug, clap::Args)]
pub struct IdentifyArgs {
    /// Photos.
    #[arg(required = true)]
    pub photos: Vec<PathBuf>,
    /// Above this L2 distance (unit embeddings, 0..2) a face is `unknown`. Default: derived
    /// for --fir from the gallery's size and the model's impostor distances.
    #[arg(long, conflicts_with = "fir")]
    pub threshold: Option<f32>,
    /// Target false-identification rate: the share of strangers (people not enrolled) that may
    /// be named as someone. Default: the gallery's (`facenet gallery fir`), else 0.01.
    #[arg(long)]
    pub fir: Option<f64>,
    /// How a probe is compared with a person's photos: their centroid (default) or the
    /// nearest one.
    #[arg(long, value_enum, default_value = "centroid")]
    pub rule: GalleryRule,
    /// What the derived threshold applies to: the cohort score (the distance less how close
    /// the person's entry sits to its 5 nearest other people, so that crowded entries are
    /// discounted; it names more enrolled people at the same --fir, and applies to galleries
    /// of 6 people and more, SQLite or PostgreSQL), or the plain distance.
    #[arg(long, value_enum, default_value = "cohort")]
    pub score: Scoring,
    /// Also list the next best identities.
    #[arg(long, default_value_t = 1)]
    pub top: usize,
    /// One JSON object per face.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub gallery: GalleryArgs,
    #[command(flatten)]
    pub pipeline: PipelineArgs,
}

pub fn identify(args: IdentifyArgs, device: Device) -> anyhow::Result<()> {
    let r = args.gallery.recognizer(&args.pipeline, false, &device)?;
    let r = r.with_rule(args.rule).with_scoring(args.score);
    let searcher = r.searcher(args.threshold, args.fir)?;
    let t = searcher.threshold();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if !args.json {
        writeln!(
            out,
            "threshold {:.3} ({}); distances are L2 between unit embeddings (0..2)",
            t.value,
            t.describe()
        )?;
    }
    for photo in &args.photos {
        let ids = r.identify(&searcher, &r.pipeline().load(photo)?, args.top)?;
        let path = display(photo);
        match (ids.is_empty(), args.json) {
            (true, true) => writeln!(out, "{}", serde_json::json!({"path": path, "faces": 0}))?,
            (true, false) => writeln!(out, "{path}: no face found")?,
            _ => {}
        }
        for id in ids {
            if args.json {
                let mut v = serde_json::to_value(&id)?;
                v["path"] = path.clone().into();
                writeln!(out, "{v}")?;
                continue;
            }
            let mut dist = id.distance.map_or("-".into(), |d| format!("{d:.3}"));
            if let Some(c) = id.cohort_score {
                dist.push_str(&format!(", cohort score {c:.3}"));
            }
            let margin = id.margin.map_or(String::new(), |m| {
                format!(", margin {m:.3} to the next identity")
            });
            writeln!(
                out,
                "{path} face {}: {} (distance {dist}{margin})",
                id.face,
                id.identity.name()
            )?;
            for c in id.candidates.iter().skip(1) {
                writeln!(out, "    then {} {:.3}", c.identity, c.distance)?;
            }
        }
    }
    Ok(())
}

/// `facenet gallery ...`.
#[derive(Debug, clap::Args)]
pub struct GalleryCmd {
    #[command(subcommand)]
    pub action: GalleryAction,
    #[command(flatten)]
    pub gallery: GalleryArgs,
}

/// Gallery maintenance.
#[derive(Debug, clap::Subcommand)]
pub enum GalleryAction {
    /// Identities and their number of faces.
    List,
    /// The faces of one identity.
    Show {
        /// Identity.
        name: String,
    },
    /// Delete an identity and its faces.
    Remove {
        /// Identity.
        name: String,
    },
    /// Rename an identity.
    Rename {
        /// Current name.
        old: String,
        /// New name.
        new: String,
    },
    /// Write every face (with embeddings) to a JSON file.
    Export {
        /// Output file.
        file: PathBuf,
    },
    /// Add the faces of an exported JSON file (same model required).
    Import {
        /// Input file.
        file: PathBuf,
    },
    /// Build (or rebuild) a PostgreSQL gallery's HNSW index for large galleries, or drop it.
    /// SQLite galleries need none: they build their graph in memory from 50000 faces on.
    Index {
        /// Links per node (HNSW's M): more raise recall and memory.
        #[arg(long, default_value_t = facenet_gallery::HnswParams::default().m)]
        m: u32,
        /// Candidate list while building: more raise recall and build time.
        #[arg(long, default_value_t = facenet_gallery::HnswParams::default().ef_construction)]
        ef_construction: u32,
        /// Candidate list while searching: more raise recall and query time.
        #[arg(long, default_value_t = facenet_gallery::HnswParams::default().ef_search)]
        ef_search: u32,
        /// Drop the index (searches become exact again).
        #[arg(long)]
        drop: bool,
    },
    /// Show, or set, the false-identification rate `identify` aims at in this gallery, with
    /// the threshold it means at the gallery's size and the expected share of enrolled
    /// people's photos named.
    Fir {
        /// The rate, in (0, 1): 0.01 names at most 1 % of strangers as someone.
        rate: Option<f64>,
    },
}

pub fn gallery(cmd: GalleryCmd) -> anyhow::Result<()> {
    let create = matches!(cmd.action, GalleryAction::Import { .. });
    let g = cmd.gallery.open(create)?;
    match cmd.action {
        GalleryAction::List => {
            let ids = g.identities()?;
            for (name, n) in &ids {
                println!("{name}\t{n} face(s)");
            }
            println!("{} identities", ids.len());
        }
        GalleryAction::Show { name } => {
            for f in g.faces(Some(&name))? {
                println!("#{} {} box {:?}", f.id, f.source, f.bbox);
            }
        }
        GalleryAction::Remove { name } => {
            let n = g.remove(&name)?;
            println!("removed {name} ({n} face(s))");
        }
        GalleryAction::Rename { old, new } => {
            g.rename(&old, &new)?;
            println!("renamed {old} to {new}");
        }
        GalleryAction::Export { file } => {
            let e = facenet_gallery::Export::of(g.as_ref())?;
            facenet::files::write_json_atomic(&file, &e)?;
            println!("exported {} face(s) to {}", e.faces.len(), file.display());
        }
        GalleryAction::Import { file } => {
            let bytes =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let e: facenet_gallery::Export = serde_json::from_slice(&bytes)
                .with_context(|| format!("{}: not a facenet gallery export", file.display()))?;
            println!("imported {} face(s)", e.import_into(g.as_ref())?);
        }
        GalleryAction::Index {
            m,
            ef_construction,
            ef_search,
            drop,
        } => {
            if drop {
                g.set_index(None)?;
                println!("dropped the HNSW index of {}", g.location());
            } else {
                let p = facenet_gallery::HnswParams {
                    m,
                    ef_construction,
                    ef_search,
                };
                let faces = g
                    .entries(facenet_gallery::GalleryRule::NearestSample)?
                    .map(|(_, faces)| faces);
                let t = std::time::Instant::now();
                if faces.unwrap_or(0) > 0 {
                    eprintln!("building the HNSW index (enrolments go on meanwhile)...");
                }
                g.set_index(Some(p))?;
                println!(
                    "HNSW index (m={m}, ef_construction={ef_construction}, ef_search={ef_search}) \
                     over {} face(s) built in {:.1} s",
                    faces.unwrap_or(0),
                    t.elapsed().as_secs_f64()
                );
            }
        }
        GalleryAction::Fir { rate } => {
            let mut s = g.settings()?;
            if rate.is_some() {
                s.target_fir = rate;
                g.set_settings(&s)?;
            }
            let fir = s.target_fir.unwrap_or(facenet_gallery::DEFAULT_FIR);
            println!("target false-identification rate: {fir}");
            // What that means at this gallery's size.
            if let Some(model) = g.model()? {
                let n = g.identities()?.len();
                // As `identify` searches it by default.
                let t = facenet_gallery::identification_threshold(
                    Scoring::Cohort,
                    (None, None),
                    &s,
                    &model.fingerprint,
                    (n, n),
                )?;
                println!(
                    "{n} identities: threshold {:.3} ({})",
                    t.value,
                    t.describe()
                );
            }
        }
    }
    Ok(())
}

/// Arguments of `facenet cluster`.
#[derive(Debug, clap::Args)]
pub struct ClusterArgs {
    /// Folder of photos (searched recursively).
    pub dir: PathBuf,
    /// Link two faces below this L2 distance (unit embeddings, 0..2).
    #[arg(long, default_value_t = DEFAULT_THRESHOLD)]
    pub threshold: f32,
    /// chinese-whispers (default) or dbscan.
    #[arg(long, value_enum, default_value = "chinese-whispers")]
    pub method: Method,
    /// Output JSON file: clusters with their member files.
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub pipeline: PipelineArgs,
}

pub fn cluster(args: ClusterArgs, device: Device) -> anyhow::Result<()> {
    let p = args.pipeline.open(&device)?;
    let (faces, labels) =
        facenet_gallery::cluster_folder(&p, &args.dir, args.threshold, args.method)?;
    let k = labels.iter().copied().max().map_or(0, |m| m + 1);
    let clusters: Vec<serde_json::Value> = (0..k)
        .map(|c| {
            let m: Vec<_> = labels
                .iter()
                .zip(&faces)
                .filter(|(l, _)| **l == c)
                .map(|(_, f)| f)
                .collect();
            serde_json::json!({"cluster": c, "size": m.len(), "members": m})
        })
        .collect();
    let report = serde_json::json!({"threshold": args.threshold, "faces": faces.len(), "clusters": clusters});
    facenet::files::write_json_atomic(&args.out, &report)?;
    println!(
        "{} face(s) in {k} cluster(s) -> {}",
        faces.len(),
        args.out.display()
    );
    Ok(())
}
