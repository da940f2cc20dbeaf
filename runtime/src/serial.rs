//! Serial console logs (`serial.log`, `firmware.log`, `qemu.stderr`): clean
//! the raw bytes into lines, and find boot stages and failures in them with
//! the table in `patterns`. Streams: memory does not grow with the log.

use crate::patterns::{self, Domain, Meaning, Severity, Source, Stage};
use serde::Serialize;
use std::io::{self, BufRead};

/// How many failure lines are quoted in full; the rest are only counted.
pub const MAX_QUOTED: usize = 20;
/// Lines longer than this are cut (a binary blob on the console).
const MAX_LINE_CHARS: usize = 4096;

/// Where a line was found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LineRef {
    /// What the line was read from: `serial`, `screen` or `qemu`.
    pub source: Source,
    /// The log's file name, e.g. `serial.log`; for the screen, the text's
    /// file (`screenshots/0003.txt` or `screenshots/0003.ocr.txt`).
    pub file: String,
    /// For the screen: the screenshot (`screenshots/0003.png`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub screenshot: Option<String>,
    /// For the screen: when the screenshot was taken (host uptime, ms).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uptime_ms: Option<u64>,
    /// 1-based line number.
    pub line: u64,
    /// The guest kernel's printk time on that line, in seconds, if any.
    pub kernel_time_s: Option<f64>,
    pub text: String,
}

/// The first line that showed a stage.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StageHit {
    pub stage: Stage,
    #[serde(flatten)]
    pub at: LineRef,
}

/// A line that matched a failure row.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    pub id: &'static str,
    pub domain: Domain,
    pub severity: Severity,
    pub hint: Option<&'static str>,
    #[serde(flatten)]
    pub at: LineRef,
    /// Position of this line among all lines scanned (all files), used to
    /// order findings against stages.
    #[serde(skip)]
    pub order: u64,
}

/// What scanning one or more logs found.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SerialScan {
    /// The first hit of each stage, in the order they were seen.
    pub stages: Vec<StageHit>,
    /// Failure lines, quoted (at most `MAX_QUOTED`).
    pub findings: Vec<Finding>,
    /// All failure lines, including those not quoted.
    pub error_count: u64,
    pub fatal_count: u64,
    pub lines: u64,
    pub bytes: u64,
    /// The last non-empty line of the guest console.
    pub last_line: Option<String>,
    /// Order of the last stage hit (any stage, not only the first of each).
    #[serde(skip)]
    pub last_stage_order: Option<(Stage, u64)>,
    #[serde(skip)]
    stage_orders: Vec<(Stage, u64)>,
    /// The screenshot being scanned (`scan_screen`): its file and time.
    #[serde(skip)]
    screen: Option<(String, Option<u64>)>,
}

impl SerialScan {
    /// The furthest stage reached (by boot order).
    pub fn furthest_stage(&self) -> Option<Stage> {
        self.stages.iter().map(|s| s.stage).max()
    }

    /// Where `stage` was first seen, in scan order.
    pub fn stage_order(&self, stage: Stage) -> Option<u64> {
        self.stage_orders
            .iter()
            .find(|(s, _)| *s == stage)
            .map(|(_, order)| *order)
    }

    /// Scan the text of one screenshot: `text_file` names the text in line
    /// references, `screenshot` the picture, `uptime_ms` its time.
    pub fn scan_screen(
        &mut self,
        text: &str,
        text_file: &str,
        screenshot: &str,
        uptime_ms: Option<u64>,
    ) {
        self.screen = Some((screenshot.to_string(), uptime_ms));
        // Reading from memory cannot fail.
        let _ = self.scan(text.as_bytes(), Source::Screen, text_file);
        self.screen = None;
    }

    /// Scan one log. `file` names it in line references.
    pub fn scan(&mut self, reader: impl BufRead, source: Source, file: &str) -> io::Result<()> {
        let mut reader = reader;
        let mut raw = Vec::new();
        let mut number = 0u64;
        let screen = self.screen.clone();
        loop {
            raw.clear();
            let n = read_line_bounded(&mut reader, &mut raw)?;
            if n == 0 {
                return Ok(());
            }
            number += 1;
            self.bytes += n as u64;
            self.lines += 1;
            let order = self.lines;
            let text = clean_line(&raw);
            if text.trim().is_empty() {
                continue;
            }
            if source == Source::Serial {
                self.last_line = Some(text.clone());
            }
            let at = || LineRef {
                source,
                file: file.to_string(),
                screenshot: screen.as_ref().map(|s| s.0.clone()),
                uptime_ms: screen.as_ref().and_then(|s| s.1),
                line: number,
                kernel_time_s: kernel_time(&text),
                text: text.clone(),
            };
            let mut worst: Option<&Meaning> = None;
            for pattern in patterns::matches(source, &text) {
                match &pattern.meaning {
                    Meaning::Stage(stage) => {
                        let stage = *stage;
                        self.last_stage_order = Some((stage, order));
                        if self.stage_order(stage).is_none() {
                            self.stage_orders.push((stage, order));
                            self.stages.push(StageHit { stage, at: at() });
                        }
                    }
                    // One finding per line even if several rows match: the
                    // first fatal row, else the first row.
                    failure @ Meaning::Failure { severity, .. } => {
                        let worse = match worst {
                            None => true,
                            Some(Meaning::Failure { severity: old, .. }) => severity > old,
                            Some(Meaning::Stage(_)) => false,
                        };
                        if worse {
                            worst = Some(failure);
                        }
                    }
                }
            }
            if let Some(&Meaning::Failure {
                id,
                domain,
                severity,
                hint,
            }) = worst
            {
                self.error_count += 1;
                if severity == Severity::Fatal {
                    self.fatal_count += 1;
                }
                // Always quote the first line of each fatal kind.
                let first_of_fatal_kind =
                    severity == Severity::Fatal && !self.findings.iter().any(|f| f.id == id);
                if self.findings.len() < MAX_QUOTED || first_of_fatal_kind {
                    self.findings.push(Finding {
                        id,
                        domain,
                        severity,
                        hint,
                        at: at(),
                        order,
                    });
                }
            }
        }
    }
}

/// Read one line (through `\n`) into `raw`, keeping at most
/// `MAX_LINE_CHARS * 4` bytes of it; returns the bytes consumed.
fn read_line_bounded(reader: &mut impl BufRead, raw: &mut Vec<u8>) -> io::Result<usize> {
    let limit = MAX_LINE_CHARS * 4;
    let mut consumed = 0;
    loop {
        let available = match reader.fill_buf() {
            Ok(buf) => buf,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if available.is_empty() {
            return Ok(consumed);
        }
        let (chunk, done) = match available.iter().position(|b| *b == b'\n') {
            Some(i) => (&available[..=i], true),
            None => (available, false),
        };
        let room = limit.saturating_sub(raw.len());
        raw.extend_from_slice(&chunk[..chunk.len().min(room)]);
        let len = chunk.len();
        reader.consume(len);
        consumed += len;
        if done {
            return Ok(consumed);
        }
    }
}

/// Turn raw console bytes into plain text: invalid UTF-8 replaced, ANSI
/// escape sequences and control characters dropped, a carriage return
/// keeps only what was written after it (console overwrites).
pub fn clean_line(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    let text = text.trim_end_matches(['\n', '\r']);
    let mut out = String::with_capacity(text.len().min(MAX_LINE_CHARS));
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => skip_escape(&mut chars),
            '\r' => {
                // "progress\rfinal": the console shows what came last, unless
                // the rest is empty.
                if chars.peek().is_some() {
                    out.clear();
                }
            }
            '\t' => out.push(' '),
            c if c.is_control() => {}
            c => out.push(c),
        }
        if out.len() >= MAX_LINE_CHARS {
            break;
        }
    }
    out
}

fn skip_escape(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) {
    match chars.peek() {
        Some('[') => {
            chars.next();
            // CSI: parameters and intermediates, then one final byte.
            for c in chars.by_ref() {
                if ('@'..='~').contains(&c) {
                    break;
                }
            }
        }
        Some(']') => {
            // OSC: up to BEL or ESC \.
            for c in chars.by_ref() {
                if c == '\u{7}' || c == '\\' {
                    break;
                }
            }
        }
        Some(_) => {
            chars.next();
        }
        None => {}
    }
}

/// The printk timestamp at the start of a kernel line, `[   12.345678] ...`.
pub fn kernel_time(line: &str) -> Option<f64> {
    let rest = line.trim_start().strip_prefix('[')?;
    let (stamp, _) = rest.split_once(']')?;
    let stamp = stamp.trim();
    let (secs, frac) = stamp.split_once('.')?;
    if secs.is_empty()
        || frac.len() != 6
        || !secs.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit())
    {
        return None;
    }
    stamp.parse().ok()
}

/// The stage markers of one line, for `hiperiso-log serial --stages`.
pub fn line_marks(source: Source, line: &str) -> Vec<String> {
    patterns::matches(source, line)
        .map(|p| match p.meaning {
            Meaning::Stage(stage) => stage.as_str().to_string(),
            Meaning::Failure { id, severity, .. } => match severity {
                Severity::Fatal => format!("FATAL:{id}"),
                Severity::Error => format!("error:{id}"),
            },
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleans_escapes_and_carriage_returns() {
        assert_eq!(
            clean_line(b"\x1b[1;1H\x1b[0mBdsDxe: loading\r\n"),
            "BdsDxe: loading"
        );
        assert_eq!(clean_line(b"10%\r50%\r100%\n"), "100%");
        assert_eq!(clean_line(b"a\tb\x07c\xffd"), "a bc\u{fffd}d");
        assert_eq!(clean_line(b"\x1b]0;title\x07text"), "text");
        assert_eq!(clean_line(b"\x1b"), "");
    }

    #[test]
    fn kernel_times() {
        assert_eq!(
            kernel_time("[    1.234567] Run /init as init process"),
            Some(1.234567)
        );
        assert_eq!(kernel_time("[ 1.2] short"), None);
        assert_eq!(kernel_time("no time"), None);
    }

    #[test]
    fn scan_finds_stages_and_failures_in_order() {
        let log = "SeaBIOS (version 1.16)\n\
                   Booting from DVD/CD...\n\
                   [    0.000000] Linux version 6.1.0\n\
                   [    2.000000] Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)\n";
        let mut scan = SerialScan::default();
        scan.scan(log.as_bytes(), Source::Serial, "serial.log")
            .unwrap();
        let stages: Vec<Stage> = scan.stages.iter().map(|s| s.stage).collect();
        assert_eq!(stages, [Stage::Firmware, Stage::BootDevice, Stage::Kernel]);
        assert_eq!(scan.stages[2].at.kernel_time_s, Some(0.0));
        // Two rows match the panic line; it is one finding, one error.
        assert_eq!(scan.findings.len(), 1);
        assert_eq!(scan.error_count, 1);
        assert_eq!(scan.findings[0].id, "no_root_fs");
        assert_eq!(scan.findings[0].at.line, 4);
        assert_eq!(scan.furthest_stage(), Some(Stage::Kernel));
    }

    #[test]
    fn huge_lines_are_bounded() {
        let mut log = vec![b'x'; 1 << 20];
        log.extend_from_slice(b"\nKernel panic - not syncing\n");
        let mut scan = SerialScan::default();
        scan.scan(&log[..], Source::Serial, "serial.log").unwrap();
        assert_eq!(scan.lines, 2);
        assert_eq!(scan.bytes, log.len() as u64);
        assert_eq!(scan.findings[0].at.line, 2);
    }
}
