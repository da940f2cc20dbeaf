//! `hiperiso-build doctor`: a failing setup (a tiny cache file system, a
//! lock pinning another rustc) fails with the checks' names and fixes, in
//! text and in JSON; without a manifest the project checks are skipped.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn bin() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hiperiso-build"));
    cmd.env_remove("HIPERISO_CACHE_DIR");
    cmd
}

fn repo_file(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(name)
}

/// A 1 MiB tmpfs, unmounted on drop; `None` when mounting is not allowed.
struct TinyFs(PathBuf);

impl TinyFs {
    fn mount(dir: &Path) -> Option<Self> {
        std::fs::create_dir_all(dir).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
            .arg(dir)
            .output()
            .is_ok_and(|o| o.status.success());
        ok.then(|| Self(dir.to_path_buf()))
    }
}

impl Drop for TinyFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).output();
    }
}

/// A workspace whose lock pins another rustc, and its cache dir.
fn failing_workspace(dir: &Path) -> (PathBuf, PathBuf) {
    let manifest = dir.join("hiperiso.toml");
    std::fs::copy(repo_file("hiperiso.toml"), &manifest).unwrap();
    let lock = std::fs::read_to_string(repo_file("hiperiso.lock")).unwrap();
    let start = lock.find("[toolchain]").expect("the lock pins a toolchain");
    let line_end = lock[start..].find("rustc = ").unwrap() + start;
    let end = lock[line_end..].find('\n').unwrap() + line_end;
    let lock = format!(
        "{}rustc = \"rustc 1.0.0 (a28ffd52c 2015-05-13)\"{}",
        &lock[..line_end],
        &lock[end..]
    );
    std::fs::write(dir.join("hiperiso.lock"), lock).unwrap();
    (manifest, dir.join("cache"))
}

fn doctor(manifest: &Path, cache: &Path, json: bool) -> Output {
    let mut cmd = bin();
    cmd.arg("--manifest")
        .arg(manifest)
        .arg("--cache-dir")
        .arg(cache)
        .args(["--offline", "doctor"]);
    if json {
        cmd.arg("--json");
    }
    cmd.output().expect("run hiperiso-build doctor")
}

#[test]
fn failing_checks_exit_non_zero_with_names_and_fixes() {
    let dir = tempfile::tempdir().unwrap();
    let (manifest, cache) = failing_workspace(dir.path());
    let tiny = TinyFs::mount(&cache);
    if tiny.is_none() {
        eprintln!("cannot mount a tmpfs (not root?): the disk check is not asserted");
    }

    let out = doctor(&manifest, &cache, false);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("fail  rustc"), "{stdout}");
    assert!(stdout.contains("rustc 1.0.0"), "{stdout}");
    assert!(
        stdout.contains("fix: hiperiso-build lock --update rustc"),
        "{stdout}"
    );
    assert!(stderr.contains("check(s) failed"), "{stderr}");
    assert!(stderr.contains("rustc"), "{stderr}");
    if tiny.is_some() {
        assert!(stdout.contains("fail  disk-space"), "{stdout}");
        assert!(stdout.contains("needs about 15.0 GiB"), "{stdout}");
        assert!(stdout.contains("--cache-dir"), "{stdout}");
    }
    // --offline with an empty cache: offline is not possible either.
    assert!(stdout.contains("fail  debian-mirror"), "{stdout}");

    let out = doctor(&manifest, &cache, true);
    assert!(!out.status.success());
    let value: serde_json::Value = serde_json::from_slice(&out.stdout).expect("doctor --json");
    assert_eq!(value["ok"], false);
    let checks = value["checks"].as_array().unwrap();
    for check in checks {
        assert!(check["name"].is_string(), "{check}");
        assert!(check["detail"].is_string(), "{check}");
        assert!(
            check["fix"].is_string() || check["fix"].is_null(),
            "{check}"
        );
        let status = check["status"].as_str().unwrap();
        assert!(["ok", "warn", "fail"].contains(&status), "{check}");
    }
    let find = |name: &str| {
        checks
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("no check {name}"))
    };
    assert_eq!(find("rustc")["status"], "fail");
    assert!(
        find("rustc")["fix"]
            .as_str()
            .unwrap()
            .contains("hiperiso-build lock --update rustc")
    );
    if tiny.is_some() {
        assert_eq!(find("disk-space")["status"], "fail");
    }
    for name in [
        "qemu",
        "kvm",
        "nested-virt",
        "ovmf",
        "user-namespaces",
        "loop-devices",
    ] {
        find(name);
    }
    // No KVM is never a failure: `run` falls back to TCG.
    assert_ne!(find("kvm")["status"], "fail");
}

#[test]
fn without_a_manifest_the_project_checks_are_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("missing/hiperiso.toml");
    let out = doctor(&manifest, &dir.path().join("cache"), true);
    let value: serde_json::Value = serde_json::from_slice(&out.stdout).expect("doctor --json");
    let checks = value["checks"].as_array().unwrap();
    for name in ["debian-mirror", "rustc"] {
        let check = checks.iter().find(|c| c["name"] == name).unwrap();
        assert_eq!(check["status"], "warn");
        let detail = check["detail"].as_str().unwrap();
        assert!(detail.starts_with("skipped: no manifest at"), "{detail}");
    }
    let disk = checks.iter().find(|c| c["name"] == "disk-space").unwrap();
    assert!(disk["status"] != "fail" || value["ok"] == false);
}
