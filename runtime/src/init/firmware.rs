//! The guest's firmware: UEFI or BIOS for an ISO (from its El Torito boot
//! catalog, unless `hiperiso.json` forces one), and the OVMF or SeaBIOS
//! files for it; the trace-events file for a trace level.

use super::boot::RUN_DIR;
use crate::config::{EffectiveSettings, Firmware};
use crate::eltorito;
use crate::qemu::FirmwareFiles;
use hiperiso_stick::error_chain;
use hiperiso_stick::paths::esp;
use hiperiso_stick::session::FailureKind;
use std::fs::{self, File};
use std::path::{Path, PathBuf};

/// (code, vars) pairs in the initramfs, after the ESP's, in order of preference.
const INITRAMFS_OVMF: &[(&str, &str)] = &[
    (
        "/usr/share/OVMF/OVMF_CODE_4M.fd",
        "/usr/share/OVMF/OVMF_VARS_4M.fd",
    ),
    (
        "/usr/share/OVMF/OVMF_CODE.fd",
        "/usr/share/OVMF/OVMF_VARS.fd",
    ),
    (
        "/usr/share/hiperiso/OVMF_CODE.fd",
        "/usr/share/hiperiso/OVMF_VARS.fd",
    ),
];
const SEABIOS: &[&str] = &[
    "/usr/share/seabios/bios-256k.bin",
    "/usr/share/qemu/bios-256k.bin",
];
const INITRAMFS_TRACE_DIR: &str = "/usr/share/hiperiso/trace";

/// Why the firmware files cannot be had.
#[derive(Debug, thiserror::Error)]
pub enum FirmwareError {
    #[error("no OVMF firmware (OVMF_CODE.fd + OVMF_VARS.fd) on the ESP or in the initramfs")]
    NoOvmf,
    #[error("cannot copy {} to {}", from.display(), to.display())]
    CopyVars {
        from: PathBuf,
        to: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

pub(super) fn first_existing(candidates: &[PathBuf]) -> Option<PathBuf> {
    candidates.iter().find(|p| p.is_file()).cloned()
}

/// Firmware files for the guest: the ESP's copy first (so `install --update`
/// can replace it), then the initramfs'.
pub fn firmware_files(
    firmware: Firmware,
    esp_root: Option<&Path>,
) -> Result<FirmwareFiles, FirmwareError> {
    match firmware {
        Firmware::Uefi => {
            let mut pairs: Vec<(PathBuf, PathBuf)> = Vec::new();
            if let Some(root) = esp_root {
                pairs.push((root.join(esp::OVMF_CODE), root.join(esp::OVMF_VARS)));
            }
            pairs.extend(
                INITRAMFS_OVMF
                    .iter()
                    .map(|(c, v)| (PathBuf::from(c), PathBuf::from(v))),
            );
            let (code, vars_template) = pairs
                .into_iter()
                .find(|(c, v)| c.is_file() && v.is_file())
                .ok_or(FirmwareError::NoOvmf)?;
            // The guest may write its variables: give it a private copy.
            let vars = Path::new(RUN_DIR).join("OVMF_VARS.fd");
            fs::copy(&vars_template, &vars).map_err(|source| FirmwareError::CopyVars {
                from: vars_template.clone(),
                to: vars.clone(),
                source,
            })?;
            Ok(FirmwareFiles::Uefi { code, vars })
        }
        Firmware::Bios => Ok(FirmwareFiles::Bios {
            image: first_existing(&SEABIOS.iter().map(PathBuf::from).collect::<Vec<_>>()),
        }),
    }
}

/// `trace-<level>.events`: the ESP's first, then the initramfs'.
pub fn trace_events_file(level: &str, esp_root: Option<&Path>) -> Option<PathBuf> {
    let name = format!("trace-{level}.events");
    let mut candidates = Vec::new();
    if let Some(root) = esp_root {
        candidates.push(root.join(esp::TRACE_DIR).join(&name));
    }
    candidates.push(Path::new(INITRAMFS_TRACE_DIR).join(&name));
    first_existing(&candidates)
}

/// The firmware chosen for an ISO, why, and the ISO's size.
pub type IsoCheck = (Firmware, &'static str, u64);

/// Open and read the ISO; decide the firmware.
pub fn check_iso(
    path: &Path,
    settings: &EffectiveSettings,
) -> Result<IsoCheck, (FailureKind, String)> {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err((
                FailureKind::IsoMissing,
                format!(
                    "the image {} does not exist on the data partition",
                    path.display()
                ),
            ));
        }
        Err(e) => {
            return Err((
                FailureKind::IsoUnreadable,
                format!("cannot open {}: {e}", path.display()),
            ));
        }
    };
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let info = eltorito::read_iso(&mut file).map_err(|e| {
        (
            FailureKind::IsoUnreadable,
            format!("{}: {}", path.display(), error_chain(&e)),
        )
    })?;
    Ok(match settings.firmware {
        Some(forced) => (forced, "override", size),
        None if info.boots_uefi() => (Firmware::Uefi, "el_torito_uefi_entry", size),
        None if info.boots_bios() => (Firmware::Bios, "el_torito_bios_only", size),
        None => (Firmware::Uefi, "no_boot_entry_default_uefi", size),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use std::process::Command;

    #[test]
    fn iso_checks_pick_firmware() {
        let dir = tempfile::tempdir().unwrap();
        let settings = Config::default().settings_for("/ISOs/x.iso");
        let (kind, message) = check_iso(&dir.path().join("missing.iso"), &settings).unwrap_err();
        assert_eq!(kind, FailureKind::IsoMissing);
        assert!(message.contains("missing.iso"));
        let junk = dir.path().join("junk.iso");
        fs::write(&junk, vec![0u8; 100_000]).unwrap();
        let (kind, message) = check_iso(&junk, &settings).unwrap_err();
        assert_eq!(kind, FailureKind::IsoUnreadable);
        assert!(message.contains("not an ISO 9660 image"), "{message}");

        let root = dir.path().join("root");
        fs::create_dir_all(&root).unwrap();
        fs::write(root.join("boot.bin"), vec![0u8; 2048]).unwrap();
        let iso = dir.path().join("bios.iso");
        let ok = Command::new("xorriso")
            .args([
                "-as",
                "mkisofs",
                "-quiet",
                "-b",
                "boot.bin",
                "-no-emul-boot",
                "-o",
            ])
            .arg(&iso)
            .arg(&root)
            .status()
            .unwrap()
            .success();
        assert!(ok);
        let (fw, reason, size) = check_iso(&iso, &settings).unwrap();
        assert_eq!((fw, reason), (Firmware::Bios, "el_torito_bios_only"));
        assert_eq!(size, fs::metadata(&iso).unwrap().len());
        let mut forced = settings.clone();
        forced.firmware = Some(Firmware::Uefi);
        assert_eq!(check_iso(&iso, &forced).unwrap().1, "override");
    }
}
