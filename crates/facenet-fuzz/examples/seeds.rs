//! Writes the seed inputs of the fuzz targets (`fuzz/seeds/<target>/`): small valid files of
//! every kind each parser reads, from which libFuzzer mutates. The `keras_h5` seeds come from
//! `fuzz/make_h5_seeds.py` (h5py). Run: `cargo run --release -p facenet-fuzz --example seeds`.

use std::io::Cursor;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use facenet_gallery::{GalleryStore, ModelInfo, NewFace, sqlite::SqliteGallery};
use image::{ImageFormat, RgbImage};

fn put(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join(name), bytes).unwrap();
    println!("{} ({} bytes)", dir.join(name).display(), bytes.len());
}

fn encode(img: &RgbImage, format: ImageFormat) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, format).unwrap();
    out.into_inner()
}

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/seeds");
    let img = RgbImage::from_fn(24, 16, |x, y| {
        image::Rgb([(x * 10) as u8, (y * 15) as u8, 128])
    });

    let d = root.join("image");
    let png = encode(&img, ImageFormat::Png);
    put(&d, "png", &png);
    put(&d, "jpeg", &encode(&img, ImageFormat::Jpeg));
    put(
        &d,
        "jpeg-exif-rotated",
        &facenet::image::jpeg_with_orientation(&img, 6).unwrap(),
    );
    put(&d, "bmp", &encode(&img, ImageFormat::Bmp));
    put(&d, "gif", &encode(&img, ImageFormat::Gif));
    put(&d, "webp", &encode(&img, ImageFormat::WebP));
    put(&d, "tiff", &encode(&img, ImageFormat::Tiff));
    put(&d, "pnm", &encode(&img, ImageFormat::Pnm));

    // A weights file: facenet's metadata (the small network) and one tensor.
    let d = root.join("weights");
    let meta = facenet::weights::WeightsMetadata::random(facenet::InceptionResnetV1Config::small());
    let data: Vec<u8> = [0.5f32, -1.0, 2.0, 0.0]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let view =
        safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![2, 2], &data).unwrap();
    let bytes = safetensors::serialize(
        [("bottleneck.weight".to_string(), view)],
        Some(meta.to_map().unwrap()),
    )
    .unwrap();
    put(&d, "small-metadata", &bytes);

    let d = root.join("text_files");
    put(
        &d,
        "pairs",
        b"2\t2\nAbel_Pacheco\t1\t4\nAkhmed_Zakayev\t1\t3\nAbdel_Madi_Shabneh\t1\tDean_Barker\t1\n\
          Abdul_Rahman\t1\tPortia_de_Rossi\t1\nAbdullah_Gul\t13\t14\nAbdullah_Gul\t13\t16\n\
          Abdel_Aziz_Al-Hakim\t1\tFranco_Cangele\t1\nAbdul_Rahman\t1\tPortia_de_Rossi\t1\n",
    );
    put(
        &d,
        "schedule",
        b"# epoch: rate\n0: 0.05\n60: 0.005\n80: 0.0005\n",
    );

    // An export of a small gallery: two subjects with faces, one without.
    let d = root.join("gallery_export");
    let store = SqliteGallery::in_memory().unwrap();
    let model = ModelInfo {
        fingerprint: "0123456789abcdef".into(),
        dim: 4,
    };
    let face = |e: [f32; 4], source: &str| NewFace {
        embedding: e.to_vec(),
        source: source.into(),
        bbox: Some([1.0, 2.0, 30.0, 40.0]),
    };
    store
        .enroll(
            "Ann",
            &[
                face([1.0, 0.0, 0.0, 0.0], "ann.jpg"),
                face([0.6, 0.8, 0.0, 0.0], "ann2.jpg"),
            ],
            &model,
        )
        .unwrap();
    store
        .enroll("Bob", &[face([0.0, 0.0, 0.0, 1.0], "bob.png")], &model)
        .unwrap();
    store.create_identity("Cleo").unwrap();
    let export = facenet_gallery::Export::of(&store).unwrap();
    put(&d, "export", &serde_json::to_vec_pretty(&export).unwrap());

    // Service request parts: the first byte picks the part (see `facenet_fuzz::request`).
    let d = root.join("request");
    let b = facenet_fuzz::BOUNDARY;
    let mut multipart = vec![0u8];
    for name in ["a.png", "b.png"] {
        multipart.extend(
            format!("--{b}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\nContent-Type: image/png\r\n\r\n")
                .as_bytes(),
        );
        multipart.extend(&png);
        multipart.extend(b"\r\n");
    }
    multipart.extend(format!("--{b}--\r\n").as_bytes());
    put(&d, "multipart", &multipart);
    let b64 = base64::engine::general_purpose::STANDARD.encode(&png);
    let mut json = vec![1u8];
    json.extend(format!("{{\"images\": [\"{b64}\", \"data:image/png;base64,{b64}\"]}}").as_bytes());
    put(&d, "json-images", &json);
    put(
        &d,
        "page-query",
        b"\x02page=2&per_page=10&subject=Ann%20Lee",
    );
    put(&d, "identify-query", b"\x03top_k=3&threshold=0.7&fir=0.01");
    put(&d, "verify-query", b"\x03threshold=0.7&subject=Ann");
    put(&d, "subject-name", b"\x04{\"name\": \"Ann Lee\"}");
}
