//! The project a verb works on, loaded once by the command and passed down
//! by reference: the settings, the manifest and its active profile, the
//! Debian mirrors, and (read on first use, then kept) the lock and the
//! recipes. Nothing below `commands` loads the manifest or reads the lock
//! itself.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::model::lock::{Lock, LockError, LockInputs, ToolsLock};
use crate::model::manifest::{Manifest, ManifestError, Profile};
use crate::model::recipe::{RecipeError, Recipes};
use crate::settings::Settings;
use crate::sources::fetch::Fetcher;
use crate::sources::mirrors::{self, DebianMirrors};
use crate::sources::store::{Store, StoreError};

#[derive(Debug)]
pub struct Project {
    pub settings: Settings,
    pub manifest: Manifest,
    /// The Debian mirrors, from the manifest, the environment or the
    /// host's apt sources.
    pub mirrors: DebianMirrors,
    lock: OnceLock<Option<Lock>>,
    recipes: OnceLock<Recipes>,
}

impl Project {
    /// Loads the manifest `settings` name.
    pub fn load(settings: Settings) -> Result<Self, ManifestError> {
        let manifest = Manifest::load(&settings.manifest_path)?;
        Ok(Self::new(settings, manifest))
    }

    /// A project of an already loaded manifest.
    pub fn new(settings: Settings, manifest: Manifest) -> Self {
        let mirrors = mirrors::resolve_debian(
            &manifest.mirrors.debian,
            &manifest.debian.suite,
            &settings.apt_root,
        );
        Self {
            settings,
            manifest,
            mirrors,
            lock: OnceLock::new(),
            recipes: OnceLock::new(),
        }
    }

    /// The active profile: `--profile`, else the manifest's default.
    pub fn profile(&self) -> Result<(&str, &Profile), ManifestError> {
        self.manifest.profile(self.settings.profile.as_deref())
    }

    /// The content-addressed store (and step cache) under the cache dir.
    pub fn store(&self) -> Result<Store, StoreError> {
        Store::open_default(self.settings.cache_dir.as_deref())
    }

    /// A fetcher into the store, with the settings' options.
    pub fn fetcher(&self) -> Result<Fetcher, StoreError> {
        Ok(Fetcher::new(self.store()?, self.settings.fetch_options()))
    }

    pub fn manifest_dir(&self) -> &Path {
        self.settings.manifest_dir()
    }

    pub fn lock_path(&self) -> PathBuf {
        self.settings.lock_path()
    }

    /// The committed lock (`None` when there is none yet), read once.
    pub fn lock(&self) -> Result<Option<&Lock>, LockError> {
        if let Some(lock) = self.lock.get() {
            return Ok(lock.as_ref());
        }
        let lock = Lock::read(&self.lock_path())?;
        Ok(self.lock.get_or_init(|| lock).as_ref())
    }

    /// The committed lock, which must match `inputs` (for builds).
    pub fn fresh_lock(&self, inputs: &LockInputs) -> Result<&Lock, LockError> {
        let path = self.lock_path();
        let lock = self
            .lock()?
            .ok_or_else(|| LockError::Missing { path: path.clone() })?;
        lock.check_fresh(&path, inputs)?;
        Ok(lock)
    }

    /// The committed lock's `[tools]`, which must match `inputs`.
    pub fn tools_lock(&self, inputs: &LockInputs) -> Result<&ToolsLock, LockError> {
        let path = self.lock_path();
        let lock = self
            .lock()?
            .ok_or_else(|| LockError::Missing { path: path.clone() })?;
        lock.fresh_tools(&path, inputs)
    }

    /// The recipes beside the manifest, checked against it, loaded once.
    pub fn recipes(&self) -> Result<&Recipes, RecipeError> {
        if let Some(recipes) = self.recipes.get() {
            return Ok(recipes);
        }
        let recipes = Recipes::load_dir(&self.settings.recipes_dir())?;
        recipes.check(&self.manifest)?;
        Ok(self.recipes.get_or_init(|| recipes))
    }
}
