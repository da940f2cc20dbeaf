//! The session being recorded by PID 1: its directory, `session.json`,
//! `status.json`, timings and `init.log`, and the final files written by
//! [`Recording::finish`] whatever happened before.

use super::console::say;
use crate::sys;
use hiperiso_stick::error_chain;
use hiperiso_stick::io::write_atomic;
use hiperiso_stick::session::{
    self, AnalysisSummary, AnalysisTiming, Failure, FailureKind, IndexEntry, Interval, Outcome,
    SCHEMA_VERSION, SessionInfo, Stage, Status, Timing, files,
};
use hiperiso_stick::time::{utc_rfc3339, utc_rfc3339_ms};
use std::path::{Path, PathBuf};

/// The live session: what `hiperiso-init` is recording right now, in
/// `dir` below `logs_dir`.
pub struct Recording {
    pub dir: PathBuf,
    pub logs_dir: PathBuf,
    pub info: SessionInfo,
    /// `status.json`'s `log_dir`: the session directory as a path on the
    /// data partition (its mount point left out).
    pub log_dir: String,
    /// `status.json`'s `kvm`: `unchecked`, `available` or `unavailable`.
    pub kvm: &'static str,
    /// The guest was started: `status.json`'s `status` is `running` until
    /// the session's result is known.
    pub guest_running: bool,
    timing: Timing,
    init_log: Vec<String>,
}

impl Recording {
    /// Create the session directory (named after `iso` and the time) and
    /// the in-memory `session.json`.
    pub fn create(
        logs_dir: &Path,
        iso: &str,
        cmdline_text: &str,
    ) -> Result<Recording, session::SessionError> {
        let now = sys::unix_seconds();
        let dir = session::create_session_dir(logs_dir, &session::session_dir_name(iso, now))?;
        let id = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let info = SessionInfo {
            kernel_cmdline: cmdline_text.trim().to_string(),
            host_kernel: sys::kernel_release(),
            host: Some(crate::hw::host_summary(Path::new("/proc"))),
            ..SessionInfo::started(&id, iso, utc_rfc3339(now))
        };
        Ok(Recording {
            log_dir: dir.display().to_string(),
            dir,
            logs_dir: logs_dir.to_path_buf(),
            info,
            kvm: "unchecked",
            guest_running: false,
            timing: Timing::new(),
            init_log: Vec::new(),
        })
    }

    /// Print and keep a line for `init.log`.
    pub fn say(&mut self, message: &str) {
        say(message);
        self.init_log
            .push(format!("[{:>8} ms] {message}", sys::uptime_ms()));
    }

    pub fn write_json<T: serde::Serialize>(&mut self, name: &'static str, value: &T) {
        let result = session::to_json(name, value).and_then(|text| {
            write_atomic(&self.dir.join(name), text.as_bytes()).map_err(session::SessionError::from)
        });
        if let Err(e) = result {
            say(&error_chain(&e));
        }
    }

    /// Rewrite `session.json` as it stands.
    pub fn save_info(&mut self) {
        let info = self.info.clone();
        self.write_json(files::SESSION_JSON, &info);
    }

    /// Rewrite `status.json` (and `session.json`) for a new stage.
    pub fn stage(&mut self, stage: Stage, message: &str) {
        self.say(message);
        let status = match self.info.outcome {
            Outcome::Running if self.guest_running => "running".to_string(),
            Outcome::Running => "started".to_string(),
            outcome => serde_json::to_value(outcome)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
        };
        let status = Status {
            schema: SCHEMA_VERSION,
            session_id: self.info.id.clone(),
            status,
            iso_path: self.info.iso.clone(),
            iso_basename: self.info.iso.rsplit('/').next().unwrap_or("").to_string(),
            log_dir: self.log_dir.clone(),
            start_time_utc: self.info.started_utc.clone(),
            kvm: self.kvm.to_string(),
            trace_level: self.info.trace_level.clone(),
            guest_ram_mb: self.info.ram_mb,
            guest_cpus: self.info.cpus,
            stage,
            updated_utc: utc_rfc3339(sys::unix_seconds()),
            uptime_ms: sys::uptime_ms(),
            message: message.to_string(),
        };
        self.write_json(files::STATUS_JSON, &status);
        self.save_info();
    }

    /// The milestone `phase` of `timing.json`, now.
    pub fn mark(&mut self, phase: &str) {
        self.mark_at(phase, sys::uptime_ms());
    }

    /// The milestone `phase`, which happened at `uptime_ms`.
    pub fn mark_at(&mut self, phase: &str, uptime_ms: u64) {
        let ago = sys::uptime_ms().saturating_sub(uptime_ms) as i64;
        let utc = utc_rfc3339_ms(sys::unix_ms() - ago);
        self.timing.mark(phase, uptime_ms, utc);
    }

    /// An interval from `start_ms` until now.
    pub fn phase(&mut self, name: &str, start_ms: u64) {
        self.phase_between(name, start_ms, sys::uptime_ms());
    }

    /// An interval that is already over.
    pub fn phase_between(&mut self, name: &str, start_ms: u64, end_ms: u64) {
        self.timing.intervals.push(Interval {
            name: name.to_string(),
            start_ms,
            end_ms,
        });
    }

    pub fn fail(&mut self, kind: FailureKind, fatal: bool, message: String) {
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

    pub fn warn(&mut self, message: String) {
        self.say(&format!("warning: {message}"));
        self.info.warnings.push(message);
    }

    /// Final files, in order; `SESSION_COMPLETE` last. The analyzer reads
    /// the session's files, so they are written before it runs.
    pub fn finish(&mut self) {
        if self.info.outcome == Outcome::Running {
            self.info.outcome = Outcome::Success;
        }
        let final_stage = match self.info.outcome {
            Outcome::Failure => Stage::Failed,
            _ => Stage::Complete,
        };
        self.info.ended_utc = Some(utc_rfc3339(sys::unix_seconds()));
        self.write_failure_txt();
        self.write_timing();
        self.analyze();
        self.mark("report_done");
        self.write_timing();
        // Rewritten: warnings from the analysis may have been added.
        self.write_failure_txt();
        self.info.hw_inventory = hw_inventory(&self.dir.join(files::HW_DIR));
        let message = match self.info.outcome {
            Outcome::Failure => "session failed; see FAILURE.txt",
            _ => "session complete",
        };
        self.stage(final_stage, message);
        self.append_index();
        let log = self.init_log.join("\n") + "\n";
        self.write_file("init.log", log.as_bytes());
        self.mark("session_finalized");
        self.write_timing();
        let stamp = format!("{}\n", self.info.ended_utc.clone().unwrap_or_default());
        self.write_file(files::SESSION_COMPLETE, stamp.as_bytes());
        sys::sync_all();
    }

    fn write_failure_txt(&mut self) {
        if !self.info.failures.is_empty() {
            let text = session::failure_text(&self.info);
            self.write_file(files::FAILURE_TXT, text.as_bytes());
        }
    }

    /// `report.*` from the session's files; a minimal report when the
    /// analysis fails. `report.log` is what `hiperiso-log analyze` prints
    /// for the session (or its error).
    fn analyze(&mut self) {
        self.stage(Stage::Analysis, "analyzing the session");
        let start = sys::uptime_ms();
        let log = match crate::analyze::analyze(&self.dir) {
            Ok(report) => {
                self.info.report_available = true;
                self.info.analysis = Some(analysis_summary(&report));
                crate::analyze::render_text(&report)
            }
            Err(e) => {
                let message = format!("analysis failed: {}", error_chain(&e));
                self.warn(message.clone());
                if let Err(e) = session::write_minimal_report(&self.dir, &self.info) {
                    self.warn(error_chain(&e));
                }
                format!("error: {message}\n")
            }
        };
        self.write_file(files::REPORT_LOG, report_log(&self.dir, &log).as_bytes());
        self.phase("analysis", start);
    }

    /// One line in the logs directory's `index.jsonl`.
    fn append_index(&mut self) {
        match serde_json::to_string(&IndexEntry::from(&self.info)) {
            Ok(line) => {
                if let Err(e) = session::append_line(&self.logs_dir.join(files::INDEX_JSONL), &line)
                {
                    say(&error_chain(&e));
                }
            }
            Err(e) => say(&format!("cannot serialize index entry: {e}")),
        }
    }

    fn write_timing(&mut self) {
        let timing = self.timing.clone();
        self.write_json(files::TIMING_JSON, &timing);
        self.write_file(files::TIMING_DAT, timing.to_dat().as_bytes());
    }

    pub fn write_file(&mut self, name: &str, content: &[u8]) {
        if let Err(e) = write_atomic(&self.dir.join(name), content) {
            say(&error_chain(&e));
        }
    }
}

/// `session.json`'s `analysis`, from the report.
fn analysis_summary(report: &crate::analyze::Report) -> AnalysisSummary {
    AnalysisSummary {
        boot_result: report.result.as_str().to_string(),
        failure_domain: report
            .failure_domain
            .as_ref()
            .map(|d| d.as_str().to_string()),
        error_count: report.errors.count,
        timing: report.timing.as_ref().map(|t| AnalysisTiming {
            total_duration_s: t.total_ms as f64 / 1000.0,
            slowest: t.slowest.clone(),
        }),
    }
}

/// The files below `hw_dir`, relative to it with `/`, sorted.
fn hw_inventory(hw_dir: &Path) -> Vec<String> {
    fn walk(dir: &Path, prefix: &str, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let name = format!("{prefix}{}", entry.file_name().to_string_lossy());
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                walk(&entry.path(), &format!("{name}/"), out);
            } else {
                out.push(name);
            }
        }
    }
    let mut out = Vec::new();
    walk(hw_dir, "", &mut out);
    out.sort();
    out
}

/// `report.log`: the analyze command as run on the stick, then its output.
fn report_log(dir: &Path, output: &str) -> String {
    format!("$ hiperiso-log analyze {}\n{output}", dir.display())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_log_is_the_command_then_its_output() {
        let log = report_log(Path::new("/mnt/data/hiperiso/logs/x"), "verdict: booted\n");
        assert_eq!(
            log,
            "$ hiperiso-log analyze /mnt/data/hiperiso/logs/x\nverdict: booted\n"
        );
    }

    #[test]
    fn hw_inventory_lists_nested_files_sorted() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(tmp.path().join("acpi/dynamic")).unwrap();
        for f in [
            "qemu_pci.txt",
            "acpi/dynamic/SSDT1",
            "acpi/DSDT",
            "host_cpuinfo.txt",
        ] {
            std::fs::write(tmp.path().join(f), b"x").unwrap();
        }
        assert_eq!(
            hw_inventory(tmp.path()),
            [
                "acpi/DSDT",
                "acpi/dynamic/SSDT1",
                "host_cpuinfo.txt",
                "qemu_pci.txt"
            ]
        );
        assert!(hw_inventory(&tmp.path().join("absent")).is_empty());
    }
}
