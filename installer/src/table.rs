//! Reading a disk's partition table, GPT or MBR, into one list of
//! partitions: what `inspect`, `install --update` and the runtime's
//! `sessions` walk.

use std::io::{Read, Seek, SeekFrom};

use hiperiso_stick::fs_identity::is_exfat_boot_sector;

use crate::gpt::{self, Gpt, Guid};
use crate::layout::{DATA_PARTITION_NAME, SECTOR, TableKind};
use crate::mbr::{self, Mbr};

/// Which table a disk has.
pub type DiskTable = TableKind;

/// A partition as its table (GPT or MBR) lists it.
#[derive(Debug, Clone)]
pub struct PartitionEntry {
    pub number: u32,
    pub offset: u64,
    pub len: u64,
    pub type_name: String,
    pub gpt_type: Option<Guid>,
    pub mbr_type: Option<u8>,
    pub name: Option<String>,
}

impl PartitionEntry {
    pub fn is_data(&self) -> bool {
        self.gpt_type == Some(gpt::BASIC_DATA) || self.mbr_type == Some(mbr::TYPE_EXFAT)
    }
    pub fn is_esp(&self) -> bool {
        self.gpt_type == Some(gpt::EFI_SYSTEM) || self.mbr_type == Some(mbr::TYPE_EFI)
    }
    /// Whether the GPT name is the one hiperiso gives its data partition
    /// (None on MBR, which has no names).
    pub fn name_is_hiperiso(&self) -> Option<bool> {
        self.name.as_ref().map(|n| n == DATA_PARTITION_NAME)
    }
}

fn gpt_type_name(guid: Guid) -> String {
    match guid {
        g if g == gpt::BASIC_DATA => "Microsoft basic data".into(),
        g if g == gpt::EFI_SYSTEM => "EFI system".into(),
        g => g.to_string(),
    }
}

fn mbr_type_name(id: u8) -> String {
    match id {
        mbr::TYPE_EXFAT => "0x07 (exFAT/NTFS)".into(),
        mbr::TYPE_EFI => "0xef (EFI system)".into(),
        0x0b | 0x0c => format!("{id:#04x} (FAT32)"),
        0x83 => "0x83 (Linux)".into(),
        other => format!("{other:#04x}"),
    }
}

/// Reads the partition table of a disk of `size` bytes, if it has one.
pub fn read_table<D: Read + Seek>(
    disk: &mut D,
    size: u64,
) -> Result<Option<(DiskTable, Vec<PartitionEntry>)>, gpt::GptError> {
    let mut sector = [0u8; 512];
    disk.seek(SeekFrom::Start(0))?;
    disk.read_exact(&mut sector)?;
    let Ok(mbr) = Mbr::parse(&sector) else {
        return Ok(None);
    };
    if mbr
        .partitions
        .iter()
        .any(|p| p.type_id == mbr::TYPE_GPT_PROTECTIVE)
    {
        let gpt = Gpt::read(disk, size / SECTOR)?;
        let parts = gpt
            .partitions
            .iter()
            .zip(1..)
            .map(|(p, number)| PartitionEntry {
                number,
                offset: p.first_lba * SECTOR,
                len: (p.last_lba + 1 - p.first_lba) * SECTOR,
                type_name: gpt_type_name(p.type_guid),
                gpt_type: Some(p.type_guid),
                mbr_type: None,
                name: Some(p.name.clone()),
            })
            .collect();
        return Ok(Some((TableKind::Gpt, parts)));
    }
    // A FAT or exFAT boot sector also ends in 55AA: only call it an MBR when
    // the entries look like one.
    let sane = !mbr.partitions.is_empty()
        && mbr
            .partitions
            .iter()
            .all(|p| p.sectors > 0 && (p.first_lba as u64 + p.sectors as u64) * SECTOR <= size);
    if !sane || is_exfat_boot_sector(&sector) {
        return Ok(None);
    }
    let parts = mbr
        .partitions
        .iter()
        .zip(1..)
        .map(|(p, number)| PartitionEntry {
            number,
            offset: p.first_lba as u64 * SECTOR,
            len: p.sectors as u64 * SECTOR,
            type_name: mbr_type_name(p.type_id),
            gpt_type: None,
            mbr_type: Some(p.type_id),
            name: None,
        })
        .collect();
    Ok(Some((TableKind::Mbr, parts)))
}
