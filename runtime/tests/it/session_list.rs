//! `sessions` / `show` on a logs directory, a stick-like tree, and disk
//! images (GPT and MBR) written by the installer, read without mounting.

use hiperiso_installer::image::{self, ImageSpec};
use hiperiso_installer::layout::TableKind;
use hiperiso_runtime::analyze::BootResult;
use hiperiso_runtime::session_list::{Logs, SessionsError};
use hiperiso_stick::session::{self, IndexEntry, Outcome, SessionInfo};
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn info(id: &str, iso: &str, start: i64, end: i64) -> SessionInfo {
    SessionInfo {
        ended_utc: Some(hiperiso_stick::time::utc_rfc3339(end)),
        host_kernel: "6.1.0".into(),
        accel: Some("kvm".into()),
        firmware: Some("bios".into()),
        trace_level: "none".into(),
        ram_mb: 512,
        cpus: 1,
        qemu_exit_code: Some(0),
        outcome: Outcome::Success,
        ..SessionInfo::started(id, iso, hiperiso_stick::time::utc_rfc3339(start))
    }
}

/// A data-partition tree with two sessions: a kernel panic (with a
/// report.json already written) and a successful boot (without one).
fn data_tree() -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let logs = root.path().join("hiperiso/logs");
    let sessions = [
        (
            info(
                "panic_20261121T100000Z",
                "/ISOs/panic.iso",
                1_795_341_600,
                1_795_341_630,
            ),
            "linux-panic.serial.log",
        ),
        (
            info(
                "boot_20261121T110000Z",
                "/ISOs/boot.iso",
                1_795_345_200,
                1_795_345_212,
            ),
            "linux-boot.serial.log",
        ),
    ];
    let mut index = String::new();
    for (info, serial) in &sessions {
        let dir = logs.join(&info.id);
        std::fs::create_dir_all(dir.join("hw")).unwrap();
        std::fs::copy(fixture(serial), dir.join("serial.log")).unwrap();
        std::fs::write(
            dir.join("session.json"),
            session::to_json("session.json", info).unwrap(),
        )
        .unwrap();
        index.push_str(&serde_json::to_string(&IndexEntry::from(info)).unwrap());
        index.push('\n');
    }
    hiperiso_runtime::analyze::analyze(&logs.join("panic_20261121T100000Z")).unwrap();
    // An interrupted session (power lost while the guest ran): no index
    // line, no report, its last status.json, one screenshot with its text.
    let mut cut = info(
        "grub_20261121T120000Z",
        "/ISOs/grub.iso",
        1_795_348_800,
        1_795_348_800,
    );
    cut.ended_utc = None;
    cut.outcome = Outcome::Running;
    let dir = logs.join(&cut.id);
    std::fs::create_dir_all(dir.join("screenshots")).unwrap();
    std::fs::write(
        dir.join("session.json"),
        session::to_json("session.json", &cut).unwrap(),
    )
    .unwrap();
    let status = session::Status {
        schema: session::SCHEMA_VERSION,
        session_id: "cut".into(),
        status: "running".into(),
        iso_path: "/ISOs/cut.iso".into(),
        iso_basename: "cut.iso".into(),
        log_dir: "/hiperiso/logs/cut".into(),
        start_time_utc: "2026-11-21T12:00:00Z".into(),
        kvm: "available".into(),
        trace_level: "standard".into(),
        guest_ram_mb: 1024,
        guest_cpus: 1,
        stage: session::Stage::QemuRunning,
        updated_utc: "2026-11-21T12:00:05Z".into(),
        uptime_ms: 5000,
        message: "QEMU is running".into(),
    };
    std::fs::write(
        dir.join("status.json"),
        serde_json::to_string(&status).unwrap(),
    )
    .unwrap();
    let shots = fixture("screens/grub-rescue/screenshots");
    for name in ["0003.png", "0003.txt"] {
        std::fs::copy(shots.join(name), dir.join("screenshots").join(name)).unwrap();
    }
    index.push_str("{ not json\n");
    std::fs::write(logs.join("index.jsonl"), index).unwrap();
    root
}

fn check_listing(logs: &mut Logs) {
    let list = logs.list().unwrap();
    let rows: Vec<(&str, &str, Option<i64>, bool)> = list
        .sessions
        .iter()
        .map(|s| {
            (
                s.id.as_str(),
                s.result.as_str(),
                s.duration_s,
                s.interrupted,
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            ("panic_20261121T100000Z", "failed", Some(30), false),
            ("boot_20261121T110000Z", "success", Some(12), false),
            ("grub_20261121T120000Z", "interrupted", None, true),
        ]
    );
    let cut = &list.sessions[2];
    assert_eq!(cut.iso, "/ISOs/grub.iso");
    assert_eq!(cut.last_stage.as_deref(), Some("qemu_running"));
    assert_eq!(cut.last_message.as_deref(), Some("QEMU is running"));
    assert_eq!(list.warnings.len(), 1);
    assert!(
        list.warnings[0].starts_with("index.jsonl:3: "),
        "{:?}",
        list.warnings
    );

    let latest = logs.show("latest").unwrap();
    assert!(latest.interrupted);
    assert_eq!(latest.last_status.as_ref().unwrap().stage, "qemu_running");
    assert_eq!(latest.session.iso.as_deref(), Some("/ISOs/grub.iso"));
    // Its screen, read from the image too: GRUB's menu.
    assert_eq!(latest.screens.as_ref().unwrap().count, 1);
    assert!(
        latest
            .last_screen_text
            .as_deref()
            .unwrap()
            .contains("GNU GRUB")
    );
    let boot = logs.show("boot_").unwrap();
    assert_eq!(boot.result, BootResult::Booted);
    assert_eq!(boot.session.iso.as_deref(), Some("/ISOs/boot.iso"));
    assert!(!boot.interrupted);
    let panic = logs.show("panic_").unwrap();
    assert_eq!(panic.result, BootResult::Failed);
    assert!(matches!(
        logs.show("nope"),
        Err(SessionsError::NotFound { .. })
    ));
}

#[test]
fn lists_from_a_stick_tree_and_a_logs_dir() {
    let root = data_tree();
    check_listing(&mut Logs::open(root.path()).unwrap());
    check_listing(&mut Logs::open(&root.path().join("hiperiso/logs")).unwrap());
    let empty = tempfile::tempdir().unwrap();
    let err = Logs::open(empty.path()).err().unwrap();
    assert!(err.to_string().contains("no hiperiso logs here"), "{err}");
}

#[test]
fn lists_from_gpt_and_mbr_images_without_mounting() {
    let root = data_tree();
    let esp = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(esp.path().join("EFI/BOOT")).unwrap();
    std::fs::write(esp.path().join("EFI/BOOT/readme.txt"), b"test").unwrap();
    for table in [TableKind::Gpt, TableKind::Mbr] {
        let out = tempfile::tempdir().unwrap();
        let img = out.path().join("stick.img");
        let spec = ImageSpec {
            table,
            size: 96 << 20,
            seed: "hiperiso-log-test".into(),
            data_label: "HIPERISO".into(),
            esp_label: "HIPERISOEFI".into(),
            source_date_epoch: 0,
            esp_tree: esp.path().to_path_buf(),
            data_tree: root.path().to_path_buf(),
            esp_size: None,
        };
        image::write_image(&spec, &img).unwrap();
        check_listing(&mut Logs::open(&img).unwrap());
    }
}

#[test]
fn a_file_without_a_data_partition_is_a_clear_error() {
    let err = Logs::open(&fixture("linux-boot.serial.log")).err().unwrap();
    assert!(err.to_string().contains("no exFAT data partition"), "{err}");
}

#[test]
fn a_logs_dir_without_an_index_still_lists_its_interrupted_session() {
    let root = data_tree();
    let logs = root.path().join("hiperiso/logs");
    std::fs::remove_file(logs.join("index.jsonl")).unwrap();
    let mut opened = Logs::open(root.path()).unwrap();
    let list = opened.list().unwrap();
    // Without the index every session with a session.json is still listed;
    // those without a finished status are interrupted.
    let ids: Vec<&str> = list.sessions.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "panic_20261121T100000Z",
            "boot_20261121T110000Z",
            "grub_20261121T120000Z"
        ]
    );
    assert!(list.sessions[2].interrupted);
    assert!(opened.show("latest").unwrap().interrupted);
}
