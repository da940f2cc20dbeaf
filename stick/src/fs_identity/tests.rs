use super::*;
use std::fs::File;
use std::process::Command;

/// A FAT12/16 boot sector with serial and label in the extended BPB at 38.
fn fat16_boot(serial: u32, label: &[u8; 11]) -> [u8; 512] {
    let mut b = [0u8; 512];
    b[11..13].copy_from_slice(&512u16.to_le_bytes());
    b[38] = 0x29;
    b[39..43].copy_from_slice(&serial.to_le_bytes());
    b[43..54].copy_from_slice(label);
    b[54..62].copy_from_slice(b"FAT16   ");
    b[510] = 0x55;
    b[511] = 0xAA;
    b
}

/// An exFAT volume of 4 sectors of boot region, heap at sector 4, 512-byte
/// clusters, root directory in cluster 2 holding `label`.
fn exfat_volume(serial: u32, label: &str) -> Vec<u8> {
    let mut v = vec![0u8; 8 * 512];
    v[3..11].copy_from_slice(EXFAT_OEM_NAME);
    v[88..92].copy_from_slice(&4u32.to_le_bytes());
    v[96..100].copy_from_slice(&2u32.to_le_bytes());
    v[100..104].copy_from_slice(&serial.to_le_bytes());
    v[108] = 9;
    v[109] = 0;
    let root = 4 * 512;
    // An allocation bitmap entry first, then the label.
    v[root] = 0x81;
    let units: Vec<u16> = label.encode_utf16().collect();
    v[root + 32] = 0x83;
    v[root + 33] = units.len() as u8;
    for (i, u) in units.iter().enumerate() {
        v[root + 34 + 2 * i..root + 36 + 2 * i].copy_from_slice(&u.to_le_bytes());
    }
    v
}

#[test]
fn serials_print_as_blkid_does() {
    assert_eq!(serial_uuid(0xDEAD_BEEF), "DEAD-BEEF");
    assert_eq!(serial_uuid(0x0BAD_F00D), "0BAD-F00D");
    assert_eq!(serial_uuid(0), "0000-0000");
}

#[test]
fn fat16_boot_sector_from_bytes() {
    let boot = fat16_boot(0xDEAD_BEEF, b"ESP        ");
    let found = parse_boot_sector(&boot).unwrap();
    assert_eq!(found.fs_type, FsType::Vfat);
    assert_eq!(found.serial, 0xDEAD_BEEF);
    assert_eq!(found.label.as_deref(), Some("ESP"));
    let no_name = fat16_boot(1, b"NO NAME    ");
    assert_eq!(parse_boot_sector(&no_name).unwrap().label, None);
    let id = identify(&mut io::Cursor::new(boot.to_vec()))
        .unwrap()
        .unwrap();
    assert_eq!(id.uuid, "DEAD-BEEF");
    assert_eq!(id.fs_type.mount_name(), "vfat");
}

#[test]
fn fat32_boot_sector_from_bytes() {
    let mut b = [0u8; 512];
    b[11..13].copy_from_slice(&512u16.to_le_bytes());
    b[66] = 0x29;
    b[67..71].copy_from_slice(&0x1234_5678u32.to_le_bytes());
    b[71..82].copy_from_slice(b"HIPERISO ES");
    b[82..90].copy_from_slice(b"FAT32   ");
    b[510] = 0x55;
    b[511] = 0xAA;
    let found = parse_boot_sector(&b).unwrap();
    assert_eq!(
        (found.serial, found.label.as_deref()),
        (0x1234_5678, Some("HIPERISO ES"))
    );
    // Without the boot signature it is nothing.
    b[511] = 0;
    assert_eq!(parse_boot_sector(&b), None);
}

#[test]
fn exfat_serial_and_label_from_bytes() {
    let volume = exfat_volume(0xCAFE_0042, "HIPERISO");
    let boot: [u8; 512] = volume[..512].try_into().unwrap();
    assert!(is_exfat_boot_sector(&boot));
    assert!(!is_exfat_boot_sector(&boot[..5]));
    let found = parse_boot_sector(&boot).unwrap();
    assert_eq!((found.fs_type, found.serial), (FsType::Exfat, 0xCAFE_0042));
    assert_eq!(exfat_root_cluster(&boot), Some((4 * 512, 512)));
    let id = identify(&mut io::Cursor::new(volume)).unwrap().unwrap();
    assert_eq!(id.uuid, "CAFE-0042");
    assert_eq!(id.label.as_deref(), Some("HIPERISO"));
    assert_eq!(id.fs_type.mount_name(), "exfat");
}

#[test]
fn exfat_without_a_label_or_with_bad_geometry() {
    let mut volume = exfat_volume(7, "X");
    volume[4 * 512 + 32] = 0;
    assert_eq!(
        identify(&mut io::Cursor::new(volume.clone()))
            .unwrap()
            .unwrap()
            .label,
        None
    );
    volume[108] = 20;
    let boot: [u8; 512] = volume[..512].try_into().unwrap();
    assert_eq!(exfat_root_cluster(&boot), None);
    assert_eq!(
        identify(&mut io::Cursor::new(volume))
            .unwrap()
            .unwrap()
            .label,
        None
    );
}

#[test]
fn other_content_is_none() {
    assert_eq!(
        identify(&mut io::Cursor::new(vec![0u8; 4096])).unwrap(),
        None
    );
    assert_eq!(identify(&mut io::Cursor::new(vec![0u8; 10])).unwrap(), None);
}

// Ported from runtime/src/blockid.rs: the real tools agree with us.

fn mkfs(tool: &str, args: &[&str], size: u64) -> Option<(tempfile::TempDir, std::path::PathBuf)> {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("fs.img");
    File::create(&img).unwrap().set_len(size).unwrap();
    let package = match tool {
        "mkfs.exfat" => "exfatprogs",
        "mkfs.fat" | "mkfs.vfat" => "dosfstools",
        _ => "e2fsprogs",
    };
    if !hiperiso_prereq::tools(&[(tool, package)]) {
        return None;
    }
    let out = Command::new(tool).args(args).arg(&img).output().unwrap();
    assert!(
        out.status.success(),
        "{tool}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some((dir, img))
}

fn blkid_uuid(img: &std::path::Path) -> String {
    let out = Command::new("blkid")
        .args(["-s", "UUID", "-o", "value"])
        .arg(img)
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn exfat_from_mkfs() {
    let Some((_d, img)) = mkfs("mkfs.exfat", &["-L", "HIPERISO"], 64 << 20) else {
        return;
    };
    let id = identify(&mut File::open(&img).unwrap()).unwrap().unwrap();
    assert_eq!(id.fs_type, FsType::Exfat);
    assert_eq!(id.uuid, blkid_uuid(&img));
    assert_eq!(id.label.as_deref(), Some("HIPERISO"));
}

#[test]
fn fat16_and_fat32_from_mkfs() {
    let Some((_d, img)) = mkfs(
        "mkfs.fat",
        &["-F", "16", "-n", "ESP", "-i", "DEADBEEF"],
        32 << 20,
    ) else {
        return;
    };
    let id = identify(&mut File::open(&img).unwrap()).unwrap().unwrap();
    assert_eq!((id.fs_type, id.uuid.as_str()), (FsType::Vfat, "DEAD-BEEF"));
    assert_eq!(id.uuid, blkid_uuid(&img));
    assert_eq!(id.label.as_deref(), Some("ESP"));
    let (_d, img) = mkfs("mkfs.fat", &["-F", "32", "-i", "0badf00d"], 64 << 20).unwrap();
    let id = identify(&mut File::open(&img).unwrap()).unwrap().unwrap();
    assert_eq!((id.fs_type, id.uuid.as_str()), (FsType::Vfat, "0BAD-F00D"));
    assert_eq!(id.label, None);
}
