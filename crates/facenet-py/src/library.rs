//! `facenet.Library`: a photo collection's faces grouped into people, over
//! [`facenet_gallery::library::Library`]. Results come back as plain dicts and lists.

use std::path::PathBuf;

use facenet::pipeline::{DetectorPool, FaceChoice};
use facenet_gallery::Recognizer;
use facenet_gallery::library::Library as Inner;
use numpy::PyReadonlyArray3;
use pyo3::prelude::*;

use crate::Engine;
use crate::convert::{fe, ge, image};

/// A photo library in a gallery file (its people are the gallery's subjects once named).
#[pyclass(frozen, module = "facenet._facenet")]
pub struct Library {
    lib: Inner,
    mtcnn: PathBuf,
}

/// Serializable to Python (through JSON: dicts, lists, numbers, strings, None).
fn to_py<'py>(py: Python<'py>, v: &impl serde::Serialize) -> PyResult<Bound<'py, PyAny>> {
    let text = serde_json::to_string(v)
        .map_err(|e| pyo3::exceptions::PyValueError::new_err(e.to_string()))?;
    py.import("json")?.call_method1("loads", (text,))
}

/// A person's key: an id (int) or a name (str).
fn key(p: &Bound<'_, PyAny>) -> PyResult<String> {
    Ok(p.str()?.to_string())
}

#[pymethods]
impl Library {
    #[new]
    #[pyo3(signature = (path, engine, name = "default"))]
    fn new(py: Python<'_>, path: &str, engine: &Engine, name: &str) -> PyResult<Self> {
        let lib = py
            .detach(|| {
                let tenants = facenet_gallery::open_store(path, true)?;
                let recognizer = Recognizer::new(engine.pipeline.clone(), tenants.gallery(name)?);
                Inner::new(
                    facenet_gallery::library::store_of(tenants.as_ref(), name)?,
                    recognizer,
                )
            })
            .map_err(|e| ge(py, e))?;
        Ok(Self {
            lib,
            mtcnn: engine.mtcnn.clone(),
        })
    }

    /// Indexes folders (recursively) or photos: new photos are detected and embedded on every
    /// core and grouped into people; known ones are skipped. Returns the report as a dict.
    fn add<'py>(&self, py: Python<'py>, paths: Vec<PathBuf>) -> PyResult<Bound<'py, PyAny>> {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let report = py
            .detach(|| {
                let pool = DetectorPool::open(&self.mtcnn, &facenet::Device::flex(), threads)?;
                self.lib.add(&paths, &pool, &())
            })
            .map_err(|e| ge(py, e))?;
        to_py(py, &report)
    }

    /// Every person: dicts of id, name, faces, photos.
    fn people<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let people = py.detach(|| self.lib.people()).map_err(|e| ge(py, e))?;
        to_py(py, &people)
    }

    /// A person's faces (id, path, box, quality, ...), best first.
    fn faces<'py>(
        &self,
        py: Python<'py>,
        person: &Bound<'_, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let k = key(person)?;
        let faces = py.detach(|| self.lib.faces_of(&k)).map_err(|e| ge(py, e))?;
        to_py(py, &faces)
    }

    /// Names (or renames) a person; they become a gallery subject of that name.
    fn name<'py>(
        &self,
        py: Python<'py>,
        person: &Bound<'_, PyAny>,
        name: &str,
    ) -> PyResult<Bound<'py, PyAny>> {
        let k = key(person)?;
        let p = py
            .detach(|| self.lib.name(&k, name))
            .map_err(|e| ge(py, e))?;
        to_py(py, &p)
    }

    /// Merges people into the first.
    fn merge<'py>(
        &self,
        py: Python<'py>,
        into: &Bound<'_, PyAny>,
        others: Vec<Bound<'_, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let k = key(into)?;
        let others = others.iter().map(key).collect::<PyResult<Vec<_>>>()?;
        let p = py
            .detach(|| self.lib.merge(&k, &others))
            .map_err(|e| ge(py, e))?;
        to_py(py, &p)
    }

    /// Moves a face to a person, to `"new"` (a person of its own), or to None (no one).
    #[pyo3(signature = (face, to = None))]
    fn move_face<'py>(
        &self,
        py: Python<'py>,
        face: i64,
        to: Option<Bound<'_, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let to = to.as_ref().map(key).transpose()?;
        let p = py
            .detach(|| self.lib.move_face(face, to.as_deref()))
            .map_err(|e| ge(py, e))?;
        to_py(py, &p)
    }

    /// Forgets a person (name, gallery subject, embeddings); returns the faces erased.
    fn forget(&self, py: Python<'_>, person: &Bound<'_, PyAny>) -> PyResult<usize> {
        let k = key(person)?;
        py.detach(|| self.lib.forget(&k)).map_err(|e| ge(py, e))
    }

    /// Regroups every face no one vouched for; a dict of what it did.
    fn recluster<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let r = py.detach(|| self.lib.recluster()).map_err(|e| ge(py, e))?;
        to_py(py, &r)
    }

    /// Paths of the photos with all these people.
    fn find(&self, py: Python<'_>, people: Vec<Bound<'_, PyAny>>) -> PyResult<Vec<String>> {
        let keys = people.iter().map(key).collect::<PyResult<Vec<_>>>()?;
        let rows = py
            .detach(|| self.lib.find_people(&keys))
            .map_err(|e| ge(py, e))?;
        Ok(rows.into_iter().map(|r| r.path).collect())
    }

    /// Photos containing the main face of an image (RGB array), nearest first: dicts of path,
    /// face, distance, person, box.
    #[pyo3(signature = (img, limit = 50))]
    fn find_face<'py>(
        &self,
        py: Python<'py>,
        img: PyReadonlyArray3<'_, u8>,
        limit: usize,
    ) -> PyResult<Bound<'py, PyAny>> {
        let img = image(py, &img, "image")?;
        let pipeline = self.lib.recognizer().pipeline();
        let face = py
            .detach(|| pipeline.face(&img, FaceChoice::Primary))
            .map_err(|e| fe(py, e))?
            .map_err(|why| {
                fe(
                    py,
                    facenet::Error::NoFace {
                        path: "image".into(),
                        why,
                    },
                )
            })?;
        let hits = py
            .detach(|| self.lib.find_face(&face.embedding, limit))
            .map_err(|e| ge(py, e))?;
        to_py(py, &hits)
    }
}
