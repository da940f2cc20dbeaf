//! hiperiso-init end to end: an outer QEMU (TCG, `-cpu EPYC`, so its kernel
//! gets real nested KVM) boots a Debian kernel with an initramfs holding the
//! static `hiperiso-init`, QEMU, SeaBIOS and OVMF. Its data disk is an exFAT
//! volume (written by our installer's exFAT writer) with test ISOs built by
//! xorriso: a BIOS-only boot-sector payload and a UEFI GRUB payload, both
//! printing a marker on serial and powering off. Each scenario boots once
//! and reads the session back from the disk image.
//!
//! The kernel comes from `apt-get download` (cached under the target dir);
//! the initramfs is packed here with `cpio` until the debian profile's
//! builder provides one.

use hiperiso_installer::exfat::{self, ExfatOptions, ExfatReader};
use hiperiso_runtime::qmp::Qmp;
use hiperiso_runtime::session::{
    FailureKind, IndexEntry, Outcome, SessionInfo, Status, TimelineEntry,
};
use hiperiso_stick::qemu::{Accel, Chardev, Drive, Firmware, Machine, QemuCommand};
use hiperiso_tests::{isos, outer_qemu, real_isos, workspace_root};
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

const DATA_SERIAL: u32 = 0x4849_5045;
const DATA_UUID: &str = "4849-5045";
const BIOS_MARKER: &str = "HIPERISO-MARKER-BIOS";
const UEFI_MARKER: &str = "HIPERISO-MARKER-UEFI";
const PANIC_MARKER: &str = "HIPERISO-MARKER-PANIC";
const HANG_MARKER: &str = "HIPERISO-MARKER-HANG";
/// What init prints once the guest runs.
const GUEST_RUNNING: &str = "hiperiso: guest running";
const OUTER_TIMEOUT: Duration = Duration::from_secs(400);
/// Modules the outer VM's kernel needs (dependencies are added).
const MODULES: &[&str] = &[
    "kvm-amd",
    "kvm-intel",
    "virtio_pci",
    "virtio_blk",
    "exfat",
    "vfat",
    "nls_utf8",
    "nls_cp437",
    "evdev",
    "button",
];

/// Two single-vCPU outer VMs at a time: the machine has two cores.
const PARALLEL_VMS: usize = 2;
static RUNNING_VMS: (Mutex<usize>, Condvar) = (Mutex::new(0), Condvar::new());

/// A slot for one outer VM, released on drop.
struct VmSlot;

impl VmSlot {
    fn acquire() -> VmSlot {
        let (lock, ready) = &RUNNING_VMS;
        let mut running = lock.lock().unwrap_or_else(|e| e.into_inner());
        while *running >= PARALLEL_VMS {
            running = ready.wait(running).unwrap_or_else(|e| e.into_inner());
        }
        *running += 1;
        VmSlot
    }
}

impl Drop for VmSlot {
    fn drop(&mut self) {
        let (lock, ready) = &RUNNING_VMS;
        *lock.lock().unwrap_or_else(|e| e.into_inner()) -= 1;
        ready.notify_one();
    }
}

fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

/// `hiperiso-init` as the product ships it: a static release binary.
fn build_static_init() -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    run(Command::new(cargo)
        .current_dir(workspace_root())
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .args([
            "build",
            "--release",
            "-p",
            "hiperiso-runtime",
            "--bin",
            "hiperiso-init",
        ])
        .args(["--target", "x86_64-unknown-linux-gnu", "--target-dir"])
        .arg(target_dir()));
    let bin = target_dir().join("x86_64-unknown-linux-gnu/release/hiperiso-init");
    assert!(
        !has_interpreter(&fs::read(&bin).unwrap()),
        "{} is not static",
        bin.display()
    );
    bin
}

/// Whether an ELF64 file asks for a dynamic loader (a PT_INTERP header).
fn has_interpreter(elf: &[u8]) -> bool {
    assert_eq!(&elf[..4], b"\x7fELF");
    let u16_at = |at: usize| usize::from(u16::from_le_bytes([elf[at], elf[at + 1]]));
    let phoff = u64::from_le_bytes(elf[0x20..0x28].try_into().unwrap()) as usize;
    let (entry_size, count) = (u16_at(0x36), u16_at(0x38));
    (0..count).any(|i| {
        let at = phoff + i * entry_size;
        u32::from_le_bytes(elf[at..at + 4].try_into().unwrap()) == 3
    })
}

/// Debian's `linux-image-amd64` kernel and modules, downloaded once.
fn debian_kernel() -> (PathBuf, PathBuf) {
    let cache = target_dir().join("hiperiso-test-cache/debian-kernel");
    let root = cache.join("root");
    let find = |root: &Path| -> Option<(PathBuf, PathBuf)> {
        let boot = fs::read_dir(root.join("boot")).ok()?;
        let vmlinuz = boot.flatten().map(|e| e.path()).find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("vmlinuz-"))
        })?;
        let release = vmlinuz
            .file_name()?
            .to_str()?
            .strip_prefix("vmlinuz-")?
            .to_string();
        let modules = root.join("lib/modules").join(release);
        modules.is_dir().then_some((vmlinuz, modules))
    };
    if let Some(found) = find(&root) {
        return found;
    }
    fs::create_dir_all(&cache).unwrap();
    let depends = run(Command::new("apt-cache").args(["depends", "linux-image-amd64"]));
    let package = depends
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Depends: "))
        .find(|p| p.starts_with("linux-image-") && p.ends_with("-amd64"))
        .expect("linux-image-amd64 depends on a linux-image-*-amd64 package")
        .to_string();
    run(Command::new("apt-get")
        .current_dir(&cache)
        .args(["download", &package]));
    let deb = fs::read_dir(&cache)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&package) && n.ends_with(".deb"))
        })
        .expect("downloaded .deb");
    let staging = cache.join("root.tmp");
    let _ = fs::remove_dir_all(&staging);
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&staging));
    fs::rename(&staging, &root).unwrap();
    find(&root).expect("kernel and modules in the package")
}

/// The `depends=` field of a module's .modinfo section.
fn module_depends(ko: &[u8]) -> Vec<String> {
    let needle = b"depends=";
    ko.windows(needle.len())
        .position(|w| w == needle)
        .map(|at| {
            let rest = &ko[at + needle.len()..];
            let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
            String::from_utf8_lossy(&rest[..end])
                .split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

fn find_module(dir: &Path, name: &str) -> Option<PathBuf> {
    let wanted = format!("{name}.ko");
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).ok()?.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.file_name().is_some_and(|n| n == wanted.as_str()) {
                return Some(path);
            }
        }
    }
    None
}

fn copy_preserving(src: &Path, root: &Path) {
    let dest = root.join(src.strip_prefix("/").unwrap());
    fs::create_dir_all(dest.parent().unwrap()).unwrap();
    run(Command::new("cp").arg("-a").arg(src).arg(&dest));
}

/// Pack the initramfs: /init, QEMU with its libraries and data, firmware,
/// trace event files and the modules (with their dependencies).
fn build_initramfs(init: &Path, modules_dir: &Path, out: &Path) {
    let staging = tempfile::tempdir().unwrap();
    let root = staging.path();
    for dir in ["proc", "sys", "dev", "run", "mnt", "tmp"] {
        fs::create_dir_all(root.join(dir)).unwrap();
    }
    fs::copy(init, root.join("init")).unwrap();
    let qemu = Path::new("/usr/bin/qemu-system-x86_64");
    copy_preserving(qemu, root);
    let ldd = run(Command::new("ldd").arg(qemu));
    for lib in ldd.split_whitespace().filter(|w| w.starts_with('/')) {
        let dest = root.join(lib.trim_start_matches('/'));
        fs::create_dir_all(dest.parent().unwrap()).unwrap();
        fs::copy(lib, &dest).unwrap_or_else(|e| panic!("copy {lib}: {e}"));
    }
    // Debian builds TCG as a loadable QEMU module: the fallback needs it.
    copy_preserving(
        Path::new("/usr/lib/x86_64-linux-gnu/qemu/accel-tcg-x86_64.so"),
        root,
    );
    copy_preserving(Path::new("/usr/share/qemu"), root);
    copy_preserving(Path::new("/usr/share/seabios"), root);
    fs::create_dir_all(root.join("usr/share/OVMF")).unwrap();
    for fd in ["OVMF_CODE_4M.fd", "OVMF_VARS_4M.fd"] {
        fs::copy(
            Path::new("/usr/share/OVMF").join(fd),
            root.join("usr/share/OVMF").join(fd),
        )
        .unwrap();
    }
    let trace = root.join("usr/share/hiperiso/trace");
    fs::create_dir_all(&trace).unwrap();
    for entry in fs::read_dir(workspace_root().join("overlays/esp/EFI/hiperiso/trace")).unwrap() {
        let path = entry.unwrap().path();
        fs::copy(&path, trace.join(path.file_name().unwrap())).unwrap();
    }
    let release = modules_dir.file_name().unwrap();
    let dest_modules = root.join("lib/modules").join(release);
    let mut wanted: Vec<String> = MODULES.iter().map(|s| s.to_string()).collect();
    let mut done: Vec<String> = Vec::new();
    while let Some(name) = wanted.pop() {
        if done.contains(&name) {
            continue;
        }
        let ko = find_module(modules_dir, &name)
            .or_else(|| find_module(modules_dir, &name.replace('_', "-")))
            .unwrap_or_else(|| panic!("module {name} not in {}", modules_dir.display()));
        let bytes = fs::read(&ko).unwrap();
        wanted.extend(module_depends(&bytes));
        let dest = dest_modules.join(ko.strip_prefix(modules_dir).unwrap());
        fs::create_dir_all(dest.parent().unwrap()).unwrap();
        fs::write(dest, bytes).unwrap();
        done.push(name);
    }
    let cpio = File::create(out).unwrap();
    let status = Command::new("sh")
        .current_dir(root)
        .args(["-c", "find . | LC_ALL=C sort | cpio -o -H newc --quiet"])
        .stdout(cpio)
        .status()
        .unwrap();
    assert!(status.success(), "cpio failed");
}

struct Fixture {
    _dir: tempfile::TempDir,
    kernel: PathBuf,
    initrd: PathBuf,
    isos: PathBuf,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let init = build_static_init();
        let (kernel, modules) = debian_kernel();
        let initrd = dir.path().join("initramfs.cpio");
        build_initramfs(&init, &modules, &initrd);
        let isos = dir.path().join("ISOs");
        fs::create_dir_all(&isos).unwrap();
        let work = dir.path().join("iso-work");
        fs::create_dir_all(&work).unwrap();
        let bios = isos::bios_iso(&work, "bios", BIOS_MARKER).unwrap();
        fs::copy(&bios, isos.join("bios.iso")).unwrap();
        fs::copy(&bios, isos.join("startfail.iso")).unwrap();
        let panic = isos::boot_sector_iso(&work, "panic", PANIC_MARKER, isos::After::Panic);
        fs::copy(panic.unwrap(), isos.join("panic.iso")).unwrap();
        let hang = isos::boot_sector_iso(&work, "hang", HANG_MARKER, isos::After::Hang);
        fs::copy(hang.unwrap(), isos.join("hang.iso")).unwrap();
        let uefi = isos::uefi_iso(&work, "uefi", UEFI_MARKER).unwrap();
        fs::copy(uefi, isos.join("uefi.iso")).unwrap();
        fs::write(isos.join("junk.iso"), vec![0xAAu8; 1 << 20]).unwrap();
        Fixture {
            _dir: dir,
            kernel,
            initrd,
            isos,
        }
    })
}

const GOOD_CONFIG: &str = r#"{
  "control": {"default_ram": 256, "default_cpus": 1, "screenshot_interval": 2, "session_timeout": 120},
  "iso_overrides": {"startfail*.iso": {"cpu_features": "+hiperiso-no-such-flag"}}
}"#;

/// What one outer boot left behind.
struct BootResult {
    console: String,
    image: PathBuf,
    _dir: tempfile::TempDir,
}

/// A fresh data disk holding the ISOs and `config`, then one outer boot.
fn boot(cmdline: &str, cpu: &str, config: &str) -> BootResult {
    boot_on(Path::new("qemu-system-x86_64"), cmdline, cpu, config)
}

/// [`boot`] with the outer VM on `qemu`.
fn boot_on(qemu: &Path, cmdline: &str, cpu: &str, config: &str) -> BootResult {
    boot_with(qemu, cmdline, cpu, config, &Extras::default())
}

/// More for one boot than the usual.
#[derive(Default)]
struct Extras {
    /// Images copied to `/ISOs/` besides the fixture's.
    isos: Vec<PathBuf>,
    /// Press the outer machine's ACPI power button (QMP `system_powerdown`)
    /// this long after init says the guest runs.
    power_button_after: Option<Duration>,
    data_mib: Option<u64>,
}

/// [`boot_on`] with [`Extras`].
fn boot_with(qemu: &Path, cmdline: &str, cpu: &str, config: &str, extras: &Extras) -> BootResult {
    let fx = fixture();
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    fs::create_dir_all(tree.join("hiperiso")).unwrap();
    run(Command::new("cp").arg("-r").arg(&fx.isos).arg(&tree));
    for iso in &extras.isos {
        fs::copy(iso, tree.join("ISOs").join(iso.file_name().unwrap())).unwrap();
    }
    fs::write(tree.join("hiperiso/hiperiso.json"), config).unwrap();
    let image = dir.path().join("data.img");
    let size = extras.data_mib.unwrap_or(64) << 20;
    let mut file = File::create(&image).unwrap();
    file.set_len(size).unwrap();
    let opts = ExfatOptions {
        label: "HIPERISO".into(),
        volume_serial: DATA_SERIAL,
        timestamp: 1_700_000_000,
    };
    exfat::format(&mut file, size, Some(&tree), &opts).unwrap();
    file.flush().unwrap();
    drop(file);

    let console = dir.path().join("console.log");
    let qmp_socket = dir.path().join("outer-qmp.sock");
    let _slot = VmSlot::acquire();
    let mut outer = QemuCommand::new(qemu);
    outer
        .accel(Accel::Tcg)
        .cpu(cpu, "")
        .machine(&Machine::q35())
        .memory_mb(3072)
        .smp(1)
        .nodefaults()
        .display_none()
        .no_reboot()
        .direct_kernel(
            &fx.kernel,
            &fx.initrd,
            &format!("console=ttyS0 panic=-1 quiet hiperiso.pause=0 {cmdline}"),
        )
        .drive(&Drive::virtio(&image))
        .serial_chardev("console", &Chardev::File(console.clone()))
        .qmp("qmp", &qmp_socket);
    let mut child = outer
        .command()
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + OUTER_TIMEOUT;
    let mut guest_running_at: Option<Instant> = None;
    let mut pressed = false;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if let Some(delay) = extras.power_button_after
            && !pressed
        {
            if guest_running_at.is_none()
                && String::from_utf8_lossy(&fs::read(&console).unwrap_or_default())
                    .contains(GUEST_RUNNING)
            {
                guest_running_at = Some(Instant::now());
            }
            if guest_running_at.is_some_and(|t| t.elapsed() >= delay) {
                let mut q =
                    Qmp::connect(&qmp_socket, Duration::from_secs(10)).expect("the outer VM's QMP");
                q.execute("system_powerdown", None)
                    .expect("pressing the outer power button");
                pressed = true;
            }
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "outer VM did not power off within {OUTER_TIMEOUT:?}; console:\n{}",
                fs::read_to_string(&console).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let console = String::from_utf8_lossy(&fs::read(&console).unwrap_or_default()).into_owned();
    assert!(status.success(), "outer QEMU: {status}\n{console}");
    if extras.power_button_after.is_some() {
        assert!(pressed, "the guest never ran:\n{console}");
    }
    BootResult {
        console,
        image,
        _dir: dir,
    }
}

/// The one session on a data disk.
struct SessionFiles {
    reader: ExfatReader<File>,
    dir: String,
    info: SessionInfo,
    index: Vec<IndexEntry>,
}

impl SessionFiles {
    fn open(outcome: &BootResult) -> SessionFiles {
        let fsck = Command::new("fsck.exfat")
            .arg("-n")
            .arg(&outcome.image)
            .output()
            .unwrap();
        assert!(
            fsck.status.success(),
            "fsck.exfat after the boot: {}{}",
            String::from_utf8_lossy(&fsck.stdout),
            String::from_utf8_lossy(&fsck.stderr)
        );
        let mut reader = ExfatReader::open(File::open(&outcome.image).unwrap()).unwrap();
        let sessions: Vec<String> = reader
            .read_dir("hiperiso/logs")
            .unwrap_or_else(|e| panic!("no logs dir: {e}\n{}", outcome.console))
            .into_iter()
            .filter(|e| e.is_dir)
            .map(|e| e.name)
            .collect();
        assert_eq!(sessions.len(), 1, "{sessions:?}");
        let dir = format!("hiperiso/logs/{}", sessions[0]);
        let info = serde_json::from_slice(&read_all(&mut reader, &format!("{dir}/session.json")))
            .expect("session.json parses");
        let index = read_all(&mut reader, "hiperiso/logs/index.jsonl");
        let index = String::from_utf8(index)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        SessionFiles {
            reader,
            dir,
            info,
            index,
        }
    }

    fn text(&mut self, name: &str) -> String {
        let path = format!("{}/{name}", self.dir);
        String::from_utf8_lossy(&read_all(&mut self.reader, &path)).into_owned()
    }

    fn exists(&mut self, name: &str) -> bool {
        self.reader
            .metadata(&format!("{}/{name}", self.dir))
            .is_ok()
    }

    fn list(&mut self, name: &str) -> Vec<String> {
        let mut names: Vec<String> = self
            .reader
            .read_dir(&format!("{}/{name}", self.dir))
            .map(|v| v.into_iter().map(|e| e.name).collect())
            .unwrap_or_default();
        names.sort();
        names
    }

    /// The guarantees of every session, successful or not.
    fn check_always_present(&mut self) {
        for name in [
            "session.json",
            "status.json",
            "env.txt",
            "SESSION_COMPLETE",
            "timing.json",
            "timing.dat",
            "report.json",
            "report.txt",
            "report.log",
            "analysis.meta",
        ] {
            assert!(self.exists(name), "{name} missing in {}", self.dir);
        }
        let status: Status = serde_json::from_str(&self.text("status.json")).unwrap();
        let env = self.text("env.txt");
        assert!(
            env.contains(&format!("(exfat, UUID={DATA_UUID}, label=HIPERISO)")),
            "{env}"
        );
        assert_eq!(self.index.len(), 1);
        assert_eq!(self.index[0].id, self.info.id);
        assert_eq!(self.index[0].outcome, self.info.outcome);
        assert!(self.info.ended_utc.is_some());
        assert_ne!(self.info.outcome, Outcome::Running);
        let expected_stage = if self.info.outcome == Outcome::Failure {
            "failed"
        } else {
            "complete"
        };
        assert_eq!(serde_json::to_value(status.stage).unwrap(), expected_stage);
        assert_eq!(self.exists("FAILURE.txt"), !self.info.failures.is_empty());
    }

    /// `screenshots/timeline.jsonl`, its pictures and texts, and the count
    /// in `session.json` agree; the timeline's lines.
    fn check_timeline(&mut self) -> Vec<TimelineEntry> {
        let timeline: Vec<TimelineEntry> = self
            .text("screenshots/timeline.jsonl")
            .lines()
            .map(|l| {
                eprintln!("timeline: {l}");
                serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}"))
            })
            .collect();
        let files = self.list("screenshots");
        let pngs: Vec<&String> = files.iter().filter(|f| f.ends_with(".png")).collect();
        assert_eq!(pngs.len(), timeline.len(), "{files:?}");
        assert_eq!(self.info.screenshots as usize, pngs.len(), "{files:?}");
        for (i, entry) in timeline.iter().enumerate() {
            assert_eq!(entry.file, format!("{:04}.png", i + 1));
            let png = read_all(
                &mut self.reader,
                &format!("{}/screenshots/{}", self.dir, entry.file),
            );
            assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "{}", entry.file);
            if let Some(text) = &entry.text {
                assert_eq!(text, &format!("{:04}.txt", i + 1));
                assert!(files.contains(text), "{text} missing: {files:?}");
            }
        }
        timeline
    }

    /// The text of the last text-mode picture.
    fn last_screen_text(&mut self, timeline: &[TimelineEntry]) -> String {
        let name = timeline
            .iter()
            .rev()
            .find_map(|e| e.text.clone())
            .unwrap_or_else(|| panic!("no text-mode picture: {timeline:?}"));
        let text = self.text(&format!("screenshots/{name}"));
        eprintln!("screenshots/{name}:\n{text}");
        text
    }

    fn check_failure(&mut self, kind: FailureKind, fatal: bool) -> String {
        self.check_always_present();
        let failure = self
            .info
            .failures
            .iter()
            .find(|f| f.kind == kind)
            .unwrap_or_else(|| panic!("no {kind:?} failure in {:?}", self.info.failures))
            .clone();
        assert_eq!(failure.fatal, fatal);
        assert_eq!(self.info.outcome == Outcome::Failure, fatal);
        assert!(self.index[0].failures.contains(&kind));
        let text = self.text("FAILURE.txt");
        let kind_name = serde_json::to_value(kind).unwrap();
        assert!(text.contains(kind_name.as_str().unwrap()), "{text}");
        failure.message
    }

    /// A guest that booted and printed `marker`.
    fn check_guest_ran(&mut self, marker: &str, firmware: &str, accel: &str) {
        self.check_always_present();
        let serial = self.text("serial.log");
        assert!(
            serial.contains(marker),
            "serial.log lacks {marker}: {serial:?}"
        );
        assert_eq!(self.info.firmware.as_deref(), Some(firmware));
        assert_eq!(self.info.accel.as_deref(), Some(accel));
        assert_eq!(self.info.qemu_exit_code, Some(0));
        let cmdline = self.text("qemu.cmdline");
        assert!(cmdline.contains(&format!("accel={accel}")), "{cmdline}");
        assert!(cmdline.contains("media=cdrom,readonly=on"), "{cmdline}");
        assert!(
            !cmdline.contains("/dev/vd"),
            "the stick must stay hidden: {cmdline}"
        );
        match firmware {
            "uefi" => assert!(cmdline.contains("if=pflash"), "{cmdline}"),
            _ => assert!(
                cmdline.contains("bios-256k.bin") && !cmdline.contains("pflash"),
                "{cmdline}"
            ),
        }
        let hw = self.list("hw");
        for name in [
            "host_cpuinfo.txt",
            "host_pci.txt",
            "acpi",
            "smbios",
            "qemu_pci.txt",
            "qemu_qtree.txt",
            "pci_summary.json",
        ] {
            assert!(hw.contains(&name.to_string()), "hw/{name} missing: {hw:?}");
        }
        if accel == "kvm" {
            assert!(hw.contains(&"kvm_caps.json".to_string()), "{hw:?}");
        }
        let pci: serde_json::Value =
            serde_json::from_str(&self.text("hw/pci_summary.json")).unwrap();
        assert!(
            pci["devices"].as_array().is_some_and(|d| d.len() >= 3),
            "{pci}"
        );
        assert!(
            self.info
                .guest_events
                .iter()
                .any(|e| e.contains("SHUTDOWN")),
            "{:?}",
            self.info.guest_events
        );
        assert!(self.exists("trace.bin"));
        let timing = self.text("timing.dat");
        assert!(timing.lines().any(|l| l.starts_with("guest ")), "{timing}");
    }
}

fn read_all(reader: &mut ExfatReader<File>, path: &str) -> Vec<u8> {
    let mut out = Vec::new();
    reader
        .read_file(path, &mut out)
        .unwrap_or_else(|e| panic!("{path}: {e}"));
    out
}

#[test]
fn kvm_boots_a_bios_only_iso_with_seabios() {
    let out = boot(
        "hiperiso.iso=/ISOs/bios.iso hiperiso.data=UUID=4849-5045",
        "EPYC",
        GOOD_CONFIG,
    );
    let mut s = SessionFiles::open(&out);
    s.check_guest_ran(BIOS_MARKER, "bios", "kvm");
    assert_eq!(
        s.info.firmware_reason.as_deref(),
        Some("el_torito_bios_only")
    );
    assert!(s.info.failures.is_empty(), "{:?}", s.info.failures);
    assert_eq!(s.info.ram_mb, 256, "hiperiso.json applied");
    assert!(!s.list("screenshots").is_empty(), "no screenshots");
    assert!(
        out.console.contains("hiperiso: session complete"),
        "{}",
        out.console
    );
}

/// UEFI images get OVMF, and the guest (a standalone GRUB) reaches its
/// marker under nested KVM. The outer VM runs on the patched QEMU of
/// `tests/support/outer_qemu.rs`: stock QEMU's TCG aborts as soon as the
/// nested OVMF writes CR8.
#[test]
fn a_uefi_iso_gets_ovmf() {
    let qemu = outer_qemu::outer_qemu().expect("building the outer VM's QEMU");
    let out = boot_on(
        &qemu,
        "hiperiso.iso=/ISOs/uefi.iso hiperiso.data=UUID=4849-5045",
        "EPYC",
        GOOD_CONFIG,
    );
    let mut s = SessionFiles::open(&out);
    s.check_guest_ran(UEFI_MARKER, "uefi", "kvm");
    assert!(s.info.failures.is_empty(), "{:?}", s.info.failures);
    assert_eq!(
        s.info.firmware_reason.as_deref(),
        Some("el_torito_uefi_entry")
    );
    let cmdline = s.text("qemu.cmdline");
    assert!(cmdline.contains("q35,accel=kvm,smm=on"), "{cmdline}");
    assert!(
        cmdline.contains("readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd"),
        "{cmdline}"
    );
    assert!(
        cmdline.contains("unit=1,file=/run/hiperiso/OVMF_VARS.fd"),
        "{cmdline}"
    );
}

/// Broken JSON never stops a boot: defaults are used, the error (with its
/// line and column) is on screen and in FAILURE.txt, and the guest runs, here
/// under the TCG fallback.
#[test]
fn a_broken_config_falls_back_to_defaults_and_tcg_boots_the_guest() {
    let broken = "{\n  \"control\": {\n    \"default_ram\": 256,,\n  }\n}\n";
    let out = boot(
        "hiperiso.iso=/ISOs/bios.iso hiperiso.data=UUID=4849-5045 hiperiso_fallback=1",
        "EPYC,svm=off",
        broken,
    );
    let mut s = SessionFiles::open(&out);
    let message = s.check_failure(FailureKind::ConfigBroken, false);
    assert!(message.contains("line 3, column 24"), "{message}");
    s.check_guest_ran(BIOS_MARKER, "bios", "tcg");
    assert_eq!(s.info.ram_mb, 2048, "defaults after a broken config");
    assert!(
        s.info.warnings.iter().any(|w| w.contains("KVM unusable")),
        "{:?}",
        s.info.warnings
    );
    assert!(
        out.console.contains("invalid JSON at line 3"),
        "not on screen:\n{}",
        out.console
    );
}

#[test]
fn without_kvm_and_without_fallback_the_session_fails() {
    let out = boot(
        "hiperiso.iso=/ISOs/bios.iso hiperiso.data=UUID=4849-5045",
        "EPYC,svm=off",
        GOOD_CONFIG,
    );
    let mut s = SessionFiles::open(&out);
    let message = s.check_failure(FailureKind::NoKvm, true);
    assert!(message.contains("hiperiso_fallback=1"), "{message}");
    assert!(
        !s.exists("serial.log") && !s.exists("qemu.cmdline"),
        "QEMU must not run"
    );
    assert!(
        out.console.contains("FAILURE: KVM cannot run a VM"),
        "{}",
        out.console
    );
}

#[test]
fn a_missing_iso_fails_the_session() {
    let out = boot(
        "hiperiso.iso=/ISOs/nowhere.iso hiperiso.data=UUID=4849-5045",
        "EPYC",
        GOOD_CONFIG,
    );
    let mut s = SessionFiles::open(&out);
    let message = s.check_failure(FailureKind::IsoMissing, true);
    assert!(message.contains("ISOs/nowhere.iso"), "{message}");
    assert!(s.dir.contains("nowhere_"), "{}", s.dir);
}

#[test]
fn an_unreadable_iso_fails_the_session() {
    let out = boot(
        "hiperiso.iso=/ISOs/junk.iso hiperiso.data=UUID=4849-5045",
        "EPYC",
        GOOD_CONFIG,
    );
    let mut s = SessionFiles::open(&out);
    let message = s.check_failure(FailureKind::IsoUnreadable, true);
    assert!(message.contains("not an ISO 9660 image"), "{message}");
}

#[test]
fn qemu_failing_to_start_is_recorded_with_its_stderr() {
    let out = boot(
        "hiperiso.iso=/ISOs/startfail.iso hiperiso.data=UUID=4849-5045",
        "EPYC",
        GOOD_CONFIG,
    );
    let mut s = SessionFiles::open(&out);
    let message = s.check_failure(FailureKind::QemuStartFailed, true);
    assert!(message.contains("hiperiso-no-such-flag"), "{message}");
    assert!(s.text("qemu.stderr").contains("hiperiso-no-such-flag"));
    assert_eq!(s.info.matched_overrides, vec!["startfail*.iso".to_string()]);
}

#[test]
fn a_guest_panic_is_a_crash() {
    let out = boot(
        "hiperiso.iso=/ISOs/panic.iso hiperiso.data=UUID=4849-5045",
        "EPYC",
        GOOD_CONFIG,
    );
    let mut s = SessionFiles::open(&out);
    s.check_failure(FailureKind::GuestCrash, true);
    assert!(s.text("serial.log").contains(PANIC_MARKER));
    assert!(
        s.info
            .guest_events
            .iter()
            .any(|e| e.contains("GUEST_PANICKED")),
        "{:?}",
        s.info.guest_events
    );
}

#[test]
fn no_data_partition_logs_to_tmpfs_and_says_so() {
    let out = boot(
        "hiperiso.iso=/ISOs/bios.iso hiperiso.data=UUID=0000-0000 hiperiso.wait=2",
        "EPYC",
        GOOD_CONFIG,
    );
    assert!(
        out.console
            .contains("no data partition matching UUID=0000-0000")
            && out
                .console
                .contains("only on tmpfs (/run/hiperiso/logs/bios_"),
        "{}",
        out.console
    );
    let mut reader = ExfatReader::open(File::open(&out.image).unwrap()).unwrap();
    assert!(
        reader.read_dir("hiperiso/logs").is_err(),
        "the data disk must be untouched"
    );
}

/// The GRUB menu from `overlays/esp` on a GPT stick: OVMF boots GRUB from
/// the ESP, GRUB lists `/ISOs/*.iso` on the exFAT data partition, and its
/// default (first) entry boots hiperiso-init with the DESIGN §5 command
/// line, including the data and ESP filesystem UUIDs found by `probe -u`.
#[test]
fn grub_menu_boots_the_first_iso_with_the_uuids_it_probed() {
    let fx = fixture();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();

    // ESP content.
    let esp_tree = d.join("esp");
    let boot_dir = esp_tree.join("EFI/BOOT");
    let hiperiso_dir = esp_tree.join("EFI/hiperiso");
    fs::create_dir_all(&boot_dir).unwrap();
    fs::create_dir_all(hiperiso_dir.join("trace")).unwrap();
    run(Command::new("grub-mkimage")
        .args(["-O", "x86_64-efi", "-p", "/EFI/BOOT", "-o"])
        .arg(boot_dir.join("BOOTX64.EFI"))
        .args([
            "part_gpt",
            "part_msdos",
            "fat",
            "exfat",
            "regexp",
            "probe",
            "loadenv",
            "test",
            "search",
            "serial",
            "terminal",
            "gfxterm",
            "all_video",
            "font",
            "linux",
            "echo",
            "efifwsetup",
            "halt",
            "reboot",
            "normal",
            "configfile",
            "sleep",
        ]));
    fs::copy(
        workspace_root().join("overlays/esp/EFI/BOOT/grub.cfg"),
        boot_dir.join("grub.cfg"),
    )
    .unwrap();
    fs::copy(&fx.kernel, hiperiso_dir.join("vmlinuz")).unwrap();
    run(Command::new("zstd")
        .args(["-1", "-q", "-f", "-o"])
        .arg(hiperiso_dir.join("initramfs.cpio.zst"))
        .arg(&fx.initrd));
    fs::copy(
        "/usr/share/OVMF/OVMF_CODE_4M.fd",
        hiperiso_dir.join("OVMF_CODE.fd"),
    )
    .unwrap();
    fs::copy(
        "/usr/share/OVMF/OVMF_VARS_4M.fd",
        hiperiso_dir.join("OVMF_VARS.fd"),
    )
    .unwrap();
    for entry in fs::read_dir(workspace_root().join("overlays/esp/EFI/hiperiso/trace")).unwrap() {
        let path = entry.unwrap().path();
        fs::copy(
            &path,
            hiperiso_dir.join("trace").join(path.file_name().unwrap()),
        )
        .unwrap();
    }
    let esp_img = d.join("esp.img");
    run(Command::new("mkfs.fat")
        .args(["-F", "32", "-n", "HIPERESP", "-i", "E5B0071D", "-C"])
        .arg(&esp_img)
        .arg("98304"));
    run(Command::new("mcopy")
        .arg("-s")
        .arg("-i")
        .arg(&esp_img)
        .arg(esp_tree.join("EFI"))
        .arg("::/"));

    // Data partition: one ISO, so the first (default) entry is known.
    let tree = d.join("data");
    fs::create_dir_all(tree.join("ISOs")).unwrap();
    fs::create_dir_all(tree.join("hiperiso")).unwrap();
    fs::copy(fx.isos.join("bios.iso"), tree.join("ISOs/bios.iso")).unwrap();
    let config = r#"{"control": {"default_ram": 256, "default_cpus": 1, "menu_timeout": 3, "default_image": "bios.iso", "session_timeout": 120}}"#;
    fs::write(tree.join("hiperiso/hiperiso.json"), config).unwrap();
    let data_size = 64u64 << 20;
    let data_img = d.join("data.img");
    let mut file = File::create(&data_img).unwrap();
    file.set_len(data_size).unwrap();
    let opts = ExfatOptions {
        label: "HIPERISO".into(),
        volume_serial: DATA_SERIAL,
        timestamp: 1_700_000_000,
    };
    exfat::format(&mut file, data_size, Some(&tree), &opts).unwrap();
    drop(file);

    // GPT disk: data partition 1 from 1 MiB, ESP partition 2 after it.
    let disk = d.join("stick.img");
    let data_start = 1u64 << 20;
    let esp_start = data_start + data_size;
    let esp_size = fs::metadata(&esp_img).unwrap().len();
    File::create(&disk)
        .unwrap()
        .set_len(esp_start + esp_size + (1 << 20))
        .unwrap();
    run(Command::new("sgdisk")
        .arg(format!(
            "--new=1:{}:{}",
            data_start / 512,
            esp_start / 512 - 1
        ))
        .arg("--typecode=1:0700")
        .arg(format!(
            "--new=2:{}:{}",
            esp_start / 512,
            (esp_start + esp_size) / 512 - 1
        ))
        .arg("--typecode=2:ef00")
        .arg(&disk));
    for (img, offset) in [(&data_img, data_start), (&esp_img, esp_start)] {
        run(Command::new("dd")
            .arg(format!("if={}", img.display()))
            .arg(format!("of={}", disk.display()))
            .args(["bs=1M", "conv=notrunc,sparse", "status=none"])
            .arg(format!("seek={}", offset >> 20)));
    }

    let vars = d.join("OVMF_VARS.fd");
    fs::copy("/usr/share/OVMF/OVMF_VARS_4M.fd", &vars).unwrap();
    let console = d.join("console.log");
    let _slot = VmSlot::acquire();
    let mut outer = QemuCommand::new("qemu-system-x86_64");
    outer
        .accel(Accel::Tcg)
        .cpu("EPYC", "")
        .machine(&Machine::q35().smm(true))
        .memory_mb(3072)
        .smp(1)
        .firmware(&Firmware::Uefi {
            code: "/usr/share/OVMF/OVMF_CODE_4M.fd".into(),
            vars: vars.clone(),
            secure: true,
        })
        .nodefaults()
        .display_none()
        .no_reboot()
        .drive(&Drive::virtio(&disk))
        .serial_chardev("console", &Chardev::File(console.clone()));
    let mut child = outer
        .command()
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + OUTER_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break child.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let console_text =
        String::from_utf8_lossy(&fs::read(&console).unwrap_or_default()).into_owned();
    assert!(
        status.success(),
        "outer VM: {status}; console:\n{console_text}"
    );

    // Read the data partition back.
    run(Command::new("dd")
        .arg(format!("if={}", disk.display()))
        .arg(format!("of={}", data_img.display()))
        .args(["bs=1M", "status=none"])
        .arg(format!("skip={}", data_start >> 20))
        .arg(format!("count={}", data_size >> 20)));
    let result = BootResult {
        console: console_text,
        image: data_img,
        _dir: dir,
    };
    let mut s = SessionFiles::open(&result);
    s.check_guest_ran(BIOS_MARKER, "bios", "kvm");
    let cmdline = &s.info.kernel_cmdline;
    for expected in [
        "hiperiso.iso=/ISOs/bios.iso",
        "hiperiso.data=UUID=4849-5045",
        "hiperiso.esp=UUID=E5B0-071D",
        "console=ttyS0",
    ] {
        // GRUB prints FAT/exFAT UUIDs in lower case; the runtime ignores case.
        assert!(
            cmdline.to_lowercase().contains(&expected.to_lowercase()),
            "{expected} not in {cmdline}"
        );
    }
    let env = s.text("env.txt");
    assert!(
        env.contains("esp_partition=/dev/vda2 (vfat, UUID=E5B0-071D"),
        "{env}"
    );
    let qemu = s.text("qemu.cmdline");
    assert!(
        qemu.contains("/mnt/esp/EFI/hiperiso/trace/trace-standard.events"),
        "{qemu}"
    );
    // hiperiso-init keeps GRUB's env block in sync with hiperiso.json.
    let grubenv = read_all(&mut s.reader, "hiperiso/grubenv");
    let vars = hiperiso_runtime::grubenv::parse(&grubenv);
    assert!(
        vars.contains(&("hiperiso_timeout".into(), "3".into())),
        "{vars:?}"
    );
    assert!(
        vars.contains(&("hiperiso_default".into(), "bios.iso".into())),
        "{vars:?}"
    );
}

/// The outer machine's power button pressed mid-session (what
/// `hiperiso-build run --timeout` does): init asks the guest (a BIOS boot
/// sector that halts forever) to power down, quits QEMU, finalizes the
/// session with outcome `stopped` and a report, and powers off. The guest
/// is in VGA text mode under SeaBIOS, so its screen is read exactly.
#[test]
fn the_host_power_button_finalizes_the_session() {
    let out = boot_with(
        Path::new("qemu-system-x86_64"),
        "hiperiso.iso=/ISOs/hang.iso hiperiso.data=UUID=4849-5045",
        "EPYC",
        GOOD_CONFIG,
        &Extras {
            power_button_after: Some(Duration::from_secs(12)),
            ..Extras::default()
        },
    );
    let mut s = SessionFiles::open(&out);
    s.check_always_present();
    assert_eq!(s.info.outcome, Outcome::Stopped, "{:?}", s.info);
    assert!(s.info.failures.is_empty(), "{:?}", s.info.failures);
    assert!(s.text("serial.log").contains(HANG_MARKER));
    assert!(
        out.console.contains("the host's power button was pressed"),
        "{}",
        out.console
    );
    let report: serde_json::Value = serde_json::from_str(&s.text("report.json")).unwrap();
    assert!(report.is_object(), "{report}");
    let log = s.text("report.log");
    assert!(log.starts_with("$ hiperiso-log analyze "), "{log}");
    let timeline = s.check_timeline();
    assert!(!timeline.is_empty());
    let text = s.last_screen_text(&timeline);
    assert!(
        text.contains("Booting from DVD/CD"),
        "SeaBIOS's screen:\n{text}"
    );
    assert!(text.lines().count() >= 25, "{text}");
}

/// `control.session_timeout` ends a guest that never powers off (GRUB's
/// rescue CD, a real third-party image waiting in its menu) the same way:
/// outcome `timeout`, finalized, report written. GRUB's menu is on the VGA
/// text screen under SeaBIOS and is read exactly.
#[test]
fn session_timeout_finalizes_the_session_and_reads_grubs_text_menu() {
    let grub = real_isos::fetch(&real_isos::GRUB_RESCUE).expect("GRUB's rescue CD");
    let config = r#"{
  "control": {"default_ram": 256, "default_cpus": 1, "screenshot_interval": 2, "session_timeout": 25}
}"#;
    let out = boot_with(
        Path::new("qemu-system-x86_64"),
        "hiperiso.iso=/ISOs/grub-rescue-cdrom.iso hiperiso.data=UUID=4849-5045",
        "EPYC",
        config,
        &Extras {
            isos: vec![grub],
            data_mib: Some(128),
            ..Extras::default()
        },
    );
    let mut s = SessionFiles::open(&out);
    s.check_always_present();
    assert_eq!(s.info.outcome, Outcome::Timeout, "{:?}", s.info);
    assert!(s.info.failures.is_empty(), "{:?}", s.info.failures);
    assert!(s.exists("report.log"));
    let timeline = s.check_timeline();
    let text = s.last_screen_text(&timeline);
    assert!(text.contains("GNU GRUB"), "GRUB's screen:\n{text}");
    assert!(
        s.info.guest_events.iter().any(|e| e.contains("POWERDOWN")),
        "the guest was asked to power down: {:?}",
        s.info.guest_events
    );
}
