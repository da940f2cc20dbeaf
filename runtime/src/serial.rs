//! Serial console logs (`serial.log`, `firmware.log`, `qemu.stderr`): clean
//! the raw bytes into lines, and find boot stages and failures in them with
//! the table in `patterns`. Streams: memory does not grow with the log.

use crate::patterns::{self, Domain, Meaning, Pattern, Severity, Source, Stage};
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
            let at = |needle: &str| LineRef {
                source,
                file: file.to_string(),
                screenshot: screen.as_ref().map(|s| s.0.clone()),
                uptime_ms: screen.as_ref().and_then(|s| s.1),
                line: number,
                kernel_time_s: kernel_time(&text),
                text: excerpt(&text, needle),
            };
            let mut worst: Option<&Pattern> = None;
            for pattern in patterns::matches(source, &text) {
                match &pattern.meaning {
                    Meaning::Stage(stage) => {
                        let stage = *stage;
                        self.last_stage_order = Some((stage, order));
                        if self.stage_order(stage).is_none() {
                            self.stage_orders.push((stage, order));
                            self.stages.push(StageHit {
                                stage,
                                at: at(pattern.needle),
                            });
                        }
                    }
                    // One finding per line even if several rows match: the
                    // first fatal row, else the first row.
                    Meaning::Failure { severity, .. } => {
                        let worse = match worst.map(|p| &p.meaning) {
                            None => true,
                            Some(Meaning::Failure { severity: old, .. }) => severity > old,
                            Some(Meaning::Stage(_)) => false,
                        };
                        if worse {
                            worst = Some(pattern);
                        }
                    }
                }
            }
            if let Some(&Pattern {
                needle,
                meaning:
                    Meaning::Failure {
                        id,
                        domain,
                        severity,
                        hint,
                    },
                ..
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
                        at: at(needle),
                        order,
                    });
                }
            }
        }
    }
}

/// Longest evidence quoted as it is; longer lines are cut around the match.
const EXCERPT_CHARS: usize = 160;

/// The evidence for `needle` in `line`: the line itself when short and
/// plain; else (a full-screen dialog drawn with cursor moves and box lines
/// arrives on serial as one long line) the line with box-drawing characters
/// and runs of blanks squeezed, cut to a window around the match.
pub fn excerpt(line: &str, needle: &str) -> String {
    let is_box = |c: char| ('\u{2500}'..='\u{259f}').contains(&c);
    if line.chars().count() <= EXCERPT_CHARS && !line.chars().any(is_box) {
        return line.to_string();
    }
    let words: Vec<&str> = line
        .split(|c: char| c.is_whitespace() || is_box(c))
        .filter(|w| !w.is_empty())
        .collect();
    let squeezed = words.join(" ");
    let Some(at) = squeezed.find(needle) else {
        return squeezed.chars().take(EXCERPT_CHARS).collect();
    };
    // Up to a quarter of the window before the match, the rest after it,
    // cut at spaces.
    let before = &squeezed[..at];
    let start = if before.chars().count() <= EXCERPT_CHARS / 4 {
        0
    } else {
        before
            .char_indices()
            .rev()
            .take_while(|&(i, _)| before[i..].chars().count() <= EXCERPT_CHARS / 4)
            .filter(|&(_, c)| c == ' ')
            .last()
            .map_or(at, |(i, _)| i + 1)
    };
    let rest = &squeezed[start..];
    let mut end = rest.len();
    if rest.chars().count() > EXCERPT_CHARS {
        let limit = rest
            .char_indices()
            .nth(EXCERPT_CHARS)
            .map_or(rest.len(), |(i, _)| i);
        end = rest[..limit]
            .rfind(' ')
            .filter(|&i| i >= at - start + needle.len())
            .unwrap_or(limit);
    }
    let mut out = String::new();
    if start > 0 {
        out.push_str("… ");
    }
    out.push_str(&rest[..end]);
    if end < rest.len() {
        out.push_str(" …");
    }
    out
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

    /// debian-installer's first dialog as it reaches serial: one line of
    /// cursor moves and box drawing (cleaned), quoted as the words around
    /// the match.
    #[test]
    fn excerpts_a_full_screen_dialog() {
        let raw = format!(
            "\u{1b}[m\u{1b}[30m\u{1b}[47m┌{}┤ \u{1b}[31m[!!] Select a language \u{1b}[30m├{}┐│{}│ │ Choose \
             the language to be used for the installation process. The        │ │ selected \
             language will also be the default language for the installed   │",
            "─".repeat(23),
            "─".repeat(24),
            " ".repeat(73)
        );
        let line = clean_line(raw.as_bytes());
        assert!(line.chars().count() > EXCERPT_CHARS, "{line}");
        let quoted = excerpt(&line, "Select a language");
        assert!(
            quoted.starts_with("[!!] Select a language Choose the language to be used"),
            "{quoted}"
        );
        assert!(quoted.chars().count() <= EXCERPT_CHARS + 2, "{quoted}");
        assert!(quoted.ends_with("the installed"), "{quoted}");
        assert!(!quoted.contains('─') && !quoted.contains("  "), "{quoted}");
        // A short plain line is quoted whole, blanks included.
        let kernel = "[    0.000000] Linux version 6.1.0-50-amd64";
        assert_eq!(excerpt(kernel, "Linux version "), kernel);
        // A long line is cut around its match, the cut marked.
        let long = format!(
            "{} Kernel panic - not syncing: VFS {}",
            "x ".repeat(100),
            "y ".repeat(100)
        );
        let quoted = excerpt(&long, "Kernel panic");
        assert!(quoted.starts_with("… x "), "{quoted}");
        assert!(
            quoted.contains("Kernel panic - not syncing: VFS"),
            "{quoted}"
        );
    }

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
