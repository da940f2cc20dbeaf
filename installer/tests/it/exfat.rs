//! exFAT against the real parts: fsck.exfat and mkfs.exfat. The Linux
//! kernel driver's side is in tests/exfat_kernel.rs (run in a VM, since build
//! hosts may lack the driver).

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use hiperiso_installer::exfat::{ExfatError, ExfatOptions, ExfatReader, format};
use sha2::{Digest, Sha256};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

fn options() -> ExfatOptions {
    ExfatOptions {
        label: "HIPERISO".into(),
        volume_serial: 0x4849_5045,
        timestamp: 1_700_000_000,
    }
}

/// Runs a command, panicking with its output when it fails.
fn run(command: &mut Command) -> String {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("{command:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{command:?} failed:\n{text}");
    text
}

fn fsck_clean(image: &Path) {
    let text = run(Command::new("fsck.exfat").arg("-n").arg(image));
    assert!(
        text.contains("clean"),
        "fsck.exfat -n {}:\n{text}",
        image.display()
    );
}

/// A sparse image file of `size` bytes formatted by us.
fn make_image(dir: &Path, name: &str, size: u64, tree: Option<&Path>) -> PathBuf {
    let path = dir.join(name);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .unwrap();
    file.set_len(size).unwrap();
    format(&mut file, size, tree, &options()).unwrap();
    file.sync_all().unwrap();
    path
}

/// A tree with nested directories, an empty file, a multi-cluster file,
/// long and non-ASCII names.
fn sample_tree(root: &Path) {
    fs::create_dir_all(root.join("ISOs")).unwrap();
    fs::create_dir_all(root.join("hiperiso/logs")).unwrap();
    fs::write(root.join("ISOs/README"), b"Put ISO images here.\n").unwrap();
    fs::write(
        root.join("hiperiso/hiperiso.json.example"),
        b"{\"control\": {}}\n",
    )
    .unwrap();
    fs::write(root.join("hiperiso/empty"), b"").unwrap();
    let big: Vec<u8> = (0..3 * MIB as u32 + 17).map(|i| (i % 251) as u8).collect();
    fs::write(root.join("ISOs/big.bin"), big).unwrap();
    for i in 0..40 {
        let name = format!("entry {i:02} — Ünïcödé 日本語 with a rather long name.txt");
        fs::write(root.join("hiperiso/logs").join(name), format!("{i}\n")).unwrap();
    }
}

/// Every file under `root` (relative path -> sha256); directories map to "dir".
fn hash_tree(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let relative = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            if path.is_dir() {
                out.insert(relative, "dir".into());
                stack.push(path);
            } else {
                let mut hasher = Sha256::new();
                std::io::copy(&mut File::open(&path).unwrap(), &mut hasher).unwrap();
                out.insert(relative, hex::encode(hasher.finalize()));
            }
        }
    }
    out
}

/// The same map, read through our ExfatReader.
fn hash_volume<D: Read + Seek>(reader: &mut ExfatReader<D>) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![String::new()];
    while let Some(dir) = stack.pop() {
        for entry in reader.read_dir(&dir).unwrap() {
            let path = if dir.is_empty() {
                entry.name.clone()
            } else {
                format!("{dir}/{}", entry.name)
            };
            if entry.is_dir {
                out.insert(path.clone(), "dir".into());
                stack.push(path);
            } else {
                let mut hasher = Sha256::new();
                let copied = reader.read_file(&path, &mut hasher).unwrap();
                assert_eq!(copied, entry.size, "{path}");
                out.insert(path, hex::encode(hasher.finalize()));
            }
        }
    }
    out
}

#[test]
fn fsck_is_clean_on_volumes_of_every_cluster_size() {
    let work = tempfile::tempdir().unwrap();
    let tree = work.path().join("tree");
    sample_tree(&tree);
    for (size, cluster_size) in [
        (64 * MIB, 4096),
        (GIB, 32 << 10),
        (8 * GIB, 32 << 10),
        (40 * GIB, 128 << 10),
    ] {
        for with_tree in [false, true] {
            let name = format!("ours-{size}-{with_tree}.img");
            let image = make_image(
                work.path(),
                &name,
                size,
                with_tree.then_some(tree.as_path()),
            );
            fsck_clean(&image);

            // Same geometry as mkfs.exfat picks for that size.
            let reference = work.path().join(format!("mkfs-{size}.img"));
            if !reference.exists() {
                File::create(&reference).unwrap().set_len(size).unwrap();
                run(Command::new("mkfs.exfat").arg(&reference));
            }
            let mut ours = vec![0u8; 512];
            File::open(&image).unwrap().read_exact(&mut ours).unwrap();
            let mut theirs = vec![0u8; 512];
            File::open(&reference)
                .unwrap()
                .read_exact(&mut theirs)
                .unwrap();
            assert_eq!(ours[72..100], theirs[72..100], "geometry of {name}");
            assert_eq!(ours[108..112], theirs[108..112], "shifts of {name}");

            let mut reader = ExfatReader::open(File::open(&image).unwrap()).unwrap();
            assert_eq!(reader.label(), "HIPERISO");
            assert_eq!(reader.cluster_size(), cluster_size);
            if with_tree {
                assert_eq!(hash_volume(&mut reader), hash_tree(&tree), "{name}");
            }
            // Only metadata and data are written: the image stays sparse.
            let allocated = fs::metadata(&image).unwrap().blocks() * 512;
            assert!(allocated < 16 * MIB, "{name}: {allocated} bytes allocated");
            fs::remove_file(&image).unwrap();
        }
    }
}

#[test]
fn two_formats_with_the_same_inputs_are_byte_identical() {
    let work = tempfile::tempdir().unwrap();
    let tree = work.path().join("tree");
    sample_tree(&tree);
    let hash = |path: &Path| {
        let mut hasher = Sha256::new();
        std::io::copy(&mut File::open(path).unwrap(), &mut hasher).unwrap();
        hex::encode(hasher.finalize())
    };
    let first = make_image(work.path(), "first.img", GIB, Some(&tree));
    let second = make_image(work.path(), "second.img", GIB, Some(&tree));
    assert_eq!(hash(&first), hash(&second));

    // A different serial changes the bytes (and so does nothing else here).
    let third = work.path().join("third.img");
    let mut file = File::create_new(&third).unwrap();
    file.set_len(GIB).unwrap();
    let opts = ExfatOptions {
        volume_serial: 1,
        ..options()
    };
    format(&mut file, GIB, Some(&tree), &opts).unwrap();
    assert_ne!(hash(&first), hash(&third));
}

#[test]
fn reader_rejects_a_truncated_mkfs_volume() {
    let work = tempfile::tempdir().unwrap();
    let image = work.path().join("mkfs.img");
    File::create(&image).unwrap().set_len(64 * MIB).unwrap();
    run(Command::new("mkfs.exfat").arg(&image));
    let bytes = fs::read(&image).unwrap();
    for length in [0usize, 511, 4096, MIB as usize, 2 * MIB as usize] {
        let result = ExfatReader::open(std::io::Cursor::new(bytes[..length].to_vec()));
        assert!(result.is_err(), "truncated at {length}");
    }
    let err = ExfatReader::open(std::io::Cursor::new(bytes[..MIB as usize].to_vec()))
        .err()
        .unwrap();
    assert!(matches!(err, ExfatError::Io { .. }), "{err}");
}
