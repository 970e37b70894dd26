//! The Python boundary's conversions: library errors to `facenet.Error` and its subclasses
//! (their causes joined, with a hint where one helps), numpy arrays to images and back, and
//! detections and qualities to tuples and dicts.

use facenet::detect::Detection;
use facenet::image::RgbImage;
use facenet_gallery::GalleryError;
use numpy::ndarray::{Array2, Array3};
use numpy::{IntoPyArray, PyArray2, PyArray3, PyReadonlyArray3, PyUntypedArrayMethods};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyType};

/// Raises `facenet.<class>` (defined at module start) with `msg`.
pub(crate) fn raise(py: Python<'_>, class: &str, msg: String) -> PyErr {
    match py
        .import("facenet._facenet")
        .and_then(|m| m.getattr(class))
        .and_then(|c| c.cast_into::<PyType>().map_err(PyErr::from))
    {
        Ok(cls) => PyErr::from_type(cls, msg),
        Err(e) => e,
    }
}

/// An error and its causes, `: `-joined.
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        let t = inner.to_string();
        if !s.contains(&t) {
            s = format!("{s}: {t}");
        }
        src = inner.source();
    }
    s
}

fn class_of(e: &facenet::Error) -> &'static str {
    use facenet::Error as E;
    match e {
        E::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => "NotFound",
        E::Decode { .. } | E::BadImage { .. } | E::InvalidArgument { .. } | E::NoFace { .. } => {
            "InvalidInput"
        }
        _ => "Error",
    }
}

/// The package's advice for a photo without the face asked for, after the library's message.
fn with_hint(e: &facenet::Error, message: String) -> String {
    use facenet::pipeline::NoFace;
    let hint = match e {
        facenet::Error::NoFace { why, .. } => match why {
            NoFace::None => {
                "is the face small or turned away? FaceNet.detect(image) shows what \
                             the detector finds"
            }
            NoFace::Ambiguous(_) => "pass face=\"primary\" or face=\"largest\"",
            NoFace::NoSuchIndex { .. } => "FaceNet.detect(image) lists the faces in order",
            NoFace::LowQuality { .. } => {
                "enrol a sharper, larger, frontal photo, or pass min_quality=0 to take this one"
            }
        },
        _ => return message,
    };
    format!("{message} ({hint})")
}

pub(crate) fn fe(py: Python<'_>, e: facenet::Error) -> PyErr {
    raise(py, class_of(&e), with_hint(&e, chain(&e)))
}

pub(crate) fn ge(py: Python<'_>, e: GalleryError) -> PyErr {
    if let GalleryError::Facenet(inner) = &e {
        return raise(py, class_of(inner), with_hint(inner, chain(&e)));
    }
    let class = match &e {
        GalleryError::UnknownIdentity(_)
        | GalleryError::UnknownFace(_)
        | GalleryError::NotInLibrary(_) => "UnknownSubject",
        GalleryError::Invalid(_)
        | GalleryError::NameTaken(_)
        | GalleryError::ModelMismatch { .. } => "InvalidInput",
        GalleryError::Missing(_) => "NotFound",
        _ => "Error",
    };
    raise(py, class, chain(&e))
}

pub(crate) fn invalid(py: Python<'_>, msg: impl Into<String>) -> PyErr {
    raise(py, "InvalidInput", msg.into())
}

/// An H x W x 3 uint8 array as an RGB image (copied: the computation then runs without the GIL).
pub(crate) fn image(
    py: Python<'_>,
    a: &PyReadonlyArray3<'_, u8>,
    what: &str,
) -> PyResult<RgbImage> {
    let shape = a.shape();
    if shape[2] != 3 || shape[0] == 0 || shape[1] == 0 {
        return Err(invalid(
            py,
            format!("{what}: expected an H x W x 3 RGB array, got shape {shape:?}"),
        ));
    }
    let (h, w) = (shape[0] as u32, shape[1] as u32);
    let data: Vec<u8> = a.as_array().iter().copied().collect();
    RgbImage::from_raw(w, h, data).ok_or_else(|| invalid(py, format!("{what}: bad image buffer")))
}

pub(crate) fn array(py: Python<'_>, img: RgbImage) -> Bound<'_, PyArray3<u8>> {
    let (w, h) = img.dimensions();
    Array3::from_shape_vec((h as usize, w as usize, 3), img.into_raw())
        .expect("RGB buffer has h * w * 3 bytes")
        .into_pyarray(py)
}

pub(crate) fn rows(py: Python<'_>, v: Vec<Vec<f32>>, dim: usize) -> Bound<'_, PyArray2<f32>> {
    let n = v.len();
    Array2::from_shape_vec((n, dim), v.into_iter().flatten().collect())
        .expect("every embedding has dim values")
        .into_pyarray(py)
}

pub(crate) type FaceTuple<'py> = ([f32; 4], f32, [[f32; 2]; 5], Bound<'py, PyDict>);

pub(crate) fn detection<'py>(
    py: Python<'py>,
    img: &RgbImage,
    d: &Detection,
) -> PyResult<FaceTuple<'py>> {
    let q = quality(py, &d.quality(img))?;
    Ok((d.bbox, d.score, d.landmarks, q))
}

/// A face's quality as a dict: `score`, its parts, `weakest` and `reason`.
pub(crate) fn quality<'py>(
    py: Python<'py>,
    q: &facenet::quality::Quality,
) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("score", q.score)?;
    d.set_item("size", q.size)?;
    d.set_item("sharpness", q.sharpness)?;
    d.set_item("pose", q.pose)?;
    d.set_item("confidence", q.confidence)?;
    d.set_item("weakest", q.weakest())?;
    d.set_item("reason", q.reason())?;
    Ok(d)
}
