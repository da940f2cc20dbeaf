//! exFAT: a deterministic writer ([`format`](fn@format)), a reader ([`ExfatReader`])
//! and an editor adding files to an existing volume ([`ExfatEditor`]),
//! written from Microsoft's exFAT file system specification.
//!
//! On-disk layout (sector offsets within the volume):
//!
//! | region | where |
//! |---|---|
//! | main boot region (boot sector, 8 extended boot sectors, OEM, reserved, checksum) | 0..12 |
//! | backup boot region | 12..24 |
//! | FAT (one) | `FatOffset`, 1 MiB aligned as mkfs.exfat does |
//! | cluster heap: allocation bitmap, up-case table, root directory, the tree | `ClusterHeapOffset`, 1 MiB aligned |
//!
//! Cluster numbers start at 2. The allocation bitmap, not the FAT, says which
//! clusters are in use; the FAT only links clusters of fragmented chains.
//!
//! Files: [`format`](fn@format) (the writer), `boot` (reading the boot region),
//! `entries` (directory entries both sides share), `reader`,
//! `file_reader`, `append` (the editor), `upcase`.

mod append;
mod boot;
mod entries;
mod file_reader;
mod format;
mod reader;
mod upcase;

use std::io;
use std::path::PathBuf;

use hiperiso_stick::time::{civil_from_days, days_from_civil};

pub use append::ExfatEditor;
pub use entries::DirEntry;
pub use file_reader::FileReader;
pub use format::{ExfatOptions, encode_label, format};
pub use reader::{ExfatReader, Usage};

/// Every error the exFAT writer and reader report.
#[derive(Debug, thiserror::Error)]
pub enum ExfatError {
    #[error("exFAT: I/O error while {context}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    #[error("exFAT: cannot read {path} from the source tree")]
    Source {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "exFAT: {path} changed while it was being copied (expected {expected} bytes, found {actual})"
    )]
    SourceChanged {
        path: PathBuf,
        expected: u64,
        actual: u64,
    },
    #[error(
        "exFAT: a volume of {size} bytes is too small; exFAT here needs at least {minimum} bytes"
    )]
    VolumeTooSmall { size: u64, minimum: u64 },
    #[error("exFAT: a volume of {size} bytes is too large for {cluster_size}-byte clusters")]
    VolumeTooLarge { size: u64, cluster_size: u64 },
    #[error("exFAT: volume label {label:?} is invalid: {reason}")]
    InvalidLabel { label: String, reason: &'static str },
    #[error("exFAT: {path} cannot be stored: {reason}")]
    InvalidName { path: PathBuf, reason: &'static str },
    #[error(
        "exFAT: {path} and {other} differ only in case, which exFAT cannot store in one directory"
    )]
    DuplicateName { path: PathBuf, other: PathBuf },
    #[error("exFAT: {path} is neither a regular file nor a directory")]
    UnsupportedFileType { path: PathBuf },
    #[error(
        "exFAT: the tree needs {needed} bytes of clusters but the volume holds {available}; \
         make the volume at least {shortfall} bytes larger"
    )]
    NoSpace {
        needed: u64,
        available: u64,
        shortfall: u64,
    },
    #[error("exFAT: not an exFAT volume: {0}")]
    NotExfat(String),
    #[error("exFAT: corrupt volume: {0}")]
    Corrupt(String),
    #[error("exFAT: {path}: no such file or directory")]
    NotFound { path: String },
    #[error("exFAT: {path}: not a directory")]
    NotADirectory { path: String },
    #[error("exFAT: {path}: is a directory")]
    IsADirectory { path: String },
}

impl ExfatError {
    fn io(context: impl Into<String>) -> impl FnOnce(io::Error) -> ExfatError {
        let context = context.into();
        move |source| ExfatError::Io { context, source }
    }
}

/// Bytes per sector: the writer always uses 512 (BytesPerSectorShift 9).
const SECTOR_SHIFT: u8 = 9;
/// Size of one directory entry.
const ENTRY_SIZE: usize = 32;
/// The first cluster of the cluster heap.
const FIRST_CLUSTER: u32 = 2;
/// The largest valid ClusterCount.
const MAX_CLUSTER_COUNT: u64 = 0xFFFF_FFF5;
/// FAT entry marking the end of a cluster chain.
const FAT_END_OF_CHAIN: u32 = 0xFFFF_FFFF;
/// FAT entry marking a bad cluster.
const FAT_BAD: u32 = 0xFFFF_FFF7;
/// Largest directory size the specification allows.
const MAX_DIRECTORY_SIZE: u64 = 256 << 20;
/// Longest file name, in UTF-16 code units.
const MAX_NAME_UNITS: usize = 255;
/// Longest volume label, in UTF-16 code units.
const MAX_LABEL_UNITS: usize = 11;
/// Name characters per File Name directory entry.
const NAME_UNITS_PER_ENTRY: usize = 15;

/// Directory entry types (EntryType byte, InUse bit included).
mod entry_type {
    pub const END_OF_DIRECTORY: u8 = 0x00;
    pub const ALLOCATION_BITMAP: u8 = 0x81;
    pub const UPCASE_TABLE: u8 = 0x82;
    pub const VOLUME_LABEL: u8 = 0x83;
    pub const FILE: u8 = 0x85;
    pub const STREAM_EXTENSION: u8 = 0xC0;
    pub const FILE_NAME: u8 = 0xC1;
    /// InUse bit: clear for deleted or unused entries.
    pub const IN_USE: u8 = 0x80;
    /// TypeImportance bit: set for benign entries an implementation may skip.
    pub const BENIGN: u8 = 0x20;
    /// TypeCategory bit: set for secondary entries.
    pub const SECONDARY: u8 = 0x40;
}

/// FileAttributes bits.
pub mod attributes {
    pub const READ_ONLY: u16 = 0x01;
    pub const HIDDEN: u16 = 0x02;
    pub const SYSTEM: u16 = 0x04;
    pub const DIRECTORY: u16 = 0x10;
    pub const ARCHIVE: u16 = 0x20;
}

/// GeneralSecondaryFlags bits of the Stream Extension entry.
const FLAG_ALLOCATION_POSSIBLE: u8 = 0x01;
const FLAG_NO_FAT_CHAIN: u8 = 0x02;

/// The specification's 32-bit rotating checksum (boot region and up-case
/// table), continuing from `sum`.
fn checksum32(mut sum: u32, bytes: &[u8]) -> u32 {
    for &byte in bytes {
        sum = sum.rotate_right(1).wrapping_add(u32::from(byte));
    }
    sum
}

/// Boot checksum over the 11 sectors before the checksum sector, skipping
/// VolumeFlags (bytes 106-107) and PercentInUse (byte 112) of the boot sector.
fn boot_checksum(region: &[u8]) -> u32 {
    let mut sum = 0u32;
    for (index, &byte) in region.iter().enumerate() {
        if matches!(index, 106 | 107 | 112) {
            continue;
        }
        sum = sum.rotate_right(1).wrapping_add(u32::from(byte));
    }
    sum
}

/// SetChecksum of a directory entry set, skipping its own field (bytes 2-3
/// of the first entry).
fn entry_set_checksum(entries: &[u8]) -> u16 {
    let mut sum = 0u16;
    for (index, &byte) in entries.iter().enumerate() {
        if index == 2 || index == 3 {
            continue;
        }
        sum = sum.rotate_right(1).wrapping_add(u16::from(byte));
    }
    sum
}

/// NameHash of the Stream Extension entry: over the up-cased name, each
/// UTF-16 code unit as its low then high byte.
fn name_hash(upcased: &[u16]) -> u16 {
    let mut hash = 0u16;
    for unit in upcased {
        for byte in unit.to_le_bytes() {
            hash = hash.rotate_right(1).wrapping_add(u16::from(byte));
        }
    }
    hash
}

/// Whether a UTF-16 code unit may appear in a file name (section 7.7.3).
fn is_valid_name_unit(unit: u16) -> bool {
    !(unit < 0x20
        || matches!(
            unit,
            0x22 | 0x2A | 0x2F | 0x3A | 0x3C | 0x3E | 0x3F | 0x5C | 0x7C
        ))
}

fn le16(bytes: &[u8], offset: usize) -> u16 {
    u16::from_le_bytes([bytes[offset], bytes[offset + 1]])
}

fn le32(bytes: &[u8], offset: usize) -> u32 {
    u32::from_le_bytes(bytes[offset..offset + 4].try_into().expect("4 bytes"))
}

fn le64(bytes: &[u8], offset: usize) -> u64 {
    u64::from_le_bytes(bytes[offset..offset + 8].try_into().expect("8 bytes"))
}

/// Converts Unix seconds to an exFAT timestamp (DOS date and time in the low
/// and high halves) plus the 10 ms increment. Times outside exFAT's range
/// (1980-01-01 to 2107-12-31) are clamped to its ends, so a
/// `SOURCE_DATE_EPOCH` of 0 gives 1980-01-01 00:00:00.
fn unix_to_exfat(unix_seconds: u64) -> (u32, u8) {
    const MIN: u64 = 315_532_800; // 1980-01-01T00:00:00Z
    const MAX: u64 = 4_354_819_199; // 2107-12-31T23:59:59Z
    let seconds = unix_seconds.clamp(MIN, MAX);
    let days = (seconds / 86_400) as i64;
    let second_of_day = seconds % 86_400;
    let (year, month, day) = civil_from_days(days);
    let hour = (second_of_day / 3600) as u32;
    let minute = (second_of_day / 60 % 60) as u32;
    let second = (second_of_day % 60) as u32;
    let time = (hour << 11) | (minute << 5) | (second / 2);
    let date = ((year as u32 - 1980) << 9) | (month << 5) | day;
    let increment = ((second % 2) * 100) as u8;
    ((date << 16) | time, increment)
}

/// Converts an exFAT timestamp, 10 ms increment and UTC offset byte back
/// to Unix seconds.
fn exfat_to_unix(timestamp: u32, increment: u8, utc_offset: u8) -> i64 {
    let date = timestamp >> 16;
    let year = i64::from(date >> 9) + 1980;
    let month = ((date >> 5) & 0xF).clamp(1, 12);
    let day = (date & 0x1F).max(1);
    let hour = i64::from((timestamp >> 11) & 0x1F);
    let minute = i64::from((timestamp >> 5) & 0x3F);
    let second = i64::from(timestamp & 0x1F) * 2 + i64::from(increment.min(199) / 100);
    let days = days_from_civil(year, month, day);
    let mut unix = days * 86_400 + hour * 3600 + minute * 60 + second;
    if utc_offset & 0x80 != 0 {
        // Signed 7-bit count of 15-minute intervals east of UTC.
        let quarter_hours = i64::from(((utc_offset << 1) as i8) >> 1);
        unix -= quarter_hours * 15 * 60;
    }
    unix
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip() {
        // 2023-11-14T22:13:21Z
        let (stamp, increment) = unix_to_exfat(1_700_000_001);
        assert_eq!(stamp >> 25, 2023 - 1980);
        assert_eq!((stamp >> 21) & 0xF, 11);
        assert_eq!((stamp >> 16) & 0x1F, 14);
        assert_eq!((stamp >> 11) & 0x1F, 22);
        assert_eq!((stamp >> 5) & 0x3F, 13);
        assert_eq!((stamp & 0x1F) * 2, 20);
        assert_eq!(increment, 100);
        assert_eq!(exfat_to_unix(stamp, increment, 0x80), 1_700_000_001);
        // UTC+1 (4 quarter hours): local time is one hour ahead of UTC.
        assert_eq!(exfat_to_unix(stamp, increment, 0x84), 1_700_000_001 - 3600);
        // UTC-5 (-20 quarter hours, 7-bit two's complement 0x6C).
        assert_eq!(
            exfat_to_unix(stamp, increment, 0x80 | 0x6C),
            1_700_000_001 + 5 * 3600
        );
    }

    #[test]
    fn timestamps_clamp_to_the_exfat_range() {
        let (stamp, increment) = unix_to_exfat(0);
        assert_eq!(stamp, (1 << 21) | (1 << 16));
        assert_eq!(increment, 0);
        assert_eq!(exfat_to_unix(stamp, 0, 0x80), 315_532_800);
        let (last, _) = unix_to_exfat(u64::MAX);
        assert_eq!(last >> 25, 127);
    }

    #[test]
    fn name_hash_matches_a_known_value() {
        // The hash covers up-cased UTF-16LE bytes: "A" is 41h 00h.
        let expected = 0x41u16.rotate_right(1);
        assert_eq!(name_hash(&[0x41]), expected);
    }

    #[test]
    fn name_units_follow_the_specification() {
        for forbidden in ['"', '*', '/', ':', '<', '>', '?', '\\', '|', '\u{1f}'] {
            assert!(!is_valid_name_unit(forbidden as u16), "{forbidden:?}");
        }
        for allowed in ['a', ' ', '.', '-', 'é', '中'] {
            assert!(is_valid_name_unit(allowed as u16), "{allowed:?}");
        }
    }
}
