//! The payload through the step cache (builder/src/payload/cached.rs):
//! `--profile debian image` with nothing changed builds nothing and writes
//! nothing; one changed input (hiperiso.json's defaults, an overlay file,
//! the manifest's kernel modules) rebuilds what depends on it, and only that.
//!
//! The project is a copy (manifest, overlays, and as its lock the one the
//! end-to-end tests resolve afresh) beside symlinks to the workspace's
//! crates, which the runtime step hashes. It shares the default cache with
//! the end-to-end tests, so the package tree, the runtime and the first
//! payload are built once for both.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use hiperiso_build::cli::ImageArgs;
use hiperiso_build::commands::image::{ImageReport, image};
use hiperiso_build::payload::cached::{ESP, INITRAMFS};
use hiperiso_build::payload::esp::KERNEL_MODULES;
use hiperiso_build::settings::Settings;
use hiperiso_build::sources::store::Store;
use hiperiso_build::steps::Outcome::{Built, Cached};
use hiperiso_build::steps::cache::Cache;
use hiperiso_installer::exfat::ExfatReader;
use hiperiso_installer::fat::FatReader;
use hiperiso_installer::inspect;
use hiperiso_installer::slice::Slice;
use hiperiso_tests::{stick, workspace_root};

const GRUB_CFG: &str = "EFI/BOOT/grub.cfg";
const INITRAMFS_FILE: &str = "EFI/hiperiso/initramfs.cpio.zst";
const CONFIG: &str = "hiperiso/hiperiso.json.example";

/// A project copy in `dir` whose lock is `lock`.
fn project(dir: &Path, lock: &Path) -> PathBuf {
    let root = workspace_root();
    let project = dir.join("project");
    fs::create_dir_all(&project).unwrap();
    fs::copy(root.join("hiperiso.toml"), project.join("hiperiso.toml")).unwrap();
    fs::copy(lock, project.join("hiperiso.lock")).unwrap();
    let status = Command::new("cp")
        .arg("-a")
        .arg(root.join("overlays"))
        .arg(&project)
        .status()
        .unwrap();
    assert!(status.success());
    for name in [
        "Cargo.toml",
        "Cargo.lock",
        "builder",
        "installer",
        "runtime",
        "stick",
        "tests",
    ] {
        symlink(root.join(name), project.join(name)).unwrap();
    }
    project
}

/// A file of the image's ESP (FAT) or data partition (exFAT).
fn read(image: &Path, esp: bool, path: &str) -> Vec<u8> {
    let found = inspect::inspect_path(image).unwrap();
    let part = found
        .partitions
        .iter()
        .map(|(part, _)| part)
        .find(|part| part.is_esp() == esp)
        .unwrap();
    let mut file = fs::File::open(image).unwrap();
    let slice = Slice::new(&mut file, part.offset, part.len);
    if esp {
        FatReader::open(slice).unwrap().read_file(path).unwrap()
    } else {
        let mut out = Vec::new();
        ExfatReader::open(slice)
            .unwrap()
            .read_file(path, &mut out)
            .unwrap();
        out
    }
}

/// A kernel module left out by the kernel-modules edit.
const DROPPED: &str = "uas";

/// Whether the zstd cpio `archive` holds the module `name` (`name.ko`,
/// compressed or not).
fn has_module(archive: &[u8], name: &str) -> bool {
    let cpio = zstd::decode_all(archive).unwrap();
    let needle = format!("/{name}.ko");
    cpio.windows(needle.len()).any(|w| w == needle.as_bytes())
}

fn append(path: &Path, text: &str) {
    let mut bytes = fs::read(path).unwrap_or_default();
    bytes.extend_from_slice(text.as_bytes());
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, bytes).unwrap();
}

#[test]
fn debian_payload_is_cached_and_rebuilt_only_where_changed() {
    let dir = tempfile::tempdir().unwrap();
    // The lock resolved afresh and the payload built (or found) through the
    // shared cache, as the end-to-end tests do.
    stick::build_esp(&dir.path().join("warm-esp")).unwrap();
    let lock = stick::target_dir().join("hiperiso-e2e.lock");
    let project = project(dir.path(), &lock);
    let overlays = project.join("overlays");
    let mut settings = Settings::new(project.join("hiperiso.toml"));
    settings.profile = Some("debian".into());
    settings.verbosity = -1;
    let output = dir.path().join("x.img");
    let args = ImageArgs {
        output: output.clone(),
        table: None,
        size: Some("256MiB".into()),
        esp_tree: None,
        data_tree: None,
        label: None,
        push: None,
        shared: Default::default(),
    };
    let run = |what: &str| -> ImageReport {
        let started = Instant::now();
        let report = image(&settings, &args).unwrap();
        eprintln!("{what}: {report:?} in {:.2?}", started.elapsed());
        report
    };
    let all_cached = [(INITRAMFS, Cached), (ESP, Cached)];
    // The edits below are unique to this run: the cache outlives it (a
    // machine that ran this test before holds the payloads of its edits).
    let nonce = dir
        .path()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();

    // The same inputs at another path: the payload the e2e build made.
    let first = run("first image");
    assert_eq!(first.payload, all_cached);
    assert!(first.written);
    let first_initramfs = read(&output, true, INITRAMFS_FILE);
    let first_grub = read(&output, true, GRUB_CFG);

    // Nothing changed: nothing built, nothing written.
    let noop = run("no-op");
    assert_eq!(noop.payload, all_cached);
    assert!(!noop.written);
    assert_eq!(noop.sha256, first.sha256);

    // hiperiso.json's defaults: only the data partition changes.
    let config = overlays.join("data").join(CONFIG);
    let original_config = fs::read(&config).unwrap();
    append(&config, "\n");
    let report = run("hiperiso.json.example changed");
    assert_eq!(report.payload, all_cached);
    assert!(report.written);
    assert_ne!(report.sha256, first.sha256);
    assert_eq!(read(&output, false, CONFIG), fs::read(&config).unwrap());

    // overlays/esp: the ESP is rebuilt around the cached initramfs.
    let grub = overlays.join("esp").join(GRUB_CFG);
    let original_grub = fs::read(&grub).unwrap();
    append(&grub, &format!("# payload cache test {nonce}\n"));
    let report = run("grub.cfg changed");
    assert_eq!(report.payload, [(INITRAMFS, Cached), (ESP, Built)]);
    assert_eq!(read(&output, true, GRUB_CFG), fs::read(&grub).unwrap());
    assert_eq!(read(&output, true, INITRAMFS_FILE), first_initramfs);

    // overlays/initramfs: a second archive after the cached initramfs,
    // in the same file; only the ESP is rebuilt.
    let marker = overlays.join("initramfs/etc/hiperiso/payload-cache-test");
    append(&marker, &format!("marker {nonce}\n"));
    let report = run("initramfs overlay added");
    assert_eq!(report.payload, [(INITRAMFS, Cached), (ESP, Built)]);
    let initramfs = read(&output, true, INITRAMFS_FILE);
    let overlay = initramfs
        .strip_prefix(&first_initramfs[..])
        .expect("the cached initramfs comes first, unchanged");
    let overlay = String::from_utf8_lossy(&zstd::decode_all(overlay).unwrap()).into_owned();
    assert!(overlay.starts_with("070701"), "a cpio archive");
    assert!(overlay.contains("etc/hiperiso/payload-cache-test"));
    assert!(overlay.contains(&format!("marker {nonce}\n")));
    assert!(overlay.contains("TRAILER!!!"));

    // The manifest's kernel-modules, an input of the initramfs: both
    // derivations are rebuilt and the archive follows the edit.
    let manifest = project.join("hiperiso.toml");
    let original_manifest = fs::read_to_string(&manifest).unwrap();
    assert!(
        has_module(&first_initramfs, DROPPED),
        "{DROPPED} is in the payload"
    );
    let modules: Vec<_> = KERNEL_MODULES.iter().filter(|m| **m != DROPPED).collect();
    let edited = original_manifest.replacen(
        "[debian]\n",
        &format!("[debian]\nkernel-modules = {modules:?}\n"),
        1,
    );
    assert_ne!(
        edited, original_manifest,
        "the manifest has a [debian] table"
    );
    fs::write(&manifest, edited).unwrap();
    let store = Store::open_default(None).unwrap();
    let cache = Cache::new(store.root());
    let before: Vec<_> = cache.records().into_iter().map(|r| r.key).collect();
    let report = run("kernel-modules changed");
    // This variant's records are removed again, so that a machine that runs
    // this test again rebuilds it (the derivations are keyed by the list).
    for record in cache.records() {
        if [INITRAMFS, ESP].contains(&record.step.as_str()) && !before.contains(&record.key) {
            fs::remove_file(cache.record_path(&record.key)).unwrap();
        }
    }
    assert_eq!(report.payload, [(INITRAMFS, Built), (ESP, Built)]);
    let initramfs = read(&output, true, INITRAMFS_FILE);
    assert_ne!(initramfs, first_initramfs);
    assert!(!has_module(&initramfs, DROPPED), "{DROPPED} was dropped");
    assert!(has_module(&initramfs, "sd_mod"));

    // Everything put back: the first payload from the cache, the same image.
    fs::write(&manifest, original_manifest).unwrap();
    fs::remove_dir_all(overlays.join("initramfs")).unwrap();
    fs::write(&grub, original_grub).unwrap();
    fs::write(&config, original_config).unwrap();
    let report = run("all put back");
    assert_eq!(report.payload, all_cached);
    assert!(report.written);
    assert_eq!(report.sha256, first.sha256);
    assert_eq!(read(&output, true, GRUB_CFG), first_grub);
}
