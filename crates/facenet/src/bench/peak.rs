//! The machine's FP32 peak, measured: independent fused multiply-add chains on every thread.
//!
//! A benchmark's GFLOP/s means little without the ceiling it is measured against. Nominal
//! figures (cores x FMA units x vector width x clock) depend on a turbo clock the hypervisor
//! hides, so the peak is measured with the widest FMA the CPU has (AVX-512, else AVX2+FMA)
//! and the effective clock is derived from it, assuming two FMA units per core.

use std::time::Instant;

/// A measured peak.
#[derive(Debug, Clone)]
pub struct Peak {
    /// GFLOP/s over all threads.
    pub gflops: f64,
    /// The instruction set used.
    pub isa: &'static str,
    /// FLOP per cycle per core the ISA allows with two FMA units.
    pub flop_per_cycle: f64,
    /// The first `cpu MHz` of /proc/cpuinfo, if any.
    pub cpuinfo_mhz: Option<f64>,
    /// Threads the loop ran on.
    pub threads: usize,
}

impl Peak {
    /// The clock that explains the measurement.
    pub fn ghz(&self, threads: usize) -> f64 {
        self.gflops / (threads as f64 * self.flop_per_cycle)
    }
}

impl std::fmt::Display for Peak {
    /// One line: the peak, how it was measured, and the clock that explains it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let t = self.threads;
        write!(
            f,
            "FP32 peak: {:.0} GFLOP/s measured ({} FMA loop on {t} threads; {:.2} GHz effective = \
             {:.0} GFLOP/s / ({t} cores x {} flop/cycle); /proc/cpuinfo says {})",
            self.gflops,
            self.isa,
            self.ghz(t),
            self.gflops,
            self.flop_per_cycle,
            self.cpuinfo_mhz
                .map_or("nothing".to_string(), |m| format!("{m:.0} MHz")),
        )
    }
}

/// Runs the FMA loop on `threads` threads for about half a second.
pub fn measure(threads: usize) -> Peak {
    let (isa, lanes) = isa();
    let iters = 20_000_000u64;
    // Warm up (clock ramp), then time.
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| fma_loop(iters / 10));
        }
    });
    let t = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| fma_loop(iters));
        }
    });
    let secs = t.elapsed().as_secs_f64();
    // 12 independent vector FMAs per iteration, 2 flop per lane each.
    let flop = threads as f64 * iters as f64 * 12.0 * lanes as f64 * 2.0;
    Peak {
        gflops: flop / secs / 1e9,
        threads,
        isa,
        flop_per_cycle: 2.0 * lanes as f64 * 2.0,
        cpuinfo_mhz: std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("cpu MHz"))
                .and_then(|v| v.trim_start_matches([' ', '\t', ':']).trim().parse().ok())
        }),
    }
}

fn isa() -> (&'static str, usize) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            return ("AVX-512", 16);
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            return ("AVX2+FMA", 8);
        }
    }
    ("scalar", 1)
}

fn fma_loop(iters: u64) -> f32 {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the feature was detected at run time.
            return unsafe { x86::fma512(iters) };
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the features were detected at run time.
            return unsafe { x86::fma256(iters) };
        }
    }
    let mut acc = [1.0f32; 12];
    for _ in 0..iters {
        for a in &mut acc {
            *a = a.mul_add(0.999_999, 1e-7);
        }
    }
    std::hint::black_box(acc.iter().sum())
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    macro_rules! fma_body {
        ($set1:ident, $fmadd:ident, $add:ident, $reduce:expr, $iters:expr) => {{
            let m = $set1(0.999_999);
            let c = $set1(1e-7);
            let mut a = [$set1(1.0); 12];
            for _ in 0..$iters {
                for v in &mut a {
                    *v = $fmadd(*v, m, c);
                }
            }
            let mut s = a[0];
            for v in &a[1..] {
                s = $add(s, *v);
            }
            $reduce(std::hint::black_box(s))
        }};
    }

    #[target_feature(enable = "avx512f")]
    pub unsafe fn fma512(iters: u64) -> f32 {
        fma_body!(
            _mm512_set1_ps,
            _mm512_fmadd_ps,
            _mm512_add_ps,
            |s| _mm512_reduce_add_ps(s),
            iters
        )
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn fma256(iters: u64) -> f32 {
        fma_body!(
            _mm256_set1_ps,
            _mm256_fmadd_ps,
            _mm256_add_ps,
            |s: __m256| {
                let mut out = [0f32; 8];
                // SAFETY: `out` holds 8 floats.
                unsafe { _mm256_storeu_ps(out.as_mut_ptr(), s) };
                out.iter().sum()
            },
            iters
        )
    }
}
