//! The `hiperiso-log` binary: serial, analyze, sessions and show, in text
//! and `--json`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn hiperiso_log(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hiperiso-log"))
        .args(args)
        .output()
        .unwrap()
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

#[test]
fn serial_with_stages_marks_lines() {
    let log = fixture("linux-panic.serial.log");
    let text = stdout(&hiperiso_log(&[
        "serial",
        "--stages",
        log.to_str().unwrap(),
    ]));
    let marked: Vec<&str> = text.lines().filter(|l| l.contains("] [")).collect();
    assert!(
        text.lines()
            .any(|l| l.starts_with("   348 | [FATAL:init_failed] [FATAL:kernel_panic] ")),
        "{marked:?}"
    );
    assert!(text.lines().any(|l| l.starts_with("     1 | [kernel] ")));

    let json = stdout(&hiperiso_log(&[
        "serial",
        "--stages",
        "--json",
        log.to_str().unwrap(),
    ]));
    let scan: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(scan["stages"][0]["stage"], "kernel");
    assert_eq!(scan["findings"][1]["id"], "init_failed");
    assert_eq!(scan["findings"][1]["line"], 348);

    // Plain mode strips the OVMF terminal escapes.
    let ovmf = stdout(&hiperiso_log(&[
        "serial",
        fixture("ovmf-noboot.serial.log").to_str().unwrap(),
    ]));
    assert!(!ovmf.contains('\u{1b}'));
    assert!(ovmf.lines().any(|l| l == "UEFI Interactive Shell v2.2"));
}

#[test]
fn analyze_then_sessions_and_show() {
    let root = tempfile::tempdir().unwrap();
    let logs = root.path().join("hiperiso/logs");
    let id = "boot_19700101T000000Z";
    std::fs::create_dir_all(logs.join(id)).unwrap();
    std::fs::copy(
        fixture("linux-boot.serial.log"),
        logs.join(id).join("serial.log"),
    )
    .unwrap();
    std::fs::write(
        logs.join("index.jsonl"),
        format!(
            "{{\"schema\":1,\"id\":\"{id}\",\"iso\":\"/ISOs/boot.iso\",\"started_utc\":\"1970-01-01T00:00:00Z\",\
             \"ended_utc\":\"1970-01-01T00:00:42Z\",\"outcome\":\"success\",\"firmware\":\"bios\",\
             \"accel\":\"kvm\",\"qemu_exit_code\":0,\"failures\":[]}}\n"
        ),
    )
    .unwrap();
    let session = logs.join(id);
    let text = stdout(&hiperiso_log(&["analyze", session.to_str().unwrap()]));
    assert!(text.contains("RESULT: booted"), "{text}");
    assert!(session.join("report.json").is_file());

    let listing = stdout(&hiperiso_log(&["sessions", root.path().to_str().unwrap()]));
    let row = listing.lines().nth(1).unwrap();
    let columns: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(columns, [id, "booted", "42s", "/ISOs/boot.iso"]);

    let json = stdout(&hiperiso_log(&[
        "--json",
        "sessions",
        logs.to_str().unwrap(),
    ]));
    let list: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(list["sessions"][0]["duration_s"], 42);

    let shown = stdout(&hiperiso_log(&[
        "show",
        "latest",
        "--from",
        root.path().to_str().unwrap(),
        "--json",
    ]));
    let report: serde_json::Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(report["result"], "booted");
    assert_eq!(report["furthest_stage"], "shutdown");

    let missing = hiperiso_log(&["show", "nope", "--from", root.path().to_str().unwrap()]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no session \"nope\""));
}
