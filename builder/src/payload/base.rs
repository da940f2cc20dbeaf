//! What both profiles' ESPs share: the error type, the temporary
//! directory an ESP is built in, and the options from the runtime, the
//! overlays and the manifest.

use std::fs;
use std::path::{Path, PathBuf};

use hiperiso_stick::io::{IoError, io_err};
use hiperiso_stick::paths::esp;
use sha2::{Digest, Sha256};

use crate::debian::closure::ClosureError;
use crate::model::manifest::ManifestError;
use crate::payload::esp::{PayloadError, PayloadOptions};
use crate::payload::secure_boot::SigningKey;
use crate::project::Project;
use crate::sources::store::StoreError;
use crate::steps::cache::Cache;
use crate::steps::runtime::RuntimeError;

#[derive(Debug, thiserror::Error)]
pub enum EspError {
    #[error(transparent)]
    Io(#[from] IoError),
    #[error("selecting the profile")]
    Profile(#[source] ManifestError),
    #[error(
        "{}: profile \"{profile}\" takes its payload from its steps, which must include \
         `{runtime}` (hiperiso-init and hiperiso-log)",
        manifest.display()
    )]
    NoRuntimeStep {
        manifest: PathBuf,
        profile: String,
        runtime: &'static str,
    },
    #[error("no step of profile \"{profile}\" made {grub} (add `grub-image` to its steps)")]
    NoGrubImage { profile: String, grub: &'static str },
    #[error(
        "steps `{other}` and `{step}` both output {}: one payload root cannot hold both",
        path.display()
    )]
    Clash {
        other: String,
        step: String,
        path: PathBuf,
    },
    #[error("preparing the locked Debian packages")]
    Packages(#[source] ClosureError),
    #[error("building the runtime step")]
    Runtime(#[source] RuntimeError),
    #[error("assembling the ESP")]
    Assemble(#[source] PayloadError),
    #[error("opening the step cache")]
    Store(#[source] StoreError),
}

/// The step cache the payload's derivations go into.
pub fn payload_cache(project: &Project) -> Result<Cache, EspError> {
    let store = project.store().map_err(EspError::Store)?;
    Ok(Cache::new(store.root()))
}

/// A temporary directory (removed when dropped).
pub fn temp_dir(prefix: &str) -> Result<tempfile::TempDir, EspError> {
    Ok(tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .map_err(io_err(
            "create a temporary directory in",
            &std::env::temp_dir(),
        ))?)
}

/// The options both profiles share: the runtime's init and log tool, the
/// overlays, SOURCE_DATE_EPOCH and the manifest's hash in build.json.
pub fn base_options(
    project: &Project,
    profile: &str,
    root: &Path,
    runtime: &Path,
) -> Result<PayloadOptions, EspError> {
    let manifest = &project.manifest;
    let manifest_path = &project.settings.manifest_path;
    let mut options = PayloadOptions::new(root, runtime.join("hiperiso-init"));
    let overlays = project.manifest_dir().join("overlays");
    options.overlays = overlays.is_dir().then_some(overlays);
    options.source_date_epoch = u32::try_from(manifest.image.source_date_epoch).unwrap_or(u32::MAX);
    options
        .extra_esp_files
        .push((esp::HIPERISO_LOG.into(), runtime.join("hiperiso-log")));
    options.secure_boot = manifest.secure_boot.as_ref().map(|sb| SigningKey {
        key: project.manifest_dir().join(&sb.key),
        cert: project.manifest_dir().join(&sb.cert),
    });
    let manifest_text = fs::read(manifest_path).map_err(io_err("read", manifest_path))?;
    let info = &mut options.build_info;
    info.insert("profile".into(), profile.into());
    // What `hiperiso-build inspect` shows (the same object an ESP of only
    // overlays gets, payload/trees.rs).
    info.insert(
        "hiperiso".into(),
        serde_json::json!({
            "version": env!("CARGO_PKG_VERSION"),
            "image": manifest.image.name,
            "profile": profile,
            "manifest_sha256": hex::encode(Sha256::digest(&manifest_text)),
        }),
    );
    Ok(options)
}
