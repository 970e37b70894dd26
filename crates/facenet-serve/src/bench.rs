//! `facenet bench serve`: concurrent clients against a running service, and the same photos
//! through the library directly (detection, then the network at batch 8), in one run.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// One load run.
#[derive(Debug, Clone)]
pub struct Load {
    /// Base URL, e.g. `http://127.0.0.1:8080`.
    pub url: String,
    /// The `x-api-key`.
    pub key: String,
    /// `/api/v1/embed` or `/api/v1/identify`.
    pub route: String,
    /// Concurrent clients.
    pub clients: usize,
    /// Requests in all (bounded).
    pub requests: usize,
    /// Longest the run may take.
    pub max_time: Duration,
}

/// What a load run measured.
#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    /// The route.
    pub route: String,
    /// Faces in the gallery searched (the sample's and the synthetic ones).
    pub gallery_faces: usize,
    /// Concurrent clients.
    pub clients: usize,
    /// Requests answered 2xx.
    pub ok: usize,
    /// Requests shed by design (429, 503).
    pub shed: usize,
    /// Other failures (4xx, 5xx, connection errors).
    pub errors: usize,
    /// Faces in the 2xx answers.
    pub faces: usize,
    /// Wall time, seconds.
    pub seconds: f64,
    /// Median latency of 2xx answers, ms.
    pub p50_ms: f64,
    /// 99th percentile latency of 2xx answers, ms.
    pub p99_ms: f64,
    /// Median latency of shed answers, ms (how fast load is refused).
    pub shed_p50_ms: f64,
    /// Resident memory of the process (service and clients), MiB: before the run, then at a
    /// quarter, half, three quarters and the end of it (a leak keeps rising; a working set
    /// levels off).
    pub rss_mib: Vec<f64>,
    /// Bytes the allocator has handed out and not had back (live allocations), MiB, at the
    /// same moments: resident memory far above it is memory the allocator keeps after it
    /// was freed, not memory in use.
    pub heap_mib: Vec<f64>,
}

impl LoadReport {
    /// 2xx answers per second.
    pub fn requests_per_s(&self) -> f64 {
        self.ok as f64 / self.seconds.max(1e-9)
    }

    /// Faces per second in 2xx answers.
    pub fn faces_per_s(&self) -> f64 {
        self.faces as f64 / self.seconds.max(1e-9)
    }
}

fn percentile(v: &mut [f64], q: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * q).round() as usize]
}

/// Runs `load.clients` clients, each sending photos (one per request, in turn) until
/// `load.requests` requests are sent or `load.max_time` has passed.
pub async fn run(load: &Load, photos: &[(String, Vec<u8>)]) -> LoadReport {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(load.clients)
        .timeout(Duration::from_secs(60))
        .build()
        .expect("an HTTP client without TLS builds");
    let next = Arc::new(AtomicUsize::new(0));
    let photos: Arc<Vec<(String, Vec<u8>)>> = Arc::new(photos.to_vec());
    let start = Instant::now();
    let deadline = start + load.max_time;
    // Resident memory once a second while the clients run.
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let done = done.clone();
        tokio::spawn(async move {
            let mut samples = vec![(facenet::bench::rss_mib(), heap_in_use_mib())];
            while !done.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_secs(1)).await;
                samples.push((facenet::bench::rss_mib(), heap_in_use_mib()));
            }
            samples
        })
    };
    let mut tasks = Vec::new();
    for _ in 0..load.clients.max(1) {
        let (client, next, photos) = (client.clone(), next.clone(), photos.clone());
        let url = format!("{}{}", load.url.trim_end_matches('/'), load.route);
        let (key, total) = (load.key.clone(), load.requests);
        tasks.push(tokio::spawn(async move {
            let mut r = (Vec::new(), Vec::new(), 0usize, 0usize);
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total || Instant::now() >= deadline {
                    return r;
                }
                let (name, bytes) = &photos[i % photos.len()];
                let part = reqwest::multipart::Part::bytes(bytes.clone()).file_name(name.clone());
                let form = reqwest::multipart::Form::new().part("file", part);
                let t = Instant::now();
                let resp = client
                    .post(&url)
                    .header(crate::API_KEY_HEADER, &key)
                    .multipart(form)
                    .send()
                    .await;
                let ms = t.elapsed().as_secs_f64() * 1e3;
                match resp {
                    Ok(resp) if resp.status().is_success() => {
                        let faces = resp
                            .json::<serde_json::Value>()
                            .await
                            .ok()
                            .and_then(|v| v["images"][0]["faces"].as_array().map(Vec::len))
                            .unwrap_or(0);
                        r.0.push(ms);
                        r.2 += faces;
                    }
                    Ok(resp) if matches!(resp.status().as_u16(), 429 | 503) => r.1.push(ms),
                    _ => r.3 += 1,
                }
            }
        }));
    }
    let (mut ok, mut shed, mut faces, mut errors) = (Vec::new(), Vec::new(), 0, 0);
    for t in tasks {
        match t.await {
            Ok((o, s, f, e)) => {
                ok.extend(o);
                shed.extend(s);
                faces += f;
                errors += e;
            }
            Err(_) => errors += 1,
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    done.store(true, Ordering::Relaxed);
    let samples = sampler.await.unwrap_or_default();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    let quarters: Vec<(f64, f64)> = if samples.is_empty() {
        Vec::new()
    } else {
        [0.0, 0.25, 0.5, 0.75, 1.0].map(at).to_vec()
    };
    LoadReport {
        route: load.route.clone(),
        gallery_faces: 0,
        clients: load.clients,
        ok: ok.len(),
        shed: shed.len(),
        errors,
        faces,
        seconds,
        p50_ms: percentile(&mut ok, 0.5),
        p99_ms: percentile(&mut ok, 0.99),
        shed_p50_ms: percentile(&mut shed, 0.5),
        rss_mib: quarters.iter().map(|q| q.0).collect(),
        heap_mib: quarters.iter().map(|q| q.1).collect(),
    }
}

/// Live heap allocations of this process, MiB (glibc's `mallinfo2`: bytes in use in the
/// arenas plus mmapped blocks); 0 where the C library is not glibc.
pub fn heap_in_use_mib() -> f64 {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallinfo2 only reads the allocator's counters.
        let m = unsafe { libc::mallinfo2() };
        (m.uordblks + m.hblkhd) as f64 / (1024.0 * 1024.0)
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        0.0
    }
}

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
