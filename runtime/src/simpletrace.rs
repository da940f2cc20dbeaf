//! QEMU's simpletrace binary format, version 4 (what `-trace file=` writes
//! with the `simple` trace backend), decoded as a stream.
//!
//! Layout (host byte order, little-endian on x86):
//! - header: `u64 0xffff_ffff_ffff_ffff`, `u64 magic 0xf2b177cb0aa429b4`,
//!   `u64 version 4`;
//! - then records, each starting with a `u64` type:
//!   - type 0, mapping: `u64 event id`, `u32 name length`, name bytes;
//!   - type 1, event: `u64 event id`, `u64 timestamp ns`, `u32 record length`
//!     (this 24-byte header plus the arguments), `u32 pid`, then the
//!     arguments: a `u64` each, strings as `u32` length + bytes.
//!
//! Event id `0xffff_ffff_ffff_fffe` marks dropped events (one `u64`: how
//! many). The record length lets the decoder skip records whose arguments it
//! cannot split, so it never loses its place.

use crate::trace_events::{Arg, EventCatalog, EventDecl, FastMap, TraceEvent, Value};
use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::sync::Arc;

pub const HEADER_EVENT_ID: u64 = u64::MAX;
pub const HEADER_MAGIC: u64 = 0xf2b1_77cb_0aa4_29b4;
pub const FORMAT_VERSION: u64 = 4;
pub const DROPPED_EVENT_ID: u64 = u64::MAX - 1;
pub const RECORD_TYPE_MAPPING: u64 = 0;
pub const RECORD_TYPE_EVENT: u64 = 1;
/// Event id + timestamp + length + pid.
pub const EVENT_HEADER_LEN: u32 = 24;
/// The name simpletrace.py gives dropped-event records.
pub const DROPPED_EVENT_NAME: &str = "Dropped_Event";
/// QEMU's trace buffer is 64 KiB; anything far larger is corruption.
const MAX_RECORD_LEN: u32 = 1 << 20;
const MAX_NAME_LEN: u32 = 4096;
/// Payloads up to this size are read into a buffer sized up front.
const TYPICAL_MAX_PAYLOAD: usize = 64 << 10;

/// Errors while decoding a simpletrace file. Offsets are byte offsets into
/// the file, so a corrupt file can be inspected with a hex dump.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error("cannot read trace at byte {offset}")]
    Read {
        offset: u64,
        #[source]
        source: io::Error,
    },
    #[error("not a simpletrace file: {reason}")]
    NotSimpletrace { reason: String },
    #[error("simpletrace version {0} is not supported (only version 4)")]
    UnsupportedVersion(u64),
    #[error("trace truncated at byte {offset}: {what} is incomplete")]
    Truncated { offset: u64, what: &'static str },
    #[error("corrupt trace at byte {offset}: {reason}")]
    Corrupt { offset: u64, reason: String },
}

/// A streaming simpletrace decoder over any reader (wrap files in a
/// `BufReader`).
pub struct SimpleTraceReader<R> {
    reader: R,
    offset: u64,
    catalog: EventCatalog,
    /// Event id to name and (when the catalog declares it) argument layout.
    mappings: FastMap<u64, (Arc<str>, Option<Arc<EventDecl>>)>,
    payload: Vec<u8>,
    dropped_name: Arc<str>,
    dropped_arg: Arc<str>,
}

impl<R: Read> SimpleTraceReader<R> {
    /// Read and check the file header.
    pub fn new(mut reader: R, catalog: EventCatalog) -> Result<Self, TraceError> {
        let mut header = [0u8; 24];
        let got = read_full(&mut reader, &mut header, 0)?;
        if got < header.len() {
            return Err(TraceError::NotSimpletrace {
                reason: format!("only {got} bytes, the header needs 24"),
            });
        }
        let word = |i: usize| u64::from_le_bytes(header[i * 8..i * 8 + 8].try_into().unwrap());
        if word(0) != HEADER_EVENT_ID || word(1) != HEADER_MAGIC {
            return Err(TraceError::NotSimpletrace {
                reason: format!(
                    "header id/magic are {:#x}/{:#x}, expected {HEADER_EVENT_ID:#x}/{HEADER_MAGIC:#x}",
                    word(0),
                    word(1)
                ),
            });
        }
        if word(2) != FORMAT_VERSION {
            return Err(TraceError::UnsupportedVersion(word(2)));
        }
        Ok(SimpleTraceReader {
            reader,
            offset: 24,
            catalog,
            mappings: FastMap::default(),
            payload: Vec::new(),
            dropped_name: DROPPED_EVENT_NAME.into(),
            dropped_arg: "num_events_dropped".into(),
        })
    }

    /// Bytes consumed so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Decode the next event into `event` (reusing its allocations).
    /// Mapping records are absorbed. `Ok(false)` at a clean end of file.
    pub fn read_event(&mut self, event: &mut TraceEvent) -> Result<bool, TraceError> {
        loop {
            let record_start = self.offset;
            let mut word = [0u8; 8];
            if !self.read_exact_or_eof(&mut word, "record type")? {
                return Ok(false);
            }
            match u64::from_le_bytes(word) {
                RECORD_TYPE_MAPPING => self.read_mapping()?,
                RECORD_TYPE_EVENT => {
                    self.read_event_record(event)?;
                    return Ok(true);
                }
                other => {
                    return Err(TraceError::Corrupt {
                        offset: record_start,
                        reason: format!("unknown record type {other}"),
                    });
                }
            }
        }
    }

    fn read_mapping(&mut self) -> Result<(), TraceError> {
        let start = self.offset;
        let mut head = [0u8; 12];
        self.read_exact(&mut head, "mapping record")?;
        let id = u64::from_le_bytes(head[..8].try_into().unwrap());
        let len = u32::from_le_bytes(head[8..].try_into().unwrap());
        if len > MAX_NAME_LEN {
            return Err(TraceError::Corrupt {
                offset: start,
                reason: format!("event name length {len} in mapping record"),
            });
        }
        let mut name = vec![0u8; len as usize];
        self.read_exact(&mut name, "mapping record name")?;
        let name = String::from_utf8(name).map_err(|_| TraceError::Corrupt {
            offset: start + 12,
            reason: format!("event name of id {id} is not UTF-8"),
        })?;
        let decl = self.catalog.get(&name).cloned();
        self.mappings.insert(id, (name.into(), decl));
        Ok(())
    }

    fn read_event_record(&mut self, event: &mut TraceEvent) -> Result<(), TraceError> {
        let start = self.offset;
        let mut head = [0u8; EVENT_HEADER_LEN as usize];
        self.read_exact(&mut head, "event record header")?;
        let id = u64::from_le_bytes(head[..8].try_into().unwrap());
        let timestamp = u64::from_le_bytes(head[8..16].try_into().unwrap());
        let length = u32::from_le_bytes(head[16..20].try_into().unwrap());
        let pid = u32::from_le_bytes(head[20..24].try_into().unwrap());
        if !(EVENT_HEADER_LEN..=MAX_RECORD_LEN).contains(&length) {
            return Err(TraceError::Corrupt {
                offset: start,
                reason: format!("event record length {length}"),
            });
        }
        let payload_len = (length - EVENT_HEADER_LEN) as usize;
        let mut payload = std::mem::take(&mut self.payload);
        let result = if payload_len <= TYPICAL_MAX_PAYLOAD {
            payload.resize(payload_len, 0);
            self.read_exact(&mut payload, "event record arguments")
        } else {
            // A corrupt length must not cost a large allocation up front:
            // grow the buffer only as the bytes actually arrive.
            payload.clear();
            self.read_growing(&mut payload, payload_len, "event record arguments")
        };
        self.payload = payload;
        result?;

        event.timestamp_ns = Some(timestamp);
        event.pid = Some(pid);
        event.args.clear();
        event.raw = None;
        if id == DROPPED_EVENT_ID {
            event.name = self.dropped_name.clone();
            if let Some(count) = self.payload.get(..8) {
                event.args.push(Arg {
                    name: self.dropped_arg.clone(),
                    value: Value::Uint(u64::from_le_bytes(count.try_into().unwrap())),
                });
            }
            return Ok(());
        }
        let decl = match self.mappings.get(&id) {
            Some((name, decl)) => {
                event.name = name.clone();
                decl.clone()
            }
            None => {
                event.name = format!("unmapped_event_{id}").into();
                None
            }
        };
        let split = decl
            .as_deref()
            .is_some_and(|decl| split_args(decl, &self.payload, &mut event.args));
        if !split {
            event.args.clear();
            event.raw = Some(hex_words(&self.payload));
        }
        Ok(())
    }

    fn read_exact(&mut self, buf: &mut [u8], what: &'static str) -> Result<(), TraceError> {
        if self.read_exact_or_eof(buf, what)? {
            Ok(())
        } else {
            Err(TraceError::Truncated {
                offset: self.offset,
                what,
            })
        }
    }

    /// Read exactly `len` bytes into `buf`, growing it as data arrives.
    fn read_growing(
        &mut self,
        buf: &mut Vec<u8>,
        len: usize,
        what: &'static str,
    ) -> Result<(), TraceError> {
        let start = self.offset;
        let got = (&mut self.reader)
            .take(len as u64)
            .read_to_end(buf)
            .map_err(|source| TraceError::Read {
                offset: start,
                source,
            })?;
        self.offset += got as u64;
        if got < len {
            return Err(TraceError::Truncated {
                offset: start,
                what,
            });
        }
        Ok(())
    }

    /// `Ok(false)` when the file ends before the first byte; a partial read
    /// is a truncation.
    fn read_exact_or_eof(
        &mut self,
        buf: &mut [u8],
        what: &'static str,
    ) -> Result<bool, TraceError> {
        let start = self.offset;
        let got = read_full(&mut self.reader, buf, start)?;
        self.offset += got as u64;
        match got {
            0 if !buf.is_empty() => Ok(false),
            n if n == buf.len() => Ok(true),
            _ => Err(TraceError::Truncated {
                offset: start,
                what,
            }),
        }
    }
}

/// Fill `buf` as far as the reader allows; returns how many bytes were read.
fn read_full(reader: &mut impl Read, buf: &mut [u8], offset: u64) -> Result<usize, TraceError> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(source) => {
                return Err(TraceError::Read {
                    offset: offset + filled as u64,
                    source,
                });
            }
        }
    }
    Ok(filled)
}

/// Split a payload by the declared argument types. False (and `args` left
/// partial) when the payload does not have exactly that shape.
fn split_args(decl: &EventDecl, payload: &[u8], args: &mut Vec<Arg>) -> bool {
    let mut rest = payload;
    for arg in &decl.args {
        let value = if arg.is_string {
            let Some((len, tail)) = rest.split_first_chunk::<4>() else {
                return false;
            };
            let len = u32::from_le_bytes(*len) as usize;
            if tail.len() < len {
                return false;
            }
            let (text, tail) = tail.split_at(len);
            rest = tail;
            Value::Str(String::from_utf8_lossy(text).into_owned())
        } else {
            let Some((word, tail)) = rest.split_first_chunk::<8>() else {
                return false;
            };
            rest = tail;
            Value::Uint(u64::from_le_bytes(*word))
        };
        args.push(Arg {
            name: arg.name.clone(),
            value,
        });
    }
    rest.is_empty()
}

fn hex_words(payload: &[u8]) -> String {
    let mut out = String::new();
    let mut chunks = payload.chunks_exact(8);
    for (i, word) in chunks.by_ref().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        let _ = write!(out, "0x{:x}", u64::from_le_bytes(word.try_into().unwrap()));
    }
    let tail = chunks.remainder();
    if !tail.is_empty() {
        out.push_str(if out.is_empty() { "bytes=" } else { " bytes=" });
        for byte in tail {
            let _ = write!(out, "{byte:02x}");
        }
    }
    out
}

/// Writes simpletrace v4 files; used by tests, fixtures and the benchmark
/// to produce traces of any size with the exact layout QEMU writes.
pub struct SimpleTraceWriter<W: Write> {
    writer: W,
}

/// An argument to write.
pub enum WriteArg<'a> {
    U64(u64),
    Str(&'a [u8]),
}

impl<W: Write> SimpleTraceWriter<W> {
    pub fn new(mut writer: W) -> io::Result<Self> {
        for word in [HEADER_EVENT_ID, HEADER_MAGIC, FORMAT_VERSION] {
            writer.write_all(&word.to_le_bytes())?;
        }
        Ok(SimpleTraceWriter { writer })
    }

    pub fn mapping(&mut self, id: u64, name: &str) -> io::Result<()> {
        self.writer.write_all(&RECORD_TYPE_MAPPING.to_le_bytes())?;
        self.writer.write_all(&id.to_le_bytes())?;
        self.writer.write_all(&(name.len() as u32).to_le_bytes())?;
        self.writer.write_all(name.as_bytes())
    }

    pub fn event(
        &mut self,
        id: u64,
        timestamp_ns: u64,
        pid: u32,
        args: &[WriteArg],
    ) -> io::Result<()> {
        let payload: usize = args
            .iter()
            .map(|a| match a {
                WriteArg::U64(_) => 8,
                WriteArg::Str(s) => 4 + s.len(),
            })
            .sum();
        self.writer.write_all(&RECORD_TYPE_EVENT.to_le_bytes())?;
        self.writer.write_all(&id.to_le_bytes())?;
        self.writer.write_all(&timestamp_ns.to_le_bytes())?;
        self.writer
            .write_all(&(EVENT_HEADER_LEN + payload as u32).to_le_bytes())?;
        self.writer.write_all(&pid.to_le_bytes())?;
        for arg in args {
            match arg {
                WriteArg::U64(v) => self.writer.write_all(&v.to_le_bytes())?,
                WriteArg::Str(s) => {
                    self.writer.write_all(&(s.len() as u32).to_le_bytes())?;
                    self.writer.write_all(s)?;
                }
            }
        }
        Ok(())
    }

    pub fn into_inner(self) -> W {
        self.writer
    }
}

/// Formats events the way QEMU's `simpletrace.py` prints them:
/// `name delta_us pid=N arg=0x.. str=text`, delta from the previous event.
#[derive(Default)]
pub struct PythonStyleFormatter {
    last_timestamp: Option<u64>,
}

impl PythonStyleFormatter {
    pub fn format(&mut self, event: &TraceEvent, out: &mut String) {
        let timestamp = event.timestamp_ns.unwrap_or(0);
        let delta = timestamp.wrapping_sub(self.last_timestamp.unwrap_or(timestamp));
        self.last_timestamp = Some(timestamp);
        let _ = write!(
            out,
            "{} {:.3} pid={}",
            event.name,
            delta as f64 / 1000.0,
            event.pid.unwrap_or(0)
        );
        for arg in &event.args {
            let _ = write!(out, " {}={}", arg.name, arg.value);
        }
        if let Some(raw) = &event.raw {
            let _ = write!(out, " {raw}");
        }
    }
}

#[cfg(test)]
mod tests;
