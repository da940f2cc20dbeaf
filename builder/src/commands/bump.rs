//! `bump` and the manifest rewriting shared with `pin`.
//!
//! The manifest is edited with `toml_edit`, so comments, key order and
//! layout survive; only the values of `version`, `sha256` (and `size` when
//! present) change. The new file is downloaded and verified before the
//! manifest is touched, and the rewritten text is validated and written
//! atomically (temporary file, fsync, rename).

use std::io::Write;
use std::path::{Path, PathBuf};

use toml_edit::{DocumentMut, Item, Value};

use crate::commands::fetch::source_request;
use crate::commands::{Error, Result};
use crate::model::manifest::Manifest;
use crate::settings::Context;
use crate::sources::watch::{Watcher, compare_versions};

#[derive(Debug, thiserror::Error)]
pub enum BumpError {
    #[error("{path}: cannot parse for editing")]
    Parse {
        path: PathBuf,
        #[source]
        source: toml_edit::TomlError,
    },
    #[error("{path}: no [sources.{name}] table to edit")]
    NoSource { path: PathBuf, name: String },
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the rewritten manifest would be invalid, so {path} was left unchanged: {reason}")]
    Invalid { path: PathBuf, reason: String },
}

/// New pin values for one source. `version: None` keeps the version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pin {
    pub name: String,
    pub version: Option<String>,
    pub sha256: String,
    pub size: u64,
}

/// Applies pins to manifest text, keeping comments and layout.
pub fn apply_pins(text: &str, path: &Path, pins: &[Pin]) -> Result<String, BumpError> {
    let mut doc: DocumentMut = text.parse().map_err(|source| BumpError::Parse {
        path: path.to_path_buf(),
        source,
    })?;
    for pin in pins {
        let table = doc
            .get_mut("sources")
            .and_then(Item::as_table_like_mut)
            .and_then(|sources| sources.get_mut(&pin.name))
            .and_then(Item::as_table_like_mut)
            .ok_or_else(|| BumpError::NoSource {
                path: path.to_path_buf(),
                name: pin.name.clone(),
            })?;
        if let Some(version) = &pin.version {
            set_keeping_decor(table, "version", Value::from(version.as_str()));
        }
        set_keeping_decor(table, "sha256", Value::from(pin.sha256.as_str()));
        if table.contains_key("size") {
            set_keeping_decor(table, "size", Value::from(pin.size as i64));
        }
    }
    Ok(doc.to_string())
}

/// Replaces a value but keeps the whitespace and comment around it.
fn set_keeping_decor(table: &mut dyn toml_edit::TableLike, key: &str, mut value: Value) {
    if let Some(old) = table.get(key).and_then(Item::as_value) {
        *value.decor_mut() = old.decor().clone();
        table.insert(key, Item::Value(value));
    } else {
        // A new key in an inline table needs a leading space to look right.
        value.decor_mut().set_prefix(" ");
        table.insert(key, Item::Value(value));
    }
}

/// Applies pins to the manifest file: validate the result, then write it
/// atomically.
pub fn write_pins(path: &Path, pins: &[Pin]) -> Result<(), BumpError> {
    let text = std::fs::read_to_string(path).map_err(|source| BumpError::Write {
        path: path.to_path_buf(),
        source,
    })?;
    let new_text = apply_pins(&text, path, pins)?;
    Manifest::parse(&new_text, path).map_err(|e| BumpError::Invalid {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    write_atomically(path, new_text.as_bytes())
}

/// Writes a file via a temporary sibling, fsync and rename.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), BumpError> {
    let err = |source| BumpError::Write {
        path: path.to_path_buf(),
        source,
    };
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(err)?;
    tmp.write_all(bytes).map_err(err)?;
    tmp.as_file().sync_all().map_err(err)?;
    if let Ok(meta) = std::fs::metadata(path) {
        let _ = std::fs::set_permissions(tmp.path(), meta.permissions());
    }
    tmp.persist(path).map_err(|e| err(e.error))?;
    Ok(())
}

/// One line of `bump --check`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub name: String,
    pub current: String,
    /// The newest version found, `None` when the watch failed.
    pub latest: Option<String>,
    pub error: Option<String>,
}

impl Check {
    pub fn is_newer(&self) -> bool {
        self.latest
            .as_deref()
            .is_some_and(|latest| compare_versions(latest, &self.current).is_gt())
    }
}

impl std::fmt::Display for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.latest, &self.error) {
            (_, Some(error)) => {
                write!(f, "{}: {} (check failed: {error})", self.name, self.current)
            }
            (Some(latest), None) if self.is_newer() => {
                write!(f, "{}: {} → {latest}", self.name, self.current)
            }
            (Some(latest), None) if *latest == self.current => {
                write!(f, "{}: {} (up to date)", self.name, self.current)
            }
            (Some(latest), None) => write!(
                f,
                "{}: {} (up to date; newest found {latest})",
                self.name, self.current
            ),
            (None, None) => write!(f, "{}: {} (no watch)", self.name, self.current),
        }
    }
}

/// `bump --check [NAME...]`: report newer versions, change nothing.
/// Errors of single sources are reported per line; the call fails only if
/// every check failed.
pub fn check(ctx: &Context, names: &[String]) -> Result<Vec<Check>> {
    let manifest = ctx.load_manifest()?;
    let (_, profile) = ctx.profile(&manifest)?;
    let mirrors = ctx.debian_mirrors(&manifest);
    let fetcher = ctx.fetcher()?;
    let watcher = Watcher::new(&fetcher, &manifest.debian, &mirrors.urls);
    let mut checks = Vec::new();
    for (name, source) in manifest.select_sources(profile, names)? {
        let (latest, error) = match watcher.latest(name, source) {
            Ok(candidate) => (Some(candidate.version), None),
            Err(e) => (None, Some(error_chain(&e))),
        };
        let check = Check {
            name: name.to_string(),
            current: source.version.clone(),
            latest,
            error,
        };
        ctx.say(check.to_string());
        checks.push(check);
    }
    if !checks.is_empty() && checks.iter().all(|c| c.error.is_some()) {
        return Err(Error::Usage(format!(
            "every check failed ({} source(s))",
            checks.len()
        )));
    }
    Ok(checks)
}

/// `bump NAME --to VERSION`: fetch and verify the new file, then rewrite
/// the manifest. `expected` is a sha256 known from elsewhere (a Debian
/// Sources index); the download must match it.
pub fn bump_to(
    ctx: &Context,
    name: &str,
    version: &str,
    expected: Option<(String, u64)>,
) -> Result<Pin> {
    let manifest = ctx.load_manifest()?;
    let source = manifest.source(name)?;
    let mirrors = ctx.debian_mirrors(&manifest);
    let mut request = source_request(name, source, version, &mirrors.urls)?;
    if version != source.version {
        if let Some((sha256, size)) = expected {
            request.sha256 = Some(sha256);
            request.size = Some(size);
        }
    } else {
        // Re-pinning the same version: take what the mirror serves now.
        request.sha256 = None;
        request.size = None;
    }
    let fetched = ctx.fetcher()?.fetch(&request)?;
    let pin = Pin {
        name: name.to_string(),
        version: Some(version.to_string()),
        sha256: fetched.sha256.clone(),
        size: fetched.size,
    };
    write_pins(&manifest.path, std::slice::from_ref(&pin))?;
    ctx.say(format!(
        "{name}: {} → {version} (sha256 {}, {})",
        source.version,
        fetched.sha256,
        crate::sources::fetch::human_bytes(fetched.size)
    ));
    Ok(pin)
}

/// `bump NAME --latest`: ask the watch, then [`bump_to`] if newer.
pub fn bump_latest(ctx: &Context, name: &str) -> Result<Option<Pin>> {
    let manifest = ctx.load_manifest()?;
    let source = manifest.source(name)?;
    let mirrors = ctx.debian_mirrors(&manifest);
    let fetcher = ctx.fetcher()?;
    let candidate = Watcher::new(&fetcher, &manifest.debian, &mirrors.urls).latest(name, source)?;
    if !compare_versions(&candidate.version, &source.version).is_gt() {
        ctx.say(format!(
            "{name}: {} (up to date; newest found {})",
            source.version, candidate.version
        ));
        return Ok(None);
    }
    let expected = candidate.sha256.zip(candidate.size);
    bump_to(ctx, name, &candidate.version, expected).map(Some)
}

/// `bump` dispatch from the CLI arguments.
pub fn run(
    ctx: &Context,
    names: &[String],
    to: Option<&str>,
    latest: bool,
    check_only: bool,
) -> Result<()> {
    if ctx.offline && (check_only || latest) {
        return Err(Error::Usage(
            "bump --check and --latest read the sources' watch indexes online; drop --offline"
                .into(),
        ));
    }
    if check_only {
        return check(ctx, names).map(|_| ());
    }
    let [name] = names else {
        return Err(Error::Usage(format!(
            "bump --to and --latest take exactly one source name, got {}",
            names.len()
        )));
    };
    match (to, latest) {
        (Some(version), false) => bump_to(ctx, name, version, None).map(|_| ()),
        (None, true) => bump_latest(ctx, name).map(|_| ()),
        _ => Err(Error::Usage(
            "give one of --to VERSION, --latest or --check".into(),
        )),
    }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        out.push_str(": ");
        out.push_str(&e.to_string());
        source = e.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apply_keeps_comments_and_updates_size() {
        let text = "# top\n[sources.a] # the a\nversion = \"1.0\"   # pinned by hand\nsha256 = \"00\" # old\nsize = 3\n\n[sources.b]\nversion = \"2\"\n";
        let pins = [
            Pin {
                name: "a".into(),
                version: Some("1.1".into()),
                sha256: "ff".into(),
                size: 9,
            },
            Pin {
                name: "b".into(),
                version: None,
                sha256: "ee".into(),
                size: 1,
            },
        ];
        let out = apply_pins(text, Path::new("m"), &pins).unwrap();
        assert_eq!(
            out,
            "# top\n[sources.a] # the a\nversion = \"1.1\"   # pinned by hand\nsha256 = \"ff\" # old\nsize = 9\n\n[sources.b]\nversion = \"2\"\nsha256 = \"ee\"\n"
        );
    }

    #[test]
    fn missing_source_is_an_error() {
        let pins = [Pin {
            name: "zz".into(),
            version: None,
            sha256: "ee".into(),
            size: 1,
        }];
        assert!(matches!(
            apply_pins("[sources.a]\nversion='1'\n", Path::new("m"), &pins),
            Err(BumpError::NoSource { .. })
        ));
    }
}
