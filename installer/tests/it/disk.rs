//! Images, `install` and `install --update` checked by the real tools
//! (sgdisk -v, fsck.fat -n, fsck.exfat -n, blkid) on image files and on real
//! loop devices. Loop devices need root: without it the device tests skip.

use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use hiperiso_installer::bios_boot::BiosBoot;
use hiperiso_installer::device::{self, DeviceError};
use hiperiso_installer::exfat::ExfatReader;
use hiperiso_installer::image::{self, ImageSpec};
use hiperiso_installer::inspect;
use hiperiso_installer::layout::{MIB, TableKind};
use hiperiso_installer::slice::Slice;
use sha2::{Digest, Sha256};

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

/// A loop device over a file or a window of one, detached on drop.
struct Loop(PathBuf);

impl Loop {
    fn new(file: &Path, window: Option<(u64, u64)>) -> Loop {
        let mut cmd = Command::new("losetup");
        cmd.args(["-f", "--show"]);
        if let Some((offset, len)) = window {
            cmd.arg("-o")
                .arg(offset.to_string())
                .arg("--sizelimit")
                .arg(len.to_string());
        }
        Loop(PathBuf::from(run(cmd.arg(file)).trim()))
    }
    fn partition(&self, n: u32) -> PathBuf {
        PathBuf::from(format!("{}p{n}", self.0.display()))
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("partx").arg("-d").arg(&self.0).output();
        let _ = Command::new("losetup").arg("-d").arg(&self.0).output();
    }
}

struct Trees {
    _dir: tempfile::TempDir,
    root: PathBuf,
    esp: PathBuf,
    data: PathBuf,
}

fn trees(version: &str) -> Trees {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let esp = root.join("esp");
    let data = root.join("data");
    fs::create_dir_all(esp.join("EFI/BOOT")).unwrap();
    fs::create_dir_all(esp.join("EFI/hiperiso/trace")).unwrap();
    fs::write(
        esp.join("EFI/BOOT/BOOTX64.EFI"),
        format!("MZ fake loader {version}").repeat(5000),
    )
    .unwrap();
    fs::write(esp.join("EFI/BOOT/grub.cfg"), "set timeout=3\n").unwrap();
    fs::write(
        esp.join("EFI/hiperiso/build.json"),
        format!(r#"{{"hiperiso":{{"version":"{version}","outputs":{{"vmlinuz":{{"sha256":"ab{version}"}}}}}}}}"#),
    )
    .unwrap();
    fs::write(
        esp.join("EFI/hiperiso/trace/trace-standard.events"),
        "virtio_blk_req_complete\n",
    )
    .unwrap();
    fs::create_dir_all(data.join("ISOs")).unwrap();
    fs::create_dir_all(data.join("hiperiso")).unwrap();
    fs::write(
        data.join("hiperiso/hiperiso.json.example"),
        "{\"control\":{}}\n",
    )
    .unwrap();
    Trees {
        _dir: dir,
        root,
        esp,
        data,
    }
}

fn spec(t: &Trees, table: TableKind, size: u64) -> ImageSpec {
    ImageSpec {
        table,
        size,
        seed: "disk-test-seed".into(),
        data_label: "HIPERISO".into(),
        esp_label: "HIPERISO".into(),
        source_date_epoch: 1_700_000_000,
        esp_tree: t.esp.clone(),
        data_tree: t.data.clone(),
        esp_size: None,
    }
}

fn sha256_file(path: &Path) -> String {
    let mut hasher = Sha256::new();
    std::io::copy(&mut fs::File::open(path).unwrap(), &mut hasher).unwrap();
    hex::encode(hasher.finalize())
}

fn sha256_range(path: &Path, offset: u64, len: u64) -> String {
    let mut file = fs::File::open(path).unwrap();
    file.seek(SeekFrom::Start(offset)).unwrap();
    let mut hasher = Sha256::new();
    std::io::copy(&mut file.take(len), &mut hasher).unwrap();
    hex::encode(hasher.finalize())
}

/// fsck both filesystems of a disk whose partitions are at `nodes`.
fn fsck_partitions(data: &Path, esp: &Path) {
    let report = run(Command::new("fsck.exfat").arg("-n").arg(data));
    assert!(report.contains("clean"), "{report}");
    run(Command::new("fsck.fat").arg("-n").arg(esp));
    let blkid = run(Command::new("blkid").arg("-p").arg(data));
    assert!(
        blkid.contains("TYPE=\"exfat\"") && blkid.contains("LABEL=\"HIPERISO\""),
        "{blkid}"
    );
    let blkid = run(Command::new("blkid").arg("-p").arg(esp));
    assert!(blkid.contains("TYPE=\"vfat\""), "{blkid}");
}

fn check_image(table: TableKind) {
    let t = trees("1.0");
    let out = t.root.join("hiperiso.img");
    let summary = image::write_image(&spec(&t, table, 256 * MIB), &out).unwrap();
    assert_eq!(fs::metadata(&out).unwrap().len(), 256 * MIB);
    // Sparse: far fewer blocks than bytes.
    use std::os::unix::fs::MetadataExt;
    assert!(
        fs::metadata(&out).unwrap().blocks() * 512 < 64 * MIB,
        "image is not sparse"
    );
    if table == TableKind::Gpt {
        let report = run(Command::new("sgdisk").arg("-v").arg(&out));
        assert!(report.contains("No problems found"), "{report}");
    } else {
        let report = run(Command::new("sfdisk").arg("--dump").arg(&out));
        assert!(
            report.contains("type=7") && report.contains("type=ef"),
            "{report}"
        );
        assert!(report.contains("start=        2048"), "{report}");
    }

    // Our own readers see the trees.
    let mut file = fs::File::open(&out).unwrap();
    let layout = &summary.layout;
    let mut exfat =
        ExfatReader::open(Slice::new(&mut file, layout.data.offset, layout.data.len)).unwrap();
    assert_eq!(exfat.label(), "HIPERISO");
    let names: Vec<String> = exfat
        .read_dir("/")
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(names, ["ISOs", "hiperiso"]);
    let info = inspect::inspect_path(&out).unwrap();
    let text = info.to_string();
    assert!(text.contains("exFAT label \"HIPERISO\""), "{text}");
    assert!(text.contains("FAT16 label \"HIPERISO\""), "{text}");
    assert!(
        text.contains("hiperiso 1.0") && text.contains("outputs.vmlinuz.sha256: ab1.0"),
        "{text}"
    );
    assert!(text.contains(&summary.data_fs_uuid), "{text}");

    if !hiperiso_prereq::root() {
        return;
    }
    let data = Loop::new(&out, Some((layout.data.offset, layout.data.len)));
    let esp = Loop::new(&out, Some((layout.esp.offset, layout.esp.len)));
    fsck_partitions(&data.0, &esp.0);
}

#[test]
fn gpt_image_is_clean() {
    check_image(TableKind::Gpt);
}

#[test]
fn mbr_image_is_clean() {
    check_image(TableKind::Mbr);
}

#[test]
fn two_image_runs_give_identical_bytes() {
    let t = trees("1.0");
    let a = t.root.join("a.img");
    let b = t.root.join("b.img");
    image::write_image(&spec(&t, TableKind::Gpt, 128 * MIB), &a).unwrap();
    image::write_image(&spec(&t, TableKind::Gpt, 128 * MIB), &b).unwrap();
    assert_eq!(sha256_file(&a), sha256_file(&b));
    let mut other = spec(&t, TableKind::Gpt, 128 * MIB);
    other.seed = "another seed".into();
    image::write_image(&other, &b).unwrap();
    assert_ne!(
        sha256_file(&a),
        sha256_file(&b),
        "the seed must change the GUIDs"
    );
}

#[test]
fn payload_too_large_for_size_says_which_option() {
    let t = trees("1.0");
    fs::write(
        t.esp.join("EFI/hiperiso/initramfs.cpio.zst"),
        vec![1u8; 40 * MIB as usize],
    )
    .unwrap();
    let err = image::write_image(&spec(&t, TableKind::Gpt, 64 * MIB), &t.root.join("x.img"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("--size") && err.contains("MiB more"), "{err}");
    assert!(!t.root.join("x.img").exists());
}

/// A backing file full of stale bytes, as a used stick would be.
fn stale_disk(dir: &Path, size: u64) -> PathBuf {
    let path = dir.join("stick.raw");
    let mut file = fs::File::create(&path).unwrap();
    let junk: Vec<u8> = (0..MIB).map(|i| (i * 7 + 3) as u8).collect();
    for offset in [0, 32 * 1024, size / 2, size - MIB] {
        file.seek(SeekFrom::Start(offset)).unwrap();
        file.write_all(&junk[..MIB.min(size - offset) as usize])
            .unwrap();
    }
    file.set_len(size).unwrap();
    path
}

fn install_and_update(table: TableKind) {
    if !hiperiso_prereq::root() {
        return;
    }
    let t = trees("1.0");
    fs::write(t.data.join("ISOs/debian.iso"), "an ISO").unwrap();
    fs::create_dir_all(t.data.join("ISOs/sub")).unwrap();
    fs::write(t.data.join("ISOs/sub/win11.iso"), "another").unwrap();
    let session = t.data.join("hiperiso/logs/2026-01-02_030405_debian");
    fs::create_dir_all(&session).unwrap();
    fs::write(session.join("session.json"), "{}").unwrap();
    let raw = stale_disk(&t.root, 300 * MIB);
    let stick = Loop::new(&raw, None);

    // A loop device is not removable: refused without --force.
    let err = device::plan_install(&stick.0, &spec(&t, table, 0), false, false)
        .err()
        .unwrap();
    assert!(matches!(err, DeviceError::NotRemovable { .. }), "{err}");

    // Not a hiperiso stick yet: --update refuses and says what it found.
    let err = device::plan_update(&stick.0, &t.esp, "HIPERISO", "disk-test-seed", 1, true)
        .err()
        .unwrap();
    assert!(matches!(err, DeviceError::NotHiperiso { .. }), "{err}");

    let plan = device::plan_install(&stick.0, &spec(&t, table, 0), true, false).unwrap();
    let text = plan.to_string();
    assert!(text.contains("ALL DATA") && text.contains("last"), "{text}");
    // Writes only what is used: a small fraction of the disk.
    assert!(plan.bytes_to_write() < 300 * MIB / 4, "{text}");
    let report = device::execute_install(&plan, |_| {}).unwrap();
    eprintln!("install report: {report:?}");
    assert_eq!(
        report.partition_nodes,
        [stick.partition(1), stick.partition(2)]
    );
    assert!(report.partition_nodes.iter().all(|n| n.exists()));
    if table == TableKind::Gpt {
        let v = run(Command::new("sgdisk").arg("-v").arg(&stick.0));
        assert!(v.contains("No problems found"), "{v}");
    }
    fsck_partitions(&stick.partition(1), &stick.partition(2));
    let text = inspect::inspect_path(&stick.0).unwrap().to_string();
    assert!(text.contains("hiperiso 1.0"), "{text}");

    // Now a hiperiso stick: a second install refuses before any work, names
    // what it would erase and points to --update; --reinstall overrides.
    let err = device::plan_install(&stick.0, &spec(&t, table, 0), true, false)
        .err()
        .unwrap();
    let text = err.to_string();
    assert!(matches!(err, DeviceError::HoldsStick { .. }), "{text}");
    for needle in [
        "already holds a hiperiso stick (hiperiso 1.0",
        "2 ISO(s) (debian.iso, sub/win11.iso)",
        "1 session(s) (2026-01-02_030405_debian)",
        "install --update",
        "--reinstall",
    ] {
        assert!(text.contains(needle), "{needle:?} not in: {text}");
    }
    let err = device::check_install(&stick.0, true, false).err().unwrap();
    assert!(matches!(err, DeviceError::HoldsStick { .. }), "{err}");
    device::check_install(&stick.0, true, true).unwrap();
    assert!(device::plan_install(&stick.0, &spec(&t, table, 0), true, true).is_ok());

    // The same layout as an image of the same size: install writes exactly
    // the image's bytes everywhere that matters.
    let img = t.root.join("same.img");
    let summary = image::write_image(&spec(&t, table, 300 * MIB), &img).unwrap();
    let (data, esp) = (summary.layout.data, summary.layout.esp);
    assert_eq!(
        sha256_range(&img, esp.offset, esp.len),
        sha256_range(&stick.0, esp.offset, esp.len)
    );
    assert_eq!(sha256_range(&img, 0, MIB), sha256_range(&stick.0, 0, MIB));

    // Update to a new payload: the ESP changes, the data partition does not.
    let data_before = sha256_range(&stick.0, data.offset, data.len);
    let esp_before = sha256_range(&stick.0, esp.offset, esp.len);
    let t2 = trees("2.0");
    let bios = with_bios_boot_code(&t2.esp);
    let plan = device::plan_update(
        &stick.0,
        &t2.esp,
        "HIPERISO",
        "disk-test-seed",
        1_800_000_000,
        true,
    )
    .unwrap();
    let text = plan.to_string();
    assert!(
        text.contains("hiperiso 1.0") && text.contains("left untouched"),
        "{text}"
    );
    device::execute_update(&plan, |_| {}).unwrap();
    assert_eq!(sha256_range(&stick.0, data.offset, data.len), data_before);
    assert_ne!(sha256_range(&stick.0, esp.offset, esp.len), esp_before);
    // The new payload's BIOS boot code went into the MBR and the gap.
    let disk = fs::read(&stick.0).unwrap();
    assert_eq!(&disk[..440], &bios.boot_code(table)[..]);
    let core = bios.core_image(table);
    let at = (BiosBoot::core_lba(table) * 512) as usize;
    assert_eq!(&disk[at..at + core.len()], &core[..]);
    assert!(plan.to_string().contains("GRUB's BIOS core image"));
    if table == TableKind::Gpt {
        let v = run(Command::new("sgdisk").arg("-v").arg(&stick.0));
        assert!(v.contains("No problems found"), "{v}");
    }
    let text = inspect::inspect_path(&stick.0).unwrap().to_string();
    assert!(text.contains("legacy BIOS: GRUB boot.img"), "{text}");
    fsck_partitions(&stick.partition(1), &stick.partition(2));
    let text = inspect::inspect_path(&stick.0).unwrap().to_string();
    assert!(text.contains("hiperiso 2.0"), "{text}");

    // An update interrupted after blanking the ESP's boot sector is
    // recognised and completed by a rerun.
    {
        let mut dev = fs::File::options().write(true).open(&stick.0).unwrap();
        dev.seek(SeekFrom::Start(esp.offset)).unwrap();
        dev.write_all(&[0u8; 512]).unwrap();
        dev.sync_all().unwrap();
    }
    let plan = device::plan_update(
        &stick.0,
        &t2.esp,
        "HIPERISO",
        "disk-test-seed",
        1_800_000_000,
        true,
    )
    .unwrap();
    assert!(plan.to_string().contains("interrupted"));
    device::execute_update(&plan, |_| {}).unwrap();
    assert_eq!(sha256_range(&stick.0, data.offset, data.len), data_before);
    run(Command::new("fsck.fat").arg("-n").arg(stick.partition(2)));

    // A payload larger than the ESP is refused, naming the shortfall.
    fs::write(
        t2.esp.join("EFI/hiperiso/big"),
        vec![3u8; 40 * MIB as usize],
    )
    .unwrap();
    let err = device::plan_update(&stick.0, &t2.esp, "HIPERISO", "disk-test-seed", 1, true)
        .err()
        .unwrap();
    assert!(matches!(err, DeviceError::EspTooSmall { .. }), "{err}");

    // A partition is not a disk.
    let err = device::plan_install(&stick.partition(1), &spec(&t, table, 0), true, false)
        .err()
        .unwrap();
    assert!(matches!(err, DeviceError::IsPartition { .. }), "{err}");
}

#[test]
fn install_and_update_gpt_on_a_loop_device() {
    install_and_update(TableKind::Gpt);
}

#[test]
fn install_and_update_mbr_on_a_loop_device() {
    install_and_update(TableKind::Mbr);
}

#[test]
fn refuses_small_mounted_swapped_and_foreign_devices() {
    if !hiperiso_prereq::root() {
        return;
    }
    let t = trees("1.0");

    let small = t.root.join("small.raw");
    fs::File::create(&small).unwrap().set_len(24 * MIB).unwrap();
    let small = Loop::new(&small, None);
    let err = device::plan_install(&small.0, &spec(&t, TableKind::Gpt, 0), true, false)
        .err()
        .unwrap();
    assert!(matches!(err, DeviceError::TooSmall { .. }), "{err}");
    assert!(
        err.to_string().contains("MiB more") || format!("{:?}", err).contains("short"),
        "{err}"
    );

    // Mounted (ext4: the filesystem this kernel certainly has).
    let mounted = t.root.join("mounted.raw");
    fs::File::create(&mounted)
        .unwrap()
        .set_len(128 * MIB)
        .unwrap();
    let mounted = Loop::new(&mounted, None);
    run(Command::new("mkfs.ext4").arg("-q").arg(&mounted.0));
    let mnt = t.root.join("mnt");
    fs::create_dir(&mnt).unwrap();
    run(Command::new("mount").arg(&mounted.0).arg(&mnt));
    let err = device::plan_install(&mounted.0, &spec(&t, TableKind::Gpt, 0), true, false).err();
    let err_update = device::plan_update(&mounted.0, &t.esp, "HIPERISO", "s", 1, true).err();
    run(Command::new("umount").arg(&mnt));
    let err = err.unwrap();
    assert!(
        matches!(err, DeviceError::InUse { .. }) && err.to_string().contains("mounted on"),
        "{err}"
    );
    assert!(matches!(err_update, Some(DeviceError::InUse { .. })));

    // Not hiperiso: an ext4 disk, and a GPT with someone else's partitions.
    let err = device::plan_update(&mounted.0, &t.esp, "HIPERISO", "s", 1, true)
        .err()
        .unwrap();
    assert!(
        matches!(
            err,
            DeviceError::NotHiperiso {
                source: device::NotAStick::NoTable,
                ..
            }
        ),
        "{err}"
    );
    run(Command::new("sgdisk")
        .args(["-n", "1:2048:+64M", "-t", "1:8300"])
        .arg(&mounted.0));
    let err = device::plan_update(&mounted.0, &t.esp, "HIPERISO", "s", 1, true)
        .err()
        .unwrap();
    let chain = hiperiso_stick::error_chain(&err);
    assert!(
        chain.contains("gpt partition table with 1 partition(s)"),
        "{chain}"
    );

    // A mounted partition (not the whole disk) is refused too.
    let parted = t.root.join("parted.raw");
    fs::File::create(&parted)
        .unwrap()
        .set_len(128 * MIB)
        .unwrap();
    let parted = Loop::new(&parted, None);
    run(Command::new("sgdisk")
        .args(["-n", "1:2048:+64M", "-t", "1:8300"])
        .arg(&parted.0));
    run(Command::new("partx").arg("-a").arg(&parted.0));
    run(Command::new("mkfs.ext4").arg("-q").arg(parted.partition(1)));
    run(Command::new("mount").arg(parted.partition(1)).arg(&mnt));
    let err = device::plan_install(&parted.0, &spec(&t, TableKind::Gpt, 0), true, false).err();
    run(Command::new("umount").arg(&mnt));
    let err = err.unwrap();
    assert!(
        err.to_string()
            .contains(&format!("{} is mounted on", parted.partition(1).display())),
        "{err}"
    );

    // The disk holding `/` (only planned, never written: the refusal comes first).
    let root = run(Command::new("findmnt").args(["-n", "-o", "SOURCE", "/"]));
    let root = PathBuf::from(root.trim());
    let root_disk = fs::canonicalize(&root).ok().and_then(|p| {
        let name = p.file_name()?.to_string_lossy().into_owned();
        let sys = fs::canonicalize(format!("/sys/class/block/{name}")).ok()?;
        let disk = if sys.join("partition").exists() {
            sys.parent()?.file_name()?.to_string_lossy().into_owned()
        } else {
            name
        };
        Some(PathBuf::from("/dev").join(disk))
    });
    let root_disk = root_disk.filter(|d| d.exists());
    if hiperiso_prereq::check(
        root_disk.is_some(),
        &format!("/ on a block device (here it is {})", root.display()),
        "run the tests on a machine or VM, not in a container, for the system-disk refusal",
    ) {
        let disk = root_disk.unwrap();
        let err = device::plan_install(&disk, &spec(&t, TableKind::Gpt, 0), true, false)
            .err()
            .unwrap();
        assert!(matches!(err, DeviceError::SystemDisk { .. }), "{err}");
    }

    // Swap.
    let swap = t.root.join("swap.raw");
    fs::File::create(&swap).unwrap().set_len(128 * MIB).unwrap();
    let swap = Loop::new(&swap, None);
    run(Command::new("mkswap").arg(&swap.0));
    let swapped = Command::new("swapon")
        .arg(&swap.0)
        .status()
        .is_ok_and(|s| s.success());
    if hiperiso_prereq::check(
        swapped,
        "swapon",
        "run the tests as root outside a container for the swap refusal",
    ) {
        let err = device::plan_install(&swap.0, &spec(&t, TableKind::Gpt, 0), true, false).err();
        run(Command::new("swapoff").arg(&swap.0));
        let err = err.unwrap();
        assert!(err.to_string().contains("swap"), "{err}");
    }
}

#[test]
fn odd_sized_gpt_image_verifies() {
    let t = trees("1.0");
    let out = t.root.join("odd.img");
    let summary =
        image::write_image(&spec(&t, TableKind::Gpt, 100 * MIB + 7 * 512 + 100), &out).unwrap();
    assert_eq!(fs::metadata(&out).unwrap().len(), 100 * MIB + 7 * 512);
    assert_eq!(summary.layout.esp.offset % MIB, 0);
    let report = run(Command::new("sgdisk").arg("-v").arg(&out));
    assert!(report.contains("No problems found"), "{report}");
}

#[test]
fn recognise_needs_the_marker_or_a_hiperiso_data_partition() {
    let t = trees("1.0");
    let out = t.root.join("r.img");
    let summary = image::write_image(&spec(&t, TableKind::Mbr, 128 * MIB), &out).unwrap();
    let esp = summary.layout.esp;
    let mut file = fs::File::options()
        .read(true)
        .write(true)
        .open(&out)
        .unwrap();
    let (table, _, _, marker) = device::recognise(&mut file, 128 * MIB).unwrap();
    assert_eq!(table, TableKind::Mbr);
    assert_eq!(marker.unwrap().version(), Some("1.0"));

    // Without build.json the stick is not recognised.
    let mut other = trees("1.0");
    fs::remove_file(other.esp.join("EFI/hiperiso/build.json")).unwrap();
    fs::remove_dir_all(other.data.join("hiperiso")).unwrap();
    other.root = other.root.join("x");
    fs::create_dir_all(&other.root).unwrap();
    let foreign = other.root.join("f.img");
    image::write_image(&spec(&other, TableKind::Mbr, 128 * MIB), &foreign).unwrap();
    let mut foreign_file = fs::File::options()
        .read(true)
        .write(true)
        .open(&foreign)
        .unwrap();
    let err = device::recognise(&mut foreign_file, 128 * MIB).unwrap_err();
    assert!(err.to_string().contains("build.json"), "{err}");

    // A blank ESP (interrupted update) is accepted only beside our data partition.
    for f in [&mut file, &mut foreign_file] {
        f.seek(SeekFrom::Start(esp.offset)).unwrap();
        f.write_all(&[0u8; 512]).unwrap();
    }
    assert!(device::recognise(&mut file, 128 * MIB).unwrap().3.is_none());
    let err = device::recognise(&mut foreign_file, 128 * MIB).unwrap_err();
    assert!(err.to_string().contains("blank"), "{err}");
}

/// A GRUB-shaped BIOS pair (boot.img's jump and signature, core.img's
/// blocklist) in the ESP tree, as payload/grub.rs lays out the real one.
fn with_bios_boot_code(esp: &Path) -> BiosBoot {
    use hiperiso_stick::paths::esp::{BIOS_BOOT_IMG, BIOS_CORE_IMG};
    let mut boot = vec![0x90u8; 512];
    boot[..3].copy_from_slice(&[0xEB, 0x63, 0x90]);
    boot[510..].copy_from_slice(&[0x55, 0xAA]);
    let mut core = vec![0x42u8; 100 * 512 + 7];
    core[500..508].copy_from_slice(&2u64.to_le_bytes());
    core[508..510].copy_from_slice(&100u16.to_le_bytes());
    fs::create_dir_all(esp.join(BIOS_CORE_IMG).parent().unwrap()).unwrap();
    fs::write(esp.join(BIOS_BOOT_IMG), &boot).unwrap();
    fs::write(esp.join(BIOS_CORE_IMG), &core).unwrap();
    BiosBoot::new(&boot, core).unwrap()
}
