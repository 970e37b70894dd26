//! Where the fetched files live (no I/O here: these are only path computations).
//!
//! The cache directory is `$FACENET_HOME`, else `$XDG_CACHE_HOME/facenet` or
//! `~/.cache/facenet`. `facenet fetch` fills it; see the `facenet-import` crate's `fetch`.

use std::path::PathBuf;

/// Environment variable that overrides the cache directory.
pub const HOME_ENV: &str = "FACENET_HOME";
/// Environment variable that names a weights file to use instead of the cached one.
pub const WEIGHTS_ENV: &str = "FACENET_WEIGHTS";
/// File name of the converted Keras FaceNet weights in the cache.
pub const KERAS_WEIGHTS_FILE: &str = "facenet_keras.safetensors";

/// File name of dlib's 68-point landmark model in the cache (`landmarks/` below it).
pub const LANDMARKS68_FILE: &str = "shape_predictor_68_face_landmarks.dat";

/// The cache directory.
pub fn cache_dir() -> PathBuf {
    if let Some(p) = std::env::var_os(HOME_ENV).filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    dirs::cache_dir()
        .unwrap_or_else(|| PathBuf::from(".cache"))
        .join("facenet")
}

/// The weights file to use by default: `$FACENET_WEIGHTS`, else the converted Keras model in
/// the cache.
pub fn default_weights() -> PathBuf {
    if let Some(p) = std::env::var_os(WEIGHTS_ENV).filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    cache_dir().join(KERAS_WEIGHTS_FILE)
}

/// The 68-point landmark model in the cache (`facenet fetch --landmarks`).
pub fn landmarks68() -> PathBuf {
    cache_dir().join("landmarks").join(LANDMARKS68_FILE)
}
