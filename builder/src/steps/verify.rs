//! `verify`: rebuild steps in a varied sandbox and compare their output
//! trees with the cached ones.

use std::collections::BTreeMap;

use crate::steps::StepError;
use crate::steps::cache::remove_tree;
use crate::steps::run::{Builder, Variant};

impl Builder<'_> {
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
            self.started(&name, self.cache.log_path(&name, &format!("{key}.verify")));
            let run = self.run(recipe, key, &upstream, Variant::Verify);
            self.finished(&name);
            let (out, tree, _log, _) = run?;
            let work = out.parent().expect("out has a parent").to_path_buf();
            if tree.hash() == expected.record.tree {
                remove_tree(&work)?;
                if self.project.settings.verbosity >= 0 {
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
