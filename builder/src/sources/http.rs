//! The fetcher's transfers: one URL into the store, over HTTP(S) with
//! resume and retries, or from a local file; hashed while streaming.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::Instant;

use hiperiso_stick::io::io_err;
use sha2::{Digest, Sha256};

use crate::sources::fetch::{
    AttemptFailure, FetchError, FetchRequest, Fetched, Fetcher, UrlError, describe, short,
};
use crate::sources::progress::human_bytes;
use crate::sources::store::sha256_hex;

impl Fetcher {
    pub(crate) fn fetch_url(&self, req: &FetchRequest, url: &str) -> Result<Fetched, UrlError> {
        let partial_dir = self
            .store
            .partial_dir()
            .map_err(|e| UrlError::Fatal(e.into()))?;
        let partial_path = partial_dir.join(sha256_hex(url.as_bytes()));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&partial_path)
            .map_err(|e| UrlError::Fatal(io_err("open", &partial_path)(e).into()))?;
        // Another hiperiso-build may be downloading the same URL: wait for it.
        // SAFETY: flock on an open, owned descriptor; released on close.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(UrlError::Fatal(
                io_err("lock", &partial_path)(io::Error::last_os_error()).into(),
            ));
        }
        if let Some(sha) = &req.sha256
            && let Some(path) = self.store.get(sha)
        {
            // Someone else finished it while we waited for the lock.
            let _ = fs::remove_file(&partial_path);
            let size = fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            return Ok(Fetched {
                path,
                sha256: sha.clone(),
                size,
            });
        }
        let started = Instant::now();
        // A partial left by an earlier run may belong to an older version of
        // the file; if the resumed result fails verification, start over once.
        let mut resumed = file.metadata().map(|m| m.len() > 0).unwrap_or(false);
        let (actual, size) = loop {
            let (actual, size) = self.download(req, url, &file, &partial_path)?;
            let failure = match (req.size, &req.sha256) {
                (Some(expected), _) if expected != size => Some(AttemptFailure::Size {
                    expected,
                    actual: size,
                }),
                (_, Some(expected)) if *expected != actual => Some(AttemptFailure::Mismatch {
                    expected: expected.clone(),
                    actual: actual.clone(),
                }),
                _ => None,
            };
            match failure {
                None => break (actual, size),
                Some(_) if resumed => {
                    resumed = false;
                    file.set_len(0).map_err(|e| {
                        UrlError::Fatal(io_err("truncate", &partial_path)(e).into())
                    })?;
                }
                Some(failure) => {
                    let _ = fs::remove_file(&partial_path);
                    return Err(UrlError::Failed(failure));
                }
            }
        };
        let path = if let Some(existing) = self.store.get(&actual) {
            let _ = fs::remove_file(&partial_path);
            existing
        } else {
            self.store
                .commit_verified(&partial_path, &actual)
                .map_err(|e| UrlError::Fatal(e.into()))?
        };
        let secs = started.elapsed().as_secs_f64();
        self.progress.line(&format!(
            "{}: ok {} in {:.1}s ({}/s), sha256 {}",
            req.name,
            human_bytes(size),
            secs,
            human_bytes((size as f64 / secs.max(1e-3)) as u64),
            short(&actual)
        ));
        Ok(Fetched {
            path,
            sha256: actual,
            size,
        })
    }

    /// Downloads `url` into the open partial file, resuming from what it
    /// already holds. Returns the sha256 and size of the complete file.
    fn download(
        &self,
        req: &FetchRequest,
        url: &str,
        file: &File,
        partial_path: &Path,
    ) -> Result<(String, u64), UrlError> {
        let fatal = |action| move |e| UrlError::Fatal(io_err(action, partial_path)(e).into());
        let mut tries = 0u32;
        let mut hasher = Sha256::new();
        loop {
            let mut have = file.metadata().map_err(fatal("cannot stat"))?.len();
            if req.size.is_some_and(|size| have > size) {
                file.set_len(0).map_err(fatal("cannot truncate"))?;
                have = 0;
            }
            let result = if let Some(path) = url.strip_prefix("file://") {
                self.copy_local(Path::new(path), file, partial_path, &mut hasher)
            } else {
                self.transfer(req, url, file, partial_path, have, &mut hasher)
            };
            match result {
                Ok(()) => break,
                Err(Transfer::Retry(failure)) if tries < self.opts.retries => {
                    let delay = self.opts.backoff * 2u32.pow(tries);
                    if self.opts.verbose {
                        self.progress.line(&format!(
                            "{}: {url}: {}; retrying in {:.1}s",
                            req.name,
                            describe(&failure),
                            delay.as_secs_f64()
                        ));
                    }
                    std::thread::sleep(delay);
                    tries += 1;
                }
                Err(Transfer::Retry(failure)) | Err(Transfer::Fail(failure)) => {
                    if !matches!(failure, AttemptFailure::Transport(_)) {
                        // Nothing useful to resume from a 4xx.
                        let _ = fs::remove_file(partial_path);
                    }
                    return Err(UrlError::Failed(failure));
                }
                Err(Transfer::Fatal(e)) => return Err(UrlError::Fatal(e)),
            }
        }
        let size = file.metadata().map_err(fatal("cannot stat"))?.len();
        Ok((hex::encode(hasher.finalize()), size))
    }

    /// One HTTP attempt. On success `hasher` holds the sha256 state of the
    /// whole file: the kept prefix is hashed first, then every received
    /// chunk as it streams to disk.
    fn transfer(
        &self,
        req: &FetchRequest,
        url: &str,
        file: &File,
        partial_path: &Path,
        have: u64,
        hasher: &mut Sha256,
    ) -> Result<(), Transfer> {
        let fatal = |action| move |e| Transfer::Fatal(io_err(action, partial_path)(e).into());
        let mut request = self.agent.get(url);
        if have > 0 {
            request = request.header("Range", format!("bytes={have}-"));
        }
        let response = request
            .call()
            .map_err(|e| Transfer::Retry(AttemptFailure::Transport(e.to_string())))?;
        let status = response.status().as_u16();
        let start = match status {
            200 => 0,
            206 => {
                let range = response
                    .headers()
                    .get("content-range")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                match parse_content_range_start(range) {
                    Some(start) if start == have => have,
                    _ => {
                        // Not the range we asked for: start over.
                        file.set_len(0).map_err(fatal("cannot truncate"))?;
                        return Err(Transfer::Retry(AttemptFailure::Transport(format!(
                            "unexpected Content-Range {range:?}"
                        ))));
                    }
                }
            }
            416 => {
                // Our partial is as long as (or longer than) the file: hash it;
                // a bad partial is caught by the hash check and removed.
                *hasher = hash_prefix(file, u64::MAX).map_err(fatal("cannot read"))?;
                return Ok(());
            }
            500..=599 | 408 | 429 => return Err(Transfer::Retry(AttemptFailure::Status(status))),
            _ => return Err(Transfer::Fail(AttemptFailure::Status(status))),
        };
        let body_len = response.body().content_length();
        let total = body_len.map(|n| n + start).or(req.size);
        file.set_len(start).map_err(fatal("cannot truncate"))?;
        *hasher = hash_prefix(file, start).map_err(fatal("cannot read"))?;
        let mut out = file;
        out.seek(SeekFrom::Start(start))
            .map_err(fatal("cannot seek"))?;
        let task = self.progress.start(&req.name, total, start);
        let mut reader = response.into_body().into_reader();
        let mut buf = vec![0u8; 256 * 1024];
        let mut received = 0u64;
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    task.abandon();
                    return Err(Transfer::Retry(AttemptFailure::Transport(format!(
                        "transfer cut after {} of {}: {e}",
                        human_bytes(start + received),
                        total.map_or("?".into(), human_bytes)
                    ))));
                }
            };
            out.write_all(&buf[..n]).map_err(fatal("cannot write"))?;
            hasher.update(&buf[..n]);
            received += n as u64;
            task.inc(n as u64);
        }
        task.finish();
        if let Some(expected) = body_len
            && received < expected
        {
            return Err(Transfer::Retry(AttemptFailure::Transport(format!(
                "transfer cut after {} of {}",
                human_bytes(start + received),
                human_bytes(start + expected)
            ))));
        }
        Ok(())
    }

    fn copy_local(
        &self,
        source: &Path,
        file: &File,
        partial_path: &Path,
        hasher: &mut Sha256,
    ) -> Result<(), Transfer> {
        let input = match File::open(source) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(Transfer::Fail(AttemptFailure::Status(404)));
            }
            Err(e) => return Err(Transfer::Fail(AttemptFailure::Transport(e.to_string()))),
        };
        let fatal = |e| Transfer::Fatal(io_err("write", partial_path)(e).into());
        file.set_len(0).map_err(fatal)?;
        let mut out = file;
        out.seek(SeekFrom::Start(0)).map_err(fatal)?;
        *hasher = Sha256::new();
        stream_into(input, out, hasher).map_err(fatal)?;
        Ok(())
    }
}

/// The sha256 state after the first `len` bytes of `file` (all of it for
/// `u64::MAX`).
fn hash_prefix(file: &File, len: u64) -> io::Result<Sha256> {
    let mut hasher = Sha256::new();
    let mut reader = file;
    reader.seek(SeekFrom::Start(0))?;
    stream_into(reader.take(len), io::sink(), &mut hasher)?;
    Ok(hasher)
}

/// Copies `reader` to `sink`, feeding every byte to `hasher`.
fn stream_into(
    mut reader: impl Read,
    mut sink: impl Write,
    hasher: &mut Sha256,
) -> io::Result<u64> {
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        sink.write_all(&buf[..n])?;
        total += n as u64;
    }
}

enum Transfer {
    Retry(AttemptFailure),
    Fail(AttemptFailure),
    Fatal(FetchError),
}

/// Start offset of a `Content-Range: bytes START-END/TOTAL` header.
pub(crate) fn parse_content_range_start(value: &str) -> Option<u64> {
    value
        .trim()
        .strip_prefix("bytes ")?
        .split('-')
        .next()?
        .trim()
        .parse()
        .ok()
}

/// Copies `reader` to `sink` while hashing; returns (sha256 hex, bytes).
/// This is the fetcher's inner loop, exposed for benchmarks.
pub fn sha256_stream(reader: impl Read, sink: impl Write) -> io::Result<(String, u64)> {
    let mut hasher = Sha256::new();
    let total = stream_into(reader, sink, &mut hasher)?;
    Ok((hex::encode(hasher.finalize()), total))
}
