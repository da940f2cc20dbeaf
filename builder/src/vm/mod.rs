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
//!    console is shown live. `--accel auto`: KVM when this very VM starts
//!    with it (a probe runs it for a few seconds), else TCG with an
//!    SVM-capable CPU (`EPYC`) so the stick's own KVM path runs. Under TCG
//!    a UEFI guest needs a QEMU without the CR8 bug: the `outer-qemu` step,
//!    built (once, then cached) when the manifest is at hand.
//! 5. At `--timeout`, press the VM's power button (ACPI, over QMP):
//!    hiperiso-init finishes the session, writes the report and powers
//!    off. Only if that fails is QEMU killed.
//! 6. Read the new session back from the image (no mount), print its
//!    report, and succeed only if the result is `booted`.
use std::fs::{self};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use hiperiso_runtime::analyze::{self, BootResult, Report};

use hiperiso_stick::io::io_err;

use crate::project::Project;
use crate::settings::Settings;
use crate::sources::store::Store;

pub mod error;
pub mod outer;
pub mod qemu;
pub mod stick;

pub use error::RunError;
pub use outer::{may_boot_uefi, outer_qemu};
pub use qemu::{
    Accel, AccelChoice, Console, Vm, find_ovmf, probe_kvm, qemu_program, wait_with_timeout,
};
pub use stick::{
    GRUBENV_PATH, LAST_IMAGE_FILE, StickImage, last_image, put_report, read_session_file,
    record_last_image, session_ids, session_report, working_copy,
};

use error::Result;

/// Outer VM memory when `--ram` is not given: the inner guest's default
/// 2 GiB plus the host kernel, initramfs and QEMU.
pub const DEFAULT_RAM_MB: u64 = 4096;
/// Give up after this long when `--timeout` is not given.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1800);
/// After the power button, how long the stick gets to finish the session
/// and power off (the guest's own shutdown, the analysis, exFAT writes;
/// slow under TCG).
pub const STOP_GRACE: Duration = Duration::from_secs(180);

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
    pub accel: AccelChoice,
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
/// `project` (the manifest at hand) lets `run` build the `outer-qemu` step
/// when TCG needs it.
pub fn run(
    settings: &Settings,
    project: Option<&Project>,
    options: &RunOptions,
) -> Result<RunOutcome, RunError> {
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
    let console_log = scratch.path().join("console.log");
    let mut vm = Vm {
        qemu: qemu_program(),
        image: image.clone(),
        ram_mb: options.ram_mb.unwrap_or(DEFAULT_RAM_MB),
        cpus: 2,
        accel: Accel::Kvm,
        console: Console::Live {
            log: console_log.clone(),
        },
        ovmf_code,
        ovmf_vars,
        qmp: Some(scratch.path().join("qmp.sock")),
        snapshot: false,
    };
    vm.accel = choose_accel(settings, options.accel, &vm, scratch.path())?;
    if vm.accel != Accel::Kvm {
        // One vCPU under TCG: QEMU 7.2's multi-threaded TCG aborts
        // ("tcg_handle_interrupt: assertion failed") when the stick's kernel
        // sends IPIs while its nested KVM guest runs.
        vm.cpus = 1;
        if std::env::var_os("HIPERISO_QEMU").is_none() && may_boot_uefi(options) {
            match project {
                Some(project) => {
                    settings.say(
                        "a UEFI guest under TCG needs a QEMU without the CR8 bug: the `outer-qemu` \
                         step (minutes the first time, cached afterwards)",
                    );
                    vm.qemu = outer_qemu(project)?.display().to_string();
                }
                None => settings.say(
                    "warning: no manifest here to build the `outer-qemu` step; the host's QEMU \
                     aborts when a nested UEFI guest writes CR8 under TCG",
                ),
            }
        }
    }
    let timeout = options.timeout.unwrap_or(DEFAULT_TIMEOUT);
    settings.say(format!(
        "booting {} as a USB stick (OVMF, {} MiB, {} CPU); serial console follows, timeout {} s",
        image.display(),
        vm.ram_mb,
        vm.cpus,
        timeout.as_secs()
    ));
    let mut child = vm.spawn()?;
    let mut status = qemu::wait_for(&mut child, timeout).map_err(io_err("wait for", &image))?;
    if status.is_none() {
        let _ = io::stdout().flush();
        settings.say(format!(
            "\n--timeout: {} s passed; pressing the power button (the stick finishes the session \
             and powers off)",
            timeout.as_secs()
        ));
        let socket = scratch.path().join("qmp.sock");
        if let Err(error) = qemu::press_power_button(&socket)
            .map_err(io_err("press the power button through", &socket))
        {
            settings.say(format!("warning: {}", hiperiso_stick::error_chain(&error)));
        }
        status = wait_with_timeout(&mut child, STOP_GRACE).map_err(io_err("wait for", &image))?;
        if status.is_none() {
            settings.say(format!(
                "the stick did not power off within {} s of the power button; QEMU was killed",
                STOP_GRACE.as_secs()
            ));
        }
    }
    let _ = io::stdout().flush();
    match status {
        None => {}
        Some(status) if !status.success() => {
            settings.say(format!("QEMU exited with {status}"));
            if vm.accel != Accel::Kvm
                && std::os::unix::process::ExitStatusExt::signal(&status) == Some(6)
            {
                settings.say(
                    "QEMU aborted: its TCG, emulating SVM for the stick's KVM, asserts when a nested \
                     UEFI guest writes CR8 (`tcg_handle_interrupt: assertion failed`, a QEMU bug; \
                     `run` uses the `outer-qemu` step's QEMU for UEFI guests when it has the \
                     manifest (run it from the checkout), or set HIPERISO_QEMU to that build.",
                );
            }
        }
        Some(_) => {}
    }

    let after = session_ids(&image)?;
    let Some(id) = after.into_iter().rev().find(|id| !before.contains(id)) else {
        if status.is_none() && !options.keep {
            // Keep the scratch image for a look at what happened.
            let kept = scratch.keep();
            return Err(RunError::Timeout {
                seconds: timeout.as_secs(),
                image: kept.join("stick.img"),
            });
        }
        return Err(RunError::NoSession { image });
    };
    let report = session_report(&image, &id)?;
    if let Err(error) = put_report(&image, &id, &report) {
        settings.say(format!(
            "warning: the report could not be written back into the session: {}",
            hiperiso_stick::error_chain(&error)
        ));
    }
    settings.say(format!("\nsession {id} (read back from the image):"));
    settings.say(analyze::render_text(&report));
    if report.result != BootResult::Booted {
        return Err(RunError::NotBooted {
            id,
            result: report.result,
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

/// The outer VM's accelerator for `--accel`.
fn choose_accel(
    settings: &Settings,
    choice: AccelChoice,
    vm: &Vm,
    scratch: &Path,
) -> Result<Accel> {
    let tcg = "accelerator: TCG with -cpu EPYC, so the stick still gets KVM (SVM) for its guest";
    if choice == AccelChoice::Tcg {
        settings.say(format!("{tcg} (--accel tcg)"));
        return Ok(Accel::tcg_with_svm());
    }
    match probe_kvm(vm, scratch) {
        Ok(()) => {
            settings.say("accelerator: KVM");
            Ok(Accel::Kvm)
        }
        Err(reason) if choice == AccelChoice::Kvm => Err(RunError::KvmUnusable { reason }),
        Err(reason) => {
            settings.say(format!("{tcg}; KVM is not usable here: {reason}"));
            Ok(Accel::tcg_with_svm())
        }
    }
}
