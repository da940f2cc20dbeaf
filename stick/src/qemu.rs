//! The QEMU (x86-64, q35/pc, OVMF or SeaBIOS) command line, assembled in
//! one place: `hiperiso-init`'s guest, `hiperiso-build run`'s outer VM,
//! and the tests' VMs all build theirs here.
//!
//! [`QemuCommand`] appends options in the order its methods are called, so
//! a caller decides the order and the same calls always give the same
//! argv (and the same `qemu.cmdline`). Each method knows one piece of
//! QEMU's syntax: which options a UEFI firmware, a USB stick or a QMP
//! socket takes, and that a comma inside an option's value is doubled
//! ([`escape`]). What a VM gets stays the caller's decision.
//!
//! ```
//! use hiperiso_stick::qemu::{Accel, Chardev, Firmware, Machine, QemuCommand};
//! let mut q = QemuCommand::new("qemu-system-x86_64");
//! q.machine(&Machine::q35().accel(Accel::Kvm).smm(true))
//!     .cpu("host", "")
//!     .memory_mb(2048)
//!     .firmware(&Firmware::Uefi {
//!         code: "/esp/OVMF_CODE.fd".into(),
//!         vars: "/run/hiperiso/OVMF_VARS.fd".into(),
//!         secure: true,
//!     })
//!     .serial_chardev("serial0", &Chardev::File("/tmp/serial.log".into()));
//! assert!(q.argv().contains(&"q35,accel=kvm,smm=on".to_string()));
//! ```

use std::path::{Path, PathBuf};
use std::process::Command;

/// The ISA debug port OVMF and SeaBIOS print their debug log to.
pub const DEBUGCON_IOBASE: &str = "0x402";

/// The bus of the xHCI controller [`QemuCommand::usb_stick`] adds, for
/// more USB devices (`usb-tablet,bus=xhci.0`).
pub const USB_BUS: &str = "xhci.0";

/// QEMU's option syntax separates `key=value` pairs with commas; a comma
/// inside a value (a path) is doubled.
pub fn escape(value: &str) -> String {
    value.replace(',', ",,")
}

/// [`escape`] for a path.
pub fn escape_path(path: &Path) -> String {
    escape(&path.display().to_string())
}

/// CPU virtualization backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    pub fn as_str(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

/// `-machine`: a machine type and its properties, e.g. `q35,accel=kvm,smm=on`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Machine {
    value: String,
}

impl Machine {
    /// A machine type (`qemu-system-x86_64 -machine help`).
    pub fn new(kind: &str) -> Self {
        Machine {
            value: kind.to_string(),
        }
    }

    /// The PCIe PC (ICH9, AHCI built in).
    pub fn q35() -> Self {
        Self::new("q35")
    }

    /// The i440FX PC.
    pub fn pc() -> Self {
        Self::new("pc")
    }

    /// The accelerator as a machine property (`accel=kvm`); the same as
    /// [`QemuCommand::accel`].
    pub fn accel(self, accel: Accel) -> Self {
        self.opt("accel", accel.as_str())
    }

    /// System Management Mode: on for OVMF built with SMM (Secure Boot),
    /// whose variable store is then writable only from SMM.
    pub fn smm(self, on: bool) -> Self {
        self.opt("smm", on_off(on))
    }

    /// Any other property; `value` is escaped.
    pub fn opt(mut self, key: &str, value: &str) -> Self {
        self.value.push_str(&format!(",{key}={}", escape(value)));
        self
    }

    /// The `-machine` argument.
    pub fn value(&self) -> &str {
        &self.value
    }
}

fn on_off(on: bool) -> &'static str {
    if on { "on" } else { "off" }
}

/// The guest's firmware.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Firmware {
    /// OVMF: the code read-only on pflash unit 0, a writable copy of the
    /// variable store on unit 1. `secure` marks the flash as writable only
    /// from SMM, which OVMF built with SMM needs (with [`Machine::smm`]).
    Uefi {
        code: PathBuf,
        vars: PathBuf,
        secure: bool,
    },
    /// SeaBIOS from `image`; `None` is QEMU's built-in default.
    Bios { image: Option<PathBuf> },
}

/// A chardev backend; [`QemuCommand::chardev`] gives it an id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chardev {
    /// Output appended to a file.
    File(PathBuf),
    /// QEMU's stdin/stdout, optionally also logged to a file.
    Stdio { logfile: Option<PathBuf> },
    /// A Unix socket QEMU listens on (without waiting for a client).
    SocketServer(PathBuf),
    /// A Unix socket QEMU connects to.
    SocketClient(PathBuf),
}

impl Chardev {
    /// The `-chardev` argument for this backend named `id`.
    pub fn value(&self, id: &str) -> String {
        match self {
            Chardev::File(path) => format!("file,id={id},path={}", escape_path(path)),
            Chardev::Stdio { logfile: None } => format!("stdio,id={id}"),
            Chardev::Stdio { logfile: Some(log) } => {
                format!("stdio,id={id},logfile={}", escape_path(log))
            }
            Chardev::SocketServer(path) => format!(
                "socket,id={id},path={},server=on,wait=off",
                escape_path(path)
            ),
            Chardev::SocketClient(path) => format!("socket,id={id},path={}", escape_path(path)),
        }
    }
}

/// A `-drive` argument: `key=value` pairs in the order given, values
/// escaped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Drive {
    opts: Vec<String>,
}

impl Drive {
    pub fn new() -> Self {
        Self::default()
    }

    /// A raw image as a virtio-blk disk.
    pub fn virtio(image: &Path) -> Self {
        Drive::new()
            .opt("file", &image.display().to_string())
            .opt("format", "raw")
            .opt("if", "virtio")
    }

    /// Adds `key=value`, `value` escaped.
    pub fn opt(mut self, key: &str, value: &str) -> Self {
        self.opts.push(format!("{key}={}", escape(value)));
        self
    }

    /// Adds `file=<image>`.
    pub fn file(self, image: &Path) -> Self {
        self.opt("file", &image.display().to_string())
    }

    /// The `-drive` argument.
    pub fn value(&self) -> String {
        self.opts.join(",")
    }
}

/// A QEMU command line under construction: each method appends its
/// options, in call order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QemuCommand {
    program: String,
    args: Vec<String>,
}

impl QemuCommand {
    /// A command line for the QEMU binary `program`.
    pub fn new(program: impl AsRef<Path>) -> Self {
        QemuCommand {
            program: program.as_ref().display().to_string(),
            args: Vec::new(),
        }
    }

    /// The program, then every argument.
    pub fn argv(&self) -> Vec<String> {
        let mut argv = Vec::with_capacity(self.args.len() + 1);
        argv.push(self.program.clone());
        argv.extend(self.args.iter().cloned());
        argv
    }

    pub fn program(&self) -> &str {
        &self.program
    }

    /// The arguments, without the program.
    pub fn args_list(&self) -> &[String] {
        &self.args
    }

    /// A [`Command`] running this command line (stdio left to the caller).
    pub fn command(&self) -> Command {
        let mut command = Command::new(&self.program);
        command.args(&self.args);
        command
    }

    /// The command line as `qemu.cmdline` holds it: one shell-quoted
    /// argument per line, readable and pasteable.
    pub fn cmdline_text(&self) -> String {
        cmdline_text(&self.argv())
    }

    /// Appends one raw argument, for what no method covers.
    pub fn arg(&mut self, arg: impl Into<String>) -> &mut Self {
        self.args.push(arg.into());
        self
    }

    /// Appends raw arguments, for what no method covers.
    pub fn args<S: Into<String>>(&mut self, args: impl IntoIterator<Item = S>) -> &mut Self {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    fn opt(&mut self, flag: &str, value: impl Into<String>) -> &mut Self {
        self.args.push(flag.to_string());
        self.args.push(value.into());
        self
    }

    /// `-name`: the guest's name (window titles, VNC desktop name).
    pub fn name(&mut self, name: &str) -> &mut Self {
        self.opt("-name", escape(name))
    }

    /// `-nodefaults`: no default devices (NIC, VGA, serial, monitor, drives).
    pub fn nodefaults(&mut self) -> &mut Self {
        self.arg("-nodefaults")
    }

    /// `-no-user-config`: no configuration files from the QEMU install.
    pub fn no_user_config(&mut self) -> &mut Self {
        self.arg("-no-user-config")
    }

    /// `-no-reboot`: a guest reboot exits QEMU.
    pub fn no_reboot(&mut self) -> &mut Self {
        self.arg("-no-reboot")
    }

    /// `-accel`: the accelerator as its own option; the same as
    /// [`Machine::accel`].
    pub fn accel(&mut self, accel: Accel) -> &mut Self {
        self.opt("-accel", accel.as_str())
    }

    /// `-machine`.
    pub fn machine(&mut self, machine: &Machine) -> &mut Self {
        self.opt("-machine", machine.value())
    }

    /// `-cpu model[,features]`; `features` is a comma-separated list such as
    /// `+svm,-x2apic` (stray commas at either end are dropped; empty adds
    /// nothing).
    pub fn cpu(&mut self, model: &str, features: &str) -> &mut Self {
        let features = features.trim_matches(',');
        if features.is_empty() {
            self.opt("-cpu", model)
        } else {
            self.opt("-cpu", format!("{model},{features}"))
        }
    }

    /// `-m`: RAM in MiB.
    pub fn memory_mb(&mut self, mib: u64) -> &mut Self {
        self.opt("-m", mib.to_string())
    }

    /// `-smp`: the number of vCPUs.
    pub fn smp(&mut self, cpus: u32) -> &mut Self {
        self.opt("-smp", cpus.to_string())
    }

    /// The firmware: two pflash drives for OVMF (after the secure-flash
    /// global when asked), `-bios` for a SeaBIOS image, nothing for QEMU's
    /// own SeaBIOS.
    pub fn firmware(&mut self, firmware: &Firmware) -> &mut Self {
        match firmware {
            Firmware::Uefi { code, vars, secure } => {
                if *secure {
                    self.global("driver=cfi.pflash01,property=secure,value=on");
                }
                let pflash = |unit: &str| {
                    Drive::new()
                        .opt("if", "pflash")
                        .opt("format", "raw")
                        .opt("unit", unit)
                };
                self.drive(&pflash("0").opt("readonly", "on").file(code))
                    .drive(&pflash("1").file(vars))
            }
            Firmware::Bios { image: Some(image) } => self.opt("-bios", image.display().to_string()),
            Firmware::Bios { image: None } => self,
        }
    }

    /// `-kernel`, `-initrd`, `-append`: boots a Linux kernel directly.
    pub fn direct_kernel(&mut self, kernel: &Path, initrd: &Path, append: &str) -> &mut Self {
        self.opt("-kernel", kernel.display().to_string())
            .opt("-initrd", initrd.display().to_string())
            .opt("-append", append)
    }

    /// `-drive`.
    pub fn drive(&mut self, drive: &Drive) -> &mut Self {
        self.opt("-drive", drive.value())
    }

    /// `-device`, as given.
    pub fn device(&mut self, device: &str) -> &mut Self {
        self.opt("-device", device)
    }

    /// `-global`, as given.
    pub fn global(&mut self, global: &str) -> &mut Self {
        self.opt("-global", global)
    }

    /// A raw image, read-only, as a CD-ROM on the q35's built-in AHCI
    /// controller (first port), first in the boot order at `bootindex`.
    pub fn cdrom(&mut self, id: &str, image: &Path, bootindex: u32) -> &mut Self {
        let drive = Drive::new()
            .opt("if", "none")
            .opt("id", id)
            .opt("media", "cdrom")
            .opt("readonly", "on")
            .opt("format", "raw")
            .file(image);
        self.drive(&drive).device(&format!(
            "ide-cd,drive={id},bus=ide.0,bootindex={bootindex}"
        ))
    }

    /// A raw image as a removable USB stick (`stick`) on a new xHCI
    /// controller (`xhci`, bus [`USB_BUS`]), as a real stick is plugged
    /// into a PC; boot index 1.
    pub fn usb_stick(&mut self, image: &Path, snapshot: bool) -> &mut Self {
        let mut drive = Drive::new()
            .opt("if", "none")
            .opt("id", "stick")
            .opt("format", "raw")
            .file(image);
        if snapshot {
            // writes go to a temporary overlay, the image stays as it was
            drive = drive.opt("snapshot", "on");
        }
        self.device("qemu-xhci,id=xhci")
            .drive(&drive)
            .device(&format!(
                "usb-storage,bus={USB_BUS},drive=stick,removable=on,bootindex=1"
            ))
    }

    /// `-chardev` backend `id`.
    pub fn chardev(&mut self, id: &str, backend: &Chardev) -> &mut Self {
        self.opt("-chardev", backend.value(id))
    }

    /// The first serial port on chardev `backend` named `id`.
    pub fn serial_chardev(&mut self, id: &str, backend: &Chardev) -> &mut Self {
        self.chardev(id, backend)
            .opt("-serial", format!("chardev:{id}"))
    }

    /// `-serial stdio`: the first serial port on QEMU's stdin/stdout.
    pub fn serial_stdio(&mut self) -> &mut Self {
        self.opt("-serial", "stdio")
    }

    /// A QMP monitor listening on the Unix socket `path` (chardev `id`).
    pub fn qmp(&mut self, id: &str, path: &Path) -> &mut Self {
        self.chardev(id, &Chardev::SocketServer(path.to_path_buf()))
            .opt("-mon", format!("chardev={id},mode=control"))
    }

    /// `-monitor none`: no human monitor.
    pub fn no_monitor(&mut self) -> &mut Self {
        self.opt("-monitor", "none")
    }

    /// `-display none`: no window; devices still draw (screenshots, VNC).
    pub fn display_none(&mut self) -> &mut Self {
        self.opt("-display", "none")
    }

    /// `-nographic`: no display; serial and monitor on stdio.
    pub fn nographic(&mut self) -> &mut Self {
        self.arg("-nographic")
    }

    /// `-vga`: the display adapter by QEMU's short name (`std`, `none`).
    pub fn vga(&mut self, kind: &str) -> &mut Self {
        self.opt("-vga", kind)
    }

    /// QEMU's VNC server on the Unix socket `path`.
    pub fn vnc_unix(&mut self, path: &Path) -> &mut Self {
        self.opt("-vnc", format!("unix:{}", escape_path(path)))
    }

    /// The firmware's debug port ([`DEBUGCON_IOBASE`]) written to `log`
    /// through chardev `id`.
    pub fn debugcon(&mut self, id: &str, log: &Path) -> &mut Self {
        self.chardev(id, &Chardev::File(log.to_path_buf()))
            .device(&format!(
                "isa-debugcon,iobase={DEBUGCON_IOBASE},chardev={id}"
            ))
    }

    /// User-mode networking (`net0`) behind a `model` NIC; without
    /// `option_rom` the NIC gets no ROM (no network boot), for a QEMU
    /// installed without iPXE.
    pub fn user_net(&mut self, model: &str, option_rom: bool) -> &mut Self {
        let rom = if option_rom { "" } else { ",romfile=" };
        self.opt("-netdev", "user,id=net0")
            .device(&format!("{model},netdev=net0{rom}"))
    }

    /// A pcap dump of the [`QemuCommand::user_net`] traffic to `pcap`.
    pub fn net_dump(&mut self, pcap: &Path) -> &mut Self {
        self.opt(
            "-object",
            format!(
                "filter-dump,id=dump0,netdev=net0,file={}",
                escape_path(pcap)
            ),
        )
    }

    /// A TPM (TIS) backed by swtpm, whose control socket is `socket`.
    pub fn tpm_emulator(&mut self, socket: &Path) -> &mut Self {
        self.chardev("chrtpm", &Chardev::SocketClient(socket.to_path_buf()))
            .opt("-tpmdev", "emulator,id=tpm0,chardev=chrtpm")
            .device("tpm-tis,tpmdev=tpm0")
    }

    /// `-trace`: the events listed in `events`, written (binary) to `file`.
    pub fn trace(&mut self, events: &Path, file: &Path) -> &mut Self {
        self.opt(
            "-trace",
            format!("events={},file={}", escape_path(events), escape_path(file)),
        )
    }

    /// `-action event=action`, e.g. `panic=exit-failure`.
    pub fn action(&mut self, event: &str, action: &str) -> &mut Self {
        self.opt("-action", format!("{event}={action}"))
    }

    /// `-rtc base=utc`.
    pub fn rtc_utc(&mut self) -> &mut Self {
        self.opt("-rtc", "base=utc")
    }
}

/// `argv` as `qemu.cmdline` holds it: one shell-quoted argument per line,
/// continued with backslashes.
pub fn cmdline_text(argv: &[String]) -> String {
    let mut out = String::new();
    for (i, arg) in argv.iter().enumerate() {
        out.push_str(&shell_quote(arg));
        out.push_str(if i + 1 < argv.len() { " \\\n  " } else { "\n" });
    }
    out
}

/// Quotes `arg` for a POSIX shell when needed.
pub fn shell_quote(arg: &str) -> String {
    let safe = !arg.is_empty()
        && arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=,:+@%".contains(c));
    if safe {
        arg.to_string()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests;
