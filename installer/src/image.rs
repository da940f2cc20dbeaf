//! Assembles a complete hiperiso disk (DESIGN.md §4) from two directory
//! trees: the ESP's and the data partition's. It knows nothing about how the
//! trees were built.

use std::fs;
use std::io::{self, Read, Seek, Write};
use std::path::{Path, PathBuf};

use crate::bios_boot::{self, BiosBoot, BiosBootError};
use crate::exfat::{self, ExfatError, ExfatOptions};
use crate::fat::{self, FatError, FatOptions, FatSummary};
use crate::layout::{Layout, LayoutError, MIB, MIN_ESP_SIZE, TableKind};
use crate::slice::Slice;

/// Everything that decides an image's bytes.
#[derive(Debug, Clone)]
pub struct ImageSpec {
    pub table: TableKind,
    /// Size of the whole disk image in bytes.
    pub size: u64,
    /// The manifest's seed: GUIDs, disk signature and volume serials.
    pub seed: String,
    /// exFAT label of the data partition (DESIGN.md: `HIPERISO`).
    pub data_label: String,
    /// FAT label of the ESP.
    pub esp_label: String,
    /// Every timestamp, in Unix seconds.
    pub source_date_epoch: u64,
    pub esp_tree: PathBuf,
    pub data_tree: PathBuf,
    /// ESP size in bytes; `None` sizes it to the payload (see [`esp_size_for`]).
    pub esp_size: Option<u64>,
}

/// What [`write_image`] (or [`write_disk`]) produced.
#[derive(Debug, Clone)]
pub struct ImageSummary {
    pub layout: Layout,
    pub esp: FatSummary,
    /// The data partition's filesystem UUID as Linux shows it.
    pub data_fs_uuid: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error(
        "the payload does not fit a {size}-byte image: it needs at least {need} bytes \
         ({short} bytes = {short_mib} MiB more); raise --size to at least {need_mib}M"
    )]
    DoesNotFit {
        size: u64,
        need: u64,
        short: u64,
        short_mib: u64,
        need_mib: u64,
    },
    #[error(transparent)]
    Layout(LayoutError),
    #[error("the BIOS boot code of the ESP tree {}", .tree.display())]
    BiosBoot {
        tree: PathBuf,
        #[source]
        source: BiosBootError,
    },
    #[error("cannot write the ESP (FAT) from {tree}")]
    Esp {
        tree: PathBuf,
        #[source]
        source: FatError,
    },
    #[error("cannot write the data partition (exFAT) from {tree}")]
    Data {
        tree: PathBuf,
        #[source]
        source: ExfatError,
    },
    #[error("{path}: {what}")]
    Output { path: PathBuf, what: String },
    #[error("completing {}", .path.display())]
    Finish {
        path: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("I/O error on {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// The ESP size for a payload tree: the smallest FAT volume that holds it,
/// plus half again as headroom for later `install --update`s, in whole MiB,
/// never below 32 MiB.
pub fn esp_size_for(tree: &Path) -> Result<u64, FatError> {
    let need = fat::required_size(tree, 0)?;
    let with_headroom = (need + need / 2).div_ceil(MIB) * MIB;
    if with_headroom <= MIN_ESP_SIZE {
        return Ok(MIN_ESP_SIZE);
    }
    // Above 32 MiB the volume becomes FAT32, whose overhead differs.
    fat::required_size(tree, with_headroom)
}

/// Plans the layout of `spec`, with a clear error when the payload does not fit.
pub fn plan(spec: &ImageSpec) -> Result<Layout, ImageError> {
    let esp_size = match spec.esp_size {
        Some(size) => size,
        None => esp_size_for(&spec.esp_tree).map_err(|source| ImageError::Esp {
            tree: spec.esp_tree.clone(),
            source,
        })?,
    };
    Layout::plan(spec.table, spec.size, esp_size, &spec.seed).map_err(|e| match e {
        LayoutError::TooSmall {
            have, need, short, ..
        } => ImageError::DoesNotFit {
            size: have,
            need,
            short,
            short_mib: short.div_ceil(MIB),
            need_mib: need.div_ceil(MIB),
        },
        other => ImageError::Layout(other),
    })
}

/// Lays `layout` out on `disk`: the ESP, the data partition, GRUB's BIOS
/// core image when the ESP tree has one, and the partition table (with the
/// MBR boot code) last. Only metadata and file data are written.
pub fn write_disk<D: Read + Write + Seek>(
    spec: &ImageSpec,
    layout: &Layout,
    disk: &mut D,
    disk_path: &Path,
) -> Result<ImageSummary, ImageError> {
    let esp_opts = FatOptions {
        label: spec.esp_label.clone(),
        volume_id: layout.identity.esp_volume_id,
        timestamp: spec.source_date_epoch,
        hidden_sectors: u32::try_from(layout.esp.first_lba()).unwrap_or(u32::MAX),
    };
    let esp = {
        let mut slice = Slice::new(&mut *disk, layout.esp.offset, layout.esp.len);
        fat::format(&mut slice, layout.esp.len, Some(&spec.esp_tree), &esp_opts).map_err(
            |source| ImageError::Esp {
                tree: spec.esp_tree.clone(),
                source,
            },
        )?
    };
    let data_opts = ExfatOptions {
        label: spec.data_label.clone(),
        volume_serial: layout.identity.data_volume_serial,
        timestamp: spec.source_date_epoch,
    };
    {
        let mut slice = Slice::new(&mut *disk, layout.data.offset, layout.data.len);
        exfat::format(
            &mut slice,
            layout.data.len,
            Some(&spec.data_tree),
            &data_opts,
        )
        .map_err(|source| ImageError::Data {
            tree: spec.data_tree.clone(),
            source,
        })?;
    }
    let bios_err = |source| ImageError::BiosBoot {
        tree: spec.esp_tree.clone(),
        source,
    };
    let bios = BiosBoot::from_esp_tree(&spec.esp_tree).map_err(bios_err)?;
    if let Some(bios) = &bios {
        bios.write_core(disk, layout.table, layout.data.offset)
            .map_err(bios_err)?;
    }
    let boot_code = bios_boot::boot_code(bios.as_ref(), layout.table);
    layout.write_table(disk, &boot_code).map_err(|e| match e {
        LayoutError::Gpt(crate::gpt::GptError::Io(source))
        | LayoutError::Mbr(crate::mbr::MbrError::Io(source)) => ImageError::Io {
            path: disk_path.to_path_buf(),
            source,
        },
        other => ImageError::Layout(other),
    })?;
    Ok(ImageSummary {
        layout: layout.clone(),
        esp,
        data_fs_uuid: layout.identity.data_fs_uuid(),
    })
}

/// Writes a sparse image file to `out`, atomically: a temporary file in the
/// same directory, fsynced, then renamed over `out`.
pub fn write_image(spec: &ImageSpec, out: &Path) -> Result<ImageSummary, ImageError> {
    write_image_then(spec, out, |_, _| Ok(())).map(|(summary, ())| summary)
}

/// What [`write_image_then`]'s `finish` returns.
pub type FinishResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// [`write_image`], with `finish` run on the complete temporary file (its
/// path and the summary) before the one fsync and the rename: the image
/// appears at `out` only as `finish` left it.
pub fn write_image_then<T>(
    spec: &ImageSpec,
    out: &Path,
    finish: impl FnOnce(&Path, &ImageSummary) -> FinishResult<T>,
) -> Result<(ImageSummary, T), ImageError> {
    let io_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ImageError::Io { path, source }
    };
    if let Ok(meta) = fs::metadata(out)
        && !meta.is_file()
    {
        return Err(ImageError::Output {
            path: out.to_path_buf(),
            what: "exists and is not a regular file; `image` writes files only (use `install` for devices)".into(),
        });
    }
    let layout = plan(spec)?;
    let dir = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = out.file_name().ok_or_else(|| ImageError::Output {
        path: out.to_path_buf(),
        what: "has no file name".into(),
    })?;
    let temp = dir.join(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let mut file = fs::File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&temp)
            .map_err(io_err(&temp))?;
        file.set_len(layout.disk_size).map_err(io_err(&temp))?;
        let summary = write_disk(spec, &layout, &mut file, &temp)?;
        let finished = finish(&temp, &summary).map_err(|source| ImageError::Finish {
            path: out.to_path_buf(),
            source,
        })?;
        file.sync_all().map_err(io_err(&temp))?;
        fs::rename(&temp, out).map_err(io_err(out))?;
        if let Ok(d) = fs::File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok((summary, finished))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(dir: &Path, size: u64) -> ImageSpec {
        let esp = dir.join("esp");
        let data = dir.join("data");
        fs::create_dir_all(esp.join("EFI/BOOT")).unwrap();
        fs::create_dir_all(data.join("ISOs")).unwrap();
        fs::write(esp.join("EFI/BOOT/BOOTX64.EFI"), vec![7u8; 100_000]).unwrap();
        ImageSpec {
            table: TableKind::Gpt,
            size,
            seed: "test-seed".into(),
            data_label: "HIPERISO".into(),
            esp_label: "HIPERISO".into(),
            source_date_epoch: 1_700_000_000,
            esp_tree: esp,
            data_tree: data,
            esp_size: None,
        }
    }

    #[test]
    fn small_payload_gets_a_32_mib_esp() {
        let dir = tempfile::tempdir().unwrap();
        let layout = plan(&spec(dir.path(), 256 * MIB)).unwrap();
        assert_eq!(layout.esp.len, 32 * MIB);
    }

    #[test]
    fn too_small_names_the_option_and_the_shortfall() {
        let dir = tempfile::tempdir().unwrap();
        let err = plan(&spec(dir.path(), 40 * MIB)).unwrap_err().to_string();
        assert!(
            err.contains("--size") && err.contains("10 MiB more"),
            "{err}"
        );
    }

    #[test]
    fn refuses_to_write_over_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        let err = write_image(&spec(dir.path(), 256 * MIB), dir.path()).unwrap_err();
        assert!(matches!(err, ImageError::Output { .. }), "{err}");
    }
}
