//! `install --image`: a finished image file written onto a device as it
//! is (the stick gets the image's size and table), with `install`'s
//! refusals, sparse writes (only the data partition's allocated extents)
//! and read-back.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

use hiperiso_stick::build_json::BuildMarker;
use hiperiso_stick::io::io_err;

use super::install::{InstallProgress, WriteStep, describe_writes, write_and_verify, write_steps};
use super::recognise::recognise;
use super::refusals::check_install;
use super::{BlockDevice, DeviceError, InstallReport, human};
use crate::layout::Extent;
use crate::table::DiskTable;

/// Everything `install --image` will do; printing it is `--dry-run`.
pub struct ImageInstallPlan {
    pub device: BlockDevice,
    pub image: PathBuf,
    /// The image's size: what the stick's table describes.
    pub size: u64,
    pub table: DiskTable,
    pub data: Extent,
    pub esp: Extent,
    pub build: Option<BuildMarker>,
    pub steps: Vec<WriteStep>,
}

/// Checks the target (as [`check_install`]) and that `image` is a
/// hiperiso image (data partition then ESP with a build marker) that fits
/// the device; writes nothing.
pub fn plan_image_install(
    device_path: &Path,
    image: &Path,
    force: bool,
    reinstall: bool,
) -> Result<ImageInstallPlan, DeviceError> {
    let device = check_install(device_path, force, reinstall)?;
    let mut file = fs::File::open(image).map_err(io_err("open", image))?;
    let size = file.metadata().map_err(io_err("stat", image))?.len();
    if size > device.size {
        return Err(DeviceError::ImageTooBig {
            path: device.path.clone(),
            image: image.to_path_buf(),
            image_size: size,
            device_size: device.size,
        });
    }
    let (table, data, esp, build) =
        recognise(&mut file, size).map_err(|source| DeviceError::NotAnImage {
            image: image.to_path_buf(),
            source,
        })?;
    let steps = write_steps((&file, image), (data, esp), size, device.size)?;
    Ok(ImageInstallPlan {
        device,
        image: image.to_path_buf(),
        size,
        table,
        data,
        esp,
        build,
        steps,
    })
}

impl ImageInstallPlan {
    pub fn bytes_to_write(&self) -> u64 {
        self.steps.iter().map(WriteStep::bytes).sum()
    }
}

impl fmt::Display for ImageInstallPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.device)?;
        writeln!(
            f,
            "image:     {} ({}, {} bytes){}",
            self.image.display(),
            human(self.size),
            self.size,
            self.build
                .as_ref()
                .map(|b| format!(", {}", b.summary()))
                .unwrap_or_default()
        )?;
        writeln!(
            f,
            "new layout (ALL DATA ON THE DEVICE WILL BE LOST): the image's {} table as it is",
            self.table
        )?;
        writeln!(
            f,
            "  1: data  bytes {}..{} ({}), exFAT",
            self.data.offset,
            self.data.end(),
            human(self.data.len)
        )?;
        writeln!(
            f,
            "  2: ESP   bytes {}..{} ({})",
            self.esp.offset,
            self.esp.end(),
            human(self.esp.len)
        )?;
        if self.device.size > self.size {
            writeln!(
                f,
                "  the last {} of the device stay unused (a plain `install` fills the device)",
                human(self.device.size - self.size)
            )?;
        }
        describe_writes(f, &self.steps)
    }
}

/// Runs a plan: writes (table last), fsyncs, verifies, rescans.
pub fn execute_image_install(
    plan: &ImageInstallPlan,
    progress: impl FnMut(InstallProgress),
) -> Result<InstallReport, DeviceError> {
    let mut image = fs::File::open(&plan.image).map_err(io_err("open", &plan.image))?;
    write_and_verify(
        &plan.device,
        (&mut image, &plan.image),
        &plan.steps,
        &[plan.data, plan.esp],
        progress,
    )
}
