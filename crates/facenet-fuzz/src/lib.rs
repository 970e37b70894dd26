//! The fuzz targets of facenet: every parser of data that comes from outside, as a plain
//! function of the input bytes.
//!
//! `fuzz/` (cargo-fuzz, libFuzzer) calls them with generated inputs; the regression test
//! (`tests/regressions.rs`) replays the seeds and every input a campaign found, so a fixed
//! crash stays fixed. A target's contract: any input gives `Ok` or a clean error, never a
//! panic, an abort, a hang or an unbounded allocation; where a parse succeeds, the target
//! also checks what must then hold (the decoded size matches the header, an imported export
//! exports again equal).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use axum::extract::{FromRequest, FromRequestParts, Request};
use facenet_gallery::{Export, GalleryStore, sqlite::SqliteGallery};
use facenet_serve::api::gallery::{PageParams, SubjectName};
use facenet_serve::api::recognition::{IdentifyParams, VerifyParams};
use facenet_serve::input::{Body, Images, Query};

/// A fuzz target: the bytes of one input in; whether they parsed (the first stage accepted
/// them: the seeds must, so that the fuzzer starts deep in each parser).
pub type Target = fn(&[u8]) -> bool;

/// Every target by name (the names of `fuzz/fuzz_targets/*.rs` and of the folders under
/// `fuzz/seeds` and `fuzz/regressions`).
pub const TARGETS: &[(&str, Target)] = &[
    ("image", image),
    ("keras_h5", keras_h5),
    ("weights", weights),
    ("mtcnn_pt", mtcnn_pt),
    ("text_files", text_files),
    ("gallery_export", gallery_export),
    ("request", request),
];

/// A scratch file of this process for the parsers that read paths.
fn scratch(name: &str) -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    let dir = DIR.get_or_init(|| {
        let base = if Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        let d = base.join(format!("facenet-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&d).expect("creating the fuzz scratch folder");
        d
    });
    dir.join(name)
}

fn write_scratch(name: &str, data: &[u8]) -> PathBuf {
    let p = scratch(name);
    std::fs::write(&p, data).expect("writing the fuzz scratch file");
    p
}

/// Image bytes through the header reader, the pixel guard and the decoder (every format the
/// service and the CLI accept; EXIF orientation applied).
pub fn image(data: &[u8]) -> bool {
    let header = facenet::image::header_dimensions(data);
    let decoded = facenet::image::decode_rgb(data, Path::new("fuzz"));
    if let Ok(img) = &decoded {
        let (w, h) = img.dimensions();
        assert!(
            w as u64 * h as u64 <= facenet::image::MAX_PIXELS,
            "decoded {w}x{h}: over the pixel guard"
        );
        if let Some((hw, hh)) = header {
            // The orientation may swap the sides.
            assert!(
                (w, h) == (hw, hh) || (w, h) == (hh, hw),
                "header says {hw}x{hh}, decoded {w}x{h}"
            );
        }
    }
    decoded.is_ok()
}

/// A Keras `.h5` model file through the HDF5 reader and the weight walk of the importer.
pub fn keras_h5(data: &[u8]) -> bool {
    let p = write_scratch("model.h5", data);
    let read = facenet_import::keras::read(&p);
    if let Ok(m) = &read {
        for t in &m.tensors {
            assert_eq!(
                t.shape.iter().product::<usize>(),
                t.data.len(),
                "tensor {}/{}: shape and data disagree",
                t.layer,
                t.weight
            );
        }
    }
    read.is_ok()
}

/// A weights file (safetensors with facenet's metadata) through the metadata reader and the
/// loader that builds the network it describes.
pub fn weights(data: &[u8]) -> bool {
    let p = write_scratch("weights.safetensors", data);
    if facenet::weights::WeightsMetadata::read(&p).is_err() {
        return false;
    }
    let _ = facenet::weights::load(&p, &facenet::Device::flex());
    true
}

/// A PyTorch `.pt` file (zip + pickle) through the MTCNN importer, as each of its three stages.
/// Parsed: the file was read as PyTorch tensors (a stage they do not fit is still parsed).
pub fn mtcnn_pt(data: &[u8]) -> bool {
    let p = write_scratch("stage.pt", data);
    let out = scratch("mtcnn.safetensors");
    match facenet_import::mtcnn::import_mtcnn(&p, &p, &p, &out) {
        Ok(()) => true,
        Err(facenet_import::ImportError::Pytorch { source, .. }) => {
            !source.to_string().to_lowercase().contains("read")
        }
        Err(_) => true,
    }
}

/// The text files the CLI reads: an LFW-style pairs file and a learning-rate schedule.
/// Parsed: as either.
pub fn text_files(data: &[u8]) -> bool {
    let p = write_scratch("pairs.txt", data);
    let pairs = facenet::eval::pairs::Pairs::read(&p);
    if let Ok(pairs) = &pairs {
        assert!(pairs.num_folds >= 1 && !pairs.pairs.is_empty());
        let _ = pairs.images();
    }
    let schedule = facenet_train::schedule::LearningRateSchedule::read(&p);
    pairs.is_ok() || schedule.is_ok()
}

/// A gallery export (`facenet gallery import`) into an empty SQLite gallery; an accepted one
/// must export again with the same faces and identities.
/// Parsed: imported.
pub fn gallery_export(data: &[u8]) -> bool {
    let Ok(export) = serde_json::from_slice::<Export>(data) else {
        return false;
    };
    let store = SqliteGallery::in_memory().expect("an in-memory SQLite gallery");
    let Ok(n) = export.clone().import_into(&store) else {
        return false;
    };
    let again = Export::of(&store).expect("exporting what was just imported");
    assert_eq!(n, export.faces.len(), "faces imported");
    assert_eq!(
        again.faces.len(),
        export.faces.len(),
        "faces exported again"
    );
    let mut names: Vec<&String> = export
        .identities
        .iter()
        .chain(export.faces.iter().map(|f| &f.identity))
        .collect();
    names.sort();
    names.dedup();
    assert_eq!(
        again.identities.iter().collect::<Vec<_>>(),
        names,
        "identities exported again"
    );
    let copy = SqliteGallery::in_memory().expect("an in-memory SQLite gallery");
    again
        .import_into(&copy)
        .expect("importing an export of an accepted import");
    assert_eq!(copy.identities().expect("identities").len(), names.len());
    true
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a tokio runtime")
    })
}

/// The boundary of the multipart bodies the `request` target builds.
pub const BOUNDARY: &str = "fuzzboundary";

/// The service's request parsing: the first byte picks the part (0: a multipart body of
/// images, 1: a JSON body of base64 images, 2: the paging query, 3: the verify and identify
/// queries, 4: a JSON subject name), the rest is its bytes. Every image accepted is then
/// measured from its header and decoded, as the image routes do.
pub fn request(data: &[u8]) -> bool {
    let Some((&kind, rest)) = data.split_first() else {
        return false;
    };
    let rt = runtime();
    match kind % 5 {
        0 | 1 => {
            let ct = if kind % 5 == 0 {
                format!("multipart/form-data; boundary={BOUNDARY}")
            } else {
                "application/json".to_string()
            };
            let req = Request::builder()
                .method("POST")
                .uri("/identify")
                .header("content-type", ct)
                .body(axum::body::Body::from(rest.to_vec()))
                .expect("a request");
            let Ok(images) = rt.block_on(Images::from_request(req, &())) else {
                return false;
            };
            assert!(!images.0.is_empty() && images.0.len() <= facenet_serve::input::MAX_IMAGES);
            assert!(images.peak_pixels() <= images.total_pixels());
            for u in &images.0 {
                image(&u.bytes);
            }
            true
        }
        2 | 3 => {
            let Ok(q) = std::str::from_utf8(rest) else {
                return false;
            };
            let Ok(req) = Request::builder().uri(format!("/faces?{q}")).body(()) else {
                return false;
            };
            let (mut parts, ()) = req.into_parts();
            if kind % 5 == 2 {
                rt.block_on(Query::<PageParams>::from_request_parts(&mut parts, &()))
                    .is_ok()
            } else {
                let v = rt.block_on(Query::<VerifyParams>::from_request_parts(&mut parts, &()));
                let i = rt.block_on(Query::<IdentifyParams>::from_request_parts(&mut parts, &()));
                v.is_ok() || i.is_ok()
            }
        }
        _ => {
            let req = Request::builder()
                .method("POST")
                .uri("/subjects")
                .header("content-type", "application/json")
                .body(axum::body::Body::from(rest.to_vec()))
                .expect("a request");
            match rt.block_on(Body::<SubjectName>::from_request(req, &())) {
                Ok(Body(s)) => {
                    let _ = facenet_gallery::check_identity_name(&s.name);
                    true
                }
                Err(_) => false,
            }
        }
    }
}
