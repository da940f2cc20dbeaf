//! The ESP payload for end-to-end tests, assembled from the host's and
//! Debian's parts: Debian's kernel (`linux_vm::debian_linux`), an
//! initramfs with the static `hiperiso-init` as `/init`, the host's
//! qemu-system-x86 with its libraries and data, SeaBIOS and OVMF, and a
//! `grub-mkimage` BOOTX64.EFI with `overlays/esp` (grub.cfg, trace events).
//!
//! It stands in for `hiperiso-build --profile debian image` where that
//! profile is not available; both give the same ESP layout (DESIGN.md §4).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

use crate::linux_vm::{LinuxKit, debian_linux, module_load_order};
use crate::workspace_root;

/// Modules the stick's kernel needs in the test VM: the USB stick on xHCI,
/// KVM, and the data partition's file system (dependencies are added).
const MODULES: &[&str] = &[
    "xhci_pci",
    "usb_storage",
    "uas",
    "sd_mod",
    "kvm_amd",
    "kvm_intel",
    "exfat",
    "vfat",
    "nls_utf8",
    "nls_cp437",
    "nls_iso8859_1",
    "nls_ascii",
    // The viewer's keyboard and mouse (the PS/2 keyboard driver is built in).
    "evdev",
    "psmouse",
    "usbhid",
    "hid_generic",
];

/// Where Debian's QEMU keeps its loadable modules (TCG among them).
const QEMU_MODULE_DIR: &str = "/usr/lib/x86_64-linux-gnu/qemu";

/// GRUB modules embedded in BOOTX64.EFI (everything grub.cfg uses).
const GRUB_MODULES: &[&str] = &[
    "part_gpt",
    "part_msdos",
    "fat",
    "exfat",
    "normal",
    "linux",
    "search",
    "search_label",
    "search_fs_uuid",
    "regexp",
    "probe",
    "loadenv",
    "test",
    "echo",
    "serial",
    "terminal",
    "gfxterm",
    "all_video",
    "font",
    "configfile",
    "halt",
    "reboot",
    "sleep",
    "efifwsetup",
];

fn run(cmd: &mut Command) -> Result<String> {
    let output = cmd
        .output()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !output.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// The cargo target directory of this workspace.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

/// Builds the runtime's binaries statically, as the stick ships them, into
/// `target/hiperiso-static` (the directory the debian profile uses too);
/// returns the directory holding `hiperiso-init` and `hiperiso-log`.
pub fn static_runtime() -> Result<PathBuf> {
    let target = target_dir().join("hiperiso-static");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    run(Command::new(cargo)
        .current_dir(workspace_root())
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .args(["build", "--release", "-p", "hiperiso-runtime", "--bins"])
        .args(["--target", "x86_64-unknown-linux-gnu", "--target-dir"])
        .arg(&target)
        .stdout(Stdio::null()))?;
    Ok(target.join("x86_64-unknown-linux-gnu/release"))
}

fn copy_into_root(src: &Path, root: &Path) -> Result<()> {
    let dest = root.join(src.strip_prefix("/").unwrap_or(src));
    fs::create_dir_all(dest.parent().context("a parent")?)?;
    run(Command::new("cp").arg("-a").arg(src).arg(&dest))?;
    Ok(())
}

/// Packs the initramfs (zstd newc cpio) the stick boots: hiperiso-init as
/// `/init`, QEMU with its libraries and data, SeaBIOS, OVMF, trace event
/// files and the modules.
pub fn build_initramfs(kit: &LinuxKit, init: &Path, out: &Path) -> Result<()> {
    let staging = tempfile::tempdir()?;
    let root = staging.path();
    for dir in ["proc", "sys", "dev", "run", "mnt", "tmp"] {
        fs::create_dir_all(root.join(dir))?;
    }
    fs::copy(init, root.join("init"))?;
    fs::set_permissions(root.join("init"), fs::Permissions::from_mode(0o755))?;
    let qemu = Path::new("/usr/bin/qemu-system-x86_64");
    copy_into_root(qemu, root)?;
    let ldd = run(Command::new("ldd").arg(qemu))?;
    for lib in ldd.split_whitespace().filter(|w| w.starts_with('/')) {
        let dest = root.join(lib.trim_start_matches('/'));
        fs::create_dir_all(dest.parent().context("a parent")?)?;
        fs::copy(lib, &dest).with_context(|| format!("copying {lib}"))?;
    }
    // Debian builds TCG as a loadable module: without it the fallback fails
    // with "could not load module for type 'tcg-accel-ops'".
    let qemu_modules = Path::new(QEMU_MODULE_DIR);
    fs::create_dir_all(root.join(QEMU_MODULE_DIR.trim_start_matches('/')))?;
    for entry in fs::read_dir(qemu_modules)? {
        let path = entry?.path();
        let is_accel = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("accel-"));
        if is_accel {
            copy_into_root(&path, root)?;
        }
    }
    copy_into_root(Path::new("/usr/share/qemu"), root)?;
    copy_into_root(Path::new("/usr/share/seabios"), root)?;
    fs::create_dir_all(root.join("usr/share/OVMF"))?;
    for fd in ["OVMF_CODE_4M.fd", "OVMF_VARS_4M.fd"] {
        fs::copy(
            Path::new("/usr/share/OVMF").join(fd),
            root.join("usr/share/OVMF").join(fd),
        )?;
    }
    let trace = root.join("usr/share/hiperiso/trace");
    fs::create_dir_all(&trace)?;
    for entry in fs::read_dir(workspace_root().join("overlays/esp/EFI/hiperiso/trace"))? {
        let path = entry?.path();
        fs::copy(&path, trace.join(path.file_name().context("a name")?))?;
    }
    let release = kit.modules.file_name().context("a kernel release")?;
    let dest_modules = root.join("lib/modules").join(release);
    for module in module_load_order(&kit.modules, MODULES)? {
        let dest = dest_modules.join(module.strip_prefix(&kit.modules)?);
        fs::create_dir_all(dest.parent().context("a parent")?)?;
        fs::copy(&module, dest)?;
    }
    let cpio = Command::new("sh")
        .arg("-c")
        .arg("find . | LC_ALL=C sort | cpio -o -H newc --quiet | zstd -q -6 -T0")
        .current_dir(root)
        .output()
        .context("running cpio | zstd")?;
    if !cpio.status.success() {
        bail!(
            "cpio | zstd failed: {}",
            String::from_utf8_lossy(&cpio.stderr)
        );
    }
    fs::write(out, cpio.stdout)?;
    Ok(())
}

/// Writes the whole ESP tree into `esp` (which must not exist).
pub fn build_esp(esp: &Path) -> Result<()> {
    let kit = debian_linux()?;
    let runtime = static_runtime()?;
    run(Command::new("cp")
        .arg("-a")
        .arg(workspace_root().join("overlays/esp"))
        .arg(esp))?;
    let payload = esp.join("EFI/hiperiso");
    fs::create_dir_all(&payload)?;
    fs::copy(&kit.vmlinuz, payload.join("vmlinuz"))?;
    build_initramfs(
        &kit,
        &runtime.join("hiperiso-init"),
        &payload.join("initramfs.cpio.zst"),
    )?;
    fs::copy(runtime.join("hiperiso-log"), payload.join("hiperiso-log"))?;
    run(Command::new("grub-mkimage")
        .args(["-O", "x86_64-efi", "-p", "/EFI/BOOT", "-o"])
        .arg(esp.join("EFI/BOOT/BOOTX64.EFI"))
        .args(GRUB_MODULES))?;
    Ok(())
}
