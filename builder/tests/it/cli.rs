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
        "sources    8 active",
        "linux",
        "qemu",
        "edk2",
        "grub2",
        "busybox",
        "seabios",
        "libslirp",
        "shim",
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
    assert!(stderr.contains("8 blob(s) missing"), "{stderr}");
    for name in [
        "linux", "qemu", "edk2", "grub2", "shim", "busybox", "seabios", "libslirp",
    ] {
        assert!(
            stderr.contains(&format!("\n  {name}: sha256 ")),
            "{name} missing from:\n{stderr}"
        );
    }
}

#[test]
fn unknown_profile_explains_itself() {
    let (ok, _, stderr) =
        run(bin()
            .arg("--manifest")
            .arg(repo_manifest())
            .args(["--profile", "nope", "summary"]));
    assert!(!ok);
    assert!(stderr.contains("profile `nope` is not defined"), "{stderr}");
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

use crate::http;

#[test]
fn a_killed_fetch_leaves_no_blob_and_the_next_one_resumes() {
    let server = http::TestServer::start();
    let body: Vec<u8> = (0..4u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    server.serve("/dl/big-1.0.tar.gz", body.clone());
    server.throttle(1 << 20);
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("hiperiso.toml");
    let sha = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(&body))
    };
    std::fs::write(
        &manifest,
        format!(
            "[image]\nname = \"t\"\nseed = \"s\"\nsize = \"128MiB\"\nsource-date-epoch = 1\n\n\
             [sources.big]\nversion = \"1.0\"\nurl = \"{}/dl/big-{{version}}.tar.gz\"\nsha256 = \"{sha}\"\n\n\
             [profiles.default]\nsources = [\"big\"]\n",
            server.base()
        ),
    )
    .unwrap();
    let cache = dir.path().join("cache");
    let fetch = || {
        let mut cmd = bin();
        cmd.arg("--manifest")
            .arg(&manifest)
            .arg("--cache-dir")
            .arg(&cache)
            .arg("fetch");
        cmd
    };

    let mut child = fetch().stderr(std::process::Stdio::null()).spawn().unwrap();
    let partial_dir = cache.join("partial");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let partial_len = || {
        std::fs::read_dir(&partial_dir)
            .map(|d| {
                d.flatten()
                    .map(|e| e.metadata().map_or(0, |m| m.len()))
                    .sum::<u64>()
            })
            .unwrap_or(0)
    };
    while partial_len() < 1 << 20 {
        assert!(
            std::time::Instant::now() < deadline,
            "the download never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    child.kill().unwrap(); // SIGKILL: no cleanup code runs
    child.wait().unwrap();
    let kept = partial_len();
    assert!(
        kept >= 1 << 20 && kept < body.len() as u64,
        "partial kept: {kept}"
    );
    let blobs = std::fs::read_dir(cache.join("blobs/sha256"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(blobs, 0, "a killed fetch must not leave a blob");

    server.throttle(0);
    let (ok, stdout, stderr) = run(&mut fetch());
    assert!(ok, "{stderr}");
    assert!(stdout.contains("1 source(s) verified"), "{stdout}");
    assert_eq!(
        std::fs::read(cache.join("blobs/sha256").join(&sha)).unwrap(),
        body
    );
    let second = server.requests_for("/dl/big-1.0.tar.gz").pop().unwrap();
    let resumed_at: u64 = second
        .range
        .as_deref()
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|n| n.parse().ok())
        .expect("the second fetch sends a Range");
    assert!(resumed_at >= kept.min(1 << 20), "resumed at {resumed_at}");
    assert_eq!(partial_len(), 0);
}

/// `lock` under a profile without packages (the from-source default) keeps
/// the packages locked for the debian profile: with the committed lock fresh
/// it needs no mirror (an unreachable one is set) and leaves the lock byte
/// for byte; without a lock it refuses and names the profile to lock.
#[test]
fn locking_a_profile_without_packages_keeps_the_lock() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("hiperiso.toml");
    std::fs::copy(repo_manifest(), &manifest).unwrap();
    let lock_cmd = || {
        let mut cmd = bin();
        cmd.env("HIPERISO_DEBIAN_MIRROR", "http://127.0.0.1:9/debian")
            .arg("--manifest")
            .arg(&manifest)
            .arg("--cache-dir")
            .arg(dir.path().join("cache"))
            .arg("lock");
        cmd
    };
    let (ok, _, stderr) = run(&mut lock_cmd());
    assert!(!ok);
    assert!(
        stderr.contains("profile \"default\" lists no Debian packages")
            && stderr.contains("--profile debian lock"),
        "{stderr}"
    );
    let lock = dir.path().join("hiperiso.lock");
    let committed = std::fs::read(repo_manifest().with_file_name("hiperiso.lock")).unwrap();
    std::fs::write(&lock, &committed).unwrap();
    let (ok, _, stderr) = run(&mut lock_cmd());
    assert!(ok, "{stderr}");
    assert_eq!(std::fs::read(&lock).unwrap(), committed);
}

/// The runtime step refuses a host toolchain other than the lock's pin,
/// naming both and the lock, before building anything; a lock without a
/// pin says how to make one.
#[test]
fn runtime_step_is_pinned_to_the_locked_toolchain() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("hiperiso.toml");
    std::fs::copy(repo_manifest(), &manifest).unwrap();
    std::fs::create_dir(dir.path().join("recipes")).unwrap();
    let committed =
        std::fs::read_to_string(repo_manifest().with_file_name("hiperiso.lock")).unwrap();
    let (head, _) = committed.split_once("[toolchain]").unwrap();
    let lock = dir.path().join("hiperiso.lock");
    let build_runtime = || {
        run(bin()
            .arg("--manifest")
            .arg(&manifest)
            .arg("--cache-dir")
            .arg(dir.path().join("cache"))
            .args(["build", "runtime"]))
    };
    std::fs::write(
        &lock,
        format!("{head}[toolchain]\nrustc = \"rustc 1.0.0 (a178d0322 2015-05-13)\"\n"),
    )
    .unwrap();
    let (ok, _, stderr) = build_runtime();
    assert!(!ok);
    let host = Command::new("rustc").arg("-V").output().unwrap().stdout;
    let host = String::from_utf8_lossy(&host).trim().to_string();
    assert!(
        stderr.contains(&format!("the host's Rust toolchain is `{host}`"))
            && stderr.contains("pins `rustc 1.0.0 (a178d0322 2015-05-13)`")
            && stderr.contains(&lock.display().to_string())
            && stderr.contains("rustup default 1.0.0"),
        "{stderr}"
    );
    std::fs::write(&lock, head).unwrap();
    let (ok, _, stderr) = build_runtime();
    assert!(!ok);
    assert!(
        stderr.contains("has no [toolchain]") && stderr.contains("run `hiperiso-build lock`"),
        "{stderr}"
    );
    assert!(
        !dir.path().join("cache/trees").exists(),
        "something was built"
    );
}

/// The runtime step's cargo output goes to its log, not the terminal: `-q`
/// prints nothing; a failed build shows the log's last lines and its path.
/// The workspace is a stand-in (two one-line binaries), so cargo takes a
/// second.
#[test]
fn runtime_step_logs_cargo_and_shows_its_tail_on_failure() {
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path();
    let manifest = ws.join("hiperiso.toml");
    std::fs::copy(repo_manifest(), &manifest).unwrap();
    std::fs::copy(
        repo_manifest().with_file_name("hiperiso.lock"),
        ws.join("hiperiso.lock"),
    )
    .unwrap();
    std::fs::write(
        ws.join("Cargo.toml"),
        "[workspace]\nmembers = [\"runtime\"]\nresolver = \"2\"\n",
    )
    .unwrap();
    std::fs::write(
        ws.join("Cargo.lock"),
        "version = 4\n\n[[package]]\nname = \"hiperiso-runtime\"\nversion = \"0.1.0\"\n",
    )
    .unwrap();
    let bins = ws.join("runtime/src/bin");
    std::fs::create_dir_all(&bins).unwrap();
    std::fs::create_dir_all(ws.join("stick")).unwrap();
    std::fs::create_dir_all(ws.join("installer")).unwrap();
    std::fs::write(
        ws.join("runtime/Cargo.toml"),
        "[package]\nname = \"hiperiso-runtime\"\nversion = \"0.1.0\"\nedition = \"2021\"\n",
    )
    .unwrap();
    std::fs::write(bins.join("hiperiso-log.rs"), "fn main() {}\n").unwrap();
    std::fs::write(bins.join("hiperiso-init.rs"), "fn main() { not_here() }\n").unwrap();
    let build = |quiet: bool| {
        let mut cmd = bin();
        cmd.arg("--manifest")
            .arg(&manifest)
            .arg("--cache-dir")
            .arg(ws.join("cache"));
        if quiet {
            cmd.arg("-q");
        }
        run(cmd.args(["build", "runtime"]))
    };

    let (ok, stdout, stderr) = build(false);
    assert!(!ok, "{stdout}{stderr}");
    assert!(
        stderr.contains("building the static runtime failed")
            && stderr.contains("last lines of its log:")
            && stderr.contains("not_here"),
        "{stderr}"
    );
    let log = stderr
        .lines()
        .find_map(|l| l.strip_prefix("full log: "))
        .unwrap_or_else(|| panic!("no log path: {stderr}"));
    let log = std::fs::read_to_string(log.trim()).unwrap();
    assert!(
        log.contains("error[E0425]") && log.contains("not_here"),
        "{log}"
    );

    std::fs::write(bins.join("hiperiso-init.rs"), "fn main() {}\n").unwrap();
    let (ok, stdout, stderr) = build(true);
    assert!(ok, "{stdout}{stderr}");
    assert_eq!(stderr, "", "-q printed on stderr");
    // stdout holds only the result: the step and its output tree.
    let tree = stdout
        .strip_prefix("runtime ")
        .unwrap_or_else(|| panic!("{stdout}"));
    for binary in ["hiperiso-init", "hiperiso-log"] {
        assert!(Path::new(tree.trim()).join(binary).is_file(), "{stdout}");
    }
}
