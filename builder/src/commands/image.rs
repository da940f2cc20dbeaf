//! `hiperiso-build image`: the profile's steps, built, its ESP payload
//! and the data tree, written into a disk image by `hiperiso-installer`.

use std::path::Path;

use hiperiso_installer::image::{self, ImageSpec};
use hiperiso_installer::layout::TableKind;
use hiperiso_stick::paths::esp::BUILD_JSON;

use crate::cli::{ImageArgs, TableArg};
use crate::commands::artifact;
use crate::commands::error::{DiskError, Error, Result};
use crate::debian::closure::LockMode;
use crate::model::build_record;
use crate::model::manifest::{ByteSize, Manifest, PartitionTable, PayloadFrom};
use crate::payload::base::EspError;
use crate::payload::cached::{CachedEsp, StepsInfo};
use crate::payload::trees::{self, EspSource, PayloadTrees};
use crate::payload::{from_packages, from_steps};
use crate::project::Project;
use crate::settings::Settings;
use crate::steps::Outcome;
use crate::steps::profile::{BuiltSteps, build_profile_steps};
use crate::vm::record_last_image;

pub(crate) fn table_kind(arg: Option<TableArg>, manifest: &Manifest) -> TableKind {
    match arg {
        Some(TableArg::Gpt) => TableKind::Gpt,
        Some(TableArg::Mbr) => TableKind::Mbr,
        None => match manifest.image.table {
            PartitionTable::Gpt => TableKind::Gpt,
            PartitionTable::Mbr => TableKind::Mbr,
        },
    }
}

/// The image's layout; `label` (`--label`) replaces the manifest's data-label.
pub(crate) fn image_spec(
    manifest: &Manifest,
    table: TableKind,
    size: u64,
    trees: &PayloadTrees,
    label: Option<&str>,
) -> ImageSpec {
    ImageSpec {
        table,
        size,
        seed: manifest.image.seed.clone(),
        data_label: label.unwrap_or(&manifest.image.data_label).to_string(),
        esp_label: manifest.image.esp_label.clone(),
        source_date_epoch: manifest.image.source_date_epoch,
        esp_tree: trees.esp.clone(),
        data_tree: trees.data.clone(),
        esp_size: None,
    }
}

/// The profile's steps, built, and the ESP payload made from them or from
/// its packages, through the cache; an explicit `--esp-tree` replaces both.
pub(crate) fn payload(
    project: &Project,
    esp_tree: Option<&Path>,
) -> Result<(BuiltSteps, Option<CachedEsp>)> {
    if esp_tree.is_some() {
        return Ok((BuiltSteps::default(), None));
    }
    let steps = build_profile_steps(project)?;
    let built = esp_for_image(project, &steps)?;
    Ok((steps, built))
}

/// The payload (built, unless `esp_tree` replaces it) and the trees the
/// image or device gets: the ESP from the payload or `esp_tree`, the data
/// partition from `data_tree` or `overlays/data`.
pub(crate) fn staged_trees(
    project: &Project,
    esp_tree: Option<&Path>,
    data_tree: Option<&Path>,
) -> Result<(Option<CachedEsp>, PayloadTrees)> {
    let (steps, built) = payload(project, esp_tree)?;
    let esp = match &built {
        Some(built) => EspSource::Cached {
            esp: &built.esp,
            tree: &built.tree,
        },
        None => EspSource::Dir(esp_tree),
    };
    let info = StepsInfo {
        steps: &steps.trees,
        tools: steps.tools.as_deref(),
    };
    let trees = PayloadTrees::stage(project, esp, data_tree, info)?;
    Ok((built, trees))
}

/// The active profile's ESP payload (None when the profile has no
/// `payload`), from its built `steps` or its locked packages.
fn esp_for_image(project: &Project, steps: &BuiltSteps) -> Result<Option<CachedEsp>, EspError> {
    let (name, profile) = project.profile().map_err(EspError::Profile)?;
    let Some(from) = profile.payload else {
        return Ok(None);
    };
    let info = StepsInfo {
        steps: &steps.trees,
        tools: steps.tools.as_deref(),
    };
    let built = match from {
        PayloadFrom::Packages => from_packages::build_esp(project, LockMode::Committed, info)?,
        PayloadFrom::Steps => from_steps::build_esp(project, name, steps)?,
    };
    let settings = &project.settings;
    for (derivation, outcome) in &built.outcomes {
        if settings.verbosity > 0 {
            settings.say(format!("{derivation}: {}", outcome_word(*outcome)));
        }
    }
    let payload = &built.payload;
    settings.say(format!(
        "{name} payload: kernel {}, {} ESP files, {} bytes, {} kernel modules",
        payload.kernel_version,
        payload.files.len(),
        payload.total_size(),
        payload.modules.len()
    ));
    Ok(Some(built))
}

fn outcome_word(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Built => "built",
        Outcome::Cached => "cached",
        Outcome::Pulled => "pulled",
    }
}

/// What `image` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageReport {
    /// The payload's derivations (payload/cached.rs) and how each came to
    /// be; empty with `--esp-tree` or a profile without a payload.
    pub payload: Vec<(&'static str, Outcome)>,
    /// False when the image was up to date and nothing was written.
    pub written: bool,
    pub sha256: String,
}

/// `hiperiso-build image [--push OCI_REF]`.
pub fn image(settings: &Settings, args: &ImageArgs) -> Result<ImageReport> {
    if args.push.is_some() && settings.offline {
        return Err(Error::Usage(
            "--push needs a registry, and --offline never asks one".into(),
        ));
    }
    let report = write(settings, args)?;
    if let Some(url) = &args.push {
        let activity = settings.activity(format!("pushing {} to {url}", args.output.display()));
        let (sha256, layer) = artifact::push(&args.output, url)?;
        activity.finish();
        settings.say(format!(
            "pushed {} to {url}: image sha256 {sha256}, a {layer}-byte layer",
            args.output.display()
        ));
    }
    Ok(report)
}

/// Writes the image, unless it is up to date.
fn write(settings: &Settings, args: &ImageArgs) -> Result<ImageReport> {
    let mut settings = settings.clone();
    settings.shared = (&args.shared).into();
    let settings = &settings;
    let project = Project::load(settings.clone())?;
    let manifest = &project.manifest;
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
    let (built, trees) = staged_trees(
        &project,
        args.esp_tree.as_deref(),
        args.data_tree.as_deref(),
    )?;
    let mut report = ImageReport {
        payload: built.map(|b| b.outcomes).unwrap_or_default(),
        written: false,
        sha256: String::new(),
    };
    let spec = image_spec(
        manifest,
        table_kind(args.table, manifest),
        size,
        &trees,
        args.label.as_deref(),
    );
    let image_settings = format!(
        "{} {} {} {:?} {:?} {}",
        spec.table, spec.size, spec.seed, spec.data_label, spec.esp_label, spec.source_date_epoch
    );
    let key = trees::image_key(&image_settings, &trees.esp_id, &trees.data)?;
    let cache = project.store()?.root().to_path_buf();
    if let Some(state) = build_record::ImageState::up_to_date(&cache, &args.output, &key) {
        settings.say(format!(
            "{} is up to date (image sha256 {})",
            args.output.display(),
            state.sha256
        ));
        record_last_image(&cache, &args.output)?;
        report.sha256 = state.sha256;
        return Ok(report);
    }
    let activity = settings.activity(format!("writing {}", args.output.display()));
    let (summary, image_sha256) = image::write_image_then(&spec, &args.output, |temp, summary| {
        let esp = &summary.layout.esp;
        Ok(build_record::seal_image(temp, (esp.offset, esp.end()))?)
    })
    .map_err(DiskError::from)?;
    let layout = &summary.layout;
    activity.finish();
    build_record::ImageState::of(&args.output, &key, &image_sha256)?.save(&cache, &args.output)?;
    settings.say(format!(
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
    settings.say(format!(
        "image sha256 {image_sha256} (recorded in {} as `{}`)",
        BUILD_JSON,
        build_record::IMAGE_SHA256
    ));
    // `hiperiso-build run` boots this image when given none.
    record_last_image(&cache, &args.output)?;
    report.written = true;
    report.sha256 = image_sha256;
    Ok(report)
}
