//! `hiperiso.lock`: the resolved Debian package closure of the manifest,
//! with every package's version, pool path, size and sha256. TOML, written
//! deterministically (packages sorted by name, fixed field order).
//!
//! `inputs` is the sha256 of everything in the manifest the resolution
//! depends on; a build whose lock has other inputs stops and says to run
//! `hiperiso-build lock`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::debian::packages::BinaryPackage;

pub const LOCK_VERSION: u32 = 1;

/// The manifest inputs that decide the lock's content.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct LockInputs {
    pub suite: String,
    pub components: Vec<String>,
    pub architecture: String,
    /// Root packages, as written in the manifest.
    pub packages: Vec<String>,
    /// Packages treated as installed without being unpacked.
    pub exclude: Vec<String>,
}

impl LockInputs {
    /// sha256 over a canonical JSON form of the inputs.
    pub fn digest(&self) -> String {
        let json = serde_json::to_vec(self).expect("inputs serialize");
        hex::encode(Sha256::digest(json))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LockedPackage {
    pub name: String,
    pub version: String,
    pub architecture: String,
    /// Path relative to a mirror's base URL.
    pub filename: String,
    pub size: u64,
    pub sha256: String,
    pub source: String,
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

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Lock {
    pub version: u32,
    /// [`LockInputs::digest`] of the manifest this lock was resolved for.
    pub inputs: String,
    pub suite: String,
    pub architecture: String,
    /// `Date:` of the Release file the closure was resolved against.
    pub release_date: String,
    #[serde(rename = "package", default)]
    pub packages: Vec<LockedPackage>,
    /// The tools tree's closure (the manifest's `[tools] packages`), kept
    /// apart from the profile's packages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<ToolsLock>,
    /// The Rust toolchain the `runtime` step must be built with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub toolchain: Option<ToolchainLock>,
}

/// The lock's `[toolchain]` table.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ToolchainLock {
    /// `rustc -V` of the toolchain, e.g. `rustc 1.95.0 (59807616e 2026-04-14)`.
    pub rustc: String,
}

/// The lock's `[tools]` table: the tools tree's resolved closure.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ToolsLock {
    /// [`LockInputs::digest`] of the manifest's `[tools]` inputs.
    pub inputs: String,
    /// `Date:` of the Release file the closure was resolved against.
    pub release_date: String,
    #[serde(rename = "package", default)]
    pub packages: Vec<LockedPackage>,
}

impl ToolsLock {
    pub fn new(inputs: &LockInputs, release_date: &str, packages: &[BinaryPackage]) -> Self {
        let mut packages: Vec<LockedPackage> = packages.iter().map(LockedPackage::from).collect();
        packages.sort_by(|a, b| a.name.cmp(&b.name));
        Self {
            inputs: inputs.digest(),
            release_date: release_date.to_string(),
            packages,
        }
    }

    pub fn package(&self, name: &str) -> Option<&LockedPackage> {
        self.packages.iter().find(|p| p.name == name)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("{path} does not exist; run `hiperiso-build lock` to resolve the package closure")]
    Missing { path: PathBuf },
    #[error("{path}: not a valid lock")]
    Invalid {
        path: PathBuf,
        #[source]
        source: Box<toml::de::Error>,
    },
    #[error("reading {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path} is stale: the manifest's Debian inputs changed since it was written; \
         run `hiperiso-build lock` to re-resolve"
    )]
    Stale { path: PathBuf },
    #[error(
        "{path}: lock version {found} is not supported (expected {LOCK_VERSION}); run `hiperiso-build lock`"
    )]
    Version { path: PathBuf, found: u32 },
    #[error(
        "{path} has no current [tools] closure: the manifest's [tools] packages changed or were \
         never locked; run `hiperiso-build lock`"
    )]
    ToolsStale { path: PathBuf },
    #[error("{path}: does not lock {name}, which the build needs; run `hiperiso-build lock`")]
    NotLocked { path: PathBuf, name: String },
    #[error("writing {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

const HEADER: &str = "# Generated by `hiperiso-build lock`: the resolved Debian package closure.\n\
                      # Commit it; regenerate with `hiperiso-build lock [--update [NAME...]]`.\n\n";

impl Lock {
    pub fn new(inputs: &LockInputs, release_date: &str, packages: &[BinaryPackage]) -> Self {
        let mut packages: Vec<LockedPackage> = packages.iter().map(LockedPackage::from).collect();
        packages.sort_by(|a, b| a.name.cmp(&b.name));
        Self {
            version: LOCK_VERSION,
            inputs: inputs.digest(),
            suite: inputs.suite.clone(),
            architecture: inputs.architecture.clone(),
            release_date: release_date.to_string(),
            packages,
            tools: None,
            toolchain: None,
        }
    }

    pub fn to_toml(&self) -> String {
        let body = toml::to_string(self).expect("lock serializes");
        format!("{HEADER}{body}")
    }

    pub fn parse(path: &Path, text: &str) -> Result<Self, LockError> {
        let lock: Self = toml::from_str(text).map_err(|e| LockError::Invalid {
            path: path.to_path_buf(),
            source: Box::new(e),
        })?;
        if lock.version != LOCK_VERSION {
            return Err(LockError::Version {
                path: path.to_path_buf(),
                found: lock.version,
            });
        }
        Ok(lock)
    }

    /// Reads the lock; `Ok(None)` when the file does not exist.
    pub fn read(path: &Path) -> Result<Option<Self>, LockError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(path, &text).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(LockError::Read {
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    /// Reads the lock and checks it matches `inputs`, for builds.
    pub fn read_fresh(path: &Path, inputs: &LockInputs) -> Result<Self, LockError> {
        let lock = Self::read(path)?.ok_or_else(|| LockError::Missing {
            path: path.to_path_buf(),
        })?;
        lock.check_fresh(path, inputs)?;
        Ok(lock)
    }

    /// Checks this lock (read from `path`) matches `inputs`.
    pub fn check_fresh(&self, path: &Path, inputs: &LockInputs) -> Result<(), LockError> {
        if self.inputs != inputs.digest() {
            return Err(LockError::Stale {
                path: path.to_path_buf(),
            });
        }
        Ok(())
    }

    /// Writes atomically (temporary file, then rename).
    pub fn write(&self, path: &Path) -> Result<(), LockError> {
        let write_error = |source| LockError::Write {
            path: path.to_path_buf(),
            source,
        };
        let temporary = path.with_extension("lock.tmp");
        std::fs::write(&temporary, self.to_toml()).map_err(write_error)?;
        std::fs::rename(&temporary, path).map_err(write_error)
    }

    pub fn package(&self, name: &str) -> Option<&LockedPackage> {
        self.packages.iter().find(|p| p.name == name)
    }

    /// Reads the lock and returns its `[tools]` table if it matches
    /// `inputs` (the manifest's `[tools]`), for builds.
    pub fn read_tools(path: &Path, inputs: &LockInputs) -> Result<ToolsLock, LockError> {
        let lock = Self::read(path)?.ok_or_else(|| LockError::Missing {
            path: path.to_path_buf(),
        })?;
        lock.fresh_tools(path, inputs).cloned()
    }

    /// This lock's `[tools]`, which must match `inputs`.
    pub fn fresh_tools(&self, path: &Path, inputs: &LockInputs) -> Result<&ToolsLock, LockError> {
        match &self.tools {
            Some(tools) if tools.inputs == inputs.digest() => Ok(tools),
            _ => Err(LockError::ToolsStale {
                path: path.to_path_buf(),
            }),
        }
    }

    /// Locked versions to keep when re-resolving. `update`: `None` keeps
    /// all, `Some([])` keeps none (`lock --update`), `Some(names)` drops
    /// only those names.
    pub fn preferences(&self, update: Option<&[String]>) -> BTreeMap<String, String> {
        preferences(&self.packages, update)
    }
}

/// Versions of `packages` to keep when re-resolving (see
/// [`Lock::preferences`]).
pub fn preferences(
    packages: &[LockedPackage],
    update: Option<&[String]>,
) -> BTreeMap<String, String> {
    packages
        .iter()
        .filter(|p| match update {
            None => true,
            Some([]) => false,
            Some(names) => !names.contains(&p.name),
        })
        .map(|p| (p.name.clone(), p.version.clone()))
        .collect()
}

/// What changed between two locks, for `lock`'s summary (tools lines
/// start with `tools:`).
pub fn diff(old: Option<&Lock>, new: &Lock) -> Vec<String> {
    fn tools(lock: Option<&Lock>) -> &[LockedPackage] {
        lock.and_then(|l| l.tools.as_ref())
            .map(|t| t.packages.as_slice())
            .unwrap_or_default()
    }
    let mut lines = diff_packages(
        old.map(|l| l.packages.as_slice()).unwrap_or_default(),
        &new.packages,
        "",
    );
    lines.extend(diff_packages(tools(old), tools(Some(new)), "tools: "));
    let rustc = |lock: Option<&Lock>| {
        lock.and_then(|l| l.toolchain.as_ref())
            .map(|t| t.rustc.clone())
    };
    if rustc(old) != rustc(Some(new)) {
        lines.push(format!(
            "toolchain: {} -> {}",
            rustc(old).unwrap_or_else(|| "(none)".into()),
            rustc(Some(new)).unwrap_or_default()
        ));
    }
    lines
}

fn diff_packages(old: &[LockedPackage], new: &[LockedPackage], prefix: &str) -> Vec<String> {
    let versions = |packages: &'_ [LockedPackage]| -> BTreeMap<String, String> {
        packages
            .iter()
            .map(|p| (p.name.clone(), p.version.clone()))
            .collect()
    };
    let (old_versions, new_versions) = (versions(old), versions(new));
    let mut lines = Vec::new();
    for (name, version) in &new_versions {
        match old_versions.get(name) {
            None => lines.push(format!("{prefix}+ {name} {version}")),
            Some(old) if old != version => {
                lines.push(format!("{prefix}~ {name} {old} -> {version}"))
            }
            _ => {}
        }
    }
    for (name, version) in &old_versions {
        if !new_versions.contains_key(name) {
            lines.push(format!("{prefix}- {name} {version}"));
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::debian::packages::parse_packages;

    fn inputs() -> LockInputs {
        LockInputs {
            suite: "bookworm".into(),
            components: vec!["main".into()],
            architecture: "amd64".into(),
            packages: vec!["app".into()],
            exclude: vec![],
        }
    }

    fn packages() -> Vec<BinaryPackage> {
        let text = include_str!("../../tests/fixtures/Packages");
        let mut all = parse_packages("fixture", text).unwrap();
        all.retain(|p| p.name == "tool" || p.name == "base-files");
        all
    }

    #[test]
    fn round_trips_deterministically() {
        let mut reversed = packages();
        reversed.reverse();
        let lock = Lock::new(&inputs(), "Sat, 11 Jul 2026", &packages());
        assert_eq!(
            lock.to_toml(),
            Lock::new(&inputs(), "Sat, 11 Jul 2026", &reversed).to_toml()
        );
        let text = lock.to_toml();
        assert!(
            text.find("name = \"base-files\"").unwrap() < text.find("name = \"tool\"").unwrap()
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hiperiso.lock");
        lock.write(&path).unwrap();
        assert_eq!(Lock::read_fresh(&path, &inputs()).unwrap(), lock);
    }

    #[test]
    fn stale_missing_and_invalid_locks_say_what_to_run() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hiperiso.lock");
        let err = Lock::read_fresh(&path, &inputs()).unwrap_err();
        assert!(
            err.to_string().contains("run `hiperiso-build lock`"),
            "{err}"
        );
        Lock::new(&inputs(), "d", &packages()).write(&path).unwrap();
        let mut changed = inputs();
        changed.packages.push("qemu-system-x86".into());
        let err = Lock::read_fresh(&path, &changed).unwrap_err();
        assert!(matches!(err, LockError::Stale { .. }), "{err}");
        assert!(err.to_string().contains("run `hiperiso-build lock`"));
        std::fs::write(&path, "version = 1\ninputs = 3\n").unwrap();
        let err = Lock::read_fresh(&path, &inputs()).unwrap_err();
        assert!(err.to_string().contains("hiperiso.lock"), "{err}");
    }

    #[test]
    fn preferences_follow_update_names() {
        let lock = Lock::new(&inputs(), "d", &packages());
        assert_eq!(lock.preferences(None).len(), 2);
        assert!(lock.preferences(Some(&[])).is_empty());
        let kept = lock.preferences(Some(&["tool".to_string()]));
        assert_eq!(kept.keys().collect::<Vec<_>>(), ["base-files"]);
        let mut newer = lock.clone();
        newer.packages[1].version = "2.0".into();
        newer.packages.remove(0);
        assert_eq!(
            diff(Some(&lock), &newer),
            ["~ tool 1.0 -> 2.0", "- base-files 12.4"]
        );
    }

    #[test]
    fn tools_table_is_kept_apart_and_checked() {
        let mut lock = Lock::new(&inputs(), "d", &packages());
        let mut tools_inputs = inputs();
        tools_inputs.packages = vec!["tool".into()];
        let mut tool_only = packages();
        tool_only.retain(|p| p.name == "tool");
        lock.tools = Some(ToolsLock::new(&tools_inputs, "d", &tool_only));
        let text = lock.to_toml();
        assert!(text.contains("[tools]"), "{text}");
        assert!(text.contains("[[tools.package]]"), "{text}");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hiperiso.lock");
        lock.write(&path).unwrap();
        assert_eq!(Lock::read_fresh(&path, &inputs()).unwrap(), lock);
        let tools = Lock::read_tools(&path, &tools_inputs).unwrap();
        assert_eq!(tools.packages.len(), 1);
        // The profile's inputs do not stand for the tools' ones.
        let err = Lock::read_tools(&path, &inputs()).unwrap_err();
        assert!(matches!(err, LockError::ToolsStale { .. }), "{err}");
        assert!(err.to_string().contains("run `hiperiso-build lock`"));
        let mut newer = lock.clone();
        newer.tools.as_mut().unwrap().packages[0].version = "2.0".into();
        assert_eq!(diff(Some(&lock), &newer), ["tools: ~ tool 1.0 -> 2.0"]);
    }
}
