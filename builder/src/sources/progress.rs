//! Progress of downloads, long operations and byte counts: bars on a
//! terminal, plain lines otherwise.

use std::fs::File;
use std::io::{self, IsTerminal, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Progress {
    /// Bars on a terminal, plain lines otherwise.
    #[default]
    Auto,
    Bars,
    Lines,
    Quiet,
}

pub use hiperiso_stick::io::human_bytes;

/// Progress output: indicatif bars on a terminal, plain lines otherwise.
pub(crate) struct Reporter {
    mode: Progress,
    multi: Option<MultiProgress>,
}

impl Reporter {
    pub(crate) fn new(mode: Progress) -> Self {
        let mode = resolve(mode);
        let multi = (mode == Progress::Bars)
            .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
        Self { mode, multi }
    }

    pub(crate) fn line(&self, message: &str) {
        match (&self.mode, &self.multi) {
            (Progress::Quiet, _) => {}
            (_, Some(multi)) => {
                let _ = multi.println(message);
            }
            _ => eprintln!("{message}"),
        }
    }

    pub(crate) fn start(&self, name: &str, total: Option<u64>, position: u64) -> Task {
        if let Some(multi) = &self.multi {
            let bar = match total {
                Some(total) => ProgressBar::new(total),
                None => ProgressBar::new_spinner(),
            };
            let bar = multi.add(bar);
            bar.set_style(
                ProgressStyle::with_template(
                    "{prefix:>10} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            bar.set_prefix(name.to_string());
            bar.set_position(position);
            Task { bar: Some(bar) }
        } else {
            if self.mode == Progress::Lines {
                let what = match (position, total) {
                    (0, Some(t)) => human_bytes(t),
                    (0, None) => "unknown size".into(),
                    (p, t) => format!(
                        "resuming at {} of {}",
                        human_bytes(p),
                        t.map_or("?".into(), human_bytes)
                    ),
                };
                eprintln!("{name}: downloading ({what})");
            }
            Task { bar: None }
        }
    }
}

pub(crate) struct Task {
    bar: Option<ProgressBar>,
}

impl Task {
    pub(crate) fn inc(&self, n: u64) {
        if let Some(bar) = &self.bar {
            bar.inc(n);
        }
    }
    pub(crate) fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
    pub(crate) fn abandon(&self) {
        if let Some(bar) = &self.bar {
            bar.abandon();
        }
    }
}

/// How often a running [`Activity`] prints a plain line.
const ACTIVITY_EVERY: Duration = Duration::from_secs(10);
/// How often a running [`Counter`] prints a plain line.
const COUNTER_EVERY: Duration = Duration::from_secs(5);

/// `mode` with `Auto` decided: bars on a terminal, lines otherwise.
fn resolve(mode: Progress) -> Progress {
    match mode {
        Progress::Auto if io::stderr().is_terminal() => Progress::Bars,
        Progress::Auto => Progress::Lines,
        other => other,
    }
}

/// The interval between plain lines: `every`, or the milliseconds in
/// `HIPERISO_PROGRESS_EVERY_MS` (for tests, which cannot wait 5 s).
fn line_interval(every: Duration) -> Duration {
    std::env::var("HIPERISO_PROGRESS_EVERY_MS")
        .ok()
        .and_then(|ms| ms.parse().ok())
        .map_or(every, Duration::from_millis)
}

/// A thread calling `tick()` every `every` until dropped.
struct Ticker {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Ticker {
    fn start(every: Duration, tick: impl Fn() + Send + 'static) -> Self {
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(every) {
                tick();
            }
        });
        Self {
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One long operation (packing the initramfs, writing an image, unpacking
/// packages): a spinner with its elapsed time on a terminal; otherwise a
/// line when it starts, one every 10 s while it runs and one when it ends,
/// so it is never silent for longer. One that writes a log (a cargo build)
/// also shows the log's last line. Quiet prints nothing.
pub struct Activity {
    name: String,
    started: Instant,
    shown: Shown,
}

impl Activity {
    pub fn start(mode: Progress, name: impl Into<String>) -> Self {
        Self::watching(mode, name, None)
    }

    /// The same, with the last line of `log` as it grows.
    pub fn with_log(mode: Progress, name: impl Into<String>, log: &Path) -> Self {
        Self::watching(mode, name, Some(log.to_path_buf()))
    }

    fn watching(mode: Progress, name: impl Into<String>, log: Option<PathBuf>) -> Self {
        let name = name.into();
        let watched = log.is_some();
        let last = move || match &log {
            Some(log) => format!(": {}", last_line(log)),
            None => String::new(),
        };
        let started = Instant::now();
        let mode = resolve(mode);
        let mut activity = Self {
            name: name.clone(),
            started,
            shown: Shown::new(mode),
        };
        match mode {
            Progress::Bars => {
                let bar = ProgressBar::new_spinner();
                bar.set_style(
                    ProgressStyle::with_template("{spinner} {msg} {elapsed}")
                        .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                );
                bar.set_message(name.clone());
                bar.enable_steady_tick(Duration::from_millis(200));
                if watched {
                    let shown = bar.clone();
                    activity.shown.ticker =
                        Some(Ticker::start(Duration::from_secs(1), move || {
                            shown.set_message(format!("{name}{}", last()))
                        }));
                }
                activity.shown.bar = Some(bar);
            }
            Progress::Lines => {
                eprintln!("{name}...");
                activity.shown.ticker =
                    Some(Ticker::start(line_interval(ACTIVITY_EVERY), move || {
                        eprintln!("{name}: {}s{}", started.elapsed().as_secs(), last())
                    }));
            }
            _ => {}
        }
        activity
    }

    /// Ends it, with a line saying how long it took.
    pub fn finish(mut self) {
        let took = self.started.elapsed().as_secs_f64();
        self.shown.end(&format!("{}: {took:.1}s", self.name));
    }
}

/// An operation of a known number of bytes (writing a device, reading it
/// back): a bar with bytes, rate and eta on a terminal; otherwise a line
/// `NAME: X of Y` every 5 s while it runs and one when it ends. Quiet
/// prints nothing.
pub struct Counter {
    name: String,
    started: Instant,
    done: Arc<AtomicU64>,
    shown: Shown,
}

impl Counter {
    pub fn start(mode: Progress, name: impl Into<String>, total: u64) -> Self {
        let name = name.into();
        let mode = resolve(mode);
        let done = Arc::new(AtomicU64::new(0));
        let mut counter = Self {
            name: name.clone(),
            started: Instant::now(),
            done: done.clone(),
            shown: Shown::new(mode),
        };
        match mode {
            Progress::Bars => {
                let bar = ProgressBar::new(total);
                bar.set_style(
                    ProgressStyle::with_template(
                        "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
                );
                bar.set_message(name);
                counter.shown.bar = Some(bar);
            }
            Progress::Lines => {
                let total = human_bytes(total);
                counter.shown.ticker =
                    Some(Ticker::start(line_interval(COUNTER_EVERY), move || {
                        let done = human_bytes(done.load(Ordering::Relaxed));
                        eprintln!("{name}: {done} of {total}")
                    }));
            }
            _ => {}
        }
        counter
    }

    pub fn inc(&self, n: u64) {
        self.done.fetch_add(n, Ordering::Relaxed);
        if let Some(bar) = &self.shown.bar {
            bar.inc(n);
        }
    }

    /// Ends it, with a line saying how much it moved and how long it took.
    pub fn finish(mut self) {
        let line = format!(
            "{}: {} in {:.1}s",
            self.name,
            human_bytes(self.done.load(Ordering::Relaxed)),
            self.started.elapsed().as_secs_f64()
        );
        self.shown.end(&line);
    }
}

/// How an [`Activity`] or a [`Counter`] is shown: its bar on a terminal,
/// its ticker's lines otherwise, nothing when quiet. Dropping it stops both.
struct Shown {
    quiet: bool,
    bar: Option<ProgressBar>,
    ticker: Option<Ticker>,
}

impl Shown {
    /// `mode` is resolved (not `Auto`).
    fn new(mode: Progress) -> Self {
        Self {
            quiet: mode == Progress::Quiet,
            bar: None,
            ticker: None,
        }
    }

    /// Stops the bar and the ticker, then prints `line` unless quiet.
    fn end(&mut self, line: &str) {
        self.stop();
        if !self.quiet {
            eprintln!("{line}");
        }
    }

    fn stop(&mut self) {
        drop(self.ticker.take());
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

impl Drop for Shown {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The last non-empty line of a log (empty when there is none).
pub fn last_line(path: &Path) -> String {
    log_tail(path, 1)
        .trim_start_matches("  | ")
        .trim()
        .to_string()
}

/// The last `lines` lines of a log, indented.
pub fn log_tail(path: &Path, lines: usize) -> String {
    let mut text = Vec::new();
    if let Ok(mut file) = File::open(path) {
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        let _ = file.seek(SeekFrom::Start(len.saturating_sub(64 * 1024)));
        let _ = file.read_to_end(&mut text);
    }
    let text = String::from_utf8_lossy(&text);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..]
        .iter()
        .map(|l| format!("  | {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}
