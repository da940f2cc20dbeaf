//! The one way external bytes enter hiperiso: download, verify, store.
//!
//! - every byte is hashed with sha256 while it streams to disk;
//! - interrupted downloads are kept under `partial/` (keyed by URL) and
//!   resumed with an HTTP `Range` request;
//! - 5xx answers, timeouts and cut transfers are retried with exponential
//!   backoff; a 404 (or any 4xx) or a hash mismatch moves on to the next URL;
//! - only a verified file is renamed into `blobs/sha256/`, so nothing
//!   unverified ever enters the cache.

use std::fs::{self, File};
use std::io::Read;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hiperiso_stick::io::{IoError, io_err};

use crate::sources::progress::Reporter;
pub use crate::sources::progress::{Progress, human_bytes};
use crate::sources::store::{Store, StoreError, is_sha256_hex};

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
    pub(crate) store: Store,
    pub(crate) opts: FetchOptions,
    pub(crate) agent: ureq::Agent,
    pub(crate) progress: Reporter,
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
}

pub(crate) enum UrlError {
    /// This URL failed; try the next one.
    Failed(AttemptFailure),
    /// Local trouble (disk full, permissions): stop.
    Fatal(FetchError),
}

pub(crate) fn retryable(failure: &AttemptFailure) -> bool {
    match failure {
        AttemptFailure::Status(code) => *code >= 500 || *code == 408 || *code == 429,
        AttemptFailure::Transport(_) => true,
        _ => false,
    }
}

pub(crate) fn describe(failure: &AttemptFailure) -> String {
    match failure {
        AttemptFailure::Status(code) => format!("HTTP {code}"),
        AttemptFailure::Transport(msg) => msg.clone(),
        other => format!("{other:?}"),
    }
}

/// The last path segment of a URL.
pub fn file_name_of(url: &str) -> &str {
    url.trim_end_matches('/').rsplit('/').next().unwrap_or(url)
}

pub(crate) fn short(sha: &str) -> &str {
    &sha[..sha.len().min(12)]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::http::parse_content_range_start;
    use crate::sources::store::sha256_hex;

    #[test]
    fn content_range() {
        assert_eq!(parse_content_range_start("bytes 100-199/200"), Some(100));
        assert_eq!(parse_content_range_start("bytes */200"), None);
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
