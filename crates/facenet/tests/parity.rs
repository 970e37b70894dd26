//! Golden tests: our network against the original Keras FaceNet model.
//!
//! The goldens are `shared/reference/{embeddings,intermediates}.json`, produced by TensorFlow
//! 2.15 running `facenet_keras.h5` (float32, batch 1) on the 10 aligned crops in
//! `shared/reference/crops/` (see `shared/reference/README.md`). They need the real weights:
//! `cargo run --release -p facenet-cli -- fetch`.
//!
//! Tolerances: the reference's own float32 noise is ~2e-6 on raw embeddings (values up to
//! 3.6) and ~1.5e-7 on L2 embeddings, so we require 1e-4 on raw and 1e-5 on L2 embeddings.

mod common;

use burn::tensor::Tensor;
use common::{floats, max_abs_diff, reference_json, shared, weights};
use facenet::fast::{Bf16Kernel, F32Kernel};
use facenet::{Device, Distance, Embedder, Engine, Standardization};

const L2_TOL: f32 = 1e-5;
const RAW_TOL: f32 = 1e-4;

fn crops() -> (Vec<String>, Vec<image::RgbImage>) {
    let refs = reference_json("embeddings.json");
    let names: Vec<String> = refs["crops"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["crop_file"].as_str().unwrap().to_string())
        .collect();
    let imgs = names
        .iter()
        .map(|n| facenet::image::load_rgb(&shared().join("reference").join(n)).unwrap())
        .collect();
    (names, imgs)
}

fn embedder(s: Standardization, batch: usize) -> Embedder {
    Embedder::open(&weights(), &Device::flex())
        .unwrap()
        .with_standardization(s)
        .with_batch_size(batch)
}

/// Both engines (the fast CPU path and the burn model), at batch 1 as the reference ran and
/// at batch 10 (the fast path then runs image groups on separate threads); the fast path on
/// every f32 kernel family this CPU runs (the `gemm` crate everywhere, the AVX2 kernel on
/// x86-64 with AVX2 and FMA).
fn check_field(s: Standardization, field: &str, raw: bool, tol: f32) {
    let refs = reference_json("embeddings.json");
    let (names, imgs) = crops();
    let mut runs = vec![(Engine::Burn, 1, None)];
    for kernel in F32Kernel::ALL {
        if !kernel.available() {
            eprintln!(
                "{field}: f32 kernel {} not on this CPU (needs {}): not checked here",
                kernel.name(),
                kernel.requirement()
            );
            continue;
        }
        runs.extend([
            (Engine::Auto, 1, Some(kernel)),
            (Engine::Auto, 10, Some(kernel)),
        ]);
    }
    for (engine, batch, kernel) in runs {
        let mut e = embedder(s, batch).with_engine(engine).unwrap();
        if let Some(k) = kernel {
            e = e.with_f32_kernel(k).unwrap();
            assert_eq!(e.kernel(), k.name());
        }
        let embs = e.embed(&imgs).unwrap();
        let mut worst = 0f32;
        for (i, (name, e)) in names.iter().zip(&embs).enumerate() {
            let want = floats(&refs["crops"][i][field]);
            let got = if raw { &e.raw } else { &e.normalized };
            let d = max_abs_diff(got, &want);
            assert!(
                d < tol,
                "{name} {field} ({engine:?} {kernel:?}, batch {batch}): max abs diff {d:e} >= {tol:e}"
            );
            worst = worst.max(d);
        }
        eprintln!(
            "{field} ({engine:?} {kernel:?}, batch {batch}): max abs diff over {} crops = {worst:e}",
            names.len()
        );
    }
}

#[test]
fn l2_embeddings_match_keras_prewhiten() {
    check_field(Standardization::Prewhiten, "l2_prewhiten", false, L2_TOL);
}

#[test]
fn l2_embeddings_match_keras_div255() {
    check_field(Standardization::Unit, "l2_div255", false, L2_TOL);
}

#[test]
fn raw_embeddings_match_keras() {
    check_field(Standardization::Prewhiten, "raw_prewhiten", true, RAW_TOL);
    check_field(Standardization::Unit, "raw_div255", true, RAW_TOL);
}

#[test]
fn distance_matrix_matches_keras() {
    let refs = reference_json("embeddings.json");
    let (_, imgs) = crops();
    let embs = embedder(Standardization::Prewhiten, 10)
        .embed(&imgs)
        .unwrap();
    let matrix = refs["distance_matrix_l2_prewhiten"]["matrix"]
        .as_array()
        .unwrap();
    for (i, row) in matrix.iter().enumerate() {
        let want = floats(row);
        for (j, w) in want.iter().enumerate() {
            let d = embs[i].distance(&embs[j], Distance::L2);
            assert!((d - w).abs() < 1e-4, "d({i},{j}) = {d}, reference {w}");
        }
    }
}

#[test]
fn batch_equals_single() {
    let (_, imgs) = crops();
    let single = embedder(Standardization::Prewhiten, 1)
        .embed(&imgs)
        .unwrap();
    let batched = embedder(Standardization::Prewhiten, 10)
        .embed(&imgs)
        .unwrap();
    for (a, b) in single.iter().zip(&batched) {
        let d = max_abs_diff(&a.raw, &b.raw);
        assert!(d < 1e-4, "batch vs single raw diff {d:e}");
    }
}

#[test]
fn prewhiten_matches_reference_pixels() {
    let inter = reference_json("intermediates.json");
    let (names, imgs) = crops();
    for (stats, (name, img)) in inter["prewhiten_stats_all_crops"]
        .as_array()
        .unwrap()
        .iter()
        .zip(names.iter().zip(&imgs))
    {
        assert!(name.ends_with(stats["crop_file"].as_str().unwrap()));
        let v = Standardization::Prewhiten.apply(img);
        let plane = (img.width() * img.height()) as usize;
        // first 6 values in HWC order: pixel (0,0) RGB then pixel (0,1) RGB.
        let got = [
            v[0],
            v[plane],
            v[2 * plane],
            v[1],
            v[plane + 1],
            v[2 * plane + 1],
        ];
        let want = floats(&stats["prewhitened_first6_rgb_at_0_0_and_0_1"]);
        assert!(
            max_abs_diff(&got, &want) < 1e-6,
            "{name}: {got:?} vs {want:?}"
        );
    }
}

/// Summaries of internal layers on crop 0, to localize a mismatch.
#[test]
fn intermediate_layers_match_keras() {
    let inter = reference_json("intermediates.json");
    let (_, imgs) = crops();
    let e = embedder(Standardization::Prewhiten, 1);
    let x = e.input_tensor(&imgs[..1]).unwrap();
    let m = e.model();
    let mut outs: Vec<(&str, Tensor<4>)> = Vec::new();
    outs.push(("Conv2d_1a_3x3", m.conv2d_1a.conv.forward(x.clone())));
    outs.push(("Conv2d_1a_3x3_Activation", m.conv2d_1a.forward(x.clone())));
    let h = m.stem(x);
    outs.push(("Conv2d_4b_3x3_Activation", h.clone()));
    let h = m.repeat_1.iter().fold(h, |h, b| b.forward(h));
    outs.push(("Block35_5_Activation", h.clone()));
    let h = m.mixed_6a.forward(h);
    outs.push(("Mixed_6a", h.clone()));
    let h = m.repeat_2.iter().fold(h, |h, b| b.forward(h));
    outs.push(("Block17_10_Activation", h.clone()));
    let h = m.mixed_7a.forward(h);
    outs.push(("Mixed_7a", h.clone()));
    let h = m.repeat_3.iter().fold(h, |h, b| b.forward(h));
    let h = m.block8.forward(h);
    outs.push(("Block8_6_ScaleSum", h));
    for (name, t) in outs {
        let layer = inter["layers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["layer"] == name)
            .unwrap_or_else(|| panic!("{name} not in intermediates.json"));
        let [_, c, hh, ww] = t.dims();
        let shape: Vec<usize> = layer["shape_hwc"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        assert_eq!(shape, vec![hh, ww, c], "{name}: shape");
        let v = t.into_data().try_into_vec::<f32>().unwrap();
        let n = v.len() as f64;
        let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n;
        let want_mean = layer["mean"].as_f64().unwrap();
        assert!(
            (mean - want_mean).abs() < 1e-4,
            "{name}: mean {mean} vs {want_mean}"
        );
        // NHWC out[0, 0, 0:8] = channels 0..8 at (h=0, w=0); ours is NCHW.
        let plane = hh * ww;
        let got: Vec<f32> = (0..8).map(|ch| v[ch * plane]).collect();
        let want = floats(&layer["first8_at_origin"]);
        let d = max_abs_diff(&got, &want);
        assert!(d < 1e-3, "{name}: first values {got:?} vs {want:?}");
    }
}

/// The opt-in bf16 mode on AMX against the f32 goldens: every crop's L2 embedding within
/// cosine distance 1e-3 of Keras's (bf16 keeps 8 mantissa bits; measured 1.0e-4), and every
/// pairwise distance within 0.015 of the reference matrix (measured 3.3e-3), at batch 1 and 10.
#[test]
#[ignore = "needs Intel AMX (AMX-TILE, AMX-BF16): `cargo test --release -- --ignored amx` where the CPU has it"]
fn bf16_amx_embeddings_stay_close_to_keras() {
    bf16_embeddings_stay_close_to_keras(Bf16Kernel::Amx);
}

/// The same on the AVX-512 BF16 kernel (`vdpbf16ps`), for CPUs without AMX.
#[test]
#[ignore = "needs AVX-512 BF16: `cargo test --release -- --ignored avx512_bf16` where the CPU has it"]
fn bf16_avx512_bf16_embeddings_stay_close_to_keras() {
    bf16_embeddings_stay_close_to_keras(Bf16Kernel::Avx512);
}

fn bf16_embeddings_stay_close_to_keras(kernel: Bf16Kernel) {
    assert!(
        kernel.available(),
        "this machine lacks {}: run this test where it has it",
        kernel.requirement()
    );
    let refs = reference_json("embeddings.json");
    let (names, imgs) = crops();
    for batch in [1, 10] {
        let e = embedder(Standardization::Prewhiten, batch)
            .with_bf16_kernel(kernel)
            .unwrap();
        assert_eq!(e.precision(), facenet::Precision::Bf16);
        assert_eq!(e.bf16_kernel(), Some(kernel));
        let embs = e.embed(&imgs).unwrap();
        let (worst, worst_d) = close_to_keras(&refs, &names, &embs, (1e-3, 0.015), batch);
        eprintln!(
            "bf16 ({}) batch {batch}: max cosine distance to Keras {worst:.2e}, max |pair \
             distance difference| {worst_d:.2e}",
            kernel.name()
        );
    }
}

/// The bf16 mode is offered exactly where the CPU runs it: where neither AMX nor AVX-512 BF16
/// is there, asking for it is an error that names both; where one is, the embedder switches to
/// the fastest (AMX first).
#[test]
fn bf16_mode_follows_the_cpu() {
    let e = embedder(Standardization::Prewhiten, 1).with_precision(facenet::Precision::Bf16);
    match (Bf16Kernel::best(), e) {
        (Some(best), Ok(e)) => {
            assert_eq!(e.precision(), facenet::Precision::Bf16);
            assert_eq!(e.bf16_kernel(), Some(best));
            assert!(best.available());
        }
        (None, Err(err)) => {
            let msg = err.to_string();
            assert!(
                msg.contains("AMX") && msg.contains("AVX-512 BF16"),
                "unexpected error: {msg}"
            );
        }
        (Some(_), Err(err)) => panic!("a bf16 kernel is available but bf16 failed: {err}"),
        (None, Ok(_)) => panic!("bf16 accepted on a CPU without a bf16 kernel"),
    }
    // Asking for a family the CPU lacks names what it needs.
    for k in Bf16Kernel::ALL.into_iter().filter(|k| !k.available()) {
        let Err(err) = embedder(Standardization::Prewhiten, 1).with_bf16_kernel(k) else {
            panic!("{} accepted on a CPU without it", k.name());
        };
        assert!(err.to_string().contains(k.requirement()), "{err}");
    }
}

/// A calibration on 48 aligned LFW DevTrain faces (detected by our MTCNN; none of them a
/// reference crop).
fn lfw_int8_calibration() -> facenet::quantize::Int8Calibration {
    use facenet::eval::protocol::ProtocolConfig;
    let mtcnn = facenet::paths::cache_dir().join("mtcnn.safetensors");
    assert!(
        mtcnn.is_file(),
        "MTCNN weights not found at {}: run `facenet fetch` first",
        mtcnn.display()
    );
    let pool = facenet::pipeline::DetectorPool::open(&mtcnn, &Device::flex(), 2).unwrap();
    let lfw = shared().join("data");
    let pairs = facenet::eval::Pairs::read(&lfw.join("lfw-protocol/pairsDevTrain.txt")).unwrap();
    let cfg = ProtocolConfig::lfw(lfw.join("lfw"));
    let mut e = embedder(Standardization::Prewhiten, 16);
    facenet::eval::calibrate::calibrate_on_pairs(&mut e, &pairs, None, &cfg, Some(&pool), 48, &())
        .unwrap()
}

/// int8 (8-bit activations scaled by an LFW DevTrain calibration, 7-bit per-channel weights,
/// integer sums) keeps the reference crops' embeddings within cosine distance 2e-3 of Keras's
/// and their pairwise distances within 0.02, at batch 1 and 10; every convolution but the
/// first (signed image input), the second (kept f32) and the bottleneck runs int8, where the
/// family replaces Winograd (VNNI) or Winograd does not pay (AVX2). Measured on AVX-512 VNNI:
/// 8.1e-4 and 0.015; on the AVX2 family, with Winograd's convolutions in f32: 4.6e-4 and 0.008.
#[test]
fn int8_embeddings_stay_close_to_keras() {
    let cal = lfw_int8_calibration();
    assert_eq!(cal.images, 48);
    assert!(
        cal.ranges[0].min < 0.0,
        "the first convolution reads the signed image"
    );
    let refs = reference_json("embeddings.json");
    let (names, imgs) = crops();
    for batch in [1, 10] {
        let mut e = embedder(Standardization::Prewhiten, batch)
            .with_int8(&cal)
            .unwrap();
        assert_eq!(e.precision(), facenet::Precision::Int8);
        let best = facenet::fast::Int8Kernel::resolve(None).unwrap();
        assert_eq!(e.kernel(), best.name());
        // Every convolution whose input stayed non-negative, which leaves out the first and
        // the bottleneck (pooled features of a block without ReLU), but the second (which
        // stays f32).
        let n = e.int8_convolutions();
        let eligible = cal.ranges.iter().filter(|r| r.min >= 0.0 && r.max > 0.0);
        assert_eq!(n, eligible.count() - 1);
        assert_eq!(
            n,
            cal.ranges.len() - 3,
            "{n} of {} run int8",
            cal.ranges.len()
        );
        let embs = e.embed(&imgs).unwrap();
        let (worst, worst_d) = close_to_keras(&refs, &names, &embs, (2e-3, 0.02), batch);
        eprintln!(
            "int8 batch {batch}: {n} int8 convolutions, max cosine distance to Keras \
             {worst:.2e}, max |pair distance difference| {worst_d:.2e}"
        );
    }
}

/// int8 without a calibration, or with one of other weights, is refused with an error that
/// names the command that makes one; `open_with` finds the calibration beside the weights.
#[test]
fn int8_needs_a_calibration_of_these_weights() {
    let err = embedder(Standardization::Prewhiten, 1)
        .with_precision(facenet::Precision::Int8)
        .unwrap_err();
    assert!(err.to_string().contains("facenet quantize"), "{err}");
    let mut cal = facenet::quantize::Int8Calibration {
        format: facenet::quantize::FORMAT.into(),
        fingerprint: "not these weights".into(),
        images: 1,
        source: "test".into(),
        ranges: Vec::new(),
    };
    let err = embedder(Standardization::Prewhiten, 1)
        .with_int8(&cal)
        .unwrap_err();
    assert!(err.to_string().contains("facenet quantize"), "{err}");
    // The right weights but ranges of another network: refused, not misapplied.
    let e = embedder(Standardization::Prewhiten, 1);
    cal.fingerprint = e.metadata().fingerprint.clone();
    let err = e.with_int8(&cal).unwrap_err();
    assert!(err.to_string().contains("activation ranges"), "{err}");
    // open_with reads `<weights stem>.int8.json` beside a weights file.
    let dir = std::env::temp_dir().join(format!("facenet-int8-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let w = dir.join("w.safetensors");
    std::os::unix::fs::symlink(weights(), &w).unwrap();
    let err = Embedder::open_with(&w, &Device::flex(), facenet::Precision::Int8).unwrap_err();
    assert!(err.to_string().contains("w.int8.json"), "{err}");
    let mut f32 = embedder(Standardization::Prewhiten, 2);
    let (_, imgs) = crops();
    let good = f32.calibrate_int8(&imgs[..2], "two crops").unwrap();
    good.save(&facenet::quantize::Int8Calibration::path_for(&w))
        .unwrap();
    let e = Embedder::open_with(&w, &Device::flex(), facenet::Precision::Int8).unwrap();
    assert_eq!(e.precision(), facenet::Precision::Int8);
    assert_eq!(e.int8_calibration(), Some(good.digest().as_str()));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Asserts that reduced-precision embeddings of the reference crops stay within `limits`
/// (cosine distance to the Keras embedding, difference of every pair's L2 distance from the
/// Keras one) and returns the worst of each.
fn close_to_keras(
    refs: &serde_json::Value,
    names: &[String],
    embs: &[facenet::Embedding],
    (cos_limit, pair_limit): (f32, f32),
    batch: usize,
) -> (f32, f32) {
    let mut worst = 0f32;
    for (i, (name, got)) in names.iter().zip(embs).enumerate() {
        let want = floats(&refs["crops"][i]["l2_prewhiten"]);
        let d = Distance::Cosine.between(&got.normalized, &want);
        assert!(d < cos_limit, "{name} (batch {batch}): cosine distance {d}");
        worst = worst.max(d);
    }
    let matrix = refs["distance_matrix_l2_prewhiten"]["matrix"]
        .as_array()
        .unwrap();
    let mut worst_d = 0f32;
    for (i, row) in matrix.iter().enumerate() {
        for (j, w) in floats(row).iter().enumerate() {
            let d = embs[i].distance(&embs[j], Distance::L2);
            assert!(
                (d - w).abs() < pair_limit,
                "d({i},{j}) = {d}, reference {w} (batch {batch})"
            );
            worst_d = worst_d.max((d - w).abs());
        }
    }
    (worst, worst_d)
}
