//! `hiperiso.toml`: the schema, its validation and error locations.
//!
//! Every table denies unknown keys. Errors name the file, the line and
//! column, and the dotted field (`sources.linux.sha256`), e.g.
//!
//! ```text
//! hiperiso.toml:14:1: sources.linux.shaa256: unknown field `shaa256`, expected one of ...
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub(crate) use crate::model::spans::invalid;
use crate::model::spans::locate;

pub use crate::model::source::{
    DEBIAN_MIRROR_ENV, Origin, Source, Watch, debian_pool_prefix, render,
};
pub use crate::model::spans::{Invalid, ManifestError};

/// File name of the manifest looked up in the current directory.
pub const DEFAULT_MANIFEST: &str = "hiperiso.toml";

/// The parsed manifest. Field names match the TOML keys (kebab-case in the
/// file, snake_case here).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Where the manifest was read from (not part of the TOML).
    #[serde(skip)]
    pub path: PathBuf,
    pub image: Image,
    #[serde(default)]
    pub mirrors: Mirrors,
    #[serde(default)]
    pub debian: Debian,
    /// The tools tree build steps run on (`/` in the sandbox).
    #[serde(default)]
    pub tools: Tools,
    /// Shared step caches (OCI registries) and whom to trust.
    #[serde(default)]
    pub cache: CacheConfig,
    #[serde(default)]
    pub sources: BTreeMap<String, Source>,
    #[serde(default)]
    pub profiles: BTreeMap<String, Profile>,
    /// The user's own Secure Boot key that signs the boot chain
    /// (docs/secure-boot.md); none: the debian profile's Debian-signed chain.
    #[serde(default, rename = "secure-boot")]
    pub secure_boot: Option<SecureBoot>,
}

/// `[secure-boot]`: the pair `hiperiso-build keys secure-boot` writes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecureBoot {
    /// The private key (PEM), relative to the manifest.
    pub key: PathBuf,
    /// Its X.509 certificate (PEM), relative to the manifest.
    pub cert: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Image {
    pub name: String,
    /// Seed for every GUID, serial and other pseudo-random value.
    pub seed: String,
    #[serde(default)]
    pub table: PartitionTable,
    /// Size of the image file: bytes or a string such as "2GiB".
    pub size: ByteSize,
    #[serde(default = "default_data_label")]
    pub data_label: String,
    #[serde(default = "default_esp_label")]
    pub esp_label: String,
    pub source_date_epoch: u64,
    /// Profile used when `--profile` is not given.
    #[serde(default = "default_profile")]
    pub profile: String,
}

fn default_data_label() -> String {
    "HIPERISO".into()
}
fn default_esp_label() -> String {
    "HIPERISOEFI".into()
}
fn default_profile() -> String {
    "default".into()
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PartitionTable {
    #[default]
    Gpt,
    Mbr,
}

impl fmt::Display for PartitionTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Gpt => "gpt",
            Self::Mbr => "mbr",
        })
    }
}

/// Debian mirror base URLs (the directory holding `dists/` and `pool/`).
/// Empty: `$HIPERISO_DEBIAN_MIRROR`, else the host's apt sources.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mirrors {
    #[serde(default)]
    pub debian: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Debian {
    #[serde(default = "default_suite")]
    pub suite: String,
    #[serde(default = "default_components")]
    pub components: Vec<String>,
    #[serde(default = "default_arch")]
    pub arch: String,
    /// The `debian-archive-keyring` package whose keyring verifies the
    /// suite's InRelease (the trust root). Absent: the host's keyring.
    #[serde(default)]
    pub keyring: Option<KeyringPin>,
    /// Packages treated as installed but never unpacked (see `lock`).
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Kernel modules for the initramfs (default: the payload's list).
    #[serde(default, rename = "kernel-modules")]
    pub kernel_modules: Option<Vec<String>>,
}

/// `[tools]`: the Debian packages unpacked into the tools tree, resolved
/// with their closure into the lock's `[tools]` table. Essential packages
/// (shell, coreutils, ...) are not implied: list what steps run.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tools {
    #[serde(default)]
    pub packages: Vec<String>,
}

/// `[cache]`: OCI registries that share built steps (see
/// `steps/remote.rs`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct CacheConfig {
    /// `oci://HOST[:PORT]/REPO`, looked up in order before a step builds.
    #[serde(default)]
    pub registries: Vec<String>,
    /// Push every built step to `registries` (as `--cache-to` does).
    #[serde(default)]
    pub push: bool,
    /// `NAME:HEX` public keys (the text of a `.pub` file written by
    /// `hiperiso-build keys`) whose signed records are used.
    #[serde(default)]
    pub trusted_keys: Vec<String>,
    /// The key that signs pushed records, relative to the manifest
    /// (default: `$HIPERISO_SIGNING_KEY`, else the one `keys` writes).
    #[serde(default)]
    pub signing_key: Option<PathBuf>,
}

/// A pinned `debian-archive-keyring` package.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct KeyringPin {
    pub version: String,
    pub sha256: String,
}

impl Default for Debian {
    fn default() -> Self {
        Self {
            suite: default_suite(),
            components: default_components(),
            arch: default_arch(),
            keyring: None,
            exclude: Vec::new(),
            kernel_modules: None,
        }
    }
}

fn default_suite() -> String {
    "bookworm".into()
}
fn default_components() -> Vec<String> {
    vec!["main".into()]
}
fn default_arch() -> String {
    "amd64".into()
}

/// A profile selects what goes into the image.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Profile {
    #[serde(default)]
    pub description: String,
    /// Names of `[sources.*]` this profile fetches and builds.
    #[serde(default)]
    pub sources: Vec<String>,
    /// Debian binary packages this profile takes prebuilt (see `lock`).
    #[serde(default)]
    pub packages: Vec<String>,
    /// Build steps (recipes) `image` builds for this profile; their output
    /// hashes go into the ESP's build.json.
    #[serde(default)]
    pub steps: Vec<String>,
    /// Where the ESP payload (GRUB, kernel, initramfs, firmware) comes
    /// from; none: the ESP holds only `overlays/esp`.
    #[serde(default)]
    pub payload: Option<PayloadFrom>,
}

/// A profile's `payload`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PayloadFrom {
    /// Unpacked from the profile's locked Debian `packages`.
    Packages,
    /// Laid together from the outputs of the profile's `steps`.
    Steps,
}

/// A size in bytes; in TOML an integer or a string with a binary suffix
/// (`K`, `KiB`, `M`, `MiB`, `G`, `GiB`, `T`, `TiB`) or a decimal one (`KB`,
/// `MB`, `GB`, `TB`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl ByteSize {
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let split = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (digits, suffix) = text.split_at(split);
        let number: u64 = digits
            .parse()
            .map_err(|_| format!("size {text:?} must start with a number, e.g. \"2GiB\""))?;
        let multiplier: u64 = match suffix.trim() {
            "" | "B" => 1,
            "K" | "KiB" => 1 << 10,
            "M" | "MiB" => 1 << 20,
            "G" | "GiB" => 1 << 30,
            "T" | "TiB" => 1 << 40,
            "KB" | "kB" => 1_000,
            "MB" => 1_000_000,
            "GB" => 1_000_000_000,
            "TB" => 1_000_000_000_000,
            other => {
                return Err(format!(
                    "size {text:?} has unknown unit {other:?} (use KiB, MiB, GiB, TiB)"
                ));
            }
        };
        number
            .checked_mul(multiplier)
            .map(ByteSize)
            .ok_or_else(|| format!("size {text:?} is too large"))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let units = [
            (1u64 << 40, "TiB"),
            (1 << 30, "GiB"),
            (1 << 20, "MiB"),
            (1 << 10, "KiB"),
        ];
        for (unit, name) in units {
            if self.0 >= unit && self.0.is_multiple_of(unit) {
                return write!(f, "{}{name}", self.0 / unit);
            }
        }
        write!(f, "{}B", self.0)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either {
            Int(u64),
            Text(String),
        }
        match Either::deserialize(deserializer)? {
            Either::Int(n) => Ok(ByteSize(n)),
            Either::Text(s) => ByteSize::parse(&s).map_err(serde::de::Error::custom),
        }
    }
}

impl Manifest {
    /// Reads and validates a manifest file.
    pub fn load(path: &Path) -> Result<Self, ManifestError> {
        let text = std::fs::read_to_string(path).map_err(|source| ManifestError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses and validates manifest text; `path` is used in messages.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ManifestError> {
        let mut manifest: Manifest = toml::from_str(text).map_err(|e| {
            let span = e.span().unwrap_or(0..0);
            invalid(text, path, span, e.message().trim())
        })?;
        manifest.path = path.to_path_buf();
        manifest.validate(text)?;
        Ok(manifest)
    }

    fn validate(&self, text: &str) -> Result<(), ManifestError> {
        let err = |keys: &[&str], message: String| {
            ManifestError::Invalid(Box::new(locate(text, &self.path, keys, message)))
        };
        for name in self.sources.keys() {
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err(err(
                    &["sources", name],
                    format!("source name {name:?} may only use letters, digits, `-` and `_`"),
                ));
            }
        }
        for (profile_name, profile) in &self.profiles {
            let empty = match profile.payload {
                Some(PayloadFrom::Packages) => profile.packages.is_empty().then_some("packages"),
                Some(PayloadFrom::Steps) => profile.steps.is_empty().then_some("steps"),
                None => None,
            };
            if let Some(list) = empty {
                return Err(err(
                    &["profiles", profile_name, "payload"],
                    format!("the payload comes from `{list}`, but the profile lists none"),
                ));
            }
            for (i, source) in profile.sources.iter().enumerate() {
                if !self.sources.contains_key(source) {
                    let known = self.sources.keys().cloned().collect::<Vec<_>>().join(", ");
                    let i = i.to_string();
                    return Err(err(
                        &["profiles", profile_name, "sources", &i],
                        format!("no source named `{source}` (defined: {known})"),
                    ));
                }
            }
        }
        if !self.profiles.contains_key(&self.image.profile) {
            return Err(err(
                &["image", "profile"],
                format!(
                    "profile `{}` is not defined under [profiles]",
                    self.image.profile
                ),
            ));
        }
        let label = &self.image.data_label;
        if label.is_empty() || label.chars().count() > 11 {
            return Err(err(
                &["image", "data-label"],
                format!("exFAT label {label:?} must be 1 to 11 characters"),
            ));
        }
        let label = &self.image.esp_label;
        if label.is_empty()
            || label.len() > 11
            || !label
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b"-_ ".contains(&b))
        {
            return Err(err(
                &["image", "esp-label"],
                format!(
                    "FAT label {label:?} must be 1 to 11 characters of A-Z, 0-9, `-`, `_` or space"
                ),
            ));
        }
        if self.image.size.0 < 64 << 20 || !self.image.size.0.is_multiple_of(1 << 20) {
            return Err(err(
                &["image", "size"],
                format!(
                    "size {} must be a whole number of MiB, at least 64MiB",
                    self.image.size
                ),
            ));
        }
        for (i, mirror) in self.mirrors.debian.iter().enumerate() {
            if !(mirror.starts_with("http://")
                || mirror.starts_with("https://")
                || mirror.starts_with("file://"))
            {
                return Err(err(
                    &["mirrors", "debian", &i.to_string()],
                    format!("mirror {mirror:?} must be an http(s):// or file:// URL"),
                ));
            }
        }
        Ok(())
    }

    /// The profile chosen by `--profile` (if given) or `[image] profile`.
    pub fn profile(&self, requested: Option<&str>) -> Result<(&str, &Profile), ManifestError> {
        let name = requested.unwrap_or(&self.image.profile);
        self.profiles
            .get_key_value(name)
            .map(|(k, v)| (k.as_str(), v))
            .ok_or_else(|| ManifestError::UnknownProfile {
                path: self.path.clone(),
                profile: name.to_string(),
                known: self.profiles.keys().cloned().collect::<Vec<_>>().join(", "),
            })
    }

    /// Sources of a profile, in the profile's order.
    pub fn active_sources(&self, profile: &Profile) -> Vec<(&str, &Source)> {
        profile
            .sources
            .iter()
            .filter_map(|name| self.sources.get_key_value(name))
            .map(|(k, v)| (k.as_str(), v))
            .collect()
    }

    /// Looks a source up by name, with an error listing the known names.
    pub fn source(&self, name: &str) -> Result<&Source, ManifestError> {
        self.sources
            .get(name)
            .ok_or_else(|| ManifestError::UnknownSource {
                path: self.path.clone(),
                name: name.to_string(),
                known: self.sources.keys().cloned().collect::<Vec<_>>().join(", "),
            })
    }

    /// The named sources, or the profile's sources when `names` is empty.
    pub fn select_sources<'a>(
        &'a self,
        profile: &'a Profile,
        names: &[String],
    ) -> Result<Vec<(&'a str, &'a Source)>, ManifestError> {
        if names.is_empty() {
            return Ok(self.active_sources(profile));
        }
        names
            .iter()
            .map(|name| {
                self.source(name)?;
                Ok(self
                    .sources
                    .get_key_value(name)
                    .map(|(k, v)| (k.as_str(), v))
                    .expect("checked"))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;
