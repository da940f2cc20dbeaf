//! The ESP and data trees an image is made of, for `hiperiso-installer`,
//! which takes plain trees and knows nothing about how they were built:
//! the ESP from the cache (or a staged copy of a given tree), the data
//! tree staged in a temporary directory.

use std::fs;
use std::path::{Path, PathBuf};

use hiperiso_stick::io::{IoError, io_err, sha256_file};
use hiperiso_stick::paths::data::{CONFIG_SCHEMA, HIPERISO_DIR, ISOS_DIR};
use hiperiso_stick::paths::esp::BUILD_JSON;

use crate::model::build_record::{self, RecordError};
use crate::payload::cached::StepsInfo;
use crate::project::Project;
use crate::sources::store::sha256_hex;
use crate::steps::tree::{Tree, TreeError};

#[derive(Debug, thiserror::Error)]
pub enum StageError {
    #[error(transparent)]
    Io(#[from] IoError),
    #[error("hashing the tree {}", .path.display())]
    Scan {
        path: PathBuf,
        #[source]
        source: TreeError,
    },
    #[error("no ESP payload at {}: build one first or give --esp-tree DIR", .0.display())]
    NoEspPayload(PathBuf),
    #[error("recording the steps in build.json")]
    Record(#[from] RecordError),
}

/// The ESP and data trees an image is made of.
pub struct PayloadTrees {
    _dir: tempfile::TempDir,
    /// The cache's ESP tree (read-only), or a staged copy.
    pub esp: PathBuf,
    /// Names the ESP's content: its derivation's or its own tree hash.
    pub esp_id: String,
    /// The data tree, staged.
    pub data: PathBuf,
}

/// Where an image's ESP comes from.
#[derive(Debug, Clone, Copy)]
pub enum EspSource<'a> {
    /// An ESP built in the cache (payload/cached.rs), used in place, and
    /// its tree hash.
    Cached { esp: &'a Path, tree: &'a str },
    /// `--esp-tree DIR`, or (None) `overlays/esp` when the profile has no
    /// payload: staged, its build.json completed.
    Dir(Option<&'a Path>),
}

/// Stages a tree (following symlinks), skipping `.gitkeep` placeholders:
/// files are hard-linked where `from` and `to` share a filesystem (no copy
/// of the payload's megabytes), copied otherwise. Staging writes into
/// only the files named in `private` (relative paths): they are always
/// copied, so that the writes never reach the source through a link.
fn stage_tree(from: &Path, to: &Path, private: &[&str]) -> Result<(), StageError> {
    stage_dir(from, to, "", private)
}

fn stage_dir(from: &Path, to: &Path, prefix: &str, private: &[&str]) -> Result<(), StageError> {
    fs::create_dir_all(to).map_err(io_err("stage", to))?;
    for entry in fs::read_dir(from).map_err(io_err("stage", from))? {
        let entry = entry.map_err(io_err("stage", from))?;
        let source = entry.path();
        if entry.file_name() == ".gitkeep" {
            continue;
        }
        let name = entry.file_name();
        let relative = format!("{prefix}{}", name.to_string_lossy());
        let target = to.join(&name);
        if fs::metadata(&source)
            .map_err(io_err("stage", &source))?
            .is_dir()
        {
            stage_dir(&source, &target, &format!("{relative}/"), private)?;
            continue;
        }
        let symlink = entry
            .file_type()
            .map_err(io_err("stage", &source))?
            .is_symlink();
        let linked = !symlink
            && !private.contains(&relative.as_str())
            && fs::hard_link(&source, &target).is_ok();
        if !linked {
            fs::copy(&source, &target).map_err(io_err("stage", &source))?;
        }
    }
    Ok(())
}

fn sha256_of(path: &Path) -> Option<String> {
    sha256_file(path).ok().map(|(sha256, _)| sha256)
}

impl PayloadTrees {
    /// The ESP (see [`EspSource`]): a staged directory gets a
    /// `EFI/hiperiso/build.json` marker when it has none, and `steps`.
    /// The data tree: `data_tree` or `overlays/data`, plus an empty `ISOs/`.
    pub fn stage(
        project: &Project,
        esp: EspSource<'_>,
        data_tree: Option<&Path>,
        steps: StepsInfo<'_>,
    ) -> Result<Self, StageError> {
        let dir = tempfile::Builder::new()
            .prefix("hiperiso-trees-")
            .tempdir()
            .map_err(io_err("stage", &std::env::temp_dir()))?;
        let data = dir.path().join("data");
        let overlays = project.manifest_dir().join("overlays");
        let data_source = data_tree
            .map(Path::to_path_buf)
            .unwrap_or_else(|| overlays.join("data"));
        stage_tree(&data_source, &data, &[CONFIG_SCHEMA])?;
        fs::create_dir_all(data.join(ISOS_DIR)).map_err(io_err("stage", &data))?;
        // The config's JSON Schema, next to it, so editors validate it.
        let schema = data.join(CONFIG_SCHEMA);
        fs::create_dir_all(data.join(HIPERISO_DIR)).map_err(io_err("stage", &data))?;
        fs::write(&schema, hiperiso_runtime::config_check::SCHEMA)
            .map_err(io_err("stage", &schema))?;
        let (esp, esp_id) = match esp {
            EspSource::Cached { esp, tree } => (esp.to_path_buf(), tree.to_string()),
            EspSource::Dir(source) => {
                let source = source
                    .map(Path::to_path_buf)
                    .unwrap_or_else(|| overlays.join("esp"));
                let esp = dir.path().join("esp");
                stage_esp(project, &source, &esp, steps)?;
                let id = scan(&esp)?.hash();
                (esp, id)
            }
        };
        Ok(PayloadTrees {
            _dir: dir,
            esp,
            esp_id,
            data,
        })
    }
}

/// Copies the ESP tree `source` into `esp`, with a build.json marker when
/// it has none, and `steps` recorded in it.
fn stage_esp(
    project: &Project,
    source: &Path,
    esp: &Path,
    steps: StepsInfo<'_>,
) -> Result<(), StageError> {
    let manifest = &project.manifest;
    if !source.is_dir() {
        return Err(StageError::NoEspPayload(source.to_path_buf()));
    }
    stage_tree(source, esp, &[BUILD_JSON])?;
    let marker = esp.join(BUILD_JSON);
    if !marker.exists() {
        let lock = project.lock_path();
        let record = serde_json::json!({
            "hiperiso": {
                "version": env!("CARGO_PKG_VERSION"),
                "image": manifest.image.name,
                "source_date_epoch": manifest.image.source_date_epoch,
                "manifest_sha256": sha256_of(&project.settings.manifest_path),
                "lock_sha256": sha256_of(&lock),
            }
        });
        let parent = marker.parent().unwrap_or(esp);
        fs::create_dir_all(parent).map_err(io_err("stage", parent))?;
        let text = serde_json::to_string_pretty(&record).unwrap_or_default() + "\n";
        fs::write(&marker, text).map_err(io_err("stage", &marker))?;
    }
    build_record::add_steps(&marker, steps.steps, steps.tools)?;
    Ok(())
}

fn scan(root: &Path) -> Result<Tree, StageError> {
    Tree::scan(root).map_err(|source| StageError::Scan {
        path: root.to_path_buf(),
        source,
    })
}

/// The hash of everything an image is made of: the image settings (as
/// text), the ESP's content hash, the data tree's manifest, and
/// hiperiso's version.
pub fn image_key(settings: &str, esp_id: &str, data: &Path) -> Result<String, StageError> {
    let text = format!(
        "hiperiso {}\n{settings}\n--- esp {esp_id}\n--- data\n{}",
        env!("CARGO_PKG_VERSION"),
        scan(data)?.manifest()
    );
    Ok(sha256_hex(text.as_bytes()))
}
