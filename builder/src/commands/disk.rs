//! `image`, `install` and `inspect`: the glue between the CLI, the manifest
//! and `hiperiso-installer`, which takes plain trees and knows nothing about
//! how they were built.

use std::fs;
use std::io::{self, BufRead, Write};
use std::path::{Path, PathBuf};

use hiperiso_installer::device::{self, DeviceError};
use hiperiso_installer::image::{self, ImageError, ImageSpec};
use hiperiso_installer::inspect::{self, InspectError};
use hiperiso_installer::layout::TableKind;
use sha2::{Digest, Sha256};

use crate::cli::{ImageArgs, InspectArgs, InstallArgs, TableArg};
use crate::commands::build::BuiltSteps;
use crate::model::build_record;
use crate::model::manifest::{ByteSize, Manifest, PartitionTable};
use crate::payload::from_steps::BuiltEsp;
use crate::settings::Context;

#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error(transparent)]
    Device(#[from] DeviceError),
    #[error(transparent)]
    Inspect(#[from] InspectError),
    #[error("--size {text:?}: {message}")]
    Size { text: String, message: String },
    #[error("cannot stage {path}")]
    Stage {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("no ESP payload at {0}: build one first or give --esp-tree DIR")]
    NoEspPayload(PathBuf),
    #[error("not confirmed: nothing was written to {0}")]
    NotConfirmed(PathBuf),
}

impl From<DiskError> for crate::commands::Error {
    fn from(error: DiskError) -> Self {
        crate::commands::Error::Disk(Box::new(error))
    }
}

/// The ESP and data trees an image is made of, staged in a temporary
/// directory.
pub struct PayloadTrees {
    _dir: tempfile::TempDir,
    pub esp: PathBuf,
    pub data: PathBuf,
}

fn stage_err(path: &Path) -> impl FnOnce(io::Error) -> DiskError {
    let path = path.to_path_buf();
    move |source| DiskError::Stage { path, source }
}

/// Copies a tree (following symlinks), skipping `.gitkeep` placeholders.
fn copy_tree(from: &Path, to: &Path) -> crate::commands::Result<()> {
    fs::create_dir_all(to).map_err(stage_err(to))?;
    for entry in fs::read_dir(from).map_err(stage_err(from))? {
        let entry = entry.map_err(stage_err(from))?;
        let source = entry.path();
        if entry.file_name() == ".gitkeep" {
            continue;
        }
        let target = to.join(entry.file_name());
        if fs::metadata(&source).map_err(stage_err(&source))?.is_dir() {
            copy_tree(&source, &target)?;
        } else {
            fs::copy(&source, &target).map_err(stage_err(&source))?;
        }
    }
    Ok(())
}

fn sha256_of(path: &Path) -> Option<String> {
    let bytes = fs::read(path).ok()?;
    Some(hex::encode(Sha256::digest(bytes)))
}

impl PayloadTrees {
    /// The ESP: `esp_tree` if given, else `overlays/esp` beside the
    /// manifest (until the build assembles the real payload); a
    /// `EFI/hiperiso/build.json` marker is added when the tree has none.
    /// The data tree: `data_tree` or `overlays/data`, plus an empty `ISOs/`.
    pub fn stage(
        ctx: &Context,
        manifest: &Manifest,
        esp_tree: Option<&Path>,
        data_tree: Option<&Path>,
    ) -> crate::commands::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("hiperiso-trees-")
            .tempdir()
            .map_err(stage_err(&std::env::temp_dir()))?;
        let esp = dir.path().join("esp");
        let data = dir.path().join("data");
        let overlays = ctx.manifest_dir().join("overlays");
        let esp_source = esp_tree
            .map(Path::to_path_buf)
            .unwrap_or_else(|| overlays.join("esp"));
        let data_source = data_tree
            .map(Path::to_path_buf)
            .unwrap_or_else(|| overlays.join("data"));
        if !esp_source.is_dir() {
            return Err(DiskError::NoEspPayload(esp_source).into());
        }
        copy_tree(&esp_source, &esp)?;
        copy_tree(&data_source, &data)?;
        fs::create_dir_all(data.join("ISOs")).map_err(stage_err(&data))?;
        let marker = esp.join(device::BUILD_JSON);
        if !marker.exists() {
            let lock = ctx.manifest_dir().join("hiperiso.lock");
            let record = serde_json::json!({
                "hiperiso": {
                    "version": env!("CARGO_PKG_VERSION"),
                    "image": manifest.image.name,
                    "source_date_epoch": manifest.image.source_date_epoch,
                    "manifest_sha256": sha256_of(&ctx.manifest_path),
                    "lock_sha256": sha256_of(&lock),
                }
            });
            let parent = marker.parent().unwrap_or(&esp);
            fs::create_dir_all(parent).map_err(stage_err(parent))?;
            let text = serde_json::to_string_pretty(&record).unwrap_or_default() + "\n";
            fs::write(&marker, text).map_err(stage_err(&marker))?;
        }
        Ok(PayloadTrees {
            _dir: dir,
            esp,
            data,
        })
    }
}

fn table_kind(arg: Option<TableArg>, manifest: &Manifest) -> TableKind {
    match arg {
        Some(TableArg::Gpt) => TableKind::Gpt,
        Some(TableArg::Mbr) => TableKind::Mbr,
        None => match manifest.image.table {
            PartitionTable::Gpt => TableKind::Gpt,
            PartitionTable::Mbr => TableKind::Mbr,
        },
    }
}

fn image_spec(manifest: &Manifest, table: TableKind, size: u64, trees: &PayloadTrees) -> ImageSpec {
    ImageSpec {
        table,
        size,
        seed: manifest.image.seed.clone(),
        data_label: manifest.image.data_label.clone(),
        esp_label: manifest.image.esp_label.clone(),
        source_date_epoch: manifest.image.source_date_epoch,
        esp_tree: trees.esp.clone(),
        data_tree: trees.data.clone(),
        esp_size: None,
    }
}

/// The profile's steps, built, and the ESP payload made from them or from
/// its packages; an explicit `--esp-tree` replaces both.
fn payload(
    ctx: &Context,
    manifest: &Manifest,
    esp_tree: Option<&Path>,
) -> crate::commands::Result<(BuiltSteps, Option<BuiltEsp>)> {
    if esp_tree.is_some() {
        return Ok((BuiltSteps::default(), None));
    }
    let steps = crate::commands::build::build_profile_steps(ctx, manifest)?;
    let built = crate::payload::from_steps::esp_for_image(ctx, manifest, &steps)?;
    Ok((steps, built))
}

/// `hiperiso-build image`.
pub fn image(ctx: &Context, args: &ImageArgs) -> crate::commands::Result<()> {
    let manifest = ctx.load_manifest()?;
    let size = match &args.size {
        Some(text) => {
            ByteSize::parse(text)
                .map_err(|message| DiskError::Size {
                    text: text.clone(),
                    message,
                })?
                .0
        }
        None => manifest.image.size.0,
    };
    let (steps, built) = payload(ctx, &manifest, args.esp_tree.as_deref())?;
    let trees = PayloadTrees::stage(
        ctx,
        &manifest,
        built
            .as_ref()
            .map(|b| b.esp.as_path())
            .or(args.esp_tree.as_deref()),
        args.data_tree.as_deref(),
    )?;
    build_record::add_steps(
        &trees.esp.join(device::BUILD_JSON),
        &steps.trees,
        steps.tools.as_deref(),
    )?;
    let spec = image_spec(&manifest, table_kind(args.table, &manifest), size, &trees);
    let settings = format!(
        "{} {} {} {:?} {:?} {}",
        spec.table, spec.size, spec.seed, spec.data_label, spec.esp_label, spec.source_date_epoch
    );
    let key = build_record::image_key(&settings, &trees.esp, &trees.data)?;
    let cache = ctx.store()?.root().to_path_buf();
    if let Some(state) = build_record::ImageState::up_to_date(&cache, &args.output, &key) {
        ctx.say(format!(
            "{} is up to date (image sha256 {})",
            args.output.display(),
            state.sha256
        ));
        crate::vm::record_last_image(&cache, &args.output)?;
        return Ok(());
    }
    let summary = image::write_image(&spec, &args.output).map_err(DiskError::from)?;
    let layout = &summary.layout;
    let image_sha256 =
        build_record::seal_image(&args.output, (layout.esp.offset, layout.esp.end()))?;
    build_record::ImageState::of(&args.output, &key, &image_sha256)?.save(&cache, &args.output)?;
    ctx.say(format!(
        "wrote {} ({} bytes, {}): data partition exFAT {} UUID {} at {}..{}, ESP {:?} at {}..{}",
        args.output.display(),
        layout.disk_size,
        layout.table,
        spec.data_label,
        summary.data_fs_uuid,
        layout.data.offset,
        layout.data.end(),
        summary.esp.fat_type,
        layout.esp.offset,
        layout.esp.end(),
    ));
    ctx.say(format!(
        "image sha256 {image_sha256} (recorded in {} as `{}`)",
        device::BUILD_JSON,
        build_record::IMAGE_SHA256
    ));
    // `hiperiso-build run` boots this image when given none.
    crate::vm::record_last_image(&cache, &args.output)?;
    Ok(())
}

/// Asks the user to type the device's name (or path).
fn confirm(device: &Path) -> crate::commands::Result<()> {
    let name = device
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    eprint!("Type the device name ({name}) to confirm: ");
    let _ = io::stderr().flush();
    let mut answer = String::new();
    io::stdin()
        .lock()
        .read_line(&mut answer)
        .map_err(stage_err(Path::new("stdin")))?;
    let answer = answer.trim();
    if answer == name || Path::new(answer) == device {
        Ok(())
    } else {
        Err(DiskError::NotConfirmed(device.to_path_buf()).into())
    }
}

/// `hiperiso-build install [--update]`.
pub fn install(ctx: &Context, args: &InstallArgs) -> crate::commands::Result<()> {
    let manifest = ctx.load_manifest()?;
    let (_, built) = payload(ctx, &manifest, args.esp_tree.as_deref())?;
    let trees = PayloadTrees::stage(
        ctx,
        &manifest,
        built
            .as_ref()
            .map(|b| b.esp.as_path())
            .or(args.esp_tree.as_deref()),
        args.data_tree.as_deref(),
    )?;
    let progress = |step: &str| ctx.say(step);
    if args.update {
        let plan = device::plan_update(
            &args.device,
            &trees.esp,
            &manifest.image.esp_label,
            &manifest.image.seed,
            manifest.image.source_date_epoch,
            args.force,
        )
        .map_err(DiskError::from)?;
        if args.dry_run || !args.yes || ctx.verbosity >= 0 {
            println!("{plan}");
        }
        if args.dry_run {
            return Ok(());
        }
        if !args.yes {
            confirm(&args.device)?;
        }
        device::execute_update(&plan, progress).map_err(DiskError::from)?;
        ctx.say(format!(
            "updated the ESP on {}; the data partition was not touched",
            args.device.display()
        ));
        return Ok(());
    }
    let mut spec = image_spec(&manifest, table_kind(args.table, &manifest), 0, &trees);
    if let Some(label) = &args.label {
        spec.data_label = label.clone();
    }
    let plan = device::plan_install(&args.device, &spec, args.force).map_err(DiskError::from)?;
    if args.dry_run || !args.yes || ctx.verbosity >= 0 {
        println!("{plan}");
    }
    if args.dry_run {
        return Ok(());
    }
    if !args.yes {
        confirm(&args.device)?;
    }
    let report = device::execute_install(&plan, progress).map_err(DiskError::from)?;
    let nodes: Vec<String> = report
        .partition_nodes
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    ctx.say(format!(
        "installed: {} bytes written, {} regions verified, partitions {}",
        report.bytes_written,
        report.verified_regions,
        nodes.join(" ")
    ));
    Ok(())
}

/// `hiperiso-build inspect`.
pub fn inspect(_ctx: &Context, args: &InspectArgs) -> crate::commands::Result<()> {
    let found = inspect::inspect_path(&args.target).map_err(DiskError::from)?;
    print!("{found}");
    Ok(())
}
