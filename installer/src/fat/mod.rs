//! FAT16/FAT32 writer (for the ESP) and a small reader (for `inspect` and
//! `install --update`). Files are laid out contiguously in a fixed order, and
//! the volume id, label and every timestamp come from the options, so the
//! same tree always gives the same bytes.
//!
//! - `writer`: scans a tree and lays it out ([`format`](fn@format), [`required_size`]).
//! - `entries`: 8.3 and long names, DOS dates, labels: the 32-byte
//!   directory entries both sides share.
//! - `reader`: the [`FatReader`].

mod entries;
mod reader;
mod writer;

use std::io;
use std::path::PathBuf;

pub use entries::{dos_date_time, label_bytes};
pub use reader::{FatDirEntry, FatReader};
pub use writer::{format, required_size};

const SECTOR: u64 = 512;
const FAT16_ROOT_ENTRIES: u64 = 512;
const FAT16_RESERVED: u64 = 4;
const FAT32_RESERVED: u64 = 32;
const FAT32_FSINFO_SECTOR: u64 = 1;
const FAT32_BACKUP_BOOT_SECTOR: u64 = 6;
const NUM_FATS: u64 = 2;
const MEDIA: u8 = 0xF8;
const ATTR_VOLUME_ID: u8 = 0x08;
const ATTR_DIRECTORY: u8 = 0x10;
const ATTR_ARCHIVE: u8 = 0x20;
const ATTR_LFN: u8 = 0x0F;
/// Volumes up to this size are FAT16, larger ones FAT32 (DESIGN.md §4).
pub const FAT16_MAX_SIZE: u64 = 32 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum FatError {
    #[error("I/O error while writing the FAT filesystem")]
    Io(#[from] io::Error),
    #[error("cannot read {path}")]
    Source {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path}: not a regular file or directory; the ESP holds only files and directories")]
    Special { path: PathBuf },
    #[error("{path}: file name {name:?} is not allowed on FAT ({why})")]
    BadName {
        path: PathBuf,
        name: String,
        why: &'static str,
    },
    #[error("{path}: {a:?} and {b:?} differ only in case; FAT cannot hold both")]
    CaseClash { path: PathBuf, a: String, b: String },
    #[error("{path}: file of {size} bytes exceeds FAT's 4 GiB - 1 limit")]
    FileTooLarge { path: PathBuf, size: u64 },
    #[error(
        "the root directory holds {entries} directory entries; FAT16 allows {FAT16_ROOT_ENTRIES}"
    )]
    RootFull { entries: u64 },
    #[error("a {size}-byte volume is too small for FAT ({clusters} clusters)")]
    VolumeTooSmall { size: u64, clusters: u64 },
    #[error(
        "the ESP payload needs {need} bytes but the {size}-byte FAT volume holds only {have}; {short} bytes short"
    )]
    DoesNotFit {
        need: u64,
        have: u64,
        size: u64,
        short: u64,
    },
    #[error("FAT volume label {label:?} is invalid: {reason}")]
    InvalidLabel { label: String, reason: String },
    #[error("not a FAT filesystem: {0}")]
    NotFat(String),
    #[error("{0}: no such file or directory in the FAT filesystem")]
    NotFound(String),
    #[error("the FAT filesystem is damaged: {0}")]
    Corrupt(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FatType {
    Fat16,
    Fat32,
}

/// Deterministic identity of the volume.
#[derive(Debug, Clone)]
pub struct FatOptions {
    /// Up to 11 characters (A-Z, 0-9, space, some punctuation); stored
    /// upper-cased; anything longer or else is an error (see [`label_bytes`]).
    pub label: String,
    pub volume_id: u32,
    /// Unix seconds (SOURCE_DATE_EPOCH) for every timestamp.
    pub timestamp: u64,
    /// The partition's first LBA on its disk (BPB "hidden sectors").
    pub hidden_sectors: u32,
}

/// What `format` wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FatSummary {
    pub fat_type: FatType,
    pub cluster_size: u64,
    pub clusters: u64,
    pub used_clusters: u64,
}

#[derive(Debug, Clone, Copy)]
struct Geometry {
    fat_type: FatType,
    total_sectors: u64,
    sectors_per_cluster: u64,
    reserved_sectors: u64,
    fat_sectors: u64,
    root_dir_sectors: u64,
    clusters: u64,
}

impl Geometry {
    fn for_size(size: u64) -> Result<Geometry, FatError> {
        let total_sectors = size / SECTOR;
        let (fat_type, reserved, root_dir_sectors, entry_bytes) = if size <= FAT16_MAX_SIZE {
            (
                FatType::Fat16,
                FAT16_RESERVED,
                FAT16_ROOT_ENTRIES * 32 / SECTOR,
                2,
            )
        } else {
            (FatType::Fat32, FAT32_RESERVED, 0, 4)
        };
        let max_clusters = match fat_type {
            FatType::Fat16 => 65524,
            FatType::Fat32 => 0x0FFF_FFF5,
        };
        let min_clusters = match fat_type {
            FatType::Fat16 => 4085,
            FatType::Fat32 => 65525,
        };
        // Cluster sizes as mkfs.fat picks them for FAT32; FAT16 takes the
        // smallest cluster that keeps the count in range.
        let mut sectors_per_cluster = match fat_type {
            FatType::Fat16 => 1,
            FatType::Fat32 if size < 260 * 1024 * 1024 => 1,
            FatType::Fat32 if size < 8 * 1024 * 1024 * 1024 => 8,
            FatType::Fat32 => 16,
        };
        loop {
            let mut fat_sectors = 1;
            let clusters = loop {
                let data = total_sectors
                    .saturating_sub(reserved + NUM_FATS * fat_sectors + root_dir_sectors);
                let clusters = data / sectors_per_cluster;
                let needed = ((clusters + 2) * entry_bytes).div_ceil(SECTOR);
                if needed <= fat_sectors {
                    break clusters;
                }
                fat_sectors = needed;
            };
            if clusters > max_clusters && sectors_per_cluster < 128 {
                sectors_per_cluster *= 2;
                continue;
            }
            if clusters < min_clusters || clusters > max_clusters {
                return Err(FatError::VolumeTooSmall { size, clusters });
            }
            return Ok(Geometry {
                fat_type,
                total_sectors,
                sectors_per_cluster,
                reserved_sectors: reserved,
                fat_sectors,
                root_dir_sectors,
                clusters,
            });
        }
    }

    fn cluster_size(&self) -> u64 {
        self.sectors_per_cluster * SECTOR
    }

    fn fat_offset(&self, copy: u64) -> u64 {
        (self.reserved_sectors + copy * self.fat_sectors) * SECTOR
    }

    fn root_dir_offset(&self) -> u64 {
        self.fat_offset(NUM_FATS)
    }

    fn data_offset(&self) -> u64 {
        self.root_dir_offset() + self.root_dir_sectors * SECTOR
    }

    fn cluster_offset(&self, cluster: u32) -> u64 {
        self.data_offset() + (cluster as u64 - 2) * self.cluster_size()
    }

    fn end_of_chain(&self) -> u32 {
        match self.fat_type {
            FatType::Fat16 => 0xFFFF,
            FatType::Fat32 => 0x0FFF_FFFF,
        }
    }
}

#[cfg(test)]
mod tests;
