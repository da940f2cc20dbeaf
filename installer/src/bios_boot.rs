//! Legacy BIOS boot code: GRUB's i386-pc `boot.img` in the MBR and its
//! `core.img` in the gap before the first partition, placed as
//! `grub-install` places them, so a BIOS that runs the MBR reaches the same
//! GRUB menu (and kernel) as UEFI does.
//!
//! ```text
//! MBR table:  LBA 0 boot.img (440 bytes) | LBA 1..   core.img | 1 MiB: data
//! GPT:        LBA 0 boot.img (440 bytes) | LBA 1..33 GPT | LBA 34.. core.img | 1 MiB: data
//! ```
//!
//! On GPT the core image lives in the same gap a BIOS boot partition would
//! cover, without a third table entry: the two-partition layout (data 1,
//! ESP 2) stays as it is for every reader. Placing it anywhere but LBA 1
//! means patching two pointers, as grub-setup does: the LBA of core.img's
//! first sector in boot.img, and the start of the blocklist (the rest of
//! core.img) at the end of that first sector.

use std::fs;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;

use hiperiso_stick::paths::esp::{BIOS_BOOT_IMG, BIOS_CORE_IMG};

use crate::gpt::ENTRY_ARRAY_SECTORS;
use crate::layout::{SECTOR, TableKind};
use crate::mbr::BOOT_CODE_SIZE;

/// boot.img: the LBA of core.img's first sector (GRUB_BOOT_MACHINE_KERNEL_SECTOR).
const KERNEL_SECTOR: usize = 0x5c;
/// boot.img: a `jmp` over the check that DL is a hard disk
/// (GRUB_BOOT_MACHINE_DRIVE_CHECK); grub-setup turns it into two `nop`s for
/// a hard disk, which works around BIOSes that pass a wrong DL.
const DRIVE_CHECK: usize = 0x66;
/// core.img's first sector (diskboot.img) ends with a blocklist entry
/// {start: u64, len: u16, segment: u16}; grub-mkimage sets `len` and
/// leaves `start` at 2 (core.img at LBA 1).
const BLOCKLIST_START: usize = 512 - 12;
const DEFAULT_BLOCKLIST_START: u64 = 2;

#[derive(Debug, thiserror::Error)]
pub enum BiosBootError {
    #[error("reading {path}")]
    Read {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("{0}")]
    Invalid(String),
    #[error(
        "GRUB's core.img is {size} bytes: it does not fit the {room} bytes before the first partition on a {table} disk"
    )]
    TooLarge {
        size: u64,
        room: u64,
        table: TableKind,
    },
    #[error("writing the BIOS boot code")]
    Io(#[from] io::Error),
}

/// GRUB's i386-pc boot code as found on an ESP tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BiosBoot {
    boot_img: [u8; 512],
    core_img: Vec<u8>,
}

impl BiosBoot {
    /// `EFI/hiperiso/bios/{boot,core}.img` of the ESP tree, or `None` when
    /// the payload has no BIOS boot path (both files absent).
    pub fn from_esp_tree(esp: &Path) -> Result<Option<Self>, BiosBootError> {
        let read = |relative: &str| -> Result<Option<Vec<u8>>, BiosBootError> {
            let path = esp.join(relative);
            match fs::read(&path) {
                Ok(bytes) => Ok(Some(bytes)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
                Err(source) => Err(BiosBootError::Read {
                    path: path.display().to_string(),
                    source,
                }),
            }
        };
        match (read(BIOS_BOOT_IMG)?, read(BIOS_CORE_IMG)?) {
            (None, None) => Ok(None),
            (Some(boot), Some(core)) => Self::new(&boot, core).map(Some),
            _ => Err(BiosBootError::Invalid(format!(
                "{}: the ESP tree has only one of {BIOS_BOOT_IMG} and {BIOS_CORE_IMG}",
                esp.display()
            ))),
        }
    }

    /// Checks that `boot` and `core` look like GRUB's i386-pc images.
    pub fn new(boot: &[u8], core: Vec<u8>) -> Result<Self, BiosBootError> {
        let boot_img: [u8; 512] = boot.try_into().map_err(|_| {
            BiosBootError::Invalid(format!(
                "{BIOS_BOOT_IMG} is {} bytes, GRUB's boot.img is 512",
                boot.len()
            ))
        })?;
        if boot_img[510..] != [0x55, 0xAA] {
            return Err(BiosBootError::Invalid(format!(
                "{BIOS_BOOT_IMG} has no 0x55AA signature: not GRUB's boot.img"
            )));
        }
        if core.len() <= SECTOR as usize {
            return Err(BiosBootError::Invalid(format!(
                "{BIOS_CORE_IMG} is {} bytes: GRUB's core.img is more than one sector",
                core.len()
            )));
        }
        let start = u64::from_le_bytes(core[BLOCKLIST_START..][..8].try_into().unwrap());
        if start != DEFAULT_BLOCKLIST_START {
            return Err(BiosBootError::Invalid(format!(
                "{BIOS_CORE_IMG}: blocklist start {start}, expected {DEFAULT_BLOCKLIST_START}: \
                 not an i386-pc core.img from grub-mkimage"
            )));
        }
        // grub-mkimage does not pad; the disk holds whole sectors.
        let mut core = core;
        core.resize(core.len().next_multiple_of(SECTOR as usize), 0);
        Ok(BiosBoot {
            boot_img,
            core_img: core,
        })
    }

    /// The LBA core.img starts at on a disk with `table`.
    pub fn core_lba(table: TableKind) -> u64 {
        match table {
            TableKind::Mbr => 1,
            TableKind::Gpt => 2 + ENTRY_ARRAY_SECTORS,
        }
    }

    /// The first 440 bytes of sector 0: boot.img pointing at core.img.
    pub fn boot_code(&self, table: TableKind) -> [u8; BOOT_CODE_SIZE] {
        let mut code = [0u8; BOOT_CODE_SIZE];
        code.copy_from_slice(&self.boot_img[..BOOT_CODE_SIZE]);
        code[KERNEL_SECTOR..KERNEL_SECTOR + 8]
            .copy_from_slice(&Self::core_lba(table).to_le_bytes());
        code[DRIVE_CHECK..DRIVE_CHECK + 2].copy_from_slice(&[0x90, 0x90]);
        code
    }

    /// core.img with its blocklist pointing at its own second sector.
    pub fn core_image(&self, table: TableKind) -> Vec<u8> {
        let mut core = self.core_img.clone();
        let start = Self::core_lba(table) + 1;
        core[BLOCKLIST_START..BLOCKLIST_START + 8].copy_from_slice(&start.to_le_bytes());
        core
    }

    /// Checks that core.img fits the gap before `first_partition` (a byte
    /// offset).
    pub fn check_room(&self, table: TableKind, first_partition: u64) -> Result<(), BiosBootError> {
        let room = first_partition.saturating_sub(Self::core_lba(table) * SECTOR);
        let size = self.core_img.len() as u64;
        if size > room {
            return Err(BiosBootError::TooLarge { size, room, table });
        }
        Ok(())
    }

    /// Writes core.img into the gap before `first_partition` (a byte
    /// offset); the caller puts [`Self::boot_code`] into sector 0 with the
    /// table.
    pub fn write_core<W: Write + Seek>(
        &self,
        disk: &mut W,
        table: TableKind,
        first_partition: u64,
    ) -> Result<(), BiosBootError> {
        self.check_room(table, first_partition)?;
        disk.seek(SeekFrom::Start(Self::core_lba(table) * SECTOR))?;
        disk.write_all(&self.core_image(table))?;
        Ok(())
    }
}

/// GRUB's BIOS boot code as found on a disk (for `inspect`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FoundBiosBoot {
    pub core_lba: u64,
    /// The sectors after the first that diskboot.img loads.
    pub core_sectors: u16,
}

/// GRUB's boot.img in sector 0 (it starts with `jmp short 0x65; nop`)
/// pointing at a sector whose blocklist continues right after it.
pub fn detect<D: Read + Seek>(disk: &mut D) -> io::Result<Option<FoundBiosBoot>> {
    let mut sector = [0u8; 512];
    disk.seek(SeekFrom::Start(0))?;
    disk.read_exact(&mut sector)?;
    if sector[..3] != [0xEB, 0x63, 0x90] {
        return Ok(None);
    }
    let core_lba = u64::from_le_bytes(sector[KERNEL_SECTOR..][..8].try_into().unwrap());
    let Some(offset) = core_lba.checked_mul(SECTOR) else {
        return Ok(None);
    };
    disk.seek(SeekFrom::Start(offset))?;
    if disk.read_exact(&mut sector).is_err() {
        return Ok(None);
    }
    let start = u64::from_le_bytes(sector[BLOCKLIST_START..][..8].try_into().unwrap());
    let core_sectors = u16::from_le_bytes(sector[BLOCKLIST_START + 8..][..2].try_into().unwrap());
    Ok(
        (start == core_lba + 1 && core_sectors > 0).then_some(FoundBiosBoot {
            core_lba,
            core_sectors,
        }),
    )
}

/// Sector 0's boot code for `table`: GRUB's boot.img when the payload has
/// a BIOS path, zeros otherwise (a BIOS then reports no bootable disk).
pub fn boot_code(bios: Option<&BiosBoot>, table: TableKind) -> [u8; BOOT_CODE_SIZE] {
    bios.map_or([0; BOOT_CODE_SIZE], |b| b.boot_code(table))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::MIB;
    use std::io::Cursor;

    fn images() -> (Vec<u8>, Vec<u8>) {
        let mut boot = vec![0xAAu8; 512];
        boot[..3].copy_from_slice(&[0xEB, 0x63, 0x90]);
        boot[510] = 0x55;
        boot[511] = 0xAA;
        let mut core = vec![0x11u8; 4 * 512];
        core[BLOCKLIST_START..BLOCKLIST_START + 8].copy_from_slice(&2u64.to_le_bytes());
        core[BLOCKLIST_START + 8..BLOCKLIST_START + 10].copy_from_slice(&3u16.to_le_bytes());
        (boot, core)
    }

    #[test]
    fn mbr_keeps_grub_mkimages_defaults() {
        let (boot, core) = images();
        let bios = BiosBoot::new(&boot, core.clone()).unwrap();
        let code = bios.boot_code(TableKind::Mbr);
        assert_eq!(&code[KERNEL_SECTOR..KERNEL_SECTOR + 8], &1u64.to_le_bytes());
        assert_eq!(&code[DRIVE_CHECK..DRIVE_CHECK + 2], &[0x90, 0x90]);
        assert_eq!(bios.core_image(TableKind::Mbr), core);
    }

    #[test]
    fn gpt_puts_core_after_the_entry_array_and_patches_both_pointers() {
        let (boot, core) = images();
        let bios = BiosBoot::new(&boot, core).unwrap();
        let code = bios.boot_code(TableKind::Gpt);
        assert_eq!(
            &code[KERNEL_SECTOR..KERNEL_SECTOR + 8],
            &34u64.to_le_bytes()
        );
        let mut disk = Cursor::new(vec![0u8; 2 * MIB as usize]);
        bios.write_core(&mut disk, TableKind::Gpt, MIB).unwrap();
        let bytes = disk.into_inner();
        assert!(
            bytes[..34 * 512].iter().all(|&b| b == 0),
            "GPT area untouched"
        );
        let mut with_code = bytes.clone();
        with_code[..440].copy_from_slice(&code);
        assert_eq!(
            detect(&mut Cursor::new(&with_code)).unwrap(),
            Some(FoundBiosBoot {
                core_lba: 34,
                core_sectors: 3
            })
        );
        assert_eq!(
            detect(&mut Cursor::new(&bytes)).unwrap(),
            None,
            "no boot.img"
        );
        let first = &bytes[34 * 512..35 * 512];
        assert_eq!(
            &first[BLOCKLIST_START..BLOCKLIST_START + 8],
            &35u64.to_le_bytes()
        );
        assert!(bytes[38 * 512..].iter().all(|&b| b == 0));
    }

    #[test]
    fn refuses_what_is_not_grubs_and_what_does_not_fit() {
        let (boot, core) = images();
        assert!(BiosBoot::new(&boot[..440], core.clone()).is_err());
        let mut moved = core.clone();
        moved[BLOCKLIST_START] = 9;
        assert!(BiosBoot::new(&boot, moved).is_err());
        let bios = BiosBoot::new(&boot, core).unwrap();
        let err = bios
            .write_core(&mut Cursor::new(Vec::new()), TableKind::Gpt, 36 * 512)
            .unwrap_err();
        assert!(matches!(err, BiosBootError::TooLarge { .. }), "{err}");
        assert_eq!(boot_code(None, TableKind::Mbr), [0; BOOT_CODE_SIZE]);
    }

    #[test]
    fn an_esp_tree_without_bios_files_has_no_bios_path() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(BiosBoot::from_esp_tree(dir.path()).unwrap(), None);
        let (boot, core) = images();
        let bios_dir = dir
            .path()
            .join(BIOS_BOOT_IMG)
            .parent()
            .unwrap()
            .to_path_buf();
        fs::create_dir_all(&bios_dir).unwrap();
        fs::write(dir.path().join(BIOS_BOOT_IMG), &boot).unwrap();
        assert!(
            BiosBoot::from_esp_tree(dir.path()).is_err(),
            "one file alone"
        );
        fs::write(dir.path().join(BIOS_CORE_IMG), &core).unwrap();
        assert!(BiosBoot::from_esp_tree(dir.path()).unwrap().is_some());
    }
}
