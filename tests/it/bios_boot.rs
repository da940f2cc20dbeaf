//! Legacy BIOS boot of the stick (issue 20): QEMU's SeaBIOS, with no UEFI
//! anywhere, runs GRUB's boot.img from the MBR of the debian profile's
//! image, which loads core.img from the gap before the data partition;
//! GRUB reads the stick's grub.cfg from the ESP, lists the ISO on the exFAT
//! data partition and boots the same kernel and initramfs as UEFI does, up
//! to hiperiso-init's first line. Both tables: MBR, and GPT (core.img after
//! the entry array, where a BIOS boot partition would be). The stick is a
//! USB disk on xHCI, as a real stick would be.
//!
//! Each boot stops at hiperiso-init's first status line: what runs after it
//! is the same as under UEFI (tests/it/e2e.rs).

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use hiperiso_build::cli::TableArg;
use hiperiso_installer::bios_boot::BiosBoot;
use hiperiso_installer::inspect;
use hiperiso_installer::layout::TableKind;
use hiperiso_stick::paths::esp::{BIOS_BOOT_IMG, BIOS_CORE_IMG};
use hiperiso_stick::qemu::Firmware;
use hiperiso_tests::stick;

/// TCG: SeaBIOS, GRUB loading the kernel and a large initramfs over USB.
const BOOT_TIMEOUT: Duration = Duration::from_secs(300);
/// hiperiso-init's first console line (runtime/src/init/boot.rs).
const INIT_STARTED: &str = "starting";
const INIT_NAME: &str = "hiperiso-init";

#[test]
fn seabios_boots_the_mbr_and_the_gpt_stick_to_hiperiso_init() {
    let dir = tempfile::tempdir().unwrap();
    let esp = stick::shared_esp();
    assert!(
        esp.join(BIOS_BOOT_IMG).is_file() && esp.join(BIOS_CORE_IMG).is_file(),
        "the debian profile's ESP has no BIOS boot pair (is grub-pc-bin in its packages?)"
    );
    for (table, kind) in [
        (TableArg::Mbr, TableKind::Mbr),
        (TableArg::Gpt, TableKind::Gpt),
    ] {
        let image = dir.path().join(format!("{kind}.img"));
        stick::write_image(dir.path(), esp, &image, Some(table)).unwrap();
        assert_boot_code_in_place(esp, &image, kind);
        // `inspect` names both boot paths.
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
        stick::add_placeholder_iso(&image, "bios-test.iso");
        boot_until_init(dir.path(), &image, kind);
    }
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
    let (reached, text) = stick::console_until(&q, &console, BOOT_TIMEOUT, |line| {
        line.contains(INIT_NAME) && line.contains(INIT_STARTED)
    });
    assert!(
        reached,
        "{table}: SeaBIOS did not reach hiperiso-init within {BOOT_TIMEOUT:?}; console:\n{}",
        stick::tail(&text, 40)
    );
    let errors: Vec<&str> = text.lines().filter(|l| l.contains("error:")).collect();
    assert!(
        errors.is_empty(),
        "{table}: GRUB printed errors: {errors:#?}"
    );
    eprintln!(
        "bios_boot: {table} stick reached hiperiso-init in {:.0?}",
        started.elapsed()
    );
}
