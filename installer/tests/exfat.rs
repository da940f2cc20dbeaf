//! exFAT against the real parts: fsck.exfat, mkfs.exfat and the Linux
//! kernel's exfat driver on loop devices. Loop mounts need root; without
//! root those tests say so and return.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
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

/// Whether loop mounts with the host kernel's exfat driver are possible:
/// root, and a kernel with exFAT (some CI kernels are built without it).
fn host_can_mount_exfat() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED: loop mounts need root");
        return false;
    }
    let filesystems = fs::read_to_string("/proc/filesystems").unwrap_or_default();
    if !filesystems
        .lines()
        .any(|line| line.trim_end().ends_with("exfat"))
    {
        eprintln!("SKIPPED: this host kernel has no exfat driver");
        return false;
    }
    true
}

/// A loop device with the image mounted at `mountpoint`; unmounted and
/// detached on drop.
struct Mounted {
    device: String,
    mountpoint: PathBuf,
}

impl Mounted {
    fn new(image: &Path, mountpoint: &Path) -> Self {
        fs::create_dir_all(mountpoint).unwrap();
        let device = run(Command::new("losetup")
            .args(["--find", "--show"])
            .arg(image))
        .trim()
        .to_string();
        let mounted = Mounted {
            device,
            mountpoint: mountpoint.to_path_buf(),
        };
        run(Command::new("mount")
            .args(["-t", "exfat", &mounted.device])
            .arg(mountpoint));
        mounted
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.mountpoint).status();
        let _ = Command::new("losetup").args(["-d", &self.device]).status();
    }
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

/// Writes a few hundred small files in nested directories.
fn write_small_files(root: &Path, count: usize) {
    for i in 0..count {
        let dir = root.join(format!("d{}/e{}", i % 7, i % 13));
        fs::create_dir_all(&dir).unwrap();
        let body: Vec<u8> = (0..(i * 37 % 5000)).map(|b| (b * i) as u8).collect();
        fs::write(dir.join(format!("file-{i:04}.txt")), body).unwrap();
    }
}

#[test]
fn kernel_driver_uses_our_volume_heavily() {
    if !host_can_mount_exfat() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let tree = work.path().join("tree");
    sample_tree(&tree);
    let image = make_image(work.path(), "ours.img", 8 * GIB, Some(&tree));
    let mountpoint = work.path().join("mnt");
    let hashes = {
        let mounted = Mounted::new(&image, &mountpoint);
        // What we wrote is what the kernel sees.
        let mut expected = hash_tree(&tree);
        assert_eq!(hash_tree(&mountpoint), expected);

        // A 5 GiB file written sparsely: data at a few offsets only.
        let mut big = File::create(mountpoint.join("ISOs/five-gib.iso")).unwrap();
        for (index, offset) in [0, GIB, 3 * GIB, 5 * GIB - MIB].into_iter().enumerate() {
            big.seek(SeekFrom::Start(offset)).unwrap();
            big.write_all(&vec![index as u8 + 1; MIB as usize]).unwrap();
        }
        big.sync_all().unwrap();
        assert_eq!(big.metadata().unwrap().len(), 5 * GIB);
        drop(big);
        write_small_files(&mountpoint.join("hiperiso/logs"), 300);
        // Grow a directory we wrote beyond its first cluster, and rename.
        for i in 0..400 {
            fs::write(mountpoint.join(format!("ISOs/more-{i:03}")), b"x").unwrap();
        }
        fs::rename(
            mountpoint.join("ISOs/README"),
            mountpoint.join("ISOs/README.txt"),
        )
        .unwrap();
        fs::remove_file(mountpoint.join("hiperiso/empty")).unwrap();
        expected = hash_tree(&mountpoint);
        drop(mounted);
        let mounted = Mounted::new(&image, &mountpoint);
        assert_eq!(hash_tree(&mountpoint), expected);
        drop(mounted);
        expected
    };
    fsck_clean(&image);

    // Our reader agrees with the kernel, on the files the kernel wrote too.
    let mut reader = ExfatReader::open(File::open(&image).unwrap()).unwrap();
    assert_eq!(hash_volume(&mut reader), hashes);
    let usage = reader.usage().unwrap();
    assert!(usage.used_bytes() > 5 * GIB, "{usage:?}");
}

#[test]
fn reader_reads_a_mkfs_volume_written_by_linux() {
    if !host_can_mount_exfat() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let image = work.path().join("mkfs.img");
    File::create(&image).unwrap().set_len(GIB).unwrap();
    run(Command::new("mkfs.exfat")
        .args(["-L", "LinuxMade"])
        .arg(&image));
    let mountpoint = work.path().join("mnt");
    let expected = {
        let _mounted = Mounted::new(&image, &mountpoint);
        sample_tree(&mountpoint.join("copy"));
        write_small_files(&mountpoint.join("small"), 200);
        // Two files appended in turns end up fragmented (FAT chains).
        let mut a = File::create(mountpoint.join("Fragmented-A.log")).unwrap();
        let mut b = File::create(mountpoint.join("fragmented-b.log")).unwrap();
        for round in 0..64u32 {
            a.write_all(&vec![round as u8; 40_000]).unwrap();
            a.sync_all().unwrap();
            b.write_all(&vec![!round as u8; 33_333]).unwrap();
            b.sync_all().unwrap();
        }
        hash_tree(&mountpoint)
    };
    let mut reader = ExfatReader::open(File::open(&image).unwrap()).unwrap();
    assert_eq!(reader.label(), "LinuxMade");
    assert_eq!(hash_volume(&mut reader), expected);
    // Case-insensitive lookup of names the kernel wrote, via the up-case table.
    let mut out = Vec::new();
    reader.read_file("FRAGMENTED-a.LOG", &mut out).unwrap();
    assert_eq!(out.len(), 64 * 40_000);
    let name = "COPY/HIPERISO/LOGS/ENTRY 07 — ÜNÏCÖDÉ 日本語 WITH A RATHER LONG NAME.TXT";
    out.clear();
    reader.read_file(name, &mut out).unwrap();
    assert_eq!(out, b"7\n");
}
