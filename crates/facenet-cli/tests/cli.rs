//! Runs the built `facenet` binary in temp dirs, on the real weights (`facenet fetch` first).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_facenet"))
}

fn shared() -> PathBuf {
    let p = std::env::var_os("FACENET_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared"));
    assert!(
        p.join("reference/crops").is_dir(),
        "shared reference data not found at {} (set FACENET_SHARED)",
        p.display()
    );
    p
}

fn crop(name: &str) -> PathBuf {
    shared().join("reference/crops").join(name)
}

fn run(args: &[&std::ffi::OsStr]) -> Output {
    bin().args(args).output().expect("run facenet")
}

/// One JSON value per line of a command's output.
fn json_lines(stdout: &[u8]) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn s(p: &Path) -> &std::ffi::OsStr {
    p.as_os_str()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn embed_prints_one_unit_vector_per_image() {
    let a = crop("madonna_1.png");
    let b = crop("madonna_2.png");
    let out = run(&[s(Path::new("embed")), s(&a), s(&b)]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    for (line, p) in lines.iter().zip([&a, &b]) {
        assert_eq!(line["path"], p.display().to_string());
        let v: Vec<f64> = line["embedding"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        assert_eq!(v.len(), 128);
        let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "norm {norm}");
    }
}

#[test]
fn raw_embedding_is_not_normalized() {
    let a = crop("elton_john_1.png");
    let out = run(&[s(Path::new("embed")), s(Path::new("--raw")), s(&a)]);
    assert!(out.status.success(), "{}", stderr(&out));
    let line: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let norm = line["embedding"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap().powi(2))
        .sum::<f64>()
        .sqrt();
    // shared/reference: raw norms lie in 10.4..12.4.
    assert!((9.0..14.0).contains(&norm), "raw norm {norm}");
}

#[test]
fn compare_same_person_is_closer_than_different_people() {
    let dist = |a: &str, b: &str| -> f64 {
        let out = run(&[s(Path::new("compare")), s(&crop(a)), s(&crop(b))]);
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(stderr(&out).contains("L2 distance"), "unit missing");
        String::from_utf8(out.stdout)
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    let same = dist("jerry_seinfeld_1.png", "jerry_seinfeld_2.png");
    let diff = dist("jerry_seinfeld_1.png", "mindy_kaling_1.png");
    assert!(same < diff, "same {same} vs different {diff}");
    assert!((0.0..=2.0).contains(&same) && (0.0..=2.0).contains(&diff));
}

#[test]
fn bad_inputs_name_the_file_and_fail_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.jpg");
    std::fs::write(&empty, b"").unwrap();
    let junk = dir.path().join("junk.png");
    std::fs::write(&junk, b"not an image").unwrap();
    let tiny = dir.path().join("tiny.png");
    image::RgbImage::new(1, 1).save(&tiny).unwrap();
    let trunc = dir.path().join("trunc.png");
    let bytes = std::fs::read(crop("madonna_1.png")).unwrap();
    std::fs::write(&trunc, &bytes[..bytes.len() / 3]).unwrap();
    let missing = dir.path().join("missing.png");
    for p in [
        &empty,
        &junk,
        &tiny,
        &trunc,
        &missing,
        &dir.path().to_path_buf(),
    ] {
        let out = run(&[s(Path::new("embed")), s(p)]);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{}: {}",
            p.display(),
            stderr(&out)
        );
        let err = stderr(&out);
        assert!(err.contains(&p.display().to_string()), "{err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}

#[test]
fn missing_weights_file_says_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let out = bin()
        .env("FACENET_HOME", dir.path())
        .env_remove("FACENET_WEIGHTS")
        .args(["embed"])
        .arg(crop("madonna_1.png"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("facenet fetch"), "{}", stderr(&out));
}

/// `bench embed --layers --pass-times` on the small network's random weights (none in
/// FACENET_HOME): after each batch size's line, the spread of its single passes and a table of
/// the timed convolutions whose shares add up to 100 %; without the flags, neither.
#[test]
fn bench_embed_layers_and_pass_times_print_where_the_time_went() {
    let dir = tempfile::tempdir().unwrap();
    let bench = |flags: bool| {
        let mut cmd = bin();
        cmd.env("FACENET_HOME", dir.path()).args([
            "bench",
            "embed",
            "--model",
            "small",
            "--batch",
            "1,2",
            "--runs",
            "1",
            "--min-run-s",
            "0",
        ]);
        if flags {
            cmd.args(["--layers", "--pass-times"]);
        }
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        String::from_utf8(out.stdout).unwrap()
    };
    let text = bench(true);
    for b in [1, 2] {
        // The spread of single passes: at least two, each statistic positive and none below
        // the one before.
        let head = format!("# pass times, batch {b}: ");
        let line = text
            .lines()
            .find(|l| l.starts_with(&head))
            .unwrap_or_else(|| panic!("no {head:?} in\n{text}"));
        let passes: usize = line[head.len()..]
            .split(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!(passes >= 2, "{line}");
        let ms: Vec<f64> = ["p10 ", "p50 ", "p90 ", "p99 ", "max "]
            .iter()
            .map(|k| {
                let at = line.find(k).unwrap_or_else(|| panic!("no {k:?} in {line}")) + k.len();
                line[at..].split(' ').next().unwrap().parse().unwrap()
            })
            .collect();
        assert!(ms[0] > 0.0 && ms.windows(2).all(|w| w[0] <= w[1]), "{line}");
        let head = format!("# layers, batch {b}: share | ms/pass");
        let at = text
            .find(&head)
            .unwrap_or_else(|| panic!("no {head:?} in\n{text}"));
        let rows: Vec<&str> = text[at..]
            .lines()
            .skip(1)
            .take_while(|l| l.contains(" % | "))
            .collect();
        assert!(rows.len() >= 5, "{rows:?}");
        let share: f64 = rows
            .iter()
            .map(|l| {
                l[1..]
                    .split('%')
                    .next()
                    .unwrap()
                    .trim()
                    .parse::<f64>()
                    .unwrap()
            })
            .sum();
        assert!(
            (share - 100.0).abs() < 0.5,
            "shares add up to {share}: {rows:?}"
        );
        assert!(
            rows.iter().any(|l| l.ends_with(" on 1x1")),
            "no bottleneck row: {rows:?}"
        );
    }
    let plain = bench(false);
    assert!(!plain.contains("# layers") && !plain.contains("# pass times"));
}

#[test]
fn corrupt_weights_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let w = dir.path().join("bad.safetensors");
    std::fs::write(&w, b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}xxxxxx").unwrap();
    let out = run(&[
        s(Path::new("embed")),
        s(Path::new("--weights")),
        s(&w),
        s(&crop("madonna_1.png")),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("bad.safetensors"), "{}", stderr(&out));
}

#[test]
fn import_weights_rejects_a_non_h5_file() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("model.h5");
    std::fs::write(&f, b"nope").unwrap();
    let out = run(&[s(Path::new("import-weights")), s(&f)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("model.h5"), "{}", stderr(&out));
    assert!(!dir.path().join("model.safetensors").exists());
}

#[test]
fn fetch_is_idempotent() {
    // The first run fills the cache if it is not already; the second has nothing to do.
    let first = run(&[s(Path::new("fetch"))]);
    assert!(first.status.success(), "{}", stderr(&first));
    let out = run(&[s(Path::new("fetch"))]);
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("already in place"), "{err}");
    assert!(!err.contains("downloading"), "{err}");
}

fn photo(name: &str) -> PathBuf {
    shared().join("reference/photos").join(name)
}

#[test]
fn detect_json_and_annotation() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(&[
        s(Path::new("detect")),
        s(Path::new("--json")),
        s(Path::new("--annotate")),
        s(dir.path()),
        s(&photo("elton_john_2.png")),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // shared/reference/mtcnn.json: two detections, the face first (score 0.9989).
    let faces = v["faces"].as_array().unwrap();
    assert_eq!(faces.len(), 2);
    assert!(faces[0]["score"].as_f64().unwrap() > 0.99);
    assert_eq!(faces[0]["landmarks"].as_array().unwrap().len(), 5);
    let png = image::open(dir.path().join("elton_john_2.png")).unwrap();
    assert_eq!((png.width(), png.height()), (300, 300));
}

#[test]
fn detect_gives_68_landmarks_under_face_recognitions_names() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(&[
        s(Path::new("detect")),
        s(Path::new("--json")),
        s(Path::new("--landmarks")),
        s(Path::new("68")),
        s(Path::new("--annotate")),
        s(dir.path()),
        s(&photo("madonna_1.png")),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let face = &v["faces"][0];
    let points = face["landmarks68"].as_array().unwrap();
    assert_eq!(points.len(), 68);
    let parts = &face["parts"];
    for (key, n) in [
        ("chin", 17),
        ("left_eyebrow", 5),
        ("right_eyebrow", 5),
        ("nose_bridge", 4),
        ("nose_tip", 5),
        ("left_eye", 6),
        ("right_eye", 6),
        ("top_lip", 12),
        ("bottom_lip", 12),
    ] {
        assert_eq!(parts[key].as_array().unwrap().len(), n, "{key}");
    }
    // The eyes' centres sit on MTCNN's eye points, within a fifth of the distance between them.
    let xy = |p: &serde_json::Value| [p[0].as_f64().unwrap(), p[1].as_f64().unwrap()];
    let centre = |key: &str| {
        let pts = parts[key].as_array().unwrap();
        let n = pts.len() as f64;
        pts.iter()
            .map(xy)
            .fold([0.0, 0.0], |s, p| [s[0] + p[0] / n, s[1] + p[1] / n])
    };
    let five = face["landmarks"].as_array().unwrap();
    let (l5, r5) = (xy(&five[0]), xy(&five[1]));
    let iod = ((l5[0] - r5[0]).powi(2) + (l5[1] - r5[1]).powi(2)).sqrt();
    for (got, want) in [(centre("left_eye"), l5), (centre("right_eye"), r5)] {
        let d = ((got[0] - want[0]).powi(2) + (got[1] - want[1]).powi(2)).sqrt();
        assert!(d < 0.2 * iod, "eye centre {got:?} vs MTCNN {want:?}");
    }
    assert!(centre("bottom_lip")[1] > centre("nose_tip")[1]);
    assert!(dir.path().join("madonna_1.png").is_file());

    // Without the model: a clear error that names the fetch.
    let empty = tempfile::tempdir().unwrap();
    let out = bin()
        .env("FACENET_HOME", empty.path())
        .args(["detect", "--landmarks", "68"])
        .arg(photo("madonna_1.png"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("fetch --landmarks"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn align_mirrors_folders_resumes_and_reports() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    let output = dir.path().join("out");
    std::fs::create_dir_all(input.join("madonna")).unwrap();
    std::fs::create_dir_all(input.join("nobody")).unwrap();
    std::fs::copy(photo("madonna_1.jpg"), input.join("madonna/a.jpg")).unwrap();
    std::fs::copy(photo("madonna_2.png"), input.join("madonna/b.png")).unwrap();
    // A face-free image and a corrupt one: listed, not fatal.
    image::RgbImage::from_pixel(64, 64, image::Rgb([90, 90, 90]))
        .save(input.join("nobody/blank.png"))
        .unwrap();
    std::fs::write(input.join("nobody/broken.jpg"), b"\xff\xd8\xff garbage").unwrap();
    let out = run(&[s(Path::new("align")), s(&input), s(&output)]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("processed 4  aligned 2"), "{text}");
    assert!(stderr(&out).contains("blank.png") && stderr(&out).contains("broken.jpg"));
    let face = image::open(output.join("madonna/a.png")).unwrap();
    assert_eq!((face.width(), face.height()), (160, 160));
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(output.join("align_summary.json")).unwrap()).unwrap();
    assert_eq!(summary["no_face"].as_array().unwrap().len(), 1);
    assert_eq!(summary["errors"].as_array().unwrap().len(), 1);
    // A second run keeps what exists; --strict turns the failures into exit status 1.
    let again = run(&[
        s(Path::new("align")),
        s(&input),
        s(&output),
        s(Path::new("--strict")),
    ]);
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stdout).contains("already done 2"));
}

#[test]
fn embed_detect_reports_each_face() {
    let out = run(&[
        s(Path::new("embed")),
        s(Path::new("--detect")),
        s(&photo("elton_john_2.png")),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let lines = json_lines(&out.stdout);
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[1]["face"], 1);
    assert_eq!(lines[0]["embedding"].as_array().unwrap().len(), 128);
}

/// A 2-fold subset of LFW `pairs.txt` (10 same + 10 different per fold), end to end: detection,
/// alignment, embedding, metrics, plots, and the cache on the second run.
#[test]
fn evaluate_small_lfw_subset_end_to_end() {
    let lfw = shared().join("data/lfw");
    let text = std::fs::read_to_string(shared().join("data/lfw-protocol/pairs.txt")).unwrap();
    let lines: Vec<&str> = text.lines().skip(1).collect();
    let mut small = String::from("2\t10\n");
    for fold in 0..2 {
        let base = fold * 600;
        for l in &lines[base..base + 10] {
            small.push_str(l);
            small.push('\n');
        }
        for l in &lines[base + 300..base + 310] {
            small.push_str(l);
            small.push('\n');
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let pairs = dir.path().join("pairs.txt");
    std::fs::write(&pairs, small).unwrap();
    let out_dir = dir.path().join("report");
    let cache = dir.path().join("cache");
    let args = |o: &Path| {
        vec![
            "evaluate".into(),
            "--pairs".into(),
            pairs.clone().into_os_string(),
            "--images".into(),
            lfw.clone().into_os_string(),
            "--cache".into(),
            cache.clone().into_os_string(),
            "--out".into(),
            o.as_os_str().to_owned(),
        ]
    };
    let out = bin().args(args(&out_dir)).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out_dir.join("report.json")).unwrap()).unwrap();
    assert_eq!(report["pairs_used"], 40);
    let acc = report["evaluation"]["accuracy"].as_f64().unwrap();
    assert!(acc >= 0.9, "accuracy {acc}");
    assert!(report["evaluation"]["auc"].as_f64().unwrap() > 0.95);
    for png in ["roc.png", "distances.png"] {
        let img = image::open(out_dir.join(png)).unwrap();
        assert!(img.width() >= 800);
    }
    let again = bin()
        .args(args(&dir.path().join("report2")))
        .output()
        .unwrap();
    assert!(again.status.success());
    assert!(
        stderr(&again).contains("from the cache"),
        "{}",
        stderr(&again)
    );
}

#[test]
fn evaluate_names_a_missing_image() {
    let dir = tempfile::tempdir().unwrap();
    let pairs = dir.path().join("pairs.txt");
    std::fs::write(&pairs, "1\nNo_Such_Person\t1\t2\nA\t1\tB\t1\n").unwrap();
    let out = bin()
        .args(["evaluate", "--pairs"])
        .arg(&pairs)
        .arg("--images")
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("4 image(s)") && err.contains("A_0001.jpg"),
        "{err}"
    );
}

fn gallery_run(gallery: &Path, args: &[&std::ffi::OsStr]) -> Output {
    bin()
        .args(args)
        .arg("--gallery")
        .arg(gallery)
        .output()
        .unwrap()
}

/// `facenet identify --json PHOTOS` on a gallery: one value per face.
fn identify_json(gallery: &Path, photos: &[&Path]) -> Vec<serde_json::Value> {
    let mut args = vec![
        std::ffi::OsStr::new("identify"),
        std::ffi::OsStr::new("--json"),
    ];
    args.extend(photos.iter().map(|p| p.as_os_str()));
    let out = gallery_run(gallery, &args);
    assert!(out.status.success(), "{}", stderr(&out));
    json_lines(&out.stdout)
}

#[test]
fn enroll_verify_identify_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let g = dir.path().join("g.db");
    let o = |x: &str| std::ffi::OsString::from(x);
    // Nothing enrolled yet: identify says so.
    let out = gallery_run(
        &g,
        &[&o("identify"), s(&crop("madonna_2.png")), &o("--aligned")],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("no gallery"), "{}", stderr(&out));
    // One-shot enrolment from an aligned crop and from a raw photo.
    let out = gallery_run(
        &g,
        &[
            &o("enroll"),
            &o("madonna"),
            s(&crop("madonna_1.png")),
            &o("--aligned"),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let out = gallery_run(
        &g,
        &[&o("enroll"), &o("jerry"), s(&photo("jerry_seinfeld_1.png"))],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    // Same person accepted (exit 0), another rejected (exit 2), at the default threshold.
    let out = gallery_run(
        &g,
        &[
            &o("verify"),
            s(&photo("jerry_seinfeld_2.png")),
            &o("--as"),
            &o("jerry"),
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("L2"));
    let out = gallery_run(
        &g,
        &[
            &o("verify"),
            s(&photo("mindy_kaling_1.png")),
            &o("--as"),
            &o("jerry"),
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // Identify: jerry is recognised, mindy (not enrolled) is unknown.
    let ids = identify_json(
        &g,
        &[&photo("jerry_seinfeld_2.png"), &photo("mindy_kaling_2.png")],
    );
    assert_eq!(ids[0]["identity"], "jerry");
    assert_eq!(ids[1]["identity"], "unknown");
    assert!(ids[0]["margin"].as_f64().unwrap() > 0.0);
    // Unknown name.
    let out = gallery_run(
        &g,
        &[
            &o("verify"),
            s(&photo("jerry_seinfeld_2.png")),
            &o("--as"),
            &o("zed"),
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("zed"), "{}", stderr(&out));
}

#[test]
fn enroll_refuses_ambiguous_and_faceless_photos_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let g = dir.path().join("g.db");
    let o = |x: &str| std::ffi::OsString::from(x);
    let blank = dir.path().join("blank.png");
    image::RgbImage::from_pixel(80, 80, image::Rgb([128, 128, 128]))
        .save(&blank)
        .unwrap();
    // Two comparable faces (two photos side by side): refused without a choice.
    let (a, b) = (
        image::open(photo("madonna_1.png")).unwrap().to_rgb8(),
        image::open(photo("ben_afflek_1.png")).unwrap().to_rgb8(),
    );
    let mut pair = image::RgbImage::new(a.width() + b.width(), a.height().max(b.height()));
    image::imageops::replace(&mut pair, &a, 0, 0);
    image::imageops::replace(&mut pair, &b, a.width() as i64, 0);
    let two = dir.path().join("two.png");
    pair.save(&two).unwrap();
    let out = gallery_run(&g, &[&o("enroll"), &o("madonna"), s(&two)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("2 faces"), "{}", stderr(&out));
    // A good photo plus a faceless one: the whole enrolment fails, nothing is stored.
    let out = gallery_run(
        &g,
        &[
            &o("enroll"),
            &o("elton"),
            s(&photo("elton_john_1.png")),
            s(&blank),
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("blank.png"), "{}", stderr(&out));
    // elton_john_2 holds his face (0.999) and a false detection on his chin (0.91): the face
    // of the photo is his face, taken without asking.
    let out = gallery_run(
        &g,
        &[&o("enroll"), &o("elton"), s(&photo("elton_john_2.png"))],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let out = gallery_run(&g, &[&o("enroll"), &o("madonna"), &o("--largest"), s(&two)]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = gallery_run(&g, &[&o("gallery"), &o("list")]);
    let list = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        list.contains("elton\t1 face(s)") && list.contains("madonna\t1"),
        "{list}"
    );
}

#[test]
fn gallery_maintenance_and_export_import() {
    let dir = tempfile::tempdir().unwrap();
    let g = dir.path().join("g.db");
    let o = |x: &str| std::ffi::OsString::from(x);
    for (name, file) in [("a", "ben_afflek_1.png"), ("b", "madonna_1.png")] {
        let out = gallery_run(
            &g,
            &[&o("enroll"), &o(name), s(&crop(file)), &o("--aligned")],
        );
        assert!(out.status.success(), "{}", stderr(&out));
    }
    assert!(
        gallery_run(&g, &[&o("gallery"), &o("rename"), &o("a"), &o("ben")])
            .status
            .success()
    );
    let export = dir.path().join("export.json");
    assert!(
        gallery_run(&g, &[&o("gallery"), &o("export"), s(&export)])
            .status
            .success()
    );
    assert!(
        gallery_run(&g, &[&o("gallery"), &o("remove"), &o("b")])
            .status
            .success()
    );
    let list = String::from_utf8(gallery_run(&g, &[&o("gallery"), &o("list")]).stdout).unwrap();
    assert!(list.contains("ben") && !list.contains("\nb\t"), "{list}");
    let g2 = dir.path().join("g2.db");
    assert!(
        gallery_run(&g2, &[&o("gallery"), &o("import"), s(&export)])
            .status
            .success()
    );
    let list = String::from_utf8(gallery_run(&g2, &[&o("gallery"), &o("list")]).stdout).unwrap();
    assert!(list.contains("ben\t1") && list.contains("b\t1"), "{list}");
    // The export carries the settings; an index is a PostgreSQL gallery's, and SQLite says so.
    let text = std::fs::read_to_string(&export).unwrap();
    assert!(
        text.contains("\"identities\"") && text.contains("\"settings\""),
        "{text}"
    );
    let out = gallery_run(&g2, &[&o("gallery"), &o("index")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("only a PostgreSQL gallery keeps a search index"),
        "{}",
        stderr(&out)
    );
    // A corrupt database file is named.
    let bad = dir.path().join("bad.db");
    std::fs::write(&bad, vec![7u8; 4096]).unwrap();
    let out = gallery_run(&bad, &[&o("gallery"), &o("list")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("bad.db"), "{}", stderr(&out));
}

#[test]
fn cluster_reference_crops_into_five_people() {
    // Reference distance matrix: same-person pairs at most 1.259, different people at least
    // 1.291 (shared/reference/embeddings.json), so 1.275 separates them.
    let dir = tempfile::tempdir().unwrap();
    let out_file = dir.path().join("clusters.json");
    let out = bin()
        .args(["cluster", "--aligned", "--threshold", "1.275", "--out"])
        .arg(&out_file)
        .arg(shared().join("reference/crops"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&out_file).unwrap()).unwrap();
    let clusters = v["clusters"].as_array().unwrap();
    assert_eq!(clusters.len(), 5);
    for c in clusters {
        let m = c["members"].as_array().unwrap();
        assert_eq!(m.len(), 2);
        let person = |x: &serde_json::Value| {
            let p = x["path"].as_str().unwrap();
            p[..p.rfind('_').unwrap()].to_string()
        };
        assert_eq!(person(&m[0]), person(&m[1]), "impure cluster {c}");
    }
}

/// The 10 reference crops as a `person/*.png` training set.
fn crops_dataset(dir: &Path) -> PathBuf {
    let data = dir.join("data");
    for entry in std::fs::read_dir(shared().join("reference/crops")).unwrap() {
        let p = entry.unwrap().path();
        let name = p.file_stem().unwrap().to_string_lossy().into_owned();
        let person = &name[..name.rfind('_').unwrap()];
        std::fs::create_dir_all(data.join(person)).unwrap();
        std::fs::copy(&p, data.join(person).join(p.file_name().unwrap())).unwrap();
    }
    data
}

fn log_lines(run: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run.join("log.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// `facenet train` of the small network on `data`, triplets of 5 people x 2 crops (all).
fn small_triplet_run(
    data: &Path,
    out: &Path,
    extra: &[impl AsRef<std::ffi::OsStr>],
) -> std::process::Output {
    bin()
        .args([
            "train",
            "--model",
            "small",
            "--people",
            "5",
            "--per-person",
            "2",
        ])
        .args(["--selection", "batch-all", "--data"])
        .arg(data)
        .arg("--out")
        .arg(out)
        .args(extra)
        .output()
        .unwrap()
}

#[test]
fn train_triplet_two_steps_checkpoint_resume_and_determinism() {
    let dir = tempfile::tempdir().unwrap();
    let data = crops_dataset(dir.path());
    let train = |out: &Path, steps: &str| small_triplet_run(&data, out, &["--steps", steps]);
    let (run_a, run_b) = (dir.path().join("a"), dir.path().join("b"));
    let out = train(&run_a, "2");
    assert!(out.status.success(), "{}", stderr(&out));
    let out = train(&run_b, "2");
    assert!(out.status.success(), "{}", stderr(&out));
    let (la, lb) = (log_lines(&run_a), log_lines(&run_b));
    assert_eq!(la.len(), 2);
    // Same seed, same data: same first losses.
    assert_eq!(la[0]["loss"], lb[0]["loss"]);
    assert!(la[0]["loss"].as_f64().unwrap() > 0.0);
    assert!(la[0]["triplets_used"].as_u64().unwrap() > 0);
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run_a.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["selection"], "batch-all");
    assert!(config["git_revision"].is_string());
    // The checkpoint is a weights file for every command.
    let w = run_a.join("checkpoint/model.safetensors");
    let out = bin()
        .arg("embed")
        .arg("--weights")
        .arg(&w)
        .arg(crop("madonna_1.png"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["embedding"].as_array().unwrap().len(), 64); // the small preset
    // Resume to 3 steps: one more log line.
    let out = bin()
        .args(["train", "--steps", "3", "--resume"])
        .arg(&run_a)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("resuming at step 2"));
    assert_eq!(log_lines(&run_a).len(), 3);
}

#[test]
fn train_softmax_center_loss_smoke() {
    let dir = tempfile::tempdir().unwrap();
    let data = crops_dataset(dir.path());
    let run = dir.path().join("s");
    let out = bin()
        .args([
            "train", "--loss", "softmax", "--model", "small", "--steps", "2", "--batch", "10",
            "--data",
        ])
        .arg(&data)
        .arg("--out")
        .arg(&run)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let l = log_lines(&run);
    assert_eq!(l.len(), 2);
    assert!(l[0]["cross_entropy"].as_f64().unwrap() > 0.0);
    assert!(l[0]["center_loss"].as_f64().unwrap() >= 0.0);
    assert!(run.join("checkpoint/head.safetensors").is_file());

    // Softmax pre-training, then triplet fine-tuning from its checkpoint (`--init-weights`):
    // at learning rate 0 the triplet run's checkpoint holds the same weights (batch-norm
    // running statistics aside, which a training step moves).
    let pretrained = run.join("checkpoint/model.safetensors");
    let tuned = dir.path().join("t");
    let extra: [&std::ffi::OsStr; 6] = [
        "--steps".as_ref(),
        "1".as_ref(),
        "--lr".as_ref(),
        "0".as_ref(),
        "--init-weights".as_ref(),
        pretrained.as_os_str(),
    ];
    let out = small_triplet_run(&data, &tuned, &extra);
    assert!(out.status.success(), "{}", stderr(&out));
    let (a, b) = (
        std::fs::read(&pretrained).unwrap(),
        std::fs::read(tuned.join("checkpoint/model.safetensors")).unwrap(),
    );
    let (a, b) = (
        safetensors::SafeTensors::deserialize(&a).unwrap(),
        safetensors::SafeTensors::deserialize(&b).unwrap(),
    );
    let mut compared = 0;
    for (name, t) in a.tensors() {
        if name.contains("running") {
            continue;
        }
        assert_eq!(t.data(), b.tensor(&name).unwrap().data(), "{name}");
        compared += 1;
    }
    assert!(compared > 100, "{compared} tensors compared");
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(tuned.join("config.json")).unwrap()).unwrap();
    assert_eq!(
        config["init_weights"],
        pretrained.to_string_lossy().as_ref()
    );
    // Weights of another network are refused, naming the option.
    let out = bin()
        .args(["train", "--model", "keras-128", "--steps", "1", "--data"])
        .arg(&data)
        .arg("--init-weights")
        .arg(&pretrained)
        .arg("--out")
        .arg(dir.path().join("k"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let e = stderr(&out);
    assert!(
        e.contains("init-weights") && e.contains("another network"),
        "{e}"
    );

    // `facenet curves`: a run trained without validation pairs has no curve, and says why.
    let out = bin().arg("curves").arg(&run).output().unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--val-pairs"), "{}", stderr(&out));
    // A run with validations (its log extended with two): the table and the picture.
    let mut log = std::fs::read_to_string(run.join("log.jsonl")).unwrap();
    log.insert_str(0, "{\"step\":0,\"val_accuracy\":0.55,\"val_at_far\":0.0}\n");
    log.push_str("{\"step\":2,\"step_seconds\":60.0,\"val_accuracy\":0.75}\n");
    std::fs::write(run.join("log.jsonl"), log).unwrap();
    let png = dir.path().join("curves.png");
    let out = bin()
        .arg("curves")
        .arg(&run)
        .args(["--goal", "0.85", "--out"])
        .arg(&png)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    // Two validations, three steps, the best at the last.
    assert!(text.contains("s | 2 | 3 | "), "{text}");
    assert!(text.contains("| 0.550 | 0.750 (3, "), "{text}");
    let img = image::open(&png).unwrap();
    assert_eq!((img.width(), img.height()), (1400, 560));
    // `A+B`: B continued from A's end (here the run after itself): three validations, six steps.
    let mut chained = run.clone().into_os_string();
    chained.push("+");
    chained.push(&run);
    let out = bin()
        .arg("curves")
        .arg(&chained)
        .arg("--out")
        .arg(&png)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("s + s | 3 | 6 | "), "{text}");
}

#[test]
fn train_without_data_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = bin()
        .args(["train", "--out"])
        .arg(dir.path().join("r"))
        .arg("--data")
        .arg(dir.path().join("nothing"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("nothing"), "{}", stderr(&out));
}

#[test]
fn calibrate_stores_thresholds_that_verify_and_identify_use() {
    let dir = tempfile::tempdir().unwrap();
    let data = crops_dataset(dir.path());
    let g = dir.path().join("g.db");
    let out = bin()
        .args(["calibrate", "--aligned", "--store", "accuracy", "--gallery"])
        .arg(&g)
        .arg(&data)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    // 10 crops of 5 people: 5 same-person pairs, 40 different-person pairs.
    assert!(
        text.contains("5 same-person and 40 different-person pairs"),
        "{text}"
    );
    // Best accuracy separates them (shared/reference: same <= 1.259 < 1.291 <= different).
    assert!(text.contains("accuracy 1.0000"), "{text}");
    let run = |args: &[&str]| {
        let out = bin().args(args).arg("--gallery").arg(&g).output().unwrap();
        assert!(out.status.code() != Some(1), "{}", stderr(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let m1 = crop("madonna_1.png").display().to_string();
    let m2 = crop("madonna_2.png").display().to_string();
    run(&["enroll", "madonna", &m1, "--aligned"]);
    // 1:1 uses the calibrated threshold...
    let text = run(&["verify", &m2, "--as", "madonna", "--aligned"]);
    assert!(text.contains("calibrated"), "{text}");
    // ... 1:N derives its own from the target rate, the gallery's size and the impostor
    // distances of these photos.
    let text = run(&["identify", "--json", &m2, "--aligned"]);
    let v: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(v["threshold_source"], "target-fir", "{text}");
    assert!(v["expected_fir"].as_f64().unwrap() <= 0.0101, "{text}");
    let text = run(&["gallery", "fir", "0.001"]);
    assert!(text.contains("0.001"), "{text}");
    let strict: serde_json::Value = serde_json::from_str(
        run(&["identify", "--json", &m2, "--aligned"])
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    assert!(
        strict["threshold"].as_f64() < v["threshold"].as_f64(),
        "{strict} vs {v}"
    );
}

/// `calibrate --store` on 16 LFW people (two photos each) also measures the cohort score's
/// thresholds on them, and identification in that gallery derives its threshold from them.
#[test]
fn calibrate_stores_cohort_thresholds_that_identify_uses() {
    let o = |x: &str| std::ffi::OsString::from(x);
    let lfw = shared().join("data/lfw");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("people");
    let mut people: Vec<PathBuf> = std::fs::read_dir(&lfw)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| std::fs::read_dir(p).map_or(0, |d| d.count()) >= 3)
        .collect();
    people.sort();
    let mut spare = Vec::new();
    for p in people.iter().take(16) {
        let mut photos: Vec<PathBuf> = std::fs::read_dir(p)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        photos.sort();
        let to = data.join(p.file_name().unwrap());
        std::fs::create_dir_all(&to).unwrap();
        for ph in &photos[..2] {
            std::fs::copy(ph, to.join(ph.file_name().unwrap())).unwrap();
        }
        // (name, a photo not calibrated on, one that was)
        spare.push((
            p.file_name().unwrap().to_owned(),
            photos[2].clone(),
            photos[0].clone(),
        ));
    }
    let g = dir.path().join("g.db");
    let out = gallery_run(&g, &[&o("calibrate"), &o("--store"), &o("far"), s(&data)]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        text.contains("cohort score: thresholds measured on galleries of 10 people")
            && text.contains("stored the cohort score's thresholds"),
        "{text}"
    );
    // 16 people x 40 draws leave 240 strangers: too few for 0.001, and it says so.
    assert!(
        text.contains("note: 240 stranger searches at 10 people"),
        "{text}"
    );
    let own: f64 = text
        .split("for FIR 0.01: ")
        .nth(1)
        .and_then(|t| t.split(" at 10").next())
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no threshold at 10 in {text}"));
    assert!((-1.0..0.0).contains(&own), "{text}");
    // Six of them enrolled with their third photo: the cohort score, by the stored table
    // (a gallery under its smallest size takes that size's threshold).
    for (name, photo, _) in &spare[..6] {
        let out = gallery_run(
            &g,
            &[&o("enroll"), &o("--min-quality"), &o("0"), name, s(photo)],
        );
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let out = gallery_run(&g, &[&o("identify"), &o("--json"), s(&spare[0].2)]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v = &json_lines(&out.stdout)[0];
    assert!(v["cohort_score"].is_f64(), "{v}");
    assert!(
        (v["threshold"].as_f64().unwrap() - own).abs() < 5e-4,
        "{v} vs {own}"
    );
    // And the gallery says where its threshold comes from.
    let out = gallery_run(&g, &[&o("gallery"), &o("fir")]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        text.contains("6 identities: threshold") && text.contains("own labelled photos"),
        "{text}"
    );
    // With fewer than 14 people there is nothing to measure a cohort table on.
    let few = dir.path().join("few");
    for (name, third, first) in &spare[..4] {
        std::fs::create_dir_all(few.join(name)).unwrap();
        for photo in [third, first] {
            std::fs::copy(photo, few.join(name).join(photo.file_name().unwrap())).unwrap();
        }
    }
    let out = gallery_run(
        &dir.path().join("h.db"),
        &[&o("calibrate"), &o("--store"), &o("far"), s(&few)],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        text.contains("cohort score: 4 people, fewer than 14"),
        "{text}"
    );
}

#[test]
fn model_table_adds_up_and_residuals_are_measured() {
    let out = run(&[s(Path::new("model"))]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    // The totals of the published network: 1.417 G multiply-adds, every stored value.
    assert!(
        text.contains("| total | | | 22,822,560 | 100 | 1,416,974,176 | 100 |"),
        "{text}"
    );
    assert!(
        text.contains("| Mixed_7a |") && text.contains("1792 x 3 x 3"),
        "{text}"
    );
    let out = run(&[
        s(Path::new("model")),
        s(Path::new("--size")),
        s(Path::new("10")),
    ]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--size 10"), "{}", stderr(&out));

    // What each residual block adds, on the ten reference crops.
    let out = run(&[
        s(Path::new("model")),
        s(Path::new("--residuals")),
        s(&shared().join("reference/crops")),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    let rows: Vec<Vec<f64>> = text
        .lines()
        .filter(|l| l.starts_with("| Block"))
        .map(|l| {
            l.split('|')
                .skip(2)
                .filter_map(|c| c.trim().parse().ok())
                .collect()
        })
        .collect();
    assert_eq!(rows.len(), 21, "{text}");
    for r in &rows[..20] {
        // A scaled block adds a correction smaller than its input; leaving it out moves the
        // embeddings by less than the decision threshold (1.115).
        assert!(r[0] > 0.0 && r[0] < 1.0 && r[1] < 1.0, "{text}");
    }
}

/// `facenet quantize` writes the int8 calibration beside the weights it was given (here a
/// link in a temp dir, so that the cache's stays untouched), leaving out the excluded pairs
/// file's images; `--precision int8` then finds it and embeds within cosine distance 2e-3 of
/// f32; without it, int8 fails and names the command.
#[test]
fn quantize_then_embed_in_int8() {
    let dir = std::env::temp_dir().join(format!("facenet-cli-int8-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let w = dir.join("keras.safetensors");
    std::os::unix::fs::symlink(facenet::paths::default_weights(), &w).unwrap();
    let face = crop("madonna_1.png");
    let embed = |precision: &str| {
        run(&[
            s(Path::new("embed")),
            s(Path::new("--weights")),
            s(&w),
            s(Path::new("--precision")),
            s(Path::new(precision)),
            s(&face),
        ])
    };
    let out = embed("int8");
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("facenet quantize"),
        "{}",
        stderr(&out)
    );
    let proto = shared().join("data/lfw-protocol");
    let out = run(&[
        s(Path::new("quantize")),
        s(Path::new("--pairs")),
        s(&proto.join("pairsDevTrain.txt")),
        s(Path::new("--exclude")),
        s(&proto.join("pairs.txt")),
        s(Path::new("--images")),
        s(&shared().join("data/lfw")),
        s(Path::new("--count")),
        s(Path::new("24")),
        s(Path::new("--weights")),
        s(&w),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("calibrated on 24 aligned faces"), "{text}");
    let cal: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("keras.int8.json")).unwrap()).unwrap();
    assert_eq!(cal["images"], 24);
    let vec = |o: Output| -> Vec<f64> {
        assert!(o.status.success(), "{}", stderr(&o));
        let line: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        line["embedding"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect()
    };
    let (q, f) = (vec(embed("int8")), vec(embed("f32")));
    let cos: f64 = q.iter().zip(&f).map(|(a, b)| a * b).sum();
    assert!(
        1.0 - cos < 2e-3,
        "cosine distance int8 to f32: {}",
        1.0 - cos
    );
    assert!(q != f, "int8 gave the f32 embedding bit for bit");

    // `--precision auto`: the table is measured once (here into this folder's cache), the
    // fastest precision within 0.001 of f32's LFW accuracy is used, and the next run reads
    // the table instead of timing again.
    let auto = || {
        bin()
            .env("FACENET_HOME", &dir)
            .args(["embed", "--precision", "auto", "--weights"])
            .arg(&w)
            .arg(&face)
            .output()
            .unwrap()
    };
    let first = auto();
    let err = stderr(&first);
    assert!(err.contains("measured now"), "{err}");
    let table: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("precision-auto.json")).unwrap()).unwrap();
    let rows = table["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 3);
    let f32_lfw = rows[0]["lfw"].as_f64().unwrap();
    let best = rows
        .iter()
        .filter(|r| r["img_per_s"].is_number())
        .filter(|r| {
            r["lfw"]
                .as_f64()
                .is_some_and(|a| a >= f32_lfw - 0.001 - 1e-12)
        })
        .max_by(|a, b| {
            let rate = |r: &serde_json::Value| r["img_per_s"].as_f64().unwrap();
            rate(a).total_cmp(&rate(b))
        })
        .unwrap();
    let chosen = best["precision"].as_str().unwrap().to_string();
    assert!(
        rows.iter()
            .any(|r| r["precision"] == "int8" && r["img_per_s"].is_number()),
        "int8 runs here with its calibration: {table}"
    );
    assert!(err.contains(&format!("precision auto: {chosen} ")), "{err}");
    assert_eq!(vec(first), vec(embed(&chosen)), "auto embeds as {chosen}");
    let second = auto();
    assert!(
        stderr(&second).contains("cached table"),
        "{}",
        stderr(&second)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bench_photos_times_photos_end_to_end_at_each_size() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["madonna_1.png", "elton_john_2.png"] {
        std::fs::copy(photo(name), dir.path().join(name)).unwrap();
    }
    let out = run(&[
        s(Path::new("bench")),
        s(Path::new("photos")),
        s(Path::new("--photos")),
        s(dir.path()),
        s(Path::new("--runs")),
        s(Path::new("1")),
        s(Path::new("--sizes")),
        s(Path::new("native,640x360")),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("photos ")).collect();
    assert_eq!(lines.len(), 2, "{text}");
    for (line, size) in lines.iter().zip(["native", "640x360"]) {
        assert!(line.contains(&format!("size={size} ")), "{line}");
        assert!(line.contains("photos=2"), "{line}");
        let field = |k: &str| -> f64 {
            line.split(' ')
                .find_map(|f| f.strip_prefix(k))
                .unwrap()
                .parse()
                .unwrap()
        };
        // Both photos have a face: at least one face per photo per second of photos.
        assert!(field("photos_per_s=") > 0.0, "{line}");
        assert!(field("faces_per_s=") >= field("photos_per_s="), "{line}");
    }
    let bad = run(&[
        s(Path::new("bench")),
        s(Path::new("photos")),
        s(Path::new("--photos")),
        s(dir.path()),
        s(Path::new("--sizes")),
        s(Path::new("big")),
    ]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(stderr(&bad).contains("`big`"), "{}", stderr(&bad));
}

/// The faces of a photo have one order on every front: `facenet detect` lists the face of the
/// photo first, `embed --detect` and `identify` number the faces in that order, and
/// `enroll --face 0` takes the face `detect` lists first (issue 41: on the sample's Elton John
/// photo, `--face 0` used to take a larger false detection).
#[test]
fn r41_detect_face_0_is_the_face_enroll_face_0_takes() {
    let dir = tempfile::tempdir().unwrap();
    let g = dir.path().join("g.db");
    let o = |x: &str| std::ffi::OsString::from(x);
    let sample = facenet::paths::cache_dir().join("5-celebrity-faces-dataset/train/elton_john");
    let mut photos = facenet::files::walk_images(&sample).unwrap();
    photos.push(photo("elton_john_2.png"));
    let mut several = 0;
    for p in &photos {
        let out = run(&[s(Path::new("detect")), s(Path::new("--json")), s(p)]);
        assert!(out.status.success(), "{}", stderr(&out));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let faces = v["faces"].as_array().unwrap().clone();
        if faces.len() < 2 {
            continue;
        }
        several += 1;
        let best = faces
            .iter()
            .map(|f| f["score"].as_f64().unwrap())
            .fold(0.0, f64::max);
        // The first face listed is a confident one (the face of the photo, not a larger
        // false detection scoring well below it).
        assert!(
            faces[0]["score"].as_f64().unwrap() >= best - 0.05,
            "{}: {faces:?}",
            p.display()
        );
        // embed --detect numbers the faces in the same order, with the same boxes.
        let out = run(&[s(Path::new("embed")), s(Path::new("--detect")), s(p)]);
        assert!(out.status.success(), "{}", stderr(&out));
        let lines = json_lines(&out.stdout);
        assert_eq!(lines.len(), faces.len());
        for (i, (line, face)) in lines.iter().zip(&faces).enumerate() {
            assert_eq!(line["face"], i);
            assert_eq!(line["box"], face["box"], "{}: face {i}", p.display());
        }
        // enroll --face N stores face N's box, for every N (whatever its quality: the side
        // faces of a group photo are often small or turned).
        for (i, face) in faces.iter().enumerate() {
            let name = format!("p{several}f{i}");
            let out = gallery_run(
                &g,
                &[
                    &o("enroll"),
                    &o(&name),
                    &o("--face"),
                    &o(&i.to_string()),
                    &o("--min-quality"),
                    &o("0"),
                    s(p),
                ],
            );
            assert!(out.status.success(), "{}", stderr(&out));
            let export = dir.path().join(format!("{name}.json"));
            let out = gallery_run(&g, &[&o("gallery"), &o("export"), s(&export)]);
            assert!(out.status.success(), "{}", stderr(&out));
            let e: serde_json::Value =
                serde_json::from_slice(&std::fs::read(&export).unwrap()).unwrap();
            let stored = e["faces"]
                .as_array()
                .unwrap()
                .iter()
                .find(|f| f["identity"] == name.as_str())
                .unwrap()
                .clone();
            let (a, b) = (
                stored["bbox"].as_array().unwrap(),
                face["box"].as_array().unwrap(),
            );
            for (x, y) in a.iter().zip(b) {
                assert!(
                    (x.as_f64().unwrap() - y.as_f64().unwrap()).abs() < 1e-3,
                    "{}: --face {i} stored {a:?}, detect lists {b:?}",
                    p.display()
                );
            }
        }
        // Past the faces: an error that says how many there are, and a hint.
        let out = gallery_run(&g, &[&o("enroll"), &o("x"), &o("--face"), &o("9"), s(p)]);
        assert_eq!(out.status.code(), Some(1));
        let err = stderr(&out);
        assert!(err.contains("face 9") && err.contains("hint:"), "{err}");
    }
    assert!(several >= 1, "no photo with several faces among {photos:?}");
}

/// Whether a face is known is the identification's type, not its name: a subject may be
/// called "unknown" and is then reported as known (issue 41).
#[test]
fn r41_a_subject_called_unknown_is_known() {
    let dir = tempfile::tempdir().unwrap();
    let g = dir.path().join("g.db");
    let o = |x: &str| std::ffi::OsString::from(x);
    let out = gallery_run(
        &g,
        &[
            &o("enroll"),
            &o("unknown"),
            s(&photo("jerry_seinfeld_1.png")),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let ids = identify_json(
        &g,
        &[&photo("jerry_seinfeld_2.png"), &photo("mindy_kaling_2.png")],
    );
    assert_eq!(
        (&ids[0]["identity"], &ids[0]["known"]),
        (&"unknown".into(), &true.into())
    );
    assert_eq!(
        (&ids[1]["identity"], &ids[1]["known"]),
        (&"unknown".into(), &false.into())
    );
    // A faceless photo: the library's reason, then the CLI's own hint.
    let blank = dir.path().join("blank.png");
    image::RgbImage::from_pixel(80, 80, image::Rgb([128, 128, 128]))
        .save(&blank)
        .unwrap();
    let out = gallery_run(&g, &[&o("enroll"), &o("ada"), s(&blank)]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("blank.png: no face found")
            && err.contains("hint: ")
            && err.contains("facenet detect"),
        "{err}"
    );
}

/// Every face carries its quality (`detect --json`, `identify --json`); enrolment refuses a
/// blurred face, saying why and what to do, and takes it with `--min-quality 0`.
#[test]
fn enrolment_is_gated_by_quality() {
    let dir = tempfile::tempdir().unwrap();
    let g = dir.path().join("g.db");
    let sharp = photo("madonna_1.png");
    let blurred = dir.path().join("blurred.png");
    image::imageops::blur(&image::open(&sharp).unwrap().to_rgb8(), 2.5)
        .save(&blurred)
        .unwrap();
    let out = run(&[
        s(Path::new("detect")),
        s(Path::new("--json")),
        s(&sharp),
        s(&blurred),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let lines = json_lines(&out.stdout);
    let q = |i: usize| lines[i]["faces"][0]["quality"].clone();
    assert!(q(0)["score"].as_f64().unwrap() >= 0.3, "{}", q(0));
    assert!(q(1)["sharpness"].as_f64().unwrap() < q(0)["sharpness"].as_f64().unwrap());
    let o = |v: &str| std::ffi::OsString::from(v);
    let out = gallery_run(&g, &[&o("enroll"), &o("madonna"), s(&blurred)]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("blurred.png")
            && err.contains("quality")
            && err.contains("blurred")
            && err.contains("--min-quality 0"),
        "{err}"
    );
    // Nothing was stored by the refused call; the override takes the face.
    let out = gallery_run(
        &g,
        &[
            &o("enroll"),
            &o("madonna"),
            &o("--min-quality"),
            &o("0"),
            s(&blurred),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let out = gallery_run(
        &g,
        &[
            &o("enroll"),
            &o("madonna"),
            &o("--min-quality"),
            &o("1.5"),
            s(&sharp),
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("0 to 1"), "{}", stderr(&out));
    let ids = identify_json(&g, &[&sharp]);
    assert!(
        ids[0]["quality"]["score"].as_f64().unwrap() >= 0.3,
        "{}",
        ids[0]
    );
}

/// `evaluate --open-set` on 80 LFW people: the table, the enrolment gate's effect, and the
/// calibration of derived thresholds (achieved beside target FIR per gallery size) in print,
/// JSON and a plot.
#[test]
fn evaluate_open_set_reports_calibration() {
    let lfw = shared().join("data/lfw");
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("people");
    std::fs::create_dir_all(&images).unwrap();
    let mut people: Vec<_> = std::fs::read_dir(&lfw)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    people.sort();
    for p in people.iter().take(80) {
        std::os::unix::fs::symlink(p, images.join(p.file_name().unwrap())).unwrap();
    }
    let out_dir = dir.path().join("report");
    let out = bin()
        .args(["evaluate", "--open-set", "--min-quality", "0.3", "--images"])
        .arg(&images)
        .arg("--cache")
        .arg(dir.path().join("cache"))
        .arg("--out")
        .arg(&out_dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("(derived)") && text.contains("calibration: a table from half"),
        "{text}"
    );
    // The enrolment gate, measured on the same probes with and without it.
    assert!(
        text.contains("enrolment gate at quality 0.3") && text.contains("without the gate"),
        "{text}"
    );
    let cal: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out_dir.join("calibration.json")).unwrap()).unwrap();
    // The half table and the shipped one, for the distance and for the cohort score; 80
    // people allow galleries of 10 and 30 (half: 10).
    assert_eq!(cal.as_array().unwrap().len(), 4, "{cal}");
    assert!(
        text.contains("(cohort score, derived)")
            && cal[3]["what"].as_str().unwrap().contains("cohort score"),
        "{text}"
    );
    // The held-out tables: ten random splits of the 80 people, each way, pooled; each cell's
    // range over the 20 tables holds the pooled ratio.
    assert!(
        cal[0]["what"]
            .as_str()
            .unwrap()
            .contains("10 random splits"),
        "{cal}"
    );
    for p in cal[0]["points"].as_array().unwrap() {
        let ratio = p["achieved"].as_f64().unwrap() / p["target"].as_f64().unwrap();
        let (lo, hi) = (
            p["range"][0].as_f64().unwrap(),
            p["range"][1].as_f64().unwrap(),
        );
        assert!(lo <= ratio + 1e-9 && ratio <= hi + 1e-9, "{p}");
    }
    assert!(cal[1]["points"][0]["range"].is_null(), "{cal}");
    let shipped = cal[1]["points"].as_array().unwrap();
    assert_eq!(shipped.len(), 6, "{cal}");
    for p in shipped {
        let a = p["achieved"].as_f64().unwrap();
        assert!(
            (0.0..=1.0).contains(&a) && p["searches"].as_u64().unwrap() > 0,
            "{p}"
        );
    }
    // Per gallery size, a laxer target gets a laxer threshold; a larger gallery a stricter one.
    let th = |i: usize| shipped[i]["threshold"].as_f64().unwrap();
    assert!(th(0) > th(1) && th(1) > th(2), "{cal}");
    assert!(th(3) < th(0) && th(4) < th(1), "{cal}");
    // The cohort score's thresholds: laxer for a laxer target too, but a larger gallery's
    // are laxer (its entries' cohorts are nearer), and all lie below zero.
    let cohort = cal[3]["points"].as_array().unwrap();
    let tc = |i: usize| cohort[i]["threshold"].as_f64().unwrap();
    assert!(tc(0) > tc(1) && tc(1) > tc(2) && tc(0) < 0.0, "{cal}");
    assert!(tc(3) > tc(0) && tc(4) > tc(1), "{cal}");
    for f in ["calibration.png", "open_set.png", "open_set.json"] {
        assert!(
            std::fs::metadata(out_dir.join(f)).unwrap().len() > 1000,
            "{f}"
        );
    }
}

/// A small collection: the first `per` LFW photos of each of `people` in folders of their
/// names, plus one file that is not an image.
fn photo_collection(root: &Path, people: &[&str], per: usize) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for p in people {
        let dir = root.join(p);
        std::fs::create_dir_all(&dir).unwrap();
        let mut src: Vec<PathBuf> = std::fs::read_dir(shared().join("data/lfw").join(p))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        src.sort();
        for f in src.into_iter().take(per) {
            let to = dir.join(f.file_name().unwrap());
            std::fs::copy(&f, &to).unwrap();
            out.push(to);
        }
    }
    std::fs::write(root.join("broken.jpg"), b"not an image").unwrap();
    out
}

/// `facenet library SUB... --gallery G`, which must succeed; its stdout.
fn library(g: &Path, args: &[&str]) -> String {
    let out = bin()
        .arg("library")
        .args(args)
        .arg("--gallery")
        .arg(g)
        .output()
        .unwrap();
    assert!(out.status.success(), "library {args:?}: {}", stderr(&out));
    String::from_utf8(out.stdout).unwrap()
}

fn library_json(g: &Path, args: &[&str]) -> serde_json::Value {
    let mut a = args.to_vec();
    a.push("--json");
    serde_json::from_str(&library(g, &a)).unwrap()
}

/// The folder (true person) of each face of a library person.
fn folders_of(g: &Path, person: &str) -> Vec<String> {
    library_json(g, &["faces", person])
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            Path::new(f["path"].as_str().unwrap())
                .parent()
                .unwrap()
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect()
}

/// Index, rerun, move and delete photos, name a person (then `identify` knows them), find
/// photos by person and by face, correct the grouping (and a recluster keeps the
/// correction), merge, draw a contact sheet, forget.
#[test]
fn library_indexes_groups_names_and_finds() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("photos");
    let g = dir.path().join("g.db");
    let people = [
        "Colin_Powell",
        "George_W_Bush",
        "Gerhard_Schroeder",
        "Tony_Blair",
    ];
    // A folder without photos is no error, and says so.
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(empty.join("sub")).unwrap();
    std::fs::write(empty.join("sub/notes.txt"), "no photos here").unwrap();
    let out = bin()
        .args(["library", "add"])
        .arg(&empty)
        .arg("--gallery")
        .arg(&g)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("note: no photos in {}", empty.display())),
        "{}",
        stderr(&out)
    );
    let photos = photo_collection(&root, &people, 8);
    let add = library_json(&g, &["add", root.to_str().unwrap()]);
    assert_eq!(add["photos"], 33, "{add}");
    assert!(add["faces"].as_u64().unwrap() >= 32, "{add}");
    let bad = add["unreadable"].as_array().unwrap();
    assert_eq!(bad.len(), 1, "{add}");
    assert!(bad[0][0].as_str().unwrap().ends_with("broken.jpg"), "{add}");
    // People: each is one true person (precision first), and someone has several faces.
    let list = library_json(&g, &["people"]);
    let list = list.as_array().unwrap();
    assert!(list.len() >= 4, "{list:?}");
    for p in list {
        let f = folders_of(&g, &p["id"].to_string());
        assert!(
            f.iter().all(|x| *x == f[0]),
            "person {} mixes {f:?}",
            p["id"]
        );
    }
    let top = list[0]["id"].to_string();
    let top_faces = list[0]["faces"].as_u64().unwrap();
    assert!(top_faces >= 4, "{list:?}");
    let who = folders_of(&g, &top)[0].clone();

    // Scored against the folders' names: the stored grouping is the one-run replay's (the
    // merge threshold from the impostor table, stricter than founding), and mixes no one.
    let scores = dir.path().join("scores.json");
    library(
        &g,
        &[
            "evaluate",
            "--batches",
            "3",
            "--json",
            scores.to_str().unwrap(),
        ],
    );
    let s: serde_json::Value = serde_json::from_slice(&std::fs::read(&scores).unwrap()).unwrap();
    let merge = s["rule"]["merge"].as_f64().unwrap();
    assert!(
        merge > 0.5 && merge < s["rule"]["found"].as_f64().unwrap(),
        "{s}"
    );
    let runs = s["runs"].as_array().unwrap();
    assert_eq!(runs[0]["run"], "library (as stored)", "{s}");
    assert_eq!(runs[0]["score"], runs[1]["score"], "{s}");
    assert_eq!(runs[1]["score"]["merged"], 0, "{s}");
    let out = bin()
        .args(["library", "evaluate", "--merge", "3", "--gallery"])
        .arg(&g)
        .output()
        .unwrap();
    assert!(!out.status.success(), "--merge 3 was taken");
    assert!(stderr(&out).contains("--merge"), "{}", stderr(&out));

    // A rerun skips everything; a moved photo keeps its face, a deleted one leaves.
    let again = library_json(&g, &["add", root.to_str().unwrap()]);
    assert_eq!(
        (again["photos"].as_u64(), again["unchanged"].as_u64()),
        (Some(0), Some(33))
    );
    let other = photos
        .iter()
        .find(|p| !p.starts_with(root.join(&who)))
        .unwrap();
    std::fs::rename(other, root.join("moved.jpg")).unwrap();
    let gone = photos
        .iter()
        .rfind(|p| !p.starts_with(root.join(&who)))
        .unwrap();
    std::fs::remove_file(gone).unwrap();
    // Cached thumbnails (the service writes them): one of a face no longer stored, one of a
    // stored face. A run that removes photos deletes the first and keeps the second.
    let thumbs = PathBuf::from(format!("{}.thumbs", g.display())).join("library_");
    std::fs::create_dir_all(&thumbs).unwrap();
    for name in ["999999-1-0-0-112.jpg", "1-1-0-0-112.jpg"] {
        std::fs::write(thumbs.join(name), b"jpeg").unwrap();
    }
    let again = library_json(&g, &["add", root.to_str().unwrap()]);
    assert_eq!(
        (
            again["photos"].as_u64(),
            again["moved"].as_u64(),
            again["removed"].as_u64()
        ),
        (Some(0), Some(1), Some(1)),
        "{again}"
    );
    assert!(!thumbs.join("999999-1-0-0-112.jpg").exists());
    assert!(thumbs.join("1-1-0-0-112.jpg").exists());

    // Named, the person is a gallery identity: a photo outside the library is identified.
    let out = library(&g, &["name", &top, "Somebody"]);
    assert!(out.contains("Somebody"), "{out}");
    let mut held_out: Vec<PathBuf> = std::fs::read_dir(shared().join("data/lfw").join(&who))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    held_out.sort();
    let probe = held_out[8].clone();
    let id = identify_json(&g, &[&probe]);
    assert_eq!(id[0]["identity"], "Somebody", "{id:?}");
    let found = library_json(&g, &["find", "--person", "Somebody"]);
    assert_eq!(found.as_array().unwrap().len() as u64, top_faces, "{found}");
    let hits = library_json(&g, &["find", "--face", probe.to_str().unwrap()]);
    let first = hits[0]["path"].as_str().unwrap();
    assert!(first.contains(&who), "{hits}");
    assert!(hits[0]["distance"].as_f64().unwrap() < 1.0, "{hits}");
    assert_eq!(hits[0]["person"], "Somebody", "{hits}");

    // "Not this person": the face leaves, and stays out through a recluster.
    let faces = library_json(&g, &["faces", "Somebody"]);
    let face = faces[0]["id"].as_i64().unwrap();
    library(&g, &["move", &face.to_string(), "--nobody"]);
    library(&g, &["recluster"]);
    let ids: Vec<i64> = library_json(&g, &["faces", "Somebody"])
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids.len() as u64, top_faces - 1);
    assert!(!ids.contains(&face));
    // A face moved to a person of its own, then merged back.
    let moved = ids[0];
    let out = library(&g, &["move", &moved.to_string(), "--to", "new"]);
    let new_id = out
        .split(" -> ")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .to_string();
    assert_eq!(
        library_json(&g, &["faces", "Somebody"])
            .as_array()
            .unwrap()
            .len() as u64,
        top_faces - 2
    );
    library(&g, &["merge", "Somebody", &new_id]);
    assert_eq!(
        library_json(&g, &["faces", "Somebody"])
            .as_array()
            .unwrap()
            .len() as u64,
        top_faces - 1
    );

    // A contact sheet of the person's faces.
    let sheet = dir.path().join("sheet.png");
    library(&g, &["sheet", "Somebody", "-o", sheet.to_str().unwrap()]);
    let img = image::open(&sheet).unwrap();
    assert_eq!(img.width(), 800);

    // Errors name what is wrong.
    let out = bin()
        .args(["library", "name", "999", "X", "--gallery"])
        .arg(&g)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("no person `999`"), "{}", stderr(&out));

    // Forgotten: gone from the library and from the gallery.
    let o = std::ffi::OsStr::new;
    let listed =
        |g: &Path| String::from_utf8(gallery_run(g, &[o("gallery"), o("list")]).stdout).unwrap();
    assert!(listed(&g).contains("Somebody"));
    library(&g, &["forget", "Somebody"]);
    let list = library_json(&g, &["people"]);
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .all(|p| p["name"] != "Somebody")
    );
    assert!(!listed(&g).contains("Somebody"), "{}", listed(&g));
}

/// `identify` thresholds the cohort score by default from six identities on (the distance
/// below that, with `--score distance`, and for an explicit threshold), says so, and names
/// enrolled people and not a stranger.
#[test]
fn identify_uses_the_cohort_score_from_six_people() {
    let dir = tempfile::tempdir().unwrap();
    let g = dir.path().join("g.db");
    let lfw = shared().join("data/lfw");
    let pic = |p: &str, n: u32| lfw.join(p).join(format!("{p}_{n:04}.jpg"));
    let people = [
        "George_W_Bush",
        "Colin_Powell",
        "Tony_Blair",
        "Donald_Rumsfeld",
        "Gerhard_Schroeder",
        "Ariel_Sharon",
    ];
    let probes = [
        pic("George_W_Bush", 2),
        pic("Colin_Powell", 2),
        pic("Aaron_Eckhart", 1),
    ];
    let probe_refs: Vec<&Path> = probes.iter().map(PathBuf::as_path).collect();
    for (k, p) in people.iter().enumerate() {
        if k == 5 {
            // Five identities: the plain distance, no cohort score.
            let ids = identify_json(&g, &probe_refs);
            assert!(ids[0]["threshold"].as_f64().unwrap() > 0.0, "{:?}", ids[0]);
            assert!(ids[0].get("cohort_score").is_none(), "{:?}", ids[0]);
        }
        let out = bin()
            .args(["enroll", p])
            .arg(pic(p, 1))
            .arg("--gallery")
            .arg(&g)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let ids = identify_json(&g, &probe_refs);
    let face0 = |path: &Path| {
        ids.iter()
            .find(|v| v["path"] == path.display().to_string() && v["face"] == 0)
            .unwrap_or_else(|| panic!("no face 0 of {}", path.display()))
    };
    for (p, want) in probes
        .iter()
        .zip(["George_W_Bush", "Colin_Powell", "unknown"])
    {
        let v = face0(p);
        assert_eq!(v["identity"], want, "{v:?}");
        let (c, t) = (
            v["cohort_score"].as_f64().unwrap(),
            v["threshold"].as_f64().unwrap(),
        );
        // A cohort score is a distance less a mean distance: below the distance, and the
        // derived threshold lies below zero.
        assert!(c < v["distance"].as_f64().unwrap() && t < 0.0, "{v:?}");
        assert_eq!(c < t, want != "unknown", "{v:?}");
        assert_eq!(v["threshold_source"], "target-fir");
    }
    let text = |args: &[&str]| {
        let out = bin()
            .arg("identify")
            .args(args)
            .arg(&probes[0])
            .arg("--gallery")
            .arg(&g)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let cohort = text(&[]);
    assert!(
        cohort.contains("cohort score") && cohort.contains("6 identities"),
        "{cohort}"
    );
    let plain = text(&["--score", "distance"]);
    assert!(
        !plain.contains("cohort") && plain.contains("George_W_Bush"),
        "{plain}"
    );
    let explicit = text(&["--threshold", "0.9"]);
    assert!(
        explicit.contains("threshold 0.900 (given)") && !explicit.contains("cohort score"),
        "{explicit}"
    );
    let out = bin()
        .args(["identify", "--score", "nearest"])
        .arg(&probes[0])
        .arg("--gallery")
        .arg(&g)
        .output()
        .unwrap();
    assert!(
        !out.status.success() && stderr(&out).contains("--score"),
        "{}",
        stderr(&out)
    );
}
