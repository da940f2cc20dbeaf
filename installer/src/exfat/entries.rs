//! Directory entries and entry sets, written by [`super::format`] and
//! [`super::ExfatEditor`] and parsed by [`super::ExfatReader`]: the volume
//! label, allocation bitmap and up-case table entries, and the File entry
//! set (File, Stream Extension, File Name entries).

use super::{
    ENTRY_SIZE, FLAG_ALLOCATION_POSSIBLE, FLAG_NO_FAT_CHAIN, NAME_UNITS_PER_ENTRY, attributes,
    entry_set_checksum, entry_type, exfat_to_unix, le16, le32, le64, name_hash,
};

/// One file or directory as listed by [`super::ExfatReader::read_dir`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    /// The name as stored (case preserved).
    pub name: String,
    pub is_dir: bool,
    /// DataLength: a file's size in bytes (for a directory, its allocation).
    pub size: u64,
    /// FileAttributes (see [`super::attributes`]).
    pub attributes: u16,
    /// Last modification, Unix seconds (UTC when the volume recorded an offset).
    pub modified: i64,
    pub(super) units: Vec<u16>,
    pub(super) stream: Stream,
}

/// Where a file's or directory's data lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Stream {
    pub(super) first_cluster: u32,
    /// Bytes to follow; `None` for the root directory, whose chain ends at
    /// the end-of-chain mark.
    pub(super) data_length: Option<u64>,
    pub(super) valid_data_length: u64,
    pub(super) no_fat_chain: bool,
}

/// Number of directory entries of a file's entry set.
pub(super) fn entry_count(name: &[u16]) -> usize {
    2 + name.len().div_ceil(NAME_UNITS_PER_ENTRY)
}

pub(super) fn volume_label_entry(label: &[u16]) -> [u8; ENTRY_SIZE] {
    let mut entry = [0u8; ENTRY_SIZE];
    entry[0] = entry_type::VOLUME_LABEL;
    entry[1] = label.len() as u8;
    for (index, unit) in label.iter().enumerate() {
        entry[2 + index * 2..4 + index * 2].copy_from_slice(&unit.to_le_bytes());
    }
    entry
}

pub(super) fn bitmap_entry(first_cluster: u32, length: u64) -> [u8; ENTRY_SIZE] {
    let mut entry = [0u8; ENTRY_SIZE];
    entry[0] = entry_type::ALLOCATION_BITMAP;
    // BitmapFlags 0: the first allocation bitmap.
    entry[20..24].copy_from_slice(&first_cluster.to_le_bytes());
    entry[24..32].copy_from_slice(&length.to_le_bytes());
    entry
}

pub(super) fn upcase_entry(first_cluster: u32, table: &[u8]) -> [u8; ENTRY_SIZE] {
    let mut entry = [0u8; ENTRY_SIZE];
    entry[0] = entry_type::UPCASE_TABLE;
    entry[4..8].copy_from_slice(&super::checksum32(0, table).to_le_bytes());
    entry[20..24].copy_from_slice(&first_cluster.to_le_bytes());
    entry[24..32].copy_from_slice(&(table.len() as u64).to_le_bytes());
    entry
}

/// A File entry set: File, Stream Extension and File Name entries, with
/// every timestamp `stamp` (UTC) and its SetChecksum.
pub(super) fn file_entry_set(
    name: &[u16],
    upcased: &[u16],
    attributes: u16,
    stream_flags: u8,
    first_cluster: u32,
    length: u64,
    stamp: (u32, u8),
) -> Vec<u8> {
    let count = entry_count(name);
    let mut set = vec![0u8; count * ENTRY_SIZE];
    let (timestamp, increment) = stamp;
    let utc = 0x80; // OffsetValid, UTC

    let file = &mut set[..ENTRY_SIZE];
    file[0] = entry_type::FILE;
    file[1] = (count - 1) as u8;
    file[4..6].copy_from_slice(&attributes.to_le_bytes());
    for field in [8, 12, 16] {
        file[field..field + 4].copy_from_slice(&timestamp.to_le_bytes());
    }
    file[20] = increment;
    file[21] = increment;
    file[22] = utc;
    file[23] = utc;
    file[24] = utc;

    let stream = &mut set[ENTRY_SIZE..2 * ENTRY_SIZE];
    stream[0] = entry_type::STREAM_EXTENSION;
    stream[1] = stream_flags;
    stream[3] = name.len() as u8;
    stream[4..6].copy_from_slice(&name_hash(upcased).to_le_bytes());
    stream[8..16].copy_from_slice(&length.to_le_bytes()); // ValidDataLength
    stream[20..24].copy_from_slice(&first_cluster.to_le_bytes());
    stream[24..32].copy_from_slice(&length.to_le_bytes()); // DataLength

    for (index, part) in name.chunks(NAME_UNITS_PER_ENTRY).enumerate() {
        let entry = &mut set[(2 + index) * ENTRY_SIZE..(3 + index) * ENTRY_SIZE];
        entry[0] = entry_type::FILE_NAME;
        for (position, unit) in part.iter().enumerate() {
            entry[2 + position * 2..4 + position * 2].copy_from_slice(&unit.to_le_bytes());
        }
    }

    let checksum = entry_set_checksum(&set);
    set[2..4].copy_from_slice(&checksum.to_le_bytes());
    set
}

/// Parses one File directory entry set (checksum included).
pub(super) fn parse_file_set(set: &[u8]) -> Result<DirEntry, &'static str> {
    if entry_set_checksum(set) != le16(set, 2) {
        return Err("entry set checksum mismatch");
    }
    let stream_entry = &set[ENTRY_SIZE..2 * ENTRY_SIZE];
    if stream_entry[0] != entry_type::STREAM_EXTENSION {
        return Err("file entry is not followed by a stream extension entry");
    }
    let flags = stream_entry[1];
    let name_length = usize::from(stream_entry[3]);
    let valid_data_length = le64(stream_entry, 8);
    let data_length = le64(stream_entry, 24);
    let first_cluster = le32(stream_entry, 20);
    if valid_data_length > data_length {
        return Err("ValidDataLength exceeds DataLength");
    }
    let mut units = Vec::with_capacity(name_length);
    for secondary in set[2 * ENTRY_SIZE..].chunks_exact(ENTRY_SIZE) {
        match secondary[0] {
            entry_type::FILE_NAME => {
                for position in 0..NAME_UNITS_PER_ENTRY {
                    if units.len() < name_length {
                        units.push(le16(secondary, 2 + position * 2));
                    }
                }
            }
            kind if kind & entry_type::BENIGN != 0 => {}
            _ => return Err("unexpected critical secondary entry"),
        }
    }
    if units.len() != name_length || name_length == 0 {
        return Err("file name entries do not hold NameLength characters");
    }
    let file_attributes = le16(set, 4);
    let allocated = flags & FLAG_ALLOCATION_POSSIBLE != 0 && data_length > 0;
    Ok(DirEntry {
        name: String::from_utf16_lossy(&units),
        is_dir: file_attributes & attributes::DIRECTORY != 0,
        size: data_length,
        attributes: file_attributes,
        modified: exfat_to_unix(le32(set, 12), set[21], set[23]),
        units,
        stream: Stream {
            first_cluster: if allocated { first_cluster } else { 0 },
            data_length: Some(if allocated { data_length } else { 0 }),
            valid_data_length: if allocated { valid_data_length } else { 0 },
            no_fat_chain: flags & FLAG_NO_FAT_CHAIN != 0,
        },
    })
}
