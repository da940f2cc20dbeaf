//! Packing an initramfs tree: hiperiso's packer (deterministic newc cpio,
//! zstd -9 with two workers / gzip -9) against the shell pipeline
//! `find | sort | cpio -o -H newc | zstd -9 -T2` (and `gzip -9`), on the same
//! files, measured in the same run. Prints time and size side by side.
//!
//!   cargo bench -p hiperiso-build --bench initramfs
//!   HIPERISO_BENCH_TREE=/path/to/unpacked/initramfs cargo bench -p hiperiso-build --bench initramfs
//!
//! Without HIPERISO_BENCH_TREE the tree is a few host directories
//! (/usr/bin, /usr/share/qemu, /usr/share/seabios) taken as-is.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hiperiso_build::payload::initramfs::{Compression, Initramfs};

fn pack_ours(base: &Path, dirs: &[String], compression: Compression) -> (Duration, usize) {
    let start = Instant::now();
    let mut initramfs = Initramfs::new(base).unwrap();
    for dir in dirs {
        initramfs
            .add_directory(&base.join(dir), dir.trim_start_matches('.'))
            .unwrap();
    }
    let mut out = Vec::new();
    initramfs.write(0, compression, &mut out).unwrap();
    (start.elapsed(), out.len())
}

fn pack_shell(base: &Path, dirs: &[String], compressor: &str) -> (Duration, usize) {
    // Same names as ours: relative, no "./" prefix.
    let script = format!(
        "{} | LC_ALL=C sort | cpio -o -H newc --quiet | {compressor}",
        if dirs == ["."] {
            "find . -mindepth 1 -printf '%P\\n'".to_string()
        } else {
            format!("find {}", dirs.join(" "))
        }
    );
    let start = Instant::now();
    let output = Command::new("sh")
        .arg("-c")
        .arg(&script)
        .current_dir(base)
        .stderr(Stdio::inherit())
        .output()
        .expect("sh");
    assert!(output.status.success(), "{script} failed");
    (start.elapsed(), output.stdout.len())
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` probes with --list
    }
    let (base, dirs): (PathBuf, Vec<String>) = match std::env::var("HIPERISO_BENCH_TREE") {
        Ok(tree) => (PathBuf::from(tree), vec![".".to_string()]),
        Err(_) => (
            PathBuf::from("/"),
            ["usr/bin", "usr/share/qemu", "usr/share/seabios"]
                .iter()
                .filter(|d| Path::new("/").join(d).exists())
                .map(|d| d.to_string())
                .collect(),
        ),
    };
    println!("tree: {} {:?}", base.display(), dirs);
    println!(
        "{:<28} {:>10} {:>14}   {:>10} {:>14}   {:>7} {:>7}",
        "", "ours s", "ours bytes", "shell s", "shell bytes", "time x", "size x"
    );
    for (label, compression, compressor) in [
        ("zstd -9 -T2", Compression::Zstd, "zstd -9 -T2 -q -c"),
        ("gzip -9", Compression::Gzip, "gzip -9 -n -c"),
    ] {
        let (our_time, our_size) = pack_ours(&base, &dirs, compression);
        let (shell_time, shell_size) = pack_shell(&base, &dirs, compressor);
        println!(
            "{:<28} {:>10.2} {:>14}   {:>10.2} {:>14}   {:>7.2} {:>7.3}",
            format!("cpio newc + {label}"),
            our_time.as_secs_f64(),
            our_size,
            shell_time.as_secs_f64(),
            shell_size,
            our_time.as_secs_f64() / shell_time.as_secs_f64(),
            our_size as f64 / shell_size as f64,
        );
    }
}
