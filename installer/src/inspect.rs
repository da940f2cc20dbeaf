//! `inspect IMAGE|DEVICE`: the partition table, each filesystem with its
//! label and usage, and the hiperiso build record from the ESP.

use std::fmt;
use std::fs;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use hiperiso_stick::build_json::{BUILD_JSON, BuildMarker};
use hiperiso_stick::fs_identity::{is_exfat_boot_sector, serial_uuid};

use hiperiso_stick::paths::esp::BOOT_EFI;

use crate::bios_boot::{self, FoundBiosBoot};
use crate::exfat::ExfatReader;
use crate::fat::{FatReader, FatType};
use crate::gpt;
use crate::pe::{self, PeSignature};
use crate::slice::Slice;
// Callers in builder/ and runtime/ still name these `inspect::…`.
use crate::table::PartitionEntry;
use crate::table::{DiskTable, read_table};

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
    pub partitions: Vec<(PartitionEntry, Option<FoundFilesystem>)>,
    /// The `"hiperiso"` marker of the ESP's build.json.
    pub build: Option<BuildMarker>,
    pub boot: BootPaths,
}

/// How firmware can start the disk.
#[derive(Debug, Clone, Default)]
pub struct BootPaths {
    /// The ESP's EFI/BOOT/BOOTX64.EFI, with its Authenticode signature
    /// (`Some(None)`: present, unsigned).
    pub uefi: Option<Option<PeSignature>>,
    /// GRUB's boot.img in the MBR and the core.img it points at.
    pub bios: Option<FoundBiosBoot>,
}

fn probe_filesystem<D: Read + Seek>(part: &mut Slice<D>) -> Option<FoundFilesystem> {
    let mut boot = [0u8; 512];
    part.seek(SeekFrom::Start(0)).ok()?;
    part.read_exact(&mut boot).ok()?;
    if is_exfat_boot_sector(&boot) {
        let mut reader = ExfatReader::open(&mut *part).ok()?;
        let usage = reader.usage().ok()?;
        let serial = reader.volume_serial();
        return Some(FoundFilesystem {
            kind: "exFAT".into(),
            label: reader.label().to_string(),
            uuid: serial_uuid(serial),
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
        uuid: serial_uuid(id),
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
    let mut boot = BootPaths {
        uefi: None,
        bios: bios_boot::detect(disk).map_err(|source_err| InspectError::Io {
            path: source.to_path_buf(),
            source: source_err,
        })?,
    };
    for part in parts {
        let mut slice = Slice::new(&mut *disk, part.offset, part.len);
        let fs = probe_filesystem(&mut slice);
        if part.is_esp()
            && build.is_none()
            && let Ok(mut fat) = FatReader::open(&mut slice)
        {
            build = fat
                .read_file(BUILD_JSON)
                .ok()
                .and_then(|bytes| BuildMarker::parse(&bytes).ok());
            boot.uefi = fat
                .read_file(BOOT_EFI)
                .ok()
                .filter(|bytes| pe::is_pe(bytes))
                .map(|bytes| pe::signature(&bytes));
        }
        partitions.push((part, fs));
    }
    Ok(Inspection {
        source: source.to_path_buf(),
        size,
        table: kind,
        partitions,
        build,
        boot,
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
        writeln!(f, "boot paths:")?;
        match &self.boot.uefi {
            Some(None) => writeln!(f, "  UEFI: {BOOT_EFI} (unsigned: Secure Boot must be off)")?,
            Some(Some(signature)) => writeln!(
                f,
                "  UEFI and UEFI Secure Boot: {BOOT_EFI} signed; certificates: {}",
                signature.common_names.join("; ")
            )?,
            None => writeln!(f, "  UEFI: none (no {BOOT_EFI} on an ESP)")?,
        }
        match &self.boot.bios {
            Some(found) => writeln!(
                f,
                "  legacy BIOS: GRUB boot.img in the MBR, core.img at LBA {} (+{} sectors)",
                found.core_lba, found.core_sectors
            )?,
            None => writeln!(f, "  legacy BIOS: none (no GRUB boot code in the MBR)")?,
        }
        match &self.build {
            Some(build) => {
                writeln!(f, "build: {}", build.summary())?;
                for (path, hash) in build.hashes() {
                    writeln!(f, "  {path}: {hash}")?;
                }
            }
            None => writeln!(
                f,
                "build: no {BUILD_JSON} with a \"hiperiso\" key on an ESP"
            )?,
        }
        Ok(())
    }
}
