//! The debian profile against the real archive: resolve a fresh lock in a
//! scratch place (the committed lock stays the reproducibility record),
//! fetch and unpack the packages, then
//! - boot Debian's kernel with our initramfs under QEMU (TCG, serial
//!   console); a test init loads the kernel modules and runs the packaged
//!   `qemu-system-x86_64 --version`, proving the library closure;
//! - start grub-mkimage's BOOTX64.EFI under the packaged OVMF and read its
//!   output on the serial console;
//! - check the initramfs cpio is byte-identical across runs and that
//!   `cpio -t` lists it.
//!
//! Needs network access to a Debian mirror (the manifest's, the
//! environment's or the host's apt sources) on the first run; later runs
//! use the cache.

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use hiperiso_build::debian::closure;
use hiperiso_build::payload::cpio::{Content, Node};
use hiperiso_build::payload::esp::{self as payload, PayloadOptions};
use hiperiso_build::payload::grub::{Platform, grub_mkimage};
use hiperiso_build::payload::initramfs::Compression;
use hiperiso_build::project::Project;
use hiperiso_build::settings::Settings;
use hiperiso_stick::paths::initramfs::KERNEL_CONFIG;
use hiperiso_stick::qemu::{Accel, Drive, Firmware, Machine, QemuCommand};
use hiperiso_tests::workspace_root;

struct Prepared {
    tree: PathBuf,
}

fn prepared() -> &'static Prepared {
    static PREPARED: OnceLock<Prepared> = OnceLock::new();
    PREPARED.get_or_init(|| {
        let mut settings = Settings::new(workspace_root().join("hiperiso.toml"));
        settings.profile = Some("debian".into());
        let project = Project::load(settings).expect("loading the manifest");
        let scratch_lock = std::env::temp_dir().join("hiperiso-debian-boot-test.lock");
        let prepared = closure::prepare(&project, closure::LockMode::Scratch(&scratch_lock))
            .unwrap_or_else(|e| panic!("preparing the debian tree: {e:#}"));
        Prepared {
            tree: prepared.tree,
        }
    })
}

/// Runs QEMU until `done` appears on the serial console (stdout) or the
/// timeout passes; returns everything it printed.
fn run_qemu(qemu: &QemuCommand, done: &str, timeout: Duration) -> String {
    let mut child = qemu
        .command()
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("qemu-system-x86_64 (apt install qemu-system-x86)");
    let stdout = child.stdout.take().unwrap();
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if sender.send(line).is_err() {
                break;
            }
        }
    });
    let start = Instant::now();
    let mut output = String::new();
    while start.elapsed() < timeout {
        match receiver.recv_timeout(Duration::from_millis(200)) {
            Ok(line) => {
                output.push_str(&line);
                output.push('\n');
                if line.contains(done) {
                    break;
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                if child.try_wait().ok().flatten().is_some() {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    // Give a powering-off guest a moment, then make sure QEMU is gone.
    for _ in 0..50 {
        if child.try_wait().ok().flatten().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
    output
}

#[test]
fn kernel_boots_our_initramfs_and_runs_packaged_qemu() {
    let tree = &prepared().tree;
    let work = tempfile::tempdir().unwrap();
    let init = workspace_root().join("tests/debian/test-init.sh");
    // overlays/initramfs replaces a file of the initramfs: its archive goes
    // after the first, in the same file, and the kernel unpacks it last.
    let overlays = work.path().join("overlays");
    fs::create_dir_all(overlays.join("initramfs/etc/hiperiso")).unwrap();
    fs::write(
        overlays.join("initramfs/etc/hiperiso/overlay-test"),
        "from the overlay\n",
    )
    .unwrap();
    let options = PayloadOptions {
        compression: Compression::Zstd,
        source_date_epoch: 1_700_000_000,
        overlays: Some(overlays),
        ..PayloadOptions::new(tree, &init)
    };
    let kernel = payload::kernel_version(tree).unwrap();
    let (initramfs, modules) = payload::initramfs_tree(&options, &kernel).unwrap();
    assert!(
        modules.iter().any(|m| m.ends_with("/kvm-amd.ko")),
        "{modules:?}"
    );
    let kvm = modules.iter().position(|m| m.ends_with("/kvm.ko")).unwrap();
    let kvm_amd = modules
        .iter()
        .position(|m| m.ends_with("/kvm-amd.ko"))
        .unwrap();
    assert!(kvm < kvm_amd, "dependencies load first: {modules:?}");

    // Deterministic cpio, listed correctly by cpio(1).
    let mut first = Vec::new();
    let mut second = Vec::new();
    initramfs.write_cpio(1_700_000_000, &mut first).unwrap();
    let (again, _) = payload::initramfs_tree(&options, &kernel).unwrap();
    again.write_cpio(1_700_000_000, &mut second).unwrap();
    assert!(first == second, "two cpio runs differ");
    let cpio_path = work.path().join("initramfs.cpio");
    fs::write(&cpio_path, &first).unwrap();
    let listing = Command::new("cpio")
        .args(["-t", "--quiet", "-F"])
        .arg(&cpio_path)
        .output()
        .expect("cpio");
    assert!(listing.status.success());
    let listed: Vec<String> = String::from_utf8_lossy(&listing.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    let expected: Vec<String> = initramfs
        .tree()
        .iter()
        .map(|(path, _)| path.clone())
        .collect();
    assert_eq!(
        listed, expected,
        "cpio -t lists every entry in sorted order"
    );
    for needed in [
        "init",
        "dev/console",
        "usr/bin/qemu-system-x86_64",
        "usr/share/seabios/bios-256k.bin",
        "etc/hiperiso/modules.load",
    ] {
        assert!(
            listed.iter().any(|p| p == needed),
            "{needed} missing from the initramfs"
        );
    }

    // Debian's kernel has no /proc/config.gz: the package's configuration
    // ships gzipped for hw/host_kernel_config.gz.
    let shipped = match initramfs.tree().get(KERNEL_CONFIG) {
        Some(Node::File {
            content: Content::Bytes(gz),
            ..
        }) => hiperiso_tests::gunzip(gz),
        other => panic!("{KERNEL_CONFIG} in the initramfs: {other:?}"),
    };
    assert_eq!(
        shipped,
        fs::read_to_string(tree.join(format!("boot/config-{kernel}"))).unwrap()
    );

    let mut initramfs = initramfs;
    initramfs
        .tree_mut()
        .insert(
            "etc/hiperiso/overlay-test",
            Node::File {
                content: Content::Bytes(b"from the first archive\n".to_vec()),
                mode: 0o644,
            },
        )
        .unwrap();
    let mut initrd_bytes = Vec::new();
    initramfs
        .write(1_700_000_000, Compression::Zstd, &mut initrd_bytes)
        .unwrap();
    initrd_bytes.extend(payload::overlay_initramfs(&options).unwrap().unwrap());
    let initrd = work.path().join("initramfs.cpio.zst");
    fs::write(&initrd, initrd_bytes).unwrap();
    let vmlinuz = tree.join(format!("boot/vmlinuz-{kernel}"));
    let mut qemu = QemuCommand::new("qemu-system-x86_64");
    qemu.accel(Accel::Tcg)
        .cpu("EPYC", "")
        .memory_mb(1536)
        .smp(1)
        .nographic()
        .no_reboot()
        .direct_kernel(&vmlinuz, &initrd, "console=ttyS0 panic=-1 loglevel=4");
    let output = run_qemu(&qemu, "HIPERISO-TEST-DONE", Duration::from_secs(300));
    assert!(
        output.contains("HIPERISO-TEST-INIT-RAN"),
        "init did not run:\n{output}"
    );
    assert!(
        output.contains("QEMU emulator version 7.2"),
        "packaged QEMU did not run:\n{output}"
    );
    assert!(output.contains("HIPERISO-QEMU-RAN"), "{output}");
    assert!(
        output.contains("HIPERISO-OVERLAY from the overlay"),
        "the second archive did not replace the first's file:\n{output}"
    );
    // Every module loads, except the other CPU vendor's KVM module.
    for line in output
        .lines()
        .filter(|l| l.contains("HIPERISO-INSMOD-FAILED"))
    {
        assert!(
            line.contains("kvm-intel.ko"),
            "unexpected module failure: {line}\n{output}"
        );
    }
    assert!(
        output.contains("HIPERISO-DEV-KVM present"),
        "kvm_amd did not create /dev/kvm:\n{output}"
    );
}

#[test]
fn grub_efi_image_starts_under_packaged_ovmf() {
    let tree = &prepared().tree;
    let work = tempfile::tempdir().unwrap();
    let esp = work.path().join("esp");
    let boot = esp.join("EFI/BOOT");
    fs::create_dir_all(&boot).unwrap();
    let modules = Platform::Efi.modules();
    grub_mkimage(tree, Platform::Efi, &modules, &boot.join("BOOTX64.EFI")).unwrap();
    // grub-mkimage is reproducible (DESIGN §8): a second run is identical.
    grub_mkimage(
        tree,
        Platform::Efi,
        &modules,
        &work.path().join("again.efi"),
    )
    .unwrap();
    assert_eq!(
        fs::read(boot.join("BOOTX64.EFI")).unwrap(),
        fs::read(work.path().join("again.efi")).unwrap()
    );
    fs::write(
        boot.join("grub.cfg"),
        "serial --unit=0 --speed=115200\nterminal_output serial console\n\
         echo \"HIPERISO-GRUB-PREFIX=$prefix\"\nls\necho HIPERISO-GRUB-OK\nhalt\n",
    )
    .unwrap();
    let vars = work.path().join("vars.fd");
    fs::copy(tree.join("usr/share/OVMF/OVMF_VARS_4M.fd"), &vars).unwrap();
    let code = tree.join("usr/share/OVMF/OVMF_CODE_4M.fd");
    let mut qemu = QemuCommand::new("qemu-system-x86_64");
    qemu.accel(Accel::Tcg)
        .memory_mb(512)
        .nographic()
        .no_reboot()
        .machine(&Machine::q35())
        .firmware(&Firmware::Uefi {
            code,
            vars,
            secure: false,
        })
        .drive(
            &Drive::new()
                .opt("format", "raw")
                .opt("file", &format!("fat:rw:{}", esp.display())),
        )
        .args(["-net", "none"]);
    let output = run_qemu(&qemu, "HIPERISO-GRUB-OK", Duration::from_secs(180));
    assert!(
        output.contains("HIPERISO-GRUB-PREFIX=") && output.contains("/EFI/BOOT"),
        "GRUB's prefix:\n{output}"
    );
    assert!(
        output.contains("HIPERISO-GRUB-OK"),
        "GRUB did not run grub.cfg:\n{output}"
    );
}
