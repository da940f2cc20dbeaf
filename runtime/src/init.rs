//! `hiperiso-init`, PID 1 of the stick's initramfs: find the data partition,
//! record a session, boot the chosen ISO in QEMU, and finish the session
//! whatever happens (DESIGN.md §5).
//!
//! Every path below ends in [`Session::finish`], which writes the final
//! `session.json`, `index.jsonl`, `FAILURE.txt` on failure and
//! `SESSION_COMPLETE` last.

use crate::blockid::{self, FsIdentity};
use crate::cmdline::{AfterAction, KernelCmdline, PartitionSpec};
use crate::config::{Config, EffectiveSettings, Firmware, LoadedConfig};
use crate::display::viewer;
use crate::eltorito;
use crate::grubenv;
use crate::hw;
use crate::kvm;
use crate::modules;
use crate::qemu::{Accel, FirmwareFiles, QemuPlan};
use crate::qmp::Qmp;
use crate::session::{
    self, Failure, FailureKind, IndexEntry, Outcome, Phase, SCHEMA_VERSION, SessionInfo, Stage,
    Status, Timing, files,
};
use crate::sys;
use hiperiso_stick::error_chain;
use std::fs::{self, File};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

/// Where the data partition is mounted (read-write).
pub const DATA_MOUNT: &str = "/mnt/data";
/// Where the ESP is mounted (read-only), when `hiperiso.esp=` names it.
pub const ESP_MOUNT: &str = "/mnt/esp";
/// Scratch space on tmpfs: QMP socket, OVMF variables, swtpm state.
pub const RUN_DIR: &str = "/run/hiperiso";
/// The session goes here when there is no data partition.
pub const TMPFS_LOGS: &str = "/run/hiperiso/logs";
/// Below the data partition's root.
pub const CONFIG_FILE: &str = "hiperiso/hiperiso.json";
pub const GRUBENV_FILE: &str = "hiperiso/grubenv";
pub const LOGS_DIR: &str = "hiperiso/logs";
/// Default seconds to wait for the data partition (`hiperiso.wait=`).
pub const DEFAULT_DATA_WAIT: u32 = 20;
/// Seconds after QEMU starts before the guest inventory is taken.
const GUEST_INVENTORY_DELAY: Duration = Duration::from_secs(3);
const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(5);
/// QMP must answer within this time after QEMU starts.
const QMP_CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

const QEMU_BINARIES: &[&str] = &[
    "/usr/bin/qemu-system-x86_64",
    "/usr/local/bin/qemu-system-x86_64",
    "/bin/qemu-system-x86_64",
];
/// (code, vars) pairs below the ESP and in the initramfs, in order of preference.
const ESP_OVMF: (&str, &str) = ("EFI/hiperiso/OVMF_CODE.fd", "EFI/hiperiso/OVMF_VARS.fd");
const INITRAMFS_OVMF: &[(&str, &str)] = &[
    (
        "/usr/share/OVMF/OVMF_CODE_4M.fd",
        "/usr/share/OVMF/OVMF_VARS_4M.fd",
    ),
    (
        "/usr/share/OVMF/OVMF_CODE.fd",
        "/usr/share/OVMF/OVMF_VARS.fd",
    ),
    (
        "/usr/share/hiperiso/OVMF_CODE.fd",
        "/usr/share/hiperiso/OVMF_VARS.fd",
    ),
];
const SEABIOS: &[&str] = &[
    "/usr/share/seabios/bios-256k.bin",
    "/usr/share/qemu/bios-256k.bin",
];
/// QEMU's VNC server for the viewer, below [`RUN_DIR`].
const VNC_SOCKET: &str = "vnc.sock";
/// The viewer's measurements, in the session directory.
const DISPLAY_JSON: &str = "display.json";
const ESP_TRACE_DIR: &str = "EFI/hiperiso/trace";
const INITRAMFS_TRACE_DIR: &str = "/usr/share/hiperiso/trace";

/// Print a message on every console: the kernel's console and, when it is
/// a different device, the first serial port.
pub fn say(message: &str) {
    let line = format!("hiperiso: {message}\n");
    let _ = std::io::stderr().write_all(line.as_bytes());
    if let Ok(mut kmsg) = fs::OpenOptions::new().write(true).open("/dev/kmsg") {
        let _ = kmsg.write_all(format!("<5>hiperiso: {message}\n").as_bytes());
    }
}

/// A session being recorded.
pub struct Session {
    pub dir: PathBuf,
    pub logs_dir: PathBuf,
    pub info: SessionInfo,
    timing: Timing,
    init_log: Vec<String>,
}

impl Session {
    fn create(
        logs_dir: &Path,
        iso: &str,
        cmdline_text: &str,
    ) -> Result<Session, session::SessionError> {
        let now = sys::unix_seconds();
        let dir = session::create_session_dir(logs_dir, &session::session_dir_name(iso, now))?;
        let id = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let info = SessionInfo {
            schema: SCHEMA_VERSION,
            id,
            iso: iso.to_string(),
            iso_size: None,
            started_utc: session::utc_rfc3339(now),
            ended_utc: None,
            hiperiso_version: env!("CARGO_PKG_VERSION").to_string(),
            kernel_cmdline: cmdline_text.trim().to_string(),
            host_kernel: sys::kernel_release(),
            accel: None,
            firmware: None,
            firmware_reason: None,
            trace_level: String::new(),
            ram_mb: 0,
            cpus: 0,
            net: false,
            net_dump: false,
            tpm: false,
            matched_overrides: Vec::new(),
            config_warnings: Vec::new(),
            qemu_exit_code: None,
            qemu_signal: None,
            outcome: Outcome::Running,
            failures: Vec::new(),
            warnings: Vec::new(),
            guest_events: Vec::new(),
            screenshots: 0,
        };
        Ok(Session {
            dir,
            logs_dir: logs_dir.to_path_buf(),
            info,
            timing: Timing {
                schema: SCHEMA_VERSION,
                phases: Vec::new(),
            },
            init_log: Vec::new(),
        })
    }

    /// Print and keep a line for `init.log`.
    fn say(&mut self, message: &str) {
        say(message);
        self.init_log
            .push(format!("[{:>8} ms] {message}", sys::uptime_ms()));
    }

    fn write_json<T: serde::Serialize>(&mut self, name: &'static str, value: &T) {
        let result = session::to_json(name, value)
            .and_then(|text| session::write_atomic(&self.dir.join(name), text.as_bytes()));
        if let Err(e) = result {
            say(&error_chain(&e));
        }
    }

    fn save_info(&mut self) {
        let info = self.info.clone();
        self.write_json(files::SESSION_JSON, &info);
    }

    /// Rewrite `status.json` (and `session.json`) for a new stage.
    fn stage(&mut self, stage: Stage, message: &str) {
        self.say(message);
        let status = Status {
            schema: SCHEMA_VERSION,
            stage,
            updated_utc: session::utc_rfc3339(sys::unix_seconds()),
            uptime_ms: sys::uptime_ms(),
            message: message.to_string(),
        };
        self.write_json(files::STATUS_JSON, &status);
        self.save_info();
    }

    fn phase(&mut self, name: &str, start_ms: u64) {
        self.timing.phases.push(Phase {
            name: name.to_string(),
            start_ms,
            end_ms: sys::uptime_ms(),
        });
    }

    fn fail(&mut self, kind: FailureKind, fatal: bool, message: String) {
        self.say(&format!("FAILURE: {message}"));
        self.info.failures.push(Failure {
            kind,
            fatal,
            message,
        });
        if fatal {
            self.info.outcome = Outcome::Failure;
        }
    }

    fn warn(&mut self, message: String) {
        self.say(&format!("warning: {message}"));
        self.info.warnings.push(message);
    }

    /// Final files, in order; `SESSION_COMPLETE` last. The analyzer reads
    /// the session's files, so they are written before it runs.
    fn finish(&mut self) {
        if self.info.outcome == Outcome::Running {
            self.info.outcome = Outcome::Success;
        }
        let final_stage = match self.info.outcome {
            Outcome::Failure => Stage::Failed,
            _ => Stage::Complete,
        };
        self.info.ended_utc = Some(session::utc_rfc3339(sys::unix_seconds()));
        if !self.info.failures.is_empty() {
            let text = session::failure_text(&self.info);
            self.write_file(files::FAILURE_TXT, text.as_bytes());
        }
        self.write_timing();
        self.stage(Stage::Analysis, "analyzing the session");
        let start = sys::uptime_ms();
        if let Err(e) = crate::analyze::analyze(&self.dir) {
            self.warn(format!("analysis failed: {}", error_chain(&e)));
            if let Err(e) = session::write_minimal_report(&self.dir, &self.info) {
                self.warn(error_chain(&e));
            }
        }
        self.phase("analysis", start);
        self.write_timing();
        if !self.info.failures.is_empty() {
            // Rewritten: warnings from the analysis may have been added.
            let text = session::failure_text(&self.info);
            self.write_file(files::FAILURE_TXT, text.as_bytes());
        }
        let message = match self.info.outcome {
            Outcome::Failure => "session failed; see FAILURE.txt",
            _ => "session complete",
        };
        self.stage(final_stage, message);
        match serde_json::to_string(&IndexEntry::from(&self.info)) {
            Ok(line) => {
                if let Err(e) = session::append_line(&self.logs_dir.join(files::INDEX_JSONL), &line)
                {
                    say(&error_chain(&e));
                }
            }
            Err(e) => say(&format!("cannot serialize index entry: {e}")),
        }
        let log = self.init_log.join("\n") + "\n";
        self.write_file("init.log", log.as_bytes());
        let stamp = format!("{}\n", self.info.ended_utc.clone().unwrap_or_default());
        self.write_file(files::SESSION_COMPLETE, stamp.as_bytes());
        sys::sync_all();
    }

    fn write_timing(&mut self) {
        let timing = self.timing.clone();
        self.write_json(files::TIMING_JSON, &timing);
        self.write_file(files::TIMING_DAT, timing.to_dat().as_bytes());
    }

    fn write_file(&mut self, name: &str, content: &[u8]) {
        if let Err(e) = session::write_atomic(&self.dir.join(name), content) {
            say(&error_chain(&e));
        }
    }
}

/// Mount the pseudo filesystems PID 1 needs.
fn mount_basics() {
    let mounts: &[(&str, &str, &str)] = &[
        ("proc", "/proc", "proc"),
        ("sysfs", "/sys", "sysfs"),
        ("devtmpfs", "/dev", "devtmpfs"),
        ("tmpfs", "/run", "tmpfs"),
        ("devpts", "/dev/pts", "devpts"),
    ];
    for (source, target, fstype) in mounts {
        match sys::mount(source, Path::new(target), fstype, 0, "") {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {}
            Err(e) => say(&format!("cannot mount {fstype} on {target}: {e}")),
        }
    }
    let _ = fs::create_dir_all(RUN_DIR);
}

/// Load the initramfs' kernel modules: the list file when the builder
/// shipped one, otherwise every `.ko` below `/lib/modules/<release>`.
fn load_modules(release: &str) -> modules::LoadReport {
    let base = PathBuf::from("/lib/modules").join(release);
    if !base.is_dir() {
        return modules::LoadReport::default();
    }
    let lists = [
        PathBuf::from("/etc/hiperiso/modules.load"),
        base.join("hiperiso.load"),
        base.join("modules.load"),
    ];
    let list = lists
        .iter()
        .find_map(|p| fs::read_to_string(p).ok())
        .map(|text| modules::read_list(&text, &base));
    let mut wanted = list.unwrap_or_default();
    // Whatever the list says, every module in the initramfs is a candidate:
    // listed ones first, in order.
    for found in modules::find_modules(&base) {
        if !wanted.contains(&found) {
            wanted.push(found);
        }
    }
    modules::load_all(&wanted)
}

/// A block device with a filesystem we recognise.
#[derive(Debug, Clone)]
pub struct FoundPartition {
    pub device: PathBuf,
    pub identity: FsIdentity,
}

fn spec_matches(spec: &PartitionSpec, device: &Path, id: &FsIdentity) -> bool {
    match spec {
        PartitionSpec::Uuid(uuid) => id.uuid.eq_ignore_ascii_case(uuid),
        PartitionSpec::Label(label) => id
            .label
            .as_deref()
            .is_some_and(|l| l.eq_ignore_ascii_case(label)),
        PartitionSpec::Device(path) => device == Path::new(path),
    }
}

/// Scan `/sys/class/block` once for a partition matching `spec`.
pub fn scan_for(spec: &PartitionSpec) -> Option<FoundPartition> {
    let mut names: Vec<String> = fs::read_dir("/sys/class/block")
        .ok()?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with("ram") && !n.starts_with("zram"))
        .collect();
    names.sort();
    for name in names {
        let device = PathBuf::from("/dev").join(&name);
        let Ok(mut file) = File::open(&device) else {
            continue;
        };
        if let Ok(Some(identity)) = blockid::identify(&mut file)
            && spec_matches(spec, &device, &identity)
        {
            return Some(FoundPartition { device, identity });
        }
    }
    None
}

/// Wait up to `seconds` for a partition matching `spec` (slow USB sticks).
pub fn wait_for(spec: &PartitionSpec, seconds: u32) -> Option<FoundPartition> {
    let deadline = Instant::now() + Duration::from_secs(u64::from(seconds));
    loop {
        if let Some(found) = scan_for(spec) {
            return Some(found);
        }
        if Instant::now() >= deadline {
            return None;
        }
        sleep(Duration::from_millis(250));
    }
}

/// Mount with UTF-8 file names; the kernel's default FAT character set
/// (often `ascii`) may be a module the initramfs lacks, so `iocharset=utf8`
/// comes first and the kernel's defaults second.
fn mount_partition(found: &FoundPartition, target: &Path, read_only: bool) -> std::io::Result<()> {
    let flags = if read_only { libc::MS_RDONLY } else { 0 } | libc::MS_NOATIME;
    let device = found.device.display().to_string();
    let fs_type = found.identity.fs_type.mount_name();
    sys::mount(&device, target, fs_type, flags, "iocharset=utf8")
        .or_else(|_| sys::mount(&device, target, fs_type, flags, ""))
}

fn first_existing(candidates: &[PathBuf]) -> Option<PathBuf> {
    candidates.iter().find(|p| p.is_file()).cloned()
}

/// Firmware files for the guest: the ESP's copy first (so `install --update`
/// can replace it), then the initramfs'.
fn firmware_files(firmware: Firmware, esp: Option<&Path>) -> Result<FirmwareFiles, String> {
    match firmware {
        Firmware::Uefi => {
            let mut pairs: Vec<(PathBuf, PathBuf)> = Vec::new();
            if let Some(esp) = esp {
                pairs.push((esp.join(ESP_OVMF.0), esp.join(ESP_OVMF.1)));
            }
            pairs.extend(
                INITRAMFS_OVMF
                    .iter()
                    .map(|(c, v)| (PathBuf::from(c), PathBuf::from(v))),
            );
            let (code, vars_template) = pairs
                .into_iter()
                .find(|(c, v)| c.is_file() && v.is_file())
                .ok_or(
                    "no OVMF firmware (OVMF_CODE.fd + OVMF_VARS.fd) on the ESP or in the initramfs",
                )?;
            // The guest may write its variables: give it a private copy.
            let vars = Path::new(RUN_DIR).join("OVMF_VARS.fd");
            fs::copy(&vars_template, &vars).map_err(|e| {
                format!(
                    "cannot copy {} to {}: {e}",
                    vars_template.display(),
                    vars.display()
                )
            })?;
            Ok(FirmwareFiles::Uefi { code, vars })
        }
        Firmware::Bios => Ok(FirmwareFiles::Bios {
            image: first_existing(&SEABIOS.iter().map(PathBuf::from).collect::<Vec<_>>()),
        }),
    }
}

fn trace_events_file(level: &str, esp: Option<&Path>) -> Option<PathBuf> {
    let name = format!("trace-{level}.events");
    let mut candidates = Vec::new();
    if let Some(esp) = esp {
        candidates.push(esp.join(ESP_TRACE_DIR).join(&name));
    }
    candidates.push(Path::new(INITRAMFS_TRACE_DIR).join(&name));
    first_existing(&candidates)
}

/// Start swtpm for a TPM 2.0 guest; returns its socket.
fn start_swtpm() -> Result<(Child, PathBuf), String> {
    let state = Path::new(RUN_DIR).join("tpm");
    fs::create_dir_all(&state).map_err(|e| format!("cannot create {}: {e}", state.display()))?;
    let socket = Path::new(RUN_DIR).join("swtpm.sock");
    let child = Command::new("swtpm")
        .args(["socket", "--tpm2", "--tpmstate"])
        .arg(format!("dir={}", state.display()))
        .args(["--ctrl"])
        .arg(format!("type=unixio,path={}", socket.display()))
        .stdin(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start swtpm: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(5);
    while !socket.exists() {
        if Instant::now() > deadline {
            return Err(format!("swtpm did not create {}", socket.display()));
        }
        sleep(Duration::from_millis(50));
    }
    Ok((child, socket))
}

fn env_txt(
    cmdline: &KernelCmdline,
    data: Option<&FoundPartition>,
    esp: Option<&FoundPartition>,
    config_state: &str,
    modules: &modules::LoadReport,
) -> String {
    let part = |p: Option<&FoundPartition>| match p {
        Some(p) => format!(
            "{} ({}, UUID={}, label={})",
            p.device.display(),
            p.identity.fs_type.mount_name(),
            p.identity.uuid,
            p.identity.label.as_deref().unwrap_or("-")
        ),
        None => "none".to_string(),
    };
    let mut out = String::new();
    out.push_str(&format!("hiperiso_version={}\n", env!("CARGO_PKG_VERSION")));
    out.push_str(&format!("kernel_release={}\n", sys::kernel_release()));
    out.push_str(&format!(
        "kernel_cmdline={}\n",
        fs::read_to_string("/proc/cmdline")
            .unwrap_or_default()
            .trim()
    ));
    out.push_str(&format!("data_spec={}\n", cmdline.data));
    out.push_str(&format!("data_partition={}\n", part(data)));
    out.push_str(&format!("esp_partition={}\n", part(esp)));
    out.push_str(&format!("config={config_state}\n"));
    out.push_str(&format!("modules_loaded={}\n", modules.loaded.join(",")));
    let failed: Vec<&str> = modules.failed.iter().map(|(m, _)| m.as_str()).collect();
    out.push_str(&format!("modules_failed={}\n", failed.join(",")));
    let mut vars: Vec<(String, String)> = std::env::vars().collect();
    vars.sort();
    for (k, v) in vars {
        out.push_str(&format!("env.{k}={v}\n"));
    }
    out
}

/// Everything learned before the session directory exists.
struct Boot {
    cmdline: KernelCmdline,
    cmdline_text: String,
    modules: modules::LoadReport,
    data: Option<FoundPartition>,
    esp: Option<FoundPartition>,
    t_start: u64,
    t_modules: u64,
    t_data: u64,
}

/// PID 1's entry point.
pub fn main() -> ! {
    let t_start = sys::uptime_ms();
    mount_basics();
    let cmdline_text = fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let cmdline = KernelCmdline::parse(&cmdline_text);
    say(&format!(
        "hiperiso-init {} starting",
        env!("CARGO_PKG_VERSION")
    ));
    for warning in &cmdline.warnings {
        say(&format!("warning: {warning}"));
    }
    let release = sys::kernel_release();
    let modules = load_modules(&release);
    say(&format!(
        "kernel {release}: {} modules loaded, {} not loadable",
        modules.loaded.len(),
        modules.failed.len()
    ));
    let t_modules = sys::uptime_ms();
    let wait = cmdline.wait_seconds.unwrap_or(DEFAULT_DATA_WAIT);
    say(&format!(
        "looking for the data partition {} (up to {wait} s)",
        cmdline.data
    ));
    let data = wait_for(&cmdline.data, wait).filter(|found| {
        match mount_partition(found, Path::new(DATA_MOUNT), false) {
            Ok(()) => true,
            Err(e) => {
                say(&format!(
                    "cannot mount {} on {DATA_MOUNT}: {e}",
                    found.device.display()
                ));
                false
            }
        }
    });
    let esp = cmdline.esp.as_ref().and_then(|spec| {
        let found = wait_for(spec, 5)?;
        match mount_partition(&found, Path::new(ESP_MOUNT), true) {
            Ok(()) => Some(found),
            Err(e) => {
                say(&format!(
                    "cannot mount ESP {} read-only: {e}",
                    found.device.display()
                ));
                None
            }
        }
    });
    let t_data = sys::uptime_ms();
    if cmdline.rescue_shell {
        say("rescue shell requested (hiperiso.shell=1); exit the shell to power off");
        run_shell();
        shutdown(AfterAction::Poweroff, data.is_some(), esp.is_some());
    }
    let boot = Boot {
        cmdline,
        cmdline_text,
        modules,
        data,
        esp,
        t_start,
        t_modules,
        t_data,
    };
    let (after, failed) = run(&boot);
    if failed {
        let pause = boot.cmdline.pause_seconds.unwrap_or(15);
        if pause > 0 && after != AfterAction::Shell {
            say(&format!("the session failed; continuing in {pause} s"));
            sleep(Duration::from_secs(u64::from(pause)));
        }
    }
    shutdown(after, boot.data.is_some(), boot.esp.is_some())
}

/// Record a whole session; returns what to do afterwards and whether it failed.
fn run(boot: &Boot) -> (AfterAction, bool) {
    let data_root = Path::new(DATA_MOUNT);
    let logs_dir = match &boot.data {
        Some(_) => data_root.join(LOGS_DIR),
        None => PathBuf::from(TMPFS_LOGS),
    };
    let iso = boot.cmdline.iso.clone().unwrap_or_default();
    let mut s = match Session::create(
        &logs_dir,
        if iso.is_empty() { "no-iso" } else { &iso },
        &boot.cmdline_text,
    ) {
        Ok(s) => s,
        Err(e) => {
            say(&format!("cannot create a session: {}", error_chain(&e)));
            return (boot.cmdline.after.unwrap_or(AfterAction::Poweroff), true);
        }
    };
    s.timing.phases.push(Phase {
        name: "kernel".into(),
        start_ms: 0,
        end_ms: boot.t_start,
    });
    s.phase("modules", boot.t_start);
    s.timing.phases.last_mut().expect("just pushed").end_ms = boot.t_modules;
    s.timing.phases.push(Phase {
        name: "wait_data".into(),
        start_ms: boot.t_modules,
        end_ms: boot.t_data,
    });
    s.info
        .warnings
        .extend(boot.cmdline.warnings.iter().cloned());

    // Config (never fatal).
    let t = sys::uptime_ms();
    let (loaded, config_state) = load_config(boot.data.is_some());
    s.info.config_warnings = loaded.warnings.clone();
    let env = env_txt(
        &boot.cmdline,
        boot.data.as_ref(),
        boot.esp.as_ref(),
        &config_state,
        &boot.modules,
    );
    s.write_file(files::ENV_TXT, env.as_bytes());
    s.stage(
        Stage::SessionCreated,
        &format!("session {} created in {}", s.info.id, logs_dir.display()),
    );
    if boot.data.is_none() {
        s.fail(
            FailureKind::NoDataPartition,
            true,
            format!(
                "no data partition matching {} appeared within {} s; this session is only on tmpfs ({}) and is lost at power-off",
                boot.cmdline.data,
                boot.cmdline.wait_seconds.unwrap_or(DEFAULT_DATA_WAIT),
                s.dir.display()
            ),
        );
        s.finish();
        return (boot.cmdline.after.unwrap_or(AfterAction::Poweroff), true);
    }
    if let Some(error) = &loaded.error {
        s.fail(
            FailureKind::ConfigBroken,
            false,
            format!("{error}; continuing with the default settings"),
        );
    }
    for warning in &loaded.warnings {
        s.say(&format!("warning: {warning}"));
    }
    let config = loaded.config;
    write_grubenv(&config, false);
    let after = boot.cmdline.after.unwrap_or(config.control.after);
    let mut settings = config.settings_for(&iso);
    if let Some(level) = boot.cmdline.trace {
        settings.trace_level = level;
    }
    s.info.trace_level = settings.trace_level.to_string();
    s.info.ram_mb = settings.ram_mb;
    s.info.cpus = settings.cpus;
    s.info.net = settings.net;
    s.info.net_dump = settings.net_dump;
    s.info.tpm = settings.tpm;
    s.info.matched_overrides = settings.matched.clone();
    s.phase("config", t);
    s.stage(
        Stage::ConfigLoaded,
        &format!("configuration: {config_state}"),
    );

    // Host inventory.
    let t = sys::uptime_ms();
    let hw_dir = s.dir.join(files::HW_DIR);
    if let Err(e) = hw::collect_host(
        &hw_dir,
        Path::new("/proc"),
        Path::new("/sys"),
        &hw::read_dmesg(),
    ) {
        s.warn(error_chain(&e));
    }
    s.phase("host_inventory", t);
    s.stage(Stage::HostInventory, "host inventory written to hw/");

    // KVM, for real.
    let t = sys::uptime_ms();
    let fallback = boot.cmdline.fallback || config.control_ext.fallback_tcg;
    let accel = match kvm::check_kvm(Path::new("/dev/kvm")) {
        Ok(info) => {
            if let Ok(text) = session::to_json("kvm_caps.json", &info) {
                let _ = fs::write(hw_dir.join("kvm_caps.json"), text);
            }
            Accel::Kvm
        }
        Err(e) if fallback => {
            s.warn(format!(
                "KVM unusable ({}); using TCG because fallback is enabled",
                error_chain(&e)
            ));
            Accel::Tcg
        }
        Err(e) => {
            s.phase("kvm_check", t);
            s.fail(
                FailureKind::NoKvm,
                true,
                format!(
                    "KVM cannot run a VM here: {}. Enable virtualization (VT-x/AMD-V) in the firmware setup, or boot with hiperiso_fallback=1 to use the slow TCG emulator.",
                    error_chain(&e)
                ),
            );
            s.finish();
            return (after, true);
        }
    };
    s.info.accel = Some(accel.as_str().into());
    s.phase("kvm_check", t);
    s.stage(Stage::KvmCheck, &format!("accelerator: {}", accel.as_str()));

    // The ISO and its firmware.
    let t = sys::uptime_ms();
    if iso.is_empty() {
        s.fail(
            FailureKind::Internal,
            true,
            "no hiperiso.iso= on the kernel command line; pick an image in the boot menu".into(),
        );
        s.finish();
        return (after, true);
    }
    let iso_path = data_root.join(iso.trim_start_matches('/'));
    let firmware = match check_iso(&iso_path, &settings) {
        Ok((firmware, reason, size)) => {
            s.info.iso_size = Some(size);
            s.info.firmware = Some(firmware.as_str().into());
            s.info.firmware_reason = Some(reason.into());
            firmware
        }
        Err((kind, message)) => {
            s.phase("iso_check", t);
            s.fail(kind, true, message);
            s.finish();
            return (after, true);
        }
    };
    s.phase("iso_check", t);
    s.stage(
        Stage::IsoCheck,
        &format!(
            "{iso}: booting with {} ({})",
            firmware.as_str(),
            s.info.firmware_reason.clone().unwrap_or_default()
        ),
    );

    let failed = run_qemu(&mut s, boot, &iso_path, accel, firmware, &settings, &config);
    s.finish();
    if after == AfterAction::Menu {
        write_grubenv(&config, true);
    }
    (after, failed)
}

fn load_config(have_data: bool) -> (LoadedConfig, String) {
    let path = Path::new(DATA_MOUNT).join(CONFIG_FILE);
    if !have_data {
        return (
            Config::load("hiperiso.json", "{}"),
            "defaults (no data partition)".into(),
        );
    }
    match fs::read_to_string(&path) {
        Ok(text) => {
            let loaded = Config::load(&format!("/{CONFIG_FILE}"), &text);
            let state = if loaded.error.is_some() {
                "broken, defaults used"
            } else {
                "loaded"
            };
            (loaded, format!("/{CONFIG_FILE} ({state})"))
        }
        Err(_) => (
            Config::load("hiperiso.json", "{}"),
            format!("defaults (/{CONFIG_FILE} absent)"),
        ),
    }
}

/// Keep GRUB's timeout and default image in sync with hiperiso.json.
fn write_grubenv(config: &Config, hold_menu: bool) {
    let vars = [
        ("hiperiso_timeout", config.control.menu_timeout.to_string()),
        (
            "hiperiso_default",
            config.control.default_image.clone().unwrap_or_default(),
        ),
        (
            "hiperiso_hold",
            if hold_menu { "1" } else { "0" }.to_string(),
        ),
    ];
    let path = Path::new(DATA_MOUNT).join(GRUBENV_FILE);
    match grubenv::render(&vars) {
        Ok(block) => {
            if fs::read(&path).ok().as_deref() != Some(&block[..])
                && let Err(e) = session::write_atomic(&path, &block)
            {
                say(&error_chain(&e));
            }
        }
        Err(e) => say(&format!("{}: {e}", path.display())),
    }
}

/// Open and read the ISO; decide the firmware.
fn check_iso(
    path: &Path,
    settings: &EffectiveSettings,
) -> Result<(Firmware, &'static str, u64), (FailureKind, String)> {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err((
                FailureKind::IsoMissing,
                format!(
                    "the image {} does not exist on the data partition",
                    path.display()
                ),
            ));
        }
        Err(e) => {
            return Err((
                FailureKind::IsoUnreadable,
                format!("cannot open {}: {e}", path.display()),
            ));
        }
    };
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let info = eltorito::read_iso(&mut file).map_err(|e| {
        (
            FailureKind::IsoUnreadable,
            format!("{}: {}", path.display(), error_chain(&e)),
        )
    })?;
    Ok(match settings.firmware {
        Some(forced) => (forced, "override", size),
        None if info.boots_uefi() => (Firmware::Uefi, "el_torito_uefi_entry", size),
        None if info.boots_bios() => (Firmware::Bios, "el_torito_bios_only", size),
        None => (Firmware::Uefi, "no_boot_entry_default_uefi", size),
    })
}

fn qemu_binary() -> Option<PathBuf> {
    first_existing(&QEMU_BINARIES.iter().map(PathBuf::from).collect::<Vec<_>>())
}

fn tail(path: &Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Build the command line, run QEMU, watch it; returns whether it failed.
fn run_qemu(
    s: &mut Session,
    boot: &Boot,
    iso_path: &Path,
    accel: Accel,
    firmware: Firmware,
    settings: &EffectiveSettings,
    config: &Config,
) -> bool {
    let t = sys::uptime_ms();
    let esp = boot.esp.as_ref().map(|_| Path::new(ESP_MOUNT));
    let firmware_files = match firmware_files(firmware, esp) {
        Ok(f) => f,
        Err(message) => {
            s.fail(FailureKind::QemuStartFailed, true, message);
            return true;
        }
    };
    let Some(binary) = qemu_binary() else {
        s.fail(
            FailureKind::QemuStartFailed,
            true,
            format!("no QEMU binary (looked for {})", QEMU_BINARIES.join(", ")),
        );
        return true;
    };
    let level = settings.trace_level;
    let trace_events = trace_events_file(level.as_str(), esp);
    if trace_events.is_none() && level != crate::cmdline::TraceLevel::None {
        s.warn(format!("no trace-{level}.events file; tracing disabled"));
    }
    let mut swtpm = None;
    let mut tpm_socket = None;
    if settings.tpm {
        match start_swtpm() {
            Ok((child, socket)) => {
                swtpm = Some(child);
                tpm_socket = Some(socket);
            }
            Err(message) => {
                s.warn(format!("{message}; the guest runs without a TPM"));
                s.info.tpm = false;
            }
        }
    }
    let monitor_socket = Path::new(RUN_DIR).join(files::MONITOR_SOCK);
    // The guest's display on the host's screen, when there is one.
    let wanted = boot
        .cmdline
        .display
        .then(viewer::open_framebuffer)
        .flatten();
    let framebuffer = match wanted {
        Some(Ok(fb)) => Some(fb),
        Some(Err(e)) => {
            s.warn(format!(
                "{}; the guest's display is not shown",
                error_chain(&e)
            ));
            None
        }
        None => None,
    };
    let vnc_socket = Path::new(RUN_DIR).join(VNC_SOCKET);
    let _ = fs::remove_file(&vnc_socket);
    let _ = fs::remove_file(&monitor_socket);
    let plan = QemuPlan {
        binary,
        accel,
        ram_mb: settings.ram_mb,
        cpus: settings.cpus,
        cpu_features: settings.cpu_features.clone(),
        firmware: firmware_files,
        iso: iso_path.to_path_buf(),
        session_dir: s.dir.clone(),
        monitor_socket: monitor_socket.clone(),
        net: settings.net,
        net_dump: settings.net_dump,
        nic_rom: Path::new("/usr/share/qemu/efi-e1000e.rom").exists(),
        tpm_socket,
        trace_level: level,
        trace_events,
        firmware_log: config.control_ext.firmware_log,
        vnc_socket: framebuffer.as_ref().map(|_| vnc_socket.clone()),
    };
    s.write_file(files::QEMU_CMDLINE, plan.cmdline_text().as_bytes());
    s.stage(Stage::QemuStarting, "starting QEMU");
    let stderr_path = s.dir.join(files::QEMU_STDERR);
    let argv = plan.argv();
    let spawned = File::create(&stderr_path).and_then(|stderr| {
        Command::new(&argv[0])
            .args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(stderr.try_clone()?)
            .stderr(stderr)
            .spawn()
    });
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => {
            s.fail(
                FailureKind::QemuStartFailed,
                true,
                format!("cannot start {}: {e}", argv[0]),
            );
            return true;
        }
    };
    let started = Instant::now();
    let status = viewer::StatusInfo {
        session: s.info.id.clone(),
        iso: s.info.iso.clone(),
        serial_log: s.dir.join(files::SERIAL_LOG),
        started,
    };
    let (requests, viewer_requests) = std::sync::mpsc::channel();
    let mut qemu_cpu_ms = None;
    let mut display = None;
    let mut mirror = None;
    let mirror_stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    if let Some(fb) = framebuffer {
        s.say(&format!(
            "showing the guest on {} ({}x{}); {}",
            fb.path.display(),
            fb.layout.width,
            fb.layout.height,
            viewer::HOTKEYS_HELP
        ));
        display = Some(viewer::Viewer::start(
            fb,
            vnc_socket,
            PathBuf::from("/dev/input"),
            status,
            requests,
        ));
    } else if let Some(console) = viewer::serial_console(&boot.cmdline_text) {
        s.say(&format!(
            "no framebuffer: mirroring the guest's serial console on {}",
            console.display()
        ));
        mirror = Some(viewer::mirror_serial(console, status, mirror_stop.clone()));
    }
    s.phase("qemu_start", t);
    let t_run = sys::uptime_ms();

    // Connect QMP while QEMU starts; QEMU exiting first means it failed to
    // start (or the guest was over in an instant).
    let mut qmp = None;
    let mut exit = None;
    while qmp.is_none() && exit.is_none() && started.elapsed() < QMP_CONNECT_TIMEOUT {
        if let Ok(Some(status)) = child.try_wait() {
            exit = Some(status);
            break;
        }
        if monitor_socket.exists()
            && let Ok(q) = Qmp::connect(&monitor_socket, Duration::from_secs(10))
        {
            qmp = Some(q);
            break;
        }
        sleep(Duration::from_millis(50));
    }
    let qmp_connected = qmp.is_some();
    if qmp_connected {
        s.stage(
            Stage::QemuRunning,
            &format!("guest running ({}, {})", accel.as_str(), firmware.as_str()),
        );
    } else if exit.is_none() {
        s.warn("QMP did not answer; no screenshots or guest inventory".into());
    }

    let screenshots_dir = s.dir.join(files::SCREENSHOTS_DIR);
    let _ = fs::create_dir_all(&screenshots_dir);
    let shot_tmp = Path::new(RUN_DIR).join("screen.png");
    let mut last_shot: Vec<u8> = Vec::new();
    let mut guest_inventory_done = false;
    let mut next_heartbeat = Instant::now();
    let shot_every = Duration::from_secs(u64::from(config.control.screenshot_interval));
    let mut next_shot = Instant::now() + Duration::from_secs(1);
    let timeout = config.control.session_timeout;
    let mut crash_event = None;
    let mut quit_sent = false;
    // QEMU pauses when the guest shuts down (`-action shutdown=pause`), so
    // the guest inventory and a last screenshot can still be taken; then
    // init quits it.
    let mut guest_shut_down = false;
    let data_fd = File::open(&s.dir).ok();
    let exit = loop {
        if let Some(status) = exit.take() {
            break status;
        }
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) => {}
            Err(e) => {
                s.warn(format!("waiting for QEMU failed: {e}"));
                break child
                    .wait()
                    .unwrap_or_else(|_| std::process::ExitStatus::default());
            }
        }
        if let Some(q) = qmp.as_mut() {
            if q.poll_events(Duration::from_millis(200)).is_err() {
                // QEMU is going away; keep waiting for its exit status.
                qmp = None;
            } else {
                for event in q.events.drain(..) {
                    let name = event["event"].as_str().unwrap_or("?").to_string();
                    if name == "SHUTDOWN" {
                        guest_shut_down = true;
                    } else if name == "GUEST_PANICKED"
                        || (name == "STOP" && crash_event.is_none() && !guest_shut_down)
                    {
                        crash_event = Some(name.clone());
                    }
                    s.info.guest_events.push(format!(
                        "{} {name} {}",
                        started.elapsed().as_millis(),
                        event.get("data").map(|d| d.to_string()).unwrap_or_default()
                    ));
                }
            }
        } else {
            sleep(Duration::from_millis(200));
        }
        if crash_event.as_deref() == Some("STOP")
            && let Some(q) = qmp.as_mut()
        {
            // A stop we did not ask for: KVM internal error or similar.
            let status = q.execute("query-status", None).ok();
            let state = status
                .as_ref()
                .and_then(|v| v["status"].as_str())
                .unwrap_or("");
            if matches!(state, "internal-error" | "guest-panicked" | "shutdown") {
                crash_event = Some(format!("STOP ({state})"));
                if state != "shutdown" {
                    let _ = q.execute("quit", None);
                }
            } else {
                crash_event = None;
            }
        }
        if !guest_inventory_done
            && (started.elapsed() >= GUEST_INVENTORY_DELAY || guest_shut_down)
            && let Some(q) = qmp.as_mut()
        {
            guest_inventory_done = true;
            let t_inv = sys::uptime_ms();
            match hw::collect_guest(&s.dir.join(files::HW_DIR), q) {
                Ok((_, failed)) => {
                    for f in failed {
                        s.warn(format!("guest inventory: {f}"));
                    }
                }
                Err(e) => s.warn(error_chain(&e)),
            }
            s.phase("guest_inventory", t_inv);
            s.stage(Stage::GuestInventory, "guest inventory written to hw/");
        }
        if !shot_every.is_zero()
            && (Instant::now() >= next_shot || (guest_shut_down && !quit_sent))
            && let Some(q) = qmp.as_mut()
        {
            next_shot = Instant::now() + shot_every;
            let _ = fs::remove_file(&shot_tmp);
            if q.screendump_png(&shot_tmp).is_ok()
                && let Ok(png) = fs::read(&shot_tmp)
                && png != last_shot
            {
                let name = format!("{:04}.png", s.info.screenshots + 1);
                if fs::write(screenshots_dir.join(name), &png).is_ok() {
                    s.info.screenshots += 1;
                    last_shot = png;
                }
            }
        }
        if display.is_some() {
            qemu_cpu_ms = viewer::process_cpu_ms(child.id()).or(qemu_cpu_ms);
        }
        for request in viewer_requests.try_iter() {
            let Some(q) = qmp.as_mut() else { break };
            match request {
                viewer::Request::Screenshot => {
                    let _ = fs::remove_file(&shot_tmp);
                    if q.screendump_png(&shot_tmp).is_ok()
                        && let Ok(png) = fs::read(&shot_tmp)
                    {
                        let name = format!("{:04}.png", s.info.screenshots + 1);
                        if fs::write(screenshots_dir.join(&name), &png).is_ok() {
                            s.info.screenshots += 1;
                            last_shot = png;
                            s.say(&format!("screenshot {name} taken (hotkey)"));
                        }
                    }
                }
                viewer::Request::PowerOff { force: false } => {
                    s.say("power-off requested (hotkey): pressing the guest's ACPI power button");
                    let _ = q.execute("system_powerdown", None);
                }
                viewer::Request::PowerOff { force: true } => {
                    s.warn("power-off requested twice (hotkey): stopping the guest".into());
                    quit_sent = true;
                    let _ = q.execute("quit", None);
                }
            }
        }
        if Instant::now() >= next_heartbeat {
            next_heartbeat = Instant::now() + HEARTBEAT_INTERVAL;
            let beat = format!(
                "{} uptime_ms={} guest_s={}\n",
                session::utc_rfc3339(sys::unix_seconds()),
                sys::uptime_ms(),
                started.elapsed().as_secs()
            );
            let _ = fs::write(s.dir.join(files::HEARTBEAT), beat);
            if let Some(fd) = &data_fd {
                // SAFETY: a valid fd; syncfs flushes the data partition.
                unsafe { libc::syncfs(fd.as_raw_fd()) };
            }
        }
        if guest_shut_down && !quit_sent {
            quit_sent = true;
            match qmp.as_mut() {
                Some(q) => {
                    let _ = q.execute("quit", None);
                }
                None => {
                    let _ = child.kill();
                }
            }
        }
        if !qmp_connected && !quit_sent && started.elapsed() > QMP_CONNECT_TIMEOUT {
            // Without the monitor nothing can be recorded, and a guest
            // shutdown would leave QEMU paused forever.
            quit_sent = true;
            s.fail(
                FailureKind::QemuStartFailed,
                true,
                format!(
                    "QEMU's QMP monitor did not answer within {} s; QEMU stopped",
                    QMP_CONNECT_TIMEOUT.as_secs()
                ),
            );
            let _ = child.kill();
        }
        if timeout > 0 && !quit_sent && started.elapsed() >= Duration::from_secs(u64::from(timeout))
        {
            quit_sent = true;
            s.warn(format!(
                "session_timeout of {timeout} s reached; stopping the guest"
            ));
            match qmp.as_mut() {
                Some(q) => {
                    let _ = q.execute("quit", None);
                }
                None => {
                    let _ = child.kill();
                }
            }
        }
    };
    if let Some(display) = display {
        let mut stats = display.stop();
        stats.qemu_cpu_ms = qemu_cpu_ms;
        stats.guest_seconds = started.elapsed().as_secs_f64();
        if let Some(error) = &stats.error {
            s.warn(format!("guest display: {error}"));
        }
        s.write_json(DISPLAY_JSON, &stats);
    }
    mirror_stop.store(true, std::sync::atomic::Ordering::Relaxed);
    if let Some(mirror) = mirror {
        let _ = mirror.join();
    }
    if let Some(mut tpm) = swtpm {
        let _ = tpm.kill();
        let _ = tpm.wait();
    }
    s.phase("guest", t_run);
    use std::os::unix::process::ExitStatusExt;
    s.info.qemu_exit_code = exit.code();
    s.info.qemu_signal = exit.signal();
    let stderr_tail = tail(&stderr_path, 20);
    let connected = !s.info.guest_events.is_empty()
        || guest_inventory_done
        || s.info.screenshots > 0
        || qmp.is_some();
    let failed = if s.info.failures.iter().any(|f| f.fatal) {
        true
    } else if let Some(signal) = exit.signal() {
        s.fail(
            FailureKind::GuestCrash,
            true,
            format!("QEMU was killed by signal {signal}\n{stderr_tail}"),
        );
        true
    } else if let Some(event) = crash_event.filter(|e| e != "STOP (shutdown)") {
        s.fail(
            FailureKind::GuestCrash,
            true,
            format!(
                "the guest crashed ({event}); QEMU exit code {:?}\n{stderr_tail}",
                exit.code()
            ),
        );
        true
    } else if exit.code() != Some(0) {
        let code = exit.code().unwrap_or(-1);
        if connected || started.elapsed() > QMP_CONNECT_TIMEOUT {
            s.fail(FailureKind::GuestCrash, true, format!("QEMU exited with code {code} while the guest ran (guest panic or emulation error)\n{stderr_tail}"));
        } else {
            s.fail(FailureKind::QemuStartFailed, true, format!("QEMU exited with code {code} before the guest started; its stderr (qemu.stderr):\n{stderr_tail}"));
        }
        true
    } else {
        false
    };
    s.stage(
        Stage::QemuExited,
        &format!(
            "QEMU exited ({}) after {} s",
            exit,
            started.elapsed().as_secs()
        ),
    );
    failed
}

fn run_shell() {
    let shells = ["/bin/sh", "/bin/busybox"];
    let Some(shell) = shells.iter().find(|p| Path::new(p).exists()) else {
        say("no shell in the initramfs");
        return;
    };
    let mut cmd = Command::new(shell);
    if shell.ends_with("busybox") {
        cmd.arg("sh");
    }
    match cmd.env("PS1", "hiperiso# ").status() {
        Ok(_) => {}
        Err(e) => say(&format!("cannot run {shell}: {e}")),
    }
}

fn shutdown(after: AfterAction, data_mounted: bool, esp_mounted: bool) -> ! {
    if after == AfterAction::Shell {
        say("dropping to a shell (hiperiso.after=shell); exit it to power off");
        run_shell();
    }
    sys::sync_all();
    for (mounted, target) in [(data_mounted, DATA_MOUNT), (esp_mounted, ESP_MOUNT)] {
        if mounted && let Err(e) = sys::umount(Path::new(target)) {
            say(&format!("cannot unmount {target}: {e}"));
        }
    }
    let cmd = match after {
        AfterAction::Reboot | AfterAction::Menu => {
            say("rebooting");
            libc::LINUX_REBOOT_CMD_RESTART
        }
        AfterAction::Poweroff | AfterAction::Shell => {
            say("powering off");
            libc::LINUX_REBOOT_CMD_POWER_OFF
        }
    };
    let error = sys::reboot(cmd);
    say(&format!("reboot(2) failed: {error}"));
    loop {
        sleep(Duration::from_secs(3600));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_spec_matching() {
        let id = FsIdentity {
            fs_type: blockid::FsType::Exfat,
            uuid: "12AB-34CD".into(),
            label: Some("HIPERISO".into()),
        };
        let dev = Path::new("/dev/sda1");
        assert!(spec_matches(
            &PartitionSpec::Uuid("12ab-34cd".into()),
            dev,
            &id
        ));
        assert!(!spec_matches(
            &PartitionSpec::Uuid("12AB-34CE".into()),
            dev,
            &id
        ));
        assert!(spec_matches(
            &PartitionSpec::Label("hiperiso".into()),
            dev,
            &id
        ));
        assert!(spec_matches(
            &PartitionSpec::Device("/dev/sda1".into()),
            dev,
            &id
        ));
        assert!(!spec_matches(
            &PartitionSpec::Device("/dev/sdb1".into()),
            dev,
            &id
        ));
    }

    #[test]
    fn iso_checks_pick_firmware() {
        let dir = tempfile::tempdir().unwrap();
        let settings = Config::default().settings_for("/ISOs/x.iso");
        let (kind, message) = check_iso(&dir.path().join("missing.iso"), &settings).unwrap_err();
        assert_eq!(kind, FailureKind::IsoMissing);
        assert!(message.contains("missing.iso"));
        let junk = dir.path().join("junk.iso");
        fs::write(&junk, vec![0u8; 100_000]).unwrap();
        let (kind, message) = check_iso(&junk, &settings).unwrap_err();
        assert_eq!(kind, FailureKind::IsoUnreadable);
        assert!(message.contains("not an ISO 9660 image"), "{message}");

        let root = dir.path().join("root");
        fs::create_dir_all(&root).unwrap();
        fs::write(root.join("boot.bin"), vec![0u8; 2048]).unwrap();
        let iso = dir.path().join("bios.iso");
        let ok = Command::new("xorriso")
            .args([
                "-as",
                "mkisofs",
                "-quiet",
                "-b",
                "boot.bin",
                "-no-emul-boot",
                "-o",
            ])
            .arg(&iso)
            .arg(&root)
            .status()
            .unwrap()
            .success();
        assert!(ok);
        let (fw, reason, size) = check_iso(&iso, &settings).unwrap();
        assert_eq!((fw, reason), (Firmware::Bios, "el_torito_bios_only"));
        assert_eq!(size, fs::metadata(&iso).unwrap().len());
        let mut forced = settings.clone();
        forced.firmware = Some(Firmware::Uefi);
        assert_eq!(check_iso(&iso, &forced).unwrap().1, "override");
    }
}
