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
//! The tests get it exactly as `hiperiso-build run` does under TCG:
//! `hiperiso_build::vm::outer_qemu`, the step through the builder's cache
//! (`$HIPERISO_CACHE_DIR`, else `~/.cache/hiperiso`): the first build took
//! 463 s on 2 shared cores (plus the seabios step), later runs find it cached.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Instant;

use anyhow::{Context as _, Result};
use hiperiso_build::project::Project;
use hiperiso_build::settings::Settings;
use hiperiso_build::vm;

use crate::workspace_root;

static OUTER_QEMU: Mutex<Option<PathBuf>> = Mutex::new(None);

/// The default manifest of the checkout, loaded as `hiperiso-build` does.
pub fn project() -> Result<Project> {
    let manifest = workspace_root().join("hiperiso.toml");
    Project::load(Settings::new(&manifest))
        .with_context(|| format!("loading {}", manifest.display()))
}

/// The output directory of the checkout's build step `name`, built (or
/// found cached) through the builder's step cache, as `hiperiso-build build
/// NAME` would.
pub fn built_step(name: &str) -> Result<PathBuf> {
    let project = project()?;
    let step = [name.to_string()];
    let built = hiperiso_build::steps::profile::builder(&project, None)
        .and_then(|builder| Ok(builder.build(&step)?))
        .with_context(|| format!("building the {name} step"))?;
    Ok(built[name].path.clone())
}

/// The outer-qemu step's `qemu-system-x86_64`, built (or found cached) on
/// first use.
pub fn outer_qemu() -> Result<PathBuf> {
    let mut known = OUTER_QEMU.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(qemu) = known.as_ref() {
        return Ok(qemu.clone());
    }
    eprintln!("outer QEMU: the outer-qemu step (about 8 min on 2 cores when not cached)");
    let started = Instant::now();
    let qemu = vm::outer_qemu(&project()?).context("building the outer-qemu step")?;
    eprintln!("outer QEMU: {} ({:.0?})", qemu.display(), started.elapsed());
    *known = Some(qemu.clone());
    Ok(qemu)
}
