//! Helpers shared by the integration and end-to-end tests.

use std::path::PathBuf;

/// The workspace root (the directory holding `hiperiso.toml`).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The text `gzip -d` makes of `gz` (panics on anything but gzipped UTF-8).
pub fn gunzip(gz: &[u8]) -> String {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), gz).unwrap();
    let out = std::process::Command::new("gzip")
        .arg("-dc")
        .arg(file.path())
        .output()
        .expect("gzip");
    assert!(out.status.success(), "not gzip: {}", out.status);
    String::from_utf8(out.stdout).expect("gzipped text")
}

pub mod http;
pub mod isos;
pub mod keyboard;
pub mod linux_vm;
pub mod outer_qemu;
pub mod real_isos;
pub mod stick;
