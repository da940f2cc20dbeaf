use super::super::{ExfatOptions, format};
use super::*;
use std::fs;
use std::io::{Cursor, SeekFrom};

use super::super::{FLAG_ALLOCATION_POSSIBLE, boot_checksum, entry_set_checksum};
use std::path::Path;

const SIZE: u64 = 16 << 20;

fn options() -> ExfatOptions {
    ExfatOptions {
        label: "HIPERISO".into(),
        volume_serial: 0xC0FF_EE00,
        timestamp: 1_700_000_000,
    }
}

fn formatted(tree: Option<&Path>) -> Cursor<Vec<u8>> {
    let mut dev = Cursor::new(vec![0u8; SIZE as usize]);
    format(&mut dev, SIZE, tree, &options()).unwrap();
    dev
}

fn sample_tree() -> tempfile::TempDir {
    let tree = tempfile::tempdir().unwrap();
    let root = tree.path();
    fs::create_dir_all(root.join("ISOs")).unwrap();
    fs::create_dir_all(root.join("hiperiso/logs/deep/er")).unwrap();
    fs::write(root.join("ISOs/README"), b"Put ISO files here.\n").unwrap();
    fs::write(root.join("empty"), b"").unwrap();
    let big: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    fs::write(root.join("hiperiso/big.bin"), &big).unwrap();
    let long = "a-very-long-file-name-that-needs-several-name-entries-Ünïcödé-日本語.txt";
    fs::write(root.join("hiperiso").join(long), long.as_bytes()).unwrap();
    fs::write(root.join("hiperiso/logs/deep/er/x.log"), b"deep").unwrap();
    tree
}

fn contents(reader: &mut ExfatReader<Cursor<Vec<u8>>>, path: &str) -> Vec<u8> {
    let mut out = Vec::new();
    reader.read_file(path, &mut out).unwrap();
    out
}

#[test]
fn empty_volume_reads_back() {
    let mut reader = ExfatReader::open(formatted(None)).unwrap();
    assert_eq!(reader.label(), "HIPERISO");
    assert_eq!(reader.volume_serial(), 0xC0FF_EE00);
    assert!(reader.read_dir("/").unwrap().is_empty());
    let usage = reader.usage().unwrap();
    // Bitmap, up-case table (two 4 KiB clusters) and the root directory.
    assert_eq!(usage.used_clusters, 4);
    assert_eq!(
        usage.used_clusters + usage.free_clusters,
        usage.total_clusters
    );
}

#[test]
fn tree_round_trips() {
    let tree = sample_tree();
    let mut reader = ExfatReader::open(formatted(Some(tree.path()))).unwrap();
    let names: Vec<_> = reader
        .read_dir("")
        .unwrap()
        .into_iter()
        .map(|e| (e.name, e.is_dir))
        .collect();
    assert_eq!(
        names,
        [
            ("ISOs".into(), true),
            ("empty".into(), false),
            ("hiperiso".into(), true)
        ]
    );
    let hiperiso = reader.read_dir("/hiperiso").unwrap();
    assert_eq!(hiperiso.len(), 3);
    for entry in &hiperiso {
        assert_eq!(entry.modified, 1_700_000_000);
    }
    for entry in hiperiso.iter().filter(|e| !e.is_dir) {
        let path = format!("hiperiso/{}", entry.name);
        let expected = fs::read(tree.path().join(&path)).unwrap();
        assert_eq!(contents(&mut reader, &path), expected, "{path}");
        assert_eq!(entry.size, expected.len() as u64);
    }
    assert_eq!(
        contents(&mut reader, "/hiperiso/logs/deep/er/x.log"),
        b"deep"
    );
    assert_eq!(contents(&mut reader, "empty"), b"");
    let usage = reader.usage().unwrap();
    // 300 000 bytes take 74 clusters; the rest take one each.
    assert!(usage.used_clusters > 74 + 4, "{usage:?}");
}

#[test]
fn lookup_is_case_insensitive_through_the_upcase_table() {
    let tree = sample_tree();
    let mut reader = ExfatReader::open(formatted(Some(tree.path()))).unwrap();
    assert_eq!(
        contents(&mut reader, "isos/readme"),
        b"Put ISO files here.\n"
    );
    let upper = "HIPERISO/A-VERY-LONG-FILE-NAME-THAT-NEEDS-SEVERAL-NAME-ENTRIES-ÜNÏCÖDÉ-日本語.TXT";
    assert!(contents(&mut reader, upper).starts_with(b"a-very-long"));
    assert!(matches!(
        reader.read_file("ISOs/missing", &mut Vec::new()),
        Err(ExfatError::NotFound { .. })
    ));
    assert!(matches!(
        reader.read_file("ISOs", &mut Vec::new()),
        Err(ExfatError::IsADirectory { .. })
    ));
    assert!(matches!(
        reader.read_dir("empty"),
        Err(ExfatError::NotADirectory { .. })
    ));
}

#[test]
fn fragmented_file_is_followed_through_the_fat() {
    let tree = tempfile::tempdir().unwrap();
    let data: Vec<u8> = (0..3 * 4096u32).map(|i| (i % 253) as u8).collect();
    fs::write(tree.path().join("frag"), &data).unwrap();
    let mut dev = formatted(Some(tree.path()));
    let (first, volume) = {
        let mut reader = ExfatReader::open(&mut dev).unwrap();
        let entry = reader.metadata("frag").unwrap();
        (entry.stream.first_cluster, reader.volume)
    };
    // Move the file's middle cluster to a free cluster far away and
    // describe the file with a FAT chain instead of NoFatChain.
    let far = first + 100;
    let bytes = dev.get_mut();
    let cluster = |c: u32| (volume.heap_start + (u64::from(c - 2) << volume.cluster_bits)) as usize;
    let middle: Vec<u8> = bytes[cluster(first + 1)..cluster(first + 2)].to_vec();
    bytes[cluster(first + 1)..cluster(first + 2)].fill(0xEE);
    bytes[cluster(far)..cluster(far + 1)].copy_from_slice(&middle);
    let fat = volume.fat_start as usize;
    for (from, to) in [
        (first, far),
        (far, first + 2),
        (first + 2, FAT_END_OF_CHAIN),
    ] {
        bytes[fat + from as usize * 4..fat + from as usize * 4 + 4]
            .copy_from_slice(&to.to_le_bytes());
    }
    let root = cluster(5); // after the bitmap (cluster 2) and up-case table (3, 4)
    let set = root + 3 * ENTRY_SIZE;
    assert_eq!(bytes[set], entry_type::FILE);
    bytes[set + ENTRY_SIZE + 1] = FLAG_ALLOCATION_POSSIBLE;
    let checksum = entry_set_checksum(&bytes[set..set + 3 * ENTRY_SIZE]);
    bytes[set + 2..set + 4].copy_from_slice(&checksum.to_le_bytes());

    let mut reader = ExfatReader::open(&mut dev).unwrap();
    let mut out = Vec::new();
    reader.read_file("FRAG", &mut out).unwrap();
    assert_eq!(out, data);
    // A chain that loops back is reported, not followed forever.
    let bytes = dev.get_mut();
    bytes[fat + (first + 2) as usize * 4..fat + (first + 2) as usize * 4 + 4]
        .copy_from_slice(&first.to_le_bytes());
    bytes[set + ENTRY_SIZE + 24..set + ENTRY_SIZE + 32]
        .copy_from_slice(&(1u64 << 30).to_le_bytes());
    bytes[set + ENTRY_SIZE + 8..set + ENTRY_SIZE + 16].copy_from_slice(&(1u64 << 30).to_le_bytes());
    let checksum = entry_set_checksum(&bytes[set..set + 3 * ENTRY_SIZE]);
    bytes[set + 2..set + 4].copy_from_slice(&checksum.to_le_bytes());
    let mut reader = ExfatReader::open(&mut dev).unwrap();
    assert!(matches!(
        reader.read_file("frag", &mut Vec::new()),
        Err(ExfatError::Corrupt(_))
    ));
}

#[test]
fn file_reader_seeks() {
    let tree = sample_tree();
    let mut reader = ExfatReader::open(formatted(Some(tree.path()))).unwrap();
    let expected = fs::read(tree.path().join("hiperiso/big.bin")).unwrap();
    let mut file = reader.open_file("hiperiso/big.bin").unwrap();
    assert_eq!(file.size(), expected.len() as u64);
    for offset in [0u64, 4095, 4096, 123_457, 299_990] {
        file.seek(SeekFrom::Start(offset)).unwrap();
        let mut buffer = [0u8; 8];
        let count = file.read(&mut buffer).unwrap();
        assert!(count > 0);
        assert_eq!(
            &buffer[..count],
            &expected[offset as usize..offset as usize + count]
        );
    }
    file.seek(SeekFrom::End(-3)).unwrap();
    let mut rest = Vec::new();
    file.read_to_end(&mut rest).unwrap();
    assert_eq!(rest, &expected[expected.len() - 3..]);
    assert!(file.seek(SeekFrom::Current(-10_000_000)).is_err());
}

#[test]
fn damaged_entry_set_fails_read_dir_but_not_its_siblings() {
    let tree = sample_tree();
    let mut dev = formatted(Some(tree.path()));
    // Root entries: label, bitmap, up-case, then "ISOs" (3 entries),
    // "empty", "hiperiso". Damage the set of "ISOs".
    let root = {
        let reader = ExfatReader::open(&mut dev).unwrap();
        reader.cluster_offset(reader.volume.root_cluster) as usize
    };
    let isos = root + 3 * ENTRY_SIZE;
    assert_eq!(dev.get_ref()[isos], entry_type::FILE);
    dev.get_mut()[isos + 2 * ENTRY_SIZE + 2] ^= 0x20; // a name character
    let mut reader = ExfatReader::open(dev).unwrap();
    let err = reader.read_dir("/").unwrap_err();
    assert!(err.to_string().contains("checksum"), "{err}");
    let (entries, problems) = reader.read_dir_lossy("/").unwrap();
    let names: Vec<_> = entries.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["empty", "hiperiso"]);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(
        contents(&mut reader, "hiperiso/logs/deep/er/x.log"),
        b"deep"
    );
    assert!(matches!(
        reader.metadata("ISOs"),
        Err(ExfatError::NotFound { .. })
    ));
}

#[test]
fn backup_boot_region_is_used_when_the_main_one_is_damaged() {
    let mut dev = formatted(None);
    dev.get_mut()[100] ^= 0xFF; // serial number: main checksum now fails
    let reader = ExfatReader::open(dev).unwrap();
    assert_eq!(reader.volume_serial(), 0xC0FF_EE00);
}

#[test]
fn corrupt_or_truncated_volumes_give_errors_not_panics() {
    let tree = sample_tree();
    let good = formatted(Some(tree.path())).into_inner();
    let check = |bytes: Vec<u8>| {
        if let Ok(mut reader) = ExfatReader::open(Cursor::new(bytes)) {
            let _ = reader.usage();
            for dir in ["", "hiperiso", "hiperiso/logs/deep/er", "ISOs"] {
                let _ = reader.read_dir(dir);
            }
            for file in [
                "hiperiso/big.bin",
                "ISOs/README",
                "hiperiso/logs/deep/er/x.log",
            ] {
                let _ = reader.read_file(file, &mut Vec::new());
            }
        }
    };
    // Truncations at many points.
    for length in [
        0,
        100,
        512,
        6000,
        12 * 512,
        1 << 20,
        (1 << 20) + 4096,
        2 << 20,
        (2 << 20) + 20_000,
    ] {
        let result = ExfatReader::open(Cursor::new(good[..length].to_vec()));
        if length < (2 << 20) + 16_384 {
            assert!(result.is_err(), "truncated to {length} bytes");
        }
        check(good[..length].to_vec());
    }
    // Deterministic pseudo-random byte damage over the metadata.
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    for _ in 0..400 {
        let mut bytes = good.clone();
        for _ in 0..8 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            // The boot regions, the FAT and the first 64 KiB of the heap.
            let region = match state % 3 {
                0 => (state >> 8) as usize % (24 * 512),
                1 => (1 << 20) + (state >> 8) as usize % 4096,
                _ => (2 << 20) + (state >> 8) as usize % (64 << 10),
            };
            bytes[region] = (state >> 40) as u8;
        }
        check(bytes);
    }
    // Every field of the boot sector set to extreme values, with a
    // matching checksum so that the field checks themselves are reached.
    for offset in 64..120 {
        for value in [0x00u8, 0xFF, 0x80] {
            let mut bytes = good.clone();
            bytes[offset] = value;
            let checksum = boot_checksum(&bytes[..11 * 512]);
            for word in bytes[11 * 512..12 * 512].chunks_exact_mut(4) {
                word.copy_from_slice(&checksum.to_le_bytes());
            }
            bytes[12 * 512..24 * 512].fill(0);
            check(bytes);
        }
    }
}

#[test]
fn not_exfat_is_reported_as_such() {
    let err = ExfatReader::open(Cursor::new(vec![0u8; 1 << 20]))
        .err()
        .unwrap();
    assert!(matches!(err, ExfatError::NotExfat(_)), "{err}");
}
