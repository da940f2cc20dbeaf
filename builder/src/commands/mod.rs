//! The crate's error type: one variant per module error, so verbs can use `?`.

pub mod build;
pub mod bump;
pub mod disk;
pub mod fetch;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Manifest(#[from] crate::model::manifest::ManifestError),
    #[error(transparent)]
    Store(#[from] crate::sources::store::StoreError),
    #[error(transparent)]
    Fetch(#[from] crate::sources::fetch::FetchError),
    #[error(transparent)]
    Watch(#[from] crate::sources::watch::WatchError),
    #[error(transparent)]
    Bump(#[from] crate::commands::bump::BumpError),
    #[error(transparent)]
    Recipe(#[from] crate::model::recipe::RecipeError),
    #[error(transparent)]
    Step(#[from] crate::steps::StepError),
    #[error(transparent)]
    DebianProfile(#[from] crate::debian::closure::ProfileError),
    #[error(transparent)]
    Tools(#[from] crate::steps::tools::ToolsError),
    #[error(transparent)]
    Record(#[from] crate::model::build_record::RecordError),
    #[error(transparent)]
    Disk(Box<crate::commands::disk::DiskError>),
    #[error(transparent)]
    Run(#[from] crate::vm::RunError),
    #[error(transparent)]
    Runtime(#[from] crate::steps::runtime::RuntimeError),
    #[error("{0}")]
    Usage(String),
    #[error("`hiperiso-build {verb}` is not implemented yet (see issue {issue})")]
    NotImplemented { verb: &'static str, issue: u32 },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// For verbs whose implementation lands in another issue.
pub fn not_implemented(verb: &'static str, issue: u32) -> Result<()> {
    Err(Error::NotImplemented { verb, issue })
}
