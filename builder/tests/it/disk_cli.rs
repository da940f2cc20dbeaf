//! `hiperiso-build image`, `install` and `inspect` as a user runs them: the
//! real binary on a scratch manifest, image files and real loop devices.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use sha2::{Digest, Sha256};

const MIB: u64 = 1024 * 1024;

pub(crate) fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_hiperiso-build"))
}

pub(crate) fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

pub(crate) fn ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{cmd:?}:\n{}", text(&out));
    text(&out)
}

/// A scratch project: manifest and overlays, the ESP payload in
/// overlays/esp (the default until the build assembles one).
pub(crate) struct Project {
    dir: tempfile::TempDir,
}

impl Project {
    pub(crate) fn new() -> Project {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::write(
            root.join("hiperiso.toml"),
            "[image]\nname = \"cli-test\"\nseed = \"cli-seed\"\nsize = \"128MiB\"\nsource-date-epoch = 1700000000\n\n[profiles.default]\n",
        )
        .unwrap();
        fs::create_dir_all(root.join("overlays/data/hiperiso")).unwrap();
        fs::write(
            root.join("overlays/data/hiperiso/hiperiso.json.example"),
            "{}\n",
        )
        .unwrap();
        fs::create_dir_all(root.join("overlays/esp/EFI/BOOT")).unwrap();
        fs::write(
            root.join("overlays/esp/EFI/BOOT/BOOTX64.EFI"),
            vec![0x4D; 200_000],
        )
        .unwrap();
        Project { dir }
    }
    pub(crate) fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }
    pub(crate) fn cmd(&self) -> Command {
        let mut cmd = bin();
        cmd.arg("--manifest").arg(self.path("hiperiso.toml"));
        cmd
    }
}

pub(crate) fn sha256(path: &Path) -> String {
    hex::encode(Sha256::digest(fs::read(path).unwrap()))
}

#[test]
fn image_twice_is_identical_and_inspectable() {
    let p = Project::new();
    let (a, b) = (p.path("a.img"), p.path("b.img"));
    for out in [&a, &b] {
        ok(p.cmd()
            .args(["image", "--esp-tree"])
            .arg(p.path("overlays/esp"))
            .arg("-o")
            .arg(out));
    }
    assert_eq!(fs::metadata(&a).unwrap().len(), 128 * MIB);
    assert_eq!(sha256(&a), sha256(&b));
    let report = ok(p.cmd().arg("inspect").arg(&a));
    assert!(report.contains("partition table: gpt"), "{report}");
    assert!(report.contains("exFAT label \"HIPERISO\""), "{report}");
    assert!(report.contains("build: hiperiso "), "{report}");
    assert!(report.contains("manifest_sha256"), "{report}");

    let mbr = p.path("m.img");
    ok(p.cmd()
        .args(["image", "--table", "mbr", "--size", "96MiB", "--esp-tree"])
        .arg(p.path("overlays/esp"))
        .arg("-o")
        .arg(&mbr));
    assert!(ok(p.cmd().arg("inspect").arg(&mbr)).contains("partition table: mbr"));

    let out = p
        .cmd()
        .args(["image", "--size", "40MiB", "-o"])
        .arg(p.path("small.img"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(text(&out).contains("--size"), "{}", text(&out));

    fs::rename(p.path("overlays/esp"), p.path("elsewhere")).unwrap();
    let out = p
        .cmd()
        .args(["image", "-o"])
        .arg(p.path("none.img"))
        .output()
        .unwrap();
    assert!(
        !out.status.success() && text(&out).contains("--esp-tree"),
        "{}",
        text(&out)
    );
}

pub(crate) struct Loop(pub(crate) PathBuf);

impl Loop {
    /// A loop device over a new 160 MiB file `raw` whose first MiB is 0xEE
    /// (a stick's worth of old contents, to show what a write changed).
    pub(crate) fn over_new_file(raw: &Path) -> Loop {
        fs::write(raw, vec![0xEEu8; MIB as usize]).unwrap();
        fs::File::options()
            .write(true)
            .open(raw)
            .unwrap()
            .set_len(160 * MIB)
            .unwrap();
        Loop(PathBuf::from(
            ok(Command::new("losetup").args(["-f", "--show"]).arg(raw)).trim(),
        ))
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("partx").arg("-d").arg(&self.0).output();
        let _ = Command::new("losetup").arg("-d").arg(&self.0).output();
    }
}

#[test]
fn install_asks_for_the_device_name_and_dry_run_writes_nothing() {
    if !hiperiso_prereq::root() {
        return;
    }
    let p = Project::new();
    fs::create_dir_all(p.path("overlays/data/ISOs")).unwrap();
    fs::write(p.path("overlays/data/ISOs/debian.iso"), "an ISO").unwrap();
    let session = p.path("overlays/data/hiperiso/logs/2026-01-02_030405_debian");
    fs::create_dir_all(&session).unwrap();
    fs::write(session.join("session.json"), "{}").unwrap();
    let raw = p.path("stick.raw");
    let dev = Loop::over_new_file(&raw);
    let before = sha256(&raw);

    let plan = ok(p
        .cmd()
        .arg("install")
        .arg(&dev.0)
        .args(["--force", "--dry-run"]));
    assert!(
        plan.contains("ALL DATA") && plan.contains("removable: no"),
        "{plan}"
    );
    assert_eq!(sha256(&raw), before, "--dry-run wrote something");

    let out = p.cmd().arg("install").arg(&dev.0).output().unwrap();
    assert!(
        !out.status.success() && text(&out).contains("--force"),
        "{}",
        text(&out)
    );

    let mut child = p
        .cmd()
        .arg("install")
        .arg(&dev.0)
        .arg("--force")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"sdz\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        !out.status.success() && text(&out).contains("not confirmed"),
        "{}",
        text(&out)
    );
    assert_eq!(
        sha256(&raw),
        before,
        "an unconfirmed install wrote something"
    );

    let name = dev.0.file_name().unwrap().to_string_lossy().into_owned();
    let mut child = p
        .cmd()
        .arg("install")
        .arg(&dev.0)
        .arg("--force")
        .arg("--esp-tree")
        .arg(p.path("overlays/esp"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{name}\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let report = ok(p.cmd().arg("inspect").arg(&dev.0));
    assert!(
        report.contains("EFI system") && report.contains("build: hiperiso"),
        "{report}"
    );

    // A hiperiso stick now: install refuses it, naming what it would erase;
    // -I (--reinstall) overrides; -g and -L reach the plan.
    let out = p
        .cmd()
        .args(["install", "--force", "--dry-run"])
        .arg(&dev.0)
        .output()
        .unwrap();
    let said = text(&out);
    assert!(!out.status.success(), "{said}");
    for needle in [
        "already holds a hiperiso stick",
        "1 ISO(s) (debian.iso)",
        "1 session(s) (2026-01-02_030405_debian)",
        "install --update",
        "--reinstall",
    ] {
        assert!(said.contains(needle), "{needle:?} not in: {said}");
    }
    let plan = ok(p
        .cmd()
        .args([
            "install",
            "--force",
            "--dry-run",
            "-I",
            "-g",
            "-L",
            "Mine 2026",
        ])
        .arg(&dev.0));
    assert!(
        plan.contains("partition table: gpt") && plan.contains("label Mine 2026"),
        "{plan}"
    );

    fs::write(p.path("overlays/esp/EFI/BOOT/grub.cfg"), "set timeout=1\n").unwrap();
    let update = ok(p
        .cmd()
        .args(["install", "--update", "--yes", "--force"])
        .arg(&dev.0)
        .arg("--esp-tree")
        .arg(p.path("overlays/esp")));
    assert!(update.contains("not touched"), "{update}");
    ok(Command::new("fsck.fat")
        .arg("-n")
        .arg(format!("{}p2", dev.0.display())));
}

/// `install` counts the bytes it writes and reads back: on a pipe, a line
/// `STEP: X of Y` while a step runs (every 5 s; 5 ms here) and `STEP: Y in
/// Ns` when it ends, Y being what the step announced; `-q` prints nothing.
#[test]
fn install_counts_bytes_written_and_read_back_and_q_silences_it() {
    if !hiperiso_prereq::root() {
        return;
    }
    let p = Project::new();
    let dev = Loop::over_new_file(&p.path("stick.raw"));
    let install = |first: &[&str]| {
        let out = p
            .cmd()
            .args(first)
            .args(["--yes", "--force", "--esp-tree"])
            .arg(p.path("overlays/esp"))
            .arg(&dev.0)
            .env("HIPERISO_PROGRESS_EVERY_MS", "5")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out));
        out
    };
    let out = install(&["install"]);
    let (said, progress) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    // The steps that move bytes, as announced: "writing X (40.0 MiB)".
    let counted: Vec<(&str, &str)> = said
        .lines()
        .filter(|l| l.starts_with("writing ") || l.starts_with("verifying"))
        .filter_map(|l| l.strip_suffix(')')?.rsplit_once(" ("))
        .collect();
    assert!(
        counted.iter().any(|(s, _)| s.starts_with("writing ESP"))
            && counted.iter().any(|(s, _)| s.starts_with("verifying")),
        "{said}"
    );
    for (step, size) in &counted {
        let end = format!("{step}: {size} in ");
        assert!(progress.contains(&end), "no {end:?} in:\n{progress}");
    }
    let running = progress
        .lines()
        .filter(|l| l.contains(" of ") && counted.iter().any(|(s, _)| l.starts_with(s)))
        .count();
    assert!(running > 0, "no running counts in:\n{progress}");

    // -q: nothing at all, and still installed.
    let out = install(&["-q", "install", "-I"]);
    assert_eq!(text(&out), "", "-q printed something");
    let report = ok(p.cmd().arg("inspect").arg(&dev.0));
    assert!(report.contains("build: hiperiso"), "{report}");
}

/// Every refusal comes before the payload is staged: here the project has
/// no ESP payload at all, so any work would fail with another message.
#[test]
fn install_refuses_before_any_work() {
    let p = Project::new();
    fs::remove_dir_all(p.path("overlays/esp")).unwrap();
    let not_a_disk = p.path("hiperiso.toml");
    for (args, needle) in [
        (vec!["install", "--dry-run"], "not a block device"),
        (
            vec!["install", "--update", "--dry-run"],
            "not a block device",
        ),
        (
            vec!["install", "--dry-run", "--label", "HIPERISO-2026"],
            "longer than 11",
        ),
        (vec!["install", "--dry-run", "-L", "a:b"], "--label \"a:b\""),
    ] {
        let out = p.cmd().args(&args).arg(&not_a_disk).output().unwrap();
        let said = text(&out);
        assert!(
            !out.status.success() && said.contains(needle) && !said.contains("--esp-tree"),
            "{args:?}: {said}"
        );
    }
}

/// `config check` names the line and the key of each problem.
#[test]
fn config_check_names_line_and_key() {
    let p = Project::new();
    let file = p.path("hiperiso.json");
    fs::write(
        &file,
        "{\n  \"control\": {\n    \"default_cpus\": 0\n  }\n}\n",
    )
    .unwrap();
    let out = p
        .cmd()
        .args(["config", "check"])
        .arg(&file)
        .output()
        .unwrap();
    let said = text(&out);
    assert!(!out.status.success(), "{said}");
    assert!(
        said.contains(&format!(
            "{}:3: control.default_cpus: expected an integer",
            file.display()
        )),
        "{said}"
    );
    fs::write(&file, "{\"control\": {\"default_cpus\": 4}}").unwrap();
    assert!(ok(p.cmd().args(["config", "check"]).arg(&file)).contains("no problems"));
}

/// Completions for each shell, and the man pages build.rs wrote.
#[test]
fn completions_and_man_pages() {
    for (shell, needle) in [
        ("bash", "_hiperiso__build()"),
        ("zsh", "#compdef hiperiso-build"),
        ("fish", "complete -c hiperiso-build"),
    ] {
        let script = ok(bin().args(["completions", shell]));
        assert!(
            script.contains(needle) && script.contains("reinstall"),
            "{shell}"
        );
    }
    let man = Path::new(env!("CARGO_BIN_EXE_hiperiso-build"))
        .parent()
        .unwrap()
        .join("man");
    for (page, needle) in [
        ("hiperiso-build.1", ".TH hiperiso-build 1"),
        ("hiperiso-build-install.1", "reinstall"),
        ("hiperiso-build-config-check.1", "FILE"),
        ("hiperiso-log.1", ".TH hiperiso-log 1"),
        ("hiperiso-log-sessions.1", "sessions"),
    ] {
        let text = fs::read_to_string(man.join(page)).unwrap_or_else(|e| panic!("{page}: {e}"));
        assert!(text.contains(needle), "{page}: {text}");
    }
}
