//! How the networks run, decided once: [`Inference`] gathers the device, the implementation,
//! the arithmetic and its kernel families, the threads and the helpers' spin window. The fronts
//! build it from their flags, arguments and environment; the library below them reads no
//! environment variable for it.

use std::time::Duration;

use burn::tensor::Device;

use crate::engine::{Engine, Precision};
use crate::error::{Error, Result};
use crate::fast::{Bf16Kernel, F32Kernel, Int8Kernel};

/// Everything that decides how the networks run, in one typed value: the device, the
/// implementation, the arithmetic and its kernel families, the threads and the helper
/// threads' spin window. A front resolves it once from its flags, environment and arguments
/// ([`Inference::with_vars`] reads the environment variables it is handed); nothing below the
/// fronts reads the environment. `None` fields mean "the best this machine runs".
#[derive(Debug, Clone, PartialEq)]
pub struct Inference {
    /// Where the networks run (the CPU, `Device::flex()`, by default).
    pub device: Device,
    /// Which implementation runs the embedding network.
    pub engine: Engine,
    /// The arithmetic of the embedding network's products.
    pub precision: Precision,
    /// The f32 product family (`FACENET_F32_KERNEL`); `None`: the fastest here.
    pub f32_kernel: Option<F32Kernel>,
    /// The bf16 product family (`FACENET_BF16_KERNEL`); `None`: the fastest here.
    pub bf16_kernel: Option<Bf16Kernel>,
    /// The int8 product family (`FACENET_INT8_KERNEL`); `None`: the fastest here.
    pub int8_kernel: Option<Int8Kernel>,
    /// Threads one forward pass uses; `None`: rayon's pool (every core).
    pub threads: Option<usize>,
    /// How long idle helper threads spin for the next job (`FACENET_SPIN_US`); `None`: 1 ms.
    pub spin: Option<Duration>,
}

impl Default for Inference {
    fn default() -> Self {
        Self {
            device: Device::flex(),
            engine: Engine::Auto,
            precision: Precision::F32,
            f32_kernel: None,
            bf16_kernel: None,
            int8_kernel: None,
            threads: None,
            spin: None,
        }
    }
}

impl Inference {
    /// The environment variables [`Inference::with_vars`] reads.
    pub const VARS: [&'static str; 4] = [
        "FACENET_F32_KERNEL",
        "FACENET_BF16_KERNEL",
        "FACENET_INT8_KERNEL",
        "FACENET_SPIN_US",
    ];

    /// These options on the device and precision given, the rest at their defaults.
    pub fn new(device: Device, precision: Precision) -> Self {
        Self {
            device,
            precision,
            ..Self::default()
        }
    }

    /// Fills the fields still open from variables ([`Inference::VARS`]; `var` returns a
    /// variable's value, e.g. `|k| std::env::var(k).ok()` in a front): a kernel family by name,
    /// the spin window in microseconds. What is set already (a flag, an argument) wins. A bad
    /// value is an error naming the variable.
    pub fn with_vars(mut self, var: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let get = |k: &str| {
            var(k)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let bad =
            |field: &'static str| move |reason: String| Error::InvalidArgument { field, reason };
        let [f32_var, bf16_var, int8_var, spin_var] = Self::VARS;
        if self.f32_kernel.is_none()
            && let Some(v) = get(f32_var)
        {
            self.f32_kernel = Some(F32Kernel::parse(&v, f32_var).map_err(bad(f32_var))?);
        }
        if self.bf16_kernel.is_none()
            && let Some(v) = get(bf16_var)
        {
            self.bf16_kernel = Some(Bf16Kernel::parse(&v, bf16_var).map_err(bad(bf16_var))?);
        }
        if self.int8_kernel.is_none()
            && let Some(v) = get(int8_var)
        {
            self.int8_kernel = Some(Int8Kernel::parse(&v, int8_var).map_err(bad(int8_var))?);
        }
        if self.spin.is_none()
            && let Some(v) = get(spin_var)
        {
            let us: u64 = v.parse().map_err(|_| Error::InvalidArgument {
                field: spin_var,
                reason: format!("`{v}`: microseconds, a whole number (0 turns the helpers off)"),
            })?;
            self.spin = Some(Duration::from_micros(us));
        }
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variables_fill_what_is_open_and_bad_values_name_their_variable() {
        let vars = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| pairs.iter().find(|p| p.0 == k).map(|p| p.1.to_string())
        };
        let o = Inference::default()
            .with_vars(vars(&[
                ("FACENET_F32_KERNEL", "gemm"),
                ("FACENET_INT8_KERNEL", " avx2-int8 "),
                ("FACENET_SPIN_US", "250"),
                ("FACENET_BF16_KERNEL", ""),
            ]))
            .unwrap();
        assert_eq!(o.f32_kernel, Some(F32Kernel::Gemm));
        assert_eq!(o.int8_kernel, Some(Int8Kernel::Avx2));
        assert_eq!(o.bf16_kernel, None);
        assert_eq!(o.spin, Some(Duration::from_micros(250)));
        // What a flag set wins over the variable.
        let flagged = Inference {
            f32_kernel: Some(F32Kernel::Avx2),
            ..Inference::default()
        };
        let o = flagged
            .with_vars(vars(&[("FACENET_F32_KERNEL", "gemm")]))
            .unwrap();
        assert_eq!(o.f32_kernel, Some(F32Kernel::Avx2));
        // A bad value names its variable and the accepted names.
        let e = Inference::default()
            .with_vars(vars(&[("FACENET_BF16_KERNEL", "tpu")]))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("FACENET_BF16_KERNEL") && e.contains("`amx`"),
            "{e}"
        );
        let e = Inference::default()
            .with_vars(vars(&[("FACENET_SPIN_US", "1ms")]))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("FACENET_SPIN_US") && e.contains("microseconds"),
            "{e}"
        );
        assert_eq!(
            Precision::parse("bf16", "precision").unwrap(),
            Precision::Bf16
        );
        assert!(
            Precision::parse("fp16", "precision")
                .unwrap_err()
                .to_string()
                .contains("\"int8\"")
        );
    }
}
