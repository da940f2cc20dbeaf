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

/// Debian's installer as its netboot package ships it: kernel and initrd.
/// They are the very files of Debian's `mini.iso` (the same sha256 as in the
/// archive's installer SHA256SUMS), which the mirror here does not serve.
pub const DI_LINUX: RealImage = RealImage {
    name: "d-i-linux",
    package: "debian-installer-12-netboot-amd64",
    version: "20230607+deb12u15",
    path: "usr/lib/debian-installer/images/12/amd64/text/debian-installer/amd64/linux",
    sha256: "d8808aa4ca188560da1e6d749dcb930c87a5fd8b11ebff1f3fa6d728af35203d",
};
pub const DI_INITRD: RealImage = RealImage {
    name: "d-i-initrd",
    path: "usr/lib/debian-installer/images/12/amd64/text/debian-installer/amd64/initrd.gz",
    sha256: "cb24a28a5ba13dfb22e6e75bdd8ab997dbdee6e3ec6c1102f6c7f93044bd817d",
    ..DI_LINUX
};
/// ISOLINUX, the BIOS boot loader of Debian's own CDs, and its core module.
pub const ISOLINUX: RealImage = RealImage {
    name: "isolinux",
    package: "isolinux",
    version: "3:6.04~git20190206.bf6db5b4+dfsg1-3",
    path: "usr/lib/ISOLINUX/isolinux.bin",
    sha256: "f3e2c1786564e148fb394e2321666ddccccedc18f7cf9db3e2416d45d13ea492",
};
pub const LDLINUX: RealImage = RealImage {
    name: "ldlinux",
    package: "syslinux-common",
    path: "usr/lib/syslinux/modules/bios/ldlinux.c32",
    sha256: "26cbd44c3a3dacbf3971cfbc04db539da07767fa00797f505044e2f68dcfae89",
    ..ISOLINUX
};

/// The kernel command line the installer ISO's ISOLINUX passes: the kernel
/// logs to serial and to the screen, and the installer asks on serial.
pub const DI_APPEND: &str = "initrd=/initrd.gz console=tty0 console=ttyS0,115200 ---";

/// Debian's installer booted by Debian's ISOLINUX: the one image here that
/// boots a Linux kernel and its userspace. Debian ships no such ISO in a
/// package, so only the ISO 9660 container is made here (xorriso, one
/// ISOLINUX entry, [`DI_APPEND`]); every byte that runs is Debian's.
pub fn debian_installer_iso() -> Result<PathBuf> {
    let [linux, initrd, isolinux, ldlinux] =
        [&DI_LINUX, &DI_INITRD, &ISOLINUX, &LDLINUX].map(fetch);
    let _guard = FETCH_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let dest = cache_dir().join("real-images/debian-installer.iso");
    if dest.is_file() {
        return Ok(dest);
    }
    let root = cache_dir().join(format!("real-images/tmp-d-i-{}", std::process::id()));
    let _ = fs::remove_dir_all(&root);
    fs::create_dir_all(root.join("isolinux"))?;
    fs::copy(linux?, root.join("linux"))?;
    fs::copy(initrd?, root.join("initrd.gz"))?;
    fs::copy(isolinux?, root.join("isolinux/isolinux.bin"))?;
    fs::copy(ldlinux?, root.join("isolinux/ldlinux.c32"))?;
    fs::write(
        root.join("isolinux/isolinux.cfg"),
        format!("DEFAULT install\nLABEL install\n  KERNEL /linux\n  APPEND {DI_APPEND}\n"),
    )?;
    let scratch = dest.with_extension("iso.tmp");
    let status = Command::new("xorriso")
        .args(["-as", "mkisofs", "-quiet", "-V", "DEBIAN_INSTALLER", "-o"])
        .arg(&scratch)
        .args(["-b", "isolinux/isolinux.bin", "-c", "isolinux/boot.cat"])
        .args(["-no-emul-boot", "-boot-load-size", "4", "-boot-info-table"])
        .arg(&root)
        .status()
        .context("running xorriso")?;
    if !status.success() {
        bail!("xorriso failed ({status}) making {}", dest.display());
    }
    fs::rename(&scratch, &dest)?;
    let _ = fs::remove_dir_all(&root);
    Ok(dest)
}

static FETCH_LOCK: Mutex<()> = Mutex::new(());

/// The file's path in the test cache, fetched and checked on first use.
pub fn fetch(image: &RealImage) -> Result<PathBuf> {
    let _guard = FETCH_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let dir = cache_dir().join("real-images");
    let extension = Path::new(image.path)
        .extension()
        .map_or(String::new(), |e| format!(".{}", e.to_string_lossy()));
    let dest = dir.join(format!("{}{extension}", image.name));
    if dest.is_file() {
        return Ok(dest);
    }
    let (deb, decayed) = download(&dir, image)?;
    let scratch = dir.join(format!("tmp-{}-{}", image.name, std::process::id()));
    let _ = fs::remove_dir_all(&scratch);
    let status = Command::new("dpkg-deb")
        .arg("-x")
        .arg(&deb)
        .arg(&scratch)
        .status()
        .context("running dpkg-deb")?;
    if !status.success() {
        bail!("dpkg-deb -x {} failed ({status})", deb.display());
    }
    let unpacked = scratch.join(image.path);
    let (sha256, _) = hiperiso_stick::io::sha256_file(&unpacked)
        .with_context(|| format!("{} has no {}", deb.display(), image.path))?;
    if !decayed && sha256 != image.sha256 {
        bail!(
            "{} in {}={} has sha256 {sha256}, the pin says {}",
            image.path,
            image.package,
            image.version,
            image.sha256
        );
    }
    fs::rename(&unpacked, &dest).with_context(|| format!("moving to {}", dest.display()))?;
    let _ = fs::remove_dir_all(&scratch);
    Ok(dest)
}

/// The image's package in `dir/debs` (downloaded once per package), and
/// whether the pin decayed.
fn download(dir: &Path, image: &RealImage) -> Result<(PathBuf, bool)> {
    let debs = dir.join("debs").join(image.package);
    if let Ok(deb) = only_deb(&debs) {
        let decayed = !deb
            .to_string_lossy()
            .contains(&image.version.replace(':', "%3a"));
        return Ok((deb, decayed));
    }
    fs::create_dir_all(&debs).with_context(|| format!("creating {}", debs.display()))?;
    let pinned = format!("{}={}", image.package, image.version);
    let decayed = !apt(&debs, &["download", "-q", &pinned])?;
    if decayed {
        eprintln!(
            "warning: {pinned} is gone from the apt sources (the pin decayed); testing the \
             current {} instead. Re-pin {} in tests/support/real_isos.rs (version and sha256 \
             of {}).",
            image.package, image.name, image.path
        );
        if !apt(&debs, &["download", "-q", image.package])? {
            bail!(
                "apt-get download {} failed: is `apt-get update` done and the package in the \
                 apt sources?",
                image.package
            );
        }
    }
    Ok((only_deb(&debs)?, decayed))
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
