//! Verdicts for real third-party images (issue 17). Each goes through
//! `hiperiso-build run --iso X --boot X --timeout T`, the binary as a user
//! runs it, on the debian profile's stick (the e2e suite's image). None of
//! them powers off by itself: `--timeout` presses the power button, the
//! stick finishes the session, and `run` prints the report. Each must reach
//! its verdict and furthest stage, quote the screen or serial text that
//! proves it, and exit with the documented code (`run --help`).
//!
//! The images ship in Debian packages and nobody here made them:
//! - GRUB's rescue CD: BIOS only, its menu on the VGA text screen (read
//!   exactly), nothing on serial; its default entry finds no kernel;
//! - memtest86+: hybrid, booted with UEFI, nothing on serial, its testing
//!   screen read by OCR;
//! - iPXE: UEFI, on the default user-mode network; it finds no boot server
//!   and gives up: a failure, with the hint about network boot;
//! - Debian's installer (kernel and initrd from the netboot package, booted
//!   by Debian's ISOLINUX; only the ISO container is made here, see
//!   `real_isos::debian_installer_iso`): a Linux kernel that boots to the
//!   installer's first question.

use std::path::{Path, PathBuf};
use std::process::Command;

use hiperiso_build::vm::{self as run, session_ids, session_report};
use hiperiso_runtime::analyze::BootResult;
use hiperiso_runtime::patterns::{Source, Stage};
use hiperiso_runtime::session_list::Logs;
use hiperiso_tests::{outer_qemu, real_isos, workspace_root};

use crate::e2e::stick_with;
use crate::runtime_boot::VmSlot;

/// What one image must give.
struct Expect {
    /// hiperiso.json on the stick.
    config: &'static str,
    timeout_s: u64,
    /// The exit status of `run`.
    exit: i32,
    result: BootResult,
    stage: Stage,
    /// Where the furthest stage was seen (None: serial and screen both show
    /// it, and either may be first), and a piece of its text.
    source: Option<Source>,
    evidence: &'static str,
    /// A piece of the one-sentence summary.
    summary: &'static str,
    /// A piece of a hint that is due.
    hint: Option<&'static str>,
}

const SMALL_GUEST: &str = r#"{"control": {"default_ram": 256, "screenshot_interval": 3}}"#;

/// `hiperiso-build`, built by cargo (a no-op under `cargo test --workspace`,
/// which builds it for the builder's own tests).
fn hiperiso_build() -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(workspace_root())
        .args([
            "build",
            "-q",
            "-p",
            "hiperiso-build",
            "--bin",
            "hiperiso-build",
        ])
        .status()
        .expect("running cargo");
    assert!(status.success(), "cargo build -p hiperiso-build: {status}");
    hiperiso_tests::stick::target_dir().join("debug/hiperiso-build")
}

/// Boots `iso` through `hiperiso-build run` and checks the verdict, on the
/// printed report and on the report read back from the stick.
fn check(iso: &Path, uefi: bool, expect: &Expect) {
    let name = iso.file_name().unwrap().to_str().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let image = stick_with(dir.path(), &[], expect.config);
    let binary = hiperiso_build();
    if uefi {
        // Built or found once for all tests, before `run` looks for it.
        outer_qemu::outer_qemu().expect("the outer-qemu step");
    }
    let before = session_ids(&image).unwrap();
    let output = {
        let _slot = VmSlot::acquire();
        Command::new(&binary)
            .current_dir(workspace_root())
            .arg("run")
            .arg("--image")
            .arg(&image)
            .arg("--iso")
            .arg(iso)
            .args(["--boot", &name, "--keep", "--timeout"])
            .arg(expect.timeout_s.to_string())
            .output()
            .expect("running hiperiso-build run")
    };
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let tail: String = {
        let lines: Vec<&str> = printed.lines().collect();
        lines[lines.len().saturating_sub(80)..].join("\n")
    };
    assert_eq!(
        output.status.code(),
        Some(expect.exit),
        "exit status of run for {name}:\n{tail}"
    );
    assert!(
        printed.contains(&format!("RESULT: {}", expect.result.as_str())),
        "{name}:\n{tail}"
    );
    for piece in [expect.evidence, expect.summary]
        .into_iter()
        .chain(expect.hint)
    {
        assert!(printed.contains(piece), "{name}: no {piece:?} in\n{tail}");
    }

    let after = session_ids(&image).unwrap();
    let id = after
        .iter()
        .find(|id| !before.contains(id))
        .unwrap_or_else(|| panic!("no new session for {name}:\n{tail}"));
    let report = session_report(&image, id).unwrap();
    assert_eq!(report.result, expect.result, "{}", report.summary);
    assert_eq!(
        report.furthest_stage,
        Some(expect.stage),
        "{}",
        report.summary
    );
    let at = report
        .furthest_stage_at
        .as_ref()
        .expect("furthest_stage_at");
    if let Some(source) = expect.source {
        assert_eq!(at.at.source, source, "{at:?}");
    }
    assert!(at.at.text.contains(expect.evidence), "{at:?}");
    assert!(
        report.summary.contains(expect.summary),
        "{}",
        report.summary
    );
    if let Some(hint) = expect.hint {
        assert!(
            report.hints.iter().any(|h| h.contains(hint)),
            "{:?}",
            report.hints
        );
    }
    // `hiperiso-log sessions IMG` lists it, finished; `show` explains it.
    let mut logs = Logs::open(&image).unwrap();
    let row = logs
        .list()
        .unwrap()
        .sessions
        .into_iter()
        .find(|row| &row.id == id);
    let row = row.unwrap_or_else(|| panic!("hiperiso-log sessions does not list {id}"));
    assert!(!row.interrupted, "{row:?}");
    assert_eq!(row.result, expect.result.as_str(), "{row:?}");
    assert_eq!(logs.show(id).unwrap().summary, report.summary);
    // The stick finished the session itself: hiperiso-init's own report
    // and report.log are there.
    for file in ["report.json", "report.log", "session.json"] {
        assert!(
            run::read_session_file(&image, id, file).unwrap().is_some(),
            "{id}/{file} missing"
        );
    }
}

/// Unattended, GRUB's rescue CD shows its menu, then boots its default
/// entry, which has no kernel to load: a boot loader failure, proved by
/// GRUB's own words on the VGA text screen (read exactly, no OCR).
#[test]
fn grub_rescue_cd_reaches_its_menu_then_fails_to_load_a_kernel() {
    let iso = real_isos::fetch(&real_isos::GRUB_RESCUE).unwrap();
    check(
        &iso,
        false,
        &Expect {
            config: SMALL_GUEST,
            // GRUB's menu counts down, the entry fails, then "Press any
            // key" waits before the fallback message: on a loaded host the
            // guest got only 49 s of 100 and ended before that message.
            timeout_s: 160,
            exit: 2,
            result: BootResult::Failed,
            stage: Stage::Bootloader,
            source: Some(Source::Screen),
            // The first screenshot that shows GRUB: "Welcome to GRUB!" or
            // its menu's "GNU GRUB  version 2.06", as the screenshots fall.
            evidence: "GRUB",
            summary: "bootloader failure after stage bootloader: Failed to boot both default and \
                      fallback entries",
            hint: Some("GRUB inside the ISO reported an error"),
        },
    );
}

#[test]
fn memtest86plus_tests_memory_under_uefi_seen_by_ocr() {
    let iso = real_isos::fetch(&real_isos::MEMTEST).unwrap();
    check(
        &iso,
        true,
        &Expect {
            config: SMALL_GUEST,
            timeout_s: 150,
            exit: 0,
            result: BootResult::Booted,
            stage: Stage::Bootloader,
            source: Some(Source::Screen),
            evidence: "CLK/Temp:",
            summary: "waiting at its boot loader screen",
            hint: None,
        },
    );
}

#[test]
fn ipxe_finds_no_boot_server_and_says_so() {
    let iso = real_isos::fetch(&real_isos::IPXE).unwrap();
    check(
        &iso,
        true,
        &Expect {
            config: SMALL_GUEST,
            timeout_s: 120,
            exit: 2,
            result: BootResult::Failed,
            stage: Stage::Bootloader,
            source: Some(Source::Serial),
            evidence: "iPXE initialising devices",
            summary: "firmware failure after stage bootloader: Nothing to boot",
            hint: Some("boots from the network"),
        },
    );
}

#[test]
fn debian_installer_boots_linux_to_its_first_question() {
    let iso = real_isos::debian_installer_iso().unwrap();
    check(
        &iso,
        false,
        &Expect {
            // Below about 800 MiB the installer asks about low memory first.
            config: r#"{"control": {"default_ram": 1024, "screenshot_interval": 5}}"#,
            timeout_s: 240,
            exit: 0,
            result: BootResult::Booted,
            stage: Stage::Installer,
            source: None,
            evidence: "Select a language",
            summary: "booted to its installer's first question",
            hint: None,
        },
    );
}
