//! The crate's error type: one variant per module error, so verbs can use `?`.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Manifest(#[from] crate::manifest::ManifestError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Fetch(#[from] crate::fetch::FetchError),
    #[error(transparent)]
    Watch(#[from] crate::watch::WatchError),
    #[error(transparent)]
    Bump(#[from] crate::bump::BumpError),
    #[error(transparent)]
    Recipe(#[from] crate::recipe::RecipeError),
    #[error(transparent)]
    Step(#[from] crate::steps::StepError),
    #[error(transparent)]
    DebianProfile(#[from] crate::profile_debian::ProfileError),
    #[error(transparent)]
    Tools(#[from] crate::tools::ToolsError),
    #[error(transparent)]
    Record(#[from] crate::build_record::RecordError),
    #[error(transparent)]
    Disk(Box<crate::disk_cmd::DiskError>),
    #[error(transparent)]
    Run(#[from] crate::run::RunError),
    #[error(transparent)]
    Runtime(#[from] crate::runtime_step::RuntimeError),
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
