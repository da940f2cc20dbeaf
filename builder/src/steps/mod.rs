//! The step cache, the step runner and the scheduler (DESIGN.md §3).
//!
//! Layout under the cache root, next to the store's `blobs/`:
//!
//! ```text
//! steps/<key>.json          a finished step: its name, key and output tree hash
//! trees/<tree>/             an output tree, named by its content hash
//! trees/<tree>.manifest     the tree's manifest (see tree.rs)
//! logs/<step>/<key>.log     every run's log, kept
//! locks/<key>.lock          flock(2) held while a step runs
//! work/<step>-<key>.<pid>/  a running step's build/, out/ and tmp/
//! verify/<step>/            both trees of a step that did not reproduce
//! ```
//!
//! A step's key is the sha256 of its recipe text, the content hashes of its
//! files, sources and upstream output trees, the tools tree's hash, the
//! environment and hiperiso's version. An output enters the cache by
//! rename, and the record is written last, so a killed build leaves at most
//! a stale work directory, which the next run of that step removes.

pub mod archive;
pub mod cache;
pub mod env;
pub mod gc;
pub mod key;
pub mod profile;
pub mod remote;
pub mod run;
pub mod runtime;
pub mod sandbox;
pub mod tools;
pub mod tree;
pub mod trust;
pub mod verify;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use hiperiso_stick::io::IoError;
use serde::{Deserialize, Serialize};

use crate::model::manifest::ManifestError;
use crate::model::recipe::RecipeError;
use crate::sources::fetch::FetchError;
use crate::sources::pins::UrlError;
use crate::sources::store::StoreError;
use crate::steps::sandbox::SandboxError;
use crate::steps::tree::{Tree, TreeError};

/// hiperiso's own version: part of every key.
pub const HIPERISO_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Where the build directory is inside the sandbox.
pub const BUILD_PATH: &str = "/build";
/// `verify` builds at a path of another length...
pub const VERIFY_BUILD_PATH: &str = "/build/hiperiso-verify/a-longer-build-path";
/// ...with another umask...
pub const VERIFY_UMASK: u32 = 0o027;
/// ...and another locale.
pub const VERIFY_LOCALE: &str = "C";

#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error(transparent)]
    Recipe(#[from] RecipeError),
    #[error("normalizing the output tree")]
    Tree(#[from] TreeError),
    #[error("running in the sandbox")]
    Sandbox(#[from] SandboxError),
    #[error("cannot fetch source `{source_name}` for step `{step}`")]
    Fetch {
        step: String,
        source_name: String,
        #[source]
        source: Box<SourceError>,
    },
    #[error(transparent)]
    Io(#[from] IoError),
    #[error(
        "step `{step}` failed ({status}); last lines of its log:\n{tail}\nfull log: {log}\n\
         (steps run without network; only the build directory, $out and /tmp are writable)"
    )]
    Failed {
        step: String,
        status: String,
        tail: String,
        log: PathBuf,
    },
    #[error("{recipe}: outputs: step `{step}` did not produce {missing} in $out (full log: {log})")]
    MissingOutput {
        step: String,
        recipe: PathBuf,
        missing: String,
        log: PathBuf,
    },
    #[error(
        "step `{step}` is not reproducible: {} file(s) differ: {}\n  both trees are kept in {dir}{}",
        differing.len(),
        differing.join(", "),
        diffoscope.as_ref().map(|p| format!("\n  diffoscope's report: {}", p.display())).unwrap_or_default()
    )]
    NotReproducible {
        step: String,
        differing: Vec<String>,
        dir: PathBuf,
        diffoscope: Option<PathBuf>,
    },
    #[error("a previous step failed")]
    Skipped,
    #[error("preparing the tools tree: {0}")]
    Tools(String),
    /// A `remote::RemoteError`, boxed as a trait object: remote.rs builds
    /// on this module's types, so naming its error here would be a cycle.
    #[error("shared step cache (--require-cache)")]
    Remote(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Why a step's source could not be had.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error(transparent)]
    Urls(#[from] UrlError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Fetch(#[from] FetchError),
}

/// The root that steps see as `/`, and its content hash.
#[derive(Debug, Clone)]
pub struct ToolsTree {
    pub root: PathBuf,
    pub hash: String,
}

impl ToolsTree {
    /// A prepared directory, hashed in full.
    pub fn from_dir(root: &Path) -> Result<Self, StepError> {
        let hash = Tree::scan(root)?.hash();
        Ok(Self {
            root: root.to_path_buf(),
            hash,
        })
    }
}

/// What the cache remembers about a finished step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    pub step: String,
    pub key: String,
    /// Content hash of the output tree.
    pub tree: String,
    /// Hash of the recipe text, its files and sources (for `gc`).
    pub inputs: String,
    /// The upstream steps' output trees it was built from.
    #[serde(default)]
    pub upstream: BTreeMap<String, String>,
    pub seconds: f64,
}

/// How a step came to have its output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Cached,
    /// Pulled from a shared cache (a registry).
    Pulled,
    Built,
}

#[derive(Debug, Clone)]
pub struct StepResult {
    pub record: StepRecord,
    pub outcome: Outcome,
    /// The output tree in the cache.
    pub path: PathBuf,
}
