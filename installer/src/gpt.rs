//! GUID Partition Table (UEFI 2.10 §5.3): protective MBR, primary and backup
//! headers and entry arrays. Writer and reader on `Read`/`Write`/`Seek`.

use std::fmt;
use std::io::{self, Read, Seek, SeekFrom, Write};

use sha2::{Digest, Sha256};

pub const SECTOR: u64 = 512;
const SIGNATURE: &[u8; 8] = b"EFI PART";
const REVISION: u32 = 0x0001_0000;
const HEADER_SIZE: u32 = 92;
pub const ENTRY_COUNT: u32 = 128;
const ENTRY_SIZE: u32 = 128;
/// Sectors taken by the entry array (128 entries of 128 bytes).
pub const ENTRY_ARRAY_SECTORS: u64 = (ENTRY_COUNT as u64 * ENTRY_SIZE as u64) / SECTOR;

/// Microsoft Basic Data (the exFAT data partition).
pub const BASIC_DATA: Guid = Guid::from_fields(
    0xEBD0_A0A2,
    0xB9E5,
    0x4433,
    [0x87, 0xC0, 0x68, 0xB6, 0xB7, 0x26, 0x99, 0xC7],
);
/// EFI System Partition.
pub const EFI_SYSTEM: Guid = Guid::from_fields(
    0xC12A_7328,
    0xF81F,
    0x11D2,
    [0xBA, 0x4B, 0x00, 0xA0, 0xC9, 0x3E, 0xC9, 0x3B],
);

#[derive(Debug, thiserror::Error)]
pub enum GptError {
    #[error("I/O error on the GPT")]
    Io(#[from] io::Error),
    #[error("no GPT header signature at LBA {0}")]
    NoSignature(u64),
    #[error(
        "GPT header at LBA {lba} has a bad CRC32 (stored {stored:08x}, computed {computed:08x})"
    )]
    HeaderCrc {
        lba: u64,
        stored: u32,
        computed: u32,
    },
    #[error("GPT partition entry array of the header at LBA {lba} has a bad CRC32")]
    EntriesCrc { lba: u64 },
    #[error("GPT header at LBA {lba} is malformed: {what}")]
    Malformed { lba: u64, what: String },
    #[error("a disk of {0} sectors is too small for a GPT")]
    DiskTooSmall(u64),
}

/// A GUID, held in its textual (big-endian field) byte order.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Guid([u8; 16]);

impl Guid {
    pub const ZERO: Guid = Guid([0; 16]);

    pub const fn from_fields(a: u32, b: u16, c: u16, d: [u8; 8]) -> Self {
        let a = a.to_be_bytes();
        let b = b.to_be_bytes();
        let c = c.to_be_bytes();
        Guid([
            a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], d[0], d[1], d[2], d[3], d[4], d[5],
            d[6], d[7],
        ])
    }

    /// A random-looking (RFC 4122 version 4 layout) GUID that depends only on
    /// `seed` and `purpose`: sha256(seed || 0 || purpose).
    pub fn derive(seed: &str, purpose: &str) -> Self {
        let digest = Sha256::new()
            .chain_update(seed.as_bytes())
            .chain_update([0])
            .chain_update(purpose.as_bytes())
            .finalize();
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&digest[..16]);
        bytes[6] = (bytes[6] & 0x0f) | 0x40;
        bytes[8] = (bytes[8] & 0x3f) | 0x80;
        Guid(bytes)
    }

    /// The on-disk (mixed-endian) form: the first three fields little-endian.
    pub fn to_disk(self) -> [u8; 16] {
        let b = self.0;
        [
            b[3], b[2], b[1], b[0], b[5], b[4], b[7], b[6], b[8], b[9], b[10], b[11], b[12], b[13],
            b[14], b[15],
        ]
    }

    pub fn from_disk(d: [u8; 16]) -> Self {
        Guid([
            d[3], d[2], d[1], d[0], d[5], d[4], d[7], d[6], d[8], d[9], d[10], d[11], d[12], d[13],
            d[14], d[15],
        ])
    }
}

impl fmt::Display for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = &self.0;
        write!(
            f,
            "{}-{}-{}-{}-{}",
            hex::encode_upper(&b[0..4]),
            hex::encode_upper(&b[4..6]),
            hex::encode_upper(&b[6..8]),
            hex::encode_upper(&b[8..10]),
            hex::encode_upper(&b[10..16])
        )
    }
}

impl fmt::Debug for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// One used partition entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GptPartition {
    pub type_guid: Guid,
    pub unique_guid: Guid,
    pub first_lba: u64,
    /// Inclusive, as on disk.
    pub last_lba: u64,
    pub attributes: u64,
    pub name: String,
}

/// A whole GPT: disk GUID and the used entries, in slot order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gpt {
    pub disk_guid: Guid,
    pub partitions: Vec<GptPartition>,
}

/// The first and last LBA a partition may use on a disk of `disk_sectors`.
pub fn usable_range(disk_sectors: u64) -> (u64, u64) {
    (
        2 + ENTRY_ARRAY_SECTORS,
        disk_sectors - 2 - ENTRY_ARRAY_SECTORS,
    )
}

/// CRC-32 (IEEE 802.3, reflected), as GPT uses.
pub fn crc32(data: &[u8]) -> u32 {
    static TABLE: std::sync::OnceLock<[u32; 256]> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut table = [0u32; 256];
        for (i, slot) in table.iter_mut().enumerate() {
            let mut c = i as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
            *slot = c;
        }
        table
    });
    !data.iter().fold(!0u32, |c, &b| {
        table[((c ^ b as u32) & 0xff) as usize] ^ (c >> 8)
    })
}

impl Gpt {
    fn entry_array(&self) -> Vec<u8> {
        let mut array = vec![0u8; (ENTRY_COUNT * ENTRY_SIZE) as usize];
        for (slot, part) in array
            .chunks_exact_mut(ENTRY_SIZE as usize)
            .zip(&self.partitions)
        {
            slot[0..16].copy_from_slice(&part.type_guid.to_disk());
            slot[16..32].copy_from_slice(&part.unique_guid.to_disk());
            slot[32..40].copy_from_slice(&part.first_lba.to_le_bytes());
            slot[40..48].copy_from_slice(&part.last_lba.to_le_bytes());
            slot[48..56].copy_from_slice(&part.attributes.to_le_bytes());
            for (i, unit) in part.name.encode_utf16().take(36).enumerate() {
                slot[56 + 2 * i..58 + 2 * i].copy_from_slice(&unit.to_le_bytes());
            }
        }
        array
    }

    fn header(
        &self,
        my_lba: u64,
        alternate_lba: u64,
        entries_lba: u64,
        disk_sectors: u64,
        entries_crc: u32,
    ) -> [u8; SECTOR as usize] {
        let (first_usable, last_usable) = usable_range(disk_sectors);
        let mut h = [0u8; SECTOR as usize];
        h[0..8].copy_from_slice(SIGNATURE);
        h[8..12].copy_from_slice(&REVISION.to_le_bytes());
        h[12..16].copy_from_slice(&HEADER_SIZE.to_le_bytes());
        h[24..32].copy_from_slice(&my_lba.to_le_bytes());
        h[32..40].copy_from_slice(&alternate_lba.to_le_bytes());
        h[40..48].copy_from_slice(&first_usable.to_le_bytes());
        h[48..56].copy_from_slice(&last_usable.to_le_bytes());
        h[56..72].copy_from_slice(&self.disk_guid.to_disk());
        h[72..80].copy_from_slice(&entries_lba.to_le_bytes());
        h[80..84].copy_from_slice(&ENTRY_COUNT.to_le_bytes());
        h[84..88].copy_from_slice(&ENTRY_SIZE.to_le_bytes());
        h[88..92].copy_from_slice(&entries_crc.to_le_bytes());
        let crc = crc32(&h[..HEADER_SIZE as usize]);
        h[16..20].copy_from_slice(&crc.to_le_bytes());
        h
    }

    /// The sectors of the backup GPT (entries, then header) at the disk's end,
    /// as (byte offset, bytes).
    pub fn backup_region(&self, disk_sectors: u64) -> (u64, Vec<u8>) {
        let last = disk_sectors - 1;
        let array = self.entry_array();
        let entries_lba = last - ENTRY_ARRAY_SECTORS;
        let header = self.header(last, 1, entries_lba, disk_sectors, crc32(&array));
        let mut bytes = array;
        bytes.extend_from_slice(&header);
        (entries_lba * SECTOR, bytes)
    }

    /// The primary GPT (header at LBA 1, entries from LBA 2) as bytes that
    /// start at byte 512.
    pub fn primary_region(&self, disk_sectors: u64) -> Vec<u8> {
        let array = self.entry_array();
        let header = self.header(1, disk_sectors - 1, 2, disk_sectors, crc32(&array));
        let mut bytes = header.to_vec();
        bytes.extend_from_slice(&array);
        bytes
    }

    /// The protective MBR at LBA 0 with `boot_code` in its first 440 bytes.
    pub fn protective_mbr(disk_sectors: u64, boot_code: &[u8; 440]) -> [u8; SECTOR as usize] {
        let mut mbr = [0u8; SECTOR as usize];
        mbr[..440].copy_from_slice(boot_code);
        let entry = &mut mbr[446..462];
        entry[0] = 0x00;
        entry[1..4].copy_from_slice(&[0x00, 0x02, 0x00]);
        entry[4] = 0xEE;
        entry[5..8].copy_from_slice(&[0xFF, 0xFF, 0xFF]);
        entry[8..12].copy_from_slice(&1u32.to_le_bytes());
        let size = (disk_sectors - 1).min(u32::MAX as u64) as u32;
        entry[12..16].copy_from_slice(&size.to_le_bytes());
        mbr[510] = 0x55;
        mbr[511] = 0xAA;
        mbr
    }

    /// Writes the protective MBR, the backup GPT, then the primary GPT (so a
    /// torn write leaves no valid-looking primary pointing at nothing).
    pub fn write<W: Write + Seek>(
        &self,
        disk: &mut W,
        disk_sectors: u64,
        boot_code: &[u8; 440],
    ) -> Result<(), GptError> {
        if disk_sectors < 2 * (2 + ENTRY_ARRAY_SECTORS) + 1 {
            return Err(GptError::DiskTooSmall(disk_sectors));
        }
        let (backup_offset, backup) = self.backup_region(disk_sectors);
        disk.seek(SeekFrom::Start(backup_offset))?;
        disk.write_all(&backup)?;
        disk.seek(SeekFrom::Start(SECTOR))?;
        disk.write_all(&self.primary_region(disk_sectors))?;
        disk.seek(SeekFrom::Start(0))?;
        disk.write_all(&Self::protective_mbr(disk_sectors, boot_code))?;
        Ok(())
    }

    /// Reads and checks the primary GPT; falls back to the backup header when
    /// the primary is damaged.
    pub fn read<R: Read + Seek>(disk: &mut R, disk_sectors: u64) -> Result<Gpt, GptError> {
        match Self::read_at(disk, 1) {
            Ok(gpt) => Ok(gpt),
            Err(primary_error) => Self::read_at(disk, disk_sectors - 1).map_err(|_| primary_error),
        }
    }

    fn read_at<R: Read + Seek>(disk: &mut R, lba: u64) -> Result<Gpt, GptError> {
        let mut h = [0u8; SECTOR as usize];
        disk.seek(SeekFrom::Start(lba * SECTOR))?;
        disk.read_exact(&mut h)?;
        if &h[0..8] != SIGNATURE {
            return Err(GptError::NoSignature(lba));
        }
        let u32_at = |o: usize| u32::from_le_bytes(h[o..o + 4].try_into().unwrap());
        let u64_at = |o: usize| u64::from_le_bytes(h[o..o + 8].try_into().unwrap());
        let header_size = u32_at(12);
        if !(92..=512).contains(&header_size) {
            return Err(GptError::Malformed {
                lba,
                what: format!("header size {header_size}"),
            });
        }
        let stored = u32_at(16);
        let mut copy = h;
        copy[16..20].fill(0);
        let computed = crc32(&copy[..header_size as usize]);
        if stored != computed {
            return Err(GptError::HeaderCrc {
                lba,
                stored,
                computed,
            });
        }
        let entries_lba = u64_at(72);
        let count = u32_at(80);
        let size = u32_at(84);
        if size < 128 || count > 1024 {
            return Err(GptError::Malformed {
                lba,
                what: format!("{count} entries of {size} bytes"),
            });
        }
        let mut array = vec![0u8; (count * size) as usize];
        disk.seek(SeekFrom::Start(entries_lba * SECTOR))?;
        disk.read_exact(&mut array)?;
        if crc32(&array) != u32_at(88) {
            return Err(GptError::EntriesCrc { lba });
        }
        let partitions = array
            .chunks_exact(size as usize)
            .filter(|e| e[0..16].iter().any(|&b| b != 0))
            .map(|e| {
                let units: Vec<u16> = e[56..128]
                    .chunks_exact(2)
                    .map(|c| u16::from_le_bytes([c[0], c[1]]))
                    .take_while(|&u| u != 0)
                    .collect();
                GptPartition {
                    type_guid: Guid::from_disk(e[0..16].try_into().unwrap()),
                    unique_guid: Guid::from_disk(e[16..32].try_into().unwrap()),
                    first_lba: u64::from_le_bytes(e[32..40].try_into().unwrap()),
                    last_lba: u64::from_le_bytes(e[40..48].try_into().unwrap()),
                    attributes: u64::from_le_bytes(e[48..56].try_into().unwrap()),
                    name: String::from_utf16_lossy(&units),
                }
            })
            .collect();
        Ok(Gpt {
            disk_guid: Guid::from_disk(h[56..72].try_into().unwrap()),
            partitions,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    #[test]
    fn crc32_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn guid_formats_and_round_trips_through_disk_order() {
        assert_eq!(
            EFI_SYSTEM.to_string(),
            "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
        );
        let disk = EFI_SYSTEM.to_disk();
        assert_eq!(&disk[..4], &[0x28, 0x73, 0x2A, 0xC1]);
        assert_eq!(Guid::from_disk(disk), EFI_SYSTEM);
    }

    #[test]
    fn derived_guids_are_stable_v4_and_distinct() {
        let a = Guid::derive("seed", "disk");
        assert_eq!(a, Guid::derive("seed", "disk"));
        assert_ne!(a, Guid::derive("seed", "esp"));
        assert_ne!(a, Guid::derive("seed2", "disk"));
        let text = a.to_string();
        assert_eq!(&text[14..15], "4");
        assert!("89AB".contains(&text[19..20]));
    }

    #[test]
    fn writes_and_reads_back_with_backup() {
        let sectors = 8192;
        let gpt = Gpt {
            disk_guid: Guid::derive("s", "disk"),
            partitions: vec![GptPartition {
                type_guid: BASIC_DATA,
                unique_guid: Guid::derive("s", "data"),
                first_lba: 2048,
                last_lba: 4095,
                attributes: 0,
                name: "hiperiso data".into(),
            }],
        };
        let mut disk = Cursor::new(vec![0u8; sectors as usize * 512]);
        gpt.write(&mut disk, sectors, &[0; 440]).unwrap();
        assert_eq!(Gpt::read(&mut disk, sectors).unwrap(), gpt);
        let bytes = disk.get_mut();
        assert_eq!(bytes[446 + 4], 0xEE);
        assert_eq!(&bytes[510..512], &[0x55, 0xAA]);
        // Damage the primary header: the backup still answers.
        bytes[512 + 30] ^= 0xff;
        assert_eq!(Gpt::read(&mut disk, sectors).unwrap(), gpt);
        assert!(matches!(
            Gpt::read_at(&mut disk, 1),
            Err(GptError::HeaderCrc { lba: 1, .. })
        ));
    }
}
