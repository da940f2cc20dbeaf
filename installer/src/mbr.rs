//! Classic MBR partition table. The first 440 bytes (boot code) are left to
//! the caller; the writer touches the disk signature, the table and 0x55AA.

use std::io::{self, Read, Seek, SeekFrom, Write};

/// exFAT / NTFS / "installable file system".
pub const TYPE_EXFAT: u8 = 0x07;
/// EFI System Partition.
pub const TYPE_EFI: u8 = 0xEF;
/// Protective entry of a GPT disk.
pub const TYPE_GPT_PROTECTIVE: u8 = 0xEE;

pub const BOOT_CODE_SIZE: usize = 440;

#[derive(Debug, thiserror::Error)]
pub enum MbrError {
    #[error("I/O error on the MBR")]
    Io(#[from] io::Error),
    #[error("no MBR boot signature (0x55AA) in sector 0")]
    NoSignature,
    #[error(
        "partition {index} does not fit an MBR (LBA {first}..+{count} beyond 2^32 sectors); use --table gpt"
    )]
    TooLarge {
        index: usize,
        first: u64,
        count: u64,
    },
}

/// One primary partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MbrPartition {
    pub bootable: bool,
    pub type_id: u8,
    pub first_lba: u32,
    pub sectors: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mbr {
    pub disk_signature: u32,
    /// Up to four entries; empty slots are omitted.
    pub partitions: Vec<MbrPartition>,
}

/// CHS for an LBA with the usual 255 heads / 63 sectors geometry, saturated
/// at 1023/254/63 as every modern tool does.
fn chs(lba: u32) -> [u8; 3] {
    let lba = lba as u64;
    let (heads, sectors) = (255u64, 63u64);
    let cylinder = lba / (heads * sectors);
    if cylinder > 1023 {
        return [0xFE, 0xFF, 0xFF];
    }
    let head = (lba / sectors) % heads;
    let sector = lba % sectors + 1;
    [
        head as u8,
        (sector as u8) | (((cylinder >> 2) & 0xC0) as u8),
        cylinder as u8,
    ]
}

impl Mbr {
    /// Checks that a partition from `first` of `count` sectors is addressable.
    pub fn entry(
        index: usize,
        type_id: u8,
        first: u64,
        count: u64,
    ) -> Result<MbrPartition, MbrError> {
        let fits = |v: u64| v <= u32::MAX as u64;
        if !fits(first) || !fits(count) || !fits(first + count) {
            return Err(MbrError::TooLarge {
                index,
                first,
                count,
            });
        }
        Ok(MbrPartition {
            bootable: false,
            type_id,
            first_lba: first as u32,
            sectors: count as u32,
        })
    }

    /// Sector 0 with `boot_code` in its first 440 bytes.
    pub fn sector(&self, boot_code: &[u8; BOOT_CODE_SIZE]) -> [u8; 512] {
        let mut s = [0u8; 512];
        s[..BOOT_CODE_SIZE].copy_from_slice(boot_code);
        s[440..444].copy_from_slice(&self.disk_signature.to_le_bytes());
        for (slot, part) in s[446..510].chunks_exact_mut(16).zip(&self.partitions) {
            slot[0] = if part.bootable { 0x80 } else { 0x00 };
            slot[1..4].copy_from_slice(&chs(part.first_lba));
            slot[4] = part.type_id;
            slot[5..8].copy_from_slice(&chs(part.first_lba + part.sectors - 1));
            slot[8..12].copy_from_slice(&part.first_lba.to_le_bytes());
            slot[12..16].copy_from_slice(&part.sectors.to_le_bytes());
        }
        s[510] = 0x55;
        s[511] = 0xAA;
        s
    }

    pub fn write<W: Write + Seek>(
        &self,
        disk: &mut W,
        boot_code: &[u8; BOOT_CODE_SIZE],
    ) -> Result<(), MbrError> {
        disk.seek(SeekFrom::Start(0))?;
        disk.write_all(&self.sector(boot_code))?;
        Ok(())
    }

    pub fn read<R: Read + Seek>(disk: &mut R) -> Result<Mbr, MbrError> {
        let mut s = [0u8; 512];
        disk.seek(SeekFrom::Start(0))?;
        disk.read_exact(&mut s)?;
        Self::parse(&s)
    }

    pub fn parse(s: &[u8; 512]) -> Result<Mbr, MbrError> {
        if s[510..512] != [0x55, 0xAA] {
            return Err(MbrError::NoSignature);
        }
        let partitions = s[446..510]
            .chunks_exact(16)
            .filter(|e| e[4] != 0)
            .map(|e| MbrPartition {
                bootable: e[0] == 0x80,
                type_id: e[4],
                first_lba: u32::from_le_bytes(e[8..12].try_into().unwrap()),
                sectors: u32::from_le_bytes(e[12..16].try_into().unwrap()),
            })
            .collect();
        Ok(Mbr {
            disk_signature: u32::from_le_bytes(s[440..444].try_into().unwrap()),
            partitions,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    #[test]
    fn round_trips_and_keeps_boot_code() {
        let mbr = Mbr {
            disk_signature: 0xDEAD_BEEF,
            partitions: vec![
                Mbr::entry(0, TYPE_EXFAT, 2048, 4096).unwrap(),
                Mbr::entry(1, TYPE_EFI, 6144, 2048).unwrap(),
            ],
        };
        let mut disk = Cursor::new(vec![0u8; 4096]);
        let code = [0x90u8; BOOT_CODE_SIZE];
        mbr.write(&mut disk, &code).unwrap();
        assert_eq!(Mbr::read(&mut disk).unwrap(), mbr);
        let bytes = disk.into_inner();
        assert!(bytes[..440].iter().all(|&b| b == 0x90));
        assert_eq!(&bytes[440..444], &0xDEAD_BEEFu32.to_le_bytes());
        // LBA 2048 = C0 H32 S33.
        assert_eq!(&bytes[447..450], &[32, 33, 0]);
    }

    #[test]
    fn refuses_partitions_beyond_two_tebibytes() {
        assert!(matches!(
            Mbr::entry(1, TYPE_EFI, u32::MAX as u64, 10),
            Err(MbrError::TooLarge { index: 1, .. })
        ));
    }

    #[test]
    fn chs_saturates_beyond_1023_cylinders() {
        assert_eq!(chs(u32::MAX), [0xFE, 0xFF, 0xFF]);
    }
}
