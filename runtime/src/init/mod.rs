//! `hiperiso-init`, PID 1 of the stick's initramfs: find the data partition,
//! record a session, boot the chosen ISO in QEMU, and finish the session
//! whatever happens (DESIGN.md §5).
//!
//! - [`partitions`]: finding and mounting the data partition and the ESP;
//! - [`recording`]: the live session ([`Recording`]) and its files; every
//!   path below ends in [`Recording::finish`], which writes the final
//!   `session.json`, `index.jsonl`, `FAILURE.txt` on failure and
//!   `SESSION_COMPLETE` last;
//! - [`steps`]: one session, step by step: config, host inventory, KVM, the ISO;
//! - [`firmware`]: UEFI or BIOS for the ISO, and the firmware files;
//! - [`vm`]: running and supervising QEMU;
//! - [`guest_display`]: the viewer or the serial mirror while it runs.
//!
//! - [`boot`]: the basic mounts, modules and partitions, before the session;
//! - [`console`]: messages on the host's consoles.
//!
//! [`main`] runs them in order and after the session powers off, reboots
//! or drops to a shell.

pub mod boot;
pub mod console;
pub mod firmware;
pub mod guest_display;
pub mod partitions;
pub mod recording;
pub mod steps;
pub mod vm;

pub use boot::{Boot, DATA_MOUNT, DEFAULT_DATA_WAIT, ESP_MOUNT, RUN_DIR, TMPFS_LOGS};
pub use console::say;
pub use partitions::ProbedPartition;
pub use recording::Recording;

use crate::cmdline::AfterAction;
use crate::sys;
use std::path::Path;
use std::process::Command;
use std::thread::sleep;
use std::time::Duration;

/// PID 1's entry point.
pub fn main() -> ! {
    let boot = boot::start();
    if boot.cmdline.rescue_shell {
        say("rescue shell requested (hiperiso.shell=1); exit the shell to power off");
        run_shell();
        shutdown(
            AfterAction::Poweroff,
            boot.data.is_some(),
            boot.esp.is_some(),
        );
    }
    let (after, failed) = steps::run(&boot);
    if failed {
        let pause = boot.cmdline.pause_seconds.unwrap_or(15);
        if pause > 0 && after != AfterAction::Shell {
            say(&format!("the session failed; continuing in {pause} s"));
            sleep(Duration::from_secs(u64::from(pause)));
        }
    }
    shutdown(after, boot.data.is_some(), boot.esp.is_some())
}

fn run_shell() {
    let shells = ["/bin/sh", "/bin/busybox"];
    let Some(shell) = shells.iter().find(|p| Path::new(p).exists()) else {
        say("no shell in the initramfs");
        return;
    };
    let mut cmd = Command::new(shell);
    if shell.ends_with("busybox") {
        cmd.arg("sh");
    }
    match cmd.env("PS1", "hiperiso# ").status() {
        Ok(_) => {}
        Err(e) => say(&format!("cannot run {shell}: {e}")),
    }
}

fn shutdown(after: AfterAction, data_mounted: bool, esp_mounted: bool) -> ! {
    if after == AfterAction::Shell {
        say("dropping to a shell (hiperiso.after=shell); exit it to power off");
        run_shell();
    }
    sys::sync_all();
    for (mounted, target) in [(data_mounted, DATA_MOUNT), (esp_mounted, ESP_MOUNT)] {
        if mounted && let Err(e) = sys::umount(Path::new(target)) {
            say(&format!("cannot unmount {target}: {e}"));
        }
    }
    let cmd = match after {
        AfterAction::Reboot | AfterAction::Menu => {
            say("rebooting");
            libc::LINUX_REBOOT_CMD_RESTART
        }
        AfterAction::Poweroff | AfterAction::Shell => {
            say("powering off");
            libc::LINUX_REBOOT_CMD_POWER_OFF
        }
    };
    let error = sys::reboot(cmd);
    say(&format!("reboot(2) failed: {error}"));
    loop {
        sleep(Duration::from_secs(3600));
    }
}
