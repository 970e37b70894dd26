//! dlib's 68-point shape predictor for Python (`facenet.face_recognition.face_landmarks`).

use std::path::PathBuf;
use std::sync::Arc;

use facenet::landmarks::{FaceBox, FaceParts, ShapePredictor};
use numpy::ndarray::Array2;
use numpy::{IntoPyArray, PyArray2, PyReadonlyArray3};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::convert::{fe, image, raise};

/// The 68-point landmark model (`facenet.fetch(landmarks=True)` first).
#[pyclass(frozen, module = "facenet._facenet")]
pub struct Landmarks68 {
    model: Arc<ShapePredictor>,
}

fn points(py: Python<'_>, p: Vec<[f32; 2]>) -> Bound<'_, PyArray2<f32>> {
    Array2::from_shape_vec((p.len(), 2), p.into_iter().flatten().collect())
        .expect("two values per point")
        .into_pyarray(py)
}

#[pymethods]
impl Landmarks68 {
    /// Reads the model (default: the cached one). A missing file raises `facenet.NotFound`
    /// with the command that fetches it.
    #[new]
    #[pyo3(signature = (path = None))]
    fn new(py: Python<'_>, path: Option<PathBuf>) -> PyResult<Self> {
        let cached = path.is_none();
        let path = path.unwrap_or_else(facenet::paths::landmarks68);
        if !path.is_file() {
            let how = if cached {
                "run facenet.fetch(landmarks=True) or `facenet fetch --landmarks`"
            } else {
                "no such file"
            };
            return Err(raise(
                py,
                "NotFound",
                format!("{}: dlib's 68-point model: {how}", path.display()),
            ));
        }
        let model = py
            .detach(|| ShapePredictor::open(&path))
            .map_err(|e| fe(py, e))?;
        Ok(Self {
            model: Arc::new(model),
        })
    }

    /// The 68 points (68 x 2, x then y) of the face whose MTCNN landmarks are `five`.
    fn on_five<'py>(
        &self,
        py: Python<'py>,
        img: PyReadonlyArray3<'_, u8>,
        five: [[f32; 2]; 5],
    ) -> PyResult<Bound<'py, PyArray2<f32>>> {
        let img = image(py, &img, "image")?;
        let p = py
            .detach(|| self.model.predict_from_five(&img, &five))
            .ok_or_else(|| raise(py, "Error", "the model is not the 68-point layout".into()))?;
        Ok(points(py, p))
    }

    /// face_recognition's nine features of the face whose MTCNN landmarks are `five`: each a
    /// list of `(x, y)` whole pixels, rounded half up as dlib rounds them.
    fn parts_on_five<'py>(
        &self,
        py: Python<'py>,
        img: PyReadonlyArray3<'_, u8>,
        five: [[f32; 2]; 5],
    ) -> PyResult<Bound<'py, PyDict>> {
        let img = image(py, &img, "image")?;
        let parts = py
            .detach(|| self.model.predict_from_five(&img, &five))
            .and_then(|p| FaceParts::from_points(&p))
            .ok_or_else(|| raise(py, "Error", "the model is not the 68-point layout".into()))?;
        let out = PyDict::new(py);
        for (name, points) in parts.named() {
            let whole: Vec<(i64, i64)> = points
                .iter()
                .map(|p| ((p[0] + 0.5).floor() as i64, (p[1] + 0.5).floor() as i64))
                .collect();
            out.set_item(name, whole)?;
        }
        Ok(out)
    }

    /// The 68 points in a box placed as dlib's detector places it: `(left, top, right,
    /// bottom)`, inclusive.
    fn in_box<'py>(
        &self,
        py: Python<'py>,
        img: PyReadonlyArray3<'_, u8>,
        bbox: [f64; 4],
    ) -> PyResult<Bound<'py, PyArray2<f32>>> {
        let img = image(py, &img, "image")?;
        let face = FaceBox {
            left: bbox[0],
            top: bbox[1],
            right: bbox[2],
            bottom: bbox[3],
        };
        Ok(points(py, py.detach(|| self.model.predict(&img, face))))
    }
}
