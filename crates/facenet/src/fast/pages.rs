//! The network's weights on 2 MiB pages.
//!
//! A single image's pass reads every weight once (about 92 MB for the Keras network), a few
//! kilobytes per convolution and thread at a time. On 4 KiB pages that is some 23,000 pages a
//! pass, more than the second-level TLB holds, so the reads ahead of the kernels (hardware and
//! software prefetches) keep waiting for page walks. Backed by 2 MiB pages, the same weights
//! take under 50 TLB entries.
//!
//! The weights live in ordinary allocations (one or a few per convolution, most under 2 MiB),
//! which the allocator places side by side. So after packing, every 2 MiB-aligned region that
//! holds part of a weight array is collapsed into one transparent huge page
//! (`madvise(MADV_COLLAPSE)`, Linux 6.1 and later): the kernel copies the region's pages into
//! a huge page in place, whatever else lies in it, and the addresses stay the same. This needs
//! no setting of the system (the sysfs THP mode may be `madvise`, the default of most
//! distributions). Where the kernel refuses (older kernels, a region across two mappings, THP
//! off), the region stays on small pages: the weights are read as before.

/// Where a slice's bytes lie: (address, length).
pub(super) fn span<T>(v: &[T]) -> (usize, usize) {
    (v.as_ptr() as usize, std::mem::size_of_val(v))
}

/// Collapses the 2 MiB-aligned regions that hold any byte of `regions` (address, length in
/// bytes) into huge pages. Returns how many regions were collapsed, and how many the kernel
/// refused.
pub(super) fn collapse(regions: &[(usize, usize)]) -> (usize, usize) {
    const HUGE: usize = 2 << 20;
    let mut starts: Vec<usize> = regions
        .iter()
        .filter(|(_, len)| *len > 0)
        .flat_map(|&(addr, len)| {
            let first = addr & !(HUGE - 1);
            (first..addr + len).step_by(HUGE)
        })
        .collect();
    starts.sort_unstable();
    starts.dedup();
    let mut done = (0, 0);
    for start in starts {
        if imp::collapse(start, HUGE) {
            done.0 += 1;
        } else {
            done.1 += 1;
        }
    }
    done
}

#[cfg(target_os = "linux")]
mod imp {
    /// `MADV_COLLAPSE` (Linux 6.1; the same number on every architecture).
    const MADV_COLLAPSE: libc::c_int = 25;

    /// Asks the kernel to back `[start, start + len)` with a huge page; whether it did.
    pub(super) fn collapse(start: usize, len: usize) -> bool {
        // SAFETY: MADV_COLLAPSE changes only how the range is backed: its contents and
        // addresses stay as they are, and a range that is not mapped is an error, not a fault.
        unsafe { libc::madvise(start as *mut libc::c_void, len, MADV_COLLAPSE) == 0 }
    }
}

#[cfg(not(target_os = "linux"))]
mod imp {
    /// No transparent huge pages to ask for here.
    pub(super) fn collapse(_: usize, _: usize) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kernel's release as (major, minor), from `uname`.
    #[cfg(target_os = "linux")]
    fn kernel_release() -> (u32, u32) {
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
        let mut parts = release.trim().split(['.', '-']);
        let mut next = || parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        (next(), next())
    }

    /// An 8 MiB array and a small one beside it: every 2 MiB region they touch is asked for
    /// once, the contents stay as they were, and on Linux 6.1 or later the kernel collapses
    /// at least the regions wholly inside the large array.
    #[test]
    fn regions_are_collapsed_once_and_contents_stay() {
        let big: Vec<u64> = (0..1u64 << 20)
            .map(|i| i.wrapping_mul(0x9e37_79b9))
            .collect();
        let small: Vec<u64> = (0..1000).collect();
        let (a, len) = span(&big);
        const HUGE: usize = 2 << 20;
        let mut touched: Vec<usize> = [span(&big), span(&small)]
            .iter()
            .flat_map(|&(a, l)| (a / HUGE..=(a + l - 1) / HUGE).collect::<Vec<_>>())
            .collect();
        touched.sort_unstable();
        touched.dedup();
        let (collapsed, refused) = collapse(&[span(&big), span(&small), span(&big), (a, 0)]);
        assert_eq!(
            collapsed + refused,
            touched.len(),
            "each region asked for once"
        );
        assert!(
            big.iter()
                .enumerate()
                .all(|(i, v)| *v == (i as u64).wrapping_mul(0x9e37_79b9))
        );
        assert!(small.iter().enumerate().all(|(i, v)| *v == i as u64));
        #[cfg(target_os = "linux")]
        if kernel_release() >= (6, 1) {
            let inside = (a + len) / HUGE - a.div_ceil(HUGE);
            assert!(
                collapsed >= 1,
                "Linux {:?} refused all {refused} regions ({inside} inside the array)",
                kernel_release()
            );
        }
    }
}
