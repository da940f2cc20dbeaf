//! The Linux kernel's exfat driver against our exFAT writer, editor and
//! reader, and its vfat driver against our FAT writer (the ESP).
//!
//! The host kernel may have no exFAT driver (this project's build machines
//! do not), so the kernel runs in a VM: Debian's kernel under QEMU with our
//! image and a mkfs.exfat image as virtio disks. The VM mounts them
//! read-write, works on them, and prints sha256 lists; the host then checks
//! them with fsck.exfat and with our own ExfatReader.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use hiperiso_installer::exfat::{ExfatEditor, ExfatOptions, ExfatReader, format};
use hiperiso_installer::fat::{self, FatOptions};
use hiperiso_tests::linux_vm;
use sha2::{Digest, Sha256};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

/// Runs inside the VM. `/dev/vda` is our volume, `/dev/vdb` mkfs.exfat's.
const SCRIPT: &str = r#"
set -e
step() { read up rest < /proc/uptime; echo "=== STEP $1 at ${up}s"; }
# Directories, then every file's sha256 (the 5 GiB file is sampled apart:
# hashing it under TCG would take minutes).
list() {
    cd "$1"
    find . -mindepth 1 -type d | sed 's/^/dir  /'
    find . -type f ! -name five-gib.iso -exec sha256sum {} +
    cd /
}
five() {
    for offset in 0 1024 2048 3072 5119; do
        echo "$offset $(dd if=/ours/ISOs/five-gib.iso bs=1M skip=$offset count=1 2>/dev/null | sha256sum)"
    done
}
mkdir -p /ours /theirs
step mount
mount -t exfat /dev/vda /ours
echo "=== BEGIN ours-initial"; list /ours; echo "=== END ours-initial"

step five-gib
# A 5 GiB file with data at a few offsets only.
for offset in 0 1024 3072 5119; do
    dd if=/dev/urandom of=/ours/ISOs/five-gib.iso bs=1M count=1 seek=$offset conv=notrunc 2>/dev/null
done
step small-files
# Hundreds of small files in nested directories (shell builtins: no forks).
dirs=""
i=0
while [ $i -lt 91 ]; do dirs="$dirs /ours/hiperiso/logs/d$((i % 7))/e$((i % 13))"; i=$((i + 1)); done
mkdir -p $dirs
i=0
while [ $i -lt 300 ]; do
    printf "%0$((i * 37 % 5000 + 1))d" $i > /ours/hiperiso/logs/d$((i % 7))/e$((i % 13))/file-$i.txt
    i=$((i + 1))
done
# Grow a directory we wrote well past its first cluster; rename; delete.
i=0
while [ $i -lt 400 ]; do echo $i > /ours/ISOs/more-$i; i=$((i + 1)); done
mv /ours/ISOs/README /ours/ISOs/README.txt
rm /ours/hiperiso/empty
echo "Ünïcödé" > "/ours/hiperiso/logs/ünïcödé 日本語.txt"
sync
step list
echo "=== BEGIN five-size"; stat -c %s /ours/ISOs/five-gib.iso; echo "=== END five-size"
echo "=== BEGIN ours-written"; list /ours; echo "=== END ours-written"
echo "=== BEGIN five-written"; five; echo "=== END five-written"
umount /ours
step remount
mount -t exfat /dev/vda /ours
echo "=== BEGIN ours-remounted"; list /ours; echo "=== END ours-remounted"
echo "=== BEGIN five-remounted"; five; echo "=== END five-remounted"
umount /ours

step theirs
mount -t exfat /dev/vdb /theirs
mkdir -p "/theirs/Sessions/Ärger 2026/deep/er" /theirs/small/d0 /theirs/small/d1 /theirs/small/d2
echo "seven" > "/theirs/Sessions/Ärger 2026/deep/er/Entry 07 — Ünïcödé 日本語.log"
i=0
while [ $i -lt 200 ]; do
    printf "%0$((i * 53 % 9000 + 1))d" $i > /theirs/small/d$((i % 3))/f$i
    i=$((i + 1))
done
# Two files appended in turns end up fragmented: FAT chains.
i=0
while [ $i -lt 64 ]; do
    printf "%040000d" $i >> /theirs/Fragmented-A.log
    printf "%033333d" $i >> /theirs/fragmented-b.log
    i=$((i + 1))
done
sync
echo "=== BEGIN theirs-written"; list /theirs; echo "=== END theirs-written"
umount /theirs

step edited
# /dev/vdc: formatted by us, then a file added by ExfatEditor (install
# --update's and `run`'s way of adding ISOs).
mkdir -p /edited /esp
mount -t exfat -o ro /dev/vdc /edited
echo "=== BEGIN edited"; list /edited; echo "=== END edited"
umount /edited
step esp
# /dev/vdd: our FAT ESP.
mount -t vfat -o ro,iocharset=utf8 /dev/vdd /esp
echo "=== BEGIN esp"; list /esp; echo "=== END esp"
umount /esp
step done
"#;

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

/// `path -> sha256` (directories: `path -> dir`) from a VM section.
fn parse_listing(lines: &[&str]) -> BTreeMap<String, String> {
    lines
        .iter()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let (value, path) = line
                .split_once("  ")
                .unwrap_or_else(|| panic!("bad line {line:?}"));
            (path.trim_start_matches("./").to_string(), value.to_string())
        })
        .collect()
}

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

fn hash_volume(image: &Path) -> BTreeMap<String, String> {
    let mut reader = ExfatReader::open(File::open(image).unwrap()).unwrap();
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
                assert_eq!(reader.read_file(&path, &mut hasher).unwrap(), entry.size);
                out.insert(path, hex::encode(hasher.finalize()));
            }
        }
    }
    out
}

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

#[test]
fn kernel_driver_uses_our_volume_and_our_reader_reads_what_linux_wrote() {
    let kit = linux_vm::debian_linux().expect("Debian kernel for the test VM");
    let work = tempfile::tempdir().unwrap();
    let tree = work.path().join("tree");
    sample_tree(&tree);

    let ours = work.path().join("ours.img");
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&ours)
        .unwrap();
    file.set_len(8 * GIB).unwrap();
    let opts = ExfatOptions {
        label: "HIPERISO".into(),
        volume_serial: 0x4849_5045,
        timestamp: 1_700_000_000,
    };
    format(&mut file, 8 * GIB, Some(&tree), &opts).unwrap();
    file.sync_all().unwrap();
    drop(file);

    let theirs = work.path().join("theirs.img");
    File::create(&theirs).unwrap().set_len(GIB).unwrap();
    run(Command::new("mkfs.exfat")
        .args(["-L", "LinuxMade"])
        .arg(&theirs));

    let (edited, edited_tree, added) = edited_volume(work.path());
    let (esp, esp_tree) = esp_volume(work.path());

    let initramfs = work.path().join("initramfs.cpio");
    let modules = [
        "virtio_pci",
        "virtio_blk",
        "exfat",
        "vfat",
        "nls_utf8",
        "nls_cp437",
    ];
    linux_vm::build_initramfs(&kit, &modules, SCRIPT, &initramfs).unwrap();
    let output = linux_vm::run_vm(
        &kit,
        &initramfs,
        &[&ours, &theirs, &edited, &esp],
        Duration::from_secs(900),
    )
    .unwrap();
    let listing = |name| parse_listing(&linux_vm::section(&output, name).unwrap());
    for step in output.lines().filter(|line| line.starts_with("=== STEP")) {
        eprintln!("{step}");
    }

    // The kernel sees exactly the tree we wrote.
    assert_eq!(listing("ours-initial"), hash_tree(&tree));
    // What it wrote survives a remount.
    let written = listing("ours-written");
    assert_eq!(listing("ours-remounted"), written);
    assert_eq!(
        linux_vm::section(&output, "five-size").unwrap(),
        ["5368709120"]
    );
    let five = linux_vm::section(&output, "five-written").unwrap();
    assert_eq!(linux_vm::section(&output, "five-remounted").unwrap(), five);
    let zeros = hex::encode(Sha256::digest(vec![0u8; MIB as usize]));
    assert!(five[2].starts_with(&format!("2048 {zeros}")), "{five:?}");
    assert!(written.len() > 300 + 400, "{} entries", written.len());
    assert!(!written.contains_key("hiperiso/empty"));
    assert!(written.contains_key("ISOs/README.txt"));

    // fsck.exfat finds nothing to fix, and our reader agrees with Linux.
    fsck_clean(&ours);
    let mut ours_read = hash_volume(&ours);
    assert!(ours_read.remove("ISOs/five-gib.iso").is_some());
    assert_eq!(ours_read, written);
    // The 5 GiB file, sampled where the VM sampled it.
    let mut reader = ExfatReader::open(File::open(&ours).unwrap()).unwrap();
    let mut big = reader.open_file("isos/FIVE-GIB.iso").unwrap();
    assert_eq!(big.size(), 5 * GIB);
    for line in &five {
        let (offset, hash) = line.split_once(' ').unwrap();
        let mut chunk = vec![0u8; MIB as usize];
        big.seek(SeekFrom::Start(offset.parse::<u64>().unwrap() * MIB))
            .unwrap();
        big.read_exact(&mut chunk).unwrap();
        assert_eq!(
            hash.split_whitespace().next().unwrap(),
            hex::encode(Sha256::digest(&chunk)),
            "{line}"
        );
    }

    fsck_clean(&theirs);
    let linux_written = listing("theirs-written");
    assert_eq!(hash_volume(&theirs), linux_written);
    let mut reader = ExfatReader::open(File::open(&theirs).unwrap()).unwrap();
    assert_eq!(reader.label(), "LinuxMade");
    // Case-insensitive lookups through the volume's up-case table.
    let mut out = Vec::new();
    reader
        .read_file(
            "sessions/ÄRGER 2026/DEEP/ER/entry 07 — ÜNÏCÖDÉ 日本語.LOG",
            &mut out,
        )
        .unwrap();
    assert_eq!(out, b"seven\n");
    assert_eq!(
        reader.metadata("FRAGMENTED-a.LOG").unwrap().size,
        64 * 40_000
    );

    // The kernel reads the file our editor added, and our FAT ESP.
    let mut want = hash_tree(&edited_tree);
    want.insert("ISOs/added.iso".into(), hex::encode(Sha256::digest(&added)));
    assert_eq!(listing("edited"), want);
    assert_eq!(listing("esp"), hash_tree(&esp_tree));
}

/// A small volume of ours with one file added by [`ExfatEditor`]:
/// (image, the formatted tree, the added file's bytes).
fn edited_volume(work: &Path) -> (std::path::PathBuf, std::path::PathBuf, Vec<u8>) {
    let tree = work.join("edited-tree");
    fs::create_dir_all(tree.join("ISOs")).unwrap();
    fs::create_dir_all(tree.join("hiperiso")).unwrap();
    fs::write(tree.join("ISOs/README"), b"Put ISO files here.\n").unwrap();
    fs::write(tree.join("hiperiso/hiperiso.json"), b"{}").unwrap();
    let image = work.join("edited.img");
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&image)
        .unwrap();
    file.set_len(64 * MIB).unwrap();
    let opts = ExfatOptions {
        label: "EDITED".into(),
        volume_serial: 0x1234_abcd,
        timestamp: 1_700_000_000,
    };
    format(&mut file, 64 * MIB, Some(&tree), &opts).unwrap();
    let added: Vec<u8> = (0..3 * MIB as u32 + 5).map(|i| (i % 241) as u8).collect();
    let mut editor = ExfatEditor::open(&mut file).unwrap();
    editor
        .put_file(
            "ISOs/added.iso",
            &added[..],
            added.len() as u64,
            1_700_000_000,
        )
        .unwrap();
    drop(editor);
    file.sync_all().unwrap();
    (image, tree, added)
}

/// A FAT16 ESP of ours with long, mixed-case and many names.
fn esp_volume(work: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let tree = work.join("esp-tree");
    fs::create_dir_all(tree.join("EFI/BOOT")).unwrap();
    fs::create_dir_all(tree.join("EFI/hiperiso/trace")).unwrap();
    fs::write(tree.join("EFI/BOOT/BOOTX64.EFI"), vec![0x5A; 300_000]).unwrap();
    fs::write(tree.join("EFI/BOOT/grub.cfg"), b"menuentry x {}\n").unwrap();
    for i in 0..120 {
        let name = format!("EFI/hiperiso/trace/Mixed Case name {i}.Events");
        fs::write(tree.join(name), i.to_string()).unwrap();
    }
    let image = work.join("esp.img");
    let mut file = File::create(&image).unwrap();
    file.set_len(32 * MIB).unwrap();
    let opts = FatOptions {
        label: "HIPERISO".into(),
        volume_id: 0x0bad_f00d,
        timestamp: 1_700_000_000,
        hidden_sectors: 0,
    };
    fat::format(&mut file, 32 * MIB, Some(&tree), &opts).unwrap();
    file.sync_all().unwrap();
    (image, tree)
}
