//! Identify the filesystem on a block device from its first sectors:
//! exFAT and FAT volume serials (formatted as blkid and GRUB's `probe -u`
//! print them, `XXXX-XXXX`) and labels.

use std::io::{self, Read, Seek, SeekFrom};

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

fn serial_uuid(serial: u32) -> String {
    format!("{:04X}-{:04X}", serial >> 16, serial & 0xFFFF)
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

/// Identify the filesystem, or `Ok(None)` when it is neither exFAT nor FAT.
pub fn identify<R: Read + Seek>(dev: &mut R) -> io::Result<Option<FsIdentity>> {
    let mut boot = [0u8; 512];
    dev.seek(SeekFrom::Start(0))?;
    if dev.read_exact(&mut boot).is_err() {
        return Ok(None);
    }
    if &boot[3..11] == b"EXFAT   " {
        let uuid = serial_uuid(u32le(&boot, 100));
        let label = exfat_label(dev, &boot)?;
        return Ok(Some(FsIdentity {
            fs_type: FsType::Exfat,
            uuid,
            label,
        }));
    }
    if boot[510] != 0x55 || boot[511] != 0xAA || u16le(&boot, 11) == 0 {
        return Ok(None);
    }
    // FAT32 extended BPB (signature 0x29 at 66) or FAT12/16 (at 38).
    if &boot[82..87] == b"FAT32" && boot[66] == 0x29 {
        return Ok(Some(FsIdentity {
            fs_type: FsType::Vfat,
            uuid: serial_uuid(u32le(&boot, 67)),
            label: fat_label(&boot[71..82]),
        }));
    }
    if boot[38] == 0x29 && &boot[54..57] == b"FAT" {
        return Ok(Some(FsIdentity {
            fs_type: FsType::Vfat,
            uuid: serial_uuid(u32le(&boot, 39)),
            label: fat_label(&boot[43..54]),
        }));
    }
    Ok(None)
}

/// The volume label entry (type 0x83) in the first cluster of the root
/// directory.
fn exfat_label<R: Read + Seek>(dev: &mut R, boot: &[u8]) -> io::Result<Option<String>> {
    let sector_shift = u32::from(boot[108]);
    let cluster_shift = u32::from(boot[109]);
    if !(9..=12).contains(&sector_shift) || sector_shift + cluster_shift > 25 {
        return Ok(None);
    }
    let heap_offset = u64::from(u32le(boot, 88)) << sector_shift;
    let root_cluster = u64::from(u32le(boot, 96));
    if root_cluster < 2 {
        return Ok(None);
    }
    let cluster_bytes = 1u64 << (sector_shift + cluster_shift);
    let root = heap_offset + (root_cluster - 2) * cluster_bytes;
    let mut dir = vec![0u8; cluster_bytes.min(64 * 1024) as usize];
    dev.seek(SeekFrom::Start(root))?;
    dev.read_exact(&mut dir)?;
    for entry in dir.chunks_exact(32) {
        match entry[0] {
            0x00 => break,
            0x83 => {
                let count = usize::from(entry[1]).min(11);
                let units: Vec<u16> = (0..count).map(|i| u16le(entry, 2 + 2 * i)).collect();
                return Ok(Some(String::from_utf16_lossy(&units)));
            }
            _ => {}
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;
    use std::process::Command;

    fn mkfs(tool: &str, args: &[&str], size: u64) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("fs.img");
        File::create(&img).unwrap().set_len(size).unwrap();
        let out = Command::new(tool).args(args).arg(&img).output().unwrap();
        assert!(
            out.status.success(),
            "{tool}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        (dir, img)
    }

    fn blkid_uuid(img: &std::path::Path) -> String {
        let out = Command::new("blkid")
            .args(["-s", "UUID", "-o", "value"])
            .arg(img)
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    #[test]
    fn exfat_from_mkfs() {
        let (_d, img) = mkfs("mkfs.exfat", &["-L", "HIPERISO"], 64 << 20);
        let id = identify(&mut File::open(&img).unwrap()).unwrap().unwrap();
        assert_eq!(id.fs_type, FsType::Exfat);
        assert_eq!(id.uuid, blkid_uuid(&img));
        assert_eq!(id.label.as_deref(), Some("HIPERISO"));
    }

    #[test]
    fn fat16_and_fat32_from_mkfs() {
        let (_d, img) = mkfs(
            "mkfs.fat",
            &["-F", "16", "-n", "ESP", "-i", "DEADBEEF"],
            32 << 20,
        );
        let id = identify(&mut File::open(&img).unwrap()).unwrap().unwrap();
        assert_eq!((id.fs_type, id.uuid.as_str()), (FsType::Vfat, "DEAD-BEEF"));
        assert_eq!(id.uuid, blkid_uuid(&img));
        assert_eq!(id.label.as_deref(), Some("ESP"));
        let (_d, img) = mkfs("mkfs.fat", &["-F", "32", "-i", "0badf00d"], 64 << 20);
        let id = identify(&mut File::open(&img).unwrap()).unwrap().unwrap();
        assert_eq!((id.fs_type, id.uuid.as_str()), (FsType::Vfat, "0BAD-F00D"));
        assert_eq!(id.label, None);
    }

    #[test]
    fn other_content_is_none() {
        assert_eq!(
            identify(&mut io::Cursor::new(vec![0u8; 4096])).unwrap(),
            None
        );
        assert_eq!(identify(&mut io::Cursor::new(vec![0u8; 10])).unwrap(), None);
    }
}
