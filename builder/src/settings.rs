//! What every verb needs: the global options, resolved once.

use std::path::{Path, PathBuf};

use crate::cli::GlobalArgs;
use crate::model::manifest::{Manifest, ManifestError, Profile};
use crate::sources::fetch::{FetchOptions, Fetcher, Progress};
use crate::sources::mirrors::{self, DebianMirrors};
use crate::sources::store::{Store, StoreError};

/// Global options, independent of clap so library callers and tests can
/// build one directly.
#[derive(Debug, Clone)]
pub struct Context {
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
}

impl Context {
    pub fn new(manifest_path: impl Into<PathBuf>) -> Self {
        Self {
            manifest_path: manifest_path.into(),
            profile: None,
            cache_dir: None,
            offline: false,
            jobs: default_jobs(),
            verbosity: 0,
            apt_root: PathBuf::from("/"),
        }
    }

    pub fn from_args(args: &GlobalArgs) -> Self {
        Self {
            manifest_path: args.manifest.clone(),
            profile: args.profile.clone(),
            cache_dir: args.cache_dir.clone(),
            offline: args.offline,
            jobs: args.jobs.unwrap_or_else(default_jobs).max(1),
            verbosity: if args.quiet {
                -1
            } else {
                args.verbose.min(100) as i8
            },
            apt_root: PathBuf::from("/"),
        }
    }

    pub fn load_manifest(&self) -> Result<Manifest, ManifestError> {
        Manifest::load(&self.manifest_path)
    }

    /// The active profile: `--profile`, else the manifest's default.
    pub fn profile<'m>(
        &self,
        manifest: &'m Manifest,
    ) -> Result<(&'m str, &'m Profile), ManifestError> {
        manifest.profile(self.profile.as_deref())
    }

    pub fn store(&self) -> Result<Store, StoreError> {
        Store::open_default(self.cache_dir.as_deref())
    }

    pub fn fetch_options(&self) -> FetchOptions {
        FetchOptions {
            jobs: self.jobs,
            offline: self.offline,
            progress: if self.verbosity < 0 {
                Progress::Quiet
            } else {
                Progress::Auto
            },
            verbose: self.verbosity > 0,
            ..FetchOptions::default()
        }
    }

    pub fn fetcher(&self) -> Result<Fetcher, StoreError> {
        Ok(Fetcher::new(self.store()?, self.fetch_options()))
    }

    pub fn debian_mirrors(&self, manifest: &Manifest) -> DebianMirrors {
        mirrors::resolve_debian(
            &manifest.mirrors.debian,
            &manifest.debian.suite,
            &self.apt_root,
        )
    }

    /// Print unless `-q`.
    pub fn say(&self, message: impl AsRef<str>) {
        if self.verbosity >= 0 {
            println!("{}", message.as_ref());
        }
    }

    pub fn manifest_dir(&self) -> &Path {
        self.manifest_path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
    }
}

fn default_jobs() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}
