//! The fetcher, pin and bump against a local HTTP server on real sockets.

use std::fs;
use std::path::Path;
use std::time::Duration;

use hiperiso_build::commands::bump;
use hiperiso_build::project::Project;
use hiperiso_build::settings::Settings;
use hiperiso_build::sources::fetch::{
    AttemptFailure, FetchError, FetchOptions, FetchRequest, Fetcher, Progress,
};
use hiperiso_build::sources::store::{Store, sha256_hex};
use hiperiso_tests::http::TestServer;

fn payload(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2654435761).to_le_bytes()[1] ^ seed)
        .collect()
}

fn options() -> FetchOptions {
    FetchOptions {
        jobs: 4,
        progress: Progress::Quiet,
        retries: 3,
        backoff: Duration::from_millis(10),
        ..FetchOptions::default()
    }
}

fn request(name: &str, urls: Vec<String>, body: &[u8]) -> FetchRequest {
    FetchRequest {
        name: name.into(),
        urls,
        sha256: Some(sha256_hex(body)),
        size: Some(body.len() as u64),
    }
}

/// Files under a store directory (blobs, partials, scratch).
fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                out.extend(files_under(&path));
            } else {
                out.push(path.display().to_string());
            }
        }
    }
    out
}

#[test]
fn good_fetch_then_cache_hit() {
    let server = TestServer::start();
    let body = payload(3 << 20, 1);
    server.serve("/good.tar.gz", body.clone());
    let cache = tempfile::tempdir().unwrap();
    let fetcher = Fetcher::new(Store::new(cache.path()), options());
    let req = request("good", vec![server.url("/good.tar.gz")], &body);

    let got = fetcher.fetch(&req).unwrap();
    assert_eq!(got.sha256, sha256_hex(&body));
    assert_eq!(got.size, body.len() as u64);
    assert_eq!(
        got.path,
        cache.path().join("blobs/sha256").join(&got.sha256)
    );
    assert_eq!(fs::read(&got.path).unwrap(), body);

    let again = fetcher.fetch(&req).unwrap();
    assert_eq!(again, got);
    assert_eq!(
        server.requests_for("/good.tar.gz").len(),
        1,
        "the second fetch must be a cache hit"
    );
    assert!(files_under(&cache.path().join("partial")).is_empty());
}

#[test]
fn resumes_a_cut_transfer_with_range() {
    let server = TestServer::start();
    let body = payload(2 << 20, 2);
    server.serve("/cut.tar.xz", body.clone());
    server.cut_next("/cut.tar.xz", 700_000, 1);
    let cache = tempfile::tempdir().unwrap();
    let fetcher = Fetcher::new(Store::new(cache.path()), options());

    let got = fetcher
        .fetch(&request("cut", vec![server.url("/cut.tar.xz")], &body))
        .unwrap();
    assert_eq!(fs::read(&got.path).unwrap(), body);
    let log = server.requests_for("/cut.tar.xz");
    assert_eq!(log.len(), 2, "{log:?}");
    assert_eq!(log[0].range, None);
    assert_eq!(
        log[1].range.as_deref(),
        Some("bytes=700000-"),
        "the retry resumes: {log:?}"
    );
    assert_eq!(log[1].status, 206);
}

#[test]
fn retries_after_a_500() {
    let server = TestServer::start();
    let body = payload(100_000, 3);
    server.serve("/flaky.tar.gz", body.clone());
    server.fail_next("/flaky.tar.gz", 500, 1);
    let cache = tempfile::tempdir().unwrap();
    let fetcher = Fetcher::new(Store::new(cache.path()), options());

    let got = fetcher
        .fetch(&request("flaky", vec![server.url("/flaky.tar.gz")], &body))
        .unwrap();
    assert_eq!(fs::read(&got.path).unwrap(), body);
    let statuses: Vec<u16> = server
        .requests_for("/flaky.tar.gz")
        .iter()
        .map(|l| l.status)
        .collect();
    assert_eq!(statuses, [500, 200]);
}

#[test]
fn persistent_5xx_gives_up_after_the_retries() {
    let server = TestServer::start();
    server.serve("/down.tar.gz", b"x".to_vec());
    server.fail_next("/down.tar.gz", 503, 100);
    let cache = tempfile::tempdir().unwrap();
    let fetcher = Fetcher::new(Store::new(cache.path()), options());
    let err = fetcher
        .fetch(&request("down", vec![server.url("/down.tar.gz")], b"x"))
        .unwrap_err();
    assert_eq!(
        server.requests_for("/down.tar.gz").len(),
        4,
        "1 try + 3 retries"
    );
    assert!(err.to_string().contains("HTTP 503"), "{err}");
}

#[test]
fn moves_to_the_next_mirror_on_404() {
    let server = TestServer::start();
    let body = payload(50_000, 4);
    server.serve("/mirror2/pkg.tar.gz", body.clone());
    let cache = tempfile::tempdir().unwrap();
    let fetcher = Fetcher::new(Store::new(cache.path()), options());
    let urls = vec![
        server.url("/mirror1/pkg.tar.gz"),
        server.url("/mirror2/pkg.tar.gz"),
    ];

    let got = fetcher.fetch(&request("pkg", urls, &body)).unwrap();
    assert_eq!(fs::read(&got.path).unwrap(), body);
    let log = server.log();
    assert_eq!(log.len(), 2, "a 404 is not retried: {log:?}");
    assert_eq!(
        (log[0].path.as_str(), log[0].status),
        ("/mirror1/pkg.tar.gz", 404)
    );
    assert_eq!(
        (log[1].path.as_str(), log[1].status),
        ("/mirror2/pkg.tar.gz", 200)
    );
}

#[test]
fn wrong_hash_leaves_the_cache_clean() {
    let server = TestServer::start();
    let pinned = payload(200_000, 5);
    let served = payload(200_000, 6);
    server.serve("/m1/evil.tar.gz", served.clone());
    server.serve("/m2/evil.tar.gz", served.clone());
    let cache = tempfile::tempdir().unwrap();
    let fetcher = Fetcher::new(Store::new(cache.path()), options());
    let urls = vec![server.url("/m1/evil.tar.gz"), server.url("/m2/evil.tar.gz")];

    let err = fetcher
        .fetch(&request("evil", urls.clone(), &pinned))
        .unwrap_err();
    let FetchError::Failed {
        name,
        file,
        attempts,
        hint,
    } = &err
    else {
        panic!("expected Failed, got {err}");
    };
    assert_eq!((name.as_str(), file.as_str()), ("evil", "evil.tar.gz"));
    assert_eq!(attempts.len(), 2, "both mirrors were tried");
    assert_eq!(
        attempts[0].failure,
        AttemptFailure::Mismatch {
            expected: sha256_hex(&pinned),
            actual: sha256_hex(&served)
        }
    );
    let message = err.to_string();
    for needle in [
        urls[0].as_str(),
        &sha256_hex(&pinned),
        &sha256_hex(&served),
        "hiperiso-build pin --force evil",
    ] {
        assert!(
            message.contains(needle),
            "message lacks {needle}:\n{message}"
        );
    }
    assert!(hint.is_some());
    assert_eq!(
        files_under(cache.path()),
        Vec::<String>::new(),
        "nothing unverified may stay in the cache"
    );
}

#[test]
fn offline_hit_and_miss() {
    let server = TestServer::start();
    let body = payload(10_000, 7);
    server.serve("/hit.tar.gz", body.clone());
    let cache = tempfile::tempdir().unwrap();
    let online = Fetcher::new(Store::new(cache.path()), options());
    let hit = request("hit", vec![server.url("/hit.tar.gz")], &body);
    let fetched = online.fetch(&hit).unwrap();

    let offline = Fetcher::new(
        Store::new(cache.path()),
        FetchOptions {
            offline: true,
            ..options()
        },
    );
    let before = server.log().len();
    assert_eq!(
        offline.fetch_all(std::slice::from_ref(&hit)).unwrap(),
        vec![fetched]
    );

    let miss1 = request("miss-one", vec![server.url("/miss1.tar.gz")], b"one");
    let miss2 = request("miss-two", vec![server.url("/miss2.tar.gz")], b"two");
    let err = offline.fetch_all(&[hit, miss1, miss2]).unwrap_err();
    let FetchError::Offline { missing } = &err else {
        panic!("expected Offline, got {err}");
    };
    let names: Vec<&str> = missing.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["miss-one", "miss-two"]);
    let message = err.to_string();
    assert!(
        message.contains(&sha256_hex(b"one")) && message.contains(&sha256_hex(b"two")),
        "{message}"
    );
    assert_eq!(
        server.log().len(),
        before,
        "offline must not touch the network"
    );
}

#[test]
fn parallel_fetch_all_keeps_order_and_dedupes() {
    let server = TestServer::start();
    let bodies: Vec<Vec<u8>> = (0..6)
        .map(|i| payload(300_000 + i * 1000, i as u8))
        .collect();
    let mut reqs = Vec::new();
    for (i, body) in bodies.iter().enumerate() {
        let path = format!("/p{i}.bin");
        server.serve(&path, body.clone());
        reqs.push(request(&format!("p{i}"), vec![server.url(&path)], body));
    }
    reqs.push(request("p0-again", vec![server.url("/p0.bin")], &bodies[0]));
    let cache = tempfile::tempdir().unwrap();
    let fetcher = Fetcher::new(Store::new(cache.path()), options());
    let got = fetcher.fetch_all(&reqs).unwrap();
    assert_eq!(got.len(), 7);
    for (fetched, body) in got.iter().zip(bodies.iter().chain([&bodies[0]])) {
        assert_eq!(fetched.sha256, sha256_hex(body));
    }
    assert_eq!(
        server.requests_for("/p0.bin").len(),
        1,
        "same sha256 is downloaded once"
    );
}

#[test]
fn unpinned_fetch_stores_under_the_computed_hash() {
    let server = TestServer::start();
    let body = payload(12_345, 8);
    server.serve("/index.gz", body.clone());
    let cache = tempfile::tempdir().unwrap();
    let fetcher = Fetcher::new(Store::new(cache.path()), options());
    let req = FetchRequest {
        name: "index".into(),
        urls: vec![server.url("/index.gz")],
        sha256: None,
        size: None,
    };
    let got = fetcher.fetch(&req).unwrap();
    assert_eq!(got.sha256, sha256_hex(&body));
    assert_eq!(fs::read(got.path).unwrap(), body);
}

// ---------------------------------------------------------------- pin, bump

const MANIFEST: &str = r#"# A manifest with comments everywhere.
[image]
name = "test"            # the name
seed = "seed"
size = "128MiB"
source-date-epoch = 1

# --- sources ---
[sources.foo]
version = "1.0"          # pinned by hand
url = "BASE/dl/foo-{version}.tar.gz"
sha256 = "SHA10"
watch = { index = "BASE/dl/", regex = 'foo-([0-9][0-9.]*)\.tar\.gz' }

[sources.bar]
# no sha256 yet
version = "0.1"
url = "BASE/dl/bar-{version}.tar.gz"

[profiles.default]
sources = ["foo", "bar"] # both
"#;

struct Fixture {
    server: TestServer,
    dir: tempfile::TempDir,
    ctx: Settings,
    foo10: Vec<u8>,
    foo11: Vec<u8>,
    bar01: Vec<u8>,
}

impl Fixture {
    /// The project as it is on disk now (bumps rewrite the manifest).
    fn project(&self) -> Project {
        Project::load(self.ctx.clone()).unwrap()
    }

    fn new() -> Self {
        let server = TestServer::start();
        let (foo10, foo11, bar01) = (payload(5000, 10), payload(6000, 11), payload(7000, 12));
        server.serve("/dl/foo-1.0.tar.gz", foo10.clone());
        server.serve("/dl/foo-1.1.tar.gz", foo11.clone());
        server.serve("/dl/bar-0.1.tar.gz", bar01.clone());
        server.serve_typed(
            "/dl/",
            br#"<html><a href="foo-1.0.tar.gz">foo-1.0.tar.gz</a> <a href="foo-1.1.tar.gz">foo-1.1.tar.gz</a>
                <a href="foo-0.9.tar.gz">foo-0.9.tar.gz</a> <a href="bar-0.1.tar.gz">bar</a></html>"#
                .to_vec(),
            "text/html",
        );
        let dir = tempfile::tempdir().unwrap();
        let manifest = dir.path().join("hiperiso.toml");
        fs::write(
            &manifest,
            MANIFEST
                .replace("BASE", &server.base())
                .replace("SHA10", &sha256_hex(&foo10)),
        )
        .unwrap();
        let mut ctx = Settings::new(&manifest);
        ctx.cache_dir = Some(dir.path().join("cache"));
        ctx.verbosity = -1;
        Self {
            server,
            dir,
            ctx,
            foo10,
            foo11,
            bar01,
        }
    }

    fn manifest_text(&self) -> String {
        fs::read_to_string(self.dir.path().join("hiperiso.toml")).unwrap()
    }

    fn expected(&self, foo_version: &str, foo_sha: &str) -> String {
        MANIFEST
            .replace("BASE", &self.server.base())
            .replace(
                "\"1.0\"          # pinned",
                &format!("\"{foo_version}\"          # pinned"),
            )
            .replace("SHA10", foo_sha)
    }
}

#[test]
fn bump_to_rewrites_only_version_and_sha256() {
    let fx = Fixture::new();
    let pin = bump::bump_to(&fx.project(), "foo", "1.1", None).unwrap();
    assert_eq!(pin.sha256, sha256_hex(&fx.foo11));
    assert_eq!(
        fx.manifest_text(),
        fx.expected("1.1", &sha256_hex(&fx.foo11))
    );
    // The new file is in the cache, verified.
    let store = Store::new(fx.dir.path().join("cache"));
    assert_eq!(fs::read(store.get(&pin.sha256).unwrap()).unwrap(), fx.foo11);
}

#[test]
fn bump_to_a_missing_version_changes_nothing() {
    let fx = Fixture::new();
    let before = fx.manifest_text();
    let err = bump::bump_to(&fx.project(), "foo", "9.9", None).unwrap_err();
    assert!(err.to_string().contains("HTTP 404"), "{err}");
    assert_eq!(fx.manifest_text(), before);
}

#[test]
fn bump_check_reads_the_index_and_changes_nothing() {
    let fx = Fixture::new();
    let before = fx.manifest_text();
    let checks = bump::check(&fx.project(), &["foo".to_string()]).unwrap();
    assert_eq!(checks.len(), 1);
    assert_eq!(checks[0].current, "1.0");
    assert_eq!(checks[0].latest.as_deref(), Some("1.1"));
    assert!(checks[0].is_newer());
    assert_eq!(checks[0].to_string(), "foo: 1.0 → 1.1");
    assert_eq!(fx.manifest_text(), before);
    assert!(
        fx.server.requests_for("/dl/foo-1.1.tar.gz").is_empty(),
        "--check downloads no tarball"
    );
}

#[test]
fn bump_latest_follows_the_watch() {
    let fx = Fixture::new();
    let pin = bump::bump_latest(&fx.project(), "foo")
        .unwrap()
        .expect("a newer version");
    assert_eq!(pin.version.as_deref(), Some("1.1"));
    assert_eq!(
        fx.manifest_text(),
        fx.expected("1.1", &sha256_hex(&fx.foo11))
    );
    assert!(
        bump::bump_latest(&fx.project(), "foo").unwrap().is_none(),
        "now up to date"
    );
}

#[test]
fn pin_fills_in_missing_sha256_only() {
    let fx = Fixture::new();
    hiperiso_build::commands::fetch::pin(&fx.ctx, &[], false).unwrap();
    let expected = fx.expected("1.0", &sha256_hex(&fx.foo10)).replace(
        &"bar-{version}.tar.gz\"\n".to_string(),
        &format!(
            "bar-{{version}}.tar.gz\"\nsha256 = \"{}\"\n",
            sha256_hex(&fx.bar01)
        ),
    );
    assert_eq!(fx.manifest_text(), expected);
    assert!(
        fx.server.requests_for("/dl/foo-1.0.tar.gz").is_empty(),
        "foo was already pinned"
    );
    // Now everything is pinned: fetch verifies both.
    let fetched = hiperiso_build::commands::fetch::fetch(&fx.ctx, &[]).unwrap();
    assert_eq!(fetched.len(), 2);
}

#[test]
fn a_stale_partial_is_discarded_and_downloaded_again() {
    let server = TestServer::start();
    let body = payload(400_000, 13);
    server.serve("/stale.tar.gz", body.clone());
    let cache = tempfile::tempdir().unwrap();
    let url = server.url("/stale.tar.gz");
    // A partial from an older file behind the same URL.
    let partial = cache
        .path()
        .join("partial")
        .join(sha256_hex(url.as_bytes()));
    fs::create_dir_all(partial.parent().unwrap()).unwrap();
    fs::write(&partial, payload(100_000, 14)).unwrap();
    let fetcher = Fetcher::new(Store::new(cache.path()), options());

    let got = fetcher.fetch(&request("stale", vec![url], &body)).unwrap();
    assert_eq!(fs::read(&got.path).unwrap(), body);
    let ranges: Vec<Option<String>> = server
        .requests_for("/stale.tar.gz")
        .into_iter()
        .map(|l| l.range)
        .collect();
    assert_eq!(
        ranges,
        [Some("bytes=100000-".to_string()), None],
        "resume first, then start over"
    );
    assert!(!partial.exists());
}

#[test]
fn a_pin_gone_from_every_mirror_says_how_to_re_pin() {
    let server = TestServer::start();
    let cache = tempfile::tempdir().unwrap();
    let fetcher = Fetcher::new(Store::new(cache.path()), options());
    let urls = vec![
        server.url("/a/gone_1.0.orig.tar.xz"),
        server.url("/b/gone_1.0.orig.tar.xz"),
    ];
    let err = fetcher
        .fetch(&request("gone", urls, b"old bytes"))
        .unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("cannot fetch gone (gone_1.0.orig.tar.xz) from any of 2 URL(s)"),
        "{message}"
    );
    assert!(message.contains("has decayed"), "{message}");
    assert!(
        message.contains("hiperiso-build bump gone --latest"),
        "{message}"
    );
    assert_eq!(files_under(cache.path()), Vec::<String>::new());
}

#[test]
fn a_stalled_transfer_times_out_and_resumes() {
    let server = TestServer::start();
    let body = payload(1 << 20, 15);
    server.serve("/hung.tar.gz", body.clone());
    server.stall_next("/hung.tar.gz", 300_000, 1, Duration::from_secs(5));
    let cache = tempfile::tempdir().unwrap();
    let opts = FetchOptions {
        read_timeout: Duration::from_millis(400),
        ..options()
    };
    let fetcher = Fetcher::new(Store::new(cache.path()), opts);
    let started = std::time::Instant::now();
    let got = fetcher
        .fetch(&request("hung", vec![server.url("/hung.tar.gz")], &body))
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "the stall must time out, not wait for the server"
    );
    assert_eq!(fs::read(&got.path).unwrap(), body);
    let ranges: Vec<Option<String>> = server
        .requests_for("/hung.tar.gz")
        .into_iter()
        .map(|l| l.range)
        .collect();
    assert_eq!(ranges, [None, Some("bytes=300000-".to_string())]);
}
