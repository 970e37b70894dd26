//! Measurement helpers of `facenet bench`: the machine's FP32 peak, timed loops with a median,
//! peak memory.
//!
//! ```text
//! facenet bench embed --batch 1,8,32
//! ```

pub mod peak;
pub mod recall;
pub mod report;

use std::time::{Duration, Instant};

/// Peak resident set size of this process (VmHWM), in MiB; 0 where /proc is absent.
pub fn peak_rss_mib() -> f64 {
    status_mib("VmHWM:")
}

/// Resident set size of this process now (VmRSS), in MiB; 0 where /proc is absent.
pub fn rss_mib() -> f64 {
    status_mib("VmRSS:")
}

/// A `kB` line of /proc/self/status, in MiB.
fn status_mib(key: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

/// Calls `f` (which processes `items` items) through a warm-up of at least two calls and one
/// second, then `runs` timed runs of at least `min_run_s` seconds each; returns the median
/// rate in items per second.
pub fn median_rate<E>(
    runs: usize,
    min_run_s: f64,
    items: usize,
    mut f: impl FnMut() -> Result<(), E>,
) -> Result<f64, E> {
    let t = Instant::now();
    let mut calls = 0;
    while calls < 2 || t.elapsed() < Duration::from_secs(1) {
        f()?;
        calls += 1;
    }
    let mut rates = Vec::new();
    for _ in 0..runs.max(1) {
        let t = Instant::now();
        let mut n = 0;
        while n == 0 || t.elapsed().as_secs_f64() < min_run_s {
            f()?;
            n += 1;
        }
        rates.push((items * n) as f64 / t.elapsed().as_secs_f64());
    }
    rates.sort_by(f64::total_cmp);
    Ok(rates[rates.len() / 2])
}

/// The median of `runs` timings of `f`, in milliseconds.
pub fn median_ms<E>(runs: usize, mut f: impl FnMut() -> Result<(), E>) -> Result<f64, E> {
    let mut times = Vec::new();
    for _ in 0..runs.max(1) {
        let t = Instant::now();
        f()?;
        times.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

/// Images per second of the embedding network's forward pass on a ready random
/// `[batch, 3, size, size]` input (the span ONNX Runtime's benchmark times): the median of
/// `runs` runs of at least `min_run_s` seconds, after a warm-up ([`median_rate`]).
pub fn embed_throughput(
    embedder: &crate::Embedder,
    batch: usize,
    size: usize,
    (runs, min_run_s): (usize, f64),
) -> crate::Result<f64> {
    let mut pass = random_batch_pass(embedder, batch, size);
    median_rate(runs, min_run_s, batch, &mut pass)
}

/// One forward pass of a fixed random standard-normal `[batch, 3, size, size]` input, as
/// often as called (the input is made once).
fn random_batch_pass(
    embedder: &crate::Embedder,
    batch: usize,
    size: usize,
) -> impl FnMut() -> crate::Result<()> + '_ {
    let dist = burn::tensor::Distribution::Normal(0.0, 1.0);
    let input = burn::tensor::Tensor::<4>::random([batch, 3, size, size], dist, embedder.device());
    move || {
        embedder
            .forward_raw(input.clone())
            .map(|out| drop(std::hint::black_box(out)))
    }
}

/// Runs batches of `batch` random images for at least `seconds` (and at least two batches),
/// timing each one: the passes over which `bench embed --layers` reads its per-convolution
/// timers, and whose spread `bench embed --pass-times` prints. Returns each batch's time.
pub fn embed_passes(
    embedder: &crate::Embedder,
    batch: usize,
    size: usize,
    seconds: f64,
) -> crate::Result<Vec<Duration>> {
    let mut pass = random_batch_pass(embedder, batch, size);
    let start = Instant::now();
    let mut times = Vec::new();
    while times.len() < 2 || start.elapsed().as_secs_f64() < seconds {
        let t = Instant::now();
        pass()?;
        times.push(t.elapsed());
    }
    Ok(times)
}

/// End to end, one photo after another: each file read and decoded, its faces detected,
/// aligned and embedded ([`crate::pipeline::FacePipeline::faces_in_file`]). Returns photos
/// and faces per second, each the median of `runs` passes over `files` (after one pass to
/// warm up).
pub fn photos_throughput(
    pipeline: &crate::pipeline::FacePipeline,
    files: &[std::path::PathBuf],
    runs: usize,
) -> crate::Result<(f64, f64)> {
    let mut faces = 0usize;
    let mut pass = || -> crate::Result<()> {
        faces = 0;
        for f in files {
            faces += pipeline.faces_in_file(f)?.len();
        }
        Ok(())
    };
    pass()?;
    let ms = median_ms(runs, &mut pass)?;
    let per_s = 1000.0 / ms;
    Ok((files.len() as f64 * per_s, faces as f64 * per_s))
}

/// The photos under `dir`, sorted; none is an error that names the folder.
pub fn photo_list(dir: &std::path::Path) -> crate::Result<Vec<std::path::PathBuf>> {
    let mut files = crate::files::walk_images(dir)?;
    files.sort();
    if files.is_empty() {
        return Err(crate::Error::InvalidArgument {
            field: "photos",
            reason: format!("{}: no photos", dir.display()),
        });
    }
    Ok(files)
}

/// [`photos_throughput`] at one size: `native` (the files as they are) or `WxH` (each photo
/// enlarged to that size and written as a JPEG first, into a folder of this process that is
/// removed afterwards). Returns the photos timed and their photos and faces per second.
pub fn photos_at_size(
    pipeline: &crate::pipeline::FacePipeline,
    files: &[std::path::PathBuf],
    size: &str,
    runs: usize,
) -> crate::Result<(usize, f64, f64)> {
    if size == "native" {
        let (p, f) = photos_throughput(pipeline, files, runs)?;
        return Ok((files.len(), p, f));
    }
    let (w, h) = size
        .split_once('x')
        .and_then(|(w, h)| Some((w.parse::<u32>().ok()?, h.parse::<u32>().ok()?)))
        .filter(|&(w, h)| w > 0 && h > 0)
        .ok_or_else(|| crate::Error::InvalidArgument {
            field: "size",
            reason: format!("`{size}` is neither `native` nor WxH"),
        })?;
    struct Scratch(std::path::PathBuf);
    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let dir = Scratch(std::env::temp_dir().join(format!(
        "facenet-bench-photos-{}-{size}",
        std::process::id()
    )));
    std::fs::create_dir_all(&dir.0).map_err(|e| crate::Error::Io {
        path: dir.0.clone(),
        source: e,
    })?;
    let set = enlarged_photos(files, (w, h), &dir.0)?;
    let (p, f) = photos_throughput(pipeline, &set, runs)?;
    Ok((set.len(), p, f))
}

/// Writes each photo enlarged to `w`x`h` (a triangle filter) as a JPEG of quality 90 into
/// `dir`, as a camera's photos would arrive; returns the files.
pub fn enlarged_photos(
    files: &[std::path::PathBuf],
    (w, h): (u32, u32),
    dir: &std::path::Path,
) -> crate::Result<Vec<std::path::PathBuf>> {
    files
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let img = crate::image::load_rgb(f)?;
            let big = image::imageops::resize(&img, w, h, image::imageops::FilterType::Triangle);
            let dest = dir.join(format!("{i:04}.jpg"));
            let mut out = std::io::BufWriter::new(std::fs::File::create(&dest).map_err(|e| {
                crate::Error::Io {
                    path: dest.clone(),
                    source: e,
                }
            })?);
            image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90)
                .encode_image(&big)
                .map_err(|e| crate::Error::Encode {
                    path: dest.clone(),
                    source: e,
                })?;
            Ok(dest)
        })
        .collect()
}
