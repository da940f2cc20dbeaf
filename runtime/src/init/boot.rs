//! What PID 1 does and learns before the session exists: the basic
//! mounts, the kernel command line, the kernel modules, the stick's
//! partitions; and where things are mounted.

use super::console::say;
use super::partitions::{self, ProbedPartition};
use crate::cmdline::KernelCmdline;
use crate::modules;
use crate::secure_boot;
use crate::sys;
use hiperiso_stick::boot::{cmdline as boot_keys, grubenv as grubenv_keys};
use std::fs;
use std::path::{Path, PathBuf};

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

/// Mount the pseudo filesystems PID 1 needs.
fn mount_basics() {
    let mounts: &[(&str, &str, &str)] = &[
        ("proc", "/proc", "proc"),
        ("sysfs", "/sys", "sysfs"),
        ("devtmpfs", "/dev", "devtmpfs"),
        ("tmpfs", "/run", "tmpfs"),
        ("devpts", "/dev/pts", "devpts"),
        // the kernel's lockdown mode (secure_boot.rs)
        ("securityfs", "/sys/kernel/security", "securityfs"),
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

/// The kernel's log so far, from /dev/kmsg (one record per read; reading
/// stops where the log ends).
fn kernel_log() -> String {
    use std::io::{ErrorKind, Read};
    use std::os::unix::fs::OpenOptionsExt;
    let Ok(mut kmsg) = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open("/dev/kmsg")
    else {
        return String::new();
    };
    let mut log = String::new();
    let mut record = [0u8; 8192];
    // Bounded: the ring buffer holds far fewer records.
    for _ in 0..100_000 {
        match kmsg.read(&mut record) {
            Ok(0) => break,
            Ok(n) => log.push_str(&String::from_utf8_lossy(&record[..n])),
            // EPIPE: records were overwritten while reading; go on.
            Err(e) if e.raw_os_error() == Some(libc::EPIPE) => continue,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => break,
        }
    }
    log
}

/// `hiperiso.iso=pick`: the image from the data partition's /ISOs and
/// grubenv's default (secure_boot.rs).
fn pick_iso() -> Option<String> {
    let data = Path::new(DATA_MOUNT);
    let isos: Vec<String> = fs::read_dir(data.join(hiperiso_stick::paths::data::ISOS_DIR))
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.to_ascii_lowercase().ends_with(".iso"))
        .collect();
    let env = fs::read(data.join(hiperiso_stick::paths::data::GRUBENV)).unwrap_or_default();
    let default = crate::grubenv::parse(&env)
        .into_iter()
        .find(|(key, value)| key == grubenv_keys::DEFAULT && !value.is_empty())
        .map(|(_, value)| value);
    secure_boot::pick_iso(&isos, default.as_deref())
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
    /// `enabled`, `disabled`, `unknown` or `not_uefi` (secure_boot.rs).
    pub secure_boot: &'static str,
    /// The lockdown mode in force (`none`, `integrity`,
    /// `confidentiality`), or `unknown` without securityfs.
    pub lockdown: String,
    pub t_start: u64,
    pub t_modules: u64,
    pub t_data: u64,
}

/// Mounts, the kernel command line, modules, the stick's partitions.
pub fn start() -> Boot {
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
    let secure_boot = secure_boot::secure_boot_from_kernel_log(&kernel_log());
    let lockdown = fs::read_to_string("/sys/kernel/security/lockdown")
        .ok()
        .and_then(|text| secure_boot::lockdown_mode(&text).map(str::to_string))
        .unwrap_or_else(|| "unknown".into());
    say(&format!("secure_boot={secure_boot} lockdown={lockdown}"));
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
    let data = partitions::mount_data(&cmdline.data, cmdline.esp.as_ref(), wait, DATA_MOUNT);
    let mut cmdline = cmdline;
    // (the parser made it `/pick`, as every hiperiso.iso is absolute)
    if cmdline
        .iso
        .as_deref()
        .map(|iso| iso.trim_start_matches('/'))
        == Some(boot_keys::ISO_PICK)
    {
        cmdline.iso = pick_iso();
        say(&format!(
            "hiperiso.iso=pick: booting {}",
            cmdline
                .iso
                .as_deref()
                .unwrap_or("nothing (no *.iso in /ISOs)")
        ));
    }
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
        secure_boot,
        lockdown,
        t_start,
        t_modules,
        t_data: sys::uptime_ms(),
    }
}
