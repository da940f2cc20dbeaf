//! `hiperiso-build install [--update] DEVICE`: the image's trees written
//! to a device (or only its ESP updated), after a typed confirmation.

use std::io::{self, BufRead, Write};
use std::path::Path;

use hiperiso_installer::device::{self, InstallProgress};

use crate::cli::InstallArgs;
use crate::commands::artifact;
use crate::commands::error::DiskError;
use crate::commands::error::{Error, Result};
use crate::commands::image::{image_spec, staged_trees, table_kind};
use crate::project::Project;
use crate::settings::Settings;
use crate::sources::progress::{Counter, human_bytes};

/// Asks the user to type the device's name (or path).
fn confirm(device: &Path) -> Result<()> {
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
        .map_err(DiskError::Confirm)?;
    let answer = answer.trim();
    if answer == name || Path::new(answer) == device {
        Ok(())
    } else {
        Err(DiskError::NotConfirmed(device.to_path_buf()).into())
    }
}

/// Prints the plan (always for `--dry-run` and before asking), and asks for
/// the typed confirmation unless `--yes`. False: `--dry-run`, stop here.
fn show_and_confirm(
    plan: &impl std::fmt::Display,
    args: &InstallArgs,
    settings: &Settings,
) -> Result<bool> {
    if args.dry_run || !args.yes || settings.verbosity >= 0 {
        println!("{plan}");
    }
    if args.dry_run {
        return Ok(false);
    }
    if !args.yes {
        confirm(&args.device)?;
    }
    Ok(true)
}

/// `--label`: the data partition's exFAT label, refused (never cut) when
/// exFAT cannot store it.
fn check_label(label: &str) -> Result<()> {
    let problem = match hiperiso_installer::exfat::encode_label(label) {
        _ if label.is_empty() => "it is empty".to_string(),
        Ok(_) => return Ok(()),
        Err(e) => e.to_string(),
    };
    Err(Error::Usage(format!("--label {label:?}: {problem}")))
}

/// `hiperiso-build install --image FILE|OCI_REF`: refusals, then the image
/// (pulled into a temporary file) and its hash, then the writes.
fn install_image(settings: &Settings, args: &InstallArgs, image: &str) -> Result<()> {
    device::check_install(&args.device, args.force, args.reinstall).map_err(DiskError::from)?;
    let pulled;
    let (path, sealed) = if artifact::is_reference(image) {
        if settings.offline {
            return Err(Error::Usage(format!(
                "--image {image} needs a registry, and --offline never asks one"
            )));
        }
        let activity = settings.activity(format!("pulling {image}"));
        let (file, sealed) = artifact::pull(image)?;
        activity.finish();
        pulled = file;
        (pulled.path().to_path_buf(), sealed)
    } else {
        let activity = settings.activity(format!("checking {image}"));
        let sealed = artifact::verify(Path::new(image), image)?;
        activity.finish();
        (Path::new(image).to_path_buf(), sealed)
    };
    settings.say(format!("{image}: image sha256 {} verified", sealed.sha256));
    let plan = device::plan_image_install(&args.device, &path, args.force, args.reinstall)
        .map_err(DiskError::from)?;
    if !show_and_confirm(&plan, args, settings)? {
        return Ok(());
    }
    let report = device::execute_image_install(&plan, install_progress(settings))
        .map_err(DiskError::from)?;
    say_installed(settings, &report);
    Ok(())
}

/// The installer's steps as lines, and a byte counter (bar or periodic
/// lines, none with `-q`) for each step that writes or reads back.
fn install_progress(settings: &Settings) -> impl FnMut(InstallProgress) + '_ {
    let mut counter: Option<Counter> = None;
    move |event| match event {
        InstallProgress::Step { what, bytes } => {
            if let Some(done) = counter.take() {
                done.finish();
            }
            if bytes == 0 {
                settings.say(what);
            } else {
                settings.say(format!("{what} ({})", human_bytes(bytes)));
                counter = Some(Counter::start(settings.progress(), what, bytes));
            }
        }
        InstallProgress::Bytes(n) => {
            if let Some(counter) = &counter {
                counter.inc(n);
            }
        }
    }
}

fn say_installed(settings: &Settings, report: &device::InstallReport) {
    let nodes: Vec<String> = report
        .partition_nodes
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    settings.say(format!(
        "installed: {} bytes written, {} regions verified, partitions {}",
        report.bytes_written,
        report.verified_regions,
        nodes.join(" ")
    ));
}

/// `hiperiso-build install [--update | --image FILE|OCI_REF]`.
pub fn install(settings: &Settings, args: &InstallArgs) -> Result<()> {
    if let Some(image) = &args.image {
        return install_image(settings, args, image);
    }
    // Refusals first: staging the payload takes a while.
    if let Some(label) = &args.label {
        check_label(label)?;
    }
    if args.update {
        device::check_update(&args.device, args.force).map_err(DiskError::from)?;
    } else {
        device::check_install(&args.device, args.force, args.reinstall).map_err(DiskError::from)?;
    }
    let project = Project::load(settings.clone())?;
    let manifest = &project.manifest;
    let (_built, trees) = staged_trees(
        &project,
        args.esp_tree.as_deref(),
        args.data_tree.as_deref(),
    )?;
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
        if !show_and_confirm(&plan, args, settings)? {
            return Ok(());
        }
        device::execute_update(&plan, |step| settings.say(step)).map_err(DiskError::from)?;
        settings.say(format!(
            "updated the ESP on {}; the data partition was not touched",
            args.device.display()
        ));
        return Ok(());
    }
    let table = if args.gpt {
        Some(crate::cli::TableArg::Gpt)
    } else {
        args.table
    };
    let spec = image_spec(
        manifest,
        table_kind(table, manifest),
        0,
        &trees,
        args.label.as_deref(),
    );
    let plan = device::plan_install(&args.device, &spec, args.force, args.reinstall)
        .map_err(DiskError::from)?;
    if !show_and_confirm(&plan, args, settings)? {
        return Ok(());
    }
    let report =
        device::execute_install(&plan, install_progress(settings)).map_err(DiskError::from)?;
    say_installed(settings, &report);
    Ok(())
}
