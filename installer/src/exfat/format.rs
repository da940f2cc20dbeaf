//! The exFAT writer: lays down a fresh volume, optionally filled from a
//! directory tree, with deterministic bytes.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use hiperiso_stick::fs_identity::EXFAT_OEM_NAME;

use super::entries::{bitmap_entry, entry_count, file_entry_set, upcase_entry, volume_label_entry};
use super::upcase::{self, Upcase};
use super::{
    ENTRY_SIZE, ExfatError, FAT_END_OF_CHAIN, FIRST_CLUSTER, FLAG_ALLOCATION_POSSIBLE,
    FLAG_NO_FAT_CHAIN, MAX_CLUSTER_COUNT, MAX_DIRECTORY_SIZE, MAX_LABEL_UNITS, MAX_NAME_UNITS,
    SECTOR_SHIFT, attributes, boot_checksum, is_valid_name_unit, unix_to_exfat,
};

/// What [`format`](fn@format) needs besides the device and the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExfatOptions {
    /// Volume label, at most 11 UTF-16 code units (e.g. `HIPERISO`).
    pub label: String,
    /// VolumeSerialNumber; also the filesystem UUID Linux shows (`XXXX-XXXX`).
    pub volume_serial: u32,
    /// Every timestamp on the volume, in Unix seconds (from `SOURCE_DATE_EPOCH`).
    pub timestamp: u64,
}

/// Boundary the FAT and the cluster heap are aligned to, as mkfs.exfat does.
const ALIGNMENT: u64 = 1 << 20;
/// Smallest volume [`format`](fn@format) accepts.
const MIN_VOLUME_SIZE: u64 = 4 << 20;
/// Sectors in one boot region.
const BOOT_REGION_SECTORS: u64 = 12;
/// Deepest directory nesting accepted from the source tree (guards against
/// symlink loops).
const MAX_DEPTH: usize = 128;
/// Buffer size for copying file data and writing the FAT.
const COPY_BUFFER: usize = 1 << 20;

/// Where everything lives on the volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Geometry {
    volume_sectors: u64,
    /// log2 of sectors per cluster.
    cluster_shift: u8,
    fat_offset: u32,
    fat_length: u32,
    heap_offset: u32,
    cluster_count: u32,
}

impl Geometry {
    /// The layout mkfs.exfat (exfatprogs) picks for a volume of `size` bytes:
    /// clusters of 512 bytes below 7 MiB, 4 KiB up to 256 MiB, 32 KiB up to
    /// 32 GiB and 128 KiB above; FAT and cluster heap on 1 MiB boundaries.
    fn for_size(size: u64) -> Result<Self, ExfatError> {
        if size < MIN_VOLUME_SIZE {
            return Err(ExfatError::VolumeTooSmall {
                size,
                minimum: MIN_VOLUME_SIZE,
            });
        }
        let cluster_size: u64 = match size {
            s if s < 7 << 20 => 512,
            s if s <= 256 << 20 => 4 << 10,
            s if s <= 32 << 30 => 32 << 10,
            _ => 128 << 10,
        };
        let sector = 1u64 << SECTOR_SHIFT;
        let volume_bytes = size / sector * sector;
        let fat_offset = (BOOT_REGION_SECTORS * 2 * sector).next_multiple_of(ALIGNMENT);
        // A FAT entry for every cluster the whole volume could hold.
        let fat_bytes = (volume_bytes / cluster_size * 4).next_multiple_of(cluster_size);
        let heap_offset = (fat_offset + fat_bytes).next_multiple_of(ALIGNMENT);
        if heap_offset >= volume_bytes {
            return Err(ExfatError::VolumeTooSmall {
                size,
                minimum: MIN_VOLUME_SIZE,
            });
        }
        let cluster_count = (volume_bytes - heap_offset) / cluster_size;
        let too_large = || ExfatError::VolumeTooLarge { size, cluster_size };
        if cluster_count > MAX_CLUSTER_COUNT {
            return Err(too_large());
        }
        Ok(Self {
            volume_sectors: volume_bytes / sector,
            cluster_shift: (cluster_size / sector).trailing_zeros() as u8,
            fat_offset: u32::try_from(fat_offset / sector).map_err(|_| too_large())?,
            fat_length: u32::try_from(fat_bytes / sector).map_err(|_| too_large())?,
            heap_offset: u32::try_from(heap_offset / sector).map_err(|_| too_large())?,
            cluster_count: cluster_count as u32,
        })
    }

    fn cluster_size(&self) -> u64 {
        1 << (SECTOR_SHIFT + self.cluster_shift)
    }

    fn clusters_for(&self, bytes: u64) -> u64 {
        bytes.div_ceil(self.cluster_size())
    }

    fn cluster_offset(&self, cluster: u32) -> u64 {
        (u64::from(self.heap_offset) << SECTOR_SHIFT)
            + u64::from(cluster - FIRST_CLUSTER) * self.cluster_size()
    }
}

/// One file or directory of the source tree, with its place on the volume.
struct Node {
    name: Vec<u16>,
    source: PathBuf,
    kind: NodeKind,
    first_cluster: u32,
    clusters: u64,
}

enum NodeKind {
    File { size: u64 },
    Directory { children: Vec<Node> },
}

impl Node {
    /// Bytes of this node's data as recorded in its DataLength field.
    fn data_length(&self, cluster_size: u64) -> u64 {
        match self.kind {
            NodeKind::File { size } => size,
            NodeKind::Directory { .. } => self.clusters * cluster_size,
        }
    }
}

/// Bytes of directory entries describing `children` (plus `extra` entries).
fn directory_bytes(children: &[Node], extra: usize) -> u64 {
    let entries: usize = extra + children.iter().map(|c| entry_count(&c.name)).sum::<usize>();
    (entries * ENTRY_SIZE) as u64
}

/// Formats `dev`, a window of `size` bytes (offset 0 is the volume's first
/// byte), as exFAT, and copies `tree` (if any) into the root directory.
///
/// Only metadata and file data are written: boot regions, the whole FAT,
/// the allocation bitmap, the up-case table, directories and files (each
/// padded with zeros to its cluster's end). Everything else on `dev` is left
/// untouched, so a sparse image stays sparse. The same inputs always give the
/// same bytes: entries are sorted by name, and every timestamp is
/// `opts.timestamp`.
///
/// Files are stored contiguously without a FAT chain (NoFatChain); the root
/// and every directory get a FAT chain so that any driver can grow them.
pub fn format<D: Read + Write + Seek>(
    dev: &mut D,
    size: u64,
    tree: Option<&Path>,
    opts: &ExfatOptions,
) -> Result<(), ExfatError> {
    let geometry = Geometry::for_size(size)?;
    let label = encode_label(&opts.label)?;
    let upcase = Upcase::recommended();
    let mut children = match tree {
        Some(root) => scan_directory(root, &upcase, 0)?,
        None => Vec::new(),
    };

    // Allocation, in the order the writes happen: system structures, the
    // root directory, then each directory's children before its subtrees.
    let cluster_size = geometry.cluster_size();
    let bitmap_bytes = u64::from(geometry.cluster_count).div_ceil(8);
    let upcase_bytes = upcase::recommended_bytes();
    let bitmap_clusters = geometry.clusters_for(bitmap_bytes);
    let upcase_clusters = geometry.clusters_for(upcase_bytes.len() as u64);
    let root_size = directory_bytes(&children, 3);
    check_directory_size(root_size, tree.unwrap_or(Path::new("/")))?;
    let root_clusters = geometry.clusters_for(root_size).max(1);
    let bitmap_cluster = u64::from(FIRST_CLUSTER);
    let upcase_cluster = bitmap_cluster + bitmap_clusters;
    let root_cluster = upcase_cluster + upcase_clusters;
    let mut next_cluster = root_cluster + root_clusters;
    allocate(&mut children, &mut next_cluster, &geometry);
    let used_clusters = next_cluster - u64::from(FIRST_CLUSTER);
    let available = u64::from(geometry.cluster_count);
    if used_clusters > available {
        return Err(ExfatError::NoSpace {
            needed: used_clusters * cluster_size,
            available: available * cluster_size,
            shortfall: (used_clusters - available) * cluster_size,
        });
    }
    // All cluster numbers now fit in u32.
    let (bitmap_cluster, upcase_cluster, root_cluster) = (
        bitmap_cluster as u32,
        upcase_cluster as u32,
        root_cluster as u32,
    );

    let percent_in_use = (used_clusters * 100 / available) as u8;
    let boot = boot_region(&geometry, root_cluster, opts.volume_serial, percent_in_use);
    write_at(dev, 0, &boot, "writing the main boot region")?;
    write_at(
        dev,
        BOOT_REGION_SECTORS << SECTOR_SHIFT,
        &boot,
        "writing the backup boot region",
    )?;

    // Chains in the FAT: the system structures and every directory.
    let mut chains = vec![
        (bitmap_cluster, bitmap_clusters),
        (upcase_cluster, upcase_clusters),
        (root_cluster, root_clusters),
    ];
    collect_directory_chains(&children, &mut chains);
    write_fat(dev, &geometry, &chains)?;

    let mut bitmap = vec![0u8; (bitmap_clusters * cluster_size) as usize];
    for cluster_index in 0..used_clusters as usize {
        bitmap[cluster_index / 8] |= 1 << (cluster_index % 8);
    }
    write_at(
        dev,
        geometry.cluster_offset(bitmap_cluster),
        &bitmap,
        "writing the allocation bitmap",
    )?;

    let mut upcase_area = upcase_bytes.clone();
    upcase_area.resize((upcase_clusters * cluster_size) as usize, 0);
    write_at(
        dev,
        geometry.cluster_offset(upcase_cluster),
        &upcase_area,
        "writing the up-case table",
    )?;

    let stamp = unix_to_exfat(opts.timestamp);
    let mut root = Vec::with_capacity((root_clusters * cluster_size) as usize);
    root.extend_from_slice(&volume_label_entry(&label));
    root.extend_from_slice(&bitmap_entry(bitmap_cluster, bitmap_bytes));
    root.extend_from_slice(&upcase_entry(upcase_cluster, &upcase_bytes));
    for child in &children {
        root.extend_from_slice(&entry_set(child, &upcase, stamp, cluster_size));
    }
    root.resize((root_clusters * cluster_size) as usize, 0);
    write_at(
        dev,
        geometry.cluster_offset(root_cluster),
        &root,
        "writing the root directory",
    )?;

    write_contents(dev, &geometry, &children, &upcase, stamp)?;
    dev.flush().map_err(ExfatError::io("flushing the volume"))
}

/// The label as UTF-16, checked against the specification's limits.
pub fn encode_label(label: &str) -> Result<Vec<u16>, ExfatError> {
    let units: Vec<u16> = label.encode_utf16().collect();
    let invalid = |reason| ExfatError::InvalidLabel {
        label: label.to_string(),
        reason,
    };
    if units.len() > MAX_LABEL_UNITS {
        return Err(invalid("longer than 11 UTF-16 code units"));
    }
    if !units.iter().all(|&unit| is_valid_name_unit(unit)) {
        return Err(invalid(
            "contains a control character or one of \" * / : < > ? \\ |",
        ));
    }
    Ok(units)
}

fn check_directory_size(bytes: u64, path: &Path) -> Result<(), ExfatError> {
    if bytes > MAX_DIRECTORY_SIZE {
        return Err(ExfatError::InvalidName {
            path: path.to_path_buf(),
            reason: "directory has more entries than exFAT's 256 MiB directory limit allows",
        });
    }
    Ok(())
}

/// Reads one directory of the source tree, sorted by name, checking every
/// name against exFAT's rules.
fn scan_directory(dir: &Path, upcase: &Upcase, depth: usize) -> Result<Vec<Node>, ExfatError> {
    let source_error = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ExfatError::Source { path, source }
    };
    if depth > MAX_DEPTH {
        return Err(ExfatError::InvalidName {
            path: dir.to_path_buf(),
            reason: "directories nest deeper than 128 levels (a symlink loop?)",
        });
    }
    let mut entries = fs::read_dir(dir)
        .map_err(source_error(dir))?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(source_error(dir))?;
    entries.sort();

    let mut seen: HashMap<Vec<u16>, PathBuf> = HashMap::new();
    let mut nodes = Vec::with_capacity(entries.len());
    for path in entries {
        let name = encode_name(&path)?;
        if let Some(other) = seen.insert(upcase.upper_name(&name), path.clone()) {
            return Err(ExfatError::DuplicateName { path, other });
        }
        // Follows symlinks: the tree's view is what gets stored.
        let metadata = fs::metadata(&path).map_err(source_error(&path))?;
        let kind = if metadata.is_dir() {
            let children = scan_directory(&path, upcase, depth + 1)?;
            check_directory_size(directory_bytes(&children, 0), &path)?;
            NodeKind::Directory { children }
        } else if metadata.is_file() {
            NodeKind::File {
                size: metadata.len(),
            }
        } else {
            return Err(ExfatError::UnsupportedFileType { path });
        };
        nodes.push(Node {
            name,
            source: path,
            kind,
            first_cluster: 0,
            clusters: 0,
        });
    }
    Ok(nodes)
}

/// A source file's name as UTF-16, checked against exFAT's rules.
pub(super) fn encode_name(path: &Path) -> Result<Vec<u16>, ExfatError> {
    let invalid = |reason| ExfatError::InvalidName {
        path: path.to_path_buf(),
        reason,
    };
    let name = path
        .file_name()
        .and_then(|name| name.to_str())
        .ok_or_else(|| invalid("its name is not valid UTF-8"))?;
    let units: Vec<u16> = name.encode_utf16().collect();
    if units.len() > MAX_NAME_UNITS {
        return Err(invalid("its name is longer than 255 UTF-16 code units"));
    }
    if !units.iter().all(|&unit| is_valid_name_unit(unit)) {
        return Err(invalid(
            "its name contains a control character or one of \" * / : < > ? \\ |",
        ));
    }
    Ok(units)
}

/// Gives every node its clusters: first each child of a directory in name
/// order, then the subtrees of its subdirectories.
fn allocate(children: &mut [Node], next: &mut u64, geometry: &Geometry) {
    for child in children.iter_mut() {
        child.clusters = match &child.kind {
            NodeKind::File { size } => geometry.clusters_for(*size),
            NodeKind::Directory { children } => {
                geometry.clusters_for(directory_bytes(children, 0)).max(1)
            }
        };
        if child.clusters > 0 {
            // Clamped: an overflowing tree is reported as NoSpace afterwards.
            child.first_cluster = u32::try_from(*next).unwrap_or(u32::MAX);
            *next += child.clusters;
        }
    }
    for child in children.iter_mut() {
        if let NodeKind::Directory { children } = &mut child.kind {
            allocate(children, next, geometry);
        }
    }
}

fn collect_directory_chains(children: &[Node], chains: &mut Vec<(u32, u64)>) {
    for child in children {
        if let NodeKind::Directory { children } = &child.kind {
            chains.push((child.first_cluster, child.clusters));
            collect_directory_chains(children, chains);
        }
    }
}

/// Writes the whole FAT: media and reserved entries, a chain for each of
/// `chains`, and zeros everywhere else (NoFatChain files need no entries).
fn write_fat<D: Write + Seek>(
    dev: &mut D,
    geometry: &Geometry,
    chains: &[(u32, u64)],
) -> Result<(), ExfatError> {
    let entries_total = (u64::from(geometry.fat_length) << SECTOR_SHIFT) / 4;
    let entries_per_chunk = (COPY_BUFFER / 4) as u64;
    let fat_start = u64::from(geometry.fat_offset) << SECTOR_SHIFT;
    let mut chunk = vec![0u8; COPY_BUFFER];
    let mut first_entry = 0u64;
    while first_entry < entries_total {
        let count = entries_per_chunk.min(entries_total - first_entry);
        let end = first_entry + count;
        chunk.fill(0);
        let mut set = |index: u64, value: u32| {
            if (first_entry..end).contains(&index) {
                let at = ((index - first_entry) * 4) as usize;
                chunk[at..at + 4].copy_from_slice(&value.to_le_bytes());
            }
        };
        set(0, 0xFFFF_FFF8);
        set(1, 0xFFFF_FFFF);
        for &(first, length) in chains {
            let first = u64::from(first);
            let last = first + length - 1;
            for cluster in first.max(first_entry)..=last.min(end.saturating_sub(1)) {
                let value = if cluster == last {
                    FAT_END_OF_CHAIN
                } else {
                    (cluster + 1) as u32
                };
                set(cluster, value);
            }
        }
        write_at(
            dev,
            fat_start + first_entry * 4,
            &chunk[..(count * 4) as usize],
            "writing the FAT",
        )?;
        first_entry = end;
    }
    Ok(())
}

/// Main (and, identically, backup) boot region: boot sector, extended boot
/// sectors, OEM parameters, reserved sector and the boot checksum sector.
fn boot_region(geometry: &Geometry, root_cluster: u32, serial: u32, percent_in_use: u8) -> Vec<u8> {
    let sector = 1usize << SECTOR_SHIFT;
    let mut region = vec![0u8; BOOT_REGION_SECTORS as usize * sector];
    let boot = &mut region[..sector];
    boot[0..3].copy_from_slice(&[0xEB, 0x76, 0x90]);
    boot[3..11].copy_from_slice(EXFAT_OEM_NAME);
    // MustBeZero (11..64) stays zero; PartitionOffset 0 means "ignore".
    boot[72..80].copy_from_slice(&geometry.volume_sectors.to_le_bytes());
    boot[80..84].copy_from_slice(&geometry.fat_offset.to_le_bytes());
    boot[84..88].copy_from_slice(&geometry.fat_length.to_le_bytes());
    boot[88..92].copy_from_slice(&geometry.heap_offset.to_le_bytes());
    boot[92..96].copy_from_slice(&geometry.cluster_count.to_le_bytes());
    boot[96..100].copy_from_slice(&root_cluster.to_le_bytes());
    boot[100..104].copy_from_slice(&serial.to_le_bytes());
    boot[104..106].copy_from_slice(&0x0100u16.to_le_bytes()); // revision 1.00
    // VolumeFlags (106..108) zero: clean, first FAT active.
    boot[108] = SECTOR_SHIFT;
    boot[109] = geometry.cluster_shift;
    boot[110] = 1; // NumberOfFats
    boot[111] = 0x80; // DriveSelect
    boot[112] = percent_in_use;
    // No boot code: the specification asks for F4h (halt) bytes.
    boot[120..510].fill(0xF4);
    boot[510..512].copy_from_slice(&[0x55, 0xAA]);
    for extended in 1..=8 {
        let end = (extended + 1) * sector;
        region[end - 4..end].copy_from_slice(&[0x00, 0x00, 0x55, 0xAA]);
    }
    let checksum = boot_checksum(&region[..11 * sector]);
    for word in region[11 * sector..].chunks_exact_mut(4) {
        word.copy_from_slice(&checksum.to_le_bytes());
    }
    region
}

/// File, Stream Extension and File Name entries for one node.
fn entry_set(node: &Node, upcase: &Upcase, stamp: (u32, u8), cluster_size: u64) -> Vec<u8> {
    let attributes = match node.kind {
        NodeKind::File { .. } => attributes::ARCHIVE,
        NodeKind::Directory { .. } => attributes::DIRECTORY,
    };
    let flags = match node.kind {
        NodeKind::File { .. } if node.clusters > 0 => FLAG_ALLOCATION_POSSIBLE | FLAG_NO_FAT_CHAIN,
        _ => FLAG_ALLOCATION_POSSIBLE,
    };
    file_entry_set(
        &node.name,
        &upcase.upper_name(&node.name),
        attributes,
        flags,
        node.first_cluster,
        node.data_length(cluster_size),
        stamp,
    )
}

/// Writes the data of `children` and, recursively, their subtrees, in
/// allocation (that is, disk) order.
fn write_contents<D: Write + Seek>(
    dev: &mut D,
    geometry: &Geometry,
    children: &[Node],
    upcase: &Upcase,
    stamp: (u32, u8),
) -> Result<(), ExfatError> {
    let cluster_size = geometry.cluster_size();
    for child in children {
        match &child.kind {
            NodeKind::File { size } => {
                if child.clusters > 0 {
                    copy_file(dev, geometry, child, *size)?;
                }
            }
            NodeKind::Directory { children: entries } => {
                let mut data = Vec::with_capacity((child.clusters * cluster_size) as usize);
                for entry in entries {
                    data.extend_from_slice(&entry_set(entry, upcase, stamp, cluster_size));
                }
                data.resize((child.clusters * cluster_size) as usize, 0);
                write_at(
                    dev,
                    geometry.cluster_offset(child.first_cluster),
                    &data,
                    &format!("writing directory {}", child.source.display()),
                )?;
            }
        }
    }
    for child in children {
        if let NodeKind::Directory { children } = &child.kind {
            write_contents(dev, geometry, children, upcase, stamp)?;
        }
    }
    Ok(())
}

/// Copies one source file to its clusters and zero-fills the last cluster.
fn copy_file<D: Write + Seek>(
    dev: &mut D,
    geometry: &Geometry,
    node: &Node,
    size: u64,
) -> Result<(), ExfatError> {
    let source_error = |source| ExfatError::Source {
        path: node.source.clone(),
        source,
    };
    let context = || format!("writing {}", node.source.display());
    let mut file = File::open(&node.source).map_err(source_error)?;
    dev.seek(SeekFrom::Start(geometry.cluster_offset(node.first_cluster)))
        .map_err(ExfatError::io(context()))?;
    let mut buffer = vec![0u8; COPY_BUFFER];
    let mut copied = 0u64;
    loop {
        let read = file.read(&mut buffer).map_err(source_error)?;
        if read == 0 {
            break;
        }
        copied += read as u64;
        if copied > size {
            break;
        }
        dev.write_all(&buffer[..read])
            .map_err(ExfatError::io(context()))?;
    }
    if copied != size {
        return Err(ExfatError::SourceChanged {
            path: node.source.clone(),
            expected: size,
            actual: copied,
        });
    }
    let padding = (node.clusters * geometry.cluster_size() - size) as usize;
    buffer[..padding].fill(0);
    dev.write_all(&buffer[..padding])
        .map_err(ExfatError::io(context()))
}

pub(super) fn write_at<D: Write + Seek>(
    dev: &mut D,
    offset: u64,
    bytes: &[u8],
    context: &str,
) -> Result<(), ExfatError> {
    dev.seek(SeekFrom::Start(offset))
        .and_then(|_| dev.write_all(bytes))
        .map_err(ExfatError::io(context))
}

#[cfg(test)]
mod tests;
