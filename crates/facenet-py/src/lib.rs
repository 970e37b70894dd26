//! `facenet._facenet`: the library's pipeline and gallery for Python. The Python package
//! (`python/facenet`) wraps these in documented classes and coerces images; every flow here
//! is one library call, run with the GIL released.

mod convert;
mod gallery;
mod landmarks;
mod library;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use facenet::detect::Detection;
use facenet::pipeline::FacePipeline;
use facenet::{Device, Distance, Embedder, Inference, Precision, detect::Detector};
use facenet_gallery::{Settings, Threshold};
use numpy::{IntoPyArray, PyArray2, PyArray3, PyReadonlyArray1, PyReadonlyArray3};
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use convert::{FaceTuple, array, chain, detection, fe, ge, image, invalid, quality, raise, rows};

/// Reads an image file as the CLI does (EXIF orientation applied, size guards).
#[pyfunction]
fn load(py: Python<'_>, path: PathBuf) -> PyResult<Bound<'_, PyArray3<u8>>> {
    let img = py
        .detach(|| facenet::image::load_rgb(&path))
        .map_err(|e| fe(py, e))?;
    Ok(array(py, img))
}

/// Decodes image bytes (JPEG, PNG, WebP, ...); `label` names them in errors.
#[pyfunction]
#[pyo3(signature = (data, label = "image bytes"))]
fn decode<'py>(py: Python<'py>, data: &[u8], label: &str) -> PyResult<Bound<'py, PyArray3<u8>>> {
    let img = py
        .detach(|| facenet::image::decode_rgb(data, Path::new(label)))
        .map_err(|e| fe(py, e))?;
    Ok(array(py, img))
}

/// Downloads the weights and sample photos into the cache (once), and dlib's 68-point model
/// with `landmarks`; returns the cache folder.
#[pyfunction]
#[pyo3(signature = (landmarks = false))]
fn fetch(py: Python<'_>, landmarks: bool) -> PyResult<PathBuf> {
    let root = facenet_import::fetch::cache_dir();
    let extras = facenet_import::fetch::Extras { landmarks };
    py.detach(|| {
        facenet_import::fetch::ensure_with(&root, extras, &mut |line| eprintln!("fetch: {line}"))
    })
    .map_err(|e| raise(py, "Error", chain(&e)))?;
    Ok(root)
}

/// The face pipeline: MTCNN detection, alignment, the embedding network.
#[pyclass(frozen, module = "facenet._facenet")]
struct Engine {
    pipeline: Arc<FacePipeline>,
    /// The MTCNN weights (a photo library detects on a pool of its own).
    mtcnn: PathBuf,
}

#[pymethods]
impl Engine {
    #[new]
    #[pyo3(signature = (weights = None, mtcnn = None, precision = "f32"))]
    fn new(
        py: Python<'_>,
        weights: Option<PathBuf>,
        mtcnn: Option<PathBuf>,
        precision: &str,
    ) -> PyResult<Self> {
        let cache = facenet::paths::cache_dir();
        let weights = weights.unwrap_or_else(|| cache.join("facenet_keras.safetensors"));
        let mtcnn = mtcnn.unwrap_or_else(|| cache.join("mtcnn.safetensors"));
        for f in [&weights, &mtcnn] {
            if !f.is_file() {
                return Err(raise(
                    py,
                    "NotFound",
                    format!("{}: not found; run facenet.fetch() once", f.display()),
                ));
            }
        }
        // The package's options: the precision argument, the kernel families and spin window
        // of the environment (as the CLI reads them).
        // "auto": the fastest precision within 0.001 of f32's LFW accuracy here (timed once,
        // cached), as the CLI's `--precision auto`.
        let auto = precision == "auto";
        let fixed = if auto { "f32" } else { precision };
        let precision = Precision::parse(fixed, "precision").map_err(|_| {
            invalid(
                py,
                format!("precision `{precision}`: use \"f32\", \"bf16\", \"int8\" or \"auto\""),
            )
        })?;
        let mut options = Inference::new(Device::flex(), precision)
            .with_vars(|k| std::env::var(k).ok())
            .map_err(|e| fe(py, e))?;
        let pipeline = py
            .detach(|| -> facenet::Result<FacePipeline> {
                if auto {
                    options.precision =
                        facenet::precision_auto::choose(&weights, &options, &cache)?.precision;
                }
                let embedder = Embedder::open_with_options(&weights, &options)?;
                let detector = Detector::open(&mtcnn, &options.device)?;
                Ok(FacePipeline::new(embedder, Some(detector)))
            })
            .map_err(|e| fe(py, e))?;
        Ok(Self {
            pipeline: Arc::new(pipeline),
            mtcnn,
        })
    }

    /// The weights' fingerprint (sha256 hex).
    #[getter]
    fn fingerprint(&self) -> String {
        self.pipeline.embedder().metadata().fingerprint.clone()
    }

    /// Faces of an image, the face of the photo first (the order of every front):
    /// `(box, score, landmarks, quality)`.
    fn detect<'py>(
        &self,
        py: Python<'py>,
        img: PyReadonlyArray3<'_, u8>,
    ) -> PyResult<Vec<FaceTuple<'py>>> {
        let img = image(py, &img, "image")?;
        let found = py
            .detach(|| self.pipeline.detect(&img))
            .map_err(|e| fe(py, e))?;
        found.iter().map(|d| detection(py, &img, d)).collect()
    }

    /// The aligned crop (160 x 160 x 3) of the face in `box`.
    fn align<'py>(
        &self,
        py: Python<'py>,
        img: PyReadonlyArray3<'_, u8>,
        bbox: [f32; 4],
    ) -> PyResult<Bound<'py, PyArray3<u8>>> {
        let img = image(py, &img, "image")?;
        let d = Detection {
            bbox,
            score: 1.0,
            landmarks: [[0.0; 2]; 5],
        };
        let cfg = self.pipeline.align_config();
        let crop = py
            .detach(|| facenet::align::align(&img, &d, cfg))
            .map_err(|e| fe(py, e))?;
        Ok(array(py, crop))
    }

    /// Unit embeddings of face crops (any size; resized to 160 x 160): N x 128 float32.
    fn embed<'py>(
        &self,
        py: Python<'py>,
        crops: Vec<PyReadonlyArray3<'py, u8>>,
    ) -> PyResult<Bound<'py, PyArray2<f32>>> {
        if crops.is_empty() {
            return Err(invalid(py, "embed: no face crop given"));
        }
        let imgs = crops
            .iter()
            .enumerate()
            .map(|(i, c)| image(py, c, &format!("crop {i}")))
            .collect::<PyResult<Vec<_>>>()?;
        let e = self.pipeline.embedder();
        let out = py.detach(|| e.embed(&imgs)).map_err(|e| fe(py, e))?;
        let dim = e.metadata().config.embedding_dim;
        Ok(rows(
            py,
            out.into_iter().map(|e| e.normalized).collect(),
            dim,
        ))
    }

    /// Every face of an image, the face of the photo first: `(box, score, landmarks, crop,
    /// embedding)`.
    #[allow(clippy::type_complexity)]
    fn faces<'py>(
        &self,
        py: Python<'py>,
        img: PyReadonlyArray3<'_, u8>,
    ) -> PyResult<
        Vec<(
            [f32; 4],
            f32,
            [[f32; 2]; 5],
            Option<Bound<'py, PyDict>>,
            Bound<'py, PyArray3<u8>>,
            Bound<'py, numpy::PyArray1<f32>>,
        )>,
    > {
        let img = image(py, &img, "image")?;
        let faces = py
            .detach(|| self.pipeline.faces(&img))
            .map_err(|e| fe(py, e))?;
        faces
            .into_iter()
            .map(|f| {
                // Every face of a pipeline with a detector (as this engine's) has a detection.
                let d = f
                    .detection
                    .ok_or_else(|| invalid(py, "faces needs an engine with a detector"))?;
                Ok((
                    d.bbox,
                    d.score,
                    d.landmarks,
                    f.quality.map(|q| quality(py, &q)).transpose()?,
                    array(py, f.crop),
                    f.embedding.into_pyarray(py),
                ))
            })
            .collect()
    }

    /// Are the faces of two images (the face of each photo) the same person? The library's
    /// comparison under the 1:1 threshold ([`Engine::verify_threshold`]):
    /// `(verified, distance, threshold, source, box1, box2)`.
    #[pyo3(signature = (img1, img2, threshold = None))]
    #[allow(clippy::type_complexity)]
    fn verify(
        &self,
        py: Python<'_>,
        img1: PyReadonlyArray3<'_, u8>,
        img2: PyReadonlyArray3<'_, u8>,
        threshold: Option<f32>,
    ) -> PyResult<(bool, f32, f32, String, Option<[f32; 4]>, Option<[f32; 4]>)> {
        let (a, b) = (image(py, &img1, "img1")?, image(py, &img2, "img2")?);
        let t = self.threshold(py, threshold)?;
        let v = py
            .detach(|| {
                facenet_gallery::verify_pair(&self.pipeline, [("img1", &a), ("img2", &b)], t)
            })
            .map_err(|e| ge(py, e))?;
        Ok((
            v.verified,
            v.distance,
            v.threshold.value,
            v.threshold.source.name().into(),
            v.bboxes[0],
            v.bboxes[1],
        ))
    }

    /// The 1:1 threshold: `explicit`, else the one for a false accept rate of 1e-3 (the
    /// impostor table shipped for the weights), else 1.115. `(value, source, description)`.
    #[pyo3(signature = (explicit = None))]
    fn verify_threshold(
        &self,
        py: Python<'_>,
        explicit: Option<f32>,
    ) -> PyResult<(f32, String, String)> {
        let t = self.threshold(py, explicit)?;
        Ok((t.value, t.source.name().into(), t.describe()))
    }
}

impl Engine {
    /// The 1:1 threshold without a gallery: `explicit`, else by the impostor table shipped for
    /// the weights.
    fn threshold(&self, py: Python<'_>, explicit: Option<f32>) -> PyResult<Threshold> {
        let fp = &self.pipeline.embedder().metadata().fingerprint;
        let table = facenet::eval::openset::bundled_table(fp);
        Threshold::for_verification(explicit, &Settings::default(), table.as_ref())
            .map_err(|e| ge(py, e))
    }
}

/// L2 distance between two vectors (unit embeddings: 0..2).
#[pyfunction]
fn distance(a: PyReadonlyArray1<'_, f32>, b: PyReadonlyArray1<'_, f32>) -> PyResult<f32> {
    let (a, b) = (a.as_array(), b.as_array());
    if a.len() != b.len() {
        return Err(pyo3::exceptions::PyValueError::new_err(format!(
            "distance: vectors of {} and {} values",
            a.len(),
            b.len()
        )));
    }
    let (a, b): (Vec<f32>, Vec<f32>) = (a.iter().copied().collect(), b.iter().copied().collect());
    Ok(Distance::L2.between(&a, &b))
}

const EXCEPTIONS: &std::ffi::CStr = c"
class Error(Exception):
    '''Base of facenet's errors.'''

class InvalidInput(Error, ValueError):
    '''Bad input: an undecodable image, a wrong shape or dtype, a face that is not there.'''

class NotFound(Error, FileNotFoundError):
    '''A file that is not there (an image, the weights: run facenet.fetch()).'''

class UnknownSubject(Error, KeyError):
    '''No subject of that name (or face of that id) in the gallery.'''
    def __str__(self):
        return str(self.args[0]) if self.args else ''
";

#[pymodule]
fn _facenet(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    let globals = PyDict::new(py);
    py.run(EXCEPTIONS, Some(&globals), None)?;
    for name in ["Error", "InvalidInput", "NotFound", "UnknownSubject"] {
        let cls = globals
            .get_item(name)?
            .ok_or_else(|| PyException::new_err(format!("{name} not defined")))?;
        cls.setattr("__module__", "facenet")?;
        m.add(name, cls)?;
    }
    m.add_class::<Engine>()?;
    m.add_class::<gallery::Gallery>()?;
    m.add_class::<library::Library>()?;
    m.add_class::<landmarks::Landmarks68>()?;
    m.add_function(wrap_pyfunction!(load, m)?)?;
    m.add_function(wrap_pyfunction!(decode, m)?)?;
    m.add_function(wrap_pyfunction!(fetch, m)?)?;
    m.add_function(wrap_pyfunction!(distance, m)?)?;
    Ok(())
}
