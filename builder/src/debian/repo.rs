//! The repository client: fetches a suite's InRelease, verifies it with the
//! archive keyring, fetches the Packages indices the Release lists (checked
//! by sha256 through the fetcher's cache) and the .debs of a lock.

use std::io::Read;
use std::path::{Path, PathBuf};

use hiperiso_stick::io::{IoError, io_err};

use super::deb::{self, DebError};
use super::packages::{self, BinaryPackage, IndexError};
use super::release::{Release, ReleaseError};
use super::signature::{self, Keyring, SignatureError};
use crate::model::lock::LockedPackage;
use crate::sources::fetch::{FetchError, FetchRequest, Fetcher};

/// Where the archive keyring comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyringSource {
    /// The `debian-archive-keyring` package at a pinned version and sha256:
    /// the trust root is the manifest.
    Pinned { version: String, sha256: String },
    /// A keyring file on the host (bootstrap only: used when the manifest
    /// pins no keyring package).
    File(PathBuf),
}

/// The keyring inside the `debian-archive-keyring` package.
pub const KEYRING_IN_PACKAGE: &str = "usr/share/keyrings/debian-archive-keyring.gpg";
/// The host keyring used when the manifest pins none.
pub const HOST_KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error("verifying the archive signature")]
    Signature(#[from] SignatureError),
    #[error("reading the Release file")]
    Release(#[from] ReleaseError),
    #[error("reading the Packages index")]
    Index(#[from] IndexError),
    #[error("unpacking a package")]
    Deb(#[from] DebError),
    #[error(
        "no Debian mirror configured: set [mirrors] debian in the manifest or ${}",
        crate::sources::mirrors::DEBIAN_MIRROR_ENV
    )]
    NoMirror,
    #[error(transparent)]
    Io(#[from] IoError),
}

/// The pool path of a binary package by name, version and architecture
/// (`main` component; epochs are not part of file names).
pub fn pool_path(name: &str, version: &str, architecture: &str, source: &str) -> String {
    let prefix = if source.starts_with("lib") && source.len() > 3 {
        &source[..4]
    } else {
        &source[..1]
    };
    let version = version.split_once(':').map_or(version, |(_, rest)| rest);
    format!("pool/main/{prefix}/{source}/{name}_{version}_{architecture}.deb")
}

/// One suite of one archive.
pub struct Repository<'a> {
    pub fetcher: &'a Fetcher,
    pub mirrors: Vec<String>,
    pub suite: String,
    pub components: Vec<String>,
    pub architecture: String,
}

/// A verified Release and the key that signed it.
pub struct SignedRelease {
    pub release: Release,
    pub signer: String,
}

impl Repository<'_> {
    fn urls(&self, path: &str) -> Result<Vec<String>, RepoError> {
        if self.mirrors.is_empty() {
            return Err(RepoError::NoMirror);
        }
        Ok(self
            .mirrors
            .iter()
            .map(|m| format!("{}/{path}", m.trim_end_matches('/')))
            .collect())
    }

    /// Loads the archive keyring.
    pub fn keyring(&self, source: &KeyringSource) -> Result<Keyring, RepoError> {
        match source {
            KeyringSource::File(path) => {
                let bytes = std::fs::read(path).map_err(io_err("read the keyring", path))?;
                Ok(Keyring::from_bytes(&path.display().to_string(), &bytes)?)
            }
            KeyringSource::Pinned { version, sha256 } => {
                let filename = pool_path(
                    "debian-archive-keyring",
                    version,
                    "all",
                    "debian-archive-keyring",
                );
                let fetched = self.fetcher.fetch(&FetchRequest {
                    name: "debian-archive-keyring".into(),
                    urls: self.urls(&filename)?,
                    sha256: Some(sha256.clone()),
                    size: None,
                })?;
                let bytes = std::fs::read(&fetched.path).map_err(io_err("read", &fetched.path))?;
                let scratch = tempfile::tempdir().map_err(io_err(
                    "create a temporary directory in",
                    &std::env::temp_dir(),
                ))?;
                deb::unpack("debian-archive-keyring", &bytes, scratch.path())?;
                let keyring_path = scratch.path().join(KEYRING_IN_PACKAGE);
                let keyring =
                    std::fs::read(&keyring_path).map_err(io_err("read", &keyring_path))?;
                Ok(Keyring::from_bytes(
                    &format!("debian-archive-keyring {version}"),
                    &keyring,
                )?)
            }
        }
    }

    /// Fetches and verifies `dists/<suite>/InRelease`.
    pub fn release(&self, keyring: &Keyring) -> Result<SignedRelease, RepoError> {
        let path = format!("dists/{}/InRelease", self.suite);
        let fetched = self.fetcher.fetch(&FetchRequest {
            name: format!("{} InRelease", self.suite),
            urls: self.urls(&path)?,
            sha256: None,
            size: None,
        })?;
        let bytes = std::fs::read(&fetched.path).map_err(io_err("read", &fetched.path))?;
        let verified = signature::verify_cleartext(&path, &bytes, keyring)?;
        Ok(SignedRelease {
            release: Release::parse(&verified.text)?,
            signer: verified.signer,
        })
    }

    /// Fetches every component's Packages index (checked against Release).
    pub fn packages(&self, release: &Release) -> Result<Vec<BinaryPackage>, RepoError> {
        let mut all = Vec::new();
        for component in &self.components {
            let path = format!("{component}/binary-{}/Packages.xz", self.architecture);
            let entry = release.entry(&path)?;
            let fetched = self.fetcher.fetch(&FetchRequest {
                name: format!("{} {path}", self.suite),
                urls: self.urls(&format!("dists/{}/{path}", self.suite))?,
                sha256: Some(entry.sha256.clone()),
                size: Some(entry.size),
            })?;
            let compressed = std::fs::read(&fetched.path).map_err(io_err("read", &fetched.path))?;
            release.verify_index(&path, &compressed)?;
            let mut text = String::new();
            liblzma::read::XzDecoder::new(&compressed[..])
                .read_to_string(&mut text)
                .map_err(io_err("decompress", &fetched.path))?;
            all.extend(packages::parse_packages(
                &format!("dists/{}/{path}", self.suite),
                &text,
            )?);
        }
        Ok(all)
    }

    /// Fetches the .debs of `packages` (verified by the lock's sha256,
    /// cached). A file gone from every mirror names the decayed pin.
    pub fn fetch_debs(&self, packages: &[LockedPackage]) -> Result<Vec<PathBuf>, RepoError> {
        let requests = packages
            .iter()
            .map(|p| {
                Ok(FetchRequest {
                    name: p.name.clone(),
                    urls: self.urls(&p.filename)?,
                    sha256: Some(p.sha256.clone()),
                    size: Some(p.size),
                })
            })
            .collect::<Result<Vec<_>, RepoError>>()?;
        Ok(self
            .fetcher
            .fetch_all(&requests)?
            .into_iter()
            .map(|f| f.path)
            .collect())
    }
}

/// Unpacks the locked packages' .debs (`debs[i]` is `packages[i]`'s, in
/// that order) into a fresh tree at `root`.
pub fn unpack_locked(
    packages: &[LockedPackage],
    debs: impl IntoIterator<Item = PathBuf>,
    root: &Path,
) -> Result<(), RepoError> {
    std::fs::create_dir_all(root).map_err(io_err("create", root))?;
    for (package, path) in packages.iter().zip(debs) {
        let bytes = std::fs::read(&path).map_err(io_err("read", &path))?;
        deb::unpack(
            &format!("{}_{}", package.name, package.version),
            &bytes,
            root,
        )?;
    }
    Ok(())
}
