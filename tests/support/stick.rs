//! The stick's ESP payload for end-to-end tests: exactly what
//! `hiperiso-build --profile debian image` puts on the ESP (Debian's kernel,
//! QEMU, OVMF, SeaBIOS and GRUB from pinned packages, the static runtime),
//! except that the lock is resolved afresh into a scratch file, keeping
//! the committed versions still on the mirror: a Debian point release must
//! not turn CI red. The committed lock stays the reproducibility record.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use hiperiso_build::debian::closure::LockMode;
use hiperiso_build::payload::cached::{self, StepsInfo};
use hiperiso_build::payload::esp::Payload;
use hiperiso_build::payload::from_packages;
use hiperiso_build::project::Project;
use hiperiso_build::settings::Settings;

use crate::workspace_root;

/// The cargo target directory of this workspace.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

/// Writes the debian profile's ESP tree into `esp` (which must not exist).
/// Packages come through the default cache, shared with the other tests.
pub fn build_esp(esp: &Path) -> Result<Payload> {
    let mut settings = Settings::new(workspace_root().join("hiperiso.toml"));
    settings.profile = Some("debian".into());
    let project = Project::load(settings).context("loading the manifest")?;
    let scratch_lock = target_dir().join("hiperiso-e2e.lock");
    let steps = BTreeMap::new();
    let info = StepsInfo {
        steps: &steps,
        tools: None,
    };
    let built = from_packages::build_esp(&project, LockMode::Scratch(&scratch_lock), info)
        .context("building the debian profile's ESP payload")?;
    cached::copy_esp(&built.esp, esp).context("copying the ESP out of the cache")?;
    Ok(built.payload)
}

/// A 512 MiB stick image in `dir` (`hiperiso.img`) with the debian profile's
/// ESP, as `hiperiso-build image --esp-tree` writes it.
pub fn build_image(dir: &Path) -> Result<(PathBuf, Payload)> {
    let esp = dir.join("esp");
    let payload = build_esp(&esp)?;
    let image = dir.join("hiperiso.img");
    let mut settings = Settings::new(workspace_root().join("hiperiso.toml"));
    settings.cache_dir = Some(dir.join("cache"));
    settings.verbosity = -1;
    hiperiso_build::commands::image::image(
        &settings,
        &hiperiso_build::cli::ImageArgs {
            output: image.clone(),
            table: None,
            size: Some("512MiB".into()),
            esp_tree: Some(esp),
            data_tree: None,
        },
    )
    .context("hiperiso-build image")?;
    Ok((image, payload))
}
