//! The published JSON Schemas of the session files (`runtime/schema/`):
//! the check every real session of the VM-booting tests goes through
//! ([`check_session_files`]), and fast tests that the schemas are valid and
//! not vacuous.

use serde_json::{Value, json};
use std::path::PathBuf;

/// The session files with a schema: `(file, schema name)`.
pub(crate) const SCHEMAS: &[(&str, &str)] = &[
    ("session.json", "session"),
    ("status.json", "status"),
    ("timing.json", "timing"),
];

/// The milestones of `timing.json`, in the only order they may appear.
const MILESTONES: &[&str] = &[
    "kernel_start",
    "session_created",
    "env_written",
    "kvm_checked",
    "iso_verified",
    "qemu_launching",
    "qemu_started",
    "qemu_exited",
    "qemu_returned",
    "report_done",
    "session_finalized",
];

fn schema(name: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../runtime/schema")
        .join(format!("{name}.schema.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Where `value` breaks `runtime/schema/<name>.schema.json`, one line each.
fn violations(name: &str, value: &Value) -> Vec<String> {
    let validator = jsonschema::validator_for(&schema(name))
        .unwrap_or_else(|e| panic!("{name}.schema.json: {e}"));
    validator
        .iter_errors(value)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect()
}

/// A finished session's JSON files against their schemas, the milestones'
/// order, `timing.dat` against `timing.json`, and `hw_inventory` against
/// `hw/` (`hw_files`: what is really there, relative to `hw/`, sorted; when
/// not known, every listed file must at least be readable). `read` gives a
/// session file's text (and panics when it is missing).
pub(crate) fn check_session_files(
    mut read: impl FnMut(&str) -> String,
    hw_files: Option<&[String]>,
) {
    let mut values = Vec::new();
    for (file, name) in SCHEMAS {
        let text = read(file);
        let value: Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{file}: {e}\n{text}"));
        let broken = violations(name, &value);
        assert!(
            broken.is_empty(),
            "{file} breaks runtime/schema/{name}.schema.json:\n{}\n{text}",
            broken.join("\n")
        );
        values.push(value);
    }
    let (session, timing) = (&values[0], &values[2]);
    let phases: Vec<&str> = timing["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["phase"].as_str().unwrap())
        .collect();
    let mut order = MILESTONES.iter();
    for phase in &phases {
        assert!(
            order.any(|m| m == phase),
            "milestones out of order: {phases:?}"
        );
    }
    assert_eq!(phases.last(), Some(&"session_finalized"), "{phases:?}");
    assert_ne!(session["result"], "running", "{session}");
    assert!(session["end_time_utc"].is_string(), "{session}");
    // timing.dat: the same milestones, `phase<TAB>uptime<TAB>iso8601`.
    let dat = read("timing.dat");
    let rows: Vec<Vec<&str>> = dat.lines().map(|l| l.split('\t').collect()).collect();
    assert_eq!(rows.len(), phases.len(), "{dat}");
    for (row, phase) in rows.iter().zip(&timing["phases"].as_array().unwrap()[..]) {
        assert_eq!(row.len(), 3, "{dat}");
        assert_eq!(row[0], phase["phase"], "{dat}");
        let uptime: f64 = row[1].parse().unwrap_or_else(|e| panic!("{dat}: {e}"));
        assert!(
            (uptime - phase["uptime_s"].as_f64().unwrap()).abs() < 0.001,
            "{dat}"
        );
        assert_eq!(row[2], phase["timestamp_utc"], "{dat}");
    }
    let inventory: Vec<String> = serde_json::from_value(session["hw_inventory"].clone()).unwrap();
    match hw_files {
        Some(files) => assert_eq!(inventory, files, "session.json's hw_inventory"),
        None => {
            assert!(!inventory.is_empty(), "{session}");
            for file in &inventory {
                read(&format!("hw/{file}"));
            }
        }
    }
    assert_eq!(
        session["report_available"],
        read("report.json").starts_with('{'),
        "{session}"
    );
}

/// Every schema is a valid draft 2020-12 schema.
#[test]
fn the_published_schemas_are_valid_json_schemas() {
    for (_, name) in SCHEMAS {
        let value = schema(name);
        assert!(jsonschema::meta::is_valid(&value), "{name}.schema.json");
    }
}

/// The serde types of `hiperiso-stick` produce what the schemas accept, and
/// the schemas reject what the product README rules out.
#[test]
fn the_schemas_accept_the_contract_and_reject_its_breaches() {
    let status = json!({
        "schema": 2, "session_id": "ubuntu-24.04_20260629T101530Z", "status": "started",
        "iso_path": "/ISOs/ubuntu-24.04-desktop-amd64.iso",
        "iso_basename": "ubuntu-24.04-desktop-amd64.iso",
        "log_dir": "/hiperiso/logs/ubuntu-24.04_20260629T101530Z",
        "start_time_utc": "2026-06-29T10:15:30Z", "kvm": "available",
        "trace_level": "standard", "guest_ram_mb": 2048, "guest_cpus": 2,
        "stage": "qemu_running", "updated_utc": "2026-06-29T10:15:33Z",
        "uptime_ms": 3102, "message": "guest running"
    });
    assert_eq!(violations("status", &status), Vec::<String>::new());
    // The same through the serde type.
    let typed: hiperiso_stick::session::Status = serde_json::from_value(status.clone()).unwrap();
    assert_eq!(serde_json::to_value(&typed).unwrap(), status);
    for (key, bad) in [
        ("status", json!("booting")),
        ("kvm", json!(true)),
        ("start_time_utc", json!("29/06/2026")),
        ("guest_cpus", json!(-1)),
    ] {
        let mut broken = status.clone();
        broken[key] = bad;
        assert!(!violations("status", &broken).is_empty(), "{key} accepted");
    }
    let mut missing = status.clone();
    missing.as_object_mut().unwrap().remove("iso_basename");
    assert!(!violations("status", &missing).is_empty());

    let mut timing = hiperiso_stick::session::Timing::new();
    timing.mark("kernel_start", 512, "2026-06-29T10:15:28.171Z".into());
    timing.mark("session_created", 2341, "2026-06-29T10:15:30.000Z".into());
    let timing = serde_json::to_value(&timing).unwrap();
    assert_eq!(violations("timing", &timing), Vec::<String>::new());
    let mut renamed = timing.clone();
    renamed["phases"][1]["phase"] = json!("session_start");
    assert!(!violations("timing", &renamed).is_empty());
    let mut first_with_delta = timing.clone();
    first_with_delta["phases"][0]["delta_s"] = json!(0.5);
    assert!(!violations("timing", &first_with_delta).is_empty());
}
