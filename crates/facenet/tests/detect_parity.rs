//! Golden tests: our MTCNN cascade against davidsandberg's TensorFlow MTCNN.
//!
//! Goldens: `shared/reference/mtcnn.json` (original det1-3 weights, OpenCV INTER_AREA resizing)
//! on `shared/reference/photos/*.png` (the exact decoded RGB pixels). Our weights are
//! facenet-pytorch's conversion of the same networks (`facenet fetch`).
//! Tolerances (the issue's): same faces, boxes within 2 px, scores within 1e-3, landmarks
//! within 2 px.

mod common;

use common::{reference_json, shared};
use facenet::Device;
use facenet::detect::Detector;

fn detector() -> Detector {
    let p = facenet::paths::cache_dir().join("mtcnn.safetensors");
    assert!(
        p.is_file(),
        "{} not found: run `cargo run --release -p facenet-cli -- fetch` first",
        p.display()
    );
    Detector::open(&p, &Device::flex()).unwrap()
}

/// The reference photo of one `mtcnn.json` entry (the lossless PNG copy).
fn photo(im: &serde_json::Value) -> image::RgbImage {
    facenet::image::load_rgb(
        &shared()
            .join("reference")
            .join(im["file_png"].as_str().unwrap()),
    )
    .unwrap()
}

fn f64s(v: &serde_json::Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

#[test]
fn detections_match_reference() {
    let refs = reference_json("mtcnn.json");
    let det = detector();
    let (mut worst_box, mut worst_score, mut worst_mark) = (0f64, 0f64, 0f64);
    for im in refs["images"].as_array().unwrap() {
        let key = im["key"].as_str().unwrap();
        let img = photo(im);
        let (faces, trace) = det.detect_traced(&img).unwrap();
        let want = im["faces"].as_array().unwrap();
        assert_eq!(faces.len(), want.len(), "{key}: number of faces");
        let scales = f64s(&im["pyramid_scales"]);
        assert_eq!(trace.scales.len(), scales.len(), "{key}: pyramid");
        for (f, w) in faces.iter().zip(want) {
            let b = f64s(&w["box"]);
            for i in 0..4 {
                let d = (f.bbox[i] as f64 - b[i]).abs();
                worst_box = worst_box.max(d);
                assert!(d < 2.0, "{key}: box {:?} vs {b:?}", f.bbox);
            }
            let d = (f.score as f64 - w["score"].as_f64().unwrap()).abs();
            worst_score = worst_score.max(d);
            assert!(d < 1e-3, "{key}: score {} vs {}", f.score, w["score"]);
            for (p, q) in f.landmarks.iter().zip(w["landmarks"].as_array().unwrap()) {
                let q = f64s(q);
                for i in 0..2 {
                    let d = (p[i] as f64 - q[i]).abs();
                    worst_mark = worst_mark.max(d);
                    assert!(d < 2.0, "{key}: landmark {p:?} vs {q:?}");
                }
            }
        }
    }
    eprintln!(
        "max |box| {worst_box:.4} px, |score| {worst_score:.2e}, |landmark| {worst_mark:.4} px"
    );
}

/// The boxes handed to R-Net and O-Net: at least 97 % of the reference's are found within
/// 1 px (the rest differ through ties among saturated P-Net scores, see `bbox::nms`).
#[test]
fn stage_inputs_match_reference() {
    let refs = reference_json("mtcnn.json");
    let det = detector();
    let (mut matched, mut total) = (0usize, 0usize);
    for im in refs["images"].as_array().unwrap() {
        let key = im["key"].as_str().unwrap();
        let img = photo(im);
        let (_, trace) = det.detect_traced(&img).unwrap();
        for (stage, ours) in [
            ("rnet_input_boxes", &trace.rnet_input),
            ("onet_input_boxes", &trace.onet_input),
        ] {
            let want: Vec<Vec<f64>> = im[stage].as_array().unwrap().iter().map(f64s).collect();
            let m = want
                .iter()
                .filter(|w| {
                    ours.iter()
                        .any(|o| (0..4).all(|i| (o[i] - w[i]).abs() <= 1.0))
                })
                .count();
            if m < want.len() {
                eprintln!("{key} {stage}: {m} of {} reference boxes found", want.len());
            }
            matched += m;
            total += want.len();
        }
    }
    eprintln!("stage inputs: {matched} of {total} reference boxes found within 1 px");
    assert!(
        matched as f64 >= 0.97 * total as f64,
        "{matched} of {total}"
    );
}

/// Detect -> largest face -> crop (margin 32, 160x160) reproduces `shared/reference/crops/`:
/// the same integer rectangles, a mean absolute pixel difference under 1.0 (Pillow resizes in
/// uint8 with rounding between its two passes, we do not), and embeddings within cosine
/// distance 1e-3 of the golden ones.
#[test]
fn crops_match_reference() {
    use facenet::align::{AlignConfig, FaceSelection, align, crop_rect, select};
    use facenet::{Distance, Embedder, Standardization};
    let crops = reference_json("crops.json");
    let golden = reference_json("embeddings.json");
    let det = detector();
    let embedder = Embedder::open(&common::weights(), &Device::flex())
        .unwrap()
        .with_standardization(Standardization::Prewhiten);
    let mut worst_px = 0f64;
    let mut worst_cos = 0f32;
    for (i, c) in crops["crops"].as_array().unwrap().iter().enumerate() {
        let name = c["crop_file"].as_str().unwrap();
        let photo = facenet::image::load_rgb(
            &shared()
                .join("reference")
                .join(c["photo_png"].as_str().unwrap()),
        )
        .unwrap();
        let faces = det.detect(&photo).unwrap();
        let face = select(
            &faces,
            photo.width(),
            photo.height(),
            FaceSelection::Largest,
        )[0];
        let rect = crop_rect(&face, photo.width(), photo.height(), 32);
        let want_rect: Vec<u32> = c["crop_rect_int"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(rect.to_vec(), want_rect, "{name}: crop rectangle");
        let ours = align(&photo, &face, &AlignConfig::default()).unwrap();
        let theirs = facenet::image::load_rgb(&shared().join("reference").join(name)).unwrap();
        let diff = ours
            .as_raw()
            .iter()
            .zip(theirs.as_raw())
            .map(|(a, b)| (*a as f64 - *b as f64).abs())
            .sum::<f64>()
            / ours.as_raw().len() as f64;
        assert!(diff < 1.0, "{name}: mean abs pixel diff {diff}");
        worst_px = worst_px.max(diff);
        let e = &embedder.embed(std::slice::from_ref(&ours)).unwrap()[0];
        let want = common::floats(&golden["crops"][i]["l2_prewhiten"]);
        let cos = Distance::Cosine.between(&e.normalized, &want);
        assert!(cos < 1e-3, "{name}: cosine distance {cos}");
        worst_cos = worst_cos.max(cos);
    }
    eprintln!("crops: max mean abs pixel diff {worst_px:.3}, max cosine distance {worst_cos:.2e}");
}

/// The fast path (NHWC convolutions, parallel pyramid) and the burn modules find the same faces
/// on every reference photo: same count, boxes and landmarks within 0.01 px, scores within 1e-5.
#[test]
fn fast_and_burn_engines_agree() {
    let refs = reference_json("mtcnn.json");
    let fast = detector();
    assert!(fast.engine().starts_with("fast"), "{}", fast.engine());
    let burn = detector().with_engine(facenet::Engine::Burn).unwrap();
    assert_eq!(burn.engine(), "burn");
    let mut faces_seen = 0;
    for im in refs["images"].as_array().unwrap() {
        let key = im["key"].as_str().unwrap();
        let img = photo(im);
        let (a, b) = (fast.detect(&img).unwrap(), burn.detect(&img).unwrap());
        assert_eq!(a.len(), b.len(), "{key}: number of faces");
        for (f, g) in a.iter().zip(&b) {
            for i in 0..4 {
                assert!(
                    (f.bbox[i] - g.bbox[i]).abs() < 0.01,
                    "{key}: {f:?} vs {g:?}"
                );
            }
            for (p, q) in f.landmarks.iter().zip(&g.landmarks) {
                assert!(
                    (p[0] - q[0]).abs() < 0.01 && (p[1] - q[1]).abs() < 0.01,
                    "{key}"
                );
            }
            assert!((f.score - g.score).abs() < 1e-5, "{key}: {f:?} vs {g:?}");
        }
        faces_seen += a.len();
    }
    assert!(faces_seen > 0);
}

/// The reference photos cut to 80 % of their face's box (the face more than fills the frame):
/// the published cascade misses some; the rescue (padding, lower thresholds) finds more, and
/// what it finds is in the crop's own coordinates, over the crop.
#[test]
fn the_rescue_finds_faces_that_fill_the_frame() {
    use facenet::bench::recall::{frame_filling_crop, recall};
    use facenet::detect::{MtcnnConfig, Rescue};
    let published = MtcnnConfig {
        rescue: None,
        ..MtcnnConfig::default()
    };
    let det = detector().with_config(published.clone());
    let images = reference_json("mtcnn.json");
    let crops: Vec<image::RgbImage> = images["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|im| {
            let img = photo(im);
            let mut faces = det.detect(&img).unwrap();
            facenet::align::order(&mut faces, img.width(), img.height());
            frame_filling_crop(&img, &faces[0], -0.2, 150)
        })
        .collect();
    let plain = recall(detector(), published, &crops).unwrap();
    let rescued = recall(detector(), MtcnnConfig::default(), &crops).unwrap();
    assert_eq!(MtcnnConfig::default().rescue, Some(Rescue::default()));
    assert!(
        rescued.found > plain.found,
        "rescue {} vs published {} of {}",
        rescued.found,
        plain.found,
        crops.len()
    );
    // The rescue only adds: a crop found at once is found with it on.
    assert!(rescued.missed.iter().all(|i| plain.missed.contains(i)));
    let on = detector();
    for (i, crop) in crops.iter().enumerate() {
        if rescued.missed.contains(&i) {
            continue;
        }
        let faces = on.detect(crop).unwrap();
        let b = faces[0].bbox;
        let (cx, cy) = ((b[0] + b[2]) / 2.0, (b[1] + b[3]) / 2.0);
        assert!(
            (0.0..150.0).contains(&cx) && (0.0..150.0).contains(&cy),
            "crop {i}: box {b:?} is not over the 150x150 crop"
        );
        assert!(
            b[2] - b[0] > 75.0,
            "crop {i}: box {b:?} is not the face that fills it"
        );
        if plain.missed.contains(&i) {
            assert!(faces[0].score >= 0.3 && faces[0].score < 1.0);
        }
    }
}

/// Quality on real photos: the reference faces are usable; blurred, they are refused for
/// sharpness; mirrored, their yaw changes sign.
#[test]
fn quality_of_real_faces() {
    use facenet::quality::ENROL_MIN;
    let det = detector();
    let images = reference_json("mtcnn.json");
    for im in images["images"].as_array().unwrap() {
        let img = photo(im);
        let mut faces = det.detect(&img).unwrap();
        facenet::align::order(&mut faces, img.width(), img.height());
        let q = faces[0].quality(&img);
        assert!(q.score >= ENROL_MIN, "{}: {q:?}", im["file_png"]);
        let blurred = image::imageops::blur(&img, q.face_px / 20.0);
        let qb = faces[0].quality(&blurred);
        assert!(
            qb.score < ENROL_MIN && qb.weakest() == "sharpness",
            "{} blurred: {qb:?}",
            im["file_png"]
        );
        let mirrored = image::imageops::flip_horizontal(&img);
        let mut back = det.detect(&mirrored).unwrap();
        facenet::align::order(&mut back, img.width(), img.height());
        let qm = back[0].quality(&mirrored);
        // The landmarks are the detector's (a few pixels of noise): the mirror's yaw is the
        // negative within 0.25 half eye-distances.
        assert!(
            (qm.yaw + q.yaw).abs() < 0.25,
            "{}: yaw {} mirrored {}",
            im["file_png"],
            q.yaw,
            qm.yaw
        );
    }
}
