//! What can go wrong booting a stick in the outer VM.

use std::io;
use std::path::PathBuf;

use hiperiso_stick::io::IoError;

use hiperiso_installer::exfat::ExfatError;
use hiperiso_runtime::analyze::BootResult;
use hiperiso_runtime::session_list::SessionsError;

use crate::sources::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("opening the cache")]
    Store(#[source] StoreError),
    #[error(
        "no image given and none recorded in {record}: build one with `hiperiso-build image`, or pass --image IMG"
    )]
    NoImage { record: PathBuf },
    #[error(transparent)]
    Io(#[from] IoError),
    #[error("{}: no such image file", .0.display())]
    NoImageFile(PathBuf),
    #[error("cannot copy {} to {}: {stderr}", image.display(), copy.display())]
    Copy {
        image: PathBuf,
        copy: PathBuf,
        stderr: String,
    },
    #[error("{}: cannot read the partition table", path.display())]
    PartitionTable {
        path: PathBuf,
        #[source]
        source: hiperiso_installer::gpt::GptError,
    },
    #[error("{path}: no partition table with an exFAT data partition (is this a hiperiso image?)")]
    NoDataPartition { path: PathBuf },
    #[error("{path}: data partition")]
    Exfat {
        path: PathBuf,
        #[source]
        source: ExfatError,
    },
    #[error("{path}: GRUB lists only *.iso files under /ISOs/; rename it to end in .iso")]
    NotAnIso { path: PathBuf },
    #[error("--boot {name}: no /ISOs/{name} on the data partition (there: {available})")]
    NoSuchIso { name: String, available: String },
    #[error(
        "{}: cannot write the GRUB environment block",
        hiperiso_stick::paths::data::GRUBENV
    )]
    GrubEnv(#[source] hiperiso_runtime::grubenv::TooLarge),
    #[error(
        "no OVMF firmware found (tried {tried}); install the `ovmf` package or set HIPERISO_OVMF_CODE and HIPERISO_OVMF_VARS"
    )]
    NoOvmf { tried: String },
    #[error("cannot start {program}; install QEMU (`qemu-system-x86`) or set HIPERISO_QEMU")]
    QemuMissing {
        program: String,
        #[source]
        source: io::Error,
    },
    #[error(
        "the VM did not power off within {seconds} s; it was stopped. Raise --timeout, or look at the console above (image: {image})"
    )]
    Timeout { seconds: u64, image: PathBuf },
    #[error("QEMU failed ({status}); its console log is {console}")]
    QemuFailed { status: String, console: PathBuf },
    #[error(
        "no new session was recorded on {image}: the boot did not reach hiperiso-init (see the console above)"
    )]
    NoSession { image: PathBuf },
    #[error("{image}: reading the sessions")]
    Sessions {
        image: PathBuf,
        #[source]
        source: SessionsError,
    },
    #[error("session {id}: rendering the report")]
    Analyze {
        id: String,
        #[source]
        source: hiperiso_runtime::analyze::AnalyzeError,
    },
    #[error("session {id}: result {}, not booted", result.as_str())]
    NotBooted { id: String, result: BootResult },
    #[error("--accel kvm: KVM cannot run this VM here: {reason}")]
    KvmUnusable { reason: String },
    #[error("building the outer VM's QEMU (the `outer-qemu` step)")]
    OuterQemu(#[source] Box<crate::steps::profile::ProfileStepsError>),
}

pub type Result<T, E = RunError> = std::result::Result<T, E>;
