//! `hiperiso-build keys`: key pairs. Each kind is one [`KeyKind`]: the
//! cache-signing pair (steps/trust.rs) that signs shared step records, and
//! the user's Secure Boot key (payload/secure_boot.rs).

use crate::cli::{KeyKind, KeysArgs};
use crate::commands::error::Result;
use crate::payload::secure_boot::{self, DER_FILE};
use crate::settings::Settings;
use crate::steps::remote::default_key_dir;
use crate::steps::trust::SecretKey;

/// The name of a cache key when `--name` is not given.
pub const DEFAULT_CACHE_KEY_NAME: &str = "hiperiso-cache-1";
/// The certificate's common name when `--name` is not given.
pub const DEFAULT_SECURE_BOOT_NAME: &str = "hiperiso Secure Boot key";

/// `hiperiso-build keys [cache|secure-boot] [--dir DIR] [--name NAME]`.
pub fn keys(settings: &Settings, args: &KeysArgs) -> Result<()> {
    let dir = args.dir.clone().unwrap_or_else(default_key_dir);
    match args.kind.clone().unwrap_or(KeyKind::Cache) {
        KeyKind::Cache => {
            let name = args.name.as_deref().unwrap_or(DEFAULT_CACHE_KEY_NAME);
            let key = SecretKey::generate(name)?;
            let (secret, public) = key.write(&dir)?;
            settings.say(format!(
                "wrote {} (secret: keep it on the machines that push) and {}\n\
                 trust it in hiperiso.toml:\n  [cache]\n  trusted-keys = [\"{}\"]",
                secret.display(),
                public.display(),
                key.public().text()
            ));
        }
        KeyKind::SecureBoot => {
            let name = args.name.as_deref().unwrap_or(DEFAULT_SECURE_BOOT_NAME);
            let key = secure_boot::generate(&dir, name)?;
            settings.say(format!(
                "wrote {} (secret: it signs what your PCs will boot), {} and {}\n\
                 sign the stick's boot chain with it in hiperiso.toml:\n  [secure-boot]\n  \
                 key = \"{}\"\n  cert = \"{}\"\n\
                 then enroll {} in the PC's db (firmware setup) or, debian profile only, as a MOK \
                 (mokutil --import); \
                 see docs/secure-boot.md",
                key.key.display(),
                key.cert.display(),
                dir.join(DER_FILE).display(),
                key.key.display(),
                key.cert.display(),
                dir.join(DER_FILE).display(),
            ));
        }
    }
    Ok(())
}
