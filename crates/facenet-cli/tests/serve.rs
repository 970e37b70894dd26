//! `facenet serve` as a user meets it: the real binary on a random loopback port, spoken to
//! over HTTP. Every endpoint's success and error paths, the tenant rules for each endpoint,
//! batch enrolment, body and pixel limits, overload, shutdown; the OpenAPI document under a
//! property-based tester and the web page in a real browser (those two need tools that
//! `.ci/run` installs: `cargo test -- --ignored serve_`).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use reqwest::StatusCode;
use reqwest::blocking::{Client, RequestBuilder, Response, multipart};
use serde_json::{Value, json};

mod common;
use common::{crash_trials, jitter};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_facenet"))
}

/// Runs `facenet ARGS` to success; its standard output.
fn facenet(args: &[&std::ffi::OsStr]) -> String {
    let out = bin().args(args).output().unwrap();
    assert!(
        out.status.success(),
        "facenet {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn sample(rel: &str) -> PathBuf {
    let p = facenet::paths::cache_dir()
        .join("5-celebrity-faces-dataset")
        .join(rel);
    assert!(p.exists(), "{}: run `facenet fetch` first", p.display());
    p
}

/// The n-th photo (sorted) of a sample folder.
fn photo(dir: &str, n: usize) -> PathBuf {
    facenet::files::walk_images(&sample(dir)).unwrap()[n].clone()
}

/// A running `facenet serve`, stopped (SIGTERM) when dropped.
struct Server {
    child: Child,
    url: String,
    /// The store: an SQLite file or a PostgreSQL URL.
    db: std::ffi::OsString,
    _dir: tempfile::TempDir,
}

/// LFW's folder of `person` in the shared data.
fn lfw(person: &str) -> PathBuf {
    std::env::var_os("FACENET_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared"))
        .join("data/lfw")
        .join(person)
}

impl Server {
    /// Indexes 8 LFW photos of each of three people into the photo library of `gallery`
    /// (`facenet library add` on the service's file while it runs); the photos' folder.
    fn index_library(&self, gallery: &str) -> tempfile::TempDir {
        let photos = tempfile::tempdir().unwrap();
        for p in ["Colin_Powell", "George_W_Bush", "Tony_Blair"] {
            for f in facenet::files::walk_images(&lfw(p)).unwrap().iter().take(8) {
                std::fs::copy(f, photos.path().join(f.file_name().unwrap())).unwrap();
            }
        }
        let out = bin()
            .args(["library", "add"])
            .arg(photos.path())
            .arg("--gallery")
            .arg(&self.db)
            .args(["--gallery-name", gallery])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        photos
    }

    fn start(extra: &[&str]) -> Self {
        Self::start_on(None, extra)
    }

    /// A server on the store `db` (default: a new SQLite file).
    fn start_on(db: Option<&str>, extra: &[&str]) -> Self {
        Self::start_logged(db, extra, None)
    }

    /// The same, logging at debug level into `log` (else warnings to the test's stderr).
    fn start_logged(db: Option<&str>, extra: &[&str], log: Option<&Path>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let db = db.map_or_else(
            || dir.path().join("gallery.db").into_os_string(),
            Into::into,
        );
        let mut child = bin()
            .args(["serve", "--listen", "127.0.0.1:0", "--gallery"])
            .arg(&db)
            .args(extra)
            .env("FACENET_LOG", if log.is_some() { "debug" } else { "warn" })
            .stdout(Stdio::piped())
            .stderr(log.map_or_else(Stdio::inherit, |l| {
                Stdio::from(std::fs::File::create(l).unwrap())
            }))
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let url = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_string();
        let s = Server {
            child,
            url,
            db,
            _dir: dir,
        };
        // Ready once the networks have run once.
        let start = Instant::now();
        while Client::new()
            .get(s.at("/readyz"))
            .send()
            .map(|r| r.status())
            .ok()
            != Some(StatusCode::OK)
        {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "not ready in 60 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        s
    }

    fn at(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    /// A new key for `gallery`, made by `facenet keys create` on the served store.
    fn key(&self, gallery: &str, role: &str) -> String {
        let text = facenet(&[
            "keys".as_ref(),
            "--store".as_ref(),
            self.db.as_os_str(),
            "create".as_ref(),
            "--gallery".as_ref(),
            gallery.as_ref(),
            "--role".as_ref(),
            role.as_ref(),
        ]);
        text.lines().next().unwrap().to_string()
    }

    /// Enrols photos under `subject` through the API (201 expected); the answer.
    fn enrol(&self, key: &str, subject: &str, photos: &[&Path]) -> Value {
        expect(
            client()
                .post(self.at(&format!("/api/v1/subjects/{subject}/faces")))
                .key(key)
                .multipart(files(photos))
                .send()
                .unwrap(),
            StatusCode::CREATED,
        )
    }

    fn stop(&mut self) -> std::process::ExitStatus {
        // SAFETY: sending a signal to our own child process.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        self.child.wait().unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            self.stop();
        }
    }
}

fn client() -> Client {
    Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap()
}

fn files(paths: &[&Path]) -> multipart::Form {
    paths.iter().fold(multipart::Form::new(), |f, p| {
        f.part(
            "file",
            multipart::Part::bytes(std::fs::read(p).unwrap())
                .file_name(p.file_name().unwrap().to_string_lossy().into_owned()),
        )
    })
}

fn bytes_form(name: &str, bytes: Vec<u8>) -> multipart::Form {
    multipart::Form::new().part(
        "file",
        multipart::Part::bytes(bytes).file_name(name.to_string()),
    )
}

trait Keyed {
    fn key(self, key: &str) -> Self;
}

impl Keyed for RequestBuilder {
    fn key(self, key: &str) -> Self {
        self.header("x-api-key", key)
    }
}

/// Status and JSON body; every error body has the API's one shape.
fn answer(r: Response) -> (StatusCode, Value) {
    let status = r.status();
    let body: Value = r.json().unwrap_or(Value::Null);
    if !status.is_success() {
        assert!(
            body["error"].is_string() && body["detail"].is_string(),
            "{status}: error body {body}"
        );
    }
    (status, body)
}

fn expect(r: Response, want: StatusCode) -> Value {
    let (status, body) = answer(r);
    assert_eq!(status, want, "{body}");
    body
}

/// Sends a request head announcing `length` body bytes, then only `send` of them, and reads
/// the answer: (status, body).
fn raw(url: &str, path: &str, key: &str, ct: &str, length: usize, send: usize) -> (u16, String) {
    use std::io::{Read, Write};
    let addr = url.trim_start_matches("http://");
    let mut tcp = std::net::TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(
        tcp,
        "POST {path} HTTP/1.1\r\nhost: {addr}\r\nx-api-key: {key}\r\ncontent-type: {ct}\r\ncontent-length: {length}\r\n\r\n"
    )
    .unwrap();
    let _ = tcp.write_all(&vec![b'A'; send]);
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = tcp.read(&mut buf) {
        if n == 0 {
            break;
        }
        answer.extend(&buf[..n]);
        let text = String::from_utf8_lossy(&answer);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len = head.lines().find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length: ")
                    .map(|v| v.trim().parse::<usize>().unwrap())
            });
            if len.is_some_and(|l| body.len() >= l) {
                break;
            }
        }
    }
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// A reader over byte chunks (a body sent chunked, without a length).
struct ChunkReader<I> {
    chunks: I,
    current: std::io::Cursor<Vec<u8>>,
}

impl<I: Iterator<Item = std::io::Result<Vec<u8>>>> ChunkReader<I> {
    fn new(chunks: I) -> Self {
        Self {
            chunks,
            current: std::io::Cursor::new(Vec::new()),
        }
    }
}

impl<I: Iterator<Item = std::io::Result<Vec<u8>>>> std::io::Read for ChunkReader<I> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            let n = self.current.read(buf)?;
            if n > 0 {
                return Ok(n);
            }
            match self.chunks.next() {
                Some(chunk) => self.current = std::io::Cursor::new(chunk?),
                None => return Ok(0),
            }
        }
    }
}

/// A PNG header claiming `w` x `h` pixels, with no pixel data: the size guard must refuse it
/// from the header, before decoding.
fn huge_png(w: u32, h: u32) -> Vec<u8> {
    fn crc(data: &[u8]) -> u32 {
        let mut c = 0xffff_ffffu32;
        for &b in data {
            c ^= b as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    0xedb8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
        }
        !c
    }
    let mut ihdr = b"IHDR".to_vec();
    ihdr.extend(w.to_be_bytes());
    ihdr.extend(h.to_be_bytes());
    ihdr.extend([8, 2, 0, 0, 0]);
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.extend(13u32.to_be_bytes());
    png.extend(&ihdr);
    png.extend(crc(&ihdr).to_be_bytes());
    let idat = b"IDAT\x78\x9c\x03\x00\x00\x00\x00\x01";
    png.extend(8u32.to_be_bytes());
    png.extend(idat);
    png.extend(crc(idat).to_be_bytes());
    png.extend([0, 0, 0, 0]);
    png.extend(b"IEND");
    png.extend(crc(b"IEND").to_be_bytes());
    png
}

#[test]
fn serve_enrol_identify_verify_and_every_error_path() {
    let s = Server::start(&["--body-limit-mib", "1"]);
    let (w, c) = (s.key("acme", "write"), client());

    // Service routes.
    assert_eq!(
        expect(c.get(s.at("/healthz")).send().unwrap(), StatusCode::OK)["status"],
        "ok"
    );
    let ready = expect(c.get(s.at("/readyz")).send().unwrap(), StatusCode::OK);
    assert_eq!(ready["ready"], true);
    let r = c.get(s.at("/healthz")).send().unwrap();
    assert!(
        r.headers().contains_key("x-request-id"),
        "request id echoed"
    );

    // Batch enrolment, multipart: two photos of one person.
    let madonna = [photo("train/madonna", 0), photo("train/madonna", 1)];
    let body = s.enrol(&w, "madonna", &[&madonna[0], &madonna[1]]);
    assert_eq!(body["enrolled"], 2);
    assert!(body["results"][1]["face_id"].as_i64().is_some(), "{body}");
    // Each enrolled face with its quality; a gate past 1 is the request's mistake.
    let q = &body["results"][0]["quality"];
    assert!(
        q["score"].as_f64().unwrap() >= 0.3 && q["reason"].is_string(),
        "{body}"
    );
    let e = expect(
        c.post(s.at("/api/v1/subjects/madonna/faces?min_quality=2"))
            .key(&w)
            .multipart(bytes_form("m.jpg", std::fs::read(&madonna[0]).unwrap()))
            .send()
            .unwrap(),
        StatusCode::BAD_REQUEST,
    );
    assert!(e["detail"].as_str().unwrap().contains("min_quality"), "{e}");
    // JSON base64 (a data URL too), with one undecodable image reported and skipped.
    let ben = std::fs::read(photo("train/ben_afflek", 0)).unwrap();
    let b64 = base64::engine::general_purpose::STANDARD.encode(&ben);
    let body = expect(
        c.post(s.at("/api/v1/subjects/ben/faces"))
            .key(&w)
            .json(&json!({"images": [format!("data:image/jpeg;base64,{b64}"), "aGVsbG8="]}))
            .send()
            .unwrap(),
        StatusCode::CREATED,
    );
    assert_eq!(body["enrolled"], 1, "{body}");
    assert!(body["results"][0]["face_id"].is_i64());
    let why = body["results"][1]["error"].as_str().unwrap();
    assert!(
        why.contains("images[1]") && why.contains("not a readable image"),
        "{why}"
    );
    // Nothing usable: 400, nothing stored.
    let e = expect(
        c.post(s.at("/api/v1/subjects/nobody/faces"))
            .key(&w)
            .multipart(bytes_form("notes.txt", b"just text".to_vec()))
            .send()
            .unwrap(),
        StatusCode::BAD_REQUEST,
    );
    assert!(e["detail"].as_str().unwrap().contains("notes.txt"), "{e}");

    // Identify: the server applies the threshold.
    let probe = photo("val/madonna", 0);
    let body = expect(
        c.post(s.at("/api/v1/identify?top_k=2"))
            .key(&w)
            .multipart(files(&[&probe]))
            .send()
            .unwrap(),
        StatusCode::OK,
    );
    let face = &body["images"][0]["faces"][0];
    assert_eq!(face["subject"], "madonna", "{body}");
    assert_eq!(face["known"], true);
    assert_eq!(face["candidates"].as_array().unwrap().len(), 2);
    assert_eq!(body["threshold_source"], "target-fir");
    // Fewer than six subjects: the cohort score (the default) needs more; the distance is
    // thresholded and said so.
    assert_eq!(body["scoring"], "distance", "{body}");
    assert!(face.get("cohort_score").is_none(), "{face}");
    let strict = expect(
        c.post(s.at("/api/v1/identify?threshold=0.1"))
            .key(&w)
            .multipart(files(&[&probe]))
            .send()
            .unwrap(),
        StatusCode::OK,
    );
    let face = &strict["images"][0]["faces"][0];
    assert_eq!(
        (face["subject"].as_str(), face["known"].as_bool()),
        (Some("unknown"), Some(false))
    );
    assert_eq!(strict["threshold_source"], "explicit");
    for bad in [
        "top_k=0",
        "top_k=x",
        "threshold=5",
        "fir=2",
        "colour=red",
        "score=nearest",
    ] {
        expect(
            c.post(s.at(&format!("/api/v1/identify?{bad}")))
                .key(&w)
                .multipart(files(&[&probe]))
                .send()
                .unwrap(),
            StatusCode::BAD_REQUEST,
        );
    }

    // Verify: against a subject, and two photos.
    let v = expect(
        c.post(s.at("/api/v1/verify?subject=madonna"))
            .key(&w)
            .multipart(files(&[&probe]))
            .send()
            .unwrap(),
        StatusCode::OK,
    );
    assert_eq!(v["verified"], true, "{v}");
    assert_eq!(v["distance_metric"], "euclidean_l2");
    assert!(v["distance"].as_f64().unwrap() < v["threshold"].as_f64().unwrap());
    let other = photo("val/ben_afflek", 0);
    let v = expect(
        c.post(s.at("/api/v1/verify"))
            .key(&w)
            .multipart(files(&[&probe, &other]))
            .send()
            .unwrap(),
        StatusCode::OK,
    );
    assert_eq!(v["verified"], false, "{v}");
    assert_eq!(v["facial_areas"].as_array().unwrap().len(), 2);
    expect(
        c.post(s.at("/api/v1/verify"))
            .key(&w)
            .multipart(files(&[&probe]))
            .send()
            .unwrap(),
        StatusCode::BAD_REQUEST,
    );
    expect(
        c.post(s.at("/api/v1/verify?subject=nobody"))
            .key(&w)
            .multipart(files(&[&probe]))
            .send()
            .unwrap(),
        StatusCode::NOT_FOUND,
    );

    // Detect and embed.
    let d = expect(
        c.post(s.at("/api/v1/detect"))
            .key(&w)
            .multipart(files(&[&probe]))
            .send()
            .unwrap(),
        StatusCode::OK,
    );
    let f = &d["images"][0]["faces"][0];
    assert_eq!(f["landmarks"].as_array().unwrap().len(), 5);
    assert!(f.get("embedding").is_none());
    let e = expect(
        c.post(s.at("/api/v1/embed"))
            .key(&w)
            .json(&json!({"image": b64}))
            .send()
            .unwrap(),
        StatusCode::OK,
    );
    let emb: Vec<f64> =
        serde_json::from_value(e["images"][0]["faces"][0]["embedding"].clone()).unwrap();
    let norm = emb.iter().map(|x| x * x).sum::<f64>().sqrt();
    assert_eq!(emb.len(), 128);
    assert!((norm - 1.0).abs() < 1e-4, "{norm}");

    // Subjects: paged list, create, rename, delete.
    let page = expect(
        c.get(s.at("/api/v1/subjects?per_page=1&page=2"))
            .key(&w)
            .send()
            .unwrap(),
        StatusCode::OK,
    );
    assert_eq!(page["total"], 2);
    assert_eq!(page["subjects"][0]["name"], "madonna");
    // What identification in the gallery can do, at its size: two subjects, the distance.
    let id = &page["identification"];
    assert_eq!(id["scoring"], "distance", "{page}");
    // By the tables shipped for the weights: nothing was calibrated here.
    assert_eq!(id["own_table"], false, "{page}");
    let [one, three] = [0, 1].map(|i| id["expected_dir"][i].as_f64().unwrap());
    assert!(one > 0.5 && three >= one, "{page}");
    assert!(
        id["detail"]
            .as_str()
            .unwrap()
            .contains("of enrolled people's photos named"),
        "{page}"
    );
    expect(
        c.get(s.at("/api/v1/subjects?page=0"))
            .key(&w)
            .send()
            .unwrap(),
        StatusCode::BAD_REQUEST,
    );
    expect(
        c.post(s.at("/api/v1/subjects"))
            .key(&w)
            .json(&json!({"name": "carol"}))
            .send()
            .unwrap(),
        StatusCode::CREATED,
    );
    expect(
        c.post(s.at("/api/v1/subjects"))
            .key(&w)
            .json(&json!({"name": "carol"}))
            .send()
            .unwrap(),
        StatusCode::CONFLICT,
    );
    expect(
        c.post(s.at("/api/v1/subjects"))
            .key(&w)
            .json(&json!({"nom": "x"}))
            .send()
            .unwrap(),
        StatusCode::UNPROCESSABLE_ENTITY,
    );
    expect(
        c.put(s.at("/api/v1/subjects/carol"))
            .key(&w)
            .json(&json!({"name": "ben"}))
            .send()
            .unwrap(),
        StatusCode::CONFLICT,
    );
    let r = expect(
        c.put(s.at("/api/v1/subjects/ben"))
            .key(&w)
            .json(&json!({"name": "ben affleck"}))
            .send()
            .unwrap(),
        StatusCode::OK,
    );
    assert_eq!(r["faces"], 1);
    expect(
        c.put(s.at("/api/v1/subjects/ben"))
            .key(&w)
            .json(&json!({"name": "x"}))
            .send()
            .unwrap(),
        StatusCode::NOT_FOUND,
    );
    let r = expect(
        c.delete(s.at("/api/v1/subjects/carol"))
            .key(&w)
            .send()
            .unwrap(),
        StatusCode::OK,
    );
    assert_eq!(r["faces_removed"], 0);
    expect(
        c.delete(s.at("/api/v1/subjects/carol"))
            .key(&w)
            .send()
            .unwrap(),
        StatusCode::NOT_FOUND,
    );

    // Faces: list by subject, delete by id.
    let faces = expect(
        c.get(s.at("/api/v1/faces?subject=madonna"))
            .key(&w)
            .send()
            .unwrap(),
        StatusCode::OK,
    );
    assert_eq!(faces["total"], 2);
    let id = faces["faces"][0]["id"].as_i64().unwrap();
    let gone = expect(
        c.delete(s.at(&format!("/api/v1/faces/{id}")))
            .key(&w)
            .send()
            .unwrap(),
        StatusCode::OK,
    );
    assert_eq!(gone["subject"], "madonna");
    expect(
        c.delete(s.at(&format!("/api/v1/faces/{id}")))
            .key(&w)
            .send()
            .unwrap(),
        StatusCode::NOT_FOUND,
    );
    expect(
        c.delete(s.at("/api/v1/faces/abc")).key(&w).send().unwrap(),
        StatusCode::BAD_REQUEST,
    );
    expect(
        c.get(s.at("/api/v1/faces?subject=nobody"))
            .key(&w)
            .send()
            .unwrap(),
        StatusCode::NOT_FOUND,
    );

    // Bodies: none, wrong type, over the body limit (1 MiB here), over the pixel limit.
    let e = expect(
        c.post(s.at("/api/v1/detect"))
            .key(&w)
            .json(&json!({"images": []}))
            .send()
            .unwrap(),
        StatusCode::BAD_REQUEST,
    );
    assert!(e["detail"].as_str().unwrap().contains("no image"), "{e}");
    expect(
        c.post(s.at("/api/v1/detect"))
            .key(&w)
            .header("content-type", "text/plain")
            .body("hi")
            .send()
            .unwrap(),
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
    );
    // Announced over the limit: 413 before the body is sent.
    for ct in ["multipart/form-data; boundary=x", "application/json"] {
        let (status, body) = raw(&s.url, "/api/v1/detect", &w, ct, 2 << 20, 64 << 10);
        assert_eq!(status, 413, "{body}");
        let e: Value = serde_json::from_str(&body).unwrap();
        assert!(
            e["detail"].as_str().unwrap().contains("over the limit"),
            "{e}"
        );
    }
    // Chunked (no length announced), over the limit: cut there, 413.
    let chunks = (0..40).map(|_| Ok::<_, std::io::Error>(vec![b'A'; 64 << 10]));
    let mut head = b"{\"image\": \"".to_vec();
    head.extend(vec![b'A'; 16]);
    let stream = std::iter::once(Ok(head)).chain(chunks);
    // (A client of its own: the server closes this connection after answering.)
    let r = client()
        .post(s.at("/api/v1/detect"))
        .key(&w)
        .header("content-type", "application/json")
        .body(reqwest::blocking::Body::new(ChunkReader::new(stream)))
        .send();
    if let Ok(r) = r {
        expect(r, StatusCode::PAYLOAD_TOO_LARGE);
    }
    let e = expect(
        c.post(s.at("/api/v1/detect"))
            .key(&w)
            .multipart(bytes_form("huge.png", huge_png(20_000, 20_000)))
            .send()
            .unwrap(),
        StatusCode::BAD_REQUEST,
    );
    let detail = e["detail"].as_str().unwrap();
    assert!(
        detail.contains("huge.png") && detail.contains("over the limit"),
        "{detail}"
    );
    let e = expect(
        c.post(s.at("/api/v1/detect"))
            .key(&w)
            .json(&json!({"image": "%%%"}))
            .send()
            .unwrap(),
        StatusCode::BAD_REQUEST,
    );
    assert!(e["detail"].as_str().unwrap().contains("base64"), "{e}");

    // Unknown routes and methods answer in the same shape.
    expect(
        c.get(s.at("/api/v1/nothing")).send().unwrap(),
        StatusCode::NOT_FOUND,
    );
    expect(
        c.get(s.at("/api/v1/identify")).key(&w).send().unwrap(),
        StatusCode::METHOD_NOT_ALLOWED,
    );

    // Docs, OpenAPI, metrics.
    let doc = expect(c.get(s.at("/openapi.json")).send().unwrap(), StatusCode::OK);
    for p in [
        "/api/v1/identify",
        "/api/v1/subjects/{name}/faces",
        "/api/v1/faces/{id}",
    ] {
        assert!(doc["paths"][p].is_object(), "{p} documented");
    }
    let docs = c.get(s.at("/docs/")).send().unwrap();
    assert_eq!(docs.status(), StatusCode::OK);
    assert!(
        docs.text().unwrap().contains("swagger"),
        "Swagger UI served"
    );
    let metrics = c.get(s.at("/metrics")).send().unwrap().text().unwrap();
    for line in [
        "facenet_http_requests_total{route=\"/api/v1/identify\",method=\"POST\",status=\"200\"} 2",
        "facenet_http_request_duration_seconds_count{route=\"/api/v1/identify\"} ",
        "facenet_embed_batch_size_bucket{le=\"+Inf\"}",
        "facenet_embed_queue_depth 0",
        "facenet_requests_in_progress ",
    ] {
        assert!(metrics.contains(line), "metrics lack {line}:\n{metrics}");
    }
    // Raw subject names never become metric labels.
    assert!(
        !metrics.contains("route=\"/api/v1/subjects/madonna"),
        "{metrics}"
    );
}

/// A key of one gallery against every endpoint: it never reads or changes another gallery;
/// a read key cannot change its own.
#[test]
fn serve_tenant_rules_for_every_endpoint() {
    let s = Server::start(&[]);
    let (acme_w, acme_r, globex) = (
        s.key("acme", "write"),
        s.key("acme", "read"),
        s.key("globex", "write"),
    );
    let c = client();
    let ada = photo("train/madonna", 0);
    s.enrol(&acme_w, "ada", &[&ada]);
    let id = expect(
        c.get(s.at("/api/v1/faces")).key(&acme_w).send().unwrap(),
        StatusCode::OK,
    )["faces"][0]["id"]
        .as_i64()
        .unwrap();
    let probe = photo("val/madonna", 0);

    // (method, path, body kind) of every /api/v1 endpoint.
    let endpoints: Vec<(&str, String, &str)> = vec![
        ("POST", "/api/v1/detect".into(), "image"),
        ("POST", "/api/v1/embed".into(), "image"),
        ("POST", "/api/v1/verify?subject=ada".into(), "image"),
        ("POST", "/api/v1/identify".into(), "image"),
        ("GET", "/api/v1/subjects".into(), ""),
        ("POST", "/api/v1/subjects".into(), "name"),
        ("PUT", "/api/v1/subjects/ada".into(), "name"),
        ("DELETE", "/api/v1/subjects/ada".into(), ""),
        ("GET", "/api/v1/faces?subject=ada".into(), ""),
        ("DELETE", format!("/api/v1/faces/{id}"), ""),
        // Last: with globex's key it enrols globex's own "ada".
        ("POST", "/api/v1/subjects/ada/faces".into(), "image"),
    ];
    let send = |method: &str, path: &str, body: &str, key: Option<&str>| {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut r = c.request(m, s.at(path));
        if let Some(k) = key {
            r = r.key(k);
        }
        r = match body {
            "image" => r.multipart(files(&[&probe])),
            "name" => r.json(&json!({"name": "zed"})),
            _ => r,
        };
        answer(r.send().unwrap())
    };
    for (method, path, body) in &endpoints {
        let what = format!("{method} {path}");
        // No key, a made-up key, a key of the right shape that was never issued.
        for key in [
            None,
            Some("nope"),
            Some("fnk_000000000000_000000000000000000000000000000000000000000000000"),
        ] {
            let (st, _) = send(method, path, body, key);
            assert_eq!(st, StatusCode::UNAUTHORIZED, "{what} with {key:?}");
        }
        // Another gallery's key: 404 for anything naming acme's subject or face, and never
        // acme's data.
        let (st, b) = send(method, path, body, Some(&globex));
        let own_enrolment = path.ends_with("/faces") && *method == "POST";
        assert!(
            own_enrolment || !b.to_string().contains("\"ada\""),
            "{what}: globex saw acme's data: {b}"
        );
        let names_ada = path.contains("ada") || *path == format!("/api/v1/faces/{id}");
        if names_ada && !path.ends_with("/faces") {
            assert_eq!(st, StatusCode::NOT_FOUND, "{what} with globex's key: {b}");
        }
        // A read key: reads pass, writes are 403.
        let is_write = *method != "GET"
            && !["/detect", "/embed", "/verify", "/identify"]
                .iter()
                .any(|p| path.contains(p));
        let (st, b) = send(method, path, body, Some(&acme_r));
        if is_write {
            assert_eq!(st, StatusCode::FORBIDDEN, "{what} with a read key: {b}");
        } else {
            assert_eq!(st, StatusCode::OK, "{what} with a read key: {b}");
        }
    }
    // globex's enrolment of "ada" made its own subject; acme's is untouched.
    let acme = expect(
        c.get(s.at("/api/v1/subjects")).key(&acme_w).send().unwrap(),
        StatusCode::OK,
    );
    assert_eq!(acme["subjects"], json!([{"name": "ada", "faces": 1}]));
    let acme_faces = expect(
        c.get(s.at("/api/v1/faces")).key(&acme_w).send().unwrap(),
        StatusCode::OK,
    );
    assert_eq!(acme_faces["faces"][0]["id"], id);
    let g = expect(
        c.get(s.at("/api/v1/subjects")).key(&globex).send().unwrap(),
        StatusCode::OK,
    );
    assert_eq!(
        g["subjects"],
        json!([{"name": "ada", "faces": 1}, {"name": "zed", "faces": 0}])
    );

    // The CLI reads a service gallery by name; the default gallery of the file is another.
    let list = |name: &str| {
        facenet(&[
            "gallery".as_ref(),
            "list".as_ref(),
            "--gallery".as_ref(),
            s.db.as_os_str(),
            "--gallery-name".as_ref(),
            name.as_ref(),
        ])
    };
    assert!(list("acme").contains("ada"), "{}", list("acme"));
    assert!(!list("default").contains("ada"), "{}", list("default"));

    // A revoked key stops working at once.
    let store = ["keys".as_ref(), "--store".as_ref(), s.db.as_os_str()];
    let listing = facenet(&[&store[..], &["list".as_ref()]].concat());
    assert!(
        !listing.contains(&acme_r[17..]),
        "keys list never shows a secret"
    );
    let id_r = &acme_r[4..16];
    assert!(listing.contains(id_r), "{listing}");
    facenet(&[&store[..], &["revoke".as_ref(), id_r.as_ref()]].concat());
    expect(
        c.get(s.at("/api/v1/subjects")).key(&acme_r).send().unwrap(),
        StatusCode::UNAUTHORIZED,
    );
}

/// Concurrent requests share forward passes; beyond --queue the answer is 503 with
/// Retry-After at once, and the server serves again when the load stops.
#[test]
fn serve_batches_sheds_overload_and_recovers() {
    let s = Server::start(&["--queue", "3", "--batch", "8", "--batch-wait-ms", "20"]);
    let key = s.key("acme", "read");
    let photos: Vec<PathBuf> = (0..4).map(|i| photo("val/madonna", i)).collect();
    let barrier = std::sync::Barrier::new(16);
    let results: Vec<(StatusCode, Option<String>, Duration)> = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..16)
            .map(|i| {
                let (s, key, photos, barrier) = (&s, &key, &photos, &barrier);
                sc.spawn(move || {
                    let c = client();
                    barrier.wait();
                    let t = Instant::now();
                    let r = c
                        .post(s.at("/api/v1/embed"))
                        .key(key)
                        .multipart(files(&[&photos[i % 4]]))
                        .send()
                        .unwrap();
                    let retry = r
                        .headers()
                        .get("retry-after")
                        .map(|v| v.to_str().unwrap().to_string());
                    let (st, _) = answer(r);
                    (st, retry, t.elapsed())
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let ok = results.iter().filter(|r| r.0 == StatusCode::OK).count();
    let shed: Vec<_> = results
        .iter()
        .filter(|r| r.0 == StatusCode::SERVICE_UNAVAILABLE)
        .collect();
    assert_eq!(ok + shed.len(), 16, "only 200 or 503: {results:?}");
    assert!(
        ok >= 3 && !shed.is_empty(),
        "{ok} served, {} shed",
        shed.len()
    );
    assert!(
        shed.iter().all(|r| r.1.as_deref() == Some("1")),
        "Retry-After on every 503"
    );
    let c = client();
    expect(
        c.post(s.at("/api/v1/embed"))
            .key(&key)
            .multipart(files(&[&photos[0]]))
            .send()
            .unwrap(),
        StatusCode::OK,
    );
    let metrics = c.get(s.at("/metrics")).send().unwrap().text().unwrap();
    let batches: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("facenet_embed_batch_size_count "))
        .unwrap()
        .parse()
        .unwrap();
    let faces: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("facenet_embed_batch_size_sum "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        faces > batches,
        "faces of concurrent requests shared passes: {faces} faces in {batches} batches"
    );
}

/// On every image route, as multipart and as base64 JSON: a real decompression bomb (a PNG of
/// 8000x8000 black pixels, some 60 KB, 183 MiB decoded) is refused by the decode budget
/// before it is decoded; a header claiming 20000x20000 pixels is refused by the pixel limit,
/// naming the image; an announced body over the limit is refused before it is read; the
/// enrolment route, which holds all its images at once, refuses nine bombs together under the
/// default budget and stores nothing.
#[test]
fn serve_size_and_pixel_limits_hold_on_every_image_route() {
    let bomb = {
        let mut out = std::io::Cursor::new(Vec::new());
        image::GrayImage::new(8000, 8000)
            .write_to(&mut out, image::ImageFormat::Png)
            .unwrap();
        out.into_inner()
    };
    assert!(bomb.len() < 1 << 20, "{} bytes", bomb.len());
    let b64 = base64::engine::general_purpose::STANDARD.encode(&bomb);
    let routes = [
        "/api/v1/detect",
        "/api/v1/embed",
        "/api/v1/identify",
        "/api/v1/verify?subject=nobody",
        "/api/v1/subjects/bob/faces",
    ];
    let c = client();
    let small = Server::start(&["--decode-budget-mp", "32", "--body-limit-mib", "2"]);
    let key = small.key("acme", "write");
    for route in routes {
        let form = bytes_form("bomb.png", bomb.clone());
        let r = c.post(small.at(route)).key(&key).multipart(form).send();
        let b = expect(r.unwrap(), StatusCode::PAYLOAD_TOO_LARGE);
        let detail = b["detail"].as_str().unwrap();
        assert!(detail.contains("--decode-budget-mp"), "{route}: {b}");
        let r = c
            .post(small.at(route))
            .key(&key)
            .json(&json!({ "images": [b64] }))
            .send();
        expect(r.unwrap(), StatusCode::PAYLOAD_TOO_LARGE);
        let path = route.split('?').next().unwrap();
        let (status, body) = raw(&small.url, path, &key, "application/json", 3 << 20, 0);
        assert_eq!(status, 413, "{route}: {body}");
    }
    let s = Server::start(&[]);
    let key = s.key("acme", "write");
    for route in routes {
        let form = bytes_form("huge.png", huge_png(20000, 20000));
        let b = expect(
            c.post(s.at(route))
                .key(&key)
                .multipart(form)
                .send()
                .unwrap(),
            StatusCode::BAD_REQUEST,
        );
        let detail = b["detail"].as_str().unwrap();
        assert!(
            detail.contains("huge.png") && detail.contains("over the limit"),
            "{route}: {b}"
        );
    }
    let nine = (0..9).fold(multipart::Form::new(), |f, i| {
        f.part(
            "file",
            multipart::Part::bytes(bomb.clone()).file_name(format!("bomb{i}.png")),
        )
    });
    let r = c
        .post(s.at("/api/v1/subjects/bob/faces"))
        .key(&key)
        .multipart(nine)
        .send();
    let b = expect(r.unwrap(), StatusCode::PAYLOAD_TOO_LARGE);
    assert!(b["detail"].as_str().unwrap().contains("decode to"), "{b}");
    let subjects = expect(
        c.get(s.at("/api/v1/subjects")).key(&key).send().unwrap(),
        StatusCode::OK,
    );
    assert_eq!(subjects["total"], 0, "{subjects}");
}

/// API keys never reach the log: with debug logging on, requests with a valid key, a made-up
/// key and a well-formed unissued one are logged (route, status), and no key or part of one
/// appears.
#[test]
fn serve_never_logs_api_keys() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("serve.log");
    let mut s = Server::start_logged(None, &[], Some(&log));
    let key = s.key("acme", "write");
    let url = s.url.clone();
    let c = client();
    let unissued = format!("fnk_{}_{}", "0".repeat(12), "1".repeat(48));
    for k in [key.as_str(), "made-up-key-123", unissued.as_str()] {
        let _ = c
            .post(format!("{url}/api/v1/identify"))
            .key(k)
            .multipart(files(&[&photo("val/madonna", 0)]))
            .send()
            .unwrap();
        let _ = c
            .get(format!("{url}/api/v1/subjects"))
            .key(k)
            .send()
            .unwrap();
    }
    s.stop();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("/api/v1/subjects"),
        "requests are logged:\n{text}"
    );
    let secret = key.rsplit('_').next().unwrap();
    for needle in [
        key.as_str(),
        secret,
        "made-up-key-123",
        unissued.as_str(),
        &"1".repeat(48),
    ] {
        assert!(!text.contains(needle), "the log holds {needle}");
    }
}

/// Subject names an attacker would try, through the HTTP API: stored and returned verbatim in
/// JSON (never a path: the gallery folder gains no file), or refused with 400 naming the
/// problem; the gallery keeps working.
#[test]
fn serve_hostile_subject_names_are_verbatim_or_refused() {
    let s = Server::start(&[]);
    let key = s.key("acme", "write");
    let c = client();
    let dir = Path::new(&s.db).parent().unwrap().to_path_buf();
    let before = std::fs::read_dir(&dir).unwrap().count();
    let enc = |n: &str| -> String {
        n.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect()
    };
    let verbatim = [
        "../../etc/passwd",
        "Robert'); DROP TABLE faces; --",
        "<img src=x onerror=alert(1)>",
        "名前 🙂",
        "%2e%2e%2f",
    ];
    let photo = photo("train/madonna", 0);
    for name in verbatim {
        let r = c
            .post(s.at(&format!("/api/v1/subjects/{}/faces", enc(name))))
            .key(&key)
            .multipart(files(&[&photo]))
            .send()
            .unwrap();
        let b = expect(r, StatusCode::CREATED);
        assert_eq!(b["subject"], name, "{b}");
    }
    let list = expect(
        c.get(s.at("/api/v1/subjects")).key(&key).send().unwrap(),
        StatusCode::OK,
    );
    let mut got: Vec<&str> = list["subjects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    got.sort();
    let mut want = verbatim.to_vec();
    want.sort();
    assert_eq!(got, want);
    let long = "n".repeat(10 * 1024);
    for (name, says) in [
        ("bell\u{7}", "U+0007"),
        ("line\nfeed", "U+000A"),
        (long.as_str(), "longer than"),
    ] {
        let r = c
            .post(s.at(&format!("/api/v1/subjects/{}/faces", enc(name))))
            .key(&key)
            .multipart(files(&[&photo]))
            .send()
            .unwrap();
        let b = expect(r, StatusCode::BAD_REQUEST);
        assert!(b["detail"].as_str().unwrap().contains(says), "{b}");
    }
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), before);
    let r = expect(
        c.post(s.at("/api/v1/identify"))
            .key(&key)
            .multipart(files(&[&photo]))
            .send()
            .unwrap(),
        StatusCode::OK,
    );
    let named = r["images"][0]["faces"][0]["subject"].as_str().unwrap();
    assert!(verbatim.contains(&named), "{r}");
}

/// Two service instances on one PostgreSQL gallery: a key made through one works on the other,
/// a face enrolled through one is found by the other at once, deletions likewise.
#[test]
#[ignore = "needs PostgreSQL with pgvector (FACENET_TEST_PG); .ci/run starts one and runs `cargo test -- --ignored postgres_`"]
fn serve_postgres_two_instances_share_one_gallery() {
    let admin = std::env::var("FACENET_TEST_PG")
        .expect("FACENET_TEST_PG=postgres://... (.ci/run starts one)");
    // One gallery of this process's own on the shared test database.
    let url = admin;
    let a = Server::start_on(Some(&url), &[]);
    let b = Server::start_on(Some(&url), &[]);
    let gallery = format!("g{}", std::process::id());
    let key = a.key(&gallery, "write");
    let c = client();
    let probe = photo("val/madonna", 0);
    a.enrol(
        &key,
        "madonna",
        &[&photo("train/madonna", 0), &photo("train/madonna", 1)],
    );
    let r = expect(
        c.post(b.at("/api/v1/identify"))
            .key(&key)
            .multipart(files(&[&probe]))
            .send()
            .unwrap(),
        StatusCode::OK,
    );
    assert_eq!(r["images"][0]["faces"][0]["subject"], "madonna", "{r}");
    // From six subjects on, the database thresholds the cohort score, as a gallery searched
    // in memory does, and the two agree on the answer, its distance and its score.
    let sqlite = Server::start(&[]);
    let sqlite_key = sqlite.key("same", "write");
    let six = [
        ("ben", photo("train/ben_afflek", 0)),
        ("elton", photo("train/elton_john", 0)),
        ("jerry", photo("train/jerry_seinfeld", 0)),
        ("mindy", photo("train/mindy_kaling", 0)),
        (
            "george",
            facenet::files::walk_images(&lfw("George_W_Bush")).unwrap()[0].clone(),
        ),
    ];
    sqlite.enrol(
        &sqlite_key,
        "madonna",
        &[&photo("train/madonna", 0), &photo("train/madonna", 1)],
    );
    for (name, p) in &six {
        a.enrol(&key, name, &[p]);
        sqlite.enrol(&sqlite_key, name, &[p]);
    }
    let answer_of = |s: &Server, key: &str| {
        let r = expect(
            c.post(s.at("/api/v1/identify"))
                .key(key)
                .multipart(files(&[&probe]))
                .send()
                .unwrap(),
            StatusCode::OK,
        );
        assert_eq!(r["scoring"], "cohort", "{r}");
        r["images"][0]["faces"][0].clone()
    };
    let (pg, mem) = (answer_of(&b, &key), answer_of(&sqlite, &sqlite_key));
    assert_eq!(pg["subject"], "madonna", "{pg}");
    assert_eq!(pg["subject"], mem["subject"], "{pg} {mem}");
    for field in ["distance", "cohort_score"] {
        let (x, y) = (pg[field].as_f64().unwrap(), mem[field].as_f64().unwrap());
        assert!((x - y).abs() < 1e-4, "{field}: {pg} {mem}");
    }
    assert!(pg["cohort_score"].as_f64().unwrap() < 0.0, "{pg}");
    for (name, _) in &six {
        expect(
            c.delete(a.at(&format!("/api/v1/subjects/{name}")))
                .key(&key)
                .send()
                .unwrap(),
            StatusCode::OK,
        );
    }
    expect(
        c.delete(b.at("/api/v1/subjects/madonna"))
            .key(&key)
            .send()
            .unwrap(),
        StatusCode::OK,
    );
    let r = expect(
        c.get(a.at("/api/v1/subjects")).key(&key).send().unwrap(),
        StatusCode::OK,
    );
    assert_eq!(r["total"], 0, "{r}");
}

/// `trials` times: a `facenet serve` on `db` takes a stream of batch enrolments (3 photos
/// under a subject of their own, one transaction each) and is killed with SIGKILL at a
/// varying moment. `check` (another instance, or the next) then sees every acknowledged
/// enrolment whole, and no subject half-written. Returns (acknowledged, subjects stored).
fn kill_during_enrolment(db: &str, trials: usize, check: &Server, key: &str) -> (usize, usize) {
    let photos: Vec<PathBuf> = (0..3).map(|i| photo("train/madonna", i)).collect();
    let mut acked = Vec::<(String, Vec<i64>)>::new();
    let c = client();
    for trial in 0..trials {
        let a = Server::start_on(Some(db), &[]);
        let (a_url, a_pid) = (a.at("/api/v1/subjects"), a.child.id() as i32);
        let got = std::sync::Mutex::new(Vec::new());
        std::thread::scope(|scope| {
            let writer = scope.spawn(|| {
                let refs: Vec<&Path> = photos.iter().map(PathBuf::as_path).collect();
                // Bounded: 40 requests at most; stops at the first failure (the kill).
                for i in 0..40 {
                    let subject = format!("t{trial}-{i}");
                    let r = c
                        .post(format!("{a_url}/{subject}/faces"))
                        .key(key)
                        .multipart(files(&refs))
                        .send();
                    let Ok(r) = r else { break };
                    let (status, body) = answer(r);
                    assert_eq!(status, StatusCode::CREATED, "{body}");
                    let ids = body["results"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|r| r["face_id"].as_i64().unwrap())
                        .collect();
                    got.lock().unwrap().push((subject, ids));
                }
            });
            std::thread::sleep(Duration::from_millis(jitter(1500)));
            // SAFETY: sending a signal to our own child process.
            unsafe {
                libc::kill(a_pid, libc::SIGKILL);
            }
            writer.join().unwrap();
        });
        drop(a);
        acked.extend(got.into_inner().unwrap());
    }
    let r = expect(
        c.get(check.at("/api/v1/faces?per_page=1000"))
            .key(key)
            .send()
            .unwrap(),
        StatusCode::OK,
    );
    let mut by_subject: std::collections::BTreeMap<String, Vec<i64>> = Default::default();
    for f in r["faces"].as_array().unwrap() {
        by_subject
            .entry(f["subject"].as_str().unwrap().to_string())
            .or_default()
            .push(f["id"].as_i64().unwrap());
    }
    for (subject, ids) in &by_subject {
        assert_eq!(ids.len(), 3, "{subject} half-written: {ids:?}");
    }
    for (subject, ids) in &acked {
        assert_eq!(
            by_subject.get(subject),
            Some(ids),
            "acknowledged {subject} lost"
        );
    }
    // Per trial at most the one request in flight may have committed unanswered.
    assert!(by_subject.len() <= acked.len() + trials);
    eprintln!(
        "{trials} kills: {} enrolments acknowledged, {} stored",
        acked.len(),
        by_subject.len()
    );
    (acked.len(), by_subject.len())
}

/// Crash safety on SQLite: instances killed during batch enrolment, one after the other on one
/// gallery file; then the file passes `PRAGMA integrity_check` and holds every acknowledged
/// enrolment whole.
#[test]
fn serve_killed_during_enrolment_sqlite_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("gallery.db");
    let db = db.to_str().unwrap();
    let check = Server::start_on(Some(db), &[]);
    let key = check.key("crash", "write");
    kill_during_enrolment(db, crash_trials(), &check, &key);
    drop(check);
    let conn = rusqlite::Connection::open(db).unwrap();
    let ok: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ok, "ok");
}

/// Crash safety on PostgreSQL, with a second instance answering throughout: instances killed
/// during batch enrolment; the survivor sees every acknowledged enrolment whole and still
/// identifies.
#[test]
#[ignore = "needs PostgreSQL with pgvector (FACENET_TEST_PG); .ci/run starts one and runs `cargo test -- --ignored postgres_`"]
fn serve_postgres_instance_killed_during_enrolment_loses_nothing_acknowledged() {
    let url = std::env::var("FACENET_TEST_PG")
        .expect("FACENET_TEST_PG=postgres://... (.ci/run starts one)");
    let b = Server::start_on(Some(&url), &[]);
    let key = b.key(&format!("kill{}", std::process::id()), "write");
    let (acked, _) = kill_during_enrolment(&url, crash_trials(), &b, &key);
    let r = expect(
        client()
            .post(b.at("/api/v1/identify"))
            .key(&key)
            .multipart(files(&[&photo("val/madonna", 0)]))
            .send()
            .unwrap(),
        StatusCode::OK,
    );
    if acked > 0 {
        // The nearest subject is one of the enrolled ones (whether it is named depends on the
        // open-set threshold, which tightens as the gallery grows).
        let nearest = r["images"][0]["faces"][0]["candidates"][0]["subject"]
            .as_str()
            .unwrap_or("");
        assert!(nearest.starts_with('t'), "{r}");
    }
}

/// SIGTERM lets the requests in progress finish, then the process exits 0.
#[test]
fn serve_drains_in_flight_requests_on_sigterm() {
    let mut s = Server::start(&[]);
    let key = s.key("acme", "read");
    let photos: Vec<PathBuf> = (0..6).map(|i| photo("val/madonna", i % 4)).collect();
    let refs: Vec<&Path> = photos.iter().map(PathBuf::as_path).collect();
    let url = s.at("/api/v1/embed");
    let form = files(&refs);
    let pending = std::thread::spawn(move || {
        let r = client().post(url).key(&key).multipart(form).send().unwrap();
        answer(r)
    });
    std::thread::sleep(Duration::from_millis(300));
    let status = s.stop();
    assert!(status.success(), "exit status {status}");
    let (st, body) = pending.join().unwrap();
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(body["images"].as_array().unwrap().len(), 6);
    assert!(
        Client::new().get(s.at("/healthz")).send().is_err(),
        "no longer listening"
    );
}

/// The OpenAPI document driven by schemathesis (PyPI): every endpoint, a bounded number of
/// generated requests each, with a read and a write key: no 5xx, every response documented
/// and matching its schema.
#[test]
#[ignore = "needs schemathesis (pip install schemathesis); .ci/run installs it and runs `cargo test -- --ignored serve_`"]
fn serve_openapi_holds_under_schemathesis() {
    let st = std::env::var("SCHEMATHESIS").unwrap_or_else(|_| "schemathesis".into());
    let s = Server::start(&[]);
    let key = s.key("acme", "write");
    s.enrol(&key, "ada", &[&photo("train/madonna", 0)]);
    let examples = std::env::var("SCHEMATHESIS_EXAMPLES").unwrap_or_else(|_| "25".into());
    let out = Command::new(&st)
        .args(["run", &s.at("/openapi.json")])
        .args(["--checks", "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"])
        .args(["--max-examples", &examples, "--header", &format!("x-api-key: {key}")])
        .args(["--request-timeout", "60", "--seed", "1"])
        .env("NO_COLOR", "1")
        .output()
        .unwrap_or_else(|e| panic!("running {st}: {e} (pip install schemathesis)"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{text}");
    assert!(out.status.success(), "schemathesis found failures:\n{text}");
}

/// The web page in headless Chromium: enter a key, upload a photo of an enrolled person and
/// find the name on the page; enrol a face by clicking it; a screenshot for the docs.
#[test]
#[ignore = "needs chromium and chromedriver (Debian packages); .ci/run installs them and runs `cargo test -- --ignored serve_`"]
fn serve_web_page_in_a_real_browser() {
    let s = Server::start(&[]);
    let key = s.key("acme", "write");
    let c = client();
    s.enrol(
        &key,
        "madonna",
        &[&photo("train/madonna", 0), &photo("train/madonna", 1)],
    );
    let _photos = s.index_library("acme");
    let people = |c: &Client| {
        expect(
            c.get(s.at("/api/v1/library/people"))
                .key(&key)
                .send()
                .unwrap(),
            StatusCode::OK,
        )["people"]
            .as_array()
            .unwrap()
            .clone()
    };
    let before = people(&c);
    assert!(before.len() >= 2, "{before:?}");
    let driver_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let driver = std::env::var("CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".into());
    let mut chromedriver = Command::new(&driver)
        .arg(format!("--port={driver_port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("starting {driver}: {e} (apt-get install chromium chromium-driver)")
        });
    let shot = std::env::var("FACENET_SCREENSHOT").ok();
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(browse(&s.url, driver_port, &key, shot));
    let _ = chromedriver.kill();
    let _ = chromedriver.wait();
    result.unwrap();
    // The click enrolled a second subject.
    let subjects = expect(
        c.get(s.at("/api/v1/subjects")).key(&key).send().unwrap(),
        StatusCode::OK,
    );
    assert!(
        subjects["subjects"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["name"] == "ben"),
        "{subjects}"
    );
    // The People view named someone (a gallery subject now) and merged two people.
    assert!(
        subjects["subjects"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["name"] == "Ada"),
        "{subjects}"
    );
    let after = people(&c);
    assert_eq!(after.len(), before.len() - 1, "{after:?}");
    assert!(after.iter().any(|p| p["name"] == "Ada"), "{after:?}");
}

async fn browse(
    url: &str,
    port: u16,
    key: &str,
    shot: Option<String>,
) -> Result<(), fantoccini::error::CmdError> {
    use fantoccini::{ClientBuilder, Locator};
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({"binary": std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into()),
               "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                        "--disable-background-networking", "--disable-component-update", "--disable-sync",
                        "--no-first-run", "--window-size=1280,900"]}),
    );
    let mut connected = None;
    for _ in 0..50 {
        match ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps.clone())
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
        {
            Ok(c) => {
                connected = Some(c);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    let b = connected.expect("chromedriver answers within 10 s");
    let wait_text = |sel: &'static str, want: &'static str| {
        let b = b.clone();
        async move {
            let start = Instant::now();
            loop {
                if let Ok(e) = b.find(Locator::Css(sel)).await
                    && e.text().await.unwrap_or_default().contains(want)
                {
                    return Ok::<(), fantoccini::error::CmdError>(());
                }
                if start.elapsed() > Duration::from_secs(60) {
                    let page = b.find(Locator::Css("body")).await?.text().await?;
                    panic!("`{want}` did not appear in {sel}; the page says:\n{page}");
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    b.goto(url).await?;
    b.find(Locator::Id("key")).await?.send_keys(key).await?;
    b.find(Locator::Id("save-key")).await?.click().await?;
    wait_text("#key-status", "accepted").await?;
    wait_text("#subjects", "madonna").await?;
    // Above the list, what identification in the gallery can do.
    wait_text("#capability", "of enrolled people's photos named").await?;
    // A group-free photo of an enrolled person: her name appears.
    let probe = photo("val/madonna", 0);
    b.find(Locator::Id("photo"))
        .await?
        .send_keys(&probe.display().to_string())
        .await?;
    wait_text("#faces", "madonna").await?;
    if let Some(path) = &shot {
        std::fs::write(path, b.screenshot().await?).unwrap();
    }
    // A stranger: unknown; click the face on the photo and enrol it.
    let stranger = photo("val/ben_afflek", 0);
    b.find(Locator::Id("photo"))
        .await?
        .send_keys(&stranger.display().to_string())
        .await?;
    wait_text("#faces", "unknown").await?;
    let face = b.find(Locator::Css("#faces li")).await?;
    face.click().await?;
    b.find(Locator::Id("enrol-name"))
        .await?
        .send_keys("ben")
        .await?;
    b.find(Locator::Id("enrol-button")).await?.click().await?;
    wait_text("#subjects", "ben").await?;
    wait_text("#faces", "ben").await?;
    // People: name the first, open them (their photos are drawn), merge two.
    wait_text("#people", "photos").await?;
    let enter: char = fantoccini::key::Key::Enter.into();
    b.find(Locator::Css("#people .person-name"))
        .await?
        .send_keys(&format!("Ada{enter}"))
        .await?;
    wait_text("#subjects", "Ada").await?;
    b.find(Locator::Css("#people .person-card img"))
        .await?
        .click()
        .await?;
    wait_text("#person-title", "Ada:").await?;
    assert!(
        !b.find_all(Locator::Css("#person-photos canvas"))
            .await?
            .is_empty()
    );
    if let Ok(path) = std::env::var("FACENET_SCREENSHOT_PEOPLE") {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let people = b.find(Locator::Id("people-section")).await?;
        std::fs::write(path, people.screenshot().await?).unwrap();
    }
    let picks = b.find_all(Locator::Css("#people .person-pick")).await?;
    picks[0].click().await?;
    picks[1].click().await?;
    b.find(Locator::Id("merge")).await?.click().await?;
    wait_text("#status", "merged into").await?;
    b.close().await
}

/// Identifies `probe` through the service; the first face's subject and whether it is known.
fn identified_as(server: &Server, key: &str, probe: &Path) -> (String, bool) {
    let r = expect(
        client()
            .post(server.at("/api/v1/identify"))
            .key(key)
            .multipart(files(&[probe]))
            .send()
            .unwrap(),
        StatusCode::OK,
    );
    let face = &r["images"][0]["faces"][0];
    (
        face["subject"].as_str().unwrap().to_string(),
        face["known"].as_bool().unwrap(),
    )
}

/// A running service holds its gallery in memory; another process's enrolment, rename and
/// removal (the CLI on the same store) are found by its very next request.
fn another_process_writes_are_found_at_once(db: Option<&str>, gallery: &str) {
    let server = Server::start_on(db, &[]);
    let key = server.key(gallery, "write");
    let probe = photo("val/madonna", 0);
    // The service's own enrolment first, so that it holds the gallery before the other
    // process writes.
    server.enrol(&key, "ben", &[&photo("train/ben_afflek", 0)]);
    assert!(!identified_as(&server, &key, &probe).1);
    let cli = |args: &[&str]| {
        let mut all: Vec<&std::ffi::OsStr> = args.iter().map(std::ffi::OsStr::new).collect();
        all.extend([std::ffi::OsStr::new("--gallery"), server.db.as_os_str()]);
        all.extend([
            std::ffi::OsStr::new("--gallery-name"),
            std::ffi::OsStr::new(gallery),
        ]);
        facenet(&all)
    };
    let train = photo("train/madonna", 0);
    cli(&["enroll", "madonna", train.to_str().unwrap()]);
    assert_eq!(
        identified_as(&server, &key, &probe),
        ("madonna".into(), true)
    );
    cli(&["gallery", "rename", "madonna", "Madonna Ciccone"]);
    assert_eq!(
        identified_as(&server, &key, &probe),
        ("Madonna Ciccone".into(), true)
    );
    cli(&["gallery", "remove", "Madonna Ciccone"]);
    assert!(!identified_as(&server, &key, &probe).1);
}

#[test]
fn serve_finds_another_process_writes_at_once_sqlite() {
    another_process_writes_are_found_at_once(None, "default");
}

#[test]
#[ignore = "needs PostgreSQL with pgvector (FACENET_TEST_PG); .ci/run starts one and runs `cargo test -- --ignored postgres_`"]
fn serve_postgres_finds_another_process_writes_at_once() {
    let url = std::env::var("FACENET_TEST_PG")
        .expect("FACENET_TEST_PG=postgres://... (.ci/run starts one)");
    another_process_writes_are_found_at_once(Some(&url), &format!("w{}", std::process::id()));
}

/// A 500 tells the client "internal error" and the request id, never the cause (which may
/// name files and servers); the log has the cause under the same id.
#[test]
fn serve_internal_errors_hide_their_cause_and_log_it() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("serve.log");
    let db = dir.path().join("gallery.db");
    let server = Server::start_logged(Some(db.to_str().unwrap()), &[], Some(&log));
    let key = server.key("default", "write");
    server.enrol(&key, "ben", &[&photo("train/ben_afflek", 0)]);
    // Break the store under the running service: its next search fails.
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute_batch("DROP TABLE changes;")
        .unwrap();
    let r = client()
        .post(server.at("/api/v1/identify"))
        .key(&key)
        .multipart(files(&[&photo("val/madonna", 0)]))
        .send()
        .unwrap();
    let id = r
        .headers()
        .get("x-request-id")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    let (status, body) = answer(r);
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
    let detail = body["detail"].as_str().unwrap();
    assert!(
        detail.contains("internal error") && detail.contains(&id),
        "{detail}"
    );
    assert!(
        !detail.contains("gallery.db") && !detail.contains("changes"),
        "{detail}"
    );
    drop(server);
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(
        logged
            .lines()
            .any(|l| l.contains(&id) && l.contains("gallery.db") && l.contains("changes")),
        "{logged}"
    );
}

/// The photo library's routes: people, a person's faces and photos, thumbnails (cached), a
/// photo, naming (a gallery subject then), find by face, moving a face, merging, forgetting;
/// read keys may look but not change; another gallery's key sees another library; unknown
/// people are 404.
#[test]
fn serve_library_routes() {
    let s = Server::start(&[]);
    let key = s.key("acme", "write");
    let read = s.key("acme", "read");
    let other = s.key("other", "write");
    let c = client();
    let _photos = s.index_library("acme");
    let people = expect(
        c.get(s.at("/api/v1/library/people"))
            .key(&read)
            .send()
            .unwrap(),
        StatusCode::OK,
    )["people"]
        .as_array()
        .unwrap()
        .clone();
    assert!(people.len() >= 2, "{people:?}");
    let top = people[0]["id"].as_i64().unwrap();
    // Another gallery's library is its own (empty).
    let theirs = expect(
        c.get(s.at("/api/v1/library/people"))
            .key(&other)
            .send()
            .unwrap(),
        StatusCode::OK,
    );
    assert_eq!(theirs["people"].as_array().unwrap().len(), 0, "{theirs}");
    // Faces and their thumbnails (JPEG, cached beside the gallery file).
    let faces = expect(
        c.get(s.at(&format!("/api/v1/library/people/{top}/faces")))
            .key(&read)
            .send()
            .unwrap(),
        StatusCode::OK,
    );
    let face = faces[0]["id"].as_i64().unwrap();
    assert_eq!(Some(face), people[0]["cover"].as_i64());
    let thumb = c
        .get(s.at(&format!("/api/v1/library/faces/{face}/thumbnail")))
        .key(&read)
        .send()
        .unwrap();
    assert_eq!(thumb.status(), StatusCode::OK);
    let img = image::load_from_memory(&thumb.bytes().unwrap()).unwrap();
    assert_eq!((img.width(), img.height()), (112, 112));
    let thumbs = PathBuf::from(format!("{}.thumbs", s.db.to_string_lossy()));
    let cached: usize = std::fs::read_dir(&thumbs)
        .unwrap()
        .map(|d| std::fs::read_dir(d.unwrap().path()).unwrap().count())
        .sum();
    assert_eq!(cached, 1);
    // Photos with boxes, and a photo's file.
    let photos = expect(
        c.get(s.at(&format!("/api/v1/library/people/{top}/photos")))
            .key(&read)
            .send()
            .unwrap(),
        StatusCode::OK,
    );
    let first = &photos[0];
    assert!(!first["faces"].as_array().unwrap().is_empty(), "{photos}");
    let file = c
        .get(s.at(&format!("/api/v1/library/photos/{}", first["id"])))
        .key(&read)
        .send()
        .unwrap();
    assert_eq!(file.status(), StatusCode::OK);
    assert_eq!(
        file.bytes().unwrap().as_ref(),
        std::fs::read(first["path"].as_str().unwrap()).unwrap()
    );
    // A read key may not name; a write key names, and the name is a gallery subject.
    let name = |k: &str| {
        c.put(s.at(&format!("/api/v1/library/people/{top}/name")))
            .key(k)
            .json(&json!({"name": "Ada"}))
            .send()
            .unwrap()
    };
    assert_eq!(name(&read).status(), StatusCode::FORBIDDEN);
    let named = expect(name(&key), StatusCode::OK);
    assert_eq!(named["name"], "Ada");
    let who = Path::new(first["path"].as_str().unwrap())
        .file_name()
        .unwrap()
        .to_string_lossy()
        .rsplit_once('_')
        .unwrap()
        .0
        .to_string();
    let probe = facenet::files::walk_images(&lfw(&who)).unwrap()[8].clone();
    assert_eq!(identified_as(&s, &key, &probe), ("Ada".to_string(), true));
    // Find by face: the nearest photos are Ada's.
    let found = expect(
        c.post(s.at("/api/v1/library/find"))
            .key(&read)
            .multipart(files(&[&probe]))
            .send()
            .unwrap(),
        StatusCode::OK,
    );
    assert_eq!(found["photos"][0]["person"], "Ada", "{found}");
    // Move a face out ("not this person"), then merge another person in.
    let moved = expect(
        c.post(s.at(&format!("/api/v1/library/faces/{face}/move")))
            .key(&key)
            .json(&json!({"to": null}))
            .send()
            .unwrap(),
        StatusCode::OK,
    );
    assert_eq!(moved["person"], Value::Null, "{moved}");
    assert_eq!(moved["pinned"], json!(true), "{moved}");
    let second = people[1]["id"].as_i64().unwrap();
    let merged = expect(
        c.post(s.at("/api/v1/library/people/Ada/merge"))
            .key(&key)
            .json(&json!({"people": [second.to_string()]}))
            .send()
            .unwrap(),
        StatusCode::OK,
    );
    assert_eq!(
        merged["faces"].as_u64().unwrap(),
        people[0]["faces"].as_u64().unwrap() - 1 + people[1]["faces"].as_u64().unwrap()
    );
    // Unknown people are 404 with the key named; forgetting removes the subject.
    let missing = c
        .get(s.at("/api/v1/library/people/nobody/faces"))
        .key(&read)
        .send()
        .unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    assert!(missing.text().unwrap().contains("no person `nobody`"));
    // A thumbnail of one of Ada's faces is cached too; forgetting her deletes it (and not the
    // thumbnail of the face moved out of her above).
    let ada = expect(
        c.get(s.at("/api/v1/library/people/Ada/faces"))
            .key(&read)
            .send()
            .unwrap(),
        StatusCode::OK,
    );
    let hers = ada[0]["id"].as_i64().unwrap();
    let thumb = c
        .get(s.at(&format!("/api/v1/library/faces/{hers}/thumbnail")))
        .key(&read)
        .send()
        .unwrap();
    assert_eq!(thumb.status(), StatusCode::OK);
    let cached = || -> Vec<String> {
        std::fs::read_dir(&thumbs)
            .unwrap()
            .flat_map(|d| std::fs::read_dir(d.unwrap().path()).unwrap())
            .map(|f| f.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    };
    assert_eq!(cached().len(), 2);
    expect(
        c.delete(s.at("/api/v1/library/people/Ada"))
            .key(&key)
            .send()
            .unwrap(),
        StatusCode::OK,
    );
    assert!(!identified_as(&s, &key, &probe).1);
    let left = cached();
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(left[0].starts_with(&format!("{face}-")), "{left:?}");
}
