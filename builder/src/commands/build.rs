//! The `build`, `verify`, `clean` and `gc` verbs.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::path::PathBuf;

use crate::cli::StepsArgs;
use crate::commands::error::Result;
use crate::model::recipe::Recipes;
use crate::project::Project;
use crate::settings::Settings;
use crate::steps::cache::Cache;
use crate::steps::gc::{self, CurrentStep};
use crate::steps::profile::{builder, runtime_for, split_runtime};
use crate::steps::run::Builder;
use crate::steps::runtime::{self, RuntimeStep};
use crate::steps::{Outcome, ToolsTree, tools};

/// `hiperiso-build build [STEP...]`: prints each requested step's output
/// tree (`STEP PATH`) on stdout.
pub fn build(settings: &Settings, args: &StepsArgs) -> Result<()> {
    let project = Project::load(with_shared(settings, args))?;
    project.recipes()?;
    let (runtime, wanted) = split_runtime(&args.steps);
    let mut results = if wanted.is_empty() && !args.steps.is_empty() {
        BTreeMap::new()
    } else {
        builder(&project, args.tools_root.as_deref())?.build(&wanted)?
    };
    if runtime {
        results.insert(runtime::NAME.into(), runtime_for(&project)?);
    }
    let count = |outcome| results.values().filter(|r| r.outcome == outcome).count();
    let (built, pulled) = (count(Outcome::Built), count(Outcome::Pulled));
    let wanted: Vec<&String> = if args.steps.is_empty() {
        results.keys().collect()
    } else {
        args.steps.iter().collect()
    };
    for name in wanted {
        println!("{name} {}", results[name].path.display());
    }
    if settings.verbosity >= 0 {
        let pulled = if pulled > 0 {
            format!(", {pulled} pulled")
        } else {
            String::new()
        };
        eprintln!(
            "{} step(s): {built} built, {} up to date{pulled}",
            results.len(),
            results.len() - built - count(Outcome::Pulled)
        );
    }
    Ok(())
}

/// The settings with the verb's `--cache-from`/`--cache-to` flags.
fn with_shared(settings: &Settings, args: &StepsArgs) -> Settings {
    let mut settings = settings.clone();
    settings.shared = (&args.shared).into();
    settings
}

/// `hiperiso-build verify [STEP...]`.
pub fn verify(settings: &Settings, args: &StepsArgs) -> Result<()> {
    let project = Project::load(with_shared(settings, args))?;
    project.recipes()?;
    let (runtime, wanted) = split_runtime(&args.steps);
    if !wanted.is_empty() || args.steps.is_empty() {
        for (name, tree) in &builder(&project, args.tools_root.as_deref())?.verify(&wanted)? {
            println!("{name} {tree} reproducible");
        }
    }
    if runtime {
        runtime_for(&project)?;
        let tree = RuntimeStep::new(&project)?.verify()?;
        println!("{} {tree} reproducible", runtime::NAME);
    }
    Ok(())
}

/// `hiperiso-build clean`: removes this manifest's build outputs, logs and
/// work directories (downloads stay). The manifest is not read.
pub fn clean(settings: &Settings) -> Result<()> {
    let recipes = Recipes::load_dir(&settings.recipes_dir())?;
    let store = crate::sources::store::Store::open_default(settings.cache_dir.as_deref())?;
    let cache = Cache::new(store.root());
    let mut names: BTreeSet<String> = recipes.by_name.keys().cloned().collect();
    names.insert(runtime::NAME.into());
    let removed = gc::clean(&cache, &names)?;
    settings.say(format!(
        "removed {} step record(s), {} output tree(s), {} log(s), {} work dir(s)",
        removed.records, removed.trees, removed.logs, removed.work
    ));
    Ok(())
}

/// `hiperiso-build gc`: keeps the outputs of the current recipes (their
/// text, files and source pins) and removes every other build output.
/// Downloaded sources and packages are not touched.
pub fn gc(settings: &Settings) -> Result<()> {
    let project = Project::load(settings.clone())?;
    let recipes = project.recipes()?;
    let store = project.store()?;
    let tools = ToolsTree {
        root: PathBuf::new(),
        hash: String::new(),
    };
    let builder = Builder::new(&project, recipes, tools, store.clone());
    let all: Vec<String> = recipes.by_name.keys().cloned().collect();
    let mut current = Vec::new();
    for name in recipes.order(&all)? {
        let recipe = recipes.get(&name)?;
        current.push(CurrentStep {
            step: name.clone(),
            inputs: builder.inputs_hash(recipe)?,
            steps: recipe.steps.clone(),
        });
    }
    // The runtime step's current output (a manifest outside a hiperiso
    // checkout has no runtime/ to build it from).
    if project.manifest_dir().join("runtime").is_dir() {
        current.push(CurrentStep {
            step: runtime::NAME.into(),
            inputs: RuntimeStep::new(&project)?.key()?,
            steps: Vec::new(),
        });
    }
    let removed = gc::gc(&Cache::new(store.root()), &current)?;
    settings.say(format!(
        "removed {} step record(s), {} output tree(s), {} log(s), {} work dir(s)",
        removed.records, removed.trees, removed.logs, removed.work
    ));
    // Tools trees: keep the lock's current one (none is kept when the lock
    // has no current [tools]).
    let current_tools = project
        .tools_lock(&tools::lock_inputs(&project.manifest))
        .ok()
        .map(tools::tree_hash);
    let removed = tools::gc(store.root(), current_tools.as_deref())?;
    if removed > 0 {
        settings.say(format!("removed {removed} old tools tree(s)"));
    }
    Ok(())
}
