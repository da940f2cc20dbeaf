//! End to end (DESIGN.md §6): a stick image is built once, then booted in
//! QEMU with OVMF, plugged in as a USB stick on xHCI. GRUB boots a test ISO,
//! the stick's kernel runs hiperiso-init, which runs the ISO in the inner
//! QEMU, and the VM powers off; the test then reads the session back from
//! the image (no mount) and checks it, and `fsck.exfat` checks the data
//! partition.
//!
//! The outer VM runs under TCG with `-cpu EPYC`, so the stick's kernel gets
//! SVM and the inner QEMU uses real (nested) KVM. One test turns SVM off to
//! cover the TCG fallback. VM runs are serialized: the machine has 2 cores.

use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use hiperiso_build::settings::Settings;
use hiperiso_build::vm::{
    self as run, Accel, AccelChoice, Console, RunOptions, StickImage, Vm, read_session_file,
    session_ids, session_report,
};
use hiperiso_installer::exfat::ExfatReader;
use hiperiso_installer::fat::FatReader;
use hiperiso_installer::inspect;
use hiperiso_installer::slice::Slice;
use hiperiso_runtime::analyze::{self, BootResult};
use hiperiso_runtime::patterns::Domain;
use hiperiso_runtime::session_list::Logs;
use hiperiso_stick::paths::esp::BUILD_JSON;
use hiperiso_stick::session::{FailureKind, Outcome, SessionInfo};
use hiperiso_tests::{isos, outer_qemu, stick, workspace_root};

/// One outer VM boot may take this long (TCG: OVMF, GRUB, the stick's
/// kernel and initramfs, then the inner guest).
const BOOT_TIMEOUT: Duration = Duration::from_secs(600);
/// Room for the inner guest's default 2 GiB when hiperiso.json is broken.
const OUTER_RAM_MB: u64 = 3072;
const BIOS_MARKER: &str = "E2E-MARKER-BIOS";
const UEFI_MARKER: &str = "E2E-MARKER-UEFI";
/// Small inner guests keep the outer VM's memory small.
pub(crate) const CONFIG: &str = r#"{
  "control": {"default_ram": 256, "screenshot_interval": 2, "session_timeout": 240}
}"#;

static VM_LOCK: Mutex<()> = Mutex::new(());

fn vm_lock() -> MutexGuard<'static, ()> {
    VM_LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

struct Base {
    _dir: tempfile::TempDir,
    image: PathBuf,
    isos: PathBuf,
    /// The image's payload has swtpm (guests can get a TPM).
    swtpm: bool,
}

/// The environment variable naming a ready stick image to test instead of
/// the debian profile's built here (tests/full-build.sh passes the image
/// built from source).
const IMAGE_ENV: &str = "HIPERISO_E2E_IMAGE";

/// The stick image (built once, or `$HIPERISO_E2E_IMAGE`) and the test ISOs.
fn base() -> &'static Base {
    static BASE: OnceLock<Base> = OnceLock::new();
    BASE.get_or_init(|| {
        let started = Instant::now();
        let dir = tempfile::tempdir().unwrap();
        let image = match std::env::var_os(IMAGE_ENV).filter(|v| !v.is_empty()) {
            Some(given) => {
                let image = dir.path().join("hiperiso.img");
                run::working_copy(Path::new(&given), &image).unwrap();
                image
            }
            None => {
                stick::build_image(dir.path())
                    .expect("building the stick image")
                    .0
            }
        };
        let build = esp_build_json(&image);
        eprintln!(
            "e2e: {} profile image, kernel {}",
            build["profile"], build["kernel"]
        );
        let iso_dir = dir.path().join("isos");
        fs::create_dir_all(&iso_dir).unwrap();
        isos::bios_iso(&iso_dir, "bios", BIOS_MARKER).unwrap();
        isos::uefi_iso(&iso_dir, "uefi", UEFI_MARKER).unwrap();
        isos::failing_bios_iso(&iso_dir, "broken-loader").unwrap();
        isos::boot_sector_iso(&iso_dir, "hang", "HANG-GUEST", isos::After::Hang).unwrap();
        eprintln!(
            "e2e: stick image and test ISOs ready in {:.0?}",
            started.elapsed()
        );
        Base {
            _dir: dir,
            image,
            isos: iso_dir,
            swtpm: build["packages"].get("swtpm").is_some(),
        }
    })
}

/// The ESP's EFI/hiperiso/build.json of `image`.
fn esp_build_json(image: &Path) -> serde_json::Value {
    let found = inspect::inspect_path(image).unwrap();
    let esp = found
        .partitions
        .iter()
        .map(|(part, _)| part)
        .find(|part| part.is_esp())
        .expect("an ESP");
    let mut file = File::open(image).unwrap();
    let mut fat = FatReader::open(Slice::new(&mut file, esp.offset, esp.len)).unwrap();
    serde_json::from_slice(&fat.read_file(BUILD_JSON).unwrap()).unwrap()
}

/// A scratch copy of the base image holding `isos` and `config`.
pub(crate) fn stick_with(dir: &Path, isos: &[&str], config: &str) -> PathBuf {
    let base = base();
    let image = dir.join("stick.img");
    run::working_copy(&base.image, &image).unwrap();
    let isos: Vec<PathBuf> = isos.iter().map(|name| base.isos.join(name)).collect();
    load_stick(&image, &isos, config);
    image
}

/// Puts `isos` under ISOs/ of the stick `image` and `config` as its
/// hiperiso.json.
pub(crate) fn load_stick(image: &Path, isos: &[PathBuf], config: &str) {
    let mut stick = StickImage::open(image).unwrap();
    for iso in isos {
        stick.add_iso(iso).unwrap();
    }
    stick
        .put_bytes("hiperiso/hiperiso.json", config.as_bytes(), 0)
        .unwrap();
}

pub(crate) fn set_boot(image: &Path, name: &str) {
    StickImage::open(image).unwrap().boot_once(name).unwrap();
}

/// The outer VM for `image`, its console logged to `dir/console-N.log`.
fn vm(dir: &Path, image: &Path, cpu: &str, qmp: bool) -> Vm {
    let (code, vars) = run::find_ovmf().unwrap();
    let count = fs::read_dir(dir).unwrap().count();
    let ovmf_vars = dir.join(format!("vars-{count}.fd"));
    fs::copy(vars, &ovmf_vars).unwrap();
    Vm {
        qemu: run::qemu_program(),
        image: image.to_path_buf(),
        ram_mb: OUTER_RAM_MB,
        // One vCPU, as `run` uses under TCG.
        cpus: 1,
        accel: Accel::Tcg { cpu: cpu.into() },
        console: Console::File {
            log: dir.join(format!("console-{count}.log")),
        },
        ovmf_code: code,
        ovmf_vars,
        qmp: qmp.then(|| dir.join("qmp.sock")),
        snapshot: false,
    }
}

fn console_text(vm: &Vm) -> String {
    String::from_utf8_lossy(&fs::read(vm.console.log()).unwrap_or_default()).into_owned()
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Starts the outer VM with QEMU's stderr logged next to the console.
fn spawn_logged(vm: &Vm) -> (std::process::Child, PathBuf) {
    let stderr = vm.console.log().with_extension("stderr");
    let mut command = vm.command();
    command
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(File::create(&stderr).unwrap());
    (command.spawn().expect("qemu-system-x86_64"), stderr)
}

/// Boots until the VM powers off; returns the console output.
fn boot_to_poweroff(vm: &Vm) -> String {
    let _guard = vm_lock();
    let started = Instant::now();
    let (mut child, stderr) = spawn_logged(vm);
    let status = run::wait_with_timeout(&mut child, BOOT_TIMEOUT).unwrap();
    let console = console_text(vm);
    let status = status.unwrap_or_else(|| {
        panic!(
            "the VM did not power off within {BOOT_TIMEOUT:?}; console:\n{}",
            tail(&console, 60)
        )
    });
    let errors = fs::read_to_string(&stderr).unwrap_or_default();
    assert!(
        status.success(),
        "QEMU: {status}\n{errors}\n{}",
        tail(&console, 60)
    );
    eprintln!("e2e: outer VM ran {:.0?}", started.elapsed());
    console
}

/// The only session added since `before`.
pub(crate) fn new_session(image: &Path, before: &[String], console: &str) -> String {
    let after = session_ids(image).unwrap();
    let new: Vec<&String> = after.iter().filter(|id| !before.contains(id)).collect();
    assert_eq!(
        new.len(),
        1,
        "sessions {after:?}; console:\n{}",
        tail(console, 60)
    );
    new[0].clone()
}

fn text(image: &Path, id: &str, name: &str) -> String {
    let bytes = read_session_file(image, id, name)
        .unwrap()
        .unwrap_or_else(|| panic!("{id}/{name} missing"));
    String::from_utf8_lossy(&bytes).into_owned()
}

fn info(image: &Path, id: &str) -> SessionInfo {
    serde_json::from_str(&text(image, id, "session.json")).expect("session.json parses")
}

/// fsck.exfat -n on the data partition, copied out of the image sparsely.
pub(crate) fn assert_data_partition_clean(image: &Path) {
    let mut file = File::open(image).unwrap();
    let size = file.seek(SeekFrom::End(0)).unwrap();
    let (_, parts) = hiperiso_installer::table::read_table(&mut file, size)
        .unwrap()
        .unwrap();
    let data = parts.into_iter().find(|p| p.is_data()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("data.img");
    let mut out = File::create(&copy).unwrap();
    let mut slice = Slice::new(file, data.offset, data.len);
    let mut buffer = vec![0u8; 1 << 20];
    let mut position = 0u64;
    while position < data.len {
        let count = (data.len - position).min(buffer.len() as u64) as usize;
        slice.read_exact(&mut buffer[..count]).unwrap();
        if buffer[..count].iter().any(|&b| b != 0) {
            out.seek(SeekFrom::Start(position)).unwrap();
            out.write_all(&buffer[..count]).unwrap();
        }
        position += count as u64;
    }
    out.set_len(data.len).unwrap();
    drop(out);
    let fsck = std::process::Command::new("fsck.exfat")
        .arg("-n")
        .arg(&copy)
        .output()
        .unwrap();
    assert!(
        fsck.status.success(),
        "fsck.exfat -n of the data partition: {}{}",
        String::from_utf8_lossy(&fsck.stdout),
        String::from_utf8_lossy(&fsck.stderr)
    );
}

/// A booted session: report, firmware, accelerator and the guest's marker.
pub(crate) fn assert_booted(image: &Path, id: &str, marker: &str, firmware: &str, accel: &str) {
    let report = session_report(image, id).unwrap();
    let serial = text(image, id, "serial.log");
    assert_eq!(
        report.result,
        BootResult::Booted,
        "{}\nqemu.cmdline: {}\nserial.log:\n{serial}",
        report.summary,
        text(image, id, "qemu.cmdline")
    );
    assert!(
        serial.contains(marker),
        "serial.log lacks {marker}:\n{serial}"
    );
    let info = info(image, id);
    assert_eq!(info.firmware.as_deref(), Some(firmware));
    assert_eq!(info.accel.as_deref(), Some(accel));
    assert_eq!(info.outcome, Outcome::Success);
    for name in ["status.json", "env.txt", "SESSION_COMPLETE", "qemu.cmdline"] {
        assert!(
            read_session_file(image, id, name).unwrap().is_some(),
            "{id}/{name} missing"
        );
    }
    crate::session_schema::check_session_files(|name| text(image, id, name), None);
    // The kernel's configuration: /proc/config.gz, or (Debian's kernel has
    // none) the one the debian profile's initramfs ships.
    let config = read_session_file(image, id, "hw/host_kernel_config.gz")
        .unwrap()
        .unwrap_or_else(|| panic!("{id}/hw/host_kernel_config.gz missing"));
    let config = hiperiso_tests::gunzip(&config);
    assert!(config.contains("\nCONFIG_KVM="), "{config}");
}

/// The user's path: `hiperiso-build run --iso bios.iso --boot bios.iso`,
/// kept on a scratch copy; then a hard power-off while a guest runs, and a
/// third boot. Earlier sessions stay intact, the new one completes, and
/// the data partition stays clean.
#[test]
fn run_boots_a_bios_iso_with_kvm_and_survives_a_power_loss() {
    let dir = tempfile::tempdir().unwrap();
    let image = stick_with(dir.path(), &["hang.iso"], CONFIG);
    let base = base();

    // 1. `run`, as a user would call it (console shown live).
    let outcome = {
        let _guard = vm_lock();
        let mut ctx = Settings::new(workspace_root().join("hiperiso.toml"));
        ctx.cache_dir = Some(dir.path().join("cache"));
        run::run(
            &ctx,
            None,
            &RunOptions {
                image: Some(image.clone()),
                isos: vec![base.isos.join("bios.iso")],
                boot: Some("bios.iso".into()),
                ram_mb: Some(OUTER_RAM_MB),
                timeout: Some(BOOT_TIMEOUT),
                keep: true,
                accel: AccelChoice::Auto,
            },
        )
        .expect("hiperiso-build run")
    };
    let first = outcome.session_id;
    assert!(first.starts_with("bios_"), "{first}");
    assert_booted(&image, &first, BIOS_MARKER, "bios", "kvm");
    let first_files: Vec<String> = ["session.json", "report.json", "serial.log"]
        .iter()
        .map(|name| text(&image, &first, name))
        .collect();
    assert_data_partition_clean(&image);

    // 2. Pull the plug while the inner guest runs.
    set_boot(&image, "hang.iso");
    let killed = vm(dir.path(), &image, "EPYC", false);
    {
        let _guard = vm_lock();
        let (mut child, _) = spawn_logged(&killed);
        let deadline = Instant::now() + BOOT_TIMEOUT;
        while !console_text(&killed).contains("guest running") {
            assert!(
                child.try_wait().unwrap().is_none(),
                "the VM stopped before the guest ran:\n{}",
                tail(&console_text(&killed), 60)
            );
            assert!(
                Instant::now() < deadline,
                "the guest never ran:\n{}",
                tail(&console_text(&killed), 60)
            );
            std::thread::sleep(Duration::from_millis(500));
        }
        // Let heartbeats and screenshots be written, then power off hard.
        std::thread::sleep(Duration::from_secs(5));
        child.kill().unwrap();
        child.wait().unwrap();
    }

    // 3. The next boot, its guest with a TPM (swtpm) and user-mode
    // networking dumped to network.pcap.
    set_boot(&image, "bios.iso");
    let config = r#"{
  "control": {"default_ram": 256, "screenshot_interval": 2, "session_timeout": 240},
  "iso_overrides": {"bios*.iso": {"tpm": true, "net": true, "net_dump": true}}
}"#;
    StickImage::open(&image)
        .unwrap()
        .put_bytes("hiperiso/hiperiso.json", config.as_bytes(), 0)
        .unwrap();
    let before = session_ids(&image).unwrap();
    let console = boot_to_poweroff(&vm(dir.path(), &image, "EPYC", false));
    let third = new_session(&image, &before, &console);
    assert_booted(&image, &third, BIOS_MARKER, "bios", "kvm");
    let third_info = info(&image, &third);
    assert!(third_info.net && third_info.net_dump, "{third_info:?}");
    // The from-source payload has no swtpm: the guest runs without a TPM,
    // and the session says why.
    assert_eq!(third_info.tpm, base.swtpm, "{third_info:?}");
    let qtree = text(&image, &third, "hw/qemu_qtree.txt");
    if base.swtpm {
        assert!(qtree.contains("tpm-tis"), "no TPM in the guest:\n{qtree}");
    } else {
        assert!(
            third_info.warnings.iter().any(|w| w.contains("swtpm")),
            "{third_info:?}"
        );
    }
    assert!(qtree.contains("e1000"), "no NIC in the guest:\n{qtree}");
    let pcap = read_session_file(&image, &third, "network.pcap")
        .unwrap()
        .expect("network.pcap");
    assert_eq!(
        pcap.get(..4),
        Some(&[0xd4, 0xc3, 0xb2, 0xa1][..]),
        "pcap magic"
    );

    // The first session is byte for byte what it was.
    for (name, before) in ["session.json", "report.json", "serial.log"]
        .iter()
        .zip(&first_files)
    {
        assert_eq!(
            &text(&image, &first, name),
            before,
            "{first}/{name} changed"
        );
    }
    // The interrupted session's directory is there and its JSON is whole.
    let mut file = File::open(&image).unwrap();
    let size = file.seek(SeekFrom::End(0)).unwrap();
    let (_, parts) = hiperiso_installer::table::read_table(&mut file, size)
        .unwrap()
        .unwrap();
    let data = parts.into_iter().find(|p| p.is_data()).unwrap();
    let mut reader = ExfatReader::open(Slice::new(file, data.offset, data.len)).unwrap();
    let hang: Vec<String> = reader
        .read_dir("hiperiso/logs")
        .unwrap()
        .into_iter()
        .filter(|e| e.is_dir && e.name.starts_with("hang_"))
        .map(|e| e.name)
        .collect();
    assert_eq!(hang.len(), 1, "{hang:?}");
    let interrupted = info(&image, &hang[0]);
    assert_eq!(interrupted.outcome, Outcome::Running);
    let status: serde_json::Value =
        serde_json::from_str(&text(&image, &hang[0], "status.json")).expect("status.json parses");
    assert!(status["stage"].is_string(), "{status}");
    // `hiperiso-log sessions IMG` lists it as interrupted with its last
    // stage, and `show` says so.
    let mut logs = Logs::open(&image).unwrap();
    let rows = logs.list().unwrap().sessions;
    let row = rows.iter().find(|row| row.id == hang[0]).expect("listed");
    assert!(row.interrupted && row.result == "interrupted", "{row:?}");
    assert_eq!(
        row.last_stage.as_deref(),
        status["stage"].as_str(),
        "{row:?}"
    );
    let shown = logs.show(&hang[0]).unwrap();
    assert!(shown.interrupted, "{shown:?}");
    assert!(
        analyze::render_text(&shown).contains("INTERRUPTED: the session never finished."),
        "{}",
        analyze::render_text(&shown)
    );
    assert_data_partition_clean(&image);
}

/// A UEFI-only ISO boots with OVMF, even though hiperiso.json is broken:
/// the defaults are used and the error is recorded.
#[test]
fn uefi_iso_boots_with_ovmf_despite_a_broken_config() {
    let dir = tempfile::tempdir().unwrap();
    let broken = "{\n  \"control\": {\n    \"default_ram\": 256,,\n  }\n}\n";
    let image = stick_with(dir.path(), &["uefi.iso"], broken);
    set_boot(&image, "uefi.iso");
    // Stock QEMU's TCG aborts when the nested OVMF writes CR8: see
    // tests/support/outer_qemu.rs.
    let mut outer = vm(dir.path(), &image, "EPYC", false);
    outer.qemu = outer_qemu::outer_qemu()
        .expect("building the outer VM's QEMU")
        .display()
        .to_string();
    let console = boot_to_poweroff(&outer);
    let id = new_session(&image, &[], &console);
    assert_booted(&image, &id, UEFI_MARKER, "uefi", "kvm");
    let info = info(&image, &id);
    let failure = info
        .failures
        .iter()
        .find(|f| f.kind == FailureKind::ConfigBroken)
        .unwrap_or_else(|| panic!("no config_broken failure: {:?}", info.failures));
    assert!(!failure.fatal);
    assert!(failure.message.contains("line 3"), "{}", failure.message);
    assert_eq!(info.ram_mb, 2048, "the default RAM after a broken config");
    assert!(text(&image, &id, "FAILURE.txt").contains("config_broken"));
    assert_data_partition_clean(&image);
}

/// A boot loader that cannot find its kernel: a failure session with
/// FAILURE.txt, and the analysis puts the failure in the boot loader.
#[test]
fn a_failing_boot_loader_gives_a_bootloader_failure() {
    let dir = tempfile::tempdir().unwrap();
    let image = stick_with(dir.path(), &["broken-loader.iso"], CONFIG);
    set_boot(&image, "broken-loader.iso");
    let console = boot_to_poweroff(&vm(dir.path(), &image, "EPYC", false));
    let id = new_session(&image, &[], &console);
    let report = session_report(&image, &id).unwrap();
    assert_eq!(
        report.result,
        BootResult::Failed,
        "{}\nserial.log:\n{}\nqemu.stderr:\n{}",
        report.summary,
        text(&image, &id, "serial.log"),
        text(&image, &id, "qemu.stderr")
    );
    assert_eq!(
        report.failure_domain,
        Some(Domain::Bootloader),
        "{}\nqemu.cmdline: {}",
        report.summary,
        text(&image, &id, "qemu.cmdline")
    );
    let info = info(&image, &id);
    assert_eq!(info.outcome, Outcome::Failure);
    assert!(
        info.failures
            .iter()
            .any(|f| f.kind == FailureKind::GuestCrash),
        "{:?}",
        info.failures
    );
    let failure = text(&image, &id, "FAILURE.txt");
    assert!(failure.contains("guest_crash"), "{failure}");
    assert!(text(&image, &id, "serial.log").contains("Could not find kernel image"));
    assert_data_partition_clean(&image);
}

/// Without SVM in the outer VM the stick has no KVM; with `fallback_tcg`
/// in hiperiso.json the inner QEMU falls back to TCG.
#[test]
fn without_kvm_the_stick_falls_back_to_tcg() {
    let dir = tempfile::tempdir().unwrap();
    let config = r#"{
  "control": {"default_ram": 256, "screenshot_interval": 2, "session_timeout": 240},
  "control_ext": {"fallback_tcg": true}
}"#;
    let image = stick_with(dir.path(), &["bios.iso"], config);
    set_boot(&image, "bios.iso");
    let console = boot_to_poweroff(&vm(dir.path(), &image, "EPYC,svm=off", false));
    let id = new_session(&image, &[], &console);
    assert_booted(&image, &id, BIOS_MARKER, "bios", "tcg");
    let info = info(&image, &id);
    assert!(
        info.warnings.iter().any(|w| w.contains("KVM unusable")),
        "{:?}",
        info.warnings
    );
}
