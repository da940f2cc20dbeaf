//! hiperiso-log's command line (clap derive). It names nothing of the
//! crate: `build.rs` compiles it too to write the man pages at build time.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(
    name = "hiperiso-log",
    version,
    about = "Analyze hiperiso boot sessions: reports, traces, serial logs"
)]
pub struct Cli {
    /// Machine-readable JSON output (for scripts and agents).
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Analyze a session directory; writes report.json, report.txt and
    /// analysis.meta into it and prints the report.
    Analyze {
        session_dir: PathBuf,
        /// Print the report without writing any file.
        #[arg(long)]
        no_write: bool,
    },
    /// Decode a QEMU trace: simpletrace (trace.bin) or log-backend text.
    Trace {
        file: PathBuf,
        #[arg(long, value_enum, default_value_t = TraceFormat::Text)]
        format: TraceFormat,
        /// QEMU trace-events file(s) declaring event arguments
        /// (e.g. /usr/share/qemu/trace-events-all).
        #[arg(long)]
        events: Vec<PathBuf>,
    },
    /// Show a serial log, cleaned of terminal escapes.
    Serial {
        file: PathBuf,
        /// Mark the lines that show a boot stage or a failure.
        #[arg(long)]
        stages: bool,
    },
    /// List the sessions of a stick, logs directory, or image/device file.
    Sessions { path: PathBuf },
    /// A session's screenshots as a contact sheet (`contact-sheet.png`)
    /// and an animation (`screens.apng`), in time order.
    Screens {
        session_dir: PathBuf,
        /// Where to write them (default: the session directory).
        #[arg(short = 'o', long = "out")]
        out: Option<PathBuf>,
    },
    /// Analyze one session (without writing into it).
    Show {
        /// `latest`, a session id, or a unique prefix of one.
        which: String,
        /// Stick mount, logs directory, or image/device file.
        #[arg(long, default_value = ".")]
        from: PathBuf,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TraceFormat {
    Text,
    Json,
    Summary,
}
