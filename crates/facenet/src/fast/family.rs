//! What the kernel families of every precision share ([`super::F32Kernel`],
//! [`super::Bf16Kernel`], [`super::Int8Kernel`]): a name, what the CPU must have, and the
//! environment variable through which the fronts let a user force one of them, for comparing
//! them on one machine ([`crate::options::Inference::with_vars`]; the library itself reads no
//! environment).

/// A precision's kernel families, picked at run time.
pub(super) trait Family: Copy + 'static {
    /// Every family, fastest first.
    const ALL: &'static [Self];
    /// Its name, as the fronts' environment variables and the benchmarks spell it.
    fn name(self) -> &'static str;
    /// Whether this CPU runs it.
    fn available(self) -> bool;
    /// What it needs of the CPU, in words.
    fn requirement(self) -> &'static str;
}

/// The family of that name, or an error that lists the names (`what` says where the name
/// came from: a flag, an environment variable, an argument).
pub(super) fn parse<K: Family>(name: &str, what: &str) -> Result<K, String> {
    from_name(name).ok_or_else(|| {
        format!(
            "{what}={name}: unknown kernel family; use {}",
            K::ALL
                .iter()
                .map(|k| format!("`{}`", k.name()))
                .collect::<Vec<_>>()
                .join(" or ")
        )
    })
}

/// The family asked for, which must run here, else `default()`. The error says what the
/// family asked for needs.
pub(super) fn resolve<K: Family>(
    asked: Option<K>,
    default: impl FnOnce() -> Result<K, String>,
) -> Result<K, String> {
    match asked {
        Some(k) if k.available() => Ok(k),
        Some(k) => Err(format!(
            "kernel family {}: this machine does not run it (needs {})",
            k.name(),
            k.requirement()
        )),
        None => default(),
    }
}

/// The family of that name.
pub(super) fn from_name<K: Family>(name: &str) -> Option<K> {
    K::ALL.iter().copied().find(|k| k.name() == name)
}

/// The fastest family this CPU runs.
pub(super) fn best<K: Family>() -> Option<K> {
    K::ALL.iter().copied().find(|k| k.available())
}
