//! Adding files to an existing exFAT volume without mounting it, so a
//! non-root user can put ISOs (or a GRUB environment block) onto an image.
//!
//! [`ExfatEditor::put_file`] allocates clusters from the allocation bitmap
//! (one contiguous run when there is one, else a FAT chain), writes the
//! data, and adds a File entry set to the parent directory, growing the
//! directory when it is full. A file of the same name is replaced. The
//! volume is marked dirty while it changes and PercentInUse is kept
//! current, so `fsck.exfat` finds it clean afterwards.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::entries::{DirEntry, Stream, entry_count, file_entry_set, parse_file_set};
use super::format::{encode_name, write_at};
use super::reader::ExfatReader;
use super::{
    ENTRY_SIZE, ExfatError, FAT_END_OF_CHAIN, FIRST_CLUSTER, FLAG_ALLOCATION_POSSIBLE,
    FLAG_NO_FAT_CHAIN, MAX_DIRECTORY_SIZE, attributes, entry_set_checksum, entry_type,
    unix_to_exfat,
};

/// Byte of the boot sector holding VolumeFlags (VolumeDirty is bit 1).
const VOLUME_FLAGS: u64 = 106;
const VOLUME_DIRTY: u8 = 0x02;
/// Byte of the boot sector holding PercentInUse.
const PERCENT_IN_USE: u64 = 112;
/// Buffer size for copying file data.
const COPY_BUFFER: usize = 1 << 20;

/// Changes files on an exFAT volume on `D` (offset 0 = volume start).
pub struct ExfatEditor<D> {
    volume: ExfatReader<D>,
}

/// A directory loaded into memory, with what is needed to write it back.
struct Directory {
    path: String,
    /// Its clusters, in order.
    clusters: Vec<u32>,
    bytes: Vec<u8>,
    /// Whether its clusters are contiguous without a FAT chain.
    no_fat_chain: bool,
}

impl<D: Read + Write + Seek> ExfatEditor<D> {
    /// Opens the volume (boot region, bitmap and up-case table validated).
    pub fn open(dev: D) -> Result<Self, ExfatError> {
        Ok(Self {
            volume: ExfatReader::open(dev)?,
        })
    }

    /// The volume, for reading.
    pub fn reader(&mut self) -> &mut ExfatReader<D> {
        &mut self.volume
    }

    /// Gives the device back.
    pub fn into_inner(self) -> D {
        self.volume.into_inner()
    }

    /// Writes `size` bytes from `source` as the file `path` (components
    /// separated by `/`; the parent directory must exist), replacing a file
    /// of the same name. Every timestamp of the new entry is `timestamp`
    /// (Unix seconds).
    pub fn put_file(
        &mut self,
        path: &str,
        mut source: impl Read,
        size: u64,
        timestamp: u64,
    ) -> Result<(), ExfatError> {
        let trimmed = path.trim_matches('/');
        let (parent_path, name) = trimmed.rsplit_once('/').unwrap_or(("", trimmed));
        if name.is_empty() {
            return Err(ExfatError::InvalidName {
                path: PathBuf::from(path),
                reason: "it names no file",
            });
        }
        let name_units = encode_name(Path::new(name)).map_err(|error| match error {
            ExfatError::InvalidName { reason, .. } => ExfatError::InvalidName {
                path: PathBuf::from(path),
                reason,
            },
            other => other,
        })?;
        let upcased = self.volume.upcase.upper_name(&name_units);

        // Plan everything in memory first, so that a missing directory, a
        // bad name or a full volume is reported before anything is written.
        let (mut parent, parent_entry) = self.open_directory(parent_path)?;
        let mut bitmap = self.read_bitmap()?;
        let mut released = Vec::new();
        if let Some((index, count, existing)) = self.find_set(&parent, &upcased)? {
            if existing.is_dir {
                return Err(ExfatError::IsADirectory { path: path.into() });
            }
            released = self.release(&existing, &mut bitmap, path)?;
            for entry in 0..count {
                parent.bytes[(index + entry) * ENTRY_SIZE] &= !entry_type::IN_USE;
            }
        }
        let cluster_size = self.volume.cluster_size();
        let clusters = allocate(
            &mut bitmap,
            size.div_ceil(cluster_size),
            self.cluster_count(),
            cluster_size,
        )?;
        let contiguous = is_contiguous(&clusters);
        let count = entry_count(&name_units);
        let (slot, growth) = match free_slot(&parent.bytes, count) {
            Some(slot) => (slot, Vec::new()),
            None => {
                let slot = first_free_tail(&parent.bytes);
                let missing = ((slot + count) * ENTRY_SIZE - parent.bytes.len()) as u64;
                if parent.bytes.len() as u64 + missing > MAX_DIRECTORY_SIZE {
                    return Err(ExfatError::InvalidName {
                        path: PathBuf::from(path),
                        reason: "its directory would outgrow exFAT's 256 MiB directory limit",
                    });
                }
                let added = allocate(
                    &mut bitmap,
                    missing.div_ceil(cluster_size),
                    self.cluster_count(),
                    cluster_size,
                )?;
                (slot, added)
            }
        };

        // Then write: data, its chain, the directory, the bitmap.
        self.set_dirty(true)?;
        for cluster in released {
            self.write_fat_entry(cluster, 0)?;
        }
        self.write_data(&clusters, &mut source, size, path)?;
        if !contiguous {
            self.write_chain(&clusters, None)?;
        }
        if !growth.is_empty() {
            self.grow_directory(&mut parent, parent_entry, &growth)?;
        }
        let flags = match (clusters.is_empty(), contiguous) {
            (false, true) => FLAG_ALLOCATION_POSSIBLE | FLAG_NO_FAT_CHAIN,
            _ => FLAG_ALLOCATION_POSSIBLE,
        };
        let set = file_entry_set(
            &name_units,
            &upcased,
            attributes::ARCHIVE,
            flags,
            clusters.first().copied().unwrap_or(0),
            size,
            unix_to_exfat(timestamp),
        );
        parent.bytes[slot * ENTRY_SIZE..(slot + count) * ENTRY_SIZE].copy_from_slice(&set);
        self.write_bitmap(&bitmap)?;
        self.write_directory(&parent)?;
        self.set_percent_in_use(&bitmap)?;
        self.set_dirty(false)?;
        self.volume
            .dev
            .flush()
            .map_err(ExfatError::io("flushing the volume"))
    }

    fn cluster_count(&self) -> u32 {
        self.volume.volume.cluster_count
    }

    /// Loads the directory at `path`, and for a subdirectory also its parent
    /// with the index of its entry set there.
    fn open_directory(
        &mut self,
        path: &str,
    ) -> Result<(Directory, Option<(Directory, usize)>), ExfatError> {
        let root = self.volume.root_stream();
        let mut current = self.load_directory(root, "/")?;
        let mut parent = None;
        let mut walked = String::new();
        for component in path.split('/').filter(|c| !c.is_empty()) {
            walked.push('/');
            walked.push_str(component);
            let units: Vec<u16> = component.encode_utf16().collect();
            let wanted = self.volume.upcase.upper_name(&units);
            let Some((index, _, entry)) = self.find_set(&current, &wanted)? else {
                return Err(ExfatError::NotFound { path: walked });
            };
            if !entry.is_dir {
                return Err(ExfatError::NotADirectory { path: walked });
            }
            let child = self.load_directory(entry.stream, &walked)?;
            parent = Some((std::mem::replace(&mut current, child), index));
        }
        Ok((current, parent))
    }

    fn load_directory(&mut self, stream: Stream, path: &str) -> Result<Directory, ExfatError> {
        let runs = self.volume.runs(stream, path, MAX_DIRECTORY_SIZE)?;
        let clusters = runs
            .iter()
            .flat_map(|&(first, count)| (0..count as u32).map(move |i| first + i))
            .collect();
        let mut bytes = self.volume.read_stream(stream, path, MAX_DIRECTORY_SIZE)?;
        bytes.truncate(bytes.len() / ENTRY_SIZE * ENTRY_SIZE);
        Ok(Directory {
            path: path.to_string(),
            clusters,
            bytes,
            no_fat_chain: stream.no_fat_chain,
        })
    }

    /// The in-use File entry set named `upcased` (up-cased): its first
    /// entry's index, its entry count and what it describes.
    fn find_set(
        &self,
        directory: &Directory,
        upcased: &[u16],
    ) -> Result<Option<(usize, usize, DirEntry)>, ExfatError> {
        let entries = directory.bytes.len() / ENTRY_SIZE;
        let mut index = 0;
        while index < entries {
            let kind = directory.bytes[index * ENTRY_SIZE];
            if kind == entry_type::END_OF_DIRECTORY {
                break;
            }
            if kind != entry_type::FILE {
                index += 1;
                continue;
            }
            let count = 1 + usize::from(directory.bytes[index * ENTRY_SIZE + 1]);
            let end = (index + count).min(entries);
            let set = &directory.bytes[index * ENTRY_SIZE..end * ENTRY_SIZE];
            let entry = parse_file_set(set).map_err(|what| {
                ExfatError::Corrupt(format!(
                    "directory {:?}, entry {index}: {what}",
                    directory.path
                ))
            })?;
            if self.volume.upcase.upper_name(&entry.units) == upcased {
                return Ok(Some((index, count, entry)));
            }
            index = end;
        }
        Ok(None)
    }

    /// Frees the clusters of a file that is being replaced, in `bitmap`;
    /// returns the clusters whose FAT entries must be cleared.
    fn release(
        &mut self,
        entry: &DirEntry,
        bitmap: &mut [u8],
        path: &str,
    ) -> Result<Vec<u32>, ExfatError> {
        let mut chained = Vec::new();
        if entry.stream.data_length == Some(0) {
            return Ok(chained);
        }
        for (first, count) in self.volume.runs(entry.stream, path, u64::MAX)? {
            for cluster in first..first + count as u32 {
                let bit = (cluster - FIRST_CLUSTER) as usize;
                bitmap[bit / 8] &= !(1 << (bit % 8));
                if !entry.stream.no_fat_chain {
                    chained.push(cluster);
                }
            }
        }
        Ok(chained)
    }

    fn read_bitmap(&mut self) -> Result<Vec<u8>, ExfatError> {
        let bitmap = self.volume.bitmap;
        self.volume
            .read_stream(bitmap, "allocation bitmap", u64::MAX)
    }

    fn write_bitmap(&mut self, bitmap: &[u8]) -> Result<(), ExfatError> {
        let stream = self.volume.bitmap;
        let runs = self.volume.runs(stream, "allocation bitmap", u64::MAX)?;
        let cluster_size = self.volume.cluster_size() as usize;
        let mut done = 0usize;
        for (first, count) in runs {
            let chunk = (count as usize * cluster_size).min(bitmap.len() - done);
            let offset = self.volume.cluster_offset(first);
            write_at(
                &mut self.volume.dev,
                offset,
                &bitmap[done..done + chunk],
                "writing the allocation bitmap",
            )?;
            done += chunk;
        }
        Ok(())
    }

    /// Copies exactly `size` bytes of `source` to `clusters`, zero-filling
    /// the last cluster.
    fn write_data(
        &mut self,
        clusters: &[u32],
        source: &mut impl Read,
        size: u64,
        path: &str,
    ) -> Result<(), ExfatError> {
        let cluster_size = self.volume.cluster_size();
        let source_error = |source| ExfatError::Source {
            path: PathBuf::from(path),
            source,
        };
        let mut buffer = vec![0u8; COPY_BUFFER.max(cluster_size as usize)];
        let mut written = 0u64;
        let mut index = 0;
        while index < clusters.len() {
            // A run of consecutive clusters, at most one buffer long.
            let mut run = 1;
            while index + run < clusters.len()
                && clusters[index + run] == clusters[index] + run as u32
                && (run + 1) as u64 * cluster_size <= buffer.len() as u64
            {
                run += 1;
            }
            let length = (run as u64 * cluster_size) as usize;
            let wanted = (size - written).min(length as u64) as usize;
            source
                .read_exact(&mut buffer[..wanted])
                .map_err(|error| match error.kind() {
                    std::io::ErrorKind::UnexpectedEof => ExfatError::SourceChanged {
                        path: PathBuf::from(path),
                        expected: size,
                        actual: written,
                    },
                    _ => source_error(error),
                })?;
            buffer[wanted..length].fill(0);
            let offset = self.volume.cluster_offset(clusters[index]);
            write_at(
                &mut self.volume.dev,
                offset,
                &buffer[..length],
                &format!("writing {path}"),
            )?;
            written += wanted as u64;
            index += run;
        }
        // The source must end where it said it would.
        let mut probe = [0u8; 1];
        if source.read(&mut probe).map_err(source_error)? != 0 {
            return Err(ExfatError::SourceChanged {
                path: PathBuf::from(path),
                expected: size,
                actual: size + 1,
            });
        }
        Ok(())
    }

    /// Links `clusters` in the FAT, ending the chain there (or continuing
    /// it from `after`, the previous last cluster).
    fn write_chain(&mut self, clusters: &[u32], after: Option<u32>) -> Result<(), ExfatError> {
        if let (Some(previous), Some(&first)) = (after, clusters.first()) {
            self.write_fat_entry(previous, first)?;
        }
        for pair in clusters.windows(2) {
            self.write_fat_entry(pair[0], pair[1])?;
        }
        if let Some(&last) = clusters.last() {
            self.write_fat_entry(last, FAT_END_OF_CHAIN)?;
        }
        Ok(())
    }

    fn write_fat_entry(&mut self, cluster: u32, value: u32) -> Result<(), ExfatError> {
        self.volume.fat_cache = None;
        let offset = self.volume.volume.fat_start + u64::from(cluster) * 4;
        write_at(
            &mut self.volume.dev,
            offset,
            &value.to_le_bytes(),
            "writing the FAT",
        )
    }

    /// Appends the (already allocated) clusters `added` to `directory`,
    /// zeroed and linked through the FAT, and records its new size in its
    /// parent's entry set.
    fn grow_directory(
        &mut self,
        directory: &mut Directory,
        parent: Option<(Directory, usize)>,
        added: &[u32],
    ) -> Result<(), ExfatError> {
        let cluster_size = self.volume.cluster_size();
        let new_length = directory.bytes.len() as u64 + added.len() as u64 * cluster_size;
        if directory.no_fat_chain {
            // The contiguous clusters so far get a real chain first.
            let existing = directory.clusters.clone();
            self.write_chain(&existing, None)?;
            directory.no_fat_chain = false;
        }
        let last = directory.clusters.last().copied();
        self.write_chain(added, last)?;
        directory.clusters.extend(added);
        directory.bytes.resize(new_length as usize, 0);

        // The root has no entry set; a subdirectory's records its size.
        if let Some((mut grandparent, index)) = parent {
            let count = 1 + usize::from(grandparent.bytes[index * ENTRY_SIZE + 1]);
            let set = &mut grandparent.bytes[index * ENTRY_SIZE..(index + count) * ENTRY_SIZE];
            let stream = &mut set[ENTRY_SIZE..2 * ENTRY_SIZE];
            stream[1] &= !FLAG_NO_FAT_CHAIN;
            stream[8..16].copy_from_slice(&new_length.to_le_bytes());
            stream[24..32].copy_from_slice(&new_length.to_le_bytes());
            let checksum = entry_set_checksum(set);
            set[2..4].copy_from_slice(&checksum.to_le_bytes());
            self.write_directory(&grandparent)?;
        }
        Ok(())
    }

    fn write_directory(&mut self, directory: &Directory) -> Result<(), ExfatError> {
        let cluster_size = self.volume.cluster_size() as usize;
        for (chunk, &cluster) in directory
            .bytes
            .chunks(cluster_size)
            .zip(&directory.clusters)
        {
            let offset = self.volume.cluster_offset(cluster);
            write_at(
                &mut self.volume.dev,
                offset,
                chunk,
                &format!("writing directory {}", directory.path),
            )?;
        }
        Ok(())
    }

    /// Sets or clears VolumeDirty in the main boot sector (outside the boot
    /// checksum, like PercentInUse).
    fn set_dirty(&mut self, dirty: bool) -> Result<(), ExfatError> {
        let dev = &mut self.volume.dev;
        let mut flags = [0u8; 1];
        dev.seek(SeekFrom::Start(VOLUME_FLAGS))
            .and_then(|_| dev.read_exact(&mut flags))
            .map_err(ExfatError::io("reading VolumeFlags"))?;
        let value = if dirty {
            flags[0] | VOLUME_DIRTY
        } else {
            flags[0] & !VOLUME_DIRTY
        };
        write_at(dev, VOLUME_FLAGS, &[value], "writing VolumeFlags")
    }

    fn set_percent_in_use(&mut self, bitmap: &[u8]) -> Result<(), ExfatError> {
        let total = u64::from(self.cluster_count());
        let used: u64 = (0..total as usize)
            .filter(|&bit| bitmap[bit / 8] & (1 << (bit % 8)) != 0)
            .count() as u64;
        let percent = (used * 100 / total) as u8;
        write_at(
            &mut self.volume.dev,
            PERCENT_IN_USE,
            &[percent],
            "writing PercentInUse",
        )
    }
}

/// Marks `count` free clusters as used and returns them: the first
/// contiguous run that fits, or else the first free clusters in order.
fn allocate(
    bitmap: &mut [u8],
    count: u64,
    cluster_count: u32,
    cluster_size: u64,
) -> Result<Vec<u32>, ExfatError> {
    if count == 0 {
        return Ok(Vec::new());
    }
    let is_free = |bitmap: &[u8], bit: usize| bitmap[bit / 8] & (1 << (bit % 8)) == 0;
    let total = cluster_count as usize;
    let count = count as usize;
    let mut run_start = 0;
    let mut run_length = 0;
    let mut chosen = None;
    for bit in 0..total {
        if is_free(bitmap, bit) {
            if run_length == 0 {
                run_start = bit;
            }
            run_length += 1;
            if run_length == count {
                chosen = Some((run_start..run_start + count).collect::<Vec<_>>());
                break;
            }
        } else {
            run_length = 0;
        }
    }
    let bits = match chosen {
        Some(bits) => bits,
        None => {
            let free: Vec<usize> = (0..total)
                .filter(|&bit| is_free(bitmap, bit))
                .take(count)
                .collect();
            if free.len() < count {
                let needed = count as u64 * cluster_size;
                let available = free.len() as u64 * cluster_size;
                return Err(ExfatError::NoSpace {
                    needed,
                    available,
                    shortfall: needed - available,
                });
            }
            free
        }
    };
    for &bit in &bits {
        bitmap[bit / 8] |= 1 << (bit % 8);
    }
    Ok(bits
        .into_iter()
        .map(|bit| bit as u32 + FIRST_CLUSTER)
        .collect())
}

fn is_contiguous(clusters: &[u32]) -> bool {
    clusters.windows(2).all(|pair| pair[1] == pair[0] + 1)
}

/// The first index of `count` consecutive unused entries that fit in the
/// directory. Everything after the end-of-directory entry is unused.
fn free_slot(bytes: &[u8], count: usize) -> Option<usize> {
    let entries = bytes.len() / ENTRY_SIZE;
    let mut start = 0;
    let mut length = 0;
    for index in 0..entries {
        let kind = bytes[index * ENTRY_SIZE];
        if kind == entry_type::END_OF_DIRECTORY {
            return (index - length + count <= entries).then_some(index - length);
        }
        if kind & entry_type::IN_USE == 0 {
            if length == 0 {
                start = index;
            }
            length += 1;
            if length == count {
                return Some(start);
            }
        } else {
            length = 0;
        }
    }
    None
}

/// Where a set that does not fit would start: after the last used entry.
fn first_free_tail(bytes: &[u8]) -> usize {
    let entries = bytes.len() / ENTRY_SIZE;
    let mut tail = entries;
    for index in (0..entries).rev() {
        if bytes[index * ENTRY_SIZE] & entry_type::IN_USE != 0 {
            break;
        }
        tail = index;
    }
    tail
}

#[cfg(test)]
mod tests;
