//! The ESP payload of `image` and `install`, by the profile's `payload`:
//! `packages` (the debian profile, from_packages.rs) or `steps` (the
//! default profile, built from source). For `steps`, every step's output
//! tree is laid into one root, laid out like an installed system, which
//! payload.rs turns into the ESP:
//!
//! ```text
//! linux       boot/vmlinuz-<version>, lib/modules/<version>/config
//! qemu        usr/bin/qemu-system-x86_64, usr/share/qemu/{keymaps,*.bin}
//! seabios     usr/share/qemu/{bios-256k,vgabios-stdvga}.bin
//! edk2        usr/share/OVMF/OVMF_{CODE,VARS}_4M.fd
//! busybox     bin/busybox
//! grub-image  EFI/BOOT/BOOTX64.EFI, EFI/hiperiso/bios/{boot,core}.img
//! runtime     hiperiso-init, hiperiso-log (steps/runtime.rs; not laid in)
//! ```
//!
//! A path that two steps both provide is an error naming both.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use hiperiso_stick::io::io_err;
use hiperiso_stick::paths::esp as esp_paths;

use crate::payload::base::{EspError, base_options, payload_cache, temp_dir};
use crate::payload::cached::{self, CachedEsp, StepsInfo};
use crate::project::Project;
use crate::steps::profile::BuiltSteps;
use crate::steps::runtime;

/// The default profile's ESP from its built `steps`, through the cache
/// (payload/cached.rs), keyed by the steps' output trees.
pub fn build_esp(
    project: &Project,
    profile: &str,
    steps: &BuiltSteps,
) -> Result<CachedEsp, EspError> {
    let runtime = steps
        .paths
        .get(runtime::NAME)
        .ok_or_else(|| EspError::NoRuntimeStep {
            manifest: project.settings.manifest_path.clone(),
            profile: profile.to_string(),
            runtime: runtime::NAME,
        })?;
    let root_dir = temp_dir("hiperiso-root-")?;
    let root = root_dir.path();
    let mut owners = BTreeMap::new();
    for (name, path) in &steps.paths {
        if name != runtime::NAME {
            lay_tree(path, root, Path::new(""), name, &mut owners)?;
        }
    }
    let mut options = base_options(project, profile, root, runtime)?;
    // Everything the host needs is built into the kernel.
    options.kernel_modules.clear();
    let grub = root.join(esp_paths::BOOT_EFI);
    if !grub.is_file() {
        return Err(EspError::NoGrubImage {
            profile: profile.to_string(),
            grub: esp_paths::BOOT_EFI,
        });
    }
    options.grub_image = Some(grub);
    let bios = root.join(esp_paths::BIOS_CORE_IMG);
    options.grub_bios = bios
        .parent()
        .filter(|_| bios.is_file())
        .map(Path::to_path_buf);
    options.content_id = serde_json::to_string(&steps.trees).expect("json");
    let info = StepsInfo {
        steps: &steps.trees,
        tools: steps.tools.as_deref(),
    };
    cached::esp(
        &payload_cache(project)?,
        &options,
        info,
        project.settings.progress(),
    )
    .map_err(EspError::Assemble)
}

/// Lays `source/relative` into `root/relative`: directories merged, files
/// hard-linked (copied across file systems), symlinks recreated. `owners`
/// records which step laid each file, to name both sides of a clash.
fn lay_tree(
    source: &Path,
    root: &Path,
    relative: &Path,
    step: &str,
    owners: &mut BTreeMap<PathBuf, String>,
) -> Result<(), EspError> {
    let from = source.join(relative);
    let mut entries: Vec<_> = fs::read_dir(&from)
        .map_err(io_err("read", &from))?
        .collect::<Result<_, _>>()
        .map_err(io_err("read", &from))?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let relative = relative.join(entry.file_name());
        let (from, to) = (entry.path(), root.join(&relative));
        let kind = entry.file_type().map_err(io_err("read", &from))?;
        if kind.is_dir() {
            fs::create_dir_all(&to).map_err(io_err("create", &to))?;
            lay_tree(source, root, &relative, step, owners)?;
            continue;
        }
        if let Some(other) = owners.insert(relative.clone(), step.to_string()) {
            return Err(EspError::Clash {
                other,
                step: step.to_string(),
                path: relative,
            });
        }
        if kind.is_symlink() {
            let target = fs::read_link(&from).map_err(io_err("read", &from))?;
            symlink(&target, &to).map_err(io_err("create", &to))?;
        } else if fs::hard_link(&from, &to).is_err() {
            fs::copy(&from, &to).map_err(io_err("copy to", &to))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &Path, text: &str) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    }

    #[test]
    fn steps_are_laid_into_one_root_and_clashes_name_both_steps() {
        let dir = tempfile::tempdir().unwrap();
        let (qemu, seabios, clash) = (
            dir.path().join("qemu"),
            dir.path().join("seabios"),
            dir.path().join("clash"),
        );
        write(&qemu.join("usr/share/qemu/keymaps/en-us"), "keys");
        write(&seabios.join("usr/share/qemu/bios-256k.bin"), "rom");
        symlink("bios-256k.bin", seabios.join("usr/share/qemu/bios.bin")).unwrap();
        write(&clash.join("usr/share/qemu/bios-256k.bin"), "other");
        let root = dir.path().join("root");
        fs::create_dir(&root).unwrap();
        let mut owners = BTreeMap::new();
        lay_tree(&qemu, &root, Path::new(""), "qemu", &mut owners).unwrap();
        lay_tree(&seabios, &root, Path::new(""), "seabios", &mut owners).unwrap();
        let share = root.join("usr/share/qemu");
        assert_eq!(
            fs::read_to_string(share.join("keymaps/en-us")).unwrap(),
            "keys"
        );
        assert_eq!(fs::read_to_string(share.join("bios.bin")).unwrap(), "rom");
        assert!(
            fs::symlink_metadata(share.join("bios.bin"))
                .unwrap()
                .is_symlink()
        );
        let error = lay_tree(&clash, &root, Path::new(""), "clash", &mut owners).unwrap_err();
        assert_eq!(
            error.to_string(),
            "steps `seabios` and `clash` both output usr/share/qemu/bios-256k.bin: \
             one payload root cannot hold both"
        );
        // The first step's file is untouched.
        assert_eq!(
            fs::read_to_string(share.join("bios-256k.bin")).unwrap(),
            "rom"
        );
    }
}
