//! Third-party boot images that ship in Debian packages: the standard of
//! proof for verdicts (issue 17). Nobody here made them.
//!
//! Each is pinned by package version and the image's sha256. The package
//! comes from the host's apt sources (`apt-get download`, so no mirror is
//! named here) into the test cache. Debian drops superseded versions from its
//! pool: when the pinned version is gone, the current one is used and the
//! test says loudly that the pin decayed and how to re-pin, rather than turn
//! CI red the day Debian publishes an update (DESIGN.md §3, "Pins decay").

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use anyhow::{Context as _, Result, bail};

use crate::linux_vm::cache_dir;

/// One image inside one Debian binary package.
#[derive(Debug, Clone, Copy)]
pub struct RealImage {
    /// A short name for messages and file names.
    pub name: &'static str,
    pub package: &'static str,
    pub version: &'static str,
    /// The image's path inside the package.
    pub path: &'static str,
    /// sha256 of the image at `version`.
    pub sha256: &'static str,
}

/// GRUB's rescue CD: BIOS only (El Torito without an EFI entry), GRUB's
/// menu on the VGA text screen, nothing on serial.
pub const GRUB_RESCUE: RealImage = RealImage {
    name: "grub-rescue-cdrom",
    package: "grub-rescue-pc",
    version: "2.06-13+deb12u2",
    path: "usr/lib/grub-rescue/grub-rescue-cdrom.iso",
    sha256: "895e963832b7bf6c9cf20cf608e2f2fca7540f1ccaf46e31048c7b299b8c3566",
};

/// memtest86+ 6: a hybrid BIOS/UEFI image that writes nothing to serial;
/// its screen is the only evidence.
pub const MEMTEST: RealImage = RealImage {
    name: "memtest86+x64",
    package: "memtest86+",
    version: "6.10-4",
    path: "usr/lib/memtest86+/memtest86+x64.iso",
    sha256: "b6abd08242c92a509c565e73ca0d54d49ed4d993041f8f54cf179bad7db2b83a",
};

/// iPXE: a network-boot image; without a network it has nothing to boot.
pub const IPXE: RealImage = RealImage {
    name: "ipxe",
    package: "ipxe",
    version: "1.0.0+git-20190125.36a4c85-5.1",
    path: "usr/lib/ipxe/ipxe.iso",
    sha256: "d3934ddd42ded2879e41cd9667614ec15294b9a3a3a75cb4a4320a3346b168d7",
};

static FETCH_LOCK: Mutex<()> = Mutex::new(());

/// The image's path in the test cache, fetched and checked on first use.
pub fn fetch(image: &RealImage) -> Result<PathBuf> {
    let _guard = FETCH_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let dir = cache_dir().join("real-images");
    let dest = dir.join(format!("{}.iso", image.name));
    if dest.is_file() {
        return Ok(dest);
    }
    let scratch = dir.join(format!("tmp-{}-{}", image.name, std::process::id()));
    let _ = fs::remove_dir_all(&scratch);
    fs::create_dir_all(&scratch).with_context(|| format!("creating {}", scratch.display()))?;
    let pinned = format!("{}={}", image.package, image.version);
    let decayed = !apt(&scratch, &["download", "-q", &pinned])?;
    if decayed {
        eprintln!(
            "warning: {pinned} is gone from the apt sources (the pin decayed); testing the \
             current {} instead. Re-pin {} in tests/support/real_isos.rs (version and sha256 \
             of {}).",
            image.package, image.name, image.path
        );
        if !apt(&scratch, &["download", "-q", image.package])? {
            bail!(
                "apt-get download {} failed: is `apt-get update` done and the package in the \
                 apt sources?",
                image.package
            );
        }
    }
    let deb = only_deb(&scratch)?;
    let tree = scratch.join("tree");
    let status = Command::new("dpkg-deb")
        .arg("-x")
        .arg(&deb)
        .arg(&tree)
        .status()
        .context("running dpkg-deb")?;
    if !status.success() {
        bail!("dpkg-deb -x {} failed ({status})", deb.display());
    }
    let unpacked = tree.join(image.path);
    let (sha256, _) = hiperiso_stick::io::sha256_file(&unpacked)
        .with_context(|| format!("{} has no {}", deb.display(), image.path))?;
    if !decayed && sha256 != image.sha256 {
        bail!(
            "{} in {pinned} has sha256 {sha256}, the pin says {}",
            image.path,
            image.sha256
        );
    }
    fs::rename(&unpacked, &dest).with_context(|| format!("moving to {}", dest.display()))?;
    let _ = fs::remove_dir_all(&scratch);
    Ok(dest)
}

/// `apt-get ARGS` in `dir`; false when apt could not do it.
fn apt(dir: &Path, args: &[&str]) -> Result<bool> {
    let output = Command::new("apt-get")
        .args(args)
        .current_dir(dir)
        .output()
        .context("running apt-get")?;
    Ok(output.status.success())
}

fn only_deb(dir: &Path) -> Result<PathBuf> {
    fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .with_context(|| format!("apt-get left no .deb in {}", dir.display()))
}
