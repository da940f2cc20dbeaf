//! Initramfs assembly: files taken from an unpacked package tree (following
//! symlinks inside it), ELF library closures, kernel modules, overlay
//! directories laid on top, then a deterministic cpio and compression.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use hiperiso_stick::io::{IoError, io_err};

use crate::payload::cpio::{self, Content, CpioError, Node, Tree};
use crate::payload::elf::{self, ElfError};

/// zstd's level: on the ~90 MB debian-profile cpio, level 9 gives 30.1 MB
/// in 2.2 s on two cores where 19 gave 27.5 MB in 48 s.
const ZSTD_LEVEL: i32 = 9;
/// zstd's worker threads: fixed, never the machine's core count, so the
/// bytes do not depend on the machine.
const ZSTD_WORKERS: u32 = 2;

/// Compression of the cpio archive; the settings are fixed (level, worker
/// count) so the bytes do not depend on the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    /// zstd level 9 (two workers) with a content checksum.
    #[default]
    Zstd,
    /// gzip level 9.
    Gzip,
    /// xz preset 6 with a CRC32 check, as the kernel's decompressor requires.
    Xz,
    None,
}

impl std::str::FromStr for Compression {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "zstd" => Ok(Self::Zstd),
            "gzip" => Ok(Self::Gzip),
            "xz" => Ok(Self::Xz),
            "none" => Ok(Self::None),
            other => Err(format!(
                "unknown compression {other:?} (zstd, gzip, xz, none)"
            )),
        }
    }
}

impl Compression {
    /// The exact settings, for cache keys (payload/cached.rs).
    pub fn settings(self) -> String {
        match self {
            Self::Zstd => format!("zstd level {ZSTD_LEVEL} workers {ZSTD_WORKERS} checksum"),
            Self::Gzip => "gzip level 9 mtime 0".into(),
            Self::Xz => "xz preset 6 crc32".into(),
            Self::None => "none".into(),
        }
    }

    pub fn extension(self) -> &'static str {
        match self {
            Self::Zstd => ".zst",
            Self::Gzip => ".gz",
            Self::Xz => ".xz",
            Self::None => "",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum InitramfsError {
    #[error("writing the cpio archive")]
    Cpio(#[from] CpioError),
    #[error("resolving a binary's shared libraries")]
    Elf(#[from] ElfError),
    #[error("{path} is not in the package tree {root}")]
    NotInTree { path: String, root: String },
    #[error(transparent)]
    Io(#[from] IoError),
    #[error("compressing the initramfs")]
    Compress(#[source] io::Error),
}

/// Collects an initramfs from a package tree (`root`) and overlays.
pub struct Initramfs {
    root: PathBuf,
    tree: Tree,
}

impl Initramfs {
    pub fn new(root: impl Into<PathBuf>) -> Result<Self, InitramfsError> {
        let mut tree = Tree::new();
        tree.add_device_nodes()?;
        Ok(Self {
            root: root.into(),
            tree,
        })
    }

    /// The archive of `dir` alone (no device nodes), to be laid over
    /// another: concatenated after it, the kernel unpacks it last.
    pub fn of_directory(dir: &Path) -> Result<Self, InitramfsError> {
        let mut initramfs = Self {
            root: dir.to_path_buf(),
            tree: Tree::new(),
        };
        initramfs.add_directory(dir, "")?;
        Ok(initramfs)
    }

    pub fn tree(&self) -> &Tree {
        &self.tree
    }

    pub fn tree_mut(&mut self) -> &mut Tree {
        &mut self.tree
    }

    /// Copies `path` from the package tree to the same path in the initramfs.
    /// Symlinks on the way (in parents or the path itself) are copied as
    /// symlinks and followed inside the tree; directories are copied whole.
    pub fn add_from_root(&mut self, path: &str) -> Result<(), InitramfsError> {
        let mut resolved: Vec<String> = Vec::new();
        let mut pending: Vec<String> = path.split('/').rev().map(str::to_string).collect();
        let mut hops = 0;
        while let Some(part) = pending.pop() {
            match part.as_str() {
                "" | "." => continue,
                ".." => {
                    resolved.pop();
                    continue;
                }
                _ => {}
            }
            resolved.push(part);
            let relative = resolved.join("/");
            let source = self.root.join(&relative);
            let meta = fs::symlink_metadata(&source).map_err(|_| InitramfsError::NotInTree {
                path: relative.clone(),
                root: self.root.display().to_string(),
            })?;
            if meta.file_type().is_symlink() {
                hops += 1;
                let target = fs::read_link(&source).map_err(io_err("read the link", &source))?;
                let target = target.to_string_lossy().to_string();
                if hops > 40 {
                    return Err(InitramfsError::NotInTree {
                        path: format!("{relative} (symlink loop)"),
                        root: self.root.display().to_string(),
                    });
                }
                self.tree.insert(
                    &relative,
                    Node::Symlink {
                        target: target.clone(),
                    },
                )?;
                resolved.pop();
                if target.starts_with('/') {
                    resolved.clear();
                }
                pending.extend(target.split('/').rev().map(str::to_string));
                continue;
            }
            if pending.is_empty() {
                if meta.is_dir() {
                    self.add_directory(&source, &relative)?;
                } else {
                    self.tree.insert(
                        &relative,
                        Node::File {
                            content: Content::Path(source),
                            mode: meta.permissions().mode() & 0o7777,
                        },
                    )?;
                }
            }
        }
        Ok(())
    }

    /// Copies binaries and everything they load (interpreter, libraries).
    pub fn add_binaries(&mut self, binaries: &[&str]) -> Result<Vec<String>, InitramfsError> {
        let closure = elf::closure(&self.root, binaries)?;
        for path in &closure {
            self.add_from_root(path)?;
        }
        Ok(closure.into_iter().collect())
    }

    /// Lays the directory `source` into the initramfs under `destination`
    /// ("" for the root), replacing existing entries. Hardlinked files stay
    /// hardlinked; symlinks are kept as written.
    pub fn add_directory(
        &mut self,
        source: &Path,
        destination: &str,
    ) -> Result<(), InitramfsError> {
        let mut seen_inodes: BTreeMap<(u64, u64), String> = BTreeMap::new();
        self.add_directory_inner(source, destination, &mut seen_inodes)
    }

    fn add_directory_inner(
        &mut self,
        source: &Path,
        destination: &str,
        seen_inodes: &mut BTreeMap<(u64, u64), String>,
    ) -> Result<(), InitramfsError> {
        let meta = fs::symlink_metadata(source).map_err(io_err("stat", source))?;
        if !destination.is_empty() {
            self.tree.insert(
                destination,
                Node::Directory {
                    mode: meta.permissions().mode() & 0o7777,
                },
            )?;
        }
        let mut entries: Vec<PathBuf> = fs::read_dir(source)
            .map_err(io_err("read the directory", source))?
            .map(|entry| entry.map(|e| e.path()))
            .collect::<Result<_, _>>()
            .map_err(io_err("read the directory", source))?;
        entries.sort();
        for entry in entries {
            let name = entry
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .to_string();
            let path = if destination.is_empty() {
                name
            } else {
                format!("{destination}/{name}")
            };
            let meta = fs::symlink_metadata(&entry).map_err(io_err("stat", &entry))?;
            let kind = meta.file_type();
            if kind.is_dir() {
                self.add_directory_inner(&entry, &path, seen_inodes)?;
            } else if kind.is_symlink() {
                let target = fs::read_link(&entry).map_err(io_err("read the link", &entry))?;
                self.tree.insert(
                    &path,
                    Node::Symlink {
                        target: target.to_string_lossy().to_string(),
                    },
                )?;
            } else if kind.is_file() {
                let key = (meta.dev(), meta.ino());
                let node = match seen_inodes.get(&key) {
                    Some(first) if meta.nlink() > 1 => Node::HardLink {
                        target: first.clone(),
                    },
                    _ => {
                        seen_inodes.insert(key, path.clone());
                        Node::File {
                            content: Content::Path(entry.clone()),
                            mode: meta.permissions().mode() & 0o7777,
                        }
                    }
                };
                self.tree.insert(&path, node)?;
            }
        }
        Ok(())
    }

    /// Writes the (uncompressed) cpio archive.
    pub fn write_cpio(&self, mtime: u32, out: impl Write) -> Result<u64, InitramfsError> {
        Ok(cpio::write(&self.tree, mtime, out)?)
    }

    /// Writes the compressed archive.
    pub fn write(
        &self,
        mtime: u32,
        compression: Compression,
        out: impl Write,
    ) -> Result<(), InitramfsError> {
        let mut archive = Vec::new();
        self.write_cpio(mtime, &mut archive)?;
        compress(&archive, compression, out)
    }
}

/// Compresses `data` with fixed, machine-independent settings.
pub fn compress(
    data: &[u8],
    compression: Compression,
    mut out: impl Write,
) -> Result<(), InitramfsError> {
    let result = match compression {
        Compression::Zstd => (|| {
            let mut encoder = zstd::stream::Encoder::new(&mut out, ZSTD_LEVEL)?;
            encoder.include_checksum(true)?;
            encoder.multithread(ZSTD_WORKERS)?;
            encoder.write_all(data)?;
            encoder.finish().map(|_| ())
        })(),
        Compression::Gzip => (|| {
            let mut encoder = flate2::GzBuilder::new()
                .mtime(0)
                .write(&mut out, flate2::Compression::new(9));
            encoder.write_all(data)?;
            encoder.finish().map(|_| ())
        })(),
        Compression::Xz => (|| {
            let options = liblzma::stream::LzmaOptions::new_preset(6).map_err(io::Error::other)?;
            let mut filters = liblzma::stream::Filters::new();
            filters.lzma2(&options);
            let stream = liblzma::stream::Stream::new_stream_encoder(
                &filters,
                liblzma::stream::Check::Crc32,
            )
            .map_err(io::Error::other)?;
            let mut encoder = liblzma::write::XzEncoder::new_stream(&mut out, stream);
            encoder.write_all(data)?;
            encoder.finish().map(|_| ())
        })(),
        Compression::None => out.write_all(data),
    };
    result.map_err(InitramfsError::Compress)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn package_tree() -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        fs::create_dir_all(r.join("usr/lib/x86_64-linux-gnu")).unwrap();
        fs::create_dir_all(r.join("usr/bin")).unwrap();
        symlink("usr/lib", r.join("lib")).unwrap();
        fs::write(r.join("usr/lib/x86_64-linux-gnu/libz.so.1.2.13"), b"z").unwrap();
        symlink(
            "libz.so.1.2.13",
            r.join("usr/lib/x86_64-linux-gnu/libz.so.1"),
        )
        .unwrap();
        fs::write(r.join("usr/bin/tool"), b"#!/bin/sh\n").unwrap();
        fs::set_permissions(r.join("usr/bin/tool"), fs::Permissions::from_mode(0o755)).unwrap();
        root
    }

    #[test]
    fn copies_through_symlinked_parents() {
        let root = package_tree();
        let mut initramfs = Initramfs::new(root.path()).unwrap();
        initramfs
            .add_from_root("/lib/x86_64-linux-gnu/libz.so.1")
            .unwrap();
        let tree = initramfs.tree();
        assert_eq!(
            tree.get("lib"),
            Some(&Node::Symlink {
                target: "usr/lib".into()
            })
        );
        assert_eq!(
            tree.get("usr/lib/x86_64-linux-gnu/libz.so.1"),
            Some(&Node::Symlink {
                target: "libz.so.1.2.13".into()
            })
        );
        assert!(matches!(
            tree.get("usr/lib/x86_64-linux-gnu/libz.so.1.2.13"),
            Some(Node::File { .. })
        ));
        let err = initramfs.add_from_root("usr/bin/missing").unwrap_err();
        assert!(
            err.to_string()
                .contains("usr/bin/missing is not in the package tree"),
            "{err}"
        );
    }

    #[test]
    fn overlay_replaces_and_keeps_hardlinks() {
        let root = package_tree();
        let overlay = tempfile::tempdir().unwrap();
        fs::create_dir_all(overlay.path().join("usr/bin")).unwrap();
        fs::write(overlay.path().join("usr/bin/tool"), b"overlay").unwrap();
        fs::hard_link(
            overlay.path().join("usr/bin/tool"),
            overlay.path().join("usr/bin/tool2"),
        )
        .unwrap();
        let mut initramfs = Initramfs::new(root.path()).unwrap();
        initramfs.add_from_root("usr/bin/tool").unwrap();
        initramfs.add_directory(overlay.path(), "").unwrap();
        assert_eq!(
            initramfs.tree().get("usr/bin/tool"),
            Some(&Node::File {
                content: Content::Path(overlay.path().join("usr/bin/tool")),
                mode: 0o644
            })
        );
        assert_eq!(
            initramfs.tree().get("usr/bin/tool2"),
            Some(&Node::HardLink {
                target: "usr/bin/tool".into()
            })
        );
    }

    #[test]
    fn compressions_round_trip_and_are_stable() {
        let data: Vec<u8> = (0..200_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        for compression in [Compression::Zstd, Compression::Gzip, Compression::Xz] {
            let mut first = Vec::new();
            let mut second = Vec::new();
            compress(&data, compression, &mut first).unwrap();
            compress(&data, compression, &mut second).unwrap();
            assert_eq!(first, second, "{compression:?}");
            assert!(first.len() < data.len() / 4, "{compression:?}");
            let mut back = Vec::new();
            match compression {
                Compression::Zstd => {
                    io::copy(
                        &mut zstd::stream::read::Decoder::new(&first[..]).unwrap(),
                        &mut back,
                    )
                    .unwrap();
                }
                Compression::Gzip => {
                    io::copy(&mut flate2::read::GzDecoder::new(&first[..]), &mut back).unwrap();
                }
                Compression::Xz => {
                    // Stream flags byte 7 = check type 1 (CRC32).
                    assert_eq!(first[7], 1, "xz check must be CRC32");
                    io::copy(&mut liblzma::read::XzDecoder::new(&first[..]), &mut back).unwrap();
                }
                Compression::None => {}
            }
            assert_eq!(back, data, "{compression:?}");
        }
    }
}
