use super::*;

fn catalog() -> EventCatalog {
    let text = "pci_cfg_read(const char *dev, uint32_t bus, uint32_t slot, uint32_t func, unsigned offs, unsigned val) \"%s\"\ncpu_out(unsigned int addr, char size, unsigned int val) \"addr 0x%x\"\n";
    EventCatalog::parse(text.as_bytes(), std::path::Path::new("t")).unwrap()
}

fn sample() -> Vec<u8> {
    let mut w = SimpleTraceWriter::new(Vec::new()).unwrap();
    w.mapping(0, "pci_cfg_read").unwrap();
    w.mapping(1, "cpu_out").unwrap();
    w.mapping(2, "not_declared").unwrap();
    let dev = WriteArg::Str(b"mch");
    let u = WriteArg::U64;
    w.event(0, 1000, 7, &[dev, u(0), u(0), u(0), u(0), u(0x8086)])
        .unwrap();
    w.event(1, 3500, 7, &[u(0x402), u(b'b' as u64), u(65)])
        .unwrap();
    w.event(DROPPED_EVENT_ID, 4000, 7, &[u(12)]).unwrap();
    w.event(2, 5000, 7, &[u(1), u(2)]).unwrap();
    w.into_inner()
}

fn decode_all(bytes: &[u8]) -> (Vec<TraceEvent>, Option<TraceError>) {
    let mut reader = match SimpleTraceReader::new(bytes, catalog()) {
        Ok(r) => r,
        Err(e) => return (Vec::new(), Some(e)),
    };
    let mut events = Vec::new();
    let mut event = TraceEvent::default();
    loop {
        match reader.read_event(&mut event) {
            Ok(true) => events.push(event.clone()),
            Ok(false) => return (events, None),
            Err(e) => return (events, Some(e)),
        }
    }
}

#[test]
fn decodes_mappings_events_dropped_and_undeclared() {
    let (events, err) = decode_all(&sample());
    assert!(err.is_none(), "{err:?}");
    assert_eq!(events.len(), 4);
    assert_eq!(&*events[0].name, "pci_cfg_read");
    assert_eq!(events[0].arg_str("dev"), Some("mch"));
    assert_eq!(events[0].arg_u64("val"), Some(0x8086));
    assert_eq!(events[1].arg_u64("addr"), Some(0x402));
    assert_eq!(events[1].timestamp_ns, Some(3500));
    assert_eq!(&*events[2].name, DROPPED_EVENT_NAME);
    assert_eq!(events[2].arg_u64("num_events_dropped"), Some(12));
    assert_eq!(&*events[3].name, "not_declared");
    assert_eq!(events[3].raw.as_deref(), Some("0x1 0x2"));
    let mut fmt = PythonStyleFormatter::default();
    let mut line = String::new();
    fmt.format(&events[0], &mut line);
    line.push('\n');
    fmt.format(&events[1], &mut line);
    assert_eq!(
        line,
        "pci_cfg_read 0.000 pid=7 dev=mch bus=0x0 slot=0x0 func=0x0 offs=0x0 val=0x8086\n\
         cpu_out 2.500 pid=7 addr=0x402 size=0x62 val=0x41"
    );
}

#[test]
fn every_truncation_is_an_error_or_clean_prefix() {
    let full = sample();
    let (all, _) = decode_all(&full);
    for cut in 0..full.len() {
        let (events, err) = decode_all(&full[..cut]);
        assert!(events.len() <= all.len());
        assert_eq!(events[..], all[..events.len()], "cut at {cut}");
        if cut < 24 {
            assert!(
                matches!(err, Some(TraceError::NotSimpletrace { .. })),
                "{cut}"
            );
        } else if err.is_none() {
            // A clean end: the cut fell exactly on a record boundary.
            assert!(events.len() < all.len() || cut == full.len());
        } else {
            assert!(
                matches!(err, Some(TraceError::Truncated { .. })),
                "{cut}: {err:?}"
            );
        }
    }
}

#[test]
fn corrupt_length_and_type_are_reported_with_offsets() {
    let mut bytes = sample();
    // The first event record starts after the header and three mappings.
    let first_event = 24 + (8 + 12 + 12) + (8 + 12 + 7) + (8 + 12 + 12);
    bytes[first_event + 8 + 16..first_event + 8 + 20].copy_from_slice(&3u32.to_le_bytes());
    let (_, err) = decode_all(&bytes);
    let err = err.unwrap();
    assert!(
        err.to_string()
            .contains(&format!("byte {}", first_event + 8)),
        "{err}"
    );
    let mut bytes = sample();
    bytes[first_event] = 9;
    let (_, err) = decode_all(&bytes);
    assert!(err.unwrap().to_string().contains("unknown record type 9"));
}

#[test]
fn large_records_decode_and_truncated_large_records_fail() {
    let big = vec![b'x'; 200_000];
    let mut w = SimpleTraceWriter::new(Vec::new()).unwrap();
    w.mapping(0, "pci_cfg_read").unwrap();
    let u = WriteArg::U64;
    w.event(
        0,
        1,
        1,
        &[WriteArg::Str(&big), u(0), u(0), u(0), u(0), u(1)],
    )
    .unwrap();
    let bytes = w.into_inner();
    let (events, err) = decode_all(&bytes);
    assert!(err.is_none(), "{err:?}");
    assert_eq!(events[0].arg_str("dev").map(str::len), Some(200_000));
    let (events, err) = decode_all(&bytes[..bytes.len() - 1]);
    assert!(events.is_empty());
    assert!(matches!(err, Some(TraceError::Truncated { .. })), "{err:?}");
}

#[test]
fn rejects_other_files_and_versions() {
    let err = SimpleTraceReader::new(&b"hello world, this is not a trace"[..], catalog())
        .err()
        .unwrap();
    assert!(matches!(err, TraceError::NotSimpletrace { .. }));
    let mut bytes = sample();
    bytes[16] = 3;
    let err = SimpleTraceReader::new(&bytes[..], catalog()).err().unwrap();
    assert!(matches!(err, TraceError::UnsupportedVersion(3)));
}

#[test]
fn wrong_declaration_falls_back_to_raw() {
    let mut w = SimpleTraceWriter::new(Vec::new()).unwrap();
    w.mapping(5, "cpu_out").unwrap();
    // Declared with three u64 arguments; this record carries two.
    w.event(5, 1, 1, &[WriteArg::U64(1), WriteArg::U64(2)])
        .unwrap();
    w.event(
        5,
        2,
        1,
        &[WriteArg::U64(1), WriteArg::U64(2), WriteArg::U64(3)],
    )
    .unwrap();
    let (events, err) = decode_all(&w.into_inner());
    assert!(err.is_none());
    assert!(events[0].args.is_empty());
    assert_eq!(events[0].raw.as_deref(), Some("0x1 0x2"));
    assert_eq!(events[1].arg_u64("val"), Some(3));
}
