//! `--profile debian`: resolve the manifest's packages into the lock,
//! materialize the locked packages as an unpacked tree (cached by the lock's
//! content), and build the payload from it.

use std::fs;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::debian::repo::{self, KeyringSource, RepoError, Repository};
use crate::debian::resolve::{self, Request, ResolveError, Universe};
use crate::model::lock::{Lock, LockError, LockInputs};
use crate::model::manifest::{Manifest, Profile};
use crate::settings::Context;
use crate::sources::fetch::Fetcher;

#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error(transparent)]
    Repo(#[from] RepoError),
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error("{0}")]
    Setup(String),
    #[error(transparent)]
    Payload(#[from] crate::payload::esp::PayloadError),
    #[error(transparent)]
    Runtime(#[from] crate::steps::runtime::RuntimeError),
    #[error("{context} {path}")]
    Io {
        context: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The suite's verified package universe and its Release date.
pub fn universe(
    repository: &Repository<'_>,
    keyring: &KeyringSource,
) -> Result<(Universe, String), ProfileError> {
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
) -> Result<Vec<crate::debian::packages::BinaryPackage>, ProfileError> {
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
) -> Result<Lock, ProfileError> {
    let (universe, release_date) = universe(repository, keyring)?;
    let prefer = previous
        .map(|lock| lock.preferences(update))
        .unwrap_or_default();
    let closure = resolve_closure(&universe, inputs, prefer)?;
    let mut lock = Lock::new(inputs, &release_date, &closure);
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
) -> Result<PathBuf, ProfileError> {
    let io_error = |context, path: &Path| {
        let path = path.to_path_buf();
        move |source| ProfileError::Io {
            context,
            path,
            source,
        }
    };
    let final_path = trees.join(tree_key(lock));
    if final_path.is_dir() {
        return Ok(final_path);
    }
    let debs = repository.fetch_debs(&lock.packages)?;
    fs::create_dir_all(trees).map_err(io_error("creating", trees))?;
    let staging = tempfile::Builder::new()
        .prefix(".unpacking-")
        .tempdir_in(trees)
        .map_err(io_error("creating a directory in", trees))?;
    let named: Vec<(String, PathBuf)> = lock
        .packages
        .iter()
        .map(|p| format!("{}_{}", p.name, p.version))
        .zip(debs)
        .collect();
    repo::unpack_all(&named, staging.path())?;
    let staged = staging.keep();
    if let Err(source) = fs::rename(&staged, &final_path) {
        let _ = fs::remove_dir_all(&staged);
        if !final_path.is_dir() {
            return Err(ProfileError::Io {
                context: "renaming into",
                path: final_path,
                source,
            });
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

/// The lock file of a manifest: `hiperiso.lock` beside it.
pub fn lock_path(context: &Context) -> PathBuf {
    context.manifest_dir().join("hiperiso.lock")
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
pub fn deb_fetcher(context: &Context) -> Result<Fetcher, ProfileError> {
    let mut options = context.fetch_options();
    options.missing_hint = "hiperiso-build lock --update {name}".into();
    let store = context
        .store()
        .map_err(|e| ProfileError::Setup(e.to_string()))?;
    Ok(Fetcher::new(store, options))
}

/// `hiperiso-build lock [--update [NAME…]]`: resolves the active
/// profile's packages and the tools tree's (`[tools]`) into the lock, each
/// kept as it is when its inputs did not change (and nothing is updated).
/// Returns the lock and the lines that changed.
pub fn run_lock(
    context: &Context,
    update: Option<&[String]>,
) -> Result<(Lock, Vec<String>), ProfileError> {
    let manifest = context
        .load_manifest()
        .map_err(|e| ProfileError::Setup(e.to_string()))?;
    let (name, profile) = context
        .profile(&manifest)
        .map_err(|e| ProfileError::Setup(e.to_string()))?;
    let inputs = lock_inputs(&manifest, profile);
    let tools_inputs = crate::steps::tools::lock_inputs(&manifest);
    let path = lock_path(context);
    let previous = Lock::read(&path)?;
    // A profile without packages (the from-source default) locks only the
    // tools tree and keeps the packages locked for the profile that has them.
    let keep_packages = profile.packages.is_empty();
    if keep_packages && previous.is_none() {
        return Err(ProfileError::Setup(format!(
            "{}: profile \"{name}\" lists no Debian packages and there is no lock yet; \
             lock the profile that has them first, e.g. `hiperiso-build --profile debian lock`",
            context.manifest_path.display()
        )));
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
    let fetcher = deb_fetcher(context)?;
    let repository = repository_for(context, &manifest, &inputs, &fetcher);
    let (universe, release_date) = universe(&repository, &keyring_source(&manifest))?;
    let mut lock = match &previous {
        Some(previous) if keep_packages || (packages_fresh && update.is_none()) => previous.clone(),
        _ => {
            let prefer = previous
                .as_ref()
                .map(|lock| lock.preferences(update))
                .unwrap_or_default();
            let closure = resolve_closure(&universe, &inputs, prefer)?;
            Lock::new(&inputs, &release_date, &closure)
        }
    };
    let previous_tools = previous.as_ref().and_then(|p| p.tools.as_ref());
    lock.tools = if tools_inputs.packages.is_empty() {
        None
    } else if let Some(tools) = previous_tools.filter(|_| tools_fresh && update.is_none()) {
        Some(tools.clone())
    } else {
        let prefer = previous_tools
            .map(|t| crate::model::lock::preferences(&t.packages, update))
            .unwrap_or_default();
        let closure = resolve_closure(&universe, &tools_inputs, prefer)?;
        Some(crate::model::lock::ToolsLock::new(
            &tools_inputs,
            &release_date,
            &closure,
        ))
    };
    // The runtime step's toolchain: kept unless `--update` (all) or
    // `--update rustc` asks to re-pin it to the host's.
    let repin = update.is_some_and(|names| names.is_empty() || names.iter().any(|n| n == "rustc"));
    lock.toolchain = match previous.as_ref().and_then(|p| p.toolchain.clone()) {
        Some(toolchain) if !repin => Some(toolchain),
        _ => Some(crate::model::lock::ToolchainLock {
            rustc: crate::steps::runtime::host_rustc(false)
                .map_err(|e| ProfileError::Setup(e.to_string()))?,
        }),
    };
    lock.write(&path)?;
    let changes = crate::model::lock::diff(previous.as_ref(), &lock);
    Ok((lock, changes))
}

fn repository_for<'f>(
    context: &Context,
    manifest: &Manifest,
    inputs: &LockInputs,
    fetcher: &'f Fetcher,
) -> Repository<'f> {
    Repository {
        fetcher,
        mirrors: context.debian_mirrors(manifest).urls,
        suite: inputs.suite.clone(),
        components: inputs.components.clone(),
        architecture: inputs.architecture.clone(),
    }
}

/// Resolves the manifest's closure afresh into `scratch` (never touching
/// the committed lock), keeping the committed versions that are still
/// available. CI's end-to-end tests use it so a Debian update cannot turn
/// them red; the committed lock stays the reproducibility record.
pub fn resolve_scratch(
    context: &Context,
    profile: Option<&str>,
    scratch: &Path,
) -> Result<Lock, ProfileError> {
    let manifest = context
        .load_manifest()
        .map_err(|e| ProfileError::Setup(e.to_string()))?;
    let (_, profile) = manifest
        .profile(profile)
        .map_err(|e| ProfileError::Setup(e.to_string()))?;
    let inputs = lock_inputs(&manifest, profile);
    let fetcher = deb_fetcher(context)?;
    let repository = repository_for(context, &manifest, &inputs, &fetcher);
    let committed = Lock::read(&lock_path(context)).ok().flatten();
    let lock = resolve_lock(
        &repository,
        &keyring_source(&manifest),
        &inputs,
        committed.as_ref(),
        None,
    )?;
    lock.write(scratch)?;
    Ok(lock)
}

/// Reads (or, in scratch mode, resolves) the lock and materializes its tree.
pub fn prepare(
    context: &Context,
    profile: Option<&str>,
    mode: LockMode<'_>,
) -> Result<Prepared, ProfileError> {
    let manifest = context
        .load_manifest()
        .map_err(|e| ProfileError::Setup(e.to_string()))?;
    let (profile_name, profile) = manifest
        .profile(profile)
        .map_err(|e| ProfileError::Setup(e.to_string()))?;
    let inputs = lock_inputs(&manifest, profile);
    let lock = match mode {
        LockMode::Committed => Lock::read_fresh(&lock_path(context), &inputs)?,
        LockMode::Scratch(scratch) => resolve_scratch(context, Some(profile_name), scratch)?,
    };
    let fetcher = deb_fetcher(context)?;
    let repository = repository_for(context, &manifest, &inputs, &fetcher);
    let tree = materialize(&repository, &lock, &trees_dir(&fetcher))?;
    Ok(Prepared { lock, tree })
}

/// The whole debian-profile ESP payload into `esp`: reads the lock (`mode`:
/// committed, where stale stops, or a scratch one), fetches and unpacks the
/// packages, builds the static runtime and assembles GRUB, kernel,
/// initramfs and firmware. This is what `hiperiso-build --profile debian
/// image` puts on the ESP (with the committed lock).
pub fn build_esp(
    context: &Context,
    profile: Option<&str>,
    mode: LockMode<'_>,
    esp: &Path,
) -> Result<crate::payload::esp::Payload, ProfileError> {
    let manifest = context
        .load_manifest()
        .map_err(|e| ProfileError::Setup(e.to_string()))?;
    let (profile_name, _) = manifest
        .profile(profile)
        .map_err(|e| ProfileError::Setup(e.to_string()))?;
    let prepared = prepare(context, profile, mode)?;
    let runtime = crate::steps::runtime::build_pinned(context, &manifest, &prepared.lock)?;
    let mut options = crate::payload::from_steps::base_options(
        context,
        &manifest,
        profile_name,
        &prepared.tree,
        &runtime.path,
    )?;
    if let Some(modules) = &manifest.debian.kernel_modules {
        options.kernel_modules = modules.clone();
    }
    options
        .build_info
        .insert("runtime".into(), runtime.record.tree.into());
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
    Ok(crate::payload::esp::build(&options, esp)?)
}

/// The `lock` verb: resolve, write, report what changed.
pub fn lock_verb(context: &Context, update: Option<&[String]>) -> crate::commands::Result<()> {
    let (lock, changes) = run_lock(context, update)?;
    let path = lock_path(context);
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
