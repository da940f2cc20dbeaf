//! `analyze` on session directories built around logs from real QEMU runs
//! (see tests/fixtures/make-fixtures.sh).

use hiperiso_runtime::analyze::{self, BootResult};
use hiperiso_runtime::patterns::{Domain, Stage};
use hiperiso_stick::session::{self, Failure, FailureKind, Interval, Outcome, SessionInfo, Timing};
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn session_info(firmware: &str) -> SessionInfo {
    SessionInfo {
        iso_size: Some(1 << 20),
        ended_utc: Some(hiperiso_stick::time::utc_rfc3339(60)),
        kernel_cmdline: "hiperiso.iso=/ISOs/test.iso".into(),
        host_kernel: "6.1.0".into(),
        accel: Some("kvm".into()),
        firmware: Some(firmware.into()),
        trace_level: "standard".into(),
        ram_mb: 512,
        cpus: 1,
        qemu_exit_code: Some(0),
        outcome: Outcome::Success,
        ..SessionInfo::started(
            "test_19700101T000000Z",
            "/ISOs/test.iso",
            hiperiso_stick::time::utc_rfc3339(0),
        )
    }
}

/// A session directory with `serial` as serial.log and `info` as session.json.
fn session_dir(serial: Option<&str>, info: Option<&SessionInfo>) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    if let Some(serial) = serial {
        std::fs::copy(fixture(serial), dir.path().join("serial.log")).unwrap();
    }
    if let Some(info) = info {
        let json = session::to_json("session.json", info).unwrap();
        std::fs::write(dir.path().join("session.json"), json).unwrap();
    }
    dir
}

fn stages(report: &analyze::Report) -> Vec<Stage> {
    report.stages.iter().map(|s| s.stage).collect()
}

#[test]
fn linux_boot_to_marker_is_booted() {
    let dir = session_dir(Some("linux-boot.serial.log"), Some(&session_info("bios")));
    let timing = Timing {
        intervals: vec![
            Interval {
                name: "host_boot".into(),
                start_ms: 0,
                end_ms: 1500,
            },
            Interval {
                name: "qemu".into(),
                start_ms: 2000,
                end_ms: 14000,
            },
        ],
        ..Timing::new()
    };
    std::fs::write(
        dir.path().join("timing.json"),
        session::to_json("timing.json", &timing).unwrap(),
    )
    .unwrap();
    let report = analyze::analyze(dir.path()).unwrap();
    assert_eq!(report.result, BootResult::Booted, "{}", report.summary);
    assert_eq!(report.failure_domain, None);
    assert_eq!(
        stages(&report),
        [
            Stage::Kernel,
            Stage::Init,
            Stage::Userspace,
            Stage::Shutdown
        ]
    );
    let init = &report.stages[1];
    assert_eq!(init.at.line, 343);
    assert_eq!(init.at.kernel_time_s, Some(9.095006));
    assert_eq!(report.errors.fatal, 0);
    let timing = report.timing.as_ref().unwrap();
    assert_eq!(
        (timing.total_ms, timing.slowest.as_deref()),
        (14000, Some("qemu"))
    );

    // The three files are written, and the meta file is flat KEY=VALUE.
    let meta = std::fs::read_to_string(dir.path().join("analysis.meta")).unwrap();
    assert!(meta.lines().any(|l| l == "RESULT=booted"), "{meta}");
    assert!(
        meta.lines()
            .any(|l| l == "STAGES=kernel,init,userspace,shutdown"),
        "{meta}"
    );
    assert!(meta.lines().all(|l| l.contains('=')));
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("report.json")).unwrap())
            .unwrap();
    assert_eq!(json["result"], "booted");
    assert_eq!(json["stages"][1]["stage"], "init");
    assert_eq!(json["stages"][1]["line"], 343);
    let text = std::fs::read_to_string(dir.path().join("report.txt")).unwrap();
    assert!(text.contains("RESULT: booted"), "{text}");

    // Same inputs, same bytes.
    let first = std::fs::read(dir.path().join("report.json")).unwrap();
    analyze::analyze(dir.path()).unwrap();
    assert_eq!(
        first,
        std::fs::read(dir.path().join("report.json")).unwrap()
    );
}

#[test]
fn missing_init_panic_is_a_kernel_failure() {
    let dir = session_dir(Some("linux-panic.serial.log"), Some(&session_info("bios")));
    let report = analyze::analyze(dir.path()).unwrap();
    assert_eq!(report.result, BootResult::Failed);
    assert_eq!(report.failure_domain, Some(Domain::Kernel));
    let fatal: Vec<_> = report
        .errors
        .first
        .iter()
        .filter(|f| f.id == "init_failed")
        .collect();
    assert_eq!(fatal.len(), 1);
    assert!(
        fatal[0]
            .at
            .text
            .contains("Requested init /nonexistent failed")
    );
    assert_eq!(fatal[0].at.line, 348);
    // The exec failure before it is counted too.
    assert!(
        report
            .errors
            .first
            .iter()
            .any(|f| f.id == "init_exec_failed")
    );
    assert!(
        report.summary.contains("Requested init /nonexistent"),
        "{}",
        report.summary
    );
    assert!(report.hints[0].contains("init="), "{:?}", report.hints);
    // The kernel tried the broken initramfs init: the init stage was reached.
    assert_eq!(stages(&report), [Stage::Kernel, Stage::Init]);
    assert!(
        report.stages[1]
            .at
            .text
            .contains("Run /broken-init as init process")
    );
}

#[test]
fn unmountable_root_is_a_kernel_failure_with_a_root_hint() {
    let dir = session_dir(Some("linux-noroot.serial.log"), Some(&session_info("bios")));
    let report = analyze::build_report(dir.path()).unwrap();
    assert_eq!(report.result, BootResult::Failed);
    assert_eq!(report.failure_domain, Some(Domain::Kernel));
    assert_eq!(report.errors.first[0].id, "no_root_fs");
    assert!(
        report.hints[0].contains("root filesystem"),
        "{:?}",
        report.hints
    );
}

#[test]
fn ovmf_without_bootable_device_is_a_firmware_failure() {
    let mut info = session_info("uefi");
    // hiperiso-init stopped QEMU at its timeout.
    info.qemu_exit_code = None;
    info.qemu_signal = Some(15);
    let dir = session_dir(Some("ovmf-noboot.serial.log"), Some(&info));
    std::fs::copy(
        fixture("trace-log-timestamp.log"),
        dir.path().join("trace.bin"),
    )
    .unwrap();
    let report = analyze::analyze(dir.path()).unwrap();
    assert_eq!(report.result, BootResult::Failed, "{}", report.summary);
    assert_eq!(report.failure_domain, Some(Domain::Firmware));
    assert_eq!(stages(&report), [Stage::Firmware, Stage::BootDevice]);
    let ids: Vec<&str> = report.errors.first.iter().map(|f| f.id).collect();
    assert_eq!(ids, ["uefi_boot_option_failed", "uefi_shell_fallback"]);
    assert!(
        report.hints[0].contains("\"firmware\": \"bios\""),
        "{:?}",
        report.hints
    );
    // The I/O summary comes from the real log-backend trace.
    let io = report.io.as_ref().unwrap();
    let cd = io.cdrom.as_ref().unwrap();
    assert_eq!((cd.sectors, cd.requests), (2, 2));
    assert!(cd.first_read_s.unwrap() > 0.0);
    assert_eq!(io.trace.pci_config[0].function, "mch 00:00.0");
}

#[test]
fn qmp_guest_panic_event_is_a_kernel_failure() {
    let mut info = session_info("bios");
    info.guest_events = vec![
        "1200 RESUME {}".into(),
        "9050 GUEST_PANICKED {\"action\": \"pause\"}".into(),
    ];
    let dir = session_dir(None, Some(&info));
    std::fs::write(dir.path().join("serial.log"), b"").unwrap();
    let report = analyze::build_report(dir.path()).unwrap();
    assert_eq!(report.result, BootResult::Failed, "{}", report.summary);
    assert_eq!(report.failure_domain, Some(Domain::Kernel));
    let finding = &report.errors.first[0];
    assert_eq!(
        (finding.id, finding.at.file.as_str(), finding.at.line),
        ("guest_panicked", "session.json:guest_events", 2)
    );
}

#[test]
fn timeout_before_any_output() {
    let mut info = session_info("uefi");
    info.qemu_exit_code = None;
    info.qemu_signal = Some(9);
    let dir = session_dir(None, Some(&info));
    std::fs::write(dir.path().join("serial.log"), b"").unwrap();
    let report = analyze::build_report(dir.path()).unwrap();
    assert_eq!(report.result, BootResult::Timeout);
    assert_eq!(report.failure_domain, Some(Domain::Firmware));
    assert!(
        report
            .hints
            .iter()
            .any(|h| h.contains("printed nothing on the serial console"))
    );
}

#[test]
fn silent_guest_that_loaded_from_the_cd_is_not_blamed_on_the_firmware() {
    use hiperiso_runtime::simpletrace::{SimpleTraceWriter, WriteArg};
    let mut info = session_info("uefi");
    info.qemu_exit_code = None;
    info.qemu_signal = Some(15);
    let dir = session_dir(None, Some(&info));
    std::fs::write(dir.path().join("serial.log"), b"").unwrap();
    let mut w = SimpleTraceWriter::new(Vec::new()).unwrap();
    w.mapping(0, "ide_atapi_cmd_read").unwrap();
    // 40 MiB in 64 KiB reads over 20 s.
    for i in 0..640u64 {
        let args = [
            WriteArg::U64(1),
            WriteArg::Str(b"dma"),
            WriteArg::U64(i * 32),
            WriteArg::U64(32),
        ];
        w.event(0, i * 31_250_000, 1, &args).unwrap();
    }
    std::fs::write(dir.path().join("trace.bin"), w.into_inner()).unwrap();
    let report = analyze::build_report(dir.path()).unwrap();
    assert_eq!(report.result, BootResult::Timeout);
    assert_eq!(report.failure_domain, None, "{}", report.summary);
    assert!(
        report.summary.contains("read 40 MiB from the CD"),
        "{}",
        report.summary
    );
    assert!(
        report.hints[0].contains("screenshots/"),
        "{:?}",
        report.hints
    );
    let cd = report.io.unwrap().cdrom.unwrap();
    assert_eq!((cd.sectors, cd.requests), (640 * 32, 640));
    assert_eq!(cd.last_read_s, Some(639.0 * 0.03125));
}

#[test]
fn host_failure_from_session_json() {
    let mut info = session_info("uefi");
    info.outcome = Outcome::Failure;
    info.qemu_exit_code = None;
    info.failures = vec![Failure {
        kind: FailureKind::NoKvm,
        fatal: true,
        message: "/dev/kvm: cannot create a VM".into(),
    }];
    let dir = session_dir(None, Some(&info));
    let report = analyze::analyze(dir.path()).unwrap();
    assert_eq!(report.result, BootResult::HostFailure);
    assert_eq!(report.failure_domain, Some(Domain::Host));
    assert!(report.summary.contains("no_kvm"), "{}", report.summary);
    assert_eq!(report.host_failures[0].kind, "no_kvm");
    assert!(report.warnings.iter().any(|w| w == "serial.log: missing"));
}

#[test]
fn broken_and_truncated_inputs_give_a_report_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("session.json"), b"{\"schema\": 1, \"id\": ").unwrap();
    std::fs::write(dir.path().join("timing.json"), b"[]").unwrap();
    // A trace cut in the middle of a record, and a serial log cut mid-line
    // with binary garbage.
    let mut trace = std::fs::read(fixture("trace-log-plain.log")).unwrap();
    trace.truncate(trace.len() / 2 + 7);
    std::fs::write(dir.path().join("trace.bin"), &trace).unwrap();
    let mut serial = std::fs::read(fixture("linux-panic.serial.log")).unwrap();
    serial.truncate(12_000);
    serial.extend_from_slice(&[0xff, 0x00, 0x1b, b'[']);
    std::fs::write(dir.path().join("serial.log"), &serial).unwrap();
    let report = analyze::analyze(dir.path()).unwrap();
    assert_eq!(report.result, BootResult::Unknown, "{}", report.summary);
    assert_eq!(report.furthest_stage, Some(Stage::Kernel));
    assert!(
        report
            .warnings
            .iter()
            .any(|w| w.starts_with("session.json: ")),
        "{:?}",
        report.warnings
    );
    assert!(
        report
            .warnings
            .iter()
            .any(|w| w.starts_with("timing.json: "))
    );
    assert!(report.io.as_ref().unwrap().trace.events > 100);

    // A truncated simpletrace gives a partial I/O summary and a warning.
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = Vec::new();
    {
        use hiperiso_runtime::simpletrace::{SimpleTraceWriter, WriteArg};
        let mut w = SimpleTraceWriter::new(&mut bytes).unwrap();
        w.mapping(3, "ide_atapi_cmd_read").unwrap();
        for lba in 0..10 {
            w.event(
                3,
                lba,
                1,
                &[
                    WriteArg::U64(1),
                    WriteArg::Str(b"dma"),
                    WriteArg::U64(lba),
                    WriteArg::U64(4),
                ],
            )
            .unwrap();
        }
    }
    bytes.truncate(bytes.len() - 5);
    std::fs::write(dir.path().join("trace.bin"), &bytes).unwrap();
    let report = analyze::build_report(dir.path()).unwrap();
    let io = report.io.unwrap();
    assert_eq!(io.cdrom.unwrap().sectors, 9 * 4);
    assert!(io.trace.error.as_deref().unwrap().contains("truncated"));
    assert!(
        report
            .warnings
            .iter()
            .any(|w| w.starts_with("trace: partial summary"))
    );
}

#[test]
fn not_a_directory_is_an_error() {
    let err = analyze::analyze(&fixture("linux-boot.serial.log")).unwrap_err();
    assert!(
        err.to_string()
            .contains("linux-boot.serial.log is not a directory"),
        "{err}"
    );
}
