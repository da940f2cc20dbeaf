//! The lock against HTTP mirrors: a decayed pin names itself and the
//! command that re-pins it; and (opt-in, HIPERISO_ONLINE_TESTS=1) a fresh
//! resolution of the default manifest against the real Debian archive.

use hiperiso_build::debian::closure;
use hiperiso_build::debian::repo::Repository;
use hiperiso_build::model::lock::LockedPackage;
use hiperiso_build::project::Project;
use hiperiso_build::settings::Settings;
use hiperiso_tests::http::TestServer;
use hiperiso_tests::workspace_root;

fn locked(name: &str, body: &[u8]) -> LockedPackage {
    use sha2::Digest;
    LockedPackage {
        name: name.into(),
        version: "1.0-1".into(),
        architecture: "amd64".into(),
        filename: format!("pool/main/t/{name}/{name}_1.0-1_amd64.deb"),
        size: body.len() as u64,
        sha256: hex::encode(sha2::Sha256::digest(body)),
        source: name.into(),
    }
}

#[test]
fn decayed_pin_names_the_package_and_lock_update() {
    let first = TestServer::start();
    let second = TestServer::start();
    let cache = tempfile::tempdir().unwrap();
    let mut settings = Settings::new(workspace_root().join("hiperiso.toml"));
    settings.cache_dir = Some(cache.path().to_path_buf());
    settings.verbosity = -1;
    let project = Project::load(settings).unwrap();
    let fetcher = closure::deb_fetcher(&project).unwrap();
    let present = locked("present", b"a deb that is still there");
    let gone = locked("gone-tool", b"a deb the mirror dropped");
    second.serve(
        &format!("/{}", present.filename),
        b"a deb that is still there".to_vec(),
    );
    let repository = Repository {
        fetcher: &fetcher,
        mirrors: vec![first.base(), second.base()],
        suite: "bookworm".into(),
        components: vec!["main".into()],
        architecture: "amd64".into(),
    };
    // The first mirror lacks it, the second has it: the fallback works.
    let paths = repository
        .fetch_debs(std::slice::from_ref(&present))
        .unwrap();
    assert_eq!(
        std::fs::read(&paths[0]).unwrap(),
        b"a deb that is still there"
    );
    // Gone from every mirror: the error says which pin decayed and what to run.
    let err = repository.fetch_debs(&[present, gone]).unwrap_err();
    let message = err.to_string();
    assert!(message.contains("gone-tool"), "{message}");
    assert!(message.contains("decayed"), "{message}");
    assert!(
        message.contains("hiperiso-build lock --update gone-tool"),
        "{message}"
    );
}

#[test]
fn fresh_lock_against_the_real_archive() {
    if std::env::var_os("HIPERISO_ONLINE_TESTS").is_none() {
        eprintln!(
            "skipped: set HIPERISO_ONLINE_TESTS=1 to resolve against the real Debian archive"
        );
        return;
    }
    let mut settings = Settings::new(workspace_root().join("hiperiso.toml"));
    settings.profile = Some("debian".into());
    let project = Project::load(settings).unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let first = scratch.path().join("first.lock");
    let second = scratch.path().join("second.lock");
    let a = closure::resolve_scratch(&project, &first).unwrap();
    let b = closure::resolve_scratch(&project, &second).unwrap();
    assert_eq!(
        std::fs::read(&first).unwrap(),
        std::fs::read(&second).unwrap(),
        "resolution is deterministic"
    );
    for name in [
        "qemu-system-x86",
        "libc6",
        "linux-image-amd64",
        "grub-efi-amd64-bin",
        "ovmf",
        "busybox-static",
    ] {
        assert!(a.package(name).is_some(), "{name} missing from the closure");
    }
    assert!(
        a.packages
            .iter()
            .all(|p| p.sha256.len() == 64 && p.filename.starts_with("pool/"))
    );
    assert_eq!(a, b);
}
