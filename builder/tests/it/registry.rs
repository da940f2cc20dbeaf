//! Shared step caches against a real OCI registry: Debian's
//! `docker-registry` (distribution 2.8), started on localhost per test.
//! Two cache directories play two machines.

use std::fs;
use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::steps::{HELLO, Project, UPPER, tools_root};

/// The registry binary: `$HIPERISO_DOCKER_REGISTRY`, else
/// `docker-registry` on PATH. Missing: the test is skipped, except under
/// CI=true, where it fails.
pub(crate) fn registry_binary() -> Option<PathBuf> {
    let found = std::env::var_os("HIPERISO_DOCKER_REGISTRY")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
                .map(|dir| dir.join("docker-registry"))
                .find(|p| p.is_file())
        });
    if found.is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "docker-registry is missing: apt-get install docker-registry"
        );
        eprintln!("skipped: docker-registry is not installed (apt-get install docker-registry)");
    }
    found
}

/// A running `docker-registry` with its storage in a temporary directory.
pub(crate) struct Registry {
    child: Child,
    dir: tempfile::TempDir,
    pub(crate) port: u16,
}

impl Registry {
    /// Starts one; `user` requires htpasswd (bcrypt) basic auth.
    pub(crate) fn start(binary: &Path, user: Option<(&str, &str)>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut config = format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n\
             http:\n  addr: 127.0.0.1:{port}\n",
            dir.path().join("storage").display()
        );
        if let Some((name, password)) = user {
            let script = format!(
                "import crypt; print('{name}:' + crypt.crypt('{password}', crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=16)))"
            );
            let out = Command::new("python3")
                .args(["-W", "ignore", "-c", &script])
                .output()
                .unwrap();
            assert!(out.status.success(), "{out:?}");
            fs::write(dir.path().join("htpasswd"), &out.stdout).unwrap();
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: hiperiso-test\n    path: {}\n",
                dir.path().join("htpasswd").display()
            ));
        }
        fs::write(dir.path().join("config.yml"), config).unwrap();
        let child = Command::new(binary)
            .arg("serve")
            .arg(dir.path().join("config.yml"))
            .stdout(Stdio::null())
            .stderr(fs::File::create(dir.path().join("registry.log")).unwrap())
            .spawn()
            .unwrap();
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "docker-registry did not listen: {}",
                fs::read_to_string(dir.path().join("registry.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Self { child, dir, port }
    }

    fn url(&self) -> String {
        format!("oci://127.0.0.1:{}/hiperiso/steps", self.port)
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Every zstd blob (the step trees) in the storage.
    fn tree_blobs(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let mut dirs = vec![self.dir.path().join("storage/docker/registry/v2/blobs")];
        while let Some(dir) = dirs.pop() {
            for entry in fs::read_dir(&dir).unwrap().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    dirs.push(path);
                } else if fs::read(&path)
                    .unwrap()
                    .starts_with(&[0x28, 0xb5, 0x2f, 0xfd])
                {
                    out.push(path);
                }
            }
        }
        out
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Keys made by the binary's `keys` verb: (dir, public key line).
fn make_keys(p: &Project, name: &str) -> (PathBuf, String) {
    let dir = p.path(&format!("keys-{name}"));
    let (ok, _, err) = p.run(&["keys", "--dir", dir.to_str().unwrap(), "--name", name]);
    assert!(ok, "{err}");
    let public = fs::read_to_string(dir.join("cache-signing.ed25519.pub")).unwrap();
    (dir, public.trim().to_string())
}

/// Appends `[cache] trusted-keys` to the project's manifest.
fn trust(p: &Project, keys: &[&str]) {
    let manifest = p.path("hiperiso.toml");
    let mut text = fs::read_to_string(&manifest).unwrap();
    text.push_str(&format!("\n[cache]\ntrusted-keys = {keys:?}\n"));
    fs::write(manifest, text).unwrap();
}

/// The binary, online (registries need the network), with its own cache
/// directory `cache` (one "machine").
fn command_on(p: &Project, cache: &str, key_dir: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_hiperiso-build"));
    command
        .arg("--manifest")
        .arg(p.path("hiperiso.toml"))
        .arg("--cache-dir")
        .arg(p.path(cache))
        .env("HIPERISO_TOOLS_ROOT", tools_root())
        .env(
            "HIPERISO_SIGNING_KEY",
            key_dir.join("cache-signing.ed25519"),
        )
        .env("DOCKER_CONFIG", p.path("docker"))
        .args(args);
    command
}

/// Runs [`command_on`]; (success, stdout, stderr).
fn run_on(p: &Project, cache: &str, key_dir: &Path, args: &[&str]) -> (bool, String, String) {
    let out = command_on(p, cache, key_dir, args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A project with the two test steps, a tiny image profile and its
/// overlays, trusting a fresh key.
fn project() -> (Project, PathBuf) {
    let p = Project::new();
    p.recipe("hello", HELLO);
    p.recipe("upper", UPPER);
    let (keys, public) = make_keys(&p, "ci-1");
    trust(&p, &[&public]);
    let manifest = p.path("hiperiso.toml");
    let mut text = fs::read_to_string(&manifest).unwrap();
    text.push_str("\n[profiles.tiny]\ndescription = \"two test steps\"\nsteps = [\"upper\"]\n");
    fs::write(manifest, text).unwrap();
    fs::create_dir_all(p.path("overlays/esp/EFI/BOOT")).unwrap();
    fs::write(p.path("overlays/esp/EFI/BOOT/grub.cfg"), "# test\n").unwrap();
    fs::create_dir_all(p.path("overlays/data")).unwrap();
    (p, keys)
}

#[test]
fn pushed_steps_are_pulled_into_an_empty_cache_and_give_the_same_image() {
    let Some(binary) = registry_binary() else {
        return;
    };
    let registry = Registry::start(&binary, None);
    let (p, keys) = project();
    let url = registry.url();
    let image = |cache: &str, flag: &str, out: &str| {
        let (ok, _, err) = run_on(
            &p,
            cache,
            &keys,
            &[
                "--profile",
                "tiny",
                "image",
                "--size",
                "128MiB",
                "-o",
                out,
                flag,
                &url,
            ],
        );
        assert!(ok, "{err}");
        err
    };
    // Machine A builds and pushes.
    let a = image(
        "cache-a",
        "--cache-to",
        &p.path("a.img").display().to_string(),
    );
    assert!(
        a.contains("built hello") && a.contains("built upper"),
        "{a}"
    );
    assert!(
        a.contains("pushed hello to") && a.contains("pushed upper to"),
        "{a}"
    );
    // Machine B, an empty cache, pulls both and builds nothing.
    let b = image(
        "cache-b",
        "--cache-from",
        &p.path("b.img").display().to_string(),
    );
    assert!(
        b.contains("pulled hello from") && b.contains("pulled upper from"),
        "{b}"
    );
    assert!(!b.contains("building "), "B built a step:\n{b}");
    assert!(
        fs::read(p.path("a.img")).unwrap() == fs::read(p.path("b.img")).unwrap(),
        "the image from pulled steps differs from the locally built one"
    );
    // The pulled tree is the same tree, in B's own cache, and `build`
    // finds it there (no registry asked).
    let (ok, out, err) = run_on(&p, "cache-b", &keys, &["--offline", "build"]);
    assert!(ok && err.contains("0 built, 2 up to date"), "{err}");
    let upper = Project::output_of(&out, "upper");
    assert_eq!(fs::read_to_string(upper.join("MSG")).unwrap(), "HELLO\n");
    // Pushing again is harmless: the key is there, nothing is pushed.
    let (ok, _, err) = run_on(&p, "cache-a", &keys, &["build", "--cache-to", &url]);
    assert!(ok && !err.contains("pushed"), "{err}");
}

/// Two machines that built the same steps push them at the same moment:
/// both succeed (or find the key already there), and a third machine pulls
/// steps that check out against their signed records.
#[test]
fn concurrent_pushes_of_one_key_are_harmless() {
    let Some(binary) = registry_binary() else {
        return;
    };
    let registry = Registry::start(&binary, None);
    let (p, keys) = project();
    let url = registry.url();
    for cache in ["cache-a", "cache-b"] {
        let (ok, _, err) = run_on(&p, cache, &keys, &["--offline", "build"]);
        assert!(ok && err.contains("2 built"), "{err}");
    }
    let pushes = ["cache-a", "cache-b"].map(|cache| {
        command_on(&p, cache, &keys, &["build", "--cache-to", &url])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    });
    let mut pushed = String::new();
    for push in pushes {
        let out = push.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{err}");
        pushed.push_str(&err);
    }
    for step in ["hello", "upper"] {
        assert!(pushed.contains(&format!("pushed {step} to")), "{pushed}");
    }
    let (ok, out, err) = run_on(
        &p,
        "cache-c",
        &keys,
        &["build", "--cache-from", &url, "--require-cache"],
    );
    assert!(
        ok && err.contains("pulled hello from") && err.contains("pulled upper from"),
        "{err}"
    );
    let upper = Project::output_of(&out, "upper");
    assert_eq!(fs::read_to_string(upper.join("MSG")).unwrap(), "HELLO\n");
}

#[test]
fn tampered_blobs_untrusted_keys_and_dead_registries_fall_back_to_local_builds() {
    let Some(binary) = registry_binary() else {
        return;
    };
    let mut registry = Registry::start(&binary, None);
    let (p, keys) = project();
    let url = registry.url();
    let (ok, _, err) = run_on(
        &p,
        "cache-a",
        &keys,
        &["build", "hello", "--cache-to", &url],
    );
    assert!(ok && err.contains("pushed hello"), "{err}");

    // A record signed by a key the manifest does not trust.
    let other = Project::new();
    other.recipe("hello", HELLO);
    let (_, stranger) = make_keys(&other, "stranger");
    trust(&other, &[&stranger]);
    let (ok, _, err) = run_on(&other, "cache", &keys, &["build", "--cache-from", &url]);
    assert!(ok, "{err}");
    assert!(
        err.contains("signed by key `ci-1`, which [cache] trusted-keys does not list"),
        "{err}"
    );
    assert!(err.contains("built hello"), "{err}");

    // A blob changed in the registry's storage.
    let blobs = registry.tree_blobs();
    assert_eq!(blobs.len(), 1, "{blobs:?}");
    let digest = format!(
        "sha256:{}",
        blobs[0]
            .parent()
            .unwrap()
            .file_name()
            .unwrap()
            .to_string_lossy()
    );
    let mut bytes = fs::read(&blobs[0]).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    fs::write(&blobs[0], bytes).unwrap();
    let key_of = |err: &str| err.split("(key ").nth(1).map(|r| r[..64].to_string());
    let (ok, _, err) = run_on(
        &p,
        "cache-b",
        &keys,
        &["build", "hello", "--cache-from", &url, "--require-cache"],
    );
    assert!(!ok, "a corrupt blob was used:\n{err}");
    assert!(
        err.contains(&digest) && err.contains("does not match its digest"),
        "{err}"
    );
    let key = key_of(&err).expect("the error names the key");
    let (ok, _, err) = run_on(
        &p,
        "cache-b",
        &keys,
        &["build", "hello", "--cache-from", &url],
    );
    assert!(
        ok && err.contains("warning: ") && err.contains(&digest),
        "{err}"
    );
    assert!(err.contains(&key) && err.contains("built hello"), "{err}");

    // The registry is gone: a warning, once, and a local build.
    registry.stop();
    let (ok, _, err) = run_on(&p, "cache-c", &keys, &["build", "--cache-from", &url]);
    assert!(ok, "{err}");
    assert_eq!(err.matches("not asking it again").count(), 1, "{err}");
    assert!(err.contains("2 built"), "{err}");
    let (ok, _, err) = run_on(
        &p,
        "cache-d",
        &keys,
        &["build", "--cache-from", &url, "--require-cache"],
    );
    assert!(!ok && err.contains(&url), "{err}");
    // --offline never asks.
    let (ok, _, err) = run_on(
        &p,
        "cache-e",
        &keys,
        &["--offline", "build", "--require-cache"],
    );
    assert!(ok && err.contains("2 built"), "{err}");
}

#[test]
fn credentials_come_from_dockers_config_file() {
    let Some(binary) = registry_binary() else {
        return;
    };
    let registry = Registry::start(&binary, Some(("ci", "s3cret")));
    let (p, keys) = project();
    let url = registry.url();
    let login = |password: &str| {
        fs::create_dir_all(p.path("docker")).unwrap();
        let auth = base64(format!("ci:{password}").as_bytes());
        let mut file = fs::File::create(p.path("docker/config.json")).unwrap();
        write!(
            file,
            r#"{{"auths": {{"127.0.0.1:{}": {{"auth": "{auth}"}}}}}}"#,
            registry.port
        )
        .unwrap();
    };
    // Anonymous: refused by the registry, a clear error with --require-cache.
    let args = ["build", "hello", "--cache-to", &url, "--require-cache"];
    let (ok, _, err) = run_on(&p, "cache-a", &keys, &args);
    assert!(!ok && err.contains("Not authorized"), "{err}");
    login("wrong");
    let (ok, _, err) = run_on(&p, "cache-a", &keys, &args);
    assert!(
        !ok && err.contains("Not authorized") && err.contains(&url),
        "{err}"
    );
    login("s3cret");
    let (ok, _, err) = run_on(&p, "cache-a", &keys, &args);
    assert!(ok && err.contains("pushed hello"), "{err}");
    let (ok, _, err) = run_on(
        &p,
        "cache-b",
        &keys,
        &["build", "hello", "--cache-from", &url, "--require-cache"],
    );
    assert!(ok && err.contains("pulled hello"), "{err}");
}

/// A recipe with a 2 MB output: its blob is the one large response.
const BIG: &str = r#"outputs = ["big"]
commands = ["dd if=/dev/urandom of=$out/big bs=1024 count=2048 2>/dev/null"]
"#;

/// Forwards 127.0.0.1:(returned port) to the registry and kills the
/// registry once 64 KiB of responses went through one connection: the
/// registry stops in the middle of sending the big blob.
fn killing_proxy(registry: Registry) -> u16 {
    use std::io::Read;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let upstream_port = registry.port;
    let registry = std::sync::Arc::new(std::sync::Mutex::new(registry));
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let registry = registry.clone();
            std::thread::spawn(move || {
                let Ok(upstream) = TcpStream::connect(("127.0.0.1", upstream_port)) else {
                    return;
                };
                let (mut c_in, mut u_out) =
                    (client.try_clone().unwrap(), upstream.try_clone().unwrap());
                std::thread::spawn(move || std::io::copy(&mut c_in, &mut u_out));
                let (mut u_in, mut c_out) = (upstream, client);
                let (mut buf, mut total) = ([0u8; 8192], 0usize);
                while let Ok(n) = u_in.read(&mut buf) {
                    if n == 0 || c_out.write_all(&buf[..n]).is_err() {
                        break;
                    }
                    total += n;
                    if total > 64 * 1024 {
                        registry.lock().unwrap().stop();
                        let _ = c_out.shutdown(std::net::Shutdown::Both);
                        break;
                    }
                }
            });
        }
    });
    port
}

#[test]
fn a_registry_stopped_mid_pull_leaves_a_local_build() {
    let Some(binary) = registry_binary() else {
        return;
    };
    let registry = Registry::start(&binary, None);
    let (p, keys) = project();
    p.recipe("big", BIG);
    let (ok, _, err) = run_on(
        &p,
        "cache-a",
        &keys,
        &["build", "big", "--cache-to", &registry.url()],
    );
    assert!(ok && err.contains("pushed big"), "{err}");
    let port = killing_proxy(registry);
    let url = format!("oci://127.0.0.1:{port}/hiperiso/steps");
    let (ok, out, err) = run_on(
        &p,
        "cache-b",
        &keys,
        &["build", "big", "--cache-from", &url],
    );
    assert!(ok, "{err}");
    assert!(
        err.contains("warning: ") && err.contains("built big"),
        "{err}"
    );
    assert!(!err.contains("pulled big"), "{err}");
    let big = Project::output_of(&out, "big");
    assert_eq!(fs::metadata(big.join("big")).unwrap().len(), 2 << 20);
    // Nothing half-pulled stayed behind.
    let work = p.path("cache-b/work");
    let left: Vec<_> = fs::read_dir(&work)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        left.iter()
            .all(|n| !n.to_string_lossy().starts_with("pull-")),
        "{left:?}"
    );
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (*b as u32) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}
