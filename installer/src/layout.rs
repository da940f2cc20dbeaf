//! The hiperiso partition plan (DESIGN.md §4): the exFAT data partition from
//! 1 MiB up to the ESP, the ESP at the end of the disk, everything 1 MiB
//! aligned, every identifier derived from the manifest's seed.

use std::fmt;
use std::io::{Seek, Write};
use std::str::FromStr;

use crate::gpt::{self, Gpt, GptPartition, Guid};
use crate::mbr::{self, Mbr};

pub const SECTOR: u64 = 512;
pub const MIB: u64 = 1024 * 1024;
/// The ESP is never smaller than this (FAT16 at 32 MiB, DESIGN.md §4).
pub const MIN_ESP_SIZE: u64 = 32 * MIB;
/// A data partition smaller than this is useless for ISOs and logs.
pub const MIN_DATA_SIZE: u64 = 16 * MIB;
/// GPT names of the two partitions; `install --update` recognises them.
pub const DATA_PARTITION_NAME: &str = "hiperiso data";
pub const ESP_PARTITION_NAME: &str = "hiperiso ESP";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableKind {
    Gpt,
    Mbr,
}

impl fmt::Display for TableKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TableKind::Gpt => "gpt",
            TableKind::Mbr => "mbr",
        })
    }
}

impl FromStr for TableKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "gpt" => Ok(TableKind::Gpt),
            "mbr" | "dos" | "msdos" => Ok(TableKind::Mbr),
            other => Err(format!(
                "unknown partition table {other:?} (expected gpt or mbr)"
            )),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    #[error(
        "a {have}-byte disk is too small: the layout needs at least {need} bytes \
         ({short} more): 1 MiB head, {min_data} bytes of data partition, a {esp}-byte ESP and the GPT tail"
    )]
    TooSmall {
        have: u64,
        need: u64,
        short: u64,
        min_data: u64,
        esp: u64,
    },
    #[error(transparent)]
    Mbr(#[from] mbr::MbrError),
    #[error(transparent)]
    Gpt(#[from] gpt::GptError),
}

/// A partition's place on the disk, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    pub offset: u64,
    pub len: u64,
}

impl Extent {
    pub fn end(&self) -> u64 {
        self.offset + self.len
    }
    pub fn first_lba(&self) -> u64 {
        self.offset / SECTOR
    }
    pub fn sectors(&self) -> u64 {
        self.len / SECTOR
    }
}

/// Identifiers derived from the seed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub disk_guid: Guid,
    pub data_guid: Guid,
    pub esp_guid: Guid,
    pub mbr_signature: u32,
    pub data_volume_serial: u32,
    pub esp_volume_id: u32,
}

impl Identity {
    pub fn from_seed(seed: &str) -> Self {
        let word = |purpose: &str| {
            let b = Guid::derive(seed, purpose).to_disk();
            u32::from_le_bytes([b[0], b[1], b[2], b[3]])
        };
        Identity {
            disk_guid: Guid::derive(seed, "gpt-disk"),
            data_guid: Guid::derive(seed, "gpt-partition-data"),
            esp_guid: Guid::derive(seed, "gpt-partition-esp"),
            mbr_signature: word("mbr-disk-signature"),
            data_volume_serial: word("exfat-volume-serial"),
            esp_volume_id: word("fat-volume-id"),
        }
    }

    /// The exFAT volume serial as Linux shows it (`/dev/disk/by-uuid`,
    /// `hiperiso.data=UUID=...`).
    pub fn data_fs_uuid(&self) -> String {
        let s = self.data_volume_serial;
        hiperiso_stick::fs_identity::serial_uuid(s)
    }
}

/// The full plan for one disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub table: TableKind,
    pub disk_size: u64,
    pub data: Extent,
    pub esp: Extent,
    pub identity: Identity,
}

fn align_down(v: u64, a: u64) -> u64 {
    v / a * a
}

impl Layout {
    /// Plans a disk of `disk_size` bytes with an ESP of `esp_size` bytes
    /// (rounded up to whole MiB).
    pub fn plan(
        table: TableKind,
        disk_size: u64,
        esp_size: u64,
        seed: &str,
    ) -> Result<Layout, LayoutError> {
        let esp_len = esp_size.max(MIN_ESP_SIZE).div_ceil(MIB) * MIB;
        let disk_size = align_down(disk_size, SECTOR);
        let tail = match table {
            TableKind::Gpt => (1 + gpt::ENTRY_ARRAY_SECTORS) * SECTOR,
            TableKind::Mbr => 0,
        };
        let esp_offset = align_down(disk_size.saturating_sub(tail + esp_len), MIB);
        let need = MIB + MIN_DATA_SIZE + esp_len + tail.div_ceil(MIB) * MIB;
        if disk_size < need || esp_offset < MIB + MIN_DATA_SIZE {
            return Err(LayoutError::TooSmall {
                have: disk_size,
                need,
                short: need.saturating_sub(disk_size).max(SECTOR),
                min_data: MIN_DATA_SIZE,
                esp: esp_len,
            });
        }
        let layout = Layout {
            table,
            disk_size,
            data: Extent {
                offset: MIB,
                len: esp_offset - MIB,
            },
            esp: Extent {
                offset: esp_offset,
                len: esp_len,
            },
            identity: Identity::from_seed(seed),
        };
        if table == TableKind::Mbr {
            layout.mbr()?;
        }
        Ok(layout)
    }

    pub fn disk_sectors(&self) -> u64 {
        self.disk_size / SECTOR
    }

    pub fn gpt(&self) -> Gpt {
        let part = |type_guid, unique_guid, extent: Extent, name: &str| GptPartition {
            type_guid,
            unique_guid,
            first_lba: extent.first_lba(),
            last_lba: extent.first_lba() + extent.sectors() - 1,
            attributes: 0,
            name: name.to_string(),
        };
        Gpt {
            disk_guid: self.identity.disk_guid,
            partitions: vec![
                part(
                    gpt::BASIC_DATA,
                    self.identity.data_guid,
                    self.data,
                    DATA_PARTITION_NAME,
                ),
                part(
                    gpt::EFI_SYSTEM,
                    self.identity.esp_guid,
                    self.esp,
                    ESP_PARTITION_NAME,
                ),
            ],
        }
    }

    pub fn mbr(&self) -> Result<Mbr, mbr::MbrError> {
        Ok(Mbr {
            disk_signature: self.identity.mbr_signature,
            partitions: vec![
                Mbr::entry(
                    0,
                    mbr::TYPE_EXFAT,
                    self.data.first_lba(),
                    self.data.sectors(),
                )?,
                Mbr::entry(1, mbr::TYPE_EFI, self.esp.first_lba(), self.esp.sectors())?,
            ],
        })
    }

    /// Writes the partition table (GPT: protective MBR, backup, primary).
    pub fn write_table<W: Write + Seek>(
        &self,
        disk: &mut W,
        boot_code: &[u8; mbr::BOOT_CODE_SIZE],
    ) -> Result<(), LayoutError> {
        match self.table {
            TableKind::Gpt => self.gpt().write(disk, self.disk_sectors(), boot_code)?,
            TableKind::Mbr => self.mbr()?.write(disk, boot_code)?,
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_then_esp_at_the_end_all_mib_aligned() {
        let size = 8 * 1024 * MIB;
        let layout = Layout::plan(TableKind::Gpt, size, 40 * MIB + 1, "seed").unwrap();
        assert_eq!(layout.data.offset, MIB);
        assert_eq!(layout.data.end(), layout.esp.offset);
        assert_eq!(layout.esp.len, 41 * MIB);
        assert_eq!(layout.esp.offset % MIB, 0);
        let (_, last_usable) = gpt::usable_range(size / SECTOR);
        assert!(layout.esp.end() / SECTOR - 1 <= last_usable);
        assert!(size - layout.esp.end() < MIB + 33 * SECTOR);
    }

    #[test]
    fn mbr_esp_ends_at_the_last_whole_mib() {
        let layout = Layout::plan(TableKind::Mbr, 100 * MIB + 7, 0, "s").unwrap();
        assert_eq!(layout.esp.end(), 100 * MIB);
        assert_eq!(layout.esp.len, MIN_ESP_SIZE);
    }

    #[test]
    fn too_small_says_by_how_much() {
        let err = Layout::plan(TableKind::Gpt, 40 * MIB, 32 * MIB, "s").unwrap_err();
        let LayoutError::TooSmall { short, need, .. } = err else {
            panic!("{err}")
        };
        assert_eq!(need, 50 * MIB);
        assert_eq!(short, 10 * MIB);
    }

    #[test]
    fn identity_depends_on_the_seed_only() {
        assert_eq!(Identity::from_seed("a"), Identity::from_seed("a"));
        assert_ne!(Identity::from_seed("a"), Identity::from_seed("b"));
        assert_eq!(Identity::from_seed("a").data_fs_uuid().len(), 9);
    }
}
