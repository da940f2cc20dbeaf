//! The `summary`, `fetch` and `pin` verbs.

use std::fmt::Write as _;

use crate::commands::error::{Error, Result};
use crate::project::Project;
use crate::settings::Settings;
use crate::sources::fetch::{FetchRequest, Fetched, human_bytes};
use crate::sources::pins::{self, Pin, source_request};

/// Requests for the named sources, or every source of the active profile.
pub fn source_requests(project: &Project, names: &[String]) -> Result<Vec<FetchRequest>> {
    let (_, profile) = project.profile()?;
    let urls = &project.mirrors.urls;
    project
        .manifest
        .select_sources(profile, names)?
        .into_iter()
        .map(|(name, source)| Ok(source_request(name, source, &source.version, urls)?))
        .collect()
}

/// `hiperiso-build fetch [NAME...]`.
pub fn fetch(settings: &Settings, names: &[String]) -> Result<Vec<Fetched>> {
    let project = Project::load(settings.clone())?;
    let manifest = &project.manifest;
    let requests = source_requests(&project, names)?;
    let unpinned: Vec<&str> = requests
        .iter()
        .filter(|r| r.sha256.is_none())
        .map(|r| r.name.as_str())
        .collect();
    if !unpinned.is_empty() {
        return Err(Error::Usage(format!(
            "{}: {} ha{} no sha256; run `hiperiso-build pin {}` first",
            manifest.path.display(),
            unpinned.join(", "),
            if unpinned.len() == 1 { "s" } else { "ve" },
            unpinned.join(" ")
        )));
    }
    let fetcher = project.fetcher()?;
    let fetched = fetcher.fetch_all(&requests)?;
    let total: u64 = fetched.iter().map(|f| f.size).sum();
    settings.say(format!(
        "{} source(s) verified in {} ({})",
        fetched.len(),
        fetcher.store().root().display(),
        human_bytes(total)
    ));
    Ok(fetched)
}

/// `hiperiso-build pin [--force] [NAME...]`: download unpinned sources and
/// write their sha256 into the manifest.
pub fn pin(settings: &Settings, names: &[String], force: bool) -> Result<()> {
    let project = Project::load(settings.clone())?;
    let manifest = &project.manifest;
    let mut requests = source_requests(&project, names)?;
    requests.retain(|r| force || r.sha256.is_none());
    if requests.is_empty() {
        settings.say("every selected source is already pinned (use --force to re-pin)");
        return Ok(());
    }
    for request in &mut requests {
        request.sha256 = None;
        request.size = None;
    }
    let fetched = project.fetcher()?.fetch_all(&requests)?;
    let pins: Vec<Pin> = requests
        .iter()
        .zip(&fetched)
        .map(|(request, fetched)| Pin {
            name: request.name.clone(),
            version: None,
            sha256: fetched.sha256.clone(),
            size: fetched.size,
        })
        .collect();
    pins::write_pins(&manifest.path, &pins)?;
    for pin in &pins {
        let old = manifest.sources[&pin.name]
            .sha256
            .as_deref()
            .unwrap_or("none");
        settings.say(format!("{}: sha256 {old} → {}", pin.name, pin.sha256));
    }
    Ok(())
}

/// `hiperiso-build summary`.
pub fn summary(settings: &Settings) -> Result<()> {
    let project = Project::load(settings.clone())?;
    print!("{}", render_summary(&project)?);
    Ok(())
}

/// The text `summary` prints.
pub fn render_summary(project: &Project) -> Result<String> {
    let manifest = &project.manifest;
    let (profile_name, profile) = project.profile()?;
    let mirrors = &project.mirrors;
    let store = project.store().ok();
    let image = &manifest.image;
    let mut out = String::new();
    let _ = writeln!(out, "manifest   {}", manifest.path.display());
    let _ = writeln!(
        out,
        "profile    {profile_name}{} (defined: {})",
        if project.settings.profile.is_some() {
            " (--profile)"
        } else {
            " ([image] profile)"
        },
        manifest
            .profiles
            .keys()
            .cloned()
            .collect::<Vec<_>>()
            .join(", ")
    );
    if !profile.description.is_empty() {
        let _ = writeln!(out, "           {}", profile.description);
    }
    let _ = writeln!(
        out,
        "image      {} · {} · {}",
        image.name, image.table, image.size
    );
    let _ = writeln!(
        out,
        "labels     data {:?} · ESP {:?}",
        image.data_label, image.esp_label
    );
    let _ = writeln!(
        out,
        "seed       {:?} · SOURCE_DATE_EPOCH {}",
        image.seed, image.source_date_epoch
    );
    let debian = &manifest.debian;
    let _ = writeln!(
        out,
        "debian     {} [{}] {}",
        debian.suite,
        debian.components.join(" "),
        debian.arch
    );
    let _ = writeln!(
        out,
        "mirror     {} (from {})",
        if mirrors.urls.is_empty() {
            "none".to_string()
        } else {
            mirrors.urls.join(" ")
        },
        mirrors.origin
    );
    if let Some(store) = &store {
        let _ = writeln!(out, "cache      {}", store.root().display());
    }
    let active = manifest.active_sources(profile);
    let _ = writeln!(
        out,
        "sources    {} active of {} defined",
        active.len(),
        manifest.sources.len()
    );
    let width = active.iter().map(|(n, _)| n.len()).max().unwrap_or(0);
    for (name, source) in &active {
        let sha = source
            .sha256
            .as_deref()
            .unwrap_or("UNPINNED (run `hiperiso-build pin`)");
        let cached = match (&store, &source.sha256) {
            (Some(store), Some(sha)) if store.contains(sha) => "cached",
            _ => "not cached",
        };
        let _ = writeln!(out, "  {name:<width$}  {}  {cached}", source.version);
        let _ = writeln!(out, "  {:<width$}  sha256 {sha}", "");
        match source.urls(name, &source.version, &mirrors.urls) {
            Ok(urls) => {
                for url in urls {
                    let _ = writeln!(out, "  {:<width$}  {url}", "");
                }
            }
            Err(e) => {
                let _ = writeln!(out, "  {:<width$}  {e}", "");
            }
        }
    }
    if !profile.packages.is_empty() {
        let _ = writeln!(out, "packages   {}", profile.packages.join(" "));
    }
    Ok(out)
}
