//! Which filesystem a partition holds, from its first sectors: exFAT and
//! FAT volume serials (formatted as blkid and GRUB's `probe -u` print them,
//! `XXXX-XXXX`) and labels. GRUB finds the data partition by this UUID
//! (`hiperiso.data=UUID=…`), `hiperiso-init` mounts it by the same, and
//! `inspect` prints it.
//!
//! The boot-sector functions are pure over `&[u8]`; [`identify`] reads the
//! boot sector (and, for an exFAT label, the root directory) through
//! `Read + Seek`.

use std::io::{self, Read, Seek, SeekFrom};

/// The OEM name of every exFAT boot sector (bytes 3..11).
pub const EXFAT_OEM_NAME: &[u8; 8] = b"EXFAT   ";

/// Filesystem types we can mount as the data partition or the ESP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsType {
    Exfat,
    Vfat,
}

impl FsType {
    /// The name `mount(2)` wants.
    pub fn mount_name(self) -> &'static str {
        match self {
            FsType::Exfat => "exfat",
            FsType::Vfat => "vfat",
        }
    }
}

/// What a device holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsIdentity {
    pub fs_type: FsType,
    /// `XXXX-XXXX`, upper-case hex.
    pub uuid: String,
    pub label: Option<String>,
}

/// What the boot sector alone says. An exFAT label lives in the root
/// directory, so `label` is always `None` for exFAT here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootSectorIdentity {
    pub fs_type: FsType,
    /// The 32-bit volume serial (exFAT `VolumeSerialNumber`, FAT `BS_VolID`).
    pub serial: u32,
    pub label: Option<String>,
}

/// A volume serial as blkid, `/dev/disk/by-uuid` and GRUB print it:
/// `XXXX-XXXX`, upper-case hex.
pub fn serial_uuid(serial: u32) -> String {
    format!("{:04X}-{:04X}", serial >> 16, serial & 0xFFFF)
}

/// Whether `boot` (at least 11 bytes) is an exFAT boot sector.
pub fn is_exfat_boot_sector(boot: &[u8]) -> bool {
    boot.get(3..11) == Some(EXFAT_OEM_NAME)
}

fn u16le(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32le(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn fat_label(raw: &[u8]) -> Option<String> {
    let label = String::from_utf8_lossy(raw).trim_end().to_string();
    (!label.is_empty() && label != "NO NAME").then_some(label)
}

/// Identifies a 512-byte boot sector as exFAT, FAT32 or FAT12/16 (by its
/// extended BPB), or `None`.
pub fn parse_boot_sector(boot: &[u8; 512]) -> Option<BootSectorIdentity> {
    if is_exfat_boot_sector(boot) {
        return Some(BootSectorIdentity {
            fs_type: FsType::Exfat,
            serial: u32le(boot, 100),
            label: None,
        });
    }
    if boot[510] != 0x55 || boot[511] != 0xAA || u16le(boot, 11) == 0 {
        return None;
    }
    // FAT32 extended BPB (signature 0x29 at 66) or FAT12/16 (at 38).
    if &boot[82..87] == b"FAT32" && boot[66] == 0x29 {
        return Some(BootSectorIdentity {
            fs_type: FsType::Vfat,
            serial: u32le(boot, 67),
            label: fat_label(&boot[71..82]),
        });
    }
    if boot[38] == 0x29 && &boot[54..57] == b"FAT" {
        return Some(BootSectorIdentity {
            fs_type: FsType::Vfat,
            serial: u32le(boot, 39),
            label: fat_label(&boot[43..54]),
        });
    }
    None
}

/// Where an exFAT volume's root directory starts and how many bytes of it
/// hold the label (its first cluster, at most 64 KiB), or `None` when the
/// boot sector's geometry is out of range.
pub fn exfat_root_cluster(boot: &[u8; 512]) -> Option<(u64, usize)> {
    let sector_shift = u32::from(boot[108]);
    let cluster_shift = u32::from(boot[109]);
    if !(9..=12).contains(&sector_shift) || sector_shift + cluster_shift > 25 {
        return None;
    }
    let heap_offset = u64::from(u32le(boot, 88)) << sector_shift;
    let root_cluster = u64::from(u32le(boot, 96));
    if root_cluster < 2 {
        return None;
    }
    let cluster_bytes = 1u64 << (sector_shift + cluster_shift);
    let root = heap_offset + (root_cluster - 2) * cluster_bytes;
    Some((root, cluster_bytes.min(64 * 1024) as usize))
}

/// The volume label entry (type 0x83) among exFAT directory entries.
pub fn exfat_label_in(dir: &[u8]) -> Option<String> {
    for entry in dir.chunks_exact(32) {
        match entry[0] {
            0x00 => break,
            0x83 => {
                let count = usize::from(entry[1]).min(11);
                let units: Vec<u16> = (0..count).map(|i| u16le(entry, 2 + 2 * i)).collect();
                return Some(String::from_utf16_lossy(&units));
            }
            _ => {}
        }
    }
    None
}

/// The exFAT volume label, from the first cluster of the root directory.
pub fn exfat_label<R: Read + Seek>(dev: &mut R, boot: &[u8; 512]) -> io::Result<Option<String>> {
    let Some((root, len)) = exfat_root_cluster(boot) else {
        return Ok(None);
    };
    let mut dir = vec![0u8; len];
    dev.seek(SeekFrom::Start(root))?;
    dev.read_exact(&mut dir)?;
    Ok(exfat_label_in(&dir))
}

/// Identifies the filesystem, or `Ok(None)` when it is neither exFAT nor FAT.
pub fn identify<R: Read + Seek>(dev: &mut R) -> io::Result<Option<FsIdentity>> {
    let mut boot = [0u8; 512];
    dev.seek(SeekFrom::Start(0))?;
    if dev.read_exact(&mut boot).is_err() {
        return Ok(None);
    }
    let Some(found) = parse_boot_sector(&boot) else {
        return Ok(None);
    };
    let label = match found.fs_type {
        FsType::Exfat => exfat_label(dev, &boot)?,
        FsType::Vfat => found.label,
    };
    Ok(Some(FsIdentity {
        fs_type: found.fs_type,
        uuid: serial_uuid(found.serial),
        label,
    }))
}

#[cfg(test)]
mod tests;
