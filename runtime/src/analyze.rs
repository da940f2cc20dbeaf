//! Turn a session directory into an answer: did the guest boot, and if not,
//! where and why it failed. Writes `report.json`, `report.txt` and
//! `analysis.meta` into the session directory.
//!
//! Every input is optional: a session cut short by a power loss still gets
//! a report, with what could not be read listed under `warnings`.

use crate::patterns::{Domain, Severity, Source, Stage};
use crate::serial::{Finding, SerialScan, StageHit};
use crate::session::{self, FailureKind, SessionInfo, Timing, files};
use crate::trace_events::EventCatalog;
use crate::trace_summary::{self, DeviceReads, TraceSummary};
use hiperiso_stick::error_chain;
use hiperiso_stick::io::write_atomic;
use serde::Serialize;
use std::fmt::Write as _;
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

mod render;
mod verdict;

pub use render::{render_meta, render_text};
use verdict::{decide, hints, timing_summary};

/// Version of the `report.json` schema; fields are only ever added.
pub const REPORT_SCHEMA: u32 = 1;
/// How findings from `session.json`'s `guest_events` name their source.
const GUEST_EVENTS: &str = "session.json:guest_events";
/// CD reads beyond this mean a bootloader and kernel were loaded.
const LOADED_FROM_CD_BYTES: u64 = 16 << 20;
/// How many failure lines `report.txt` quotes.
const TEXT_QUOTES: usize = 5;

/// Errors that stop an analysis (missing inputs do not).
#[derive(Debug, thiserror::Error)]
pub enum AnalyzeError {
    #[error("{path} is not a directory")]
    NotADirectory { path: PathBuf },
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write the report")]
    Write(#[source] session::SessionError),
    /// Writing one of the report's files.
    #[error("cannot write the report")]
    WriteFile(#[from] hiperiso_stick::io::IoError),
}

/// The overall answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum BootResult {
    #[serde(rename = "booted")]
    Booted,
    #[serde(rename = "failed")]
    Failed,
    #[serde(rename = "timeout")]
    Timeout,
    #[serde(rename = "host-failure")]
    HostFailure,
    #[serde(rename = "unknown")]
    Unknown,
}

impl BootResult {
    pub fn as_str(self) -> &'static str {
        match self {
            BootResult::Booted => "booted",
            BootResult::Failed => "failed",
            BootResult::Timeout => "timeout",
            BootResult::HostFailure => "host-failure",
            BootResult::Unknown => "unknown",
        }
    }
}

/// What was booted, from `session.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SessionFacts {
    pub id: Option<String>,
    pub iso: Option<String>,
    pub firmware: Option<String>,
    pub accel: Option<String>,
    pub started_utc: Option<String>,
    pub ended_utc: Option<String>,
    pub qemu_exit_code: Option<i32>,
    pub qemu_signal: Option<i32>,
    /// `SESSION_COMPLETE` exists.
    pub complete: bool,
    /// Distinct screenshots saved under `screenshots/`.
    pub screenshots: u32,
}

/// A failure `hiperiso-init` recorded (session.json `failures`, FAILURE.txt).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HostFailure {
    pub kind: String,
    pub fatal: bool,
    pub message: String,
}

/// Failure lines found in the logs.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ErrorSummary {
    pub count: u64,
    pub fatal: u64,
    /// The first failure lines (and the first of every fatal kind).
    pub first: Vec<Finding>,
}

/// One timing phase with its duration.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TimingPhase {
    pub name: String,
    pub start_ms: u64,
    pub end_ms: u64,
    pub duration_ms: u64,
}

/// The timing summary from `timing.json`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TimingSummary {
    pub phases: Vec<TimingPhase>,
    /// From the earliest start to the latest end.
    pub total_ms: u64,
    /// The longest phase.
    pub slowest: Option<String>,
}

/// CD reads as the trace saw them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CdReads {
    pub sectors: u64,
    pub bytes: u64,
    pub requests: u64,
    pub first_read_s: Option<f64>,
    pub last_read_s: Option<f64>,
}

/// The I/O summary from the trace.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IoSummary {
    /// The trace file's name inside the session directory.
    pub trace_file: String,
    /// `None` when the trace did not record ATAPI reads at all.
    pub cdrom: Option<CdReads>,
    #[serde(flatten)]
    pub trace: TraceSummary,
}

/// `report.json`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub schema: u32,
    pub result: BootResult,
    pub failure_domain: Option<Domain>,
    /// One sentence saying what happened.
    pub summary: String,
    pub session: SessionFacts,
    /// The first line showing each stage, in the order seen.
    pub stages: Vec<StageHit>,
    pub furthest_stage: Option<Stage>,
    pub errors: ErrorSummary,
    pub host_failures: Vec<HostFailure>,
    pub timing: Option<TimingSummary>,
    pub io: Option<IoSummary>,
    /// Concrete next steps, most relevant first.
    pub hints: Vec<String>,
    /// Session files that were missing or unreadable.
    pub warnings: Vec<String>,
    /// Size of the guest console log in bytes, and its last line.
    pub serial_bytes: u64,
    pub serial_last_line: Option<String>,
}

/// Analyze `session_dir` and write `report.json`, `report.txt` and
/// `analysis.meta` into it.
pub fn analyze(session_dir: &Path) -> Result<Report, AnalyzeError> {
    let report = build_report(session_dir)?;
    write_report(session_dir, &report)?;
    Ok(report)
}

/// Analyze without writing anything.
pub fn build_report(dir: &Path) -> Result<Report, AnalyzeError> {
    if !dir.is_dir() {
        return Err(AnalyzeError::NotADirectory {
            path: dir.to_path_buf(),
        });
    }
    let mut warnings = Vec::new();
    let info = read_json::<SessionInfo>(dir, files::SESSION_JSON, &mut warnings);
    let timing = read_json::<Timing>(dir, files::TIMING_JSON, &mut warnings);

    let mut scan = SerialScan::default();
    let mut serial_present = false;
    for (name, source) in [
        (files::FIRMWARE_LOG, Source::Guest),
        (files::SERIAL_LOG, Source::Guest),
        (files::QEMU_STDERR, Source::Qemu),
    ] {
        let path = dir.join(name);
        match File::open(&path) {
            Ok(file) => {
                if name == files::SERIAL_LOG {
                    serial_present = true;
                }
                if let Err(e) = scan.scan(BufReader::new(file), source, name) {
                    warnings.push(format!("{name}: read stopped early: {e}"));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if name == files::SERIAL_LOG {
                    warnings.push(format!("{name}: missing"));
                }
            }
            Err(e) => warnings.push(format!("{name}: {e}")),
        }
    }
    // QMP events hiperiso-init saw (`<ms> <EVENT> <data>`), e.g. GUEST_PANICKED.
    if let Some(info) = &info {
        let events = info.guest_events.join("\n");
        if let Err(e) = scan.scan(events.as_bytes(), Source::Qemu, GUEST_EVENTS) {
            warnings.push(format!("{GUEST_EVENTS}: {e}"));
        }
    }
    let serial_bytes = std::fs::metadata(dir.join(files::SERIAL_LOG)).map_or(0, |m| m.len());

    let mut host_failures: Vec<HostFailure> = info
        .as_ref()
        .map(|info| {
            info.failures
                .iter()
                .map(|f| HostFailure {
                    kind: enum_name(&f.kind),
                    fatal: f.fatal,
                    message: f.message.clone(),
                })
                .collect()
        })
        .unwrap_or_default();
    if let Ok(text) = std::fs::read_to_string(dir.join(files::FAILURE_TXT)) {
        let known: Vec<String> = host_failures.iter().map(|f| f.message.clone()).collect();
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
            if !known.iter().any(|m| m == line) {
                host_failures.push(HostFailure {
                    kind: "failure_txt".into(),
                    fatal: info.is_none(),
                    message: line.to_string(),
                });
            }
        }
    }

    let io = trace_file(dir).and_then(|name| {
        match trace_summary::summarize_file(&dir.join(name), EventCatalog::builtin()) {
            Ok(trace) => Some(IoSummary {
                trace_file: name.to_string(),
                cdrom: trace.devices.get("cdrom").map(cd_reads),
                trace,
            }),
            Err(e) => {
                warnings.push(format!("{name}: {}", error_chain(&e)));
                None
            }
        }
    });
    if let Some(error) = io.as_ref().and_then(|io| io.trace.error.as_ref()) {
        warnings.push(format!("trace: partial summary: {error}"));
    }

    let session = SessionFacts {
        id: info.as_ref().map(|i| i.id.clone()),
        iso: info.as_ref().map(|i| i.iso.clone()),
        firmware: info.as_ref().and_then(|i| i.firmware.clone()),
        accel: info.as_ref().and_then(|i| i.accel.clone()),
        started_utc: info.as_ref().map(|i| i.started_utc.clone()),
        ended_utc: info.as_ref().and_then(|i| i.ended_utc.clone()),
        qemu_exit_code: info.as_ref().and_then(|i| i.qemu_exit_code),
        qemu_signal: info.as_ref().and_then(|i| i.qemu_signal),
        complete: dir.join(files::SESSION_COMPLETE).exists(),
        screenshots: info.as_ref().map_or(0, |i| i.screenshots),
    };

    let cd_bytes = io
        .as_ref()
        .and_then(|io| io.cdrom.as_ref())
        .map_or(0, |cd| cd.bytes);
    let verdict = decide(&scan, info.as_ref(), &host_failures, &session, cd_bytes);
    let timing = timing.map(|t| timing_summary(&t));
    let hints = hints(
        &scan,
        &verdict,
        &session,
        io.as_ref(),
        serial_present,
        serial_bytes,
    );
    Ok(Report {
        schema: REPORT_SCHEMA,
        result: verdict.result,
        failure_domain: verdict.domain,
        summary: verdict.summary,
        session,
        furthest_stage: scan.furthest_stage(),
        stages: scan.stages.clone(),
        errors: ErrorSummary {
            count: scan.error_count,
            fatal: scan.fatal_count,
            first: scan.findings.clone(),
        },
        host_failures,
        timing,
        io,
        hints,
        warnings,
        serial_bytes,
        serial_last_line: scan.last_line.clone(),
    })
}

/// The trace file of a session: `trace.bin` (simpletrace, or log-backend
/// text when Debian's QEMU wrote it), else `trace.log`.
fn trace_file(dir: &Path) -> Option<&'static str> {
    [files::TRACE_BIN, "trace.log"]
        .into_iter()
        .find(|name| dir.join(name).is_file())
}

fn cd_reads(reads: &DeviceReads) -> CdReads {
    CdReads {
        sectors: reads.bytes / 2048,
        bytes: reads.bytes,
        requests: reads.requests,
        first_read_s: reads.first_read_s,
        last_read_s: reads.last_read_s,
    }
}

fn read_json<T: serde::de::DeserializeOwned>(
    dir: &Path,
    name: &str,
    warnings: &mut Vec<String>,
) -> Option<T> {
    let text = match std::fs::read_to_string(dir.join(name)) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            warnings.push(format!("{name}: missing"));
            return None;
        }
        Err(e) => {
            warnings.push(format!("{name}: {e}"));
            return None;
        }
    };
    serde_json::from_str(&text)
        .map_err(|e| warnings.push(format!("{name}: {e}")))
        .ok()
}

/// The serde name of a unit enum variant (`no_kvm`).
fn enum_name<T: Serialize>(value: &T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// Write `report.json`, `report.txt` and `analysis.meta` atomically.
pub fn write_report(dir: &Path, report: &Report) -> Result<(), AnalyzeError> {
    let json = session::to_json("report.json", report).map_err(AnalyzeError::Write)?;
    write_atomic(&dir.join(files::REPORT_JSON), json.as_bytes())?;
    write_atomic(&dir.join(files::REPORT_TXT), render_text(report).as_bytes())?;
    write_atomic(
        &dir.join(files::ANALYSIS_META),
        render_meta(report).as_bytes(),
    )?;
    Ok(())
}
