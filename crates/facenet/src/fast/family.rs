//! What the kernel families of every precision share ([`super::F32Kernel`],
//! [`super::Bf16Kernel`], [`super::Int8Kernel`]): a name, what the CPU must have, and the
//! environment variable that forces one of them, for comparing them on one machine.

/// A precision's kernel families, picked at run time.
pub(super) trait Family: Copy + 'static {
    /// Every family, fastest first.
    const ALL: &'static [Self];
    /// The environment variable that names one.
    const VAR: &'static str;
    /// Its name as [`Family::VAR`] and the benchmarks spell it.
    fn name(self) -> &'static str;
    /// Whether this CPU runs it.
    fn available(self) -> bool;
    /// What it needs of the CPU, in words.
    fn requirement(self) -> &'static str;
}

/// The family [`Family::VAR`] names, where it is set, else `default()`. The error says what
/// is wrong with the name, or what the family named needs.
pub(super) fn chosen<K: Family>(default: impl FnOnce() -> Result<K, String>) -> Result<K, String> {
    match std::env::var(K::VAR) {
        Ok(name) if !name.is_empty() => match K::ALL.iter().find(|k| k.name() == name) {
            Some(&k) if k.available() => Ok(k),
            Some(&k) => Err(format!(
                "{}={name}: this machine does not run it (needs {})",
                K::VAR,
                k.requirement()
            )),
            None => Err(format!(
                "{}={name}: unknown kernel family; use {}",
                K::VAR,
                K::ALL
                    .iter()
                    .map(|k| format!("`{}`", k.name()))
                    .collect::<Vec<_>>()
                    .join(" or ")
            )),
        },
        _ => default(),
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
