//! Secure Boot with the user's own key (docs/secure-boot.md): the key pair
//! `hiperiso-build keys secure-boot` makes (openssl), and the ESP's boot
//! chain signed with it (Debian's sbsign) when the manifest's
//! `[secure-boot]` names it:
//!
//! ```text
//! EFI/BOOT/BOOTX64.EFI   shim, the user's signature added: Debian's (then
//!                        also signed by Microsoft: firmware with either in
//!                        db runs it), or the shim step's (from source, no
//!                        vendor certificate: it trusts db)
//! EFI/BOOT/grubx64.efi   GRUB signed with the user's key: the grub-image
//!                        step's BOOTX64.EFI (its own .sbat), or else
//!                        grub-mkimage of the tree, every module of the menu
//!                        built in (exFAT too), with the .sbat of Debian's
//!                        signed GRUB of the same version
//! EFI/BOOT/mmx64.efi     shim's MokManager (Debian-signed), when the tree
//!                        has it, for MOK enrolment
//! EFI/hiperiso/vmlinuz   the kernel, the user's signature added
//! ```
//!
//! Shim stays in the chain because GRUB 2.06 loads no kernel under Secure
//! Boot without it: an image made with `--disable-shim-lock` refuses both
//! `linux` and `chainloader` ("verification requested but nobody cares").
//! Shim checks GRUB, and GRUB asks shim to check the kernel, against db,
//! then MOK, then shim's vendor certificate (Debian's CA in Debian's shim).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use hiperiso_stick::io::{IoError, io_err};
use hiperiso_stick::paths::esp as paths;

use crate::payload::grub::{
    GrubError, Platform, SIGNED_GRUB, SIGNED_SHIM, grub_mkimage_with, real_path,
};

/// The file names `keys secure-boot` writes in its directory.
pub const KEY_FILE: &str = "secure-boot.key";
pub const CERT_FILE: &str = "secure-boot.crt";
pub const DER_FILE: &str = "secure-boot.cer";

/// shim built from source (the shim step; also Debian's shim-unsigned).
pub const UNSIGNED_SHIM: &str = "usr/lib/shim/shimx64.efi";
/// shim's MokManager (shim-helpers-amd64-signed).
const MOK_MANAGER: &str = "usr/lib/shim/mmx64.efi.signed";

#[derive(Debug, thiserror::Error)]
pub enum SecureBootError {
    #[error("{tool} failed ({status}): {stderr}")]
    Tool {
        tool: &'static str,
        status: String,
        stderr: String,
    },
    #[error("{0} exists: keys are never overwritten (move it away or pick another --dir)")]
    Exists(PathBuf),
    #[error(
        "[secure-boot] needs a shim in the payload tree: {SIGNED_SHIM} (the debian \
         profile's package shim-signed) or {UNSIGNED_SHIM} (the default profile's shim \
         step); GRUB 2.06 boots no kernel under Secure Boot without it"
    )]
    NoShim,
    #[error("{0} has no .sbat section (shim refuses a GRUB without one)")]
    NoSbat(PathBuf),
    #[error(transparent)]
    Grub(#[from] GrubError),
    #[error(transparent)]
    Io(#[from] IoError),
}

/// The user's signing key: a PEM private key and its PEM X.509 certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigningKey {
    pub key: PathBuf,
    pub cert: PathBuf,
}

impl SigningKey {
    /// The pair `keys secure-boot` wrote into `dir`.
    pub fn in_dir(dir: &Path) -> Self {
        Self {
            key: dir.join(KEY_FILE),
            cert: dir.join(CERT_FILE),
        }
    }
}

fn run(tool: &'static str, command: &mut Command) -> Result<(), SecureBootError> {
    let output = command
        .env("LC_ALL", "C")
        .output()
        .map_err(io_err("run", Path::new(tool)))?;
    match output.status.success() {
        true => Ok(()),
        false => Err(SecureBootError::Tool {
            tool,
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        }),
    }
}

/// Writes a new RSA-2048 key and a self-signed certificate for it (valid
/// for 100 years; firmware does not check the dates) into `dir`: the key
/// (mode 600), the certificate as PEM (sbsign, virt-fw-vars) and as DER
/// (firmware setup's "enroll from file", `mokutil --import`).
pub fn generate(dir: &Path, name: &str) -> Result<SigningKey, SecureBootError> {
    let key = SigningKey::in_dir(dir);
    let der = dir.join(DER_FILE);
    for file in [&key.key, &key.cert, &der] {
        if file.exists() {
            return Err(SecureBootError::Exists(file.clone()));
        }
    }
    fs::create_dir_all(dir).map_err(io_err("create", dir))?;
    // The key file is mode 600 before openssl writes into it.
    use std::os::unix::fs::OpenOptionsExt as _;
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&key.key)
        .map_err(io_err("create", &key.key))?;
    // RSA-2048: the only key type UEFI firmware must support for db.
    run(
        "openssl",
        Command::new("openssl")
            .args(["req", "-new", "-x509", "-newkey", "rsa:2048", "-nodes"])
            .args(["-sha256", "-days", "36500", "-subj"])
            .arg(format!("/CN={name}/"))
            .arg("-keyout")
            .arg(&key.key)
            .arg("-out")
            .arg(&key.cert),
    )?;
    run(
        "openssl",
        Command::new("openssl")
            .args(["x509", "-outform", "DER", "-in"])
            .arg(&key.cert)
            .arg("-out")
            .arg(&der),
    )?;
    Ok(key)
}

/// Adds `key`'s Authenticode signature to the PE image `file` (sbsign
/// keeps any signature it already has). sbsign puts the clock's time into
/// the signature (PKCS#7 signingTime), so it runs under Debian's faketime
/// at `epoch` (SOURCE_DATE_EPOCH): the same inputs sign to the same bytes.
pub fn sign(key: &SigningKey, file: &Path, epoch: i64) -> Result<(), SecureBootError> {
    let signed = file.with_extension("signing");
    run(
        "sbsign (under faketime: packages sbsigntool, faketime)",
        Command::new("faketime")
            .arg(format!("@{epoch}"))
            .arg("sbsign")
            .arg("--key")
            .arg(&key.key)
            .arg("--cert")
            .arg(&key.cert)
            .arg("--output")
            .arg(&signed)
            .arg(file),
    )?;
    fs::rename(&signed, file).map_err(io_err("rename", &signed))?;
    Ok(())
}

/// Where the user-signed chain's GRUB comes from.
#[derive(Debug, Clone, Copy)]
pub enum Grub<'a> {
    /// A finished EFI image with its own .sbat (the grub-image step's).
    Image(&'a Path),
    /// grub-mkimage of the tree, these modules built in, with the .sbat of
    /// Debian's signed GRUB (the debian profile).
    Modules(&'a [String]),
}

/// Signs the ESP tree `esp` (its kernel in place) with `key` and puts the
/// user-signed chain of the module's table into it: the tree's shim and
/// `grub`, in place of Debian's `EFI/debian/` and the loose modules (GRUB
/// loads none under Secure Boot). The signatures carry `epoch` as their
/// time.
pub fn sign_esp(
    root: &Path,
    esp: &Path,
    key: &SigningKey,
    grub: Grub,
    epoch: i64,
) -> Result<(), SecureBootError> {
    let shim = real_path(root, SIGNED_SHIM)
        .or_else(|_| real_path(root, UNSIGNED_SHIM))
        .map_err(|_| SecureBootError::NoShim)?;
    for dir in [paths::GRUB_MODULE_DIR, "EFI/debian"] {
        let dir = esp.join(dir);
        if dir.exists() {
            fs::remove_dir_all(&dir).map_err(io_err("remove", &dir))?;
        }
    }
    let boot = esp.join(paths::BOOT_EFI);
    let dir = boot.parent().unwrap_or(esp);
    fs::create_dir_all(dir).map_err(io_err("create", dir))?;
    let target = esp.join(paths::SIGNED_GRUB_EFI);
    match grub {
        Grub::Image(image) => {
            let bytes = fs::read(image).map_err(io_err("read", image))?;
            if hiperiso_installer::pe::section(&bytes, ".sbat").is_none() {
                return Err(SecureBootError::NoSbat(image.to_path_buf()));
            }
            fs::write(&target, bytes).map_err(io_err("write", &target))?;
        }
        Grub::Modules(modules) => grub_with_debian_sbat(root, esp, modules, &target)?,
    }
    sign(key, &target, epoch)?;
    sign(key, &esp.join(paths::VMLINUZ), epoch)?;
    fs::copy(&shim, &boot).map_err(io_err("copy", &shim))?;
    sign(key, &boot, epoch)?;
    if let Ok(mok_manager) = real_path(root, MOK_MANAGER) {
        let to = dir.join("mmx64.efi");
        fs::copy(&mok_manager, &to).map_err(io_err("copy", &mok_manager))?;
    }
    Ok(())
}

/// grub-mkimage of the tree into `grub`, `modules` built in, with the
/// .sbat of Debian's signed GRUB of the same version.
fn grub_with_debian_sbat(
    root: &Path,
    esp: &Path,
    modules: &[String],
    grub: &Path,
) -> Result<(), SecureBootError> {
    let signed_grub = real_path(root, SIGNED_GRUB)?;
    let image = fs::read(&signed_grub).map_err(io_err("read", &signed_grub))?;
    let sbat = hiperiso_installer::pe::section(&image, ".sbat")
        .ok_or_else(|| SecureBootError::NoSbat(signed_grub.clone()))?;
    let sbat_csv = esp.join("sbat.csv");
    let text: Vec<u8> = sbat.iter().copied().take_while(|&b| b != 0).collect();
    fs::write(&sbat_csv, text).map_err(io_err("write", &sbat_csv))?;
    let made = grub_mkimage_with(
        root,
        Platform::Efi,
        modules,
        grub,
        &["--sbat".as_ref(), sbat_csv.as_os_str()],
    );
    fs::remove_file(&sbat_csv).map_err(io_err("remove", &sbat_csv))?;
    Ok(made?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Signing is reproducible: two signatures of one image, made at
    /// different times with one key and one epoch, are the same bytes.
    #[test]
    fn signatures_are_reproducible() {
        if !hiperiso_prereq::tools(&[
            ("openssl", "openssl"),
            ("sbsign", "sbsigntool"),
            ("faketime", "faketime"),
            ("grub-mkimage", "grub-common"),
        ]) || !hiperiso_prereq::file("/usr/lib/grub/x86_64-efi/normal.mod", "grub-efi-amd64-bin")
        {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let key = generate(&dir.path().join("keys"), "test").unwrap();
        let image = dir.path().join("grub.efi");
        grub_image(&image);
        let unsigned = fs::read(&image).unwrap();
        let mut signed = Vec::new();
        for _ in 0..2 {
            fs::write(&image, &unsigned).unwrap();
            sign(&key, &image, 1_700_000_000).unwrap();
            signed.push(fs::read(&image).unwrap());
            std::thread::sleep(std::time::Duration::from_millis(1100));
        }
        assert!(signed[0].len() > unsigned.len());
        assert!(signed[0] == signed[1], "two signatures of one image differ");
    }

    /// A small GRUB EFI image made by the host's grub-mkimage (no .sbat).
    fn grub_image(image: &Path) {
        let status = Command::new("grub-mkimage")
            .args(["-O", "x86_64-efi", "-p", "/EFI/BOOT", "-o"])
            .arg(image)
            .arg("normal")
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// A GRUB image without .sbat (shim would refuse it) is an error
    /// naming it, before anything on the ESP is signed.
    #[test]
    fn a_grub_image_without_sbat_is_refused() {
        if !hiperiso_prereq::tools(&[("grub-mkimage", "grub-common")])
            || !hiperiso_prereq::file("/usr/lib/grub/x86_64-efi/normal.mod", "grub-efi-amd64-bin")
        {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let shim = dir.path().join("root").join(UNSIGNED_SHIM);
        fs::create_dir_all(shim.parent().unwrap()).unwrap();
        fs::write(&shim, "shim").unwrap();
        let image = dir.path().join("grub.efi");
        grub_image(&image);
        let esp = dir.path().join("esp");
        let kernel = esp.join(paths::VMLINUZ);
        fs::create_dir_all(kernel.parent().unwrap()).unwrap();
        fs::write(&kernel, "kernel").unwrap();
        let key = SigningKey::in_dir(dir.path());
        let err = sign_esp(&dir.path().join("root"), &esp, &key, Grub::Image(&image), 0);
        assert!(
            matches!(err, Err(SecureBootError::NoSbat(ref p)) if *p == image),
            "{err:?}"
        );
        assert_eq!(fs::read(&kernel).unwrap(), b"kernel");
    }

    #[test]
    fn generate_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(CERT_FILE), "mine").unwrap();
        let err = generate(dir.path(), "x").unwrap_err();
        assert!(
            matches!(err, SecureBootError::Exists(ref p) if p.ends_with(CERT_FILE)),
            "{err}"
        );
        assert_eq!(
            fs::read_to_string(dir.path().join(CERT_FILE)).unwrap(),
            "mine"
        );
    }
}
