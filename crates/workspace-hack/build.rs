// Cargo resolves a crate's [build-dependencies] only when it has a build script; this one exists
// so that the proc-macros' syn gets the workspace's feature set (see Cargo.toml).
fn main() {}
