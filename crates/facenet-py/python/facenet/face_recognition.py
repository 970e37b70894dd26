"""A drop-in for the ``face_recognition`` package: change the import line, keep the script.

    import facenet.face_recognition as face_recognition

``load_image_file``, ``face_locations`` (``(top, right, bottom, left)``), ``face_encodings``,
``compare_faces``, ``face_distance`` and ``face_landmarks`` behave as face_recognition's, on
this engine (MTCNN + FaceNet, 128-d unit embeddings). ``face_landmarks`` gives the 68 points
of dlib's own shape predictor once ``facenet.fetch(landmarks=True)`` has fetched its model.

**Distances are on face_recognition's scale.** Scripts written for face_recognition carry
dlib's numbers: ``compare_faces``' default tolerance 0.6, and cutoffs like
``face_distance(...) < 0.6``. So ``face_distance`` here reports the FaceNet L2 distance times
``SCALE``, chosen so that 0.6 is this model's 1:1 threshold for a false accept rate of 1e-3 on
LFW's impostor pairs (L2 ``ANCHOR`` between unit embeddings): a script's "same person below 0.6"
then accepts about one stranger pair in a thousand. ``facenet.FaceNet.distance`` and the rest of
the package keep the true L2 unit.

face_recognition's detector arguments (``number_of_times_to_upsample``, ``model``,
``num_jitters``) are accepted and ignored: MTCNN's pyramid covers small faces without
upsampling, and one forward pass gives the embedding.
"""

from __future__ import annotations

import warnings
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from . import FaceNet, InvalidInput, NotFound, _facenet, load_image

_NET: Optional[FaceNet] = None
_SHAPE: Optional[Any] = None
_SHAPE_WARNED = False


def _net() -> FaceNet:
    global _NET
    if _NET is None:
        _NET = FaceNet()
    return _NET


def anchor() -> float:
    """The L2 threshold that maps to 0.6 (false accept rate 1e-3 on LFW's impostor pairs)."""
    return _net()._engine.verify_threshold(None)[0]


def scale() -> float:
    """``face_distance`` = L2 distance x ``scale()`` (= 0.6 / ``anchor()``)."""
    return 0.6 / anchor()


def load_image_file(file, mode: str = "RGB") -> np.ndarray:
    """An image file as an H x W x 3 uint8 RGB array (``mode="L"``: H x W grayscale)."""
    img = load_image(file)
    if mode == "L":
        return np.round(img @ np.array([0.299, 0.587, 0.114])).astype(np.uint8)
    if mode != "RGB":
        raise InvalidInput(f"mode {mode!r}: use 'RGB' or 'L'")
    return img


def _css(box) -> Tuple[int, int, int, int]:
    x1, y1, x2, y2 = box
    return (int(round(y1)), int(round(x2)), int(round(y2)), int(round(x1)))


def face_locations(img, number_of_times_to_upsample: int = 1, model: str = "hog") -> List[Tuple[int, int, int, int]]:
    """Boxes of the faces, the face of the photo first (the order of every front), as ``(top, right, bottom, left)``.
    ``number_of_times_to_upsample`` and ``model`` are accepted and ignored."""
    return [_css(f.box) for f in _net().detect(img)]


def face_encodings(face_image, known_face_locations: Optional[Iterable[Tuple[int, int, int, int]]] = None,
                   num_jitters: int = 1, model: str = "small") -> List[np.ndarray]:
    """A 128-d encoding per face (the faces found, or those at ``known_face_locations``,
    ``(top, right, bottom, left)``). ``num_jitters`` and ``model`` are accepted and ignored."""
    net = _net()
    img = load_image(face_image)
    if known_face_locations is None:
        return [f.embedding for f in net.faces(img)]
    crops = [net.align(img, (left, top, right, bottom)) for (top, right, bottom, left) in known_face_locations]
    return list(net.embed(crops)) if crops else []


def face_distance(face_encodings: Sequence[np.ndarray], face_to_compare: np.ndarray) -> np.ndarray:
    """Distance of each known encoding to ``face_to_compare``, on face_recognition's scale
    (0.6 = this model's threshold at a false accept rate of 1e-3; see the module doc)."""
    if len(face_encodings) == 0:
        return np.empty((0,))
    known = np.asarray(face_encodings, dtype=np.float32)
    return np.linalg.norm(known - np.asarray(face_to_compare, dtype=np.float32), axis=1) * scale()


def compare_faces(known_face_encodings: Sequence[np.ndarray], face_encoding_to_check: np.ndarray,
                  tolerance: float = 0.6) -> List[bool]:
    """Whether each known encoding matches, at ``tolerance`` on face_recognition's scale."""
    return list(face_distance(known_face_encodings, face_encoding_to_check) <= tolerance)


def _shape_model():
    """dlib's 68-point model if fetched (``facenet.fetch(landmarks=True)``), else ``None``
    (with a warning, once)."""
    global _SHAPE, _SHAPE_WARNED
    if _SHAPE is None:
        try:
            _SHAPE = _facenet.Landmarks68()
        except NotFound as e:
            if not _SHAPE_WARNED:
                warnings.warn(f"{e}; face_landmarks gives MTCNN's five points until then", stacklevel=3)
                _SHAPE_WARNED = True
            return None
    return _SHAPE


def face_landmarks(face_image, face_locations: Optional[Iterable[Tuple[int, int, int, int]]] = None,
                   model: str = "large") -> List[Dict[str, List[Tuple[int, int]]]]:
    """Landmarks per face under face_recognition's key names.

    ``model="large"`` (the default) gives the 68 points of dlib's shape predictor, placed on
    MTCNN's five, under face_recognition's keys (``chin``, ``left_eyebrow``, ``right_eyebrow``,
    ``nose_bridge``, ``nose_tip``, ``left_eye``, ``right_eye``, ``top_lip``, ``bottom_lip``),
    once ``facenet.fetch(landmarks=True)`` has fetched the model. Without it, and with
    ``model="small"``, MTCNN's five points give ``left_eye``, ``right_eye`` (as seen in the
    image), ``nose_tip``, and the two mouth corners as ``top_lip`` and ``bottom_lip``.
    ``face_locations`` picks faces by their box (the nearest detection)."""
    img = load_image(face_image)
    faces = _net().detect(img)
    if face_locations is not None:
        wanted = []
        for (top, right, bottom, left) in face_locations:
            centre = np.array([(left + right) / 2, (top + bottom) / 2])
            wanted.append(min(faces, key=lambda f: np.linalg.norm(
                np.array([(f.box[0] + f.box[2]) / 2, (f.box[1] + f.box[3]) / 2]) - centre)))
        faces = wanted
    shape = _shape_model() if model == "large" else None
    out = []
    for f in faces:
        if shape is not None:
            out.append(shape.parts_on_five(img, [list(map(float, xy)) for xy in f.landmarks]))
            continue
        p = [(int(round(x)), int(round(y))) for (x, y) in f.landmarks]
        out.append({"left_eye": [p[0]], "right_eye": [p[1]], "nose_tip": [p[2]],
                    "top_lip": [p[3], p[4]], "bottom_lip": [p[3], p[4]]})
    return out


__all__ = ["load_image_file", "face_locations", "face_encodings", "face_distance", "compare_faces",
           "face_landmarks", "scale", "anchor"]

