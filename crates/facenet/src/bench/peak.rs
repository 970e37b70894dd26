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

/// Multiply-adds per second of each product instruction this CPU has (AVX-512 F `vfmadd231ps`,
/// AVX-512 BF16 `vdpbf16ps`, AVX-512 VNNI `vpdpbusd`, Intel AMX's `tdpbf16ps` and `tdpbusd`
/// on tiles; on AVX2 CPUs without AVX-512 the AVX2
/// `vfmadd231ps` and the int8 kernel's `vpmaddubsw` + `vpmaddwd` pair), each on `threads`
/// threads: which reduced precision pays on this CPU. One `(instruction, GMAC/s)` per
/// instruction present.
pub fn dot_peaks(threads: usize) -> Vec<(&'static str, f64)> {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        // ~0.1 s of FMAs, ~0.4 s of the slowest dot product here.
        let iters = 40_000_000u64;
        let rate = |iters: u64, macs_per_iter: f64, f: fn(u64) -> f32| {
            std::thread::scope(|s| {
                for _ in 0..threads {
                    s.spawn(|| f(iters / 10));
                }
            });
            let t = Instant::now();
            std::thread::scope(|s| {
                for _ in 0..threads {
                    s.spawn(|| f(iters));
                }
            });
            threads as f64 * iters as f64 * macs_per_iter / t.elapsed().as_secs_f64() / 1e9
        };
        let mut out = Vec::new();
        if has!("avx512f") {
            // SAFETY (all three): the feature was detected just before.
            out.push((
                "f32 vfmadd231ps",
                rate(iters, 12.0 * 16.0, |n| unsafe { x86::fma512(n) }),
            ));
            if has!("avx512bf16") {
                out.push((
                    "bf16 vdpbf16ps",
                    rate(iters, 12.0 * 32.0, |n| unsafe { x86::dpbf16(n) }),
                ));
            }
            if has!("avx512vnni") {
                out.push((
                    "int8 vpdpbusd",
                    rate(iters, 12.0 * 64.0, |n| unsafe { x86::dpbusd(n) }),
                ));
            }
            use crate::fast::{
                TileType, multiply_adds_per_product, tile_peak_loop, tiles_available,
            };
            // Four tile products a round, ~16 cycles each: ~0.1 s.
            let rounds = 1_500_000;
            // SAFETY (both): each runs only where its tiles were found available.
            type Loop = fn(u64) -> f32;
            let tiles: [(TileType, &str, Loop); 2] = [
                (TileType::Bf16, "bf16 tdpbf16ps (AMX)", |n| unsafe {
                    tile_peak_loop(TileType::Bf16, n)
                }),
                (TileType::Int8, "int8 tdpbusd (AMX)", |n| unsafe {
                    tile_peak_loop(TileType::Int8, n)
                }),
            ];
            for (t, name, f) in tiles {
                if tiles_available(t) {
                    out.push((name, rate(rounds, 4.0 * multiply_adds_per_product(t), f)));
                }
            }
        } else if has!("avx2") && has!("fma") {
            // SAFETY (both): the features were detected just before.
            out.push((
                "f32 vfmadd231ps (AVX2)",
                rate(iters, 12.0 * 8.0, |n| unsafe { x86::fma256(n) }),
            ));
            out.push((
                "int8 vpmaddubsw+vpmaddwd (AVX2)",
                rate(iters, 6.0 * 32.0, |n| unsafe { x86::maddubs256(n) }),
            ));
        }
        out
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = threads;
        Vec::new()
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

    /// 12 independent `vdpbf16ps` chains (32 multiply-adds each).
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub unsafe fn dpbf16(iters: u64) -> f32 {
        // SAFETY: `__m512bh` is 32 bf16 values, the layout of 16 i32 lanes.
        let (a, b): (__m512bh, __m512bh) = unsafe {
            (
                std::mem::transmute::<__m512i, __m512bh>(_mm512_set1_epi32(0x3f80_3f80)),
                std::mem::transmute::<__m512i, __m512bh>(_mm512_set1_epi32(0x3380_3380)),
            )
        };
        let mut acc = [_mm512_setzero_ps(); 12];
        for _ in 0..iters {
            for v in &mut acc {
                *v = _mm512_dpbf16_ps(*v, a, b);
            }
        }
        let s = acc[1..].iter().fold(acc[0], |s, v| _mm512_add_ps(s, *v));
        _mm512_reduce_add_ps(std::hint::black_box(s))
    }

    /// 12 independent `vpdpbusd` chains (64 multiply-adds each).
    #[target_feature(enable = "avx512f,avx512vnni")]
    pub unsafe fn dpbusd(iters: u64) -> f32 {
        let (a, b) = (
            _mm512_set1_epi32(0x0101_0101),
            _mm512_set1_epi32(0x0101_0101),
        );
        let mut acc = [_mm512_setzero_si512(); 12];
        for _ in 0..iters {
            for v in &mut acc {
                *v = _mm512_dpbusd_epi32(*v, a, b);
            }
        }
        let s = acc[1..].iter().fold(acc[0], |s, v| _mm512_add_epi32(s, *v));
        _mm512_reduce_add_epi32(std::hint::black_box(s)) as f32
    }

    /// 6 independent chains of the int8 kernel's step: `vpmaddubsw` (32 byte products summed
    /// in pairs), `vpmaddwd` by ones, `vpaddd` (32 multiply-adds per chain and step). The
    /// activations pass through an empty `asm` each step so that the products are not
    /// hoisted out of the loop.
    #[target_feature(enable = "avx2")]
    pub unsafe fn maddubs256(iters: u64) -> f32 {
        let mut x = _mm256_set1_epi8(3);
        let ones = _mm256_set1_epi16(1);
        let w: [__m256i; 6] = std::array::from_fn(|i| _mm256_set1_epi8(-(i as i8) - 1));
        let mut acc = [_mm256_setzero_si256(); 6];
        for _ in 0..iters {
            for (v, w) in acc.iter_mut().zip(&w) {
                let p = _mm256_madd_epi16(_mm256_maddubs_epi16(x, *w), ones);
                *v = _mm256_add_epi32(*v, p);
            }
            // SAFETY: an empty instruction string; `x` only passes through a register.
            unsafe { std::arch::asm!("/* {0} */", inout(ymm_reg) x, options(nomem, nostack)) };
        }
        let s = acc[1..].iter().fold(acc[0], |s, v| _mm256_add_epi32(s, *v));
        _mm256_extract_epi32::<0>(std::hint::black_box(s)) as f32
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

#[cfg(test)]
mod tests {
    /// On a CPU with AMX the header has both tile rows, each well above the AVX-512
    /// instruction of its data type (one tile product does 256 times its multiply-adds, at a
    /// sixteenth of its issue rate or better).
    #[test]
    #[ignore = "needs Intel AMX (AMX-TILE, AMX-BF16, AMX-INT8): `cargo test --release -- --ignored amx` where the CPU has it"]
    fn amx_tile_peaks_are_measured_and_beat_the_vector_units() {
        let peaks = super::dot_peaks(1);
        let rate = |name: &str| {
            peaks
                .iter()
                .find(|(n, _)| *n == name)
                .map(|p| p.1)
                .unwrap_or_else(|| panic!("no {name} in {peaks:?}"))
        };
        assert!(
            rate("bf16 tdpbf16ps (AMX)") > 2.0 * rate("bf16 vdpbf16ps"),
            "{peaks:?}"
        );
        assert!(
            rate("int8 tdpbusd (AMX)") > 2.0 * rate("int8 vpdpbusd"),
            "{peaks:?}"
        );
    }
}
