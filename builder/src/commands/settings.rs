//! The CLI-to-settings step: the global options, parsed by clap, as plain
//! [`Settings`].

use std::path::PathBuf;

use crate::cli::GlobalArgs;
use crate::settings::{Settings, default_jobs};

/// The settings the global options ask for.
pub fn settings(args: &GlobalArgs) -> Settings {
    Settings {
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
        shared: Default::default(),
    }
}

impl From<&crate::cli::SharedCacheArgs> for crate::settings::SharedCache {
    fn from(args: &crate::cli::SharedCacheArgs) -> Self {
        Self {
            from: args.cache_from.clone(),
            to: args.cache_to.clone(),
            require: args.require_cache,
        }
    }
}
