//! The report's schema: `report.json` as written, and the constants the
//! verdict and the renderings share.

use crate::patterns::{Domain, Stage};
use crate::screens::ScreenSummary;
use crate::serial::{Finding, StageHit};
use crate::trace_summary::TraceSummary;
use serde::Serialize;

/// Version of the `report.json` schema; fields are only ever added.
pub const REPORT_SCHEMA: u32 = 1;
/// CD reads beyond this mean a bootloader and kernel were loaded.
pub(super) const LOADED_FROM_CD_BYTES: u64 = 16 << 20;
/// How many failure lines `report.txt` quotes.
pub(super) const TEXT_QUOTES: usize = 5;

/// The overall answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum BootResult {
    #[serde(rename = "booted")]
    Booted,
    #[serde(rename = "failed")]
    Failed,
    /// Still making progress (or no screen times to tell) when the
    /// session's timeout stopped QEMU.
    #[serde(rename = "timeout")]
    Timeout,
    /// Hung: the screen unchanged for `screens::HANG_MS` at the end of a
    /// session that stopped the guest, with no boot reached.
    #[serde(rename = "stuck")]
    Stuck,
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
            BootResult::Stuck => "stuck",
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
    /// The first line showing the furthest stage: its source (`serial` or
    /// `screen`), file and line, or screenshot and time.
    pub furthest_stage_at: Option<StageHit>,
    /// The screenshots: how many, how many with text, the last one.
    pub screens: Option<ScreenSummary>,
    /// The last screenshot's text (trailing blanks removed), when known.
    pub last_screen_text: Option<String>,
    /// The last `status.json` hiperiso-init wrote.
    pub last_status: Option<LastStatus>,
    /// The session never finished: its last status is not `analysis`,
    /// `complete` or `failed` (power loss, a crash, the stick pulled).
    pub interrupted: bool,
}

/// `status.json` as last written.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LastStatus {
    pub stage: String,
    pub message: String,
    pub updated_utc: String,
    pub uptime_ms: u64,
}
