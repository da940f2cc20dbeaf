//! Download progress: bars on a terminal, plain lines otherwise.

use std::io::{self, IsTerminal};
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

/// `1.5 MiB`-style sizes for humans.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// Progress output: indicatif bars on a terminal, plain lines otherwise.
pub(crate) struct Reporter {
    mode: Progress,
    multi: Option<MultiProgress>,
}

impl Reporter {
    pub(crate) fn new(mode: Progress) -> Self {
        let mode = match mode {
            Progress::Auto if io::stderr().is_terminal() => Progress::Bars,
            Progress::Auto => Progress::Lines,
            other => other,
        };
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

/// One long operation (packing the initramfs, writing an image, unpacking
/// packages): a spinner with its elapsed time on a terminal; otherwise a
/// line when it starts, one every 10 s while it runs and one when it ends,
/// so it is never silent for longer. Quiet prints nothing.
pub struct Activity {
    name: String,
    started: Instant,
    lines: bool,
    bar: Option<ProgressBar>,
    stop: Option<mpsc::Sender<()>>,
    ticker: Option<std::thread::JoinHandle<()>>,
}

impl Activity {
    pub fn start(mode: Progress, name: impl Into<String>) -> Self {
        let name = name.into();
        let started = Instant::now();
        let mode = match mode {
            Progress::Auto if io::stderr().is_terminal() => Progress::Bars,
            Progress::Auto => Progress::Lines,
            other => other,
        };
        let mut activity = Self {
            name: name.clone(),
            started,
            lines: mode == Progress::Lines,
            bar: None,
            stop: None,
            ticker: None,
        };
        match mode {
            Progress::Bars => {
                let bar = ProgressBar::new_spinner();
                bar.set_style(
                    ProgressStyle::with_template("{spinner} {msg} {elapsed}")
                        .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                );
                bar.set_message(name);
                bar.enable_steady_tick(Duration::from_millis(200));
                activity.bar = Some(bar);
            }
            Progress::Lines => {
                eprintln!("{name}...");
                let (stop, stopped) = mpsc::channel::<()>();
                activity.stop = Some(stop);
                activity.ticker = Some(std::thread::spawn(move || {
                    while let Err(mpsc::RecvTimeoutError::Timeout) =
                        stopped.recv_timeout(ACTIVITY_EVERY)
                    {
                        eprintln!("{name}: {}s", started.elapsed().as_secs());
                    }
                }));
            }
            _ => {}
        }
        activity
    }

    /// Ends it, with a line saying how long it took.
    pub fn finish(mut self) {
        self.stop_ticker();
        let took = format!(
            "{}: {:.1}s",
            self.name,
            self.started.elapsed().as_secs_f64()
        );
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
            eprintln!("{took}");
        } else if self.lines {
            eprintln!("{took}");
        }
    }

    fn stop_ticker(&mut self) {
        drop(self.stop.take());
        if let Some(ticker) = self.ticker.take() {
            let _ = ticker.join();
        }
    }
}

impl Drop for Activity {
    fn drop(&mut self) {
        self.stop_ticker();
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}
