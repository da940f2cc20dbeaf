//! Which Debian mirror to use.
//!
//! Precedence: the manifest's `[mirrors] debian` list, else
//! `$HIPERISO_DEBIAN_MIRROR` (whitespace- or comma-separated URLs), else the
//! host's apt sources (`/etc/apt/sources.list.d/*.sources` in deb822 form,
//! `/etc/apt/sources.list` and `/etc/apt/sources.list.d/*.list` in one-line
//! form). No mirror host is ever hard-coded.

use std::fmt;
use std::path::{Path, PathBuf};

pub use crate::model::manifest::DEBIAN_MIRROR_ENV;

/// Where the resolved mirror list came from (printed by `summary`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MirrorOrigin {
    Manifest,
    Env,
    Apt(PathBuf),
    None,
}

impl fmt::Display for MirrorOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Manifest => f.write_str("manifest [mirrors] debian"),
            Self::Env => write!(f, "${DEBIAN_MIRROR_ENV}"),
            Self::Apt(path) => write!(f, "apt source {}", path.display()),
            Self::None => f.write_str("nowhere: none configured"),
        }
    }
}

/// The Debian mirrors to try, in order, and where they came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DebianMirrors {
    pub urls: Vec<String>,
    pub origin: MirrorOrigin,
}

/// Resolves the Debian mirrors for `suite` from the manifest list, the
/// environment and the apt sources under `apt_root` (normally `/`).
pub fn resolve_debian(manifest_list: &[String], suite: &str, apt_root: &Path) -> DebianMirrors {
    let clean = |urls: Vec<String>| -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for url in urls {
            let url = url.trim().trim_end_matches('/').to_string();
            if !url.is_empty() && !out.contains(&url) {
                out.push(url);
            }
        }
        out
    };
    if !manifest_list.is_empty() {
        return DebianMirrors {
            urls: clean(manifest_list.to_vec()),
            origin: MirrorOrigin::Manifest,
        };
    }
    if let Ok(value) = std::env::var(DEBIAN_MIRROR_ENV) {
        let urls = clean(
            value
                .split([' ', ',', '\n', '\t'])
                .map(String::from)
                .collect(),
        );
        if !urls.is_empty() {
            return DebianMirrors {
                urls,
                origin: MirrorOrigin::Env,
            };
        }
    }
    for (path, entries) in read_apt_sources(apt_root) {
        let urls = clean(
            entries
                .into_iter()
                .filter(|e| e.suites.iter().any(|s| s == suite))
                .map(|e| e.uri)
                .collect(),
        );
        if !urls.is_empty() {
            return DebianMirrors {
                urls,
                origin: MirrorOrigin::Apt(path),
            };
        }
    }
    DebianMirrors {
        urls: Vec::new(),
        origin: MirrorOrigin::None,
    }
}

/// One `deb`/`deb-src` entry of an apt source file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AptEntry {
    pub uri: String,
    pub suites: Vec<String>,
    pub components: Vec<String>,
}

/// Every apt source file under `root`, with its entries, in apt's order:
/// `etc/apt/sources.list` first, then `sources.list.d/` sorted by name.
pub fn read_apt_sources(root: &Path) -> Vec<(PathBuf, Vec<AptEntry>)> {
    let etc = root.join("etc/apt");
    let mut files = vec![etc.join("sources.list")];
    if let Ok(dir) = std::fs::read_dir(etc.join("sources.list.d")) {
        let mut more: Vec<PathBuf> = dir.filter_map(|e| e.ok().map(|e| e.path())).collect();
        more.sort();
        files.extend(more);
    }
    files
        .into_iter()
        .filter_map(|path| {
            let text = std::fs::read_to_string(&path).ok()?;
            let entries = match path.extension().and_then(|e| e.to_str()) {
                Some("sources") => parse_deb822(&text),
                Some("list") => parse_one_line(&text),
                _ => return None,
            };
            Some((path, entries))
        })
        .collect()
}

fn usable_uri(uri: &str) -> bool {
    uri.starts_with("http://") || uri.starts_with("https://") || uri.starts_with("file:/")
}

/// Parses deb822 `.sources` text (stanzas separated by blank lines).
pub fn parse_deb822(text: &str) -> Vec<AptEntry> {
    let mut entries = Vec::new();
    for stanza in text.split("\n\n") {
        let mut fields: Vec<(String, String)> = Vec::new();
        for line in stanza.lines() {
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            if line.starts_with([' ', '\t']) {
                if let Some((_, value)) = fields.last_mut() {
                    value.push(' ');
                    value.push_str(line.trim());
                }
            } else if let Some((key, value)) = line.split_once(':') {
                fields.push((key.trim().to_ascii_lowercase(), value.trim().to_string()));
            }
        }
        let get = |key: &str| {
            fields
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.split_whitespace().map(String::from).collect::<Vec<_>>())
                .unwrap_or_default()
        };
        let enabled = get("enabled").first().is_none_or(|v| v != "no");
        let types = get("types");
        if !enabled || !types.iter().any(|t| t == "deb" || t == "deb-src") {
            continue;
        }
        for uri in get("uris").into_iter().filter(|u| usable_uri(u)) {
            entries.push(AptEntry {
                uri,
                suites: get("suites"),
                components: get("components"),
            });
        }
    }
    entries
}

/// Parses one-line `sources.list` text: `deb [options] URI SUITE COMPONENT...`.
pub fn parse_one_line(text: &str) -> Vec<AptEntry> {
    let mut entries = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        let mut words = line.split_whitespace().peekable();
        match words.next() {
            Some("deb" | "deb-src") => {}
            _ => continue,
        }
        if words.peek().is_some_and(|w| w.starts_with('[')) {
            for word in words.by_ref() {
                if word.ends_with(']') {
                    break;
                }
            }
        }
        let (Some(uri), Some(suite)) = (words.next(), words.next()) else {
            continue;
        };
        if usable_uri(uri) {
            entries.push(AptEntry {
                uri: uri.to_string(),
                suites: vec![suite.to_string()],
                components: words.map(String::from).collect(),
            });
        }
    }
    entries
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deb822_picks_the_suite() {
        let text = "Types: deb\n# comment\nURIs: http://mirror.test/debian\nSuites: bookworm bookworm-updates\nComponents: main\n\n\
                    Types: deb\nURIs: http://mirror.test/debian-security\nSuites: bookworm-security\nComponents: main\n\n\
                    Types: deb\nEnabled: no\nURIs: http://disabled.test/debian\nSuites: bookworm\n";
        let entries = parse_deb822(text);
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].uri, "http://mirror.test/debian");
        assert_eq!(entries[0].suites, ["bookworm", "bookworm-updates"]);
        assert_eq!(entries[1].suites, ["bookworm-security"]);
    }

    #[test]
    fn one_line_with_options() {
        let text = "# x\ndeb [arch=amd64 signed-by=/k.gpg] http://a.test/debian bookworm main contrib\ndeb cdrom:[x]/ bookworm main\ndeb-src http://b.test/debian/ bookworm main\n";
        let entries = parse_one_line(text);
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].uri, "http://a.test/debian");
        assert_eq!(entries[0].components, ["main", "contrib"]);
        assert_eq!(entries[1].uri, "http://b.test/debian/");
    }

    #[test]
    fn resolution_order() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("etc/apt/sources.list.d")).unwrap();
        std::fs::write(
            root.path().join("etc/apt/sources.list.d/debian.sources"),
            "Types: deb\nURIs: http://apt.test/debian/\nSuites: bookworm\nComponents: main\n",
        )
        .unwrap();
        let from_manifest =
            resolve_debian(&["http://m.test/debian/".into()], "bookworm", root.path());
        assert_eq!(from_manifest.urls, ["http://m.test/debian"]);
        assert_eq!(from_manifest.origin, MirrorOrigin::Manifest);
        if std::env::var_os(DEBIAN_MIRROR_ENV).is_none() {
            let from_apt = resolve_debian(&[], "bookworm", root.path());
            assert_eq!(from_apt.urls, ["http://apt.test/debian"]);
            assert!(matches!(from_apt.origin, MirrorOrigin::Apt(_)));
            let none = resolve_debian(&[], "trixie", root.path());
            assert!(none.urls.is_empty());
        }
    }
}
