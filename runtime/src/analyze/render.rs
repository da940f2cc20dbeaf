//! `report.txt` and `analysis.meta`: the report for humans and for shell
//! scripts.

use super::report::*;
use std::fmt::Write as _;

pub(super) fn time_suffix(time: Option<f64>) -> String {
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
    if report.interrupted {
        let _ = writeln!(out, "INTERRUPTED: the session never finished.");
    }
    if let Some(status) = report.last_status.as_ref().filter(|_| report.interrupted) {
        let _ = writeln!(
            out,
            "Last status: {} at {}: {}\n",
            status.stage, status.updated_utc, status.message
        );
    }

    let _ = writeln!(out, "Boot stages:");
    if report.stages.is_empty() {
        let _ = writeln!(out, "  (none recognized)");
    }
    for hit in &report.stages {
        let place = match (&hit.at.screenshot, hit.at.uptime_ms) {
            (Some(shot), ms) => format!(
                "screen {shot}{}",
                ms.map_or(String::new(), |ms| format!(
                    " at {:.1}s",
                    ms as f64 / 1000.0
                ))
            ),
            (None, _) => format!(
                "{}:{}{}",
                hit.at.file,
                hit.at.line,
                time_suffix(hit.at.kernel_time_s)
            ),
        };
        let _ = writeln!(
            out,
            "  {:<11} {place}  {}",
            hit.stage.as_str(),
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
    if let Some(screens) = &report.screens {
        let _ = writeln!(
            out,
            "\nScreens: {} screenshots, {} with text ({} by OCR)",
            screens.count, screens.with_text, screens.ocr
        );
        if let Some(last) = &screens.last {
            let when = last.uptime_ms.map_or(String::new(), |ms| {
                format!(" at {:.1}s", ms as f64 / 1000.0)
            });
            let _ = writeln!(out, "Last screen ({}{when}):", last.screenshot);
            match &last.text {
                Some(text) => {
                    for line in text.lines() {
                        let _ = writeln!(out, "  | {line}");
                    }
                }
                None => {
                    let _ = writeln!(out, "  (no text: graphics mode and no OCR)");
                }
            }
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
        (
            "INTERRUPTED".into(),
            u8::from(report.interrupted).to_string(),
        ),
    ];
    if let Some(timing) = &report.timing {
        lines.push(("TOTAL_MS".into(), timing.total_ms.to_string()));
    }
    if let Some(cd) = report.io.as_ref().and_then(|io| io.cdrom.as_ref()) {
        lines.push(("CD_SECTORS_READ".into(), cd.sectors.to_string()));
    }
    if let Some(screens) = &report.screens {
        lines.push(("SCREENSHOTS".into(), screens.count.to_string()));
        if let Some(ms) = screens.unchanged_at_end_ms {
            lines.push(("SCREEN_UNCHANGED_MS".into(), ms.to_string()));
        }
    }
    if let Some(at) = &report.furthest_stage_at {
        lines.push(("FURTHEST_STAGE_SOURCE".into(), at.at.source.as_str().into()));
    }
    if let Some(hint) = report.hints.first() {
        lines.push(("HINT".into(), clean(hint)));
    }
    lines
        .into_iter()
        .map(|(k, v)| format!("{k}={v}\n"))
        .collect()
}
