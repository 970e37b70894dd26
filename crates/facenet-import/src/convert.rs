//! Keras tensors to burn tensors: names, layouts, completeness, and the safetensors file.
//!
//! Every layout change lives here:
//! - convolution kernels HWIO `(kh, kw, in, out)` become OIHW `(out, in, kh, kw)`;
//! - Dense kernels stay `(in, out)`: burn's `Linear` stores its weight that way (PyTorch's
//!   `(out, in)` would need a transpose, burn's does not);
//! - a BatchNorm without `gamma` (Keras `scale=False`) gets a gamma of ones, since burn's
//!   BatchNorm always has one.

use std::collections::BTreeMap;
use std::path::Path;

use facenet::InceptionResnetV1Config;
use facenet::weights::{self, FORMAT, WeightsMetadata};
use facenet::{Device, Standardization};
use safetensors::{Dtype, tensor::TensorView};
use sha2::{Digest, Sha256};

use crate::keras::{self, KerasModel};
use crate::{ImportError, Result};

/// A converted tensor: burn shape and row-major values.
#[derive(Debug, Clone, PartialEq)]
pub struct BurnTensor {
    /// Shape in burn's layout.
    pub shape: Vec<usize>,
    /// Values.
    pub data: Vec<f32>,
}

/// Permutes a convolution kernel from HWIO to OIHW.
pub fn hwio_to_oihw(data: &[f32], shape: &[usize]) -> (Vec<f32>, Vec<usize>) {
    let [h, w, i, o] = [shape[0], shape[1], shape[2], shape[3]];
    let mut out = vec![0f32; data.len()];
    for kh in 0..h {
        for kw in 0..w {
            for ci in 0..i {
                for co in 0..o {
                    out[((co * i + ci) * h + kh) * w + kw] =
                        data[((kh * w + kw) * i + ci) * o + co];
                }
            }
        }
    }
    (out, vec![o, i, h, w])
}

/// Maps and converts every Keras tensor, adds missing BatchNorm gammas, and checks the result
/// against the network's parameters both ways (names and shapes). `path` is for errors.
pub fn convert(
    path: &Path,
    model: &KerasModel,
    cfg: &InceptionResnetV1Config,
) -> Result<BTreeMap<String, BurnTensor>> {
    let mismatch = |reason: String| ImportError::Mismatch {
        path: path.into(),
        reason,
    };
    let mut out = BTreeMap::new();
    for t in &model.tensors {
        let key = weights::keras_to_burn(&t.layer, &t.weight, cfg.repeats[2]).ok_or_else(|| {
            mismatch(format!(
                "tensor `{}/{}` {:?} has no place in the network (unknown layer or weight name)",
                t.layer, t.weight, t.shape
            ))
        })?;
        let converted = match t.shape.len() {
            4 => {
                let (data, shape) = hwio_to_oihw(&t.data, &t.shape);
                BurnTensor { shape, data }
            }
            _ => BurnTensor {
                shape: t.shape.clone(),
                data: t.data.clone(),
            },
        };
        if out.insert(key.clone(), converted).is_some() {
            return Err(mismatch(format!("two tensors map to `{key}`")));
        }
    }
    let expected = weights::expected_tensors(&cfg.init(&Device::flex()));
    // Keras BatchNorm with scale=False has no gamma: burn's gamma is then ones.
    for (name, shape) in &expected {
        if name.ends_with(".gamma") && !out.contains_key(name) {
            let beta = name.replace(".gamma", ".beta");
            if out.contains_key(&beta) {
                out.insert(
                    name.clone(),
                    BurnTensor {
                        shape: shape.clone(),
                        data: vec![1.0; shape.iter().product()],
                    },
                );
            }
        }
    }
    for (name, shape) in &expected {
        match out.get(name) {
            None => {
                return Err(mismatch(format!(
                    "the network's parameter `{name}` {shape:?} is not in the file"
                )));
            }
            Some(t) if &t.shape != shape => {
                return Err(mismatch(format!(
                    "`{name}` has shape {:?} in the file, the network expects {shape:?}",
                    t.shape
                )));
            }
            Some(_) => {}
        }
    }
    if let Some(extra) = out.keys().find(|k| !expected.contains_key(*k)) {
        return Err(mismatch(format!(
            "tensor `{extra}` is not a parameter of the network"
        )));
    }
    Ok(out)
}

/// The weights fingerprint of converted tensors ([`facenet::weights::fingerprint`]).
pub fn fingerprint(tensors: &BTreeMap<String, BurnTensor>) -> String {
    facenet::weights::fingerprint(
        tensors
            .iter()
            .map(|(name, t)| (name.as_str(), t.shape.as_slice(), t.data.as_slice())),
    )
}

/// Lower-case hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// sha256 of a file, streamed.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).map_err(|e| ImportError::io(path, e))?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).map_err(|e| ImportError::io(path, e))?;
    Ok(hex(&h.finalize()))
}

/// Writes tensors and metadata as safetensors, atomically (temp file, fsync, rename): an
/// existing file at `out` is replaced only by a complete new one.
pub fn write_safetensors(
    out: &Path,
    tensors: &BTreeMap<String, BurnTensor>,
    meta: &WeightsMetadata,
) -> Result<()> {
    let bytes: Vec<(String, Vec<u8>, Vec<usize>)> = tensors
        .iter()
        .map(|(k, t)| {
            let b = t.data.iter().flat_map(|v| v.to_le_bytes()).collect();
            (k.clone(), b, t.shape.clone())
        })
        .collect();
    let views = bytes
        .iter()
        .map(|(k, b, s)| {
            TensorView::new(Dtype::F32, s.clone(), b)
                .map(|v| (k.clone(), v))
                .map_err(|e| ImportError::Mismatch {
                    path: out.into(),
                    reason: format!("`{k}`: {e}"),
                })
        })
        .collect::<Result<Vec<_>>>()?;
    let buf =
        safetensors::serialize(views, Some(meta.to_map()?)).map_err(|e| ImportError::Mismatch {
            path: out.into(),
            reason: format!("cannot serialize: {e}"),
        })?;
    write_atomic(out, &buf)
}

/// Writes `bytes` to `path` atomically ([`facenet::files::write_atomic`]).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    Ok(facenet::files::write_atomic(path, bytes)?)
}

/// What an import did.
#[derive(Debug, Clone)]
pub struct ImportReport {
    /// Tensors read from the h5.
    pub keras_tensors: usize,
    /// Tensors written (Keras tensors plus the added gammas).
    pub written_tensors: usize,
    /// Values written.
    pub values: usize,
    /// Keras version of the source, if recorded.
    pub keras_version: Option<String>,
    /// The written file's metadata.
    pub metadata: WeightsMetadata,
}

/// Converts a Keras FaceNet `.h5` into a burn safetensors file.
pub fn import_keras(
    h5: &Path,
    out: &Path,
    cfg: &InceptionResnetV1Config,
    standardization: Standardization,
) -> Result<ImportReport> {
    let model = keras::read(h5)?;
    let tensors = convert(h5, &model, cfg)?;
    let metadata = WeightsMetadata {
        format: FORMAT.to_string(),
        config: cfg.clone(),
        standardization,
        source: h5
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default(),
        source_sha256: sha256_file(h5)?,
        fingerprint: fingerprint(&tensors),
    };
    write_safetensors(out, &tensors, &metadata)?;
    Ok(ImportReport {
        keras_tensors: model.tensors.len(),
        written_tensors: tensors.len(),
        values: tensors.values().map(|t| t.data.len()).sum(),
        keras_version: model.keras_version,
        metadata,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keras::KerasTensor;

    #[test]
    fn hwio_to_oihw_by_hand() {
        // h=1, w=2, i=2, o=3: value = 100*kw + 10*ci + co
        let mut data = Vec::new();
        for kw in 0..2 {
            for ci in 0..2 {
                for co in 0..3 {
                    data.push((100 * kw + 10 * ci + co) as f32);
                }
            }
        }
        let (out, shape) = hwio_to_oihw(&data, &[1, 2, 2, 3]);
        assert_eq!(shape, vec![3, 2, 1, 2]);
        // out[co][ci][0][kw]
        assert_eq!(out[0], 0.0); // co0 ci0 kw0
        assert_eq!(out[1], 100.0); // co0 ci0 kw1
        assert_eq!(out[2], 10.0); // co0 ci1 kw0
        assert_eq!(out[4], 1.0); // co1 ci0 kw0
        assert_eq!(out[11], 112.0); // co2 ci1 kw1
    }

    /// A Keras model holding exactly what the small network needs, from its own parameters
    /// mapped backwards (so the test does not depend on the real file).
    fn small_keras() -> (InceptionResnetV1Config, KerasModel) {
        let cfg = InceptionResnetV1Config::small();
        let expected = weights::expected_tensors(&cfg.init(&Device::flex()));
        let mut tensors = Vec::new();
        // Generate Keras names by trying every candidate layer name.
        let mut layers: Vec<String> = [
            "Conv2d_1a_3x3",
            "Conv2d_2a_3x3",
            "Conv2d_2b_3x3",
            "Conv2d_3b_1x1",
            "Conv2d_4a_3x3",
            "Conv2d_4b_3x3",
            "Mixed_6a_Branch_0_Conv2d_1a_3x3",
            "Mixed_6a_Branch_1_Conv2d_0a_1x1",
            "Mixed_6a_Branch_1_Conv2d_0b_3x3",
            "Mixed_6a_Branch_1_Conv2d_1a_3x3",
            "Mixed_7a_Branch_0_Conv2d_0a_1x1",
            "Mixed_7a_Branch_0_Conv2d_1a_3x3",
            "Mixed_7a_Branch_1_Conv2d_0a_1x1",
            "Mixed_7a_Branch_1_Conv2d_1a_3x3",
            "Mixed_7a_Branch_2_Conv2d_0a_1x1",
            "Mixed_7a_Branch_2_Conv2d_0b_3x3",
            "Mixed_7a_Branch_2_Conv2d_1a_3x3",
            "Bottleneck",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        for (b, suffixes) in [
            (
                "Block35_1",
                &[
                    "Branch_0_Conv2d_1x1",
                    "Branch_1_Conv2d_0a_1x1",
                    "Branch_1_Conv2d_0b_3x3",
                    "Branch_2_Conv2d_0a_1x1",
                    "Branch_2_Conv2d_0b_3x3",
                    "Branch_2_Conv2d_0c_3x3",
                ][..],
            ),
            (
                "Block17_1",
                &[
                    "Branch_0_Conv2d_1x1",
                    "Branch_1_Conv2d_0a_1x1",
                    "Branch_1_Conv2d_0b_1x7",
                    "Branch_1_Conv2d_0c_7x1",
                ][..],
            ),
            (
                "Block8_1",
                &[
                    "Branch_0_Conv2d_1x1",
                    "Branch_1_Conv2d_0a_1x1",
                    "Branch_1_Conv2d_0b_1x3",
                    "Branch_1_Conv2d_0c_3x1",
                ][..],
            ),
            (
                "Block8_2",
                &[
                    "Branch_0_Conv2d_1x1",
                    "Branch_1_Conv2d_0a_1x1",
                    "Branch_1_Conv2d_0b_1x3",
                    "Branch_1_Conv2d_0c_3x1",
                ][..],
            ),
        ] {
            for s in suffixes {
                layers.push(format!("{b}_{s}"));
            }
            tensors.push(keras_tensor(
                &expected,
                &cfg,
                &format!("{b}_Conv2d_1x1"),
                "kernel:0",
            ));
            tensors.push(keras_tensor(
                &expected,
                &cfg,
                &format!("{b}_Conv2d_1x1"),
                "bias:0",
            ));
        }
        for l in &layers {
            tensors.push(keras_tensor(&expected, &cfg, l, "kernel:0"));
            let bn = format!("{l}_BatchNorm");
            for w in ["beta:0", "moving_mean:0", "moving_variance:0"] {
                tensors.push(keras_tensor(&expected, &cfg, &bn, w));
            }
        }
        (
            cfg,
            KerasModel {
                keras_version: Some("2.1.2".into()),
                model_name: None,
                tensors,
            },
        )
    }

    fn keras_tensor(
        expected: &BTreeMap<String, Vec<usize>>,
        cfg: &InceptionResnetV1Config,
        layer: &str,
        weight: &str,
    ) -> KerasTensor {
        let key = weights::keras_to_burn(layer, weight, cfg.repeats[2]).unwrap();
        let s = expected.get(&key).unwrap_or_else(|| panic!("{key}"));
        let shape = if s.len() == 4 {
            vec![s[2], s[3], s[1], s[0]]
        } else {
            s.clone()
        };
        KerasTensor {
            layer: layer.into(),
            weight: weight.into(),
            data: vec![0.5; shape.iter().product()],
            shape,
        }
    }

    #[test]
    fn complete_model_converts_with_gammas_added() {
        let (cfg, model) = small_keras();
        let out = convert(Path::new("x.h5"), &model, &cfg).unwrap();
        let gamma = &out["conv2d_1a.bn.gamma"];
        assert!(gamma.data.iter().all(|&v| v == 1.0));
        assert_eq!(out["conv2d_1a.conv.weight"].shape, vec![8, 3, 3, 3]);
        assert!(out.contains_key("last_bn.gamma"));
    }

    #[test]
    fn missing_tensor_is_named() {
        let (cfg, mut model) = small_keras();
        model
            .tensors
            .retain(|t| !(t.layer == "Conv2d_2b_3x3_BatchNorm" && t.weight == "moving_mean:0"));
        let err = convert(Path::new("x.h5"), &model, &cfg)
            .unwrap_err()
            .to_string();
        assert!(err.contains("conv2d_2b.bn.running_mean"), "{err}");
        assert!(err.contains("not in the file"), "{err}");
    }

    #[test]
    fn extra_tensor_is_named() {
        let (cfg, mut model) = small_keras();
        model.tensors.push(KerasTensor {
            layer: "Logits".into(),
            weight: "kernel:0".into(),
            shape: vec![2, 2],
            data: vec![0.0; 4],
        });
        let err = convert(Path::new("x.h5"), &model, &cfg)
            .unwrap_err()
            .to_string();
        assert!(err.contains("Logits/kernel:0"), "{err}");
    }

    #[test]
    fn wrong_shape_is_named() {
        let (cfg, mut model) = small_keras();
        let t = model
            .tensors
            .iter_mut()
            .find(|t| t.layer == "Bottleneck" && t.weight == "kernel:0")
            .unwrap();
        t.shape = vec![3, 3];
        t.data = vec![0.0; 9];
        let err = convert(Path::new("x.h5"), &model, &cfg)
            .unwrap_err()
            .to_string();
        assert!(err.contains("last_linear.weight"), "{err}");
    }

    #[test]
    fn written_file_loads_into_the_network() {
        let (cfg, model) = small_keras();
        let tensors = convert(Path::new("x.h5"), &model, &cfg).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("w.safetensors");
        let meta = WeightsMetadata {
            format: FORMAT.into(),
            config: cfg.clone(),
            standardization: Standardization::Prewhiten,
            source: "x.h5".into(),
            source_sha256: "00".into(),
            fingerprint: fingerprint(&tensors),
        };
        write_safetensors(&out, &tensors, &meta).unwrap();
        let (net, read) = weights::load(&out, &Device::flex()).unwrap();
        assert_eq!(read, meta);
        let w = net
            .last_linear
            .weight
            .val()
            .into_data()
            .try_into_vec::<f32>()
            .unwrap();
        assert!(w.iter().all(|&v| v == 0.5));
    }
}
