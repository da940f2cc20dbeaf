//! [`FileReader`]: `Read + Seek` over one file of an [`ExfatReader`].

use std::io::{self, Read, Seek, SeekFrom};

use super::boot::read_exact_at;
use super::{ExfatError, ExfatReader};

/// A file opened by [`ExfatReader::open_file`].
pub struct FileReader<'a, D> {
    pub(super) reader: &'a mut ExfatReader<D>,
    /// (first cluster, clusters) of each contiguous run.
    pub(super) runs: Vec<(u32, u64)>,
    pub(super) run_index: usize,
    pub(super) run_offset: u64,
    pub(super) position: u64,
    /// Bytes up to ValidDataLength; beyond it the file reads as zeros.
    pub(super) valid: u64,
    pub(super) size: u64,
}

impl<D> FileReader<'_, D> {
    /// The file's size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }
}

impl<D: Read + Seek> Read for FileReader<'_, D> {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        self.read_chunk(buffer).map_err(io::Error::other)
    }
}

impl<D: Read + Seek> Seek for FileReader<'_, D> {
    /// Seeks within the file; positions past its end read nothing.
    fn seek(&mut self, target: SeekFrom) -> io::Result<u64> {
        let position = match target {
            SeekFrom::Start(offset) => Some(offset),
            SeekFrom::End(delta) => self.size.checked_add_signed(delta),
            SeekFrom::Current(delta) => self.position.checked_add_signed(delta),
        }
        .ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "seek before the file's start")
        })?;
        let cluster_size = self.reader.cluster_size();
        let (mut index, mut skipped) = (0, 0u64);
        while let Some(&(_, count)) = self.runs.get(index) {
            let run_bytes = count * cluster_size;
            if position < skipped + run_bytes {
                break;
            }
            skipped += run_bytes;
            index += 1;
        }
        self.run_index = index;
        self.run_offset = position.saturating_sub(skipped);
        self.position = position;
        Ok(position)
    }
}

impl<D: Read + Seek> FileReader<'_, D> {
    pub(super) fn read_chunk(&mut self, buffer: &mut [u8]) -> Result<usize, ExfatError> {
        if self.position >= self.size || buffer.is_empty() {
            return Ok(0);
        }
        if self.position >= self.valid {
            // Past ValidDataLength: reads as zeros.
            let count = (buffer.len() as u64).min(self.size - self.position) as usize;
            buffer[..count].fill(0);
            self.position += count as u64;
            return Ok(count);
        }
        let cluster_size = self.reader.cluster_size();
        let Some(&(first, count)) = self.runs.get(self.run_index) else {
            return Err(ExfatError::Corrupt(
                "file data runs past its cluster chain".into(),
            ));
        };
        let run_bytes = count * cluster_size;
        let available = (run_bytes - self.run_offset).min(self.valid - self.position);
        let count_now = (buffer.len() as u64).min(available) as usize;
        let offset = self.reader.cluster_offset(first) + self.run_offset;
        read_exact_at(
            &mut self.reader.dev,
            offset,
            &mut buffer[..count_now],
            "file data",
        )?;
        self.position += count_now as u64;
        self.run_offset += count_now as u64;
        if self.run_offset == run_bytes {
            self.run_index += 1;
            self.run_offset = 0;
        }
        Ok(count_now)
    }
}
