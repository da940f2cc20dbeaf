//! Refusals shared by `install` and `install --update`: the system disk,
//! a disk in use, a disk that is not removable (without `--force`); and
//! `install`'s own: a disk that already holds a hiperiso stick (without
//! `--reinstall`). All of them come before any work.

use std::fs;
use std::path::Path;

use hiperiso_stick::io::io_err;

use super::recognise::{recognise, stick_contents};
use super::{BlockDevice, DeviceError};

/// Refusals shared by `install` and `install --update`.
pub(super) fn check_target(device: &BlockDevice, force: bool) -> Result<(), DeviceError> {
    if let Some(mountpoint) = device.system_mount() {
        return Err(DeviceError::SystemDisk {
            path: device.path.clone(),
            mountpoint,
        });
    }
    let uses = device.uses();
    if !uses.is_empty() {
        return Err(DeviceError::InUse {
            path: device.path.clone(),
            uses: uses.join("; "),
        });
    }
    if !device.removable && !force {
        return Err(DeviceError::NotRemovable {
            path: device.path.clone(),
            model: device.model.clone(),
        });
    }
    Ok(())
}

/// Everything `install` refuses, checked before any work (staging the
/// image takes a while): probes `device_path` and returns it.
/// `force` allows a disk that is not removable; `reinstall` a disk that
/// already holds a hiperiso stick, whose ISOs and sessions it would erase.
pub fn check_install(
    device_path: &Path,
    force: bool,
    reinstall: bool,
) -> Result<BlockDevice, DeviceError> {
    let device = BlockDevice::probe(device_path)?;
    check_target(&device, force)?;
    if reinstall {
        return Ok(device);
    }
    let mut disk = fs::File::open(device_path).map_err(io_err("open", device_path))?;
    if let Ok((_, data, _, marker)) = recognise(&mut disk, device.size) {
        let contents = stick_contents(&mut disk, data);
        return Err(DeviceError::HoldsStick {
            path: device.path.clone(),
            build: marker.map(|m| m.summary()),
            contents,
        });
    }
    Ok(device)
}

/// Everything `install --update` refuses, checked before any work: the
/// shared refusals, and a disk that is not a hiperiso stick.
pub fn check_update(device_path: &Path, force: bool) -> Result<BlockDevice, DeviceError> {
    let device = BlockDevice::probe(device_path)?;
    check_target(&device, force)?;
    let mut disk = fs::File::open(device_path).map_err(io_err("open", device_path))?;
    recognise(&mut disk, device.size).map_err(|source| DeviceError::NotHiperiso {
        path: device_path.to_path_buf(),
        source,
    })?;
    Ok(device)
}
