//! The session directory on the data partition: names, the JSON schemas of
//! `session.json`, `status.json`, `timing.json`, `index.jsonl` and
//! `report.json`, and the helpers that write them atomically.
//!
//! One directory per boot, `<iso-stem>_<YYYYMMDDTHHMMSSZ>`, never overwritten.
//! Every struct here is the schema documented in docs/stick.md; readers (such as
//! `hiperiso-log`) deserialize the same structs.

use crate::io::{IoError, write_atomic};
use crate::time::utc_compact;
use serde::{Deserialize, Serialize};
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Version of every JSON schema in this module; bumped on incompatible changes.
pub const SCHEMA_VERSION: u32 = 2;

/// File names inside a session directory (DESIGN.md §5).
pub mod files {
    pub const SESSION_JSON: &str = "session.json";
    pub const STATUS_JSON: &str = "status.json";
    pub const ENV_TXT: &str = "env.txt";
    pub const SERIAL_LOG: &str = "serial.log";
    pub const FIRMWARE_LOG: &str = "firmware.log";
    pub const TRACE_BIN: &str = "trace.bin";
    pub const QEMU_CMDLINE: &str = "qemu.cmdline";
    pub const QEMU_STDERR: &str = "qemu.stderr";
    pub const MONITOR_SOCK: &str = "monitor.sock";
    pub const TIMING_DAT: &str = "timing.dat";
    pub const TIMING_JSON: &str = "timing.json";
    pub const HW_DIR: &str = "hw";
    pub const SCREENSHOTS_DIR: &str = "screenshots";
    /// In `screenshots/`: one [`super::TimelineEntry`] per saved picture.
    pub const TIMELINE_JSONL: &str = "timeline.jsonl";
    pub const NETWORK_PCAP: &str = "network.pcap";
    pub const REPORT_JSON: &str = "report.json";
    pub const REPORT_TXT: &str = "report.txt";
    pub const REPORT_LOG: &str = "report.log";
    pub const ANALYSIS_META: &str = "analysis.meta";
    pub const HEARTBEAT: &str = "HEARTBEAT";
    pub const SESSION_COMPLETE: &str = "SESSION_COMPLETE";
    pub const FAILURE_TXT: &str = "FAILURE.txt";
    /// In the logs directory, beside the session directories.
    pub const INDEX_JSONL: &str = "index.jsonl";
}

mod timing;
pub use timing::{Interval, Milestone, Timing};

/// Errors while writing session files.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("cannot append to {path}")]
    Append {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot create session directory under {dir}")]
    CreateDir {
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Writing a whole file atomically ([`write_atomic`]).
    #[error(transparent)]
    WriteFile(#[from] IoError),
    #[error("cannot serialize {what}")]
    Serialize {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
}

/// How a session ended, as far as we know so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The session is still running (or init died before finishing it).
    Running,
    /// The guest ran and QEMU exited normally.
    Success,
    /// A fatal failure stopped the session; see `failures`.
    Failure,
    /// The host was asked to stop (its ACPI power button, e.g. `hiperiso-build
    /// run --timeout`): the guest was powered down or quit, the session
    /// finalized.
    Stopped,
    /// `control.session_timeout` ran out; the guest was stopped.
    Timeout,
}

/// What went wrong; each kind has its own failure path in `hiperiso-init`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// `/dev/kvm` cannot create a VM and `hiperiso_fallback=1` was not given.
    NoKvm,
    /// The ISO named by `hiperiso.iso` does not exist.
    IsoMissing,
    /// The ISO exists but cannot be read or is not an ISO 9660 image.
    IsoUnreadable,
    /// `hiperiso.json` could not be parsed; defaults were used (not fatal).
    ConfigBroken,
    /// QEMU did not start (bad arguments, missing firmware, ...).
    QemuStartFailed,
    /// The guest crashed: QEMU exited abnormally or reported a guest panic.
    GuestCrash,
    /// No data partition was found; the session lives on tmpfs only.
    NoDataPartition,
    /// The kernel command line lacks `hiperiso.iso`, or another init error.
    Internal,
}

/// One recorded failure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    pub kind: FailureKind,
    /// Whether the failure stopped the session (false: it continued).
    pub fatal: bool,
    /// Human-readable explanation, naming the file/field/device involved.
    pub message: String,
}

/// `session.json`'s `host`: the machine the stick booted.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HostSummary {
    /// `model name` of the first CPU in `/proc/cpuinfo`.
    pub cpu_model: String,
    /// Logical CPUs the host kernel sees.
    pub cpu_cores: u32,
    /// `MemTotal` of `/proc/meminfo`, in MiB.
    pub ram_mb: u64,
    /// `vmx` (Intel VT-x), `svm` (AMD-V) or `none`: the CPU flag.
    pub virtualization: String,
}

/// `session.json`'s `analysis`: the headline of `report.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnalysisSummary {
    /// `report.json`'s `result`: `booted`, `failed`, `timeout`, ...
    pub boot_result: String,
    pub failure_domain: Option<String>,
    /// Failure lines found in the logs.
    pub error_count: u64,
    pub timing: Option<AnalysisTiming>,
}

/// `analysis.timing`: the session's timing as the analysis summed it up.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnalysisTiming {
    /// From the earliest interval's start to the latest's end.
    pub total_duration_s: f64,
    /// The longest interval of `timing.json`'s `intervals`.
    pub slowest: Option<String>,
}

/// `session.json`: what was booted and how; rewritten at the end.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionInfo {
    pub schema: u32,
    /// The session directory's name, `<iso-stem>_<YYYYMMDDTHHMMSSZ>`.
    pub id: String,
    /// `hiperiso.iso` as given, e.g. `/ISOs/debian.iso`.
    pub iso: String,
    /// ISO size in bytes, when it could be read.
    pub iso_size: Option<u64>,
    #[serde(rename = "start_time_utc", alias = "started_utc")]
    pub started_utc: String,
    #[serde(rename = "end_time_utc", alias = "ended_utc")]
    pub ended_utc: Option<String>,
    pub hiperiso_version: String,
    /// `/proc/cmdline` of the host kernel.
    pub kernel_cmdline: String,
    /// `uname -r` of the host kernel.
    pub host_kernel: String,
    /// `kvm` or `tcg`, once decided.
    pub accel: Option<String>,
    /// `uefi` or `bios`, once decided.
    pub firmware: Option<String>,
    /// Why that firmware: `el_torito_uefi_entry`, `el_torito_bios_only`, `override`, ...
    pub firmware_reason: Option<String>,
    pub trace_level: String,
    pub ram_mb: u32,
    pub cpus: u32,
    pub net: bool,
    pub net_dump: bool,
    pub tpm: bool,
    /// `iso_overrides` globs that matched this ISO, in application order.
    pub matched_overrides: Vec<String>,
    /// Warnings from `hiperiso.json` (unknown keys, bad values).
    pub config_warnings: Vec<String>,
    pub qemu_exit_code: Option<i32>,
    /// Signal that killed QEMU, if any.
    pub qemu_signal: Option<i32>,
    #[serde(rename = "result", alias = "outcome")]
    pub outcome: Outcome,
    pub failures: Vec<Failure>,
    /// Non-fatal notes: command-line warnings, missing swtpm, inventory gaps.
    #[serde(default)]
    pub warnings: Vec<String>,
    /// QMP events seen while the guest ran, as `<ms since QEMU start> <EVENT> <data>`.
    #[serde(default)]
    pub guest_events: Vec<String>,
    /// Distinct screenshots saved under `screenshots/`.
    #[serde(default)]
    pub screenshots: u32,
    /// `report.json` was written by the analysis.
    #[serde(default)]
    pub report_available: bool,
    /// The host machine, read when the session starts.
    #[serde(default)]
    pub host: Option<HostSummary>,
    /// The analysis' headline, once it ran.
    #[serde(default)]
    pub analysis: Option<AnalysisSummary>,
    /// The files under `hw/`, relative to it, sorted.
    #[serde(default)]
    pub hw_inventory: Vec<String>,
    /// How the host booted: `enabled`, `disabled`, `unknown` or `not_uefi`
    /// (legacy BIOS), from the kernel's `secureboot:` line.
    #[serde(default)]
    pub secure_boot: Option<String>,
    /// The host kernel's lockdown mode (`none`, `integrity`, …).
    #[serde(default)]
    pub lockdown: Option<String>,
}

impl SessionInfo {
    /// A session that just started: its id, image and start time, nothing
    /// decided yet (outcome `running`, no firmware, no accelerator).
    pub fn started(id: &str, iso: &str, started_utc: String) -> SessionInfo {
        SessionInfo {
            schema: SCHEMA_VERSION,
            id: id.to_string(),
            iso: iso.to_string(),
            iso_size: None,
            started_utc,
            ended_utc: None,
            hiperiso_version: env!("CARGO_PKG_VERSION").to_string(),
            kernel_cmdline: String::new(),
            host_kernel: String::new(),
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
            report_available: false,
            host: None,
            analysis: None,
            hw_inventory: Vec::new(),
            secure_boot: None,
            lockdown: None,
        }
    }
}

/// One line of `screenshots/timeline.jsonl`: a picture of the guest's
/// screen. Pictures are taken when the screen changed, and at most every
/// [`TIMELINE_UNCHANGED_EVERY_S`] seconds while it did not (`changed: false`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimelineEntry {
    /// `NNNN.png` in `screenshots/`.
    pub file: String,
    /// The host's uptime when the picture was taken (as in `timing.json`).
    pub uptime_ms: u64,
    pub utc: String,
    pub width: u32,
    pub height: u32,
    /// `NNNN.txt` in `screenshots/` when the guest was in VGA text mode:
    /// the text buffer read exactly (CP437 as UTF-8, one line per row,
    /// trailing spaces trimmed).
    pub text: Option<String>,
    /// False for a picture of an unchanged screen.
    pub changed: bool,
}

/// An unchanged screen is pictured again after this many seconds.
pub const TIMELINE_UNCHANGED_EVERY_S: u64 = 60;
/// At most this many pictures per session; later changes are not saved.
pub const MAX_SCREENSHOTS: u32 = 2000;

/// The stage of a session, in order; `status.json` names the current one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    SessionCreated,
    ConfigLoaded,
    HostInventory,
    KvmCheck,
    IsoCheck,
    QemuStarting,
    QemuRunning,
    GuestInventory,
    /// Init is stopping the guest: the host's power button, or
    /// `session_timeout`.
    Stopping,
    QemuExited,
    Analysis,
    Complete,
    Failed,
}

/// `status.json`: rewritten at every stage so a crash leaves the last one.
/// Fields missing from an older stick's file read as empty.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub schema: u32,
    #[serde(default)]
    pub session_id: String,
    /// `started` (before the guest), `running` (once the guest started),
    /// then the session's [`Outcome`]: `success`, `failure`, `stopped` or
    /// `timeout`.
    #[serde(default)]
    pub status: String,
    /// `hiperiso.iso` as given, e.g. `/ISOs/debian.iso`.
    #[serde(default)]
    pub iso_path: String,
    #[serde(default)]
    pub iso_basename: String,
    /// The session directory, as a path on the data partition
    /// (`/hiperiso/logs/<id>`), or on tmpfs when there is none.
    #[serde(default)]
    pub log_dir: String,
    #[serde(default)]
    pub start_time_utc: String,
    /// `unchecked`, `available` (KVM can run a VM) or `unavailable`.
    #[serde(default)]
    pub kvm: String,
    /// Empty until the configuration is loaded.
    #[serde(default)]
    pub trace_level: String,
    /// 0 until the configuration is loaded.
    #[serde(default)]
    pub guest_ram_mb: u32,
    #[serde(default)]
    pub guest_cpus: u32,
    pub stage: Stage,
    pub updated_utc: String,
    /// Milliseconds since the host kernel booted (CLOCK_BOOTTIME).
    pub uptime_ms: u64,
    pub message: String,
}

/// One line of `logs/index.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IndexEntry {
    pub schema: u32,
    pub id: String,
    pub iso: String,
    pub started_utc: String,
    pub ended_utc: Option<String>,
    pub outcome: Outcome,
    pub firmware: Option<String>,
    pub accel: Option<String>,
    pub qemu_exit_code: Option<i32>,
    pub failures: Vec<FailureKind>,
}

impl From<&SessionInfo> for IndexEntry {
    fn from(info: &SessionInfo) -> Self {
        IndexEntry {
            schema: SCHEMA_VERSION,
            id: info.id.clone(),
            iso: info.iso.clone(),
            started_utc: info.started_utc.clone(),
            ended_utc: info.ended_utc.clone(),
            outcome: info.outcome,
            firmware: info.firmware.clone(),
            accel: info.accel.clone(),
            qemu_exit_code: info.qemu_exit_code,
            failures: info.failures.iter().map(|f| f.kind).collect(),
        }
    }
}

/// The minimal `report.json` init writes before the full analyzer exists.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MinimalReport {
    pub schema: u32,
    pub id: String,
    pub outcome: Outcome,
    pub serial_bytes: u64,
    /// The last non-empty line of `serial.log`.
    pub serial_last_line: Option<String>,
    pub screenshots: u32,
    pub failures: Vec<Failure>,
}

/// Write the minimal `report.json` (until the full analyzer runs instead).
pub fn write_minimal_report(dir: &Path, info: &SessionInfo) -> Result<(), SessionError> {
    let serial = fs::read(dir.join(files::SERIAL_LOG)).unwrap_or_default();
    let text = String::from_utf8_lossy(&serial);
    let report = MinimalReport {
        schema: SCHEMA_VERSION,
        id: info.id.clone(),
        outcome: info.outcome,
        serial_bytes: serial.len() as u64,
        serial_last_line: text
            .lines()
            .map(str::trim)
            .rfind(|l| !l.is_empty())
            .map(str::to_string),
        screenshots: info.screenshots,
        failures: info.failures.clone(),
    };
    write_atomic(
        &dir.join(files::REPORT_JSON),
        to_json("report.json", &report)?.as_bytes(),
    )?;
    Ok(())
}

/// The text of `FAILURE.txt`: one paragraph per failure.
pub fn failure_text(info: &SessionInfo) -> String {
    let mut out = format!("hiperiso session {} ({})\n", info.id, info.iso);
    for failure in &info.failures {
        let kind = serde_json::to_value(failure.kind)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        let severity = if failure.fatal {
            "fatal"
        } else {
            "not fatal, continued"
        };
        out.push_str(&format!("\n{kind} ({severity}):\n{}\n", failure.message));
    }
    out
}

/// The session directory name for an ISO path and a UTC time.
pub fn session_dir_name(iso: &str, unix_seconds: i64) -> String {
    format!("{}_{}", iso_stem(iso), utc_compact(unix_seconds))
}

/// The ISO's file name without directories and without a trailing `.iso`,
/// with characters unsafe on exFAT replaced by `_`.
pub fn iso_stem(iso: &str) -> String {
    let file = iso.rsplit('/').next().unwrap_or(iso);
    let stem = match file.len().checked_sub(4) {
        Some(cut) if file.is_char_boundary(cut) && file[cut..].eq_ignore_ascii_case(".iso") => {
            &file[..cut]
        }
        _ => file,
    };
    let clean: String = stem
        .chars()
        .map(|c| match c {
            '"' | '*' | '/' | ':' | '<' | '>' | '?' | '\\' | '|' => '_',
            c if c.is_control() => '_',
            c => c,
        })
        .collect();
    if clean.is_empty() {
        "session".to_string()
    } else {
        clean
    }
}

/// Serialize `value` as pretty JSON (with a trailing newline).
pub fn to_json<T: Serialize>(what: &'static str, value: &T) -> Result<String, SessionError> {
    let mut text = serde_json::to_string_pretty(value)
        .map_err(|source| SessionError::Serialize { what, source })?;
    text.push('\n');
    Ok(text)
}

/// Append one line to a file and fsync it.
pub fn append_line(path: &Path, line: &str) -> Result<(), SessionError> {
    let err = |source| SessionError::Append {
        path: path.to_path_buf(),
        source,
    };
    let mut file = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(err)?;
    file.write_all(format!("{line}\n").as_bytes())
        .map_err(err)?;
    file.sync_all().map_err(err)
}

/// Create a fresh session directory under `logs_dir`; never reuses an
/// existing one (a second boot in the same second gets a `-2` suffix).
pub fn create_session_dir(logs_dir: &Path, name: &str) -> Result<PathBuf, SessionError> {
    let err = |source| SessionError::CreateDir {
        dir: logs_dir.to_path_buf(),
        source,
    };
    fs::create_dir_all(logs_dir).map_err(err)?;
    for attempt in 1u32.. {
        let candidate = if attempt == 1 {
            logs_dir.join(name)
        } else {
            logs_dir.join(format!("{name}-{attempt}"))
        };
        match fs::create_dir(&candidate) {
            Ok(()) => return Ok(candidate),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(err(e)),
        }
    }
    unreachable!("u32 range exhausted")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::utc_rfc3339;

    #[test]
    fn utc_formats() {
        assert_eq!(utc_compact(0), "19700101T000000Z");
        assert_eq!(utc_rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        // 2026-11-21 23:58:02 UTC
        assert_eq!(utc_compact(1_795_305_482), "20261121T235802Z");
        assert_eq!(utc_rfc3339(-1), "1969-12-31T23:59:59Z");
    }

    #[test]
    fn dir_names() {
        assert_eq!(
            session_dir_name("/ISOs/debian-12.5.0-amd64-netinst.iso", 0),
            "debian-12.5.0-amd64-netinst_19700101T000000Z"
        );
        assert_eq!(iso_stem("/ISOs/sub/Win:11.ISO"), "Win_11");
        assert_eq!(iso_stem("/ISOs/.iso"), "session");
        assert_eq!(iso_stem("noext"), "noext");
    }

    #[test]
    fn session_dir_never_reused() {
        let tmp = tempfile::tempdir().unwrap();
        let a = create_session_dir(tmp.path(), "x_1").unwrap();
        let b = create_session_dir(tmp.path(), "x_1").unwrap();
        assert_ne!(a, b);
        assert!(b.ends_with("x_1-2"));
    }

    #[test]
    fn json_roundtrip_and_field_names() {
        let info = SessionInfo {
            iso_size: Some(2048),
            kernel_cmdline: "hiperiso.iso=/ISOs/a.iso".into(),
            host_kernel: "6.1.0".into(),
            accel: Some("kvm".into()),
            firmware: Some("uefi".into()),
            firmware_reason: Some("el_torito_uefi_entry".into()),
            trace_level: "standard".into(),
            ram_mb: 2048,
            cpus: 2,
            outcome: Outcome::Failure,
            failures: vec![Failure {
                kind: FailureKind::NoKvm,
                fatal: true,
                message: "no".into(),
            }],
            ..SessionInfo::started("a_19700101T000000Z", "/ISOs/a.iso", utc_rfc3339(0))
        };
        let text = to_json("session.json", &info).unwrap();
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["result"], "failure");
        assert_eq!(value["start_time_utc"], "1970-01-01T00:00:00Z");
        assert!(value.get("end_time_utc").is_some());
        assert_eq!(value["failures"][0]["kind"], "no_kvm");
        let back: SessionInfo = serde_json::from_str(&text).unwrap();
        assert_eq!(back, info);
        let index = serde_json::to_string(&IndexEntry::from(&info)).unwrap();
        assert!(!index.contains('\n'));
        assert!(index.contains(r#""failures":["no_kvm"]"#), "{index}");
    }

    #[test]
    fn atomic_write_and_append() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("status.json");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        let idx = tmp.path().join("index.jsonl");
        append_line(&idx, "{}").unwrap();
        append_line(&idx, "{}").unwrap();
        assert_eq!(fs::read_to_string(&idx).unwrap(), "{}\n{}\n");
    }
}
