//! The exFAT reader: volumes made by [`super::format`], mkfs.exfat, Linux,
//! Windows or cameras. Follows FAT chains (fragmented files) as well as
//! contiguous NoFatChain allocations, and looks names up case-insensitively
//! through the volume's own up-case table. Corrupt input gives an error,
//! never a panic.

use std::io::{Read, Seek, Write};

use super::boot::{Volume, read_boot_region, read_exact_at};
use super::entries::{DirEntry, Stream, parse_file_set};
use super::file_reader::FileReader;
use super::upcase::Upcase;
use super::{
    ENTRY_SIZE, ExfatError, FAT_BAD, FAT_END_OF_CHAIN, FIRST_CLUSTER, MAX_DIRECTORY_SIZE,
    entry_type, le16, le32, le64,
};

/// FAT entries read and cached at a time.
const FAT_CACHE_ENTRIES: u64 = 4096;
/// Largest up-case table accepted (a full uncompressed table is 128 KiB).
const MAX_UPCASE_SIZE: u64 = 256 << 10;

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

#[cfg(test)]
mod tests;
