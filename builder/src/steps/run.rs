//! The step runner and scheduler: runs recipes in the sandbox, in
//! dependency order, `--jobs` at a time, and commits their outputs to the
//! cache.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{self, IsTerminal, Write};
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock, mpsc};
use std::time::{Duration, Instant};

use hiperiso_stick::io::io_err;

use crate::model::recipe::{Recipe, Recipes};
use crate::project::Project;
use crate::sources::progress::{last_line, log_tail};
use crate::sources::store::Store;
use crate::steps::cache::{Cache, remove_tree};
use crate::steps::env::step_env;
use crate::steps::remote::Remote;
use crate::steps::sandbox::{self, SandboxError, Spec};
use crate::steps::tools;
use crate::steps::tree::{self, Tree};
use crate::steps::{
    BUILD_PATH, Outcome, StepError, StepRecord, StepResult, ToolsTree, VERIFY_BUILD_PATH,
    VERIFY_LOCALE, VERIFY_UMASK,
};

/// How a run differs from a normal build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Variant {
    Normal,
    Verify,
}

/// Runs recipes' steps against one manifest, tools tree and cache.
pub struct Builder<'a> {
    pub project: &'a Project,
    pub recipes: &'a Recipes,
    pub tools: ToolsTree,
    pub cache: Cache,
    pub(crate) store: Store,
    /// Shared caches (registries) asked before a step builds.
    pub remote: Option<Remote>,
    /// Unpack the lock's tools tree before the first step runs.
    pub unpack_tools: bool,
    probed: OnceLock<Result<(), String>>,
    tools_ready: OnceLock<Result<(), String>>,
    progress: Mutex<BTreeMap<String, (Instant, PathBuf)>>,
}

impl<'a> Builder<'a> {
    pub fn new(project: &'a Project, recipes: &'a Recipes, tools: ToolsTree, store: Store) -> Self {
        Self {
            project,
            recipes,
            tools,
            cache: Cache::new(store.root()),
            store,
            remote: None,
            unpack_tools: false,
            probed: OnceLock::new(),
            tools_ready: OnceLock::new(),
            progress: Mutex::new(BTreeMap::new()),
        }
    }

    pub(crate) fn epoch(&self) -> u64 {
        self.project.manifest.image.source_date_epoch
    }

    fn probe(&self) -> Result<(), StepError> {
        if self.unpack_tools {
            self.tools_ready
                .get_or_init(|| {
                    tools::prepare(self.project).map_err(|e| hiperiso_stick::error_chain(&e))?;
                    Ok(())
                })
                .clone()
                .map_err(StepError::Tools)?;
        }
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
    pub(crate) fn run(
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
        env.push(("JOBS".to_string(), self.project.settings.jobs.to_string()));
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
            self.share(&record)?;
            return Ok(cached(record));
        }
        let _lock = self.cache.lock(&key)?;
        if let Some(record) = self.cache.record(&key) {
            self.share(&record)?;
            return Ok(cached(record));
        }
        if let Some(remote) = &self.remote {
            let pulled = remote
                .pull(&self.cache, name, &key)
                .map_err(|e| StepError::Remote(Box::new(e)))?;
            if let Some(record) = pulled {
                return Ok(StepResult {
                    path: self.cache.tree_path(&record.tree),
                    record,
                    outcome: Outcome::Pulled,
                });
            }
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
        self.started(name, self.cache.log_path(name, &key));
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
        if self.project.settings.verbosity >= 0 {
            eprintln!("built {name} in {:.1}s", seconds);
        }
        self.share(&record)?;
        Ok(StepResult {
            record,
            outcome: Outcome::Built,
            path,
        })
    }

    /// Pushes a step to the shared caches that want it.
    fn share(&self, record: &StepRecord) -> Result<(), StepError> {
        match &self.remote {
            Some(remote) if remote.pushes() => remote
                .push(record, &self.cache.tree_path(&record.tree))
                .map_err(|e| StepError::Remote(Box::new(e))),
            _ => Ok(()),
        }
    }

    pub(crate) fn started(&self, name: &str, log: PathBuf) {
        self.progress
            .lock()
            .expect("progress lock")
            .insert(name.to_string(), (Instant::now(), log));
        if self.project.settings.verbosity >= 0 {
            eprintln!("building {name}...");
        }
    }

    pub(crate) fn finished(&self, name: &str) {
        self.progress.lock().expect("progress lock").remove(name);
    }

    /// Each running step with its elapsed time and its log's last line.
    fn progress_line(&self, width: usize) -> Option<String> {
        let running = self.progress.lock().expect("progress lock");
        if running.is_empty() {
            return None;
        }
        let parts: Vec<String> = running
            .iter()
            .map(|(name, (since, log))| {
                let last = last_line(log);
                let last: String = last.chars().take(width).collect();
                format!("{name} {}s: {last}", since.elapsed().as_secs())
            })
            .collect();
        Some(format!("running: {}", parts.join(" | ")))
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
            .heaviest_first(&self.project.manifest, self.recipes.order(&wanted)?);
        let mut waiting: BTreeSet<String> = order.iter().cloned().collect();
        let mut results: BTreeMap<String, StepResult> = BTreeMap::new();
        let mut running = 0usize;
        let mut first_error: Option<StepError> = None;
        let (tx, rx) = mpsc::channel::<(String, Result<StepResult, StepError>)>();
        let tty = io::stderr().is_terminal() && self.project.settings.verbosity >= 0;
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
                        if running >= self.project.settings.jobs {
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
                        // A running step is never silent for more than
                        // 10 s: a status line on a terminal, plain lines
                        // otherwise.
                        let every = if tty { 1 } else { PROGRESS_EVERY_SECONDS };
                        if self.project.settings.verbosity >= 0
                            && last_report.elapsed().as_secs() >= every
                        {
                            let width = if tty { 40 } else { 200 };
                            if let Some(line) = self.progress_line(width) {
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

/// How often plain progress lines are printed while steps run.
const PROGRESS_EVERY_SECONDS: u64 = 10;
