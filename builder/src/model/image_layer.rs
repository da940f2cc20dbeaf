//! A finished image as one OCI layer: a zstd stream of the image's
//! non-zero 4 KiB blocks, in runs, so an 8 GiB image holding 300 MB is
//! pushed as those 300 MB compressed and pulled back into a sparse file.
//! The layer depends only on the image's bytes (the same non-zero blocks
//! the image hash covers, `hiperiso_stick::image_hash`; not the file's
//! extents, which depend on the filesystem it sits on), so pushing one
//! image twice, or from two machines, writes one blob.
//!
//! ```text
//! zstd( "hiperiso image layer v1\n" || image size as u64 LE
//!       || for each run of at most 16 MiB of non-zero blocks, in order:
//!            offset as u64 LE || length as u64 LE || the bytes
//!       || u64::MAX )
//! ```

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;

use hiperiso_stick::image_hash::{BLOCK, data_ranges};

/// The layer's OCI media type.
pub const MEDIA_TYPE: &str = "application/vnd.hiperiso.image.layer.v1+zstd";
const MAGIC: &[u8] = b"hiperiso image layer v1\n";
const MAX_RUN: u64 = 16 << 20;
const END: u64 = u64::MAX;
const ZSTD_LEVEL: i32 = 3;

#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    #[error(transparent)]
    Io(#[from] io::Error),
    #[error("not an image layer: {0}")]
    Malformed(&'static str),
}

/// Packs the first `size` bytes of `image`.
pub fn pack(image: &File, size: u64) -> Result<Vec<u8>, LayerError> {
    let mut out = zstd::Encoder::new(Vec::new(), ZSTD_LEVEL)?;
    out.write_all(MAGIC)?;
    out.write_all(&size.to_le_bytes())?;
    let mut run: Vec<u8> = Vec::new();
    let mut run_start = 0u64;
    let mut block = vec![0u8; BLOCK as usize];
    let flush = |out: &mut zstd::Encoder<Vec<u8>>, start: u64, run: &mut Vec<u8>| {
        if !run.is_empty() {
            out.write_all(&start.to_le_bytes())?;
            out.write_all(&(run.len() as u64).to_le_bytes())?;
            out.write_all(run)?;
            run.clear();
        }
        io::Result::Ok(())
    };
    for (start, end) in data_ranges(image, size)? {
        let mut at = start;
        while at < end {
            let len = (end - at).min(BLOCK) as usize;
            image.read_exact_at(&mut block[..len], at)?;
            let data = block[..len].iter().any(|&b| b != 0);
            let joins = run_start + run.len() as u64 == at && (run.len() as u64) < MAX_RUN;
            if !data || !joins {
                flush(&mut out, run_start, &mut run)?;
            }
            if data {
                if run.is_empty() {
                    run_start = at;
                }
                run.extend_from_slice(&block[..len]);
            }
            at += len as u64;
        }
    }
    flush(&mut out, run_start, &mut run)?;
    out.write_all(&END.to_le_bytes())?;
    Ok(out.finish()?)
}

fn read_u64(input: &mut impl Read) -> Result<u64, LayerError> {
    let mut bytes = [0u8; 8];
    input.read_exact(&mut bytes).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => LayerError::Malformed("it ends early"),
        _ => LayerError::Io(e),
    })?;
    Ok(u64::from_le_bytes(bytes))
}

/// Writes the image a layer holds into `out` (an empty file, so what the
/// layer does not name stays a hole). Returns the image's size.
pub fn unpack(layer: &[u8], out: &File) -> Result<u64, LayerError> {
    let mut input = zstd::Decoder::new(layer)?;
    let mut magic = vec![0u8; MAGIC.len()];
    input
        .read_exact(&mut magic)
        .map_err(|_| LayerError::Malformed("no header"))?;
    if magic != MAGIC {
        return Err(LayerError::Malformed("wrong header"));
    }
    let size = read_u64(&mut input)?;
    let mut buffer = Vec::new();
    let mut next = 0u64;
    loop {
        let offset = read_u64(&mut input)?;
        if offset == END {
            break;
        }
        let len = read_u64(&mut input)?;
        if offset % BLOCK != 0 || offset < next || len == 0 || len > MAX_RUN {
            return Err(LayerError::Malformed(
                "runs out of order or of a wrong length",
            ));
        }
        if offset.checked_add(len).is_none_or(|end| end > size) {
            return Err(LayerError::Malformed("a run beyond the image's end"));
        }
        buffer.resize(len as usize, 0);
        input
            .read_exact(&mut buffer)
            .map_err(|_| LayerError::Malformed("it ends inside a run"))?;
        out.write_all_at(&buffer, offset)?;
        next = offset + len;
    }
    if input.read(&mut [0u8; 1])? != 0 {
        return Err(LayerError::Malformed("bytes after the end mark"));
    }
    out.set_len(size)?;
    out.sync_all()?;
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hiperiso_stick::image_hash::image_sha256;

    #[test]
    fn a_sparse_image_round_trips_and_only_its_data_is_packed() {
        let size: u64 = 1 << 30;
        let image = tempfile::tempfile().unwrap();
        image.set_len(size).unwrap();
        // Noise that does not compress, a run longer than MAX_RUN, a zero
        // block written inside data, and the last (short) block.
        let noise: Vec<u8> = (0..40u32 << 20)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        image.write_all_at(&noise[..3 << 20], 1 << 20).unwrap();
        image.write_all_at(&noise, 500 << 20).unwrap();
        image.write_all_at(&[0u8; 4096], 501 << 20).unwrap();
        image.write_all_at(b"end", size - 3).unwrap();
        let layer = pack(&image, size).unwrap();
        assert!(layer.len() < 50 << 20, "{} bytes", layer.len());
        // Deterministic: the same bytes give the same layer.
        assert_eq!(pack(&image, size).unwrap(), layer);

        let out = tempfile::tempfile().unwrap();
        assert_eq!(unpack(&layer, &out).unwrap(), size);
        assert_eq!(out.metadata().unwrap().len(), size);
        assert_eq!(
            image_sha256(&out, size, None).unwrap(),
            image_sha256(&image, size, None).unwrap()
        );
        let mut back = vec![0u8; noise.len()];
        out.read_exact_at(&mut back, 500 << 20).unwrap();
        let mut want = noise.clone();
        want[1 << 20..(1 << 20) + 4096].fill(0);
        assert!(back == want);
        // The holes stay holes.
        let data: u64 = data_ranges(&out, size)
            .unwrap()
            .iter()
            .map(|r| r.1 - r.0)
            .sum();
        assert!(data < 64 << 20, "{data} bytes of data");
    }

    #[test]
    fn damaged_layers_are_refused() {
        let out = tempfile::tempfile().unwrap();
        let bad = |plain: &[u8]| zstd::encode_all(plain, 1).unwrap();
        let mut header = MAGIC.to_vec();
        header.extend(8192u64.to_le_bytes());
        let run = |offset: u64, len: u64| {
            let mut v = header.clone();
            v.extend(offset.to_le_bytes());
            v.extend(len.to_le_bytes());
            v.extend(vec![1u8; len as usize]);
            v.extend(END.to_le_bytes());
            v
        };
        for (layer, needle) in [
            (b"not zstd".to_vec(), ""),
            (bad(b"hiperiso image layer v2\n"), "wrong header"),
            (bad(&header), "ends early"),
            (bad(&run(4096, 8192)), "beyond the image's end"),
            (bad(&run(100, 10)), "out of order"),
            (bad(&[run(0, 10), vec![0]].concat()), "after the end mark"),
        ] {
            let err = unpack(&layer, &out).unwrap_err().to_string();
            assert!(err.contains(needle), "{err}");
        }
    }
}
