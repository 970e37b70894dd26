//! The load generator: concurrent HTTP clients against a running service, with latencies and
//! the process's memory sampled as they run.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use facenet::bench::report::percentile;

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
    ok.sort_by(f64::total_cmp);
    shed.sort_by(f64::total_cmp);
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
        p50_ms: percentile(&ok, 0.5),
        p99_ms: percentile(&ok, 0.99),
        shed_p50_ms: percentile(&shed, 0.5),
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
