//! Finding newer versions of a source (`bump --check`, `bump --latest`).
//!
//! Two kinds of `watch`:
//! - `{ index = URL, regex = "...(VERSION)..." }`: every match of the regex
//!   on the index page is a candidate version;
//! - `{ debian-sources = "SUITE" }`: the suite's `Sources.gz` index; a
//!   candidate is a version of the source package whose file list has the
//!   file the source's template names for it (with its sha256 and size).
//!
//! Versions compare with Debian's algorithm ([`compare_versions`]).

use std::cmp::Ordering;
use std::collections::HashMap;
use std::io::Read;
use std::sync::Mutex;

use crate::model::manifest::{Debian, Source, Watch, render};
use crate::sources::fetch::{FetchError, Fetcher};

#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error(
        "source `{name}` has no `watch`, so newer versions cannot be found; add e.g. watch = {{ debian-sources = \"bookworm\" }}"
    )]
    NoWatch { name: String },
    #[error("source `{name}`: {what}")]
    Config { name: String, what: String },
    #[error("source `{name}`: no version found in {url}")]
    NoVersions { name: String, url: String },
    #[error("cannot read the watch index of `{name}`")]
    Fetch {
        name: String,
        #[source]
        source: FetchError,
    },
    #[error("cannot decompress {url}")]
    Decompress {
        url: String,
        #[source]
        source: std::io::Error,
    },
}

/// The newest version a watch found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub version: String,
    /// Known from a Debian Sources index; `None` for index pages.
    pub sha256: Option<String>,
    pub size: Option<u64>,
    /// Where it was found.
    pub url: String,
}

/// Looks up watches, downloading each index at most once.
pub struct Watcher<'a> {
    fetcher: &'a Fetcher,
    debian: &'a Debian,
    mirrors: &'a [String],
    pages: Mutex<HashMap<String, std::sync::Arc<String>>>,
}

/// Largest index we read (Debian's uncompressed Sources is ~50 MB).
const INDEX_LIMIT: u64 = 512 << 20;

impl<'a> Watcher<'a> {
    pub fn new(fetcher: &'a Fetcher, debian: &'a Debian, debian_mirrors: &'a [String]) -> Self {
        Self {
            fetcher,
            debian,
            mirrors: debian_mirrors,
            pages: Mutex::new(HashMap::new()),
        }
    }

    /// The newest version `source`'s watch knows.
    pub fn latest(&self, name: &str, source: &Source) -> Result<Candidate, WatchError> {
        let watch = source.watch.as_ref().ok_or_else(|| WatchError::NoWatch {
            name: name.to_string(),
        })?;
        let package = source.debian_package().unwrap_or(name);
        let candidates = match watch {
            Watch::Index { index, regex } => {
                let regex = regex::Regex::new(regex).map_err(|e| WatchError::Config {
                    name: name.into(),
                    what: e.to_string(),
                })?;
                let (url, page) = self.first_page(name, &self.expand(name, package, index)?)?;
                versions_from_index(&page, &regex)
                    .into_iter()
                    .map(|version| Candidate {
                        version,
                        sha256: None,
                        size: None,
                        url: url.clone(),
                    })
                    .collect::<Vec<_>>()
            }
            Watch::DebianSources {
                suite,
                package: watch_package,
            } => {
                let package = watch_package.as_deref().unwrap_or(package);
                let mut found = Vec::new();
                for component in &self.debian.components {
                    let template =
                        format!("{{debian}}/dists/{suite}/{component}/source/Sources.gz");
                    let (url, text) =
                        self.first_page(name, &self.expand(name, package, &template)?)?;
                    for entry in parse_sources(&text).filter(|e| e.package == package) {
                        let upstream = upstream_version(entry.version);
                        let file = source.file_name(name, upstream);
                        if let Some((sha256, size)) = entry
                            .files
                            .iter()
                            .find(|(_, _, f)| *f == file)
                            .map(|(s, n, _)| (s, n))
                        {
                            found.push(Candidate {
                                version: upstream.to_string(),
                                sha256: Some(sha256.to_string()),
                                size: Some(*size),
                                url: url.clone(),
                            });
                        }
                    }
                }
                found
            }
        };
        let where_ = match watch {
            Watch::Index { index, .. } => index.clone(),
            Watch::DebianSources { suite, .. } => {
                format!("the {suite} Sources index (package {package})")
            }
        };
        candidates
            .into_iter()
            .max_by(|a, b| compare_versions(&a.version, &b.version))
            .ok_or(WatchError::NoVersions {
                name: name.to_string(),
                url: where_,
            })
    }

    fn expand(&self, name: &str, package: &str, template: &str) -> Result<Vec<String>, WatchError> {
        if !template.contains("{debian}") {
            return Ok(vec![render(template, name, package, "", None)]);
        }
        if self.mirrors.is_empty() {
            return Err(WatchError::Config {
                name: name.into(),
                what: format!(
                    "the watch needs a Debian mirror: set [mirrors] debian or {}",
                    crate::sources::mirrors::DEBIAN_MIRROR_ENV
                ),
            });
        }
        Ok(self
            .mirrors
            .iter()
            .map(|m| render(template, name, package, "", Some(m)))
            .collect())
    }

    /// The first of `urls` that answers, as text (`.gz` is decompressed).
    fn first_page(
        &self,
        name: &str,
        urls: &[String],
    ) -> Result<(String, std::sync::Arc<String>), WatchError> {
        let mut last_error = None;
        for url in urls {
            if let Some(page) = self.pages.lock().expect("page cache").get(url) {
                return Ok((url.clone(), page.clone()));
            }
            match self.fetcher.get_bytes(url, INDEX_LIMIT) {
                Ok(bytes) => {
                    let text = if url.ends_with(".gz") {
                        let mut text = String::new();
                        flate2::read::GzDecoder::new(&bytes[..])
                            .take(INDEX_LIMIT)
                            .read_to_string(&mut text)
                            .map_err(|source| WatchError::Decompress {
                                url: url.clone(),
                                source,
                            })?;
                        text
                    } else {
                        String::from_utf8_lossy(&bytes).into_owned()
                    };
                    let page = std::sync::Arc::new(text);
                    self.pages
                        .lock()
                        .expect("page cache")
                        .insert(url.clone(), page.clone());
                    return Ok((url.clone(), page));
                }
                Err(e) => last_error = Some(e),
            }
        }
        Err(WatchError::Fetch {
            name: name.to_string(),
            source: last_error.unwrap_or(FetchError::NoUrls {
                name: name.to_string(),
            }),
        })
    }
}

/// Every distinct first capture of `regex` in `page`.
pub fn versions_from_index(page: &str, regex: &regex::Regex) -> Vec<String> {
    let mut versions: Vec<String> = regex
        .captures_iter(page)
        .filter_map(|c| c.get(1).map(|m| m.as_str().to_string()))
        .collect();
    versions.sort_by(|a, b| compare_versions(a, b));
    versions.dedup();
    versions
}

/// One paragraph of a Debian `Sources` index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourcesEntry<'t> {
    pub package: &'t str,
    pub version: &'t str,
    pub directory: &'t str,
    /// (sha256, size, file name) from `Checksums-Sha256`.
    pub files: Vec<(&'t str, u64, &'t str)>,
}

/// Iterates over the paragraphs of a Debian `Sources` index.
pub fn parse_sources(text: &str) -> impl Iterator<Item = SourcesEntry<'_>> {
    text.split("\n\n").filter_map(|paragraph| {
        let mut entry = SourcesEntry {
            package: "",
            version: "",
            directory: "",
            files: Vec::new(),
        };
        let mut in_sha256 = false;
        for line in paragraph.lines() {
            if let Some(rest) = line.strip_prefix(' ') {
                if in_sha256 {
                    let mut words = rest.split_whitespace();
                    if let (Some(sha), Some(size), Some(file)) =
                        (words.next(), words.next(), words.next())
                        && let Ok(size) = size.parse()
                    {
                        entry.files.push((sha, size, file));
                    }
                }
                continue;
            }
            in_sha256 = false;
            let Some((key, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim();
            match key {
                "Package" => entry.package = value,
                "Version" => entry.version = value,
                "Directory" => entry.directory = value,
                "Checksums-Sha256" => in_sha256 = true,
                _ => {}
            }
        }
        (!entry.package.is_empty() && !entry.version.is_empty()).then_some(entry)
    })
}

/// The upstream part of a Debian version: no epoch, no Debian revision.
/// `1:7.2+dfsg-7+deb12u18` → `7.2+dfsg`.
pub fn upstream_version(version: &str) -> &str {
    let without_epoch = version.split_once(':').map_or(version, |(_, rest)| rest);
    without_epoch
        .rsplit_once('-')
        .map_or(without_epoch, |(upstream, _)| upstream)
}

/// Compares two versions with dpkg's algorithm (epoch, upstream version,
/// revision; `~` sorts before everything, letters before other symbols).
/// Plain upstream versions such as `1.36.1` compare as expected too.
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    let split = |v: &str| -> (u64, String, String) {
        let (epoch, rest) = match v.split_once(':') {
            Some((e, rest)) if e.bytes().all(|c| c.is_ascii_digit()) && !e.is_empty() => {
                (e.parse().unwrap_or(0), rest)
            }
            _ => (0, v),
        };
        match rest.rsplit_once('-') {
            Some((upstream, revision)) => (epoch, upstream.to_string(), revision.to_string()),
            None => (epoch, rest.to_string(), String::new()),
        }
    };
    let (ea, ua, ra) = split(a);
    let (eb, ub, rb) = split(b);
    ea.cmp(&eb)
        .then_with(|| verrevcmp(&ua, &ub))
        .then_with(|| verrevcmp(&ra, &rb))
}

fn char_order(c: Option<u8>) -> i32 {
    match c {
        None => 0,
        Some(b'~') => -1,
        Some(c) if c.is_ascii_digit() => 0,
        Some(c) if c.is_ascii_alphabetic() => c as i32,
        Some(c) => c as i32 + 256,
    }
}

fn verrevcmp(a: &str, b: &str) -> Ordering {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        while (i < a.len() && !a[i].is_ascii_digit()) || (j < b.len() && !b[j].is_ascii_digit()) {
            let (ac, bc) = (char_order(a.get(i).copied()), char_order(b.get(j).copied()));
            if ac != bc {
                return ac.cmp(&bc);
            }
            i += 1;
            j += 1;
        }
        while a.get(i) == Some(&b'0') {
            i += 1;
        }
        while b.get(j) == Some(&b'0') {
            j += 1;
        }
        let mut first_diff = Ordering::Equal;
        while i < a.len() && a[i].is_ascii_digit() && j < b.len() && b[j].is_ascii_digit() {
            if first_diff == Ordering::Equal {
                first_diff = a[i].cmp(&b[j]);
            }
            i += 1;
            j += 1;
        }
        if i < a.len() && a[i].is_ascii_digit() {
            return Ordering::Greater;
        }
        if j < b.len() && b[j].is_ascii_digit() {
            return Ordering::Less;
        }
        if first_diff != Ordering::Equal {
            return first_diff;
        }
    }
    Ordering::Equal
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dpkg_ordering() {
        use Ordering::*;
        let cases = [
            ("1.36.1", "1.35.0", Greater),
            ("1.35.0", "1.35", Greater),
            ("6.1.176", "6.1.8", Greater),
            ("1.0~rc1", "1.0", Less),
            ("1:1.0", "2.0", Greater),
            ("7.2+dfsg-7", "7.2+dfsg-7+deb12u18", Less),
            ("2.06", "2.06", Equal),
            ("1.0a", "1.0+", Less),
            ("1.010", "1.10", Equal),
        ];
        for (a, b, want) in cases {
            assert_eq!(compare_versions(a, b), want, "{a} vs {b}");
            assert_eq!(compare_versions(b, a), want.reverse(), "{b} vs {a}");
        }
    }

    #[test]
    fn upstream_of_debian_versions() {
        assert_eq!(upstream_version("1:7.2+dfsg-7+deb12u18"), "7.2+dfsg");
        assert_eq!(upstream_version("1:1.35.0-4+deb12u1"), "1.35.0");
        assert_eq!(upstream_version("2022.11-6+deb12u2"), "2022.11");
        assert_eq!(upstream_version("1.0"), "1.0");
    }

    #[test]
    fn sources_paragraphs() {
        let text = "Package: busybox\nBinary: busybox\nVersion: 1:1.35.0-4\nDirectory: pool/main/b/busybox\n\
                    Checksums-Sha256:\n aaaa 10 busybox_1.35.0-4.dsc\n bbbb 2480624 busybox_1.35.0.orig.tar.bz2\n\
                    Homepage: x\n\nPackage: other\nVersion: 1\n";
        let entries: Vec<_> = parse_sources(text).collect();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].package, "busybox");
        assert_eq!(
            entries[0].files[1],
            ("bbbb", 2480624, "busybox_1.35.0.orig.tar.bz2")
        );
        assert_eq!(entries[1].files, vec![]);
    }

    #[test]
    fn index_versions_sorted() {
        let page = r#"<a href="busybox-1.36.1.tar.bz2">x</a> <a href="busybox-1.9.0.tar.bz2"> busybox-1.36.1.tar.bz2.sig busybox-1.35.0.tar.bz2"#;
        let regex = regex::Regex::new(r"busybox-([0-9.]+)\.tar\.bz2").unwrap();
        assert_eq!(
            versions_from_index(page, &regex),
            ["1.9.0", "1.35.0", "1.36.1"]
        );
    }
}
