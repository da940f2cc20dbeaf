//! The manifest's source pins: the fetch request of a source (every URL
//! template and Debian mirror, in order) and the rewriting of its
//! `version`/`sha256`/`size` that `pin` and `bump` share.
//!
//! The manifest is edited with `toml_edit`, so comments, key order and
//! layout survive; only the values of `version`, `sha256` (and `size` when
//! present) change. The rewritten text is validated and written atomically
//! (temporary file, fsync, rename, the file's permissions kept).

use std::io::Write;
use std::path::{Path, PathBuf};

use toml_edit::{DocumentMut, Item, Value};

use crate::model::manifest::{Manifest, ManifestError, Source};
use crate::sources::fetch::FetchRequest;

/// A source's URLs could not be made (a template or mirror problem).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UrlError(pub String);

/// The fetch request for a source at `version` (its pinned version unless
/// bumping), trying every URL template and Debian mirror in order.
pub fn source_request(
    name: &str,
    source: &Source,
    version: &str,
    debian_mirrors: &[String],
) -> Result<FetchRequest, UrlError> {
    let urls = source
        .urls(name, version, debian_mirrors)
        .map_err(UrlError)?;
    let pinned = version == source.version;
    Ok(FetchRequest {
        name: name.to_string(),
        urls,
        sha256: if pinned { source.sha256.clone() } else { None },
        size: if pinned { source.size } else { None },
    })
}

#[derive(Debug, thiserror::Error)]
pub enum PinError {
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
    #[error("the rewritten manifest would be invalid, so {path} was left unchanged")]
    Invalid {
        path: PathBuf,
        #[source]
        source: Box<ManifestError>,
    },
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
pub fn apply_pins(text: &str, path: &Path, pins: &[Pin]) -> Result<String, PinError> {
    let mut doc: DocumentMut = text.parse().map_err(|source| PinError::Parse {
        path: path.to_path_buf(),
        source,
    })?;
    for pin in pins {
        let table = doc
            .get_mut("sources")
            .and_then(Item::as_table_like_mut)
            .and_then(|sources| sources.get_mut(&pin.name))
            .and_then(Item::as_table_like_mut)
            .ok_or_else(|| PinError::NoSource {
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
pub fn write_pins(path: &Path, pins: &[Pin]) -> Result<(), PinError> {
    let text = std::fs::read_to_string(path).map_err(|source| PinError::Write {
        path: path.to_path_buf(),
        source,
    })?;
    let new_text = apply_pins(&text, path, pins)?;
    Manifest::parse(&new_text, path).map_err(|source| PinError::Invalid {
        path: path.to_path_buf(),
        source: Box::new(source),
    })?;
    write_atomically(path, new_text.as_bytes())
}

/// Writes a file via a temporary sibling, fsync and rename.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), PinError> {
    let err = |source| PinError::Write {
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
            Err(PinError::NoSource { .. })
        ));
    }
}
