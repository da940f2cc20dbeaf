//! `recipes/<step>.toml`: how one build step turns inputs into outputs.
//!
//! ```toml
//! description = "static busybox for the initramfs"
//! sources = ["busybox"]        # manifest sources: /inputs/sources/<name>/<file>
//! steps = []                   # other steps' outputs: /inputs/steps/<name>/
//! files = ["busybox/config"]   # files under recipes/: /inputs/files/<path>
//! tools = ["gcc", "make"]      # packages of the tools tree (mounted as /)
//! outputs = ["bin/busybox"]    # paths that must exist in $out afterwards
//! commands = [                 # run by /bin/sh -ex in the build directory
//!   "tar -xf /inputs/sources/busybox/* --strip-components=1",
//!   "make -j$JOBS",
//! ]
//! ```
//!
//! The recipe is data: every field is checked here, with errors naming the
//! file, line and field.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use crate::model::manifest::{Invalid, Manifest, ManifestError};

#[derive(Debug, thiserror::Error)]
pub enum RecipeError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{0}")]
    Invalid(Box<Invalid>),
    #[error("no recipe named `{name}` in {dir} (recipes: {known})")]
    UnknownStep {
        name: String,
        dir: PathBuf,
        known: String,
    },
    #[error("steps depend on each other in a cycle: {0}")]
    Cycle(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRecipe {
    #[serde(default)]
    description: String,
    #[serde(default)]
    sources: Vec<Spanned<String>>,
    #[serde(default)]
    steps: Vec<Spanned<String>>,
    #[serde(default)]
    files: Vec<Spanned<String>>,
    #[serde(default)]
    tools: Vec<Spanned<String>>,
    outputs: Spanned<Vec<Spanned<String>>>,
    commands: Spanned<Vec<String>>,
}

/// A parsed and checked recipe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipe {
    /// The step's name: the file's stem.
    pub name: String,
    pub path: PathBuf,
    /// The file's exact text: part of the step's cache key.
    pub text: String,
    pub description: String,
    pub sources: Vec<String>,
    pub steps: Vec<String>,
    /// Paths relative to the recipes directory.
    pub files: Vec<String>,
    pub tools: Vec<String>,
    pub outputs: Vec<String>,
    pub commands: Vec<String>,
}

fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.' || b == b'+')
        && !s.starts_with('.')
}

/// A relative path with no `..`, no `.` and no empty components.
fn is_clean_relative(s: &str) -> bool {
    !s.is_empty()
        && !s.contains('\n')
        && !s.contains('\t')
        && Path::new(s)
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
        && !s.ends_with('/')
        && !s.contains("//")
}

impl Recipe {
    /// Reads `path` (`recipes/<name>.toml`).
    pub fn load(path: &Path) -> Result<Self, RecipeError> {
        let text = fs::read_to_string(path).map_err(|source| RecipeError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses recipe text; `path` names the step (its stem) and the file in
    /// messages. Checks the shape only: see [`Recipes::check`] for
    /// references to the manifest and other recipes.
    pub fn parse(text: &str, path: &Path) -> Result<Self, RecipeError> {
        let invalid =
            |span: std::ops::Range<usize>, message: &str| match crate::model::manifest::invalid(
                text, path, span, message,
            ) {
                ManifestError::Invalid(inv) => RecipeError::Invalid(inv),
                other => unreachable!("manifest::invalid returned {other}"),
            };
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_string();
        if !is_name(&name) {
            return Err(invalid(
                0..0,
                &format!(
                    "recipe name {name:?} may only use letters, digits, `-`, `_`, `.` and `+`"
                ),
            ));
        }
        let raw: RawRecipe = toml::from_str(text)
            .map_err(|e| invalid(e.span().unwrap_or(0..0), e.message().trim()))?;
        for list in [&raw.sources, &raw.steps, &raw.tools] {
            for item in list {
                if !is_name(item.get_ref()) {
                    return Err(invalid(
                        item.span(),
                        &format!(
                            "{:?} is not a name (letters, digits, `-`, `_`, `.`, `+`)",
                            item.get_ref()
                        ),
                    ));
                }
            }
        }
        for item in raw.files.iter().chain(raw.outputs.get_ref()) {
            if !is_clean_relative(item.get_ref()) {
                return Err(invalid(
                    item.span(),
                    &format!(
                        "{:?} must be a relative path without `.`, `..` or empty parts",
                        item.get_ref()
                    ),
                ));
            }
        }
        if raw.outputs.get_ref().is_empty() {
            return Err(invalid(
                raw.outputs.span(),
                "list at least one path the step must produce in $out",
            ));
        }
        if raw.commands.get_ref().iter().all(|c| c.trim().is_empty()) {
            return Err(invalid(raw.commands.span(), "the step has no commands"));
        }
        if let Some(own) = raw.steps.iter().find(|s| *s.get_ref() == name) {
            return Err(invalid(own.span(), "a step cannot depend on itself"));
        }
        let strings = |list: Vec<Spanned<String>>| -> Vec<String> {
            list.into_iter().map(Spanned::into_inner).collect()
        };
        Ok(Recipe {
            name,
            path: path.to_path_buf(),
            text: text.to_string(),
            description: raw.description,
            sources: strings(raw.sources),
            steps: strings(raw.steps),
            files: strings(raw.files),
            tools: strings(raw.tools),
            outputs: strings(raw.outputs.into_inner()),
            commands: raw.commands.into_inner(),
        })
    }

    /// An error located at the first occurrence of `needle` (a quoted
    /// value) inside `field`'s array.
    fn invalid_at(&self, field: &str, value: &str, message: String) -> RecipeError {
        let quoted = format!("\"{value}\"");
        let field_start = self
            .text
            .lines()
            .scan(0usize, |offset, line| {
                let start = *offset;
                *offset += line.len() + 1;
                Some((start, line))
            })
            .find(|(_, line)| {
                line.trim_start()
                    .strip_prefix(field)
                    .is_some_and(|rest| rest.trim_start().starts_with('='))
            })
            .map_or(0, |(start, _)| start);
        let start = self.text[field_start..]
            .find(&quoted)
            .map_or(field_start, |i| field_start + i);
        match crate::model::manifest::invalid(
            &self.text,
            &self.path,
            start..start + quoted.len(),
            &message,
        ) {
            ManifestError::Invalid(inv) => RecipeError::Invalid(inv),
            other => unreachable!("manifest::invalid returned {other}"),
        }
    }
}

/// Every recipe of a `recipes/` directory, by step name.
#[derive(Debug, Clone, Default)]
pub struct Recipes {
    pub dir: PathBuf,
    pub by_name: BTreeMap<String, Recipe>,
}

impl Recipes {
    /// Loads `dir/*.toml` (a missing directory has no recipes).
    pub fn load_dir(dir: &Path) -> Result<Self, RecipeError> {
        let mut by_name = BTreeMap::new();
        let entries = match fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Ok(Self {
                    dir: dir.to_path_buf(),
                    by_name,
                });
            }
            Err(source) => {
                return Err(RecipeError::Read {
                    path: dir.to_path_buf(),
                    source,
                });
            }
        };
        for entry in entries {
            let entry = entry.map_err(|source| RecipeError::Read {
                path: dir.to_path_buf(),
                source,
            })?;
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "toml") && path.is_file() {
                let recipe = Recipe::load(&path)?;
                by_name.insert(recipe.name.clone(), recipe);
            }
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            by_name,
        })
    }

    pub fn get(&self, name: &str) -> Result<&Recipe, RecipeError> {
        self.by_name
            .get(name)
            .ok_or_else(|| RecipeError::UnknownStep {
                name: name.to_string(),
                dir: self.dir.clone(),
                known: self.known(),
            })
    }

    fn known(&self) -> String {
        if self.by_name.is_empty() {
            "none".to_string()
        } else {
            self.by_name.keys().cloned().collect::<Vec<_>>().join(", ")
        }
    }

    /// Checks every reference: sources exist in the manifest, steps exist,
    /// files exist under the recipes directory, and there is no cycle.
    pub fn check(&self, manifest: &Manifest) -> Result<(), RecipeError> {
        for recipe in self.by_name.values() {
            for source in &recipe.sources {
                if !manifest.sources.contains_key(source) {
                    let known = manifest
                        .sources
                        .keys()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ");
                    return Err(recipe.invalid_at(
                        "sources",
                        source,
                        format!(
                            "no source `{source}` in {} (sources: {known})",
                            manifest.path.display()
                        ),
                    ));
                }
            }
            for step in &recipe.steps {
                if !self.by_name.contains_key(step) {
                    return Err(recipe.invalid_at(
                        "steps",
                        step,
                        format!("no recipe `{step}` (recipes: {})", self.known()),
                    ));
                }
            }
            for file in &recipe.files {
                let path = self.dir.join(file);
                if !path.is_file() {
                    return Err(recipe.invalid_at(
                        "files",
                        file,
                        format!("{} is not a file", path.display()),
                    ));
                }
            }
        }
        self.order(&self.by_name.keys().cloned().collect::<Vec<_>>())?;
        Ok(())
    }

    /// Checks that every recipe's `tools` are packages of the tools tree
    /// (`packages`: the locked `[tools]` closure).
    pub fn check_tools(&self, packages: &[String], manifest: &Manifest) -> Result<(), RecipeError> {
        for recipe in self.by_name.values() {
            for tool in &recipe.tools {
                if !packages.contains(tool) {
                    return Err(recipe.invalid_at(
                        "tools",
                        tool,
                        format!(
                            "`{tool}` is not in the tools tree: add it to [tools] packages in {} \
                             and run `hiperiso-build lock`",
                            manifest.path.display()
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// `order` (dependencies first) sorted by weight, heaviest first, still
    /// with dependencies first. A step's weight is the size of its sources
    /// plus the heaviest chain of steps in `order` that need it: a proxy
    /// for the build time ahead of it (the kernel's tarball is 6 times
    /// QEMU's), known before anything was built.
    pub fn heaviest_first(&self, manifest: &Manifest, order: Vec<String>) -> Vec<String> {
        let mut weights: BTreeMap<&str, u64> = BTreeMap::new();
        for name in order.iter().rev() {
            let recipe = &self.by_name[name];
            let own: u64 = recipe
                .sources
                .iter()
                .filter_map(|s| manifest.sources.get(s).and_then(|s| s.size))
                .sum();
            let downstream = order
                .iter()
                .filter(|n| self.by_name[*n].steps.contains(name))
                .filter_map(|n| weights.get(n.as_str()))
                .max()
                .copied()
                .unwrap_or(0);
            weights.insert(name, own + downstream);
        }
        let mut sorted = order.clone();
        sorted.sort_by_key(|name| std::cmp::Reverse(weights[name.as_str()]));
        sorted
    }

    /// `wanted` and everything they need, dependencies first (ties broken
    /// by name, so the order is stable).
    pub fn order(&self, wanted: &[String]) -> Result<Vec<String>, RecipeError> {
        #[derive(Clone, Copy, PartialEq)]
        enum Mark {
            Visiting,
            Done,
        }
        fn visit(
            recipes: &Recipes,
            name: &str,
            marks: &mut BTreeMap<String, Mark>,
            stack: &mut Vec<String>,
            out: &mut Vec<String>,
        ) -> Result<(), RecipeError> {
            match marks.get(name) {
                Some(Mark::Done) => return Ok(()),
                Some(Mark::Visiting) => {
                    let start = stack.iter().position(|s| s == name).unwrap_or(0);
                    let mut cycle = stack[start..].to_vec();
                    cycle.push(name.to_string());
                    return Err(RecipeError::Cycle(cycle.join(" -> ")));
                }
                None => {}
            }
            let recipe = recipes.get(name)?;
            marks.insert(name.to_string(), Mark::Visiting);
            stack.push(name.to_string());
            let mut deps = recipe.steps.clone();
            deps.sort();
            for dep in &deps {
                visit(recipes, dep, marks, stack, out)?;
            }
            stack.pop();
            marks.insert(name.to_string(), Mark::Done);
            out.push(name.to_string());
            Ok(())
        }
        let mut marks = BTreeMap::new();
        let mut out = Vec::new();
        let mut wanted = wanted.to_vec();
        wanted.sort();
        for name in &wanted {
            visit(self, name, &mut marks, &mut Vec::new(), &mut out)?;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
description = "hello"
files = ["hello/msg"]
tools = ["busybox-static"]
outputs = ["msg"]
commands = ["cp /inputs/files/hello/msg $out/msg"]
"#;

    fn parse(text: &str) -> Result<Recipe, RecipeError> {
        Recipe::parse(text, Path::new("recipes/hello.toml"))
    }

    #[test]
    fn parses_a_recipe() {
        let recipe = parse(GOOD).unwrap();
        assert_eq!(recipe.name, "hello");
        assert_eq!(recipe.files, ["hello/msg"]);
        assert_eq!(recipe.outputs, ["msg"]);
        assert_eq!(recipe.text, GOOD);
    }

    #[test]
    fn unknown_key_names_file_line_and_field() {
        let text = GOOD.replace("tools =", "tool =");
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.starts_with("recipes/hello.toml:4:"), "{err}");
        assert!(err.contains("tool"), "{err}");
    }

    #[test]
    fn bad_output_path_is_located() {
        let text = GOOD.replace(r#"["msg"]"#, r#"["../escape"]"#);
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.starts_with("recipes/hello.toml:5:"), "{err}");
        assert!(err.contains("outputs"), "{err}");
        assert!(err.contains("relative path"), "{err}");
    }

    #[test]
    fn missing_commands_is_an_error() {
        let text = GOOD.replace(r#"commands = ["cp /inputs/files/hello/msg $out/msg"]"#, "");
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains("commands"), "{err}");
    }

    fn recipes_with(files: &[(&str, &str)]) -> (tempfile::TempDir, Recipes) {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            let path = dir.path().join(name);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, text).unwrap();
        }
        let recipes = Recipes::load_dir(dir.path()).unwrap();
        (dir, recipes)
    }

    fn step(deps: &[&str]) -> String {
        format!("steps = {deps:?}\noutputs = [\"x\"]\ncommands = [\"touch $out/x\"]\n")
    }

    #[test]
    fn order_puts_dependencies_first_and_finds_cycles() {
        let (_dir, recipes) = recipes_with(&[
            ("a.toml", &step(&["b", "c"])),
            ("b.toml", &step(&["c"])),
            ("c.toml", &step(&[])),
        ]);
        assert_eq!(recipes.order(&["a".into()]).unwrap(), ["c", "b", "a"]);
        let (_dir, recipes) = recipes_with(&[("a.toml", &step(&["b"])), ("b.toml", &step(&["a"]))]);
        let err = recipes.order(&["a".into()]).unwrap_err().to_string();
        assert!(err.contains("a -> b -> a"), "{err}");
    }

    #[test]
    fn check_names_missing_references() {
        let manifest =
            Manifest::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../hiperiso.toml"))
                .unwrap();
        let (_dir, recipes) = recipes_with(&[("a.toml", &step(&["zz"]))]);
        let err = recipes.check(&manifest).unwrap_err().to_string();
        assert!(err.contains("a.toml:1:"), "{err}");
        assert!(err.contains("no recipe `zz`"), "{err}");
        let (_dir, recipes) = recipes_with(&[(
            "a.toml",
            "outputs = [\"x\"]\nsources = [\"nope\"]\ncommands = [\"true\"]\n",
        )]);
        let err = recipes.check(&manifest).unwrap_err().to_string();
        assert!(err.contains("a.toml:2:"), "{err}");
        assert!(err.contains("no source `nope`"), "{err}");
    }
}
