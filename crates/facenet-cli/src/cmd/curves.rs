//! `facenet curves`: the validation curves of training runs (their `log.jsonl`), as a table
//! and a picture: accuracy against optimizer steps and against training minutes.
//!
//! ```text
//! facenet curves runs/semi-hard runs/softmax --goal 0.85 --out curves.png
//! ```

use std::path::PathBuf;

use anyhow::{Context, bail};

/// Arguments of `facenet curves`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Run directories of `facenet train` (trained with --val-pairs). `A+B` is one curve: run
    /// B started from A's checkpoint (`--init-weights A/checkpoint/model.safetensors`), its
    /// steps and minutes counted on from A's end.
    #[arg(required = true)]
    pub runs: Vec<PathBuf>,
    /// Draw a dashed line at this accuracy.
    #[arg(long)]
    pub goal: Option<f64>,
    /// Output PNG.
    #[arg(long, default_value = "curves.png")]
    pub out: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let mut runs = Vec::new();
    for arg in &args.runs {
        // `A+B` unless a directory has that very name.
        let parts: Vec<PathBuf> = match arg.to_str() {
            Some(s) if !arg.exists() && s.contains('+') => {
                s.split('+').map(PathBuf::from).collect()
            }
            _ => vec![arg.clone()],
        };
        let mut points = Vec::new();
        let mut names = Vec::new();
        for dir in &parts {
            let p = facenet_train::read_curve(dir)?;
            if p.is_empty() {
                bail!(
                    "{}: no validation in log.jsonl (train with --val-pairs and --val-images)",
                    dir.display()
                );
            }
            points = facenet_train::chain_curves(&points, &p);
            names.push(
                dir.file_name()
                    .map_or_else(|| dir.display().to_string(), |n| n.to_string_lossy().into()),
            );
        }
        runs.push((names.join(" + "), points));
    }
    println!("run | validations | steps | training min | first | best (at step, min) | last");
    for (name, p) in &runs {
        let (first, last) = (p[0], p[p.len() - 1]);
        let best = p
            .iter()
            .copied()
            .max_by(|a, b| a.val_accuracy.total_cmp(&b.val_accuracy))
            .unwrap_or(last);
        println!(
            "{name} | {} | {} | {:.1} | {:.3} | {:.3} ({}, {:.1}) | {:.3}",
            p.len(),
            last.step,
            last.train_seconds / 60.0,
            first.val_accuracy,
            best.val_accuracy,
            best.step,
            best.train_seconds / 60.0,
            last.val_accuracy
        );
    }
    facenet_plot::training_curves(&args.out, &runs, args.goal)
        .with_context(|| format!("drawing {}", args.out.display()))?;
    println!("wrote {}", args.out.display());
    Ok(())
}
