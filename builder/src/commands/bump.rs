//! `bump`: re-pin a source to a newer version (the new file downloaded
//! and verified before the manifest is rewritten, sources/pins.rs), or
//! report newer versions.

use hiperiso_stick::error_chain;

use crate::commands::error::{Error, Result};
use crate::project::Project;
use crate::settings::Settings;
use crate::sources::fetch::human_bytes;
use crate::sources::pins::{Pin, source_request, write_pins};
use crate::sources::watch::{Watcher, compare_versions};

/// One line of `bump --check`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub name: String,
    pub current: String,
    /// The newest version found, `None` when the watch failed.
    pub latest: Option<String>,
    pub error: Option<String>,
}

impl Check {
    pub fn is_newer(&self) -> bool {
        self.latest
            .as_deref()
            .is_some_and(|latest| compare_versions(latest, &self.current).is_gt())
    }
}

impl std::fmt::Display for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.latest, &self.error) {
            (_, Some(error)) => {
                write!(f, "{}: {} (check failed: {error})", self.name, self.current)
            }
            (Some(latest), None) if self.is_newer() => {
                write!(f, "{}: {} → {latest}", self.name, self.current)
            }
            (Some(latest), None) if *latest == self.current => {
                write!(f, "{}: {} (up to date)", self.name, self.current)
            }
            (Some(latest), None) => write!(
                f,
                "{}: {} (up to date; newest found {latest})",
                self.name, self.current
            ),
            (None, None) => write!(f, "{}: {} (no watch)", self.name, self.current),
        }
    }
}

/// `bump --check [NAME...]`: report newer versions, change nothing.
/// Errors of single sources are reported per line; the call fails only if
/// every check failed.
pub fn check(project: &Project, names: &[String]) -> Result<Vec<Check>> {
    let manifest = &project.manifest;
    let (_, profile) = project.profile()?;
    let mirrors = &project.mirrors;
    let fetcher = project.fetcher()?;
    let watcher = Watcher::new(&fetcher, &manifest.debian, &mirrors.urls);
    let mut checks = Vec::new();
    for (name, source) in manifest.select_sources(profile, names)? {
        let (latest, error) = match watcher.latest(name, source) {
            Ok(candidate) => (Some(candidate.version), None),
            Err(e) => (None, Some(error_chain(&e))),
        };
        let check = Check {
            name: name.to_string(),
            current: source.version.clone(),
            latest,
            error,
        };
        project.settings.say(check.to_string());
        checks.push(check);
    }
    if !checks.is_empty() && checks.iter().all(|c| c.error.is_some()) {
        return Err(Error::Usage(format!(
            "every check failed ({} source(s))",
            checks.len()
        )));
    }
    Ok(checks)
}

/// `bump NAME --to VERSION`: fetch and verify the new file, then rewrite
/// the manifest. `expected` is a sha256 known from elsewhere (a Debian
/// Sources index); the download must match it.
pub fn bump_to(
    project: &Project,
    name: &str,
    version: &str,
    expected: Option<(String, u64)>,
) -> Result<Pin> {
    let manifest = &project.manifest;
    let source = manifest.source(name)?;
    let mirrors = &project.mirrors;
    let mut request = source_request(name, source, version, &mirrors.urls)?;
    if version != source.version {
        if let Some((sha256, size)) = expected {
            request.sha256 = Some(sha256);
            request.size = Some(size);
        }
    } else {
        // Re-pinning the same version: take what the mirror serves now.
        request.sha256 = None;
        request.size = None;
    }
    let fetched = project.fetcher()?.fetch(&request)?;
    let pin = Pin {
        name: name.to_string(),
        version: Some(version.to_string()),
        sha256: fetched.sha256.clone(),
        size: fetched.size,
    };
    write_pins(&manifest.path, std::slice::from_ref(&pin))?;
    project.settings.say(format!(
        "{name}: {} → {version} (sha256 {}, {})",
        source.version,
        fetched.sha256,
        human_bytes(fetched.size)
    ));
    Ok(pin)
}

/// `bump NAME --latest`: ask the watch, then [`bump_to`] if newer.
pub fn bump_latest(project: &Project, name: &str) -> Result<Option<Pin>> {
    let manifest = &project.manifest;
    let source = manifest.source(name)?;
    let mirrors = &project.mirrors;
    let fetcher = project.fetcher()?;
    let candidate = Watcher::new(&fetcher, &manifest.debian, &mirrors.urls).latest(name, source)?;
    if !compare_versions(&candidate.version, &source.version).is_gt() {
        project.settings.say(format!(
            "{name}: {} (up to date; newest found {})",
            source.version, candidate.version
        ));
        return Ok(None);
    }
    let expected = candidate.sha256.zip(candidate.size);
    bump_to(project, name, &candidate.version, expected).map(Some)
}

/// `bump` dispatch from the CLI arguments.
pub fn run(
    settings: &Settings,
    names: &[String],
    to: Option<&str>,
    latest: bool,
    check_only: bool,
) -> Result<()> {
    if settings.offline && (check_only || latest) {
        return Err(Error::Usage(
            "bump --check and --latest read the sources' watch indexes online; drop --offline"
                .into(),
        ));
    }
    if check_only {
        return check(&Project::load(settings.clone())?, names).map(|_| ());
    }
    let [name] = names else {
        return Err(Error::Usage(format!(
            "bump --to and --latest take exactly one source name, got {}",
            names.len()
        )));
    };
    let project = || Project::load(settings.clone());
    match (to, latest) {
        (Some(version), false) => bump_to(&project()?, name, version, None).map(|_| ()),
        (None, true) => bump_latest(&project()?, name).map(|_| ()),
        _ => Err(Error::Usage(
            "give one of --to VERSION, --latest or --check".into(),
        )),
    }
}
