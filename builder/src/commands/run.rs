//! `hiperiso-build run`: boot an image in the outer VM (vm/).

use crate::commands::error::Result;
use crate::project::Project;
use crate::settings::Settings;
use crate::vm::{self, RunOptions};

/// `hiperiso-build run`. The manifest is optional: with it, `run` can build
/// the `outer-qemu` step when TCG needs it.
pub fn run(settings: &Settings, options: &RunOptions) -> Result<()> {
    let project = if settings.manifest_path.is_file() {
        Some(Project::load(settings.clone())?)
    } else {
        None
    };
    vm::run(settings, project.as_ref(), options)?;
    Ok(())
}
