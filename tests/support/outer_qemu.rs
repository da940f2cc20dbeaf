//! The QEMU that runs the outer (test) VM when the stick's nested KVM runs
//! a UEFI guest.
//!
//! QEMU's TCG, emulating SVM for the stick's KVM, aborts the whole outer VM
//! (`tcg_handle_interrupt: assertion failed: (qemu_mutex_iothread_locked())`;
//! measured with Debian's 7.2, 10.0 and 11.1) when a nested guest writes
//! CR8 while KVM has a virtual interrupt pending, which OVMF does on every
//! interrupt return: `helper_write_crN` raises the interrupt without the
//! big QEMU lock. `outer-qemu.patch` takes the lock there, as the lines
//! above it already do for the APIC, and lets the dfsg tarball (which has
//! no firmware blobs) configure. The result is a TCG-only
//! `qemu-system-x86_64` with the few devices the outer VM uses, built from
//! the manifest's pinned QEMU source (~4 min on 2 cores) and cached in
//! `target/hiperiso-outer-qemu/`. Firmware comes from the host's
//! qemu-system-data, SeaBIOS and iPXE packages.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context as _, Result, bail};
use hiperiso_build::context::Context;
use hiperiso_build::sources;
use sha2::{Digest, Sha256};

use crate::stick::target_dir;
use crate::workspace_root;

const PATCH: &str = include_str!("outer-qemu.patch");

/// The outer VM's devices (`-machine q35`, OVMF in pflash, VGA, xHCI with
/// usb-storage) and virtio-blk for direct kernel boots.
const DEVICES: &str = "\
CONFIG_Q35=y
CONFIG_VGA_PCI=y
CONFIG_USB_XHCI_PCI=y
CONFIG_USB_STORAGE_CLASSIC=y
CONFIG_VIRTIO_PCI=y
CONFIG_VIRTIO_BLK=y
";

const CONFIGURE: &[&str] = &[
    "--target-list=x86_64-softmmu",
    "--without-default-features",
    "--without-default-devices",
    "--with-devices-x86_64=hiperiso-outer",
    "--enable-tcg",
    "--disable-kvm",
    "--disable-docs",
    "--disable-tools",
    "--disable-werror",
    "--disable-install-blobs",
    "--firmwarepath=/usr/share/qemu:/usr/share/seabios:/usr/lib/ipxe/qemu",
];

fn run(cmd: &mut Command, log: &Path) -> Result<()> {
    let out = fs::File::create(log)?;
    let status = cmd
        .stdout(out.try_clone()?)
        .stderr(out)
        .status()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !status.success() {
        let text = fs::read_to_string(log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(30).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        bail!(
            "{cmd:?} failed ({status}); the end of {}:\n{}",
            log.display(),
            tail.join("\n")
        );
    }
    Ok(())
}

/// The patched `qemu-system-x86_64`, built on first use.
pub fn outer_qemu() -> Result<PathBuf> {
    let context = Context::new(workspace_root().join("hiperiso.toml"));
    let fetched = sources::fetch(&context, &["qemu".to_string()])
        .context("fetching the pinned QEMU source")?;
    let source = &fetched[0];
    let mut key = Sha256::new();
    for part in [source.sha256.as_str(), PATCH, DEVICES, &CONFIGURE.join(" ")] {
        key.update(part.as_bytes());
        key.update(b"\0");
    }
    let key = hex::encode(key.finalize());
    let dir = target_dir().join("hiperiso-outer-qemu");
    let binary = dir.join(format!("qemu-system-x86_64-{}", &key[..16]));
    if binary.is_file() {
        return Ok(binary);
    }
    eprintln!(
        "building the outer VM's QEMU (TCG only, patched; see tests/support/outer_qemu.rs) in {}",
        dir.display()
    );
    let started = Instant::now();
    fs::create_dir_all(&dir)?;
    let work = tempfile::Builder::new().prefix("build-").tempdir_in(&dir)?;
    let log = |name: &str| dir.join(format!("{name}.log"));
    run(
        Command::new("tar")
            .arg("-xf")
            .arg(&source.path)
            .arg("-C")
            .arg(work.path())
            .args(["--strip-components=1"]),
        &log("unpack"),
    )?;
    let patch = dir.join("outer-qemu.patch");
    fs::write(&patch, PATCH)?;
    run(
        Command::new("patch")
            .args(["-p1", "--forward", "-i"])
            .arg(&patch)
            .current_dir(work.path()),
        &log("patch"),
    )?;
    fs::write(
        work.path()
            .join("configs/devices/x86_64-softmmu/hiperiso-outer.mak"),
        DEVICES,
    )?;
    run(
        Command::new("./configure")
            .args(CONFIGURE)
            .current_dir(work.path()),
        &log("configure"),
    )?;
    run(
        Command::new("ninja")
            .args(["-C", "build", "qemu-system-x86_64"])
            .current_dir(work.path()),
        &log("build"),
    )?;
    let staged = dir.join(format!(".{}.partial", &key[..16]));
    fs::copy(work.path().join("build/qemu-system-x86_64"), &staged)?;
    fs::rename(&staged, &binary)?;
    eprintln!("outer QEMU built in {:.0?}", started.elapsed());
    Ok(binary)
}
