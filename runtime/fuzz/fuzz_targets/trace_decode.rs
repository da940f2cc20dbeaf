//! Any bytes through both trace decoders, the summary and the serial
//! scanner: an error is fine, a panic or a hang is not.
#![no_main]

use hiperiso_runtime::patterns::Source;
use hiperiso_runtime::serial::SerialScan;
use hiperiso_runtime::trace_events::{EventCatalog, TraceEvent};
use hiperiso_runtime::trace_summary::{TraceItem, TraceStream, summarize_stream};
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let path = Path::new("fuzz");
    // simpletrace, forced (the fuzzer rarely guesses the 24-byte header, so
    // also try the input behind a valid header).
    let mut with_header = Vec::with_capacity(data.len() + 24);
    with_header.extend_from_slice(&u64::MAX.to_le_bytes());
    with_header.extend_from_slice(&0xf2b1_77cb_0aa4_29b4u64.to_le_bytes());
    with_header.extend_from_slice(&4u64.to_le_bytes());
    with_header.extend_from_slice(data);
    for bytes in [data, &with_header[..]] {
        if let Ok(mut stream) = TraceStream::from_reader(bytes, true, EventCatalog::builtin()) {
            let mut event = TraceEvent::default();
            while let Ok(Some(TraceItem::Event)) = stream.next_item(&mut event, path) {}
        }
        if let Ok(stream) = TraceStream::from_reader(bytes, true, EventCatalog::builtin()) {
            summarize_stream(stream, path);
        }
    }
    // Log backend text.
    let stream = TraceStream::from_reader(data, false, EventCatalog::builtin()).unwrap();
    summarize_stream(stream, path);
    // Serial scanning.
    let mut scan = SerialScan::default();
    let _ = scan.scan(data, Source::Guest, "fuzz");
});
