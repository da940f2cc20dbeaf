//! The verbs, one file each: the top layer. A command turns the CLI's
//! arguments into [`Settings`], loads the [`Project`](crate::project::Project)
//! once and passes it down; [`Error`] gathers the lower layers' errors.

pub mod build;
pub mod bump;
pub mod fetch;
pub mod image;
pub mod inspect;
pub mod install;
pub mod lock;
pub mod run;
pub mod settings;

pub use settings::settings;

use crate::settings::Settings;

/// The crate's error type: one variant per lower layer's error, so verbs
/// can use `?`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Manifest(#[from] crate::model::manifest::ManifestError),
    #[error("opening the cache")]
    Store(#[from] crate::sources::store::StoreError),
    #[error(transparent)]
    Fetch(#[from] crate::sources::fetch::FetchError),
    #[error("a source's URLs")]
    Urls(#[from] crate::sources::pins::UrlError),
    #[error("finding the newest version")]
    Watch(#[from] crate::sources::watch::WatchError),
    #[error("rewriting the manifest's pins")]
    Pin(#[from] crate::sources::pins::PinError),
    #[error(transparent)]
    Recipe(#[from] crate::model::recipe::RecipeError),
    #[error(transparent)]
    Step(#[from] crate::steps::StepError),
    #[error(transparent)]
    ProfileSteps(Box<crate::steps::profile::ProfileStepsError>),
    #[error(transparent)]
    Lock(#[from] lock::LockVerbError),
    #[error("preparing the tools tree")]
    Tools(#[from] crate::steps::tools::ToolsError),
    #[error("writing the build record")]
    Record(#[from] crate::model::build_record::RecordError),
    #[error("staging the image's trees")]
    Stage(#[from] crate::payload::trees::StageError),
    #[error("building the ESP payload")]
    Esp(#[from] crate::payload::base::EspError),
    #[error(transparent)]
    Disk(Box<image::DiskError>),
    #[error(transparent)]
    Run(#[from] crate::vm::RunError),
    #[error(transparent)]
    Runtime(#[from] crate::steps::runtime::RuntimeError),
    #[error("{0}")]
    Usage(String),
    #[error("`hiperiso-build {verb}` is not implemented yet (see issue {issue})")]
    NotImplemented { verb: &'static str, issue: u32 },
}

impl From<image::DiskError> for Error {
    fn from(error: image::DiskError) -> Self {
        Error::Disk(Box::new(error))
    }
}

impl From<crate::steps::profile::ProfileStepsError> for Error {
    fn from(error: crate::steps::profile::ProfileStepsError) -> Self {
        Error::ProfileSteps(Box::new(error))
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// For verbs whose implementation lands in another issue.
pub fn not_implemented(verb: &'static str, issue: u32) -> Result<()> {
    Err(Error::NotImplemented { verb, issue })
}

/// `hiperiso-build doctor`.
pub fn doctor(_settings: &Settings) -> Result<()> {
    not_implemented("doctor", 8)
}
