//! What every verb needs from the command line, as plain values: the
//! global options, resolved once by `commands` (no clap here, so library
//! callers and tests build one directly).

use std::path::{Path, PathBuf};

use crate::sources::fetch::{FetchOptions, Progress};
use crate::sources::progress::Activity;

/// The global options.
#[derive(Debug, Clone)]
pub struct Settings {
    pub manifest_path: PathBuf,
    /// `--profile`; `None` means the manifest's `[image] profile`.
    pub profile: Option<String>,
    /// `--cache-dir` / `$HIPERISO_CACHE_DIR`.
    pub cache_dir: Option<PathBuf>,
    pub offline: bool,
    pub jobs: usize,
    /// -1 quiet, 0 normal, 1+ verbose.
    pub verbosity: i8,
    /// Root for the host's apt sources (normally `/`).
    pub apt_root: PathBuf,
    /// `--cache-from`, `--cache-to`, `--require-cache`.
    pub shared: SharedCache,
}

/// The command line's say on shared step caches (the manifest's `[cache]`
/// has the rest).
#[derive(Debug, Clone, Default)]
pub struct SharedCache {
    /// Registries to pull from instead of `[cache] registries`.
    pub from: Vec<String>,
    /// Registries to push built steps to.
    pub to: Vec<String>,
    /// A registry that cannot be used is an error, not a warning.
    pub require: bool,
}

impl Settings {
    pub fn new(manifest_path: impl Into<PathBuf>) -> Self {
        Self {
            manifest_path: manifest_path.into(),
            profile: None,
            cache_dir: None,
            offline: false,
            jobs: default_jobs(),
            verbosity: 0,
            apt_root: PathBuf::from("/"),
            shared: SharedCache::default(),
        }
    }

    /// Progress display: none with `-q`.
    pub fn progress(&self) -> Progress {
        if self.verbosity < 0 {
            Progress::Quiet
        } else {
            Progress::Auto
        }
    }

    /// A long operation's progress (sources/progress.rs).
    pub fn activity(&self, name: impl Into<String>) -> Activity {
        Activity::start(self.progress(), name)
    }

    pub fn fetch_options(&self) -> FetchOptions {
        FetchOptions {
            jobs: self.jobs,
            offline: self.offline,
            progress: self.progress(),
            verbose: self.verbosity > 0,
            ..FetchOptions::default()
        }
    }

    /// Print unless `-q`.
    pub fn say(&self, message: impl AsRef<str>) {
        if self.verbosity >= 0 {
            println!("{}", message.as_ref());
        }
    }

    /// The directory of the manifest: the workspace (recipes, overlays,
    /// the lock and, in a checkout, runtime/ live beside it).
    pub fn manifest_dir(&self) -> &Path {
        self.manifest_path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
    }

    /// The recipes directory next to the manifest.
    pub fn recipes_dir(&self) -> PathBuf {
        self.manifest_dir().join("recipes")
    }

    /// The lock file of the manifest: `hiperiso.lock` beside it.
    pub fn lock_path(&self) -> PathBuf {
        self.manifest_dir().join("hiperiso.lock")
    }
}

/// `--jobs` when not given: the host's parallelism.
pub fn default_jobs() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}
