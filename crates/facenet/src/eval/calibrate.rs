//! int8 calibration on the faces of a pairs file (`facenet quantize`): the images are found and
//! aligned as the pairs protocol finds and aligns them, then the embedder measures its
//! convolutions' input ranges on them ([`crate::quantize::Int8Calibration`]).
//!
//! ```text
//! facenet quantize --pairs lfw-protocol/pairsDevTrain.txt --exclude lfw-protocol/pairs.txt --images lfw/
//! ```

use std::path::PathBuf;

use crate::Embedder;
use crate::error::{Error, Result};
use crate::eval::Pairs;
use crate::eval::protocol::{self, Progress, ProtocolConfig};
use crate::pipeline::DetectorPool;
use crate::quantize::Int8Calibration;

/// Calibrates on `count` images of a pairs file (LFW's `pairsDevTrain.txt`), taken evenly
/// spaced from its distinct images that are not in `exclude` (LFW's 10-fold `pairs.txt`
/// shares 2,507 of DevTrain's 3,443 images; leaving those out keeps the test's faces out of
/// the calibration), found under `cfg.images` and aligned as `cfg` says (on `pool` unless
/// `cfg.aligned`).
pub fn calibrate_on_pairs(
    embedder: &mut Embedder,
    pairs: &Pairs,
    exclude: Option<&Pairs>,
    cfg: &ProtocolConfig,
    pool: Option<&DetectorPool>,
    count: usize,
    progress: &dyn Progress,
) -> Result<Int8Calibration> {
    let skip: std::collections::BTreeSet<String> = exclude
        .map(|e| e.images().iter().map(|i| i.stem()).collect())
        .unwrap_or_default();
    let mut all: Vec<(String, PathBuf)> = pairs
        .images()
        .into_iter()
        .filter(|img| !skip.contains(&img.stem()))
        .filter_map(|img| img.find(&cfg.images).map(|p| (img.stem(), p)))
        .collect();
    // `images()` is already distinct; the picks are spaced over the file stems' order.
    all.sort();
    if all.is_empty() || count == 0 {
        return Err(Error::InvalidArgument {
            field: "images",
            reason: format!(
                "no image of the pairs file (outside the excluded ones) found under {} to \
                 calibrate on",
                cfg.images.display()
            ),
        });
    }
    let step = all.len() as f64 / count.min(all.len()) as f64;
    let picked: Vec<(String, PathBuf)> = (0..count.min(all.len()))
        .map(|i| all[(i as f64 * step) as usize].clone())
        .collect();
    let (faces, _) = protocol::aligned_faces(&picked, cfg, pool, progress)?;
    progress.start("calibration", faces.len());
    let source = format!("{} aligned faces of {}", faces.len(), cfg.images.display());
    let cal = embedder.calibrate_int8(&faces, &source)?;
    progress.step(faces.len());
    Ok(cal)
}
