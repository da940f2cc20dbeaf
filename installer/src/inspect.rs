//! `inspect IMAGE|DEVICE`: the partition table, each filesystem with its
//! label and usage, and the hiperiso build record from the ESP.

use std::fmt;
use std::fs;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use crate::exfat::ExfatReader;
use crate::fat::{FatReader, FatType};
use crate::gpt::{self, Gpt, Guid};
use crate::layout::{DATA_PARTITION_NAME, SECTOR, TableKind};
use crate::mbr::{self, Mbr};
use crate::slice::Slice;

pub type DiskTable = TableKind;

#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    #[error("cannot read {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path}: damaged GPT")]
    Gpt {
        path: PathBuf,
        #[source]
        source: gpt::GptError,
    },
}

/// A partition found in a table.
#[derive(Debug, Clone)]
pub struct FoundPartition {
    pub number: u32,
    pub offset: u64,
    pub len: u64,
    pub type_name: String,
    pub gpt_type: Option<Guid>,
    pub mbr_type: Option<u8>,
    pub name: Option<String>,
}

impl FoundPartition {
    pub fn is_data(&self) -> bool {
        self.gpt_type == Some(gpt::BASIC_DATA) || self.mbr_type == Some(mbr::TYPE_EXFAT)
    }
    pub fn is_esp(&self) -> bool {
        self.gpt_type == Some(gpt::EFI_SYSTEM) || self.mbr_type == Some(mbr::TYPE_EFI)
    }
    /// Whether the GPT name is the one hiperiso gives its data partition
    /// (None on MBR, which has no names).
    pub fn name_is_hiperiso(&self) -> Option<bool> {
        self.name.as_ref().map(|n| n == DATA_PARTITION_NAME)
    }
}

fn gpt_type_name(guid: Guid) -> String {
    match guid {
        g if g == gpt::BASIC_DATA => "Microsoft basic data".into(),
        g if g == gpt::EFI_SYSTEM => "EFI system".into(),
        g => g.to_string(),
    }
}

fn mbr_type_name(id: u8) -> String {
    match id {
        mbr::TYPE_EXFAT => "0x07 (exFAT/NTFS)".into(),
        mbr::TYPE_EFI => "0xef (EFI system)".into(),
        0x0b | 0x0c => format!("{id:#04x} (FAT32)"),
        0x83 => "0x83 (Linux)".into(),
        other => format!("{other:#04x}"),
    }
}

/// Reads the partition table of a disk of `size` bytes, if it has one.
pub fn read_table<D: Read + Seek>(
    disk: &mut D,
    size: u64,
) -> Result<Option<(DiskTable, Vec<FoundPartition>)>, gpt::GptError> {
    let mut sector = [0u8; 512];
    disk.seek(SeekFrom::Start(0))?;
    disk.read_exact(&mut sector)?;
    let Ok(mbr) = Mbr::parse(&sector) else {
        return Ok(None);
    };
    if mbr
        .partitions
        .iter()
        .any(|p| p.type_id == mbr::TYPE_GPT_PROTECTIVE)
    {
        let gpt = Gpt::read(disk, size / SECTOR)?;
        let parts = gpt
            .partitions
            .iter()
            .zip(1..)
            .map(|(p, number)| FoundPartition {
                number,
                offset: p.first_lba * SECTOR,
                len: (p.last_lba + 1 - p.first_lba) * SECTOR,
                type_name: gpt_type_name(p.type_guid),
                gpt_type: Some(p.type_guid),
                mbr_type: None,
                name: Some(p.name.clone()),
            })
            .collect();
        return Ok(Some((TableKind::Gpt, parts)));
    }
    // A FAT or exFAT boot sector also ends in 55AA: only call it an MBR when
    // the entries look like one.
    let sane = !mbr.partitions.is_empty()
        && mbr
            .partitions
            .iter()
            .all(|p| p.sectors > 0 && (p.first_lba as u64 + p.sectors as u64) * SECTOR <= size);
    if !sane || &sector[3..11] == b"EXFAT   " {
        return Ok(None);
    }
    let parts = mbr
        .partitions
        .iter()
        .zip(1..)
        .map(|(p, number)| FoundPartition {
            number,
            offset: p.first_lba as u64 * SECTOR,
            len: p.sectors as u64 * SECTOR,
            type_name: mbr_type_name(p.type_id),
            gpt_type: None,
            mbr_type: Some(p.type_id),
            name: None,
        })
        .collect();
    Ok(Some((TableKind::Mbr, parts)))
}

/// A filesystem found on a partition.
#[derive(Debug, Clone)]
pub struct FoundFilesystem {
    pub kind: String,
    pub label: String,
    pub uuid: String,
    pub total: u64,
    pub used: u64,
}

/// The result of `inspect`.
#[derive(Debug, Clone)]
pub struct Inspection {
    pub source: PathBuf,
    pub size: u64,
    pub table: Option<DiskTable>,
    pub partitions: Vec<(FoundPartition, Option<FoundFilesystem>)>,
    /// The `"hiperiso"` object of the ESP's build.json.
    pub build: Option<serde_json::Value>,
}

fn probe_filesystem<D: Read + Seek>(part: &mut Slice<D>) -> Option<FoundFilesystem> {
    let mut boot = [0u8; 512];
    part.seek(SeekFrom::Start(0)).ok()?;
    part.read_exact(&mut boot).ok()?;
    if &boot[3..11] == b"EXFAT   " {
        let mut reader = ExfatReader::open(&mut *part).ok()?;
        let usage = reader.usage().ok()?;
        let serial = reader.volume_serial();
        return Some(FoundFilesystem {
            kind: "exFAT".into(),
            label: reader.label().to_string(),
            uuid: format!("{:04X}-{:04X}", serial >> 16, serial & 0xffff),
            total: usage.total_bytes(),
            used: usage.used_bytes(),
        });
    }
    let mut reader = FatReader::open(&mut *part).ok()?;
    let used = reader.used_clusters().ok()? * reader.cluster_size();
    let id = reader.volume_id();
    Some(FoundFilesystem {
        kind: match reader.fat_type() {
            FatType::Fat16 => "FAT16".into(),
            FatType::Fat32 => "FAT32".into(),
        },
        label: reader.label().to_string(),
        uuid: format!("{:04X}-{:04X}", id >> 16, id & 0xffff),
        total: reader.total_clusters() * reader.cluster_size(),
        used,
    })
}

/// Inspects a disk (image or device) held in `disk`, `size` bytes long.
pub fn inspect<D: Read + Seek>(
    disk: &mut D,
    size: u64,
    source: &Path,
) -> Result<Inspection, InspectError> {
    let table = read_table(disk, size).map_err(|e| match e {
        gpt::GptError::Io(source_err) => InspectError::Io {
            path: source.to_path_buf(),
            source: source_err,
        },
        other => InspectError::Gpt {
            path: source.to_path_buf(),
            source: other,
        },
    })?;
    let (kind, parts) = match table {
        Some((kind, parts)) => (Some(kind), parts),
        None => (None, Vec::new()),
    };
    let mut partitions = Vec::new();
    let mut build = None;
    for part in parts {
        let mut slice = Slice::new(&mut *disk, part.offset, part.len);
        let fs = probe_filesystem(&mut slice);
        if part.is_esp()
            && build.is_none()
            && let Ok(mut fat) = FatReader::open(&mut slice)
        {
            build = fat
                .read_file(crate::device::BUILD_JSON)
                .ok()
                .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                .and_then(|v| v.get("hiperiso").cloned());
        }
        partitions.push((part, fs));
    }
    Ok(Inspection {
        source: source.to_path_buf(),
        size,
        table: kind,
        partitions,
        build,
    })
}

/// Inspects an image file or a block device.
pub fn inspect_path(path: &Path) -> Result<Inspection, InspectError> {
    let io_err = |source| InspectError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = fs::File::open(path).map_err(io_err)?;
    let meta = file.metadata().map_err(io_err)?;
    let size = if meta.file_type().is_block_device() {
        file.seek(SeekFrom::End(0)).map_err(io_err)?
    } else {
        meta.len()
    };
    inspect(&mut file, size, path)
}

fn human(bytes: u64) -> String {
    const MIB: f64 = 1024.0 * 1024.0;
    if bytes as f64 >= 1024.0 * MIB {
        format!("{:.1} GiB", bytes as f64 / (1024.0 * MIB))
    } else {
        format!("{:.1} MiB", bytes as f64 / MIB)
    }
}

/// One line about a build record: version and every hash in it.
pub fn build_summary(build: &serde_json::Value) -> String {
    let version = build
        .get("version")
        .and_then(|v| v.as_str())
        .unwrap_or("unknown");
    format!("hiperiso {version}")
}

/// Every string leaf whose key mentions a hash, with its JSON path.
pub fn build_hashes(build: &serde_json::Value) -> Vec<(String, String)> {
    fn walk(value: &serde_json::Value, path: String, out: &mut Vec<(String, String)>) {
        match value {
            serde_json::Value::Object(map) => {
                for (key, v) in map {
                    let p = if path.is_empty() {
                        key.clone()
                    } else {
                        format!("{path}.{key}")
                    };
                    let lower = key.to_ascii_lowercase();
                    match v {
                        serde_json::Value::String(s)
                            if lower.contains("sha256") || lower.contains("hash") =>
                        {
                            out.push((p, s.clone()))
                        }
                        _ => walk(v, p, out),
                    }
                }
            }
            serde_json::Value::Array(items) => {
                for (i, v) in items.iter().enumerate() {
                    walk(v, format!("{path}[{i}]"), out);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(build, String::new(), &mut out);
    out
}

impl fmt::Display for Inspection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{}: {} ({} bytes)",
            self.source.display(),
            human(self.size),
            self.size
        )?;
        match self.table {
            None => return writeln!(f, "no partition table"),
            Some(t) => writeln!(f, "partition table: {t}")?,
        }
        for (part, fs) in &self.partitions {
            write!(
                f,
                "  {}: {}  start {}  size {}",
                part.number,
                part.type_name,
                part.offset,
                human(part.len)
            )?;
            if let Some(name) = part.name.as_deref().filter(|n| !n.is_empty()) {
                write!(f, "  name {name:?}")?;
            }
            writeln!(f)?;
            match fs {
                Some(fs) => writeln!(
                    f,
                    "     {} label {:?} uuid {}  used {} of {} ({:.1}%)",
                    fs.kind,
                    fs.label,
                    fs.uuid,
                    human(fs.used),
                    human(fs.total),
                    if fs.total == 0 {
                        0.0
                    } else {
                        fs.used as f64 * 100.0 / fs.total as f64
                    }
                )?,
                None => writeln!(f, "     no filesystem recognised")?,
            }
        }
        match &self.build {
            Some(build) => {
                writeln!(f, "build: {}", build_summary(build))?;
                for (path, hash) in build_hashes(build) {
                    writeln!(f, "  {path}: {hash}")?;
                }
            }
            None => writeln!(
                f,
                "build: no {} with a \"hiperiso\" key on an ESP",
                crate::device::BUILD_JSON
            )?,
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_found_with_their_paths() {
        let v: serde_json::Value = serde_json::json!({
            "version": "0.1.0",
            "outputs": {"vmlinuz": {"sha256": "aa"}, "list": [{"hash": "bb"}]},
            "lock_sha256": "cc"
        });
        assert_eq!(build_summary(&v), "hiperiso 0.1.0");
        let hashes = build_hashes(&v);
        assert!(hashes.contains(&("outputs.vmlinuz.sha256".into(), "aa".into())));
        assert!(hashes.contains(&("outputs.list[0].hash".into(), "bb".into())));
        assert!(hashes.contains(&("lock_sha256".into(), "cc".into())));
    }
}
