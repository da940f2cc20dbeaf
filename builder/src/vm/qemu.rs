//! The outer VM: QEMU with OVMF, the stick as usb-storage on xHCI, KVM
//! when the very VM that will run really starts with it, else TCG.

use std::fs::{self, OpenOptions};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use hiperiso_stick::qemu::{self, Chardev, Firmware, Machine, QemuCommand};

use crate::vm::error::{Result, RunError};

/// The QEMU binary; `$HIPERISO_QEMU` overrides it.
const QEMU: &str = "qemu-system-x86_64";
/// How long the KVM probe VM gets to show firmware output.
const KVM_PROBE_TIME: Duration = Duration::from_secs(8);
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

/// What the user asked for (`run --accel`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AccelChoice {
    /// KVM when the real VM starts with it, else TCG.
    #[default]
    Auto,
    /// KVM, or an error naming why it cannot be had.
    Kvm,
    /// TCG, no probe.
    Tcg,
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
    /// A QMP socket, for tests that pull the plug and for a graceful stop.
    pub qmp: Option<PathBuf>,
    /// Writes to the image go to a temporary overlay (the KVM probe).
    pub snapshot: bool,
}

impl Vm {
    /// The QEMU command line.
    pub fn command(&self) -> Command {
        let (accel, cpu) = match &self.accel {
            Accel::Kvm => (qemu::Accel::Kvm, "host"),
            Accel::Tcg { cpu } => (qemu::Accel::Tcg, cpu.as_str()),
        };
        let console = match &self.console {
            Console::Live { log } => Chardev::Stdio {
                logfile: Some(log.clone()),
            },
            Console::File { log } => Chardev::File(log.clone()),
        };
        let mut q = QemuCommand::new(&self.qemu);
        q.machine(&Machine::q35())
            .accel(accel)
            .cpu(cpu, "")
            .memory_mb(self.ram_mb)
            .smp(self.cpus)
            .nodefaults()
            .display_none()
            .vga("std")
            .no_reboot()
            .firmware(&Firmware::Uefi {
                code: self.ovmf_code.clone(),
                vars: self.ovmf_vars.clone(),
                secure: false,
            })
            .usb_stick(&self.image, self.snapshot)
            .serial_chardev("console", &console)
            .no_monitor();
        if let Some(socket) = &self.qmp {
            q.qmp("qmp", socket);
        }
        q.command()
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

/// Whether KVM really runs `vm` here: opening `/dev/kvm` is not enough.
/// On some hosts a plain `-machine pc` VM runs while `-cpu host` aborts at
/// once (`failed to set MSR 0x10a`), so the probe starts this very VM
/// (same QEMU, machine, CPU model, memory, CPUs and firmware; the image
/// behind a throw-away overlay) with `-accel kvm` and waits for its
/// firmware to print on the serial console. `Err` carries the cause.
pub fn probe_kvm(vm: &Vm, scratch: &Path) -> Result<(), String> {
    if let Err(error) = OpenOptions::new().read(true).write(true).open("/dev/kvm") {
        return Err(match error.kind() {
            io::ErrorKind::NotFound => "/dev/kvm does not exist".to_string(),
            io::ErrorKind::PermissionDenied => {
                "no permission to open /dev/kvm (join the `kvm` group)".to_string()
            }
            _ => format!("cannot open /dev/kvm: {error}"),
        });
    }
    probe_vm(vm, scratch)
}

/// The probe proper: `vm` under KVM until its firmware prints, it exits, or
/// [`KVM_PROBE_TIME`] passes.
pub(crate) fn probe_vm(vm: &Vm, scratch: &Path) -> Result<(), String> {
    let log = scratch.join("kvm-probe.log");
    let vars = scratch.join("kvm-probe-vars.fd");
    fs::copy(&vm.ovmf_vars, &vars)
        .map_err(|e| format!("cannot copy {}: {e}", vm.ovmf_vars.display()))?;
    let probe = Vm {
        accel: Accel::Kvm,
        console: Console::File { log: log.clone() },
        ovmf_vars: vars,
        qmp: None,
        snapshot: true,
        ..vm.clone()
    };
    let mut child = probe
        .command()
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|error| format!("cannot start {}: {error}", vm.qemu))?;
    let deadline = Instant::now() + KVM_PROBE_TIME;
    let verdict = loop {
        if let Ok(Some(status)) = child.try_wait() {
            let mut stderr = String::new();
            if let Some(mut pipe) = child.stderr.take() {
                let _ = pipe.read_to_string(&mut stderr);
            }
            break Err(probe_failure(&stderr, &status));
        }
        if fs::metadata(&log).is_ok_and(|m| m.len() > 0) {
            break Ok(());
        }
        if Instant::now() > deadline {
            break Err(format!(
                "the VM made no progress under KVM in {} s (nested virtualization unusable?)",
                KVM_PROBE_TIME.as_secs()
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let _ = child.kill();
    let _ = child.wait();
    verdict
}

/// Why the probe VM ended: QEMU's own first error line, and how it ended.
fn probe_failure(stderr: &str, status: &ExitStatus) -> String {
    let reason = stderr
        .lines()
        .map(|l| l.trim())
        .find(|l| !l.is_empty() && !l.contains("warning:"))
        .unwrap_or("QEMU exited at once");
    format!("QEMU with -accel kvm -cpu host failed ({status}): {reason}")
}

/// Waits for QEMU to exit, at most `timeout`; `None` if it still runs.
pub fn wait_for(child: &mut Child, timeout: Duration) -> io::Result<Option<ExitStatus>> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if Instant::now() > deadline {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Like [`wait_for`], but QEMU is killed at the deadline.
pub fn wait_with_timeout(child: &mut Child, timeout: Duration) -> io::Result<Option<ExitStatus>> {
    let status = wait_for(child, timeout)?;
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    Ok(status)
}

/// Presses the VM's ACPI power button through its QMP socket
/// (`system_powerdown`), as a person would press the PC's.
pub fn press_power_button(socket: &Path) -> io::Result<()> {
    use std::io::{BufRead, BufReader, Write};
    let stream = std::os::unix::net::UnixStream::connect(socket)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    let mut line = String::new();
    reader.read_line(&mut line)?; // the greeting
    for command in ["qmp_capabilities", "system_powerdown"] {
        writeln!(writer, "{{\"execute\": \"{command}\"}}")?;
        loop {
            line.clear();
            if reader.read_line(&mut line)? == 0 {
                return Err(io::Error::other("QMP closed the connection"));
            }
            if line.contains("\"return\"") {
                break;
            }
            if line.contains("\"error\"") {
                return Err(io::Error::other(format!("QMP {command}: {}", line.trim())));
            }
        }
    }
    Ok(())
}
