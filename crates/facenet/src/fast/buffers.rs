//! Buffers and workspaces of the fast path: NHWC activation maps, per-thread reuse, the
//! thread split of a forward pass, im2col chunks.

#[allow(unused_imports)]
use super::*;

/// How a forward pass uses the threads.
#[derive(Debug, Clone, Copy)]
pub(super) enum Par {
    /// Everything on the calling thread.
    Single,
    /// Each convolution split across this many threads (by rows or by output channels).
    Split(usize),
}

/// The fixed inputs of one convolution call, shared by the threads that split its rows.
#[derive(Clone, Copy)]
pub(super) struct RowJob<'a> {
    pub(super) x: &'a Buf,
    pub(super) xoff: usize,
    pub(super) oc: usize,
    pub(super) ooff: usize,
    pub(super) epilogue: Epilogue,
    /// With int8 or bf16 weights, the input channels already quantized or rounded
    /// ([`Conv::convert_input`]): what the patches are gathered from.
    pub(super) q: Option<Converted<'a>>,
}

/// A convolution's input channels converted once for its products: quantized for int8
/// weights (one byte per value), rounded to bf16 for bf16 weights; `cin` values per pixel.
#[derive(Clone, Copy)]
pub(super) enum Converted<'a> {
    U8(&'a [u8]),
    Bf16(&'a [u16]),
}

/// What an im2col reads: an NHWC map of `h x w` pixels of `c` values (`data`), from channel
/// `off` on.
#[derive(Clone, Copy)]
pub(super) struct Src<'a, S> {
    pub(super) data: &'a [S],
    pub(super) h: usize,
    pub(super) w: usize,
    pub(super) c: usize,
    pub(super) off: usize,
}

impl<'a> Src<'a, f32> {
    /// Channels from `off` on of `x`.
    pub(super) fn of(x: &'a Buf, off: usize) -> Self {
        Src {
            data: &x.data,
            h: x.h,
            w: x.w,
            c: x.c,
            off,
        }
    }
}

/// A buffer's base pointer, shared by threads that write disjoint parts of it.
pub(super) struct SendMut<T>(pub(super) *mut T);
// SAFETY: only used for writes to disjoint regions, each by one thread, inside a scope that
// outlives the buffer's borrow.
unsafe impl<T: Send> Send for SendMut<T> {}
unsafe impl<T: Send> Sync for SendMut<T> {}

impl<T> Clone for SendMut<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for SendMut<T> {}

impl<T> SendMut<T> {
    /// The pointer to element `i` (a method, so that closures capture the whole `SendMut`).
    pub(super) fn at(&self, i: usize) -> *mut T {
        self.0.wrapping_add(i)
    }
}

/// The output buffer's base pointer.
pub(super) type SendPtr = SendMut<f32>;

/// An activation map in NHWC layout: `data[((img * h + y) * w + x) * c + channel]`.
#[derive(Debug, Default)]
pub(super) struct Buf {
    pub(super) data: Vec<f32>,
    pub(super) n: usize,
    pub(super) h: usize,
    pub(super) w: usize,
    pub(super) c: usize,
}

impl Buf {
    pub(super) fn rows(&self) -> usize {
        self.n * self.h * self.w
    }
}

/// Reuses buffers within one forward pass.
#[derive(Default)]
pub(super) struct Workspace {
    pub(super) free: Vec<Vec<f32>>,
    /// One im2col scratch per thread that splits a convolution.
    pub(super) im2col: Vec<Vec<f32>>,
    /// How many maps were taken that no free buffer had room for (each one allocated).
    pub(super) allocated: usize,
}

impl Workspace {
    pub(super) fn take(&mut self, n: usize, h: usize, w: usize, c: usize) -> Buf {
        let len = n * h * w * c;
        let mut data = self.pick(len);
        // Every consumer overwrites its buffer before reading it, so stale values are kept
        // rather than zeroed (only growth writes new memory).
        data.truncate(len);
        data.resize(len, 0.0);
        Buf { data, n, h, w, c }
    }

    /// A buffer for a writer that sets every value itself ([`super::direct::Direct::run`]):
    /// empty, with room for `n * h * w * c` values, which the writer fills through its
    /// pointer before setting the length. Nothing is zeroed: a reused buffer that last held
    /// a smaller map would otherwise have its growth written twice (zeros, then values),
    /// which was 4–6 % of detecting in a 1080p photo.
    pub(super) fn take_empty(&mut self, n: usize, h: usize, w: usize, c: usize) -> Buf {
        let len = n * h * w * c;
        let mut data = self.pick(len);
        data.clear();
        data.reserve(len);
        Buf { data, n, h, w, c }
    }

    fn pick(&mut self, len: usize) -> Vec<f32> {
        // Prefer a free buffer that last held exactly `len` values, which is handed back
        // without zeroing any part of it ([`Workspace::take`] zeroes what lies past the values
        // a buffer held last): a pass asks for the same sizes as the pass before. Then the
        // smallest free buffer that is large enough.
        let pick = self
            .free
            .iter()
            .enumerate()
            .filter(|(_, v)| v.capacity() >= len)
            .min_by_key(|(_, v)| (v.len() != len, v.capacity()))
            .map(|(i, _)| i);
        match pick {
            Some(i) => self.free.swap_remove(i),
            None => {
                self.allocated += 1;
                self.free.pop().unwrap_or_default()
            }
        }
    }

    pub(super) fn give(&mut self, buf: Buf) {
        self.free.push(buf.data);
    }
}

thread_local! {
    /// Buffers kept between forward passes on each thread, so that activation maps are not
    /// allocated (page faults, zeroing) again for every image group (page faults and zeroing
    /// were ~6 % of a bf16 batch-32 profile before). A few tens of MiB per thread that runs
    /// the network.
    pub(super) static WORKSPACE: std::cell::Cell<Workspace> = std::cell::Cell::new(Workspace::default());
}

/// Runs `f` with this thread's [`Workspace`]; a nested call (none is expected) gets an empty
/// one rather than a conflict.
pub(super) fn with_workspace<T>(f: impl FnOnce(&mut Workspace) -> T) -> T {
    let mut ws = WORKSPACE.take();
    let out = f(&mut ws);
    WORKSPACE.set(ws);
    out
}

/// One chunk of im2col rows: f32, already rounded to bf16 (rows of [`bf16mm::padded_k`]
/// values), or already quantized for int8 weights (rows of their `kp` bytes); for both of
/// those the row count is rounded up to 32, AMX's block.
#[derive(Clone, Copy)]
pub(super) enum Patches<'a> {
    F32(&'a [f32]),
    Bf16(&'a [u16]),
    U8(&'a [u8]),
}

thread_local! {
    /// bf16 im2col chunks (bf16 mode), kept per thread.
    pub(super) static BF16_PATCHES: std::cell::Cell<Vec<u16>> = const { std::cell::Cell::new(Vec::new()) };
    /// Quantized im2col chunks (int8 mode), kept per thread.
    pub(super) static U8_PATCHES: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
    /// A convolution's input quantized once (int8 mode), kept per calling thread.
    pub(super) static U8_INPUT: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
    /// A convolution's input rounded to bf16 once (bf16 mode), kept per calling thread.
    pub(super) static BF16_INPUT: std::cell::Cell<Vec<u16>> = const { std::cell::Cell::new(Vec::new()) };
}

/// A per-thread buffer ([`U8_INPUT`], [`BF16_INPUT`]) taken by one convolution and put back
/// when it is done with it.
pub(super) struct Reused<T: 'static>(
    Vec<T>,
    &'static std::thread::LocalKey<std::cell::Cell<Vec<T>>>,
);

impl<T: Copy + Default> Reused<T> {
    pub(super) fn take(key: &'static std::thread::LocalKey<std::cell::Cell<Vec<T>>>) -> Self {
        Reused(key.take(), key)
    }

    /// `len` values of it (grown if needed; whatever they held before).
    pub(super) fn fill(&mut self, len: usize) -> &mut [T] {
        if self.0.len() < len {
            self.0.resize(len, T::default());
        }
        &mut self.0[..len]
    }
}

impl<T: 'static> Drop for Reused<T> {
    fn drop(&mut self) {
        self.1.set(std::mem::take(&mut self.0));
    }
}
