//! `hiperiso-build`: the declarative builder for hiperiso sticks.
//!
//! The CLI (`cli.rs`) only parses arguments; every verb's logic lives in a
//! library module so it can be tested without a process boundary.

pub mod build_cmd;
pub mod build_record;
pub mod bump;
pub mod cli;
pub mod context;
pub mod cpio;
pub mod debian;
pub mod disk_cmd;
pub mod elf;
pub mod error;
pub mod fetch;
pub mod initramfs;
pub mod kmod;
pub mod lock;
pub mod manifest;
pub mod mirrors;
pub mod payload;
pub mod profile_debian;
pub mod profile_source;
pub mod recipe;
pub mod run;
pub mod runtime_step;
pub mod sandbox;
pub mod sources;
pub mod steps;
pub mod store;
pub mod tools;
pub mod tree;
pub mod watch;

pub use context::Context;
pub use error::{Error, Result, not_implemented};
