//! `hiperiso-build run`: boot an image in the outer VM (vm/).

use crate::cli::{AccelArg, RunArgs};
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

impl From<RunArgs> for RunOptions {
    fn from(args: RunArgs) -> Self {
        Self {
            image: args.image,
            isos: args.iso,
            boot: args.boot,
            ram_mb: args.ram,
            timeout: args.timeout.map(std::time::Duration::from_secs),
            keep: args.keep,
            accel: match args.accel {
                AccelArg::Auto => vm::AccelChoice::Auto,
                AccelArg::Kvm => vm::AccelChoice::Kvm,
                AccelArg::Tcg => vm::AccelChoice::Tcg,
            },
        }
    }
}
