//! The `build`, `verify`, `clean` and `gc` verbs: glue between the CLI,
//! the manifest, the recipes and the step cache.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::cli::StepsArgs;
use crate::commands::{Error, Result};
use crate::model::manifest::Manifest;
use crate::model::recipe::Recipes;
use crate::settings::Context;
use crate::steps::runtime;
use crate::steps::tools;
use crate::steps::{self, Builder, Cache, Outcome, StepResult, ToolsTree};

/// The recipes directory next to the manifest.
pub fn recipes_dir(ctx: &Context) -> PathBuf {
    ctx.manifest_dir().join("recipes")
}

fn load(ctx: &Context) -> Result<(Manifest, Recipes)> {
    let manifest = ctx.load_manifest()?;
    let recipes = Recipes::load_dir(&recipes_dir(ctx))?;
    recipes.check(&manifest)?;
    Ok((manifest, recipes))
}

/// The tools tree: `--tools-root` (hashed in full), else the one unpacked
/// from the lock's `[tools]` closure, whose packages must include every
/// recipe's `tools`.
fn tools_tree(
    ctx: &Context,
    manifest: &Manifest,
    recipes: &Recipes,
    tools_root: Option<&Path>,
) -> Result<ToolsTree> {
    match tools_root {
        Some(root) if root.is_dir() => Ok(ToolsTree::from_dir(root)?),
        Some(root) => Err(Error::Usage(format!(
            "--tools-root {}: not a directory",
            root.display()
        ))),
        None => {
            let prepared = tools::prepare(ctx, manifest)?;
            recipes.check_tools(&tools::package_names(&prepared.tools), manifest)?;
            Ok(ToolsTree {
                root: prepared.root,
                hash: prepared.hash,
            })
        }
    }
}

/// The step builder on the tools tree `args` asks for.
fn builder<'a>(
    ctx: &'a Context,
    manifest: &'a Manifest,
    recipes: &'a Recipes,
    args: &StepsArgs,
) -> Result<Builder<'a>> {
    let tools = tools_tree(ctx, manifest, recipes, args.tools_root.as_deref())?;
    Ok(Builder::new(ctx, manifest, recipes, tools, ctx.store()?))
}

/// `hiperiso-build build [STEP...]`: prints each requested step's output
/// tree (`STEP PATH`) on stdout.
pub fn build(ctx: &Context, args: &StepsArgs) -> Result<()> {
    let (manifest, recipes) = load(ctx)?;
    let (runtime, wanted) = split_runtime(&args.steps);
    let mut results = if wanted.is_empty() && !args.steps.is_empty() {
        BTreeMap::new()
    } else {
        builder(ctx, &manifest, &recipes, args)?.build(&wanted)?
    };
    if runtime {
        results.insert(runtime::NAME.into(), runtime_for(ctx, &manifest)?);
    }
    let built = results
        .values()
        .filter(|r| r.outcome == Outcome::Built)
        .count();
    let wanted: Vec<&String> = if args.steps.is_empty() {
        results.keys().collect()
    } else {
        args.steps.iter().collect()
    };
    for name in wanted {
        println!("{name} {}", results[name].path.display());
    }
    if ctx.verbosity >= 0 {
        eprintln!(
            "{} step(s): {built} built, {} up to date",
            results.len(),
            results.len() - built
        );
    }
    Ok(())
}

/// Whether `steps` names the runtime step (built by the host's cargo, not
/// from a recipe), and the recipe steps among them.
fn split_runtime(steps: &[String]) -> (bool, Vec<String>) {
    let runtime = steps.iter().any(|s| s == runtime::NAME);
    let recipes = steps
        .iter()
        .filter(|s| *s != runtime::NAME)
        .cloned()
        .collect();
    (runtime, recipes)
}

/// The runtime step, pinned to the committed lock's toolchain.
fn runtime_for(ctx: &Context, manifest: &Manifest) -> Result<StepResult> {
    let path = crate::debian::closure::lock_path(ctx);
    let lock = crate::model::lock::Lock::read(&path)
        .map_err(crate::debian::closure::ProfileError::from)?
        .ok_or_else(|| {
            Error::Usage(format!(
                "{} is missing: run `hiperiso-build lock` (it pins the runtime step's toolchain)",
                path.display()
            ))
        })?;
    Ok(runtime::build_pinned(ctx, manifest, &lock)?)
}

/// What `image` records of the steps it built.
#[derive(Debug, Clone, Default)]
pub struct BuiltSteps {
    /// Every step built for the image (with what they need) -> output tree
    /// hash.
    pub trees: BTreeMap<String, String>,
    /// Each step's output directory in the cache.
    pub paths: BTreeMap<String, PathBuf>,
    /// The tools tree's hash (None when no step ran).
    pub tools: Option<String>,
}

/// Builds the active profile's `steps` (for `image`), on the tools tree of
/// the lock, or `$HIPERISO_TOOLS_ROOT` when set.
pub fn build_profile_steps(ctx: &Context, manifest: &Manifest) -> Result<BuiltSteps> {
    let (_, profile) = ctx.profile(manifest)?;
    let (runtime, wanted) = split_runtime(&profile.steps);
    let mut built = BuiltSteps::default();
    if !wanted.is_empty() {
        let recipes = Recipes::load_dir(&recipes_dir(ctx))?;
        recipes.check(manifest)?;
        let tools_root = std::env::var_os("HIPERISO_TOOLS_ROOT")
            .filter(|p| !p.is_empty())
            .map(PathBuf::from);
        let tools = tools_tree(ctx, manifest, &recipes, tools_root.as_deref())?;
        built.tools = Some(tools.hash.clone());
        let builder = Builder::new(ctx, manifest, &recipes, tools, ctx.store()?);
        for (name, result) in builder.build(&wanted)? {
            built.add(name, &result);
        }
    }
    if runtime {
        built.add(runtime::NAME.into(), &runtime_for(ctx, manifest)?);
    }
    Ok(built)
}

impl BuiltSteps {
    fn add(&mut self, name: String, result: &StepResult) {
        self.trees.insert(name.clone(), result.record.tree.clone());
        self.paths.insert(name, result.path.clone());
    }
}

/// `hiperiso-build verify [STEP...]`.
pub fn verify(ctx: &Context, args: &StepsArgs) -> Result<()> {
    let (manifest, recipes) = load(ctx)?;
    let (runtime, wanted) = split_runtime(&args.steps);
    if !wanted.is_empty() || args.steps.is_empty() {
        for (name, tree) in &builder(ctx, &manifest, &recipes, args)?.verify(&wanted)? {
            println!("{name} {tree} reproducible");
        }
    }
    if runtime {
        runtime_for(ctx, &manifest)?;
        let tree = runtime::RuntimeStep::new(ctx, &manifest)?.verify()?;
        println!("{} {tree} reproducible", runtime::NAME);
    }
    Ok(())
}

/// `hiperiso-build clean`: removes this manifest's build outputs, logs and
/// work directories (downloads stay).
pub fn clean(ctx: &Context) -> Result<()> {
    let recipes = Recipes::load_dir(&recipes_dir(ctx))?;
    let cache = Cache::new(ctx.store()?.root());
    let mut names: BTreeSet<String> = recipes.by_name.keys().cloned().collect();
    names.insert(runtime::NAME.into());
    let removed = steps::clean(&cache, &names)?;
    ctx.say(format!(
        "removed {} step record(s), {} output tree(s), {} log(s), {} work dir(s)",
        removed.records, removed.trees, removed.logs, removed.work
    ));
    Ok(())
}

/// `hiperiso-build gc`: keeps the outputs of the current recipes (their
/// text, files and source pins) and removes every other build output.
/// Downloaded sources and packages are not touched.
pub fn gc(ctx: &Context) -> Result<()> {
    let (manifest, recipes) = load(ctx)?;
    let store = ctx.store()?;
    let tools = ToolsTree {
        root: PathBuf::new(),
        hash: String::new(),
    };
    let builder = Builder::new(ctx, &manifest, &recipes, tools, store.clone());
    let all: Vec<String> = recipes.by_name.keys().cloned().collect();
    let mut current = Vec::new();
    for name in recipes.order(&all)? {
        let recipe = recipes.get(&name)?;
        current.push(steps::CurrentStep {
            step: name.clone(),
            inputs: builder.inputs_hash(recipe)?,
            steps: recipe.steps.clone(),
        });
    }
    // The runtime step's current output (a manifest outside a hiperiso
    // checkout has no runtime/ to build it from).
    if ctx.manifest_dir().join("runtime").is_dir() {
        current.push(steps::CurrentStep {
            step: runtime::NAME.into(),
            inputs: runtime::RuntimeStep::new(ctx, &manifest)?.key()?,
            steps: Vec::new(),
        });
    }
    let removed = steps::gc(&Cache::new(store.root()), &current)?;
    ctx.say(format!(
        "removed {} step record(s), {} output tree(s), {} log(s), {} work dir(s)",
        removed.records, removed.trees, removed.logs, removed.work
    ));
    // Tools trees: keep the lock's current one (none is kept when the lock
    // has no current [tools]).
    let current_tools = crate::model::lock::Lock::read_tools(
        &crate::debian::closure::lock_path(ctx),
        &tools::lock_inputs(&manifest),
    )
    .ok()
    .map(|t| tools::tree_hash(&t));
    let removed = tools::gc(store.root(), current_tools.as_deref())?;
    if removed > 0 {
        ctx.say(format!("removed {removed} old tools tree(s)"));
    }
    Ok(())
}
