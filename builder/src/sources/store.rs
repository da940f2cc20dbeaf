//! The content-addressed cache.
//!
//! Layout under the cache root (`$XDG_CACHE_HOME/hiperiso`, `~/.cache/hiperiso`,
//! `HIPERISO_CACHE_DIR` or `--cache-dir`):
//!
//! ```text
//! blobs/sha256/<hex>     verified content, named by its sha256
//! partial/<key>          unfinished downloads, keyed by the sha256 of their URL
//! tmp/                   scratch space for atomic inserts
//! ```
//!
//! A blob only appears under `blobs/` by `rename(2)` of a fully written,
//! fsynced and verified file in the same file system, so a killed process
//! never leaves a corrupt entry behind.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use hiperiso_stick::io::{IoError, io_err};

/// Environment variable that overrides the cache directory.
pub const CACHE_DIR_ENV: &str = "HIPERISO_CACHE_DIR";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "cannot find a cache directory: set {CACHE_DIR_ENV}, XDG_CACHE_HOME or HOME, or pass --cache-dir"
    )]
    NoCacheDir,
    #[error(transparent)]
    Io(#[from] IoError),
    #[error("refusing to store {path}: its sha256 is {actual}, expected {expected}")]
    Mismatch {
        path: PathBuf,
        expected: String,
        actual: String,
    },
    #[error("`{0}` is not a sha256 (64 lowercase hex digits)")]
    BadHash(String),
}

/// A handle on the cache directory. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

pub use crate::hash::{is_sha256_hex, sha256_hex, sha256_reader};

impl Store {
    /// A store rooted at `root` (created on first write).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The cache root chosen by precedence: `explicit` (the `--cache-dir`
    /// flag), `$HIPERISO_CACHE_DIR`, `$XDG_CACHE_HOME/hiperiso`,
    /// `$HOME/.cache/hiperiso`.
    pub fn default_root(explicit: Option<&Path>) -> Result<PathBuf, StoreError> {
        let non_empty = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
        if let Some(dir) = explicit {
            return Ok(dir.to_path_buf());
        }
        if let Some(dir) = non_empty(CACHE_DIR_ENV) {
            return Ok(PathBuf::from(dir));
        }
        if let Some(dir) = non_empty("XDG_CACHE_HOME") {
            return Ok(PathBuf::from(dir).join("hiperiso"));
        }
        if let Some(home) = non_empty("HOME") {
            return Ok(PathBuf::from(home).join(".cache").join("hiperiso"));
        }
        Err(StoreError::NoCacheDir)
    }

    /// Opens the store at [`Store::default_root`].
    pub fn open_default(explicit: Option<&Path>) -> Result<Self, StoreError> {
        Ok(Self::new(Self::default_root(explicit)?))
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the blob with this sha256 lives (whether or not it exists).
    pub fn blob_path(&self, sha256: &str) -> PathBuf {
        self.root.join("blobs").join("sha256").join(sha256)
    }

    /// The blob's path if the store has it.
    pub fn get(&self, sha256: &str) -> Option<PathBuf> {
        let path = self.blob_path(sha256);
        path.is_file().then_some(path)
    }

    pub fn contains(&self, sha256: &str) -> bool {
        self.get(sha256).is_some()
    }

    /// Every blob's sha256, sorted.
    pub fn list_blobs(&self) -> Result<Vec<String>, StoreError> {
        let dir = self.root.join("blobs").join("sha256");
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err("list", &dir)(e).into()),
        };
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io_err("list", &dir))?;
            if let Some(name) = entry.file_name().to_str().filter(|n| is_sha256_hex(n)) {
                names.push(name.to_string());
            }
        }
        names.sort();
        Ok(names)
    }

    /// Directory for unfinished downloads (created if missing).
    pub fn partial_dir(&self) -> Result<PathBuf, StoreError> {
        self.ensure_dir(self.root.join("partial"))
    }

    /// Directory for scratch files of atomic inserts (created if missing).
    pub fn tmp_dir(&self) -> Result<PathBuf, StoreError> {
        self.ensure_dir(self.root.join("tmp"))
    }

    fn ensure_dir(&self, dir: PathBuf) -> Result<PathBuf, StoreError> {
        fs::create_dir_all(&dir).map_err(io_err("create", &dir))?;
        Ok(dir)
    }

    /// Moves a complete file into the store under `sha256`. The file must be
    /// on the same file system as the store (use [`Store::tmp_dir`] or
    /// [`Store::partial_dir`]). Its content is hashed again here, so nothing
    /// unverified enters. Returns the blob's path.
    pub fn insert_file(&self, file: &Path, sha256: &str) -> Result<PathBuf, StoreError> {
        if !is_sha256_hex(sha256) {
            return Err(StoreError::BadHash(sha256.to_string()));
        }
        let handle = File::open(file).map_err(io_err("open", file))?;
        let (actual, _) = sha256_reader(&handle).map_err(io_err("read", file))?;
        if actual != sha256 {
            return Err(StoreError::Mismatch {
                path: file.to_path_buf(),
                expected: sha256.to_string(),
                actual,
            });
        }
        self.commit_verified(file, sha256)
    }

    /// Renames an already verified file into place: fsync the file, rename,
    /// fsync the directory. Callers must have hashed `file` themselves.
    pub(crate) fn commit_verified(&self, file: &Path, sha256: &str) -> Result<PathBuf, StoreError> {
        let dest = self.blob_path(sha256);
        let dir = self.ensure_dir(dest.parent().expect("blob path has a parent").to_path_buf())?;
        File::open(file)
            .and_then(|f| f.sync_all())
            .map_err(io_err("sync", file))?;
        fs::rename(file, &dest).map_err(io_err("move into the cache", file))?;
        // Blobs are immutable: make accidental edits fail loudly.
        let _ = fs::set_permissions(&dest, std::os::unix::fs::PermissionsExt::from_mode(0o444));
        File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err("sync", &dir))?;
        Ok(dest)
    }

    /// Stores bytes; returns (sha256, path). Atomic like every insert.
    pub fn insert_bytes(&self, bytes: &[u8]) -> Result<(String, PathBuf), StoreError> {
        let sha256 = sha256_hex(bytes);
        if let Some(path) = self.get(&sha256) {
            return Ok((sha256, path));
        }
        let tmp_dir = self.tmp_dir()?;
        let mut tmp = tempfile::NamedTempFile::new_in(&tmp_dir)
            .map_err(io_err("create a file in", &tmp_dir))?;
        tmp.write_all(bytes).map_err(io_err("write", tmp.path()))?;
        let (_, tmp_path) = tmp.keep().map_err(|e| io_err("keep", &tmp_dir)(e.error))?;
        let path = self.commit_verified(&tmp_path, &sha256)?;
        Ok((sha256, path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_bytes_is_content_addressed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        let (hash, path) = store.insert_bytes(b"hello").unwrap();
        assert_eq!(
            hash,
            "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        assert_eq!(path, dir.path().join("blobs/sha256").join(&hash));
        assert_eq!(fs::read(&path).unwrap(), b"hello");
        assert_eq!(store.list_blobs().unwrap(), vec![hash.clone()]);
        assert!(
            fs::read_dir(dir.path().join("tmp"))
                .unwrap()
                .next()
                .is_none()
        );
    }

    #[test]
    fn insert_file_refuses_wrong_content() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        let file = store.tmp_dir().unwrap().join("x");
        fs::write(&file, b"not hello").unwrap();
        let wanted = sha256_hex(b"hello");
        let err = store.insert_file(&file, &wanted).unwrap_err();
        assert!(matches!(err, StoreError::Mismatch { .. }), "{err}");
        assert!(!store.contains(&wanted));
        assert!(store.list_blobs().unwrap().is_empty());
    }

    #[test]
    fn sha256_hex_check() {
        assert!(is_sha256_hex(&sha256_hex(b"")));
        assert!(!is_sha256_hex("ABCDEF"));
        assert!(!is_sha256_hex(&"A".repeat(64)));
    }
}
