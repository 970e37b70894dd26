//! Reading the weights of a Keras 2 `.h5` model file.
//!
//! Layout (Keras 2.x `save_model`): the root has a `model_config` JSON attribute; group
//! `model_weights` has a `layer_names` attribute; each layer group has a `weight_names`
//! attribute whose entries (`Conv2d_1a_3x3/kernel:0`) are dataset paths inside that group.

use std::path::Path;

use hdf5_reader::Hdf5File;

use crate::{ImportError, Result};

/// One weight tensor of a Keras layer, as stored (float32, Keras layout).
#[derive(Debug, Clone, PartialEq)]
pub struct KerasTensor {
    /// Layer name (`Conv2d_1a_3x3`).
    pub layer: String,
    /// Weight name (`kernel:0`).
    pub weight: String,
    /// Keras shape (HWIO for convolutions, (in, out) for Dense).
    pub shape: Vec<usize>,
    /// Values in row-major order.
    pub data: Vec<f32>,
}

/// What the importer needs from a Keras model file.
#[derive(Debug, Clone, PartialEq)]
pub struct KerasModel {
    /// `keras_version` attribute, if present.
    pub keras_version: Option<String>,
    /// The model's `name` from `model_config`, if present.
    pub model_name: Option<String>,
    /// Every weight tensor, in layer order.
    pub tensors: Vec<KerasTensor>,
}

/// Reads every weight dataset of a Keras `.h5` file.
pub fn read(path: &Path) -> Result<KerasModel> {
    let h5err = |what: &str| {
        let what = what.to_string();
        move |source| ImportError::Hdf5 {
            path: path.into(),
            what,
            source,
        }
    };
    if !path.is_file() {
        return Err(ImportError::io(
            path,
            std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
        ));
    }
    let file_len = std::fs::metadata(path).map_or(0, |m| m.len());
    let file = Hdf5File::open(path).map_err(h5err("file"))?;
    let root = file.root_group().map_err(h5err("root group"))?;
    let root_attr = |name: &str| {
        root.attribute(name).ok().and_then(|a| {
            a.read_strings()
                .ok()
                .and_then(|v| v.into_iter().next())
                .or_else(|| a.read_string().ok())
        })
    };
    let keras_version = root_attr("keras_version");
    let model_name = root_attr("model_config").and_then(|cfg| {
        serde_json::from_str::<serde_json::Value>(&cfg)
            .ok()?
            .pointer("/config/name")?
            .as_str()
            .map(str::to_string)
    });
    let weights = file
        .group("/model_weights")
        .map_err(|_| ImportError::NotKeras {
            path: path.into(),
            reason: "no `model_weights` group: not a Keras model file saved with `model.save`"
                .into(),
        })?;
    let layer_names = weights
        .attribute("layer_names")
        .and_then(|a| a.read_strings())
        .map_err(h5err("model_weights/layer_names"))?;
    let mut tensors = Vec::new();
    for layer in layer_names {
        let group = weights
            .group(&layer)
            .map_err(h5err(&format!("model_weights/{layer}")))?;
        let names = match group.attribute("weight_names") {
            // Layers without weights store an empty (float) array here.
            Ok(a) if a.num_elements().unwrap_or(0) == 0 => Vec::new(),
            Ok(a) => a
                .read_strings()
                .map_err(h5err(&format!("model_weights/{layer}/weight_names")))?,
            Err(_) => Vec::new(),
        };
        for full in names {
            let ds_path = format!("/model_weights/{layer}/{full}");
            let ds = file.dataset(&ds_path).map_err(h5err(&ds_path))?;
            let shape: Vec<usize> = ds.shape().iter().map(|&d| d as usize).collect();
            // The header's shape is checked against the file before any allocation: even
            // compressed (deflate packs at most 1032:1), a file of L bytes holds no more than
            // 1032 L bytes of values.
            let n = shape
                .iter()
                .try_fold(1usize, |a, &d| a.checked_mul(d))
                .filter(|&n| (n as u64).saturating_mul(4) <= file_len.saturating_mul(1032))
                .ok_or_else(|| ImportError::NotKeras {
                    path: path.into(),
                    reason: format!(
                        "dataset {ds_path} claims shape {shape:?}: more values than a \
                         {file_len}-byte file can hold (a damaged file?)"
                    ),
                })?;
            let mut data = vec![0f32; n];
            ds.read_into(&mut data).map_err(h5err(&ds_path))?;
            let weight = full.rsplit('/').next().unwrap_or(&full).to_string();
            tensors.push(KerasTensor {
                layer: layer.clone(),
                weight,
                shape,
                data,
            });
        }
    }
    if tensors.is_empty() {
        return Err(ImportError::NotKeras {
            path: path.into(),
            reason: "the model has no weights".into(),
        });
    }
    Ok(KerasModel {
        keras_version,
        model_name,
        tensors,
    })
}
