//! `hiperiso-build`: the declarative builder for hiperiso sticks.
//!
//! Layers, top to bottom; each imports only from the ones below it (no
//! cycles between files or folders):
//!
//! ```text
//! main.rs, cli.rs   clap structs and dispatch (the only files that see the CLI crates)
//! commands/         one file per verb; CLI arguments -> Settings (settings.rs);
//!                   loads the Project once; error.rs gathers every error
//! doctor/           host checks of `hiperiso-build doctor` (KVM via vm/, sandbox,
//!                   disk, loop devices, mirror, pinned rustc)
//! vm/               the outer VM of `hiperiso-build run` (QEMU, the stick image)
//! payload/          initramfs (cpio, ELF, kmod), the ESP from built steps or from
//!                   Debian packages, the image's staged trees
//! steps/            step keys, cache, runner, verify, gc, sandbox, tools tree,
//!                   runtime step, a profile's built steps
//! debian/           archive formats, repository, closure and lock engine
//! project.rs        settings + manifest + active profile + mirrors + lock + recipes,
//!                   loaded once and passed down by reference
//! settings.rs       the global options as plain values
//! sources/          store, fetcher (http, progress), mirrors, watches, source pins
//! model/            manifest (schema, sources, located errors), lock, recipes,
//!                   build record
//! hash.rs           sha256 hex helpers
//! ```

pub mod cli;
pub mod commands;
pub mod debian;
pub mod doctor;
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
