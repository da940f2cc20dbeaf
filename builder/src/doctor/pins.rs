//! The project's pins: the Debian mirror (or everything already in the
//! cache for `--offline`), and the runtime step's pinned rustc.

use std::time::Duration;

use super::Check;
use crate::model::lock::Lock;
use crate::project::Project;
use crate::sources::store::Store;
use crate::steps::runtime;

pub const MIRROR: &str = "debian-mirror";
pub const RUSTC: &str = "rustc";

/// How long the mirror may take to answer.
const MIRROR_TIMEOUT: Duration = Duration::from_secs(5);
/// Missing files named in a detail, at most.
const NAMED: usize = 5;

/// Every pinned file the active profile needs, as `(name, sha256)`: the
/// locked Debian packages (the profile's and the tools tree's) and the
/// profile's pinned sources.
pub fn pinned_files(project: &Project, lock: Option<&Lock>) -> Vec<(String, String)> {
    let mut files = Vec::new();
    let profile = project.profile().ok().map(|(_, p)| p);
    if let Some(lock) = lock {
        if profile.is_some_and(|p| !p.packages.is_empty()) {
            for p in &lock.packages {
                files.push((format!("{}_{}.deb", p.name, p.version), p.sha256.clone()));
            }
        }
        for p in lock.tools.iter().flat_map(|t| &t.packages) {
            files.push((format!("{}_{}.deb", p.name, p.version), p.sha256.clone()));
        }
    }
    if let Some(profile) = profile {
        for (name, source) in project.manifest.active_sources(profile) {
            match &source.sha256 {
                Some(sha) => files.push((format!("{name} {}", source.version), sha.clone())),
                None => files.push((
                    format!("{name} {} (not pinned)", source.version),
                    String::new(),
                )),
            }
        }
    }
    files
}

/// The names of the files `store` lacks.
pub fn missing_from(store: Option<&Store>, files: &[(String, String)]) -> Vec<String> {
    files
        .iter()
        .filter(|(_, sha)| sha.is_empty() || !store.is_some_and(|s| s.contains(sha)))
        .map(|(name, _)| name.clone())
        .collect()
}

/// The mirror's `dists/SUITE/InRelease` answers, else `--offline` works.
pub fn mirror_or_offline(project: &Project, offline: bool) -> Check {
    let lock = project.lock().ok().flatten();
    let files = pinned_files(project, lock);
    let store = project.store().ok();
    let missing = missing_from(store.as_ref(), &files);
    let reach = (!offline).then(|| reach_mirror(project));
    mirror_check(reach, &missing, files.len())
}

/// The first mirror whose InRelease answers (`Ok(url)`), else why not.
fn reach_mirror(project: &Project) -> Result<String, String> {
    let suite = &project.manifest.debian.suite;
    if project.mirrors.urls.is_empty() {
        return Err("no Debian mirror configured".into());
    }
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(MIRROR_TIMEOUT))
        .user_agent(concat!("hiperiso-build/", env!("CARGO_PKG_VERSION")))
        .build()
        .into();
    let mut errors = Vec::new();
    for base in &project.mirrors.urls {
        let url = format!("{}/dists/{suite}/InRelease", base.trim_end_matches('/'));
        match agent.head(&url).call() {
            Ok(response) if response.status().is_success() => return Ok(url),
            Ok(response) => errors.push(format!("{url}: HTTP {}", response.status())),
            Err(error) => errors.push(format!("{url}: {error}")),
        }
    }
    Err(errors.join("; "))
}

/// The verdict on the mirror (`None` with `--offline`) and the files the
/// cache lacks.
pub fn mirror_check(
    reach: Option<Result<String, String>>,
    missing: &[String],
    total: usize,
) -> Check {
    let cached = format!(
        "{} of {total} pinned files in the cache",
        total - missing.len()
    );
    let named = || {
        let mut list = missing
            .iter()
            .take(NAMED)
            .cloned()
            .collect::<Vec<_>>()
            .join(", ");
        if missing.len() > NAMED {
            list.push_str(&format!(", and {} more", missing.len() - NAMED));
        }
        list
    };
    let fetch_fix = "while online: `hiperiso-build fetch` and `hiperiso-build build` (or `image`) \
                     put every pinned file into the cache";
    match reach {
        Some(Ok(url)) => Check::ok(MIRROR, format!("{url} answers; {cached}")),
        None if missing.is_empty() => Check::ok(MIRROR, format!("--offline: {cached}")),
        None => Check::fail(
            MIRROR,
            format!("--offline, but the cache lacks: {}", named()),
        )
        .with_fix(fetch_fix),
        Some(Err(error)) if missing.is_empty() => Check::warn(
            MIRROR,
            format!("the Debian mirror does not answer ({error}), but {cached}"),
        )
        .with_fix("use --offline"),
        Some(Err(error)) => Check::fail(
            MIRROR,
            format!(
                "the Debian mirror does not answer ({error}) and the cache lacks: {}",
                named()
            ),
        )
        .with_fix(
            "check the network (or proxy), or set the manifest's [mirrors] debian or \
             $HIPERISO_DEBIAN_MIRROR; once every pinned file is cached, --offline works",
        ),
    }
}

/// `hiperiso.lock [toolchain] rustc` against `rustc -V`.
pub fn rustc(project: &Project) -> Check {
    let lock = match project.lock() {
        Ok(lock) => lock,
        Err(error) => {
            return Check::fail(RUSTC, format!("cannot read the lock: {error}"))
                .with_fix("hiperiso-build lock");
        }
    };
    let pinned = lock
        .and_then(|l| l.toolchain.as_ref())
        .map(|t| t.rustc.as_str());
    let host = runtime::host_rustc(false).map_err(|e| {
        let mut text = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(cause) = source {
            text.push_str(&format!(": {cause}"));
            source = cause.source();
        }
        text
    });
    rustc_check(lock.is_some(), pinned, host)
}

/// The verdict on the pinned toolchain (`pinned`) and the host's.
pub fn rustc_check(have_lock: bool, pinned: Option<&str>, host: Result<String, String>) -> Check {
    let host = match host {
        Ok(host) => host,
        Err(error) => {
            return Check::fail(RUSTC, format!("cannot run rustc: {error}"))
                .with_fix("install the Rust toolchain (rustup) or set $RUSTC");
        }
    };
    match pinned {
        None if !have_lock => Check::warn(RUSTC, format!("no lock yet; host has {host}"))
            .with_fix("hiperiso-build lock"),
        None => Check::warn(RUSTC, format!("the lock pins no toolchain; host has {host}"))
            .with_fix("hiperiso-build lock --update rustc"),
        Some(pinned) if pinned == host => Check::ok(RUSTC, format!("{host}, as pinned")),
        Some(pinned) => Check::fail(
            RUSTC,
            format!("the lock pins `{pinned}` but the host has `{host}`: the runtime step will refuse to build"),
        )
        .with_fix(format!(
            "hiperiso-build lock --update rustc (or install {})",
            pinned.split_whitespace().nth(1).unwrap_or(pinned)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::Status;

    #[test]
    fn mirror_or_offline_decisions() {
        let none: Vec<String> = Vec::new();
        let some = vec!["busybox 1.36".to_string()];
        assert_eq!(
            mirror_check(Some(Ok("u".into())), &some, 1).status,
            Status::Ok
        );
        assert_eq!(mirror_check(None, &none, 3).status, Status::Ok);
        let offline = mirror_check(None, &some, 3);
        assert_eq!(offline.status, Status::Fail);
        assert!(offline.detail.contains("busybox 1.36"));
        let cached = mirror_check(Some(Err("timeout".into())), &none, 3);
        assert_eq!(cached.status, Status::Warn);
        assert_eq!(cached.fix.as_deref(), Some("use --offline"));
        let neither = mirror_check(Some(Err("timeout".into())), &some, 3);
        assert_eq!(neither.status, Status::Fail);
        assert!(neither.detail.contains("timeout"));
        let many = (0..8).map(|i| i.to_string()).collect::<Vec<_>>();
        assert!(mirror_check(None, &many, 8).detail.ends_with("and 3 more"));
    }

    #[test]
    fn missing_counts_unpinned_and_uncached() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        let (sha, _) = store.insert_bytes(b"x").unwrap();
        let files = vec![
            ("a".to_string(), sha),
            ("b".to_string(), "0".repeat(64)),
            ("c".to_string(), String::new()),
        ];
        assert_eq!(missing_from(Some(&store), &files), ["b", "c"]);
        assert_eq!(missing_from(None, &files).len(), 3);
    }

    #[test]
    fn rustc_mismatch_fails_with_the_update_command() {
        let a = "rustc 1.95.0 (59807616e 2026-04-14)";
        let ok = rustc_check(true, Some(a), Ok(a.into()));
        assert_eq!(ok.status, Status::Ok);
        let bad = rustc_check(true, Some("rustc 1.80.0 (x 2024-07-21)"), Ok(a.into()));
        assert_eq!(bad.status, Status::Fail);
        assert!(
            bad.fix
                .unwrap()
                .contains("hiperiso-build lock --update rustc")
        );
        assert_eq!(rustc_check(false, None, Ok(a.into())).status, Status::Warn);
        assert_eq!(rustc_check(true, None, Ok(a.into())).status, Status::Warn);
        assert_eq!(
            rustc_check(true, Some(a), Err("no".into())).status,
            Status::Fail
        );
    }
}
