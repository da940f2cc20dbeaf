//! A profile's steps, built: the recipe steps on the tools tree, and the
//! runtime step pinned to the lock's toolchain. What `build`, `verify` and
//! `image` share.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::model::lock::LockError;
use crate::model::manifest::ManifestError;
use crate::model::recipe::RecipeError;
use crate::project::Project;
use crate::steps::remote::{Remote, RemoteError};
use crate::steps::run::Builder;
use crate::steps::runtime::{self, RuntimeError};
use crate::steps::tools::{self, ToolsError};
use crate::steps::{StepError, StepResult, ToolsTree};

#[derive(Debug, thiserror::Error)]
pub enum ProfileStepsError {
    #[error("selecting the profile")]
    Profile(#[source] ManifestError),
    #[error(transparent)]
    Recipe(#[from] RecipeError),
    #[error("--tools-root {}: not a directory", .0.display())]
    ToolsRoot(PathBuf),
    #[error("preparing the tools tree")]
    Tools(#[source] ToolsError),
    #[error("hashing the tools tree {}", .path.display())]
    HashTools {
        path: PathBuf,
        #[source]
        source: Box<StepError>,
    },
    #[error("opening the step cache")]
    Store(#[source] crate::sources::store::StoreError),
    #[error("reading the lock (it pins the runtime step's toolchain)")]
    Lock(#[source] LockError),
    #[error(
        "{} is missing: run `hiperiso-build lock` (it pins the runtime step's toolchain)",
        .0.display()
    )]
    NoLock(PathBuf),
    #[error(transparent)]
    Step(#[from] StepError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error("setting up the shared step caches")]
    Remote(#[source] Box<RemoteError>),
}

/// The tools tree: `tools_root` (hashed in full), else the one the lock's
/// `[tools]` closure names (unpacked when a step first runs), whose
/// packages must include every recipe's `tools`.
pub fn tools_tree(
    project: &Project,
    tools_root: Option<&Path>,
) -> Result<ToolsTree, ProfileStepsError> {
    match tools_root {
        Some(root) if root.is_dir() => {
            ToolsTree::from_dir(root).map_err(|source| ProfileStepsError::HashTools {
                path: root.to_path_buf(),
                source: Box::new(source),
            })
        }
        Some(root) => Err(ProfileStepsError::ToolsRoot(root.to_path_buf())),
        None => {
            // Unpacked only when a step runs (Builder::run): steps pulled
            // from a shared cache need only the tree's hash.
            let prepared = tools::planned(project).map_err(ProfileStepsError::Tools)?;
            project
                .recipes()?
                .check_tools(&tools::package_names(&prepared.tools), &project.manifest)?;
            Ok(ToolsTree {
                root: prepared.root,
                hash: prepared.hash,
            })
        }
    }
}

/// The step builder on the tools tree `tools_root` asks for.
pub fn builder<'a>(
    project: &'a Project,
    tools_root: Option<&Path>,
) -> Result<Builder<'a>, ProfileStepsError> {
    let recipes = project.recipes()?;
    let tools = tools_tree(project, tools_root)?;
    let store = project.store().map_err(ProfileStepsError::Store)?;
    let mut builder = Builder::new(project, recipes, tools, store);
    builder.unpack_tools = tools_root.is_none();
    builder.remote =
        Remote::from_project(project).map_err(|e| ProfileStepsError::Remote(Box::new(e)))?;
    Ok(builder)
}

/// Whether `steps` names the runtime step (built by the host's cargo, not
/// from a recipe), and the recipe steps among them.
pub fn split_runtime(steps: &[String]) -> (bool, Vec<String>) {
    let runtime = steps.iter().any(|s| s == runtime::NAME);
    let recipes = steps
        .iter()
        .filter(|s| *s != runtime::NAME)
        .cloned()
        .collect();
    (runtime, recipes)
}

/// The runtime step, pinned to the committed lock's toolchain.
pub fn runtime_for(project: &Project) -> Result<StepResult, ProfileStepsError> {
    let lock = project
        .lock()
        .map_err(ProfileStepsError::Lock)?
        .ok_or_else(|| ProfileStepsError::NoLock(project.lock_path()))?;
    Ok(runtime::build_pinned(project, lock)?)
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

impl BuiltSteps {
    fn add(&mut self, name: String, result: &StepResult) {
        self.trees.insert(name.clone(), result.record.tree.clone());
        self.paths.insert(name, result.path.clone());
    }
}

/// Builds the active profile's `steps` (for `image`), on the tools tree of
/// the lock, or `$HIPERISO_TOOLS_ROOT` when set.
pub fn build_profile_steps(project: &Project) -> Result<BuiltSteps, ProfileStepsError> {
    let (_, profile) = project.profile().map_err(ProfileStepsError::Profile)?;
    let (runtime, wanted) = split_runtime(&profile.steps);
    let mut built = BuiltSteps::default();
    if !wanted.is_empty() {
        project.recipes()?;
        let tools_root = std::env::var_os("HIPERISO_TOOLS_ROOT")
            .filter(|p| !p.is_empty())
            .map(PathBuf::from);
        let builder = builder(project, tools_root.as_deref())?;
        built.tools = Some(builder.tools.hash.clone());
        for (name, result) in builder.build(&wanted)? {
            built.add(name, &result);
        }
    }
    if runtime {
        built.add(runtime::NAME.into(), &runtime_for(project)?);
    }
    Ok(built)
}
