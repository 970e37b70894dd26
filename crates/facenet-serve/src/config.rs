//! The service's settings (`facenet serve`'s flags) and the decode budget's units.

use std::net::SocketAddr;

/// Settings of the service.
#[derive(Debug, Clone)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
pub struct ServeConfig {
    /// Address to listen on (port 0: any free port; the address is printed).
    #[cfg_attr(feature = "clap", arg(long, default_value = "127.0.0.1:8080"))]
    pub listen: SocketAddr,
    /// Largest request body, MiB (larger: 413).
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 10))]
    pub body_limit_mib: usize,
    /// Longest a request may take, seconds (longer: 504).
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 30))]
    pub timeout_s: u64,
    /// Most requests in progress at once; one more is answered 503 with Retry-After.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 64))]
    pub queue: usize,
    /// Most faces per forward pass of the network, gathered across requests.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 16))]
    pub batch: usize,
    /// Longest wait for more faces once a batch has begun, milliseconds.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 3))]
    pub batch_wait_ms: u64,
    /// Most requests decoding images and finding faces at once; more wait their turn (within
    /// `--queue` and `--timeout-s`). Bounds the memory of the work in progress (some 20 MiB a
    /// request); 16 keeps the network's batches full.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 16))]
    pub workers: usize,
    /// Most image pixels decoded at once over all requests, megapixels (3 bytes each: 512 is
    /// 1.5 GiB). A request needing more than all of it: 413; while others hold it: 503. A
    /// small compressed upload can decode to a huge image; this bounds the memory it takes.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 512))]
    pub decode_budget_mp: u64,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            body_limit_mib: 10,
            timeout_s: 30,
            queue: 64,
            batch: 16,
            batch_wait_ms: 3,
            workers: 16,
            decode_budget_mp: 512,
        }
    }
}

/// The whole decode budget (`--decode-budget-mp`, 1 to 2^20 megapixels), in kilopixels.
pub(crate) fn budget_kilopixels(config: &ServeConfig) -> u32 {
    kilopixels(config.decode_budget_mp.clamp(1, 1 << 20) << 20)
}

/// Pixels in units of 1024 (rounded up), as the decode budget counts them.
pub(crate) fn kilopixels(pixels: u64) -> u32 {
    pixels.div_ceil(1024).min(u32::MAX as u64) as u32
}
