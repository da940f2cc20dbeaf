//! The `runtime` step: `hiperiso-init` and `hiperiso-log`, built statically
//! by the host's cargo (not in the sandbox: the tools tree has no Rust),
//! pinned to the toolchain recorded in hiperiso.lock's `[toolchain]`, and
//! cached in the step cache like a recipe's output.
//!
//! Its key hashes `rustc -vV`, the workspace's Cargo.toml and Cargo.lock,
//! every file under `runtime/` and the crates it uses (`stick/`,
//! `installer/`), the flags and SOURCE_DATE_EPOCH. Paths are
//! remapped (`--remap-path-prefix`), so the checkout's, cargo's and the
//! target directory's locations stay out of the binaries; `verify runtime`
//! rebuilds in a fresh target directory and compares.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use hiperiso_stick::io::{IoError, io_err};

use crate::model::lock::Lock;
use crate::project::Project;
use crate::sources::progress::{Activity, log_tail};
use crate::sources::store::{StoreError, sha256_hex};
use crate::steps::cache::Cache;
use crate::steps::remote::{Remote, RemoteError};
use crate::steps::tree::{self, Tree};
use crate::steps::{Outcome, StepError, StepRecord, StepResult};

/// The step's name in profiles, `build`, `verify` and build.json.
pub const NAME: &str = "runtime";
/// The binaries it outputs.
pub const BINARIES: &[&str] = &["hiperiso-init", "hiperiso-log"];
const TARGET: &str = "x86_64-unknown-linux-gnu";

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(
        "the host's Rust toolchain is `{host}` but {lock}'s [toolchain] rustc pins `{pinned}`: \
         install that toolchain (e.g. `rustup default {version}`), or re-pin with \
         `hiperiso-build lock --update rustc`"
    )]
    Toolchain {
        host: String,
        pinned: String,
        version: String,
        lock: PathBuf,
    },
    #[error("cannot run `{program}` (is Rust installed?)")]
    Rustc {
        program: String,
        #[source]
        source: io::Error,
    },
    #[error(
        "building the static runtime failed ({status}): `{command}`; \
         last lines of its log:\n{tail}\nfull log: {log}"
    )]
    Cargo {
        status: String,
        /// The command, with the directory it ran in.
        command: String,
        tail: String,
        log: PathBuf,
    },
    #[error(transparent)]
    Step(#[from] StepError),
    #[error(transparent)]
    Io(#[from] IoError),
    #[error("opening the step cache")]
    Store(#[source] StoreError),
    #[error("shared step cache")]
    Remote(#[source] Box<RemoteError>),
    #[error(
        "{} has no [toolchain] (the Rust toolchain the runtime step is pinned to): \
         run `hiperiso-build lock`",
        lock.display()
    )]
    NoToolchain { lock: PathBuf },
}

/// The runtime step for `lock` (its `[toolchain]` pin checked first), in
/// the context's step cache.
pub fn build_pinned(project: &Project, lock: &Lock) -> Result<StepResult, RuntimeError> {
    let step = RuntimeStep::new(project)?;
    step.check_toolchain(lock)?;
    step.build()
}

/// `rustc -V` (or `-vV`) of the host toolchain cargo will use.
pub fn host_rustc(verbose: bool) -> Result<String, RuntimeError> {
    let program = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let output = Command::new(&program)
        .arg(if verbose { "-vV" } else { "-V" })
        .output()
        .map_err(|source| RuntimeError::Rustc {
            program: program.clone(),
            source,
        })?;
    if !output.status.success() {
        return Err(RuntimeError::Rustc {
            program,
            source: io::Error::other(String::from_utf8_lossy(&output.stderr).trim().to_string()),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
}

/// The flags for static binaries with the three local paths remapped.
fn remapped_flags(target_dir: &Path, workspace: &Path, cargo_home: &Path) -> Vec<String> {
    let remap = |from: &Path, to: &str| format!("--remap-path-prefix={}={to}", from.display());
    vec![
        "-C".into(),
        "target-feature=+crt-static".into(),
        remap(target_dir, "/target"),
        remap(workspace, "/hiperiso"),
        remap(cargo_home, "/cargo"),
    ]
}

/// The runtime step of the workspace at `workspace`.
pub struct RuntimeStep<'a> {
    project: &'a Project,
    workspace: PathBuf,
    cache: Cache,
    epoch: u64,
}

impl<'a> RuntimeStep<'a> {
    pub fn new(project: &'a Project) -> Result<Self, RuntimeError> {
        let store = project.store().map_err(RuntimeError::Store)?;
        Ok(Self {
            project,
            workspace: project.manifest_dir().to_path_buf(),
            cache: Cache::new(store.root()),
            epoch: project.manifest.image.source_date_epoch,
        })
    }

    /// Checks the host toolchain against `lock`'s `[toolchain] rustc`.
    pub fn check_toolchain(&self, lock: &Lock) -> Result<(), RuntimeError> {
        let path = self.project.lock_path();
        let Some(pinned) = lock.toolchain.as_ref().map(|t| t.rustc.as_str()) else {
            return Err(RuntimeError::NoToolchain { lock: path });
        };
        let host = host_rustc(false)?;
        if host == pinned {
            return Ok(());
        }
        Err(RuntimeError::Toolchain {
            version: pinned.split_whitespace().nth(1).unwrap_or("?").to_string(),
            host,
            pinned: pinned.to_string(),
            lock: path,
        })
    }

    /// The cache key: the toolchain, flags and every input file. The flags
    /// are hashed with their remapped paths in place of the local ones
    /// (which never reach the binaries), so every checkout of the same
    /// sources, and every profile, shares one runtime.
    pub fn key(&self) -> Result<String, RuntimeError> {
        let flags = remapped_flags(
            Path::new("/target"),
            Path::new("/hiperiso"),
            Path::new("/cargo"),
        );
        let mut text = format!(
            "hiperiso runtime step v2\n{}\ntarget {TARGET}\nflags {flags:?}\nepoch {}\n",
            host_rustc(true)?,
            self.epoch
        );
        for file in ["Cargo.toml", "Cargo.lock"] {
            let path = self.workspace.join(file);
            let bytes = fs::read(&path).map_err(io_err("read", &path))?;
            text.push_str(&format!("{file} {}\n", sha256_hex(&bytes)));
        }
        // The runtime crate and the workspace crates it depends on.
        for krate in ["runtime", "stick", "installer"] {
            let dir = self.workspace.join(krate);
            text.push_str(&format!("--- {krate}\n"));
            text.push_str(&Tree::scan(&dir).map_err(StepError::from)?.manifest());
        }
        Ok(sha256_hex(text.as_bytes()))
    }

    /// Static glibc binaries, with every local path remapped; the target
    /// directory's own is passed in so a verify build can differ only there.
    fn rustflags(&self, target_dir: &Path) -> Vec<String> {
        let cargo_home = std::env::var_os("CARGO_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
            .unwrap_or_default();
        remapped_flags(target_dir, &self.workspace, &cargo_home)
    }

    /// Builds into `target_dir` and copies the binaries into `out`. Cargo's
    /// output goes to `log`; its last line is the progress shown.
    fn compile(&self, target_dir: &Path, out: &Path, log: &Path) -> Result<(), RuntimeError> {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let args = [
            "build",
            "--release",
            "--locked",
            "-p",
            "hiperiso-runtime",
            "--bins",
            "--target",
            TARGET,
        ];
        if let Some(dir) = log.parent() {
            fs::create_dir_all(dir).map_err(io_err("create", dir))?;
        }
        let output = File::create(log).map_err(io_err("create", log))?;
        let errors = output.try_clone().map_err(io_err("open", log))?;
        let settings = &self.project.settings;
        if settings.verbosity > 0 {
            eprintln!("cargo's log: {}", log.display());
        }
        let activity = Activity::with_log(settings.progress(), format!("building {NAME}"), log);
        let status = Command::new(&cargo)
            .current_dir(&self.workspace)
            .args(args)
            .arg("--target-dir")
            .arg(target_dir)
            .env(
                "CARGO_ENCODED_RUSTFLAGS",
                self.rustflags(target_dir).join("\x1f"),
            )
            .env_remove("RUSTFLAGS")
            .env("SOURCE_DATE_EPOCH", self.epoch.to_string())
            .stdout(output)
            .stderr(errors)
            .status()
            .map_err(|source| RuntimeError::Rustc {
                program: cargo.to_string_lossy().into_owned(),
                source,
            })?;
        drop(activity);
        if !status.success() {
            return Err(RuntimeError::Cargo {
                status: status.to_string(),
                command: format!(
                    "cd {} && cargo {}",
                    self.workspace.display(),
                    args.join(" ")
                ),
                tail: log_tail(log, 20),
                log: log.to_path_buf(),
            });
        }
        fs::create_dir_all(out).map_err(io_err("create", out))?;
        let built = target_dir.join(TARGET).join("release");
        for binary in BINARIES {
            let from = built.join(binary);
            fs::copy(&from, out.join(binary)).map_err(io_err("copy", &from))?;
        }
        Ok(())
    }

    /// A fresh work directory under the cache.
    fn work_dir(&self, what: &str) -> Result<PathBuf, StepError> {
        let work = self
            .cache
            .dir("work")?
            .join(format!("{NAME}-{what}.{}", std::process::id()));
        let _ = fs::remove_dir_all(&work);
        fs::create_dir_all(&work).map_err(io_err("create", &work))?;
        Ok(work)
    }

    /// The cached output, or a build (in the cache's `cargo/` target
    /// directory, which cargo's own cache keeps quick for small changes).
    pub fn build(&self) -> Result<StepResult, RuntimeError> {
        let key = self.key()?;
        let remote =
            Remote::from_project(self.project).map_err(|e| RuntimeError::Remote(Box::new(e)))?;
        let share = |record: &StepRecord| match &remote {
            Some(remote) => remote
                .push(record, &self.cache.tree_path(&record.tree))
                .map_err(|e| RuntimeError::Remote(Box::new(e))),
            None => Ok(()),
        };
        let cached = |record: StepRecord| -> Result<StepResult, RuntimeError> {
            share(&record)?;
            Ok(StepResult {
                path: self.cache.tree_path(&record.tree),
                record,
                outcome: Outcome::Cached,
            })
        };
        if let Some(record) = self.cache.record(&key) {
            return cached(record);
        }
        // One build per key at a time, across threads and processes: the
        // work directory is per process, and a second build would remove
        // it under the first. The one that waited finds the record.
        let _lock = self.cache.lock(&key)?;
        if let Some(record) = self.cache.record(&key) {
            return cached(record);
        }
        if let Some(remote) = &remote
            && let Some(record) = remote
                .pull(&self.cache, NAME, &key)
                .map_err(|e| RuntimeError::Remote(Box::new(e)))?
        {
            return Ok(StepResult {
                path: self.cache.tree_path(&record.tree),
                record,
                outcome: Outcome::Pulled,
            });
        }
        let started = Instant::now();
        let work = self.work_dir(&key)?;
        let out = work.join("out");
        let log = self.cache.log_path(NAME, &key);
        self.compile(&self.cache.dir("cargo")?, &out, &log)?;
        let tree = tree::normalize(&out, self.epoch as i64).map_err(StepError::from)?;
        let record = StepRecord {
            step: NAME.to_string(),
            key: key.clone(),
            tree: tree.hash(),
            inputs: key,
            upstream: BTreeMap::new(),
            seconds: started.elapsed().as_secs_f64(),
        };
        let path = self.cache.commit(&out, &tree, &record)?;
        let _ = fs::remove_dir_all(&work);
        if self.project.settings.verbosity >= 0 {
            eprintln!("built {NAME} in {:.1}s", record.seconds);
        }
        share(&record)?;
        Ok(StepResult {
            record,
            outcome: Outcome::Built,
            path,
        })
    }

    /// Rebuilds from nothing in another target directory and compares.
    pub fn verify(&self) -> Result<String, RuntimeError> {
        let expected = self.build()?;
        let work = self.work_dir("verify")?;
        let out = work.join("out");
        let log = self
            .cache
            .log_path(NAME, &format!("verify-{}", expected.record.key));
        self.compile(&work.join("target"), &out, &log)?;
        let tree = tree::normalize(&out, self.epoch as i64).map_err(StepError::from)?;
        if tree.hash() == expected.record.tree {
            let _ = fs::remove_dir_all(&work);
            return Ok(tree.hash());
        }
        Err(self
            .cache
            .keep_for_diff(NAME, &expected.path, &out, &tree)?
            .into())
    }
}
