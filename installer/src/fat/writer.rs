//! The FAT writer: scans the ESP tree, assigns clusters in a fixed order,
//! and writes boot sector, FATs, directories and files.

use std::collections::HashSet;
use std::fs;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::entries::{
    check_name, dos_date_time, label_bytes, lfn_entries, short_entry, short_name,
};
use super::{
    ATTR_ARCHIVE, ATTR_DIRECTORY, ATTR_VOLUME_ID, FAT16_ROOT_ENTRIES, FAT32_BACKUP_BOOT_SECTOR,
    FAT32_FSINFO_SECTOR, FatError, FatOptions, FatSummary, FatType, Geometry, MEDIA, NUM_FATS,
    SECTOR,
};

/// An input tree, names sorted, with clusters assigned.
#[derive(Debug)]
pub(super) enum Node {
    File {
        name: String,
        path: PathBuf,
        size: u64,
        cluster: u32,
    },
    Dir {
        name: String,
        children: Vec<Node>,
        cluster: u32,
        clusters: u64,
    },
}

impl Node {
    fn name(&self) -> &str {
        match self {
            Node::File { name, .. } | Node::Dir { name, .. } => name,
        }
    }
}

pub(super) fn scan(dir: &Path) -> Result<Vec<Node>, FatError> {
    let source = |source| FatError::Source {
        path: dir.to_path_buf(),
        source,
    };
    let mut names = Vec::new();
    for entry in fs::read_dir(dir).map_err(source)? {
        let entry = entry.map_err(source)?;
        let name = entry
            .file_name()
            .into_string()
            .map_err(|n| FatError::BadName {
                path: dir.to_path_buf(),
                name: n.to_string_lossy().into_owned(),
                why: "not UTF-8",
            })?;
        check_name(dir, &name)?;
        names.push(name);
    }
    names.sort();
    let mut seen = HashSet::new();
    let mut nodes = Vec::new();
    for name in names {
        let upper = name.to_uppercase();
        if !seen.insert(upper.clone()) {
            let other = nodes
                .iter()
                .map(Node::name)
                .find(|n: &&str| n.to_uppercase() == upper)
                .unwrap_or("");
            return Err(FatError::CaseClash {
                path: dir.to_path_buf(),
                a: other.to_string(),
                b: name,
            });
        }
        let path = dir.join(&name);
        let meta = fs::metadata(&path).map_err(|source| FatError::Source {
            path: path.clone(),
            source,
        })?;
        if meta.is_dir() {
            let children = scan(&path)?;
            nodes.push(Node::Dir {
                name,
                children,
                cluster: 0,
                clusters: 0,
            });
        } else if meta.is_file() {
            if meta.len() > u32::MAX as u64 {
                return Err(FatError::FileTooLarge {
                    path,
                    size: meta.len(),
                });
            }
            nodes.push(Node::File {
                name,
                path,
                size: meta.len(),
                cluster: 0,
            });
        } else {
            return Err(FatError::Special { path });
        }
    }
    Ok(nodes)
}

/// Short-name characters besides A-Z and 0-9.
/// Directory entries of one directory, in order.
fn dir_entries(
    children: &[Node],
    self_cluster: Option<(u32, u32)>,
    label: Option<&[u8; 11]>,
    stamp: (u16, u16),
) -> Vec<[u8; 32]> {
    let mut entries = Vec::new();
    if let Some(label) = label {
        entries.push(short_entry(label, ATTR_VOLUME_ID, 0, 0, stamp));
    }
    if let Some((me, parent)) = self_cluster {
        entries.push(short_entry(b".          ", ATTR_DIRECTORY, me, 0, stamp));
        entries.push(short_entry(
            b"..         ",
            ATTR_DIRECTORY,
            parent,
            0,
            stamp,
        ));
    }
    let mut taken = HashSet::new();
    for child in children {
        let (short, long) = short_name(child.name(), &mut taken);
        if long {
            entries.extend(lfn_entries(child.name(), &short));
        }
        entries.push(match child {
            Node::File { size, cluster, .. } => {
                short_entry(&short, ATTR_ARCHIVE, *cluster, *size as u32, stamp)
            }
            Node::Dir { cluster, .. } => short_entry(&short, ATTR_DIRECTORY, *cluster, 0, stamp),
        });
    }
    entries
}

fn entry_count(children: &[Node], is_root: bool) -> u64 {
    let mut taken = HashSet::new();
    let own = if is_root { 1 } else { 2 };
    own + children
        .iter()
        .map(|c| {
            let (short, long) = short_name(c.name(), &mut taken);
            1 + if long {
                lfn_entries(c.name(), &short).len() as u64
            } else {
                0
            }
        })
        .sum::<u64>()
}

/// Assigns clusters depth-first: a directory, then its children in order.
fn allocate(children: &mut [Node], next: &mut u64, cluster_size: u64) {
    for child in children {
        match child {
            Node::File { size, cluster, .. } => {
                let n = size.div_ceil(cluster_size);
                *cluster = if n == 0 { 0 } else { *next as u32 };
                *next += n;
            }
            Node::Dir {
                children,
                cluster,
                clusters,
                ..
            } => {
                *clusters = (entry_count(children, false) * 32)
                    .div_ceil(cluster_size)
                    .max(1);
                *cluster = *next as u32;
                *next += *clusters;
                allocate(children, next, cluster_size);
            }
        }
    }
}

/// Clusters the tree takes besides the root directory.
fn tree_clusters(children: &[Node], cluster_size: u64) -> u64 {
    children
        .iter()
        .map(|c| match c {
            Node::File { size, .. } => size.div_ceil(cluster_size),
            Node::Dir { children, .. } => {
                (entry_count(children, false) * 32)
                    .div_ceil(cluster_size)
                    .max(1)
                    + tree_clusters(children, cluster_size)
            }
        })
        .sum()
}

fn scan_root(tree: Option<&Path>) -> Result<Vec<Node>, FatError> {
    match tree {
        Some(path) => scan(path),
        None => Ok(Vec::new()),
    }
}

/// The bytes the tree needs on a volume of `size` bytes, and what it offers.
fn demand(root: &[Node], geo: &Geometry) -> Result<(u64, u64), FatError> {
    let cs = geo.cluster_size();
    let root_entries = entry_count(root, true);
    let root_clusters = match geo.fat_type {
        FatType::Fat16 => {
            if root_entries > FAT16_ROOT_ENTRIES {
                return Err(FatError::RootFull {
                    entries: root_entries,
                });
            }
            0
        }
        FatType::Fat32 => (root_entries * 32).div_ceil(cs).max(1),
    };
    Ok((
        (root_clusters + tree_clusters(root, cs)) * cs,
        geo.clusters * cs,
    ))
}

/// The smallest whole-MiB volume size, at least `minimum`, that holds `tree`.
pub fn required_size(tree: &Path, minimum: u64) -> Result<u64, FatError> {
    const MIB: u64 = 1024 * 1024;
    let root = scan(tree)?;
    let mut size = minimum.div_ceil(MIB).max(1) * MIB;
    loop {
        if let Ok(geo) = Geometry::for_size(size) {
            let (need, have) = demand(&root, &geo)?;
            if need <= have {
                return Ok(size);
            }
            // Jump close to the answer, then creep up a MiB at a time.
            let short = need - have;
            size += (short / MIB).saturating_sub(1).max(1) * MIB;
        } else {
            size += MIB;
        }
    }
}

/// Formats `dev` (a partition-sized slice) as FAT and fills in `tree`.
/// Writes the reserved region, both FATs, the root directory and every used
/// cluster; unused clusters are left untouched.
pub fn format<D: Write + Seek>(
    dev: &mut D,
    size: u64,
    tree: Option<&Path>,
    opts: &FatOptions,
) -> Result<FatSummary, FatError> {
    let label = label_bytes(&opts.label)?;
    let geo = Geometry::for_size(size)?;
    let mut root = scan_root(tree)?;
    let (need, have) = demand(&root, &geo)?;
    if need > have {
        return Err(FatError::DoesNotFit {
            need,
            have,
            size,
            short: need - have,
        });
    }
    let cs = geo.cluster_size();
    let stamp = dos_date_time(opts.timestamp);

    let root_entries = entry_count(&root, true);
    let (root_cluster, mut next) = match geo.fat_type {
        FatType::Fat16 => (0u32, 2u64),
        FatType::Fat32 => (2u32, 2 + (root_entries * 32).div_ceil(cs).max(1)),
    };
    allocate(&mut root, &mut next, cs);
    let used_clusters = next - 2;

    // FAT: every allocation is one contiguous run.
    let mut fat = vec![0u32; geo.clusters as usize + 2];
    fat[0] = match geo.fat_type {
        FatType::Fat16 => 0xFF00 | MEDIA as u32,
        FatType::Fat32 => 0x0FFF_FF00 | MEDIA as u32,
    };
    fat[1] = geo.end_of_chain();
    let mut chain = |first: u32, count: u64| {
        for i in 0..count {
            let c = first as usize + i as usize;
            fat[c] = if i + 1 == count {
                geo.end_of_chain()
            } else {
                c as u32 + 1
            };
        }
    };
    if geo.fat_type == FatType::Fat32 {
        chain(root_cluster, (root_entries * 32).div_ceil(cs).max(1));
    }
    fn chains(nodes: &[Node], cs: u64, chain: &mut dyn FnMut(u32, u64)) {
        for node in nodes {
            match node {
                Node::File { size, cluster, .. } => chain(*cluster, size.div_ceil(cs)),
                Node::Dir {
                    children,
                    cluster,
                    clusters,
                    ..
                } => {
                    chain(*cluster, *clusters);
                    chains(children, cs, chain);
                }
            }
        }
    }
    chains(&root, cs, &mut chain);
    let mut fat_bytes = vec![0u8; (geo.fat_sectors * SECTOR) as usize];
    match geo.fat_type {
        FatType::Fat16 => {
            for (slot, v) in fat_bytes.chunks_exact_mut(2).zip(&fat) {
                slot.copy_from_slice(&(*v as u16).to_le_bytes());
            }
        }
        FatType::Fat32 => {
            for (slot, v) in fat_bytes.chunks_exact_mut(4).zip(&fat) {
                slot.copy_from_slice(&v.to_le_bytes());
            }
        }
    }

    // Reserved region.
    let boot = boot_sector(&geo, opts, &label);
    let mut reserved = vec![0u8; (geo.reserved_sectors * SECTOR) as usize];
    reserved[..512].copy_from_slice(&boot);
    if geo.fat_type == FatType::Fat32 {
        let free = geo.clusters - used_clusters;
        let info = fsinfo_sector(free as u32, next as u32);
        let at = |s: u64| (s * SECTOR) as usize;
        reserved[at(FAT32_FSINFO_SECTOR)..at(FAT32_FSINFO_SECTOR + 1)].copy_from_slice(&info);
        reserved[at(FAT32_BACKUP_BOOT_SECTOR)..at(FAT32_BACKUP_BOOT_SECTOR + 1)]
            .copy_from_slice(&boot);
        reserved[at(FAT32_BACKUP_BOOT_SECTOR + 1)..at(FAT32_BACKUP_BOOT_SECTOR + 2)]
            .copy_from_slice(&info);
    }
    dev.seek(SeekFrom::Start(0))?;
    dev.write_all(&reserved)?;
    for copy in 0..NUM_FATS {
        dev.seek(SeekFrom::Start(geo.fat_offset(copy)))?;
        dev.write_all(&fat_bytes)?;
    }

    // Root directory.
    let root_dir = dir_entries(&root, None, Some(&label), stamp);
    let root_bytes = match geo.fat_type {
        FatType::Fat16 => geo.root_dir_sectors * SECTOR,
        FatType::Fat32 => (root_entries * 32).div_ceil(cs).max(1) * cs,
    };
    let root_offset = match geo.fat_type {
        FatType::Fat16 => geo.root_dir_offset(),
        FatType::Fat32 => geo.cluster_offset(root_cluster),
    };
    write_dir(dev, root_offset, &root_dir, root_bytes)?;
    write_children(dev, &geo, &root, 0, stamp)?;
    dev.flush()?;
    Ok(FatSummary {
        fat_type: geo.fat_type,
        cluster_size: cs,
        clusters: geo.clusters,
        used_clusters,
    })
}

fn write_dir<D: Write + Seek>(
    dev: &mut D,
    offset: u64,
    entries: &[[u8; 32]],
    len: u64,
) -> Result<(), FatError> {
    let mut bytes = vec![0u8; len as usize];
    for (slot, e) in bytes.chunks_exact_mut(32).zip(entries) {
        slot.copy_from_slice(e);
    }
    dev.seek(SeekFrom::Start(offset))?;
    dev.write_all(&bytes)?;
    Ok(())
}

/// Writes the directories and files below a directory; `parent` is the
/// cluster ".." points to (0 for the root, as the FAT specification wants).
fn write_children<D: Write + Seek>(
    dev: &mut D,
    geo: &Geometry,
    nodes: &[Node],
    parent: u32,
    stamp: (u16, u16),
) -> Result<(), FatError> {
    let cs = geo.cluster_size();
    for node in nodes {
        match node {
            Node::File {
                path,
                size,
                cluster,
                ..
            } => {
                if *size == 0 {
                    continue;
                }
                let mut file = fs::File::open(path).map_err(|source| FatError::Source {
                    path: path.clone(),
                    source,
                })?;
                dev.seek(SeekFrom::Start(geo.cluster_offset(*cluster)))?;
                // 1 MiB reads and writes (io::copy alone moves 8 KiB at a time).
                let mut reader = io::BufReader::with_capacity(1 << 20, (&mut file).take(*size));
                let copied = io::copy(&mut reader, dev).map_err(|source| FatError::Source {
                    path: path.clone(),
                    source,
                })?;
                if copied != *size {
                    return Err(FatError::Source {
                        path: path.clone(),
                        source: io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "file shrank while being copied",
                        ),
                    });
                }
                let slack = size.div_ceil(cs) * cs - size;
                dev.write_all(&vec![0u8; slack as usize])?;
            }
            Node::Dir {
                children,
                cluster,
                clusters,
                ..
            } => {
                let entries = dir_entries(children, Some((*cluster, parent)), None, stamp);
                write_dir(dev, geo.cluster_offset(*cluster), &entries, clusters * cs)?;
                write_children(dev, geo, children, *cluster, stamp)?;
            }
        }
    }
    Ok(())
}

fn boot_sector(geo: &Geometry, opts: &FatOptions, label: &[u8; 11]) -> [u8; 512] {
    let mut b = [0u8; 512];
    let (ebpb, fs_name): (usize, &[u8; 8]) = match geo.fat_type {
        FatType::Fat16 => (36, b"FAT16   "),
        FatType::Fat32 => (64, b"FAT32   "),
    };
    let boot_code = ebpb + 26;
    b[0] = 0xEB;
    b[1] = (boot_code - 2) as u8;
    b[2] = 0x90;
    b[3..11].copy_from_slice(b"HIPERISO");
    b[11..13].copy_from_slice(&(SECTOR as u16).to_le_bytes());
    b[13] = geo.sectors_per_cluster as u8;
    b[14..16].copy_from_slice(&(geo.reserved_sectors as u16).to_le_bytes());
    b[16] = NUM_FATS as u8;
    let root_entries = if geo.fat_type == FatType::Fat16 {
        FAT16_ROOT_ENTRIES
    } else {
        0
    };
    b[17..19].copy_from_slice(&(root_entries as u16).to_le_bytes());
    if geo.total_sectors < 0x10000 {
        b[19..21].copy_from_slice(&(geo.total_sectors as u16).to_le_bytes());
    } else {
        b[32..36].copy_from_slice(&(geo.total_sectors as u32).to_le_bytes());
    }
    b[21] = MEDIA;
    if geo.fat_type == FatType::Fat16 {
        b[22..24].copy_from_slice(&(geo.fat_sectors as u16).to_le_bytes());
    }
    b[24..26].copy_from_slice(&63u16.to_le_bytes());
    b[26..28].copy_from_slice(&255u16.to_le_bytes());
    b[28..32].copy_from_slice(&opts.hidden_sectors.to_le_bytes());
    if geo.fat_type == FatType::Fat32 {
        b[36..40].copy_from_slice(&(geo.fat_sectors as u32).to_le_bytes());
        b[44..48].copy_from_slice(&2u32.to_le_bytes());
        b[48..50].copy_from_slice(&(FAT32_FSINFO_SECTOR as u16).to_le_bytes());
        b[50..52].copy_from_slice(&(FAT32_BACKUP_BOOT_SECTOR as u16).to_le_bytes());
    }
    b[ebpb] = 0x80;
    b[ebpb + 2] = 0x29;
    b[ebpb + 3..ebpb + 7].copy_from_slice(&opts.volume_id.to_le_bytes());
    b[ebpb + 7..ebpb + 18].copy_from_slice(label);
    b[ebpb + 18..ebpb + 26].copy_from_slice(fs_name);
    // Not bootable: "int 18h" asks the BIOS for the next boot device.
    b[boot_code..boot_code + 2].copy_from_slice(&[0xCD, 0x18]);
    b[510] = 0x55;
    b[511] = 0xAA;
    b
}

fn fsinfo_sector(free: u32, next_free: u32) -> [u8; 512] {
    let mut s = [0u8; 512];
    s[0..4].copy_from_slice(&0x4161_5252u32.to_le_bytes());
    s[484..488].copy_from_slice(&0x6141_7272u32.to_le_bytes());
    s[488..492].copy_from_slice(&free.to_le_bytes());
    s[492..496].copy_from_slice(&next_free.to_le_bytes());
    s[508..512].copy_from_slice(&0xAA55_0000u32.to_le_bytes());
    s
}
