//! `facenet.Gallery`: enrol, verify and identify over [`facenet_gallery::Recognizer`] on a
//! SQLite file, `:memory:` or a PostgreSQL URL. Results come back as plain dicts and lists.

use std::sync::Arc;

use facenet::pipeline::FaceChoice;
use facenet_gallery::{Recognizer, SqliteGallery};
use numpy::PyReadonlyArray3;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::Engine;
use crate::convert::{ge, image, invalid, quality};

/// A gallery (SQLite file, ":memory:", or a `postgres://` URL) over an engine.
#[pyclass(frozen, module = "facenet._facenet")]
pub struct Gallery {
    recognizer: Recognizer,
}

fn choice(py: Python<'_>, s: &str) -> PyResult<FaceChoice> {
    Ok(match s {
        "unambiguous" => FaceChoice::Unambiguous,
        "primary" => FaceChoice::Primary,
        "largest" => FaceChoice::Largest,
        other => {
            return Err(invalid(
                py,
                format!("face `{other}`: use \"unambiguous\", \"primary\" or \"largest\""),
            ));
        }
    })
}

#[pymethods]
impl Gallery {
    #[new]
    #[pyo3(signature = (path, engine, name = "default"))]
    fn new(py: Python<'_>, path: &str, engine: &Engine, name: &str) -> PyResult<Self> {
        let store = py
            .detach(|| {
                if path == ":memory:" {
                    Ok(Arc::new(SqliteGallery::in_memory()?.gallery(name)?) as Arc<_>)
                } else {
                    facenet_gallery::open_store(path, true)?.gallery(name)
                }
            })
            .map_err(|e| ge(py, e))?;
        Ok(Self {
            recognizer: Recognizer::new(engine.pipeline.clone(), store),
        })
    }

    /// Enrols `name` from images (one face each, chosen by `face`), in one transaction;
    /// returns the number of faces stored. A face below `min_quality` (default 0.3; 0 takes
    /// every face) fails the call, naming the image and why.
    #[pyo3(signature = (name, images, face = "unambiguous", min_quality = None))]
    fn enroll(
        &self,
        py: Python<'_>,
        name: &str,
        images: Vec<PyReadonlyArray3<'_, u8>>,
        face: &str,
        min_quality: Option<f32>,
    ) -> PyResult<usize> {
        let face = choice(py, face)?;
        let recognizer = match min_quality {
            Some(m) if !(0.0..=1.0).contains(&m) => {
                return Err(invalid(py, format!("min_quality {m}: a quality is 0 to 1")));
            }
            Some(m) => self.recognizer.clone().with_min_quality(m),
            None => self.recognizer.clone(),
        };
        let photos = images
            .iter()
            .enumerate()
            .map(|(i, a)| Ok((format!("image {i}"), image(py, a, &format!("image {i}"))?)))
            .collect::<PyResult<Vec<_>>>()?;
        let r = py
            .detach(|| recognizer.enroll(name, &photos, face))
            .map_err(|e| ge(py, e))?;
        Ok(r.faces)
    }

    /// Every face of an image identified: a dict per face.
    #[pyo3(signature = (img, top_k = 1, threshold = None, fir = None, score = None))]
    fn identify<'py>(
        &self,
        py: Python<'py>,
        img: PyReadonlyArray3<'_, u8>,
        top_k: usize,
        threshold: Option<f32>,
        fir: Option<f64>,
        score: Option<&str>,
    ) -> PyResult<Vec<Bound<'py, PyDict>>> {
        let img = image(py, &img, "image")?;
        let recognizer = match score {
            None => self.recognizer.clone(),
            Some(s) => self
                .recognizer
                .clone()
                .with_scoring(s.parse().map_err(|e: String| {
                    pyo3::exceptions::PyValueError::new_err(format!("score={e}"))
                })?),
        };
        let found = py
            .detach(|| {
                let s = recognizer.searcher(threshold, fir)?;
                recognizer.identify(&s, &img, top_k.max(1))
            })
            .map_err(|e| ge(py, e))?;
        found
            .into_iter()
            .map(|i| {
                let d = PyDict::new(py);
                d.set_item("box", i.bbox)?;
                d.set_item("score", i.score)?;
                d.set_item("quality", i.quality.map(|q| quality(py, &q)).transpose()?)?;
                d.set_item("identity", i.identity.name())?;
                d.set_item("known", i.identity.is_known())?;
                d.set_item("distance", i.distance)?;
                d.set_item("cohort_score", i.cohort_score)?;
                d.set_item("threshold", i.threshold)?;
                d.set_item("threshold_source", i.threshold_source.name())?;
                let c: Vec<(String, f32)> = i
                    .candidates
                    .into_iter()
                    .map(|m| (m.identity, m.distance))
                    .collect();
                d.set_item("candidates", c)?;
                Ok(d)
            })
            .collect()
    }

    /// Is the face of this image `name`? A dict, or None when the image has no face.
    #[pyo3(signature = (img, name, threshold = None))]
    fn verify<'py>(
        &self,
        py: Python<'py>,
        img: PyReadonlyArray3<'_, u8>,
        name: &str,
        threshold: Option<f32>,
    ) -> PyResult<Option<Bound<'py, PyDict>>> {
        let img = image(py, &img, "image")?;
        let v = py
            .detach(|| self.recognizer.verify(&img, name, threshold))
            .map_err(|e| ge(py, e))?;
        let Some(v) = v else { return Ok(None) };
        let d = PyDict::new(py);
        d.set_item("verified", v.verified)?;
        d.set_item("distance", v.distance)?;
        d.set_item("threshold", v.threshold.value)?;
        d.set_item("threshold_source", v.threshold.source.name())?;
        d.set_item("identity", v.identity)?;
        d.set_item("box", v.bbox)?;
        Ok(Some(d))
    }

    /// `(name, number of faces)` of every subject, by name.
    fn subjects(&self, py: Python<'_>) -> PyResult<Vec<(String, usize)>> {
        py.detach(|| self.recognizer.store().identities())
            .map_err(|e| ge(py, e))
    }

    /// Removes a subject and its faces; returns the number of faces removed.
    fn remove(&self, py: Python<'_>, name: &str) -> PyResult<usize> {
        py.detach(|| self.recognizer.store().remove(name))
            .map_err(|e| ge(py, e))
    }
}
