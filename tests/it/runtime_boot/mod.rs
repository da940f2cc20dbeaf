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
use std::process::{Command, Stdio};
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

#[test]
fn qemu_failing_to_start_is_recorded_with_its_stderr() {
    let out = boot(
        "hiperiso.iso=/ISOs/startfail.iso hiperiso.data=UUID=4849-5045",
        "EPYC",
        GOOD_CONFIG,
    );
    let mut s = SessionFiles::open(&out);
    let message = s.check_failure(FailureKind::QemuStartFailed, true);
    assert!(message.contains("hiperiso-no-such-flag"), "{message}");
    assert!(s.text("qemu.stderr").contains("hiperiso-no-such-flag"));
    assert_eq!(s.info.matched_overrides, vec!["startfail*.iso".to_string()]);
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

/// The GRUB menu from `overlays/esp` on a GPT stick: OVMF boots GRUB from
/// the ESP, GRUB lists `/ISOs/*.iso` on the exFAT data partition, and its
/// default (first) entry boots hiperiso-init with the DESIGN §5 command
/// line, including the data and ESP filesystem UUIDs found by `probe -u`.
#[test]
fn grub_menu_boots_the_first_iso_with_the_uuids_it_probed() {
    let fx = fixture();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();

    // ESP content.
    let esp_tree = d.join("esp");
    let boot_dir = esp_tree.join("EFI/BOOT");
    let hiperiso_dir = esp_tree.join("EFI/hiperiso");
    fs::create_dir_all(&boot_dir).unwrap();
    fs::create_dir_all(hiperiso_dir.join("trace")).unwrap();
    run(Command::new("grub-mkimage")
        .args(["-O", "x86_64-efi", "-p", "/EFI/BOOT", "-o"])
        .arg(boot_dir.join("BOOTX64.EFI"))
        .args([
            "part_gpt",
            "part_msdos",
            "fat",
            "exfat",
            "regexp",
            "probe",
            "loadenv",
            "test",
            "search",
            "serial",
            "terminal",
            "gfxterm",
            "all_video",
            "font",
            "linux",
            "echo",
            "efifwsetup",
            "halt",
            "reboot",
            "normal",
            "configfile",
            "sleep",
        ]));
    fs::copy(
        workspace_root().join("overlays/esp/EFI/BOOT/grub.cfg"),
        boot_dir.join("grub.cfg"),
    )
    .unwrap();
    fs::copy(&fx.kernel, hiperiso_dir.join("vmlinuz")).unwrap();
    run(Command::new("zstd")
        .args(["-1", "-q", "-f", "-o"])
        .arg(hiperiso_dir.join("initramfs.cpio.zst"))
        .arg(&fx.initrd));
    fs::copy(
        "/usr/share/OVMF/OVMF_CODE_4M.fd",
        hiperiso_dir.join("OVMF_CODE.fd"),
    )
    .unwrap();
    fs::copy(
        "/usr/share/OVMF/OVMF_VARS_4M.fd",
        hiperiso_dir.join("OVMF_VARS.fd"),
    )
    .unwrap();
    for entry in fs::read_dir(workspace_root().join("overlays/esp/EFI/hiperiso/trace")).unwrap() {
        let path = entry.unwrap().path();
        fs::copy(
            &path,
            hiperiso_dir.join("trace").join(path.file_name().unwrap()),
        )
        .unwrap();
    }
    let esp_img = d.join("esp.img");
    run(Command::new("mkfs.fat")
        .args(["-F", "32", "-n", "HIPERESP", "-i", "E5B0071D", "-C"])
        .arg(&esp_img)
        .arg("98304"));
    run(Command::new("mcopy")
        .arg("-s")
        .arg("-i")
        .arg(&esp_img)
        .arg(esp_tree.join("EFI"))
        .arg("::/"));

    // Data partition: one ISO, so the first (default) entry is known.
    let tree = d.join("data");
    fs::create_dir_all(tree.join("ISOs")).unwrap();
    fs::create_dir_all(tree.join("hiperiso")).unwrap();
    fs::copy(fx.isos.join("bios.iso"), tree.join("ISOs/bios.iso")).unwrap();
    let config = r#"{"control": {"default_ram": 256, "default_cpus": 1, "menu_timeout": 3, "default_image": "bios.iso", "session_timeout": 120}}"#;
    fs::write(tree.join("hiperiso/hiperiso.json"), config).unwrap();
    let data_size = 64u64 << 20;
    let data_img = d.join("data.img");
    write_data_volume(&data_img, data_size, &tree);

    // GPT disk: data partition 1 from 1 MiB, ESP partition 2 after it.
    let disk = d.join("stick.img");
    let data_start = 1u64 << 20;
    let esp_start = data_start + data_size;
    let esp_size = fs::metadata(&esp_img).unwrap().len();
    File::create(&disk)
        .unwrap()
        .set_len(esp_start + esp_size + (1 << 20))
        .unwrap();
    run(Command::new("sgdisk")
        .arg(format!(
            "--new=1:{}:{}",
            data_start / 512,
            esp_start / 512 - 1
        ))
        .arg("--typecode=1:0700")
        .arg(format!(
            "--new=2:{}:{}",
            esp_start / 512,
            (esp_start + esp_size) / 512 - 1
        ))
        .arg("--typecode=2:ef00")
        .arg(&disk));
    for (img, offset) in [(&data_img, data_start), (&esp_img, esp_start)] {
        run(Command::new("dd")
            .arg(format!("if={}", img.display()))
            .arg(format!("of={}", disk.display()))
            .args(["bs=1M", "conv=notrunc,sparse", "status=none"])
            .arg(format!("seek={}", offset >> 20)));
    }

    let vars = d.join("OVMF_VARS.fd");
    fs::copy("/usr/share/OVMF/OVMF_VARS_4M.fd", &vars).unwrap();
    let console = d.join("console.log");
    let _slot = VmSlot::acquire();
    let mut outer = QemuCommand::new("qemu-system-x86_64");
    outer
        .accel(Accel::Tcg)
        .cpu("EPYC", "")
        .machine(&Machine::q35().smm(true))
        .memory_mb(3072)
        .smp(1)
        .firmware(&Firmware::Uefi {
            code: "/usr/share/OVMF/OVMF_CODE_4M.fd".into(),
            vars: vars.clone(),
            secure: true,
        })
        .nodefaults()
        .display_none()
        .no_reboot()
        .drive(&Drive::virtio(&disk))
        .serial_chardev("console", &Chardev::File(console.clone()));
    let mut child = outer
        .command()
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + OUTER_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break child.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let console_text =
        String::from_utf8_lossy(&fs::read(&console).unwrap_or_default()).into_owned();
    assert!(
        status.success(),
        "outer VM: {status}; console:\n{console_text}"
    );

    // Read the data partition back.
    run(Command::new("dd")
        .arg(format!("if={}", disk.display()))
        .arg(format!("of={}", data_img.display()))
        .args(["bs=1M", "status=none"])
        .arg(format!("skip={}", data_start >> 20))
        .arg(format!("count={}", data_size >> 20)));
    let result = BootResult {
        console: console_text,
        image: data_img,
        _dir: dir,
    };
    let mut s = SessionFiles::open(&result);
    s.check_guest_ran(BIOS_MARKER, "bios", "kvm");
    let cmdline = &s.info.kernel_cmdline;
    for expected in [
        "hiperiso.iso=/ISOs/bios.iso",
        "hiperiso.data=UUID=4849-5045",
        "hiperiso.esp=UUID=E5B0-071D",
        "console=ttyS0",
    ] {
        // GRUB prints FAT/exFAT UUIDs in lower case; the runtime ignores case.
        assert!(
            cmdline.to_lowercase().contains(&expected.to_lowercase()),
            "{expected} not in {cmdline}"
        );
    }
    let env = s.text("env.txt");
    assert!(
        env.contains("esp_partition=/dev/vda2 (vfat, UUID=E5B0-071D"),
        "{env}"
    );
    let qemu = s.text("qemu.cmdline");
    assert!(
        qemu.contains("/mnt/esp/EFI/hiperiso/trace/trace-standard.events"),
        "{qemu}"
    );
    // hiperiso-init keeps GRUB's env block in sync with hiperiso.json.
    let grubenv = read_all(&mut s.reader, "hiperiso/grubenv");
    let vars = hiperiso_runtime::grubenv::parse(&grubenv);
    assert!(
        vars.contains(&("hiperiso_timeout".into(), "3".into())),
        "{vars:?}"
    );
    assert!(
        vars.contains(&("hiperiso_default".into(), "bios.iso".into())),
        "{vars:?}"
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
