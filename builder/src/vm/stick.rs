//! The stick image the outer VM boots: the last image `image` wrote, a
//! copy-on-write working copy, ISOs and the GRUB environment written into
//! its exFAT data partition, sessions read back from it (no mount).

use hiperiso_stick::boot::grubenv as grubenv_keys;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use hiperiso_installer::exfat::{ExfatEditor, ExfatError, ExfatReader};
use hiperiso_installer::slice::Slice;
use hiperiso_installer::table::{self, PartitionEntry};
use hiperiso_runtime::analyze::Report;
use hiperiso_runtime::grubenv;
use hiperiso_runtime::session_list::Logs;

use hiperiso_stick::paths::data;

use hiperiso_stick::io::io_err;

use crate::vm::error::{Result, RunError};

/// Where `image` records the last image it wrote, under the cache root.
pub const LAST_IMAGE_FILE: &str = "state/last-image";
/// The GRUB environment block on the data partition (see grub.cfg).
pub const GRUBENV_PATH: &str = data::GRUBENV;

/// The image `image` wrote last, from the cache's record.
pub fn last_image(cache_root: &Path) -> Result<PathBuf> {
    let record = cache_root.join(LAST_IMAGE_FILE);
    let text = fs::read_to_string(&record).map_err(|_| RunError::NoImage {
        record: record.clone(),
    })?;
    let path = PathBuf::from(text.trim_end_matches('\n'));
    if path.as_os_str().is_empty() || !path.is_file() {
        return Err(RunError::NoImage { record });
    }
    Ok(path)
}

/// Records `image` (made absolute) as the last image written.
pub fn record_last_image(cache_root: &Path, image: &Path) -> Result<()> {
    let record = cache_root.join(LAST_IMAGE_FILE);
    let absolute = std::path::absolute(image).map_err(io_err("resolve", image))?;
    if let Some(dir) = record.parent() {
        fs::create_dir_all(dir).map_err(io_err("create", dir))?;
    }
    let temporary = record.with_extension("tmp");
    fs::write(&temporary, format!("{}\n", absolute.display()))
        .map_err(io_err("write", &temporary))?;
    Ok(fs::rename(&temporary, &record).map_err(io_err("write", &record))?)
}

/// A copy-on-write (reflink where the file system can, else sparse) copy.
pub fn working_copy(image: &Path, copy: &Path) -> Result<()> {
    let output = Command::new("cp")
        .args(["--reflink=auto", "--sparse=always", "--"])
        .arg(image)
        .arg(copy)
        .output()
        .map_err(io_err("run cp to copy", image))?;
    if !output.status.success() {
        return Err(RunError::Copy {
            image: image.to_path_buf(),
            copy: copy.to_path_buf(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        });
    }
    Ok(())
}

/// The exFAT data partition of a stick image, opened for changes.
pub struct StickImage {
    path: PathBuf,
    data: ExfatEditor<Slice<File>>,
}

impl StickImage {
    pub fn open(path: &Path) -> Result<Self> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(io_err("open", path))?;
        let partition = data_partition(&mut file, path)?;
        let slice = Slice::new(file, partition.offset, partition.len);
        let data = ExfatEditor::open(slice).map_err(|source| RunError::Exfat {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(Self {
            path: path.to_path_buf(),
            data,
        })
    }

    fn exfat_error(&self) -> impl FnOnce(ExfatError) -> RunError + use<> {
        let path = self.path.clone();
        move |source| RunError::Exfat { path, source }
    }

    /// Writes `bytes` as the file `path` of the data partition.
    pub fn put_bytes(&mut self, path: &str, bytes: &[u8], timestamp: u64) -> Result<()> {
        let error = self.exfat_error();
        self.data
            .put_file(path, bytes, bytes.len() as u64, timestamp)
            .map_err(error)
    }

    /// Copies an ISO file into `/ISOs/` (replacing one of the same name);
    /// returns its name there.
    pub fn add_iso(&mut self, iso: &Path) -> Result<String> {
        let name = iso
            .file_name()
            .and_then(|n| n.to_str())
            .filter(|n| n.to_ascii_lowercase().ends_with(".iso"))
            .ok_or_else(|| RunError::NotAnIso {
                path: iso.to_path_buf(),
            })?
            .to_string();
        let file = File::open(iso).map_err(io_err("open", iso))?;
        let metadata = file.metadata().map_err(io_err("read", iso))?;
        let modified = metadata
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs());
        let error = self.exfat_error();
        self.data
            .put_file(
                &format!("{}/{name}", data::ISOS_DIR),
                io::BufReader::with_capacity(1 << 20, file),
                metadata.len(),
                modified,
            )
            .map_err(error)?;
        Ok(name)
    }

    /// The `*.iso` files under `/ISOs/`, as GRUB lists them.
    pub fn isos(&mut self) -> Result<Vec<String>> {
        let error = self.exfat_error();
        let entries = self.data.reader().read_dir(data::ISOS_DIR).map_err(error)?;
        Ok(entries
            .into_iter()
            .filter(|e| !e.is_dir && e.name.to_ascii_lowercase().ends_with(".iso"))
            .map(|e| e.name)
            .collect())
    }

    /// Makes GRUB boot `/ISOs/NAME` at once, with no keypress, through the
    /// environment block grub.cfg loads (`hiperiso_timeout`,
    /// `hiperiso_default`, `hiperiso_hold`). hiperiso-init rewrites the
    /// block from hiperiso.json at its next boot.
    pub fn boot_once(&mut self, name: &str) -> Result<()> {
        let isos = self.isos()?;
        let Some(found) = isos.iter().find(|iso| iso.eq_ignore_ascii_case(name)) else {
            return Err(RunError::NoSuchIso {
                name: name.to_string(),
                available: if isos.is_empty() {
                    "nothing".into()
                } else {
                    isos.join(", ")
                },
            });
        };
        let block = grubenv::render(&[
            (grubenv_keys::TIMEOUT, "0".into()),
            (grubenv_keys::DEFAULT, found.clone()),
            (grubenv_keys::HOLD, "0".into()),
        ])
        .map_err(RunError::GrubEnv)?;
        self.put_bytes(GRUBENV_PATH, &block, now())
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

pub(crate) fn data_partition(file: &mut File, path: &Path) -> Result<PartitionEntry> {
    let size = file.seek(SeekFrom::End(0)).map_err(io_err("read", path))?;
    let table = table::read_table(file, size).map_err(|source| RunError::PartitionTable {
        path: path.to_path_buf(),
        source,
    })?;
    table
        .and_then(|(_, parts)| parts.into_iter().find(|p| p.is_data()))
        .ok_or_else(|| RunError::NoDataPartition {
            path: path.to_path_buf(),
        })
}

/// A copy of the image's exFAT data partition's session list and files.
pub fn session_ids(image: &Path) -> Result<Vec<String>> {
    let mut logs = match Logs::open(image) {
        Ok(logs) => logs,
        Err(source) => {
            return Err(RunError::Sessions {
                image: image.to_path_buf(),
                source,
            });
        }
    };
    let list = logs.list().map_err(|source| RunError::Sessions {
        image: image.to_path_buf(),
        source,
    })?;
    Ok(list.sessions.into_iter().map(|s| s.id).collect())
}

/// The analyzed report of session `id` on the image, read without mounting.
pub fn session_report(image: &Path, id: &str) -> Result<Report> {
    let sessions_error = |source| RunError::Sessions {
        image: image.to_path_buf(),
        source,
    };
    Logs::open(image)
        .and_then(|mut logs| logs.show(id))
        .map_err(sessions_error)
}

/// Replaces the session's report files (`report.json`, `report.txt`,
/// `analysis.meta`) with `report`: the host's analysis, which reads the
/// graphical screens by OCR where the stick could not, so that
/// `hiperiso-log sessions` and `show` agree with what `run` printed.
pub fn put_report(image: &Path, id: &str, report: &Report) -> Result<()> {
    let files =
        hiperiso_runtime::analyze::report_files(report).map_err(|source| RunError::Analyze {
            id: id.to_string(),
            source,
        })?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut stick = StickImage::open(image)?;
    for (name, bytes) in files {
        stick.put_bytes(&format!("{}/{id}/{name}", data::LOGS_DIR), &bytes, now)?;
    }
    Ok(())
}

/// Reads one file of a session directory from the image, without mounting.
pub fn read_session_file(image: &Path, id: &str, name: &str) -> Result<Option<Vec<u8>>> {
    let mut file = File::open(image).map_err(io_err("open", image))?;
    let partition = data_partition(&mut file, image)?;
    let exfat_error = |source| RunError::Exfat {
        path: image.to_path_buf(),
        source,
    };
    let mut reader = ExfatReader::open(Slice::new(file, partition.offset, partition.len))
        .map_err(exfat_error)?;
    let mut out = Vec::new();
    match reader.read_file(&format!("{}/{id}/{name}", data::LOGS_DIR), &mut out) {
        Ok(_) => Ok(Some(out)),
        Err(ExfatError::NotFound { .. }) => Ok(None),
        Err(source) => Err(exfat_error(source)),
    }
}
