//! Download progress: bars on a terminal, plain lines otherwise.

use std::io::{self, IsTerminal};

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
