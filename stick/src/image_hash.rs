//! The image hash (build.json's `image_sha256`): sha256 over the image's
//! size and its non-zero 4 KiB blocks, each with its index. A hole and
//! written zeros hash alike, so a sparse image file and the device it was
//! copied to give the same hash; holes are skipped with
//! `SEEK_DATA`/`SEEK_HOLE` without being read, so hashing costs what was
//! written, not the image's size.
//!
//! ```text
//! sha256( "hiperiso image sha256 v2\n" || size as u64 LE
//!         || for each 4 KiB block i holding a non-zero byte:
//!              i as u64 LE || the block (the last one may be shorter) )
//! ```

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;

use sha2::{Digest, Sha256};

/// The block size the hash is defined over.
pub const BLOCK: u64 = 4096;
const DOMAIN: &[u8] = b"hiperiso image sha256 v2\n";
/// Bytes read at once.
const CHUNK: u64 = 1 << 20;

/// The hash of the first `size` bytes of `file` (a file or a block
/// device). `patch` replaces the bytes at an offset before hashing (to
/// check a sealed image with its placeholder put back).
pub fn image_sha256(file: &File, size: u64, patch: Option<(u64, &[u8])>) -> io::Result<String> {
    image_sha256_visiting(file, size, patch, |_, _| {})
}

/// [`image_sha256`], showing `visit` each stretch of the image it reads
/// (its offset and bytes, patched, in increasing order; holes are never
/// shown), so a caller can look for something in the same pass.
pub fn image_sha256_visiting(
    file: &File,
    size: u64,
    patch: Option<(u64, &[u8])>,
    mut visit: impl FnMut(u64, &[u8]),
) -> io::Result<String> {
    let mut hasher = Sha256::new();
    hasher.update(DOMAIN);
    hasher.update(size.to_le_bytes());
    let mut buffer = vec![0u8; CHUNK as usize];
    for (start, end) in data_ranges(file, size)? {
        let mut at = start;
        while at < end {
            let len = (end - at).min(CHUNK) as usize;
            let chunk = &mut buffer[..len];
            file.read_exact_at(chunk, at)?;
            if let Some((offset, bytes)) = patch {
                apply(chunk, at, offset, bytes);
            }
            visit(at, chunk);
            for (i, block) in chunk.chunks(BLOCK as usize).enumerate() {
                if block.iter().any(|&b| b != 0) {
                    hasher.update((at / BLOCK + i as u64).to_le_bytes());
                    hasher.update(block);
                }
            }
            at += len as u64;
        }
    }
    Ok(hex::encode(hasher.finalize()))
}

/// Overwrites the part of `chunk` (at `at` in the image) that `bytes` (at
/// `offset`) covers.
fn apply(chunk: &mut [u8], at: u64, offset: u64, bytes: &[u8]) {
    let chunk_end = at + chunk.len() as u64;
    let patch_end = offset + bytes.len() as u64;
    let (from, to) = (offset.max(at), patch_end.min(chunk_end));
    if from < to {
        chunk[(from - at) as usize..(to - at) as usize]
            .copy_from_slice(&bytes[(from - offset) as usize..(to - offset) as usize]);
    }
}

/// The block-aligned ranges of `file` below `size` that may hold data:
/// its data extents, or everything where `SEEK_DATA` is not supported.
pub fn data_ranges(file: &File, size: u64) -> io::Result<Vec<(u64, u64)>> {
    let fd = file.as_raw_fd();
    let mut ranges: Vec<(u64, u64)> = Vec::new();
    let mut position = 0u64;
    while position < size {
        // SAFETY: lseek on a valid descriptor has no other preconditions.
        let data = unsafe { libc::lseek(fd, position as libc::off_t, libc::SEEK_DATA) };
        if data < 0 {
            let error = io::Error::last_os_error();
            return match error.raw_os_error() {
                // No data after `position`.
                Some(libc::ENXIO) => Ok(ranges),
                Some(libc::EINVAL) | Some(libc::EOPNOTSUPP) => Ok(vec![(0, size)]),
                _ => Err(error),
            };
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(fd, data, libc::SEEK_HOLE) };
        if hole < 0 {
            return Err(io::Error::last_os_error());
        }
        let start = (data as u64 / BLOCK * BLOCK).max(ranges.last().map_or(0, |r| r.1));
        let end = (hole as u64)
            .div_ceil(BLOCK)
            .saturating_mul(BLOCK)
            .min(size);
        if start < end {
            match ranges.last_mut() {
                Some(last) if last.1 == start => last.1 = end,
                _ => ranges.push((start, end)),
            }
        }
        position = (hole as u64).max(position + 1);
    }
    Ok(ranges)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A plain hash of the same definition, block by block.
    fn reference(bytes: &[u8]) -> String {
        let mut hasher = Sha256::new();
        hasher.update(DOMAIN);
        hasher.update((bytes.len() as u64).to_le_bytes());
        for (i, block) in bytes.chunks(BLOCK as usize).enumerate() {
            if block.iter().any(|&b| b != 0) {
                hasher.update((i as u64).to_le_bytes());
                hasher.update(block);
            }
        }
        hex::encode(hasher.finalize())
    }

    #[test]
    fn sparse_and_dense_files_hash_alike_and_match_the_definition() {
        let dir = tempfile::tempdir().unwrap();
        let size: u64 = 64 << 20;
        let mut dense = vec![0u8; size as usize];
        for (at, text) in [(0u64, "boot"), (5_000_000, "mid"), (size - 3, "end")] {
            dense[at as usize..at as usize + text.len()].copy_from_slice(text.as_bytes());
        }
        // The sparse file: only the written places are data.
        let sparse_path = dir.path().join("sparse");
        let sparse = File::create(&sparse_path).unwrap();
        sparse.set_len(size).unwrap();
        for (at, text) in [(0u64, "boot"), (5_000_000, "mid"), (size - 3, "end")] {
            sparse.write_all_at(text.as_bytes(), at).unwrap();
        }
        let dense_path = dir.path().join("dense");
        File::create(&dense_path)
            .unwrap()
            .write_all(&dense)
            .unwrap();
        let sparse = File::open(&sparse_path).unwrap();
        let dense_file = File::open(&dense_path).unwrap();
        let expected = reference(&dense);
        assert_eq!(image_sha256(&sparse, size, None).unwrap(), expected);
        assert_eq!(image_sha256(&dense_file, size, None).unwrap(), expected);
        // Far less than the image is data.
        let data: u64 = data_ranges(&sparse, size)
            .unwrap()
            .iter()
            .map(|r| r.1 - r.0)
            .sum();
        assert!(data < size / 4, "{data} bytes of data");
        // A patch is hashed as if written.
        let patched = image_sha256(&sparse, size, Some((5_000_000, b"MID"))).unwrap();
        let mut changed = dense.clone();
        changed[5_000_000..5_000_003].copy_from_slice(b"MID");
        assert_eq!(patched, reference(&changed));
        // One byte written into a hole changes it; so does the size.
        File::options()
            .write(true)
            .open(&sparse_path)
            .unwrap()
            .write_all_at(&[1], 40_000_000)
            .unwrap();
        dense[40_000_000] = 1;
        let now = image_sha256(&sparse, size, None).unwrap();
        assert_ne!(now, expected);
        assert_eq!(now, reference(&dense));
        assert_ne!(image_sha256(&sparse, size - 4096, None).unwrap(), now);
    }
}
