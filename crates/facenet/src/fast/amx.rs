//! Intel AMX tiles (Xeon Sapphire Rapids and later), shared by the bf16 products
//! (`fast/bf16mm.rs`, `tdpbf16ps`) and the int8 ones (`fast/i8mm.rs`, `tdpbusd`).
//!
//! - **Availability** ([`available`]): CPUID's AMX-TILE bit and the data type's (AMX-BF16 or
//!   AMX-INT8), and the kernel's permission for the tile state
//!   (`arch_prctl(ARCH_REQ_XCOMP_PERM)`, Linux 5.16+), asked for once per process.
//! - **One tile configuration** for both ([`configure`], once per thread): all eight tiles
//!   16 rows of 64 bytes. tmm0-3 hold four 16x16 blocks of 32-bit sums, tmm4-5 two blocks
//!   of 16 rows of the left operand, tmm6-7 two right operands. A right operand is 16 rows
//!   of 16 columns x 64 bytes / 16: bf16 pairs, or the four consecutive `k` of an int8 step.
//! - **The int8 product** ([`int8_tile`]): a block of 32 rows x 32 columns. `tdpbusd`
//!   multiplies 16 rows x 64 unsigned bytes by 64 x 16 signed bytes into 16x16 32-bit sums:
//!   16,384 multiply-adds in one instruction, against 64 for one AVX-512 `vpdpbusd`. An int8
//!   weight panel (`[k / 4][16 columns][4]` bytes, `fast/i8mm.rs`) is already a column of
//!   right-operand tiles, 1 KiB per 64 `k`, so the AVX-512 VNNI packing serves AMX with `k`
//!   padded to 64.
//!
//! The AMX intrinsics are not stable in Rust, so the instructions (`ldtilecfg`, `tilezero`,
//! `tileloadd`, `tdpbusd`, `tilestored`) are written as inline assembly. The int8 sums are
//! scaled and stored with the AVX2 instructions the other int8 families use, so every family
//! gives the same outputs bit for bit.
//!
//! The tests cannot run the instructions where the CPU has no AMX. So [`int8_tile`] takes the
//! tile product as a function: in the tests it can be [`emulated_dpbusd`], `tdpbusd`'s
//! definition in plain Rust over the same operands and strides, so that the packing, the
//! blocking and the scaling around it are checked on every machine.

use super::sgemm::{NR, Tile, store};
use std::arch::asm;
use std::arch::x86_64::*;
use std::cell::Cell;
use std::sync::OnceLock;

/// The data type a tile product multiplies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DataType {
    /// `tdpbf16ps` (CPUID AMX-BF16).
    Bf16,
    /// `tdpbusd` (CPUID AMX-INT8).
    Int8,
}

/// Whether this CPU and the operating system run AMX products of `t` (checked once per
/// process).
pub(crate) fn available(t: DataType) -> bool {
    static BF16: OnceLock<bool> = OnceLock::new();
    static INT8: OnceLock<bool> = OnceLock::new();
    let (cell, data_bit) = match t {
        DataType::Bf16 => (&BF16, 22),
        DataType::Int8 => (&INT8, 25),
    };
    *cell.get_or_init(|| {
        // Leaf 7 is read only if the CPU has it.
        let (max, _) = __get_cpuid_max(0);
        if max < 7 {
            return false;
        }
        let edx = __cpuid_count(7, 0).edx;
        let bit = |b: u32| (edx >> b) & 1 == 1;
        bit(24) && bit(data_bit) && permitted()
    })
}

/// Whether the kernel allows the tile state for this process (asked for once).
fn permitted() -> bool {
    static PERMITTED: OnceLock<bool> = OnceLock::new();
    *PERMITTED.get_or_init(permit)
}

/// Asks the kernel to allow the tile state for this process.
#[cfg(target_os = "linux")]
fn permit() -> bool {
    const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
    const XFEATURE_XTILEDATA: libc::c_long = 18;
    // SAFETY: a request about this process's state; no memory is passed.
    unsafe {
        libc::syscall(
            libc::SYS_arch_prctl,
            ARCH_REQ_XCOMP_PERM,
            XFEATURE_XTILEDATA,
        ) == 0
    }
}

/// Elsewhere the tile state is not asked for, and AMX is not used.
#[cfg(not(target_os = "linux"))]
fn permit() -> bool {
    false
}

/// The 64-byte tile configuration (palette 1).
#[repr(C, align(64))]
struct TileConfig {
    palette: u8,
    start_row: u8,
    reserved: [u8; 14],
    colsb: [u16; 16],
    rows: [u8; 16],
}

thread_local! {
    /// Tile registers are configured per thread, once.
    static CONFIGURED: Cell<bool> = const { Cell::new(false) };
}

/// Configures this thread's tiles as the module comment says (once per thread).
///
/// # Safety
/// [`available`] returned true for the data type to be multiplied.
pub(super) unsafe fn configure() {
    if CONFIGURED.get() {
        return;
    }
    let cfg = TileConfig {
        palette: 1,
        start_row: 0,
        reserved: [0; 14],
        colsb: [64, 64, 64, 64, 64, 64, 64, 64, 0, 0, 0, 0, 0, 0, 0, 0],
        rows: [16, 16, 16, 16, 16, 16, 16, 16, 0, 0, 0, 0, 0, 0, 0, 0],
    };
    // SAFETY: the CPU has AMX and the kernel allows its state (caller's contract); `cfg` is a
    // valid palette-1 configuration.
    unsafe {
        asm!("ldtilecfg [{}]", in(reg) &cfg as *const TileConfig, options(nostack));
    }
    CONFIGURED.set(true);
}

/// The operands of one int8 tile product: 32 rows of `64 * kb` unsigned bytes at `a` (stride
/// `lda` bytes), and two weight panels `b0` and `b1` of `kb` tiles (16 steps x [`NR`]
/// columns x 4 bytes, 1 KiB each).
#[derive(Clone, Copy)]
pub(super) struct Int8Operands {
    pub(super) a: *const u8,
    pub(super) lda: usize,
    pub(super) b0: *const i8,
    pub(super) b1: *const i8,
    pub(super) kb: usize,
}

/// A tile product: `c[r][j]` (32 x 32, row stride 32) = the 32-bit sums of `o`'s row `r`
/// times column `j` (`b0`'s columns, then `b1`'s).
pub(super) type Int8Product = unsafe fn(o: Int8Operands, c: *mut i32);

/// Defines `$name`, the 32x32 tile product on the instruction `$dp`: `c` (32 rows of 32
/// 32-bit sums at stride `ldc` bytes) = `a` (32 rows of 64 bytes per step, at stride `lda`
/// bytes) times two right operands `b0` and `b1` (one 1 KiB tile per step), over `steps`
/// steps. Per step: two left tiles (16 rows each), two right ones, and four products.
macro_rules! tile_product_32x32 {
    ($(#[$doc:meta])* $name:ident, $dp:literal) => {
        $(#[$doc])*
        ///
        /// # Safety
        /// Tiles configured on this thread ([`configure`]) for a data type found available;
        /// the pointers cover the sizes above.
        pub(super) unsafe fn $name(
            a: *const u8,
            lda: usize,
            b0: *const u8,
            b1: *const u8,
            steps: usize,
            c: *mut u8,
            ldc: usize,
        ) {
            // SAFETY: forwarded from the caller; every load and store stays in the operands.
            unsafe {
                asm!(
                    "tilezero tmm0",
                    "tilezero tmm1",
                    "tilezero tmm2",
                    "tilezero tmm3",
                    options(nostack)
                );
                for t in 0..steps {
                    asm!(
                        "tileloadd tmm4, [{a0} + {sa}*1]",
                        "tileloadd tmm5, [{a1} + {sa}*1]",
                        "tileloadd tmm6, [{b0} + {sb}*1]",
                        "tileloadd tmm7, [{b1} + {sb}*1]",
                        concat!($dp, " tmm0, tmm4, tmm6"),
                        concat!($dp, " tmm1, tmm4, tmm7"),
                        concat!($dp, " tmm2, tmm5, tmm6"),
                        concat!($dp, " tmm3, tmm5, tmm7"),
                        a0 = in(reg) a.add(t * 64),
                        a1 = in(reg) a.add(16 * lda + t * 64),
                        b0 = in(reg) b0.add(t * 1024),
                        b1 = in(reg) b1.add(t * 1024),
                        sa = in(reg) lda,
                        sb = in(reg) 64usize,
                        options(nostack)
                    );
                }
                asm!(
                    "tilestored [{c0} + {sc}*1], tmm0",
                    "tilestored [{c1} + {sc}*1], tmm1",
                    "tilestored [{c2} + {sc}*1], tmm2",
                    "tilestored [{c3} + {sc}*1], tmm3",
                    c0 = in(reg) c,
                    c1 = in(reg) c.add(64),
                    c2 = in(reg) c.add(16 * ldc),
                    c3 = in(reg) c.add(16 * ldc + 64),
                    sc = in(reg) ldc,
                    options(nostack)
                );
            }
        }
    };
}

tile_product_32x32!(
    /// bf16 (`tdpbf16ps`): a step is 32 `k` of bf16 pairs; f32 sums.
    bf16_32x32,
    "tdpbf16ps"
);
tile_product_32x32!(
    /// int8 (`tdpbusd`): a step is 64 `k` of unsigned by signed bytes; 32-bit integer sums.
    int8_32x32,
    "tdpbusd"
);

/// [`Int8Product`] on AMX ([`int8_32x32`]).
///
/// # Safety
/// [`available`] is true for [`DataType::Int8`]; the operands cover the sizes of
/// [`Int8Operands`]; `c` holds 32 rows of 32.
pub(super) unsafe fn dpbusd(o: Int8Operands, c: *mut i32) {
    // SAFETY: forwarded from the caller (rows of 32 sums are 128 bytes).
    unsafe {
        configure();
        int8_32x32(o.a, o.lda, o.b0.cast(), o.b1.cast(), o.kb, c.cast(), 32 * 4);
    }
}

/// Multiply-adds per tile product of `t`: 16 rows x 16 columns x 64 bytes of `k`, that is 64
/// int8 or 32 bf16 values.
pub(crate) fn multiply_adds_per_product(t: DataType) -> f64 {
    match t {
        DataType::Bf16 => (16 * 16 * 32) as f64,
        DataType::Int8 => (16 * 16 * 64) as f64,
    }
}

/// `iters` rounds of four independent tile products of `t` on zeroed tiles, with no memory
/// touched in the loop: the tiles' own rate, for `facenet bench embed`'s header (4 x
/// [`multiply_adds_per_product`] a round). Returns a value that depends on the work.
///
/// # Safety
/// [`available`] is true for `t`.
pub(crate) unsafe fn peak_loop(t: DataType, iters: u64) -> f32 {
    // SAFETY: the CPU and kernel run `t`'s tiles (caller's contract); only tile registers are
    // touched until the store into `out`, 16 rows of 64 bytes.
    unsafe {
        configure();
        asm!(
            "tilezero tmm0",
            "tilezero tmm1",
            "tilezero tmm2",
            "tilezero tmm3",
            "tilezero tmm4",
            "tilezero tmm5",
            "tilezero tmm6",
            "tilezero tmm7",
            options(nostack, nomem)
        );
        macro_rules! rounds {
            ($dp:literal) => {
                for _ in 0..iters {
                    asm!(
                        concat!($dp, " tmm0, tmm4, tmm6"),
                        concat!($dp, " tmm1, tmm4, tmm7"),
                        concat!($dp, " tmm2, tmm5, tmm6"),
                        concat!($dp, " tmm3, tmm5, tmm7"),
                        options(nostack, nomem)
                    );
                }
            };
        }
        match t {
            DataType::Bf16 => rounds!("tdpbf16ps"),
            DataType::Int8 => rounds!("tdpbusd"),
        }
        let mut out = [0u32; 16 * 16];
        asm!(
            "tilestored [{c} + {s}*1], tmm0",
            c = in(reg) out.as_mut_ptr(),
            s = in(reg) 64usize,
            options(nostack)
        );
        std::hint::black_box(out)[0] as f32
    }
}

/// [`Int8Product`] as Intel defines `tdpbusd` (for each 32-bit lane of the result, the sum
/// of four products of an unsigned byte of A's row by a signed byte of B's 4-byte group),
/// over the same tiles and strides as [`dpbusd`], in plain Rust.
///
/// # Safety
/// As [`dpbusd`], without the CPU's part.
#[cfg(test)]
pub(super) unsafe fn emulated_dpbusd(o: Int8Operands, c: *mut i32) {
    for r in 0..32 {
        for j in 0..32 {
            let (b, col) = if j < 16 { (o.b0, j) } else { (o.b1, j - 16) };
            let mut sum = 0i32;
            for t in 0..o.kb {
                for step in 0..16 {
                    for q in 0..4 {
                        // SAFETY: row r's byte `64 t + 4 step + q` and the tile's byte lie in
                        // the operands (caller's contract).
                        let (x, w) = unsafe {
                            (
                                *o.a.add(r * o.lda + t * 64 + 4 * step + q),
                                *b.add(t * 1024 + step * 64 + col * 4 + q),
                            )
                        };
                        sum = sum.wrapping_add(i32::from(x) * i32::from(w));
                    }
                }
            }
            // SAFETY: `c` holds 32 rows of 32 (caller's contract).
            unsafe { *c.add(r * 32 + j) = sum };
        }
    }
}

/// `t (+)= beta * deq * (a x b)` for a block of up to 32 rows (`t.mr`) and 32 columns
/// (`t.nr`), the sums from `product`, scaled (`deq`: one factor per column, 32 where
/// `t.nr > 16`) and stored as the other int8 families scale and store theirs. All 32 rows are
/// multiplied; those past `t.mr` are not stored.
///
/// # Safety
/// AVX2 and FMA, and `product` runs here; `o` as [`Int8Operands`] says; `deq` holds `t.nr`
/// factors (rounded up to 16); the tile is writable.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn int8_tile(o: Int8Operands, deq: *const f32, t: Tile, product: Int8Product) {
    debug_assert!(t.mr <= 32 && t.nr <= 2 * NR);
    #[repr(align(64))]
    struct Sums([i32; 32 * 32]);
    // Not zeroed first: `product` writes every one of the 32 x 32 sums.
    let mut sums = std::mem::MaybeUninit::<Sums>::uninit();
    // SAFETY: forwarded from the caller; `sums` holds 32 rows of 32, all written by `product`
    // before they are read.
    unsafe {
        product(o, sums.as_mut_ptr().cast());
        let c = sums.assume_init_ref();
        for h in 0..t.nr.div_ceil(NR) {
            let d = [
                _mm256_loadu_ps(deq.add(h * NR)),
                _mm256_loadu_ps(deq.add(h * NR + 8)),
            ];
            for r0 in (0..t.mr).step_by(16) {
                let rows = 16.min(t.mr - r0);
                let mut scaled = [[_mm256_setzero_ps(); 2]; 16];
                for (i, s) in scaled.iter_mut().enumerate().take(rows) {
                    let p = c.0.as_ptr().add((r0 + i) * 32 + h * NR);
                    *s = [0, 8].map(|o| {
                        let x = _mm256_loadu_si256(p.add(o).cast());
                        _mm256_mul_ps(_mm256_cvtepi32_ps(x), d[o / 8])
                    });
                }
                let part = Tile {
                    c: t.c.add(r0 * t.ldc + h * NR),
                    mr: rows,
                    nr: (t.nr - h * NR).min(NR),
                    ..t
                };
                store(&scaled[..rows], part);
            }
        }
    }
}

/// Whether the int8 AMX products run on [`emulated_dpbusd`] (tests only). It is one flag
/// for the process, so that a whole network's helper threads see it too; on a CPU with AMX,
/// other tests meanwhile get the same sums, emulated.
#[cfg(test)]
static EMULATE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Runs `f` with the int8 AMX products on [`emulated_dpbusd`] (tests only; one such test
/// at a time).
#[cfg(test)]
pub(super) fn emulating<R>(f: impl FnOnce() -> R) -> R {
    use std::sync::atomic::Ordering;
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    EMULATE.store(true, Ordering::SeqCst);
    // Reset also if `f` panics.
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            EMULATE.store(false, Ordering::SeqCst);
        }
    }
    let _reset = Reset;
    f()
}

/// The int8 tile product in force: [`dpbusd`], or in the tests, inside [`emulating`],
/// [`emulated_dpbusd`].
pub(super) fn int8_product() -> Int8Product {
    #[cfg(test)]
    if EMULATE.load(std::sync::atomic::Ordering::SeqCst) {
        return emulated_dpbusd;
    }
    dpbusd
}
