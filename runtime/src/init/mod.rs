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
//! This module mounts the basics, loads the kernel modules, and after the
//! session powers off, reboots or drops to a shell.

pub mod firmware;
pub mod guest_display;
pub mod partitions;
pub mod recording;
pub mod steps;
pub mod vm;

pub use partitions::ProbedPartition;
pub use recording::Recording;

use crate::cmdline::{AfterAction, KernelCmdline};
use crate::modules;
use crate::sys;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread::sleep;
use std::time::Duration;

/// Where the data partition is mounted (read-write).
pub const DATA_MOUNT: &str = "/mnt/data";
/// Where the ESP is mounted (read-only), when `hiperiso.esp=` names it.
pub const ESP_MOUNT: &str = "/mnt/esp";
/// Scratch space on tmpfs: QMP socket, OVMF variables, swtpm state.
pub const RUN_DIR: &str = "/run/hiperiso";
/// The session goes here when there is no data partition.
pub const TMPFS_LOGS: &str = "/run/hiperiso/logs";
/// Default seconds to wait for the data partition (`hiperiso.wait=`).
pub const DEFAULT_DATA_WAIT: u32 = 20;

/// Print a message on every console: the kernel's console and, when it is
/// a different device, the first serial port.
pub fn say(message: &str) {
    let line = format!("hiperiso: {message}\n");
    let _ = std::io::stderr().write_all(line.as_bytes());
    if let Ok(mut kmsg) = fs::OpenOptions::new().write(true).open("/dev/kmsg") {
        let _ = kmsg.write_all(format!("<5>hiperiso: {message}\n").as_bytes());
    }
}

/// Mount the pseudo filesystems PID 1 needs.
fn mount_basics() {
    let mounts: &[(&str, &str, &str)] = &[
        ("proc", "/proc", "proc"),
        ("sysfs", "/sys", "sysfs"),
        ("devtmpfs", "/dev", "devtmpfs"),
        ("tmpfs", "/run", "tmpfs"),
        ("devpts", "/dev/pts", "devpts"),
    ];
    for (source, target, fstype) in mounts {
        match sys::mount(source, Path::new(target), fstype, 0, "") {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {}
            Err(e) => say(&format!("cannot mount {fstype} on {target}: {e}")),
        }
    }
    let _ = fs::create_dir_all(RUN_DIR);
}

/// Load the initramfs' kernel modules: the list file when the builder
/// shipped one, otherwise every `.ko` below `/lib/modules/<release>`.
fn load_modules(release: &str) -> modules::LoadReport {
    let base = PathBuf::from("/lib/modules").join(release);
    if !base.is_dir() {
        return modules::LoadReport::default();
    }
    let lists = [
        PathBuf::from("/etc/hiperiso/modules.load"),
        base.join("hiperiso.load"),
        base.join("modules.load"),
    ];
    let list = lists
        .iter()
        .find_map(|p| fs::read_to_string(p).ok())
        .map(|text| modules::read_list(&text, &base));
    let mut wanted = list.unwrap_or_default();
    // Whatever the list says, every module in the initramfs is a candidate:
    // listed ones first, in order.
    for found in modules::find_modules(&base) {
        if !wanted.contains(&found) {
            wanted.push(found);
        }
    }
    modules::load_all(&wanted)
}

/// Everything learned before the session directory exists.
pub struct Boot {
    pub cmdline: KernelCmdline,
    pub cmdline_text: String,
    pub modules: modules::LoadReport,
    pub data: Option<ProbedPartition>,
    pub esp: Option<ProbedPartition>,
    pub t_start: u64,
    pub t_modules: u64,
    pub t_data: u64,
}

/// PID 1's entry point.
pub fn main() -> ! {
    let boot = start();
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

/// Mounts, the kernel command line, modules, the stick's partitions.
fn start() -> Boot {
    let t_start = sys::uptime_ms();
    mount_basics();
    let cmdline_text = fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let cmdline = KernelCmdline::parse(&cmdline_text);
    say(&format!(
        "hiperiso-init {} starting",
        env!("CARGO_PKG_VERSION")
    ));
    for warning in &cmdline.warnings {
        say(&format!("warning: {warning}"));
    }
    let release = sys::kernel_release();
    let modules = load_modules(&release);
    say(&format!(
        "kernel {release}: {} modules loaded, {} not loadable",
        modules.loaded.len(),
        modules.failed.len()
    ));
    let t_modules = sys::uptime_ms();
    let wait = cmdline.wait_seconds.unwrap_or(DEFAULT_DATA_WAIT);
    say(&format!(
        "looking for the data partition {} (up to {wait} s)",
        cmdline.data
    ));
    let data = partitions::mount_data(&cmdline.data, wait, DATA_MOUNT);
    let esp = cmdline
        .esp
        .as_ref()
        .and_then(|spec| partitions::mount_esp(spec, ESP_MOUNT));
    Boot {
        cmdline,
        cmdline_text,
        modules,
        data,
        esp,
        t_start,
        t_modules,
        t_data: sys::uptime_ms(),
    }
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
