//! The QEMU that runs the outer (test) VM of tests whose stick runs a UEFI
//! guest under nested KVM.
//!
//! QEMU's TCG, emulating SVM for the stick's KVM, aborts the whole outer VM
//! (`tcg_handle_interrupt: assertion failed: (qemu_mutex_iothread_locked())`;
//! measured with Debian's 7.2, 10.0 and 11.1) when a nested guest writes
//! CR8 while KVM has a virtual interrupt pending, which OVMF does on every
//! interrupt return: `helper_write_crN` raises the interrupt without the big
//! QEMU lock. `outer-qemu.patch` takes the lock there, as the lines above it
//! already do for the APIC (and skips the firmware blobs the dfsg tarball
//! lacks). `outer-qemu.sh` builds Debian's QEMU 7.2 (with its stable-series
//! patches) plus that patch, TCG only (~5 min on 2 idle cores), into
//! `target/hiperiso-outer-qemu/<hash of script and patch>/`.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context as _, Result, bail};
use sha2::{Digest, Sha256};

use crate::stick::target_dir;
use crate::workspace_root;

/// The `qemu` wrapper of the patched build, built on first use.
pub fn outer_qemu() -> Result<PathBuf> {
    let support = workspace_root().join("tests/support");
    let script = support.join("outer-qemu.sh");
    let mut key = Sha256::new();
    for name in ["outer-qemu.sh", "outer-qemu.patch"] {
        let path = support.join(name);
        key.update(std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?);
        key.update(b"\0");
    }
    let key = hex::encode(key.finalize());
    let dir = target_dir().join("hiperiso-outer-qemu").join(&key[..16]);
    let wrapper = dir.join("qemu");
    if wrapper.is_file() {
        return Ok(wrapper);
    }
    eprintln!(
        "building the outer VM's QEMU ({} {}): a few minutes",
        script.display(),
        dir.display()
    );
    let started = Instant::now();
    let status = Command::new("bash")
        .arg(&script)
        .arg(&dir)
        .status()
        .with_context(|| format!("running {}", script.display()))?;
    if !status.success() || !wrapper.is_file() {
        bail!("{} {} failed ({status})", script.display(), dir.display());
    }
    eprintln!("outer QEMU built in {:.0?}", started.elapsed());
    Ok(wrapper)
}
