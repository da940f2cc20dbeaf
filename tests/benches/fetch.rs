//! Benchmark (not a test): `cargo bench -p hiperiso-tests --bench fetch`.
//!
//! 1. Fetching 8 files from a local HTTP server with `Fetcher::fetch_all`
//!    (parallel, hashing while streaming, atomic store inserts) against
//!    curl fetching them one after another (then `sha256sum`, since the
//!    fetcher verifies too). Once on raw loopback, once with the server
//!    capping each connection's bandwidth like a real mirror does.
//! 2. sha256 throughput of the fetcher's streaming loop against
//!    `sha256sum` on the same bytes.
//!
//! Prints medians of a few runs and the ratios.

use std::io::Write;
use std::process::Command;
use std::time::{Duration, Instant};

use hiperiso_build::sources::fetch::{FetchOptions, FetchRequest, Fetcher, Progress};
use hiperiso_build::sources::http::sha256_stream;
use hiperiso_build::sources::store::{Store, sha256_hex};
use hiperiso_tests::http::TestServer;

const FILES: usize = 8;
const FILE_SIZE: usize = 8 << 20;
const RUNS: usize = 3;

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn payload(len: usize, seed: u8) -> Vec<u8> {
    let mut state = 0x9e37_79b9_7f4a_7c15u64 ^ u64::from(seed);
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

fn fetcher_run(server: &TestServer, bodies: &[Vec<u8>]) -> Duration {
    let cache = tempfile::tempdir().unwrap();
    let fetcher = Fetcher::new(
        Store::new(cache.path()),
        FetchOptions {
            jobs: FILES,
            progress: Progress::Quiet,
            ..FetchOptions::default()
        },
    );
    let reqs: Vec<FetchRequest> = bodies
        .iter()
        .enumerate()
        .map(|(i, body)| FetchRequest {
            name: format!("f{i}"),
            urls: vec![server.url(&format!("/f{i}.bin"))],
            sha256: Some(sha256_hex(body)),
            size: Some(body.len() as u64),
        })
        .collect();
    let started = Instant::now();
    let fetched = fetcher.fetch_all(&reqs).expect("fetch_all");
    let elapsed = started.elapsed();
    assert_eq!(fetched.len(), FILES);
    elapsed
}

fn curl_run(server: &TestServer, verify: bool) -> Duration {
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    for i in 0..FILES {
        let out = dir.path().join(format!("f{i}.bin"));
        let status = Command::new("curl")
            .args(["-sSf", "-o"])
            .arg(&out)
            .arg(server.url(&format!("/f{i}.bin")))
            .status()
            .expect("run curl");
        assert!(status.success());
        if verify {
            let status = Command::new("sha256sum")
                .arg(&out)
                .stdout(std::process::Stdio::null())
                .status()
                .expect("sha256sum");
            assert!(status.success());
        }
    }
    started.elapsed()
}

fn fetch_scenario(label: &str, server: &TestServer, bodies: &[Vec<u8>]) {
    let ours = median((0..RUNS).map(|_| fetcher_run(server, bodies)).collect());
    let curl = median((0..RUNS).map(|_| curl_run(server, false)).collect());
    let curl_sha = median((0..RUNS).map(|_| curl_run(server, true)).collect());
    let total = (FILES * FILE_SIZE) as f64 / (1 << 20) as f64;
    println!(
        "{label}: {FILES} files x {} MiB, median of {RUNS}",
        FILE_SIZE >> 20
    );
    println!(
        "  hiperiso fetch_all (jobs={FILES}, verified): {:>7.3} s  {:>7.1} MiB/s",
        ours.as_secs_f64(),
        total / ours.as_secs_f64()
    );
    println!(
        "  curl one after another:               {:>7.3} s  {:>7.1} MiB/s",
        curl.as_secs_f64(),
        total / curl.as_secs_f64()
    );
    println!(
        "  curl one after another + sha256sum:   {:>7.3} s  {:>7.1} MiB/s",
        curl_sha.as_secs_f64(),
        total / curl_sha.as_secs_f64()
    );
    println!(
        "  ratio: hiperiso is {:.2}x the speed of sequential curl ({:.2}x of curl+sha256sum)",
        curl.as_secs_f64() / ours.as_secs_f64(),
        curl_sha.as_secs_f64() / ours.as_secs_f64()
    );
}

fn sha_scenario() {
    const SIZE: usize = 256 << 20;
    let data = payload(SIZE, 99);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("data.bin");
    std::fs::File::create(&file)
        .unwrap()
        .write_all(&data)
        .unwrap();
    let ours = median(
        (0..RUNS)
            .map(|_| {
                let started = Instant::now();
                let (hash, n) = sha256_stream(&data[..], std::io::sink()).unwrap();
                assert_eq!(n as usize, SIZE);
                std::hint::black_box(hash);
                started.elapsed()
            })
            .collect(),
    );
    let coreutils = median(
        (0..RUNS)
            .map(|_| {
                let started = Instant::now();
                let status = Command::new("sha256sum")
                    .arg(&file)
                    .stdout(std::process::Stdio::null())
                    .status()
                    .unwrap();
                assert!(status.success());
                started.elapsed()
            })
            .collect(),
    );
    let mib = (SIZE >> 20) as f64;
    println!(
        "sha256 while streaming, {} MiB, median of {RUNS}",
        SIZE >> 20
    );
    println!(
        "  hiperiso sha256_stream: {:>7.1} MiB/s",
        mib / ours.as_secs_f64()
    );
    println!(
        "  sha256sum (page cache): {:>7.1} MiB/s",
        mib / coreutils.as_secs_f64()
    );
    println!(
        "  ratio: {:.2}x",
        coreutils.as_secs_f64() / ours.as_secs_f64()
    );
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` asks for a list; nothing to run.
    }
    let server = TestServer::start();
    let bodies: Vec<Vec<u8>> = (0..FILES).map(|i| payload(FILE_SIZE, i as u8)).collect();
    for (i, body) in bodies.iter().enumerate() {
        server.serve(&format!("/f{i}.bin"), body.clone());
    }
    fetch_scenario("loopback, no bandwidth cap", &server, &bodies);
    server.throttle(16 << 20);
    fetch_scenario(
        "each connection capped at 16 MiB/s (like a busy mirror)",
        &server,
        &bodies,
    );
    server.throttle(0);
    sha_scenario();
}
