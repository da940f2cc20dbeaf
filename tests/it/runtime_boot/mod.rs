//! hiperiso-init end to end: an outer QEMU (TCG, `-cpu EPYC`, so its kernel
//! gets real nested KVM) boots a Debian kernel with an initramfs holding the
//! static `hiperiso-init`, QEMU, SeaBIOS and OVMF. Its data disk is an exFAT
//! volume (written by our installer's exFAT writer) with test ISOs built by
//! xorriso: a BIOS-only boot-sector payload and a UEFI GRUB payload, both
//! printing a marker on serial and powering off. Each scenario boots once
//! and reads the session back from the disk image.
//!
//! The kernel comes from `apt-get download` (cached under the target dir);
//! the initramfs is packed here with `cpio` until the debian profile's
//! builder provides one.

use hiperiso_installer::exfat::{self, ExfatOptions, ExfatReader};
use hiperiso_runtime::qmp::Qmp;
use hiperiso_stick::qemu::{Accel, Chardev, Drive, Firmware, Machine, QemuCommand};
use hiperiso_stick::session::{
    FailureKind, IndexEntry, Outcome, SessionInfo, Status, TimelineEntry,
};
use hiperiso_tests::{isos, outer_qemu, real_isos, workspace_root};
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

pub(crate) const DATA_SERIAL: u32 = 0x4849_5045;
pub(crate) const DATA_UUID: &str = "4849-5045";
pub(crate) const BIOS_MARKER: &str = "HIPERISO-MARKER-BIOS";
pub(crate) const UEFI_MARKER: &str = "HIPERISO-MARKER-UEFI";
pub(crate) const PANIC_MARKER: &str = "HIPERISO-MARKER-PANIC";
pub(crate) const HANG_MARKER: &str = "HIPERISO-MARKER-HANG";
/// Events only the `detailed` trace tier (trace-detailed.events) lists
/// that any SeaBIOS boot under KVM produces; `standard` has none of them.
pub(crate) const DETAILED_EVENTS: &[&str] = &["pci_cfg_read", "fw_cfg_select", "kvm_run_exit"];
/// What init prints once the guest runs.
pub(crate) const GUEST_RUNNING: &str = "hiperiso: guest running";
pub(crate) const OUTER_TIMEOUT: Duration = Duration::from_secs(400);
/// Modules the outer VM's kernel needs (dependencies are added).
pub(crate) const MODULES: &[&str] = &[
    "kvm-amd",
    "kvm-intel",
    "virtio_pci",
    "virtio_blk",
    "exfat",
    "vfat",
    "nls_utf8",
    "nls_cp437",
    "evdev",
    "button",
];

/// Two single-vCPU outer VMs at a time: the machine has two cores.
pub(crate) const PARALLEL_VMS: usize = 2;
pub(crate) static RUNNING_VMS: (Mutex<usize>, Condvar) = (Mutex::new(0), Condvar::new());

/// A slot for one outer VM, released on drop.
pub(crate) struct VmSlot;

impl VmSlot {
    pub(crate) fn acquire() -> VmSlot {
        let (lock, ready) = &RUNNING_VMS;
        let mut running = lock.lock().unwrap_or_else(|e| e.into_inner());
        while *running >= PARALLEL_VMS {
            running = ready.wait(running).unwrap_or_else(|e| e.into_inner());
        }
        *running += 1;
        VmSlot
    }
}

impl Drop for VmSlot {
    fn drop(&mut self) {
        let (lock, ready) = &RUNNING_VMS;
        *lock.lock().unwrap_or_else(|e| e.into_inner()) -= 1;
        ready.notify_one();
    }
}

mod fixture;
mod grub_menu;
mod harness;
use fixture::*;
use harness::*;

/// Also the `detailed` trace tier: its PCI configuration, fw_cfg and VM
/// exit events are in the decoded trace, and `full`'s are not.
#[test]
fn kvm_boots_a_bios_only_iso_with_seabios() {
    let out = boot(
        "hiperiso.iso=/ISOs/bios.iso hiperiso.data=UUID=4849-5045 hiperiso.trace=detailed",
        "EPYC",
        GOOD_CONFIG,
    );
    let mut s = SessionFiles::open(&out);
    s.check_guest_ran(BIOS_MARKER, "bios", "kvm");
    assert_eq!(s.info.trace_level, "detailed");
    let events = s.trace_events();
    for name in DETAILED_EVENTS {
        assert!(events.iter().any(|e| e == name), "no {name} in {events:?}");
    }
    assert!(
        !events.iter().any(|e| e == "memory_region_ops_read"),
        "{events:?}"
    );
    assert_eq!(
        s.info.firmware_reason.as_deref(),
        Some("el_torito_bios_only")
    );
    assert!(s.info.failures.is_empty(), "{:?}", s.info.failures);
    assert_eq!(s.info.ram_mb, 256, "hiperiso.json applied");
    assert!(!s.list("screenshots").is_empty(), "no screenshots");
    assert!(
        out.console.contains("hiperiso: session complete"),
        "{}",
        out.console
    );
    // The default `after` powers off.
    assert!(
        out.console.contains("reboot: Power down"),
        "{}",
        out.console
    );
    assert!(
        !out.console.contains("Restarting system"),
        "{}",
        out.console
    );
}

/// UEFI images get OVMF, and the guest (a standalone GRUB) reaches its
/// marker under nested KVM. The outer VM runs on the patched QEMU of
/// `tests/support/outer_qemu.rs`: stock QEMU's TCG aborts as soon as the
/// nested OVMF writes CR8.
#[test]
fn a_uefi_iso_gets_ovmf() {
    let qemu = outer_qemu::outer_qemu().expect("building the outer VM's QEMU");
    let out = boot_on(
        &qemu,
        "hiperiso.iso=/ISOs/uefi.iso hiperiso.data=UUID=4849-5045",
        "EPYC",
        GOOD_CONFIG,
    );
    let mut s = SessionFiles::open(&out);
    s.check_guest_ran(UEFI_MARKER, "uefi", "kvm");
    assert!(s.info.failures.is_empty(), "{:?}", s.info.failures);
    assert_eq!(
        s.info.firmware_reason.as_deref(),
        Some("el_torito_uefi_entry")
    );
    let cmdline = s.text("qemu.cmdline");
    assert!(cmdline.contains("q35,accel=kvm,smm=on"), "{cmdline}");
    assert!(
        cmdline.contains("readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd"),
        "{cmdline}"
    );
    assert!(
        cmdline.contains("unit=1,file=/run/hiperiso/OVMF_VARS.fd"),
        "{cmdline}"
    );
}

/// Broken JSON never stops a boot: defaults are used, the error (with its
/// line and column) is on screen and in FAILURE.txt, and the guest runs, here
/// under the TCG fallback.
#[test]
fn a_broken_config_falls_back_to_defaults_and_tcg_boots_the_guest() {
    let broken = "{\n  \"control\": {\n    \"default_ram\": 256,,\n  }\n}\n";
    let out = boot(
        "hiperiso.iso=/ISOs/bios.iso hiperiso.data=UUID=4849-5045 hiperiso_fallback=1",
        "EPYC,svm=off",
        broken,
    );
    let mut s = SessionFiles::open(&out);
    let message = s.check_failure(FailureKind::ConfigBroken, false);
    assert!(message.contains("line 3, column 24"), "{message}");
    s.check_guest_ran(BIOS_MARKER, "bios", "tcg");
    assert_eq!(s.info.ram_mb, 2048, "defaults after a broken config");
    assert!(
        s.info.warnings.iter().any(|w| w.contains("KVM unusable")),
        "{:?}",
        s.info.warnings
    );
    assert!(
        out.console.contains("invalid JSON at line 3"),
        "not on screen:\n{}",
        out.console
    );
}

#[test]
fn without_kvm_and_without_fallback_the_session_fails() {
    let out = boot(
        "hiperiso.iso=/ISOs/bios.iso hiperiso.data=UUID=4849-5045",
        "EPYC,svm=off",
        GOOD_CONFIG,
    );
    let mut s = SessionFiles::open(&out);
    let message = s.check_failure(FailureKind::NoKvm, true);
    assert!(message.contains("hiperiso_fallback=1"), "{message}");
    assert!(
        !s.exists("serial.log") && !s.exists("qemu.cmdline"),
        "QEMU must not run"
    );
    assert!(
        out.console.contains("FAILURE: KVM cannot run a VM"),
        "{}",
        out.console
    );
}

/// Also `hiperiso.after=reboot`: the machine restarts (the kernel says so;
/// the outer QEMU's `-no-reboot` then exits) instead of powering off.
#[test]
fn a_missing_iso_fails_the_session() {
    let out = boot(
        "hiperiso.iso=/ISOs/nowhere.iso hiperiso.data=UUID=4849-5045 hiperiso.after=reboot",
        "EPYC",
        GOOD_CONFIG,
    );
    let mut s = SessionFiles::open(&out);
    let message = s.check_failure(FailureKind::IsoMissing, true);
    assert!(message.contains("ISOs/nowhere.iso"), "{message}");
    assert!(s.dir.contains("nowhere_"), "{}", s.dir);
    assert_restarted(&out.console);
    assert_eq!(
        grub_hold(&mut s),
        "0",
        "after=reboot does not hold GRUB's menu"
    );
}

/// The kernel restarted the machine rather than powering it off.
fn assert_restarted(console: &str) {
    assert!(console.contains("hiperiso: rebooting"), "{console}");
    assert!(console.contains("reboot: Restarting system"), "{console}");
    assert!(!console.contains("reboot: Power down"), "{console}");
}

/// `hiperiso_hold` in the data partition's `hiperiso/grubenv`.
fn grub_hold(s: &mut SessionFiles) -> String {
    let block = read_all(&mut s.reader, "hiperiso/grubenv");
    hiperiso_runtime::grubenv::parse(&block)
        .into_iter()
        .find(|(k, _)| k == hiperiso_stick::boot::grubenv::HOLD)
        .map(|(_, v)| v)
        .unwrap_or_else(|| panic!("no hold in grubenv: {:?}", String::from_utf8_lossy(&block)))
}

/// Also `hiperiso.after=menu`: GRUB's environment holds the menu for the
/// next boot, and the machine restarts.
#[test]
fn an_unreadable_iso_fails_the_session() {
    let out = boot(
        "hiperiso.iso=/ISOs/junk.iso hiperiso.data=UUID=4849-5045 hiperiso.after=menu",
        "EPYC",
        GOOD_CONFIG,
    );
    let mut s = SessionFiles::open(&out);
    let message = s.check_failure(FailureKind::IsoUnreadable, true);
    assert!(message.contains("not an ISO 9660 image"), "{message}");
    assert_restarted(&out.console);
    assert_eq!(grub_hold(&mut s), "1", "after=menu holds GRUB's menu");
}

/// Also `hiperiso.after=shell`: after the session a shell takes commands
/// on the console, with the data partition still mounted and writable, and
/// exiting it powers off.
#[test]
fn qemu_failing_to_start_is_recorded_with_its_stderr() {
    let out = boot_with(
        Path::new("qemu-system-x86_64"),
        "hiperiso.iso=/ISOs/startfail.iso hiperiso.data=UUID=4849-5045 hiperiso.after=shell",
        "EPYC",
        GOOD_CONFIG,
        &Extras {
            shell_input: Some(
                "echo shell-$((6*7)) > /mnt/data/shell.txt; echo HIPERISO-SHELL-$((6*7)); exit\n",
            ),
            ..Extras::default()
        },
    );
    let mut s = SessionFiles::open(&out);
    let message = s.check_failure(FailureKind::QemuStartFailed, true);
    assert!(message.contains("hiperiso-no-such-flag"), "{message}");
    assert!(s.text("qemu.stderr").contains("hiperiso-no-such-flag"));
    assert_eq!(s.info.matched_overrides, vec!["startfail*.iso".to_string()]);
    // The shell ran the line (the echo of the typed text has `$((6*7))`,
    // not 42), then init powered off.
    let console = &out.console;
    assert!(console.contains("dropping to a shell"), "{console}");
    assert!(console.contains("HIPERISO-SHELL-42"), "{console}");
    assert!(
        !console.contains("continuing in"),
        "no pause before a shell"
    );
    let shell_at = console.find("HIPERISO-SHELL-42").unwrap();
    assert!(
        console[shell_at..].contains("reboot: Power down"),
        "{console}"
    );
    assert_eq!(
        String::from_utf8(read_all(&mut s.reader, "shell.txt")).unwrap(),
        "shell-42\n"
    );
}

/// Also the `full` trace tier: every device register access
/// (`memory_region_ops_*`) besides `detailed`'s events.
#[test]
fn a_guest_panic_is_a_crash() {
    let out = boot(
        "hiperiso.iso=/ISOs/panic.iso hiperiso.data=UUID=4849-5045 hiperiso.trace=full",
        "EPYC",
        GOOD_CONFIG,
    );
    let mut s = SessionFiles::open(&out);
    s.check_failure(FailureKind::GuestCrash, true);
    let events = s.trace_events();
    for name in DETAILED_EVENTS
        .iter()
        .chain(&["memory_region_ops_read", "memory_region_ops_write"])
    {
        assert!(events.iter().any(|e| e == name), "no {name} in {events:?}");
    }
    assert!(s.text("serial.log").contains(PANIC_MARKER));
    assert!(
        s.info
            .guest_events
            .iter()
            .any(|e| e.contains("GUEST_PANICKED")),
        "{:?}",
        s.info.guest_events
    );
}

#[test]
fn no_data_partition_logs_to_tmpfs_and_says_so() {
    let out = boot(
        "hiperiso.iso=/ISOs/bios.iso hiperiso.data=UUID=0000-0000 hiperiso.wait=2",
        "EPYC",
        GOOD_CONFIG,
    );
    assert!(
        out.console
            .contains("no data partition matching UUID=0000-0000")
            && out
                .console
                .contains("only on tmpfs (/run/hiperiso/logs/bios_"),
        "{}",
        out.console
    );
    let mut reader = ExfatReader::open(File::open(&out.image).unwrap()).unwrap();
    assert!(
        reader.read_dir("hiperiso/logs").is_err(),
        "the data disk must be untouched"
    );
}

/// The outer machine's power button pressed mid-session (what
/// `hiperiso-build run --timeout` does): init asks the guest (a BIOS boot
/// sector that halts forever) to power down, quits QEMU, finalizes the
/// session with outcome `stopped` and a report, and powers off. The guest
/// is in VGA text mode under SeaBIOS, so its screen is read exactly.
#[test]
fn the_host_power_button_finalizes_the_session() {
    let out = boot_with(
        Path::new("qemu-system-x86_64"),
        "hiperiso.iso=/ISOs/hang.iso hiperiso.data=UUID=4849-5045",
        "EPYC",
        GOOD_CONFIG,
        &Extras {
            power_button_after: Some(Duration::from_secs(12)),
            ..Extras::default()
        },
    );
    let mut s = SessionFiles::open(&out);
    s.check_always_present();
    assert_eq!(s.info.outcome, Outcome::Stopped, "{:?}", s.info);
    assert!(s.info.failures.is_empty(), "{:?}", s.info.failures);
    assert!(s.text("serial.log").contains(HANG_MARKER));
    assert!(
        out.console.contains("the host's power button was pressed"),
        "{}",
        out.console
    );
    let report: serde_json::Value = serde_json::from_str(&s.text("report.json")).unwrap();
    assert!(report.is_object(), "{report}");
    let log = s.text("report.log");
    assert!(log.starts_with("$ hiperiso-log analyze "), "{log}");
    let timeline = s.check_timeline();
    assert!(!timeline.is_empty());
    let text = s.last_screen_text(&timeline);
    assert!(
        text.contains("Booting from DVD/CD"),
        "SeaBIOS's screen:\n{text}"
    );
    assert!(text.lines().count() >= 25, "{text}");
}

/// `control.session_timeout` ends a guest that never powers off (GRUB's
/// rescue CD, a real third-party image waiting in its menu) the same way:
/// outcome `timeout`, finalized, report written. GRUB's menu is on the VGA
/// text screen under SeaBIOS and is read exactly.
#[test]
fn session_timeout_finalizes_the_session_and_reads_grubs_text_menu() {
    let grub = real_isos::fetch(&real_isos::GRUB_RESCUE).expect("GRUB's rescue CD");
    let config = r#"{
  "control": {"default_ram": 256, "default_cpus": 1, "screenshot_interval": 2, "session_timeout": 25}
}"#;
    let out = boot_with(
        Path::new("qemu-system-x86_64"),
        "hiperiso.iso=/ISOs/grub-rescue-cdrom.iso hiperiso.data=UUID=4849-5045",
        "EPYC",
        config,
        &Extras {
            isos: vec![grub],
            data_mib: Some(128),
            ..Extras::default()
        },
    );
    let mut s = SessionFiles::open(&out);
    s.check_always_present();
    assert_eq!(s.info.outcome, Outcome::Timeout, "{:?}", s.info);
    assert!(s.info.failures.is_empty(), "{:?}", s.info.failures);
    assert!(s.exists("report.log"));
    let timeline = s.check_timeline();
    let text = s.last_screen_text(&timeline);
    assert!(text.contains("GNU GRUB"), "GRUB's screen:\n{text}");
    assert!(
        s.info.guest_events.iter().any(|e| e.contains("POWERDOWN")),
        "the guest was asked to power down: {:?}",
        s.info.guest_events
    );
    // HEARTBEAT was refreshed while the guest ran: its last beat is from
    // at least 15 s into the 25 s guest (beats come every 5 s).
    let beat = s.text("HEARTBEAT");
    let guest_s: u64 = beat
        .split_whitespace()
        .find_map(|f| f.strip_prefix("guest_s="))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("HEARTBEAT: {beat:?}"));
    assert!((15..=40).contains(&guest_s), "HEARTBEAT: {beat:?}");
}
