//! The debian profile's ESP: the locked Debian packages, unpacked
//! (debian/closure.rs), with the static runtime, assembled into GRUB,
//! kernel, initramfs and firmware.

use sha2::{Digest, Sha256};

use crate::debian::closure::{self, LockMode};
use crate::payload::base::{EspError, base_options, payload_cache};
use crate::payload::cached::{self, CachedEsp, StepsInfo};
use crate::project::Project;
use crate::steps::runtime;

/// The whole debian-profile ESP payload: reads the lock (`mode`:
/// committed, where stale stops, or a scratch one), fetches and unpacks the
/// packages, builds the static runtime and assembles GRUB, kernel,
/// initramfs and firmware, through the cache (payload/cached.rs). This is
/// what `hiperiso-build --profile debian image` puts on the ESP (with the
/// committed lock).
pub fn build_esp(
    project: &Project,
    mode: LockMode<'_>,
    steps: StepsInfo<'_>,
) -> Result<CachedEsp, EspError> {
    let (profile_name, _) = project.profile().map_err(EspError::Profile)?;
    let lock = closure::lock_for(project, mode).map_err(EspError::Packages)?;
    // The runtime's cargo build and the packages' download and unpacking
    // share nothing, so on a cold cache they run side by side.
    let (tree, runtime) = std::thread::scope(|s| {
        let runtime = s.spawn(|| runtime::build_pinned(project, &lock));
        let tree = closure::unpacked(project, &lock);
        let runtime = runtime
            .join()
            .unwrap_or_else(|e| std::panic::resume_unwind(e));
        (tree, runtime)
    });
    let prepared = closure::Prepared {
        tree: tree.map_err(EspError::Packages)?,
        lock,
    };
    let runtime = runtime.map_err(EspError::Runtime)?;
    let mut options = base_options(project, profile_name, &prepared.tree, &runtime.path)?;
    if let Some(modules) = &project.manifest.debian.kernel_modules {
        options.kernel_modules = modules.clone();
    }
    options
        .build_info
        .insert("runtime".into(), runtime.record.tree.clone().into());
    options.build_info.insert(
        "lock_sha256".into(),
        hex::encode(Sha256::digest(prepared.lock.to_toml())).into(),
    );
    options
        .build_info
        .insert("lock_inputs".into(), prepared.lock.inputs.clone().into());
    options.build_info.insert(
        "packages".into(),
        prepared
            .lock
            .packages
            .iter()
            .map(|p| {
                (
                    p.name.clone(),
                    serde_json::Value::from(format!("{} {}", p.version, p.sha256)),
                )
            })
            .collect::<serde_json::Map<_, _>>()
            .into(),
    );
    // The unpacked tree is named by its packages' hashes, the runtime by
    // its output tree.
    options.content_id = format!(
        "debian {} runtime {}",
        closure::tree_key(&prepared.lock),
        runtime.record.tree
    );
    cached::esp(
        &payload_cache(project)?,
        &options,
        steps,
        project.settings.progress(),
    )
    .map_err(EspError::Assemble)
}
