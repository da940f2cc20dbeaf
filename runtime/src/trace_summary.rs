//! Opening a trace of either backend, and summarizing it in one streaming
//! pass: counts per event, bytes read per device (and when), port-I/O and
//! PCI config hot spots. Memory is bounded by the caps below, not by the
//! trace's size.

use crate::logtrace::{LogLine, LogTraceError, LogTraceReader};
use crate::simpletrace::{DROPPED_EVENT_NAME, SimpleTraceReader, TraceError};
use crate::trace_events::{EventCatalog, FastMap, TraceEvent};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

/// At most this many distinct event names are counted by name.
const MAX_EVENT_NAMES: usize = 10_000;
/// At most this many distinct PCI functions are tracked.
const MAX_PCI_KEYS: usize = 1024;
/// At most this many distinct block devices are tracked.
const MAX_DEVICES: usize = 64;
/// At most this many one-second timeline buckets per device.
const MAX_TIMELINE_SECONDS: u64 = 24 * 3600;
/// Hot-spot lists keep this many entries.
pub const TOP_N: usize = 10;

/// Errors while opening or decoding a trace file.
#[derive(Debug, thiserror::Error)]
pub enum TraceFileError {
    #[error("cannot open trace {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}")]
    Simple {
        path: PathBuf,
        #[source]
        source: TraceError,
    },
    #[error("{path}")]
    Log {
        path: PathBuf,
        #[source]
        source: LogTraceError,
    },
}

/// Which backend wrote a trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TraceFormat {
    Simpletrace,
    Log,
}

/// A trace of either format, decoded event by event.
pub enum TraceStream<R> {
    Simple(SimpleTraceReader<R>),
    Log(LogTraceReader<R>),
}

/// One step of a [`TraceStream`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TraceItem {
    Event,
    /// A non-event line of a log-backend file.
    OtherLine,
}

impl TraceStream<BufReader<File>> {
    /// Open a trace file, telling the formats apart by the simpletrace header.
    pub fn open(path: &Path, catalog: EventCatalog) -> Result<Self, TraceFileError> {
        let open_err = |source| TraceFileError::Open {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(open_err)?;
        let mut reader = BufReader::with_capacity(1 << 20, file);
        let is_simple = reader.fill_buf().map_err(open_err)?.starts_with(&[0xff; 8]);
        Self::from_reader(reader, is_simple, catalog).map_err(|source| TraceFileError::Simple {
            path: path.to_path_buf(),
            source,
        })
    }
}

impl<R: BufRead> TraceStream<R> {
    pub fn from_reader(
        reader: R,
        is_simple: bool,
        catalog: EventCatalog,
    ) -> Result<Self, TraceError> {
        Ok(if is_simple {
            TraceStream::Simple(SimpleTraceReader::new(reader, catalog)?)
        } else {
            TraceStream::Log(LogTraceReader::new(reader, catalog))
        })
    }

    pub fn format(&self) -> TraceFormat {
        match self {
            TraceStream::Simple(_) => TraceFormat::Simpletrace,
            TraceStream::Log(_) => TraceFormat::Log,
        }
    }

    /// Where the decoder is, for messages: a byte offset or a line number.
    pub fn position(&self) -> String {
        match self {
            TraceStream::Simple(r) => format!("byte {}", r.offset()),
            TraceStream::Log(r) => format!("line {}", r.line_number()),
        }
    }

    /// The next event or line; `Ok(None)` at the end.
    pub fn next_item(
        &mut self,
        event: &mut TraceEvent,
        path: &Path,
    ) -> Result<Option<TraceItem>, TraceFileError> {
        match self {
            TraceStream::Simple(reader) => match reader.read_event(event) {
                Ok(true) => Ok(Some(TraceItem::Event)),
                Ok(false) => Ok(None),
                Err(source) => Err(TraceFileError::Simple {
                    path: path.to_path_buf(),
                    source,
                }),
            },
            TraceStream::Log(reader) => match reader.read_line(event) {
                Ok(Some(LogLine::Event)) => Ok(Some(TraceItem::Event)),
                Ok(Some(LogLine::Other)) => Ok(Some(TraceItem::OtherLine)),
                Ok(None) => Ok(None),
                Err(source) => Err(TraceFileError::Log {
                    path: path.to_path_buf(),
                    source,
                }),
            },
        }
    }
}

/// Reads from one block device, as seen in the trace.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DeviceReads {
    pub requests: u64,
    pub bytes: u64,
    /// Seconds since the trace's first timestamped event.
    pub first_read_s: Option<f64>,
    pub last_read_s: Option<f64>,
    /// Bytes read per second of trace time: `[second, bytes]`, in order,
    /// seconds without reads left out.
    pub timeline: Vec<(u64, u64)>,
    #[serde(skip)]
    timeline_map: BTreeMap<u64, u64>,
}

/// One port-I/O hot spot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PortHotSpot {
    pub port: String,
    pub reads: u64,
    pub writes: u64,
}

/// One PCI-config hot spot (a device function).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PciHotSpot {
    /// `name bb:ss.f` as QEMU names it.
    pub function: String,
    pub reads: u64,
    pub writes: u64,
}

/// The summary of one trace.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TraceSummary {
    pub format: TraceFormat,
    pub events: u64,
    /// Log backend: lines that were not trace events.
    pub other_lines: u64,
    /// Events QEMU dropped because its trace buffer was full.
    pub dropped_events: u64,
    /// Seconds between the first and last timestamped event.
    pub duration_s: Option<f64>,
    /// Counts per event name, most frequent first (ties by name).
    pub event_counts: Vec<(String, u64)>,
    /// Bytes read per device, by device label.
    pub devices: BTreeMap<String, DeviceReads>,
    pub port_io: Vec<PortHotSpot>,
    pub pci_config: Vec<PciHotSpot>,
    /// Set when decoding stopped early; the summary covers what came before.
    pub error: Option<String>,
}

/// How one event name counts as a read from a device.
struct ReadRule {
    event: &'static str,
    /// A fixed label, or (when `label_arg` is set) a prefix for its value.
    label: &'static str,
    label_arg: Option<&'static str>,
    count_arg: &'static str,
    unit_bytes: u64,
}

/// The events that count as device reads. ATAPI reads are 2048-byte CD
/// sectors; the block layer (`blk_co_preadv`) sees every backend read,
/// including the firmware's, under its own label.
const READ_RULES: &[ReadRule] = &[
    ReadRule {
        event: "ide_atapi_cmd_read",
        label: "cdrom",
        label_arg: None,
        count_arg: "nb_sectors",
        unit_bytes: 2048,
    },
    ReadRule {
        event: "ide_sector_read",
        label: "ide-hd",
        label_arg: None,
        count_arg: "nsectors",
        unit_bytes: 512,
    },
    ReadRule {
        event: "virtio_blk_handle_read",
        label: "virtio-blk",
        label_arg: None,
        count_arg: "nsectors",
        unit_bytes: 512,
    },
    ReadRule {
        event: "blk_co_preadv",
        label: "block-backend ",
        label_arg: Some("blk"),
        count_arg: "bytes",
        unit_bytes: 1,
    },
];

/// Accumulates a [`TraceSummary`] one event at a time.
pub struct SummaryBuilder {
    format: TraceFormat,
    events: u64,
    other_lines: u64,
    dropped_events: u64,
    first_ns: Option<u64>,
    last_ns: Option<u64>,
    counts: FastMap<String, u64>,
    devices: BTreeMap<String, DeviceReads>,
    ports: FastMap<(u64, bool), u64>,
    /// Few distinct functions in practice: a list beats formatting a key.
    pci: Vec<PciCounter>,
}

const OVERFLOW_KEY: &str = "(others)";

struct PciCounter {
    dev: String,
    address: Option<(u64, u64, u64)>,
    reads: u64,
    writes: u64,
}

impl SummaryBuilder {
    pub fn new(format: TraceFormat) -> Self {
        SummaryBuilder {
            format,
            events: 0,
            other_lines: 0,
            dropped_events: 0,
            first_ns: None,
            last_ns: None,
            counts: FastMap::default(),
            devices: BTreeMap::new(),
            ports: FastMap::default(),
            pci: Vec::new(),
        }
    }

    pub fn add_other_line(&mut self) {
        self.other_lines += 1;
    }

    pub fn add(&mut self, event: &TraceEvent) {
        self.events += 1;
        if let Some(ns) = event.timestamp_ns {
            self.first_ns.get_or_insert(ns);
            self.last_ns = Some(self.last_ns.map_or(ns, |last| last.max(ns)));
        }
        let name = &*event.name;
        let room = self.counts.len() < MAX_EVENT_NAMES;
        match self.counts.get_mut(name) {
            Some(count) => *count += 1,
            None if room => {
                self.counts.insert(name.to_string(), 1);
            }
            None => *self.counts.entry(OVERFLOW_KEY.to_string()).or_default() += 1,
        }
        match name {
            DROPPED_EVENT_NAME => {
                self.dropped_events += event.arg_u64("num_events_dropped").unwrap_or(0);
            }
            "cpu_in" | "cpu_out" => {
                if let Some(port) = event.arg_u64("addr") {
                    *self.ports.entry((port, name == "cpu_out")).or_default() += 1;
                }
            }
            "pci_cfg_read" | "pci_cfg_write" => self.add_pci(event, name == "pci_cfg_write"),
            _ => self.add_read(event),
        }
    }

    fn add_pci(&mut self, event: &TraceEvent, write: bool) {
        let (Some(dev), Some(bus), Some(slot), Some(func)) = (
            event.arg_str("dev"),
            event.arg_u64("bus"),
            event.arg_u64("slot"),
            event.arg_u64("func"),
        ) else {
            return;
        };
        let address = Some((bus, slot, func));
        let index = match self
            .pci
            .iter()
            .position(|c| c.address == address && c.dev == dev)
        {
            Some(index) => index,
            None => {
                let overflow = self.pci.len() >= MAX_PCI_KEYS;
                let existing = overflow
                    .then(|| self.pci.iter().position(|c| c.address.is_none()))
                    .flatten();
                existing.unwrap_or_else(|| {
                    self.pci.push(PciCounter {
                        dev: if overflow { OVERFLOW_KEY } else { dev }.to_string(),
                        address: if overflow { None } else { address },
                        reads: 0,
                        writes: 0,
                    });
                    self.pci.len() - 1
                })
            }
        };
        let counter = &mut self.pci[index];
        if write {
            counter.writes += 1;
        } else {
            counter.reads += 1;
        }
    }

    fn add_read(&mut self, event: &TraceEvent) {
        let Some(rule) = READ_RULES.iter().find(|r| r.event == &*event.name) else {
            return;
        };
        let Some(count) = event.arg(rule.count_arg).and_then(|v| v.as_i64()) else {
            return;
        };
        let bytes = u64::try_from(count)
            .unwrap_or(0)
            .saturating_mul(rule.unit_bytes);
        let label = match rule.label_arg.and_then(|arg| event.arg_u64(arg)) {
            Some(id) => format!("{}{id:#x}", rule.label),
            None => rule.label.to_string(),
        };
        let label = if self.devices.len() < MAX_DEVICES || self.devices.contains_key(&label) {
            label
        } else {
            OVERFLOW_KEY.to_string()
        };
        let relative = event
            .timestamp_ns
            .zip(self.first_ns)
            .map(|(ns, first)| ns.saturating_sub(first));
        let device = self.devices.entry(label).or_default();
        device.requests += 1;
        device.bytes = device.bytes.saturating_add(bytes);
        if let Some(ns) = relative {
            let seconds = ns as f64 / 1e9;
            device.first_read_s.get_or_insert(seconds);
            device.last_read_s = Some(seconds);
            let bucket = (ns / 1_000_000_000).min(MAX_TIMELINE_SECONDS);
            *device.timeline_map.entry(bucket).or_default() += bytes;
        }
    }

    pub fn finish(self, error: Option<String>) -> TraceSummary {
        let mut event_counts: Vec<(String, u64)> = self.counts.into_iter().collect();
        event_counts.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));

        let mut port_map: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
        for ((port, write), count) in self.ports {
            let entry = port_map.entry(port).or_default();
            if write {
                entry.1 += count;
            } else {
                entry.0 += count;
            }
        }
        let mut port_io: Vec<PortHotSpot> = port_map
            .into_iter()
            .map(|(port, (reads, writes))| PortHotSpot {
                port: format!("{port:#06x}"),
                reads,
                writes,
            })
            .collect();
        port_io.sort_by(|a, b| {
            (b.reads + b.writes)
                .cmp(&(a.reads + a.writes))
                .then_with(|| a.port.cmp(&b.port))
        });
        port_io.truncate(TOP_N);

        let mut pci_config: Vec<PciHotSpot> = self
            .pci
            .into_iter()
            .map(|c| PciHotSpot {
                function: match c.address {
                    Some((bus, slot, func)) => format!("{} {bus:02x}:{slot:02x}.{func:x}", c.dev),
                    None => c.dev,
                },
                reads: c.reads,
                writes: c.writes,
            })
            .collect();
        pci_config.sort_by(|a, b| {
            (b.reads + b.writes)
                .cmp(&(a.reads + a.writes))
                .then_with(|| a.function.cmp(&b.function))
        });
        pci_config.truncate(TOP_N);

        let mut devices = self.devices;
        for device in devices.values_mut() {
            device.timeline = std::mem::take(&mut device.timeline_map)
                .into_iter()
                .collect();
        }
        TraceSummary {
            format: self.format,
            events: self.events,
            other_lines: self.other_lines,
            dropped_events: self.dropped_events,
            duration_s: self
                .first_ns
                .zip(self.last_ns)
                .map(|(first, last)| (last - first) as f64 / 1e9),
            event_counts,
            devices,
            port_io,
            pci_config,
            error,
        }
    }
}

/// Summarize a trace file. Opening errors are errors; a decoding error part
/// way through gives a partial summary with `error` set.
pub fn summarize_file(path: &Path, catalog: EventCatalog) -> Result<TraceSummary, TraceFileError> {
    let stream = TraceStream::open(path, catalog)?;
    Ok(summarize_stream(stream, path))
}

pub fn summarize_stream<R: BufRead>(mut stream: TraceStream<R>, path: &Path) -> TraceSummary {
    let mut builder = SummaryBuilder::new(stream.format());
    let mut event = TraceEvent::default();
    loop {
        match stream.next_item(&mut event, path) {
            Ok(Some(TraceItem::Event)) => builder.add(&event),
            Ok(Some(TraceItem::OtherLine)) => builder.add_other_line(),
            Ok(None) => return builder.finish(None),
            Err(e) => return builder.finish(Some(hiperiso_stick::error_chain(&e))),
        }
    }
}

/// Whether the first bytes look like a simpletrace file.
pub fn looks_like_simpletrace(mut reader: impl Read) -> bool {
    let mut head = [0u8; 8];
    reader.read_exact(&mut head).is_ok() && head == [0xff; 8]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simpletrace::{DROPPED_EVENT_ID, SimpleTraceWriter, WriteArg};

    #[test]
    fn summarizes_a_simpletrace() {
        let mut w = SimpleTraceWriter::new(Vec::new()).unwrap();
        w.mapping(1, "ide_atapi_cmd_read").unwrap();
        w.mapping(2, "cpu_out").unwrap();
        w.mapping(3, "pci_cfg_read").unwrap();
        let u = WriteArg::U64;
        let second = 1_000_000_000;
        w.event(2, 10 * second, 1, &[u(0x402), u(b'b'.into()), u(1)])
            .unwrap();
        w.event(
            1,
            10 * second,
            1,
            &[u(0xdead), WriteArg::Str(b"dma"), u(16), u(4)],
        )
        .unwrap();
        w.event(
            1,
            12 * second + 5,
            1,
            &[u(0xdead), WriteArg::Str(b"pio"), u(20), u(1)],
        )
        .unwrap();
        for _ in 0..3 {
            w.event(2, 12 * second, 1, &[u(0x80), u(b'b'.into()), u(1)])
                .unwrap();
        }
        w.event(
            3,
            13 * second,
            1,
            &[WriteArg::Str(b"mch"), u(0), u(0), u(0), u(0), u(0x8086)],
        )
        .unwrap();
        w.event(DROPPED_EVENT_ID, 13 * second, 1, &[u(5)]).unwrap();
        let bytes = w.into_inner();
        let stream = TraceStream::from_reader(&bytes[..], true, EventCatalog::builtin()).unwrap();
        let summary = summarize_stream(stream, Path::new("t.bin"));
        assert_eq!(summary.error, None);
        assert_eq!(summary.events, 8);
        assert_eq!(summary.dropped_events, 5);
        assert_eq!(summary.duration_s, Some(3.0));
        assert_eq!(summary.event_counts[0], ("cpu_out".to_string(), 4));
        let cd = &summary.devices["cdrom"];
        assert_eq!((cd.requests, cd.bytes), (2, 5 * 2048));
        assert_eq!(cd.first_read_s, Some(0.0));
        assert_eq!(cd.timeline, vec![(0, 4 * 2048), (2, 2048)]);
        assert_eq!(summary.port_io[0].port, "0x0080");
        assert_eq!(summary.port_io[0].writes, 3);
        assert_eq!(summary.pci_config[0].function, "mch 00:00.0");

        // Cut inside the last record: same counts minus it, and an error.
        let stream =
            TraceStream::from_reader(&bytes[..bytes.len() - 3], true, EventCatalog::builtin())
                .unwrap();
        let partial = summarize_stream(stream, Path::new("t.bin"));
        assert_eq!(partial.events, 7);
        assert!(
            partial.error.as_deref().unwrap().contains("truncated"),
            "{partial:?}"
        );
    }

    #[test]
    fn memory_stays_bounded_with_many_names() {
        let mut builder = SummaryBuilder::new(TraceFormat::Log);
        let mut event = TraceEvent::default();
        for i in 0..(MAX_EVENT_NAMES + 50) {
            event.name = format!("event_{i}").into();
            builder.add(&event);
        }
        let summary = builder.finish(None);
        assert_eq!(summary.event_counts.len(), MAX_EVENT_NAMES + 1);
        assert!(
            summary
                .event_counts
                .contains(&(OVERFLOW_KEY.to_string(), 50))
        );
    }
}
