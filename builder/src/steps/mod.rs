//! The step cache, the step runner and the scheduler (DESIGN.md §3).
//!
//! Layout under the cache root, next to the store's `blobs/`:
//!
//! ```text
//! steps/<key>.json          a finished step: its name, key and output tree hash
//! trees/<tree>/             an output tree, named by its content hash
//! trees/<tree>.manifest     the tree's manifest (see tree.rs)
//! logs/<step>/<key>.log     every run's log, kept
//! locks/<key>.lock          flock(2) held while a step runs
//! work/<step>-<key>.<pid>/  a running step's build/, out/ and tmp/
//! verify/<step>/            both trees of a step that did not reproduce
//! ```
//!
//! A step's key is the sha256 of its recipe text, the content hashes of its
//! files, sources and upstream output trees, the tools tree's hash, the
//! environment and hiperiso's version. An output enters the cache by
//! rename, and the record is written last, so a killed build leaves at most
//! a stale work directory, which the next run of that step removes.

pub mod runtime;
pub mod sandbox;
pub mod tools;
pub mod tree;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::{self, IsTerminal, Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock, mpsc};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::model::manifest::Manifest;
use crate::model::recipe::{Recipe, RecipeError, Recipes};
use crate::settings::Context;
use crate::sources::store::{Store, sha256_hex};
use crate::steps::sandbox::{SandboxError, Spec};
use crate::steps::tree::{Tree, TreeError, write_atomic};

/// hiperiso's own version: part of every key.
pub const HIPERISO_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Where the build directory is inside the sandbox.
pub const BUILD_PATH: &str = "/build";
/// `verify` builds at a path of another length...
pub const VERIFY_BUILD_PATH: &str = "/build/hiperiso-verify/a-longer-build-path";
/// ...with another umask...
pub const VERIFY_UMASK: u32 = 0o027;
/// ...and another locale.
pub const VERIFY_LOCALE: &str = "C";

#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error(transparent)]
    Recipe(#[from] RecipeError),
    #[error(transparent)]
    Tree(#[from] TreeError),
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    #[error("cannot fetch source `{source_name}` for step `{step}`")]
    Fetch {
        step: String,
        source_name: String,
        #[source]
        source: Box<crate::commands::Error>,
    },
    #[error("cannot {action} {path}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "step `{step}` failed ({status}); last lines of its log:\n{tail}\nfull log: {log}\n\
         (steps run without network; only the build directory, $out and /tmp are writable)"
    )]
    Failed {
        step: String,
        status: String,
        tail: String,
        log: PathBuf,
    },
    #[error("{recipe}: outputs: step `{step}` did not produce {missing} in $out (full log: {log})")]
    MissingOutput {
        step: String,
        recipe: PathBuf,
        missing: String,
        log: PathBuf,
    },
    #[error(
        "step `{step}` is not reproducible: {} file(s) differ: {}\n  both trees are kept in {dir}{}",
        differing.len(),
        differing.join(", "),
        diffoscope.as_ref().map(|p| format!("\n  diffoscope's report: {}", p.display())).unwrap_or_default()
    )]
    NotReproducible {
        step: String,
        differing: Vec<String>,
        dir: PathBuf,
        diffoscope: Option<PathBuf>,
    },
    #[error("a previous step failed")]
    Skipped,
}

pub(crate) fn io_err<'p>(
    action: &'static str,
    path: &'p Path,
) -> impl FnOnce(io::Error) -> StepError + 'p {
    move |source| StepError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// The root that steps see as `/`, and its content hash.
#[derive(Debug, Clone)]
pub struct ToolsTree {
    pub root: PathBuf,
    pub hash: String,
}

impl ToolsTree {
    /// A prepared directory, hashed in full.
    pub fn from_dir(root: &Path) -> Result<Self, StepError> {
        let hash = Tree::scan(root)?.hash();
        Ok(Self {
            root: root.to_path_buf(),
            hash,
        })
    }
}

/// What the cache remembers about a finished step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    pub step: String,
    pub key: String,
    /// Content hash of the output tree.
    pub tree: String,
    /// Hash of the recipe text, its files and sources (for `gc`).
    pub inputs: String,
    /// The upstream steps' output trees it was built from.
    #[serde(default)]
    pub upstream: BTreeMap<String, String>,
    pub seconds: f64,
}

/// How a step came to have its output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Cached,
    Built,
}

#[derive(Debug, Clone)]
pub struct StepResult {
    pub record: StepRecord,
    pub outcome: Outcome,
    /// The output tree in the cache.
    pub path: PathBuf,
}

/// The step cache's directories.
#[derive(Debug, Clone)]
pub struct Cache {
    root: PathBuf,
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
    fn lock(&self, key: &str) -> Result<File, StepError> {
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
            return Err(io_err("lock", &path)(io::Error::last_os_error()));
        }
        Ok(file)
    }

    /// True when another process holds `path`'s lock.
    fn is_locked(path: &Path) -> bool {
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
            return Err(io_err("copy", &cached_copy)(io::Error::other(
                status.to_string(),
            )));
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

fn remove_tree(path: &Path) -> Result<(), StepError> {
    match fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err("remove", path)(e)),
    }
}

/// `YYYY-MM-DD HH:MM:SS UTC` for a Unix time (for KBUILD_BUILD_TIMESTAMP).
pub fn utc_timestamp(epoch: u64) -> String {
    let days = (epoch / 86_400) as i64;
    let secs = epoch % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        secs / 3_600,
        secs % 3_600 / 60,
        secs % 60
    )
}

/// The fixed environment of every step (part of the key).
pub fn step_env(step: &str, epoch: u64) -> Vec<(String, String)> {
    [
        (
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        ),
        ("HOME", "/tmp"),
        ("TMPDIR", "/tmp"),
        ("TZ", "UTC"),
        ("LANG", "C.UTF-8"),
        ("LC_ALL", "C.UTF-8"),
        ("SOURCE_DATE_EPOCH", &epoch.to_string()),
        ("KBUILD_BUILD_USER", "hiperiso"),
        ("KBUILD_BUILD_HOST", "hiperiso"),
        ("KBUILD_BUILD_TIMESTAMP", &utc_timestamp(epoch)),
        ("HIPERISO_STEP", step),
        ("out", "/out"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// How a run differs from a normal build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variant {
    Normal,
    Verify,
}

/// Runs recipes' steps against one manifest, tools tree and cache.
pub struct Builder<'a> {
    pub ctx: &'a Context,
    pub manifest: &'a Manifest,
    pub recipes: &'a Recipes,
    pub tools: ToolsTree,
    pub cache: Cache,
    store: Store,
    probed: OnceLock<Result<(), String>>,
    progress: Mutex<BTreeMap<String, Instant>>,
}

impl<'a> Builder<'a> {
    pub fn new(
        ctx: &'a Context,
        manifest: &'a Manifest,
        recipes: &'a Recipes,
        tools: ToolsTree,
        store: Store,
    ) -> Self {
        Self {
            ctx,
            manifest,
            recipes,
            tools,
            cache: Cache::new(store.root()),
            store,
            probed: OnceLock::new(),
            progress: Mutex::new(BTreeMap::new()),
        }
    }

    fn epoch(&self) -> u64 {
        self.manifest.image.source_date_epoch
    }

    /// Hash of the recipe text, its files and its sources' pins (what
    /// `gc` compares).
    pub fn inputs_hash(&self, recipe: &Recipe) -> Result<String, StepError> {
        Ok(self.inputs(recipe)?.0)
    }

    fn inputs(&self, recipe: &Recipe) -> Result<(String, serde_json::Value), StepError> {
        let mut files = Vec::new();
        for file in &recipe.files {
            let path = self.recipes.dir.join(file);
            let bytes = fs::read(&path).map_err(io_err("read", &path))?;
            files.push((file.clone(), sha256_hex(&bytes)));
        }
        let mut sources = Vec::new();
        for name in &recipe.sources {
            let source = self.manifest.source(name).map_err(|e| StepError::Fetch {
                step: recipe.name.clone(),
                source_name: name.clone(),
                source: Box::new(e.into()),
            })?;
            let file = source.file_name(name, &source.version);
            sources.push((
                name.clone(),
                file,
                source.sha256.clone().unwrap_or_default(),
            ));
        }
        let value = serde_json::json!({
            "recipe": recipe.text,
            "files": files,
            "sources": sources,
        });
        Ok((sha256_hex(value.to_string().as_bytes()), value))
    }

    /// The step's cache key, given its upstream steps' output trees.
    pub fn key(
        &self,
        recipe: &Recipe,
        upstream: &BTreeMap<String, String>,
    ) -> Result<(String, String), StepError> {
        let (inputs, value) = self.inputs(recipe)?;
        let steps: Vec<(&String, &String)> = recipe
            .steps
            .iter()
            .filter_map(|s| upstream.get_key_value(s))
            .collect();
        let key = serde_json::json!({
            "hiperiso": HIPERISO_VERSION,
            "step": recipe.name,
            "inputs": value,
            "steps": steps,
            "tools": self.tools.hash,
            "env": step_env(&recipe.name, self.epoch()),
            "build-path": BUILD_PATH,
        });
        Ok((sha256_hex(key.to_string().as_bytes()), inputs))
    }

    fn source_path(&self, recipe: &Recipe, name: &str) -> Result<(PathBuf, String), StepError> {
        let fetch_err = |e: crate::commands::Error| StepError::Fetch {
            step: recipe.name.clone(),
            source_name: name.to_string(),
            source: Box::new(e),
        };
        let source = self
            .manifest
            .source(name)
            .map_err(|e| fetch_err(e.into()))?;
        let file = source.file_name(name, &source.version);
        if let Some(path) = source.sha256.as_deref().and_then(|sha| self.store.get(sha)) {
            return Ok((path, file));
        }
        let mirrors = self.ctx.debian_mirrors(self.manifest);
        let request =
            crate::commands::fetch::source_request(name, source, &source.version, &mirrors.urls)
                .map_err(fetch_err)?;
        let fetched = self
            .ctx
            .fetcher()
            .map_err(|e| fetch_err(e.into()))?
            .fetch(&request)
            .map_err(|e| fetch_err(e.into()))?;
        Ok((fetched.path, file))
    }

    fn probe(&self) -> Result<(), StepError> {
        let result = self.probed.get_or_init(|| {
            let scratch = self
                .cache
                .root
                .join("work")
                .join(format!("probe.{}", std::process::id()));
            let result = sandbox::probe(&self.tools.root, &scratch).map_err(|e| e.to_string());
            let _ = fs::remove_dir_all(&scratch);
            result
        });
        result.clone().map_err(|message| {
            StepError::Sandbox(SandboxError::Unavailable {
                message,
                hint: None,
            })
        })
    }

    /// Runs the recipe in a fresh work directory; returns the normalized
    /// output directory, its tree and the log path.
    fn run(
        &self,
        recipe: &Recipe,
        key: &str,
        upstream: &BTreeMap<String, String>,
        variant: Variant,
    ) -> Result<(PathBuf, Tree, PathBuf, f64), StepError> {
        self.probe()?;
        let work_root = self.cache.dir("work")?;
        let work = work_root.join(format!("{}-{key}.{}", recipe.name, std::process::id()));
        remove_tree(&work)?;
        let dirs = ["build", "out", "tmp"].map(|d| work.join(d));
        for dir in &dirs {
            fs::create_dir_all(dir).map_err(io_err("create", dir))?;
        }
        let mut inputs = Vec::new();
        for name in &recipe.sources {
            let (path, file) = self.source_path(recipe, name)?;
            inputs.push((path, format!("/inputs/sources/{name}/{file}")));
        }
        for name in &recipe.steps {
            let tree = &upstream[name];
            inputs.push((self.cache.tree_path(tree), format!("/inputs/steps/{name}")));
        }
        for file in &recipe.files {
            inputs.push((self.recipes.dir.join(file), format!("/inputs/files/{file}")));
        }
        let mut env = step_env(&recipe.name, self.epoch());
        let (build_path, umask) = match variant {
            Variant::Normal => (BUILD_PATH, 0o022),
            Variant::Verify => {
                for (k, v) in env.iter_mut() {
                    if k == "LANG" || k == "LC_ALL" {
                        *v = VERIFY_LOCALE.to_string();
                    }
                }
                (VERIFY_BUILD_PATH, VERIFY_UMASK)
            }
        };
        env.push(("JOBS".to_string(), self.ctx.jobs.to_string()));
        let spec = Spec {
            tools_root: self.tools.root.clone(),
            build_dir: dirs[0].clone(),
            build_path: build_path.to_string(),
            out_dir: dirs[1].clone(),
            tmp_dir: dirs[2].clone(),
            inputs,
            env,
            umask,
            script: recipe.commands.join("\n"),
        };
        let log = match variant {
            Variant::Normal => self.cache.log_path(&recipe.name, key),
            Variant::Verify => self.cache.log_path(&recipe.name, &format!("{key}.verify")),
        };
        fs::create_dir_all(log.parent().expect("log has a parent"))
            .map_err(io_err("create", &log))?;
        fs::write(&log, b"").map_err(io_err("create", &log))?;
        let started = Instant::now();
        let status = spec.run(&log)?;
        let seconds = started.elapsed().as_secs_f64();
        if !status.success() {
            let tail = log_tail(&log, 20);
            remove_tree(&work)?;
            return Err(StepError::Failed {
                step: recipe.name.clone(),
                status: status.to_string(),
                tail,
                log,
            });
        }
        let out = dirs[1].clone();
        for output in &recipe.outputs {
            if fs::symlink_metadata(out.join(output)).is_err() {
                remove_tree(&work)?;
                return Err(StepError::MissingOutput {
                    step: recipe.name.clone(),
                    recipe: recipe.path.clone(),
                    missing: output.clone(),
                    log,
                });
            }
        }
        let tree = tree::normalize(&out, self.epoch() as i64)?;
        // Keep only out/: the caller moves it and removes the rest.
        remove_tree(&dirs[0])?;
        remove_tree(&dirs[2])?;
        Ok((out, tree, log, seconds))
    }

    /// Builds one step (or finds it in the cache).
    fn step(
        &self,
        name: &str,
        upstream: &BTreeMap<String, String>,
    ) -> Result<StepResult, StepError> {
        let recipe = self.recipes.get(name)?;
        let (key, inputs) = self.key(recipe, upstream)?;
        let cached = |record: StepRecord| StepResult {
            path: self.cache.tree_path(&record.tree),
            record,
            outcome: Outcome::Cached,
        };
        if let Some(record) = self.cache.record(&key) {
            return Ok(cached(record));
        }
        let _lock = self.cache.lock(&key)?;
        if let Some(record) = self.cache.record(&key) {
            return Ok(cached(record));
        }
        // Leftovers of killed runs of this step: we hold its lock.
        let work_root = self.cache.dir("work")?;
        let prefix = format!("{name}-{key}.");
        for entry in fs::read_dir(&work_root)
            .map_err(io_err("list", &work_root))?
            .flatten()
        {
            if entry.file_name().to_string_lossy().starts_with(&prefix) {
                remove_tree(&entry.path())?;
            }
        }
        self.started(name);
        let result = self.run(recipe, &key, upstream, Variant::Normal);
        self.finished(name);
        let (out, tree, _log, seconds) = result?;
        let record = StepRecord {
            step: name.to_string(),
            key: key.clone(),
            tree: tree.hash(),
            inputs,
            upstream: recipe_upstream(self.recipes.get(name)?, upstream),
            seconds,
        };
        let path = self.cache.commit(&out, &tree, &record)?;
        remove_tree(out.parent().expect("out has a parent"))?;
        if self.ctx.verbosity >= 0 {
            eprintln!("built {name} in {:.1}s", seconds);
        }
        Ok(StepResult {
            record,
            outcome: Outcome::Built,
            path,
        })
    }

    fn started(&self, name: &str) {
        self.progress
            .lock()
            .expect("progress lock")
            .insert(name.to_string(), Instant::now());
        if self.ctx.verbosity >= 0 {
            eprintln!("building {name}...");
        }
    }

    fn finished(&self, name: &str) {
        self.progress.lock().expect("progress lock").remove(name);
    }

    fn progress_line(&self) -> Option<String> {
        let running = self.progress.lock().expect("progress lock");
        if running.is_empty() {
            return None;
        }
        let parts: Vec<String> = running
            .iter()
            .map(|(name, since)| format!("{name} {}s", since.elapsed().as_secs()))
            .collect();
        Some(format!("running: {}", parts.join(", ")))
    }

    /// Builds `wanted` (every recipe when empty) and what they need, up to
    /// `--jobs` steps at once. Returns every step's result.
    pub fn build(&self, wanted: &[String]) -> Result<BTreeMap<String, StepResult>, StepError> {
        let wanted: Vec<String> = if wanted.is_empty() {
            self.recipes.by_name.keys().cloned().collect()
        } else {
            wanted.to_vec()
        };
        // Ready steps start heaviest first, so the long chains
        // (linux-config -> linux) do not wait behind short steps.
        let order = self
            .recipes
            .heaviest_first(self.manifest, self.recipes.order(&wanted)?);
        let mut waiting: BTreeSet<String> = order.iter().cloned().collect();
        let mut results: BTreeMap<String, StepResult> = BTreeMap::new();
        let mut running = 0usize;
        let mut first_error: Option<StepError> = None;
        let (tx, rx) = mpsc::channel::<(String, Result<StepResult, StepError>)>();
        let tty = io::stderr().is_terminal() && self.ctx.verbosity >= 0;
        let mut last_report = Instant::now();
        std::thread::scope(|scope| {
            loop {
                if first_error.is_none() {
                    let ready: Vec<String> = order
                        .iter()
                        .filter(|n| waiting.contains(*n))
                        .filter(|n| {
                            self.recipes.by_name[*n]
                                .steps
                                .iter()
                                .all(|d| results.contains_key(d))
                        })
                        .cloned()
                        .collect();
                    for name in ready {
                        if running >= self.ctx.jobs {
                            break;
                        }
                        waiting.remove(&name);
                        running += 1;
                        let upstream: BTreeMap<String, String> = results
                            .iter()
                            .map(|(k, v)| (k.clone(), v.record.tree.clone()))
                            .collect();
                        let tx = tx.clone();
                        scope.spawn(move || {
                            let result = self.step(&name, &upstream);
                            let _ = tx.send((name, result));
                        });
                    }
                }
                if running == 0 {
                    break;
                }
                match rx.recv_timeout(Duration::from_secs(1)) {
                    Ok((name, result)) => {
                        running -= 1;
                        match result {
                            Ok(result) => {
                                results.insert(name, result);
                            }
                            Err(e) => {
                                first_error.get_or_insert(e);
                            }
                        }
                    }
                    Err(_) => {
                        let every = if tty { 1 } else { 30 };
                        if self.ctx.verbosity >= 0 && last_report.elapsed().as_secs() >= every {
                            if let Some(line) = self.progress_line() {
                                if tty {
                                    eprint!("\r\x1b[K{line}");
                                    let _ = io::stderr().flush();
                                } else {
                                    eprintln!("{line}");
                                }
                            }
                            last_report = Instant::now();
                        }
                    }
                }
            }
        });
        if tty {
            eprint!("\r\x1b[K");
        }
        if let Some(error) = first_error {
            return Err(error);
        }
        if !waiting.is_empty() {
            return Err(StepError::Skipped);
        }
        Ok(results)
    }

    /// Rebuilds each of `wanted` (every recipe when empty) in a varied
    /// sandbox and compares its output tree with the cached one. Returns
    /// the steps checked, with their tree hash.
    pub fn verify(&self, wanted: &[String]) -> Result<Vec<(String, String)>, StepError> {
        let results = self.build(wanted)?;
        let targets: Vec<String> = if wanted.is_empty() {
            results.keys().cloned().collect()
        } else {
            wanted.to_vec()
        };
        let upstream: BTreeMap<String, String> = results
            .iter()
            .map(|(k, v)| (k.clone(), v.record.tree.clone()))
            .collect();
        let mut checked = Vec::new();
        for name in targets {
            let recipe = self.recipes.get(&name)?;
            let expected = &results[&name];
            let key = &expected.record.key;
            self.started(&name);
            let run = self.run(recipe, key, &upstream, Variant::Verify);
            self.finished(&name);
            let (out, tree, _log, _) = run?;
            let work = out.parent().expect("out has a parent").to_path_buf();
            if tree.hash() == expected.record.tree {
                remove_tree(&work)?;
                if self.ctx.verbosity >= 0 {
                    eprintln!("{name}: reproducible ({})", &expected.record.tree[..16]);
                }
                checked.push((name, tree.hash()));
                continue;
            }
            let error = self
                .cache
                .keep_for_diff(&name, &expected.path, &out, &tree)?;
            remove_tree(&work)?;
            return Err(error);
        }
        Ok(checked)
    }
}

fn recipe_upstream(
    recipe: &Recipe,
    upstream: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    recipe
        .steps
        .iter()
        .filter_map(|s| upstream.get_key_value(s))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
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

/// The last `lines` lines of a log, indented.
fn log_tail(path: &Path, lines: usize) -> String {
    let mut text = Vec::new();
    if let Ok(mut file) = File::open(path) {
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        let _ = file.seek(SeekFrom::Start(len.saturating_sub(64 * 1024)));
        let _ = file.read_to_end(&mut text);
    }
    let text = String::from_utf8_lossy(&text);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..]
        .iter()
        .map(|l| format!("  | {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// What `clean` or `gc` removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Removed {
    pub records: usize,
    pub trees: usize,
    pub logs: usize,
    pub work: usize,
}

/// Removes the cached outputs, logs and work directories of the named steps
/// (downloads stay).
pub fn clean(cache: &Cache, steps: &BTreeSet<String>) -> Result<Removed, StepError> {
    gc_with(
        cache,
        |record| !steps.contains(&record.step),
        |step| !steps.contains(step),
    )
}

/// A current recipe, for `gc`: its name, inputs hash and upstream steps.
#[derive(Debug, Clone)]
pub struct CurrentStep {
    pub step: String,
    pub inputs: String,
    pub steps: Vec<String>,
}

/// Keeps the step records built from the current recipes (same inputs
/// hash, upstream trees themselves kept) and the trees they use, given
/// `current` in dependency order; removes every other record, tree, log,
/// verify directory and abandoned work directory.
pub fn gc(cache: &Cache, current: &[CurrentStep]) -> Result<Removed, StepError> {
    let records = cache.records();
    let mut kept: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut kept_keys = BTreeSet::new();
    for step in current {
        for record in records
            .iter()
            .filter(|r| r.step == step.step && r.inputs == step.inputs)
        {
            let upstream_kept = step.steps.iter().all(|dep| {
                record
                    .upstream
                    .get(dep)
                    .is_some_and(|tree| kept.get(dep).is_some_and(|t| t.contains(tree)))
            });
            if upstream_kept {
                kept.entry(step.step.clone())
                    .or_default()
                    .insert(record.tree.clone());
                kept_keys.insert(record.key.clone());
            }
        }
    }
    let names: BTreeSet<String> = current.iter().map(|s| s.step.clone()).collect();
    gc_with(
        cache,
        |record| kept_keys.contains(&record.key),
        |step| names.contains(step),
    )
}

fn gc_with(
    cache: &Cache,
    keep_record: impl Fn(&StepRecord) -> bool,
    keep_logs_of: impl Fn(&str) -> bool,
) -> Result<Removed, StepError> {
    let mut removed = Removed::default();
    let mut kept_keys = BTreeSet::new();
    let mut kept_trees = BTreeSet::new();
    for record in cache.records() {
        if keep_record(&record) {
            kept_keys.insert(record.key.clone());
            kept_trees.insert(record.tree.clone());
        } else {
            let path = cache.record_path(&record.key);
            fs::remove_file(&path).map_err(io_err("remove", &path))?;
            removed.records += 1;
        }
    }
    let list = |dir: PathBuf| -> Vec<PathBuf> {
        fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .collect()
    };
    for path in list(cache.root.join("trees")) {
        let name = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let tree = name.trim_end_matches(".manifest");
        if !kept_trees.contains(tree) {
            if path.is_dir() {
                remove_tree(&path)?;
                removed.trees += 1;
            } else {
                fs::remove_file(&path).map_err(io_err("remove", &path))?;
            }
        }
    }
    for step_dir in list(cache.root.join("logs")) {
        let step = step_dir
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        for log in list(step_dir.clone()) {
            let name = log
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            let key = name.split('.').next().unwrap_or_default();
            if !keep_logs_of(&step) || !kept_keys.contains(key) {
                fs::remove_file(&log).map_err(io_err("remove", &log))?;
                removed.logs += 1;
            }
        }
        let _ = fs::remove_dir(&step_dir);
    }
    for verify in list(cache.root.join("verify")) {
        let step = verify
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        if !keep_logs_of(&step) {
            remove_tree(&verify)?;
        }
    }
    // Work directories belong to a step whose lock is held while it runs.
    for work in list(cache.root.join("work")) {
        let name = work
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let key = name
            .rsplit_once('.')
            .map(|(head, _)| head.rsplit('-').next().unwrap_or_default().to_string())
            .unwrap_or_default();
        if !Cache::is_locked(&cache.root.join("locks").join(format!("{key}.lock"))) {
            remove_tree(&work)?;
            removed.work += 1;
        }
    }
    for lock in list(cache.root.join("locks")) {
        if !Cache::is_locked(&lock) {
            let _ = fs::remove_file(&lock);
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_utc_dates() {
        assert_eq!(utc_timestamp(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc_timestamp(1_704_067_200), "2024-01-01 00:00:00 UTC");
        assert_eq!(utc_timestamp(951_827_696), "2000-02-29 12:34:56 UTC");
    }

    #[test]
    fn env_is_fixed() {
        let env = step_env("x", 5);
        let get = |k: &str| env.iter().find(|(a, _)| a == k).map(|(_, v)| v.as_str());
        assert_eq!(get("SOURCE_DATE_EPOCH"), Some("5"));
        assert_eq!(get("TZ"), Some("UTC"));
        assert_eq!(get("LC_ALL"), Some("C.UTF-8"));
        assert!(get("JOBS").is_none(), "JOBS must stay out of the key");
    }
}
