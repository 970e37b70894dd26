//! Per-convolution timers: where a pass's time goes, convolution by convolution
//! ([`super::FastNet::time_layers`], `facenet bench embed --layers`). Off unless asked for; a
//! timed convolution adds two clock reads and a few atomic additions to its call.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Instant;

/// One convolution's calls, time and multiply-adds since its timer was set.
#[derive(Debug, Default)]
pub(super) struct LayerTimer {
    calls: AtomicU64,
    winograd_calls: AtomicU64,
    nanos: AtomicU64,
    multiply_adds: AtomicU64,
    /// The input map of the last call: rows in the high 32 bits, columns in the low.
    map: AtomicU64,
}

impl LayerTimer {
    /// A call on an `h x w` input map, of `multiply_adds` over all its images, starts now; it
    /// is recorded when the returned guard drops (on whichever path the call returns).
    pub(super) fn start(
        &self,
        multiply_adds: u64,
        (h, w): (usize, usize),
        winograd: bool,
    ) -> Timing<'_> {
        self.calls.fetch_add(1, Relaxed);
        self.winograd_calls.fetch_add(u64::from(winograd), Relaxed);
        self.multiply_adds.fetch_add(multiply_adds, Relaxed);
        self.map
            .store(((h as u64) << 32) | (w as u64 & 0xffff_ffff), Relaxed);
        Timing {
            timer: self,
            start: Instant::now(),
        }
    }

    /// What was recorded, for the convolution `shape` describes.
    pub(super) fn read(&self, shape: LayerShape) -> LayerTime {
        let map = self.map.load(Relaxed);
        LayerTime {
            shape,
            map: ((map >> 32) as usize, (map & 0xffff_ffff) as usize),
            calls: self.calls.load(Relaxed),
            winograd_calls: self.winograd_calls.load(Relaxed),
            seconds: self.nanos.load(Relaxed) as f64 * 1e-9,
            multiply_adds: self.multiply_adds.load(Relaxed),
        }
    }
}

/// One timed call, recorded when dropped.
pub(super) struct Timing<'a> {
    timer: &'a LayerTimer,
    start: Instant,
}

impl Drop for Timing<'_> {
    fn drop(&mut self) {
        let nanos = u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.timer.nanos.fetch_add(nanos, Relaxed);
    }
}

/// A convolution's geometry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LayerShape {
    /// Kernel rows and columns.
    pub kernel: (usize, usize),
    /// Stride (both axes).
    pub stride: usize,
    /// Input and output channels.
    pub channels: (usize, usize),
}

/// One convolution of the plan, as its timer saw it ([`super::FastNet::layer_times`]).
#[derive(Debug, Clone, PartialEq)]
pub struct LayerTime {
    /// Its geometry.
    pub shape: LayerShape,
    /// The input map (rows, columns) of its last call.
    pub map: (usize, usize),
    /// Calls timed.
    pub calls: u64,
    /// Of those, the calls that ran on the Winograd path (the others ran im2col, or a plain
    /// product for a pointwise convolution).
    pub winograd_calls: u64,
    /// Seconds inside its calls, summed over the threads that made them: a single image's
    /// call is split across the threads and timed once; in a batch, image groups run side by
    /// side, each group's calls timed on its own thread.
    pub seconds: f64,
    /// Multiply-adds of its calls (over all their images).
    pub multiply_adds: u64,
}

impl LayerTime {
    /// `3x3/2 192->256 on 36x36`, with `, Winograd` where most calls ran that path.
    pub fn label(&self) -> String {
        let s = &self.shape;
        let stride = if s.stride == 1 {
            String::new()
        } else {
            format!("/{}", s.stride)
        };
        format!(
            "{}x{}{stride} {}->{} on {}x{}{}",
            s.kernel.0,
            s.kernel.1,
            s.channels.0,
            s.channels.1,
            self.map.0,
            self.map.1,
            if 2 * self.winograd_calls > self.calls {
                ", Winograd"
            } else {
                ""
            }
        )
    }
}
