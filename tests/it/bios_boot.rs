//! Legacy BIOS boot of the stick (issue 20): QEMU's SeaBIOS, with no UEFI
//! anywhere, runs GRUB's boot.img from the MBR of the debian profile's
//! image, which loads core.img from the gap before the data partition;
//! GRUB reads the stick's grub.cfg from the ESP, lists the ISO on the exFAT
//! data partition and boots the same kernel and initramfs as UEFI does.
//! Both tables: MBR, and GPT (core.img after the entry array, where a BIOS
//! boot partition would be). The stick is a USB disk on xHCI, as a real
//! stick would be.
//!
//! The MBR stick goes all the way, as in the e2e suite (tests/it/e2e.rs):
//! hiperiso-init runs a BIOS test ISO in the inner QEMU under nested KVM
//! (the outer VM is TCG with `-cpu EPYC`, DESIGN §6), the VM powers off and
//! the session is read back from the image. The GPT stick's boot stops at
//! hiperiso-init's first line: what runs after it is the same.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hiperiso_build::cli::TableArg;
use hiperiso_build::vm::wait_with_timeout;
use hiperiso_installer::bios_boot::BiosBoot;
use hiperiso_installer::inspect;
use hiperiso_installer::layout::TableKind;
use hiperiso_stick::paths::esp::{BIOS_BOOT_IMG, BIOS_CORE_IMG};
use hiperiso_stick::qemu::Firmware;
use hiperiso_tests::{isos, stick};

use crate::e2e;

/// TCG: SeaBIOS, GRUB loading the kernel and a large initramfs over USB.
const BOOT_TIMEOUT: Duration = Duration::from_secs(300);
/// The same, then the inner guest and the session's files.
const RUN_TIMEOUT: Duration = Duration::from_secs(600);
/// hiperiso-init's first console line (runtime/src/init/boot.rs).
const INIT_STARTED: &str = "starting";
const INIT_NAME: &str = "hiperiso-init";
const GUEST_MARKER: &str = "BIOS-BOOT-MARKER";

#[test]
fn seabios_boots_the_gpt_stick_to_hiperiso_init() {
    let dir = tempfile::tempdir().unwrap();
    let image = bios_stick(dir.path(), TableArg::Gpt, TableKind::Gpt);
    stick::add_placeholder_iso(&image, "bios-test.iso");
    boot_until_init(dir.path(), &image, TableKind::Gpt);
}

#[test]
fn seabios_boots_the_mbr_stick_and_its_guest_runs_under_nested_kvm() {
    let dir = tempfile::tempdir().unwrap();
    let image = bios_stick(dir.path(), TableArg::Mbr, TableKind::Mbr);
    let iso = isos::bios_iso(dir.path(), "bios", GUEST_MARKER).unwrap();
    e2e::load_stick(&image, &[iso], e2e::CONFIG);
    e2e::set_boot(&image, "bios.iso");
    let console = boot_to_poweroff(dir.path(), &image, TableKind::Mbr);
    let id = e2e::new_session(&image, &[], &console);
    e2e::assert_booted(&image, &id, GUEST_MARKER, "bios", "kvm");
    e2e::assert_data_partition_clean(&image);
}

/// The debian profile's stick with a `kind` table, its boot code checked
/// and `inspect` naming both boot paths.
fn bios_stick(dir: &Path, table: TableArg, kind: TableKind) -> PathBuf {
    let esp = stick::shared_esp();
    assert!(
        esp.join(BIOS_BOOT_IMG).is_file() && esp.join(BIOS_CORE_IMG).is_file(),
        "the debian profile's ESP has no BIOS boot pair (is grub-pc-bin in its packages?)"
    );
    let image = dir.join(format!("{kind}.img"));
    stick::write_image(dir, esp, &image, Some(table), None).unwrap();
    assert_boot_code_in_place(esp, &image, kind);
    let found = inspect::inspect_path(&image).unwrap();
    assert_eq!(
        found.boot.bios.map(|b| b.core_lba),
        Some(BiosBoot::core_lba(kind))
    );
    assert!(found.boot.uefi.is_some(), "{found}");
    let shown = found.to_string();
    assert!(
        shown.contains("legacy BIOS: GRUB boot.img") && shown.contains("UEFI"),
        "{shown}"
    );
    image
}

/// The MBR's boot code is boot.img pointing at core.img, and core.img is
/// where it points.
fn assert_boot_code_in_place(esp: &Path, image: &Path, table: TableKind) {
    let bios = BiosBoot::from_esp_tree(esp).unwrap().unwrap();
    let bytes = fs::read(image).unwrap();
    assert_eq!(
        &bytes[..440],
        &bios.boot_code(table)[..],
        "{table}: MBR boot code"
    );
    let core = bios.core_image(table);
    let at = (BiosBoot::core_lba(table) * 512) as usize;
    assert_eq!(&bytes[at..at + core.len()], &core[..], "{table}: core.img");
}

/// Boots `image` under SeaBIOS until hiperiso-init's first line, with no
/// GRUB error on the way.
fn boot_until_init(dir: &Path, image: &Path, table: TableKind) {
    // one of the two outer-VM slots of this test binary
    let _slot = crate::runtime_boot::VmSlot::acquire();
    let console = dir.join(format!("console-{table}.log"));
    let q = stick::firmware_vm(&Firmware::Bios { image: None }, image, &console);
    let started = Instant::now();
    let (reached, text) = stick::console_until(&q, &console, BOOT_TIMEOUT, is_init_start);
    assert!(
        reached,
        "{table}: SeaBIOS did not reach hiperiso-init within {BOOT_TIMEOUT:?}; console:\n{}",
        stick::tail(&text, 40)
    );
    assert_no_grub_error(&text, table);
    eprintln!(
        "bios_boot: {table} stick reached hiperiso-init in {:.0?}",
        started.elapsed()
    );
}

/// Boots `image` under SeaBIOS until the VM powers off (hiperiso-init's
/// after action, once the guest is done); returns the console.
fn boot_to_poweroff(dir: &Path, image: &Path, table: TableKind) -> String {
    let _slot = crate::runtime_boot::VmSlot::acquire();
    let console = dir.join(format!("console-{table}.log"));
    let q = stick::firmware_vm(&Firmware::Bios { image: None }, image, &console);
    let started = Instant::now();
    let mut child = stick::spawn_quiet(&q);
    let status = wait_with_timeout(&mut child, RUN_TIMEOUT).unwrap();
    let text = String::from_utf8_lossy(&fs::read(&console).unwrap_or_default()).into_owned();
    let status = status.unwrap_or_else(|| {
        panic!(
            "{table}: the VM did not power off within {RUN_TIMEOUT:?}; console:\n{}",
            stick::tail(&text, 60)
        )
    });
    assert!(
        status.success(),
        "{table}: QEMU {status}; console:\n{}",
        stick::tail(&text, 60)
    );
    assert!(
        text.lines().any(is_init_start),
        "{table}: no hiperiso-init on the console:\n{}",
        stick::tail(&text, 60)
    );
    assert_no_grub_error(&text, table);
    eprintln!(
        "bios_boot: {table} stick ran its guest and powered off in {:.0?}",
        started.elapsed()
    );
    text
}

fn is_init_start(line: &str) -> bool {
    line.contains(INIT_NAME) && line.contains(INIT_STARTED)
}

/// GRUB's part of the console (up to hiperiso-init) has no `error:`.
fn assert_no_grub_error(console: &str, table: TableKind) {
    let errors: Vec<&str> = console
        .lines()
        .take_while(|line| !is_init_start(line))
        .filter(|line| line.contains("error:"))
        .collect();
    assert!(
        errors.is_empty(),
        "{table}: GRUB printed errors: {errors:#?}"
    );
}
