"""The Python package on the real weights: parity with the Keras goldens and with the CLI,
a face_recognition script run by changing its import, bad inputs, threads, the gallery."""

import json
import os
import subprocess
import threading
from pathlib import Path

import numpy as np
import pytest

import facenet
import facenet.face_recognition as face_recognition

ROOT = Path(__file__).resolve().parents[3]
SHARED = Path(os.environ.get("FACENET_SHARED", ROOT.parent / "shared"))
CACHE = Path(os.environ.get("FACENET_HOME", Path.home() / ".cache" / "facenet"))
SAMPLE = CACHE / "5-celebrity-faces-dataset"
CLI = Path(os.environ.get("FACENET_BIN", ROOT / "target" / "release" / "facenet"))


@pytest.fixture(scope="module")
def net():
    return facenet.FaceNet()


def photos(split, person=None):
    base = SAMPLE / split
    people = [person] if person else sorted(p.name for p in base.iterdir())
    return [(p, f) for p in people for f in sorted((base / p).iterdir())]


def test_reference_crops_match_keras(net):
    """Embeddings of the reference crops equal TensorFlow's (shared/reference) within 1e-4."""
    ref = json.loads((SHARED / "reference" / "embeddings.json").read_text())
    checked = 0
    for entry in ref["crops"]:
        want = np.asarray(entry["l2_prewhiten"], dtype=np.float32)
        crop = facenet.load_image(SHARED / "reference" / "crops" / Path(entry["crop_file"]).name)
        got = net.embed([crop])[0]
        assert got.dtype == np.float32 and got.shape == (128,)
        assert np.abs(got - want).max() < 1e-4, entry["crop_file"]
        checked += 1
    assert checked == 10


def test_same_numbers_as_the_cli(net):
    photo = photos("val", "madonna")[0][1]
    out = subprocess.run([str(CLI), "embed", "--detect", str(photo)], check=True, capture_output=True, text=True).stdout
    cli = json.loads(out.splitlines()[0])
    ours = net.faces(str(photo))[0]
    assert np.abs(ours.embedding - np.asarray(cli["embedding"], dtype=np.float32)).max() < 1e-6
    # The same photo as bytes, as a PIL image and as an array: the same embedding.
    data = photo.read_bytes()
    assert np.array_equal(net.faces(data)[0].embedding, ours.embedding)
    arr = facenet.load_image(photo)
    assert np.array_equal(net.faces(arr)[0].embedding, ours.embedding)
    PIL = pytest.importorskip("PIL.Image")
    assert np.abs(net.faces(PIL.open(photo))[0].embedding - ours.embedding).max() < 0.02


def test_detect_align_embed_compose_like_faces(net):
    photo = photos("val", "ben_afflek")[0][1]
    found = net.detect(photo)
    assert found and len(found[0].landmarks) == 5 and 0.9 < found[0].score <= 1
    crop = net.align(photo, found[0])
    assert crop.shape == (160, 160, 3) and crop.dtype == np.uint8
    emb = net.embed([crop])
    assert emb.shape == (1, 128) and abs(np.linalg.norm(emb[0]) - 1) < 1e-5
    assert np.abs(emb[0] - net.faces(photo)[0].embedding).max() < 1e-6
    assert net.embed(np.stack([crop, crop])).shape == (2, 128)


def test_verify_in_deepfaces_shape(net):
    # Two of the sample's photos of her that are close (0.885); others span decades (up to 1.3).
    a, b = photos("val", "madonna")[1:3]
    same = net.verify(a[1], b[1])
    other = net.verify(a[1], photos("val", "ben_afflek")[0][1])
    for r in (same, other):
        assert set(r) >= {"verified", "distance", "threshold", "model", "distance_metric", "facial_areas"}
        assert r["distance_metric"] == "euclidean_l2" and set(r["facial_areas"]) == {"img1", "img2"}
    assert same["verified"] and not other["verified"]
    assert same["distance"] < same["threshold"] < other["distance"]
    assert net.verify(a[1], b[1], threshold=0.1)["verified"] is False


def test_verify_is_the_librarys_comparison(net, tmp_path):
    """FaceNet.verify is the library's pair check (as `facenet compare` and POST /verify): the
    face of each photo, and "same person" strictly below the threshold."""
    a, b = photos("val", "madonna")[1:3]
    r = net.verify(a[1], b[1])
    out = subprocess.run([str(CLI), "compare", "--detect", str(a[1]), str(b[1])],
                         capture_output=True, text=True, check=True).stdout
    assert abs(float(out.split()[0]) - r["distance"]) < 1e-4, (out, r)
    # At a threshold equal to the distance the pair is not the same person: `<`, not `<=`.
    assert net.verify(a[1], b[1], threshold=r["distance"])["verified"] is False
    assert net.verify(a[1], b[1], threshold=r["distance"] + 1e-4)["verified"] is True
    # A faceless image: the library's reason, then the package's own hint.
    blank = tmp_path / "blank.png"
    from PIL import Image
    Image.new("RGB", (80, 80), (128, 128, 128)).save(blank)
    with pytest.raises(facenet.InvalidInput, match=r"img2: no face found \(.*FaceNet.detect"):
        net.verify(a[1], blank)


def test_face_recognition_script_runs_by_changing_the_import():
    """face_recognition's recipe: known encodings (every train photo), then for each val photo
    the locations, encodings and the best match under tolerance 0.6."""
    known_names, known = [], []
    for person, f in photos("train"):
        image = face_recognition.load_image_file(f)
        known.append(face_recognition.face_encodings(image)[0])
        known_names.append(person)
    right = 0
    val = photos("val")
    for person, f in val:
        image = face_recognition.load_image_file(f)
        locations = face_recognition.face_locations(image)
        encodings = face_recognition.face_encodings(image, locations)
        assert len(locations) == len(encodings) >= 1
        top, r, bottom, left = locations[0]
        assert top < bottom and left < r
        distances = face_recognition.face_distance(known, encodings[0])
        matches = face_recognition.compare_faces(known, encodings[0])
        best = int(np.argmin(distances))
        if matches[best] and known_names[best] == person:
            right += 1
    print(f"face_recognition recipe: {right}/{len(val)} val photos named right")
    assert right >= len(val) - 3, f"{right}/{len(val)}"
    # The scale: 0.6 is the L2 anchor.
    assert abs(face_recognition.scale() * face_recognition.anchor() - 0.6) < 1e-6
    marks = face_recognition.face_landmarks(face_recognition.load_image_file(val[0][1]))
    assert set(marks[0]) >= {"left_eye", "right_eye", "nose_tip", "top_lip", "bottom_lip"}


FEATURES = {"chin": 17, "left_eyebrow": 5, "right_eyebrow": 5, "nose_bridge": 4, "nose_tip": 5,
            "left_eye": 6, "right_eye": 6, "top_lip": 12, "bottom_lip": 12}


def test_face_landmarks_gives_dlibs_68_points(tmp_path):
    """With the model fetched (``facenet.fetch(landmarks=True)``), face_landmarks returns
    face_recognition's nine features; in dlib's own boxes the points are dlib's (golden:
    crates/facenet/data/landmarks68-dlib.json, all but 1 % of coordinates equal, none over 1 px
    apart); and the features draw as face_recognition's feature and makeup examples draw them."""
    from PIL import Image, ImageDraw

    golden = json.loads((ROOT / "crates" / "facenet" / "data" / "landmarks68-dlib.json").read_text())
    model = facenet._facenet.Landmarks68()
    equal = total = 0
    for face in golden["faces"]:
        img = facenet.load_image(SHARED / "reference" / "photos" / face["photo"])
        got = np.floor(model.in_box(img, [float(v) for v in face["box"]]) + 0.5)
        want = np.asarray(face["points"], dtype=np.float32)
        assert got.shape == (68, 2)
        assert np.abs(got - want).max() <= 1, face["photo"]
        equal += int((got == want).sum())
        total += want.size
    assert equal >= 0.99 * total, f"{equal}/{total}"

    path = SHARED / "reference" / "photos" / "jerry_seinfeld_1.png"
    image = face_recognition.load_image_file(path)
    marks = face_recognition.face_landmarks(image)
    assert marks and {k: len(v) for k, v in marks[0].items()} == FEATURES
    assert all(isinstance(x, int) and isinstance(y, int) for pts in marks[0].values() for x, y in pts)
    # The features example: every feature outlined.
    outlined = Image.fromarray(image)
    pen = ImageDraw.Draw(outlined)
    for face in marks:
        for feature in face:
            pen.line(face[feature], width=3)
    # The makeup example: eyebrows and lips filled, eyes lined.
    made_up = Image.fromarray(image)
    brush = ImageDraw.Draw(made_up, "RGBA")
    for face in marks:
        brush.polygon(face["left_eyebrow"], fill=(68, 54, 39, 128))
        brush.polygon(face["right_eyebrow"], fill=(68, 54, 39, 128))
        brush.polygon(face["top_lip"], fill=(150, 0, 0, 128))
        brush.polygon(face["bottom_lip"], fill=(150, 0, 0, 128))
        brush.line(face["left_eye"] + [face["left_eye"][0]], fill=(0, 0, 0, 110), width=6)
        brush.line(face["right_eye"] + [face["right_eye"][0]], fill=(0, 0, 0, 110), width=6)
    for drawn in (outlined, made_up):
        changed = np.any(np.asarray(drawn) != image, axis=2)
        ys, xs = np.nonzero(changed)
        top, right, bottom, left = face_recognition.face_locations(image)[0]
        # The drawing is on the face: its changed pixels lie within the face's box, grown a little.
        grow = 0.25 * (bottom - top)
        assert changed.sum() > 200
        assert left - grow <= xs.min() and xs.max() <= right + grow
        assert top - grow <= ys.min() and ys.max() <= bottom + grow
    lips = np.mean([y for _, y in marks[0]["top_lip"] + marks[0]["bottom_lip"]])
    eyes = np.mean([y for _, y in marks[0]["left_eye"] + marks[0]["right_eye"]])
    assert eyes < lips
    with pytest.raises(facenet.NotFound, match="no such file"):
        facenet._facenet.Landmarks68(str(tmp_path / "missing.dat"))


def test_precision_auto_chooses_from_a_cached_table(net):
    """``precision="auto"`` times each precision once into the cache's table and embeds as
    the precision it chose (within int8's cosine distance of f32 at most)."""
    auto = facenet.FaceNet(precision="auto")
    table = json.loads((CACHE / "precision-auto.json").read_text())
    assert [r["precision"] for r in table["rows"]] == ["f32", "bf16", "int8"]
    assert table["rows"][0]["img_per_s"] > 0
    crop = facenet.load_image(SHARED / "reference" / "crops" / "madonna_1.png")
    a, f = auto.embed([crop])[0], net.embed([crop])[0]
    assert float(a @ f) > 1 - 2e-3
    with pytest.raises(ValueError, match='precision `fast`: use .*"auto"'):
        facenet.FaceNet(precision="fast")


def test_bad_inputs_raise_the_right_exceptions(net, tmp_path):
    with pytest.raises(ValueError, match="dtype float"):
        net.faces(np.zeros((50, 50, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="shape"):
        net.faces(np.zeros((50, 50, 4), dtype=np.uint8))
    with pytest.raises(ValueError, match="empty"):
        net.faces(np.zeros((0, 0, 3), dtype=np.uint8))
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    with pytest.raises(facenet.InvalidInput, match="notes.txt"):
        net.faces(text)
    with pytest.raises(FileNotFoundError):
        net.faces(tmp_path / "missing.jpg")
    with pytest.raises(facenet.Error):
        net.faces(b"\x89PNG not really")
    with pytest.raises(ValueError):
        net.embed([])
    with pytest.raises(TypeError if False else ValueError):
        net.faces(object())
    assert issubclass(facenet.InvalidInput, facenet.Error) and issubclass(facenet.NotFound, FileNotFoundError)


def test_threads_embed_in_parallel_with_the_same_results(net):
    crops = [net.faces(f)[0].crop for _, f in photos("val")[:6]]
    alone = net.embed(crops)
    results = [None] * 4

    def work(i):
        results[i] = net.embed(crops)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for r in results:
        assert np.abs(r - alone).max() < 1e-6


def test_gallery_enrol_identify_verify(net, tmp_path):
    g = facenet.Gallery(str(tmp_path / "people.db"), net)
    # Ben's third training photo is a face 24 pixels across: the quality gate refuses it,
    # says why, and stores nothing of the call; min_quality=0 takes it.
    bens = [f for _, f in photos("train", "ben_afflek")[:3]]
    small = net.detect(bens[2])[0].quality
    assert small["score"] < 0.3 and small["weakest"] == "size", small
    with pytest.raises(facenet.Error, match="pixels across.*min_quality=0"):
        g.enroll("ben_afflek", bens)
    assert g.subjects() == []
    assert g.enroll("ben_afflek", bens, min_quality=0) == 3
    assert g.enroll("madonna", [f for _, f in photos("train", "madonna")[:3]]) == 3
    assert g.subjects() == [("ben_afflek", 3), ("madonna", 3)]
    probe = photos("val", "madonna")[0][1]
    faces = g.identify(probe, top_k=2)
    assert faces[0]["identity"] == "madonna" and faces[0]["known"]
    assert len(faces[0]["candidates"]) == 2
    assert g.identify(probe, threshold=0.1)[0]["identity"] == "unknown"
    v = g.verify(probe, "madonna")
    assert v["verified"] and v["distance"] < v["threshold"]
    with pytest.raises(facenet.UnknownSubject):
        g.verify(probe, "nobody")
    # Two subjects: the plain distance is thresholded; a score other than the two is refused.
    assert faces[0]["cohort_score"] is None and faces[0]["threshold"] > 0
    with pytest.raises(ValueError, match='score="nearest".*cohort.*distance'):
        g.identify(probe, score="nearest")
    # From six subjects on, the cohort score is (the default), unless asked otherwise.
    lfw = SHARED / "data" / "lfw"
    for name in ["George_W_Bush", "Colin_Powell", "Tony_Blair", "Donald_Rumsfeld"]:
        assert g.enroll(name, [str(lfw / name / f"{name}_0001.jpg")]) == 1
    f = g.identify(probe)[0]
    assert f["identity"] == "madonna", f
    assert f["threshold"] < 0 and f["cohort_score"] < f["threshold"], f
    assert f["cohort_score"] < f["distance"], f
    d = g.identify(probe, score="distance")[0]
    assert d["identity"] == "madonna" and d["cohort_score"] is None and d["threshold"] > 0, d
    for name in ["George_W_Bush", "Colin_Powell", "Tony_Blair", "Donald_Rumsfeld"]:
        assert g.remove(name) == 1
    assert g.remove("ben_afflek") == 3
    assert g.subjects() == [("madonna", 3)]
    # The CLI reads the same file.
    out = subprocess.run([str(CLI), "gallery", "list", "--gallery", str(tmp_path / "people.db")],
                         check=True, capture_output=True, text=True).stdout
    assert "madonna" in out


def test_library_groups_names_and_finds(net, tmp_path):
    lfw = SHARED / "data" / "lfw"
    photos_dir = tmp_path / "photos"
    for person in ["Colin_Powell", "Tony_Blair"]:
        (photos_dir / person).mkdir(parents=True)
        for f in sorted((lfw / person).iterdir())[:8]:
            (photos_dir / person / f.name).write_bytes(f.read_bytes())
    lib = facenet.Library(str(tmp_path / "lib.db"), net)
    report = lib.add(photos_dir)
    assert report["photos"] == 16 and report["faces"] >= 16, report
    assert lib.add([photos_dir])["unchanged"] == 16
    people = lib.people()
    assert people and people[0]["faces"] >= 3, people
    top = people[0]["id"]
    folders = {Path(f["path"]).parent.name for f in lib.faces(top)}
    assert len(folders) == 1, folders
    who = folders.pop()
    assert lib.name(top, "Someone")["name"] == "Someone"
    assert len(lib.find(["Someone"])) == people[0]["photos"]
    probe = sorted((lfw / who).iterdir())[8]
    hits = lib.find_face(str(probe))
    assert hits and who in hits[0]["path"] and hits[0]["person"] == "Someone", hits
    # Named people are the gallery's subjects.
    g = facenet.Gallery(str(tmp_path / "lib.db"), net)
    assert g.identify(str(probe))[0]["identity"] == "Someone"
    face = lib.faces("Someone")[0]["id"]
    assert lib.move(face, None) is None
    assert face not in [f["id"] for f in lib.faces("Someone")]
    with pytest.raises(facenet.UnknownSubject, match="no person `nobody`"):
        lib.faces("nobody")
    assert lib.forget("Someone") >= 2
    assert all(p["name"] != "Someone" for p in lib.people())


@pytest.mark.skipif(not os.environ.get("FACENET_TEST_PG"), reason="needs FACENET_TEST_PG (a PostgreSQL with pgvector; .ci/run starts one)")
def test_gallery_on_postgres(net):
    """The same gallery API on PostgreSQL: a gallery of this process's own on the test server."""
    name = f"py{os.getpid()}"
    g = facenet.Gallery(os.environ["FACENET_TEST_PG"], net, name)
    assert g.enroll("madonna", [f for _, f in photos("train", "madonna")[:2]]) == 2
    probe = photos("val", "madonna")[0][1]
    assert g.identify(probe)[0]["identity"] == "madonna"
    # A second handle (another process would do the same) sees it at once.
    assert facenet.Gallery(os.environ["FACENET_TEST_PG"], net, name).subjects() == [("madonna", 2)]
    assert g.remove("madonna") == 2
    with pytest.raises(facenet.Error, match="127.0.0.1:1"):
        facenet.Gallery("postgres://nobody@127.0.0.1:1/none", net)
