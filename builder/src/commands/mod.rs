//! The verbs, one file each: the top layer. A command turns the CLI's
//! arguments into [`Settings`], loads the [`Project`](crate::project::Project)
//! once and passes it down; [`Error`] gathers the lower layers' errors.

pub mod artifact;
pub mod build;
pub mod bump;
pub mod completions;
pub mod config;
pub mod doctor;
pub mod error;
pub mod fetch;
pub mod image;
pub mod inspect;
pub mod install;
pub mod keys;
pub mod lock;
pub mod run;
pub mod settings;

pub use error::{Error, Result, not_implemented};
pub use settings::settings;
