//! `facenet model`: the embedding network stage by stage, as a Markdown table: output shape,
//! parameters and multiply-adds per image, with their shares of the whole.
//!
//! ```text
//! facenet model                      # the pretrained Keras network, 160x160
//! facenet model --preset small       # the network `facenet train` uses on a CPU
//! facenet model --weights run/checkpoint/model.safetensors
//! facenet model --residuals ../shared/reference/crops   # what each residual block adds
//! ```

use std::path::PathBuf;

use facenet::model::Preset;
use facenet::{Device, InceptionResnetV1Config};

/// Arguments of `facenet model`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A named configuration (default: keras-128, the pretrained model).
    #[arg(long, value_enum, conflicts_with = "weights")]
    pub preset: Option<Preset>,
    /// Read the configuration from a weights file's metadata instead.
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// Input side in pixels (default: the configuration's).
    #[arg(long)]
    pub size: Option<usize>,
    /// Instead of the table: run these face crops (a folder of images, or files) through the
    /// weights (--weights, default the pretrained model) and print, per residual block, the
    /// size of what it adds to its input, and how far each unit embedding moves when the
    /// block is left out.
    #[arg(long, num_args = 1..)]
    pub residuals: Vec<PathBuf>,
}

/// Prints the table.
pub fn run(args: Args) -> anyhow::Result<()> {
    if !args.residuals.is_empty() {
        return residuals(&args);
    }
    let (cfg, what) = match (&args.weights, args.preset) {
        (Some(p), _) => (
            facenet::weights::WeightsMetadata::read(p)?.config,
            p.display().to_string(),
        ),
        (None, p) => {
            let p = p.unwrap_or(Preset::Keras128);
            (p.config(), format!("preset {}", p.name()))
        }
    };
    let size = args.size.unwrap_or(cfg.image_size);
    if size < InceptionResnetV1Config::min_input_size() {
        anyhow::bail!(
            "--size {size}: the network needs at least {} pixels a side",
            InceptionResnetV1Config::min_input_size()
        );
    }
    print!("{}", table(&cfg, size, &what));
    Ok(())
}

fn residuals(args: &Args) -> anyhow::Result<()> {
    use anyhow::Context;
    let path = match &args.weights {
        Some(p) => p.clone(),
        None => crate::common::WeightsArg {
            mirror: false,
            weights: None,
            precision: crate::common::PrecisionArg::F32,
        }
        .path()?,
    };
    let embedder = facenet::Embedder::open(&path, &Device::flex())?;
    let mut files = Vec::new();
    for p in &args.residuals {
        if p.is_dir() {
            let v = facenet::files::walk_images(p)
                .with_context(|| format!("listing {}", p.display()))?;
            files.extend(v);
        } else {
            files.push(p.clone());
        }
    }
    if files.is_empty() {
        anyhow::bail!("--residuals: no images found");
    }
    let faces = files
        .iter()
        .map(|f| facenet::image::load_face(f))
        .collect::<facenet::Result<Vec<_>>>()?;
    let x = embedder.input_tensor(&faces)?;
    println!(
        "Residual blocks of {} on {} face(s): |scale * up(x)| / |x| is the size of what a \
         block adds to its input; `moved` is how far each unit embedding goes (L2) when the \
         block is left out.\n\n| block | adds | moved: mean | moved: max |\n|---|---:|---:|---:|",
        path.display(),
        faces.len()
    );
    for r in embedder.model().residual_effects(x) {
        println!(
            "| {} | {:.3} | {:.3} | {:.3} |",
            r.block, r.adds, r.moved_mean, r.moved_max
        );
    }
    Ok(())
}

fn table(cfg: &InceptionResnetV1Config, size: usize, what: &str) -> String {
    let rows = cfg.init(&Device::flex()).summary(size);
    let params: usize = rows.iter().map(|r| r.params).sum();
    let macs: u64 = rows.iter().map(|r| r.multiply_adds).sum();
    let mut out = format!(
        "Inception-ResNet-v1 ({what}): {size}x{size}x3 in, {}-d unit vector out\n\n\
         | stage | what it does | output (C x H x W) | parameters | % | multiply-adds | % |\n\
         |---|---|---:|---:|---:|---:|---:|\n",
        cfg.embedding_dim
    );
    let pct = |a: f64, b: f64| if b > 0.0 { 100.0 * a / b } else { 0.0 };
    for r in &rows {
        let [c, h, w] = r.output;
        out.push_str(&format!(
            "| {} | {} | {c} x {h} x {w} | {} | {:.1} | {} | {:.1} |\n",
            r.name,
            r.kind,
            thousands(r.params as u64),
            pct(r.params as f64, params as f64),
            thousands(r.multiply_adds),
            pct(r.multiply_adds as f64, macs as f64),
        ));
    }
    out.push_str(&format!(
        "| total | | | {} | 100 | {} | 100 |\n\n\
         {:.2} M parameters ({:.1} MB as f32), {:.3} G multiply-adds ({:.3} GFLOP) per image.\n",
        thousands(params as u64),
        thousands(macs),
        params as f64 / 1e6,
        params as f64 * 4.0 / 1e6,
        macs as f64 / 1e9,
        2.0 * macs as f64 / 1e9,
    ));
    out
}

/// 1234567 -> `1,234,567`.
fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn thousands_groups_digits() {
        assert_eq!(super::thousands(0), "0");
        assert_eq!(super::thousands(999), "999");
        assert_eq!(super::thousands(1_417_000_000), "1,417,000,000");
    }
}
