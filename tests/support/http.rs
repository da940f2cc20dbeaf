//! A tiny threaded HTTP/1.1 server on 127.0.0.1 for tests: real sockets,
//! scripted misbehaviour (cut transfers, 5xx, 404), `Range` support and a
//! request log to assert on.
//!
//! ```no_run
//! let server = hiperiso_tests::http::TestServer::start();
//! server.serve("/a.tar.gz", b"bytes".to_vec());
//! server.fail_next("/a.tar.gz", 500, 1);
//! let url = server.url("/a.tar.gz");
//! ```

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One request the server saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logged {
    pub path: String,
    /// The `Range` header, if any.
    pub range: Option<String>,
    /// The status the server answered.
    pub status: u16,
}

#[derive(Debug, Default)]
struct Route {
    body: Vec<u8>,
    content_type: String,
    /// Answer this status this many more times before serving the body.
    fail: Option<(u16, usize)>,
    /// Cut the connection after this many body bytes, this many more times.
    cut: Option<(usize, usize)>,
    /// Before cutting, stall this long (a hung server).
    stall: Duration,
}

#[derive(Default)]
struct State {
    routes: HashMap<String, Route>,
    log: Vec<Logged>,
    /// Per-connection bandwidth limit in bytes per second (0: none).
    throttle: u64,
}

/// The server; it runs until the test process exits.
#[derive(Clone)]
pub struct TestServer {
    port: u16,
    state: Arc<Mutex<State>>,
}

impl TestServer {
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("local addr").port();
        let state = Arc::new(Mutex::new(State::default()));
        let shared = state.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let state = shared.clone();
                std::thread::spawn(move || handle(stream, &state));
            }
        });
        Self { port, state }
    }

    /// `http://127.0.0.1:PORT` + path.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn base(&self) -> String {
        self.url("")
    }

    /// Serves `body` at `path` (200, or 206 for a `Range` request).
    pub fn serve(&self, path: &str, body: Vec<u8>) {
        self.serve_typed(path, body, "application/octet-stream");
    }

    pub fn serve_typed(&self, path: &str, body: Vec<u8>, content_type: &str) {
        let mut state = self.state.lock().unwrap();
        let route = state.routes.entry(path.to_string()).or_default();
        route.body = body;
        route.content_type = content_type.to_string();
    }

    /// Answers `status` to the next `times` requests for `path`.
    pub fn fail_next(&self, path: &str, status: u16, times: usize) {
        self.state
            .lock()
            .unwrap()
            .routes
            .entry(path.to_string())
            .or_default()
            .fail = Some((status, times));
    }

    /// Cuts the next `times` transfers of `path` after `bytes` body bytes
    /// (the headers promise the full length).
    pub fn cut_next(&self, path: &str, bytes: usize, times: usize) {
        self.state
            .lock()
            .unwrap()
            .routes
            .entry(path.to_string())
            .or_default()
            .cut = Some((bytes, times));
    }

    /// Like [`TestServer::cut_next`], but the server first sends nothing
    /// for `stall` (the client should time out and resume).
    pub fn stall_next(&self, path: &str, bytes: usize, times: usize, stall: Duration) {
        let mut state = self.state.lock().unwrap();
        let route = state.routes.entry(path.to_string()).or_default();
        route.cut = Some((bytes, times));
        route.stall = stall;
    }

    /// Limits every connection to `bytes_per_sec` (0 removes the limit),
    /// like a mirror that caps per-connection speed.
    pub fn throttle(&self, bytes_per_sec: u64) {
        self.state.lock().unwrap().throttle = bytes_per_sec;
    }

    /// Every request so far, in order.
    pub fn log(&self) -> Vec<Logged> {
        self.state.lock().unwrap().log.clone()
    }

    /// Requests so far for one path.
    pub fn requests_for(&self, path: &str) -> Vec<Logged> {
        self.log().into_iter().filter(|l| l.path == path).collect()
    }
}

fn handle(stream: TcpStream, state: &Mutex<State>) {
    let mut reader = BufReader::new(stream.try_clone().expect("clone stream"));
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    let path = request_line
        .split_whitespace()
        .nth(1)
        .unwrap_or("/")
        .to_string();
    let mut range = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" || line == "\n" {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("range")
        {
            range = Some(value.trim().to_string());
        }
    }
    // Decide the answer under the lock, write it without.
    let (status, headers, body, cut, throttle) = {
        let mut state = state.lock().unwrap();
        let throttle = state.throttle;
        let answer = match state.routes.get_mut(&path) {
            None => (404, String::new(), b"not found".to_vec(), None),
            Some(route) => {
                if let Some((status, times)) = route.fail.filter(|(_, t)| *t > 0) {
                    route.fail = Some((status, times - 1));
                    (status, String::new(), b"scripted failure".to_vec(), None)
                } else {
                    let total = route.body.len();
                    let start = range
                        .as_deref()
                        .and_then(|r| r.strip_prefix("bytes="))
                        .and_then(|r| r.split('-').next())
                        .and_then(|s| s.parse::<usize>().ok());
                    let cut = match route.cut {
                        Some((bytes, times)) if times > 0 => {
                            route.cut = Some((bytes, times - 1));
                            Some((bytes, route.stall))
                        }
                        _ => None,
                    };
                    let content_type = format!(
                        "Content-Type: {}\r\nAccept-Ranges: bytes\r\n",
                        route.content_type
                    );
                    match start {
                        Some(start) if start >= total => (
                            416,
                            format!("Content-Range: bytes */{total}\r\n"),
                            Vec::new(),
                            None,
                        ),
                        Some(start) => (
                            206,
                            format!(
                                "{content_type}Content-Range: bytes {start}-{}/{total}\r\n",
                                total - 1
                            ),
                            route.body[start..].to_vec(),
                            cut,
                        ),
                        None => (200, content_type, route.body.clone(), cut),
                    }
                }
            }
        };
        state.log.push(Logged {
            path: path.clone(),
            range: range.clone(),
            status: answer.0,
        });
        (answer.0, answer.1, answer.2, answer.3, throttle)
    };
    let reason = match status {
        200 => "OK",
        206 => "Partial Content",
        404 => "Not Found",
        416 => "Range Not Satisfiable",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Whatever",
    };
    let mut stream = stream;
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Length: {}\r\n{headers}Connection: close\r\n\r\n",
        body.len()
    );
    if stream.write_all(head.as_bytes()).is_err() {
        return;
    }
    let body = match cut {
        Some((bytes, _)) => &body[..bytes.min(body.len())],
        None => &body[..],
    };
    if throttle == 0 {
        let _ = stream.write_all(body);
    } else {
        let chunk = (throttle / 20).max(1) as usize;
        let started = std::time::Instant::now();
        let mut sent = 0usize;
        for piece in body.chunks(chunk) {
            if stream.write_all(piece).is_err() {
                return;
            }
            sent += piece.len();
            let due = std::time::Duration::from_secs_f64(sent as f64 / throttle as f64);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                std::thread::sleep(wait);
            }
        }
    }
    let _ = stream.flush();
    if let Some((_, stall)) = cut {
        std::thread::sleep(stall);
    }
    let _ = stream.shutdown(Shutdown::Both);
}
