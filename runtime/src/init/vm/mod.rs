//! Running the guest: the QEMU command line from the settings, swtpm, the
//! QEMU process and its QMP monitor, then `supervise` until it exits, and
//! the verdict on how it ended.
//!
//! - [`power`]: the host's ACPI power button (evdev), which ends a session;
//! - `supervise`: QMP events, the timeline, heartbeat, the ends init decides;
//! - `timeline`: `screenshots/` and `timeline.jsonl`;
//! - `screen`: PPM screendumps to PNG, the VGA text buffer decoded.

pub mod power;
mod screen;
mod supervise;
mod timeline;

use super::boot::{Boot, ESP_MOUNT, RUN_DIR};
use super::firmware::{self, first_existing};
use super::guest_display::{self, GuestDisplay};
use super::recording::Recording;
use crate::cmdline::TraceLevel;
use crate::config::{Config, EffectiveSettings, Firmware};
use crate::display::fbdev::Framebuffer;
use crate::display::viewer::StatusInfo;
use crate::qemu::{Accel, QemuPlan};
use crate::qmp::Qmp;
use crate::sys;
use hiperiso_stick::error_chain;
use hiperiso_stick::session::{FailureKind, Stage, files};
use power::PowerButtons;
use std::fs::{self, File};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};
use supervise::{QMP_CONNECT_TIMEOUT, Supervisor};

const QEMU_BINARIES: &[&str] = &[
    "/usr/bin/qemu-system-x86_64",
    "/usr/local/bin/qemu-system-x86_64",
    "/bin/qemu-system-x86_64",
];
/// QEMU's VNC server for the viewer, below [`RUN_DIR`].
const VNC_SOCKET: &str = "vnc.sock";

/// The guest to run: the ISO and what was decided about it.
pub struct Guest<'a> {
    pub iso_path: &'a Path,
    pub accel: Accel,
    pub firmware: Firmware,
    pub settings: &'a EffectiveSettings,
    pub config: &'a Config,
}

/// Why swtpm could not be started.
#[derive(Debug, thiserror::Error)]
pub enum TpmError {
    #[error("cannot create {}", path.display())]
    StateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start swtpm")]
    Spawn(#[source] std::io::Error),
    #[error("swtpm did not create {}", socket.display())]
    NoSocket { socket: PathBuf },
}

/// Everything QEMU needs before it starts.
struct Prepared {
    plan: QemuPlan,
    swtpm: Option<Child>,
    framebuffer: Option<Framebuffer>,
    vnc_socket: PathBuf,
}

/// Build the command line, run QEMU, watch it; returns whether it failed.
pub(super) fn run_qemu(
    rec: &mut Recording,
    boot: &Boot,
    guest: &Guest,
    power_buttons: PowerButtons,
) -> bool {
    let t = sys::uptime_ms();
    let Some(prepared) = prepare(rec, boot, guest) else {
        return true;
    };
    let Prepared {
        plan,
        mut swtpm,
        framebuffer,
        vnc_socket,
    } = prepared;
    rec.write_file(files::QEMU_CMDLINE, plan.cmdline_text().as_bytes());
    rec.mark("qemu_launching");
    rec.stage(Stage::QemuStarting, "starting QEMU");
    let stderr_path = rec.dir.join(files::QEMU_STDERR);
    let Some(mut child) = spawn(rec, &plan, &stderr_path) else {
        return true;
    };
    rec.mark("qemu_started");
    let started = Instant::now();
    let status = StatusInfo {
        session: rec.info.id.clone(),
        iso: rec.info.iso.clone(),
        serial_log: rec.dir.join(files::SERIAL_LOG),
        started,
    };
    let mut display = GuestDisplay::start(rec, framebuffer, vnc_socket, &boot.cmdline_text, status);
    rec.phase("qemu_start", t);
    let t_run = sys::uptime_ms();

    let (qmp, exit) = connect_qmp(&mut child, &plan.monitor_socket, started);
    rec.guest_running = exit.is_none();
    if qmp.is_some() {
        rec.stage(
            Stage::QemuRunning,
            &format!(
                "guest running ({}, {})",
                guest.accel.as_str(),
                guest.firmware.as_str()
            ),
        );
    } else if exit.is_none() {
        rec.warn("QMP did not answer; no screenshots or guest inventory".into());
    }
    let mut supervisor = Supervisor::new(rec, child, qmp, started, guest.config, power_buttons);
    let exit = supervisor.run(rec, &mut display, exit);
    rec.mark("qemu_exited");
    display.stop(rec, started);
    if let Some(tpm) = swtpm.as_mut() {
        let _ = tpm.kill();
        let _ = tpm.wait();
    }
    rec.phase("guest", t_run);
    let failed = verdict(rec, &supervisor, exit, &stderr_path);
    rec.stage(
        Stage::QemuExited,
        &format!(
            "QEMU exited ({}) after {} s",
            exit,
            started.elapsed().as_secs()
        ),
    );
    failed
}

/// Firmware, QEMU binary, trace events, TPM, framebuffer: the plan. `None`
/// after a fatal failure (recorded).
fn prepare(rec: &mut Recording, boot: &Boot, guest: &Guest) -> Option<Prepared> {
    let esp_root = boot.esp.as_ref().map(|_| Path::new(ESP_MOUNT));
    let settings = guest.settings;
    let firmware_files = match firmware::firmware_files(guest.firmware, esp_root) {
        Ok(f) => f,
        Err(e) => {
            rec.fail(FailureKind::QemuStartFailed, true, error_chain(&e));
            return None;
        }
    };
    let Some(binary) = first_existing(&QEMU_BINARIES.iter().map(PathBuf::from).collect::<Vec<_>>())
    else {
        rec.fail(
            FailureKind::QemuStartFailed,
            true,
            format!("no QEMU binary (looked for {})", QEMU_BINARIES.join(", ")),
        );
        return None;
    };
    let level = settings.trace_level;
    let trace_events = firmware::trace_events_file(level.as_str(), esp_root);
    if trace_events.is_none() && level != TraceLevel::None {
        rec.warn(format!("no trace-{level}.events file; tracing disabled"));
    }
    let (swtpm, tpm_socket) = if settings.tpm {
        start_tpm(rec)
    } else {
        (None, None)
    };
    let monitor_socket = Path::new(RUN_DIR).join(files::MONITOR_SOCK);
    // The guest's display on the host's screen, when there is one.
    let framebuffer = guest_display::open_framebuffer(rec, boot.cmdline.display);
    let vnc_socket = Path::new(RUN_DIR).join(VNC_SOCKET);
    let _ = fs::remove_file(&vnc_socket);
    let _ = fs::remove_file(&monitor_socket);
    let plan = QemuPlan {
        binary,
        accel: guest.accel,
        ram_mb: settings.ram_mb,
        cpus: settings.cpus,
        cpu_features: settings.cpu_features.clone(),
        firmware: firmware_files,
        iso: guest.iso_path.to_path_buf(),
        session_dir: rec.dir.clone(),
        monitor_socket,
        net: settings.net,
        net_dump: settings.net_dump,
        nic_rom: Path::new("/usr/share/qemu/efi-e1000e.rom").exists(),
        tpm_socket,
        trace_level: level,
        trace_events,
        firmware_log: guest.config.control_ext.firmware_log,
        vnc_socket: framebuffer.as_ref().map(|_| vnc_socket.clone()),
    };
    Some(Prepared {
        plan,
        swtpm,
        framebuffer,
        vnc_socket,
    })
}

/// swtpm and its socket; without it the guest runs without a TPM (a warning).
fn start_tpm(rec: &mut Recording) -> (Option<Child>, Option<PathBuf>) {
    match start_swtpm() {
        Ok((child, socket)) => (Some(child), Some(socket)),
        Err(e) => {
            rec.warn(format!("{}; the guest runs without a TPM", error_chain(&e)));
            rec.info.tpm = false;
            (None, None)
        }
    }
}

/// Start swtpm for a TPM 2.0 guest; returns its socket.
fn start_swtpm() -> Result<(Child, PathBuf), TpmError> {
    let state = Path::new(RUN_DIR).join("tpm");
    fs::create_dir_all(&state).map_err(|source| TpmError::StateDir {
        path: state.clone(),
        source,
    })?;
    let socket = Path::new(RUN_DIR).join("swtpm.sock");
    let child = Command::new("swtpm")
        .args(["socket", "--tpm2", "--tpmstate"])
        .arg(format!("dir={}", state.display()))
        .args(["--ctrl"])
        .arg(format!("type=unixio,path={}", socket.display()))
        .stdin(Stdio::null())
        .spawn()
        .map_err(TpmError::Spawn)?;
    let deadline = Instant::now() + Duration::from_secs(5);
    while !socket.exists() {
        if Instant::now() > deadline {
            return Err(TpmError::NoSocket { socket });
        }
        sleep(Duration::from_millis(50));
    }
    Ok((child, socket))
}

/// Start QEMU with its stdout and stderr in `qemu.stderr`.
fn spawn(rec: &mut Recording, plan: &QemuPlan, stderr_path: &Path) -> Option<Child> {
    let argv = plan.argv();
    let spawned = File::create(stderr_path).and_then(|stderr| {
        Command::new(&argv[0])
            .args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(stderr.try_clone()?)
            .stderr(stderr)
            .spawn()
    });
    match spawned {
        Ok(c) => Some(c),
        Err(e) => {
            rec.fail(
                FailureKind::QemuStartFailed,
                true,
                format!("cannot start {}: {e}", argv[0]),
            );
            None
        }
    }
}

/// Connect QMP while QEMU starts; QEMU exiting first means it failed to
/// start (or the guest was over in an instant).
fn connect_qmp(
    child: &mut Child,
    monitor_socket: &Path,
    started: Instant,
) -> (Option<Qmp>, Option<ExitStatus>) {
    while started.elapsed() < QMP_CONNECT_TIMEOUT {
        if let Ok(Some(status)) = child.try_wait() {
            return (None, Some(status));
        }
        if monitor_socket.exists()
            && let Ok(q) = Qmp::connect(monitor_socket, Duration::from_secs(10))
        {
            return (Some(q), None);
        }
        sleep(Duration::from_millis(50));
    }
    (None, None)
}

fn tail(path: &Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Record QEMU's exit and decide whether the session failed.
fn verdict(
    rec: &mut Recording,
    supervisor: &Supervisor,
    exit: ExitStatus,
    stderr_path: &Path,
) -> bool {
    rec.info.qemu_exit_code = exit.code();
    rec.info.qemu_signal = exit.signal();
    let stderr_tail = tail(stderr_path, 20);
    let connected = !rec.info.guest_events.is_empty()
        || supervisor.guest_inventory_done
        || rec.info.screenshots > 0
        || supervisor.qmp.is_some();
    if rec.info.failures.iter().any(|f| f.fatal) {
        return true;
    }
    if let Some(signal) = exit.signal() {
        rec.fail(
            FailureKind::GuestCrash,
            true,
            format!("QEMU was killed by signal {signal}\n{stderr_tail}"),
        );
        return true;
    }
    if let Some(event) = supervisor
        .crash_event
        .as_deref()
        .filter(|e| *e != "STOP (shutdown)")
    {
        rec.fail(
            FailureKind::GuestCrash,
            true,
            format!(
                "the guest crashed ({event}); QEMU exit code {:?}\n{stderr_tail}",
                exit.code()
            ),
        );
        return true;
    }
    if exit.code() == Some(0) {
        return false;
    }
    let code = exit.code().unwrap_or(-1);
    if connected || supervisor.started.elapsed() > QMP_CONNECT_TIMEOUT {
        rec.fail(
            FailureKind::GuestCrash,
            true,
            format!(
                "QEMU exited with code {code} while the guest ran (guest panic or emulation error)\n{stderr_tail}"
            ),
        );
    } else {
        rec.fail(
            FailureKind::QemuStartFailed,
            true,
            format!(
                "QEMU exited with code {code} before the guest started; its stderr (qemu.stderr):\n{stderr_tail}"
            ),
        );
    }
    true
}
