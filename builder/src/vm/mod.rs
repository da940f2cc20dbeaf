//! `hiperiso-build run`: boot a stick image in QEMU as a PC would boot the
//! stick, like `mkosi vm`.
//!
//! 1. Default image: the last one `image` wrote (recorded in the cache).
//! 2. Unless `--keep`, work on a copy-on-write copy (`cp --reflink=auto
//!    --sparse=always`), so the original stays clean.
//! 3. Put `--iso` files into `ISOs/` of the exFAT data partition, and for
//!    `--boot NAME` write the GRUB environment block `hiperiso/grubenv`
//!    (timeout 0, default NAME) — both without mounting anything.
//! 4. Boot with OVMF, the image as usb-storage on qemu-xhci; the serial
//!    console is shown live. KVM when a short probe VM really runs, else
//!    TCG with an SVM-capable CPU (`EPYC`) so the stick's own KVM path runs.
//! 5. Read the new session back from the image (no mount), print its
//!    report, and succeed only if the result is `booted`.
use std::fs::{self};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use hiperiso_runtime::analyze::{self, BootResult, Report};

use hiperiso_stick::io::io_err;

use crate::settings::Settings;
use crate::sources::store::Store;

pub mod error;
pub mod qemu;
pub mod stick;

pub use error::RunError;
pub use qemu::{Accel, Console, Vm, find_ovmf, probe_kvm, qemu_program, wait_with_timeout};
pub use stick::{
    GRUBENV_PATH, LAST_IMAGE_FILE, StickImage, last_image, read_session_file, record_last_image,
    session_ids, session_report, working_copy,
};

use error::Result;

/// Outer VM memory when `--ram` is not given: the inner guest's default
/// 2 GiB plus the host kernel, initramfs and QEMU.
pub const DEFAULT_RAM_MB: u64 = 4096;
/// Give up after this long when `--timeout` is not given.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1800);

/// What `run` was asked to do (the CLI's `RunArgs`, without clap).
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    pub image: Option<PathBuf>,
    pub isos: Vec<PathBuf>,
    pub boot: Option<String>,
    pub ram_mb: Option<u64>,
    pub timeout: Option<Duration>,
    /// Change the image itself instead of a copy-on-write copy.
    pub keep: bool,
}

/// What a `run` produced.
#[derive(Debug)]
pub struct RunOutcome {
    pub session_id: String,
    pub report: Report,
    /// The image the VM booted (the original with `--keep`).
    pub image: PathBuf,
}

/// `hiperiso-build run`.
pub fn run(settings: &Settings, options: &RunOptions) -> Result<RunOutcome, RunError> {
    let store = Store::open_default(settings.cache_dir.as_deref()).map_err(RunError::Store)?;
    let original = match &options.image {
        Some(image) => image.clone(),
        None => last_image(store.root())?,
    };
    if !original.is_file() {
        return Err(RunError::NoImageFile(original));
    }
    let scratch_root = store.tmp_dir().map_err(RunError::Store)?;
    let scratch = tempfile::Builder::new()
        .prefix("run-")
        .tempdir_in(&scratch_root)
        .map_err(io_err("create a directory in", &scratch_root))?;
    let image = if options.keep {
        original.clone()
    } else {
        let copy = scratch.path().join("stick.img");
        settings.say(format!(
            "working on a copy-on-write copy of {} (--keep changes the image itself)",
            original.display()
        ));
        working_copy(&original, &copy)?;
        copy
    };

    let mut stick = StickImage::open(&image)?;
    for iso in &options.isos {
        let name = stick.add_iso(iso)?;
        settings.say(format!("added /ISOs/{name}"));
    }
    if let Some(name) = &options.boot {
        let name = Path::new(name)
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or(name);
        stick.boot_once(name)?;
        settings.say(format!("GRUB will boot /ISOs/{name} without waiting"));
    }
    drop(stick);
    let before = session_ids(&image).unwrap_or_default();

    let (ovmf_code, ovmf_vars_template) = find_ovmf()?;
    let ovmf_vars = scratch.path().join("OVMF_VARS.fd");
    fs::copy(&ovmf_vars_template, &ovmf_vars).map_err(io_err("copy", &ovmf_vars_template))?;
    let accel = match probe_kvm(scratch.path()) {
        Ok(()) => {
            settings.say("accelerator: KVM");
            Accel::Kvm
        }
        Err(reason) => {
            settings.say(format!(
                "accelerator: TCG with -cpu EPYC, so the stick still gets KVM (SVM) for its guest; KVM is not usable here: {reason}"
            ));
            Accel::tcg_with_svm()
        }
    };
    let console_log = scratch.path().join("console.log");
    // One vCPU under TCG: QEMU 7.2's multi-threaded TCG aborts
    // ("tcg_handle_interrupt: assertion failed") when the stick's kernel
    // sends IPIs while its nested KVM guest runs.
    let cpus = if accel == Accel::Kvm { 2 } else { 1 };
    let vm = Vm {
        qemu: qemu_program(),
        image: image.clone(),
        ram_mb: options.ram_mb.unwrap_or(DEFAULT_RAM_MB),
        cpus,
        accel,
        console: Console::Live {
            log: console_log.clone(),
        },
        ovmf_code,
        ovmf_vars,
        qmp: None,
    };
    let timeout = options.timeout.unwrap_or(DEFAULT_TIMEOUT);
    settings.say(format!(
        "booting {} as a USB stick (OVMF, {} MiB, {} CPU); serial console follows, timeout {} s",
        image.display(),
        vm.ram_mb,
        vm.cpus,
        timeout.as_secs()
    ));
    let mut child = vm.spawn()?;
    let status = wait_with_timeout(&mut child, timeout).map_err(io_err("wait for", &image))?;
    let _ = io::stdout().flush();
    match status {
        None => {
            if !options.keep {
                // Keep the scratch image for a look at the partial session.
                let kept = scratch.keep();
                return Err(RunError::Timeout {
                    seconds: timeout.as_secs(),
                    image: kept.join("stick.img"),
                });
            }
            return Err(RunError::Timeout {
                seconds: timeout.as_secs(),
                image,
            });
        }
        Some(status) if !status.success() => {
            settings.say(format!("QEMU exited with {status}"));
            if vm.accel != Accel::Kvm
                && std::os::unix::process::ExitStatusExt::signal(&status) == Some(6)
            {
                settings.say(
                    "QEMU aborted: its TCG, emulating SVM for the stick's KVM, asserts when a nested \
                     UEFI guest writes CR8 (`tcg_handle_interrupt: assertion failed`, a QEMU bug; \
                     see README). Set HIPERISO_QEMU to a QEMU built by tests/support/outer-qemu.sh.",
                );
            }
        }
        Some(_) => {}
    }

    let after = session_ids(&image)?;
    let Some(id) = after.into_iter().rev().find(|id| !before.contains(id)) else {
        return Err(RunError::NoSession { image });
    };
    let report = session_report(&image, &id)?;
    settings.say(format!("\nsession {id} (read back from the image):"));
    settings.say(analyze::render_text(&report));
    if report.result != BootResult::Booted {
        return Err(RunError::NotBooted {
            id,
            result: report.result.as_str().to_string(),
        });
    }
    Ok(RunOutcome {
        session_id: id,
        report,
        image: if options.keep { image } else { original },
    })
}

#[cfg(test)]
mod tests;
