//! The FAT reader, for `inspect` and `install --update`: directories,
//! files, label, volume id and usage.

use std::io::{Read, Seek, SeekFrom};

use super::{ATTR_DIRECTORY, ATTR_LFN, ATTR_VOLUME_ID, FatError, FatType, Geometry, SECTOR};

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
