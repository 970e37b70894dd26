//! `--precision auto`: the fastest precision whose LFW accuracy stays within [`TOLERANCE`] of
//! f32's, on this CPU.
//!
//! Two things decide it:
//! - **Accuracy** is a property of a precision's arithmetic, which each kernel family fixes
//!   (the families of one precision that compute the same sums give the same embeddings, bit
//!   for bit, and the parity tests pin them). [`LFW`] holds LFW's 10-fold accuracy measured
//!   with each (README, *Evaluation*); a family without a measurement is not chosen.
//! - **Speed** depends on the CPU: each precision this CPU and these weights can run is
//!   timed once (batch 8, a few seconds each) and the table is cached beside the weights'
//!   other files (`precision-auto.json` in the cache directory), keyed by the CPU, the kernel
//!   families, the weights and the int8 calibration, so a later run decides at once.
//!
//! f32 stays the default everywhere: it is the mode that holds parity with the Keras model.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::{Embedder, Inference, Precision};

/// How far below f32's LFW accuracy a precision may be and still be chosen.
pub const TOLERANCE: f64 = 0.001;

/// The cached table's file name in the cache directory.
pub const TABLE_FILE: &str = "precision-auto.json";

/// LFW accuracy (all 6,000 pairs of `pairs.txt`, `facenet evaluate` defaults) by precision and
/// kernel family (README, *Evaluation*). f32's rows are the reference: 0.9922, the model's own
/// accuracy, measured on `avx512-fma` and on the first f32 path; the f32 families differ only in
/// rounding, and f32 is never excluded. The two VNNI int8 families and AMX's compute the same
/// sums (`avx_vnni_int8_product_equals_avx2_bit_for_bit`, its AVX-512 twin and
/// `amx_int8_product_equals_avx2_bit_for_bit`) and all three replace Winograd, so they give the
/// same embeddings and share a row.
pub const LFW: &[(Precision, &str, f64)] = &[
    (Precision::F32, "avx512-fma", 0.9922),
    (Precision::F32, "avx2-fma", 0.9922),
    (Precision::F32, "gemm", 0.9922),
    (Precision::Bf16, "amx", 0.9923),
    (Precision::Bf16, "avx512-bf16", 0.9923),
    (Precision::Int8, "avx2-int8", 0.9920),
    (Precision::Int8, "avx512-vnni", 0.9920),
    (Precision::Int8, "avx-vnni", 0.9920),
    (Precision::Int8, "amx-int8", 0.9920),
];

/// LFW accuracy of a precision on a kernel family, where measured.
pub fn lfw_accuracy(precision: Precision, kernel: &str) -> Option<f64> {
    LFW.iter()
        .find(|(p, k, _)| *p == precision && *k == kernel)
        .map(|r| r.2)
}

/// One precision on this machine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row {
    /// The precision.
    pub precision: Precision,
    /// Its kernel family here (empty where it cannot run).
    pub kernel: String,
    /// Faces per second at batch 8 (absent where it cannot run).
    pub img_per_s: Option<f64>,
    /// LFW accuracy of that family ([`LFW`]).
    pub lfw: Option<f64>,
    /// Why it cannot run here, where it cannot.
    pub unavailable: Option<String>,
}

/// The measured table and what it is valid for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Table {
    /// What the measurement depends on: CPU, kernel families, weights, calibration.
    pub key: String,
    /// One row per precision.
    pub rows: Vec<Row>,
}

/// What `auto` chose, and from what.
#[derive(Debug, Clone)]
pub struct Choice {
    /// The precision chosen.
    pub precision: Precision,
    /// The table it was chosen from.
    pub table: Table,
    /// Whether the table came from the cache (else it was measured now).
    pub cached: bool,
    /// Where the table is kept.
    pub path: PathBuf,
}

impl Choice {
    /// One line for a log: the choice and each row.
    pub fn summary(&self) -> String {
        let rows: Vec<String> = self
            .table
            .rows
            .iter()
            .map(|r| match (&r.unavailable, r.img_per_s) {
                (Some(why), _) => format!("{}: {why}", r.precision.name()),
                (None, Some(rate)) => format!(
                    "{} {} {rate:.1} img/s, LFW {}",
                    r.precision.name(),
                    r.kernel,
                    r.lfw.map_or("unmeasured".into(), |a| format!("{a:.4}"))
                ),
                (None, None) => format!("{}: not timed", r.precision.name()),
            })
            .collect();
        format!(
            "precision auto: {} ({}; {} table {})",
            self.precision.name(),
            rows.join("; "),
            if self.cached {
                "cached"
            } else {
                "measured now,"
            },
            self.path.display()
        )
    }
}

/// The fastest row within [`TOLERANCE`] of f32's accuracy (f32 itself always qualifies).
pub fn pick(rows: &[Row]) -> Precision {
    let f32_lfw = rows
        .iter()
        .find(|r| r.precision == Precision::F32)
        .and_then(|r| r.lfw);
    rows.iter()
        .filter(|r| r.unavailable.is_none())
        .filter(|r| {
            r.precision == Precision::F32
                || matches!((r.lfw, f32_lfw), (Some(a), Some(b)) if a >= b - TOLERANCE - 1e-12)
        })
        .filter_map(|r| r.img_per_s.map(|v| (r.precision, v)))
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map_or(Precision::F32, |(p, _)| p)
}

/// What a table measured now would depend on.
fn key(weights: &Path, base: &Inference, kernels: &[(Precision, String)]) -> Result<String> {
    let digest = |p: &Path| -> Result<String> {
        use sha2::{Digest, Sha256};
        let meta = std::fs::metadata(p).map_err(|e| Error::Io {
            path: p.to_path_buf(),
            source: e,
        })?;
        let stamp = format!("{}:{}:{:?}", p.display(), meta.len(), meta.modified().ok());
        Ok(format!("{:x}", Sha256::digest(stamp.as_bytes()))[..16].to_string())
    };
    let calibration = crate::quantize::Int8Calibration::path_for(weights);
    let calib = if calibration.is_file() {
        digest(&calibration)?
    } else {
        "none".into()
    };
    let families: Vec<String> = kernels
        .iter()
        .map(|(p, k)| format!("{}={k}", p.name()))
        .collect();
    Ok(format!(
        "cpu={} threads={:?} {} weights={} int8-calibration={calib}",
        cpu_name(),
        base.threads,
        families.join(","),
        digest(weights)?
    ))
}

/// The CPU's model name (Linux: /proc/cpuinfo), and the core count.
fn cpu_name() -> String {
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string());
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    format!("{model} x{cores}")
}

/// The kernel family each precision would run on here (its name as [`Embedder::kernel`]
/// prints it), without loading anything.
fn families(base: &Inference) -> Vec<(Precision, String)> {
    use crate::fast::{Bf16Kernel, F32Kernel, Int8Kernel};
    let name = |r: std::result::Result<&'static str, String>| r.unwrap_or("-").to_string();
    vec![
        (
            Precision::F32,
            name(F32Kernel::resolve(base.f32_kernel).map(F32Kernel::name)),
        ),
        (
            Precision::Bf16,
            name(Bf16Kernel::resolve(base.bf16_kernel).map(Bf16Kernel::name)),
        ),
        (
            Precision::Int8,
            name(Int8Kernel::resolve(base.int8_kernel).map(Int8Kernel::name)),
        ),
    ]
}

/// Chooses the precision for `weights` with the other options of `base`: from the cached
/// table in `cache_dir` when it was measured for this CPU, these kernel families, weights and
/// calibration; else measures it (a few seconds per precision) and caches it.
pub fn choose(weights: &Path, base: &Inference, cache_dir: &Path) -> Result<Choice> {
    let path = cache_dir.join(TABLE_FILE);
    let key = key(weights, base, &families(base))?;
    if let Some(table) = std::fs::read(&path)
        .ok()
        .and_then(|b| serde_json::from_slice::<Table>(&b).ok())
        .filter(|t| t.key == key)
    {
        return Ok(Choice {
            precision: pick(&table.rows),
            table,
            cached: true,
            path,
        });
    }
    let mut rows = Vec::new();
    for precision in Precision::ALL {
        let options = Inference {
            precision,
            ..base.clone()
        };
        rows.push(match Embedder::open_with_options(weights, &options) {
            Ok(e) => {
                let e = e.with_batch_size(8);
                let rate = crate::bench::embed_throughput(&e, 8, 160, (3, 0.3))?;
                Row {
                    precision,
                    kernel: e.kernel().to_string(),
                    img_per_s: Some(rate),
                    lfw: lfw_accuracy(precision, e.kernel()),
                    unavailable: None,
                }
            }
            Err(e) => Row {
                precision,
                kernel: String::new(),
                img_per_s: None,
                lfw: None,
                unavailable: Some(e.to_string()),
            },
        });
    }
    let table = Table { key, rows };
    let text = serde_json::to_vec_pretty(&table).map_err(|e| Error::Json {
        path: path.clone(),
        what: "the precision table".into(),
        source: e,
    })?;
    // A cache that cannot be written only costs the next run the measurement again.
    if std::fs::create_dir_all(cache_dir).is_ok() {
        let tmp = path.with_extension("json.tmp");
        if std::fs::write(&tmp, text).is_ok() {
            let _ = std::fs::rename(&tmp, &path);
        }
    }
    Ok(Choice {
        precision: pick(&table.rows),
        table,
        cached: false,
        path,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(p: Precision, kernel: &str, rate: Option<f64>) -> Row {
        Row {
            precision: p,
            kernel: kernel.into(),
            img_per_s: rate,
            lfw: lfw_accuracy(p, kernel),
            unavailable: rate.is_none().then(|| "not here".to_string()),
        }
    }

    #[test]
    fn the_fastest_precision_within_the_tolerance_wins() {
        // int8 fastest and 0.0002 below f32: chosen.
        let rows = [
            row(Precision::F32, "avx512-fma", Some(80.0)),
            row(Precision::Bf16, "avx512-bf16", Some(45.0)),
            row(Precision::Int8, "avx512-vnni", Some(150.0)),
        ];
        assert_eq!(pick(&rows), Precision::Int8);
        // bf16 slower than f32 and int8 unavailable (no calibration): f32.
        let rows = [
            row(Precision::F32, "avx512-fma", Some(80.0)),
            row(Precision::Bf16, "avx512-bf16", Some(45.0)),
            row(Precision::Int8, "", None),
        ];
        assert_eq!(pick(&rows), Precision::F32);
        // A family never measured on LFW is not chosen, however fast.
        let rows = [
            row(Precision::F32, "avx512-fma", Some(80.0)),
            row(Precision::Int8, "unmeasured-int8", Some(400.0)),
        ];
        assert_eq!(pick(&rows), Precision::F32);
        // An accuracy more than 0.001 below f32's is not chosen.
        let mut worse = row(Precision::Bf16, "amx", Some(300.0));
        worse.lfw = Some(0.9922 - 0.0015);
        assert_eq!(
            pick(&[row(Precision::F32, "avx2-fma", Some(50.0)), worse]),
            Precision::F32
        );
    }

    #[test]
    fn every_measured_family_is_within_the_tolerance() {
        let f32 = lfw_accuracy(Precision::F32, "avx512-fma").unwrap();
        for (p, k, a) in LFW {
            assert!(a >= &(f32 - TOLERANCE), "{} {k}: {a}", p.name());
        }
    }
}
