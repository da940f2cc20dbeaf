//! .deb files: an `ar` archive holding `debian-binary`, `control.tar.*` and
//! `data.tar.{xz,zst,gz}`; unpacked safely into a tree.
//!
//! Safety: entry paths are normalised and may not contain `..` or escape the
//! tree; symlinks are created as written, but a symlink met while walking an
//! entry's parent directories is resolved *inside* the tree (an absolute
//! target is relative to the tree's root, `..` stops at the root), so no
//! entry, hardlink or later package ever writes outside the tree.

use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Component, Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum DebError {
    #[error("{deb}: {reason}")]
    Format { deb: String, reason: String },
    #[error("{deb}: entry {entry:?}: {reason}")]
    UnsafeEntry {
        deb: String,
        entry: String,
        reason: &'static str,
    },
    #[error("{deb}: {context}")]
    Io {
        deb: String,
        context: String,
        #[source]
        source: io::Error,
    },
}

/// One member of an `ar` archive.
#[derive(Debug, Clone)]
pub struct ArMember<'a> {
    pub name: String,
    pub data: &'a [u8],
}

/// Parses a System V / GNU `ar` archive held in memory.
pub fn ar_members(bytes: &[u8]) -> Result<Vec<ArMember<'_>>, String> {
    let mut rest = bytes
        .strip_prefix(b"!<arch>\n")
        .ok_or("not an ar archive (bad magic)")?;
    let mut members = Vec::new();
    while !rest.is_empty() {
        if rest.len() < 60 {
            return Err("truncated ar member header".into());
        }
        let header = &rest[..60];
        if &header[58..60] != b"`\n" {
            return Err("bad ar member header terminator".into());
        }
        let name = String::from_utf8_lossy(&header[..16])
            .trim_end()
            .trim_end_matches('/')
            .to_string();
        let size: usize = std::str::from_utf8(&header[48..58])
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .ok_or("bad ar member size")?;
        let data = rest
            .get(60..60 + size)
            .ok_or_else(|| format!("ar member {name} is truncated"))?;
        members.push(ArMember { name, data });
        let next = (60 + size + 1) & !1;
        rest = rest.get(next..).unwrap_or(&[]);
    }
    Ok(members)
}

/// Opens a decompressing reader for `data.tar.*` by its extension.
fn decompressor<'a>(name: &str, data: &'a [u8]) -> Result<Box<dyn Read + 'a>, String> {
    Ok(match name.rsplit('.').next() {
        Some("xz") => Box::new(liblzma::read::XzDecoder::new(data)),
        Some("zst") => Box::new(zstd::stream::read::Decoder::new(data).map_err(|e| e.to_string())?),
        Some("gz") => Box::new(flate2::read::GzDecoder::new(data)),
        Some("tar") => Box::new(data),
        _ => return Err(format!("unsupported member compression: {name}")),
    })
}

/// Normalises a tar path to components below the root; refuses `..`.
fn relative_components(path: &Path) -> Option<Vec<String>> {
    let mut components = Vec::new();
    for component in path.components() {
        match component {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(part) => components.push(part.to_str()?.to_string()),
            Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    Some(components)
}

/// Resolves `components` inside `root`, following symlinks confined to the
/// tree. The last component is not followed when `follow_last` is false.
pub fn resolve_in_tree(
    root: &Path,
    components: &[String],
    follow_last: bool,
) -> io::Result<PathBuf> {
    let mut resolved: Vec<String> = Vec::new();
    let mut pending: Vec<String> = components.iter().rev().cloned().collect();
    let mut links_followed = 0;
    while let Some(part) = pending.pop() {
        match part.as_str() {
            "" | "." => continue,
            ".." => {
                resolved.pop();
                continue;
            }
            _ => {}
        }
        let is_last = pending.is_empty();
        let candidate = root.join(resolved.join("/")).join(&part);
        if (!is_last || follow_last)
            && let Ok(target) = fs::read_link(&candidate)
        {
            links_followed += 1;
            if links_followed > 40 {
                return Err(io::Error::other(format!(
                    "too many levels of symlinks at {}",
                    candidate.display()
                )));
            }
            if target.is_absolute() {
                resolved.clear();
            }
            for component in target.to_string_lossy().split('/').rev() {
                pending.push(component.to_string());
            }
            continue;
        }
        resolved.push(part);
    }
    Ok(root.join(resolved.join("/")))
}

/// Statistics of one unpack.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Unpacked {
    pub files: usize,
    pub bytes: u64,
}

/// Unpacks the data member of a .deb held in `bytes` into `root`.
/// `deb` names the package in errors.
pub fn unpack(deb: &str, bytes: &[u8], root: &Path) -> Result<Unpacked, DebError> {
    let format = |reason: String| DebError::Format {
        deb: deb.to_string(),
        reason,
    };
    let members = ar_members(bytes).map_err(format)?;
    match members.first() {
        Some(m) if m.name == "debian-binary" && m.data.starts_with(b"2.") => {}
        _ => return Err(format("first member is not debian-binary 2.x".into())),
    }
    let data = members
        .iter()
        .find(|m| m.name.starts_with("data.tar"))
        .ok_or_else(|| format("no data.tar member".into()))?;
    let reader = decompressor(&data.name, data.data).map_err(format)?;
    unpack_tar(deb, reader, root)
}

/// Unpacks a tar stream into `root` with the safety rules of this module.
pub fn unpack_tar(deb: &str, reader: impl Read, root: &Path) -> Result<Unpacked, DebError> {
    let io_error = |context: String| {
        let deb = deb.to_string();
        move |source| DebError::Io {
            deb,
            context,
            source,
        }
    };
    let mut archive = tar::Archive::new(reader);
    let mut stats = Unpacked::default();
    for entry in archive.entries().map_err(io_error("reading tar".into()))? {
        let mut entry = entry.map_err(io_error("reading tar entry".into()))?;
        let raw_path = entry
            .path()
            .map_err(io_error("entry path".into()))?
            .into_owned();
        let entry_name = raw_path.display().to_string();
        let unsafe_entry = |reason| DebError::UnsafeEntry {
            deb: deb.to_string(),
            entry: entry_name.clone(),
            reason,
        };
        let components =
            relative_components(&raw_path).ok_or_else(|| unsafe_entry("path leaves the tree"))?;
        let Some((name, parents)) = components.split_last() else {
            continue; // "./" itself
        };
        let parent = resolve_in_tree(root, parents, true)
            .map_err(io_error(format!("resolving {entry_name}")))?;
        fs::create_dir_all(&parent).map_err(io_error(format!("creating {}", parent.display())))?;
        let target = parent.join(name);
        let mode = entry.header().mode().unwrap_or(0o644) & 0o7777;
        let kind = entry.header().entry_type();
        if kind.is_dir() {
            if fs::symlink_metadata(&target).is_ok_and(|m| !m.is_dir()) {
                remove_existing(&target).map_err(io_error(format!("replacing {entry_name}")))?;
            }
            fs::create_dir_all(&target).map_err(io_error(format!("creating {entry_name}")))?;
            fs::set_permissions(&target, fs::Permissions::from_mode(mode))
                .map_err(io_error(format!("chmod {entry_name}")))?;
            continue;
        }
        remove_existing(&target).map_err(io_error(format!("replacing {entry_name}")))?;
        if kind.is_symlink() {
            let link = entry
                .link_name()
                .map_err(io_error(format!("link target of {entry_name}")))?
                .ok_or_else(|| unsafe_entry("symlink without a target"))?;
            symlink(&link, &target).map_err(io_error(format!("symlink {entry_name}")))?;
        } else if kind.is_hard_link() {
            let link = entry
                .link_name()
                .map_err(io_error(format!("link target of {entry_name}")))?
                .ok_or_else(|| unsafe_entry("hardlink without a target"))?;
            let link_components = relative_components(&link)
                .ok_or_else(|| unsafe_entry("hardlink target leaves the tree"))?;
            let source = resolve_in_tree(root, &link_components, false)
                .map_err(io_error(format!("resolving {entry_name}")))?;
            if !fs::symlink_metadata(&source).is_ok_and(|m| m.is_file()) {
                return Err(unsafe_entry("hardlink to a missing or non-regular file"));
            }
            fs::hard_link(&source, &target).map_err(io_error(format!("hardlink {entry_name}")))?;
            stats.files += 1;
        } else if kind.is_file() || kind == tar::EntryType::Continuous {
            let mut file =
                fs::File::create(&target).map_err(io_error(format!("creating {entry_name}")))?;
            stats.bytes += io::copy(&mut entry, &mut file)
                .map_err(io_error(format!("writing {entry_name}")))?;
            file.set_permissions(fs::Permissions::from_mode(mode))
                .map_err(io_error(format!("chmod {entry_name}")))?;
            stats.files += 1;
        } else {
            // Device nodes, FIFOs: never shipped by the packages we use.
            return Err(unsafe_entry("unsupported entry type (device or fifo)"));
        }
    }
    Ok(stats)
}

/// Removes a file or symlink (never following it) so a new entry replaces it.
fn remove_existing(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_with(build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        build(&mut builder);
        builder.into_inner().unwrap()
    }

    fn header(kind: tar::EntryType, size: u64) -> tar::Header {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(kind);
        header.set_size(size);
        header.set_mode(0o755);
        header
    }

    fn ar(members: &[(&str, &[u8])]) -> Vec<u8> {
        let mut out = b"!<arch>\n".to_vec();
        for (name, data) in members {
            out.extend(
                format!(
                    "{:<16}{:<12}{:<6}{:<6}{:<8}{:<10}`\n",
                    name,
                    0,
                    0,
                    0,
                    100644,
                    data.len()
                )
                .bytes(),
            );
            out.extend_from_slice(data);
            if data.len() % 2 == 1 {
                out.push(b'\n');
            }
        }
        out
    }

    fn add_file(builder: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8]) {
        let mut h = header(tar::EntryType::Regular, data.len() as u64);
        builder.append_data(&mut h, path, data).unwrap();
    }

    fn add_link(
        builder: &mut tar::Builder<Vec<u8>>,
        kind: tar::EntryType,
        path: &str,
        target: &str,
    ) {
        let mut h = header(kind, 0);
        builder.append_link(&mut h, path, target).unwrap();
    }

    #[test]
    fn unpacks_xz_deb_with_links() {
        let tar = tar_with(|b| {
            add_file(b, "./usr/bin/tool", b"#!/bin/sh\n");
            add_link(b, tar::EntryType::Symlink, "./usr/bin/alias", "tool");
            add_link(b, tar::EntryType::Link, "./usr/bin/hard", "./usr/bin/tool");
        });
        let mut xz = Vec::new();
        io::copy(&mut liblzma::read::XzEncoder::new(&tar[..], 1), &mut xz).unwrap();
        let deb = ar(&[
            ("debian-binary", b"2.0\n"),
            ("control.tar.xz", b""),
            ("data.tar.xz", &xz),
        ]);
        let root = tempfile::tempdir().unwrap();
        let stats = unpack("tool_1.0_amd64.deb", &deb, root.path()).unwrap();
        assert_eq!(
            stats,
            Unpacked {
                files: 2,
                bytes: 10
            }
        );
        let tool = root.path().join("usr/bin/tool");
        assert_eq!(fs::read(&tool).unwrap(), b"#!/bin/sh\n");
        assert_eq!(
            fs::metadata(&tool).unwrap().permissions().mode() & 0o777,
            0o755
        );
        assert_eq!(
            fs::read_link(root.path().join("usr/bin/alias")).unwrap(),
            Path::new("tool")
        );
        use std::os::unix::fs::MetadataExt;
        assert_eq!(
            fs::metadata(root.path().join("usr/bin/hard"))
                .unwrap()
                .ino(),
            fs::metadata(&tool).unwrap().ino()
        );
    }

    #[test]
    fn refuses_parent_dir_escape() {
        let mut raw = tar::Header::new_gnu();
        raw.set_entry_type(tar::EntryType::Regular);
        raw.set_size(1);
        raw.set_mode(0o644);
        // tar::Builder refuses "..", so write the name bytes directly.
        raw.as_old_mut().name[..13].copy_from_slice(b"../escaped.tx");
        raw.set_cksum();
        let mut tar = raw.as_bytes().to_vec();
        tar.extend_from_slice(&[b'x'; 512]);
        tar.extend_from_slice(&[0; 1024]);
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        fs::create_dir(&root).unwrap();
        let err = unpack_tar("evil.deb", &tar[..], &root).unwrap_err();
        assert!(err.to_string().contains("path leaves the tree"), "{err}");
        assert!(!dir.path().join("escaped.tx").exists());
    }

    #[test]
    fn symlinks_are_confined_to_the_tree() {
        let outside = tempfile::tempdir().unwrap();
        let root = tempfile::tempdir().unwrap();
        let outside_path = outside.path().to_str().unwrap().to_string();
        let tar = tar_with(|b| {
            // An absolute symlink to a host directory, then a file through it.
            add_link(b, tar::EntryType::Symlink, "./lib", &outside_path);
            add_link(b, tar::EntryType::Symlink, "./up", "../../../..");
            add_file(b, "./lib/planted", b"x");
            add_file(b, "./up/etc/planted2", b"y");
        });
        unpack_tar("evil.deb", &tar[..], root.path()).unwrap();
        assert_eq!(fs::read_dir(outside.path()).unwrap().count(), 0);
        // Both writes landed inside the tree, at the confined targets.
        let inside = root
            .path()
            .join(outside_path.trim_start_matches('/'))
            .join("planted");
        assert_eq!(fs::read(inside).unwrap(), b"x");
        assert_eq!(fs::read(root.path().join("etc/planted2")).unwrap(), b"y");
    }

    #[test]
    fn rejects_non_deb() {
        let root = tempfile::tempdir().unwrap();
        let err = unpack("x.deb", b"PK\x03\x04", root.path()).unwrap_err();
        assert!(
            err.to_string().contains("x.deb: not an ar archive"),
            "{err}"
        );
        let deb = ar(&[("debian-binary", b"2.0\n"), ("control.tar.xz", b"")]);
        let err = unpack("y.deb", &deb, root.path()).unwrap_err();
        assert!(err.to_string().contains("no data.tar member"), "{err}");
    }
}
