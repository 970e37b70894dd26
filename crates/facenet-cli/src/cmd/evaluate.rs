//! `facenet evaluate`: the LFW verification protocol (`facenet::eval::protocol`) with plots.

use std::path::PathBuf;

use anyhow::{Context, bail};
use facenet::align::{AlignConfig, AlignMethod, FaceSelection};
use facenet::eval::Pairs;
use facenet::eval::cohort::{self, CohortThresholds};
use facenet::eval::openset::{self, GalleryRule, ImpostorTable};
use facenet::eval::protocol::{self, ProtocolConfig};
use facenet::pipeline::DetectorPool;
use facenet::{Device, Distance, Standardization};

use crate::common::{DetectorArg, PhaseBar, WeightsArg, bar};

/// Arguments of `facenet evaluate`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Pairs file (`pairs.txt`: folds of same / different pairs; or View 1 files).
    #[arg(long, required_unless_present = "open_set")]
    pub pairs: Option<PathBuf>,
    /// Image folder (`person/person_0001.jpg`).
    #[arg(long)]
    pub images: PathBuf,
    /// Open-set identification instead of pairs: people with two or more photos enrol their
    /// first --per-person photos, their other photos are probes, people with one photo are
    /// strangers; prints DIR at FIR 1e-1, 1e-2, 1e-3 (and open_set.png with --out).
    #[arg(long)]
    pub open_set: bool,
    /// Open set: photos enrolled per person (0 = all but one).
    #[arg(long, default_value_t = 1)]
    pub per_person: usize,
    /// Open set: 0 keeps file order; another seed shuffles each person's photos first.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Open set: compare with the centroid of a person's photos (as `identify` does), or with
    /// the nearest one.
    #[arg(long, value_enum, default_value = "centroid")]
    pub rule: GalleryRule,
    /// Open set: also measure the enrolment quality gate at this quality: DIR with each
    /// person's first photos enrolled against their first photos of at least this quality,
    /// on the same probes.
    #[arg(long, requires = "open_set")]
    pub min_quality: Option<f32>,
    /// Open set: also count every cross-person pair and write the impostor table to FILE.
    #[arg(long)]
    pub impostor_table: Option<PathBuf>,
    /// Open set: also measure the cohort score's thresholds on these photos (galleries of 10
    /// to 3,000 people) and write them to FILE.
    #[arg(long)]
    pub cohort_table: Option<PathBuf>,
    /// The images are already aligned face crops: skip detection.
    #[arg(long)]
    pub aligned: bool,
    /// Alignment method.
    #[arg(long, value_enum, default_value = "crop")]
    pub align: AlignMethod,
    /// Which face when a photo has several (LFW centres the person: center-weighted).
    #[arg(long, value_enum, default_value = "center-weighted")]
    pub select: FaceSelection,
    /// Crop margin in source pixels.
    #[arg(long, default_value_t = 32)]
    pub margin: u32,
    /// Crop size.
    #[arg(long, default_value_t = 160)]
    pub size: u32,
    /// Pixel standardization (default: the weights' own).
    #[arg(long = "preprocess", value_enum)]
    pub preprocess: Option<Standardization>,
    /// Also embed the mirrored face and concatenate (davidsandberg's --use_flipped_images).
    #[arg(long)]
    pub flip: bool,
    /// Distance: l2, squared-l2 or cosine.
    #[arg(long, value_enum, default_value = "l2")]
    pub metric: Distance,
    /// Target false accept rate for VAL@FAR.
    #[arg(long, default_value_t = 1e-3)]
    pub far: f64,
    /// Use only the first K folds (a quicker check).
    #[arg(long)]
    pub folds: Option<usize>,
    /// Skip pairs whose images are missing (and report how many) instead of failing.
    #[arg(long)]
    pub skip_missing: bool,
    /// Write report.json, roc.png and distances.png here.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Embedding cache folder (default: eval-cache/ in the facenet cache).
    #[arg(long)]
    pub cache: Option<PathBuf>,
    /// Faces per forward pass.
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    #[command(flatten)]
    pub weights: WeightsArg,
    #[command(flatten)]
    pub detector: DetectorArg,
}

pub fn run(args: Args, device: Device) -> anyhow::Result<()> {
    let mut embedder = args.weights.open(&device)?.with_batch_size(args.batch);
    if let Some(s) = args.preprocess {
        embedder = embedder.with_standardization(s);
    }
    let pool = args.detector.pool(&device, args.aligned)?;
    let cfg = ProtocolConfig {
        images: args.images.clone(),
        aligned: args.aligned,
        align: AlignConfig {
            method: args.align,
            size: args.size,
            margin: args.margin,
        },
        selection: args.select,
        flip: args.flip,
        metric: args.metric,
        far: args.far,
        skip_missing: args.skip_missing,
        cache: Some(
            args.cache
                .clone()
                .unwrap_or_else(|| facenet::paths::cache_dir().join("eval-cache")),
        ),
    };
    let pb = PhaseBar(bar(0, "{bar:40} {pos}/{len} {msg} {elapsed} (eta {eta})"));
    let Some(pairs_file) = &args.pairs else {
        return open_set(&args, &cfg, &embedder, pool.as_ref(), &pb);
    };
    let pairs = Pairs::read(pairs_file)?;
    let pairs = match args.folds {
        Some(k) => pairs.first_folds(k),
        None => pairs,
    };
    let r = protocol::run(&pairs, &cfg, &embedder, pool.as_ref(), &pb)?;
    pb.0.finish_and_clear();
    if r.images_cached == r.images_embedded {
        eprintln!("all {} embeddings from the cache", r.images_embedded);
    } else {
        eprintln!(
            "embedded {} image(s) ({} from the cache)",
            r.images_embedded - r.images_cached,
            r.images_cached
        );
    }
    print!("{r}");
    let e = &r.evaluation;
    if let Some(out) = &args.out {
        let mut report = serde_json::to_value(&r)?;
        report["pairs_file"] = pairs_file.display().to_string().into();
        report["images"] = args.images.display().to_string().into();
        report["metric"] = serde_json::to_value(args.metric)?;
        facenet::files::write_json_atomic(&out.join("report.json"), &report)?;
        facenet_plot::roc(&out.join("roc.png"), e, args.metric)?;
        let (dist, same): (Vec<f64>, Vec<bool>) = r.distances.iter().copied().unzip();
        facenet_plot::distances(
            &out.join("distances.png"),
            &dist,
            &same,
            e.best_threshold,
            args.metric,
        )
        .context("plotting distances")?;
        println!("report       {}", out.display());
    }
    Ok(())
}

/// `--open-set`: embeds every photo (cached), then the open-set table.
fn open_set(
    args: &Args,
    cfg: &ProtocolConfig,
    embedder: &facenet::Embedder,
    pool: Option<&DetectorPool>,
    pb: &PhaseBar,
) -> anyhow::Result<()> {
    let (people, vecs): (Vec<String>, Vec<Vec<f32>>) =
        protocol::embed_folder(cfg, embedder, pool, pb)?
            .into_iter()
            .unzip();
    pb.0.finish_and_clear();
    let fp = &embedder.metadata().fingerprint;
    let table = match &args.impostor_table {
        Some(out) => {
            let source = format!("every cross-person pair of {}", args.images.display());
            let t = ImpostorTable::from_labelled(&vecs, &people, fp, &source, openset::TABLE_GRID);
            facenet::files::write_json_atomic(out, &t)?;
            println!("impostor table: {} pairs -> {}", t.pairs, out.display());
            Some(t)
        }
        None => facenet::eval::openset::bundled_table(fp),
    };
    let cohort = match &args.cohort_table {
        Some(out) => {
            let source = format!("galleries drawn from {}", args.images.display());
            let t = CohortThresholds::from_labelled(
                &people,
                &vecs,
                (fp, &source),
                &cohort::COHORT_SIZES,
                &cohort::COHORT_TARGETS,
                (cohort::COHORT_DRAWS, 3),
            );
            facenet::files::write_json_atomic(out, &t)?;
            println!("cohort table: sizes {:?} -> {}", t.sizes, out.display());
            Some(t)
        }
        None => cohort::bundled_cohort(fp),
    };
    let firs = [1e-1, 1e-2, 1e-3];
    let r = openset::evaluate(
        &people,
        &vecs,
        (args.per_person, args.seed, args.rule),
        &firs,
        (table.as_ref(), cohort.as_ref()),
    );
    if r.strangers == 0 {
        println!(
            "{} identities, no strangers (everyone has two or more photos): the calibration \
             below holds people back as strangers",
            r.identities
        );
    } else {
        print!("{r}");
    }
    if let Some(q) = args.min_quality {
        let Some(pool) = pool else {
            bail!("--min-quality needs photos to detect faces in (not --aligned)");
        };
        let qualities = protocol::face_qualities(cfg, pool, pb)?;
        pb.0.finish_and_clear();
        let gate = openset::gate_effect(
            &people,
            &vecs,
            &qualities,
            q,
            (args.per_person, args.seed, args.rule),
            &firs,
        );
        print!("{gate}");
    }
    let calibration =
        openset::calibration_reports(&people, &vecs, fp, (table.as_ref(), cohort.as_ref()), &firs);
    for c in &calibration {
        print!("{c}");
    }
    if let Some(out) = &args.out {
        facenet::files::write_json_atomic(&out.join("calibration.json"), &calibration)?;
        facenet_plot::calibration(&out.join("calibration.png"), &calibration)?;
        facenet::files::write_json_atomic(&out.join("open_set.json"), &r)?;
        facenet_plot::open_set(&out.join("open_set.png"), &r)?;
        println!("report       {}", out.display());
    }
    Ok(())
}
