//! I/O with context: every error names the operation and the path, and
//! keeps the cause as its `source`.

use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// An I/O error on one path, with what was being done.
#[derive(Debug, thiserror::Error)]
#[error("cannot {action} {}", path.display())]
pub struct IoError {
    /// A verb phrase: "read", "create the directory", "rename into".
    pub action: &'static str,
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

/// For `map_err`: `fs::read(p).map_err(io_err("read", p))?`; the `?`
/// converts the [`IoError`] into the caller's error type.
pub fn io_err<'p>(action: &'static str, path: &'p Path) -> impl FnOnce(io::Error) -> IoError + 'p {
    move |source| IoError {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// Writes `content` to `path` atomically: a temporary file in the same
/// directory, fsync, rename. A power cut leaves the old or the new content.
pub fn write_atomic(path: &Path, content: &[u8]) -> Result<(), IoError> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp~{}", std::process::id()));
    let tmp = dir.join(name);
    let result = (|| {
        let mut file = fs::File::create(&tmp).map_err(io_err("create", &tmp))?;
        file.write_all(content).map_err(io_err("write", &tmp))?;
        file.sync_all().map_err(io_err("sync", &tmp))?;
        fs::rename(&tmp, path).map_err(io_err("rename into", path))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// sha256 (hex) and length of everything `reader` yields.
pub fn sha256_reader(mut reader: impl Read) -> io::Result<(String, u64)> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        total += n as u64;
    }
    Ok((hex::encode(hasher.finalize()), total))
}

/// `1.5 MiB`-style sizes for humans (binary units, one decimal).
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// sha256 (hex) and length of a file, streamed.
pub fn sha256_file(path: &Path) -> Result<(String, u64), IoError> {
    let file = fs::File::open(path).map_err(io_err("open", path))?;
    sha256_reader(file).map_err(io_err("read", path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_atomic_replaces_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.json");
        write_atomic(&path, b"old").unwrap();
        write_atomic(&path, b"new").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"new");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn write_atomic_names_the_path_on_failure() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing/f");
        let error = write_atomic(&path, b"x").unwrap_err();
        assert_eq!(error.action, "create");
        assert!(error.to_string().contains("missing/f.tmp~"), "{error}");
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(3 << 20), "3.0 MiB");
        assert_eq!(human_bytes(1536 << 30), "1.5 TiB");
    }

    #[test]
    fn sha256_of_a_known_input() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("abc");
        fs::write(&path, b"abc").unwrap();
        let (hash, len) = sha256_file(&path).unwrap();
        assert_eq!(
            hash,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(len, 3);
        let missing = sha256_file(&dir.path().join("nope")).unwrap_err();
        assert_eq!(missing.action, "open");
    }
}
