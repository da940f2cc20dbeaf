//! Finding and listing recorded sessions: `hiperiso-log sessions PATH`
//! and `show latest|ID`.
//!
//! PATH may be a mounted stick (or data partition), its `hiperiso/logs`
//! directory, or a disk image / block device. For an image or device the
//! exFAT data partition is read directly, without mounting, through the
//! installer crate's partition-table and exFAT readers.

use crate::analyze::{self, AnalyzeError, Report};
use hiperiso_installer::exfat::{ExfatError, ExfatReader};
use hiperiso_installer::gpt::GptError;
use hiperiso_installer::slice::Slice;
use hiperiso_stick::session::{IndexEntry, files};
use serde::Serialize;
use std::fs::File;
use std::io::{self, Seek, SeekFrom};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

/// The logs directory, relative to the data partition's root.
pub use hiperiso_stick::paths::data::LOGS_DIR;

#[derive(Debug, thiserror::Error)]
pub enum SessionsError {
    #[error("cannot read {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "{path}: no hiperiso logs here (looked for {LOGS_DIR}/{}, logs/{}, {})",
        files::INDEX_JSONL,
        files::INDEX_JSONL,
        files::INDEX_JSONL
    )]
    NoLogs { path: PathBuf },
    #[error("{path}: cannot read the partition table")]
    Table {
        path: PathBuf,
        #[source]
        source: GptError,
    },
    #[error("{path}: no partition table, or no exFAT data partition in it")]
    NoDataPartition { path: PathBuf },
    #[error("{path}: exFAT data partition")]
    Exfat {
        path: PathBuf,
        #[source]
        source: ExfatError,
    },
    #[error("{path}: there are no sessions")]
    Empty { path: PathBuf },
    #[error("no session {id:?} in {path}")]
    NotFound { path: PathBuf, id: String },
    #[error("session {id}")]
    Analyze {
        id: String,
        #[source]
        source: AnalyzeError,
    },
}

/// One row of `hiperiso-log sessions`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SessionRow {
    pub id: String,
    pub iso: String,
    /// From the session's `report.json`; else the outcome `hiperiso-init`
    /// recorded in `index.jsonl` (`running`, `success`, `failure`).
    pub result: String,
    pub started_utc: String,
    pub duration_s: Option<i64>,
    pub firmware: Option<String>,
    pub accel: Option<String>,
    /// The session never finished: no `index.jsonl` line, or its last
    /// `status.json` stage is not `analysis`, `complete` or `failed`.
    pub interrupted: bool,
    /// The last `status.json` stage and message, when there is one.
    pub last_stage: Option<String>,
    pub last_message: Option<String>,
}

/// All sessions found, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SessionList {
    pub sessions: Vec<SessionRow>,
    /// Lines of `index.jsonl` that could not be read.
    pub warnings: Vec<String>,
}

/// Where the logs are.
enum Location {
    Dir(PathBuf),
    Image {
        path: PathBuf,
        fs: Box<ExfatReader<Slice<File>>>,
    },
}

/// An opened logs location.
pub struct Logs {
    location: Location,
}

impl Logs {
    /// Open PATH: a directory (stick, data partition, logs dir) or an image
    /// or block device.
    pub fn open(path: &Path) -> Result<Self, SessionsError> {
        let io_err = |source| SessionsError::Io {
            path: path.to_path_buf(),
            source,
        };
        let meta = std::fs::metadata(path).map_err(io_err)?;
        if meta.is_dir() {
            let candidates = [path.join(LOGS_DIR), path.join("logs"), path.to_path_buf()];
            let with_index = candidates
                .iter()
                .find(|dir| dir.join(files::INDEX_JSONL).is_file());
            // A logs directory whose index was never written (the first
            // session was interrupted): any directory holding a session.
            let without = || {
                candidates
                    .iter()
                    .find(|dir| session_dirs_in(dir).next().is_some())
            };
            return with_index
                .or_else(without)
                .cloned()
                .map(|dir| Logs {
                    location: Location::Dir(dir),
                })
                .ok_or_else(|| SessionsError::NoLogs {
                    path: path.to_path_buf(),
                });
        }
        let mut file = File::open(path).map_err(io_err)?;
        let size = if meta.file_type().is_block_device() {
            file.seek(SeekFrom::End(0)).map_err(io_err)?
        } else {
            meta.len()
        };
        let table = hiperiso_installer::table::read_table(&mut file, size).map_err(|source| {
            SessionsError::Table {
                path: path.to_path_buf(),
                source,
            }
        })?;
        let part = table
            .and_then(|(_, parts)| parts.into_iter().find(|p| p.is_data()))
            .ok_or_else(|| SessionsError::NoDataPartition {
                path: path.to_path_buf(),
            })?;
        let fs = ExfatReader::open(Slice::new(file, part.offset, part.len)).map_err(|source| {
            SessionsError::Exfat {
                path: path.to_path_buf(),
                source,
            }
        })?;
        Ok(Logs {
            location: Location::Image {
                path: path.to_path_buf(),
                fs: Box::new(fs),
            },
        })
    }

    fn display_path(&self) -> PathBuf {
        match &self.location {
            Location::Dir(dir) => dir.clone(),
            Location::Image { path, .. } => path.clone(),
        }
    }

    /// Read a file of the logs directory; `Ok(None)` if it does not exist.
    fn read(&mut self, relative: &str) -> Result<Option<Vec<u8>>, SessionsError> {
        match &mut self.location {
            Location::Dir(dir) => {
                let path = dir.join(relative);
                match std::fs::read(&path) {
                    Ok(bytes) => Ok(Some(bytes)),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
                    Err(source) => Err(SessionsError::Io { path, source }),
                }
            }
            Location::Image { path, fs } => {
                let mut out = Vec::new();
                match fs.read_file(&format!("{LOGS_DIR}/{relative}"), &mut out) {
                    Ok(_) => Ok(Some(out)),
                    Err(ExfatError::NotFound { .. }) => Ok(None),
                    Err(source) => Err(SessionsError::Exfat {
                        path: path.clone(),
                        source,
                    }),
                }
            }
        }
    }

    /// The session directories in the logs directory (names only).
    fn session_dir_names(&mut self) -> Result<Vec<String>, SessionsError> {
        match &mut self.location {
            Location::Dir(dir) => Ok(session_dirs_in(dir).collect()),
            Location::Image { path, fs } => match fs.read_dir(LOGS_DIR) {
                Ok(entries) => Ok(entries
                    .into_iter()
                    .filter(|e| e.is_dir)
                    .map(|e| e.name)
                    .collect()),
                Err(ExfatError::NotFound { .. }) => Ok(Vec::new()),
                Err(source) => Err(SessionsError::Exfat {
                    path: path.clone(),
                    source,
                }),
            },
        }
    }

    /// A session's JSON file, leniently.
    fn json(&mut self, id: &str, name: &str) -> Option<serde_json::Value> {
        let bytes = self.read(&format!("{id}/{name}")).ok().flatten()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Every session: the lines of `index.jsonl`, and every session
    /// directory without one (interrupted), oldest first.
    pub fn list(&mut self) -> Result<SessionList, SessionsError> {
        let mut list = self.list_index()?;
        let known: Vec<String> = list.sessions.iter().map(|s| s.id.clone()).collect();
        for id in self.session_dir_names()? {
            if known.contains(&id) {
                continue;
            }
            let info = self.json(&id, files::SESSION_JSON);
            let has_status = self
                .read(&format!("{id}/{}", files::STATUS_JSON))
                .ok()
                .flatten()
                .is_some();
            if info.is_none() && !has_status {
                continue;
            }
            let field = |key: &str| {
                info.as_ref()
                    .and_then(|i| i[key].as_str())
                    .map(str::to_string)
            };
            list.sessions.push(SessionRow {
                iso: field("iso").unwrap_or_default(),
                result: "interrupted".into(),
                // Sticks before schema 2 wrote `started_utc`.
                started_utc: field("start_time_utc")
                    .or_else(|| field("started_utc"))
                    .unwrap_or_default(),
                duration_s: None,
                firmware: field("firmware"),
                accel: field("accel"),
                interrupted: true,
                last_stage: None,
                last_message: None,
                id,
            });
        }
        for row in &mut list.sessions {
            let status = self.json(&row.id, files::STATUS_JSON);
            let text = |key: &str| {
                status
                    .as_ref()
                    .and_then(|s| s[key].as_str())
                    .map(str::to_string)
            };
            row.last_stage = text("stage");
            row.last_message = text("message");
            let unfinished = row
                .last_stage
                .as_deref()
                .is_some_and(|s| !matches!(s, "analysis" | "complete" | "failed"));
            if unfinished && !row.interrupted {
                row.interrupted = true;
                if row.result == "running" {
                    row.result = "interrupted".into();
                }
            }
        }
        list.sessions
            .sort_by(|a, b| (&a.started_utc, &a.id).cmp(&(&b.started_utc, &b.id)));
        Ok(list)
    }

    /// The sessions in `index.jsonl`.
    fn list_index(&mut self) -> Result<SessionList, SessionsError> {
        let index = self.read(files::INDEX_JSONL)?.unwrap_or_default();
        let mut warnings = Vec::new();
        let mut sessions = Vec::new();
        for (number, line) in String::from_utf8_lossy(&index).lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let entry: IndexEntry = match serde_json::from_str(line) {
                Ok(entry) => entry,
                Err(e) => {
                    warnings.push(format!("{}:{}: {e}", files::INDEX_JSONL, number + 1));
                    continue;
                }
            };
            let result = self
                .read(&format!("{}/{}", entry.id, files::REPORT_JSON))
                .ok()
                .flatten()
                .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
                .and_then(|report| report["result"].as_str().map(str::to_string))
                .unwrap_or_else(|| outcome_name(&entry));
            sessions.push(SessionRow {
                duration_s: entry
                    .ended_utc
                    .as_deref()
                    .and_then(parse_utc)
                    .zip(parse_utc(&entry.started_utc))
                    .map(|(end, start)| end - start),
                id: entry.id,
                iso: entry.iso,
                result,
                started_utc: entry.started_utc,
                firmware: entry.firmware,
                accel: entry.accel,
                interrupted: false,
                last_stage: None,
                last_message: None,
            });
        }
        Ok(SessionList { sessions, warnings })
    }

    /// Analyze one session (`latest` or an id, or a unique id prefix) without
    /// writing into it.
    pub fn show(&mut self, which: &str) -> Result<Report, SessionsError> {
        let list = self.list()?;
        let path = self.display_path();
        let row = if which == "latest" {
            list.sessions
                .last()
                .ok_or(SessionsError::Empty { path: path.clone() })?
        } else {
            let exact = list.sessions.iter().find(|s| s.id == which);
            let mut prefixed = list.sessions.iter().filter(|s| s.id.starts_with(which));
            match (exact, prefixed.next(), prefixed.next()) {
                (Some(row), _, _) | (None, Some(row), None) => row,
                _ => {
                    return Err(SessionsError::NotFound {
                        path,
                        id: which.to_string(),
                    });
                }
            }
        };
        let id = row.id.clone();
        let analyze_err = |source| SessionsError::Analyze {
            id: id.clone(),
            source,
        };
        match &mut self.location {
            Location::Dir(dir) => analyze::build_report(&dir.join(&id)).map_err(analyze_err),
            Location::Image { path, fs } => {
                // Copy the session's files out of the image, then analyze the copy.
                let scratch = tempfile::tempdir().map_err(|source| SessionsError::Io {
                    path: std::env::temp_dir(),
                    source,
                })?;
                let exfat_err = |source| SessionsError::Exfat {
                    path: path.clone(),
                    source,
                };
                let session_path = format!("{LOGS_DIR}/{id}");
                // The session's files and its screenshots/ (one level).
                let mut dirs = vec![String::new()];
                while let Some(sub) = dirs.pop() {
                    let from = format!("{session_path}{sub}");
                    let into = scratch.path().join(sub.trim_start_matches('/'));
                    std::fs::create_dir_all(&into).map_err(|source| SessionsError::Io {
                        path: into.clone(),
                        source,
                    })?;
                    for entry in fs.read_dir(&from).map_err(exfat_err)? {
                        if entry.is_dir {
                            if sub.is_empty() {
                                dirs.push(format!("/{}", entry.name));
                            }
                            continue;
                        }
                        let target = into.join(&entry.name);
                        let mut out =
                            File::create(&target).map_err(|source| SessionsError::Io {
                                path: target.clone(),
                                source,
                            })?;
                        fs.read_file(&format!("{from}/{}", entry.name), &mut out)
                            .map_err(exfat_err)?;
                    }
                }
                analyze::build_report(scratch.path()).map_err(analyze_err)
            }
        }
    }
}

/// Subdirectories of `dir` that hold a session (`session.json` or
/// `status.json`).
fn session_dirs_in(dir: &Path) -> impl Iterator<Item = String> + '_ {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter(|e| {
            e.path().join(files::SESSION_JSON).is_file()
                || e.path().join(files::STATUS_JSON).is_file()
        })
        .filter_map(|e| e.file_name().into_string().ok())
}

fn outcome_name(entry: &IndexEntry) -> String {
    serde_json::to_value(entry.outcome)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// `YYYY-MM-DDTHH:MM:SSZ` to Unix seconds.
pub fn parse_utc(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    if b.len() != 20
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
        || b[19] != b'Z'
    {
        return None;
    }
    let num = |range: std::ops::Range<usize>| text.get(range)?.parse::<i64>().ok();
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hh, mm, ss) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    // Days from civil (proleptic Gregorian), the inverse of session.rs.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hh * 3600 + mm * 60 + ss)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hiperiso_stick::time::utc_rfc3339;

    #[test]
    fn utc_round_trip() {
        for t in [0, 951_782_400, 1_795_305_482, -1, 4_102_444_799] {
            assert_eq!(parse_utc(&utc_rfc3339(t)), Some(t), "{t}");
        }
        assert_eq!(parse_utc("2026-13-01T00:00:00Z"), None);
        assert_eq!(parse_utc("garbage"), None);
    }
}
