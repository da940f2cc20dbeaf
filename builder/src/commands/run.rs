//! `hiperiso-build run`: boot an image in the outer VM (vm/).

use crate::commands::error::Result;
use crate::settings::Settings;
use crate::vm::{self, RunOptions};

/// `hiperiso-build run`.
pub fn run(settings: &Settings, options: &RunOptions) -> Result<()> {
    vm::run(settings, options)?;
    Ok(())
}
