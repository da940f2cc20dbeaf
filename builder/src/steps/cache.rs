//! The step cache's directories: records, output trees, logs, locks,
//! work and verify directories (layout in `steps/mod.rs`).

use std::fs::{self, File};
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use hiperiso_stick::io::io_err;

use crate::steps::tree::{Tree, write_atomic};
use crate::steps::{StepError, StepRecord};

/// The step cache's directories.
#[derive(Debug, Clone)]
pub struct Cache {
    pub(crate) root: PathBuf,
}

impl Cache {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }
    pub fn record_path(&self, key: &str) -> PathBuf {
        self.root.join("steps").join(format!("{key}.json"))
    }
    pub fn tree_path(&self, tree: &str) -> PathBuf {
        self.root.join("trees").join(tree)
    }
    pub fn log_path(&self, step: &str, key: &str) -> PathBuf {
        self.root.join("logs").join(step).join(format!("{key}.log"))
    }
    pub(crate) fn dir(&self, name: &str) -> Result<PathBuf, StepError> {
        let dir = self.root.join(name);
        fs::create_dir_all(&dir).map_err(io_err("create", &dir))?;
        Ok(dir)
    }

    /// The record of `key` if its tree is present.
    pub fn record(&self, key: &str) -> Option<StepRecord> {
        let text = fs::read(self.record_path(key)).ok()?;
        let record: StepRecord = serde_json::from_slice(&text).ok()?;
        self.tree_path(&record.tree).is_dir().then_some(record)
    }

    /// Every record, sorted by key.
    pub fn records(&self) -> Vec<StepRecord> {
        let mut out: Vec<StepRecord> = fs::read_dir(self.root.join("steps"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| serde_json::from_slice(&fs::read(e.path()).ok()?).ok())
            .collect();
        out.sort_by(|a, b| a.key.cmp(&b.key));
        out
    }

    /// Takes the step's lock, waiting for another run that holds it.
    pub(crate) fn lock(&self, key: &str) -> Result<File, StepError> {
        let path = self.dir("locks")?.join(format!("{key}.lock"));
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_err("open", &path))?;
        // SAFETY: the descriptor is valid for the call; flock has no other
        // preconditions. The lock is released when `file` is dropped.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(io_err("lock", &path)(io::Error::last_os_error()).into());
        }
        Ok(file)
    }

    /// True when another process holds `path`'s lock.
    pub(crate) fn is_locked(path: &Path) -> bool {
        let Ok(file) = File::open(path) else {
            return false;
        };
        // SAFETY: as in `lock`; a non-blocking attempt.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        rc != 0
    }

    /// Moves a normalized output directory into `trees/` and writes the
    /// record last. Returns the tree's path.
    pub(crate) fn commit(
        &self,
        out: &Path,
        tree: &Tree,
        record: &StepRecord,
    ) -> Result<PathBuf, StepError> {
        let trees = self.dir("trees")?;
        let dest = trees.join(&record.tree);
        write_atomic(
            &trees.join(format!("{}.manifest", record.tree)),
            tree.manifest().as_bytes(),
        )?;
        if dest.is_dir() {
            remove_tree(out)?;
        } else {
            fs::rename(out, &dest).map_err(io_err("move into the cache", out))?;
        }
        File::open(&trees)
            .and_then(|d| d.sync_all())
            .map_err(io_err("sync", &trees))?;
        let json = serde_json::to_string_pretty(record).expect("records serialize") + "\n";
        write_atomic(&self.record_path(&record.key), json.as_bytes())?;
        Ok(dest)
    }

    /// After a verify build of `step` differed: keeps a copy of the cached
    /// tree and the rebuilt `out` (moved) under `verify/<step>`, runs
    /// diffoscope when it is installed, and returns the error to report.
    pub(crate) fn keep_for_diff(
        &self,
        step: &str,
        cached: &Path,
        out: &Path,
        rebuilt_tree: &Tree,
    ) -> Result<StepError, StepError> {
        let dir = self.dir("verify")?.join(step);
        remove_tree(&dir)?;
        fs::create_dir_all(&dir).map_err(io_err("create", &dir))?;
        let cached_copy = dir.join("cached");
        let status = std::process::Command::new("cp")
            .arg("-a")
            .arg(cached)
            .arg(&cached_copy)
            .status()
            .map_err(io_err("run cp for", &cached_copy))?;
        if !status.success() {
            return Err(io_err("copy", &cached_copy)(io::Error::other(status.to_string())).into());
        }
        let rebuilt = dir.join("rebuilt");
        fs::rename(out, &rebuilt).map_err(io_err("move", out))?;
        let differing = Tree::scan(&cached_copy)?.differences(rebuilt_tree);
        let diffoscope = run_diffoscope(&cached_copy, &rebuilt, &dir.join("diffoscope.txt"));
        Ok(StepError::NotReproducible {
            step: step.to_string(),
            differing,
            dir,
            diffoscope,
        })
    }
}

pub(crate) fn remove_tree(path: &Path) -> Result<(), StepError> {
    match fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err("remove", path)(e).into()),
    }
}

/// Runs diffoscope when it is installed; returns its report's path.
fn run_diffoscope(a: &Path, b: &Path, report: &Path) -> Option<PathBuf> {
    let status = std::process::Command::new("diffoscope")
        .arg("--text")
        .arg(report)
        .arg(a)
        .arg(b)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .ok()?;
    // diffoscope exits 1 when it found differences.
    (status.code().is_some_and(|c| c <= 1) && report.is_file()).then(|| report.to_path_buf())
}
