//! The stick's ESP payload for end-to-end tests: exactly what
//! `hiperiso-build --profile debian image` puts on the ESP (Debian's kernel,
//! QEMU, OVMF, SeaBIOS and GRUB from pinned packages, the static runtime),
//! except that the lock is resolved afresh into a scratch file, keeping
//! the committed versions still on the mirror: a Debian point release must
//! not turn CI red. The committed lock stays the reproducibility record.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use hiperiso_build::cli::TableArg;
use hiperiso_build::debian::closure::{self, LockMode};
use hiperiso_build::payload::cached::{self, StepsInfo};
use hiperiso_build::payload::esp::Payload;
use hiperiso_build::payload::from_packages;
use hiperiso_build::project::Project;
use hiperiso_build::settings::Settings;
use hiperiso_stick::qemu::{Accel, Chardev, Firmware, Machine, QemuCommand};

use crate::workspace_root;

/// The cargo target directory of this workspace.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

fn debian_project() -> Result<Project> {
    let mut settings = Settings::new(workspace_root().join("hiperiso.toml"));
    settings.profile = Some("debian".into());
    Project::load(settings).context("loading the manifest")
}

fn scratch_lock() -> PathBuf {
    target_dir().join("hiperiso-e2e.lock")
}

/// The debian profile's unpacked package tree (the root the ESP is made
/// from), through the same scratch lock and cache as [`build_esp`].
pub fn package_tree() -> Result<PathBuf> {
    let project = debian_project()?;
    let prepared = closure::prepare(&project, LockMode::Scratch(&scratch_lock()))
        .context("unpacking the debian profile's packages")?;
    Ok(prepared.tree)
}

/// Writes the debian profile's ESP tree into `esp` (which must not exist).
/// Packages come through the default cache, shared with the other tests.
pub fn build_esp(esp: &Path) -> Result<Payload> {
    let project = debian_project()?;
    let scratch_lock = scratch_lock();
    let steps = BTreeMap::new();
    let info = StepsInfo {
        steps: &steps,
        tools: None,
    };
    let built = from_packages::build_esp(&project, LockMode::Scratch(&scratch_lock), info)
        .context("building the debian profile's ESP payload")?;
    cached::copy_esp(&built.esp, esp).context("copying the ESP out of the cache")?;
    Ok(built.payload)
}

/// The debian profile's ESP tree, built once per test process and shared
/// by the tests that only read it (bios_boot, secure_boot).
pub fn shared_esp() -> &'static Path {
    static ESP: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    &ESP.get_or_init(|| {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let esp = dir.path().join("esp");
        build_esp(&esp).expect("building the debian profile's ESP");
        (dir, esp)
    })
    .1
}

/// A 512 MiB stick image in `dir` (`hiperiso.img`) with the debian profile's
/// ESP, as `hiperiso-build image --esp-tree` writes it.
pub fn build_image(dir: &Path) -> Result<(PathBuf, Payload)> {
    let esp = dir.join("esp");
    let payload = build_esp(&esp)?;
    let image = dir.join("hiperiso.img");
    write_image(dir, &esp, &image, None, None)?;
    Ok((image, payload))
}

/// `hiperiso-build image --esp-tree ESP --size 512MiB [--table TABLE]
/// [--label LABEL] -o IMAGE` (the manifest's table and data-label when
/// None); `dir` holds the image step's cache.
pub fn write_image(
    dir: &Path,
    esp: &Path,
    image: &Path,
    table: Option<TableArg>,
    label: Option<&str>,
) -> Result<()> {
    let mut settings = Settings::new(workspace_root().join("hiperiso.toml"));
    settings.cache_dir = Some(dir.join("cache"));
    settings.verbosity = -1;
    hiperiso_build::commands::image::image(
        &settings,
        &hiperiso_build::cli::ImageArgs {
            output: image.to_path_buf(),
            table,
            size: Some("512MiB".into()),
            esp_tree: Some(esp.to_path_buf()),
            data_tree: None,
            label: label.map(str::to_string),
            push: None,
            shared: Default::default(),
        },
    )
    .context("hiperiso-build image")?;
    Ok(())
}

/// The outer VM both firmware tests boot a stick in (bios_boot,
/// secure_boot): q35 under TCG (`-cpu EPYC`, DESIGN §6), 1 GiB, std VGA,
/// the image as a USB stick on xHCI, the serial console into the file
/// `console`; SMM on for UEFI (OVMF's Secure Boot build needs it).
pub fn firmware_vm(firmware: &Firmware, image: &Path, console: &Path) -> QemuCommand {
    let machine = match firmware {
        Firmware::Uefi { .. } => Machine::q35().smm(true),
        Firmware::Bios { .. } => Machine::q35(),
    };
    let mut q = QemuCommand::new(hiperiso_build::vm::qemu_program());
    q.machine(&machine)
        .accel(Accel::Tcg)
        .cpu("EPYC", "")
        .memory_mb(1024)
        .nodefaults()
        .display_none()
        .vga("std")
        .no_reboot()
        .firmware(firmware)
        .usb_stick(image, false)
        .serial_chardev("console", &Chardev::File(console.to_path_buf()))
        .no_monitor();
    q
}

/// Puts a file named `name` under ISOs/ of the image's data partition (not
/// an ISO: the firmware tests stop before hiperiso-init looks) and makes it
/// the one-shot default.
pub fn add_placeholder_iso(image: &Path, name: &str) {
    let mut data = hiperiso_build::vm::StickImage::open(image).unwrap();
    let path = format!("ISOs/{name}");
    data.put_bytes(&path, b"not an ISO: init starts before it looks", 0)
        .unwrap();
    data.boot_once(name).unwrap();
}

/// Copies the directory tree `from` to `to`.
pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// Starts `qemu` with no stdio: what it shows goes where its chardevs say.
pub fn spawn_quiet(qemu: &QemuCommand) -> std::process::Child {
    qemu.command()
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("qemu-system-x86_64 (apt install qemu-system-x86)")
}

/// Runs `qemu` (its serial console going to the file `console`) until a
/// console line satisfies `done`, QEMU exits or `timeout` passes; returns
/// whether `done` was met and the console text.
pub fn console_until(
    qemu: &QemuCommand,
    console: &Path,
    timeout: Duration,
    done: impl Fn(&str) -> bool,
) -> (bool, String) {
    let started = Instant::now();
    let mut child = spawn_quiet(qemu);
    let read = || String::from_utf8_lossy(&std::fs::read(console).unwrap_or_default()).into_owned();
    let mut met = false;
    while started.elapsed() < timeout {
        met = read().lines().any(&done);
        if met || child.try_wait().ok().flatten().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let _ = child.kill();
    let _ = child.wait();
    let text = read();
    (met || text.lines().any(&done), text)
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
