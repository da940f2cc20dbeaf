use std::collections::HashSet;
use std::fs;
use std::io::Cursor;

use super::entries::*;
use super::writer::scan;
use super::{FatError, FatOptions, FatReader, FatType, Geometry, format, required_size};

fn opts() -> FatOptions {
    FatOptions {
        label: "hiperiso es".into(),
        volume_id: 0x1234_5678,
        timestamp: 1_700_000_000,
        hidden_sectors: 2048,
    }
}

fn sample_tree() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    fs::create_dir_all(root.join("EFI/BOOT")).unwrap();
    fs::create_dir_all(root.join("EFI/hiperiso/trace")).unwrap();
    fs::write(root.join("EFI/BOOT/BOOTX64.EFI"), vec![0xAB; 5000]).unwrap();
    fs::write(root.join("EFI/BOOT/grub.cfg"), b"set timeout=5\n").unwrap();
    fs::write(
        root.join("EFI/hiperiso/build.json"),
        br#"{"hiperiso":{"version":"0.1.0"}}"#,
    )
    .unwrap();
    fs::write(root.join("EFI/hiperiso/trace/trace-standard.events"), b"").unwrap();
    for i in 0..40 {
        fs::write(
            root.join(format!("EFI/hiperiso/a long file name number {i}.txt")),
            format!("{i}"),
        )
        .unwrap();
    }
    dir
}

#[test]
fn dos_dates() {
    // 2023-11-14 22:13:20 UTC.
    let (date, time) = dos_date_time(1_700_000_000);
    assert_eq!(date, (43 << 9) | (11 << 5) | 14);
    assert_eq!(time, (22 << 11) | (13 << 5) | 10);
    assert_eq!(dos_date_time(0), ((1 << 5) | 1, 0));
}

#[test]
fn short_names_and_collisions() {
    let mut taken = HashSet::new();
    assert_eq!(
        short_name("BOOTX64.EFI", &mut taken),
        (*b"BOOTX64 EFI", false)
    );
    assert_eq!(short_name("grub.cfg", &mut taken), (*b"GRUB~1  CFG", true));
    assert_eq!(short_name("GRUB.CFG", &mut taken), (*b"GRUB    CFG", false));
    assert_eq!(
        short_name("trace-standard.events", &mut taken),
        (*b"TRACE-~1EVE", true)
    );
    assert_eq!(
        short_name("trace-detailed.events", &mut taken),
        (*b"TRACE-~2EVE", true)
    );
}

#[test]
fn geometry_picks_fat16_at_32_mib_and_fat32_above() {
    let g = Geometry::for_size(32 * 1024 * 1024).unwrap();
    assert_eq!(g.fat_type, FatType::Fat16);
    let g = Geometry::for_size(33 * 1024 * 1024).unwrap();
    assert_eq!(g.fat_type, FatType::Fat32);
    assert!(g.clusters >= 65525);
    assert!(Geometry::for_size(1024 * 1024).is_err());
}

fn round_trip(size: u64) {
    let tree = sample_tree();
    let mut dev = Cursor::new(vec![0u8; size as usize]);
    format(&mut dev, size, Some(tree.path()), &opts()).unwrap();
    let mut reader = FatReader::open(&mut dev).unwrap();
    assert_eq!(reader.label(), "HIPERISO ES");
    assert_eq!(reader.volume_id(), 0x1234_5678);
    assert_eq!(
        reader.read_file("/EFI/BOOT/BOOTX64.EFI").unwrap(),
        vec![0xAB; 5000]
    );
    assert_eq!(
        reader.read_file("efi/boot/grub.cfg").unwrap(),
        b"set timeout=5\n"
    );
    assert_eq!(
        reader
            .read_file("EFI/hiperiso/a long file name number 39.txt")
            .unwrap(),
        b"39"
    );
    assert_eq!(
        reader
            .read_file("EFI/hiperiso/trace/trace-standard.events")
            .unwrap(),
        b""
    );
    let names: Vec<String> = reader
        .read_dir("/EFI")
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(names, ["BOOT", "hiperiso"]);
    assert!(matches!(
        reader.read_file("EFI/missing"),
        Err(FatError::NotFound(_))
    ));
    assert!(reader.used_clusters().unwrap() > 0);
    // Same input, same bytes.
    let mut again = Cursor::new(vec![0u8; size as usize]);
    format(&mut again, size, Some(tree.path()), &opts()).unwrap();
    assert!(dev.get_ref() == again.get_ref());
}

#[test]
fn fat16_round_trip() {
    round_trip(16 * 1024 * 1024);
}

#[test]
fn fat32_round_trip() {
    round_trip(40 * 1024 * 1024);
}

#[test]
fn too_big_payload_says_by_how_much() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("big"), vec![1u8; 9 * 1024 * 1024]).unwrap();
    let mut dev = Cursor::new(vec![0u8; 8 * 1024 * 1024]);
    let err = format(&mut dev, 8 * 1024 * 1024, Some(dir.path()), &opts()).unwrap_err();
    assert!(
        matches!(err, FatError::DoesNotFit { short, .. } if short > 1024 * 1024),
        "{err}"
    );
    assert_eq!(required_size(dir.path(), 0).unwrap(), 10 * 1024 * 1024);
}

#[test]
fn case_clash_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("a.txt"), b"").unwrap();
    fs::write(dir.path().join("A.TXT"), b"").unwrap();
    let err = scan(dir.path()).unwrap_err();
    assert!(matches!(err, FatError::CaseClash { .. }), "{err}");
}

#[test]
fn labels_are_upper_cased_never_cut() {
    assert_eq!(&label_bytes("hiperiso es").unwrap(), b"HIPERISO ES");
    assert_eq!(&label_bytes("EFI").unwrap(), b"EFI        ");
    for (label, reason) in [
        ("HIPERISO-EFI", "12 characters; FAT allows at most 11"),
        ("ÄRGER", "'Ä' is not allowed"),
        ("A.B", "'.' is not allowed"),
    ] {
        let err = label_bytes(label).unwrap_err().to_string();
        assert!(
            err.contains(&format!("{label:?}")) && err.contains(reason),
            "{err}"
        );
    }
    // The writer refuses it before writing anything.
    let mut dev = Cursor::new(Vec::new());
    let long = FatOptions {
        label: "HIPERISO-ESP".into(),
        ..opts()
    };
    let err = format(&mut dev, 32 << 20, None, &long).unwrap_err();
    assert!(matches!(err, FatError::InvalidLabel { .. }), "{err}");
    assert!(dev.get_ref().is_empty());
}
