//! A `Read`/`Write`/`Seek` window onto part of a larger file or device.
//!
//! Filesystem writers work on a partition as if it started at offset 0;
//! `Slice` translates their offsets into the underlying disk and refuses to
//! read or write past the partition's end.

use std::io::{self, Read, Seek, SeekFrom, Write};

/// A window `[start, start + len)` of an inner `Read`/`Write`/`Seek` value.
#[derive(Debug)]
pub struct Slice<T> {
    inner: T,
    start: u64,
    len: u64,
    pos: u64,
}

impl<T: Seek> Slice<T> {
    /// A window of `len` bytes starting at byte `start` of `inner`.
    pub fn new(inner: T, start: u64, len: u64) -> Self {
        Slice {
            inner,
            start,
            len,
            pos: 0,
        }
    }

    /// The window's length in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the window is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The window's first byte in the inner value.
    pub fn start(&self) -> u64 {
        self.start
    }

    /// Gives the inner value back.
    pub fn into_inner(self) -> T {
        self.inner
    }

    /// The inner value.
    pub fn get_mut(&mut self) -> &mut T {
        &mut self.inner
    }

    fn remaining(&self) -> u64 {
        self.len.saturating_sub(self.pos)
    }

    fn seek_inner(&mut self) -> io::Result<()> {
        self.inner.seek(SeekFrom::Start(self.start + self.pos))?;
        Ok(())
    }
}

impl<T: Read + Seek> Read for Slice<T> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = buf
            .len()
            .min(usize::try_from(self.remaining()).unwrap_or(usize::MAX));
        if n == 0 {
            return Ok(0);
        }
        self.seek_inner()?;
        let read = self.inner.read(&mut buf[..n])?;
        self.pos += read as u64;
        Ok(read)
    }
}

impl<T: Write + Seek> Write for Slice<T> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let n = buf
            .len()
            .min(usize::try_from(self.remaining()).unwrap_or(usize::MAX));
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!(
                    "write past the end of a {}-byte partition slice at offset {}",
                    self.len, self.pos
                ),
            ));
        }
        self.seek_inner()?;
        let written = self.inner.write(&buf[..n])?;
        self.pos += written as u64;
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<T: Seek> Seek for Slice<T> {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        let target = match pos {
            SeekFrom::Start(offset) => Some(offset),
            SeekFrom::End(delta) => self.len.checked_add_signed(delta),
            SeekFrom::Current(delta) => self.pos.checked_add_signed(delta),
        };
        match target {
            Some(offset) => {
                self.pos = offset;
                Ok(offset)
            }
            None => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek before the start of a partition slice",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    #[test]
    fn reads_and_writes_inside_the_window_only() {
        let mut disk = Cursor::new(vec![0u8; 64]);
        {
            let mut part = Slice::new(&mut disk, 16, 8);
            part.write_all(b"abcd").unwrap();
            part.seek(SeekFrom::End(-2)).unwrap();
            part.write_all(b"yz").unwrap();
            assert!(part.write_all(b"!").is_err(), "write past the end");
            part.seek(SeekFrom::Start(0)).unwrap();
            let mut back = Vec::new();
            part.read_to_end(&mut back).unwrap();
            assert_eq!(back, b"abcd\0\0yz");
        }
        let disk = disk.into_inner();
        assert_eq!(&disk[16..24], b"abcd\0\0yz");
        assert!(disk[..16].iter().chain(&disk[24..]).all(|&b| b == 0));
    }

    #[test]
    fn seek_before_start_fails() {
        let mut part = Slice::new(Cursor::new(vec![0u8; 8]), 4, 4);
        assert!(part.seek(SeekFrom::Current(-1)).is_err());
        assert_eq!(part.seek(SeekFrom::End(0)).unwrap(), 4);
    }
}
