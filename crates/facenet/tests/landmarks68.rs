//! The 68-point shape predictor against dlib itself.
//!
//! Golden: `crates/facenet/data/landmarks68-dlib.json`, written by
//! `scripts/landmarks68_golden.py` with dlib's Python binding: dlib's HOG boxes and its 68
//! points on `shared/reference/photos/*.png`, from the same model file (`facenet fetch
//! --landmarks`).
//! - In dlib's boxes, our points are dlib's: every coordinate within 1 px (dlib rounds to
//!   whole pixels), and at least 99 % of them equal.
//! - In the boxes placed from MTCNN's five points, the mean distance to dlib's points,
//!   divided by the distance between the eyes (300-W's error measure), is under 3.5 % over
//!   the photos and under 10 % on each (measured: 2.7 % and 8.1 %).

mod common;

use common::shared;
use facenet::Device;
use facenet::detect::Detector;
use facenet::landmarks::{FaceBox, FaceParts, ShapePredictor};

fn model() -> ShapePredictor {
    let p = facenet::paths::landmarks68();
    assert!(
        p.is_file(),
        "{} not found: run `cargo run --release -p facenet-cli -- fetch --landmarks` first",
        p.display()
    );
    ShapePredictor::open(&p).unwrap()
}

fn golden() -> Vec<(image::RgbImage, FaceBox, Vec<[f32; 2]>, String)> {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("data/landmarks68-dlib.json");
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    let faces = doc["faces"].as_array().unwrap();
    assert!(faces.len() >= 10, "{} faces in the golden", faces.len());
    faces
        .iter()
        .map(|f| {
            let name = f["photo"].as_str().unwrap().to_string();
            let img =
                facenet::image::load_rgb(&shared().join("reference/photos").join(&name)).unwrap();
            let b: Vec<f64> = f["box"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect();
            let points = f["points"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| [p[0].as_f64().unwrap() as f32, p[1].as_f64().unwrap() as f32])
                .collect();
            let face = FaceBox {
                left: b[0],
                top: b[1],
                right: b[2],
                bottom: b[3],
            };
            (img, face, points, name)
        })
        .collect()
}

#[test]
fn in_dlibs_boxes_the_points_are_dlibs() {
    let model = model();
    assert_eq!(model.parts(), 68);
    let (mut equal, mut total, mut worst) = (0usize, 0usize, 0f32);
    for (img, face, want, name) in golden() {
        let got = model.predict(&img, face);
        assert_eq!(got.len(), 68, "{name}");
        for (g, w) in got.iter().zip(&want) {
            for k in 0..2 {
                let d = (g[k].round() - w[k]).abs();
                worst = worst.max(d);
                equal += usize::from(d == 0.0);
                total += 1;
            }
        }
    }
    eprintln!("{equal} of {total} coordinates equal dlib's, the worst {worst} px apart");
    assert!(worst <= 1.0, "a coordinate {worst} px from dlib's");
    assert!(equal * 100 >= total * 99, "{equal} of {total} equal");
}

#[test]
fn from_mtcnns_five_points_the_shape_is_close_to_dlibs() {
    let model = model();
    let det = Detector::open(
        &facenet::paths::cache_dir().join("mtcnn.safetensors"),
        &Device::flex(),
    )
    .expect("run `facenet fetch` first");
    let mut errors = Vec::new();
    for (img, _, want, name) in golden() {
        let faces = det.detect(&img).unwrap();
        let face = faces.first().unwrap_or_else(|| panic!("{name}: no face"));
        let got = model.predict_from_five(&img, &face.landmarks).unwrap();
        let eye = |p: &[[f32; 2]], r: std::ops::Range<usize>| {
            let n = r.len() as f32;
            r.fold([0.0, 0.0], |s, i| [s[0] + p[i][0] / n, s[1] + p[i][1] / n])
        };
        let (l, r) = (eye(&want, 36..42), eye(&want, 42..48));
        let iod = ((l[0] - r[0]).powi(2) + (l[1] - r[1]).powi(2)).sqrt();
        let mean = got
            .iter()
            .zip(&want)
            .map(|(g, w)| ((g[0] - w[0]).powi(2) + (g[1] - w[1]).powi(2)).sqrt())
            .sum::<f32>()
            / 68.0;
        errors.push((mean / iod, name));
        let parts = FaceParts::from_points(&got).unwrap();
        assert_eq!(parts.chin.len(), 17);
        assert_eq!(parts.top_lip.len(), 12);
        assert_eq!(parts.bottom_lip.len(), 12);
    }
    errors.sort_by(|a, b| a.0.total_cmp(&b.0));
    eprintln!("normalized mean error to dlib: {errors:?}");
    let mean = errors.iter().map(|e| e.0).sum::<f32>() / errors.len() as f32;
    assert!(mean < 0.035, "mean {mean}");
    assert!(errors.last().unwrap().0 < 0.10, "worst {:?}", errors.last());
}
