//! `hiperiso-build run`: boot a stick image in QEMU as a PC would boot the
//! stick, like `mkosi vm`.
//!
//! 1. Default image: the last one `image` wrote (recorded in the cache).
//! 2. Unless `--keep`, work on a copy-on-write copy (`cp --reflink=auto
//!    --sparse=always`), so the original stays clean.
//! 3. Put `--iso` files into `ISOs/` of the exFAT data partition, and for
//!    `--boot NAME` write the GRUB environment block `hiperiso/grubenv`
//!    (timeout 0, default NAME) — both without mounting anything.
//! 4. Boot with OVMF, the image as usb-storage on qemu-xhci; the serial
//!    console is shown live. KVM when a short probe VM really runs, else
//!    TCG with an SVM-capable CPU (`EPYC`) so the stick's own KVM path runs.
//! 5. Read the new session back from the image (no mount), print its
//!    report, and succeed only if the result is `booted`.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hiperiso_installer::exfat::{ExfatEditor, ExfatError, ExfatReader};
use hiperiso_installer::inspect::{self, FoundPartition};
use hiperiso_installer::slice::Slice;
use hiperiso_runtime::analyze::{self, BootResult, Report};
use hiperiso_runtime::grubenv;
use hiperiso_runtime::sessions::{Logs, SessionsError};

use crate::settings::Settings;
use crate::sources::store::{Store, StoreError};

/// Where `image` records the last image it wrote, under the cache root.
pub const LAST_IMAGE_FILE: &str = "state/last-image";
/// The GRUB environment block on the data partition (see grub.cfg).
pub const GRUBENV_PATH: &str = "hiperiso/grubenv";
/// Outer VM memory when `--ram` is not given: the inner guest's default
/// 2 GiB plus the host kernel, initramfs and QEMU.
pub const DEFAULT_RAM_MB: u64 = 4096;
/// Give up after this long when `--timeout` is not given.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1800);
/// The QEMU binary; `$HIPERISO_QEMU` overrides it.
const QEMU: &str = "qemu-system-x86_64";
/// How long the KVM probe VM gets to finish SeaBIOS's POST.
const KVM_PROBE_TIME: Duration = Duration::from_secs(6);
/// OVMF code/vars pairs tried in order (`$HIPERISO_OVMF_CODE` and
/// `$HIPERISO_OVMF_VARS` override them).
const OVMF_CANDIDATES: &[(&str, &str)] = &[
    (
        "/usr/share/OVMF/OVMF_CODE_4M.fd",
        "/usr/share/OVMF/OVMF_VARS_4M.fd",
    ),
    (
        "/usr/share/OVMF/OVMF_CODE.fd",
        "/usr/share/OVMF/OVMF_VARS.fd",
    ),
    (
        "/usr/share/edk2/ovmf/OVMF_CODE.fd",
        "/usr/share/edk2/ovmf/OVMF_VARS.fd",
    ),
    (
        "/usr/share/edk2/x64/OVMF_CODE.fd",
        "/usr/share/edk2/x64/OVMF_VARS.fd",
    ),
];

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("opening the cache")]
    Store(#[source] StoreError),
    #[error(
        "no image given and none recorded in {record}: build one with `hiperiso-build image`, or pass --image IMG"
    )]
    NoImage { record: PathBuf },
    #[error("{path}: {action}")]
    Io {
        action: String,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path}: no partition table with an exFAT data partition (is this a hiperiso image?)")]
    NoDataPartition { path: PathBuf },
    #[error("{path}: data partition")]
    Exfat {
        path: PathBuf,
        #[source]
        source: ExfatError,
    },
    #[error("{path}: GRUB lists only *.iso files under /ISOs/; rename it to end in .iso")]
    NotAnIso { path: PathBuf },
    #[error("--boot {name}: no /ISOs/{name} on the data partition (there: {available})")]
    NoSuchIso { name: String, available: String },
    #[error("{0}")]
    GrubEnv(String),
    #[error(
        "no OVMF firmware found (tried {tried}); install the `ovmf` package or set HIPERISO_OVMF_CODE and HIPERISO_OVMF_VARS"
    )]
    NoOvmf { tried: String },
    #[error("cannot start {program}; install QEMU (`qemu-system-x86`) or set HIPERISO_QEMU")]
    QemuMissing {
        program: String,
        #[source]
        source: io::Error,
    },
    #[error(
        "the VM did not power off within {seconds} s; it was stopped. Raise --timeout, or look at the console above (image: {image})"
    )]
    Timeout { seconds: u64, image: PathBuf },
    #[error("QEMU failed ({status}); its console log is {console}")]
    QemuFailed { status: String, console: PathBuf },
    #[error(
        "no new session was recorded on {image}: the boot did not reach hiperiso-init (see the console above)"
    )]
    NoSession { image: PathBuf },
    #[error("{image}: reading the sessions")]
    Sessions {
        image: PathBuf,
        #[source]
        source: SessionsError,
    },
    #[error("session {id}: result {result}, not booted")]
    NotBooted { id: String, result: String },
}

type Result<T, E = RunError> = std::result::Result<T, E>;

fn io_error(action: impl Into<String>, path: &Path) -> impl FnOnce(io::Error) -> RunError {
    let action = action.into();
    let path = path.to_path_buf();
    move |source| RunError::Io {
        action,
        path,
        source,
    }
}

/// What `run` was asked to do (the CLI's `RunArgs`, without clap).
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    pub image: Option<PathBuf>,
    pub isos: Vec<PathBuf>,
    pub boot: Option<String>,
    pub ram_mb: Option<u64>,
    pub timeout: Option<Duration>,
    /// Change the image itself instead of a copy-on-write copy.
    pub keep: bool,
}

/// How the outer VM is accelerated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Accel {
    Kvm,
    /// TCG with this CPU model (`EPYC` gives the stick SVM, so its KVM works).
    Tcg {
        cpu: String,
    },
}

impl Accel {
    /// TCG with an SVM-capable CPU.
    pub fn tcg_with_svm() -> Self {
        Accel::Tcg { cpu: "EPYC".into() }
    }
}

/// Where the serial console goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Console {
    /// Shown live on stdout (and typed into from stdin), and logged.
    Live { log: PathBuf },
    /// Only logged.
    File { log: PathBuf },
}

impl Console {
    pub fn log(&self) -> &Path {
        match self {
            Console::Live { log } | Console::File { log } => log,
        }
    }
}

/// The outer VM: a PC with UEFI firmware and the image plugged in as a USB stick.
#[derive(Debug, Clone)]
pub struct Vm {
    /// The QEMU binary ([`qemu_program`] unless a caller needs another).
    pub qemu: String,
    pub image: PathBuf,
    pub ram_mb: u64,
    pub cpus: u32,
    pub accel: Accel,
    pub console: Console,
    pub ovmf_code: PathBuf,
    /// A writable copy of the OVMF variable store.
    pub ovmf_vars: PathBuf,
    /// A QMP socket, for tests that pull the plug.
    pub qmp: Option<PathBuf>,
}

impl Vm {
    /// The QEMU command line.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(&self.qemu);
        let (accel, cpu) = match &self.accel {
            Accel::Kvm => ("kvm", "host"),
            Accel::Tcg { cpu } => ("tcg", cpu.as_str()),
        };
        cmd.args(["-machine", "q35", "-accel", accel, "-cpu", cpu])
            .arg("-m")
            .arg(self.ram_mb.to_string())
            .arg("-smp")
            .arg(self.cpus.to_string())
            .args([
                "-nodefaults",
                "-display",
                "none",
                "-vga",
                "std",
                "-no-reboot",
            ])
            .arg("-drive")
            .arg(format!(
                "if=pflash,format=raw,unit=0,readonly=on,file={}",
                qemu_path(&self.ovmf_code)
            ))
            .arg("-drive")
            .arg(format!(
                "if=pflash,format=raw,unit=1,file={}",
                qemu_path(&self.ovmf_vars)
            ))
            .args(["-device", "qemu-xhci,id=xhci"])
            .arg("-drive")
            .arg(format!(
                "if=none,id=stick,format=raw,file={}",
                qemu_path(&self.image)
            ))
            .args([
                "-device",
                "usb-storage,bus=xhci.0,drive=stick,removable=on,bootindex=1",
            ]);
        match &self.console {
            Console::Live { log } => cmd
                .arg("-chardev")
                .arg(format!("stdio,id=console,logfile={}", qemu_path(log))),
            Console::File { log } => cmd
                .arg("-chardev")
                .arg(format!("file,id=console,path={}", qemu_path(log))),
        };
        cmd.args(["-serial", "chardev:console", "-monitor", "none"]);
        if let Some(qmp) = &self.qmp {
            cmd.arg("-qmp")
                .arg(format!("unix:{},server=on,wait=off", qemu_path(qmp)));
        }
        cmd
    }

    /// Starts QEMU; stdin/stdout are the terminal for a live console.
    pub fn spawn(&self) -> Result<Child> {
        let mut cmd = self.command();
        match self.console {
            Console::Live { .. } => cmd.stdin(Stdio::inherit()).stdout(Stdio::inherit()),
            Console::File { .. } => cmd.stdin(Stdio::null()).stdout(Stdio::null()),
        };
        cmd.spawn().map_err(|source| RunError::QemuMissing {
            program: self.qemu.clone(),
            source,
        })
    }
}

/// QEMU option values separate with commas; a comma in a path is doubled.
fn qemu_path(path: &Path) -> String {
    path.display().to_string().replace(',', ",,")
}

/// The QEMU binary: `$HIPERISO_QEMU`, else `qemu-system-x86_64`.
pub fn qemu_program() -> String {
    std::env::var("HIPERISO_QEMU").unwrap_or_else(|_| QEMU.to_string())
}

/// The host's OVMF code and vars images.
pub fn find_ovmf() -> Result<(PathBuf, PathBuf)> {
    if let (Some(code), Some(vars)) = (
        std::env::var_os("HIPERISO_OVMF_CODE"),
        std::env::var_os("HIPERISO_OVMF_VARS"),
    ) {
        return Ok((code.into(), vars.into()));
    }
    OVMF_CANDIDATES
        .iter()
        .map(|(code, vars)| (PathBuf::from(code), PathBuf::from(vars)))
        .find(|(code, vars)| code.is_file() && vars.is_file())
        .ok_or_else(|| RunError::NoOvmf {
            tried: OVMF_CANDIDATES
                .iter()
                .map(|(code, _)| *code)
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// Whether KVM really runs a VM here: opening `/dev/kvm` is not enough on
/// hosts with broken nested virtualization, so a tiny VM must get SeaBIOS
/// through its POST (it then reports "No bootable device" on its debug
/// port) within a few seconds. `Err` carries the reason for TCG.
pub fn probe_kvm(scratch: &Path) -> Result<(), String> {
    if let Err(error) = OpenOptions::new().read(true).write(true).open("/dev/kvm") {
        return Err(match error.kind() {
            io::ErrorKind::NotFound => "/dev/kvm does not exist".to_string(),
            io::ErrorKind::PermissionDenied => {
                "no permission to open /dev/kvm (join the `kvm` group)".to_string()
            }
            _ => format!("cannot open /dev/kvm: {error}"),
        });
    }
    let debug_log = scratch.join("kvm-probe.log");
    let mut child = Command::new(qemu_program())
        .args(["-accel", "kvm", "-machine", "pc", "-m", "32", "-nodefaults"])
        .args(["-display", "none", "-no-reboot", "-chardev"])
        .arg(format!("file,id=debug,path={}", qemu_path(&debug_log)))
        .args(["-device", "isa-debugcon,iobase=0x402,chardev=debug"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|error| format!("cannot start {}: {error}", qemu_program()))?;
    let deadline = Instant::now() + KVM_PROBE_TIME;
    let verdict = loop {
        if let Ok(Some(_)) = child.try_wait() {
            let mut stderr = String::new();
            if let Some(mut pipe) = child.stderr.take() {
                let _ = pipe.read_to_string(&mut stderr);
            }
            let reason = stderr
                .lines()
                .find(|l| !l.contains("warning:"))
                .unwrap_or("QEMU exited at once")
                .to_string();
            break Err(format!("QEMU with -accel kvm failed: {reason}"));
        }
        let log = fs::read_to_string(&debug_log).unwrap_or_default();
        if log.contains("No bootable device") || log.contains("Booting from") {
            break Ok(());
        }
        if Instant::now() > deadline {
            break Err(format!(
                "a KVM test VM made no progress in {} s (nested virtualization unusable?)",
                KVM_PROBE_TIME.as_secs()
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let _ = child.kill();
    let _ = child.wait();
    verdict
}

/// The image `image` wrote last, from the cache's record.
pub fn last_image(cache_root: &Path) -> Result<PathBuf> {
    let record = cache_root.join(LAST_IMAGE_FILE);
    let text = fs::read_to_string(&record).map_err(|_| RunError::NoImage {
        record: record.clone(),
    })?;
    let path = PathBuf::from(text.trim_end_matches('\n'));
    if path.as_os_str().is_empty() || !path.is_file() {
        return Err(RunError::NoImage { record });
    }
    Ok(path)
}

/// Records `image` (made absolute) as the last image written.
pub fn record_last_image(cache_root: &Path, image: &Path) -> Result<()> {
    let record = cache_root.join(LAST_IMAGE_FILE);
    let absolute = std::path::absolute(image).map_err(io_error("cannot resolve", image))?;
    if let Some(dir) = record.parent() {
        fs::create_dir_all(dir).map_err(io_error("cannot create", dir))?;
    }
    let temporary = record.with_extension("tmp");
    fs::write(&temporary, format!("{}\n", absolute.display()))
        .map_err(io_error("cannot write", &temporary))?;
    fs::rename(&temporary, &record).map_err(io_error("cannot write", &record))
}

/// A copy-on-write (reflink where the file system can, else sparse) copy.
pub fn working_copy(image: &Path, copy: &Path) -> Result<()> {
    let output = Command::new("cp")
        .args(["--reflink=auto", "--sparse=always", "--"])
        .arg(image)
        .arg(copy)
        .output()
        .map_err(io_error("cannot run cp to copy", image))?;
    if !output.status.success() {
        return Err(RunError::Io {
            action: format!("cannot copy to {}", copy.display()),
            path: image.to_path_buf(),
            source: io::Error::other(String::from_utf8_lossy(&output.stderr).trim().to_string()),
        });
    }
    Ok(())
}

/// The exFAT data partition of a stick image, opened for changes.
pub struct StickImage {
    path: PathBuf,
    data: ExfatEditor<Slice<File>>,
}

impl StickImage {
    pub fn open(path: &Path) -> Result<Self> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(io_error("cannot open", path))?;
        let partition = data_partition(&mut file, path)?;
        let slice = Slice::new(file, partition.offset, partition.len);
        let data = ExfatEditor::open(slice).map_err(|source| RunError::Exfat {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(Self {
            path: path.to_path_buf(),
            data,
        })
    }

    fn exfat_error(&self) -> impl FnOnce(ExfatError) -> RunError + use<> {
        let path = self.path.clone();
        move |source| RunError::Exfat { path, source }
    }

    /// Writes `bytes` as the file `path` of the data partition.
    pub fn put_bytes(&mut self, path: &str, bytes: &[u8], timestamp: u64) -> Result<()> {
        let error = self.exfat_error();
        self.data
            .put_file(path, bytes, bytes.len() as u64, timestamp)
            .map_err(error)
    }

    /// Copies an ISO file into `/ISOs/` (replacing one of the same name);
    /// returns its name there.
    pub fn add_iso(&mut self, iso: &Path) -> Result<String> {
        let name = iso
            .file_name()
            .and_then(|n| n.to_str())
            .filter(|n| n.to_ascii_lowercase().ends_with(".iso"))
            .ok_or_else(|| RunError::NotAnIso {
                path: iso.to_path_buf(),
            })?
            .to_string();
        let file = File::open(iso).map_err(io_error("cannot open", iso))?;
        let metadata = file.metadata().map_err(io_error("cannot read", iso))?;
        let modified = metadata
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs());
        let error = self.exfat_error();
        self.data
            .put_file(
                &format!("ISOs/{name}"),
                io::BufReader::with_capacity(1 << 20, file),
                metadata.len(),
                modified,
            )
            .map_err(error)?;
        Ok(name)
    }

    /// The `*.iso` files under `/ISOs/`, as GRUB lists them.
    pub fn isos(&mut self) -> Result<Vec<String>> {
        let error = self.exfat_error();
        let entries = self.data.reader().read_dir("ISOs").map_err(error)?;
        Ok(entries
            .into_iter()
            .filter(|e| !e.is_dir && e.name.to_ascii_lowercase().ends_with(".iso"))
            .map(|e| e.name)
            .collect())
    }

    /// Makes GRUB boot `/ISOs/NAME` at once, with no keypress, through the
    /// environment block grub.cfg loads (`hiperiso_timeout`,
    /// `hiperiso_default`, `hiperiso_hold`). hiperiso-init rewrites the
    /// block from hiperiso.json at its next boot.
    pub fn boot_once(&mut self, name: &str) -> Result<()> {
        let isos = self.isos()?;
        let Some(found) = isos.iter().find(|iso| iso.eq_ignore_ascii_case(name)) else {
            return Err(RunError::NoSuchIso {
                name: name.to_string(),
                available: if isos.is_empty() {
                    "nothing".into()
                } else {
                    isos.join(", ")
                },
            });
        };
        let block = grubenv::render(&[
            ("hiperiso_timeout", "0".into()),
            ("hiperiso_default", found.clone()),
            ("hiperiso_hold", "0".into()),
        ])
        .map_err(|e| RunError::GrubEnv(format!("{GRUBENV_PATH}: {e}")))?;
        self.put_bytes(GRUBENV_PATH, &block, now())
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn data_partition(file: &mut File, path: &Path) -> Result<FoundPartition> {
    let size = file
        .seek(SeekFrom::End(0))
        .map_err(io_error("cannot read", path))?;
    let table = inspect::read_table(file, size).map_err(|source| RunError::Io {
        action: "cannot read the partition table".into(),
        path: path.to_path_buf(),
        source: io::Error::other(source),
    })?;
    table
        .and_then(|(_, parts)| parts.into_iter().find(|p| p.is_data()))
        .ok_or_else(|| RunError::NoDataPartition {
            path: path.to_path_buf(),
        })
}

/// A copy of the image's exFAT data partition's session list and files.
pub fn session_ids(image: &Path) -> Result<Vec<String>> {
    let mut logs = match Logs::open(image) {
        Ok(logs) => logs,
        Err(source) => {
            return Err(RunError::Sessions {
                image: image.to_path_buf(),
                source,
            });
        }
    };
    let list = logs.list().map_err(|source| RunError::Sessions {
        image: image.to_path_buf(),
        source,
    })?;
    Ok(list.sessions.into_iter().map(|s| s.id).collect())
}

/// The analyzed report of session `id` on the image, read without mounting.
pub fn session_report(image: &Path, id: &str) -> Result<Report> {
    let sessions_error = |source| RunError::Sessions {
        image: image.to_path_buf(),
        source,
    };
    Logs::open(image)
        .and_then(|mut logs| logs.show(id))
        .map_err(sessions_error)
}

/// Reads one file of a session directory from the image, without mounting.
pub fn read_session_file(image: &Path, id: &str, name: &str) -> Result<Option<Vec<u8>>> {
    let mut file = File::open(image).map_err(io_error("cannot open", image))?;
    let partition = data_partition(&mut file, image)?;
    let exfat_error = |source| RunError::Exfat {
        path: image.to_path_buf(),
        source,
    };
    let mut reader = ExfatReader::open(Slice::new(file, partition.offset, partition.len))
        .map_err(exfat_error)?;
    let mut out = Vec::new();
    match reader.read_file(&format!("hiperiso/logs/{id}/{name}"), &mut out) {
        Ok(_) => Ok(Some(out)),
        Err(ExfatError::NotFound { .. }) => Ok(None),
        Err(source) => Err(exfat_error(source)),
    }
}

/// Waits for `child` to exit, killing it after `timeout`.
pub fn wait_with_timeout(child: &mut Child, timeout: Duration) -> io::Result<Option<ExitStatus>> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// What a `run` produced.
#[derive(Debug)]
pub struct RunOutcome {
    pub session_id: String,
    pub report: Report,
    /// The image the VM booted (the original with `--keep`).
    pub image: PathBuf,
}

/// `hiperiso-build run`.
pub fn run(ctx: &Settings, options: &RunOptions) -> Result<RunOutcome, RunError> {
    let store = Store::open_default(ctx.cache_dir.as_deref()).map_err(RunError::Store)?;
    let original = match &options.image {
        Some(image) => image.clone(),
        None => last_image(store.root())?,
    };
    if !original.is_file() {
        return Err(RunError::Io {
            action: "cannot read the image".into(),
            path: original,
            source: io::Error::from(io::ErrorKind::NotFound),
        });
    }
    let scratch_root = store.tmp_dir().map_err(RunError::Store)?;
    let scratch = tempfile::Builder::new()
        .prefix("run-")
        .tempdir_in(&scratch_root)
        .map_err(io_error("cannot create a directory in", &scratch_root))?;
    let image = if options.keep {
        original.clone()
    } else {
        let copy = scratch.path().join("stick.img");
        ctx.say(format!(
            "working on a copy-on-write copy of {} (--keep changes the image itself)",
            original.display()
        ));
        working_copy(&original, &copy)?;
        copy
    };

    let mut stick = StickImage::open(&image)?;
    for iso in &options.isos {
        let name = stick.add_iso(iso)?;
        ctx.say(format!("added /ISOs/{name}"));
    }
    if let Some(name) = &options.boot {
        let name = Path::new(name)
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or(name);
        stick.boot_once(name)?;
        ctx.say(format!("GRUB will boot /ISOs/{name} without waiting"));
    }
    drop(stick);
    let before = session_ids(&image).unwrap_or_default();

    let (ovmf_code, ovmf_vars_template) = find_ovmf()?;
    let ovmf_vars = scratch.path().join("OVMF_VARS.fd");
    fs::copy(&ovmf_vars_template, &ovmf_vars)
        .map_err(io_error("cannot copy", &ovmf_vars_template))?;
    let accel = match probe_kvm(scratch.path()) {
        Ok(()) => {
            ctx.say("accelerator: KVM");
            Accel::Kvm
        }
        Err(reason) => {
            ctx.say(format!(
                "accelerator: TCG with -cpu EPYC, so the stick still gets KVM (SVM) for its guest; KVM is not usable here: {reason}"
            ));
            Accel::tcg_with_svm()
        }
    };
    let console_log = scratch.path().join("console.log");
    // One vCPU under TCG: QEMU 7.2's multi-threaded TCG aborts
    // ("tcg_handle_interrupt: assertion failed") when the stick's kernel
    // sends IPIs while its nested KVM guest runs.
    let cpus = if accel == Accel::Kvm { 2 } else { 1 };
    let vm = Vm {
        qemu: qemu_program(),
        image: image.clone(),
        ram_mb: options.ram_mb.unwrap_or(DEFAULT_RAM_MB),
        cpus,
        accel,
        console: Console::Live {
            log: console_log.clone(),
        },
        ovmf_code,
        ovmf_vars,
        qmp: None,
    };
    let timeout = options.timeout.unwrap_or(DEFAULT_TIMEOUT);
    ctx.say(format!(
        "booting {} as a USB stick (OVMF, {} MiB, {} CPU); serial console follows, timeout {} s",
        image.display(),
        vm.ram_mb,
        vm.cpus,
        timeout.as_secs()
    ));
    let mut child = vm.spawn()?;
    let status =
        wait_with_timeout(&mut child, timeout).map_err(io_error("cannot wait for", &image))?;
    let _ = io::stdout().flush();
    match status {
        None => {
            if !options.keep {
                // Keep the scratch image for a look at the partial session.
                let kept = scratch.keep();
                return Err(RunError::Timeout {
                    seconds: timeout.as_secs(),
                    image: kept.join("stick.img"),
                });
            }
            return Err(RunError::Timeout {
                seconds: timeout.as_secs(),
                image,
            });
        }
        Some(status) if !status.success() => {
            ctx.say(format!("QEMU exited with {status}"));
            if vm.accel != Accel::Kvm
                && std::os::unix::process::ExitStatusExt::signal(&status) == Some(6)
            {
                ctx.say(
                    "QEMU aborted: its TCG, emulating SVM for the stick's KVM, asserts when a nested \
                     UEFI guest writes CR8 (`tcg_handle_interrupt: assertion failed`, a QEMU bug; \
                     see README). Set HIPERISO_QEMU to a QEMU built by tests/support/outer-qemu.sh.",
                );
            }
        }
        Some(_) => {}
    }

    let after = session_ids(&image)?;
    let Some(id) = after.into_iter().rev().find(|id| !before.contains(id)) else {
        return Err(RunError::NoSession { image });
    };
    let report = session_report(&image, &id)?;
    ctx.say(format!("\nsession {id} (read back from the image):"));
    ctx.say(analyze::render_text(&report));
    if report.result != BootResult::Booted {
        return Err(RunError::NotBooted {
            id,
            result: report.result.as_str().to_string(),
        });
    }
    Ok(RunOutcome {
        session_id: id,
        report,
        image: if options.keep { image } else { original },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use hiperiso_installer::exfat::{ExfatOptions, format};

    /// A GPT image whose first partition is an exFAT data partition with
    /// `ISOs/` and `hiperiso/`, made with the installer's own writers.
    fn stick(dir: &Path) -> PathBuf {
        let tree = dir.join("tree");
        fs::create_dir_all(tree.join("ISOs")).unwrap();
        fs::create_dir_all(tree.join("hiperiso")).unwrap();
        fs::write(tree.join("ISOs/README"), "Put ISO files here.\n").unwrap();
        let image = dir.join("stick.img");
        let layout_size = 64u64 << 20;
        let file = File::create(&image).unwrap();
        file.set_len(layout_size).unwrap();
        drop(file);
        let status = Command::new("sgdisk")
            .args([
                "-n",
                "1:2048:+40M",
                "-t",
                "1:0700",
                "-n",
                "2:0:0",
                "-t",
                "2:ef00",
            ])
            .arg(&image)
            .output()
            .unwrap();
        assert!(status.status.success(), "{status:?}");
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&image)
            .unwrap();
        let mut data = Slice::new(&mut file, 2048 * 512, 40 << 20);
        let options = ExfatOptions {
            label: "HIPERISO".into(),
            volume_serial: 0x1234_5678,
            timestamp: 1_700_000_000,
        };
        format(&mut data, 40 << 20, Some(&tree), &options).unwrap();
        image
    }

    #[test]
    fn isos_and_the_boot_choice_land_on_the_data_partition() {
        let dir = tempfile::tempdir().unwrap();
        let image = stick(dir.path());
        let iso = dir.path().join("Test.iso");
        fs::write(&iso, vec![0x5Au8; 100_000]).unwrap();
        let mut stick = StickImage::open(&image).unwrap();
        assert_eq!(stick.add_iso(&iso).unwrap(), "Test.iso");
        stick.boot_once("test.iso").unwrap();
        assert_eq!(stick.isos().unwrap(), ["Test.iso"]);
        let err = stick.boot_once("other.iso").unwrap_err();
        assert!(err.to_string().contains("there: Test.iso"), "{err}");
        let err = stick
            .add_iso(&dir.path().join("tree/ISOs/README"))
            .unwrap_err();
        assert!(matches!(err, RunError::NotAnIso { .. }), "{err}");
        drop(stick);

        let mut file = File::open(&image).unwrap();
        let partition = data_partition(&mut file, &image).unwrap();
        let mut reader =
            ExfatReader::open(Slice::new(file, partition.offset, partition.len)).unwrap();
        let mut copied = Vec::new();
        reader.read_file("ISOs/Test.iso", &mut copied).unwrap();
        assert_eq!(copied, vec![0x5Au8; 100_000]);
        let mut block = Vec::new();
        reader.read_file(GRUBENV_PATH, &mut block).unwrap();
        assert_eq!(block.len(), grubenv::BLOCK_SIZE);
        let vars = grubenv::parse(&block);
        assert!(vars.contains(&("hiperiso_timeout".into(), "0".into())));
        assert!(vars.contains(&("hiperiso_default".into(), "Test.iso".into())));
    }

    #[test]
    fn the_working_copy_leaves_the_original_alone() {
        let dir = tempfile::tempdir().unwrap();
        let image = stick(dir.path());
        let before = fs::read(&image).unwrap();
        let copy = dir.path().join("copy.img");
        working_copy(&image, &copy).unwrap();
        let mut stick = StickImage::open(&copy).unwrap();
        stick.put_bytes("hiperiso/x", b"x", 0).unwrap();
        drop(stick);
        assert_eq!(fs::read(&image).unwrap(), before);
        assert_ne!(fs::read(&copy).unwrap(), before);
    }

    #[test]
    fn last_image_round_trips_and_explains_its_absence() {
        let dir = tempfile::tempdir().unwrap();
        let err = last_image(dir.path()).unwrap_err();
        assert!(err.to_string().contains("hiperiso-build image"), "{err}");
        let image = dir.path().join("a,b.img");
        fs::write(&image, b"x").unwrap();
        record_last_image(dir.path(), &image).unwrap();
        assert_eq!(last_image(dir.path()).unwrap(), image);
    }

    #[test]
    fn the_vm_is_a_pc_with_a_usb_stick() {
        let vm = Vm {
            qemu: qemu_program(),
            image: "/images/a,b.img".into(),
            ram_mb: 4096,
            cpus: 2,
            accel: Accel::tcg_with_svm(),
            console: Console::File {
                log: "/tmp/console.log".into(),
            },
            ovmf_code: "/usr/share/OVMF/OVMF_CODE_4M.fd".into(),
            ovmf_vars: "/tmp/vars.fd".into(),
            qmp: Some("/tmp/qmp.sock".into()),
        };
        let cmd = vm.command();
        let args: Vec<String> = cmd
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let line = args.join(" ");
        assert!(line.contains("-accel tcg -cpu EPYC"), "{line}");
        assert!(line.contains("-device qemu-xhci,id=xhci"), "{line}");
        assert!(
            line.contains("usb-storage,bus=xhci.0,drive=stick"),
            "{line}"
        );
        assert!(line.contains("file=/images/a,,b.img"), "{line}");
        assert!(
            line.contains("if=pflash,format=raw,unit=0,readonly=on"),
            "{line}"
        );
        assert!(line.contains("-serial chardev:console"), "{line}");
    }
}
