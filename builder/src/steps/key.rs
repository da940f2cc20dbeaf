//! A step's cache key: its recipe text, files and sources' pins, its
//! upstream steps' output trees, the tools tree, the fixed environment and
//! hiperiso's version.

use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;

use hiperiso_stick::io::io_err;

use crate::model::recipe::Recipe;
use crate::sources::pins::source_request;
use crate::sources::store::sha256_hex;
use crate::steps::env::step_env;
use crate::steps::run::Builder;
use crate::steps::{BUILD_PATH, HIPERISO_VERSION, SourceError, StepError};

impl Builder<'_> {
    /// Hash of the recipe text, its files and its sources' pins (what
    /// `gc` compares).
    pub fn inputs_hash(&self, recipe: &Recipe) -> Result<String, StepError> {
        Ok(self.inputs(recipe)?.0)
    }

    pub(crate) fn inputs(&self, recipe: &Recipe) -> Result<(String, serde_json::Value), StepError> {
        let mut files = Vec::new();
        for file in &recipe.files {
            let path = self.recipes.dir.join(file);
            let bytes = fs::read(&path).map_err(io_err("read", &path))?;
            files.push((file.clone(), sha256_hex(&bytes)));
        }
        let mut sources = Vec::new();
        for name in &recipe.sources {
            let source = self
                .project
                .manifest
                .source(name)
                .map_err(|e| StepError::Fetch {
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

    pub(crate) fn source_path(
        &self,
        recipe: &Recipe,
        name: &str,
    ) -> Result<(PathBuf, String), StepError> {
        let fetch_err = |source: SourceError| StepError::Fetch {
            step: recipe.name.clone(),
            source_name: name.to_string(),
            source: Box::new(source),
        };
        let source = self
            .project
            .manifest
            .source(name)
            .map_err(|e| fetch_err(e.into()))?;
        let file = source.file_name(name, &source.version);
        if let Some(path) = source.sha256.as_deref().and_then(|sha| self.store.get(sha)) {
            return Ok((path, file));
        }
        let request = source_request(name, source, &source.version, &self.project.mirrors.urls)
            .map_err(|e| fetch_err(e.into()))?;
        let fetched = self
            .project
            .fetcher()
            .map_err(|e| fetch_err(e.into()))?
            .fetch(&request)
            .map_err(|e| fetch_err(e.into()))?;
        Ok((fetched.path, file))
    }
}
