use super::super::{ExfatOptions, format};
use super::*;
use std::fs;
use std::io::Cursor;
use std::process::Command;

fn options() -> ExfatOptions {
    ExfatOptions {
        label: "HIPERISO".into(),
        volume_serial: 0x1234_ABCD,
        timestamp: 1_700_000_000,
    }
}

fn pattern(length: usize, seed: u32) -> Vec<u8> {
    (0..length as u32)
        .map(|i| (i.wrapping_mul(31).wrapping_add(seed) % 251) as u8)
        .collect()
}

fn volume(size: u64) -> (tempfile::TempDir, Cursor<Vec<u8>>) {
    let tree = tempfile::tempdir().unwrap();
    fs::create_dir_all(tree.path().join("ISOs")).unwrap();
    fs::create_dir_all(tree.path().join("hiperiso")).unwrap();
    fs::write(tree.path().join("ISOs/README"), b"Put ISO files here.\n").unwrap();
    fs::write(tree.path().join("hiperiso/hiperiso.json"), b"{}").unwrap();
    let mut dev = Cursor::new(vec![0u8; size as usize]);
    format(&mut dev, size, Some(tree.path()), &options()).unwrap();
    (tree, dev)
}

fn read(dev: &mut Cursor<Vec<u8>>, path: &str) -> Vec<u8> {
    let mut reader = ExfatReader::open(&mut *dev).unwrap();
    let mut out = Vec::new();
    reader.read_file(path, &mut out).unwrap();
    out
}

/// fsck.exfat -n on the volume: clean, or the test fails with its output.
fn assert_fsck_clean(dev: &Cursor<Vec<u8>>) {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("volume.img");
    fs::write(&image, dev.get_ref()).unwrap();
    let out = Command::new("fsck.exfat")
        .arg("-n")
        .arg(&image)
        .output()
        .expect("fsck.exfat (exfatprogs) is installed");
    assert!(
        out.status.success(),
        "fsck.exfat: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn put(dev: &mut Cursor<Vec<u8>>, path: &str, data: &[u8]) {
    let mut editor = ExfatEditor::open(&mut *dev).unwrap();
    editor
        .put_file(path, data, data.len() as u64, 1_700_000_100)
        .unwrap();
}

#[test]
fn added_files_read_back_and_fsck_is_clean() {
    let (_tree, mut dev) = volume(32 << 20);
    let before = ExfatReader::open(&mut dev).unwrap().usage().unwrap();
    let iso = pattern(3 * 4096 + 123, 7);
    put(&mut dev, "/ISOs/test.iso", &iso);
    put(&mut dev, "hiperiso/grubenv", &[b'#'; 1024]);
    put(&mut dev, "empty", b"");
    let long = "a-long-name-spanning-several-name-entries-Ünïcödé.iso";
    put(&mut dev, &format!("ISOs/{long}"), b"long");
    assert_eq!(read(&mut dev, "ISOs/TEST.ISO"), iso);
    assert_eq!(read(&mut dev, "hiperiso/grubenv"), vec![b'#'; 1024]);
    assert_eq!(read(&mut dev, "empty"), b"");
    assert_eq!(read(&mut dev, &format!("isos/{long}")), b"long");
    assert_eq!(read(&mut dev, "ISOs/README"), b"Put ISO files here.\n");
    let mut reader = ExfatReader::open(&mut dev).unwrap();
    let entry = reader.metadata("ISOs/test.iso").unwrap();
    assert_eq!(entry.modified, 1_700_000_100);
    assert!(entry.stream.no_fat_chain);
    // 4 clusters for test.iso, one each for grubenv and the long name.
    let usage = reader.usage().unwrap();
    assert_eq!(usage.used_clusters, before.used_clusters + 6);
    // Clean, and PercentInUse and VolumeDirty as fsck expects.
    assert_eq!(dev.get_ref()[VOLUME_FLAGS as usize] & VOLUME_DIRTY, 0);
    assert_fsck_clean(&dev);
}

#[test]
fn replacing_a_file_frees_its_old_clusters() {
    let (_tree, mut dev) = volume(16 << 20);
    let before = ExfatReader::open(&mut dev).unwrap().usage().unwrap();
    put(&mut dev, "hiperiso/hiperiso.json", &pattern(40_000, 1));
    put(&mut dev, "hiperiso/hiperiso.json", &pattern(5_000, 2));
    assert_eq!(read(&mut dev, "hiperiso/hiperiso.json"), pattern(5_000, 2));
    let mut reader = ExfatReader::open(&mut dev).unwrap();
    let after = reader.usage().unwrap();
    // The 2-byte file took one cluster, its replacement takes two.
    assert_eq!(after.used_clusters, before.used_clusters + 1);
    let names: Vec<_> = reader
        .read_dir("hiperiso")
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(names, ["hiperiso.json"]);
    assert_fsck_clean(&dev);
}

#[test]
fn a_full_directory_grows_and_the_root_too() {
    let (_tree, mut dev) = volume(16 << 20);
    // 4 KiB clusters hold 128 entries; each file here takes 3.
    for i in 0..100 {
        put(&mut dev, &format!("ISOs/image-{i:03}.iso"), &pattern(10, i));
    }
    for i in 0..50 {
        put(&mut dev, &format!("root-{i:03}"), &pattern(10, i + 500));
    }
    let mut reader = ExfatReader::open(&mut dev).unwrap();
    assert_eq!(reader.read_dir("ISOs").unwrap().len(), 101);
    assert_eq!(reader.metadata("ISOs").unwrap().size, 3 * 4096);
    assert_eq!(reader.read_dir("").unwrap().len(), 52);
    for i in [0, 57, 99] {
        let mut out = Vec::new();
        reader
            .read_file(&format!("ISOs/image-{i:03}.iso"), &mut out)
            .unwrap();
        assert_eq!(out, pattern(10, i));
    }
    assert_fsck_clean(&dev);
}

/// Flips the allocation bits of every other cluster from `from` on, in
/// the raw bitmap (the bitmap's first cluster is cluster 2).
fn toggle_every_other_cluster(dev: &mut Cursor<Vec<u8>>, from: usize, to: usize) {
    let offset = {
        let reader = ExfatReader::open(&mut *dev).unwrap();
        reader.cluster_offset(reader.bitmap.first_cluster) as usize
    };
    for bit in (from..to).step_by(2) {
        dev.get_mut()[offset + bit / 8] ^= 1 << (bit % 8);
    }
}

#[test]
fn fragmented_free_space_gives_a_fat_chain() {
    let (_tree, mut dev) = volume(8 << 20);
    // Occupy every other free cluster, so no run of 20 clusters is free.
    let used = ExfatReader::open(&mut dev).unwrap().usage().unwrap();
    let first_free = used.used_clusters as usize + 8;
    let last = used.total_clusters as usize;
    toggle_every_other_cluster(&mut dev, first_free, last);
    let big = pattern(20 * 4096, 99);
    put(&mut dev, "ISOs/big.iso", &big);
    toggle_every_other_cluster(&mut dev, first_free, last);
    assert_eq!(read(&mut dev, "ISOs/big.iso"), big);
    let mut reader = ExfatReader::open(&mut dev).unwrap();
    let entry = reader.metadata("ISOs/big.iso").unwrap();
    assert!(!entry.stream.no_fat_chain);
    let runs = reader.runs(entry.stream, "big.iso", u64::MAX).unwrap();
    assert!(runs.len() >= 10, "{runs:?}");
    drop(reader);
    assert_fsck_clean(&dev);
    // Replacing it clears the chain in the FAT.
    put(&mut dev, "ISOs/big.iso", b"small");
    assert_eq!(read(&mut dev, "ISOs/big.iso"), b"small");
    assert_fsck_clean(&dev);
}

#[test]
fn errors_name_the_problem_and_change_nothing() {
    let (_tree, mut dev) = volume(8 << 20);
    let pristine = dev.get_ref().clone();
    let mut editor = ExfatEditor::open(&mut dev).unwrap();
    let err = editor
        .put_file("nowhere/x.iso", &b"x"[..], 1, 0)
        .unwrap_err();
    assert!(
        matches!(err, ExfatError::NotFound { ref path } if path == "/nowhere"),
        "{err}"
    );
    let err = editor
        .put_file("ISOs/a:b.iso", &b"x"[..], 1, 0)
        .unwrap_err();
    assert!(err.to_string().contains("ISOs/a:b.iso"), "{err}");
    let err = editor.put_file("ISOs", &b"x"[..], 1, 0).unwrap_err();
    assert!(matches!(err, ExfatError::IsADirectory { .. }), "{err}");
    let err = editor
        .put_file("ISOs/huge.iso", std::io::repeat(0), 64 << 20, 0)
        .unwrap_err();
    assert!(matches!(err, ExfatError::NoSpace { .. }), "{err}");
    drop(editor);
    // Every error above is found before anything is written.
    assert!(dev.get_ref() == &pristine, "the volume changed");
    let mut dev2 = Cursor::new(pristine);
    // A source shorter than announced is reported.
    let mut editor = ExfatEditor::open(&mut dev2).unwrap();
    let err = editor.put_file("short", &b"abc"[..], 10, 0).unwrap_err();
    assert!(matches!(err, ExfatError::SourceChanged { .. }), "{err}");
}

// The kernel's exFAT driver reading a file this editor added: in a VM,
// tests/it/exfat_kernel.rs (the build hosts have no exFAT driver).
