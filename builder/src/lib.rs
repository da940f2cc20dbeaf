//! `hiperiso-build`: the declarative builder for hiperiso sticks.
//!
//! Layers, each importing only from the ones below it:
//!
//! ```text
//! main.rs, cli.rs   clap structs and dispatch (the only files that see the CLI crates)
//! commands/         one file per verb; CLI arguments -> Settings; loads the Project once
//! vm/               the outer VM of `hiperiso-build run`
//! payload/          initramfs, ESP (from built steps or Debian packages), image trees
//! steps/            step keys, cache, runner, verify, gc, sandbox, tools tree, runtime step
//! debian/           archive formats, repository, closure and lock engine
//! project.rs        manifest + active profile + mirrors + lock + recipes, loaded once
//! settings.rs       the global options as plain values
//! sources/          store, fetcher, mirrors, watches, source pins
//! model/            manifest, lock, recipes, build record
//! hash.rs           sha256 hex helpers
//! ```
//!
//! `debian/`'s format parsers (control, version, packages) sit below
//! `model/` (the lock records resolved packages); its repository and
//! closure engine sit above `project.rs`.

pub mod cli;
pub mod commands;
pub mod debian;
pub mod hash;
pub mod model;
pub mod payload;
pub mod project;
pub mod settings;
pub mod sources;
pub mod steps;
pub mod vm;

pub use commands::{Error, Result};
pub use project::Project;
pub use settings::Settings;
