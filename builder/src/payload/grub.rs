//! GRUB's boot images for the ESP: `BOOTX64.EFI` (x86_64-efi) for UEFI and
//! the i386-pc `boot.img` + `core.img` pair for legacy BIOS, made by the
//! package tree's own grub-mkimage with the modules listed under
//! recipes/grub-image/ (the from-source grub-image step uses the same
//! lists); or, when the tree has them, Debian's signed shim and GRUB for
//! Secure Boot ([`signed_chain`]).

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::process::Command;

use hiperiso_stick::io::{IoError, io_err};
use hiperiso_stick::paths::esp as paths;

use crate::debian::deb::resolve_in_tree;

#[derive(Debug, thiserror::Error)]
pub enum GrubError {
    #[error("{path} is not in the package tree {}", .root.display())]
    Missing {
        path: String,
        root: std::path::PathBuf,
    },
    #[error("grub-mkimage failed ({status}): {stderr}")]
    Mkimage { status: String, stderr: String },
    #[error(transparent)]
    Io(#[from] IoError),
}

/// `path` in the unpacked tree `root`, its symlinks resolved inside it
/// (esp.rs uses it too).
pub(crate) fn real_path(root: &Path, path: &str) -> Result<std::path::PathBuf, GrubError> {
    let components: Vec<String> = path.split('/').map(str::to_string).collect();
    let resolved =
        resolve_in_tree(root, &components, true).map_err(io_err("resolve", &root.join(path)))?;
    match resolved.exists() {
        true => Ok(resolved),
        false => Err(GrubError::Missing {
            path: path.to_string(),
            root: root.to_path_buf(),
        }),
    }
}

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
) -> Result<(), GrubError> {
    grub_mkimage_with(root, platform, modules, output, &[])
}

/// [`grub_mkimage`] with `extra` options (e.g. `--sbat FILE`).
pub fn grub_mkimage_with(
    root: &Path,
    platform: Platform,
    modules: &[String],
    output: &Path,
    extra: &[&std::ffi::OsStr],
) -> Result<(), GrubError> {
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
        .args(extra)
        .args(modules)
        .env_clear()
        .env("LC_ALL", "C")
        .output()
        .map_err(io_err("run", &mkimage))?;
    if !result.status.success() {
        return Err(GrubError::Mkimage {
            status: result.status.to_string(),
            stderr: String::from_utf8_lossy(&result.stderr).trim().to_string(),
        });
    }
    Ok(())
}

/// The legacy BIOS pair into the ESP tree `esp`: the tree's `boot.img` and
/// a `core.img` of the i386-pc modules (hiperiso_installer::bios_boot puts
/// them on the disk).
pub fn bios_boot(root: &Path, esp: &Path) -> Result<(), GrubError> {
    let core = esp.join(paths::BIOS_CORE_IMG);
    let dir = core.parent().unwrap_or(esp);
    fs::create_dir_all(dir).map_err(io_err("create", dir))?;
    let boot = real_path(root, "usr/lib/grub/i386-pc/boot.img")?;
    fs::copy(&boot, esp.join(paths::BIOS_BOOT_IMG)).map_err(io_err("copy", &boot))?;
    grub_mkimage(root, Platform::Bios, &Platform::Bios.modules(), &core)
}

/// Debian's shim, signed by Microsoft's UEFI CA (package shim-signed).
pub const SIGNED_SHIM: &str = "usr/lib/shim/shimx64.efi.signed";
/// Debian's GRUB, signed by Debian's key that shim trusts (package
/// grub-efi-amd64-signed).
pub const SIGNED_GRUB: &str = "usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed";

/// `EFI/debian/grub.cfg`: Debian's signed GRUB looks for its config in
/// its built-in prefix /EFI/debian; this hands over to the stick's menu
/// and makes EFI/BOOT the prefix (fonts, and modules when Secure Boot is
/// off).
const DEBIAN_STUB: &str = "# Debian's signed GRUB reads this (its built-in prefix is /EFI/debian);\n\
# the menu is EFI/BOOT/grub.cfg, the stick's own.\n\
set prefix=($root)/EFI/BOOT\n\
source $prefix/grub.cfg\n";

/// Whether the tree has Debian's signed shim and GRUB.
pub fn has_signed_chain(root: &Path) -> bool {
    real_path(root, SIGNED_SHIM).is_ok() && real_path(root, SIGNED_GRUB).is_ok()
}

/// Debian's signed chain into the ESP tree: shim as `BOOTX64.EFI` (it
/// boots with Secure Boot on wherever the firmware trusts Microsoft's UEFI
/// CA), the signed GRUB as `grubx64.efi` beside it, the EFI/debian stub,
/// and `modules` with their dependencies from the tree's x86_64-efi GRUB
/// (same version) for when Secure Boot is off. With it on, GRUB loads no
/// module from disk: only those built into the signed image (no exFAT).
pub fn signed_chain(root: &Path, esp: &Path, modules: &[String]) -> Result<(), GrubError> {
    let copy = |from: &Path, to: &str| -> Result<(), GrubError> {
        let target = esp.join(to);
        if let Some(dir) = target.parent() {
            fs::create_dir_all(dir).map_err(io_err("create", dir))?;
        }
        fs::copy(from, &target).map_err(io_err("copy", from))?;
        Ok(())
    };
    copy(&real_path(root, SIGNED_SHIM)?, paths::BOOT_EFI)?;
    copy(&real_path(root, SIGNED_GRUB)?, paths::SIGNED_GRUB_EFI)?;
    let stub = esp.join(paths::DEBIAN_GRUB_CFG);
    if let Some(dir) = stub.parent() {
        fs::create_dir_all(dir).map_err(io_err("create", dir))?;
    }
    fs::write(&stub, DEBIAN_STUB).map_err(io_err("write", &stub))?;
    let module_dir = real_path(root, &format!("usr/lib/grub/{}", Platform::Efi.target()))?;
    let moddep = module_dir.join("moddep.lst");
    let moddep = fs::read_to_string(&moddep).map_err(io_err("read", &moddep))?;
    for module in module_closure(&moddep, modules) {
        let from = module_dir.join(format!("{module}.mod"));
        if from.is_file() {
            copy(&from, &format!("{}/{module}.mod", paths::GRUB_MODULE_DIR))?;
        }
    }
    Ok(())
}

/// `modules` and everything they need, by GRUB's `moddep.lst` (`name: dep
/// dep`), sorted.
fn module_closure(moddep: &str, modules: &[String]) -> BTreeSet<String> {
    let deps = |name: &str| -> Vec<String> {
        moddep
            .lines()
            .filter_map(|line| line.split_once(':'))
            .find(|(module, _)| module.trim() == name)
            .map(|(_, deps)| deps.split_whitespace().map(str::to_string).collect())
            .unwrap_or_default()
    };
    let mut done = BTreeSet::new();
    let mut todo: Vec<String> = modules.to_vec();
    while let Some(module) = todo.pop() {
        if done.insert(module.clone()) {
            todo.extend(deps(&module));
        }
    }
    done
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_closure_follows_moddep() {
        let moddep = "exfat: fshelp\nfshelp:\nnormal: crypto boot\nboot:\ncrypto:\n";
        let got = module_closure(moddep, &["exfat".into(), "normal".into()]);
        let want = ["boot", "crypto", "exfat", "fshelp", "normal"];
        assert_eq!(got.into_iter().collect::<Vec<_>>(), want);
    }

    #[test]
    fn the_platforms_share_the_common_list() {
        let efi = Platform::Efi.modules();
        let bios = Platform::Bios.modules();
        assert!(efi.contains(&"exfat".to_string()) && bios.contains(&"exfat".to_string()));
        assert!(efi.contains(&"efi_gop".to_string()) && !bios.contains(&"efi_gop".to_string()));
        assert!(bios.contains(&"biosdisk".to_string()));
    }
}
