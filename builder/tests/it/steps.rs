//! Sandboxed, cached steps through the `hiperiso-build` binary, on a small
//! tools tree made of the host's static busybox (package busybox-static).

use std::fs;
use std::net::TcpListener;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub(crate) const BUSYBOX: &str = "/bin/busybox";

pub(crate) struct Project {
    dir: tempfile::TempDir,
}

pub(crate) fn tools_root() -> PathBuf {
    let root = std::env::temp_dir().join(format!("hiperiso-steps-tools.{}", std::process::id()));
    if root.join("bin/sh").exists() {
        return root;
    }
    assert!(
        Path::new(BUSYBOX).is_file(),
        "{BUSYBOX} is missing: apt-get install busybox-static"
    );
    let bin = root.join("bin");
    fs::create_dir_all(&bin).unwrap();
    let _ = fs::copy(BUSYBOX, bin.join("busybox"));
    let list = Command::new(BUSYBOX).arg("--list").output().unwrap();
    for applet in String::from_utf8(list.stdout).unwrap().lines() {
        let _ = symlink("busybox", bin.join(applet));
    }
    fs::create_dir_all(root.join("etc")).unwrap();
    fs::write(root.join("etc/passwd"), "root:x:0:0::/tmp:/bin/sh\n").unwrap();
    root
}

impl Project {
    pub(crate) fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../hiperiso.toml");
        fs::copy(manifest, dir.path().join("hiperiso.toml")).unwrap();
        fs::create_dir_all(dir.path().join("recipes/hello")).unwrap();
        fs::write(dir.path().join("recipes/hello/msg"), "hello\n").unwrap();
        Self { dir }
    }
    pub(crate) fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }
    pub(crate) fn recipe(&self, name: &str, text: &str) {
        fs::write(self.path(&format!("recipes/{name}.toml")), text).unwrap();
    }
    pub(crate) fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_hiperiso-build"));
        cmd.arg("--manifest")
            .arg(self.path("hiperiso.toml"))
            .arg("--cache-dir")
            .arg(self.path("cache"))
            .arg("--offline")
            .env("HIPERISO_TOOLS_ROOT", tools_root())
            .args(args);
        cmd
    }
    /// (success, stdout, stderr)
    pub(crate) fn run(&self, args: &[&str]) -> (bool, String, String) {
        let out = self.cmd(args).output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
    pub(crate) fn build_ok(&self, args: &[&str]) -> (String, String) {
        let mut all = vec!["build"];
        all.extend(args);
        let (ok, out, err) = self.run(&all);
        assert!(ok, "build failed:\n{err}");
        (out, err)
    }
    pub(crate) fn output_of(stdout: &str, step: &str) -> PathBuf {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(&format!("{step} ")))
            .unwrap_or_else(|| panic!("no `{step}` in {stdout}"));
        PathBuf::from(&line[step.len() + 1..])
    }
}

pub(crate) const HELLO: &str = r#"# copies its input
files = ["hello/msg"]
outputs = ["msg", "bin/tool"]
commands = [
  "cp /inputs/files/hello/msg $out/msg",
  "mkdir -p $out/bin && printf '#!/bin/sh\necho tool\n' > $out/bin/tool && chmod 700 $out/bin/tool",
]
"#;

pub(crate) const UPPER: &str = r#"steps = ["hello"]
outputs = ["MSG"]
commands = ["tr a-z A-Z < /inputs/steps/hello/msg > $out/MSG"]
"#;

#[test]
fn cache_hits_rebuilds_and_downstream_keys() {
    let p = Project::new();
    p.recipe("hello", HELLO);
    p.recipe("upper", UPPER);
    let (out, err) = p.build_ok(&[]);
    assert!(err.contains("2 step(s): 2 built, 0 up to date"), "{err}");
    let upper = Project::output_of(&out, "upper");
    assert_eq!(fs::read_to_string(upper.join("MSG")).unwrap(), "HELLO\n");
    let hello = Project::output_of(&out, "hello");
    let mode = fs::metadata(hello.join("bin/tool")).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
        0o755
    );

    // A no-op rebuild does no work.
    let (out2, err) = p.build_ok(&[]);
    assert!(err.contains("0 built, 2 up to date"), "{err}");
    assert_eq!(out, out2);

    // A comment in hiperiso.toml changes nothing.
    let manifest = p.path("hiperiso.toml");
    let text = fs::read_to_string(&manifest).unwrap();
    fs::write(&manifest, format!("# a new comment\n{text}")).unwrap();
    let (_, err) = p.build_ok(&[]);
    assert!(err.contains("0 built, 2 up to date"), "{err}");

    // Recipe text rebuilds that step; its output is the same, so the
    // downstream step stays cached.
    p.recipe("hello", &format!("{HELLO}# edited\n"));
    let (out3, err) = p.build_ok(&[]);
    assert!(err.contains("built hello"), "{err}");
    assert!(!err.contains("built upper"), "{err}");
    assert!(err.contains("1 built, 1 up to date"), "{err}");
    assert_eq!(Project::output_of(&out3, "upper"), upper);

    // A changed input file changes both.
    fs::write(p.path("recipes/hello/msg"), "bye\n").unwrap();
    let (out4, err) = p.build_ok(&["upper"]);
    assert!(err.contains("2 built"), "{err}");
    let upper4 = Project::output_of(&out4, "upper");
    assert_eq!(fs::read_to_string(upper4.join("MSG")).unwrap(), "BYE\n");

    // gc keeps the current outputs only; clean removes them.
    let (ok, _, err) = p.run(&["gc"]);
    assert!(ok, "{err}");
    assert!(upper4.is_dir());
    assert!(!upper.is_dir(), "gc kept an old tree");
    let (_, err) = p.build_ok(&[]);
    assert!(err.contains("0 built"), "{err}");
    let (ok, _, err) = p.run(&["clean"]);
    assert!(ok, "{err}");
    assert!(!upper4.is_dir());
    let (_, err) = p.build_ok(&[]);
    assert!(err.contains("2 built"), "{err}");
}

#[test]
fn the_network_is_unreachable() {
    let p = Project::new();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    p.recipe(
        "net",
        &format!(
            "outputs = [\"page\"]\ncommands = [\"echo hi | nc 127.0.0.1 {port} > $out/page\"]\n"
        ),
    );
    let (ok, _, err) = p.run(&["build", "net"]);
    assert!(!ok);
    assert!(err.contains("step `net` failed"), "{err}");
    assert!(err.contains("can't connect to remote host"), "{err}");
    assert!(err.contains("without network"), "{err}");
    assert!(err.contains("full log: "), "{err}");
    assert!(listener.accept().is_err(), "the sandbox reached the host");
}

#[test]
fn writes_outside_out_fail() {
    let p = Project::new();
    for (name, target) in [
        ("root", "/evil"),
        ("tools", "/bin/evil"),
        ("inputs", "/inputs/files/hello/msg"),
    ] {
        p.recipe(
            name,
            &format!(
                "files = [\"hello/msg\"]\noutputs = [\"x\"]\ncommands = [\"touch $out/x\", \"echo x > {target}\"]\n"
            ),
        );
        let (ok, _, err) = p.run(&["build", name]);
        assert!(!ok, "{name}: writing {target} succeeded");
        assert!(err.contains("Read-only file system"), "{err}");
    }
    assert!(!tools_root().join("bin/evil").exists());
    assert_eq!(
        fs::read_to_string(p.path("recipes/hello/msg")).unwrap(),
        "hello\n"
    );
    // Build directory, $out and /tmp are writable; outputs must exist.
    p.recipe(
        "ok",
        "outputs = [\"x\", \"missing\"]\ncommands = [\"echo > /tmp/t\", \"echo > b\", \"touch $out/x\"]\n",
    );
    let (ok, _, err) = p.run(&["build", "ok"]);
    assert!(!ok);
    assert!(err.contains("did not produce missing"), "{err}");
}

#[test]
fn a_killed_build_leaves_nothing_half_done() {
    let p = Project::new();
    p.recipe(
        "slow",
        "outputs = [\"done\"]\ncommands = [\"echo started > $out/partial\", \"sleep 3\", \"echo ok > $out/done\"]\n",
    );
    let mut child = p
        .cmd(&["build", "slow"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let work = p.path("cache/work");
    let deadline = Instant::now() + Duration::from_secs(20);
    // Wait until the step is running inside the sandbox.
    loop {
        let started = fs::read_dir(&work)
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| e.path().join("out/partial").exists());
        if started {
            break;
        }
        assert!(Instant::now() < deadline, "the step never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        fs::read_dir(p.path("cache/steps"))
            .map(|d| d.count())
            .unwrap_or(0)
            == 0,
        "a killed step left a record"
    );
    let (out, err) = p.build_ok(&["slow"]);
    assert!(err.contains("1 built"), "{err}");
    let tree = Project::output_of(&out, "slow");
    assert_eq!(fs::read_to_string(tree.join("done")).unwrap(), "ok\n");
    let leftovers: Vec<_> = fs::read_dir(&work)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn verify_passes_reproducible_steps_and_catches_the_rest() {
    let p = Project::new();
    p.recipe("hello", HELLO);
    let (ok, out, err) = p.run(&["verify", "hello"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("hello ") && out.contains("reproducible"),
        "{out}"
    );

    // The build path, umask and locale differ under verify.
    p.recipe(
        "leaky",
        "outputs = [\"same\", \"where\", \"mask\"]\ncommands = [\"echo same > $out/same\", \"pwd > $out/where\", \"umask > $out/mask\"]\n",
    );
    let (ok, _, err) = p.run(&["verify", "leaky"]);
    assert!(!ok);
    assert!(
        err.contains("step `leaky` is not reproducible: 2 file(s) differ: mask, where"),
        "{err}"
    );
    let kept = p.path("cache/verify/leaky");
    assert_eq!(
        fs::read_to_string(kept.join("cached/where")).unwrap(),
        "/build\n"
    );
    assert_ne!(
        fs::read_to_string(kept.join("rebuilt/where")).unwrap(),
        "/build\n"
    );
}

#[test]
fn recipe_errors_name_the_file_and_line() {
    let p = Project::new();
    p.recipe("bad", "outputs = [\"x\"]\ncomands = [\"true\"]\n");
    let (ok, _, err) = p.run(&["build"]);
    assert!(!ok);
    assert!(err.contains("bad.toml:2:"), "{err}");
    assert!(err.contains("comands"), "{err}");
}
