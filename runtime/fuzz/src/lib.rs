//! The fuzz targets' bodies ([`targets`]) and their input shapes.
//!
//! `fuzz_targets/*.rs` are one line each around [`targets`];
//! `tests/it/fuzz_smoke.rs` includes this file to run every target over
//! its seeds, its regression inputs and some mutations on stable Rust in
//! CI. Only the crates the workspace's tests already use are named here.
//!
//! Disk targets read a *sparse disk*: a few kilobytes of metadata spread
//! over megabytes of zeros, as real partition tables and file systems are.
//! The input is `u32 le: size in 512-byte sectors` followed by runs of
//! `u32 le: first sector, u16 le: sector count, the sectors' bytes` (the
//! last run may be cut short). `make-seeds` writes real images in this
//! form; the fuzzer mutates offsets and contents alike.

use std::io::{self, Read, Seek, SeekFrom};

pub const SECTOR: u64 = 512;
/// Disks larger than this (128 MiB) are clamped: reading zeros costs time.
const MAX_SECTORS: u64 = 1 << 18;

/// A disk of `size` bytes: the input's runs, zeros everywhere else.
pub struct SparseDisk {
    size: u64,
    /// (offset, bytes), sorted by offset, later runs win on overlap.
    runs: Vec<(u64, Vec<u8>)>,
    pos: u64,
}

impl SparseDisk {
    pub fn parse(data: &[u8]) -> Self {
        let word = |at: usize, n: usize| -> Option<u64> {
            let b = data.get(at..at + n)?;
            Some(b.iter().rev().fold(0u64, |acc, &x| acc << 8 | u64::from(x)))
        };
        let sectors = word(0, 4).unwrap_or(0).clamp(1, MAX_SECTORS);
        let size = sectors * SECTOR;
        let mut runs = Vec::new();
        let mut at = 4;
        while let (Some(first), Some(count)) = (word(at, 4), word(at + 4, 2)) {
            at += 6;
            let len = ((count * SECTOR) as usize).min(data.len() - at);
            let offset = first * SECTOR;
            if offset < size {
                let len = len.min((size - offset) as usize);
                runs.push((offset, data[at..at + len].to_vec()));
            }
            at += len;
        }
        Self { size, runs, pos: 0 }
    }

    pub fn size(&self) -> u64 {
        self.size
    }
}

impl Read for SparseDisk {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = (self.size.saturating_sub(self.pos)).min(buf.len() as u64) as usize;
        let buf = &mut buf[..n];
        buf.fill(0);
        let (start, end) = (self.pos, self.pos + n as u64);
        for (offset, bytes) in &self.runs {
            let run_end = offset + bytes.len() as u64;
            if run_end <= start || *offset >= end {
                continue;
            }
            let from = start.max(*offset);
            let to = end.min(run_end);
            buf[(from - start) as usize..(to - start) as usize]
                .copy_from_slice(&bytes[(from - offset) as usize..(to - offset) as usize]);
        }
        self.pos = end;
        Ok(n)
    }
}

impl Seek for SparseDisk {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let pos = match to {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => self.size.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos = pos.ok_or_else(|| io::Error::other("seek before the start"))?;
        Ok(self.pos)
    }
}

/// Lists a directory of the volume under test: its children as (name,
/// is a directory), None when it cannot be read.
pub type Lister<'a> = dyn FnMut(&str) -> Option<Vec<(String, bool)>> + 'a;

/// Walks a tree through `list` (children of a path: name, is_dir) and
/// calls `file` on each file; at most `budget` entries, so a looping
/// directory structure ends.
pub fn walk(list: &mut Lister<'_>, file: &mut dyn FnMut(&str), budget: usize) {
    let mut todo = vec![String::new()];
    let mut left = budget;
    while let Some(dir) = todo.pop() {
        let Some(entries) = list(if dir.is_empty() { "/" } else { &dir }) else {
            continue;
        };
        for (name, is_dir) in entries {
            if left == 0 {
                return;
            }
            left -= 1;
            let path = format!("{dir}/{name}");
            if is_dir {
                todo.push(path);
            } else {
                file(&path);
            }
        }
    }
}

/// One function per fuzz target: any input may be rejected with an error;
/// a panic, a hang or a huge allocation is a bug.
pub mod targets {
    use super::{SparseDisk, walk};
    use hiperiso_installer::exfat::ExfatReader;
    use hiperiso_installer::fat::FatReader;
    use hiperiso_installer::{device, table};
    use hiperiso_runtime::analyze::{build_report, write_report};
    use hiperiso_runtime::config::Config;
    use hiperiso_runtime::config_check;
    use hiperiso_runtime::eltorito::{read_catalog, read_iso};
    use hiperiso_runtime::patterns::Source;
    use hiperiso_runtime::serial::SerialScan;
    use hiperiso_runtime::trace_events::{EventCatalog, TraceEvent};
    use hiperiso_runtime::trace_summary::{TraceItem, TraceStream, summarize_stream};
    use hiperiso_stick::session::files;
    use std::cell::RefCell;
    use std::io::Cursor;
    use std::path::Path;
    use std::sync::LazyLock;

    /// A target: any bytes in, nothing out (a panic is the finding);
    /// named as `fuzz_targets/NAME.rs` and `seeds/NAME/`.
    pub type Target = fn(&[u8]);

    /// Every target by name.
    pub const ALL: [(&str, Target); 7] = [
        ("trace_decode", trace_decode),
        ("disk_table", disk_table),
        ("fat", fat),
        ("exfat", exfat),
        ("eltorito", eltorito),
        ("config", config),
        ("serial_report", serial_report),
    ];

    /// A stick from anywhere, as `install`, `install --update`, `inspect`
    /// and `hiperiso-log` meet it: the GPT or MBR table, the recogniser
    /// (the ESP's FAT, the data partition's exFAT) and the listing of the
    /// ISOs and sessions `install` names before refusing.
    pub fn disk_table(data: &[u8]) {
        let mut disk = SparseDisk::parse(data);
        let size = disk.size();
        let _ = table::read_table(&mut disk, size);
        if let Ok((_, data, _, _)) = device::recognise(&mut disk, size) {
            let _ = device::stick_contents(&mut disk, data);
        }
    }

    /// The ESP's FAT reader: open, usage, walk, read every file.
    pub fn fat(data: &[u8]) {
        let Ok(mut fat) = FatReader::open(SparseDisk::parse(data)) else {
            return;
        };
        let _ = fat.used_clusters();
        let fat = RefCell::new(fat);
        walk(
            &mut |dir| {
                let entries = fat.borrow_mut().read_dir(dir).ok()?;
                Some(entries.into_iter().map(|e| (e.name, e.is_dir)).collect())
            },
            &mut |file| {
                let _ = fat.borrow_mut().read_file(file);
            },
            256,
        );
    }

    /// The data partition's exFAT reader: open, usage, walk, read every file.
    pub fn exfat(data: &[u8]) {
        let Ok(mut exfat) = ExfatReader::open(SparseDisk::parse(data)) else {
            return;
        };
        let _ = exfat.usage();
        let exfat = RefCell::new(exfat);
        walk(
            &mut |dir| {
                let entries = exfat.borrow_mut().read_dir(dir).ok()?;
                Some(entries.into_iter().map(|e| (e.name, e.is_dir)).collect())
            },
            &mut |file| {
                let _ = exfat.borrow_mut().read_file(file, &mut std::io::sink());
            },
            256,
        );
    }

    /// hiperiso-init's ISO 9660 / El Torito reader on any image (a sparse
    /// disk), and the boot catalog parser on the input's first sectors.
    pub fn eltorito(data: &[u8]) {
        let mut iso = SparseDisk::parse(data);
        if let Ok(info) = read_iso(&mut iso) {
            let _ = (info.boots_bios(), info.boots_uefi());
        }
        let _ = read_catalog(&mut Cursor::new(data), 0);
    }

    /// `hiperiso.json` from any stick: loading never fails, settings come
    /// out of any overrides, and `config check` places every problem.
    pub fn config(data: &[u8]) {
        let text = String::from_utf8_lossy(data);
        let loaded = Config::load("hiperiso.json", &text);
        for iso in ["/ISOs/debian.iso", "/ISOs/sub/win11.iso", "/ISOs/[a].iso"] {
            let _ = loaded.config.settings_for(iso);
        }
        let _ = config_check::check("hiperiso.json", &text);
    }

    /// A session whose serial.log is any bytes, analyzed as `hiperiso-log
    /// analyze` does: the console scan, verdict, hints and report files.
    pub fn serial_report(data: &[u8]) {
        static DIR: LazyLock<tempfile::TempDir> =
            LazyLock::new(|| tempfile::tempdir().expect("a temporary directory"));
        let dir = DIR.path();
        std::fs::write(dir.join(files::SERIAL_LOG), data).expect("write serial.log");
        if let Ok(report) = build_report(dir) {
            write_report(dir, &report).expect("write the report");
        }
    }

    /// Any bytes through both trace decoders, the summary and the serial
    /// scanner.
    pub fn trace_decode(data: &[u8]) {
        let path = Path::new("fuzz");
        // simpletrace, forced (the fuzzer rarely guesses the 24-byte header, so
        // also try the input behind a valid header).
        let mut with_header = Vec::with_capacity(data.len() + 24);
        with_header.extend_from_slice(&u64::MAX.to_le_bytes());
        with_header.extend_from_slice(&0xf2b1_77cb_0aa4_29b4u64.to_le_bytes());
        with_header.extend_from_slice(&4u64.to_le_bytes());
        with_header.extend_from_slice(data);
        for bytes in [data, &with_header[..]] {
            if let Ok(mut stream) = TraceStream::from_reader(bytes, true, EventCatalog::builtin()) {
                let mut event = TraceEvent::default();
                while let Ok(Some(TraceItem::Event)) = stream.next_item(&mut event, path) {}
            }
            if let Ok(stream) = TraceStream::from_reader(bytes, true, EventCatalog::builtin()) {
                summarize_stream(stream, path);
            }
        }
        // Log backend text.
        let stream = TraceStream::from_reader(data, false, EventCatalog::builtin()).unwrap();
        summarize_stream(stream, path);
        // Serial scanning.
        let mut scan = SerialScan::default();
        let _ = scan.scan(data, Source::Serial, "fuzz");
    }
}
