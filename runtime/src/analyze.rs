//! Turn a session directory into an answer: did the guest boot, and if not,
//! where and why it failed. Writes `report.json`, `report.txt` and
//! `analysis.meta` into the session directory.
//!
//! Every input is optional: a session cut short by a power loss still gets
//! a report, with what could not be read listed under `warnings`.

use crate::patterns::Source;
use crate::screens::{self, ScreenSummary};
use crate::serial::SerialScan;
use crate::trace_events::EventCatalog;
use crate::trace_summary::{self, DeviceReads};
use hiperiso_stick::error_chain;
use hiperiso_stick::io::write_atomic;
use hiperiso_stick::session::{self, SessionInfo, Timing, files};
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

mod render;
mod report;
mod verdict;

pub use render::{render_meta, render_text};
pub use report::*;
use verdict::{decide, enum_name, hints, timing_summary};

/// How findings from `session.json`'s `guest_events` name their source.
const GUEST_EVENTS: &str = "session.json:guest_events";

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
    #[error("cannot render report.json")]
    Render(#[source] session::SessionError),
    /// Writing one of the report's files.
    #[error("cannot write the report")]
    Write(#[from] hiperiso_stick::io::IoError),
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
    // Older and synthetic sessions have none: not worth a warning.
    let status = dir
        .join(files::STATUS_JSON)
        .is_file()
        .then(|| read_json::<session::Status>(dir, files::STATUS_JSON, &mut warnings))
        .flatten();
    let interrupted = status.as_ref().is_some_and(|s| {
        !matches!(
            s.stage,
            session::Stage::Analysis | session::Stage::Complete | session::Stage::Failed
        )
    });
    let last_status = status.map(|s| LastStatus {
        stage: enum_name(&s.stage),
        message: s.message,
        updated_utc: s.updated_utc,
        uptime_ms: s.uptime_ms,
    });

    let (mut scan, serial_present) = scan_logs(dir, info.as_ref(), &mut warnings);
    let screens = scan_screens(dir, &mut scan);
    let serial_bytes = std::fs::metadata(dir.join(files::SERIAL_LOG)).map_or(0, |m| m.len());
    let host_failures = host_failures(dir, info.as_ref());
    let io = trace_io(dir, &mut warnings);
    let session = session_facts(dir, info.as_ref());

    let cd_bytes = io
        .as_ref()
        .and_then(|io| io.cdrom.as_ref())
        .map_or(0, |cd| cd.bytes);
    let verdict = decide(
        &scan,
        info.as_ref(),
        &host_failures,
        &session,
        cd_bytes,
        screens.as_ref(),
    );
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
        furthest_stage_at: scan
            .furthest_stage()
            .and_then(|f| scan.stages.iter().find(|s| s.stage == f).cloned()),
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
        last_screen_text: screens
            .as_ref()
            .and_then(|s| s.last.as_ref())
            .and_then(|l| l.text.clone()),
        screens,
        last_status,
        interrupted,
    })
}

/// The firmware log, serial console, QEMU's stderr and the QMP events,
/// scanned; whether there is a `serial.log`.
fn scan_logs(
    dir: &Path,
    info: Option<&SessionInfo>,
    warnings: &mut Vec<String>,
) -> (SerialScan, bool) {
    let mut scan = SerialScan::default();
    let mut serial_present = false;
    for (name, source) in [
        (files::FIRMWARE_LOG, Source::Serial),
        (files::SERIAL_LOG, Source::Serial),
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
    if let Some(info) = info {
        let events = info.guest_events.join("\n");
        if let Err(e) = scan.scan(events.as_bytes(), Source::Qemu, GUEST_EVENTS) {
            warnings.push(format!("{GUEST_EVENTS}: {e}"));
        }
    }
    (scan, serial_present)
}

/// Whether OCR may run: Tesseract on PATH and `HIPERISO_NO_OCR` unset.
fn ocr_wanted() -> bool {
    std::env::var_os("HIPERISO_NO_OCR").is_none() && screens::ocr_available()
}

/// Scan the screenshots' text into `scan` (only the lines a screen adds to
/// the previous one, so a failure that stays on screen counts once); `None`
/// without screenshots.
fn scan_screens(dir: &Path, scan: &mut SerialScan) -> Option<ScreenSummary> {
    let shots = screens::shots(dir);
    let last_shot = shots.last()?.clone();
    let ocr = ocr_wanted();
    let (mut with_text, mut ocr_count) = (0, 0);
    let mut previous: Option<screens::ScreenText> = None;
    for shot in &shots {
        let text = if shot.changed || previous.is_none() || shot.text.is_some() {
            screens::text_of(dir, shot, ocr)
        } else {
            previous.clone()
        };
        let Some(text) = text else {
            previous = None;
            continue;
        };
        with_text += 1;
        if text.how == screens::TextSource::Ocr {
            ocr_count += 1;
        }
        let before: Vec<&str> = previous
            .as_ref()
            .map_or(Vec::new(), |p| p.text.lines().collect());
        // Lines already on the previous screen are blanked, not dropped:
        // line numbers stay screen rows.
        let new_lines: String = text
            .text
            .lines()
            .map(|l| {
                if before.contains(&l) {
                    "\n".to_string()
                } else {
                    format!("{l}\n")
                }
            })
            .collect();
        let screenshot = format!("{}/{}", screens::SCREENSHOTS, shot.file);
        scan.scan_screen(&new_lines, &text.file, &screenshot, shot.uptime_ms);
        previous = Some(text);
    }
    // `previous` is the last screenshot's own text (reset on a screen
    // without text).
    let last_text = previous;
    Some(ScreenSummary {
        count: shots.len(),
        with_text,
        ocr: ocr_count,
        unchanged_at_end_ms: screens::unchanged_at_end_ms(&shots),
        last: Some(screens::LastScreen {
            screenshot: format!("{}/{}", screens::SCREENSHOTS, last_shot.file),
            uptime_ms: last_shot.uptime_ms,
            utc: last_shot.utc.clone(),
            text_file: last_text.as_ref().map(|t| t.file.clone()),
            text_source: last_text.as_ref().map(|t| t.how),
            text: last_text.map(|t| screens::tidy(&t.text)),
        }),
    })
}

/// hiperiso-init's failures: `session.json`'s, and `FAILURE.txt`'s lines
/// that are not among them.
fn host_failures(dir: &Path, info: Option<&SessionInfo>) -> Vec<HostFailure> {
    let mut host_failures: Vec<HostFailure> = info
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
    host_failures
}

/// The trace's summary, with the CD-ROM's reads.
fn trace_io(dir: &Path, warnings: &mut Vec<String>) -> Option<IoSummary> {
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
    io
}

/// What `session.json` says about the session, and whether it completed.
fn session_facts(dir: &Path, info: Option<&SessionInfo>) -> SessionFacts {
    SessionFacts {
        id: info.map(|i| i.id.clone()),
        iso: info.map(|i| i.iso.clone()),
        firmware: info.and_then(|i| i.firmware.clone()),
        accel: info.and_then(|i| i.accel.clone()),
        started_utc: info.map(|i| i.started_utc.clone()),
        ended_utc: info.and_then(|i| i.ended_utc.clone()),
        qemu_exit_code: info.and_then(|i| i.qemu_exit_code),
        qemu_signal: info.and_then(|i| i.qemu_signal),
        complete: dir.join(files::SESSION_COMPLETE).exists(),
        screenshots: info.map_or(0, |i| i.screenshots),
    }
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

/// Write `report.json`, `report.txt` and `analysis.meta` atomically.
pub fn write_report(dir: &Path, report: &Report) -> Result<(), AnalyzeError> {
    for (name, bytes) in report_files(report)? {
        write_atomic(&dir.join(name), &bytes)?;
    }
    Ok(())
}

/// The report's files: `report.json`, `report.txt` and `analysis.meta`,
/// with their contents.
pub fn report_files(report: &Report) -> Result<[(&'static str, Vec<u8>); 3], AnalyzeError> {
    let json = session::to_json("report.json", report).map_err(AnalyzeError::Render)?;
    Ok([
        (files::REPORT_JSON, json.into_bytes()),
        (files::REPORT_TXT, render_text(report).into_bytes()),
        (files::ANALYSIS_META, render_meta(report).into_bytes()),
    ])
}
