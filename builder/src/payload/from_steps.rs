//! The ESP payload of `image` and `install`, by the profile's `payload`:
//! `packages` (the debian profile, profile_debian.rs) or `steps` (the
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
//! grub-image  EFI/BOOT/BOOTX64.EFI
//! runtime     hiperiso-init, hiperiso-log (runtime_step.rs; not laid in)
//! ```
//!
//! A path that two steps both provide is an error naming both.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::commands::build::BuiltSteps;
use crate::debian::closure::{LockMode, ProfileError};
use crate::model::manifest::{Manifest, PayloadFrom};
use crate::payload::esp::{Payload, PayloadOptions};
use crate::settings::Context;

/// An ESP payload built into a temporary directory.
pub struct BuiltEsp {
    _dir: tempfile::TempDir,
    pub esp: PathBuf,
    pub payload: Payload,
}

fn io_err<'p>(
    context: &'static str,
    path: &'p Path,
) -> impl FnOnce(io::Error) -> ProfileError + 'p {
    move |source| ProfileError::Io {
        context,
        path: path.to_path_buf(),
        source,
    }
}

fn temp_dir(prefix: &str) -> Result<tempfile::TempDir, ProfileError> {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .map_err(io_err(
            "creating a temporary directory in",
            &std::env::temp_dir(),
        ))
}

/// For `image` and `install`: the active profile's ESP payload (None when
/// the profile has no `payload`). `steps` are the profile's steps, built.
pub fn esp_for_image(
    context: &Context,
    manifest: &Manifest,
    steps: &BuiltSteps,
) -> crate::commands::Result<Option<BuiltEsp>> {
    let (name, profile) = context.profile(manifest)?;
    let Some(from) = profile.payload else {
        return Ok(None);
    };
    let dir = temp_dir("hiperiso-esp-")?;
    let esp = dir.path().join("esp");
    let payload = match from {
        PayloadFrom::Packages => {
            crate::debian::closure::build_esp(context, Some(name), LockMode::Committed, &esp)?
        }
        PayloadFrom::Steps => build_esp(context, manifest, name, steps, &esp)?,
    };
    context.say(format!(
        "{name} payload: kernel {}, {} ESP files, {} bytes, {} kernel modules",
        payload.kernel_version,
        payload.files.len(),
        payload.total_size(),
        payload.modules.len()
    ));
    Ok(Some(BuiltEsp {
        _dir: dir,
        esp,
        payload,
    }))
}

/// The options both profiles share: the runtime's init and log tool, the
/// overlays, SOURCE_DATE_EPOCH and the manifest's hash in build.json.
pub fn base_options(
    context: &Context,
    manifest: &Manifest,
    profile: &str,
    root: &Path,
    runtime: &Path,
) -> Result<PayloadOptions, ProfileError> {
    let workspace = context.manifest_dir();
    let mut options = PayloadOptions::new(root, runtime.join("hiperiso-init"));
    let overlays = workspace.join("overlays");
    options.overlays = overlays.is_dir().then_some(overlays);
    options.source_date_epoch = u32::try_from(manifest.image.source_date_epoch).unwrap_or(u32::MAX);
    options.extra_esp_files.push((
        "EFI/hiperiso/hiperiso-log".into(),
        runtime.join("hiperiso-log"),
    ));
    let manifest_text =
        fs::read(&context.manifest_path).map_err(io_err("reading", &context.manifest_path))?;
    let info = &mut options.build_info;
    info.insert("profile".into(), profile.into());
    // What `hiperiso-build inspect` shows (the same object an ESP of only
    // overlays gets, disk_cmd.rs).
    info.insert(
        "hiperiso".into(),
        serde_json::json!({
            "version": env!("CARGO_PKG_VERSION"),
            "image": manifest.image.name,
            "profile": profile,
            "manifest_sha256": hex::encode(Sha256::digest(&manifest_text)),
        }),
    );
    Ok(options)
}

/// The default profile's ESP from its built `steps` into `esp`.
pub fn build_esp(
    context: &Context,
    manifest: &Manifest,
    profile: &str,
    steps: &BuiltSteps,
    esp: &Path,
) -> Result<Payload, ProfileError> {
    let runtime = steps
        .paths
        .get(crate::steps::runtime::NAME)
        .ok_or_else(|| {
            ProfileError::Setup(format!(
                "{}: profile \"{profile}\" takes its payload from its steps, which must include \
             `{}` (hiperiso-init and hiperiso-log)",
                context.manifest_path.display(),
                crate::steps::runtime::NAME
            ))
        })?;
    let root_dir = temp_dir("hiperiso-root-")?;
    let root = root_dir.path();
    let mut owners = BTreeMap::new();
    for (name, path) in &steps.paths {
        if name != crate::steps::runtime::NAME {
            lay_tree(path, root, Path::new(""), name, &mut owners)?;
        }
    }
    let mut options = base_options(context, manifest, profile, root, runtime)?;
    // Everything the host needs is built into the kernel.
    options.kernel_modules.clear();
    let grub = root.join("EFI/BOOT/BOOTX64.EFI");
    if !grub.is_file() {
        return Err(ProfileError::Setup(format!(
            "no step of profile \"{profile}\" made EFI/BOOT/BOOTX64.EFI (add `grub-image` to its steps)"
        )));
    }
    options.grub_image = Some(grub);
    Ok(crate::payload::esp::build(&options, esp)?)
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
) -> Result<(), ProfileError> {
    let from = source.join(relative);
    let mut entries: Vec<_> = fs::read_dir(&from)
        .map_err(io_err("reading", &from))?
        .collect::<Result<_, _>>()
        .map_err(io_err("reading", &from))?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let relative = relative.join(entry.file_name());
        let (from, to) = (entry.path(), root.join(&relative));
        let kind = entry.file_type().map_err(io_err("reading", &from))?;
        if kind.is_dir() {
            fs::create_dir_all(&to).map_err(io_err("creating", &to))?;
            lay_tree(source, root, &relative, step, owners)?;
            continue;
        }
        if let Some(other) = owners.insert(relative.clone(), step.to_string()) {
            return Err(ProfileError::Setup(format!(
                "steps `{other}` and `{step}` both output {}: one payload root cannot hold both",
                relative.display()
            )));
        }
        if kind.is_symlink() {
            let target = fs::read_link(&from).map_err(io_err("reading", &from))?;
            symlink(&target, &to).map_err(io_err("creating", &to))?;
        } else if fs::hard_link(&from, &to).is_err() {
            fs::copy(&from, &to).map_err(io_err("copying to", &to))?;
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
