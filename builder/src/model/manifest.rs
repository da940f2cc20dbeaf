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
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::hash::is_sha256_hex;

/// Environment variable naming Debian mirror base URLs (`[mirrors]`
/// overrides it).
pub const DEBIAN_MIRROR_ENV: &str = "HIPERISO_DEBIAN_MIRROR";

/// File name of the manifest looked up in the current directory.
pub const DEFAULT_MANIFEST: &str = "hiperiso.toml";

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("cannot read manifest {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}", .0)]
    Invalid(Box<Invalid>),
    #[error("{path}: profile `{profile}` is not defined (profiles: {known})")]
    UnknownProfile {
        path: PathBuf,
        profile: String,
        known: String,
    },
    #[error("{path}: no source named `{name}` (sources: {known})")]
    UnknownSource {
        path: PathBuf,
        name: String,
        known: String,
    },
}

/// A located validation error: file, line, column, field and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub path: PathBuf,
    /// 1-based; 0 when the position is unknown.
    pub line: usize,
    pub column: usize,
    /// Dotted key path such as `sources.linux.sha256` (may be empty).
    pub field: String,
    pub message: String,
    /// The offending line of the file, for context.
    pub snippet: String,
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.path.display(), self.line, self.column)?;
        if !self.field.is_empty() {
            write!(f, "{}: ", self.field)?;
        }
        write!(f, "{}", self.message)?;
        if !self.snippet.is_empty() {
            write!(f, "\n  {:>4} | {}", self.line, self.snippet)?;
        }
        Ok(())
    }
}

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
    #[serde(default)]
    pub sources: BTreeMap<String, Source>,
    #[serde(default)]
    pub profiles: BTreeMap<String, Profile>,
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

/// One pinned upstream input.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", try_from = "RawSource")]
pub struct Source {
    pub version: String,
    pub origin: Origin,
    /// Expected sha256 (lowercase hex); `None` until `pin` fills it in.
    pub sha256: Option<String>,
    pub size: Option<u64>,
    /// More URL templates, tried in order after the primary one.
    pub mirrors: Vec<String>,
    pub watch: Option<Watch>,
}

/// Where a source's bytes come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A URL template with `{version}` (and optionally `{debian}`, `{name}`).
    Url(String),
    /// A file of a Debian source package in the pool:
    /// `{debian}/pool/<component>/<prefix>/<package>/<file>`.
    DebianSource {
        package: String,
        component: String,
        /// File name template, e.g. `busybox_{version}.orig.tar.bz2`.
        file: String,
    },
}

/// How `bump --check` and `bump --latest` find newer versions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Watch {
    /// A directory index page; `regex` has one capture group: the version.
    Index { index: String, regex: String },
    /// The Sources index of a Debian suite; `package` defaults to the
    /// source's `debian-source` package, else its name.
    DebianSources {
        suite: String,
        package: Option<String>,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawSource {
    version: String,
    url: Option<String>,
    debian_source: Option<String>,
    component: Option<String>,
    file: Option<String>,
    sha256: Option<String>,
    size: Option<u64>,
    #[serde(default)]
    mirrors: Vec<String>,
    watch: Option<RawWatch>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawWatch {
    index: Option<String>,
    regex: Option<String>,
    debian_sources: Option<String>,
    package: Option<String>,
}

impl TryFrom<RawSource> for Source {
    type Error = String;

    fn try_from(raw: RawSource) -> Result<Self, String> {
        if raw.version.trim().is_empty() || raw.version.contains(['/', ' ']) {
            return Err(format!(
                "`version` {:?} must be non-empty, without spaces or slashes",
                raw.version
            ));
        }
        let origin = match (raw.url, raw.debian_source) {
            (Some(url), None) => {
                if raw.file.is_some() || raw.component.is_some() {
                    return Err(
                        "`file` and `component` go with `debian-source`, not with `url`".into(),
                    );
                }
                check_template(&url, "url")?;
                Origin::Url(url)
            }
            (None, Some(package)) => {
                let file = raw.file.ok_or(
                    "`debian-source` needs `file`, e.g. \"{package}_{version}.orig.tar.xz\"",
                )?;
                check_template(&file, "file")?;
                Origin::DebianSource {
                    package,
                    component: raw.component.unwrap_or_else(|| "main".into()),
                    file,
                }
            }
            (Some(_), Some(_)) => {
                return Err("give either `url` or `debian-source`, not both".into());
            }
            (None, None) => {
                return Err("missing `url` (a template with {version}) or `debian-source`".into());
            }
        };
        if let Some(sha) = &raw.sha256
            && !is_sha256_hex(sha)
        {
            return Err(format!("`sha256` {sha:?} is not 64 lowercase hex digits"));
        }
        for mirror in &raw.mirrors {
            check_template(mirror, "mirrors")?;
        }
        let watch = raw.watch.map(Watch::try_from).transpose()?;
        Ok(Source {
            version: raw.version,
            origin,
            sha256: raw.sha256,
            size: raw.size,
            mirrors: raw.mirrors,
            watch,
        })
    }
}

impl TryFrom<RawWatch> for Watch {
    type Error = String;

    fn try_from(raw: RawWatch) -> Result<Self, String> {
        match (raw.index, raw.regex, raw.debian_sources) {
            (Some(index), Some(regex), None) if raw.package.is_none() => {
                let compiled = regex::Regex::new(&regex).map_err(|e| format!("`watch.regex` is invalid: {e}"))?;
                if compiled.captures_len() < 2 {
                    return Err("`watch.regex` needs a capture group around the version".into());
                }
                Ok(Watch::Index { index, regex })
            }
            (None, None, Some(suite)) => Ok(Watch::DebianSources {
                suite,
                package: raw.package,
            }),
            _ => Err("`watch` is either { index = URL, regex = \"...(version)...\" } or { debian-sources = \"SUITE\" [, package = \"NAME\"] }".into()),
        }
    }
}

const PLACEHOLDERS: [&str; 4] = ["{version}", "{debian}", "{name}", "{package}"];

fn check_template(template: &str, key: &str) -> Result<(), String> {
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        let Some(len) = rest[start..].find('}') else {
            return Err(format!("`{key}` {template:?} has an unclosed `{{`"));
        };
        let placeholder = &rest[start..start + len + 1];
        if !PLACEHOLDERS.contains(&placeholder) {
            return Err(format!(
                "`{key}` {template:?} uses unknown placeholder {placeholder} (known: {})",
                PLACEHOLDERS.join(", ")
            ));
        }
        rest = &rest[start + len + 1..];
    }
    if key != "mirrors" && !template.contains("{version}") {
        return Err(format!(
            "`{key}` {template:?} must contain {{version}} so that bump can change it"
        ));
    }
    Ok(())
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

/// Debian's pool directory prefix of a source package: `libx` for `libxyz`,
/// else the first letter.
pub fn debian_pool_prefix(package: &str) -> &str {
    if package.starts_with("lib") && package.len() > 3 {
        &package[..4]
    } else {
        &package[..package.len().min(1)]
    }
}

impl Source {
    /// The primary and mirror URL templates, in order.
    pub fn templates(&self) -> Vec<String> {
        let primary = match &self.origin {
            Origin::Url(url) => url.clone(),
            Origin::DebianSource {
                package,
                component,
                file,
            } => {
                format!(
                    "{{debian}}/pool/{component}/{}/{package}/{file}",
                    debian_pool_prefix(package)
                )
            }
        };
        std::iter::once(primary)
            .chain(self.mirrors.iter().cloned())
            .collect()
    }

    /// The Debian source package name, if the source comes from Debian.
    pub fn debian_package(&self) -> Option<&str> {
        match &self.origin {
            Origin::DebianSource { package, .. } => Some(package),
            Origin::Url(_) => None,
        }
    }

    /// The file name this source has for `version` (the last URL segment).
    pub fn file_name(&self, name: &str, version: &str) -> String {
        let template = match &self.origin {
            Origin::Url(url) => url.rsplit('/').next().unwrap_or(url).to_string(),
            Origin::DebianSource { file, .. } => file.clone(),
        };
        render(
            &template,
            name,
            self.debian_package().unwrap_or(name),
            version,
            None,
        )
    }

    /// Every candidate URL for `version`, templates in order and, for each
    /// template using `{debian}`, every Debian mirror in order.
    pub fn urls(
        &self,
        name: &str,
        version: &str,
        debian_mirrors: &[String],
    ) -> Result<Vec<String>, String> {
        let package = self.debian_package().unwrap_or(name);
        let mut urls = Vec::new();
        for template in self.templates() {
            if template.contains("{debian}") {
                if debian_mirrors.is_empty() {
                    return Err(format!(
                        "source `{name}` needs a Debian mirror: set [mirrors] debian, {} or an apt source",
                        DEBIAN_MIRROR_ENV
                    ));
                }
                for mirror in debian_mirrors {
                    urls.push(render(&template, name, package, version, Some(mirror)));
                }
            } else {
                urls.push(render(&template, name, package, version, None));
            }
        }
        urls.dedup();
        Ok(urls)
    }
}

/// Expands the placeholders of a URL or file-name template.
pub fn render(
    template: &str,
    name: &str,
    package: &str,
    version: &str,
    debian: Option<&str>,
) -> String {
    let mut out = template
        .replace("{version}", version)
        .replace("{name}", name)
        .replace("{package}", package);
    if let Some(base) = debian {
        out = out.replace("{debian}", base.trim_end_matches('/'));
    }
    out
}

fn line_col(text: &str, offset: usize) -> (usize, usize, String) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    let line_end = text[line_start..]
        .find('\n')
        .map_or(text.len(), |i| line_start + i);
    (
        line,
        column,
        text[line_start..line_end].trim_end().to_string(),
    )
}

pub(crate) fn invalid(text: &str, path: &Path, span: Range<usize>, message: &str) -> ManifestError {
    let (line, column, snippet) = line_col(text, span.start);
    let field = toml_edit::Document::parse(text)
        .map(|doc| field_at(doc.as_item(), span.start, String::new()))
        .unwrap_or_default();
    ManifestError::Invalid(Box::new(Invalid {
        path: path.to_path_buf(),
        line,
        column,
        field,
        message: message.to_string(),
        snippet,
    }))
}

/// The dotted path of the deepest key whose key or value contains `offset`.
fn field_at(item: &toml_edit::Item, offset: usize, prefix: String) -> String {
    let contains = |span: Option<Range<usize>>| {
        span.is_some_and(|s| s.contains(&offset) || (s.start == offset && s.is_empty()))
    };
    let join = |key: &str| {
        if prefix.is_empty() {
            key.to_string()
        } else {
            format!("{prefix}.{key}")
        }
    };
    let mut best = prefix.clone();
    if let Some(table) = item.as_table_like() {
        for (key, child) in table.iter() {
            let key_span = table.get_key_value(key).and_then(|(k, _)| k.span());
            if contains(key_span) {
                return join(key);
            }
            if contains(child.span()) {
                best = field_at(child, offset, join(key));
            } else if let Some(found) = child
                .as_table_like()
                .map(|_| field_at(child, offset, join(key)))
                .filter(|found| *found != join(key))
            {
                best = found;
            }
        }
    } else if let Some(array) = item.as_array() {
        for (i, value) in array.iter().enumerate() {
            if contains(value.span()) {
                return join(&i.to_string());
            }
        }
    }
    best
}

/// Builds an [`Invalid`] pointing at the value of a dotted key path
/// (array indices as decimal strings).
fn locate(text: &str, path: &Path, keys: &[&str], message: String) -> Invalid {
    let mut offset = 0;
    if let Ok(doc) = toml_edit::Document::parse(text) {
        let mut item = Some(doc.as_item());
        for key in keys {
            let Some(current) = item else { break };
            if let Some(span) = current.span() {
                offset = span.start;
            }
            let next = match (
                current.as_table_like(),
                current.as_array(),
                key.parse::<usize>(),
            ) {
                (Some(table), _, _) => {
                    if let Some(span) = table.get_key_value(key).and_then(|(k, _)| k.span()) {
                        offset = span.start;
                    }
                    table.get(key)
                }
                (None, Some(array), Ok(i)) => {
                    if let Some(span) = array.get(i).and_then(|v| v.span()) {
                        offset = span.start;
                    }
                    None
                }
                _ => None,
            };
            item = next;
        }
    }
    let (line, column, snippet) = line_col(text, offset);
    Invalid {
        path: path.to_path_buf(),
        line,
        column,
        field: keys.join("."),
        message,
        snippet,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[image]
name = "t"
seed = "s"
size = "128MiB"
source-date-epoch = 1

[sources.foo]
version = "1.0"
url = "http://example.invalid/foo-{version}.tar.gz"
watch = { index = "http://example.invalid/", regex = 'foo-([0-9.]+)\.tar\.gz' }

[sources.bar]
version = "2.0"
debian-source = "libbar"
file = "{package}_{version}.orig.tar.xz"

[profiles.default]
sources = ["foo", "bar"]
"#;

    fn parse(text: &str) -> Result<Manifest, ManifestError> {
        Manifest::parse(text, Path::new("m.toml"))
    }

    fn invalid_of(text: &str) -> Invalid {
        match parse(text).unwrap_err() {
            ManifestError::Invalid(inv) => *inv,
            other => panic!("expected Invalid, got {other}"),
        }
    }

    #[test]
    fn parses_and_renders_urls() {
        let m = parse(GOOD).unwrap();
        assert_eq!(m.image.size, ByteSize(128 << 20));
        assert_eq!(m.image.table, PartitionTable::Gpt);
        let (name, profile) = m.profile(None).unwrap();
        assert_eq!(name, "default");
        let bar = m.source("bar").unwrap();
        assert_eq!(
            bar.urls(
                "bar",
                "2.0",
                &["http://m1/debian/".into(), "http://m2/debian".into()]
            )
            .unwrap(),
            vec![
                "http://m1/debian/pool/main/libb/libbar/libbar_2.0.orig.tar.xz",
                "http://m2/debian/pool/main/libb/libbar/libbar_2.0.orig.tar.xz"
            ]
        );
        assert!(bar.urls("bar", "2.0", &[]).is_err());
        assert_eq!(m.active_sources(profile).len(), 2);
        assert_eq!(
            m.source("foo").unwrap().file_name("foo", "1.1"),
            "foo-1.1.tar.gz"
        );
    }

    #[test]
    fn a_payload_needs_what_it_is_made_from() {
        let text = GOOD.replace(
            "sources = [\"foo\", \"bar\"]",
            "sources = [\"foo\", \"bar\"]\npayload = \"steps\"",
        );
        let inv = invalid_of(&text);
        assert_eq!(inv.field, "profiles.default.payload", "{inv}");
        assert!(
            inv.message
                .contains("comes from `steps`, but the profile lists none"),
            "{inv}"
        );
        let text = text.replace(
            "payload = \"steps\"",
            "payload = \"steps\"\nsteps = [\"x\"]",
        );
        assert_eq!(
            parse(&text).unwrap().profiles["default"].payload,
            Some(PayloadFrom::Steps)
        );
        let inv = invalid_of(&text.replace("payload = \"steps\"", "payload = \"iso\""));
        assert_eq!(inv.field, "profiles.default.payload", "{inv}");
    }

    #[test]
    fn unknown_key_names_line_and_field() {
        let text = GOOD.replace("version = \"2.0\"", "version = \"2.0\"\nshaa256 = \"x\"");
        let inv = invalid_of(&text);
        let line = text.lines().position(|l| l.starts_with("shaa256")).unwrap() + 1;
        assert_eq!(inv.line, line, "{inv}");
        assert!(inv.message.contains("unknown field `shaa256`"), "{inv}");
        assert_eq!(inv.field, "sources.bar.shaa256", "{inv}");
        assert!(
            inv.to_string().starts_with(&format!("m.toml:{line}:")),
            "{inv}"
        );
    }

    #[test]
    fn bad_sha256_names_the_source() {
        let text = GOOD.replace("version = \"1.0\"", "version = \"1.0\"\nsha256 = \"XYZ\"");
        let inv = invalid_of(&text);
        assert!(inv.message.contains("not 64 lowercase hex"), "{inv}");
        assert!(inv.field.starts_with("sources.foo"), "{inv}");
        assert!((8..=12).contains(&inv.line), "{inv}");
    }

    #[test]
    fn unknown_profile_source_points_at_the_entry() {
        let text = GOOD.replace(r#"sources = ["foo", "bar"]"#, r#"sources = ["foo", "baz"]"#);
        let inv = invalid_of(&text);
        let line = text.lines().position(|l| l.contains("\"baz\"")).unwrap() + 1;
        assert_eq!(inv.line, line, "{inv}");
        assert_eq!(inv.field, "profiles.default.sources.1");
        assert!(inv.message.contains("no source named `baz`"));
    }

    #[test]
    fn bad_table_and_size() {
        let inv = invalid_of(&GOOD.replace("seed = \"s\"", "seed = \"s\"\ntable = \"apm\""));
        assert_eq!((inv.line, inv.field.as_str()), (5, "image.table"), "{inv}");
        let inv = invalid_of(&GOOD.replace("128MiB", "12 parsecs"));
        assert_eq!((inv.line, inv.field.as_str()), (5, "image.size"), "{inv}");
    }

    #[test]
    fn byte_sizes() {
        assert_eq!(ByteSize::parse("2GiB").unwrap(), ByteSize(2 << 30));
        assert_eq!(ByteSize::parse("512M").unwrap(), ByteSize(512 << 20));
        assert_eq!(ByteSize::parse("1000").unwrap(), ByteSize(1000));
        assert!(ByteSize::parse("GiB").is_err());
        assert_eq!(ByteSize(2 << 30).to_string(), "2GiB");
    }

    #[test]
    fn pool_prefix() {
        assert_eq!(debian_pool_prefix("linux"), "l");
        assert_eq!(debian_pool_prefix("libslirp"), "libs");
    }
}
