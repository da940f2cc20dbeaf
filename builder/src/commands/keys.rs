//! `hiperiso-build keys`: key pairs. Each kind is one [`KeyKind`]; today
//! the cache-signing pair (steps/trust.rs) that signs shared step records.

use crate::cli::{KeyKind, KeysArgs};
use crate::commands::error::Result;
use crate::settings::Settings;
use crate::steps::remote::default_key_dir;
use crate::steps::trust::SecretKey;

/// The name of a cache key when `--name` is not given.
pub const DEFAULT_CACHE_KEY_NAME: &str = "hiperiso-cache-1";

/// `hiperiso-build keys [cache] [--dir DIR] [--name NAME]`.
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
    }
    Ok(())
}
