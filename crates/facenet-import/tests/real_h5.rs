//! Import of the real `facenet_keras.h5` (fetched by `facenet fetch` into the cache).

use facenet::weights::{self, WeightsMetadata};
use facenet::{Device, InceptionResnetV1Config, Standardization};
use facenet_import::fetch::{CachePaths, FILES, cache_dir};

fn h5() -> std::path::PathBuf {
    let p = CachePaths::new(cache_dir()).keras_h5();
    assert!(
        p.is_file(),
        "{} not found: run `cargo run --release -p facenet-cli -- fetch` first",
        p.display()
    );
    p
}

#[test]
fn keras_file_has_the_documented_layout() {
    let model = facenet_import::keras::read(&h5()).unwrap();
    // shared/reference/facenet_keras_h5_layout.txt: 490 datasets, 22,808,144 values.
    assert_eq!(model.tensors.len(), 490);
    let values: usize = model.tensors.iter().map(|t| t.data.len()).sum();
    assert_eq!(values, 22_808_144);
    assert_eq!(model.keras_version.as_deref(), Some("2.1.2"));
    assert_eq!(model.model_name.as_deref(), Some("inception_resnet_v1"));
    let first = &model.tensors[0];
    assert_eq!(
        (
            first.layer.as_str(),
            first.weight.as_str(),
            first.shape.as_slice()
        ),
        ("Conv2d_1a_3x3", "kernel:0", &[3, 3, 3, 32][..])
    );
}

#[test]
fn import_writes_a_complete_loadable_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("w.safetensors");
    let cfg = InceptionResnetV1Config::keras_128();
    let rep = facenet_import::import_keras(&h5(), &out, &cfg, Standardization::Prewhiten).unwrap();
    assert_eq!(rep.keras_tensors, 490);
    // + one gamma of ones per BatchNorm (112 layers, 14,416 channels).
    assert_eq!(rep.written_tensors, 490 + 112);
    assert_eq!(rep.values, 22_808_144 + 14_416);
    assert_eq!(rep.metadata.source_sha256, FILES[0].sha256);
    let meta = WeightsMetadata::read(&out).unwrap();
    assert_eq!(meta, rep.metadata);
    let (net, _) = weights::load(&out, &Device::flex()).unwrap();
    assert_eq!(weights::expected_tensors(&net).len(), 602);
}

#[test]
fn importing_into_the_wrong_preset_names_the_mismatch() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("w.safetensors");
    let err = facenet_import::import_keras(
        &h5(),
        &out,
        &InceptionResnetV1Config::facenet_512(),
        Standardization::Prewhiten,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("last_"), "{err}");
    assert!(!out.exists(), "a failed import must not leave a file");
}

#[test]
fn not_an_h5_file_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let bogus = dir.path().join("bogus.h5");
    std::fs::write(&bogus, b"definitely not hdf5").unwrap();
    let err = facenet_import::keras::read(&bogus).unwrap_err().to_string();
    assert!(err.contains("bogus.h5"), "{err}");
    let err = facenet_import::keras::read(&dir.path().join("none.h5"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("none.h5"), "{err}");
}
