//! Recognising a hiperiso stick (`install --update` refuses anything
//! else, `install` refuses it without `--reinstall`): data partition then
//! ESP, and the ESP's build.json marker, or a blank ESP beside our data
//! partition (an interrupted update); and what its data partition holds.

use std::io::{self, Read, Seek, SeekFrom};

use hiperiso_stick::build_json::{BUILD_JSON, BuildMarker, MarkerError};
use hiperiso_stick::paths::data::{ISOS_DIR, LOGS_DIR};

use crate::exfat::{ExfatError, ExfatReader};
use crate::fat::{FatError, FatReader};
use crate::gpt::GptError;
use crate::layout::Extent;
use crate::slice::Slice;
use crate::table::{self, DiskTable};

/// What a disk that is not a hiperiso stick holds instead.
#[derive(Debug, thiserror::Error)]
pub enum NotAStick {
    #[error("no partition table")]
    NoTable,
    #[error("a partition table that cannot be read")]
    Table(#[source] GptError),
    /// The partitions are not data then ESP; the description lists them.
    #[error("{0}")]
    Layout(String),
    #[error("{0}; the ESP is blank and the data partition has no hiperiso/ directory")]
    BlankEsp(String),
    #[error("{found}; the ESP's first sector cannot be read")]
    EspUnreadable {
        found: String,
        #[source]
        source: io::Error,
    },
    #[error("{found}; the ESP has no hiperiso marker ({BUILD_JSON} with a \"hiperiso\" key)")]
    NoMarker {
        found: String,
        #[source]
        source: Box<EspMarkerError>,
    },
}

/// Why an ESP yields no `build.json` marker.
#[derive(Debug, thiserror::Error)]
pub enum EspMarkerError {
    #[error("the ESP has no readable FAT filesystem")]
    NotFat(#[source] FatError),
    #[error("the FAT ESP (label {label:?}) has no {BUILD_JSON}")]
    NoBuildJson {
        label: String,
        #[source]
        source: FatError,
    },
    #[error("the ESP's build record is unusable")]
    Marker(#[source] MarkerError),
}

/// Reads the stick's `build.json` marker from its ESP.
fn read_marker<D: Read + Seek>(esp: D) -> Result<BuildMarker, EspMarkerError> {
    let mut fat = FatReader::open(esp).map_err(EspMarkerError::NotFat)?;
    let bytes = fat
        .read_file(BUILD_JSON)
        .map_err(|source| EspMarkerError::NoBuildJson {
            label: fat.label().to_string(),
            source,
        })?;
    BuildMarker::parse(&bytes).map_err(EspMarkerError::Marker)
}

/// Recognises a hiperiso stick on `disk` of `size` bytes: data then ESP,
/// the ESP ending the disk, and the build.json marker. Returns the table,
/// both extents and the marker (None for a blank ESP left by an
/// interrupted update).
pub fn recognise<D: Read + Seek>(
    disk: &mut D,
    size: u64,
) -> Result<(DiskTable, Extent, Extent, Option<BuildMarker>), NotAStick> {
    let found = table::read_table(disk, size).map_err(NotAStick::Table)?;
    let Some((table, parts)) = found else {
        return Err(NotAStick::NoTable);
    };
    let describe = || {
        let list: Vec<String> = parts
            .iter()
            .map(|p| format!("{} at {} ({} bytes)", p.type_name, p.offset, p.len))
            .collect();
        format!(
            "a {table} partition table with {} partition(s): {}",
            parts.len(),
            list.join(", ")
        )
    };
    let [data, esp] = parts.as_slice() else {
        return Err(NotAStick::Layout(describe()));
    };
    if !data.is_data() || !esp.is_esp() || esp.offset < data.offset + data.len {
        return Err(NotAStick::Layout(describe()));
    }
    let data_extent = Extent {
        offset: data.offset,
        len: data.len,
    };
    let esp_extent = Extent {
        offset: esp.offset,
        len: esp.len,
    };
    let mut first = [0u8; 512];
    disk.seek(SeekFrom::Start(esp.offset))
        .and_then(|_| disk.read_exact(&mut first))
        .map_err(|source| NotAStick::EspUnreadable {
            found: describe(),
            source,
        })?;
    if first.iter().all(|&b| b == 0) {
        // A blank ESP is what an interrupted update leaves; accept it only
        // when the data partition is clearly ours: our GPT name (if any) and
        // an exFAT volume with a `hiperiso/` directory.
        let data_is_ours = data.name_is_hiperiso() != Some(false)
            && ExfatReader::open(Slice::new(&mut *disk, data.offset, data.len))
                .and_then(|mut r| r.read_dir("/hiperiso"))
                .is_ok();
        if data_is_ours {
            return Ok((table, data_extent, esp_extent, None));
        }
        return Err(NotAStick::BlankEsp(describe()));
    }
    let marker = read_marker(Slice::new(&mut *disk, esp.offset, esp.len)).map_err(|source| {
        NotAStick::NoMarker {
            found: describe(),
            source: Box::new(source),
        }
    })?;
    Ok((table, data_extent, esp_extent, Some(marker)))
}

/// What a full install would erase on a hiperiso stick's data partition:
/// the images under `ISOs/` (subdirectories included) and the recorded
/// sessions under `hiperiso/logs/`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StickContents {
    /// Paths below `ISOs/`, e.g. `debian.iso`, `sub/win11.iso`.
    pub isos: Vec<String>,
    /// Session directory names.
    pub sessions: Vec<String>,
    /// Why the data partition could not be listed (then both lists are
    /// what was read before the problem).
    pub unreadable: Option<String>,
}

/// Files the stick ships under `ISOs/` itself (not the user's).
const SHIPPED_IN_ISOS: [&str; 1] = ["README"];

/// Lists what the data partition at `data` holds (see [`StickContents`]).
pub fn stick_contents<D: Read + Seek>(disk: &mut D, data: Extent) -> StickContents {
    let mut out = StickContents::default();
    let mut exfat = match ExfatReader::open(Slice::new(disk, data.offset, data.len)) {
        Ok(reader) => reader,
        Err(e) => {
            out.unreadable = Some(e.to_string());
            return out;
        }
    };
    let mut dirs = vec![String::new()];
    while let Some(dir) = dirs.pop() {
        let path = format!("/{ISOS_DIR}{dir}");
        let entries = match exfat.read_dir(&path) {
            Ok(entries) => entries,
            Err(ExfatError::NotFound { .. }) if dir.is_empty() => break,
            Err(e) => {
                out.unreadable = Some(e.to_string());
                break;
            }
        };
        for entry in entries {
            let name = format!("{dir}/{}", entry.name);
            if entry.is_dir {
                dirs.push(name);
            } else if !(dir.is_empty() && SHIPPED_IN_ISOS.contains(&entry.name.as_str())) {
                out.isos.push(name[1..].to_string());
            }
        }
    }
    match exfat.read_dir(&format!("/{LOGS_DIR}")) {
        Ok(entries) => {
            out.sessions = (entries.into_iter())
                .filter(|e| e.is_dir)
                .map(|e| e.name)
                .collect();
        }
        Err(ExfatError::NotFound { .. }) => {}
        Err(e) => out.unreadable = Some(e.to_string()),
    }
    out.isos.sort();
    out.sessions.sort();
    out
}
