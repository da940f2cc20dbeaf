//! Refusals shared by `install` and `install --update`: the system disk,
//! a disk in use, a disk that is not removable (without `--force`).

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
