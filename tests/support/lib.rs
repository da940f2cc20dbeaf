//! Helpers shared by the integration and end-to-end tests.

use std::path::PathBuf;

/// The workspace root (the directory holding `hiperiso.toml`).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

pub mod http;
pub mod isos;
pub mod linux_vm;
pub mod outer_qemu;
pub mod real_isos;
pub mod stick;
