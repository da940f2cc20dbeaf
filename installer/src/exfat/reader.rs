//! The exFAT reader: volumes made by [`super::format`], mkfs.exfat, Linux,
//! Windows or cameras. Follows FAT chains (fragmented files) as well as
//! contiguous NoFatChain allocations, and looks names up case-insensitively
//! through the volume's own up-case table. Corrupt input gives an error,
//! never a panic.

use std::io::{self, Read, Seek, SeekFrom, Write};

use super::upcase::Upcase;
use super::{
    ENTRY_SIZE, ExfatError, FAT_BAD, FAT_END_OF_CHAIN, FIRST_CLUSTER, FLAG_ALLOCATION_POSSIBLE,
    FLAG_NO_FAT_CHAIN, MAX_CLUSTER_COUNT, MAX_DIRECTORY_SIZE, NAME_UNITS_PER_ENTRY, attributes,
    boot_checksum, entry_set_checksum, entry_type, exfat_to_unix, le16, le32, le64,
};

/// FAT entries read and cached at a time.
const FAT_CACHE_ENTRIES: u64 = 4096;
/// Largest up-case table accepted (a full uncompressed table is 128 KiB).
const MAX_UPCASE_SIZE: u64 = 256 << 10;

/// One file or directory as listed by [`ExfatReader::read_dir`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    /// The name as stored (case preserved).
    pub name: String,
    pub is_dir: bool,
    /// DataLength: a file's size in bytes (for a directory, its allocation).
    pub size: u64,
    /// FileAttributes (see [`super::attributes`]).
    pub attributes: u16,
    /// Last modification, Unix seconds (UTC when the volume recorded an offset).
    pub modified: i64,
    pub(super) units: Vec<u16>,
    pub(super) stream: Stream,
}

/// Where a file's or directory's data lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Stream {
    pub(super) first_cluster: u32,
    /// Bytes to follow; `None` for the root directory, whose chain ends at
    /// the end-of-chain mark.
    pub(super) data_length: Option<u64>,
    pub(super) valid_data_length: u64,
    pub(super) no_fat_chain: bool,
}

/// Cluster usage from the allocation bitmap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub cluster_size: u64,
    pub total_clusters: u64,
    pub used_clusters: u64,
    pub free_clusters: u64,
}

impl Usage {
    pub fn total_bytes(&self) -> u64 {
        self.total_clusters * self.cluster_size
    }
    pub fn used_bytes(&self) -> u64 {
        self.used_clusters * self.cluster_size
    }
    pub fn free_bytes(&self) -> u64 {
        self.free_clusters * self.cluster_size
    }
}

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

/// A read-only view of an exFAT volume on `D` (offset 0 = volume start).
pub struct ExfatReader<D> {
    pub(super) dev: D,
    pub(super) volume: Volume,
    label: String,
    pub(super) upcase: Upcase,
    pub(super) bitmap: Stream,
    pub(super) fat_cache: Option<(u64, Vec<u8>)>,
}

impl<D: Read + Seek> ExfatReader<D> {
    /// Validates the boot region (falling back to the backup boot region),
    /// then loads the root directory's label, allocation bitmap entry and
    /// up-case table.
    pub fn open(mut dev: D) -> Result<Self, ExfatError> {
        let volume = match read_boot_region(&mut dev, 0) {
            Ok(volume) => volume,
            Err(main_error) => match read_boot_region(&mut dev, 12) {
                Ok(volume) => volume,
                Err(_) => return Err(main_error),
            },
        };
        let mut reader = Self {
            dev,
            volume,
            label: String::new(),
            upcase: Upcase::recommended(),
            bitmap: Stream {
                first_cluster: 0,
                data_length: Some(0),
                valid_data_length: 0,
                no_fat_chain: false,
            },
            fat_cache: None,
        };
        let root = reader.root_stream();
        let bytes = reader.read_stream(root, "/", MAX_DIRECTORY_SIZE)?;
        let mut bitmap = None;
        let mut upcase = None;
        for entry in bytes.chunks_exact(ENTRY_SIZE) {
            match entry[0] {
                entry_type::END_OF_DIRECTORY => break,
                entry_type::VOLUME_LABEL => {
                    let count = usize::from(entry[1]).min(11);
                    let units: Vec<u16> = (0..count).map(|i| le16(entry, 2 + i * 2)).collect();
                    reader.label = String::from_utf16_lossy(&units);
                }
                // The first bitmap (BitmapFlags bit 0 clear; TexFAT has two).
                entry_type::ALLOCATION_BITMAP if bitmap.is_none() && entry[1] & 1 == 0 => {
                    bitmap = Some((le32(entry, 20), le64(entry, 24)));
                }
                entry_type::UPCASE_TABLE if upcase.is_none() => {
                    upcase = Some((le32(entry, 4), le32(entry, 20), le64(entry, 24)));
                }
                _ => {}
            }
        }
        let (bitmap_cluster, bitmap_length) = bitmap.ok_or_else(|| {
            ExfatError::Corrupt("the root directory has no allocation bitmap entry".into())
        })?;
        let needed = u64::from(volume.cluster_count).div_ceil(8);
        if bitmap_length < needed || bitmap_length > needed + (1 << volume.cluster_bits) {
            return Err(ExfatError::Corrupt(format!(
                "allocation bitmap is {bitmap_length} bytes, {needed} expected"
            )));
        }
        reader.bitmap = Stream {
            first_cluster: bitmap_cluster,
            data_length: Some(bitmap_length),
            valid_data_length: bitmap_length,
            no_fat_chain: false,
        };
        let (checksum, upcase_cluster, upcase_length) = upcase.ok_or_else(|| {
            ExfatError::Corrupt("the root directory has no up-case table entry".into())
        })?;
        if upcase_length == 0 || upcase_length > MAX_UPCASE_SIZE {
            return Err(ExfatError::Corrupt(format!(
                "up-case table length {upcase_length} is out of range"
            )));
        }
        let table_stream = Stream {
            first_cluster: upcase_cluster,
            data_length: Some(upcase_length),
            valid_data_length: upcase_length,
            no_fat_chain: false,
        };
        let table = reader.read_stream(table_stream, "up-case table", MAX_UPCASE_SIZE)?;
        reader.upcase = Upcase::from_disk(&table, checksum)?;
        Ok(reader)
    }

    /// The volume label (empty when the volume has none).
    pub fn label(&self) -> &str {
        &self.label
    }

    /// VolumeSerialNumber (Linux shows it as the UUID `XXXX-XXXX`).
    pub fn volume_serial(&self) -> u32 {
        self.volume.serial
    }

    pub fn cluster_size(&self) -> u64 {
        1 << self.volume.cluster_bits
    }

    /// Gives the device back.
    pub fn into_inner(self) -> D {
        self.dev
    }

    /// Lists a directory (`""` or `"/"` is the root; components are
    /// separated by `/` and matched case-insensitively).
    pub fn read_dir(&mut self, path: &str) -> Result<Vec<DirEntry>, ExfatError> {
        let stream = match self.lookup(path)? {
            None => self.root_stream(),
            Some(entry) if entry.is_dir => entry.stream,
            Some(_) => {
                return Err(ExfatError::NotADirectory { path: path.into() });
            }
        };
        self.list(stream, path, None)
    }

    /// Lists a directory like [`Self::read_dir`], but skips damaged entry
    /// sets (after a power cut, say) instead of failing, and returns what
    /// was wrong with them next to the readable entries.
    pub fn read_dir_lossy(
        &mut self,
        path: &str,
    ) -> Result<(Vec<DirEntry>, Vec<ExfatError>), ExfatError> {
        let stream = match self.lookup(path)? {
            None => self.root_stream(),
            Some(entry) if entry.is_dir => entry.stream,
            Some(_) => {
                return Err(ExfatError::NotADirectory { path: path.into() });
            }
        };
        let mut problems = Vec::new();
        let entries = self.list(stream, path, Some(&mut problems))?;
        Ok((entries, problems))
    }

    /// The entry at `path` (the root has none: `NotFound`).
    pub fn metadata(&mut self, path: &str) -> Result<DirEntry, ExfatError> {
        self.lookup(path)?
            .ok_or_else(|| ExfatError::NotFound { path: path.into() })
    }

    /// Copies a file's contents to `out`; returns the number of bytes.
    pub fn read_file(&mut self, path: &str, out: &mut impl Write) -> Result<u64, ExfatError> {
        let mut file = self.open_file(path)?;
        let mut buffer = vec![0u8; 1 << 20];
        let mut total = 0u64;
        loop {
            let count = file.read_chunk(&mut buffer)?;
            if count == 0 {
                return Ok(total);
            }
            out.write_all(&buffer[..count])
                .map_err(ExfatError::io(format!(
                    "writing out the contents of {path}"
                )))?;
            total += count as u64;
        }
    }

    /// Opens a file for reading with [`std::io::Read`].
    pub fn open_file(&mut self, path: &str) -> Result<FileReader<'_, D>, ExfatError> {
        let entry = self.metadata(path)?;
        if entry.is_dir {
            return Err(ExfatError::IsADirectory { path: path.into() });
        }
        let size = entry.size;
        let runs = self.runs(entry.stream, path, u64::MAX)?;
        Ok(FileReader {
            reader: self,
            runs,
            run_index: 0,
            run_offset: 0,
            position: 0,
            valid: entry.stream.valid_data_length.min(size),
            size,
        })
    }

    /// Used and free clusters, counted in the allocation bitmap.
    pub fn usage(&mut self) -> Result<Usage, ExfatError> {
        let bitmap = self.read_stream(self.bitmap, "allocation bitmap", u64::MAX)?;
        let total = u64::from(self.volume.cluster_count);
        let full_bytes = (total / 8) as usize;
        let mut used: u64 = bitmap[..full_bytes]
            .iter()
            .map(|byte| u64::from(byte.count_ones()))
            .sum();
        let tail_bits = total % 8;
        if tail_bits > 0 {
            let mask = (1u8 << tail_bits) - 1;
            used += u64::from((bitmap[full_bytes] & mask).count_ones());
        }
        Ok(Usage {
            cluster_size: self.cluster_size(),
            total_clusters: total,
            used_clusters: used,
            free_clusters: total - used,
        })
    }

    pub(super) fn root_stream(&self) -> Stream {
        Stream {
            first_cluster: self.volume.root_cluster,
            data_length: None,
            valid_data_length: 0,
            no_fat_chain: false,
        }
    }

    /// Resolves `path` to its entry; `None` for the root directory.
    fn lookup(&mut self, path: &str) -> Result<Option<DirEntry>, ExfatError> {
        let mut current: Option<DirEntry> = None;
        let mut walked = String::new();
        for component in path.split('/').filter(|c| !c.is_empty()) {
            let directory = match &current {
                None => self.root_stream(),
                Some(entry) if entry.is_dir => entry.stream,
                Some(_) => return Err(ExfatError::NotADirectory { path: walked }),
            };
            walked.push('/');
            walked.push_str(component);
            let wanted = self
                .upcase
                .upper_name(&component.encode_utf16().collect::<Vec<_>>());
            // Damaged sibling entry sets do not hide an intact entry.
            let entries = self.list(directory, &walked, Some(&mut Vec::new()))?;
            let found = entries
                .into_iter()
                .find(|entry| self.upcase.upper_name(&entry.units) == wanted);
            match found {
                Some(entry) => current = Some(entry),
                None => return Err(ExfatError::NotFound { path: path.into() }),
            }
        }
        Ok(current)
    }

    /// Parses the file entry sets of one directory. With `problems`, a
    /// damaged entry set is recorded there and skipped; without, it is an
    /// error.
    fn list(
        &mut self,
        directory: Stream,
        path: &str,
        mut problems: Option<&mut Vec<ExfatError>>,
    ) -> Result<Vec<DirEntry>, ExfatError> {
        let bytes = self.read_stream(directory, path, MAX_DIRECTORY_SIZE)?;
        let entry_count = bytes.len() / ENTRY_SIZE;
        let entry = |index: usize| &bytes[index * ENTRY_SIZE..(index + 1) * ENTRY_SIZE];
        let corrupt = |index: usize, what: &str| {
            ExfatError::Corrupt(format!("directory {path:?}, entry {index}: {what}"))
        };
        let mut entries = Vec::new();
        let mut index = 0;
        while index < entry_count {
            let kind = entry(index)[0];
            if kind == entry_type::END_OF_DIRECTORY {
                break;
            }
            let is_primary = kind & entry_type::SECONDARY == 0;
            if kind & entry_type::IN_USE == 0 || !is_primary {
                // Deleted, unused, or a stray secondary entry.
                index += 1;
                continue;
            }
            let outcome = match kind {
                entry_type::ALLOCATION_BITMAP
                | entry_type::UPCASE_TABLE
                | entry_type::VOLUME_LABEL => Ok((None, index + 1)),
                entry_type::FILE => {
                    let secondaries = usize::from(entry(index)[1]);
                    let end = index + 1 + secondaries;
                    if !(2..=18).contains(&secondaries) {
                        Err(corrupt(index, "file entry with a bad SecondaryCount"))
                    } else if end > entry_count {
                        Err(corrupt(index, "entry set runs past the directory's end"))
                    } else {
                        let set = &bytes[index * ENTRY_SIZE..end * ENTRY_SIZE];
                        parse_file_set(set)
                            .map(|parsed| (Some(parsed), end))
                            .map_err(|what| corrupt(index, what))
                    }
                }
                // Benign primaries (volume GUID, padding, ...) and their
                // secondaries can be skipped.
                kind if kind & entry_type::BENIGN != 0 => {
                    Ok((None, index + 1 + usize::from(entry(index)[1])))
                }
                _ => Err(corrupt(
                    index,
                    &format!("unknown critical entry type {kind:02X}h"),
                )),
            };
            match (outcome, problems.as_deref_mut()) {
                (Ok((parsed, next)), _) => {
                    entries.extend(parsed);
                    index = next;
                }
                (Err(problem), Some(problems)) => {
                    problems.push(problem);
                    index += 1;
                }
                (Err(problem), None) => return Err(problem),
            }
        }
        Ok(entries)
    }

    /// Reads a whole stream (up to its valid length; the rest is zeros).
    pub(super) fn read_stream(
        &mut self,
        stream: Stream,
        what: &str,
        limit: u64,
    ) -> Result<Vec<u8>, ExfatError> {
        let runs = self.runs(stream, what, limit)?;
        let cluster_size = self.cluster_size();
        let total: u64 = runs.iter().map(|&(_, count)| count * cluster_size).sum();
        let length = stream.data_length.unwrap_or(total).min(total);
        let valid = match stream.data_length {
            Some(_) => stream.valid_data_length.min(length),
            None => length,
        };
        if length > limit {
            return Err(ExfatError::Corrupt(format!(
                "{what} is {length} bytes long, more than the {limit} allowed"
            )));
        }
        let mut data = vec![0u8; length as usize];
        let mut filled = 0u64;
        for (first, count) in runs {
            if filled >= valid {
                break;
            }
            let chunk = (count * cluster_size).min(valid - filled);
            let offset = self.cluster_offset(first);
            read_exact_at(
                &mut self.dev,
                offset,
                &mut data[filled as usize..(filled + chunk) as usize],
                what,
            )?;
            filled += chunk;
        }
        Ok(data)
    }

    pub(super) fn cluster_offset(&self, cluster: u32) -> u64 {
        self.volume.heap_start + (u64::from(cluster - FIRST_CLUSTER) << self.volume.cluster_bits)
    }

    fn is_valid_cluster(&self, cluster: u32) -> bool {
        (FIRST_CLUSTER..FIRST_CLUSTER + self.volume.cluster_count).contains(&cluster)
    }

    /// The runs of consecutive clusters (first, count) holding a stream.
    pub(super) fn runs(
        &mut self,
        stream: Stream,
        what: &str,
        limit: u64,
    ) -> Result<Vec<(u32, u64)>, ExfatError> {
        let cluster_size = self.cluster_size();
        let corrupt = |detail: String| ExfatError::Corrupt(format!("{what}: {detail}"));
        let wanted = match stream.data_length {
            Some(0) => return Ok(Vec::new()),
            Some(length) => Some(length.div_ceil(cluster_size)),
            None => None,
        };
        if !self.is_valid_cluster(stream.first_cluster) {
            return Err(corrupt(format!(
                "first cluster {} is outside the cluster heap",
                stream.first_cluster
            )));
        }
        if let Some(count) = wanted {
            if count > u64::from(self.volume.cluster_count) {
                return Err(corrupt(format!(
                    "{count} clusters is more than the volume has"
                )));
            }
            if stream.no_fat_chain {
                let last = u64::from(stream.first_cluster) + count - 1;
                if last >= u64::from(FIRST_CLUSTER) + u64::from(self.volume.cluster_count) {
                    return Err(corrupt("contiguous data runs past the cluster heap".into()));
                }
                return Ok(vec![(stream.first_cluster, count)]);
            }
        }
        let max_steps = wanted.unwrap_or_else(|| {
            (limit / cluster_size).clamp(1, u64::from(self.volume.cluster_count))
        });
        let mut runs: Vec<(u32, u64)> = Vec::new();
        let mut cluster = stream.first_cluster;
        let mut steps = 0u64;
        loop {
            match runs.last_mut() {
                Some((first, count)) if u64::from(*first) + *count == u64::from(cluster) => {
                    *count += 1
                }
                _ => runs.push((cluster, 1)),
            }
            steps += 1;
            if Some(steps) == wanted {
                break;
            }
            let next = self.fat_entry(cluster)?;
            if next == FAT_END_OF_CHAIN {
                if wanted.is_some() {
                    return Err(corrupt(format!(
                        "cluster chain ends after {steps} clusters, {} expected",
                        wanted.unwrap_or(0)
                    )));
                }
                break;
            }
            if next == FAT_BAD || !self.is_valid_cluster(next) {
                return Err(corrupt(format!(
                    "cluster {cluster} links to invalid cluster {next:08X}h"
                )));
            }
            if steps >= max_steps {
                return Err(corrupt(format!(
                    "cluster chain is longer than {max_steps} clusters (a loop?)"
                )));
            }
            cluster = next;
        }
        Ok(runs)
    }

    fn fat_entry(&mut self, cluster: u32) -> Result<u32, ExfatError> {
        let block = u64::from(cluster) / FAT_CACHE_ENTRIES;
        let cached = matches!(&self.fat_cache, Some((cached, _)) if *cached == block);
        if !cached {
            let start = block * FAT_CACHE_ENTRIES * 4;
            let length = (FAT_CACHE_ENTRIES * 4).min(self.volume.fat_bytes.saturating_sub(start));
            let mut data = vec![0u8; length as usize];
            read_exact_at(
                &mut self.dev,
                self.volume.fat_start + start,
                &mut data,
                "FAT",
            )?;
            self.fat_cache = Some((block, data));
        }
        let (_, data) = self.fat_cache.as_ref().expect("cache filled above");
        let at = ((u64::from(cluster) % FAT_CACHE_ENTRIES) * 4) as usize;
        if at + 4 > data.len() {
            return Err(ExfatError::Corrupt(format!(
                "cluster {cluster} has no FAT entry"
            )));
        }
        Ok(le32(data, at))
    }
}

/// Parses one File directory entry set (checksum included).
pub(super) fn parse_file_set(set: &[u8]) -> Result<DirEntry, &'static str> {
    if entry_set_checksum(set) != le16(set, 2) {
        return Err("entry set checksum mismatch");
    }
    let stream_entry = &set[ENTRY_SIZE..2 * ENTRY_SIZE];
    if stream_entry[0] != entry_type::STREAM_EXTENSION {
        return Err("file entry is not followed by a stream extension entry");
    }
    let flags = stream_entry[1];
    let name_length = usize::from(stream_entry[3]);
    let valid_data_length = le64(stream_entry, 8);
    let data_length = le64(stream_entry, 24);
    let first_cluster = le32(stream_entry, 20);
    if valid_data_length > data_length {
        return Err("ValidDataLength exceeds DataLength");
    }
    let mut units = Vec::with_capacity(name_length);
    for secondary in set[2 * ENTRY_SIZE..].chunks_exact(ENTRY_SIZE) {
        match secondary[0] {
            entry_type::FILE_NAME => {
                for position in 0..NAME_UNITS_PER_ENTRY {
                    if units.len() < name_length {
                        units.push(le16(secondary, 2 + position * 2));
                    }
                }
            }
            kind if kind & entry_type::BENIGN != 0 => {}
            _ => return Err("unexpected critical secondary entry"),
        }
    }
    if units.len() != name_length || name_length == 0 {
        return Err("file name entries do not hold NameLength characters");
    }
    let file_attributes = le16(set, 4);
    let allocated = flags & FLAG_ALLOCATION_POSSIBLE != 0 && data_length > 0;
    Ok(DirEntry {
        name: String::from_utf16_lossy(&units),
        is_dir: file_attributes & attributes::DIRECTORY != 0,
        size: data_length,
        attributes: file_attributes,
        modified: exfat_to_unix(le32(set, 12), set[21], set[23]),
        units,
        stream: Stream {
            first_cluster: if allocated { first_cluster } else { 0 },
            data_length: Some(if allocated { data_length } else { 0 }),
            valid_data_length: if allocated { valid_data_length } else { 0 },
            no_fat_chain: flags & FLAG_NO_FAT_CHAIN != 0,
        },
    })
}

/// Reads and validates the 12-sector boot region starting at `first_sector`
/// (0 for the main, 12 for the backup region).
fn read_boot_region<D: Read + Seek>(dev: &mut D, first_sector: u64) -> Result<Volume, ExfatError> {
    let which = if first_sector == 0 { "main" } else { "backup" };
    let mut sector = [0u8; 512];
    read_exact_at(dev, first_sector * 512, &mut sector, "the boot sector")?;
    let not_exfat = |detail: &str| ExfatError::NotExfat(format!("{which} boot sector: {detail}"));
    if &sector[3..11] != b"EXFAT   " {
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

fn read_exact_at<D: Read + Seek>(
    dev: &mut D,
    offset: u64,
    buffer: &mut [u8],
    what: &str,
) -> Result<(), ExfatError> {
    dev.seek(SeekFrom::Start(offset))
        .and_then(|_| dev.read_exact(buffer))
        .map_err(ExfatError::io(format!("reading {what} at byte {offset}")))
}

/// A file opened by [`ExfatReader::open_file`].
pub struct FileReader<'a, D> {
    reader: &'a mut ExfatReader<D>,
    runs: Vec<(u32, u64)>,
    run_index: usize,
    run_offset: u64,
    position: u64,
    valid: u64,
    size: u64,
}

impl<D> FileReader<'_, D> {
    /// The file's size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }
}

impl<D: Read + Seek> Read for FileReader<'_, D> {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        self.read_chunk(buffer).map_err(io::Error::other)
    }
}

impl<D: Read + Seek> Seek for FileReader<'_, D> {
    /// Seeks within the file; positions past its end read nothing.
    fn seek(&mut self, target: SeekFrom) -> io::Result<u64> {
        let position = match target {
            SeekFrom::Start(offset) => Some(offset),
            SeekFrom::End(delta) => self.size.checked_add_signed(delta),
            SeekFrom::Current(delta) => self.position.checked_add_signed(delta),
        }
        .ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "seek before the file's start")
        })?;
        let cluster_size = self.reader.cluster_size();
        let (mut index, mut skipped) = (0, 0u64);
        while let Some(&(_, count)) = self.runs.get(index) {
            let run_bytes = count * cluster_size;
            if position < skipped + run_bytes {
                break;
            }
            skipped += run_bytes;
            index += 1;
        }
        self.run_index = index;
        self.run_offset = position.saturating_sub(skipped);
        self.position = position;
        Ok(position)
    }
}

impl<D: Read + Seek> FileReader<'_, D> {
    fn read_chunk(&mut self, buffer: &mut [u8]) -> Result<usize, ExfatError> {
        if self.position >= self.size || buffer.is_empty() {
            return Ok(0);
        }
        if self.position >= self.valid {
            // Past ValidDataLength: reads as zeros.
            let count = (buffer.len() as u64).min(self.size - self.position) as usize;
            buffer[..count].fill(0);
            self.position += count as u64;
            return Ok(count);
        }
        let cluster_size = self.reader.cluster_size();
        let Some(&(first, count)) = self.runs.get(self.run_index) else {
            return Err(ExfatError::Corrupt(
                "file data runs past its cluster chain".into(),
            ));
        };
        let run_bytes = count * cluster_size;
        let available = (run_bytes - self.run_offset).min(self.valid - self.position);
        let count_now = (buffer.len() as u64).min(available) as usize;
        let offset = self.reader.cluster_offset(first) + self.run_offset;
        read_exact_at(
            &mut self.reader.dev,
            offset,
            &mut buffer[..count_now],
            "file data",
        )?;
        self.position += count_now as u64;
        self.run_offset += count_now as u64;
        if self.run_offset == run_bytes {
            self.run_index += 1;
            self.run_offset = 0;
        }
        Ok(count_now)
    }
}

#[cfg(test)]
mod tests {
    use super::super::{ExfatOptions, format};
    use super::*;
    use std::fs;
    use std::io::Cursor;
    use std::path::Path;

    const SIZE: u64 = 16 << 20;

    fn options() -> ExfatOptions {
        ExfatOptions {
            label: "HIPERISO".into(),
            volume_serial: 0xC0FF_EE00,
            timestamp: 1_700_000_000,
        }
    }

    fn formatted(tree: Option<&Path>) -> Cursor<Vec<u8>> {
        let mut dev = Cursor::new(vec![0u8; SIZE as usize]);
        format(&mut dev, SIZE, tree, &options()).unwrap();
        dev
    }

    fn sample_tree() -> tempfile::TempDir {
        let tree = tempfile::tempdir().unwrap();
        let root = tree.path();
        fs::create_dir_all(root.join("ISOs")).unwrap();
        fs::create_dir_all(root.join("hiperiso/logs/deep/er")).unwrap();
        fs::write(root.join("ISOs/README"), b"Put ISO files here.\n").unwrap();
        fs::write(root.join("empty"), b"").unwrap();
        let big: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
        fs::write(root.join("hiperiso/big.bin"), &big).unwrap();
        let long = "a-very-long-file-name-that-needs-several-name-entries-Ünïcödé-日本語.txt";
        fs::write(root.join("hiperiso").join(long), long.as_bytes()).unwrap();
        fs::write(root.join("hiperiso/logs/deep/er/x.log"), b"deep").unwrap();
        tree
    }

    fn contents(reader: &mut ExfatReader<Cursor<Vec<u8>>>, path: &str) -> Vec<u8> {
        let mut out = Vec::new();
        reader.read_file(path, &mut out).unwrap();
        out
    }

    #[test]
    fn empty_volume_reads_back() {
        let mut reader = ExfatReader::open(formatted(None)).unwrap();
        assert_eq!(reader.label(), "HIPERISO");
        assert_eq!(reader.volume_serial(), 0xC0FF_EE00);
        assert!(reader.read_dir("/").unwrap().is_empty());
        let usage = reader.usage().unwrap();
        // Bitmap, up-case table (two 4 KiB clusters) and the root directory.
        assert_eq!(usage.used_clusters, 4);
        assert_eq!(
            usage.used_clusters + usage.free_clusters,
            usage.total_clusters
        );
    }

    #[test]
    fn tree_round_trips() {
        let tree = sample_tree();
        let mut reader = ExfatReader::open(formatted(Some(tree.path()))).unwrap();
        let names: Vec<_> = reader
            .read_dir("")
            .unwrap()
            .into_iter()
            .map(|e| (e.name, e.is_dir))
            .collect();
        assert_eq!(
            names,
            [
                ("ISOs".into(), true),
                ("empty".into(), false),
                ("hiperiso".into(), true)
            ]
        );
        let hiperiso = reader.read_dir("/hiperiso").unwrap();
        assert_eq!(hiperiso.len(), 3);
        for entry in &hiperiso {
            assert_eq!(entry.modified, 1_700_000_000);
        }
        for entry in hiperiso.iter().filter(|e| !e.is_dir) {
            let path = format!("hiperiso/{}", entry.name);
            let expected = fs::read(tree.path().join(&path)).unwrap();
            assert_eq!(contents(&mut reader, &path), expected, "{path}");
            assert_eq!(entry.size, expected.len() as u64);
        }
        assert_eq!(
            contents(&mut reader, "/hiperiso/logs/deep/er/x.log"),
            b"deep"
        );
        assert_eq!(contents(&mut reader, "empty"), b"");
        let usage = reader.usage().unwrap();
        // 300 000 bytes take 74 clusters; the rest take one each.
        assert!(usage.used_clusters > 74 + 4, "{usage:?}");
    }

    #[test]
    fn lookup_is_case_insensitive_through_the_upcase_table() {
        let tree = sample_tree();
        let mut reader = ExfatReader::open(formatted(Some(tree.path()))).unwrap();
        assert_eq!(
            contents(&mut reader, "isos/readme"),
            b"Put ISO files here.\n"
        );
        let upper =
            "HIPERISO/A-VERY-LONG-FILE-NAME-THAT-NEEDS-SEVERAL-NAME-ENTRIES-ÜNÏCÖDÉ-日本語.TXT";
        assert!(contents(&mut reader, upper).starts_with(b"a-very-long"));
        assert!(matches!(
            reader.read_file("ISOs/missing", &mut Vec::new()),
            Err(ExfatError::NotFound { .. })
        ));
        assert!(matches!(
            reader.read_file("ISOs", &mut Vec::new()),
            Err(ExfatError::IsADirectory { .. })
        ));
        assert!(matches!(
            reader.read_dir("empty"),
            Err(ExfatError::NotADirectory { .. })
        ));
    }

    #[test]
    fn fragmented_file_is_followed_through_the_fat() {
        let tree = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..3 * 4096u32).map(|i| (i % 253) as u8).collect();
        fs::write(tree.path().join("frag"), &data).unwrap();
        let mut dev = formatted(Some(tree.path()));
        let (first, volume) = {
            let mut reader = ExfatReader::open(&mut dev).unwrap();
            let entry = reader.metadata("frag").unwrap();
            (entry.stream.first_cluster, reader.volume)
        };
        // Move the file's middle cluster to a free cluster far away and
        // describe the file with a FAT chain instead of NoFatChain.
        let far = first + 100;
        let bytes = dev.get_mut();
        let cluster =
            |c: u32| (volume.heap_start + (u64::from(c - 2) << volume.cluster_bits)) as usize;
        let middle: Vec<u8> = bytes[cluster(first + 1)..cluster(first + 2)].to_vec();
        bytes[cluster(first + 1)..cluster(first + 2)].fill(0xEE);
        bytes[cluster(far)..cluster(far + 1)].copy_from_slice(&middle);
        let fat = volume.fat_start as usize;
        for (from, to) in [
            (first, far),
            (far, first + 2),
            (first + 2, FAT_END_OF_CHAIN),
        ] {
            bytes[fat + from as usize * 4..fat + from as usize * 4 + 4]
                .copy_from_slice(&to.to_le_bytes());
        }
        let root = cluster(5); // after the bitmap (cluster 2) and up-case table (3, 4)
        let set = root + 3 * ENTRY_SIZE;
        assert_eq!(bytes[set], entry_type::FILE);
        bytes[set + ENTRY_SIZE + 1] = FLAG_ALLOCATION_POSSIBLE;
        let checksum = entry_set_checksum(&bytes[set..set + 3 * ENTRY_SIZE]);
        bytes[set + 2..set + 4].copy_from_slice(&checksum.to_le_bytes());

        let mut reader = ExfatReader::open(&mut dev).unwrap();
        let mut out = Vec::new();
        reader.read_file("FRAG", &mut out).unwrap();
        assert_eq!(out, data);
        // A chain that loops back is reported, not followed forever.
        let bytes = dev.get_mut();
        bytes[fat + (first + 2) as usize * 4..fat + (first + 2) as usize * 4 + 4]
            .copy_from_slice(&first.to_le_bytes());
        bytes[set + ENTRY_SIZE + 24..set + ENTRY_SIZE + 32]
            .copy_from_slice(&(1u64 << 30).to_le_bytes());
        bytes[set + ENTRY_SIZE + 8..set + ENTRY_SIZE + 16]
            .copy_from_slice(&(1u64 << 30).to_le_bytes());
        let checksum = entry_set_checksum(&bytes[set..set + 3 * ENTRY_SIZE]);
        bytes[set + 2..set + 4].copy_from_slice(&checksum.to_le_bytes());
        let mut reader = ExfatReader::open(&mut dev).unwrap();
        assert!(matches!(
            reader.read_file("frag", &mut Vec::new()),
            Err(ExfatError::Corrupt(_))
        ));
    }

    #[test]
    fn file_reader_seeks() {
        let tree = sample_tree();
        let mut reader = ExfatReader::open(formatted(Some(tree.path()))).unwrap();
        let expected = fs::read(tree.path().join("hiperiso/big.bin")).unwrap();
        let mut file = reader.open_file("hiperiso/big.bin").unwrap();
        assert_eq!(file.size(), expected.len() as u64);
        for offset in [0u64, 4095, 4096, 123_457, 299_990] {
            file.seek(SeekFrom::Start(offset)).unwrap();
            let mut buffer = [0u8; 8];
            let count = file.read(&mut buffer).unwrap();
            assert!(count > 0);
            assert_eq!(
                &buffer[..count],
                &expected[offset as usize..offset as usize + count]
            );
        }
        file.seek(SeekFrom::End(-3)).unwrap();
        let mut rest = Vec::new();
        file.read_to_end(&mut rest).unwrap();
        assert_eq!(rest, &expected[expected.len() - 3..]);
        assert!(file.seek(SeekFrom::Current(-10_000_000)).is_err());
    }

    #[test]
    fn damaged_entry_set_fails_read_dir_but_not_its_siblings() {
        let tree = sample_tree();
        let mut dev = formatted(Some(tree.path()));
        // Root entries: label, bitmap, up-case, then "ISOs" (3 entries),
        // "empty", "hiperiso". Damage the set of "ISOs".
        let root = {
            let reader = ExfatReader::open(&mut dev).unwrap();
            reader.cluster_offset(reader.volume.root_cluster) as usize
        };
        let isos = root + 3 * ENTRY_SIZE;
        assert_eq!(dev.get_ref()[isos], entry_type::FILE);
        dev.get_mut()[isos + 2 * ENTRY_SIZE + 2] ^= 0x20; // a name character
        let mut reader = ExfatReader::open(dev).unwrap();
        let err = reader.read_dir("/").unwrap_err();
        assert!(err.to_string().contains("checksum"), "{err}");
        let (entries, problems) = reader.read_dir_lossy("/").unwrap();
        let names: Vec<_> = entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["empty", "hiperiso"]);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(
            contents(&mut reader, "hiperiso/logs/deep/er/x.log"),
            b"deep"
        );
        assert!(matches!(
            reader.metadata("ISOs"),
            Err(ExfatError::NotFound { .. })
        ));
    }

    #[test]
    fn backup_boot_region_is_used_when_the_main_one_is_damaged() {
        let mut dev = formatted(None);
        dev.get_mut()[100] ^= 0xFF; // serial number: main checksum now fails
        let reader = ExfatReader::open(dev).unwrap();
        assert_eq!(reader.volume_serial(), 0xC0FF_EE00);
    }

    #[test]
    fn corrupt_or_truncated_volumes_give_errors_not_panics() {
        let tree = sample_tree();
        let good = formatted(Some(tree.path())).into_inner();
        let check = |bytes: Vec<u8>| {
            if let Ok(mut reader) = ExfatReader::open(Cursor::new(bytes)) {
                let _ = reader.usage();
                for dir in ["", "hiperiso", "hiperiso/logs/deep/er", "ISOs"] {
                    let _ = reader.read_dir(dir);
                }
                for file in [
                    "hiperiso/big.bin",
                    "ISOs/README",
                    "hiperiso/logs/deep/er/x.log",
                ] {
                    let _ = reader.read_file(file, &mut Vec::new());
                }
            }
        };
        // Truncations at many points.
        for length in [
            0,
            100,
            512,
            6000,
            12 * 512,
            1 << 20,
            (1 << 20) + 4096,
            2 << 20,
            (2 << 20) + 20_000,
        ] {
            let result = ExfatReader::open(Cursor::new(good[..length].to_vec()));
            if length < (2 << 20) + 16_384 {
                assert!(result.is_err(), "truncated to {length} bytes");
            }
            check(good[..length].to_vec());
        }
        // Deterministic pseudo-random byte damage over the metadata.
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        for _ in 0..400 {
            let mut bytes = good.clone();
            for _ in 0..8 {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                // The boot regions, the FAT and the first 64 KiB of the heap.
                let region = match state % 3 {
                    0 => (state >> 8) as usize % (24 * 512),
                    1 => (1 << 20) + (state >> 8) as usize % 4096,
                    _ => (2 << 20) + (state >> 8) as usize % (64 << 10),
                };
                bytes[region] = (state >> 40) as u8;
            }
            check(bytes);
        }
        // Every field of the boot sector set to extreme values, with a
        // matching checksum so that the field checks themselves are reached.
        for offset in 64..120 {
            for value in [0x00u8, 0xFF, 0x80] {
                let mut bytes = good.clone();
                bytes[offset] = value;
                let checksum = boot_checksum(&bytes[..11 * 512]);
                for word in bytes[11 * 512..12 * 512].chunks_exact_mut(4) {
                    word.copy_from_slice(&checksum.to_le_bytes());
                }
                bytes[12 * 512..24 * 512].fill(0);
                check(bytes);
            }
        }
    }

    #[test]
    fn not_exfat_is_reported_as_such() {
        let err = ExfatReader::open(Cursor::new(vec![0u8; 1 << 20]))
            .err()
            .unwrap();
        assert!(matches!(err, ExfatError::NotExfat(_)), "{err}");
    }
}
