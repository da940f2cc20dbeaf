//! The QEMU command line for one session.
//!
//! The guest gets: the ISO read-only as an AHCI CD-ROM, a VGA display (for
//! screenshots), serial to `serial.log`, a QMP monitor socket, optionally a
//! TPM through swtpm, user-mode networking (off by default) with an optional
//! pcap dump, and the trace events of the chosen level. Nothing else: no
//! default devices, and never the stick itself.

use crate::cmdline::TraceLevel;
use hiperiso_stick::qemu::{Chardev, Firmware, Machine, QemuCommand};
use std::path::PathBuf;

pub use hiperiso_stick::qemu::{Accel, shell_quote};

/// Guest firmware and its files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FirmwareFiles {
    /// OVMF: read-only code and a writable copy of the variable store.
    Uefi { code: PathBuf, vars: PathBuf },
    /// SeaBIOS; `None` uses QEMU's built-in default.
    Bios { image: Option<PathBuf> },
}

/// Everything that shapes the QEMU command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QemuPlan {
    pub binary: PathBuf,
    pub accel: Accel,
    pub ram_mb: u32,
    pub cpus: u32,
    /// Extra CPU flags, e.g. `+svm,-x2apic`, appended to the CPU model.
    pub cpu_features: Option<String>,
    pub firmware: FirmwareFiles,
    pub iso: PathBuf,
    /// Where session files go (serial.log, trace.bin, ...).
    pub session_dir: PathBuf,
    /// The QMP socket (on tmpfs: exFAT cannot hold sockets).
    pub monitor_socket: PathBuf,
    pub net: bool,
    pub net_dump: bool,
    /// The NIC's iPXE option ROM (`efi-e1000e.rom`) is installed. Without
    /// it (the stick built from source has no iPXE) the NIC gets none:
    /// QEMU starts, guests cannot network-boot.
    pub nic_rom: bool,
    /// swtpm's control socket when the guest gets a TPM.
    pub tpm_socket: Option<PathBuf>,
    pub trace_level: TraceLevel,
    /// The `trace-<level>.events` file for `trace_level`.
    pub trace_events: Option<PathBuf>,
    /// Record firmware debug output from port 0x402.
    pub firmware_log: bool,
    /// Serve the display on this Unix socket with QEMU's VNC server, for
    /// the viewer that shows it on the host's screen (`display::viewer`).
    pub vnc_socket: Option<PathBuf>,
}

impl QemuPlan {
    /// The command line, built by the stick's one QEMU builder.
    pub fn command(&self) -> QemuCommand {
        let uefi = matches!(self.firmware, FirmwareFiles::Uefi { .. });
        let cpu_model = match self.accel {
            Accel::Kvm => "host",
            Accel::Tcg => "max",
        };
        let firmware = match &self.firmware {
            FirmwareFiles::Uefi { code, vars } => Firmware::Uefi {
                code: code.clone(),
                vars: vars.clone(),
                secure: true,
            },
            FirmwareFiles::Bios { image } => Firmware::Bios {
                image: image.clone(),
            },
        };
        let dir = &self.session_dir;
        let mut q = QemuCommand::new(&self.binary);
        q.name("hiperiso-guest")
            .nodefaults()
            .no_user_config()
            .machine(&Machine::q35().accel(self.accel).smm(uefi))
            .cpu(cpu_model, self.cpu_features.as_deref().unwrap_or(""))
            .memory_mb(self.ram_mb.into())
            .smp(self.cpus)
            .firmware(&firmware)
            .cdrom("iso0", &self.iso, 0)
            .device("VGA")
            .display_none();
        if let Some(socket) = &self.vnc_socket {
            q.vnc_unix(socket);
        }
        q.serial_chardev("serial0", &Chardev::File(dir.join("serial.log")))
            .qmp("qmp0", &self.monitor_socket);
        if self.firmware_log {
            q.debugcon("debugcon0", &dir.join("firmware.log"));
        }
        if self.net {
            q.user_net("e1000e", self.nic_rom);
            if self.net_dump {
                q.net_dump(&dir.join("network.pcap"));
            }
        }
        if let Some(socket) = &self.tpm_socket {
            q.tpm_emulator(socket);
        }
        if let (Some(events), true) = (&self.trace_events, self.trace_level != TraceLevel::None) {
            q.trace(events, &dir.join("trace.bin"));
        }
        // A guest panic (pvpanic) ends the session as a failure; a guest
        // reboot ends it too, so an installer's final reboot is recorded. A
        // guest shutdown pauses QEMU so init can record the final state
        // before it quits QEMU through QMP.
        q.device("pvpanic")
            .action("panic", "exit-failure")
            .action("reboot", "shutdown")
            .action("shutdown", "pause")
            .rtc_utc();
        q
    }

    /// The full argv, program first.
    pub fn argv(&self) -> Vec<String> {
        self.command().argv()
    }

    /// `qemu.cmdline`: one shell-quoted argument per line, so the file is
    /// both readable and pasteable.
    pub fn cmdline_text(&self) -> String {
        self.command().cmdline_text()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> QemuPlan {
        QemuPlan {
            binary: "/usr/bin/qemu-system-x86_64".into(),
            accel: Accel::Kvm,
            ram_mb: 2048,
            cpus: 2,
            cpu_features: None,
            firmware: FirmwareFiles::Uefi {
                code: "/esp/OVMF_CODE.fd".into(),
                vars: "/run/hiperiso/OVMF_VARS.fd".into(),
            },
            iso: "/data/ISOs/a,b.iso".into(),
            session_dir: "/data/hiperiso/logs/a_1".into(),
            monitor_socket: "/run/hiperiso/monitor.sock".into(),
            net: false,
            net_dump: false,
            nic_rom: true,
            tpm_socket: None,
            trace_level: TraceLevel::Standard,
            trace_events: Some("/esp/trace/trace-standard.events".into()),
            firmware_log: true,
            vnc_socket: None,
        }
    }

    fn value_after(argv: &[String], flag: &str) -> Vec<String> {
        argv.windows(2)
            .filter(|w| w[0] == flag)
            .map(|w| w[1].clone())
            .collect()
    }

    #[test]
    fn uefi_kvm_defaults() {
        let argv = plan().argv();
        assert_eq!(argv[0], "/usr/bin/qemu-system-x86_64");
        assert!(argv.contains(&"-nodefaults".to_string()));
        assert_eq!(value_after(&argv, "-machine"), ["q35,accel=kvm,smm=on"]);
        assert_eq!(value_after(&argv, "-cpu"), ["host"]);
        assert_eq!(value_after(&argv, "-m"), ["2048"]);
        assert_eq!(value_after(&argv, "-smp"), ["2"]);
        let drives = value_after(&argv, "-drive");
        assert_eq!(drives.len(), 3);
        assert_eq!(
            drives[0],
            "if=pflash,format=raw,unit=0,readonly=on,file=/esp/OVMF_CODE.fd"
        );
        assert!(drives[1].ends_with("file=/run/hiperiso/OVMF_VARS.fd"));
        assert!(!drives[1].contains("readonly"));
        assert_eq!(
            drives[2],
            "if=none,id=iso0,media=cdrom,readonly=on,format=raw,file=/data/ISOs/a,,b.iso",
            "ISO read-only, comma escaped"
        );
        let devices = value_after(&argv, "-device");
        assert!(devices.contains(&"ide-cd,drive=iso0,bus=ide.0,bootindex=0".to_string()));
        assert!(devices.contains(&"isa-debugcon,iobase=0x402,chardev=debugcon0".to_string()));
        assert!(
            !devices
                .iter()
                .any(|d| d.starts_with("e1000") || d.starts_with("tpm"))
        );
        assert!(
            value_after(&argv, "-netdev").is_empty(),
            "network off by default"
        );
        assert!(
            value_after(&argv, "-vnc").is_empty(),
            "no VNC server unless asked"
        );
        let chardevs = value_after(&argv, "-chardev");
        assert!(
            chardevs.contains(&"file,id=serial0,path=/data/hiperiso/logs/a_1/serial.log".into())
        );
        assert!(
            chardevs.contains(
                &"socket,id=qmp0,path=/run/hiperiso/monitor.sock,server=on,wait=off".into()
            )
        );
        assert_eq!(
            value_after(&argv, "-trace"),
            ["events=/esp/trace/trace-standard.events,file=/data/hiperiso/logs/a_1/trace.bin"]
        );
        assert!(
            value_after(&argv, "-global")
                .contains(&"driver=cfi.pflash01,property=secure,value=on".into())
        );
        // No disk other than the CD-ROM and the firmware reaches the guest.
        assert!(!argv.iter().any(|a| a.contains("/dev/")));
    }

    #[test]
    fn bios_tcg_features_net_tpm() {
        let mut p = plan();
        p.accel = Accel::Tcg;
        p.firmware = FirmwareFiles::Bios {
            image: Some("/usr/share/seabios/bios-256k.bin".into()),
        };
        p.cpu_features = Some("+svm,-x2apic".into());
        p.net = true;
        p.net_dump = true;
        p.tpm_socket = Some("/run/hiperiso/swtpm.sock".into());
        p.trace_level = TraceLevel::None;
        p.firmware_log = false;
        p.vnc_socket = Some("/run/hiperiso/vnc.sock".into());
        let argv = p.argv();
        assert_eq!(value_after(&argv, "-vnc"), ["unix:/run/hiperiso/vnc.sock"]);
        assert_eq!(value_after(&argv, "-machine"), ["q35,accel=tcg,smm=off"]);
        assert_eq!(value_after(&argv, "-cpu"), ["max,+svm,-x2apic"]);
        assert_eq!(
            value_after(&argv, "-bios"),
            ["/usr/share/seabios/bios-256k.bin"]
        );
        assert!(!argv.iter().any(|a| a.contains("pflash")));
        assert_eq!(value_after(&argv, "-netdev"), ["user,id=net0"]);
        assert!(value_after(&argv, "-device").contains(&"e1000e,netdev=net0".into()));
        p.nic_rom = false;
        assert!(value_after(&p.argv(), "-device").contains(&"e1000e,netdev=net0,romfile=".into()));
        assert_eq!(
            value_after(&argv, "-object"),
            ["filter-dump,id=dump0,netdev=net0,file=/data/hiperiso/logs/a_1/network.pcap"]
        );
        assert_eq!(
            value_after(&argv, "-tpmdev"),
            ["emulator,id=tpm0,chardev=chrtpm"]
        );
        assert!(value_after(&argv, "-device").contains(&"tpm-tis,tpmdev=tpm0".into()));
        assert!(value_after(&argv, "-trace").is_empty());
        assert!(!argv.iter().any(|a| a.contains("debugcon")));
    }

    #[test]
    fn cmdline_text_is_quoted() {
        let mut p = plan();
        p.iso = "/data/ISOs/my image's.iso".into();
        let text = p.cmdline_text();
        assert!(text.starts_with("/usr/bin/qemu-system-x86_64 \\\n  -name"));
        assert!(text.contains(r#"'if=none,id=iso0,media=cdrom,readonly=on,format=raw,file=/data/ISOs/my image'\''s.iso'"#), "{text}");
        assert!(text.ends_with("rtc \\\n  base=utc\n") || text.ends_with("base=utc\n"));
    }

    /// Every line of the shipped trace-*.events files names a real QEMU 7.2
    /// trace event (or a glob matching at least one).
    #[test]
    fn trace_event_files_name_real_events() {
        let all = "/usr/share/qemu/trace-events-all";
        if !hiperiso_prereq::file(all, "qemu-system-common") {
            return;
        }
        let text = std::fs::read_to_string(all).unwrap();
        let known: Vec<&str> = text
            .lines()
            .filter_map(|l| l.split_once('('))
            .map(|(name, _)| name.trim())
            .filter(|n| !n.is_empty() && !n.starts_with('#') && !n.contains(' '))
            .collect();
        assert!(known.len() > 1000);
        let dir = format!(
            "{}/../overlays/esp/{}",
            env!("CARGO_MANIFEST_DIR"),
            hiperiso_stick::paths::esp::TRACE_DIR
        );
        let mut previous: Vec<String> = Vec::new();
        for level in ["standard", "detailed", "full"] {
            let file = format!("{dir}/trace-{level}.events");
            let text = std::fs::read_to_string(&file).unwrap();
            let events: Vec<&str> = text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .collect();
            for event in &events {
                assert!(
                    known.iter().any(|k| crate::glob::matches(event, k)),
                    "{file}: {event} is not a QEMU trace event"
                );
            }
            for event in &previous {
                assert!(
                    events.iter().any(|e| crate::glob::matches(e, event)),
                    "{level} must trace {event} too"
                );
            }
            previous = events.iter().map(|e| e.to_string()).collect();
        }
    }
}
