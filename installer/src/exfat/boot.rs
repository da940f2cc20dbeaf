//! The exFAT boot region: read, checksum-verified, and turned into the
//! volume's geometry ([`Volume`]).

use std::io::{Read, Seek, SeekFrom};

use hiperiso_stick::fs_identity::is_exfat_boot_sector;

use super::{ExfatError, FIRST_CLUSTER, MAX_CLUSTER_COUNT, boot_checksum, le16, le32, le64};

/// Volume parameters from a validated boot sector.
#[derive(Debug, Clone, Copy)]
pub(super) struct Volume {
    /// log2 of bytes per cluster.
    pub(super) cluster_bits: u32,
    pub(super) fat_start: u64,
    pub(super) fat_bytes: u64,
    pub(super) heap_start: u64,
    pub(super) cluster_count: u32,
    pub(super) root_cluster: u32,
    pub(super) serial: u32,
}

/// Reads and validates the 12-sector boot region starting at `first_sector`
/// (0 for the main, 12 for the backup region).
pub(super) fn read_boot_region<D: Read + Seek>(
    dev: &mut D,
    first_sector: u64,
) -> Result<Volume, ExfatError> {
    let which = if first_sector == 0 { "main" } else { "backup" };
    let mut sector = [0u8; 512];
    read_exact_at(dev, first_sector * 512, &mut sector, "the boot sector")?;
    let not_exfat = |detail: &str| ExfatError::NotExfat(format!("{which} boot sector: {detail}"));
    if !is_exfat_boot_sector(&sector) {
        return Err(not_exfat("no \"EXFAT   \" file system name"));
    }
    if sector[510..512] != [0x55, 0xAA] {
        return Err(not_exfat("no 55AAh boot signature"));
    }
    if sector[11..64].iter().any(|&b| b != 0) {
        return Err(not_exfat(
            "MustBeZero bytes are not zero (a FAT boot sector?)",
        ));
    }
    let sector_bits = u32::from(sector[108]);
    let cluster_shift = u32::from(sector[109]);
    if !(9..=12).contains(&sector_bits) || sector_bits + cluster_shift > 25 {
        return Err(not_exfat("sector or cluster size out of range"));
    }
    let sector_size = 1u64 << sector_bits;
    // With its real sector size, the whole region and its checksum.
    let mut region = vec![0u8; 12 * sector_size as usize];
    // The backup region starts 12 sectors in, in the volume's sector size.
    let start = if first_sector == 0 {
        0
    } else {
        12 * sector_size
    };
    if first_sector != 0 && sector_size != 512 {
        read_exact_at(dev, start, &mut region[..512], "the boot sector")?;
        if region[..512] != sector {
            return Err(not_exfat("backup boot sector not found"));
        }
    }
    read_exact_at(dev, start, &mut region, "the boot region")?;
    let checksum_sector = &region[11 * sector_size as usize..];
    let expected = boot_checksum(&region[..11 * sector_size as usize]);
    if checksum_sector
        .chunks_exact(4)
        .any(|word| le32(word, 0) != expected)
    {
        return Err(ExfatError::Corrupt(format!(
            "{which} boot region checksum does not match"
        )));
    }

    let boot = &region[..512];
    let volume_sectors = le64(boot, 72);
    let fat_offset = u64::from(le32(boot, 80));
    let fat_length = u64::from(le32(boot, 84));
    let heap_offset = u64::from(le32(boot, 88));
    let cluster_count = le32(boot, 92);
    let root_cluster = le32(boot, 96);
    let number_of_fats = u64::from(boot[110]);
    let volume_flags = le16(boot, 106);
    let corrupt = |detail: &str| ExfatError::Corrupt(format!("{which} boot sector: {detail}"));
    if !(1..=2).contains(&number_of_fats) {
        return Err(corrupt("NumberOfFats is neither 1 nor 2"));
    }
    if fat_offset < 24 || fat_length == 0 {
        return Err(corrupt("FAT offset or length out of range"));
    }
    if fat_offset + fat_length * number_of_fats > heap_offset {
        return Err(corrupt("FAT overlaps the cluster heap"));
    }
    if u64::from(cluster_count) > MAX_CLUSTER_COUNT || cluster_count == 0 {
        return Err(corrupt("ClusterCount out of range"));
    }
    if heap_offset + (u64::from(cluster_count) << cluster_shift) > volume_sectors {
        return Err(corrupt("cluster heap runs past VolumeLength"));
    }
    if (u64::from(cluster_count) + 2) * 4 > fat_length * sector_size {
        return Err(corrupt("FAT is too short for ClusterCount"));
    }
    if !(FIRST_CLUSTER..FIRST_CLUSTER + cluster_count).contains(&root_cluster) {
        return Err(corrupt(
            "FirstClusterOfRootDirectory is outside the cluster heap",
        ));
    }
    // TexFAT: VolumeFlags bit 0 selects the second FAT.
    let active_fat = if number_of_fats == 2 && volume_flags & 1 != 0 {
        1
    } else {
        0
    };
    Ok(Volume {
        cluster_bits: sector_bits + cluster_shift,
        fat_start: (fat_offset + active_fat * fat_length) * sector_size,
        fat_bytes: fat_length * sector_size,
        heap_start: heap_offset * sector_size,
        cluster_count,
        root_cluster,
        serial: le32(boot, 100),
    })
}

/// Reads `buffer.len()` bytes at `offset`; the error names `what`.
pub(super) fn read_exact_at<D: Read + Seek>(
    dev: &mut D,
    offset: u64,
    buffer: &mut [u8],
    what: &str,
) -> Result<(), ExfatError> {
    dev.seek(SeekFrom::Start(offset))
        .and_then(|_| dev.read_exact(buffer))
        .map_err(ExfatError::io(format!("reading {what} at byte {offset}")))
}
