//! Formatting an 8 GiB sparse exFAT volume: our `exfat::format` against
//! `truncate` + `mkfs.exfat`, measured side by side in one run.
//! Run with `cargo bench -p hiperiso-installer --bench exfat_format`.

use std::fs::{File, OpenOptions};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use hiperiso_installer::exfat::{ExfatOptions, format};

const SIZE: u64 = 8 << 30;
const ROUNDS: usize = 7;

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn ours(path: &Path) -> Duration {
    let started = Instant::now();
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .expect("create image");
    file.set_len(SIZE).expect("size image");
    let opts = ExfatOptions {
        label: "HIPERISO".into(),
        volume_serial: 0x1234_5678,
        timestamp: 1_700_000_000,
    };
    format(&mut file, SIZE, None, &opts).expect("format");
    file.sync_all().expect("sync");
    started.elapsed()
}

fn mkfs(path: &Path) -> Duration {
    let started = Instant::now();
    let status = Command::new("truncate")
        .args(["-s", &SIZE.to_string()])
        .arg(path)
        .status()
        .expect("truncate");
    assert!(status.success());
    let output = Command::new("mkfs.exfat")
        .args(["-L", "HIPERISO"])
        .arg(path)
        .output()
        .expect("mkfs.exfat (exfatprogs) is needed");
    assert!(output.status.success(), "{output:?}");
    File::open(path).and_then(|f| f.sync_all()).expect("sync");
    started.elapsed()
}

fn main() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let (mut our_times, mut mkfs_times) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let ours_path = dir.path().join(format!("ours-{round}.img"));
        let mkfs_path = dir.path().join(format!("mkfs-{round}.img"));
        our_times.push(ours(&ours_path));
        mkfs_times.push(mkfs(&mkfs_path));
        std::fs::remove_file(ours_path).ok();
        std::fs::remove_file(mkfs_path).ok();
    }
    let (ours, mkfs) = (median(our_times), median(mkfs_times));
    println!("exfat format, 8 GiB sparse volume, median of {ROUNDS} rounds:");
    println!("  hiperiso exfat::format      {ours:>12.3?}");
    println!("  truncate + mkfs.exfat       {mkfs:>12.3?}");
    println!(
        "  ratio mkfs.exfat / ours     {:>12.2}x",
        mkfs.as_secs_f64() / ours.as_secs_f64()
    );
}
