//! The commands' errors: the verb-specific ones and [`Error`], which
//! gathers every lower layer's error so verbs can use `?`.

use std::io;
use std::path::PathBuf;

use hiperiso_installer::device::DeviceError;
use hiperiso_installer::image::ImageError;
use hiperiso_installer::inspect::InspectError;

use crate::debian::closure::ClosureError;
use crate::model::manifest::ManifestError;
use crate::payload::trees::StageError;
use crate::steps::runtime::RuntimeError;

#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error("writing the image")]
    Image(#[from] ImageError),
    #[error("writing to the device")]
    Device(#[from] DeviceError),
    #[error("inspecting the image or device")]
    Inspect(#[from] InspectError),
    #[error("--size {text:?}: {message}")]
    Size { text: String, message: String },
    #[error("staging the image's trees")]
    Stage(#[from] StageError),
    #[error("reading the confirmation from stdin")]
    Confirm(#[source] io::Error),
    #[error("not confirmed: nothing was written to {0}")]
    NotConfirmed(PathBuf),
}

#[derive(Debug, thiserror::Error)]
pub enum LockVerbError {
    #[error("selecting the profile")]
    Profile(#[from] ManifestError),
    #[error(transparent)]
    Closure(#[from] ClosureError),
    #[error(
        "{}: profile \"{profile}\" lists no Debian packages and there is no lock yet; \
         lock the profile that has them first, e.g. `hiperiso-build --profile debian lock`",
        manifest.display()
    )]
    NoPackages { manifest: PathBuf, profile: String },
    #[error("pinning the runtime step's Rust toolchain")]
    Toolchain(#[source] RuntimeError),
}

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
    Lock(#[from] LockVerbError),
    #[error("preparing the tools tree")]
    Tools(#[from] crate::steps::tools::ToolsError),
    #[error("writing the build record")]
    Record(#[from] crate::model::build_record::RecordError),
    #[error("staging the image's trees")]
    Stage(#[from] crate::payload::trees::StageError),
    #[error("building the ESP payload")]
    Esp(#[from] crate::payload::base::EspError),
    #[error(transparent)]
    Disk(Box<DiskError>),
    #[error(transparent)]
    Artifact(Box<crate::commands::artifact::ArtifactError>),
    #[error(transparent)]
    Run(#[from] crate::vm::RunError),
    #[error(transparent)]
    Runtime(#[from] crate::steps::runtime::RuntimeError),
    #[error("{0}")]
    Usage(String),
    #[error("{}: {count} problem(s)", file.display())]
    Config { file: PathBuf, count: usize },
    #[error(transparent)]
    Io(#[from] hiperiso_stick::io::IoError),
    #[error("making a key pair")]
    Keys(#[from] crate::steps::trust::TrustError),
    #[error("making the Secure Boot key")]
    SecureBootKey(#[from] crate::payload::secure_boot::SecureBootError),
    #[error("doctor: {} check(s) failed: {}", failed.len(), failed.join(", "))]
    Doctor { failed: Vec<String> },
    #[error("`hiperiso-build {verb}` is not implemented yet (see issue {issue})")]
    NotImplemented { verb: &'static str, issue: u32 },
}

impl From<DiskError> for Error {
    fn from(error: DiskError) -> Self {
        Error::Disk(Box::new(error))
    }
}

impl From<crate::commands::artifact::ArtifactError> for Error {
    fn from(error: crate::commands::artifact::ArtifactError) -> Self {
        Error::Artifact(Box::new(error))
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

impl Error {
    /// The process exit status for this error (`run --help` documents it):
    /// 2 the guest failed, 3 it got stuck or never reached hiperiso-init
    /// before `--timeout`, 1 everything else.
    pub fn exit_code(&self) -> u8 {
        use hiperiso_runtime::analyze::BootResult;
        match self {
            Error::Run(crate::vm::RunError::NotBooted { result, .. }) => match result {
                BootResult::Failed => 2,
                BootResult::Timeout | BootResult::Stuck | BootResult::Unknown => 3,
                _ => 1,
            },
            Error::Run(crate::vm::RunError::Timeout { .. }) => 3,
            _ => 1,
        }
    }
}
