//! The verdict (booted, failed, timed out, host failure; where and why),
//! the timing summary and the hints for the user.

use super::report::*;
use crate::patterns::{self, Domain, Meaning, Severity, Source, Stage};
use crate::screens::{HANG_MS, ScreenSummary};
use crate::serial::{Finding, SerialScan};
use hiperiso_stick::session::{FailureKind, SessionInfo, Timing};
use serde::Serialize;

pub(super) struct Verdict {
    pub(super) result: BootResult,
    pub(super) domain: Option<Domain>,
    pub(super) summary: String,
}

pub(super) fn is_host_kind(kind: FailureKind) -> bool {
    !matches!(kind, FailureKind::ConfigBroken | FailureKind::GuestCrash)
}

/// Where a guest stuck at `stage` was stuck.
pub(super) fn domain_after(stage: Option<Stage>) -> Domain {
    match stage {
        None | Some(Stage::Firmware) => Domain::Firmware,
        Some(Stage::BootDevice) | Some(Stage::Bootloader) => Domain::Bootloader,
        Some(Stage::Kernel) => Domain::Kernel,
        Some(_) => Domain::Userspace,
    }
}

pub(super) fn decide(
    scan: &SerialScan,
    info: Option<&SessionInfo>,
    host: &[HostFailure],
    session: &SessionFacts,
    cd_bytes: u64,
    screens: Option<&ScreenSummary>,
) -> Verdict {
    let furthest = scan.furthest_stage();
    let reached = |stage| furthest.is_some_and(|f| f >= stage);

    // 1. The host side failed before or around the guest.
    let fatal_host_kind =
        info.and_then(|i| i.failures.iter().find(|f| f.fatal && is_host_kind(f.kind)));
    if let Some(failure) = fatal_host_kind {
        return Verdict {
            result: BootResult::HostFailure,
            domain: Some(Domain::Host),
            summary: format!(
                "the host failed ({}): {}",
                enum_name(&failure.kind),
                failure.message
            ),
        };
    }
    let fatal_qemu = scan
        .findings
        .iter()
        .find(|f| f.severity == Severity::Fatal && f.domain == Domain::Host);
    if let Some(finding) = fatal_qemu {
        return Verdict {
            result: BootResult::HostFailure,
            domain: Some(Domain::Host),
            summary: format!("QEMU failed: {}", finding.at.text),
        };
    }
    if let (None, 0, Some(failure)) = (info, scan.lines, host.first()) {
        return Verdict {
            result: BootResult::HostFailure,
            domain: Some(Domain::Host),
            summary: format!(
                "the session failed before the guest ran: {}",
                failure.message
            ),
        };
    }

    // 2. A fatal guest failure after the last sign of progress.
    // The first sign of a booted system: userspace, a login prompt or an
    // installer's first question.
    let userspace_order = [Stage::Userspace, Stage::Login, Stage::Installer]
        .into_iter()
        .filter_map(|s| scan.stage_order(s))
        .min();
    let fatal = scan.findings.iter().find(|f| {
        f.severity == Severity::Fatal
            && f.domain != Domain::Host
            && userspace_order.is_none_or(|u| f.order > u)
    });
    if let Some(finding) = fatal {
        let stage = furthest.map_or("no stage".to_string(), |s| format!("stage {}", s.as_str()));
        return Verdict {
            result: BootResult::Failed,
            domain: Some(finding.domain),
            summary: format!(
                "{} failure after {stage}: {}",
                finding.domain.as_str(),
                finding.at.text.trim()
            ),
        };
    }

    // 3. Userspace came up: booted, whatever happened next.
    if reached(Stage::Userspace) && userspace_order.is_some() {
        let stage = furthest.unwrap_or(Stage::Userspace);
        let how = match stage {
            Stage::Login => "the guest booted to a login prompt",
            Stage::Installer => "the guest booted to its installer's first question",
            _ => "the guest booted to userspace",
        };
        let seen = scan
            .stages
            .iter()
            .find(|s| s.stage == stage)
            .map_or(String::new(), |s| {
                format!(" ({}: {})", s.at.source.as_str(), s.at.text.trim())
            });
        return Verdict {
            result: BootResult::Booted,
            domain: None,
            summary: format!("{how}{seen}"),
        };
    }
    let shutdown = scan.stage_order(Stage::Shutdown).is_some();
    if shutdown && scan.stage_order(Stage::Init).is_some() {
        return Verdict {
            result: BootResult::Booted,
            domain: None,
            summary: "the guest ran its init and shut down cleanly".into(),
        };
    }
    if shutdown {
        return Verdict {
            result: BootResult::Failed,
            domain: Some(Domain::GuestShutdown),
            summary: "the guest shut down or reset before reaching init".into(),
        };
    }
    let guest_crash = info.and_then(|i| {
        i.failures
            .iter()
            .find(|f| f.kind == FailureKind::GuestCrash)
    });
    if let Some(crash) = guest_crash {
        return Verdict {
            result: BootResult::Failed,
            domain: Some(domain_after(furthest)),
            summary: format!("the guest crashed: {}", crash.message),
        };
    }

    // 4. The last screen is a boot loader's menu or program (GRUB, ISOLINUX,
    // iPXE's prompt, memtest86+): the ISO booted as far as it goes without
    // someone at the keyboard.
    if furthest == Some(Stage::Bootloader) {
        let last_text = screens
            .and_then(|s| s.last.as_ref())
            .and_then(|l| l.text.as_deref())
            .unwrap_or("");
        let menu_line = last_text.lines().find(|line| {
            patterns::matches(Source::Screen, line)
                .any(|p| p.meaning == Meaning::Stage(Stage::Bootloader))
        });
        if let Some(line) = menu_line {
            return Verdict {
                result: BootResult::Booted,
                domain: None,
                summary: format!(
                    "the guest is waiting at its boot loader screen: {}",
                    line.trim()
                ),
            };
        }
    }

    // 5. Hung: the screen did not change for a long time at the end of the
    // session, with no boot, failure or shutdown above.
    let unchanged = screens.and_then(|s| s.unchanged_at_end_ms);
    if let Some(ms) = unchanged.filter(|&ms| ms >= HANG_MS) {
        let stage = furthest.map_or("before any recognized stage".to_string(), |s| {
            format!("at stage {}", s.as_str())
        });
        return Verdict {
            result: BootResult::Stuck,
            domain: Some(domain_after(furthest)),
            summary: format!(
                "the guest hung {stage}: the screen did not change for the last {} s",
                ms / 1000
            ),
        };
    }

    // 6. Still running when the session ended it. A guest that printed
    // nothing recognizable but read a lot from the CD got past the firmware
    // (most ISOs boot to the screen only): say so rather than blame it.
    let silent_but_loaded = furthest.is_none() && cd_bytes >= LOADED_FROM_CD_BYTES;
    if session.qemu_signal.is_some() && silent_but_loaded {
        return Verdict {
            result: BootResult::Timeout,
            domain: None,
            summary: format!(
                "the guest read {} MiB from the CD but printed nothing recognizable on serial; it was still running when QEMU was stopped",
                cd_bytes >> 20
            ),
        };
    }
    if session.qemu_signal.is_some() {
        let stage = furthest.map_or("before any recognized stage".to_string(), |s| {
            format!("at stage {}", s.as_str())
        });
        return Verdict {
            result: BootResult::Timeout,
            domain: Some(domain_after(furthest)),
            summary: format!("the guest was still {stage} when QEMU was stopped"),
        };
    }
    Verdict {
        result: BootResult::Unknown,
        domain: None,
        summary: match furthest {
            Some(stage) => format!(
                "no conclusion: the last recognized stage is {}",
                stage.as_str()
            ),
            None => "no conclusion: nothing recognizable in the logs".into(),
        },
    }
}

pub(super) fn timing_summary(timing: &Timing) -> TimingSummary {
    let phases: Vec<TimingPhase> = timing
        .intervals
        .iter()
        .map(|p| TimingPhase {
            name: p.name.clone(),
            start_ms: p.start_ms,
            end_ms: p.end_ms,
            duration_ms: p.end_ms.saturating_sub(p.start_ms),
        })
        .collect();
    let start = phases.iter().map(|p| p.start_ms).min().unwrap_or(0);
    let end = phases.iter().map(|p| p.end_ms).max().unwrap_or(0);
    let slowest = phases
        .iter()
        .max_by(|a, b| {
            a.duration_ms
                .cmp(&b.duration_ms)
                .then_with(|| b.name.cmp(&a.name))
        })
        .map(|p| p.name.clone());
    TimingSummary {
        phases,
        total_ms: end.saturating_sub(start),
        slowest,
    }
}

pub(super) fn hints(
    scan: &SerialScan,
    verdict: &Verdict,
    session: &SessionFacts,
    io: Option<&IoSummary>,
    serial_present: bool,
    serial_bytes: u64,
) -> Vec<String> {
    let mut hints: Vec<String> = Vec::new();
    let mut push = |hint: String| {
        if !hints.contains(&hint) {
            hints.push(hint);
        }
    };
    // Fatal findings first, then the rest, each hint once.
    let mut findings: Vec<&Finding> = scan.findings.iter().collect();
    findings.sort_by_key(|f| (std::cmp::Reverse(f.severity), f.order));
    for finding in findings {
        if let Some(hint) = finding.hint {
            push(hint.to_string());
        }
    }
    let firmware = session.firmware.as_deref();
    if verdict.result != BootResult::Booted && verdict.result != BootResult::HostFailure {
        let loaded_from_cd = io
            .and_then(|io| io.cdrom.as_ref())
            .is_some_and(|cd| cd.bytes >= LOADED_FROM_CD_BYTES);
        if serial_present && serial_bytes == 0 && !loaded_from_cd {
            push(
                "the guest printed nothing on the serial console: it may use only the screen; look at screenshots/ (and add console=ttyS0 to the guest kernel command line if you control it)"
                    .into(),
            );
        }
        if let Some(cd) = io.and_then(|io| io.cdrom.as_ref()) {
            if cd.bytes >= LOADED_FROM_CD_BYTES && scan.furthest_stage().is_none() {
                push("the guest loaded a lot from the CD but used only the screen: look at screenshots/, or add console=ttyS0 to the guest kernel command line to get its log in serial.log".into());
            }
            if cd.sectors == 0 {
                push("the guest never read the CD: the firmware did not try to boot it".into());
            }
        } else if io.is_some_and(|io| io.trace.error.is_none() && io.trace.devices.is_empty()) {
            push(
                "the trace recorded no disk reads: use trace level detailed or full to see CD I/O"
                    .into(),
            );
        }
        if firmware == Some("uefi") && scan.furthest_stage() < Some(Stage::Bootloader) {
            push("if this ISO boots only in BIOS mode, set \"firmware\": \"bios\" for it in iso_overrides".into());
        }
        if matches!(verdict.result, BootResult::Timeout | BootResult::Stuck) {
            push(format!(
                "the session timed out with the guest {}; raise the timeout or check screenshots/ for a prompt waiting for input",
                scan.furthest_stage()
                    .map_or("silent".to_string(), |s| format!("at stage {}", s.as_str()))
            ));
        }
    }
    if session.accel.as_deref() == Some("tcg") {
        push("QEMU ran without KVM (TCG): the guest is 10-50x slower; enable VT-x/AMD-V in the PC's firmware".into());
    }
    hints
}

/// The serde name of a unit enum variant (`no_kvm`).
pub(super) fn enum_name<T: Serialize>(value: &T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}
