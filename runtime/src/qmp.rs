//! A small synchronous QMP client over QEMU's unix socket: commands,
//! human-monitor commands (`info pci`, `info qtree`, ...), screendumps,
//! and the asynchronous events that arrive in between.

use serde_json::{Value, json};
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// QMP failures.
#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    #[error("cannot connect to QMP socket {path}")]
    Connect {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("QMP I/O failed")]
    Io(#[source] io::Error),
    #[error("QMP sent invalid JSON: {line}")]
    Json {
        line: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("QMP closed the connection")]
    Closed,
    #[error("QMP command {command} failed: {class}: {desc}")]
    Command {
        command: String,
        class: String,
        desc: String,
    },
}

/// A connected, negotiated QMP session.
pub struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    /// Events received while waiting for command replies, oldest first.
    pub events: Vec<Value>,
}

impl Qmp {
    /// Connect, read the greeting and leave capabilities negotiation mode.
    pub fn connect(path: &Path, timeout: Duration) -> Result<Qmp, QmpError> {
        let stream = UnixStream::connect(path).map_err(|source| QmpError::Connect {
            path: path.to_path_buf(),
            source,
        })?;
        stream
            .set_read_timeout(Some(timeout))
            .map_err(QmpError::Io)?;
        let writer = stream.try_clone().map_err(QmpError::Io)?;
        let mut qmp = Qmp {
            reader: BufReader::new(stream),
            writer,
            events: Vec::new(),
        };
        let greeting = qmp.read_message()?;
        if greeting.get("QMP").is_none() {
            return Err(QmpError::Json {
                line: greeting.to_string(),
                source: serde::de::Error::custom("no QMP greeting"),
            });
        }
        qmp.execute("qmp_capabilities", None)?;
        Ok(qmp)
    }

    fn read_message(&mut self) -> Result<Value, QmpError> {
        let mut line = String::new();
        let n = self.reader.read_line(&mut line).map_err(QmpError::Io)?;
        if n == 0 {
            return Err(QmpError::Closed);
        }
        serde_json::from_str(&line).map_err(|source| QmpError::Json {
            line: line.trim_end().to_string(),
            source,
        })
    }

    /// Run a command and return its `return` value; events are queued.
    pub fn execute(&mut self, command: &str, arguments: Option<Value>) -> Result<Value, QmpError> {
        let mut request = json!({ "execute": command });
        if let Some(args) = arguments {
            request["arguments"] = args;
        }
        let mut text = request.to_string();
        text.push('\n');
        self.writer
            .write_all(text.as_bytes())
            .map_err(QmpError::Io)?;
        loop {
            let message = self.read_message()?;
            if message.get("event").is_some() {
                self.events.push(message);
            } else if let Some(ret) = message.get("return") {
                return Ok(ret.clone());
            } else if let Some(error) = message.get("error") {
                let field = |k: &str| {
                    error
                        .get(k)
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string()
                };
                return Err(QmpError::Command {
                    command: command.to_string(),
                    class: field("class"),
                    desc: field("desc"),
                });
            }
        }
    }

    /// An HMP command through QMP (`info pci`, `info qtree`, ...).
    pub fn hmp(&mut self, command_line: &str) -> Result<String, QmpError> {
        let ret = self.execute(
            "human-monitor-command",
            Some(json!({ "command-line": command_line })),
        )?;
        Ok(ret.as_str().unwrap_or_default().to_string())
    }

    /// Save the guest display to `path` in QEMU's default format, PPM, which
    /// every QEMU build has (PNG needs QEMU built with libpng).
    pub fn screendump_ppm(&mut self, path: &Path) -> Result<(), QmpError> {
        self.execute(
            "screendump",
            Some(json!({ "filename": path.display().to_string() })),
        )
        .map(|_| ())
    }

    /// Save `size` bytes of guest-physical memory from `address` to `path`.
    pub fn pmemsave(&mut self, address: u64, size: usize, path: &Path) -> Result<(), QmpError> {
        self.execute(
            "pmemsave",
            Some(json!({ "val": address, "size": size, "filename": path.display().to_string() })),
        )
        .map(|_| ())
    }

    /// Read events that arrived without a command (non-blocking-ish: waits
    /// at most `wait`).
    pub fn poll_events(&mut self, wait: Duration) -> Result<(), QmpError> {
        let stream = self.reader.get_ref();
        stream
            .set_read_timeout(Some(wait.max(Duration::from_millis(1))))
            .map_err(QmpError::Io)?;
        let result = loop {
            match self.read_message() {
                Ok(message) => {
                    if message.get("event").is_some() {
                        self.events.push(message);
                    }
                    if self.reader.buffer().is_empty() {
                        break Ok(());
                    }
                }
                Err(QmpError::Io(e))
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    break Ok(());
                }
                Err(e) => break Err(e),
            }
        };
        self.reader
            .get_ref()
            .set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(QmpError::Io)?;
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;
    use std::thread;

    /// A scripted peer speaking the QMP wire format (the real QEMU is
    /// exercised by the integration test).
    #[test]
    fn protocol_roundtrip() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("qmp.sock");
        let listener = UnixListener::bind(&sock).unwrap();
        let peer = thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut w = stream;
            let mut expect = |needle: &str| {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                assert!(line.contains(needle), "{line}");
                line
            };
            writeln!(w, r#"{{"QMP": {{"version": {{}}, "capabilities": []}}}}"#).unwrap();
            expect("qmp_capabilities");
            writeln!(w, r#"{{"return": {{}}}}"#).unwrap();
            let line = expect("human-monitor-command");
            assert!(line.contains(r#""command-line":"info pci""#));
            writeln!(w, r#"{{"event": "RESET", "data": {{}}}}"#).unwrap();
            writeln!(w, r#"{{"return": "Bus  0, device 0\n"}}"#).unwrap();
            expect("query-bogus");
            writeln!(
                w,
                r#"{{"error": {{"class": "CommandNotFound", "desc": "nope"}}}}"#
            )
            .unwrap();
            writeln!(w, r#"{{"event": "SHUTDOWN", "data": {{"guest": true}}}}"#).unwrap();
        });
        let mut qmp = Qmp::connect(&sock, Duration::from_secs(5)).unwrap();
        assert_eq!(qmp.hmp("info pci").unwrap(), "Bus  0, device 0\n");
        let err = qmp.execute("query-bogus", None).unwrap_err();
        assert!(err.to_string().contains("CommandNotFound: nope"), "{err}");
        peer.join().unwrap();
        qmp.poll_events(Duration::from_millis(200)).unwrap();
        let names: Vec<&str> = qmp
            .events
            .iter()
            .filter_map(|e| e["event"].as_str())
            .collect();
        assert_eq!(names, ["RESET", "SHUTDOWN"]);
    }
}
