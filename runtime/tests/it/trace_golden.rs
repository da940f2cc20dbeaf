//! Golden tests on traces real QEMU 7.2 wrote (tests/fixtures/make-fixtures.sh):
//! - `trace-simple.bin`: the simple backend of a QEMU built from the Debian
//!   orig tarball; `trace-simple.py.txt` is what QEMU's own
//!   `scripts/simpletrace.py` printed for it;
//! - `trace-log-*.log`: Debian's qemu-system-x86 (log backend), with and
//!   without `-msg timestamp=on`.

use hiperiso_runtime::simpletrace::PythonStyleFormatter;
use hiperiso_runtime::trace_events::{EventCatalog, TraceEvent};
use hiperiso_runtime::trace_summary::{self, TraceFormat, TraceItem, TraceStream};
use std::path::{Path, PathBuf};
use std::process::Command;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn catalog() -> EventCatalog {
    let mut catalog = EventCatalog::builtin();
    catalog.extend(EventCatalog::load(&fixture("trace-simple.events")).unwrap());
    catalog
}

/// simpletrace.py prints string arguments as Python bytes (`dev=b'mch'`);
/// ours prints `dev=mch`. Everything else must match byte for byte.
fn python_golden() -> Vec<String> {
    std::fs::read_to_string(fixture("trace-simple.py.txt"))
        .unwrap()
        .lines()
        .map(|line| {
            line.split(' ')
                .map(|token| match token.split_once("=b'") {
                    Some((name, value)) if value.ends_with('\'') => {
                        format!("{name}={}", &value[..value.len() - 1])
                    }
                    _ => token.to_string(),
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

#[test]
fn simpletrace_decodes_like_qemus_simpletrace_py() {
    let path = fixture("trace-simple.bin");
    let mut stream = TraceStream::open(&path, catalog()).unwrap();
    assert_eq!(stream.format(), TraceFormat::Simpletrace);
    let mut event = TraceEvent::default();
    let mut formatter = PythonStyleFormatter::default();
    let mut ours = Vec::new();
    while let Some(item) = stream.next_item(&mut event, &path).unwrap() {
        assert_eq!(item, TraceItem::Event);
        assert!(event.raw.is_none(), "undecoded: {event:?}");
        let mut line = String::new();
        formatter.format(&event, &mut line);
        ours.push(line);
    }
    let golden = python_golden();
    assert_eq!(ours.len(), golden.len());
    assert!(golden.len() > 100);
    for (i, (a, b)) in ours.iter().zip(&golden).enumerate() {
        assert_eq!(a, b, "line {}", i + 1);
    }
}

#[test]
fn simpletrace_summary_counts_cd_reads() {
    let summary =
        trace_summary::summarize_file(&fixture("trace-simple.bin"), EventCatalog::builtin())
            .unwrap();
    assert_eq!(summary.error, None);
    assert_eq!(summary.events, python_golden().len() as u64);
    let cd = &summary.devices["cdrom"];
    // SeaBIOS read the boot record volume descriptor (LBA 17) twice.
    assert_eq!((cd.requests, cd.bytes), (2, 4096));
    let golden_reads = python_golden()
        .iter()
        .filter(|l| l.starts_with("ide_atapi_cmd_read ") && l.ends_with("lba=0x11 nb_sectors=0x1"))
        .count();
    assert_eq!(golden_reads, 2);
    let top = &summary.pci_config[0];
    let golden_top = python_golden()
        .iter()
        .filter(|l| {
            l.starts_with("pci_cfg_")
                && l.contains(&format!("dev={} ", top.function.split(' ').next().unwrap()))
        })
        .count() as u64;
    assert_eq!(top.reads + top.writes, golden_top);
}

#[test]
fn log_backend_traces_with_and_without_timestamps() {
    let plain =
        trace_summary::summarize_file(&fixture("trace-log-plain.log"), EventCatalog::builtin())
            .unwrap();
    let stamped =
        trace_summary::summarize_file(&fixture("trace-log-timestamp.log"), EventCatalog::builtin())
            .unwrap();
    for summary in [&plain, &stamped] {
        assert_eq!(summary.format, TraceFormat::Log);
        assert_eq!(summary.error, None);
        // Every line of these files is a trace event.
        assert_eq!((summary.events, summary.other_lines), (441, 0));
        assert_eq!(summary.devices["cdrom"].bytes, 4096);
        assert_eq!(summary.pci_config[0].function, "mch 00:00.0");
        assert_eq!(
            (summary.pci_config[0].reads, summary.pci_config[0].writes),
            (59, 26)
        );
    }
    assert_eq!(plain.event_counts, stamped.event_counts);
    assert_eq!(plain.duration_s, None);
    let duration = stamped.duration_s.unwrap();
    assert!((5.0..6.0).contains(&duration), "{duration}");
    assert!(stamped.devices["cdrom"].first_read_s.unwrap() > 1.0);

    // Arguments come back typed from the printed text.
    let path = fixture("trace-log-timestamp.log");
    let mut stream = TraceStream::open(&path, EventCatalog::builtin()).unwrap();
    let mut event = TraceEvent::default();
    let mut reads = Vec::new();
    while let Some(TraceItem::Event) = stream.next_item(&mut event, &path).unwrap() {
        assert!(event.raw.is_none(), "undecoded: {event:?}");
        assert!(event.pid.is_some() && event.timestamp_ns.is_some());
        if &*event.name == "ide_atapi_cmd_read" {
            reads.push((
                event.arg_str("method").unwrap().to_string(),
                event.arg_u64("lba"),
                event.arg_u64("nb_sectors"),
            ));
        }
    }
    assert_eq!(
        reads,
        [
            ("dma".to_string(), Some(17), Some(1)),
            ("dma".to_string(), Some(17), Some(1))
        ]
    );
}

fn hiperiso_log(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_hiperiso-log"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn cli_trace_text_json_summary_and_truncation() {
    let bin = fixture("trace-simple.bin");
    let events = fixture("trace-simple.events");
    let (bin, events) = (bin.to_str().unwrap(), events.to_str().unwrap());
    let out = hiperiso_log(&["trace", bin, "--events", events]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.lines().collect::<Vec<_>>(), python_golden());

    let out = hiperiso_log(&["trace", bin, "--format", "json"]);
    assert!(out.status.success());
    let first: serde_json::Value = serde_json::from_str(
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(first["name"], "blk_co_preadv");
    assert_eq!(first["args"]["bytes"], 512);

    let out = hiperiso_log(&["--json", "trace", bin, "--format", "summary"]);
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["devices"]["cdrom"]["bytes"], 4096);

    // Cut mid-record: what was decoded is printed, the error names the
    // byte offset, the exit status is 2.
    let dir = tempfile::tempdir().unwrap();
    let cut = dir.path().join("cut.bin");
    let bytes = std::fs::read(fixture("trace-simple.bin")).unwrap();
    std::fs::write(&cut, &bytes[..bytes.len() - 10]).unwrap();
    let out = hiperiso_log(&["trace", cut.to_str().unwrap(), "--events", events]);
    assert_eq!(out.status.code(), Some(2));
    let printed = String::from_utf8(out.stdout).unwrap().lines().count();
    assert_eq!(printed, python_golden().len() - 1);
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("truncated at byte"), "{stderr}");
    assert!(stderr.contains("cut.bin"), "{stderr}");

    let out = hiperiso_log(&["trace", "/nonexistent/trace.bin"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8(out.stderr)
            .unwrap()
            .contains("cannot open trace /nonexistent/trace.bin")
    );
}
