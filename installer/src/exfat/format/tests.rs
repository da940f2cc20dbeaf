use super::*;
use std::io::Cursor;

fn options() -> ExfatOptions {
    ExfatOptions {
        label: "HIPERISO".into(),
        volume_serial: 0x1234_5678,
        timestamp: 1_700_000_000,
    }
}

#[test]
fn geometry_follows_mkfs_exfat_defaults() {
    // Values mkfs.exfat (exfatprogs 1.2.0) writes for a 64 MiB volume.
    // (Later exfatprogs versions size the FAT a little tighter.)
    let g = Geometry::for_size(64 << 20).unwrap();
    assert_eq!(
        (g.fat_offset, g.fat_length, g.heap_offset, g.cluster_count),
        (2048, 128, 4096, 15872)
    );
    assert_eq!(g.cluster_size(), 4096);
    assert_eq!(
        Geometry::for_size(1 << 30).unwrap().cluster_size(),
        32 << 10
    );
    assert_eq!(
        Geometry::for_size(32 << 30).unwrap().cluster_size(),
        32 << 10
    );
    assert_eq!(
        Geometry::for_size(40 << 30).unwrap().cluster_size(),
        128 << 10
    );
    assert_eq!(Geometry::for_size(5 << 20).unwrap().cluster_size(), 512);
    assert!(matches!(
        Geometry::for_size(1 << 20),
        Err(ExfatError::VolumeTooSmall { .. })
    ));
}

#[test]
fn boot_region_checksum_and_signatures() {
    let g = Geometry::for_size(64 << 20).unwrap();
    let region = boot_region(&g, 5, 0xABCD_EF01, 0);
    assert_eq!(&region[3..11], b"EXFAT   ");
    assert_eq!(&region[510..512], &[0x55, 0xAA]);
    assert_eq!(&region[1020..1024], &[0, 0, 0x55, 0xAA]);
    let checksum = boot_checksum(&region[..11 * 512]);
    assert_eq!(super::super::le32(&region, 11 * 512), checksum);
    assert_eq!(super::super::le32(&region, 12 * 512 - 4), checksum);
    // VolumeFlags and PercentInUse are outside the checksum.
    let mut changed = region.clone();
    changed[106] = 1;
    changed[112] = 50;
    assert_eq!(boot_checksum(&changed[..11 * 512]), checksum);
    changed[100] ^= 1;
    assert_ne!(boot_checksum(&changed[..11 * 512]), checksum);
}

#[test]
fn empty_volume_is_deterministic() {
    let size = 16 << 20;
    let mut first = Cursor::new(vec![0u8; size]);
    let mut second = Cursor::new(vec![0xAAu8; size]);
    format(&mut first, size as u64, None, &options()).unwrap();
    format(&mut second, size as u64, None, &options()).unwrap();
    let g = Geometry::for_size(size as u64).unwrap();
    // Everything format writes is identical, whatever was there before.
    let heap = g.cluster_offset(2) as usize;
    let written = [
        (0, 24 * 512),
        (g.fat_offset as usize * 512, g.fat_length as usize * 512),
    ];
    for (start, len) in written {
        assert_eq!(
            first.get_ref()[start..start + len],
            second.get_ref()[start..start + len]
        );
    }
    let system = 4 * g.cluster_size() as usize; // bitmap, up-case (2), root
    assert_eq!(
        first.get_ref()[heap..heap + system],
        second.get_ref()[heap..heap + system]
    );
}

#[test]
fn labels_and_names_are_checked() {
    let size = 8u64 << 20;
    let mut dev = Cursor::new(vec![0u8; size as usize]);
    let mut opts = options();
    opts.label = "TWELVE_CHARS".into();
    assert!(matches!(
        format(&mut dev, size, None, &opts),
        Err(ExfatError::InvalidLabel { .. })
    ));
    opts.label = "a:b".into();
    assert!(matches!(
        format(&mut dev, size, None, &opts),
        Err(ExfatError::InvalidLabel { .. })
    ));

    let tree = tempfile::tempdir().unwrap();
    fs::write(tree.path().join("Readme.TXT"), b"one").unwrap();
    fs::write(tree.path().join("readme.txt"), b"two").unwrap();
    let err = format(&mut dev, size, Some(tree.path()), &options()).unwrap_err();
    assert!(matches!(err, ExfatError::DuplicateName { .. }), "{err}");

    let tree = tempfile::tempdir().unwrap();
    fs::write(tree.path().join("a?b"), b"x").unwrap();
    let err = format(&mut dev, size, Some(tree.path()), &options()).unwrap_err();
    assert!(matches!(err, ExfatError::InvalidName { .. }), "{err}");
    assert!(err.to_string().contains("a?b"));
}

#[test]
fn tree_that_does_not_fit_reports_the_shortfall() {
    let size = 8u64 << 20;
    let tree = tempfile::tempdir().unwrap();
    fs::write(tree.path().join("big"), vec![1u8; 9 << 20]).unwrap();
    let mut dev = Cursor::new(vec![0u8; size as usize]);
    let err = format(&mut dev, size, Some(tree.path()), &options()).unwrap_err();
    let ExfatError::NoSpace { shortfall, .. } = err else {
        panic!("expected NoSpace, got {err}");
    };
    assert!(shortfall > 2 << 20, "{shortfall}");
}
