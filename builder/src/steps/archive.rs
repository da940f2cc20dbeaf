//! A step's output tree as one blob: a tar (ustar/GNU) compressed with
//! zstd, entries in manifest order, every owner 0, time 0 and mode 644 or
//! 755, so one tree always gives the same bytes (and the same digest on
//! every machine that pushes it).

use std::fs::File;
use std::io::Read;
use std::path::Path;

use hiperiso_stick::io::{IoError, io_err};

use crate::steps::tree::{Entry, Tree};

/// The media type of the blob.
pub const MEDIA_TYPE: &str = "application/vnd.hiperiso.tree.v1.tar+zstd";

const ZSTD_LEVEL: i32 = 6;

/// Packs `root`, whose manifest is `tree`.
pub fn pack(root: &Path, tree: &Tree) -> Result<Vec<u8>, IoError> {
    let what = || io_err("pack", root);
    let encoder = zstd::Encoder::new(Vec::new(), ZSTD_LEVEL).map_err(what())?;
    let mut tar = tar::Builder::new(encoder);
    for (rel, entry) in &tree.entries {
        let mut header = tar::Header::new_gnu();
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        let path = root.join(rel);
        match entry {
            Entry::Dir => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_mode(0o755);
                header.set_size(0);
                tar.append_data(&mut header, rel, std::io::empty())
            }
            Entry::File { executable, .. } => {
                let file = File::open(&path).map_err(io_err("open", &path))?;
                let len = file.metadata().map_err(io_err("stat", &path))?.len();
                header.set_entry_type(tar::EntryType::Regular);
                header.set_mode(if *executable { 0o755 } else { 0o644 });
                header.set_size(len);
                tar.append_data(&mut header, rel, file.take(len))
            }
            Entry::Symlink { target } => {
                header.set_entry_type(tar::EntryType::Symlink);
                header.set_mode(0o777);
                header.set_size(0);
                tar.append_link(&mut header, rel, target)
            }
        }
        .map_err(io_err("pack", &path))?;
    }
    let encoder = tar.into_inner().map_err(what())?;
    encoder.finish().map_err(what())
}

/// Unpacks a blob into the empty directory `dest`. Entries cannot land
/// outside `dest` (the tar crate refuses `..` and absolute paths); the
/// caller compares the result's tree hash with the signed record before
/// trusting any of it.
pub fn unpack(blob: &[u8], dest: &Path) -> Result<(), IoError> {
    let decoder = zstd::Decoder::new(blob).map_err(io_err("unpack into", dest))?;
    let mut archive = tar::Archive::new(decoder);
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(false);
    archive.set_unpack_xattrs(false);
    archive.unpack(dest).map_err(io_err("unpack into", dest))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::{PermissionsExt, symlink};

    #[test]
    fn round_trip_keeps_the_tree_and_packing_is_deterministic() {
        let a = tempfile::tempdir().unwrap();
        fs::create_dir_all(a.path().join("bin/deep")).unwrap();
        fs::write(a.path().join("bin/tool"), b"#!/bin/sh\necho hi\n").unwrap();
        fs::set_permissions(a.path().join("bin/tool"), fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(a.path().join("bin/deep/").join("n".repeat(120)), b"long").unwrap();
        symlink("tool", a.path().join("bin/alias")).unwrap();
        let tree = crate::steps::tree::normalize(a.path(), 0).unwrap();
        let blob = pack(a.path(), &tree).unwrap();
        assert_eq!(blob, pack(a.path(), &tree).unwrap());
        let b = tempfile::tempdir().unwrap();
        unpack(&blob, b.path()).unwrap();
        assert_eq!(Tree::scan(b.path()).unwrap(), tree);
        assert!(unpack(&blob[..blob.len() / 2], tempfile::tempdir().unwrap().path()).is_err());
    }
}
