//! No code: this crate's dependencies give the shared crates one feature set in every build of
//! the workspace (see its Cargo.toml).
