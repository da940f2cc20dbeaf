//! `hiperiso-build doctor [--json]`: check the host for what the next
//! command needs (the checks live in [`crate::doctor`]); fails when any
//! check fails. Works without a manifest: the checks that need one say so.

use crate::commands::error::{Error, Result};
use crate::doctor::{self, Check, Inputs};
use crate::project::Project;
use crate::settings::Settings;
use crate::sources::store::Store;

/// `hiperiso-build doctor [--json]`.
pub fn doctor(settings: &Settings, json: bool) -> Result<()> {
    let checks = checks(settings);
    if json {
        println!("{}", doctor::to_json(&checks));
    } else {
        print!("{}", doctor::render(&checks));
    }
    let failed = checks
        .iter()
        .filter(|c| c.status == doctor::Status::Fail)
        .map(|c| c.name.clone())
        .collect::<Vec<_>>();
    if failed.is_empty() {
        Ok(())
    } else {
        Err(Error::Doctor { failed })
    }
}

/// Loads the project if there is a manifest and runs every check.
pub fn checks(settings: &Settings) -> Vec<Check> {
    let path = &settings.manifest_path;
    let mut first = Vec::new();
    let (project, no_project) = if !path.is_file() {
        (None, format!("no manifest at {}", path.display()))
    } else {
        match Project::load(settings.clone()) {
            Ok(project) => (Some(project), String::new()),
            Err(error) => {
                first.push(
                    Check::fail("manifest", format!("{}: {error}", path.display()))
                        .with_fix(format!("fix {}", path.display())),
                );
                (
                    None,
                    format!("the manifest {} does not load", path.display()),
                )
            }
        }
    };
    let cache_dir = Store::default_root(settings.cache_dir.as_deref())
        .unwrap_or_else(|_| std::path::PathBuf::from("."));
    let inputs = Inputs {
        cache_dir,
        project: project.as_ref(),
        no_project,
        offline: settings.offline,
    };
    first.extend(doctor::run_all(&inputs));
    first
}
