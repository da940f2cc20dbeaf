//! Release files: a suite's metadata and the SHA256 of every index in it.

use std::collections::BTreeMap;

use super::control::{self, ControlError};

/// An index listed in a Release file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexEntry {
    pub sha256: String,
    pub size: u64,
}

#[derive(Debug, Clone)]
pub struct Release {
    pub suite: Option<String>,
    pub codename: Option<String>,
    pub date: Option<String>,
    pub valid_until: Option<String>,
    /// `main/binary-amd64/Packages.xz` -> hash and size.
    pub sha256: BTreeMap<String, IndexEntry>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    #[error("Release: {0}")]
    Syntax(#[source] ControlError),
    #[error("Release: expected exactly one paragraph, found {0}")]
    Paragraphs(usize),
    #[error("Release: no SHA256 field (only SHA256 is trusted)")]
    NoSha256,
    #[error("Release: bad SHA256 line {0:?}")]
    BadLine(String),
    #[error("Release does not list {0}")]
    NotListed(String),
    #[error("{path}: size {actual} differs from Release's {expected}")]
    SizeMismatch {
        path: String,
        expected: u64,
        actual: u64,
    },
    #[error("{path}: sha256 {actual} differs from Release's {expected}")]
    HashMismatch {
        path: String,
        expected: String,
        actual: String,
    },
}

impl Release {
    pub fn parse(text: &str) -> Result<Self, ReleaseError> {
        let paragraphs = control::parse(text).map_err(ReleaseError::Syntax)?;
        let [paragraph] = &paragraphs[..] else {
            return Err(ReleaseError::Paragraphs(paragraphs.len()));
        };
        let mut sha256 = BTreeMap::new();
        for line in paragraph
            .get("SHA256")
            .ok_or(ReleaseError::NoSha256)?
            .lines()
        {
            if line.trim().is_empty() {
                continue;
            }
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [hash, size, path] = fields[..] else {
                return Err(ReleaseError::BadLine(line.to_string()));
            };
            let size = size
                .parse()
                .map_err(|_| ReleaseError::BadLine(line.to_string()))?;
            if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(ReleaseError::BadLine(line.to_string()));
            }
            sha256.insert(
                path.to_string(),
                IndexEntry {
                    sha256: hash.to_ascii_lowercase(),
                    size,
                },
            );
        }
        let field = |name| paragraph.get(name).map(str::to_string);
        Ok(Self {
            suite: field("Suite"),
            codename: field("Codename"),
            date: field("Date"),
            valid_until: field("Valid-Until"),
            sha256,
        })
    }

    /// The hash and size Release lists for `path`.
    pub fn entry(&self, path: &str) -> Result<&IndexEntry, ReleaseError> {
        self.sha256
            .get(path)
            .ok_or_else(|| ReleaseError::NotListed(path.to_string()))
    }

    /// Checks downloaded index bytes against the Release entry for `path`.
    pub fn verify_index(&self, path: &str, bytes: &[u8]) -> Result<(), ReleaseError> {
        use sha2::Digest;
        let entry = self.entry(path)?;
        if entry.size != bytes.len() as u64 {
            return Err(ReleaseError::SizeMismatch {
                path: path.to_string(),
                expected: entry.size,
                actual: bytes.len() as u64,
            });
        }
        let actual = hex::encode(sha2::Sha256::digest(bytes));
        if actual != entry.sha256 {
            return Err(ReleaseError::HashMismatch {
                path: path.to_string(),
                expected: entry.sha256.clone(),
                actual,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RELEASE: &str = "Origin: Debian\nSuite: oldstable\nCodename: bookworm\n\
        Date: Sat, 11 Jul 2026 10:16:37 UTC\nMD5Sum:\n 0ed6d4c8891eb86358b94bb35d9e4da4 3 main/x\n\
        SHA256:\n 2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae 3 main/binary-amd64/Packages.xz\n";

    #[test]
    fn parses_and_verifies_listed_index() {
        let release = Release::parse(RELEASE).unwrap();
        assert_eq!(release.codename.as_deref(), Some("bookworm"));
        assert_eq!(release.sha256.len(), 1);
        release
            .verify_index("main/binary-amd64/Packages.xz", b"foo")
            .unwrap();
        let err = release
            .verify_index("main/binary-amd64/Packages.xz", b"bar")
            .unwrap_err();
        assert!(matches!(err, ReleaseError::HashMismatch { .. }), "{err}");
        let err = release
            .verify_index("main/binary-amd64/Packages.xz", b"fooo")
            .unwrap_err();
        assert!(matches!(err, ReleaseError::SizeMismatch { .. }), "{err}");
        assert!(matches!(
            release.verify_index("main/binary-i386/Packages.xz", b"foo"),
            Err(ReleaseError::NotListed(_))
        ));
    }

    #[test]
    fn md5_only_release_is_refused() {
        let err = Release::parse("Suite: x\nMD5Sum:\n 00 1 a\n").unwrap_err();
        assert!(matches!(err, ReleaseError::NoSha256));
    }
}
