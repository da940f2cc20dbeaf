//! The ESP and data trees an image is made of, staged in a temporary
//! directory for `hiperiso-installer`, which takes plain trees and knows
//! nothing about how they were built.

use std::fs;
use std::path::{Path, PathBuf};

use hiperiso_stick::io::{IoError, io_err, sha256_file};
use hiperiso_stick::paths::data::{CONFIG_SCHEMA, HIPERISO_DIR, ISOS_DIR};
use hiperiso_stick::paths::esp::BUILD_JSON;

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
}

/// The ESP and data trees an image is made of, staged in a temporary
/// directory.
pub struct PayloadTrees {
    _dir: tempfile::TempDir,
    pub esp: PathBuf,
    pub data: PathBuf,
}

/// Copies a tree (following symlinks), skipping `.gitkeep` placeholders.
fn copy_tree(from: &Path, to: &Path) -> Result<(), StageError> {
    fs::create_dir_all(to).map_err(io_err("stage", to))?;
    for entry in fs::read_dir(from).map_err(io_err("stage", from))? {
        let entry = entry.map_err(io_err("stage", from))?;
        let source = entry.path();
        if entry.file_name() == ".gitkeep" {
            continue;
        }
        let target = to.join(entry.file_name());
        if fs::metadata(&source)
            .map_err(io_err("stage", &source))?
            .is_dir()
        {
            copy_tree(&source, &target)?;
        } else {
            fs::copy(&source, &target).map_err(io_err("stage", &source))?;
        }
    }
    Ok(())
}

fn sha256_of(path: &Path) -> Option<String> {
    sha256_file(path).ok().map(|(sha256, _)| sha256)
}

impl PayloadTrees {
    /// The ESP: `esp_tree` if given, else `overlays/esp` beside the
    /// manifest (until the build assembles the real payload); a
    /// `EFI/hiperiso/build.json` marker is added when the tree has none.
    /// The data tree: `data_tree` or `overlays/data`, plus an empty `ISOs/`.
    pub fn stage(
        project: &Project,
        esp_tree: Option<&Path>,
        data_tree: Option<&Path>,
    ) -> Result<Self, StageError> {
        let manifest = &project.manifest;
        let dir = tempfile::Builder::new()
            .prefix("hiperiso-trees-")
            .tempdir()
            .map_err(io_err("stage", &std::env::temp_dir()))?;
        let esp = dir.path().join("esp");
        let data = dir.path().join("data");
        let overlays = project.manifest_dir().join("overlays");
        let esp_source = esp_tree
            .map(Path::to_path_buf)
            .unwrap_or_else(|| overlays.join("esp"));
        let data_source = data_tree
            .map(Path::to_path_buf)
            .unwrap_or_else(|| overlays.join("data"));
        if !esp_source.is_dir() {
            return Err(StageError::NoEspPayload(esp_source));
        }
        copy_tree(&esp_source, &esp)?;
        copy_tree(&data_source, &data)?;
        fs::create_dir_all(data.join(ISOS_DIR)).map_err(io_err("stage", &data))?;
        // The config's JSON Schema, next to it, so editors validate it.
        let schema = data.join(CONFIG_SCHEMA);
        fs::create_dir_all(data.join(HIPERISO_DIR)).map_err(io_err("stage", &data))?;
        fs::write(&schema, hiperiso_runtime::config_check::SCHEMA)
            .map_err(io_err("stage", &schema))?;
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
            let parent = marker.parent().unwrap_or(&esp);
            fs::create_dir_all(parent).map_err(io_err("stage", parent))?;
            let text = serde_json::to_string_pretty(&record).unwrap_or_default() + "\n";
            fs::write(&marker, text).map_err(io_err("stage", &marker))?;
        }
        Ok(PayloadTrees {
            _dir: dir,
            esp,
            data,
        })
    }
}

/// The hash of everything an image is made of: the image settings (as
/// text), the ESP and data trees' manifests, and hiperiso's version.
pub fn image_key(settings: &str, esp: &Path, data: &Path) -> Result<String, StageError> {
    let scan = |root: &Path| {
        Tree::scan(root).map_err(|source| StageError::Scan {
            path: root.to_path_buf(),
            source,
        })
    };
    let text = format!(
        "hiperiso {}\n{settings}\n--- esp\n{}--- data\n{}",
        env!("CARGO_PKG_VERSION"),
        scan(esp)?.manifest(),
        scan(data)?.manifest()
    );
    Ok(sha256_hex(text.as_bytes()))
}
