//! The one way external bytes enter hiperiso: download, verify, store.
//!
//! - every byte is hashed with sha256 while it streams to disk;
//! - interrupted downloads are kept under `partial/` (keyed by URL) and
//!   resumed with an HTTP `Range` request;
//! - 5xx answers, timeouts and cut transfers are retried with exponential
//!   backoff; a 404 (or any 4xx) or a hash mismatch moves on to the next URL;
//! - only a verified file is renamed into `blobs/sha256/`, so nothing
//!   unverified ever enters the cache.

use std::fs::{self, File, OpenOptions};
use std::io::{self, IsTerminal, Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hiperiso_stick::io::{IoError, io_err};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use sha2::{Digest, Sha256};

use crate::sources::store::{Store, StoreError, is_sha256_hex, sha256_hex};

/// One file to fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchRequest {
    /// What the user calls it (a source or package name), used in messages.
    pub name: String,
    /// Candidate URLs, tried in order (`http://`, `https://` or `file://`).
    pub urls: Vec<String>,
    /// Expected sha256; `None` downloads, hashes and stores under the
    /// computed hash (for `pin`, or for files verified another way).
    pub sha256: Option<String>,
    /// Expected size in bytes, if known.
    pub size: Option<u64>,
}

/// A verified file in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    pub path: PathBuf,
    pub sha256: String,
    pub size: u64,
}

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Progress {
    /// Bars on a terminal, plain lines otherwise.
    #[default]
    Auto,
    Bars,
    Lines,
    Quiet,
}

#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// Downloads running at once (at least 1).
    pub jobs: usize,
    /// Use only the cache.
    pub offline: bool,
    pub progress: Progress,
    /// Extra attempts per URL after a 5xx, a timeout or a cut transfer.
    pub retries: u32,
    /// First backoff delay; doubles on each retry.
    pub backoff: Duration,
    pub connect_timeout: Duration,
    /// Longest silence while reading before the transfer counts as stalled.
    pub read_timeout: Duration,
    /// Command suggested when every URL served other bytes than the pin;
    /// `{name}` is replaced by the request's name.
    pub mismatch_hint: String,
    /// Command suggested when no URL has the file any more (decayed pin).
    pub missing_hint: String,
    /// Print each attempt (`-v`).
    pub verbose: bool,
}

impl Default for FetchOptions {
    fn default() -> Self {
        Self {
            jobs: 4,
            offline: false,
            progress: Progress::Auto,
            retries: 4,
            backoff: Duration::from_millis(500),
            connect_timeout: Duration::from_secs(20),
            read_timeout: Duration::from_secs(60),
            mismatch_hint: "hiperiso-build pin --force {name}".into(),
            missing_hint: "hiperiso-build bump {name} --latest".into(),
            verbose: false,
        }
    }
}

/// Why one URL did not deliver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptFailure {
    /// HTTP status that is not retried (4xx) or still failing after retries.
    Status(u16),
    Mismatch {
        expected: String,
        actual: String,
    },
    Size {
        expected: u64,
        actual: u64,
    },
    /// Connection errors, timeouts, cut transfers (after retries).
    Transport(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub url: String,
    pub failure: AttemptFailure,
}

impl std::fmt::Display for Attempt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.failure {
            AttemptFailure::Status(code) => write!(f, "{}: HTTP {code}", self.url),
            AttemptFailure::Mismatch { expected, actual } => {
                write!(
                    f,
                    "{}: sha256 mismatch\n      expected {expected}\n      actual   {actual}",
                    self.url
                )
            }
            AttemptFailure::Size { expected, actual } => {
                write!(
                    f,
                    "{}: size mismatch: expected {expected} bytes, got {actual}",
                    self.url
                )
            }
            AttemptFailure::Transport(msg) => write!(f, "{}: {msg}", self.url),
        }
    }
}

/// A blob `--offline` could not find.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Missing {
    pub name: String,
    pub sha256: Option<String>,
    pub url: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{}", offline_message(.missing))]
    Offline { missing: Vec<Missing> },
    #[error("{name}: no URL to fetch from")]
    NoUrls { name: String },
    #[error("{name}: sha256 {sha256:?} is not 64 lowercase hex digits")]
    BadPin { name: String, sha256: String },
    #[error("{}", failed_message(.name, .file, .attempts, .hint))]
    Failed {
        name: String,
        file: String,
        attempts: Vec<Attempt>,
        hint: Option<String>,
    },
    #[error(transparent)]
    Io(#[from] IoError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{} of {} fetches failed:\n{}", .0.len(), .1, many_message(.0))]
    Many(Vec<FetchError>, usize),
}

fn offline_message(missing: &[Missing]) -> String {
    let mut out = format!(
        "--offline: {} blob(s) missing from the cache:",
        missing.len()
    );
    for m in missing {
        match (&m.sha256, &m.url) {
            (Some(sha), Some(url)) => {
                out.push_str(&format!("\n  {}: sha256 {sha} ({url})", m.name))
            }
            (Some(sha), None) => out.push_str(&format!("\n  {}: sha256 {sha}", m.name)),
            (None, _) => out.push_str(&format!(
                "\n  {}: not pinned (no sha256), cannot be found offline",
                m.name
            )),
        }
    }
    out.push_str("\nrun the same command without --offline to download them");
    out
}

fn failed_message(name: &str, file: &str, attempts: &[Attempt], hint: &Option<String>) -> String {
    let mut out = format!(
        "cannot fetch {name} ({file}) from any of {} URL(s):",
        attempts.len()
    );
    for attempt in attempts {
        out.push_str(&format!("\n  {attempt}"));
    }
    if let Some(hint) = hint {
        out.push('\n');
        out.push_str(hint);
    }
    out
}

fn many_message(errors: &[FetchError]) -> String {
    errors
        .iter()
        .map(|e| format!("- {e}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Downloads into the [`Store`].
pub struct Fetcher {
    store: Store,
    opts: FetchOptions,
    agent: ureq::Agent,
    progress: Reporter,
}

impl Fetcher {
    pub fn new(store: Store, opts: FetchOptions) -> Self {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(opts.connect_timeout))
            .timeout_recv_response(Some(opts.read_timeout))
            .timeout_per_read(Some(opts.read_timeout))
            .timeout_recv_body(None)
            .user_agent(concat!("hiperiso-build/", env!("CARGO_PKG_VERSION")))
            // The file's bytes, exactly: never a transparently decoded body.
            .accept_encoding("identity")
            .build();
        let progress = Reporter::new(opts.progress);
        Self {
            store,
            agent: config.into(),
            opts,
            progress,
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn options(&self) -> &FetchOptions {
        &self.opts
    }

    /// Returns the verified blob for `req`, downloading it if needed.
    pub fn fetch(&self, req: &FetchRequest) -> Result<Fetched, FetchError> {
        if let Some(sha) = &req.sha256 {
            if !is_sha256_hex(sha) {
                return Err(FetchError::BadPin {
                    name: req.name.clone(),
                    sha256: sha.clone(),
                });
            }
            if let Some(path) = self.store.get(sha) {
                let size = fs::metadata(&path).map_err(io_err("stat", &path))?.len();
                self.progress
                    .line(&format!("{}: cached ({})", req.name, short(sha)));
                return Ok(Fetched {
                    path,
                    sha256: sha.clone(),
                    size,
                });
            }
        }
        if self.opts.offline {
            return Err(FetchError::Offline {
                missing: vec![Missing {
                    name: req.name.clone(),
                    sha256: req.sha256.clone(),
                    url: req.urls.first().cloned(),
                }],
            });
        }
        if req.urls.is_empty() {
            return Err(FetchError::NoUrls {
                name: req.name.clone(),
            });
        }
        let mut attempts = Vec::new();
        for url in &req.urls {
            match self.fetch_url(req, url) {
                Ok(fetched) => return Ok(fetched),
                Err(UrlError::Failed(failure)) => {
                    self.progress.line(&format!(
                        "{}: {}",
                        req.name,
                        Attempt {
                            url: url.clone(),
                            failure: failure.clone()
                        }
                    ));
                    attempts.push(Attempt {
                        url: url.clone(),
                        failure,
                    });
                }
                Err(UrlError::Fatal(e)) => return Err(e),
            }
        }
        let mismatch = attempts.iter().any(|a| {
            matches!(
                a.failure,
                AttemptFailure::Mismatch { .. } | AttemptFailure::Size { .. }
            )
        });
        let all_gone = attempts
            .iter()
            .all(|a| matches!(a.failure, AttemptFailure::Status(404 | 410)));
        let hint = if mismatch {
            Some(format!(
                "the pinned sha256 of {0} matches no mirror's file. Check why it changed; if the new file is trusted, re-pin it with:\n  {1}",
                req.name,
                self.opts.mismatch_hint.replace("{name}", &req.name)
            ))
        } else if all_gone && req.sha256.is_some() {
            Some(format!(
                "the pin of {0} has decayed: no mirror has this file any more. Re-pin it with:\n  {1}",
                req.name,
                self.opts.missing_hint.replace("{name}", &req.name)
            ))
        } else {
            None
        };
        Err(FetchError::Failed {
            name: req.name.clone(),
            file: file_name_of(&req.urls[0]).to_string(),
            attempts,
            hint,
        })
    }

    /// Fetches all requests with at most `jobs` downloads at once. Requests
    /// with the same sha256 are downloaded once. Results keep the order of
    /// `reqs`; every failure is reported, not just the first.
    pub fn fetch_all(&self, reqs: &[FetchRequest]) -> Result<Vec<Fetched>, FetchError> {
        if self.opts.offline {
            let missing: Vec<Missing> = reqs
                .iter()
                .filter(|r| {
                    r.sha256
                        .as_ref()
                        .is_none_or(|sha| !self.store.contains(sha))
                })
                .map(|r| Missing {
                    name: r.name.clone(),
                    sha256: r.sha256.clone(),
                    url: r.urls.first().cloned(),
                })
                .collect();
            if !missing.is_empty() {
                return Err(FetchError::Offline { missing });
            }
        }
        // The first request of each sha256 does the work.
        let leader: Vec<usize> = reqs
            .iter()
            .enumerate()
            .map(|(i, r)| match &r.sha256 {
                Some(sha) => reqs
                    .iter()
                    .position(|o| o.sha256.as_ref() == Some(sha))
                    .unwrap_or(i),
                None => i,
            })
            .collect();
        let work: Vec<usize> = (0..reqs.len()).filter(|&i| leader[i] == i).collect();
        let results: Vec<Mutex<Option<Result<Fetched, FetchError>>>> =
            reqs.iter().map(|_| Mutex::new(None)).collect();
        let next = AtomicUsize::new(0);
        let workers = self.opts.jobs.max(1).min(work.len().max(1));
        std::thread::scope(|scope| {
            for _ in 0..workers {
                scope.spawn(|| {
                    loop {
                        let k = next.fetch_add(1, Ordering::Relaxed);
                        let Some(&i) = work.get(k) else { break };
                        let result = self.fetch(&reqs[i]);
                        *results[i].lock().expect("result lock") = Some(result);
                    }
                });
            }
        });
        let mut done: Vec<Option<Result<Fetched, FetchError>>> = results
            .into_iter()
            .map(|m| m.into_inner().expect("result lock"))
            .collect();
        let mut fetched = Vec::with_capacity(reqs.len());
        let mut errors = Vec::new();
        for i in 0..reqs.len() {
            let result = if leader[i] == i {
                done[i].take().expect("every leader ran")
            } else {
                match &done[leader[i]] {
                    Some(Ok(f)) => Ok(f.clone()),
                    _ => continue, // the leader's error is reported once
                }
            };
            match result {
                Ok(f) => {
                    if leader[i] == i {
                        done[i] = Some(Ok(f.clone()));
                    }
                    fetched.push(f)
                }
                Err(e) => errors.push(e),
            }
        }
        match errors.len() {
            0 => Ok(fetched),
            1 => Err(errors.pop().expect("one error")),
            _ => Err(FetchError::Many(errors, work.len())),
        }
    }

    /// Downloads a small file (index page, Sources index) into memory,
    /// with the same retries but without the store. At most `limit` bytes.
    pub fn get_bytes(&self, url: &str, limit: u64) -> Result<Vec<u8>, FetchError> {
        if self.opts.offline {
            return Err(FetchError::Offline {
                missing: vec![Missing {
                    name: file_name_of(url).to_string(),
                    sha256: None,
                    url: Some(url.to_string()),
                }],
            });
        }
        let fail = |failure| FetchError::Failed {
            name: file_name_of(url).to_string(),
            file: file_name_of(url).to_string(),
            attempts: vec![Attempt {
                url: url.to_string(),
                failure,
            }],
            hint: None,
        };
        if let Some(path) = url.strip_prefix("file://") {
            let mut bytes = Vec::new();
            File::open(path)
                .and_then(|f| f.take(limit).read_to_end(&mut bytes))
                .map_err(|e| fail(AttemptFailure::Transport(e.to_string())))?;
            return Ok(bytes);
        }
        let mut tries = 0;
        loop {
            let outcome = self
                .agent
                .get(url)
                .call()
                .map_err(|e| AttemptFailure::Transport(e.to_string()))
                .and_then(|resp| {
                    let status = resp.status().as_u16();
                    if status != 200 {
                        return Err(AttemptFailure::Status(status));
                    }
                    resp.into_body()
                        .into_with_config()
                        .limit(limit)
                        .read_to_vec()
                        .map_err(|e| AttemptFailure::Transport(e.to_string()))
                });
            match outcome {
                Ok(bytes) => return Ok(bytes),
                Err(failure) if tries < self.opts.retries && retryable(&failure) => {
                    std::thread::sleep(self.opts.backoff * 2u32.pow(tries));
                    tries += 1;
                }
                Err(failure) => return Err(fail(failure)),
            }
        }
    }

    fn fetch_url(&self, req: &FetchRequest, url: &str) -> Result<Fetched, UrlError> {
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

enum UrlError {
    /// This URL failed; try the next one.
    Failed(AttemptFailure),
    /// Local trouble (disk full, permissions): stop.
    Fatal(FetchError),
}

enum Transfer {
    Retry(AttemptFailure),
    Fail(AttemptFailure),
    Fatal(FetchError),
}

fn retryable(failure: &AttemptFailure) -> bool {
    match failure {
        AttemptFailure::Status(code) => *code >= 500 || *code == 408 || *code == 429,
        AttemptFailure::Transport(_) => true,
        _ => false,
    }
}

fn describe(failure: &AttemptFailure) -> String {
    match failure {
        AttemptFailure::Status(code) => format!("HTTP {code}"),
        AttemptFailure::Transport(msg) => msg.clone(),
        other => format!("{other:?}"),
    }
}

/// Start offset of a `Content-Range: bytes START-END/TOTAL` header.
fn parse_content_range_start(value: &str) -> Option<u64> {
    value
        .trim()
        .strip_prefix("bytes ")?
        .split('-')
        .next()?
        .trim()
        .parse()
        .ok()
}

/// The last path segment of a URL.
pub fn file_name_of(url: &str) -> &str {
    url.trim_end_matches('/').rsplit('/').next().unwrap_or(url)
}

fn short(sha: &str) -> &str {
    &sha[..sha.len().min(12)]
}

/// `1.5 MiB`-style sizes for humans.
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

/// Progress output: indicatif bars on a terminal, plain lines otherwise.
struct Reporter {
    mode: Progress,
    multi: Option<MultiProgress>,
}

impl Reporter {
    fn new(mode: Progress) -> Self {
        let mode = match mode {
            Progress::Auto if io::stderr().is_terminal() => Progress::Bars,
            Progress::Auto => Progress::Lines,
            other => other,
        };
        let multi = (mode == Progress::Bars)
            .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
        Self { mode, multi }
    }

    fn line(&self, message: &str) {
        match (&self.mode, &self.multi) {
            (Progress::Quiet, _) => {}
            (_, Some(multi)) => {
                let _ = multi.println(message);
            }
            _ => eprintln!("{message}"),
        }
    }

    fn start(&self, name: &str, total: Option<u64>, position: u64) -> Task {
        if let Some(multi) = &self.multi {
            let bar = match total {
                Some(total) => ProgressBar::new(total),
                None => ProgressBar::new_spinner(),
            };
            let bar = multi.add(bar);
            bar.set_style(
                ProgressStyle::with_template(
                    "{prefix:>10} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            bar.set_prefix(name.to_string());
            bar.set_position(position);
            Task { bar: Some(bar) }
        } else {
            if self.mode == Progress::Lines {
                let what = match (position, total) {
                    (0, Some(t)) => human_bytes(t),
                    (0, None) => "unknown size".into(),
                    (p, t) => format!(
                        "resuming at {} of {}",
                        human_bytes(p),
                        t.map_or("?".into(), human_bytes)
                    ),
                };
                eprintln!("{name}: downloading ({what})");
            }
            Task { bar: None }
        }
    }
}

struct Task {
    bar: Option<ProgressBar>,
}

impl Task {
    fn inc(&self, n: u64) {
        if let Some(bar) = &self.bar {
            bar.inc(n);
        }
    }
    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
    fn abandon(&self) {
        if let Some(bar) = &self.bar {
            bar.abandon();
        }
    }
}

/// Copies `reader` to `sink` while hashing; returns (sha256 hex, bytes).
/// This is the fetcher's inner loop, exposed for benchmarks.
pub fn sha256_stream(reader: impl Read, sink: impl Write) -> io::Result<(String, u64)> {
    let mut hasher = Sha256::new();
    let total = stream_into(reader, sink, &mut hasher)?;
    Ok((hex::encode(hasher.finalize()), total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range() {
        assert_eq!(parse_content_range_start("bytes 100-199/200"), Some(100));
        assert_eq!(parse_content_range_start("bytes */200"), None);
    }

    #[test]
    fn human() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(3 << 20), "3.0 MiB");
    }

    #[test]
    fn file_urls_and_offline() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src.bin");
        fs::write(&src, b"payload").unwrap();
        let store = Store::new(dir.path().join("cache"));
        let opts = FetchOptions {
            progress: Progress::Quiet,
            ..FetchOptions::default()
        };
        let fetcher = Fetcher::new(store.clone(), opts.clone());
        let req = FetchRequest {
            name: "src".into(),
            urls: vec![
                format!("file://{}", dir.path().join("absent").display()),
                format!("file://{}", src.display()),
            ],
            sha256: Some(sha256_hex(b"payload")),
            size: Some(7),
        };
        let got = fetcher.fetch(&req).unwrap();
        assert_eq!(fs::read(&got.path).unwrap(), b"payload");
        let offline = Fetcher::new(
            store,
            FetchOptions {
                offline: true,
                ..opts
            },
        );
        assert_eq!(offline.fetch(&req).unwrap(), got);
        let miss = FetchRequest {
            sha256: Some(sha256_hex(b"other")),
            ..req
        };
        let err = offline.fetch_all(&[miss]).unwrap_err();
        assert!(err.to_string().contains(&sha256_hex(b"other")), "{err}");
    }
}
