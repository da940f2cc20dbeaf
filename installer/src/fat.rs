//! FAT16/FAT32 writer (for the ESP) and a small reader (for `inspect` and
//! `install --update`). Files are laid out contiguously in a fixed order, and
//! the volume id, label and every timestamp come from the options, so the
//! same tree always gives the same bytes.

use std::collections::HashSet;
use std::fs;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

const SECTOR: u64 = 512;
const FAT16_ROOT_ENTRIES: u64 = 512;
const FAT16_RESERVED: u64 = 4;
const FAT32_RESERVED: u64 = 32;
const FAT32_FSINFO_SECTOR: u64 = 1;
const FAT32_BACKUP_BOOT_SECTOR: u64 = 6;
const NUM_FATS: u64 = 2;
const MEDIA: u8 = 0xF8;
const ATTR_VOLUME_ID: u8 = 0x08;
const ATTR_DIRECTORY: u8 = 0x10;
const ATTR_ARCHIVE: u8 = 0x20;
const ATTR_LFN: u8 = 0x0F;
/// Volumes up to this size are FAT16, larger ones FAT32 (DESIGN.md §4).
pub const FAT16_MAX_SIZE: u64 = 32 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum FatError {
    #[error("I/O error while writing the FAT filesystem")]
    Io(#[from] io::Error),
    #[error("cannot read {path}")]
    Source {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path}: not a regular file or directory; the ESP holds only files and directories")]
    Special { path: PathBuf },
    #[error("{path}: file name {name:?} is not allowed on FAT ({why})")]
    BadName {
        path: PathBuf,
        name: String,
        why: &'static str,
    },
    #[error("{path}: {a:?} and {b:?} differ only in case; FAT cannot hold both")]
    CaseClash { path: PathBuf, a: String, b: String },
    #[error("{path}: file of {size} bytes exceeds FAT's 4 GiB - 1 limit")]
    FileTooLarge { path: PathBuf, size: u64 },
    #[error(
        "the root directory holds {entries} directory entries; FAT16 allows {FAT16_ROOT_ENTRIES}"
    )]
    RootFull { entries: u64 },
    #[error("a {size}-byte volume is too small for FAT ({clusters} clusters)")]
    VolumeTooSmall { size: u64, clusters: u64 },
    #[error(
        "the ESP payload needs {need} bytes but the {size}-byte FAT volume holds only {have}; {short} bytes short"
    )]
    DoesNotFit {
        need: u64,
        have: u64,
        size: u64,
        short: u64,
    },
    #[error("not a FAT filesystem: {0}")]
    NotFat(String),
    #[error("{0}: no such file or directory in the FAT filesystem")]
    NotFound(String),
    #[error("the FAT filesystem is damaged: {0}")]
    Corrupt(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FatType {
    Fat16,
    Fat32,
}

/// Deterministic identity of the volume.
#[derive(Debug, Clone)]
pub struct FatOptions {
    /// Up to 11 characters; upper-cased.
    pub label: String,
    pub volume_id: u32,
    /// Unix seconds (SOURCE_DATE_EPOCH) for every timestamp.
    pub timestamp: u64,
    /// The partition's first LBA on its disk (BPB "hidden sectors").
    pub hidden_sectors: u32,
}

/// What `format` wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FatSummary {
    pub fat_type: FatType,
    pub cluster_size: u64,
    pub clusters: u64,
    pub used_clusters: u64,
}

#[derive(Debug, Clone, Copy)]
struct Geometry {
    fat_type: FatType,
    total_sectors: u64,
    sectors_per_cluster: u64,
    reserved_sectors: u64,
    fat_sectors: u64,
    root_dir_sectors: u64,
    clusters: u64,
}

impl Geometry {
    fn for_size(size: u64) -> Result<Geometry, FatError> {
        let total_sectors = size / SECTOR;
        let (fat_type, reserved, root_dir_sectors, entry_bytes) = if size <= FAT16_MAX_SIZE {
            (
                FatType::Fat16,
                FAT16_RESERVED,
                FAT16_ROOT_ENTRIES * 32 / SECTOR,
                2,
            )
        } else {
            (FatType::Fat32, FAT32_RESERVED, 0, 4)
        };
        let max_clusters = match fat_type {
            FatType::Fat16 => 65524,
            FatType::Fat32 => 0x0FFF_FFF5,
        };
        let min_clusters = match fat_type {
            FatType::Fat16 => 4085,
            FatType::Fat32 => 65525,
        };
        // Cluster sizes as mkfs.fat picks them for FAT32; FAT16 takes the
        // smallest cluster that keeps the count in range.
        let mut sectors_per_cluster = match fat_type {
            FatType::Fat16 => 1,
            FatType::Fat32 if size < 260 * 1024 * 1024 => 1,
            FatType::Fat32 if size < 8 * 1024 * 1024 * 1024 => 8,
            FatType::Fat32 => 16,
        };
        loop {
            let mut fat_sectors = 1;
            let clusters = loop {
                let data = total_sectors
                    .saturating_sub(reserved + NUM_FATS * fat_sectors + root_dir_sectors);
                let clusters = data / sectors_per_cluster;
                let needed = ((clusters + 2) * entry_bytes).div_ceil(SECTOR);
                if needed <= fat_sectors {
                    break clusters;
                }
                fat_sectors = needed;
            };
            if clusters > max_clusters && sectors_per_cluster < 128 {
                sectors_per_cluster *= 2;
                continue;
            }
            if clusters < min_clusters || clusters > max_clusters {
                return Err(FatError::VolumeTooSmall { size, clusters });
            }
            return Ok(Geometry {
                fat_type,
                total_sectors,
                sectors_per_cluster,
                reserved_sectors: reserved,
                fat_sectors,
                root_dir_sectors,
                clusters,
            });
        }
    }

    fn cluster_size(&self) -> u64 {
        self.sectors_per_cluster * SECTOR
    }

    fn fat_offset(&self, copy: u64) -> u64 {
        (self.reserved_sectors + copy * self.fat_sectors) * SECTOR
    }

    fn root_dir_offset(&self) -> u64 {
        self.fat_offset(NUM_FATS)
    }

    fn data_offset(&self) -> u64 {
        self.root_dir_offset() + self.root_dir_sectors * SECTOR
    }

    fn cluster_offset(&self, cluster: u32) -> u64 {
        self.data_offset() + (cluster as u64 - 2) * self.cluster_size()
    }

    fn end_of_chain(&self) -> u32 {
        match self.fat_type {
            FatType::Fat16 => 0xFFFF,
            FatType::Fat32 => 0x0FFF_FFFF,
        }
    }
}

/// An input tree, names sorted, with clusters assigned.
#[derive(Debug)]
enum Node {
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

fn check_name(dir: &Path, name: &str) -> Result<(), FatError> {
    let bad = |why| {
        Err(FatError::BadName {
            path: dir.to_path_buf(),
            name: name.to_string(),
            why,
        })
    };
    if name.encode_utf16().count() > 255 {
        return bad("longer than 255 characters");
    }
    if name.chars().any(|c| c < ' ' || "\"*/:<>?\\|".contains(c)) {
        return bad("contains a control character or one of \" * / : < > ? \\ |");
    }
    if name.ends_with('.') || name.ends_with(' ') {
        return bad("ends with a dot or a space");
    }
    Ok(())
}

fn scan(dir: &Path) -> Result<Vec<Node>, FatError> {
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
const SHORT_EXTRA: &str = "!#$%&'()-@^_`{}~";

fn short_char(c: char) -> Option<u8> {
    let c = c.to_ascii_uppercase();
    (c.is_ascii_alphanumeric() || SHORT_EXTRA.contains(c)).then_some(c as u8)
}

/// The 8.3 name of `name`, and whether a long name must go with it.
fn short_name(name: &str, taken: &mut HashSet<[u8; 11]>) -> ([u8; 11], bool) {
    let (base, ext) = match name.rfind('.') {
        Some(i) if i > 0 => (&name[..i], &name[i + 1..]),
        _ => (name, ""),
    };
    let exact = !base.is_empty()
        && base.len() <= 8
        && ext.len() <= 3
        && base
            .chars()
            .chain(ext.chars())
            .all(|c| short_char(c) == Some(c as u8));
    let mut short = [b' '; 11];
    if exact {
        short[..base.len()].copy_from_slice(base.as_bytes());
        short[8..8 + ext.len()].copy_from_slice(ext.as_bytes());
        if taken.insert(short) {
            return (short, false);
        }
    }
    let map = |s: &str| -> Vec<u8> {
        s.chars()
            .filter(|&c| c != ' ' && c != '.')
            .map(|c| short_char(c).unwrap_or(b'_'))
            .collect()
    };
    let mut base = map(base);
    if base.is_empty() {
        base.push(b'_');
    }
    let ext = map(ext);
    for n in 1u32.. {
        let tail = format!("~{n}");
        let keep = base.len().min(8 - tail.len());
        let mut candidate = [b' '; 11];
        candidate[..keep].copy_from_slice(&base[..keep]);
        candidate[keep..keep + tail.len()].copy_from_slice(tail.as_bytes());
        let e = ext.len().min(3);
        candidate[8..8 + e].copy_from_slice(&ext[..e]);
        if taken.insert(candidate) {
            return (candidate, true);
        }
    }
    unreachable!("short name space exhausted")
}

fn lfn_checksum(short: &[u8; 11]) -> u8 {
    short
        .iter()
        .fold(0u8, |sum, &b| sum.rotate_right(1).wrapping_add(b))
}

fn lfn_entries(name: &str, short: &[u8; 11]) -> Vec<[u8; 32]> {
    let mut units: Vec<u16> = name.encode_utf16().collect();
    if !units.len().is_multiple_of(13) {
        units.push(0);
        while !units.len().is_multiple_of(13) {
            units.push(0xFFFF);
        }
    }
    let checksum = lfn_checksum(short);
    let count = units.len() / 13;
    (0..count)
        .rev()
        .map(|i| {
            let mut e = [0u8; 32];
            e[0] = (i + 1) as u8 | if i + 1 == count { 0x40 } else { 0 };
            e[11] = ATTR_LFN;
            e[13] = checksum;
            let chunk = &units[i * 13..i * 13 + 13];
            let offsets = [1, 3, 5, 7, 9, 14, 16, 18, 20, 22, 24, 28, 30];
            for (unit, off) in chunk.iter().zip(offsets) {
                e[off..off + 2].copy_from_slice(&unit.to_le_bytes());
            }
            e
        })
        .collect()
}

/// DOS date and time of a Unix timestamp (UTC), clamped to 1980..=2107.
pub fn dos_date_time(unix: u64) -> (u16, u16) {
    let days = (unix / 86400) as i64;
    let secs = unix % 86400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u16;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u16;
    let year = yoe + era * 400 + i64::from(month <= 2);
    if year < 1980 {
        return ((1 << 5) | 1, 0);
    }
    if year > 2107 {
        return ((127 << 9) | (12 << 5) | 31, (23 << 11) | (59 << 5) | 29);
    }
    let date = (((year - 1980) as u16) << 9) | (month << 5) | day;
    let time =
        ((secs / 3600) as u16) << 11 | (((secs / 60) % 60) as u16) << 5 | ((secs % 60) / 2) as u16;
    (date, time)
}

fn short_entry(short: &[u8; 11], attr: u8, cluster: u32, size: u32, stamp: (u16, u16)) -> [u8; 32] {
    let (date, time) = stamp;
    let mut e = [0u8; 32];
    e[..11].copy_from_slice(short);
    e[11] = attr;
    e[14..16].copy_from_slice(&time.to_le_bytes());
    e[16..18].copy_from_slice(&date.to_le_bytes());
    e[18..20].copy_from_slice(&date.to_le_bytes());
    e[20..22].copy_from_slice(&((cluster >> 16) as u16).to_le_bytes());
    e[22..24].copy_from_slice(&time.to_le_bytes());
    e[24..26].copy_from_slice(&date.to_le_bytes());
    e[26..28].copy_from_slice(&(cluster as u16).to_le_bytes());
    e[28..32].copy_from_slice(&size.to_le_bytes());
    e
}

fn padded_label(label: &str) -> [u8; 11] {
    let mut out = [b' '; 11];
    for (slot, c) in out.iter_mut().zip(
        label
            .chars()
            .filter(|c| c.is_ascii() && !c.is_ascii_control()),
    ) {
        *slot = c.to_ascii_uppercase() as u8;
    }
    out
}

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
    let label = padded_label(&opts.label);

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
                let copied = io::copy(&mut (&mut file).take(*size), dev).map_err(|source| {
                    FatError::Source {
                        path: path.clone(),
                        source,
                    }
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

/// One entry of a FAT directory listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FatDirEntry {
    pub name: String,
    pub is_dir: bool,
    pub size: u64,
    first_cluster: u32,
}

/// Reads a FAT16/FAT32 volume: directories, files, label and usage.
pub struct FatReader<D> {
    dev: D,
    geo: Geometry,
    root_cluster: u32,
    label: String,
    volume_id: u32,
}

impl<D: Read + Seek> FatReader<D> {
    pub fn open(mut dev: D) -> Result<Self, FatError> {
        let mut b = [0u8; 512];
        dev.seek(SeekFrom::Start(0))?;
        dev.read_exact(&mut b)?;
        let u16_at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]) as u64;
        let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap()) as u64;
        if b[510..512] != [0x55, 0xAA] || u16_at(11) != SECTOR {
            return Err(FatError::NotFat(
                "no boot signature or sector size is not 512".into(),
            ));
        }
        let sectors_per_cluster = b[13] as u64;
        let reserved = u16_at(14);
        let fats = b[16] as u64;
        let root_entries = u16_at(17);
        let total = if u16_at(19) != 0 {
            u16_at(19)
        } else {
            u32_at(32)
        };
        let fat16_len = u16_at(22);
        let (fat_sectors, ebpb) = if fat16_len != 0 {
            (fat16_len, 36)
        } else {
            (u32_at(36), 64)
        };
        if sectors_per_cluster == 0
            || !sectors_per_cluster.is_power_of_two()
            || fats == 0
            || fat_sectors == 0
        {
            return Err(FatError::NotFat("implausible BIOS parameter block".into()));
        }
        let root_dir_sectors = (root_entries * 32).div_ceil(SECTOR);
        let data = total.saturating_sub(reserved + fats * fat_sectors + root_dir_sectors);
        let clusters = data / sectors_per_cluster;
        let fat_type = if clusters < 4085 {
            return Err(FatError::NotFat("FAT12 volumes are not supported".into()));
        } else if clusters < 65525 {
            FatType::Fat16
        } else {
            FatType::Fat32
        };
        let root_cluster = if fat_type == FatType::Fat32 {
            u32_at(44) as u32
        } else {
            0
        };
        let label = String::from_utf8_lossy(&b[ebpb + 7..ebpb + 18])
            .trim_end()
            .to_string();
        let volume_id = u32_at(ebpb + 3) as u32;
        let geo = Geometry {
            fat_type,
            total_sectors: total,
            sectors_per_cluster,
            reserved_sectors: reserved,
            fat_sectors,
            root_dir_sectors,
            clusters,
        };
        let mut reader = FatReader {
            dev,
            geo,
            root_cluster,
            label,
            volume_id,
        };
        // The root directory's volume-label entry wins over the BPB's copy.
        if let Some(label) = reader.root_label()? {
            reader.label = label;
        }
        Ok(reader)
    }

    pub fn fat_type(&self) -> FatType {
        self.geo.fat_type
    }
    pub fn label(&self) -> &str {
        &self.label
    }
    pub fn volume_id(&self) -> u32 {
        self.volume_id
    }
    pub fn cluster_size(&self) -> u64 {
        self.geo.cluster_size()
    }
    pub fn total_clusters(&self) -> u64 {
        self.geo.clusters
    }

    fn fat_entry(&mut self, cluster: u32) -> Result<u32, FatError> {
        let (offset, width) = match self.geo.fat_type {
            FatType::Fat16 => (cluster as u64 * 2, 2),
            FatType::Fat32 => (cluster as u64 * 4, 4),
        };
        let mut buf = [0u8; 4];
        self.dev
            .seek(SeekFrom::Start(self.geo.fat_offset(0) + offset))?;
        self.dev.read_exact(&mut buf[..width])?;
        Ok(match self.geo.fat_type {
            FatType::Fat16 => u16::from_le_bytes([buf[0], buf[1]]) as u32,
            FatType::Fat32 => u32::from_le_bytes(buf) & 0x0FFF_FFFF,
        })
    }

    /// Clusters in use, counted from the first FAT.
    pub fn used_clusters(&mut self) -> Result<u64, FatError> {
        let width = if self.geo.fat_type == FatType::Fat16 {
            2
        } else {
            4
        };
        let mut fat = vec![0u8; ((self.geo.clusters + 2) * width) as usize];
        self.dev.seek(SeekFrom::Start(self.geo.fat_offset(0)))?;
        self.dev.read_exact(&mut fat)?;
        Ok(fat
            .chunks_exact(width as usize)
            .skip(2)
            .filter(|e| e.iter().any(|&b| b != 0))
            .count() as u64)
    }

    fn chain(&mut self, first: u32) -> Result<Vec<u32>, FatError> {
        let mut clusters = Vec::new();
        let mut c = first;
        while c >= 2 && (c as u64) < self.geo.clusters + 2 {
            if clusters.len() as u64 > self.geo.clusters {
                return Err(FatError::Corrupt(format!(
                    "cluster chain from {first} loops"
                )));
            }
            clusters.push(c);
            c = self.fat_entry(c)?;
        }
        Ok(clusters)
    }

    fn read_chain(&mut self, first: u32, limit: Option<u64>) -> Result<Vec<u8>, FatError> {
        let cs = self.geo.cluster_size();
        let mut out = Vec::new();
        for c in self.chain(first)? {
            if limit.is_some_and(|l| out.len() as u64 >= l) {
                break;
            }
            let start = out.len();
            out.resize(start + cs as usize, 0);
            self.dev.seek(SeekFrom::Start(self.geo.cluster_offset(c)))?;
            self.dev.read_exact(&mut out[start..])?;
        }
        if let Some(l) = limit {
            if (out.len() as u64) < l {
                return Err(FatError::Corrupt(format!(
                    "file chain from cluster {first} is shorter than its size"
                )));
            }
            out.truncate(l as usize);
        }
        Ok(out)
    }

    fn raw_dir(&mut self, cluster: u32) -> Result<Vec<u8>, FatError> {
        if cluster == 0 && self.geo.fat_type == FatType::Fat16 {
            let mut buf = vec![0u8; (self.geo.root_dir_sectors * SECTOR) as usize];
            self.dev.seek(SeekFrom::Start(self.geo.root_dir_offset()))?;
            self.dev.read_exact(&mut buf)?;
            Ok(buf)
        } else {
            let start = if cluster == 0 {
                self.root_cluster
            } else {
                cluster
            };
            self.read_chain(start, None)
        }
    }

    fn root_label(&mut self) -> Result<Option<String>, FatError> {
        let raw = self.raw_dir(0)?;
        for e in raw.chunks_exact(32) {
            if e[0] == 0 {
                break;
            }
            if e[0] != 0xE5
                && e[11] & (ATTR_VOLUME_ID | ATTR_DIRECTORY) == ATTR_VOLUME_ID
                && e[11] != ATTR_LFN
            {
                return Ok(Some(
                    String::from_utf8_lossy(&e[..11]).trim_end().to_string(),
                ));
            }
        }
        Ok(None)
    }

    fn parse_dir(&mut self, cluster: u32) -> Result<Vec<FatDirEntry>, FatError> {
        let raw = self.raw_dir(cluster)?;
        let mut entries = Vec::new();
        let mut long: Vec<(u8, [u16; 13])> = Vec::new();
        for e in raw.chunks_exact(32) {
            if e[0] == 0 {
                break;
            }
            if e[0] == 0xE5 {
                long.clear();
                continue;
            }
            if e[11] == ATTR_LFN {
                let mut units = [0u16; 13];
                let offsets = [1, 3, 5, 7, 9, 14, 16, 18, 20, 22, 24, 28, 30];
                for (u, off) in units.iter_mut().zip(offsets) {
                    *u = u16::from_le_bytes([e[off], e[off + 1]]);
                }
                long.push((e[0] & 0x1F, units));
                continue;
            }
            if e[11] & ATTR_VOLUME_ID != 0 || e[0] == b'.' {
                long.clear();
                continue;
            }
            let short: [u8; 11] = e[..11].try_into().unwrap();
            let name = if !long.is_empty() && long.len() == long[0].0 as usize {
                long.sort_by_key(|(seq, _)| *seq);
                let units: Vec<u16> = long
                    .iter()
                    .flat_map(|(_, u)| *u)
                    .take_while(|&u| u != 0)
                    .collect();
                String::from_utf16_lossy(&units)
            } else {
                let base = String::from_utf8_lossy(&short[..8]).trim_end().to_string();
                let ext = String::from_utf8_lossy(&short[8..]).trim_end().to_string();
                let lower = |s: String, flag: u8| {
                    if e[12] & flag != 0 {
                        s.to_lowercase()
                    } else {
                        s
                    }
                };
                let (base, ext) = (lower(base, 0x08), lower(ext, 0x10));
                if ext.is_empty() {
                    base
                } else {
                    format!("{base}.{ext}")
                }
            };
            long.clear();
            let hi = if self.geo.fat_type == FatType::Fat32 {
                u16::from_le_bytes([e[20], e[21]]) as u32
            } else {
                0
            };
            entries.push(FatDirEntry {
                name,
                is_dir: e[11] & ATTR_DIRECTORY != 0,
                size: u32::from_le_bytes(e[28..32].try_into().unwrap()) as u64,
                first_cluster: hi << 16 | u16::from_le_bytes([e[26], e[27]]) as u32,
            });
        }
        Ok(entries)
    }

    fn lookup(&mut self, path: &str) -> Result<FatDirEntry, FatError> {
        let mut current = FatDirEntry {
            name: String::new(),
            is_dir: true,
            size: 0,
            first_cluster: 0,
        };
        for part in path.split('/').filter(|p| !p.is_empty()) {
            if !current.is_dir {
                return Err(FatError::NotFound(path.to_string()));
            }
            current = self
                .parse_dir(current.first_cluster)?
                .into_iter()
                .find(|e| e.name.eq_ignore_ascii_case(part))
                .ok_or_else(|| FatError::NotFound(path.to_string()))?;
        }
        Ok(current)
    }

    /// Lists a directory ("/" or "" for the root); names are case-insensitive.
    pub fn read_dir(&mut self, path: &str) -> Result<Vec<FatDirEntry>, FatError> {
        let dir = self.lookup(path)?;
        if !dir.is_dir {
            return Err(FatError::NotFound(format!("{path} (not a directory)")));
        }
        self.parse_dir(dir.first_cluster)
    }

    pub fn read_file(&mut self, path: &str) -> Result<Vec<u8>, FatError> {
        let file = self.lookup(path)?;
        if file.is_dir {
            return Err(FatError::NotFound(format!(
                "{path} (a directory, not a file)"
            )));
        }
        if file.size == 0 {
            return Ok(Vec::new());
        }
        self.read_chain(file.first_cluster, Some(file.size))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn opts() -> FatOptions {
        FatOptions {
            label: "hiperiso es".into(),
            volume_id: 0x1234_5678,
            timestamp: 1_700_000_000,
            hidden_sectors: 2048,
        }
    }

    fn sample_tree() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("EFI/BOOT")).unwrap();
        fs::create_dir_all(root.join("EFI/hiperiso/trace")).unwrap();
        fs::write(root.join("EFI/BOOT/BOOTX64.EFI"), vec![0xAB; 5000]).unwrap();
        fs::write(root.join("EFI/BOOT/grub.cfg"), b"set timeout=5\n").unwrap();
        fs::write(
            root.join("EFI/hiperiso/build.json"),
            br#"{"hiperiso":{"version":"0.1.0"}}"#,
        )
        .unwrap();
        fs::write(root.join("EFI/hiperiso/trace/trace-standard.events"), b"").unwrap();
        for i in 0..40 {
            fs::write(
                root.join(format!("EFI/hiperiso/a long file name number {i}.txt")),
                format!("{i}"),
            )
            .unwrap();
        }
        dir
    }

    #[test]
    fn dos_dates() {
        // 2023-11-14 22:13:20 UTC.
        let (date, time) = dos_date_time(1_700_000_000);
        assert_eq!(date, (43 << 9) | (11 << 5) | 14);
        assert_eq!(time, (22 << 11) | (13 << 5) | 10);
        assert_eq!(dos_date_time(0), ((1 << 5) | 1, 0));
    }

    #[test]
    fn short_names_and_collisions() {
        let mut taken = HashSet::new();
        assert_eq!(
            short_name("BOOTX64.EFI", &mut taken),
            (*b"BOOTX64 EFI", false)
        );
        assert_eq!(short_name("grub.cfg", &mut taken), (*b"GRUB~1  CFG", true));
        assert_eq!(short_name("GRUB.CFG", &mut taken), (*b"GRUB    CFG", false));
        assert_eq!(
            short_name("trace-standard.events", &mut taken),
            (*b"TRACE-~1EVE", true)
        );
        assert_eq!(
            short_name("trace-detailed.events", &mut taken),
            (*b"TRACE-~2EVE", true)
        );
    }

    #[test]
    fn geometry_picks_fat16_at_32_mib_and_fat32_above() {
        let g = Geometry::for_size(32 * 1024 * 1024).unwrap();
        assert_eq!(g.fat_type, FatType::Fat16);
        let g = Geometry::for_size(33 * 1024 * 1024).unwrap();
        assert_eq!(g.fat_type, FatType::Fat32);
        assert!(g.clusters >= 65525);
        assert!(Geometry::for_size(1024 * 1024).is_err());
    }

    fn round_trip(size: u64) {
        let tree = sample_tree();
        let mut dev = Cursor::new(vec![0u8; size as usize]);
        format(&mut dev, size, Some(tree.path()), &opts()).unwrap();
        let mut reader = FatReader::open(&mut dev).unwrap();
        assert_eq!(reader.label(), "HIPERISO ES");
        assert_eq!(reader.volume_id(), 0x1234_5678);
        assert_eq!(
            reader.read_file("/EFI/BOOT/BOOTX64.EFI").unwrap(),
            vec![0xAB; 5000]
        );
        assert_eq!(
            reader.read_file("efi/boot/grub.cfg").unwrap(),
            b"set timeout=5\n"
        );
        assert_eq!(
            reader
                .read_file("EFI/hiperiso/a long file name number 39.txt")
                .unwrap(),
            b"39"
        );
        assert_eq!(
            reader
                .read_file("EFI/hiperiso/trace/trace-standard.events")
                .unwrap(),
            b""
        );
        let names: Vec<String> = reader
            .read_dir("/EFI")
            .unwrap()
            .into_iter()
            .map(|e| e.name)
            .collect();
        assert_eq!(names, ["BOOT", "hiperiso"]);
        assert!(matches!(
            reader.read_file("EFI/missing"),
            Err(FatError::NotFound(_))
        ));
        assert!(reader.used_clusters().unwrap() > 0);
        // Same input, same bytes.
        let mut again = Cursor::new(vec![0u8; size as usize]);
        format(&mut again, size, Some(tree.path()), &opts()).unwrap();
        assert!(dev.get_ref() == again.get_ref());
    }

    #[test]
    fn fat16_round_trip() {
        round_trip(16 * 1024 * 1024);
    }

    #[test]
    fn fat32_round_trip() {
        round_trip(40 * 1024 * 1024);
    }

    #[test]
    fn too_big_payload_says_by_how_much() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("big"), vec![1u8; 9 * 1024 * 1024]).unwrap();
        let mut dev = Cursor::new(vec![0u8; 8 * 1024 * 1024]);
        let err = format(&mut dev, 8 * 1024 * 1024, Some(dir.path()), &opts()).unwrap_err();
        assert!(
            matches!(err, FatError::DoesNotFit { short, .. } if short > 1024 * 1024),
            "{err}"
        );
        assert_eq!(required_size(dir.path(), 0).unwrap(), 10 * 1024 * 1024);
    }

    #[test]
    fn case_clash_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("a.txt"), b"").unwrap();
        fs::write(dir.path().join("A.TXT"), b"").unwrap();
        let err = scan(dir.path()).unwrap_err();
        assert!(matches!(err, FatError::CaseClash { .. }), "{err}");
    }
}
