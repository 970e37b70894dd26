//! Locating the shared reference data and the real weights for golden tests.

#![allow(dead_code)]

use std::path::PathBuf;

/// `../shared` beside the workspace (or `$FACENET_SHARED`), with a clear panic if absent.
pub fn shared() -> PathBuf {
    let p = std::env::var_os("FACENET_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared"));
    assert!(
        p.join("reference/embeddings.json").is_file(),
        "golden data not found at {} (expected the shared folder beside the repository, \
         or set FACENET_SHARED)",
        p.display()
    );
    p
}

/// The converted Keras FaceNet weights, with a clear panic if `facenet fetch` has not run.
pub fn weights() -> PathBuf {
    let p = facenet::paths::default_weights();
    assert!(
        p.is_file(),
        "weights not found at {}: run `cargo run --release -p facenet-cli -- fetch` first \
         (or set FACENET_WEIGHTS / FACENET_HOME)",
        p.display()
    );
    p
}

/// Reads and parses a JSON file of the shared reference folder.
pub fn reference_json(name: &str) -> serde_json::Value {
    let p = shared().join("reference").join(name);
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// A JSON array of numbers as f32.
pub fn floats(v: &serde_json::Value) -> Vec<f32> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().expect("number") as f32)
        .collect()
}

/// Max absolute elementwise difference.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}
