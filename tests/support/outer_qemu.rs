//! The QEMU that runs the outer (test) VM of tests whose stick runs a UEFI
//! guest under nested KVM.
//!
//! QEMU's TCG, emulating SVM for the stick's KVM, aborts the whole outer VM
//! (`tcg_handle_interrupt: assertion failed: (qemu_mutex_iothread_locked())`;
//! measured with Debian's 7.2, 10.0 and 11.1) when a nested guest writes
//! CR8 while KVM has a virtual interrupt pending, which OVMF does on every
//! interrupt return: `helper_write_crN` raises the interrupt without the big
//! QEMU lock. The builder's `outer-qemu` step (recipes/outer-qemu.toml:
//! Debian's QEMU 7.2 with its stable series, plus the fix) builds a static
//! QEMU that takes the lock there; it finds its ROMs (SeaBIOS, VGA BIOS,
//! option ROMs) next to itself, so the host's qemu-system-data is not used.
//!
//! The step is built by the `hiperiso-build` binary (`build outer-qemu`),
//! through the default cache shared with the other tests
//! (`$HIPERISO_CACHE_DIR`, else `~/.cache/hiperiso`): the first build took
//! 463 s on 2 shared cores (plus the seabios step), later runs find it cached.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::Instant;

use anyhow::{Context as _, Result, bail};

use crate::workspace_root;

/// The builder's step that builds the outer QEMU.
pub const STEP: &str = "outer-qemu";

static OUTER_QEMU: Mutex<Option<PathBuf>> = Mutex::new(None);

/// The outer-qemu step's `qemu-system-x86_64`, built (or found cached) on
/// first use by `cargo run -p hiperiso-build -- build outer-qemu`.
pub fn outer_qemu() -> Result<PathBuf> {
    let mut known = OUTER_QEMU.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(qemu) = known.as_ref() {
        return Ok(qemu.clone());
    }
    let root = workspace_root();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    eprintln!("outer QEMU: hiperiso-build build {STEP} (about 8 min on 2 cores when not cached)");
    let started = Instant::now();
    let output = Command::new(&cargo)
        .current_dir(&root)
        .args(["run", "--quiet", "--package", "hiperiso-build", "--"])
        .arg("--manifest")
        .arg(root.join("hiperiso.toml"))
        .args(["build", STEP])
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running {} run -p hiperiso-build", cargo.to_string_lossy()))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "hiperiso-build build {STEP} failed ({}): {stdout}",
            output.status
        );
    }
    // "STEP OUTPUT-DIR", one line per requested step
    let dir = stdout
        .lines()
        .find_map(|line| {
            line.strip_prefix(STEP)
                .and_then(|rest| rest.strip_prefix(' '))
        })
        .with_context(|| format!("no `{STEP} DIR` line in hiperiso-build's output: {stdout}"))?;
    let qemu = PathBuf::from(dir.trim()).join("usr/bin/qemu-system-x86_64");
    if !qemu.is_file() {
        bail!(
            "{} is missing from the {STEP} step's output",
            qemu.display()
        );
    }
    eprintln!("outer QEMU: {} ({:.0?})", qemu.display(), started.elapsed());
    *known = Some(qemu.clone());
    Ok(qemu)
}
