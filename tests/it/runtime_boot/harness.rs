//! Booting hiperiso-init in the outer VM, and reading the session it wrote.

use super::*;
use hiperiso_stick::qemu::escape_path;
use std::os::unix::net::UnixStream;
pub(crate) const GOOD_CONFIG: &str = r#"{
  "control": {"default_ram": 256, "default_cpus": 1, "screenshot_interval": 2, "session_timeout": 120},
  "iso_overrides": {"startfail*.iso": {"cpu_features": "+hiperiso-no-such-flag"}}
}"#;

/// What one outer boot left behind.
pub(crate) struct BootResult {
    pub(crate) console: String,
    pub(crate) image: PathBuf,
    pub(crate) _dir: tempfile::TempDir,
}

/// A fresh data disk holding the ISOs and `config`, then one outer boot.
pub(crate) fn boot(cmdline: &str, cpu: &str, config: &str) -> BootResult {
    boot_on(Path::new("qemu-system-x86_64"), cmdline, cpu, config)
}

/// [`boot`] with the outer VM on `qemu`.
pub(crate) fn boot_on(qemu: &Path, cmdline: &str, cpu: &str, config: &str) -> BootResult {
    boot_with(qemu, cmdline, cpu, config, &Extras::default())
}

/// More for one boot than the usual.
#[derive(Default)]
pub(crate) struct Extras {
    /// Images copied to `/ISOs/` besides the fixture's.
    pub(crate) isos: Vec<PathBuf>,
    /// Press the outer machine's ACPI power button (QMP `system_powerdown`)
    /// this long after init says the guest runs.
    pub(crate) power_button_after: Option<Duration>,
    pub(crate) data_mib: Option<u64>,
    /// Typed on the serial console once a shell's prompt shows.
    pub(crate) shell_input: Option<&'static str>,
}

/// The prompt of hiperiso-init's shell (its `PS1`).
pub(crate) const SHELL_PROMPT: &str = "hiperiso# ";

/// [`boot_on`] with [`Extras`].
pub(crate) fn boot_with(
    qemu: &Path,
    cmdline: &str,
    cpu: &str,
    config: &str,
    extras: &Extras,
) -> BootResult {
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
    write_data_volume(&image, size, &tree);

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
        .qmp("qmp", &qmp_socket);
    // The console: a file, or a socket to type on that also logs to it.
    let console_socket = dir.path().join("console.sock");
    if extras.shell_input.is_some() {
        outer.args([
            "-chardev".to_string(),
            format!(
                "socket,id=console,path={},server=on,wait=off,logfile={}",
                escape_path(&console_socket),
                escape_path(&console)
            ),
            "-serial".to_string(),
            "chardev:console".to_string(),
        ]);
    } else {
        outer.serial_chardev("console", &Chardev::File(console.clone()));
    }
    let mut child = hiperiso_tests::stick::spawn_quiet(&outer);
    let deadline = Instant::now() + OUTER_TIMEOUT;
    let mut guest_running_at: Option<Instant> = None;
    let mut pressed = false;
    let mut typed: Option<UnixStream> = None;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if let Some(input) = extras.shell_input
            && typed.is_none()
            && String::from_utf8_lossy(&fs::read(&console).unwrap_or_default())
                .contains(SHELL_PROMPT)
        {
            let mut stream = UnixStream::connect(&console_socket).expect("the console socket");
            stream.write_all(input.as_bytes()).unwrap();
            typed = Some(stream);
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
    if extras.shell_input.is_some() {
        assert!(typed.is_some(), "no shell prompt:\n{console}");
    }
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
pub(crate) struct SessionFiles {
    pub(crate) reader: ExfatReader<File>,
    pub(crate) dir: String,
    pub(crate) info: SessionInfo,
    pub(crate) index: Vec<IndexEntry>,
}

impl SessionFiles {
    pub(crate) fn open(outcome: &BootResult) -> SessionFiles {
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

    pub(crate) fn text(&mut self, name: &str) -> String {
        let path = format!("{}/{name}", self.dir);
        String::from_utf8_lossy(&read_all(&mut self.reader, &path)).into_owned()
    }

    /// The text of a gzipped session file (`gzip -d`).
    pub(crate) fn gunzip(&mut self, name: &str) -> String {
        hiperiso_tests::gunzip(&read_all(&mut self.reader, &format!("{}/{name}", self.dir)))
    }

    pub(crate) fn exists(&mut self, name: &str) -> bool {
        self.reader
            .metadata(&format!("{}/{name}", self.dir))
            .is_ok()
    }

    /// The event names the analysis decoded from the trace (`report.json`).
    pub(crate) fn trace_events(&mut self) -> Vec<String> {
        let report: serde_json::Value = serde_json::from_str(&self.text("report.json")).unwrap();
        report["io"]["event_counts"]
            .as_array()
            .unwrap_or_else(|| panic!("no decoded trace in report.json: {}", report["io"]))
            .iter()
            .map(|pair| pair[0].as_str().unwrap().to_string())
            .collect()
    }

    /// The files below `hw/<sub>`, relative to `hw/`, sorted.
    pub(crate) fn hw_files(&mut self, sub: &str) -> Vec<String> {
        let dir = format!("{}/hw{sub}", self.dir);
        let mut out = Vec::new();
        for entry in self.reader.read_dir(&dir).unwrap_or_default() {
            let name = format!("{sub}/{}", entry.name);
            if entry.is_dir {
                out.extend(self.hw_files(&name));
            } else {
                out.push(name[1..].to_string());
            }
        }
        out.sort();
        out
    }

    pub(crate) fn list(&mut self, name: &str) -> Vec<String> {
        let mut names: Vec<String> = self
            .reader
            .read_dir(&format!("{}/{name}", self.dir))
            .map(|v| v.into_iter().map(|e| e.name).collect())
            .unwrap_or_default();
        names.sort();
        names
    }

    /// The guarantees of every session, successful or not.
    pub(crate) fn check_always_present(&mut self) {
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
        let hw_files = self.hw_files("");
        crate::session_schema::check_session_files(|name| self.text(name), Some(&hw_files));
        let env = self.text("env.txt");
        for key in [
            "cpu_model=",
            "cpu_cores=",
            "ram_mb=",
            "virtualization=",
            "kvm=",
        ] {
            assert!(
                env.lines().any(|l| l.starts_with(key)),
                "env.txt lacks {key}: {env}"
            );
        }
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
    pub(crate) fn check_timeline(&mut self) -> Vec<TimelineEntry> {
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
    pub(crate) fn last_screen_text(&mut self, timeline: &[TimelineEntry]) -> String {
        let name = timeline
            .iter()
            .rev()
            .find_map(|e| e.text.clone())
            .unwrap_or_else(|| panic!("no text-mode picture: {timeline:?}"));
        let text = self.text(&format!("screenshots/{name}"));
        eprintln!("screenshots/{name}:\n{text}");
        text
    }

    pub(crate) fn check_failure(&mut self, kind: FailureKind, fatal: bool) -> String {
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
    pub(crate) fn check_guest_ran(&mut self, marker: &str, firmware: &str, accel: &str) {
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
            "host_diskstats.txt",
            "host_cpu_cache.txt",
            "host_cpu_topology.txt",
            "host_numa.txt",
            "host_iommu.txt",
            "host_kvm.txt",
            "host_efi.txt",
            "host_kernel_config.gz",
            "acpi",
            "smbios",
            "qemu_pci.txt",
            "qemu_qtree.txt",
            "qemu_cpuid.txt",
            "qemu_ioapic.txt",
            "qemu_lapic.txt",
            "qemu_registers.txt",
            "qemu_tlb.txt",
            "qemu_numa.txt",
            "qemu_hpet.txt",
            "qemu_qomtree.txt",
            "qemu_smbios.txt",
            "qemu_monitor_raw.txt",
            "pci_summary.json",
        ] {
            assert!(
                hw.contains(&name.to_string()),
                "hw/{name} missing: {hw:?}; warnings: {:?}",
                self.info.warnings
            );
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
        if self.info.trace_level == "standard" {
            let events = self.trace_events();
            assert!(
                !events.iter().any(|e| DETAILED_EVENTS.contains(&e.as_str())),
                "detailed events at the standard tier: {events:?}"
            );
        }
        let timing = self.text("timing.dat");
        for phase in ["qemu_started\t", "qemu_exited\t"] {
            assert!(timing.lines().any(|l| l.starts_with(phase)), "{timing}");
        }
        if accel == "kvm" {
            let kvm = self.text("hw/host_kvm.txt");
            assert!(kvm.starts_with("/dev/kvm: present\n"), "{kvm}");
        }
        // The SMBIOS tables the firmware (SeaBIOS or OVMF) gave the guest,
        // from its memory.
        let smbios = self.text("hw/qemu_smbios.txt");
        let needles = [
            "\nentry_point: ",
            "DMI type 0 (BIOS information)",
            "DMI type 1 (system information)",
            "string 1: \"QEMU\"",
            "\"Standard PC (Q35 + ICH9, 2009)\"",
            "DMI type 127 (end of table)",
        ];
        for needle in needles {
            assert!(
                smbios.contains(needle),
                "no {needle:?} in qemu_smbios.txt:\n{smbios}"
            );
        }
        let config = self.gunzip("hw/host_kernel_config.gz");
        assert!(config.contains("\nCONFIG_KVM=m\n"), "{config}");
        let cpuid = self.text("hw/qemu_cpuid.txt");
        assert!(
            cpuid.lines().any(|l| l.starts_with("eax=0x00000001 ")),
            "{cpuid}"
        );
        let raw = self.text("hw/qemu_monitor_raw.txt");
        for section in [
            "### info registers -a\n",
            "### info pic\n",
            "### info lapic 0\n",
        ] {
            assert!(
                raw.contains(section),
                "qemu_monitor_raw.txt lacks {section:?}"
            );
        }
        assert!(
            !self
                .info
                .warnings
                .iter()
                .any(|w| w.starts_with("guest inventory")),
            "{:?}",
            self.info.warnings
        );
    }
}

pub(crate) fn read_all(reader: &mut ExfatReader<File>, path: &str) -> Vec<u8> {
    let mut out = Vec::new();
    reader
        .read_file(path, &mut out)
        .unwrap_or_else(|e| panic!("{path}: {e}"));
    out
}

/// An exFAT data volume of `size` bytes at `image` holding `tree`, labelled
/// HIPERISO with the serial grub.cfg and the command lines use.
pub(crate) fn write_data_volume(image: &Path, size: u64, tree: &Path) {
    let mut file = File::create(image).unwrap();
    file.set_len(size).unwrap();
    let opts = ExfatOptions {
        label: "HIPERISO".into(),
        volume_serial: DATA_SERIAL,
        timestamp: 1_700_000_000,
    };
    exfat::format(&mut file, size, Some(tree), &opts).unwrap();
    file.flush().unwrap();
}
