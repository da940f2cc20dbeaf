//! Tree manifests: the content hash of a directory tree (a step's output or
//! the tools tree).
//!
//! One line per entry, sorted by path (bytewise), four fields separated by
//! tabs (shown here as `|`):
//!
//! ```text
//! d|755|-|bin
//! f|755|<sha256>|bin/busybox
//! l|-|busybox|bin/sh
//! ```
//!
//! Only what a build can rely on is recorded: the kind, the executable bit
//! (files are 644 or 755, directories 755), the content and symlink
//! targets. Owners, times and other mode bits are not part of a tree;
//! [`normalize`] makes the directory on disk match its manifest.

use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use hiperiso_stick::io::{IoError, io_err};

use crate::sources::store::{sha256_hex, sha256_reader};

#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    #[error(transparent)]
    Io(#[from] IoError),
    #[error(
        "{path}: {what} cannot be part of a build output (only files, directories and symlinks)"
    )]
    Unsupported { path: PathBuf, what: &'static str },
    #[error(
        "{path}: file names with tabs, newlines or non-UTF-8 bytes cannot be part of a build output"
    )]
    BadName { path: PathBuf },
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Entry {
    Dir,
    File { executable: bool, sha256: String },
    Symlink { target: String },
}

/// A tree's entries by relative path, sorted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tree {
    pub entries: Vec<(String, Entry)>,
}

impl Tree {
    /// Reads `root` recursively (without following symlinks).
    pub fn scan(root: &Path) -> Result<Self, TreeError> {
        let mut entries = Vec::new();
        scan_dir(root, "", &mut entries)?;
        entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        Ok(Self { entries })
    }

    /// The manifest text (see the module docs).
    pub fn manifest(&self) -> String {
        let mut out = String::new();
        for (path, entry) in &self.entries {
            match entry {
                Entry::Dir => out.push_str(&format!("d\t755\t-\t{path}\n")),
                Entry::File { executable, sha256 } => out.push_str(&format!(
                    "f\t{}\t{sha256}\t{path}\n",
                    if *executable { "755" } else { "644" }
                )),
                Entry::Symlink { target } => out.push_str(&format!("l\t-\t{target}\t{path}\n")),
            }
        }
        out
    }

    /// The tree's content hash: the sha256 of its manifest.
    pub fn hash(&self) -> String {
        sha256_hex(self.manifest().as_bytes())
    }

    /// Paths whose entries differ between two trees (present in one only,
    /// or with different content), sorted.
    pub fn differences(&self, other: &Tree) -> Vec<String> {
        let mut out = Vec::new();
        let (mut a, mut b) = (
            self.entries.iter().peekable(),
            other.entries.iter().peekable(),
        );
        loop {
            match (a.peek(), b.peek()) {
                (None, None) => break,
                (Some((pa, _)), None) => {
                    out.push(pa.clone());
                    a.next();
                }
                (None, Some((pb, _))) => {
                    out.push(pb.clone());
                    b.next();
                }
                (Some((pa, ea)), Some((pb, eb))) => match pa.as_bytes().cmp(pb.as_bytes()) {
                    std::cmp::Ordering::Less => {
                        out.push(pa.clone());
                        a.next();
                    }
                    std::cmp::Ordering::Greater => {
                        out.push(pb.clone());
                        b.next();
                    }
                    std::cmp::Ordering::Equal => {
                        if ea != eb {
                            out.push(pa.clone());
                        }
                        a.next();
                        b.next();
                    }
                },
            }
        }
        out
    }
}

fn scan_dir(dir: &Path, prefix: &str, out: &mut Vec<(String, Entry)>) -> Result<(), TreeError> {
    for entry in fs::read_dir(dir).map_err(io_err("list", dir))? {
        let entry = entry.map_err(io_err("list", dir))?;
        let path = entry.path();
        let name = entry.file_name();
        let name = match std::str::from_utf8(name.as_bytes()) {
            Ok(n) if !n.contains(['\t', '\n']) => n.to_string(),
            _ => return Err(TreeError::BadName { path }),
        };
        let rel = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        let meta = fs::symlink_metadata(&path).map_err(io_err("stat", &path))?;
        let kind = meta.file_type();
        if kind.is_dir() {
            out.push((rel.clone(), Entry::Dir));
            scan_dir(&path, &rel, out)?;
        } else if kind.is_file() {
            let file = fs::File::open(&path).map_err(io_err("open", &path))?;
            let (sha256, _) = sha256_reader(file).map_err(io_err("read", &path))?;
            let executable = meta.permissions().mode() & 0o111 != 0;
            out.push((rel, Entry::File { executable, sha256 }));
        } else if kind.is_symlink() {
            let target = fs::read_link(&path).map_err(io_err("read the link", &path))?;
            let target = match target.to_str() {
                Some(t) if !t.contains(['\t', '\n']) => t.to_string(),
                _ => return Err(TreeError::BadName { path }),
            };
            out.push((rel, Entry::Symlink { target }));
        } else {
            return Err(TreeError::Unsupported {
                path,
                what: "a device, socket or FIFO",
            });
        }
    }
    Ok(())
}

/// Makes `root` match its manifest: files 644 or 755, directories 755,
/// every modification time `epoch`. Returns the tree.
pub fn normalize(root: &Path, epoch: i64) -> Result<Tree, TreeError> {
    let tree = Tree::scan(root)?;
    let times = [
        libc::timespec {
            tv_sec: epoch as libc::time_t,
            tv_nsec: 0,
        },
        libc::timespec {
            tv_sec: epoch as libc::time_t,
            tv_nsec: 0,
        },
    ];
    // Children before parents, so directory times stick.
    for (rel, entry) in tree
        .entries
        .iter()
        .rev()
        .chain(std::iter::once(&(String::new(), Entry::Dir)))
    {
        let path = if rel.is_empty() {
            root.to_path_buf()
        } else {
            root.join(rel)
        };
        let mode = match entry {
            Entry::Dir => Some(0o755),
            Entry::File { executable, .. } => Some(if *executable { 0o755 } else { 0o644 }),
            Entry::Symlink { .. } => None,
        };
        if let Some(mode) = mode {
            fs::set_permissions(&path, fs::Permissions::from_mode(mode))
                .map_err(io_err("set permissions of", &path))?;
        }
        let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
            .map_err(|_| TreeError::BadName { path: path.clone() })?;
        // SAFETY: c_path is a valid NUL-terminated string and times has
        // the two entries utimensat reads.
        let rc = unsafe {
            libc::utimensat(
                libc::AT_FDCWD,
                c_path.as_ptr(),
                times.as_ptr(),
                libc::AT_SYMLINK_NOFOLLOW,
            )
        };
        if rc != 0 {
            return Err(io_err("set the time of", &path)(io::Error::last_os_error()).into());
        }
    }
    Ok(tree)
}

/// Writes `text` to `dest` atomically (temporary file in the same
/// directory, fsync, rename), creating the directory first.
pub fn write_atomic(dest: &Path, text: &[u8]) -> Result<(), TreeError> {
    let dir = dest.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(io_err("create", dir))?;
    Ok(hiperiso_stick::io::write_atomic(dest, text)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn sample(root: &Path) {
        fs::create_dir_all(root.join("bin")).unwrap();
        fs::write(root.join("bin/tool"), b"#!/bin/sh\n").unwrap();
        fs::set_permissions(root.join("bin/tool"), fs::Permissions::from_mode(0o700)).unwrap();
        fs::write(root.join("readme"), b"hi").unwrap();
        symlink("tool", root.join("bin/alias")).unwrap();
    }

    #[test]
    fn manifest_is_sorted_and_normalized() {
        let dir = tempfile::tempdir().unwrap();
        sample(dir.path());
        let tree = normalize(dir.path(), 1_704_067_200).unwrap();
        let text = tree.manifest();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "d\t755\t-\tbin");
        assert_eq!(lines[1], "l\t-\ttool\tbin/alias");
        assert!(lines[2].starts_with("f\t755\t") && lines[2].ends_with("\tbin/tool"));
        assert_eq!(lines[3], format!("f\t644\t{}\treadme", sha256_hex(b"hi")));
        let meta = fs::metadata(dir.path().join("bin/tool")).unwrap();
        assert_eq!(meta.permissions().mode() & 0o7777, 0o755);
        assert_eq!(std::os::unix::fs::MetadataExt::mtime(&meta), 1_704_067_200);
    }

    #[test]
    fn hash_changes_with_content_and_mode_only() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        sample(a.path());
        sample(b.path());
        fs::set_permissions(b.path().join("readme"), fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(
            Tree::scan(a.path()).unwrap().hash(),
            Tree::scan(b.path()).unwrap().hash()
        );
        fs::write(b.path().join("readme"), b"ho").unwrap();
        let (ta, tb) = (Tree::scan(a.path()).unwrap(), Tree::scan(b.path()).unwrap());
        assert_ne!(ta.hash(), tb.hash());
        assert_eq!(ta.differences(&tb), ["readme"]);
        fs::write(b.path().join("extra"), b"").unwrap();
        let tb = Tree::scan(b.path()).unwrap();
        assert_eq!(ta.differences(&tb), ["extra", "readme"]);
    }
}
