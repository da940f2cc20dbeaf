//! GRUB's boot images for the ESP: `BOOTX64.EFI` (x86_64-efi) for UEFI and
//! the i386-pc `boot.img` + `core.img` pair for legacy BIOS, made by the
//! package tree's own grub-mkimage with the modules listed under
//! recipes/grub-image/ (the from-source grub-image step uses the same
//! lists).

use std::fs;
use std::path::Path;
use std::process::Command;

use hiperiso_stick::io::io_err;
use hiperiso_stick::paths::esp as paths;

use crate::payload::esp::{PayloadError, real_path};

/// A GRUB platform hiperiso boots through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Platform {
    /// `EFI/BOOT/BOOTX64.EFI`, started by UEFI firmware.
    Efi,
    /// `core.img`, loaded by `boot.img` from the MBR on a legacy BIOS.
    Bios,
}

const COMMON_MODULES: &str = include_str!("../../../recipes/grub-image/modules");
const EFI_MODULES: &str = include_str!("../../../recipes/grub-image/modules-x86_64-efi");
const BIOS_MODULES: &str = include_str!("../../../recipes/grub-image/modules-i386-pc");

impl Platform {
    /// grub-mkimage's `-O` and the module directory's name.
    pub fn target(self) -> &'static str {
        match self {
            Platform::Efi => "x86_64-efi",
            Platform::Bios => "i386-pc",
        }
    }

    /// GRUB's prefix: where it reads grub.cfg. UEFI starts GRUB from the
    /// ESP, so a path suffices; on a BIOS GRUB knows only the boot disk and
    /// takes partition 2 of it (the ESP, DESIGN §4; `(,2)` matches either
    /// table).
    pub fn prefix(self) -> &'static str {
        match self {
            Platform::Efi => "/EFI/BOOT",
            Platform::Bios => "(,2)/EFI/BOOT",
        }
    }

    /// The modules embedded in the image: the common list plus the
    /// platform's own.
    pub fn modules(self) -> Vec<String> {
        let own = match self {
            Platform::Efi => EFI_MODULES,
            Platform::Bios => BIOS_MODULES,
        };
        COMMON_MODULES
            .lines()
            .chain(own.lines())
            .map(str::trim)
            .filter(|line| !line.is_empty() && !line.starts_with('#'))
            .map(str::to_string)
            .collect()
    }
}

/// Whether the tree has GRUB's modules for `platform`.
pub fn has_platform(root: &Path, platform: Platform) -> bool {
    real_path(root, &format!("usr/lib/grub/{}", platform.target())).is_ok()
}

/// Runs the tree's own grub-mkimage with the tree's own dynamic loader and
/// libraries, so the host's GRUB (if any) plays no part.
pub fn grub_mkimage(
    root: &Path,
    platform: Platform,
    modules: &[String],
    output: &Path,
) -> Result<(), PayloadError> {
    let loader = real_path(root, "lib64/ld-linux-x86-64.so.2")?;
    let mkimage = real_path(root, "usr/bin/grub-mkimage")?;
    let module_dir = real_path(root, &format!("usr/lib/grub/{}", platform.target()))?;
    let library_path = crate::payload::elf::library_dirs(root)
        .iter()
        .map(|dir| root.join(dir).display().to_string())
        .collect::<Vec<_>>()
        .join(":");
    let result = Command::new(&loader)
        .arg("--library-path")
        .arg(&library_path)
        .arg(&mkimage)
        .arg("-d")
        .arg(&module_dir)
        .args(["-O", platform.target(), "-p", platform.prefix(), "-o"])
        .arg(output)
        .args(modules)
        .env_clear()
        .env("LC_ALL", "C")
        .output()
        .map_err(io_err("run", &mkimage))?;
    if !result.status.success() {
        return Err(PayloadError::GrubMkimage {
            status: result.status.to_string(),
            stderr: String::from_utf8_lossy(&result.stderr).trim().to_string(),
        });
    }
    Ok(())
}

/// The legacy BIOS pair into the ESP tree `esp`: the tree's `boot.img` and
/// a `core.img` of the i386-pc modules (hiperiso_installer::bios_boot puts
/// them on the disk).
pub fn bios_boot(root: &Path, esp: &Path) -> Result<(), PayloadError> {
    let core = esp.join(paths::BIOS_CORE_IMG);
    let dir = core.parent().unwrap_or(esp);
    fs::create_dir_all(dir).map_err(io_err("create", dir))?;
    let boot = real_path(root, "usr/lib/grub/i386-pc/boot.img")?;
    fs::copy(&boot, esp.join(paths::BIOS_BOOT_IMG)).map_err(io_err("copy", &boot))?;
    grub_mkimage(root, Platform::Bios, &Platform::Bios.modules(), &core)
}
