//! The outer VM's QEMU under TCG: the `outer-qemu` step (Debian's QEMU 7.2
//! with its stable series and the CR8 locking fix, recipes/outer-qemu.toml),
//! built through the step cache the first time a UEFI guest needs it.

use std::fs::File;
use std::path::PathBuf;

use hiperiso_runtime::eltorito;

use crate::project::Project;
use crate::steps::profile::builder;
use crate::vm::RunOptions;
use crate::vm::error::{Result, RunError};

/// The recipe of the outer VM's QEMU.
pub const STEP: &str = "outer-qemu";

/// The `outer-qemu` step's `qemu-system-x86_64`, built or from the cache.
pub fn outer_qemu(project: &Project) -> Result<PathBuf> {
    let step = [STEP.to_string()];
    let results = builder(project, None)
        .and_then(|builder| Ok(builder.build(&step)?))
        .map_err(|source| RunError::OuterQemu(Box::new(source)))?;
    Ok(results[STEP].path.join("usr/bin/qemu-system-x86_64"))
}

/// Whether the guest `run` boots may start UEFI firmware: the `--boot`
/// image's El Torito catalog has a UEFI entry, or the image is not among
/// the `--iso` files given (then the stick decides; assume it may).
pub fn may_boot_uefi(options: &RunOptions) -> bool {
    let Some(boot) = &options.boot else {
        return true;
    };
    let Some(iso) = options.isos.iter().find(|iso| {
        iso.file_name()
            .is_some_and(|n| n.to_string_lossy() == *boot)
    }) else {
        return true;
    };
    File::open(iso)
        .ok()
        .and_then(|mut file| eltorito::read_iso(&mut file).ok())
        .is_none_or(|info| info.boots_uefi())
}
