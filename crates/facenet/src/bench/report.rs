//! The text `facenet bench embed` prints around its per-batch lines: a header with the
//! network's cost and (on a CPU) the machine's peaks, and a summary table.
//!
//! ```text
//! # model keras-128 input 160x160: 1.417 G multiply-adds (2.834 GFLOP) per image, ...
//! # FP32 peak: 180 GFLOP/s measured (AVX2+FMA FMA loop on 2 threads; ...)
//! # engine auto f32 | batch | img/s | ms/img | GFLOP/s | % of FP32 peak | peak RSS MiB
//! #     1 |   48.06 |  20.81 |   136.2 |  75.8 |    248
//! ```

use super::peak::{self, Peak};

/// The header's lines and the peak the table's share column is measured against: the
/// network's multiply-adds per image and the thread count, then on a CPU run (`cpu`) the
/// measured FP32 peak and the multiply-add peak of each instruction family this CPU has. A
/// GPU run prints no CPU peaks; they would say nothing about it.
pub fn embed_header(
    (model, image_size, macs): (&str, usize, u64),
    threads: usize,
    cpu: bool,
) -> (Vec<String>, Option<Peak>) {
    let mut lines = vec![format!(
        "# model {model} input {image_size}x{image_size}: {:.3} G multiply-adds ({:.3} GFLOP) \
         per image, counted from the layer shapes; threads: {threads}",
        macs as f64 / 1e9,
        2.0 * macs as f64 / 1e9,
    )];
    let peak = cpu.then(|| peak::measure(threads));
    if let Some(peak) = &peak {
        lines.push(format!("# {peak}"));
        let dots = peak::dot_peaks(threads);
        if let Some((_, f32_rate)) = dots.first() {
            let cells: Vec<String> = dots
                .iter()
                .map(|(name, r)| format!("{name} {r:.0} GMAC/s ({:.2}x)", r / f32_rate))
                .collect();
            lines.push(format!(
                "# multiply-add peaks on {threads} threads: {}",
                cells.join(", ")
            ));
        }
    }
    (lines, peak)
}

/// The number after `key=` in a line of `key=value` fields (`img_per_s=48.06`).
fn field(line: &str, key: &str) -> Option<f64> {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
}

/// One batch size's result.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EmbedRow {
    /// Images per call.
    pub batch: usize,
    /// Images per second (the worker's median run).
    pub img_per_s: f64,
    /// The worker process's peak resident memory.
    pub peak_rss_mib: f64,
}

impl EmbedRow {
    /// The row a worker's `embed batch=B img_per_s=X peak_rss_mib=Y ...` line reports, if
    /// the line is one.
    pub fn parse(batch: usize, line: &str) -> Option<Self> {
        Some(Self {
            batch,
            img_per_s: field(line, "img_per_s")?,
            peak_rss_mib: field(line, "peak_rss_mib").unwrap_or(0.0),
        })
    }
}

/// The summary table under `title` (engine and precision): per batch size images per second,
/// milliseconds per image, GFLOP/s from `macs` multiply-adds per image, with a peak the share
/// of it, and peak resident memory.
pub fn embed_table(title: &str, macs: u64, peak: Option<&Peak>, rows: &[EmbedRow]) -> Vec<String> {
    let share_column = if peak.is_some() {
        " | % of FP32 peak"
    } else {
        ""
    };
    let mut lines = vec![format!(
        "# {title} | batch | img/s | ms/img | GFLOP/s{share_column} | peak RSS MiB"
    )];
    for r in rows {
        let gflops = r.img_per_s * 2.0 * macs as f64 / 1e9;
        let share = peak
            .map(|p| format!(" | {:>5.1}", 100.0 * gflops / p.gflops))
            .unwrap_or_default();
        lines.push(format!(
            "# {:>5} | {:>7.2} | {:>6.2} | {gflops:>7.1}{share} | {:>6.0}",
            r.batch,
            r.img_per_s,
            1000.0 / r.img_per_s,
            r.peak_rss_mib
        ));
    }
    lines
}

/// The nearest-rank `q` quantile (0 to 1) of `sorted` (ascending): the smallest value with at
/// least a share `q` of the values at or below it; 0 when there are none. The service
/// benchmark's latencies and [`pass_time_line`] both use it.
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len().max(1));
    sorted.get(rank - 1).copied().unwrap_or(0.0)
}

/// One line on how long single passes took (`times`, one per batch of `batch` images): the
/// nearest-rank 10th, 50th, 90th and 99th percentiles and the longest, in milliseconds. A
/// host that slows every pass alike moves the 10th percentile with the median; a few long
/// passes (a thread away, another process's burst) move only the 99th and the longest.
pub fn pass_time_line(batch: usize, times: &[std::time::Duration]) -> String {
    let mut ms: Vec<f64> = times.iter().map(|t| t.as_secs_f64() * 1000.0).collect();
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| percentile(&ms, q);
    format!(
        "# pass times, batch {batch}: {} passes, ms p10 {:.2} | p50 {:.2} | p90 {:.2} | p99 {:.2} | max {:.2}",
        ms.len(),
        at(0.10),
        at(0.50),
        at(0.90),
        at(0.99),
        ms.last().copied().unwrap_or(0.0),
    )
}

/// `bench embed --layers`: the timed convolutions ([`crate::Embedder::layer_times`]) summed
/// by geometry, input map and path (Block17's ten 1x1 projections make one row), slowest
/// first, each row with its share of the timed total, milliseconds per pass, calls per pass
/// and the rate of its multiply-adds. `passes` are the forward passes timed (over all image
/// groups of a batch); `batch` only labels the table.
///
/// ```text
/// # layers, batch 1: share | ms/pass | GFLOP/s | calls/pass | convolution (kernel/stride in->out channels on the input map)
/// #  13.0 % |  1.669 |   175.9 |   10 | 1x1 256->896 on 8x8
/// ```
pub fn layer_table(batch: usize, passes: u64, times: &[crate::fast::LayerTime]) -> Vec<String> {
    use std::collections::BTreeMap;
    let mut rows: BTreeMap<String, (f64, u64, u64)> = BTreeMap::new();
    for t in times.iter().filter(|t| t.calls > 0) {
        let r = rows.entry(t.label()).or_default();
        r.0 += t.seconds;
        r.1 += t.calls;
        r.2 += t.multiply_adds;
    }
    let total: f64 = rows.values().map(|r| r.0).sum();
    let mut rows: Vec<_> = rows.into_iter().collect();
    rows.sort_by(|a, b| b.1.0.total_cmp(&a.1.0).then_with(|| a.0.cmp(&b.0)));
    let passes = passes.max(1) as f64;
    let mut lines = vec![format!(
        "# layers, batch {batch}: share | ms/pass | GFLOP/s | calls/pass | convolution \
         (kernel/stride in->out channels on the input map)"
    )];
    for (label, (seconds, calls, macs)) in rows {
        let share = if total > 0.0 {
            100.0 * seconds / total
        } else {
            0.0
        };
        let gflops = if seconds > 0.0 {
            2.0 * macs as f64 / seconds / 1e9
        } else {
            0.0
        };
        lines.push(format!(
            "# {share:>5.1} % | {:>6.3} | {gflops:>7.1} | {:>4} | {label}",
            1000.0 * seconds / passes,
            (calls as f64 / passes).round()
        ));
    }
    lines.push(format!(
        "# layers, batch {batch}: {:.3} ms per pass in the convolutions, over {passes} passes",
        1000.0 * total / passes
    ));
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_parse_from_worker_lines() {
        let line = "embed batch=8 img_per_s=44.80 peak_rss_mib=300 precision=f32 kernel=avx2-fma";
        let row = EmbedRow::parse(8, line).unwrap();
        assert_eq!((row.img_per_s, row.peak_rss_mib), (44.80, 300.0));
        assert_eq!(EmbedRow::parse(8, "# batch 8: median of 5 runs"), None);
        assert_eq!(
            field("a=1 img_per_s_x=3 img_per_s=2", "img_per_s"),
            Some(2.0)
        );
    }

    /// Passes of 1 to 100 ms (shuffled): the nearest-rank percentiles are 10, 50, 90 and 99
    /// ms, the longest 100; one pass is all of them; none reads zeros, not a panic.
    #[test]
    fn pass_times_give_nearest_rank_percentiles() {
        let ms = |v: u64| std::time::Duration::from_millis(v);
        let times: Vec<_> = (1..=100).map(|i| ms((i * 37) % 100 + 1)).collect();
        assert_eq!(
            pass_time_line(8, &times),
            "# pass times, batch 8: 100 passes, ms p10 10.00 | p50 50.00 | p90 90.00 | p99 99.00 | max 100.00"
        );
        assert!(
            pass_time_line(1, &[ms(7)])
                .ends_with("p10 7.00 | p50 7.00 | p90 7.00 | p99 7.00 | max 7.00")
        );
        assert!(pass_time_line(1, &[]).contains("0 passes, ms p10 0.00"));
        // The service benchmark's latencies: the smallest value with at least q at or below.
        let four = [1.0, 2.0, 3.0, 4.0];
        let got = [0.0, 0.25, 0.26, 0.5, 0.99, 1.0].map(|q| percentile(&four, q));
        assert_eq!(got, [1.0, 1.0, 2.0, 2.0, 4.0, 4.0]);
        assert_eq!(percentile(&[], 0.5), 0.0);
    }

    /// 50 img/s of 1.5 G multiply-adds is 150 GFLOP/s and 20 ms per image; against a 200
    /// GFLOP/s peak, 75 %. Without a peak the share column is left out.
    #[test]
    fn table_derives_its_columns() {
        let rows = [EmbedRow {
            batch: 8,
            img_per_s: 50.0,
            peak_rss_mib: 300.0,
        }];
        let peak = Peak {
            gflops: 200.0,
            isa: "AVX2+FMA",
            flop_per_cycle: 32.0,
            cpuinfo_mhz: None,
            threads: 2,
        };
        let with = embed_table("engine auto f32", 1_500_000_000, Some(&peak), &rows);
        assert_eq!(
            with,
            [
                "# engine auto f32 | batch | img/s | ms/img | GFLOP/s | % of FP32 peak | peak RSS MiB",
                "#     8 |   50.00 |  20.00 |   150.0 |  75.0 |    300",
            ]
        );
        let without = embed_table("engine auto f32", 1_500_000_000, None, &rows);
        assert_eq!(
            without,
            [
                "# engine auto f32 | batch | img/s | ms/img | GFLOP/s | peak RSS MiB",
                "#     8 |   50.00 |  20.00 |   150.0 |    300",
            ]
        );
    }
}
