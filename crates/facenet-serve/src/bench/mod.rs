//! `facenet bench serve`: concurrent clients against a running service, and the same photos
//! through the library directly (detection, then the network at batch 8), in one run.

use std::sync::Arc;
use std::time::{Duration, Instant};

mod load;

pub use load::{Load, LoadReport, heap_in_use_mib, run};

/// The table `facenet bench serve` prints.
pub fn table(direct_faces_per_s: f64, reports: &[LoadReport]) -> String {
    let mut out = format!(
        "{:<18} {:>9} {:>7} {:>6} {:>6} {:>6} {:>8} {:>8} {:>8} {:>8} {:>9} {:>7}  {}\n",
        "route",
        "gallery",
        "clients",
        "ok",
        "shed",
        "errors",
        "req/s",
        "faces/s",
        "p50 ms",
        "p99 ms",
        "shed p50",
        "vs lib",
        "RSS / heap in use, MiB (start, 1/4, 1/2, 3/4, end)"
    );
    for r in reports {
        out.push_str(&format!(
            "{:<18} {:>9} {:>7} {:>6} {:>6} {:>6} {:>8.1} {:>8.1} {:>8.1} {:>8.1} {:>9.1} {:>6.2}x  {}\n",
            r.route.trim_start_matches("/api/v1"),
            r.gallery_faces,
            r.clients,
            r.ok,
            r.shed,
            r.errors,
            r.requests_per_s(),
            r.faces_per_s(),
            r.p50_ms,
            r.p99_ms,
            r.shed_p50_ms,
            r.faces_per_s() / direct_faces_per_s.max(1e-9),
            r.rss_mib
                .iter()
                .zip(&r.heap_mib)
                .map(|(m, h)| format!("{m:.0}/{h:.0}"))
                .collect::<Vec<_>>()
                .join(" ")
        ));
    }
    out.push_str(&format!(
        "gallery: faces the identifications search (the sample's enrolled photos, and \
         synthetic face-like identities of 5 faces each beside them)\n\
         vs lib: faces/s over the library's {direct_faces_per_s:.1} faces/s on the same photos \
         (detection and alignment, then the network at batch 8), measured in this run\n"
    ));
    out
}

/// What `facenet bench serve` runs.
#[derive(Debug, Clone)]
pub struct ServeBench {
    /// Photos sent by the clients (name, bytes).
    pub photos: Vec<(String, Vec<u8>)>,
    /// Photos enrolled first (subject, name, bytes), so that `/identify` searches a gallery.
    pub enrol: Vec<(String, String, Vec<u8>)>,
    /// Routes, each run with every client count.
    pub routes: Vec<String>,
    /// Concurrent clients, one run per value and route.
    pub clients: Vec<usize>,
    /// Requests per run (at least two per client).
    pub requests: usize,
    /// Longest one run may take.
    pub max_time: Duration,
    /// The service's settings (its listen address is replaced by a free loopback port).
    pub config: crate::ServeConfig,
    /// Synthetic faces added to the gallery beside the enrolled photos, one service (and
    /// one SQLite file) per value: `/identify`'s latency as the gallery grows.
    pub synthetic_faces: Vec<usize>,
}

impl ServeBench {
    /// A dataset of `train/PERSON/*` (enrolled) and `val/*/*` (sent) photos, as the sample
    /// `facenet fetch` downloads; 1, 16 and 256 clients, 160 requests per run, 2 minutes at
    /// most per run.
    pub fn from_dataset(
        dir: &std::path::Path,
        config: crate::ServeConfig,
    ) -> Result<Self, facenet::Error> {
        let read = |p: &std::path::PathBuf| -> Result<(String, Vec<u8>), facenet::Error> {
            let name = p
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            let bytes = std::fs::read(p).map_err(|source| facenet::Error::Io {
                path: p.clone(),
                source,
            })?;
            Ok((name, bytes))
        };
        let photos = facenet::files::walk_images(&dir.join("val"))?
            .iter()
            .map(read)
            .collect::<Result<Vec<_>, _>>()?;
        if photos.is_empty() {
            return Err(facenet::Error::BadImage {
                path: dir.join("val"),
                reason: "no photos to send".into(),
            });
        }
        let mut enrol = Vec::new();
        for f in facenet::files::walk_images(&dir.join("train"))? {
            let person = f.parent().and_then(|d| d.file_name()).unwrap_or_default();
            let (name, bytes) = read(&f)?;
            enrol.push((person.to_string_lossy().into_owned(), name, bytes));
        }
        Ok(Self {
            photos,
            enrol,
            routes: vec!["/api/v1/embed".into(), "/api/v1/identify".into()],
            clients: vec![1, 16, 256],
            requests: 160,
            max_time: Duration::from_secs(120),
            config,
            synthetic_faces: vec![0],
        })
    }
}

impl ServeBench {
    /// Keeps the first `n` photos of each person to enrol (0: all).
    pub fn keep_per_person(&mut self, n: usize) {
        if n == 0 {
            return;
        }
        let mut seen: std::collections::HashMap<String, usize> = Default::default();
        self.enrol.retain(|(person, _, _)| {
            let k = seen.entry(person.clone()).or_default();
            *k += 1;
            *k <= n
        });
    }
}

/// Faces per second of the library alone on `photos`: detection and alignment of each, then
/// the network at batch 8 over all crops.
pub fn direct_faces_per_s(
    pipeline: &facenet::pipeline::FacePipeline,
    photos: &[(String, Vec<u8>)],
) -> Result<f64, facenet::Error> {
    let start = Instant::now();
    let mut crops = Vec::new();
    for (name, bytes) in photos {
        let img = pipeline.decode(bytes, std::path::Path::new(name))?;
        if let Some(det) = pipeline.detector() {
            for d in det.detect(&img)? {
                crops.push(facenet::align::align(&img, &d, pipeline.align_config())?);
            }
        }
    }
    for chunk in crops.chunks(8) {
        pipeline.embedder().embed(chunk)?;
    }
    Ok(crops.len() as f64 / start.elapsed().as_secs_f64())
}

/// Starts the service in this process on a free loopback port, once per size of
/// `bench.synthetic_faces`, over a new SQLite file each time: enrols `bench.enrol`, adds the
/// synthetic faces, then runs the clients against each route, and a single client after the
/// largest run (does it recover?). The library alone is measured once. Returns the table.
pub fn serve_bench(
    pipeline: facenet::pipeline::FacePipeline,
    bench: &ServeBench,
) -> Result<String, crate::ServeError> {
    use facenet_gallery::tenants::create_key;
    let mut config = bench.config.clone();
    config.listen = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    let mut pipeline = Some(pipeline);
    let mut direct = None;
    let mut shared: Option<Arc<facenet::pipeline::FacePipeline>> = None;
    let mut reports = Vec::new();
    let dir = std::env::temp_dir().join(format!("facenet-bench-serve-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let sizes = if bench.synthetic_faces.is_empty() {
        vec![0]
    } else {
        bench.synthetic_faces.clone()
    };
    for (i, &extra) in sizes.iter().enumerate() {
        let store = Arc::new(facenet_gallery::SqliteGallery::open(
            &dir.join(format!("gallery-{i}.db")),
        )?);
        let (_, key) = create_key(
            store.as_ref(),
            "bench",
            facenet_gallery::Role::Write,
            "bench",
        )?;
        // One pipeline (and batcher) for every size: the first state starts it.
        let st = match (&shared, pipeline.take()) {
            (Some(p), _) => {
                crate::AppState::with_pipeline(p.clone(), store.clone(), config.clone())
            }
            (None, Some(p)) => {
                let st = crate::AppState::new(p, store.clone(), config.clone())?;
                st.pipeline().warm_up();
                direct_faces_per_s(st.pipeline(), &bench.photos)?; // warm-up of every shape
                direct = Some(direct_faces_per_s(st.pipeline(), &bench.photos)?);
                shared = Some(st.pipeline().clone());
                st
            }
            (None, None) => unreachable!("the pipeline is taken by the first size"),
        };
        let runtime = crate::runtime(&bench.config)?;
        let model = {
            let m = st.pipeline().embedder().metadata();
            facenet_gallery::ModelInfo {
                fingerprint: m.fingerprint.clone(),
                dim: m.config.embedding_dim,
            }
        };
        let gallery: Arc<dyn facenet_gallery::GalleryStore> = Arc::new(store.gallery("bench")?);
        let found: Result<Vec<LoadReport>, crate::ServeError> = runtime.block_on(async {
            let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
            let url = format!("http://{}", listener.local_addr()?);
            tokio::spawn(axum::serve(listener, crate::router(st.clone())).into_future());
            let client = reqwest::Client::new();
            for (subject, name, bytes) in &bench.enrol {
                let part = reqwest::multipart::Part::bytes(bytes.clone()).file_name(name.clone());
                let resp = client
                    .post(format!("{url}/api/v1/subjects/{subject}/faces"))
                    .header(crate::API_KEY_HEADER, &key)
                    .multipart(reqwest::multipart::Form::new().part("file", part))
                    .send()
                    .await;
                if !resp.is_ok_and(|r| r.status().is_success()) {
                    tracing::warn!("bench: enrolling {name} as {subject} failed");
                }
            }
            let g = gallery.clone();
            tokio::task::spawn_blocking(move || {
                facenet_gallery::synthetic::add_synthetic(g.as_ref(), &model, extra)
            })
            .await
            .map_err(std::io::Error::other)??;
            let faces = gallery.identities()?.iter().map(|i| i.1).sum();
            // The service reads the gallery (and builds its graph) once, before the runs.
            let warm = st.clone();
            tokio::task::spawn_blocking(move || {
                warm.recognizer("bench")?.searcher(None, None).map(drop)
            })
            .await
            .map_err(std::io::Error::other)??;
            let mut reports = Vec::new();
            for route in &bench.routes {
                let route = route.as_str();
                for &clients in &bench.clients {
                    let load = Load {
                        url: url.clone(),
                        key: key.clone(),
                        route: route.into(),
                        clients,
                        requests: bench.requests.max(2 * clients),
                        max_time: bench.max_time,
                    };
                    let mut r = run(&load, &bench.photos).await;
                    r.gallery_faces = faces;
                    reports.push(r);
                }
                let after = Load {
                    url: url.clone(),
                    key: key.clone(),
                    route: route.into(),
                    clients: 1,
                    requests: 8,
                    max_time: bench.max_time,
                };
                let mut recovered = run(&after, &bench.photos).await;
                recovered.route = format!("{route} (after)");
                recovered.gallery_faces = faces;
                reports.push(recovered);
            }
            Ok(reports)
        });
        reports.extend(found?);
        drop(runtime);
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(table(direct.unwrap_or(0.0), &reports))
}
