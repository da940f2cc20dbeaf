//! Shared step caches: step outputs in OCI registries, keyed by step key.
//!
//! A step with key K is the artifact tagged `step-K`: its config blob is
//! the signed record (trust.rs), its one layer the output tree (archive.rs).
//! Before a step builds, the registries are asked in order; a hit is used
//! only when its record is signed by a trusted key, names this step and
//! key, its blob matches its digest and the unpacked tree hashes to the
//! record's tree. Only then does it enter the local cache (the same commit
//! as a local build). Anything else is a warning naming the step, key and
//! digest, and the step builds locally; with `--require-cache` it is an
//! error. `--offline` never touches a registry.

// Errors here are rare and carry the step, key, URL and digest the
// messages name; callers box them (StepError::Remote, RuntimeError::Remote).
#![allow(clippy::result_large_err)]

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use hiperiso_stick::io::IoError;

use crate::project::Project;
use crate::sources::oci::{OciError, Registry, Repository};
use crate::steps::cache::{Cache, remove_tree};
use crate::steps::trust::{self, PublicKey, Refusal, SecretKey, SignedRecord, TrustError};
use crate::steps::{StepError, StepRecord, archive, tree};

/// The media type of a step's config blob (its signed record).
pub const RECORD_MEDIA_TYPE: &str = "application/vnd.hiperiso.step-record.v1+json";
/// Where `keys` writes and pushes look for the signing key by default.
pub const SIGNING_KEY_ENV: &str = "HIPERISO_SIGNING_KEY";

#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error(transparent)]
    Oci(#[from] OciError),
    #[error("{}: [cache] trusted-keys", .0.display())]
    TrustedKey(PathBuf, #[source] TrustError),
    #[error("reading the signing key for pushes")]
    SigningKey(#[source] TrustError),
    #[error(
        "pushing to a shared cache needs a signing key and {} does not exist: \
         create one with `hiperiso-build keys`, or name one in [cache] signing-key or \
         $HIPERISO_SIGNING_KEY",
        .0.display()
    )]
    NoSigningKey(PathBuf),
    #[error("step `{step}` (key {key}) from {url}: refused")]
    Refused {
        step: String,
        key: String,
        url: String,
        #[source]
        refusal: Refusal,
    },
    #[error("step `{step}` (key {key}) from {url}")]
    Registry {
        step: String,
        key: String,
        url: String,
        #[source]
        source: OciError,
    },
    #[error(
        "step `{step}` (key {key}) from {url}: blob {digest} unpacks to tree {got}, \
         but the signed record says {want}: rejected"
    )]
    TreeMismatch {
        step: String,
        key: String,
        url: String,
        digest: String,
        got: String,
        want: String,
    },
    #[error("step `{step}` (key {key}) from {url}: the artifact has no tree layer")]
    NoLayer {
        step: String,
        key: String,
        url: String,
    },
    #[error("step `{step}` (key {key}): blob {digest}")]
    Unpack {
        step: String,
        key: String,
        digest: String,
        #[source]
        source: IoError,
    },
    #[error(transparent)]
    Step(#[from] Box<StepError>),
}

/// One registry and whether it answered so far.
struct Endpoint {
    registry: Registry,
    down: AtomicBool,
}

/// The registries of one run, whom they trust and how failures count.
pub struct Remote {
    pull: Vec<Endpoint>,
    push: Vec<Endpoint>,
    trusted: Vec<PublicKey>,
    signer: Option<SecretKey>,
    require: bool,
    quiet: bool,
    epoch: i64,
    /// Bytes of tree blobs pulled and pushed.
    pub pulled_bytes: AtomicU64,
    pub pushed_bytes: AtomicU64,
}

/// The default directory of `keys`' files: `$XDG_CONFIG_HOME/hiperiso`,
/// else `~/.config/hiperiso`.
pub fn default_key_dir() -> PathBuf {
    std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .unwrap_or_else(|| PathBuf::from("."))
        .join("hiperiso")
}

impl Remote {
    /// The project's shared caches: `--cache-from` (else `[cache]
    /// registries`) to pull from, `--cache-to` (plus `registries` when
    /// `[cache] push`) to push to. None when there are none, or offline.
    pub fn from_project(project: &Project) -> Result<Option<Self>, RemoteError> {
        let settings = &project.settings;
        let config = &project.manifest.cache;
        if settings.offline {
            return Ok(None);
        }
        let pull_urls = if settings.shared.from.is_empty() {
            &config.registries
        } else {
            &settings.shared.from
        };
        let mut push_urls = settings.shared.to.clone();
        if config.push {
            push_urls.extend(config.registries.iter().cloned());
        }
        if pull_urls.is_empty() && push_urls.is_empty() {
            return Ok(None);
        }
        let connect = |urls: &[String]| -> Result<Vec<Endpoint>, RemoteError> {
            urls.iter()
                .map(|url| {
                    Ok(Endpoint {
                        registry: Registry::connect(Repository::parse(url)?)?,
                        down: AtomicBool::new(false),
                    })
                })
                .collect()
        };
        let manifest = &project.manifest.path;
        let trusted = config
            .trusted_keys
            .iter()
            .map(|text| {
                PublicKey::parse(text, "[cache] trusted-keys")
                    .map_err(|e| RemoteError::TrustedKey(manifest.clone(), e))
            })
            .collect::<Result<_, _>>()?;
        let signer = if push_urls.is_empty() {
            None
        } else {
            let path = std::env::var_os(SIGNING_KEY_ENV)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
                .or_else(|| {
                    config
                        .signing_key
                        .as_ref()
                        .map(|p| project.manifest_dir().join(p))
                })
                .unwrap_or_else(|| default_key_dir().join(trust::KEY_FILE));
            if !path.exists() {
                return Err(RemoteError::NoSigningKey(path));
            }
            Some(SecretKey::read(&path).map_err(RemoteError::SigningKey)?)
        };
        Ok(Some(Self {
            pull: connect(pull_urls)?,
            push: connect(&push_urls)?,
            trusted,
            signer,
            require: settings.shared.require,
            quiet: settings.verbosity < 0,
            epoch: project.manifest.image.source_date_epoch as i64,
            pulled_bytes: AtomicU64::new(0),
            pushed_bytes: AtomicU64::new(0),
        }))
    }

    /// A warning (the build goes on locally), or the error with
    /// `--require-cache`.
    fn fail(&self, error: RemoteError, endpoint: Option<&Endpoint>) -> Result<(), RemoteError> {
        if self.require {
            return Err(error);
        }
        let mut message = hiperiso_stick::error_chain(&error);
        if let Some(endpoint) = endpoint {
            // One warning per registry that does not answer, not one per step.
            endpoint.down.store(true, Ordering::Relaxed);
            message.push_str("; not asking it again in this run");
        }
        eprintln!("warning: {message}; building locally");
        Ok(())
    }

    /// Finds `key` in the registries and moves its verified tree into
    /// `cache`. The caller holds the step's lock.
    pub fn pull(
        &self,
        cache: &Cache,
        step: &str,
        key: &str,
    ) -> Result<Option<StepRecord>, RemoteError> {
        for endpoint in self.pull.iter().filter(|e| !e.down.load(Ordering::Relaxed)) {
            match self.pull_from(&endpoint.registry, cache, step, key) {
                Ok(Some(record)) => return Ok(Some(record)),
                Ok(None) => {}
                Err(e @ RemoteError::Registry { .. }) if !is_digest(&e) => {
                    self.fail(e, Some(endpoint))?
                }
                Err(e) => self.fail(e, None)?,
            }
        }
        Ok(None)
    }

    fn pull_from(
        &self,
        registry: &Registry,
        cache: &Cache,
        step: &str,
        key: &str,
    ) -> Result<Option<StepRecord>, RemoteError> {
        let url = registry.repo.url();
        let tag = tag(key);
        let context = |source: OciError| RemoteError::Registry {
            step: step.into(),
            key: key.into(),
            url: url.clone(),
            source,
        };
        let Some(artifact) = registry.pull(&tag).map_err(context)? else {
            return Ok(None);
        };
        let refused = |refusal| RemoteError::Refused {
            step: step.into(),
            key: key.into(),
            url: url.clone(),
            refusal,
        };
        let record = SignedRecord::verify(&artifact.config, &self.trusted).map_err(refused)?;
        if record.key != key || record.step != step {
            return Err(refused(Refusal::Malformed(format!(
                "it is the record of step `{}` key {}",
                record.step, record.key
            ))));
        }
        let layer = artifact
            .manifest
            .layers
            .iter()
            .find(|l| l.media_type == archive::MEDIA_TYPE)
            .ok_or_else(|| RemoteError::NoLayer {
                step: step.into(),
                key: key.into(),
                url: url.clone(),
            })?;
        let blob = registry.pull_blob(&tag, layer).map_err(context)?;
        let unpack_error = |source| RemoteError::Unpack {
            step: step.into(),
            key: key.into(),
            digest: layer.digest.clone(),
            source,
        };
        let work = cache
            .dir("work")
            .map_err(Box::new)?
            .join(format!("pull-{key}.{}", std::process::id()));
        remove_tree(&work).map_err(Box::new)?;
        let out = work.join("out");
        fs::create_dir_all(&out)
            .map_err(|e| unpack_error(hiperiso_stick::io::io_err("create", &out)(e)))?;
        let result = self.verify_and_commit(cache, &record, &blob, &out, &url, &layer.digest);
        let _ = remove_tree(&work);
        result?;
        self.pulled_bytes
            .fetch_add(blob.len() as u64, Ordering::Relaxed);
        if !self.quiet {
            eprintln!(
                "pulled {step} from {url} ({:.1} MB)",
                blob.len() as f64 / 1e6
            );
        }
        Ok(Some(record))
    }

    fn verify_and_commit(
        &self,
        cache: &Cache,
        record: &StepRecord,
        blob: &[u8],
        out: &Path,
        url: &str,
        digest: &str,
    ) -> Result<(), RemoteError> {
        let unpack_error = |source| RemoteError::Unpack {
            step: record.step.clone(),
            key: record.key.clone(),
            digest: digest.into(),
            source,
        };
        archive::unpack(blob, out).map_err(unpack_error)?;
        let tree = tree::normalize(out, self.epoch).map_err(|e| Box::new(StepError::from(e)))?;
        if tree.hash() != record.tree {
            return Err(RemoteError::TreeMismatch {
                step: record.step.clone(),
                key: record.key.clone(),
                url: url.into(),
                digest: digest.into(),
                got: tree.hash(),
                want: record.tree.clone(),
            });
        }
        cache.commit(out, &tree, record).map_err(Box::new)?;
        Ok(())
    }

    /// Pushes a step (its tree at `path`) to the push registries that do
    /// not have its key yet.
    pub fn push(&self, record: &StepRecord, path: &Path) -> Result<(), RemoteError> {
        let Some(signer) = &self.signer else {
            return Ok(());
        };
        let mut packed: Option<Vec<u8>> = None;
        for endpoint in self.push.iter().filter(|e| !e.down.load(Ordering::Relaxed)) {
            let registry = &endpoint.registry;
            let tag = tag(&record.key);
            let context = |source| RemoteError::Registry {
                step: record.step.clone(),
                key: record.key.clone(),
                url: registry.repo.url(),
                source,
            };
            let result = registry.pull(&tag).map_err(context).and_then(|found| {
                if found.is_some() {
                    return Ok(());
                }
                let blob = match &packed {
                    Some(blob) => blob.clone(),
                    None => {
                        let tree =
                            tree::Tree::scan(path).map_err(|e| Box::new(StepError::from(e)))?;
                        let blob =
                            archive::pack(path, &tree).map_err(|e| Box::new(StepError::from(e)))?;
                        packed.insert(blob).clone()
                    }
                };
                let size = blob.len() as u64;
                let config = signer.sign(record.clone()).to_json();
                let annotations = [
                    (
                        "org.opencontainers.image.title".to_string(),
                        record.step.clone(),
                    ),
                    ("org.hiperiso.step.key".to_string(), record.key.clone()),
                    ("org.hiperiso.step.tree".to_string(), record.tree.clone()),
                ]
                .into();
                registry
                    .push(
                        &tag,
                        (RECORD_MEDIA_TYPE, config),
                        vec![(archive::MEDIA_TYPE, blob)],
                        annotations,
                    )
                    .map_err(context)?;
                self.pushed_bytes.fetch_add(size, Ordering::Relaxed);
                if !self.quiet {
                    eprintln!(
                        "pushed {} to {} ({:.1} MB)",
                        record.step,
                        registry.repo.url(),
                        size as f64 / 1e6
                    );
                }
                Ok(())
            });
            if let Err(e) = result {
                self.fail(e, Some(endpoint))?;
            }
        }
        Ok(())
    }

    /// Whether built steps are pushed anywhere.
    pub fn pushes(&self) -> bool {
        self.signer.is_some()
    }
}

fn is_digest(error: &RemoteError) -> bool {
    matches!(
        error,
        RemoteError::Registry {
            source: OciError::Digest { .. },
            ..
        }
    )
}

/// The tag of a step key.
pub fn tag(key: &str) -> String {
    format!("step-{key}")
}
