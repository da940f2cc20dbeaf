//! The payload through the step cache. The initramfs and the ESP tree are
//! cached derivations: keyed by everything they are made of and stored like
//! a step's output (`steps/<key>.json`, `trees/<tree>/`, see steps/mod.rs),
//! so a no-op `image` computes two keys and finds both records.
//!
//! ```text
//! initramfs  content_id (package tree or step outputs, runtime), kernel
//!            modules, compression, SOURCE_DATE_EPOCH
//! esp        content_id, the initramfs's output tree, GRUB modules,
//!            overlays/esp, overlays/initramfs, build.json's fields
//!            (manifest and lock hashes, steps, tools tree), SOURCE_DATE_EPOCH
//! ```
//!
//! Both keys hash hiperiso's version and [`ASSEMBLY_VERSION`]. An edit of
//! overlays/esp or overlays/initramfs rebuilds the ESP around the cached
//! initramfs (the initramfs overlay is a second, small archive after it in
//! the same file); a new package tree rebuilds both.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use hiperiso_stick::io::io_err;

use crate::model::build_record;
use crate::payload::esp::{self, Payload, PayloadError, PayloadOptions};
use crate::sources::progress::{Activity, Progress};
use crate::sources::store::sha256_hex;
use crate::steps::cache::{Cache, remove_tree};
use crate::steps::tree::{self, Tree};
use crate::steps::{HIPERISO_VERSION, Outcome, StepError, StepRecord};

/// The derivations' names in step records and messages.
pub const INITRAMFS: &str = "payload-initramfs";
pub const ESP: &str = "payload-esp";

/// In an ESP derivation's output: the ESP tree and what was built.
const ESP_DIR: &str = "esp";
const PAYLOAD_JSON: &str = "payload.json";
/// In an initramfs derivation's output, beside the archive.
const MODULES: &str = "modules.order";

/// What build.json records of the steps the payload was made from.
#[derive(Debug, Clone, Copy)]
pub struct StepsInfo<'a> {
    /// Step name -> output tree hash.
    pub steps: &'a BTreeMap<String, String>,
    /// The tools tree's hash (None when no recipe step ran).
    pub tools: Option<&'a str>,
}

/// An ESP in the cache.
#[derive(Debug, Clone)]
pub struct CachedEsp {
    /// The ESP tree. It belongs to the cache: read it, never write to it.
    pub esp: PathBuf,
    /// Its derivation's output tree hash.
    pub tree: String,
    pub payload: Payload,
    /// How each derivation came to be, the initramfs first (it is not
    /// looked at when the ESP is cached).
    pub outcomes: Vec<(&'static str, Outcome)>,
}

/// The ESP for `options` and `steps`, from the cache or built into it.
pub fn esp(
    cache: &Cache,
    options: &PayloadOptions,
    steps: StepsInfo<'_>,
    progress: Progress,
) -> Result<CachedEsp, PayloadError> {
    let epoch = i64::from(options.source_date_epoch);
    let mut outcomes = Vec::new();
    let (initramfs_record, initramfs_path, outcome) = initramfs(cache, options, progress)?;
    outcomes.push((INITRAMFS, outcome));
    let mut info = options.build_info.clone();
    info.extend(build_record::step_fields(steps.steps, steps.tools));
    let key = key(
        ESP,
        serde_json::json!({
            "content": options.content_id,
            "initramfs": initramfs_record.tree,
            "grub_modules": options.grub_modules,
            "grub_image": options.grub_image.is_some(),
            "grub_bios": options.grub_bios.is_some(),
            "secure_boot_cert": secure_boot_cert(options)?,
            "extra_esp_files": options.extra_esp_files.iter().map(|(to, _)| to).collect::<Vec<_>>(),
            "overlay": overlay_manifest(options, "esp")?,
            "initramfs_overlay": overlay_manifest(options, "initramfs")?,
            "build_info": info,
            "epoch": epoch,
        }),
    );
    let (record, path, outcome) = derive(cache, ESP, &key, epoch, progress, |out| {
        let mut options = options.clone();
        options.build_info = info;
        let name = esp::initramfs_name(options.compression);
        let modules = fs::read_to_string(initramfs_path.join(MODULES))
            .map_err(io_err("read", &initramfs_path.join(MODULES)))?;
        let modules = modules.lines().map(str::to_string).collect();
        // With an overlay, the cached archive and the overlay's, joined
        // beside the ESP in the work directory (removed before the commit).
        let overlay = esp::overlay_initramfs(&options)?;
        let archive = match &overlay {
            None => initramfs_path.join(&name),
            Some(overlay) => {
                let joined = out.join(&name);
                fs::copy(initramfs_path.join(&name), &joined)
                    .and_then(|_| fs::OpenOptions::new().append(true).open(&joined))
                    .and_then(|mut file| file.write_all(overlay))
                    .map_err(io_err("write", &joined))?;
                joined
            }
        };
        let payload = esp::build(&options, &archive, modules, &out.join(ESP_DIR))?;
        if overlay.is_some() {
            fs::remove_file(&archive).map_err(io_err("remove", &archive))?;
        }
        let json = serde_json::to_vec_pretty(&payload).expect("payload serializes");
        let file = out.join(PAYLOAD_JSON);
        fs::write(&file, json).map_err(io_err("write", &file))?;
        Ok(())
    })?;
    outcomes.push((ESP, outcome));
    let file = path.join(PAYLOAD_JSON);
    let text = fs::read(&file).map_err(io_err("read", &file))?;
    let payload = serde_json::from_slice(&text).map_err(|e| {
        PayloadError::Missing(format!("{}: not a payload record: {e}", file.display()))
    })?;
    Ok(CachedEsp {
        esp: path.join(ESP_DIR),
        tree: record.tree,
        payload,
        outcomes,
    })
}

/// The sha256 of the `[secure-boot]` certificate (the key is the
/// certificate's; a new pair is a new certificate).
fn secure_boot_cert(options: &PayloadOptions) -> Result<Option<String>, PayloadError> {
    let Some(key) = &options.secure_boot else {
        return Ok(None);
    };
    let cert = fs::read(&key.cert).map_err(io_err("read", &key.cert))?;
    Ok(Some(sha256_hex(&cert)))
}

/// The initramfs derivation: the archive and its modules' load order.
fn initramfs(
    cache: &Cache,
    options: &PayloadOptions,
    progress: Progress,
) -> Result<(StepRecord, PathBuf, Outcome), PayloadError> {
    let epoch = i64::from(options.source_date_epoch);
    let key = key(
        INITRAMFS,
        serde_json::json!({
            "content": options.content_id,
            "kernel_modules": options.kernel_modules,
            "compression": options.compression.settings(),
            "epoch": epoch,
        }),
    );
    derive(cache, INITRAMFS, &key, epoch, progress, |out| {
        let archive = out.join(esp::initramfs_name(options.compression));
        let modules = esp::build_initramfs(options, &archive)?;
        let list: String = modules.iter().map(|m| format!("{m}\n")).collect();
        let file = out.join(MODULES);
        fs::write(&file, list).map_err(io_err("write", &file))?;
        Ok(())
    })
}

/// Bumped when the assembly code (esp.rs, initramfs.rs, cpio.rs) changes
/// what it makes from the same inputs, so cached payloads are not reused.
const ASSEMBLY_VERSION: u32 = 3;

fn key(name: &str, inputs: serde_json::Value) -> String {
    let value = serde_json::json!({
        "derivation": name,
        "hiperiso": HIPERISO_VERSION,
        "assembly": ASSEMBLY_VERSION,
        "inputs": inputs,
    });
    sha256_hex(value.to_string().as_bytes())
}

/// The manifest of `overlays/<sub>` (empty when there is none).
fn overlay_manifest(options: &PayloadOptions, sub: &str) -> Result<String, PayloadError> {
    match options.overlays.as_ref().map(|o| o.join(sub)) {
        Some(dir) if dir.is_dir() => Ok(Tree::scan(&dir).map_err(StepError::from)?.manifest()),
        _ => Ok(String::new()),
    }
}

/// The output of `key` from the cache, else `build` into a work directory,
/// normalized and committed (the record last, as for a step).
fn derive(
    cache: &Cache,
    name: &'static str,
    key: &str,
    epoch: i64,
    progress: Progress,
    build: impl FnOnce(&Path) -> Result<(), PayloadError>,
) -> Result<(StepRecord, PathBuf, Outcome), PayloadError> {
    let cached = |record: StepRecord| {
        let path = cache.tree_path(&record.tree);
        (record, path, Outcome::Cached)
    };
    if let Some(record) = cache.record(key) {
        return Ok(cached(record));
    }
    let _lock = cache.lock(key)?;
    if let Some(record) = cache.record(key) {
        return Ok(cached(record));
    }
    let started = Instant::now();
    let work = cache
        .dir("work")?
        .join(format!("{name}-{key}.{}", std::process::id()));
    remove_tree(&work)?;
    let out = work.join("out");
    fs::create_dir_all(&out).map_err(io_err("create", &out))?;
    let activity = Activity::start(progress, format!("building {name}"));
    let result = build(&out).and_then(|()| {
        let tree = tree::normalize(&out, epoch).map_err(StepError::from)?;
        let record = StepRecord {
            step: name.to_string(),
            key: key.to_string(),
            tree: tree.hash(),
            inputs: key.to_string(),
            upstream: BTreeMap::new(),
            seconds: started.elapsed().as_secs_f64(),
        };
        let path = cache.commit(&out, &tree, &record)?;
        Ok((record, path, Outcome::Built))
    });
    let _ = remove_tree(&work);
    if result.is_ok() {
        activity.finish();
    }
    result
}

/// Copies a cached ESP tree into `to` (which must not exist), for callers
/// that want a tree of their own.
pub fn copy_esp(esp: &Path, to: &Path) -> Result<(), PayloadError> {
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(esp)
        .arg(to)
        .status()
        .map_err(io_err("run cp for", to))?;
    if !status.success() {
        return Err(PayloadError::Missing(format!(
            "cp -a {} {} failed ({status})",
            esp.display(),
            to.display()
        )));
    }
    Ok(())
}
