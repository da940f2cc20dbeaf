//! `hiperiso-build lock [--update [NAME…]]`: the active profile's
//! packages, the tools tree's and the runtime step's toolchain, pinned in
//! hiperiso.lock.

use crate::commands::error::{LockVerbError, Result};
use crate::debian::closure::{
    ClosureError, deb_fetcher, keyring_source, lock_inputs, locked, repository_for,
    resolve_closure, universe,
};
use crate::model::lock::{self, Lock, ToolchainLock, ToolsLock};
use crate::project::Project;
use crate::settings::Settings;
use crate::steps::runtime::{self};
use crate::steps::tools;

/// `hiperiso-build lock [--update [NAME…]]`: resolves the active
/// profile's packages and the tools tree's (`[tools]`) into the lock, each
/// kept as it is when its inputs did not change (and nothing is updated).
/// Returns the lock and the lines that changed.
pub fn run_lock(
    project: &Project,
    update: Option<&[String]>,
) -> Result<(Lock, Vec<String>), LockVerbError> {
    let manifest = &project.manifest;
    let (name, profile) = project.profile()?;
    let inputs = lock_inputs(manifest, profile);
    let tools_inputs = tools::lock_inputs(manifest);
    let path = project.lock_path();
    let previous = project.lock().map_err(ClosureError::from)?.cloned();
    // A profile without packages (the from-source default) locks only the
    // tools tree and keeps the packages locked for the profile that has them.
    let keep_packages = profile.packages.is_empty();
    if keep_packages && previous.is_none() {
        return Err(LockVerbError::NoPackages {
            manifest: project.settings.manifest_path.clone(),
            profile: name.to_string(),
        });
    }
    let packages_fresh = keep_packages
        || previous
            .as_ref()
            .is_some_and(|p| p.inputs == inputs.digest());
    let tools_fresh = match previous.as_ref().and_then(|p| p.tools.as_ref()) {
        Some(tools) => tools.inputs == tools_inputs.digest(),
        None => tools_inputs.packages.is_empty(),
    };
    if update.is_none()
        && packages_fresh
        && tools_fresh
        && let Some(previous) = previous.as_ref().filter(|p| p.toolchain.is_some())
    {
        return Ok((previous.clone(), Vec::new()));
    }
    let fetcher = deb_fetcher(project).map_err(ClosureError::Store)?;
    let repository = repository_for(project, &inputs, &fetcher);
    let (universe, release_date) = universe(&repository, &keyring_source(manifest))?;
    let mut lock = match &previous {
        Some(previous) if keep_packages || (packages_fresh && update.is_none()) => previous.clone(),
        _ => {
            let prefer = previous
                .as_ref()
                .map(|lock| lock.preferences(update))
                .unwrap_or_default();
            let closure = resolve_closure(&universe, &inputs, prefer)?;
            Lock::new(&inputs, &release_date, locked(&closure))
        }
    };
    let previous_tools = previous.as_ref().and_then(|p| p.tools.as_ref());
    lock.tools = if tools_inputs.packages.is_empty() {
        None
    } else if let Some(tools) = previous_tools.filter(|_| tools_fresh && update.is_none()) {
        Some(tools.clone())
    } else {
        let prefer = previous_tools
            .map(|t| lock::preferences(&t.packages, update))
            .unwrap_or_default();
        let closure = resolve_closure(&universe, &tools_inputs, prefer)?;
        Some(ToolsLock::new(
            &tools_inputs,
            &release_date,
            locked(&closure),
        ))
    };
    // The runtime step's toolchain: kept unless `--update` (all) or
    // `--update rustc` asks to re-pin it to the host's.
    let repin = update.is_some_and(|names| names.is_empty() || names.iter().any(|n| n == "rustc"));
    lock.toolchain = match previous.as_ref().and_then(|p| p.toolchain.clone()) {
        Some(toolchain) if !repin => Some(toolchain),
        _ => Some(ToolchainLock {
            rustc: runtime::host_rustc(false).map_err(LockVerbError::Toolchain)?,
        }),
    };
    lock.write(&path).map_err(ClosureError::from)?;
    let changes = lock::diff(previous.as_ref(), &lock);
    Ok((lock, changes))
}

/// The `lock` verb: resolve, write, report what changed.
pub fn lock(settings: &Settings, update: Option<&[String]>) -> Result<()> {
    let project = Project::load(settings.clone())?;
    let (lock, changes) = run_lock(&project, update)?;
    let path = project.lock_path();
    let context = settings;
    if changes.is_empty() {
        context.say(format!(
            "{}: up to date ({} packages, {} {})",
            path.display(),
            lock.packages.len(),
            lock.suite,
            lock.release_date
        ));
    } else {
        for change in &changes {
            context.say(change);
        }
        context.say(format!(
            "{}: {} packages from {} ({})",
            path.display(),
            lock.packages.len(),
            lock.suite,
            lock.release_date
        ));
    }
    Ok(())
}
