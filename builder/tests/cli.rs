//! The `hiperiso-build` binary: errors a user sees, and the default manifest.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn bin() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hiperiso-build"));
    cmd.env_remove("HIPERISO_CACHE_DIR");
    cmd
}

fn repo_manifest() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../hiperiso.toml")
}

fn run(cmd: &mut Command) -> (bool, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = cmd.output().expect("run hiperiso-build");
    (
        status.success(),
        String::from_utf8_lossy(&stdout).into(),
        String::from_utf8_lossy(&stderr).into(),
    )
}

#[test]
fn schema_error_names_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(repo_manifest()).unwrap();
    let broken = text.replacen(
        "debian-source = \"busybox\"",
        "debian-source = \"busybox\"\nchecksum = \"nope\"",
        1,
    );
    let line = broken
        .lines()
        .position(|l| l.starts_with("checksum"))
        .unwrap()
        + 1;
    let path = dir.path().join("broken.toml");
    std::fs::write(&path, broken).unwrap();
    let (ok, _, stderr) = run(bin().arg("--manifest").arg(&path).arg("summary"));
    assert!(!ok);
    let want = format!(
        "{}:{line}:1: sources.busybox.checksum: unknown field `checksum`",
        path.display()
    );
    assert!(stderr.contains(&want), "want {want:?} in:\n{stderr}");
}

#[test]
fn default_manifest_is_valid_and_summarised() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, stdout, stderr) = run(bin()
        .arg("--manifest")
        .arg(repo_manifest())
        .arg("--cache-dir")
        .arg(dir.path())
        .arg("summary")
        .env("HIPERISO_DEBIAN_MIRROR", "http://mirror.invalid/debian"));
    assert!(ok, "{stderr}");
    for needle in [
        "profile    default",
        "sources    6 active",
        "linux",
        "qemu",
        "edk2",
        "grub2",
        "busybox",
        "seabios",
    ] {
        assert!(stdout.contains(needle), "{needle} missing:\n{stdout}");
    }
    assert!(
        stdout.contains(
            "http://mirror.invalid/debian/pool/main/b/busybox/busybox_1.35.0.orig.tar.bz2"
        ),
        "{stdout}"
    );
    let (ok, stdout, _) =
        run(bin()
            .arg("--manifest")
            .arg(repo_manifest())
            .args(["--profile", "debian", "summary"]));
    assert!(ok);
    assert!(stdout.contains("profile    debian (--profile)"), "{stdout}");
}

#[test]
fn offline_fetch_names_every_missing_blob() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, _, stderr) = run(bin()
        .arg("--manifest")
        .arg(repo_manifest())
        .arg("--offline")
        .arg("fetch")
        .env("HIPERISO_CACHE_DIR", dir.path())
        .env("HIPERISO_DEBIAN_MIRROR", "http://mirror.invalid/debian"));
    assert!(!ok);
    assert!(stderr.contains("6 blob(s) missing"), "{stderr}");
    for name in ["linux", "qemu", "edk2", "grub2", "busybox", "seabios"] {
        assert!(
            stderr.contains(&format!("\n  {name}: sha256 ")),
            "{name} missing from:\n{stderr}"
        );
    }
}

#[test]
fn unknown_profile_and_unimplemented_verbs_explain_themselves() {
    let (ok, _, stderr) =
        run(bin()
            .arg("--manifest")
            .arg(repo_manifest())
            .args(["--profile", "nope", "summary"]));
    assert!(!ok);
    assert!(stderr.contains("profile `nope` is not defined"), "{stderr}");
    let (ok, _, stderr) = run(bin().arg("--manifest").arg(repo_manifest()).args(["gc"]));
    assert!(!ok);
    assert!(
        stderr.contains("not implemented yet (see issue"),
        "{stderr}"
    );
}

#[test]
fn help_teaches_with_examples() {
    let (ok, stdout, _) = run(bin().args(["bump", "--help"]));
    assert!(ok);
    assert!(
        stdout.contains("hiperiso-build bump busybox --to"),
        "{stdout}"
    );
    let (ok, _, stderr) = run(bin().args(["bump", "busybox"]));
    assert!(!ok, "bump needs --to, --latest or --check");
    assert!(
        stderr.contains("--to") && stderr.contains("--check"),
        "{stderr}"
    );
}
