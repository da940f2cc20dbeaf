//! The text written by QEMU's `log` trace backend (Debian's qemu-system-x86
//! uses it), read as a stream of lines.
//!
//! QEMU prints `name <formatted args>` per event, or
//! `<tid>@<sec>.<usec>:name <formatted args>` with `-msg timestamp=on`.
//! The `-D` file may also hold other QEMU log output; such lines come back
//! as [`LogLine::Other`]. Arguments are read back by matching the event's
//! declared format (from an [`EventCatalog`]); when the event is not
//! declared or the text does not match, the event keeps its text in `raw`.

use crate::trace_events::{Arg, EventCatalog, EventDecl, FormatPiece, TraceEvent, Value};
use std::io::{self, BufRead};

/// Errors while reading a log-backend trace.
#[derive(Debug, thiserror::Error)]
pub enum LogTraceError {
    #[error("cannot read log trace at line {line}")]
    Read {
        line: u64,
        #[source]
        source: io::Error,
    },
}

/// What one line of the file was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLine {
    /// A trace event; the event passed to `read_line` was filled.
    Event,
    /// Any other line (warnings, guest errors, a torn last line).
    Other,
}

/// A streaming decoder over a `BufRead`.
pub struct LogTraceReader<R> {
    reader: R,
    catalog: EventCatalog,
    line_number: u64,
    buf: Vec<u8>,
    other: String,
}

/// Give up matching a line against its format after this many steps (a
/// format with several `%s` could otherwise backtrack for long).
const MATCH_BUDGET: u32 = 20_000;

impl<R: BufRead> LogTraceReader<R> {
    pub fn new(reader: R, catalog: EventCatalog) -> Self {
        LogTraceReader {
            reader,
            catalog,
            line_number: 0,
            buf: Vec::new(),
            other: String::new(),
        }
    }

    /// Lines read so far.
    pub fn line_number(&self) -> u64 {
        self.line_number
    }

    /// The text of the last line that was [`LogLine::Other`].
    pub fn other_line(&self) -> &str {
        &self.other
    }

    /// Read the next line; `Ok(None)` at end of file.
    pub fn read_line(&mut self, event: &mut TraceEvent) -> Result<Option<LogLine>, LogTraceError> {
        self.buf.clear();
        let n = self
            .reader
            .read_until(b'\n', &mut self.buf)
            .map_err(|source| LogTraceError::Read {
                line: self.line_number + 1,
                source,
            })?;
        if n == 0 {
            return Ok(None);
        }
        self.line_number += 1;
        let line = String::from_utf8_lossy(&self.buf);
        let line = line.trim_end_matches(['\n', '\r']);
        if parse_event_line(line, &self.catalog, event) {
            Ok(Some(LogLine::Event))
        } else {
            self.other.clear();
            self.other.push_str(line);
            Ok(Some(LogLine::Other))
        }
    }
}

/// Fill `event` from one line; false if the line is not a trace event.
pub fn parse_event_line(line: &str, catalog: &EventCatalog, event: &mut TraceEvent) -> bool {
    let (prefix, body) = split_timestamp(line);
    let (name, text) = match body.split_once(' ') {
        Some((name, text)) => (name, text),
        None => (body, ""),
    };
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return false;
    }
    let decl = catalog.get(name);
    // Without a timestamp prefix, an undeclared name counts only if it looks
    // like a trace event name (`ide_atapi_cmd`), not like the first word of
    // a QEMU message (`qemu-system-x86_64:`, `Invalid`, `warning`).
    if prefix.is_none() && decl.is_none() && !looks_like_event_name(name) {
        return false;
    }
    event.name = match decl {
        Some(decl) => decl.name.clone(),
        None => name.into(),
    };
    event.timestamp_ns = prefix.map(|(_, ns)| ns);
    event.pid = prefix.map(|(tid, _)| tid);
    event.args.clear();
    event.raw = None;
    let matched = decl.is_some_and(|decl| match_args(decl, text, &mut event.args));
    if !matched {
        event.args.clear();
        event.raw = Some(text.to_string());
    }
    true
}

fn looks_like_event_name(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.contains('_')
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// `<tid>@<sec>.<usec>:rest` to `(Some((tid, ns)), rest)`.
fn split_timestamp(line: &str) -> (Option<(u32, u64)>, &str) {
    let parse = || {
        let (tid, rest) = line.split_once('@')?;
        let (stamp, body) = rest.split_once(':')?;
        let (sec, usec) = stamp.split_once('.')?;
        let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !(all_digits(tid) && all_digits(sec) && all_digits(usec)) || usec.len() != 6 {
            return None;
        }
        let ns = sec
            .parse::<u64>()
            .ok()?
            .checked_mul(1_000_000_000)?
            .checked_add(usec.parse::<u64>().ok()? * 1000)?;
        Some(((tid.parse().ok()?, ns), body))
    };
    match parse() {
        Some((stamp, body)) => (Some(stamp), body),
        None => (None, line),
    }
}

fn match_args(decl: &EventDecl, text: &str, args: &mut Vec<Arg>) -> bool {
    let mut values = Vec::with_capacity(decl.args.len());
    // Real lines match in about one step per character; the budget only
    // stops pathological ones early.
    let mut budget = (text.len() as u32)
        .saturating_mul(4)
        .saturating_add(256)
        .min(MATCH_BUDGET);
    if !match_pieces(&decl.format, text, &mut values, &mut budget)
        || values.len() != decl.args.len()
    {
        return false;
    }
    args.extend(decl.args.iter().zip(values).map(|(decl, value)| Arg {
        name: decl.name.clone(),
        value,
    }));
    true
}

/// Match `text` against the format pieces, pushing one value per consumed
/// argument. Backtracks over `%s` (shortest match first).
fn match_pieces(
    pieces: &[FormatPiece],
    text: &str,
    values: &mut Vec<Value>,
    budget: &mut u32,
) -> bool {
    if *budget == 0 {
        return false;
    }
    *budget -= 1;
    let Some((piece, rest)) = pieces.split_first() else {
        return text.is_empty();
    };
    match piece {
        FormatPiece::Literal(lit) => match text.strip_prefix(lit.as_str()) {
            Some(tail) => match_pieces(rest, tail, values, budget),
            None => false,
        },
        FormatPiece::Conversion {
            conv: 's',
            star_width,
        } => {
            let mark = values.len();
            for (end, _) in text.char_indices().chain([(text.len(), ' ')]) {
                if *star_width {
                    values.push(Value::Uint(end as u64));
                }
                // A placeholder: copying the candidate at every backtracking
                // step would make long lines quadratic.
                let slot = values.len();
                values.push(Value::Uint(0));
                if match_pieces(rest, &text[end..], values, budget) {
                    values[slot] = Value::Str(text[..end].to_string());
                    return true;
                }
                values.truncate(mark);
                if *budget == 0 {
                    return false;
                }
            }
            false
        }
        FormatPiece::Conversion { conv, star_width } => {
            let Some((value, len)) = scan_number(*conv, text) else {
                return false;
            };
            let mark = values.len();
            if *star_width {
                values.push(Value::Uint(len as u64));
            }
            values.push(value);
            if match_pieces(rest, &text[len..], values, budget) {
                return true;
            }
            values.truncate(mark);
            false
        }
    }
}

/// Scan one printed non-string conversion; returns the value and its length.
fn scan_number(conv: char, text: &str) -> Option<(Value, usize)> {
    let bytes = text.as_bytes();
    let span = |start: usize, ok: fn(u8) -> bool| {
        start + bytes[start..].iter().take_while(|b| ok(**b)).count()
    };
    // Leading spaces come from width padding such as `%4d`.
    let lead = span(0, |b| b == b' ');
    match conv {
        'd' | 'i' => {
            let sign = usize::from(matches!(bytes.get(lead), Some(b'-' | b'+')));
            let end = span(lead + sign, |b| b.is_ascii_digit());
            if end == lead + sign {
                return None;
            }
            let digits = &text[lead..end];
            let value = match digits.parse::<i64>() {
                Ok(v) if v < 0 => Value::Int(v),
                Ok(v) => Value::Uint(v as u64),
                Err(_) => Value::Uint(digits.trim_start_matches('+').parse().ok()?),
            };
            Some((value, end))
        }
        'u' => {
            let end = span(lead, |b| b.is_ascii_digit());
            (end > lead).then(|| Some((Value::Uint(text[lead..end].parse().ok()?), end)))?
        }
        'o' => {
            let end = span(lead, |b| (b'0'..=b'7').contains(&b));
            (end > lead).then(|| {
                Some((
                    Value::Uint(u64::from_str_radix(&text[lead..end], 8).ok()?),
                    end,
                ))
            })?
        }
        'x' | 'X' | 'p' => {
            if conv == 'p' && text[lead..].starts_with("(nil)") {
                return Some((Value::Uint(0), lead + 5));
            }
            let start = if text[lead..].starts_with("0x") && conv == 'p' {
                lead + 2
            } else {
                lead
            };
            let end = span(start, |b| b.is_ascii_hexdigit());
            if end == start {
                return None;
            }
            Some((
                Value::Uint(u64::from_str_radix(&text[start..end], 16).ok()?),
                end,
            ))
        }
        'c' => {
            let c = text.chars().next()?;
            Some((Value::Uint(c as u64), c.len_utf8()))
        }
        'f' | 'e' | 'g' | 'F' | 'E' | 'G' => {
            let end = span(lead, |b| {
                b.is_ascii_digit() || matches!(b, b'-' | b'+' | b'.' | b'e' | b'E')
            });
            (end > lead).then(|| (Value::Str(text[lead..end].to_string()), end))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(text: &str) -> Vec<(LogLine, TraceEvent)> {
        let mut reader = LogTraceReader::new(text.as_bytes(), EventCatalog::builtin());
        let mut out = Vec::new();
        let mut event = TraceEvent::default();
        while let Some(kind) = reader.read_line(&mut event).unwrap() {
            out.push((kind, event.clone()));
        }
        out
    }

    #[test]
    fn plain_lines_of_declared_events() {
        let lines = decode(
            "blk_co_preadv blk 0x56043ad3ebc0 bs 0x56043ad395c0 offset 34816 bytes 2048 flags 0x0\n\
             pci_cfg_read mch 00:00.0 @0x0 -> 0x29c08086\n\
             ide_atapi_cmd_read IDEState: 0x56043b734038; read dma: LBA=17 nb_sectors=1\n\
             runstate_set current_run_state 9 (running) new_state 11 (shutdown)\n",
        );
        assert!(lines.iter().all(|(k, _)| *k == LogLine::Event));
        let e = &lines[0].1;
        assert_eq!(e.arg_u64("blk"), Some(0x56043ad3ebc0));
        assert_eq!(e.arg_u64("offset"), Some(34816));
        assert_eq!(e.arg_u64("bytes"), Some(2048));
        assert_eq!(e.timestamp_ns, None);
        let e = &lines[1].1;
        assert_eq!(e.arg_str("dev"), Some("mch"));
        assert_eq!(e.arg_u64("val"), Some(0x29c08086));
        let e = &lines[2].1;
        assert_eq!(e.arg_str("method"), Some("dma"));
        assert_eq!(e.arg_u64("lba"), Some(17));
        assert_eq!(lines[3].1.arg_str("new_state_str"), Some("shutdown"));
        assert_eq!(lines[3].1.arg_u64("new_state"), Some(11));
    }

    #[test]
    fn timestamped_lines_and_other_lines() {
        let lines = decode(
            "4242@1700000000.000123:cpu_out addr 0x402(b) value 65\n\
             qemu-system-x86_64: warning: host doesn't support requested feature\n\
             4242@1700000001.500000:some_undeclared_event x=1 y=2\n\
             cpu_out addr 0xZZ\n\
             ahci_port_write ahci(0x5600)[0]: port write\n\
             warning something\n\
             Invalid_access at 0x10\n",
        );
        let kinds: Vec<LogLine> = lines.iter().map(|(k, _)| *k).collect();
        use LogLine::{Event, Other};
        assert_eq!(kinds, [Event, Other, Event, Event, Event, Other, Other]);
        assert_eq!(
            lines[4].1.raw.as_deref(),
            Some("ahci(0x5600)[0]: port write")
        );
        let e = &lines[0].1;
        assert_eq!(e.pid, Some(4242));
        assert_eq!(e.timestamp_ns, Some(1_700_000_000_000_123_000));
        assert_eq!(e.arg_u64("size"), Some(u64::from(b'b')));
        assert_eq!(e.arg_u64("val"), Some(65));
        let e = &lines[2].1;
        assert_eq!(e.raw.as_deref(), Some("x=1 y=2"));
        // Declared, but the text does not fit the format: kept raw.
        assert_eq!(lines[3].1.raw.as_deref(), Some("addr 0xZZ"));
        assert!(lines[3].1.args.is_empty());
    }

    #[test]
    fn negative_numbers_and_nil_pointers() {
        let lines = decode("ide_atapi_cmd_read IDEState: (nil); read pio: LBA=-1 nb_sectors=0\n");
        let e = &lines[0].1;
        assert_eq!(e.arg_u64("s"), Some(0));
        assert_eq!(e.arg("lba"), Some(&Value::Int(-1)));
    }

    #[test]
    fn torn_and_binary_lines_do_not_panic() {
        let mut bytes = b"pci_cfg_read mch 00:00.0 @0x0 -> 0x29c0".to_vec();
        bytes.extend_from_slice(&[0xff, 0xfe, b'\n', 0, 1, 2]);
        let mut reader = LogTraceReader::new(&bytes[..], EventCatalog::builtin());
        let mut event = TraceEvent::default();
        let mut lines = 0;
        while reader.read_line(&mut event).unwrap().is_some() {
            lines += 1;
        }
        assert_eq!(lines, 2);
    }
}
