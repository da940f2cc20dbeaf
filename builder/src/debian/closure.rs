//! The Debian closure and lock engine every profile uses: resolve the
//! manifest's packages (a profile's, or `[tools]`) against the suite's
//! verified indices, and materialize a lock's packages as an unpacked tree
//! (cached by the lock's content).

use std::fs;
use std::path::{Path, PathBuf};

use hiperiso_stick::io::{IoError, io_err};
use sha2::{Digest, Sha256};

use crate::debian::packages::BinaryPackage;
use crate::debian::repo::{self, KeyringSource, RepoError, Repository};
use crate::debian::resolve::{self, Request, ResolveError, Universe};
use crate::model::lock::{Lock, LockError, LockInputs, LockedPackage};
use crate::model::manifest::{Manifest, ManifestError, Profile};
use crate::project::Project;
use crate::sources::fetch::Fetcher;
use crate::sources::progress::{Activity, Progress};
use crate::sources::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ClosureError {
    #[error(transparent)]
    Repo(#[from] RepoError),
    #[error("resolving the Debian package closure")]
    Resolve(#[from] ResolveError),
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error("selecting the profile")]
    Profile(#[source] ManifestError),
    #[error("opening the cache")]
    Store(#[source] StoreError),
    #[error("unpacking the locked packages")]
    Io(#[source] IoError),
}

impl From<&BinaryPackage> for LockedPackage {
    fn from(package: &BinaryPackage) -> Self {
        Self {
            name: package.name.clone(),
            version: package.version.to_string(),
            architecture: package.architecture.clone(),
            filename: package.filename.clone(),
            size: package.size,
            sha256: package.sha256.clone(),
            source: package.source.clone(),
        }
    }
}

/// A resolved closure as the lock records it.
pub fn locked(closure: &[BinaryPackage]) -> Vec<LockedPackage> {
    closure.iter().map(LockedPackage::from).collect()
}

/// The suite's verified package universe and its Release date.
pub fn universe(
    repository: &Repository<'_>,
    keyring: &KeyringSource,
) -> Result<(Universe, String), ClosureError> {
    let keyring = repository.keyring(keyring)?;
    let signed = repository.release(&keyring)?;
    let packages = repository.packages(&signed.release)?;
    Ok((
        Universe::new(packages, &repository.architecture),
        signed.release.date.clone().unwrap_or_default(),
    ))
}

/// The closure of `inputs` in `universe`, keeping the `prefer`red versions
/// that are still available.
pub fn resolve_closure(
    universe: &Universe,
    inputs: &LockInputs,
    prefer: std::collections::BTreeMap<String, String>,
) -> Result<Vec<crate::debian::packages::BinaryPackage>, ClosureError> {
    let request = Request {
        roots: inputs
            .packages
            .iter()
            .map(|spec| match spec.split_once('=') {
                Some((name, version)) => (name.to_string(), Some(version.to_string())),
                None => (spec.clone(), None),
            })
            .collect(),
        exclude: inputs.exclude.iter().cloned().collect(),
        prefer,
    };
    Ok(resolve::resolve(universe, &request)?)
}

/// Resolves `inputs` against the suite's verified indices. `previous` and
/// `update` decide which locked versions are kept (see
/// [`Lock::preferences`]).
pub fn resolve_lock(
    repository: &Repository<'_>,
    keyring: &KeyringSource,
    inputs: &LockInputs,
    previous: Option<&Lock>,
    update: Option<&[String]>,
) -> Result<Lock, ClosureError> {
    let (universe, release_date) = universe(repository, keyring)?;
    let prefer = previous
        .map(|lock| lock.preferences(update))
        .unwrap_or_default();
    let closure = resolve_closure(&universe, inputs, prefer)?;
    let mut lock = Lock::new(inputs, &release_date, locked(&closure));
    lock.tools = previous.and_then(|p| p.tools.clone());
    lock.toolchain = previous.and_then(|p| p.toolchain.clone());
    Ok(lock)
}

/// sha256 over the locked packages' hashes: names the unpacked tree.
pub fn tree_key(lock: &Lock) -> String {
    let mut hasher = Sha256::new();
    hasher.update(b"hiperiso debian tree v1\n");
    for package in &lock.packages {
        hasher.update(format!("{} {}\n", package.name, package.sha256));
    }
    hex::encode(hasher.finalize())
}

/// Fetches the locked .debs and unpacks them into `<trees>/<tree_key>`,
/// built in a temporary directory and renamed into place, so a killed build
/// never leaves a half tree. An existing tree is reused.
pub fn materialize(
    repository: &Repository<'_>,
    lock: &Lock,
    trees: &Path,
    progress: Progress,
) -> Result<PathBuf, ClosureError> {
    let final_path = trees.join(tree_key(lock));
    if final_path.is_dir() {
        return Ok(final_path);
    }
    let debs = repository.fetch_debs(&lock.packages)?;
    let io = |e: IoError| ClosureError::Io(e);
    fs::create_dir_all(trees)
        .map_err(io_err("create", trees))
        .map_err(io)?;
    let staging = tempfile::Builder::new()
        .prefix(".unpacking-")
        .tempdir_in(trees)
        .map_err(io_err("create a directory in", trees))
        .map_err(io)?;
    let activity = Activity::start(
        progress,
        format!("unpacking {} packages", lock.packages.len()),
    );
    repo::unpack_locked(&lock.packages, debs, staging.path())?;
    activity.finish();
    let staged = staging.keep();
    if let Err(source) = fs::rename(&staged, &final_path) {
        let _ = fs::remove_dir_all(&staged);
        if !final_path.is_dir() {
            return Err(io(io_err("rename into", &final_path)(source)));
        }
    }
    Ok(final_path)
}

/// How `prepare` obtains its lock.
#[derive(Debug, Clone, Copy)]
pub enum LockMode<'a> {
    /// The committed `hiperiso.lock` beside the manifest; stale or missing
    /// stops the build with "run `hiperiso-build lock`".
    Committed,
    /// Resolve afresh (keeping the committed lock's versions that are still
    /// available) into this scratch file; for CI, whose end-to-end tests
    /// must not go red when Debian publishes an update.
    Scratch(&'a Path),
}

/// A lock and the unpacked tree of its packages.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub lock: Lock,
    pub tree: PathBuf,
}

/// The manifest's Debian inputs for `profile`.
pub fn lock_inputs(manifest: &Manifest, profile: &Profile) -> LockInputs {
    LockInputs {
        suite: manifest.debian.suite.clone(),
        components: manifest.debian.components.clone(),
        architecture: manifest.debian.arch.clone(),
        packages: profile.packages.clone(),
        exclude: manifest.debian.exclude.clone(),
    }
}

/// The archive keyring: pinned in the manifest, else the host's (bootstrap).
pub fn keyring_source(manifest: &Manifest) -> KeyringSource {
    match &manifest.debian.keyring {
        Some(pin) => KeyringSource::Pinned {
            version: pin.version.clone(),
            sha256: pin.sha256.clone(),
        },
        None => KeyringSource::File(PathBuf::from(repo::HOST_KEYRING)),
    }
}

/// Where unpacked package trees are cached.
pub fn trees_dir(fetcher: &Fetcher) -> PathBuf {
    fetcher.store().root().join("debian-trees")
}

/// Fetcher whose "file gone from every mirror" hint is `lock --update`.
pub fn deb_fetcher(project: &Project) -> Result<Fetcher, StoreError> {
    let mut options = project.settings.fetch_options();
    options.missing_hint = "hiperiso-build lock --update {name}".into();
    Ok(Fetcher::new(project.store()?, options))
}

/// The active profile's Debian inputs.
fn profile_inputs(project: &Project) -> Result<LockInputs, ClosureError> {
    let (_, profile) = project.profile().map_err(ClosureError::Profile)?;
    Ok(lock_inputs(&project.manifest, profile))
}

/// The repository of `inputs` on the project's Debian mirrors.
pub fn repository_for<'f>(
    project: &Project,
    inputs: &LockInputs,
    fetcher: &'f Fetcher,
) -> Repository<'f> {
    Repository {
        fetcher,
        mirrors: project.mirrors.urls.clone(),
        suite: inputs.suite.clone(),
        components: inputs.components.clone(),
        architecture: inputs.architecture.clone(),
    }
}

/// Resolves the manifest's closure afresh into `scratch` (never touching
/// the committed lock), keeping the committed versions that are still
/// available. CI's end-to-end tests use it so a Debian update cannot turn
/// them red; the committed lock stays the reproducibility record.
pub fn resolve_scratch(project: &Project, scratch: &Path) -> Result<Lock, ClosureError> {
    let inputs = profile_inputs(project)?;
    let fetcher = deb_fetcher(project).map_err(ClosureError::Store)?;
    let repository = repository_for(project, &inputs, &fetcher);
    let committed = project.lock().ok().flatten();
    let lock = resolve_lock(
        &repository,
        &keyring_source(&project.manifest),
        &inputs,
        committed,
        None,
    )?;
    lock.write(scratch)?;
    Ok(lock)
}

/// Reads (or, in scratch mode, resolves) the lock of the active profile
/// and materializes its tree.
pub fn prepare(project: &Project, mode: LockMode<'_>) -> Result<Prepared, ClosureError> {
    let lock = lock_for(project, mode)?;
    let tree = unpacked(project, &lock)?;
    Ok(Prepared { lock, tree })
}

/// The lock of the active profile: the committed one (checked fresh), or
/// in scratch mode one resolved afresh.
pub fn lock_for(project: &Project, mode: LockMode<'_>) -> Result<Lock, ClosureError> {
    let inputs = profile_inputs(project)?;
    Ok(match mode {
        LockMode::Committed => project.fresh_lock(&inputs)?.clone(),
        LockMode::Scratch(scratch) => resolve_scratch(project, scratch)?,
    })
}

/// The unpacked tree of `lock`'s packages (fetched and unpacked once).
pub fn unpacked(project: &Project, lock: &Lock) -> Result<PathBuf, ClosureError> {
    let fetcher = deb_fetcher(project).map_err(ClosureError::Store)?;
    let repository = repository_for(project, &profile_inputs(project)?, &fetcher);
    materialize(
        &repository,
        lock,
        &trees_dir(&fetcher),
        project.settings.progress(),
    )
}
