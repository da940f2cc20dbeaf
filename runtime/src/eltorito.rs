//! ISO 9660 volume descriptors and the El Torito boot catalog: enough to
//! tell a BIOS-bootable image from a UEFI-bootable one.

use std::io::{self, Read, Seek, SeekFrom};

/// ISO 9660 logical sector size.
pub const SECTOR: u64 = 2048;
const FIRST_DESCRIPTOR: u64 = 16;
const MAX_DESCRIPTORS: u64 = 64;
const ENTRY: usize = 32;

/// Errors reading an ISO image.
#[derive(Debug, thiserror::Error)]
pub enum IsoError {
    #[error("cannot read the ISO at byte {offset}")]
    Io {
        offset: u64,
        #[source]
        source: io::Error,
    },
    #[error("not an ISO 9660 image: no primary volume descriptor at sector 16")]
    NotIso9660,
    #[error("El Torito boot catalog at sector {lba}: {problem}")]
    BadCatalog { lba: u32, problem: String },
}

/// Platform id of a catalog entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Platform {
    /// 0x00: PC BIOS.
    X86Bios,
    /// 0xEF: UEFI.
    Efi,
    /// 0x01 PowerPC, 0x02 Mac or anything else.
    Other(u8),
}

impl From<u8> for Platform {
    fn from(id: u8) -> Self {
        match id {
            0x00 => Platform::X86Bios,
            0xEF => Platform::Efi,
            other => Platform::Other(other),
        }
    }
}

/// Emulation type of a boot entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Media {
    NoEmulation,
    Floppy12,
    Floppy144,
    Floppy288,
    HardDisk,
    Unknown(u8),
}

impl From<u8> for Media {
    fn from(byte: u8) -> Self {
        match byte & 0x0F {
            0 => Media::NoEmulation,
            1 => Media::Floppy12,
            2 => Media::Floppy144,
            3 => Media::Floppy288,
            4 => Media::HardDisk,
            other => Media::Unknown(other),
        }
    }
}

/// One initial/default or section entry of the catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootEntry {
    pub platform: Platform,
    pub bootable: bool,
    pub media: Media,
    pub load_segment: u16,
    /// Virtual (512-byte) sectors to load.
    pub sector_count: u16,
    /// Start of the boot image, in 2048-byte sectors.
    pub load_lba: u32,
}

/// What the image says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsoInfo {
    /// Volume identifier from the primary volume descriptor, trimmed.
    pub volume_id: String,
    /// Volume size in bytes according to the primary volume descriptor.
    pub volume_bytes: u64,
    /// Sector of the boot catalog, when there is a boot record.
    pub catalog_lba: Option<u32>,
    pub entries: Vec<BootEntry>,
}

impl IsoInfo {
    /// A bootable entry for BIOS (platform 0x00).
    pub fn boots_bios(&self) -> bool {
        self.entries
            .iter()
            .any(|e| e.bootable && e.platform == Platform::X86Bios)
    }

    /// A bootable entry for UEFI (platform 0xEF).
    pub fn boots_uefi(&self) -> bool {
        self.entries
            .iter()
            .any(|e| e.bootable && e.platform == Platform::Efi)
    }
}

fn read_sector<R: Read + Seek>(reader: &mut R, lba: u64) -> Result<[u8; 2048], IsoError> {
    let offset = lba * SECTOR;
    let mut buf = [0u8; 2048];
    reader
        .seek(SeekFrom::Start(offset))
        .and_then(|_| reader.read_exact(&mut buf))
        .map_err(|source| IsoError::Io { offset, source })?;
    Ok(buf)
}

fn u16le(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32le(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Read the volume descriptors and, when present, the El Torito catalog.
pub fn read_iso<R: Read + Seek>(reader: &mut R) -> Result<IsoInfo, IsoError> {
    let mut volume_id = None;
    let mut volume_bytes = 0;
    let mut catalog_lba = None;
    for lba in FIRST_DESCRIPTOR..FIRST_DESCRIPTOR + MAX_DESCRIPTORS {
        let sector = match read_sector(reader, lba) {
            Ok(s) => s,
            Err(_) if volume_id.is_some() => break,
            Err(e) => return Err(e),
        };
        if &sector[1..6] != b"CD001" {
            if lba == FIRST_DESCRIPTOR {
                return Err(IsoError::NotIso9660);
            }
            break;
        }
        match sector[0] {
            0 if sector[7..7 + 23] == *b"EL TORITO SPECIFICATION" => {
                catalog_lba = Some(u32le(&sector, 0x47));
            }
            1 => {
                volume_id = Some(
                    String::from_utf8_lossy(&sector[40..72])
                        .trim_matches(|c: char| c == ' ' || c == '\0')
                        .to_string(),
                );
                volume_bytes = u64::from(u32le(&sector, 80)) * u64::from(u16le(&sector, 128));
            }
            255 => break,
            _ => {}
        }
    }
    let volume_id = volume_id.ok_or(IsoError::NotIso9660)?;
    let entries = match catalog_lba {
        Some(lba) => read_catalog(reader, lba)?,
        None => Vec::new(),
    };
    Ok(IsoInfo {
        volume_id,
        volume_bytes,
        catalog_lba,
        entries,
    })
}

fn parse_entry(platform: Platform, e: &[u8]) -> BootEntry {
    BootEntry {
        platform,
        bootable: e[0] == 0x88,
        media: Media::from(e[1]),
        load_segment: u16le(e, 2),
        sector_count: u16le(e, 6),
        load_lba: u32le(e, 8),
    }
}

/// Parse the boot catalog at `lba` (validation entry, default entry, sections).
pub fn read_catalog<R: Read + Seek>(reader: &mut R, lba: u32) -> Result<Vec<BootEntry>, IsoError> {
    let bad = |problem: String| IsoError::BadCatalog { lba, problem };
    // A catalog may span several sectors; read up to four.
    let mut catalog = Vec::new();
    for i in 0..4u64 {
        match read_sector(reader, u64::from(lba) + i) {
            Ok(s) => catalog.extend_from_slice(&s),
            Err(e) if i == 0 => return Err(e),
            Err(_) => break,
        }
    }
    let validation = &catalog[..ENTRY];
    if validation[0] != 0x01 || validation[30] != 0x55 || validation[31] != 0xAA {
        return Err(bad("no validation entry (header 0x01, key 55 AA)".into()));
    }
    let sum = (0..ENTRY)
        .step_by(2)
        .fold(0u16, |acc, at| acc.wrapping_add(u16le(validation, at)));
    if sum != 0 {
        return Err(bad(format!(
            "validation entry checksum is {sum:#06x}, not 0"
        )));
    }
    let mut entries = vec![parse_entry(
        Platform::from(validation[1]),
        &catalog[ENTRY..2 * ENTRY],
    )];
    let mut at = 2 * ENTRY;
    while at + ENTRY <= catalog.len() {
        let header = &catalog[at..at + ENTRY];
        if header[0] != 0x90 && header[0] != 0x91 {
            break;
        }
        let is_last = header[0] == 0x91;
        let platform = Platform::from(header[1]);
        let count = usize::from(u16le(header, 2));
        at += ENTRY;
        let mut seen = 0;
        while seen < count && at + ENTRY <= catalog.len() {
            let entry = &catalog[at..at + ENTRY];
            at += ENTRY;
            if entry[0] == 0x44 {
                continue; // selection criteria extension of the previous entry
            }
            entries.push(parse_entry(platform, entry));
            seen += 1;
        }
        if is_last {
            break;
        }
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;
    use std::path::Path;
    use std::process::Command;

    fn put_descriptor(img: &mut [u8], lba: usize, kind: u8) -> &mut [u8] {
        let s = &mut img[lba * 2048..(lba + 1) * 2048];
        s[0] = kind;
        s[1..6].copy_from_slice(b"CD001");
        s[6] = 1;
        s
    }

    fn validation(platform: u8) -> [u8; 32] {
        let mut v = [0u8; 32];
        v[0] = 1;
        v[1] = platform;
        v[30] = 0x55;
        v[31] = 0xAA;
        let sum = (0..32)
            .step_by(2)
            .fold(0u16, |acc, at| acc.wrapping_add(u16le(&v, at)));
        let fix = 0u16.wrapping_sub(sum).to_le_bytes();
        v[28] = fix[0];
        v[29] = fix[1];
        v
    }

    /// A synthetic image: PVD, boot record pointing at sector 20, a catalog
    /// with a BIOS default entry and one EFI section.
    fn synthetic(with_efi: bool) -> Vec<u8> {
        let mut img = vec![0u8; 24 * 2048];
        let pvd = put_descriptor(&mut img, 16, 1);
        pvd[40..48].copy_from_slice(b"TESTVOL ");
        pvd[80..84].copy_from_slice(&24u32.to_le_bytes());
        pvd[128..130].copy_from_slice(&2048u16.to_le_bytes());
        let br = put_descriptor(&mut img, 17, 0);
        br[7..30].copy_from_slice(b"EL TORITO SPECIFICATION");
        br[0x47..0x4B].copy_from_slice(&20u32.to_le_bytes());
        put_descriptor(&mut img, 18, 255);
        let cat = &mut img[20 * 2048..];
        cat[..32].copy_from_slice(&validation(0));
        cat[32] = 0x88;
        cat[38..40].copy_from_slice(&4u16.to_le_bytes());
        cat[40..44].copy_from_slice(&21u32.to_le_bytes());
        if with_efi {
            cat[64] = 0x91;
            cat[65] = 0xEF;
            cat[66..68].copy_from_slice(&1u16.to_le_bytes());
            cat[96] = 0x88;
            cat[104..108].copy_from_slice(&22u32.to_le_bytes());
        }
        img
    }

    #[test]
    fn synthetic_bios_and_efi() {
        let info = read_iso(&mut Cursor::new(synthetic(true))).unwrap();
        assert_eq!(info.volume_id, "TESTVOL");
        assert_eq!(info.volume_bytes, 24 * 2048);
        assert_eq!(info.catalog_lba, Some(20));
        assert_eq!(info.entries.len(), 2);
        assert_eq!(info.entries[0].platform, Platform::X86Bios);
        assert_eq!(info.entries[0].load_lba, 21);
        assert_eq!(info.entries[0].sector_count, 4);
        assert_eq!(info.entries[1].platform, Platform::Efi);
        assert!(info.boots_bios() && info.boots_uefi());

        let info = read_iso(&mut Cursor::new(synthetic(false))).unwrap();
        assert!(info.boots_bios() && !info.boots_uefi());
    }

    #[test]
    fn rejects_non_iso_and_bad_checksum() {
        let err = read_iso(&mut Cursor::new(vec![0u8; 40 * 2048])).unwrap_err();
        assert!(matches!(err, IsoError::NotIso9660), "{err}");
        let err = read_iso(&mut Cursor::new(vec![0u8; 1000])).unwrap_err();
        assert!(matches!(err, IsoError::Io { .. }), "{err}");
        let mut img = synthetic(false);
        img[20 * 2048 + 4] ^= 1;
        let err = read_iso(&mut Cursor::new(img)).unwrap_err();
        assert!(err.to_string().contains("checksum"), "{err}");
    }

    fn xorriso(dir: &Path, args: &[&str]) -> Vec<u8> {
        let out = dir.join("out.iso");
        let status = Command::new("xorriso")
            .args(["-as", "mkisofs", "-quiet", "-o"])
            .arg(&out)
            .args(args)
            .arg(dir.join("root"))
            .status()
            .expect("xorriso runs");
        assert!(status.success());
        std::fs::read(out).unwrap()
    }

    /// Real images made by xorriso: BIOS-only, UEFI-only and hybrid.
    #[test]
    fn xorriso_images() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(root.join("boot.bin"), vec![0x90u8; 2048]).unwrap();
        std::fs::write(root.join("efi.img"), vec![0u8; 64 * 1024]).unwrap();
        let bios = [
            "-V",
            "BIOSONLY",
            "-b",
            "boot.bin",
            "-no-emul-boot",
            "-boot-load-size",
            "4",
        ];
        let info = read_iso(&mut Cursor::new(xorriso(tmp.path(), &bios))).unwrap();
        assert_eq!(info.volume_id, "BIOSONLY");
        assert!(info.boots_bios() && !info.boots_uefi(), "{info:?}");
        assert_eq!(info.entries[0].media, Media::NoEmulation);

        let uefi = ["-V", "UEFIONLY", "-e", "efi.img", "-no-emul-boot"];
        let info = read_iso(&mut Cursor::new(xorriso(tmp.path(), &uefi))).unwrap();
        assert!(info.boots_uefi() && !info.boots_bios(), "{info:?}");

        let mut hybrid = bios.to_vec();
        hybrid.extend(["-eltorito-alt-boot", "-e", "efi.img", "-no-emul-boot"]);
        let info = read_iso(&mut Cursor::new(xorriso(tmp.path(), &hybrid))).unwrap();
        assert!(info.boots_uefi() && info.boots_bios(), "{info:?}");
        assert_eq!(info.entries.len(), 2);

        let info = read_iso(&mut Cursor::new(xorriso(tmp.path(), &["-V", "PLAIN"]))).unwrap();
        assert_eq!(info.catalog_lba, None);
        assert!(!info.boots_bios() && !info.boots_uefi());
    }
}
