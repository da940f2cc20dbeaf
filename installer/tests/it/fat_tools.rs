//! The FAT writer checked by the real tools: fsck.fat -n and the kernel's
//! vfat driver through a loop mount (root only; skipped otherwise).

use std::fs;
use std::path::Path;
use std::process::Command;

use hiperiso_installer::fat::{self, FatOptions, FatReader};

const MIB: u64 = 1024 * 1024;

fn tree(root: &Path) {
    fs::create_dir_all(root.join("EFI/BOOT")).unwrap();
    fs::create_dir_all(root.join("EFI/hiperiso/trace")).unwrap();
    fs::write(root.join("EFI/BOOT/BOOTX64.EFI"), vec![0x5A; 300_000]).unwrap();
    fs::write(root.join("EFI/BOOT/grub.cfg"), "menuentry x {}\n").unwrap();
    fs::write(root.join("EFI/hiperiso/build.json"), r#"{"hiperiso":{}}"#).unwrap();
    fs::write(root.join("EFI/hiperiso/trace/trace-full.events"), "").unwrap();
    for i in 0..300 {
        fs::write(
            root.join(format!("EFI/hiperiso/trace/Mixed Case name {i:03}.Events")),
            i.to_string(),
        )
        .unwrap();
    }
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd:?} failed:\n{text}");
    text
}

fn check(size: u64, expected_type: &str) {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    tree(&src);
    let image = dir.path().join("esp.img");
    let mut file = fs::File::options()
        .create(true)
        .read(true)
        .write(true)
        .truncate(true)
        .open(&image)
        .unwrap();
    file.set_len(size).unwrap();
    let opts = FatOptions {
        label: "HIPERISO".into(),
        volume_id: 0xCAFE_F00D,
        timestamp: 1_700_000_000,
        hidden_sectors: 0,
    };
    fat::format(&mut file, size, Some(&src), &opts).unwrap();
    drop(file);

    let report = run(Command::new("fsck.fat").arg("-n").arg("-v").arg(&image));
    assert!(report.contains(expected_type), "{report}");
    assert!(
        !report.to_lowercase().contains("differ"),
        "fsck.fat found differences:\n{report}"
    );
    let label = run(Command::new("fatlabel").arg(&image));
    assert_eq!(label.trim(), "HIPERISO");

    let mut reader = FatReader::open(fs::File::open(&image).unwrap()).unwrap();
    assert_eq!(
        reader.read_file("EFI/BOOT/BOOTX64.EFI").unwrap(),
        vec![0x5A; 300_000]
    );

    // mtools: an independent FAT implementation.
    let listing = run(Command::new("mdir")
        .args(["-b", "-i"])
        .arg(&image)
        .arg("::/EFI/hiperiso/trace"));
    assert_eq!(listing.lines().count(), 301, "{listing}");
    let grub = run(Command::new("mtype")
        .arg("-i")
        .arg(&image)
        .arg("::/EFI/BOOT/grub.cfg"));
    assert_eq!(grub, "menuentry x {}\n");
    let name = run(Command::new("mtype")
        .arg("-i")
        .arg(&image)
        .arg("::/EFI/hiperiso/trace/Mixed Case name 299.Events"));
    assert_eq!(name, "299");

    // The kernel's vfat driver on our ESP: in a VM, tests/it/exfat_kernel.rs.
}

#[test]
fn fat16_at_32_mib_is_clean() {
    check(32 * MIB, "16 bit entries");
}

#[test]
fn fat32_above_32_mib_is_clean() {
    check(64 * MIB, "32 bit entries");
}

#[test]
fn fat32_large_clusters_is_clean() {
    check(300 * MIB, "32 bit entries");
}
