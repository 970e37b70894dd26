//! MTCNN weights: facenet-pytorch's `pnet.pt`, `rnet.pt`, `onet.pt` -> one safetensors file.
//!
//! The PyTorch files are read by burn's `PytorchStore`, which transposes `Linear` weights to
//! burn's `(in, out)`; PReLU's `weight` is burn's `alpha`. Every tensor of each file must be used
//! and every parameter filled.

use std::path::Path;

use burn::store::{ModuleSnapshot, PytorchStore, SafetensorsStore};
use facenet::Device;
use facenet::model::mtcnn::Mtcnn;

use crate::convert::write_atomic;
use crate::{ImportError, Result};

/// Reads the three stage files and writes `out` (keys `pnet.*`, `rnet.*`, `onet.*`).
pub fn import_mtcnn(pnet: &Path, rnet: &Path, onet: &Path, out: &Path) -> Result<()> {
    let device = Device::flex();
    let mut nets = Mtcnn::new(&device);
    load_stage(&mut nets.pnet, pnet)?;
    load_stage(&mut nets.rnet, rnet)?;
    load_stage(&mut nets.onet, onet)?;
    let mut store = SafetensorsStore::from_bytes(None).metadata("format", "facenet-mtcnn/1");
    nets.save_into(&mut store)
        .map_err(|e| ImportError::Mismatch {
            path: out.into(),
            reason: format!("cannot serialize: {e}"),
        })?;
    let bytes = store.get_bytes().map_err(|e| ImportError::Mismatch {
        path: out.into(),
        reason: format!("cannot serialize: {e}"),
    })?;
    write_atomic(out, &bytes)
}

fn load_stage<M: ModuleSnapshot>(stage: &mut M, path: &Path) -> Result<()> {
    if !path.is_file() {
        return Err(ImportError::io(
            path,
            std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
        ));
    }
    let mut store = PytorchStore::from_file(path)
        .with_key_remapping(r"^(prelu\d+)\.weight$", "$1.alpha")
        .allow_partial(true);
    let r = stage
        .load_from(&mut store)
        .map_err(|source| ImportError::Pytorch {
            path: path.into(),
            source,
        })?;
    facenet::weights::check_applied(&r, path)?;
    Ok(())
}
