//! hiperiso-log: turn a hiperiso session into an answer.

mod cli;

use anyhow::{Context, Result, bail};
use clap::Parser;
use cli::{Cli, Command, TraceFormat};
use hiperiso_runtime::analyze;
use hiperiso_runtime::patterns::Source;
use hiperiso_runtime::serial::{self, SerialScan};
use hiperiso_runtime::session_list::{Logs, SessionList};
use hiperiso_runtime::simpletrace::PythonStyleFormatter;
use hiperiso_runtime::trace_events::{EventCatalog, TraceEvent, Value};
use hiperiso_runtime::trace_summary::{self, TraceItem, TraceStream, TraceSummary};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::ExitCode;

/// Exit status when a result is printed but its input was damaged.
const EXIT_PARTIAL: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(code) => code,
        // `hiperiso-log trace big.bin | head` is not an error.
        Err(err) if is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("hiperiso-log: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

fn run(cli: &Cli) -> Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    match &cli.command {
        Command::Analyze {
            session_dir,
            no_write,
        } => {
            let report = if *no_write {
                analyze::build_report(session_dir)?
            } else {
                analyze::analyze(session_dir)?
            };
            print_report(&mut out, &report, cli.json)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Trace {
            file,
            format,
            events,
        } => {
            let mut catalog = EventCatalog::builtin();
            for path in events {
                catalog.extend(EventCatalog::load(path)?);
            }
            let format = if cli.json && *format == TraceFormat::Text {
                TraceFormat::Json
            } else {
                *format
            };
            trace(&mut out, file, catalog, format, cli.json)
        }
        Command::Serial { file, stages } => serial(&mut out, file, *stages, cli.json),
        Command::Sessions { path } => {
            let list = Logs::open(path)?.list()?;
            print_sessions(&mut out, &list, cli.json)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Screens {
            session_dir,
            out: dir,
        } => {
            let dir = dir.as_deref().unwrap_or(session_dir);
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            let written = hiperiso_runtime::contact::write(session_dir, dir)?;
            if cli.json {
                let value = serde_json::json!({
                    "contact_sheet": written[0],
                    "animation": written[1],
                });
                writeln!(out, "{value}")?;
            } else {
                for path in written {
                    writeln!(out, "{}", path.display())?;
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Show { which, from } => {
            let report = Logs::open(from)?.show(which)?;
            print_report(&mut out, &report, cli.json)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn print_report(out: &mut impl Write, report: &analyze::Report, json: bool) -> Result<()> {
    if json {
        serde_json::to_writer_pretty(&mut *out, report)?;
        writeln!(out)?;
    } else {
        out.write_all(analyze::render_text(report).as_bytes())?;
    }
    Ok(())
}

fn trace(
    out: &mut impl Write,
    file: &Path,
    catalog: EventCatalog,
    format: TraceFormat,
    json: bool,
) -> Result<ExitCode> {
    let mut stream = TraceStream::open(file, catalog)?;
    if format == TraceFormat::Summary {
        let summary = trace_summary::summarize_stream(stream, file);
        if json {
            serde_json::to_writer_pretty(&mut *out, &summary)?;
            writeln!(out)?;
        } else {
            print_summary(out, &summary)?;
        }
        return Ok(match &summary.error {
            Some(error) => {
                eprintln!("hiperiso-log: partial summary: {error}");
                ExitCode::from(EXIT_PARTIAL)
            }
            None => ExitCode::SUCCESS,
        });
    }
    let mut out = std::io::BufWriter::with_capacity(1 << 16, out);
    let mut event = TraceEvent::default();
    let mut formatter = PythonStyleFormatter::default();
    let mut line = String::new();
    loop {
        match stream.next_item(&mut event, file) {
            Ok(Some(TraceItem::Event)) => {
                line.clear();
                if format == TraceFormat::Json {
                    line.push_str(&event_json(&event).to_string());
                } else {
                    formatter.format(&event, &mut line);
                }
                line.push('\n');
                out.write_all(line.as_bytes())?;
            }
            Ok(Some(TraceItem::OtherLine)) => {}
            Ok(None) => break,
            Err(err) => {
                out.flush()?;
                eprintln!(
                    "hiperiso-log: decoding stopped at {}: {}",
                    stream.position(),
                    hiperiso_stick::error_chain(&err)
                );
                return Ok(ExitCode::from(EXIT_PARTIAL));
            }
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

fn event_json(event: &TraceEvent) -> serde_json::Value {
    let args: serde_json::Map<String, serde_json::Value> = event
        .args
        .iter()
        .map(|arg| {
            let value = match &arg.value {
                Value::Uint(v) => (*v).into(),
                Value::Int(v) => (*v).into(),
                Value::Str(s) => s.clone().into(),
            };
            (arg.name.to_string(), value)
        })
        .collect();
    let mut object = serde_json::json!({
        "name": &*event.name,
        "timestamp_ns": event.timestamp_ns,
        "pid": event.pid,
        "args": args,
    });
    if let Some(raw) = &event.raw {
        object["raw"] = raw.clone().into();
    }
    object
}

fn print_summary(out: &mut impl Write, summary: &TraceSummary) -> Result<()> {
    let format = match summary.format {
        trace_summary::TraceFormat::Simpletrace => "simpletrace",
        trace_summary::TraceFormat::Log => "log backend",
    };
    write!(out, "{format} trace: {} events", summary.events)?;
    if let Some(duration) = summary.duration_s {
        write!(out, " over {duration:.3}s")?;
    }
    writeln!(out)?;
    if summary.other_lines > 0 {
        writeln!(out, "other lines: {}", summary.other_lines)?;
    }
    if summary.dropped_events > 0 {
        writeln!(out, "dropped by QEMU: {}", summary.dropped_events)?;
    }
    writeln!(out, "\nEvents:")?;
    for (name, count) in &summary.event_counts {
        writeln!(out, "  {count:>10}  {name}")?;
    }
    if !summary.devices.is_empty() {
        writeln!(out, "\nBytes read per device:")?;
        for (name, dev) in &summary.devices {
            write!(
                out,
                "  {name}: {} bytes in {} requests",
                dev.bytes, dev.requests
            )?;
            if let (Some(first), Some(last)) = (dev.first_read_s, dev.last_read_s) {
                write!(out, ", {first:.3}s..{last:.3}s")?;
            }
            writeln!(out)?;
        }
    }
    if !summary.port_io.is_empty() {
        writeln!(out, "\nPort I/O hot spots:")?;
        for port in &summary.port_io {
            writeln!(
                out,
                "  {}  in {:>8}  out {:>8}",
                port.port, port.reads, port.writes
            )?;
        }
    }
    if !summary.pci_config.is_empty() {
        writeln!(out, "\nPCI config hot spots:")?;
        for pci in &summary.pci_config {
            writeln!(
                out,
                "  {:<28} reads {:>6}  writes {:>6}",
                pci.function, pci.reads, pci.writes
            )?;
        }
    }
    if let Some(error) = &summary.error {
        writeln!(out, "\nPARTIAL: {error}")?;
    }
    Ok(())
}

fn serial(out: &mut impl Write, file: &Path, stages: bool, json: bool) -> Result<ExitCode> {
    let source = if file.file_name().is_some_and(|n| n == "qemu.stderr") {
        Source::Qemu
    } else {
        Source::Serial
    };
    let name = file.file_name().map_or_else(
        || file.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let open =
        || std::fs::File::open(file).with_context(|| format!("cannot open {}", file.display()));
    if stages && json {
        let mut scan = SerialScan::default();
        scan.scan(BufReader::new(open()?), source, &name)
            .with_context(|| format!("cannot read {}", file.display()))?;
        serde_json::to_writer_pretty(&mut *out, &scan)?;
        writeln!(out)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut out = std::io::BufWriter::new(out);
    let mut reader = BufReader::new(open()?);
    let mut raw = Vec::new();
    let mut number = 0u64;
    loop {
        raw.clear();
        if reader
            .read_until(b'\n', &mut raw)
            .with_context(|| format!("cannot read {} after line {number}", file.display()))?
            == 0
        {
            break;
        }
        number += 1;
        let text = serial::clean_line(&raw);
        let marks = if stages {
            serial::line_marks(source, &text)
        } else {
            Vec::new()
        };
        if json {
            let object = serde_json::json!({ "line": number, "text": text, "marks": marks });
            writeln!(out, "{object}")?;
        } else if stages {
            let marks: String = marks.iter().map(|m| format!("[{m}] ")).collect();
            writeln!(out, "{number:>6} | {marks}{text}")?;
        } else {
            writeln!(out, "{text}")?;
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

fn print_sessions(out: &mut impl Write, list: &SessionList, json: bool) -> Result<()> {
    if json {
        serde_json::to_writer_pretty(&mut *out, list)?;
        writeln!(out)?;
        return Ok(());
    }
    for warning in &list.warnings {
        eprintln!("hiperiso-log: warning: {warning}");
    }
    if list.sessions.is_empty() {
        bail!("no sessions found");
    }
    writeln!(out, "{:<44} {:<13} {:>9}  ISO", "ID", "RESULT", "DURATION")?;
    for s in &list.sessions {
        let duration = s.duration_s.map_or("-".to_string(), |d| format!("{d}s"));
        writeln!(
            out,
            "{:<44} {:<13} {:>9}  {}",
            s.id, s.result, duration, s.iso
        )?;
        if s.interrupted {
            writeln!(
                out,
                "    interrupted at {}: {}",
                s.last_stage.as_deref().unwrap_or("(no status.json)"),
                s.last_message.as_deref().unwrap_or("")
            )?;
        }
    }
    Ok(())
}
