//! Dependency closure of a set of binary packages.
//!
//! Follows Pre-Depends and Depends (not Recommends), alternatives in their
//! written order and Provides for virtual packages. Every choice is
//! deterministic: the first satisfiable alternative wins; among versions, a
//! preferred (locked) version wins, else the highest; among providers of a
//! virtual package, one already chosen wins, else the first by name.
//! Conflicts and Breaks are not evaluated: the closure is unpacked into a
//! tree, never installed by dpkg.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use super::packages::{BinaryPackage, Clause, Dependency};
use super::version::Version;

/// All packages available for one architecture, indexed by name.
#[derive(Debug, Default)]
pub struct Universe {
    /// Highest version first.
    by_name: BTreeMap<String, Vec<BinaryPackage>>,
    /// Virtual name -> (provider name, provider version, provided version).
    providers: BTreeMap<String, Vec<(String, Version, Option<Version>)>>,
}

impl Universe {
    /// Keeps packages built for `architecture` or `all`.
    pub fn new(packages: impl IntoIterator<Item = BinaryPackage>, architecture: &str) -> Self {
        let mut universe = Self::default();
        for package in packages {
            if package.architecture != architecture && package.architecture != "all" {
                continue;
            }
            for provide in &package.provides {
                universe
                    .providers
                    .entry(provide.name.clone())
                    .or_default()
                    .push((
                        package.name.clone(),
                        package.version.clone(),
                        provide.version.clone(),
                    ));
            }
            universe
                .by_name
                .entry(package.name.clone())
                .or_default()
                .push(package);
        }
        for versions in universe.by_name.values_mut() {
            versions.sort_by(|a, b| b.version.cmp(&a.version));
            versions.dedup_by(|a, b| a.version == b.version);
        }
        for providers in universe.providers.values_mut() {
            providers.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| b.1.cmp(&a.1)));
            providers.dedup();
        }
        universe
    }

    pub fn versions(&self, name: &str) -> &[BinaryPackage] {
        self.by_name.get(name).map(Vec::as_slice).unwrap_or(&[])
    }

    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}

/// What to resolve.
#[derive(Debug, Default, Clone)]
pub struct Request {
    /// Root packages, optionally pinned to an exact version.
    pub roots: Vec<(String, Option<String>)>,
    /// Names treated as satisfied without being installed (e.g. `perl` for a
    /// tree nobody runs maintainer scripts in).
    pub exclude: BTreeSet<String>,
    /// Versions to keep when still available and satisfying (the lock).
    pub prefer: BTreeMap<String, String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("package {name} is not in the index{}", version_text(version))]
    MissingRoot {
        name: String,
        version: Option<String>,
    },
    #[error("unsatisfiable dependency `{clause}` (required by {chain})")]
    Unsatisfiable { clause: String, chain: String },
    #[error("{name} {selected} was chosen, but `{dependency}` is required by {chain}")]
    VersionConflict {
        name: String,
        selected: String,
        dependency: String,
        chain: String,
    },
}

fn version_text(version: &Option<String>) -> String {
    version
        .as_ref()
        .map(|v| format!(" at version {v}"))
        .unwrap_or_default()
}

struct Resolver<'a> {
    universe: &'a Universe,
    request: &'a Request,
    selected: BTreeMap<String, &'a BinaryPackage>,
    /// Who pulled each package in (None for roots).
    parent: BTreeMap<String, Option<String>>,
    queue: VecDeque<String>,
}

/// Resolves the closure. The result is sorted by package name.
pub fn resolve(universe: &Universe, request: &Request) -> Result<Vec<BinaryPackage>, ResolveError> {
    let mut resolver = Resolver {
        universe,
        request,
        selected: BTreeMap::new(),
        parent: BTreeMap::new(),
        queue: VecDeque::new(),
    };
    for (name, version) in &request.roots {
        let missing = || ResolveError::MissingRoot {
            name: name.clone(),
            version: version.clone(),
        };
        let candidates = universe.versions(name);
        let package = match version {
            Some(wanted) => {
                let wanted = Version::parse(wanted).map_err(|_| missing())?;
                candidates.iter().find(|p| p.version == wanted)
            }
            None => resolver.preferred(name, candidates.iter().collect()),
        };
        // A root that is only virtual resolves through its providers.
        match package {
            Some(package) => resolver.select(package, None),
            None if version.is_none() && universe.providers.contains_key(name) => {
                let dependency = Dependency {
                    name: name.clone(),
                    constraint: None,
                };
                let clause = vec![dependency];
                if !resolver.satisfied(&clause) {
                    let package = resolver.choose_provider(&clause[0]).ok_or_else(missing)?;
                    resolver.select(package, None);
                }
            }
            None => return Err(missing()),
        }
    }
    while let Some(name) = resolver.queue.pop_front() {
        let package = resolver.selected[&name];
        for clause in package.pre_depends.iter().chain(&package.depends) {
            if resolver.satisfied(clause) {
                continue;
            }
            let choice = resolver.choose(clause, &name)?;
            resolver.select(choice, Some(name.clone()));
        }
    }
    Ok(resolver.selected.into_values().cloned().collect())
}

impl<'a> Resolver<'a> {
    fn select(&mut self, package: &'a BinaryPackage, parent: Option<String>) {
        if self.selected.contains_key(&package.name) {
            return;
        }
        self.selected.insert(package.name.clone(), package);
        self.parent.insert(package.name.clone(), parent);
        self.queue.push_back(package.name.clone());
    }

    fn preferred(
        &self,
        name: &str,
        candidates: Vec<&'a BinaryPackage>,
    ) -> Option<&'a BinaryPackage> {
        if let Some(locked) = self.request.prefer.get(name)
            && let Ok(locked) = Version::parse(locked)
            && let Some(package) = candidates.iter().find(|p| p.version == locked)
        {
            return Some(package);
        }
        candidates.first().copied()
    }

    fn satisfied(&self, clause: &Clause) -> bool {
        clause.iter().any(|dependency| {
            if self.request.exclude.contains(&dependency.name) {
                return true;
            }
            if let Some(package) = self.selected.get(&dependency.name)
                && matches(&package.version, dependency)
            {
                return true;
            }
            self.selected_providers(dependency).next().is_some()
        })
    }

    fn selected_providers<'s>(
        &'s self,
        dependency: &'s Dependency,
    ) -> impl Iterator<Item = &'s str> + 's {
        self.universe
            .providers
            .get(&dependency.name)
            .into_iter()
            .flatten()
            .filter(move |(provider, version, provided)| {
                self.selected.get(provider).map(|p| &p.version) == Some(version)
                    && provides_match(provided, dependency)
            })
            .map(|(provider, _, _)| provider.as_str())
    }

    fn choose(&self, clause: &Clause, parent: &str) -> Result<&'a BinaryPackage, ResolveError> {
        let mut conflict = None;
        for dependency in clause {
            if let Some(package) = self.selected.get(&dependency.name) {
                // Already chosen at a version this dependency rejects; a
                // later alternative may still work.
                conflict.get_or_insert_with(|| ResolveError::VersionConflict {
                    name: package.name.clone(),
                    selected: package.version.to_string(),
                    dependency: dependency.to_string(),
                    chain: self.chain(parent),
                });
                continue;
            }
            let candidates: Vec<&BinaryPackage> = self
                .universe
                .versions(&dependency.name)
                .iter()
                .filter(|p| matches(&p.version, dependency))
                .collect();
            if let Some(package) = self.preferred(&dependency.name, candidates) {
                return Ok(package);
            }
            if let Some(package) = self.choose_provider(dependency) {
                return Ok(package);
            }
        }
        Err(conflict.unwrap_or_else(|| ResolveError::Unsatisfiable {
            clause: clause
                .iter()
                .map(Dependency::to_string)
                .collect::<Vec<_>>()
                .join(" | "),
            chain: self.chain(parent),
        }))
    }

    fn choose_provider(&self, dependency: &Dependency) -> Option<&'a BinaryPackage> {
        let providers = self.universe.providers.get(&dependency.name)?;
        providers
            .iter()
            .filter(|(name, _, provided)| {
                provides_match(provided, dependency) && !self.selected.contains_key(name)
            })
            .find_map(|(name, version, _)| {
                self.universe
                    .versions(name)
                    .iter()
                    .find(|p| &p.version == version)
            })
    }

    /// `root <- … <- parent`, printed as `qemu-system-x86 1:7.2 <- root`.
    fn chain(&self, from: &str) -> String {
        let mut links = Vec::new();
        let mut current = Some(from.to_string());
        while let Some(name) = current {
            let version = self
                .selected
                .get(&name)
                .map(|p| p.version.to_string())
                .unwrap_or_default();
            links.push(format!("{name} {version}"));
            current = self.parent.get(&name).cloned().flatten();
        }
        links.push("the manifest's package list".to_string());
        links.join(" <- ")
    }
}

fn matches(version: &Version, dependency: &Dependency) -> bool {
    match &dependency.constraint {
        Some((relation, wanted)) => relation.holds(version, wanted),
        None => true,
    }
}

/// An unversioned Provides satisfies only unversioned dependencies.
fn provides_match(provided: &Option<Version>, dependency: &Dependency) -> bool {
    match (&dependency.constraint, provided) {
        (None, _) => true,
        (Some((relation, wanted)), Some(provided)) => relation.holds(provided, wanted),
        (Some(_), None) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::super::packages::parse_packages;
    use super::*;

    fn fixture() -> Universe {
        let text = include_str!("../../tests/fixtures/Packages");
        Universe::new(parse_packages("fixtures/Packages", text).unwrap(), "amd64")
    }

    fn names(packages: &[BinaryPackage]) -> Vec<String> {
        packages
            .iter()
            .map(|p| format!("{}={}", p.name, p.version))
            .collect()
    }

    fn request(roots: &[&str]) -> Request {
        Request {
            roots: roots.iter().map(|r| (r.to_string(), None)).collect(),
            ..Request::default()
        }
    }

    #[test]
    fn closure_with_alternatives_and_virtuals() {
        let universe = fixture();
        let closure = resolve(&universe, &request(&["app"])).unwrap();
        assert_eq!(
            names(&closure),
            [
                // `mawk | gawk`: first alternative; `awk` virtual already met.
                "app=2.0-1",
                "base-files=12.4",
                // libc6 (>= 2.36): the highest version, 2.36-9.
                "libc6=2.36-9",
                "libgcc-s1=12.2.0-14",
                "mail-transport-agent-impl=1.0",
                "mawk=1.3.4",
                // `zlib-virtual (>= 1.2)` satisfied by a versioned Provides.
                "zlib1g=1:1.2.13",
            ]
        );
        // i386-only packages never enter an amd64 universe.
        assert!(universe.versions("only-i386").is_empty());
    }

    #[test]
    fn deterministic_and_lock_preferences_apply() {
        let universe = fixture();
        let first = names(&resolve(&universe, &request(&["app", "tool"])).unwrap());
        let second = names(&resolve(&universe, &request(&["tool", "app"])).unwrap());
        assert_eq!(first, second);
        let mut locked = request(&["tool"]);
        locked.prefer.insert("libc6".into(), "2.36-8".into());
        let closure = names(&resolve(&universe, &locked).unwrap());
        assert!(closure.contains(&"libc6=2.36-8".to_string()), "{closure:?}");
        // A preference that no longer satisfies the dependency is ignored.
        let mut stale = request(&["app"]);
        stale.prefer.insert("libc6".into(), "2.31-1".into());
        let closure = names(&resolve(&universe, &stale).unwrap());
        assert!(closure.contains(&"libc6=2.36-9".to_string()), "{closure:?}");
    }

    #[test]
    fn missing_dependency_names_the_chain() {
        let universe = fixture();
        let err = resolve(&universe, &request(&["broken-top"])).unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains("`libmissing (>= 3) | libabsent`"),
            "{message}"
        );
        assert!(
            message.contains("broken-mid 1.0 <- broken-top 1.0 <- the manifest"),
            "{message}"
        );
    }

    #[test]
    fn exclude_and_pinned_roots() {
        let universe = fixture();
        let mut request = request(&["broken-top"]);
        request.exclude.insert("libmissing".into());
        let closure = names(&resolve(&universe, &request).unwrap());
        assert_eq!(closure, ["broken-mid=1.0", "broken-top=1.0"]);

        let pinned = Request {
            roots: vec![("libc6".into(), Some("2.36-8".into()))],
            ..Request::default()
        };
        let closure = names(&resolve(&universe, &pinned).unwrap());
        assert!(closure.contains(&"libc6=2.36-8".to_string()));
        let gone = Request {
            roots: vec![("libc6".into(), Some("2.31-1".into()))],
            ..Request::default()
        };
        let err = resolve(&universe, &gone).unwrap_err();
        assert_eq!(
            err.to_string(),
            "package libc6 is not in the index at version 2.31-1"
        );
    }
}
