//! `clean` and `gc`: remove step records, output trees, logs and work
//! directories of named steps, or of every step not current.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::PathBuf;

use hiperiso_stick::io::io_err;

use crate::steps::cache::Cache;
use crate::steps::cache::remove_tree;
use crate::steps::{StepError, StepRecord};

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
