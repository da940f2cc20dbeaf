use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use hiperiso_installer::exfat::ExfatReader;
use hiperiso_installer::slice::Slice;
use hiperiso_runtime::grubenv;

use super::*;
use crate::vm::stick::data_partition;
use hiperiso_installer::exfat::{ExfatOptions, format};

/// A GPT image whose first partition is an exFAT data partition with
/// `ISOs/` and `hiperiso/`, made with the installer's own writers.
fn stick(dir: &Path) -> PathBuf {
    let tree = dir.join("tree");
    fs::create_dir_all(tree.join("ISOs")).unwrap();
    fs::create_dir_all(tree.join("hiperiso")).unwrap();
    fs::write(tree.join("ISOs/README"), "Put ISO files here.\n").unwrap();
    let image = dir.join("stick.img");
    let layout_size = 64u64 << 20;
    let file = File::create(&image).unwrap();
    file.set_len(layout_size).unwrap();
    drop(file);
    let status = Command::new("sgdisk")
        .args([
            "-n",
            "1:2048:+40M",
            "-t",
            "1:0700",
            "-n",
            "2:0:0",
            "-t",
            "2:ef00",
        ])
        .arg(&image)
        .output()
        .unwrap();
    assert!(status.status.success(), "{status:?}");
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&image)
        .unwrap();
    let mut data = Slice::new(&mut file, 2048 * 512, 40 << 20);
    let options = ExfatOptions {
        label: "HIPERISO".into(),
        volume_serial: 0x1234_5678,
        timestamp: 1_700_000_000,
    };
    format(&mut data, 40 << 20, Some(&tree), &options).unwrap();
    image
}

#[test]
fn isos_and_the_boot_choice_land_on_the_data_partition() {
    let dir = tempfile::tempdir().unwrap();
    let image = stick(dir.path());
    let iso = dir.path().join("Test.iso");
    fs::write(&iso, vec![0x5Au8; 100_000]).unwrap();
    let mut stick = StickImage::open(&image).unwrap();
    assert_eq!(stick.add_iso(&iso).unwrap(), "Test.iso");
    stick.boot_once("test.iso").unwrap();
    assert_eq!(stick.isos().unwrap(), ["Test.iso"]);
    let err = stick.boot_once("other.iso").unwrap_err();
    assert!(err.to_string().contains("there: Test.iso"), "{err}");
    let err = stick
        .add_iso(&dir.path().join("tree/ISOs/README"))
        .unwrap_err();
    assert!(matches!(err, RunError::NotAnIso { .. }), "{err}");
    drop(stick);

    let mut file = File::open(&image).unwrap();
    let partition = data_partition(&mut file, &image).unwrap();
    let mut reader = ExfatReader::open(Slice::new(file, partition.offset, partition.len)).unwrap();
    let mut copied = Vec::new();
    reader.read_file("ISOs/Test.iso", &mut copied).unwrap();
    assert_eq!(copied, vec![0x5Au8; 100_000]);
    let mut block = Vec::new();
    reader.read_file(GRUBENV_PATH, &mut block).unwrap();
    assert_eq!(block.len(), grubenv::BLOCK_SIZE);
    let vars = grubenv::parse(&block);
    assert!(vars.contains(&("hiperiso_timeout".into(), "0".into())));
    assert!(vars.contains(&("hiperiso_default".into(), "Test.iso".into())));
}

#[test]
fn the_working_copy_leaves_the_original_alone() {
    let dir = tempfile::tempdir().unwrap();
    let image = stick(dir.path());
    let before = fs::read(&image).unwrap();
    let copy = dir.path().join("copy.img");
    working_copy(&image, &copy).unwrap();
    let mut stick = StickImage::open(&copy).unwrap();
    stick.put_bytes("hiperiso/x", b"x", 0).unwrap();
    drop(stick);
    assert_eq!(fs::read(&image).unwrap(), before);
    assert_ne!(fs::read(&copy).unwrap(), before);
}

#[test]
fn last_image_round_trips_and_explains_its_absence() {
    let dir = tempfile::tempdir().unwrap();
    let err = last_image(dir.path()).unwrap_err();
    assert!(err.to_string().contains("hiperiso-build image"), "{err}");
    let image = dir.path().join("a,b.img");
    fs::write(&image, b"x").unwrap();
    record_last_image(dir.path(), &image).unwrap();
    assert_eq!(last_image(dir.path()).unwrap(), image);
}

#[test]
fn the_vm_is_a_pc_with_a_usb_stick() {
    let vm = Vm {
        qemu: qemu_program(),
        image: "/images/a,b.img".into(),
        ram_mb: 4096,
        cpus: 2,
        accel: Accel::tcg_with_svm(),
        console: Console::File {
            log: "/tmp/console.log".into(),
        },
        ovmf_code: "/usr/share/OVMF/OVMF_CODE_4M.fd".into(),
        ovmf_vars: "/tmp/vars.fd".into(),
        qmp: Some("/tmp/qmp.sock".into()),
        snapshot: false,
    };
    let cmd = vm.command();
    let args: Vec<String> = cmd
        .get_args()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let line = args.join(" ");
    assert!(line.contains("-accel tcg -cpu EPYC"), "{line}");
    assert!(line.contains("-device qemu-xhci,id=xhci"), "{line}");
    assert!(
        line.contains("usb-storage,bus=xhci.0,drive=stick"),
        "{line}"
    );
    assert!(line.contains("file=/images/a,,b.img"), "{line}");
    assert!(
        line.contains("if=pflash,format=raw,unit=0,readonly=on"),
        "{line}"
    );
    assert!(line.contains("-serial chardev:console"), "{line}");
}

/// A stand-in for QEMU: `behaviour` runs after the console file is found.
fn fake_qemu(dir: &Path, behaviour: &str) -> String {
    let path = dir.join("fake-qemu");
    fs::write(
        &path,
        format!(
            "#!/bin/sh\nfor a in \"$@\"; do case \"$a\" in file,id=console,path=*) \
             console=\"${{a#file,id=console,path=}}\";; esac; done\n{behaviour}\n"
        ),
    )
    .unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    path.display().to_string()
}

fn probe_with(dir: &Path, behaviour: &str) -> Result<(), String> {
    let vars = dir.join("vars.fd");
    fs::write(&vars, b"vars").unwrap();
    let vm = Vm {
        qemu: fake_qemu(dir, behaviour),
        image: dir.join("stick.img"),
        ram_mb: 512,
        cpus: 2,
        accel: Accel::tcg_with_svm(),
        console: Console::Live {
            log: dir.join("console.log"),
        },
        ovmf_code: dir.join("code.fd"),
        ovmf_vars: vars,
        qmp: None,
        snapshot: false,
    };
    qemu::probe_vm(&vm, dir)
}

/// A host whose KVM runs a plain `-machine pc` VM but aborts `-cpu host`:
/// the probe runs the real VM, so it sees the abort and names it.
#[test]
fn the_probe_runs_the_real_vm_and_names_why_kvm_fails() {
    let dir = tempfile::tempdir().unwrap();
    let half_kvm = "case \"$*\" in *'-cpu host'*) \
        echo 'qemu-system-x86_64: error: failed to set MSR 0x10a to 0x69' >&2; kill -ABRT $$;; esac\n\
        echo BdsDxe > \"$console\"; sleep 30";
    let reason = probe_with(dir.path(), half_kvm).unwrap_err();
    assert!(
        reason.contains("failed to set MSR 0x10a to 0x69"),
        "{reason}"
    );
    assert!(reason.contains("signal: 6"), "{reason}");

    let dir = tempfile::tempdir().unwrap();
    let working = "case \"$*\" in *'-accel kvm -cpu host'*'snapshot=on'*) \
        echo 'BdsDxe: loading Boot0001' > \"$console\"; sleep 30;; esac; exit 1";
    probe_with(dir.path(), working).expect("a VM that starts under KVM passes");

    let dir = tempfile::tempdir().unwrap();
    let reason = probe_with(dir.path(), "sleep 30").unwrap_err();
    assert!(reason.contains("made no progress"), "{reason}");
}
