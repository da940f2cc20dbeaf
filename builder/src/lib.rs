//! `hiperiso-build`: the declarative builder for hiperiso sticks.
//!
//! The CLI (`cli.rs`) only parses arguments; every verb's logic lives in a
//! library module so it can be tested without a process boundary.

pub mod cli;
pub mod commands;
pub mod debian;
pub mod model;
pub mod payload;
pub mod settings;
pub mod sources;
pub mod steps;
pub mod vm;

pub use commands::{Error, Result, not_implemented};
pub use settings::Context;
