//! Finished images as OCI artifacts: `image --push` to a real registry
//! (Debian's docker-registry, as in registry.rs), `install --image` from
//! the registry and from a file onto a real loop device, without a
//! manifest, and a tampered image refused before anything is written.

use std::fs;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;

use sha2::{Digest, Sha256};

use crate::disk_cli::{Loop, Project, bin, ok, text};
use crate::registry::{Registry, registry_binary};

const MIB: u64 = 1024 * 1024;

/// sha256 of the first `len` bytes of `path`.
fn sha256_prefix(path: &Path, len: u64) -> String {
    let mut hasher = Sha256::new();
    std::io::copy(&mut fs::File::open(path).unwrap().take(len), &mut hasher).unwrap();
    hex::encode(hasher.finalize())
}

/// The binary with no manifest in reach: a fresh, empty working directory.
fn bare(cwd: &Path, docker: &Path) -> Command {
    let mut cmd = bin();
    cmd.current_dir(cwd).env("DOCKER_CONFIG", docker);
    cmd
}

#[test]
fn pushed_images_install_by_reference_or_file_and_tampered_ones_are_refused() {
    let Some(binary) = registry_binary() else {
        return;
    };
    let registry = Registry::start(&binary, None);
    let p = Project::new();
    let docker = p.path("docker");
    let url = format!("oci://127.0.0.1:{}/hiperiso/images:v1", registry.port);
    let image = p.path("a.img");
    let said = ok(p
        .cmd()
        .env("DOCKER_CONFIG", &docker)
        .args(["image", "--esp-tree"])
        .arg(p.path("overlays/esp"))
        .arg("-o")
        .arg(&image)
        .args(["--push", &url]));
    // The 128 MiB image travels as its data, compressed.
    let at = said
        .find("-byte layer")
        .unwrap_or_else(|| panic!("no layer size in: {said}"));
    let start = said[..at]
        .trim_end_matches(|c: char| c.is_ascii_digit())
        .len();
    let layer: u64 = said[start..at].parse().unwrap();
    assert!(layer < 4 * MIB, "{said}");
    // The manifest names the image hash and carries build.json.
    let sha = said
        .split("image sha256 ")
        .nth(1)
        .map(|rest| &rest[..64])
        .unwrap_or_else(|| panic!("no image sha256 in: {said}"));
    let script = format!(
        "import urllib.request as u; print(u.urlopen(u.Request('http://127.0.0.1:{}/v2/hiperiso/images/manifests/v1', \
         headers={{'Accept': 'application/vnd.oci.image.manifest.v1+json'}})).read().decode())",
        registry.port
    );
    let manifest: serde_json::Value =
        serde_json::from_str(&ok(Command::new("python3").args(["-c", &script]))).unwrap();
    let annotations = &manifest["annotations"];
    assert_eq!(annotations["org.hiperiso.image-sha256"], sha, "{manifest}");
    let build: serde_json::Value =
        serde_json::from_str(annotations["org.hiperiso.build-json"].as_str().unwrap()).unwrap();
    assert_eq!(build["image_sha256"], sha, "{manifest}");

    if !hiperiso_prereq::root() {
        return;
    }
    // A tampered copy: one byte written into the data partition.
    let tampered = p.path("tampered.img");
    fs::copy(&image, &tampered).unwrap();
    fs::File::options()
        .write(true)
        .open(&tampered)
        .unwrap()
        .write_all_at(b"x", 100 * MIB)
        .unwrap();
    let raw = p.path("stick.raw");
    let dev = Loop::over_new_file(&raw);
    let cwd = tempfile::tempdir().unwrap();
    let want = sha256_prefix(&image, 128 * MIB);

    // From the registry, with no manifest anywhere.
    let said = ok(bare(cwd.path(), &docker)
        .args(["install", "--yes", "--force", "--image", &url])
        .arg(&dev.0));
    assert!(
        said.contains("verified") && said.contains("installed:"),
        "{said}"
    );
    assert_eq!(sha256_prefix(&raw, 128 * MIB), want, "read back differs");
    assert!(ok(bare(cwd.path(), &docker).arg("inspect").arg(&dev.0)).contains("build: hiperiso"));

    // A tampered file: refused, naming it, before anything is written.
    let before = sha256_prefix(&raw, 160 * MIB);
    let out = bare(cwd.path(), &docker)
        .args(["install", "--yes", "--force", "-I", "--image"])
        .arg(&tampered)
        .arg(&dev.0)
        .output()
        .unwrap();
    let said = text(&out);
    assert!(
        !out.status.success() && said.contains("tampered.img") && said.contains("refusing it"),
        "{said}"
    );
    assert_eq!(
        sha256_prefix(&raw, 160 * MIB),
        before,
        "the refused install wrote"
    );

    // An unknown tag: a clear error naming it.
    let missing = url.replace(":v1", ":v2");
    let out = bare(cwd.path(), &docker)
        .args(["install", "--yes", "--force", "-I", "--image", &missing])
        .arg(&dev.0)
        .output()
        .unwrap();
    assert!(
        !out.status.success() && text(&out).contains(&format!("{missing}: no such tag")),
        "{}",
        text(&out)
    );

    // The existing stick is refused without -I; the file installs with it.
    let out = bare(cwd.path(), &docker)
        .args(["install", "--yes", "--force", "--image"])
        .arg(&image)
        .arg(&dev.0)
        .output()
        .unwrap();
    assert!(
        text(&out).contains("already holds a hiperiso stick"),
        "{}",
        text(&out)
    );
    ok(bare(cwd.path(), &docker)
        .args(["install", "--yes", "--force", "-I", "--image"])
        .arg(&image)
        .arg(&dev.0));
    assert_eq!(sha256_prefix(&raw, 128 * MIB), want, "read back differs");
}
