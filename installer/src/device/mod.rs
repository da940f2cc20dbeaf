//! Block devices: what a device is (sysfs), whether it is in use
//! (mountinfo, swaps, holders, the system disk), `install` and
//! `install --update`, and making the kernel see the new partitions.
//!
//! - `probe`: sysfs, mountinfo, swaps: the [`BlockDevice`].
//! - `refusals`: what neither command will touch ([`check_install`],
//!   [`check_update`], run before any work).
//! - `install`: plan and execute a full install ([`plan_install`]).
//! - `from_image`: the same with a finished image file
//!   ([`plan_image_install`]).
//! - `recognise`: is this a hiperiso stick ([`recognise()`])?
//! - `update`: plan and execute `--update` ([`plan_update`]).
//! - `blkpg`: make the kernel see the new partitions.

mod blkpg;
mod from_image;
mod install;
mod probe;
mod recognise;
mod refusals;
mod update;

use std::io;
use std::path::PathBuf;

use hiperiso_stick::io::{IoError, human_bytes as human};

pub use blkpg::refresh_partitions;
pub use from_image::{ImageInstallPlan, execute_image_install, plan_image_install};
// The path's home is `hiperiso_stick::paths::esp::BUILD_JSON`; kept here
// for builder/ and tests/ that still name `device::BUILD_JSON`.
pub use install::{
    InstallPlan, InstallProgress, InstallReport, Region, WriteStep, execute_install, plan_install,
};
pub use probe::{BlockDevice, KernelPartition};
pub use recognise::{EspMarkerError, NotAStick, StickContents, recognise, stick_contents};
pub use refusals::{check_install, check_update};
pub use update::{UpdatePlan, execute_update, plan_update};

use crate::fat::FatError;
use crate::image::ImageError;

#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("the BIOS boot code of the ESP tree {}", .tree.display())]
    BiosBoot {
        tree: PathBuf,
        #[source]
        source: crate::bios_boot::BiosBootError,
    },
    #[error("{path}: not a block device")]
    NotBlockDevice { path: PathBuf },
    #[error("{path} is a partition, not a whole disk; give the disk itself ({disk})")]
    IsPartition { path: PathBuf, disk: PathBuf },
    #[error("{path} is in use: {uses}; unmount / swapoff / release it first")]
    InUse { path: PathBuf, uses: String },
    #[error("{path} holds the running system ({mountpoint} is on it); refusing to touch it")]
    SystemDisk { path: PathBuf, mountpoint: String },
    #[error("{path} ({model}) is not a removable disk; pass --force if you really mean it")]
    NotRemovable { path: PathBuf, model: String },
    #[error(
        "{path} already holds a hiperiso stick{}; a full install erases its data partition: {}. \
         To update the stick and keep them: `install --update {path}`. To erase them anyway: \
         `install --reinstall` (-I)",
        build.as_ref().map(|b| format!(" ({b})")).unwrap_or_default(),
        describe_contents(contents)
    )]
    HoldsStick {
        path: PathBuf,
        /// The ESP's build marker, summarised (None: a blank ESP).
        build: Option<String>,
        contents: StickContents,
    },
    #[error("the image {image} ({image_size} bytes) does not fit {path} ({device_size} bytes)")]
    ImageTooBig {
        path: PathBuf,
        image: PathBuf,
        image_size: u64,
        device_size: u64,
    },
    #[error("{image}: not a hiperiso image")]
    NotAnImage {
        image: PathBuf,
        #[source]
        source: NotAStick,
    },
    #[error("{path} is too small for hiperiso")]
    TooSmall {
        path: PathBuf,
        #[source]
        source: ImageError,
    },
    #[error(
        "{path} is not a hiperiso stick; `install --update` only updates sticks made by `install` or `image`"
    )]
    NotHiperiso {
        path: PathBuf,
        /// What was found instead.
        #[source]
        source: NotAStick,
    },
    #[error(
        "the new ESP payload does not fit the {esp_size}-byte ESP on {path}: {short} bytes short; \
         a full `install` (which erases the data partition) is needed"
    )]
    EspTooSmall {
        path: PathBuf,
        esp_size: u64,
        short: u64,
    },
    #[error("cannot build the ESP from {tree}")]
    Esp {
        tree: PathBuf,
        #[source]
        source: FatError,
    },
    #[error("cannot assemble the image for {path}")]
    Image {
        path: PathBuf,
        #[source]
        source: ImageError,
    },
    #[error("read-back of {path} differs from what was written at bytes {offset}..{end}")]
    VerifyFailed {
        path: PathBuf,
        offset: u64,
        end: u64,
    },
    #[error("{path}: no sysfs entry /sys/dev/block/{}:{}", dev.0, dev.1)]
    NoSysfs { path: PathBuf, dev: (u32, u32) },
    #[error("cannot open {path} exclusively (is it in use?)")]
    OpenExclusive {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("write to {path} failed near byte {offset}")]
    Write {
        path: PathBuf,
        offset: u64,
        #[source]
        source: io::Error,
    },
    #[error("BLKPG cannot {action} partition {partition} of {path}")]
    Blkpg {
        path: PathBuf,
        /// "delete stale" or "add".
        action: &'static str,
        partition: u32,
        #[source]
        source: io::Error,
    },
    /// Any other I/O: the operation and the path are in the [`IoError`].
    #[error(transparent)]
    Io(#[from] IoError),
}

/// `2 ISO(s) (a.iso, sub/b.iso) and 1 session(s) (2026-01-01_x)`.
fn describe_contents(c: &StickContents) -> String {
    fn list(what: &str, names: &[String]) -> String {
        const SHOWN: usize = 8;
        match names.len() {
            0 => format!("no {what}s"),
            n => {
                let mut shown = names[..n.min(SHOWN)].join(", ");
                if n > SHOWN {
                    shown.push_str(&format!(", and {} more", n - SHOWN));
                }
                format!("{n} {what}(s) ({shown})")
            }
        }
    }
    let mut text = format!(
        "{} and {}",
        list("ISO", &c.isos),
        list("session", &c.sessions)
    );
    if let Some(problem) = &c.unreadable {
        text.push_str(&format!(" (the listing is incomplete: {problem})"));
    }
    text
}
