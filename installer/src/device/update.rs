//! `install --update`: recognise a hiperiso stick, build the new ESP in
//! memory, and rewrite only the ESP and the boot code.

use std::fmt;
use std::fs;
use std::io::{Cursor, Read, Seek, SeekFrom, Write};
use std::path::Path;

use hiperiso_stick::build_json::BuildMarker;
use hiperiso_stick::io::io_err;
use sha2::{Digest, Sha256};

use super::install::{Region, drop_cache, hash_region, open_exclusive, sync};
use super::recognise::recognise;
use super::refusals::check_target;
use super::{BlockDevice, DeviceError, human};
use crate::bios_boot::{self, BiosBoot};
use crate::fat::{self, FatError, FatOptions};
use crate::layout::{Extent, Identity};
use crate::mbr::BOOT_CODE_SIZE;
use crate::table::DiskTable;

/// A recognised hiperiso stick and the new ESP to put on it.
pub struct UpdatePlan {
    pub device: BlockDevice,
    pub table: DiskTable,
    pub data: Extent,
    pub esp: Extent,
    /// `"hiperiso"` marker of the build.json found on the stick (None when
    /// an interrupted update had left the ESP blank).
    pub current_build: Option<BuildMarker>,
    pub new_esp: Vec<u8>,
    pub esp_label: String,
    /// GRUB's BIOS boot code from the new ESP tree (None: sector 0's boot
    /// code is zeroed, as the payload has no BIOS path).
    pub bios: Option<BiosBoot>,
}

impl fmt::Display for UpdatePlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.device)?;
        writeln!(f, "hiperiso stick, {} partition table", self.table)?;
        writeln!(
            f,
            "  data partition bytes {}..{} ({}): left untouched",
            self.data.offset,
            self.data.end(),
            human(self.data.len)
        )?;
        writeln!(
            f,
            "  ESP bytes {}..{} ({}): rewritten, label {}",
            self.esp.offset,
            self.esp.end(),
            human(self.esp.len),
            self.esp_label
        )?;
        match &self.current_build {
            Some(build) => writeln!(f, "  current build: {}", build.summary())?,
            None => writeln!(
                f,
                "  current ESP: blank (an earlier update was interrupted)"
            )?,
        }
        writeln!(
            f,
            "writes, in order: ESP boot sector zeroed; ESP sectors 1..end; ESP boot sector; {}MBR boot code (440 bytes)",
            match &self.bios {
                Some(_) => "GRUB's BIOS core image (before the data partition); ",
                None => "",
            }
        )?;
        writeln!(f, "then fsync and read the ESP back to compare sha256")
    }
}

/// Recognises the stick and builds the new ESP in memory; writes nothing.
pub fn plan_update(
    device_path: &Path,
    esp_tree: &Path,
    esp_label: &str,
    seed: &str,
    source_date_epoch: u64,
    force: bool,
) -> Result<UpdatePlan, DeviceError> {
    let device = BlockDevice::probe(device_path)?;
    check_target(&device, force)?;
    let mut file = fs::File::open(device_path).map_err(io_err("open", device_path))?;
    let (table, data, esp, current_build) =
        recognise(&mut file, device.size).map_err(|source| DeviceError::NotHiperiso {
            path: device_path.to_path_buf(),
            source,
        })?;
    let opts = FatOptions {
        label: esp_label.to_string(),
        volume_id: Identity::from_seed(seed).esp_volume_id,
        timestamp: source_date_epoch,
        hidden_sectors: u32::try_from(esp.first_lba()).unwrap_or(u32::MAX),
    };
    let bios = BiosBoot::from_esp_tree(esp_tree).map_err(|source| DeviceError::BiosBoot {
        tree: esp_tree.to_path_buf(),
        source,
    })?;
    if let Some(bios) = &bios {
        // Before anything is written: core.img must end before the data
        // partition, which an update never touches.
        bios.check_room(table, data.offset)
            .map_err(|source| DeviceError::BiosBoot {
                tree: esp_tree.to_path_buf(),
                source,
            })?;
    }
    let mut new_esp = Cursor::new(vec![0u8; esp.len as usize]);
    fat::format(&mut new_esp, esp.len, Some(esp_tree), &opts).map_err(|source| match source {
        FatError::DoesNotFit { short, .. } => DeviceError::EspTooSmall {
            path: device_path.to_path_buf(),
            esp_size: esp.len,
            short,
        },
        source => DeviceError::Esp {
            tree: esp_tree.to_path_buf(),
            source,
        },
    })?;
    Ok(UpdatePlan {
        device,
        table,
        data,
        esp,
        current_build,
        new_esp: new_esp.into_inner(),
        esp_label: esp_label.to_string(),
        bios,
    })
}

/// Rewrites the ESP and the boot code. The data partition is never
/// written; the ESP's boot sector is zeroed first and written last, so an
/// interrupted update leaves a blank ESP that a rerun recognises.
pub fn execute_update(
    plan: &UpdatePlan,
    mut progress: impl FnMut(&str),
) -> Result<(), DeviceError> {
    let path = &plan.device.path;
    let mut dev = open_exclusive(path)?;
    let at = |dev: &mut fs::File, offset: u64, bytes: &[u8]| -> Result<(), DeviceError> {
        dev.seek(SeekFrom::Start(offset))
            .map_err(io_err("seek", path))?;
        dev.write_all(bytes).map_err(|source| DeviceError::Write {
            path: path.clone(),
            offset,
            source,
        })?;
        sync(dev, path)
    };
    progress("blanking the ESP boot sector");
    at(&mut dev, plan.esp.offset, &[0u8; 512])?;
    progress("writing the ESP");
    at(&mut dev, plan.esp.offset + 512, &plan.new_esp[512..])?;
    at(&mut dev, plan.esp.offset, &plan.new_esp[..512])?;
    progress("writing the boot code");
    if let Some(bios) = &plan.bios {
        let core = bios.core_image(plan.table);
        at(&mut dev, BiosBoot::core_lba(plan.table) * 512, &core)?;
    }
    let mut sector0 = [0u8; 512];
    dev.seek(SeekFrom::Start(0))
        .and_then(|_| dev.read_exact(&mut sector0))
        .map_err(io_err("read sector 0 of", path))?;
    sector0[..BOOT_CODE_SIZE]
        .copy_from_slice(&bios_boot::boot_code(plan.bios.as_ref(), plan.table));
    at(&mut dev, 0, &sector0)?;
    progress("verifying");
    drop_cache(&dev);
    let region = Region {
        offset: plan.esp.offset,
        len: plan.esp.len,
    };
    let got = hash_region(&mut dev, region, |_| {}).map_err(io_err("read back", path))?;
    let want: [u8; 32] = Sha256::digest(&plan.new_esp).into();
    if got != want {
        return Err(DeviceError::VerifyFailed {
            path: path.clone(),
            offset: region.offset,
            end: region.end(),
        });
    }
    Ok(())
}
