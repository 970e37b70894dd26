//! Weight names, the weights file's metadata, and loading.
//!
//! At run time only safetensors files with burn-native names are read. Each key is the
//! parameter's path in the module tree (`repeat_1.0.branch1.1.conv.weight`), which are the
//! facenet-pytorch names. The Keras `.h5` is converted once by `facenet import-weights`
//! (crate `facenet-import`), which uses [`keras_to_burn`] below: the one table of names that
//! the converter and the loader share.
//!
//! | Keras layer                                | burn module                 |
//! |--------------------------------------------|-----------------------------|
//! | `Conv2d_1a_3x3`, `Conv2d_1a_3x3_BatchNorm` | `conv2d_1a.conv`, `.bn`     |
//! | `Block35_N_Branch_1_Conv2d_0b_3x3`         | `repeat_1.{N-1}.branch1.1`  |
//! | `Block35_N_Conv2d_1x1` (bias, no BN)       | `repeat_1.{N-1}.conv2d`     |
//! | `Block17_N_…`, `Block8_N_…`                | `repeat_2.…`, `repeat_3.…`  |
//! | the last `Block8_N_…` (no ReLU)            | `block8.…`                  |
//! | `Mixed_6a_Branch_1_Conv2d_1a_3x3`          | `mixed_6a.branch1.2`        |
//! | `Bottleneck`, `Bottleneck_BatchNorm`       | `last_linear`, `last_bn`    |
//!
//! | Keras weight      | burn parameter  |
//! |-------------------|-----------------|
//! | `kernel`          | `weight`        |
//! | `bias`            | `bias`          |
//! | `gamma`           | `gamma`         |
//! | `beta`            | `beta`          |
//! | `moving_mean`     | `running_mean`  |
//! | `moving_variance` | `running_var`   |

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use burn::store::{ModuleSnapshot, SafetensorsStore};
use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::image::Standardization;
use crate::model::{InceptionResnetV1, InceptionResnetV1Config};

/// Value of the `format` metadata key written by the importer.
pub const FORMAT: &str = "facenet-burn/1";

/// Keras layers outside the residual blocks: (Keras name, burn module path).
#[rustfmt::skip]
const KERAS_LAYERS: &[(&str, &str)] = &[
    ("Conv2d_1a_3x3", "conv2d_1a"),
    ("Conv2d_2a_3x3", "conv2d_2a"),
    ("Conv2d_2b_3x3", "conv2d_2b"),
    ("Conv2d_3b_1x1", "conv2d_3b"),
    ("Conv2d_4a_3x3", "conv2d_4a"),
    ("Conv2d_4b_3x3", "conv2d_4b"),
    ("Mixed_6a_Branch_0_Conv2d_1a_3x3", "mixed_6a.branch0"),
    ("Mixed_6a_Branch_1_Conv2d_0a_1x1", "mixed_6a.branch1.0"),
    ("Mixed_6a_Branch_1_Conv2d_0b_3x3", "mixed_6a.branch1.1"),
    ("Mixed_6a_Branch_1_Conv2d_1a_3x3", "mixed_6a.branch1.2"),
    ("Mixed_7a_Branch_0_Conv2d_0a_1x1", "mixed_7a.branch0.0"),
    ("Mixed_7a_Branch_0_Conv2d_1a_3x3", "mixed_7a.branch0.1"),
    ("Mixed_7a_Branch_1_Conv2d_0a_1x1", "mixed_7a.branch1.0"),
    ("Mixed_7a_Branch_1_Conv2d_1a_3x3", "mixed_7a.branch1.1"),
    ("Mixed_7a_Branch_2_Conv2d_0a_1x1", "mixed_7a.branch2.0"),
    ("Mixed_7a_Branch_2_Conv2d_0b_3x3", "mixed_7a.branch2.1"),
    ("Mixed_7a_Branch_2_Conv2d_1a_3x3", "mixed_7a.branch2.2"),
];

/// Layers inside a residual block `BlockXX_N_<suffix>`: (suffix, path inside the block).
/// `Conv2d_1x1` is the "up" convolution: it has a bias and no BatchNorm.
#[rustfmt::skip]
const KERAS_BLOCK_LAYERS: &[(&str, &str)] = &[
    ("Branch_0_Conv2d_1x1", "branch0"),
    ("Branch_1_Conv2d_0a_1x1", "branch1.0"),
    ("Branch_1_Conv2d_0b_3x3", "branch1.1"), // Block35
    ("Branch_1_Conv2d_0b_1x7", "branch1.1"), // Block17
    ("Branch_1_Conv2d_0b_1x3", "branch1.1"), // Block8
    ("Branch_1_Conv2d_0c_7x1", "branch1.2"), // Block17
    ("Branch_1_Conv2d_0c_3x1", "branch1.2"), // Block8
    ("Branch_2_Conv2d_0a_1x1", "branch2.0"),
    ("Branch_2_Conv2d_0b_3x3", "branch2.1"),
    ("Branch_2_Conv2d_0c_3x3", "branch2.2"),
    ("Conv2d_1x1", "conv2d"),
];

/// Keras weight name (without `:0`) to burn parameter name.
#[rustfmt::skip]
const KERAS_WEIGHTS: &[(&str, &str)] = &[
    ("kernel", "weight"),
    ("bias", "bias"),
    ("gamma", "gamma"),
    ("beta", "beta"),
    ("moving_mean", "running_mean"),
    ("moving_variance", "running_var"),
];

/// Maps a Keras layer name to its burn module path. `num_block8` is the number of Block8
/// with ReLU (5 in the published model): `Block8_{num_block8 + 1}` is the final `block8`.
pub fn keras_layer_to_burn(layer: &str, num_block8: usize) -> Option<String> {
    let (base, is_bn) = match layer.strip_suffix("_BatchNorm") {
        Some(base) => (base, true),
        None => (layer, false),
    };
    if base == "Bottleneck" {
        return Some(if is_bn { "last_bn" } else { "last_linear" }.to_string());
    }
    if let Some((_, path)) = KERAS_LAYERS.iter().find(|(k, _)| *k == base) {
        return Some(format!("{path}.{}", if is_bn { "bn" } else { "conv" }));
    }
    for (prefix, repeat) in [
        ("Block35_", "repeat_1"),
        ("Block17_", "repeat_2"),
        ("Block8_", "repeat_3"),
    ] {
        let Some(rest) = base.strip_prefix(prefix) else {
            continue;
        };
        let (num, suffix) = rest.split_once('_')?;
        let n: usize = num.parse().ok().filter(|&n| n >= 1)?;
        let (_, inner) = KERAS_BLOCK_LAYERS.iter().find(|(s, _)| *s == suffix)?;
        let block = if prefix == "Block8_" && n == num_block8 + 1 {
            "block8".to_string()
        } else if prefix == "Block8_" && n > num_block8 + 1 {
            return None;
        } else {
            format!("{repeat}.{}", n - 1)
        };
        return Some(match (*inner, is_bn) {
            ("conv2d", false) => format!("{block}.conv2d"),
            ("conv2d", true) => return None,
            (inner, bn) => format!("{block}.{inner}.{}", if bn { "bn" } else { "conv" }),
        });
    }
    None
}

/// Maps a Keras weight (`layer`, `weight` such as `kernel:0`) to its burn key.
pub fn keras_to_burn(layer: &str, weight: &str, num_block8: usize) -> Option<String> {
    let weight = weight.strip_suffix(":0").unwrap_or(weight);
    let (_, param) = KERAS_WEIGHTS.iter().find(|(k, _)| *k == weight)?;
    Some(format!(
        "{}.{param}",
        keras_layer_to_burn(layer, num_block8)?
    ))
}

/// What a weights file says about itself (its safetensors `__metadata__`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WeightsMetadata {
    /// Always [`FORMAT`].
    pub format: String,
    /// The network shape.
    pub config: InceptionResnetV1Config,
    /// The standardization the network was trained with.
    pub standardization: Standardization,
    /// Where the weights came from (file name).
    pub source: String,
    /// sha256 of the source file.
    pub source_sha256: String,
    /// sha256 over the tensors (names, shapes and bytes, in key order): identifies the model
    /// whose embeddings a gallery holds.
    pub fingerprint: String,
}

impl WeightsMetadata {
    /// Metadata for a network with random weights (benchmarks, tests): prewhiten input, no
    /// source, fingerprint `random`.
    pub fn random(config: InceptionResnetV1Config) -> Self {
        Self {
            format: FORMAT.into(),
            config,
            standardization: Standardization::Prewhiten,
            source: "random".into(),
            source_sha256: String::new(),
            fingerprint: "random".into(),
        }
    }

    /// Encodes as a safetensors `__metadata__` map (string values).
    pub fn to_map(&self) -> Result<std::collections::HashMap<String, String>> {
        let config = serde_json::to_string(&self.config).map_err(|source| Error::Json {
            path: "weights metadata".into(),
            what: "cannot encode the network config".into(),
            source,
        })?;
        Ok([
            ("format", self.format.clone()),
            ("config", config),
            ("embedding_dim", self.config.embedding_dim.to_string()),
            ("image_size", self.config.image_size.to_string()),
            ("standardization", self.standardization.name().to_string()),
            ("source", self.source.clone()),
            ("source_sha256", self.source_sha256.clone()),
            ("fingerprint", self.fingerprint.clone()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect())
    }

    /// Decodes [`WeightsMetadata::to_map`]; `path` is only used in errors.
    pub fn from_map(path: &Path, map: &BTreeMap<String, String>) -> Result<Self> {
        let get = |key: &str| {
            map.get(key).cloned().ok_or_else(|| Error::Weights {
                path: path.into(),
                reason: format!(
                    "metadata has no `{key}` (not written by `facenet import-weights`?)"
                ),
            })
        };
        let format = get("format")?;
        if format != FORMAT {
            return Err(Error::Weights {
                path: path.into(),
                reason: format!("metadata format is `{format}`, expected `{FORMAT}`"),
            });
        }
        let config: InceptionResnetV1Config =
            serde_json::from_str(&get("config")?).map_err(|source| Error::Json {
                path: path.into(),
                what: "metadata `config` is not a network config".into(),
                source,
            })?;
        config.check().map_err(|reason| Error::Weights {
            path: path.into(),
            reason: format!("metadata `config`: {reason}"),
        })?;
        let std_name = get("standardization")?;
        let standardization =
            Standardization::from_name(&std_name).ok_or_else(|| Error::Weights {
                path: path.into(),
                reason: format!("metadata `standardization` is `{std_name}`, unknown"),
            })?;
        Ok(Self {
            format,
            config,
            standardization,
            source: get("source")?,
            source_sha256: get("source_sha256")?,
            fingerprint: get("fingerprint")?,
        })
    }

    /// Reads the metadata of a safetensors file without reading its tensors.
    pub fn read(path: &Path) -> Result<Self> {
        let bad = |reason: String| Error::Weights {
            path: path.into(),
            reason,
        };
        let mut file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        let mut len = [0u8; 8];
        file.read_exact(&mut len)
            .map_err(|_| bad("too short to be a safetensors file".into()))?;
        let len = u64::from_le_bytes(len);
        if len > 100 << 20 {
            return Err(bad(format!(
                "safetensors header claims {len} bytes; not a safetensors file"
            )));
        }
        let mut header = vec![0u8; len as usize];
        file.read_exact(&mut header)
            .map_err(|_| bad("truncated safetensors header".into()))?;
        #[derive(Deserialize)]
        struct Header {
            #[serde(rename = "__metadata__", default)]
            metadata: BTreeMap<String, String>,
        }
        let header: Header = serde_json::from_slice(&header).map_err(|source| Error::Json {
            path: path.into(),
            what: "safetensors header is not valid JSON".into(),
            source,
        })?;
        Self::from_map(path, &header.metadata)
    }
}

/// The weights fingerprint: sha256 over every tensor in name order, each as its name's length
/// (u64 LE), the name, each dimension (u64 LE) and the f32 values (LE). It identifies the
/// weights wherever they come from (imported, trained, saved again), and the gallery refuses
/// embeddings whose fingerprint differs from the ones it holds.
pub fn fingerprint<'a>(
    tensors: impl IntoIterator<Item = (&'a str, &'a [usize], &'a [f32])>,
) -> String {
    use sha2::{Digest, Sha256};
    let mut sorted: Vec<_> = tensors.into_iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    let mut h = Sha256::new();
    for (name, shape, data) in sorted {
        h.update((name.len() as u64).to_le_bytes());
        h.update(name.as_bytes());
        for d in shape {
            h.update((*d as u64).to_le_bytes());
        }
        for v in data {
            h.update(v.to_le_bytes());
        }
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// A tensor as `(name, shape, values)`.
type NamedTensor = (String, Vec<usize>, Vec<f32>);

/// The tensors of a network.
fn tensors_of(net: &InceptionResnetV1) -> Result<Vec<NamedTensor>> {
    net.collect(None, None, false)
        .into_iter()
        .map(|t| {
            let bytes = t.to_bytes().map_err(|e| Error::Weights {
                path: t.name.clone().into(),
                reason: format!("cannot read the tensor: {e}"),
            })?;
            let data = bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            Ok((t.name.clone(), t.shape.to_vec(), data))
        })
        .collect()
}

/// [`fingerprint`] of a network in memory.
pub fn fingerprint_of(net: &InceptionResnetV1) -> Result<String> {
    let tensors = tensors_of(net)?;
    Ok(fingerprint(
        tensors
            .iter()
            .map(|(n, s, d)| (n.as_str(), s.as_slice(), d.as_slice())),
    ))
}

/// Saves a network as a weights file every command reads (`--weights`), with its metadata
/// and [`fingerprint`], atomically.
pub fn save(
    net: &InceptionResnetV1,
    config: &InceptionResnetV1Config,
    standardization: Standardization,
    path: &Path,
    source: &str,
) -> Result<WeightsMetadata> {
    let meta = WeightsMetadata {
        format: FORMAT.into(),
        config: config.clone(),
        standardization,
        source: source.into(),
        source_sha256: String::new(),
        fingerprint: fingerprint_of(net)?,
    };
    let mut store = SafetensorsStore::from_bytes(None);
    for (k, v) in meta.to_map()? {
        store = store.metadata(k, v);
    }
    let store_err = |source| Error::Store {
        path: path.into(),
        source: Box::new(source),
    };
    net.save_into(&mut store).map_err(store_err)?;
    let bytes = store.get_bytes().map_err(store_err)?;
    crate::files::write_atomic(path, &bytes)?;
    Ok(meta)
}

/// Loads a network from a safetensors file written by the importer (or by training).
///
/// Every parameter of the network must be in the file with its exact shape, and every tensor
/// of the file must be used; the first mismatch is reported by name.
pub fn load(path: &Path, device: &Device) -> Result<(InceptionResnetV1, WeightsMetadata)> {
    let meta = WeightsMetadata::read(path)?;
    let mut model = meta.config.init(device);
    apply_file(&mut model, path)?;
    Ok((model, meta))
}

/// Loads the tensors of `path` into an existing network, checking completeness both ways.
pub fn apply_file(model: &mut InceptionResnetV1, path: &Path) -> Result<()> {
    let mut store = SafetensorsStore::from_file(path).allow_partial(true);
    let result = model.load_from(&mut store).map_err(|source| Error::Store {
        path: path.into(),
        source: Box::new(source),
    })?;
    check_applied(&result, path)
}

/// Completeness of a load, both ways: no error, no parameter left without a tensor, no tensor
/// of the file left unused. The message names the first offender. Shared by every loader (the
/// embedding network, MTCNN, and the importer's PyTorch reader).
pub fn check_applied(result: &burn::store::ApplyResult, path: &Path) -> Result<()> {
    if let Some(err) = result.errors.first() {
        return Err(Error::Apply {
            path: path.into(),
            source: Box::new(err.clone()),
        });
    }
    let bad = |reason: String| Error::Weights {
        path: path.into(),
        reason,
    };
    if let Some((name, _)) = result.missing.first() {
        return Err(bad(format!(
            "tensor `{name}` is missing ({} missing in all)",
            result.missing.len()
        )));
    }
    if let Some(name) = result.unused.first() {
        return Err(bad(format!(
            "tensor `{name}` is not a parameter of this network ({} unused in all)",
            result.unused.len()
        )));
    }
    Ok(())
}

/// The parameter names and shapes a network expects, in key order.
pub fn expected_tensors(model: &InceptionResnetV1) -> BTreeMap<String, Vec<usize>> {
    model
        .collect(None, None, false)
        .into_iter()
        .map(|t| (t.name.clone(), t.shape.to_vec()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stem_conv_and_bn() {
        assert_eq!(
            keras_to_burn("Conv2d_1a_3x3", "kernel:0", 5).as_deref(),
            Some("conv2d_1a.conv.weight")
        );
        assert_eq!(
            keras_to_burn("Conv2d_4b_3x3_BatchNorm", "moving_variance:0", 5).as_deref(),
            Some("conv2d_4b.bn.running_var")
        );
        assert_eq!(
            keras_to_burn("Conv2d_3b_1x1_BatchNorm", "moving_mean:0", 5).as_deref(),
            Some("conv2d_3b.bn.running_mean")
        );
    }

    #[test]
    fn block_indices_are_zero_based() {
        assert_eq!(
            keras_to_burn("Block35_1_Branch_2_Conv2d_0c_3x3_BatchNorm", "beta:0", 5).as_deref(),
            Some("repeat_1.0.branch2.2.bn.beta")
        );
        assert_eq!(
            keras_to_burn("Block17_10_Branch_1_Conv2d_0b_1x7", "kernel:0", 5).as_deref(),
            Some("repeat_2.9.branch1.1.conv.weight")
        );
        assert_eq!(
            keras_to_burn("Block8_5_Branch_1_Conv2d_0c_3x1", "kernel:0", 5).as_deref(),
            Some("repeat_3.4.branch1.2.conv.weight")
        );
    }

    #[test]
    fn up_conv_has_bias_and_no_bn() {
        assert_eq!(
            keras_to_burn("Block35_3_Conv2d_1x1", "bias:0", 5).as_deref(),
            Some("repeat_1.2.conv2d.bias")
        );
        assert_eq!(
            keras_layer_to_burn("Block35_3_Conv2d_1x1_BatchNorm", 5),
            None
        );
    }

    #[test]
    fn last_block8_is_block8() {
        assert_eq!(
            keras_to_burn("Block8_6_Conv2d_1x1", "kernel:0", 5).as_deref(),
            Some("block8.conv2d.weight")
        );
        assert_eq!(
            keras_to_burn("Block8_2_Branch_0_Conv2d_1x1", "kernel:0", 1).as_deref(),
            Some("block8.branch0.conv.weight")
        );
        assert_eq!(keras_layer_to_burn("Block8_7_Conv2d_1x1", 5), None);
    }

    #[test]
    fn reductions_and_bottleneck() {
        assert_eq!(
            keras_to_burn("Mixed_6a_Branch_1_Conv2d_1a_3x3", "kernel:0", 5).as_deref(),
            Some("mixed_6a.branch1.2.conv.weight")
        );
        assert_eq!(
            keras_to_burn("Mixed_7a_Branch_0_Conv2d_0a_1x1_BatchNorm", "beta:0", 5).as_deref(),
            Some("mixed_7a.branch0.0.bn.beta")
        );
        assert_eq!(
            keras_to_burn("Bottleneck", "kernel:0", 5).as_deref(),
            Some("last_linear.weight")
        );
        assert_eq!(
            keras_to_burn("Bottleneck_BatchNorm", "moving_mean:0", 5).as_deref(),
            Some("last_bn.running_mean")
        );
    }

    #[test]
    fn unknown_names_are_none() {
        assert_eq!(keras_to_burn("Logits", "kernel:0", 5), None);
        assert_eq!(
            keras_to_burn("Conv2d_1a_3x3", "depthwise_kernel:0", 5),
            None
        );
        assert_eq!(keras_layer_to_burn("Block35_0_Conv2d_1x1", 5), None);
        assert_eq!(keras_layer_to_burn("Block35_x_Conv2d_1x1", 5), None);
    }

    #[test]
    fn every_mapped_name_is_a_model_parameter() {
        // All Keras names the table can produce for the small net exist in the module tree.
        let cfg = InceptionResnetV1Config::small();
        let model = cfg.init(&Device::flex());
        let expected = expected_tensors(&model);
        let mut produced = Vec::new();
        for (k, _) in KERAS_LAYERS {
            produced.push(keras_to_burn(k, "kernel:0", 1).unwrap());
            produced.push(keras_to_burn(&format!("{k}_BatchNorm"), "beta:0", 1).unwrap());
        }
        for b in ["Block35_1", "Block17_1", "Block8_1", "Block8_2"] {
            produced.push(keras_to_burn(&format!("{b}_Conv2d_1x1"), "bias:0", 1).unwrap());
        }
        for p in &produced {
            assert!(expected.contains_key(p), "{p} not in the model");
        }
    }
}
