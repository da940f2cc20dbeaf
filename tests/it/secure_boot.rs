//! Secure Boot with Debian's signed chain (issue 20), through real
//! firmware: Debian's OVMF with Secure Boot enforced and Microsoft's keys
//! enrolled (`OVMF_CODE_4M.secboot.fd` + `OVMF_VARS_4M.ms.fd`) boots the
//! debian profile's stick: shim (signed by Microsoft's UEFI CA) -> Debian's
//! signed GRUB -> Debian's signed kernel -> hiperiso-init, which reports
//! `secure_boot=enabled` and the kernel's lockdown. GRUB cannot read exFAT
//! there, so its menu boots `hiperiso.iso=pick` and hiperiso-init takes the
//! grubenv default. The same firmware refuses the stick once one byte of
//! its GRUB is changed: the chain is really checked.
//!
//! Each boot stops at hiperiso-init's Secure Boot line (what runs after it
//! is the e2e suite's).

use std::fs;
use std::path::Path;
use std::time::Duration;

use hiperiso_build::vm::{self as run, StickImage};
use hiperiso_installer::{inspect, pe};
use hiperiso_stick::paths::esp::{BOOT_EFI, SIGNED_GRUB_EFI};
use hiperiso_stick::qemu::{Accel, Chardev, Firmware, Machine, QemuCommand};
use hiperiso_tests::stick;

const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd";
const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.ms.fd";
const BOOT_TIMEOUT: Duration = Duration::from_secs(300);
/// hiperiso-init's lines (runtime/src/init/boot.rs): the first at its
/// start, the second once the data partition is mounted.
const SECURE_BOOT_LINE: &str = "secure_boot=";
const PICK_LINE: &str = "hiperiso.iso=pick: booting";

#[test]
fn secure_boot_ovmf_boots_the_signed_chain_and_refuses_a_tampered_grub() {
    let dir = tempfile::tempdir().unwrap();
    let esp = stick::shared_esp();
    let shim = fs::read(esp.join(BOOT_EFI)).unwrap();
    let signature = pe::signature(&shim).expect("BOOTX64.EFI (shim) carries a signature");
    assert!(
        signature
            .common_names
            .iter()
            .any(|cn| cn.contains("Microsoft Corporation UEFI CA")),
        "shim is signed through Microsoft's UEFI CA: {:?}",
        signature.common_names
    );

    let image = dir.path().join("signed.img");
    stick::write_image(dir.path(), esp, &image, None).unwrap();
    let shown = inspect::inspect_path(&image).unwrap().to_string();
    assert!(
        shown.contains("UEFI and UEFI Secure Boot")
            && shown.contains("Microsoft Corporation UEFI CA"),
        "{shown}"
    );
    add_iso(&image);
    let (reached, text) = boot(dir.path(), &image, "signed");
    assert!(
        reached,
        "Secure Boot OVMF did not reach hiperiso-init within {BOOT_TIMEOUT:?}:\n{}",
        stick::tail(&text, 40)
    );
    let line = text.lines().find(|l| l.contains(SECURE_BOOT_LINE)).unwrap();
    assert!(
        line.contains("secure_boot=enabled") && line.contains("lockdown=integrity"),
        "{line}"
    );
    assert!(
        text.contains(&format!("{PICK_LINE} /ISOs/sb-test.iso")),
        "hiperiso-init did not pick the grubenv default:\n{}",
        stick::tail(&text, 40)
    );

    // One byte of GRUB's code changed: shim must refuse it.
    let tampered_esp = dir.path().join("esp-tampered");
    copy_tree(esp, &tampered_esp);
    let grub = tampered_esp.join(SIGNED_GRUB_EFI);
    let mut bytes = fs::read(&grub).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    fs::write(&grub, bytes).unwrap();
    let image = dir.path().join("tampered.img");
    stick::write_image(dir.path(), &tampered_esp, &image, None).unwrap();
    add_iso(&image);
    let (reached, text) = boot(dir.path(), &image, "tampered");
    assert!(
        !reached && !text.contains("GNU GRUB") && !text.contains("hiperiso-init"),
        "the tampered GRUB ran under Secure Boot:\n{}",
        stick::tail(&text, 40)
    );
    assert!(
        text.contains("Security Violation") || text.contains("Verification failed"),
        "no refusal on the console (did the boot get as far as shim?):\n{}",
        stick::tail(&text, 40)
    );
}

fn add_iso(image: &Path) {
    let mut data = StickImage::open(image).unwrap();
    data.put_bytes(
        "ISOs/sb-test.iso",
        b"not an ISO: init starts before it looks",
        0,
    )
    .unwrap();
    data.boot_once("sb-test.iso").unwrap();
}

/// Boots `image` under Secure Boot OVMF until hiperiso-init has picked the
/// image, or shim's refusal; returns whether hiperiso-init ran.
fn boot(dir: &Path, image: &Path, name: &str) -> (bool, String) {
    // one of the two outer-VM slots of this test binary
    let _slot = crate::runtime_boot::VmSlot::acquire();
    let vars = dir.join(format!("vars-{name}.fd"));
    fs::copy(OVMF_VARS, &vars).expect("Debian's ovmf (OVMF_VARS_4M.ms.fd)");
    let console = dir.join(format!("console-{name}.log"));
    let mut q = QemuCommand::new(run::qemu_program());
    q.machine(&Machine::q35().smm(true))
        .accel(Accel::Tcg)
        .cpu("EPYC", "")
        .memory_mb(1024)
        .nodefaults()
        .display_none()
        .vga("std")
        .no_reboot()
        .firmware(&Firmware::Uefi {
            code: OVMF_CODE.into(),
            vars,
            secure: true,
        })
        .usb_stick(image, false)
        .serial_chardev("console", &Chardev::File(console.clone()))
        .no_monitor();
    let (_, text) = stick::console_until(&q, &console, BOOT_TIMEOUT, |line| {
        line.contains(PICK_LINE)
            || line.contains("Security Violation")
            || line.contains("Verification failed")
    });
    let reached = text.lines().any(|l| l.contains(SECURE_BOOT_LINE));
    (reached, text)
}

fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), target).unwrap();
        }
    }
}
