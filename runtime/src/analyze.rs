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

struct Verdict {
    result: BootResult,
    domain: Option<Domain>,
    summary: String,
}

fn is_host_kind(kind: FailureKind) -> bool {
    !matches!(kind, FailureKind::ConfigBroken | FailureKind::GuestCrash)
}

/// Where a guest stuck at `stage` was stuck.
fn domain_after(stage: Option<Stage>) -> Domain {
    match stage {
        None | Some(Stage::Firmware) => Domain::Firmware,
        Some(Stage::BootDevice) | Some(Stage::Bootloader) => Domain::Bootloader,
        Some(Stage::Kernel) => Domain::Kernel,
        Some(_) => Domain::Userspace,
    }
}

fn decide(
    scan: &SerialScan,
    info: Option<&SessionInfo>,
    host: &[HostFailure],
    session: &SessionFacts,
    cd_bytes: u64,
) -> Verdict {
    let furthest = scan.furthest_stage();
    let reached = |stage| furthest.is_some_and(|f| f >= stage);

    // 1. The host side failed before or around the guest.
    let fatal_host_kind =
        info.and_then(|i| i.failures.iter().find(|f| f.fatal && is_host_kind(f.kind)));
    if let Some(failure) = fatal_host_kind {
        return Verdict {
            result: BootResult::HostFailure,
            domain: Some(Domain::Host),
            summary: format!(
                "the host failed ({}): {}",
                enum_name(&failure.kind),
                failure.message
            ),
        };
    }
    let fatal_qemu = scan
        .findings
        .iter()
        .find(|f| f.severity == Severity::Fatal && f.domain == Domain::Host);
    if let Some(finding) = fatal_qemu {
        return Verdict {
            result: BootResult::HostFailure,
            domain: Some(Domain::Host),
            summary: format!("QEMU failed: {}", finding.at.text),
        };
    }
    if let (None, 0, Some(failure)) = (info, scan.lines, host.first()) {
        return Verdict {
            result: BootResult::HostFailure,
            domain: Some(Domain::Host),
            summary: format!(
                "the session failed before the guest ran: {}",
                failure.message
            ),
        };
    }

    // 2. A fatal guest failure after the last sign of progress.
    let userspace_order = scan.stage_order(Stage::Userspace);
    let fatal = scan.findings.iter().find(|f| {
        f.severity == Severity::Fatal
            && f.domain != Domain::Host
            && userspace_order.is_none_or(|u| f.order > u)
    });
    if let Some(finding) = fatal {
        let stage = furthest.map_or("no stage".to_string(), |s| format!("stage {}", s.as_str()));
        return Verdict {
            result: BootResult::Failed,
            domain: Some(finding.domain),
            summary: format!(
                "{} failure after {stage}: {}",
                finding.domain.as_str(),
                finding.at.text.trim()
            ),
        };
    }

    // 3. Userspace came up: booted, whatever happened next.
    if reached(Stage::Userspace) && userspace_order.is_some() {
        return Verdict {
            result: BootResult::Booted,
            domain: None,
            summary: "the guest booted to userspace".into(),
        };
    }
    let shutdown = scan.stage_order(Stage::Shutdown).is_some();
    if shutdown && scan.stage_order(Stage::Init).is_some() {
        return Verdict {
            result: BootResult::Booted,
            domain: None,
            summary: "the guest ran its init and shut down cleanly".into(),
        };
    }
    if shutdown {
        return Verdict {
            result: BootResult::Failed,
            domain: Some(Domain::GuestShutdown),
            summary: "the guest shut down or reset before reaching init".into(),
        };
    }
    let guest_crash = info.and_then(|i| {
        i.failures
            .iter()
            .find(|f| f.kind == FailureKind::GuestCrash)
    });
    if let Some(crash) = guest_crash {
        return Verdict {
            result: BootResult::Failed,
            domain: Some(domain_after(furthest)),
            summary: format!("the guest crashed: {}", crash.message),
        };
    }

    // 4. Still running when the session ended it. A guest that printed
    // nothing recognizable but read a lot from the CD got past the firmware
    // (most ISOs boot to the screen only): say so rather than blame it.
    let silent_but_loaded = furthest.is_none() && cd_bytes >= LOADED_FROM_CD_BYTES;
    if session.qemu_signal.is_some() && silent_but_loaded {
        return Verdict {
            result: BootResult::Timeout,
            domain: None,
            summary: format!(
                "the guest read {} MiB from the CD but printed nothing recognizable on serial; it was still running when QEMU was stopped",
                cd_bytes >> 20
            ),
        };
    }
    if session.qemu_signal.is_some() {
        let stage = furthest.map_or("before any recognized stage".to_string(), |s| {
            format!("at stage {}", s.as_str())
        });
        return Verdict {
            result: BootResult::Timeout,
            domain: Some(domain_after(furthest)),
            summary: format!("the guest was still {stage} when QEMU was stopped"),
        };
    }
    Verdict {
        result: BootResult::Unknown,
        domain: None,
        summary: match furthest {
            Some(stage) => format!(
                "no conclusion: the last recognized stage is {}",
                stage.as_str()
            ),
            None => "no conclusion: nothing recognizable in the logs".into(),
        },
    }
}

fn timing_summary(timing: &Timing) -> TimingSummary {
    let phases: Vec<TimingPhase> = timing
        .phases
        .iter()
        .map(|p| TimingPhase {
            name: p.name.clone(),
            start_ms: p.start_ms,
            end_ms: p.end_ms,
            duration_ms: p.end_ms.saturating_sub(p.start_ms),
        })
        .collect();
    let start = phases.iter().map(|p| p.start_ms).min().unwrap_or(0);
    let end = phases.iter().map(|p| p.end_ms).max().unwrap_or(0);
    let slowest = phases
        .iter()
        .max_by(|a, b| {
            a.duration_ms
                .cmp(&b.duration_ms)
                .then_with(|| b.name.cmp(&a.name))
        })
        .map(|p| p.name.clone());
    TimingSummary {
        phases,
        total_ms: end.saturating_sub(start),
        slowest,
    }
}

fn hints(
    scan: &SerialScan,
    verdict: &Verdict,
    session: &SessionFacts,
    io: Option<&IoSummary>,
    serial_present: bool,
    serial_bytes: u64,
) -> Vec<String> {
    let mut hints: Vec<String> = Vec::new();
    let mut push = |hint: String| {
        if !hints.contains(&hint) {
            hints.push(hint);
        }
    };
    // Fatal findings first, then the rest, each hint once.
    let mut findings: Vec<&Finding> = scan.findings.iter().collect();
    findings.sort_by_key(|f| (std::cmp::Reverse(f.severity), f.order));
    for finding in findings {
        if let Some(hint) = finding.hint {
            push(hint.to_string());
        }
    }
    let firmware = session.firmware.as_deref();
    if verdict.result != BootResult::Booted && verdict.result != BootResult::HostFailure {
        let loaded_from_cd = io
            .and_then(|io| io.cdrom.as_ref())
            .is_some_and(|cd| cd.bytes >= LOADED_FROM_CD_BYTES);
        if serial_present && serial_bytes == 0 && !loaded_from_cd {
            push(
                "the guest printed nothing on the serial console: it may use only the screen; look at screenshots/ (and add console=ttyS0 to the guest kernel command line if you control it)"
                    .into(),
            );
        }
        if let Some(cd) = io.and_then(|io| io.cdrom.as_ref()) {
            if cd.bytes >= LOADED_FROM_CD_BYTES && scan.furthest_stage().is_none() {
                push("the guest loaded a lot from the CD but used only the screen: look at screenshots/, or add console=ttyS0 to the guest kernel command line to get its log in serial.log".into());
            }
            if cd.sectors == 0 {
                push("the guest never read the CD: the firmware did not try to boot it".into());
            }
        } else if io.is_some_and(|io| io.trace.error.is_none() && io.trace.devices.is_empty()) {
            push(
                "the trace recorded no disk reads: use trace level detailed or full to see CD I/O"
                    .into(),
            );
        }
        if firmware == Some("uefi") && scan.furthest_stage() < Some(Stage::Bootloader) {
            push("if this ISO boots only in BIOS mode, set \"firmware\": \"bios\" for it in iso_overrides".into());
        }
        if verdict.result == BootResult::Timeout {
            push(format!(
                "the session timed out with the guest {}; raise the timeout or check screenshots/ for a prompt waiting for input",
                scan.furthest_stage()
                    .map_or("silent".to_string(), |s| format!("at stage {}", s.as_str()))
            ));
        }
    }
    if session.accel.as_deref() == Some("tcg") {
        push("QEMU ran without KVM (TCG): the guest is 10-50x slower; enable VT-x/AMD-V in the PC's firmware".into());
    }
    hints
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

fn time_suffix(time: Option<f64>) -> String {
    time.map_or(String::new(), |t| format!(" at {t:.3}s"))
}

/// The human report.
pub fn render_text(report: &Report) -> String {
    let mut out = String::new();
    let s = &report.session;
    let _ = writeln!(
        out,
        "hiperiso session {}",
        s.id.as_deref().unwrap_or("(unknown id)")
    );
    if let Some(iso) = &s.iso {
        let _ = writeln!(
            out,
            "ISO: {iso}  firmware: {}  accel: {}",
            s.firmware.as_deref().unwrap_or("?"),
            s.accel.as_deref().unwrap_or("?")
        );
    }
    let _ = writeln!(out);
    let _ = write!(out, "RESULT: {}", report.result.as_str());
    if let Some(domain) = report.failure_domain {
        let _ = write!(out, " (domain: {})", domain.as_str());
    }
    let _ = writeln!(out, "\n{}\n", report.summary);

    let _ = writeln!(out, "Boot stages:");
    if report.stages.is_empty() {
        let _ = writeln!(out, "  (none recognized)");
    }
    for hit in &report.stages {
        let _ = writeln!(
            out,
            "  {:<11} {}:{}{}  {}",
            hit.stage.as_str(),
            hit.at.file,
            hit.at.line,
            time_suffix(hit.at.kernel_time_s),
            hit.at.text.trim()
        );
    }
    let _ = writeln!(
        out,
        "\nErrors: {} ({} fatal)",
        report.errors.count, report.errors.fatal
    );
    for finding in report.errors.first.iter().take(TEXT_QUOTES) {
        let _ = writeln!(
            out,
            "  {}:{} [{}] {}",
            finding.at.file,
            finding.at.line,
            finding.id,
            finding.at.text.trim()
        );
    }
    for failure in &report.host_failures {
        let _ = writeln!(
            out,
            "  host: {}{}: {}",
            failure.kind,
            if failure.fatal { " (fatal)" } else { "" },
            failure.message
        );
    }
    if let Some(timing) = &report.timing {
        let _ = writeln!(out, "\nTiming: {} ms in total", timing.total_ms);
        for phase in &timing.phases {
            let _ = writeln!(out, "  {:<20} {:>8} ms", phase.name, phase.duration_ms);
        }
    }
    if let Some(io) = &report.io {
        let t = &io.trace;
        let _ = writeln!(out, "\nI/O ({}, {} events):", io.trace_file, t.events);
        match &io.cdrom {
            Some(cd) => {
                let _ = writeln!(
                    out,
                    "  CD: {} sectors ({} bytes) in {} requests{}",
                    cd.sectors,
                    cd.bytes,
                    cd.requests,
                    match (cd.first_read_s, cd.last_read_s) {
                        (Some(a), Some(b)) => format!(", from {a:.3}s to {b:.3}s"),
                        _ => String::new(),
                    }
                );
            }
            None => {
                let _ = writeln!(out, "  CD: no ATAPI reads in the trace");
            }
        }
        for (name, dev) in &t.devices {
            if name != "cdrom" {
                let _ = writeln!(
                    out,
                    "  {name}: {} bytes in {} requests",
                    dev.bytes, dev.requests
                );
            }
        }
        if let Some(top) = t.port_io.first() {
            let _ = writeln!(
                out,
                "  busiest port: {} ({} in, {} out)",
                top.port, top.reads, top.writes
            );
        }
        if let Some(top) = t.pci_config.first() {
            let _ = writeln!(
                out,
                "  busiest PCI config: {} ({} reads, {} writes)",
                top.function, top.reads, top.writes
            );
        }
        if t.dropped_events > 0 {
            let _ = writeln!(out, "  QEMU dropped {} trace events", t.dropped_events);
        }
    }
    if !report.hints.is_empty() {
        let _ = writeln!(out, "\nHints:");
        for hint in &report.hints {
            let _ = writeln!(out, "  - {hint}");
        }
    }
    if !report.warnings.is_empty() {
        let _ = writeln!(out, "\nWarnings:");
        for warning in &report.warnings {
            let _ = writeln!(out, "  - {warning}");
        }
    }
    out
}

/// `analysis.meta`: flat `KEY=VALUE` lines for shell scripts.
pub fn render_meta(report: &Report) -> String {
    let clean = |s: &str| s.replace(['\n', '\r'], " ");
    let mut lines: Vec<(String, String)> = vec![
        ("SCHEMA".into(), REPORT_SCHEMA.to_string()),
        ("RESULT".into(), report.result.as_str().into()),
        (
            "FAILURE_DOMAIN".into(),
            report.failure_domain.map_or("", |d| d.as_str()).into(),
        ),
        (
            "FURTHEST_STAGE".into(),
            report.furthest_stage.map_or("", |s| s.as_str()).into(),
        ),
        (
            "STAGES".into(),
            report
                .stages
                .iter()
                .map(|s| s.stage.as_str())
                .collect::<Vec<_>>()
                .join(","),
        ),
        ("ERRORS".into(), report.errors.count.to_string()),
        ("FATAL_ERRORS".into(), report.errors.fatal.to_string()),
        (
            "FIRST_ERROR".into(),
            report
                .errors
                .first
                .first()
                .map_or(String::new(), |f| clean(f.at.text.trim())),
        ),
        ("SUMMARY".into(), clean(&report.summary)),
        ("SERIAL_BYTES".into(), report.serial_bytes.to_string()),
    ];
    if let Some(timing) = &report.timing {
        lines.push(("TOTAL_MS".into(), timing.total_ms.to_string()));
    }
    if let Some(cd) = report.io.as_ref().and_then(|io| io.cdrom.as_ref()) {
        lines.push(("CD_SECTORS_READ".into(), cd.sectors.to_string()));
    }
    if let Some(hint) = report.hints.first() {
        lines.push(("HINT".into(), clean(hint)));
    }
    lines
        .into_iter()
        .map(|(k, v)| format!("{k}={v}\n"))
        .collect()
}
