//! `/metrics` in Prometheus text format: requests by route, method and status; latency
//! histograms by route; faces per forward pass; requests in progress and waiting for the
//! network.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;

use crate::AppState;

/// Upper bounds of the latency histogram, seconds.
pub const LATENCY_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

#[derive(Debug, Default, Clone)]
struct Histogram {
    counts: [u64; LATENCY_BUCKETS.len()],
    count: u64,
    sum: f64,
}

/// The service's counters.
#[derive(Debug, Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, String, u16), u64>>,
    latency: Mutex<BTreeMap<String, Histogram>>,
}

impl Metrics {
    fn observe(&self, route: &str, method: &str, status: u16, seconds: f64) {
        *self
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry((route.into(), method.into(), status))
            .or_default() += 1;
        let mut lat = self.latency.lock().unwrap_or_else(|p| p.into_inner());
        let h = lat.entry(route.into()).or_default();
        h.count += 1;
        h.sum += seconds;
        for (c, b) in h.counts.iter_mut().zip(LATENCY_BUCKETS) {
            if seconds <= b {
                *c += 1;
            }
        }
    }
}

/// Middleware: counts each request under its route template (`/api/v1/subjects/{name}`,
/// never the raw path, so that names do not become labels).
pub async fn record(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let method = req.method().to_string();
    let start = Instant::now();
    let response = next.run(req).await;
    state.metrics.observe(
        &route,
        &method,
        response.status().as_u16(),
        start.elapsed().as_secs_f64(),
    );
    response
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The metrics as Prometheus text.
pub fn render(state: &AppState) -> String {
    let mut out = String::new();
    let m = &state.metrics;
    out.push_str("# HELP facenet_http_requests_total HTTP requests by route, method and status.\n");
    out.push_str("# TYPE facenet_http_requests_total counter\n");
    for ((route, method, status), n) in m.requests.lock().unwrap_or_else(|p| p.into_inner()).iter()
    {
        let _ = writeln!(
            out,
            "facenet_http_requests_total{{route=\"{}\",method=\"{method}\",status=\"{status}\"}} {n}",
            escape(route)
        );
    }
    out.push_str("# HELP facenet_http_request_duration_seconds Request latency by route.\n");
    out.push_str("# TYPE facenet_http_request_duration_seconds histogram\n");
    for (route, h) in m.latency.lock().unwrap_or_else(|p| p.into_inner()).iter() {
        let r = escape(route);
        for (c, b) in h.counts.iter().zip(LATENCY_BUCKETS) {
            let _ = writeln!(
                out,
                "facenet_http_request_duration_seconds_bucket{{route=\"{r}\",le=\"{b}\"}} {c}"
            );
        }
        let _ = writeln!(
            out,
            "facenet_http_request_duration_seconds_bucket{{route=\"{r}\",le=\"+Inf\"}} {}",
            h.count
        );
        let _ = writeln!(
            out,
            "facenet_http_request_duration_seconds_sum{{route=\"{r}\"}} {}",
            h.sum
        );
        let _ = writeln!(
            out,
            "facenet_http_request_duration_seconds_count{{route=\"{r}\"}} {}",
            h.count
        );
    }
    out.push_str(
        "# HELP facenet_requests_in_progress Requests holding a worker slot (at most --queue).\n",
    );
    out.push_str("# TYPE facenet_requests_in_progress gauge\n");
    let _ = writeln!(out, "facenet_requests_in_progress {}", state.in_progress());
    if let Some(b) = state.pipeline().batch_stats() {
        out.push_str("# HELP facenet_embed_queue_depth Requests waiting for the network.\n");
        out.push_str("# TYPE facenet_embed_queue_depth gauge\n");
        let _ = writeln!(out, "facenet_embed_queue_depth {}", b.queued);
        out.push_str("# HELP facenet_embed_faces_total Faces embedded.\n");
        out.push_str("# TYPE facenet_embed_faces_total counter\n");
        let _ = writeln!(out, "facenet_embed_faces_total {}", b.faces);
        out.push_str("# HELP facenet_embed_batch_size Faces per forward pass of the network.\n");
        out.push_str("# TYPE facenet_embed_batch_size histogram\n");
        for (c, le) in b.cumulative.iter().zip(facenet::batch::BATCH_BUCKETS) {
            let _ = writeln!(out, "facenet_embed_batch_size_bucket{{le=\"{le}\"}} {c}");
        }
        let _ = writeln!(
            out,
            "facenet_embed_batch_size_bucket{{le=\"+Inf\"}} {}",
            b.batches
        );
        let _ = writeln!(out, "facenet_embed_batch_size_sum {}", b.faces);
        let _ = writeln!(out, "facenet_embed_batch_size_count {}", b.batches);
    }
    out
}
