//! An OCI registry (distribution, Harbor, GHCR, Zot, ...) as a blob store:
//! artifacts of one config blob and layers, tagged, pulled and pushed with
//! `oci-client`. Credentials come from docker's `config.json`
//! (`$DOCKER_CONFIG`, else `~/.docker`), including credential helpers;
//! without an entry for the registry, access is anonymous.
//!
//! A repository is written `oci://HOST[:PORT]/REPO`. Loopback hosts
//! (`localhost`, `127.0.0.1`, `[::1]`) are spoken to over plain HTTP, as
//! docker does; every other host over HTTPS.

use std::collections::BTreeMap;
use std::time::Duration;

use oci_client::client::{ClientConfig, ClientProtocol, Config, ImageLayer};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::manifest::{OciDescriptor, OciImageManifest};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};

/// The URL scheme of a repository.
pub const SCHEME: &str = "oci://";

#[derive(Debug, thiserror::Error)]
pub enum OciError {
    #[error("`{0}`: not an OCI repository (expected oci://HOST[:PORT]/REPO[:TAG] in lower case)")]
    BadUrl(String),
    #[error("{url}: {what}")]
    Registry {
        url: String,
        what: String,
        #[source]
        source: Box<OciDistributionError>,
    },
    #[error(
        "{url}: credentials for `{registry}` in docker's config.json cannot be used ({detail})"
    )]
    Credentials {
        url: String,
        registry: String,
        detail: String,
    },
    #[error("{url}: blob {digest} does not match its digest")]
    Digest { url: String, digest: String },
    #[error("starting the registry client")]
    Runtime(#[source] std::io::Error),
}

/// `oci://HOST[:PORT]/REPO`, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repository {
    pub registry: String,
    pub repository: String,
}

impl Repository {
    /// Parses `oci://HOST[:PORT]/REPO`.
    pub fn parse(url: &str) -> Result<Self, OciError> {
        let (repo, tag) = Self::parse_tagged(url)?;
        match tag {
            None => Ok(repo),
            Some(_) => Err(OciError::BadUrl(url.to_string())),
        }
    }

    /// Parses `oci://HOST[:PORT]/REPO[:TAG]`.
    pub fn parse_tagged(url: &str) -> Result<(Self, Option<String>), OciError> {
        let bad = || OciError::BadUrl(url.to_string());
        let rest = url.strip_prefix(SCHEME).ok_or_else(bad)?;
        let (registry, path) = rest.split_once('/').ok_or_else(bad)?;
        let (repository, tag) = match path.rsplit_once(':') {
            Some((repo, tag)) => (repo, Some(tag.to_string())),
            None => (path, None),
        };
        let name_ok = |s: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-/".contains(c))
        };
        let tag_ok = tag.as_deref().is_none_or(|t| {
            !t.is_empty()
                && t.len() <= 128
                && t.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        });
        if registry.is_empty() || !name_ok(repository) || !tag_ok {
            return Err(bad());
        }
        Ok((
            Self {
                registry: registry.to_string(),
                repository: repository.to_string(),
            },
            tag,
        ))
    }

    pub fn url(&self) -> String {
        format!("{SCHEME}{}/{}", self.registry, self.repository)
    }

    fn is_loopback(&self) -> bool {
        let host = self
            .registry
            .rsplit_once(':')
            .filter(|(_, port)| port.chars().all(|c| c.is_ascii_digit()))
            .map_or(self.registry.as_str(), |(host, _)| host);
        matches!(host, "localhost" | "127.0.0.1" | "[::1]")
    }
}

/// An artifact as pulled: its manifest and config blob.
#[derive(Debug, Clone)]
pub struct Artifact {
    pub manifest: OciImageManifest,
    pub config: Vec<u8>,
}

/// A connection to one repository.
pub struct Registry {
    pub repo: Repository,
    client: Client,
    auth: RegistryAuth,
    runtime: tokio::runtime::Runtime,
}

impl Registry {
    /// A client for `repo`, with docker's credentials for its registry.
    pub fn connect(repo: Repository) -> Result<Self, OciError> {
        let auth = credentials(&repo)?;
        let protocol = if repo.is_loopback() {
            ClientProtocol::Http
        } else {
            ClientProtocol::Https
        };
        let client = Client::new(ClientConfig {
            protocol,
            connect_timeout: Some(Duration::from_secs(10)),
            read_timeout: Some(Duration::from_secs(60)),
            ..ClientConfig::default()
        });
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(OciError::Runtime)?;
        Ok(Self {
            repo,
            client,
            auth,
            runtime,
        })
    }

    fn reference(&self, tag: &str) -> Reference {
        Reference::with_tag(
            self.repo.registry.clone(),
            self.repo.repository.clone(),
            tag.to_string(),
        )
    }

    fn error(&self, what: String) -> impl FnOnce(OciDistributionError) -> OciError {
        let url = self.repo.url();
        move |source| OciError::Registry {
            url,
            what,
            source: Box::new(source),
        }
    }

    /// The artifact tagged `tag`, or None when the repository has no such
    /// tag.
    pub fn pull(&self, tag: &str) -> Result<Option<Artifact>, OciError> {
        let reference = self.reference(tag);
        let result = self
            .runtime
            .block_on(self.client.pull_manifest_and_config(&reference, &self.auth));
        match result {
            Ok((manifest, _digest, config)) => Ok(Some(Artifact {
                manifest,
                config: config.into_bytes(),
            })),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(self.error(format!("reading `{tag}`"))(e)),
        }
    }

    /// A blob's bytes, checked against its digest.
    pub fn pull_blob(&self, tag: &str, layer: &OciDescriptor) -> Result<Vec<u8>, OciError> {
        let reference = self.reference(tag);
        let mut out = Vec::new();
        let result = self
            .runtime
            .block_on(self.client.pull_blob(&reference, layer, &mut out));
        match result {
            Ok(()) => Ok(out),
            Err(OciDistributionError::DigestError(_)) => Err(OciError::Digest {
                url: self.repo.url(),
                digest: layer.digest.clone(),
            }),
            Err(e) => Err(self.error(format!("reading blob {}", layer.digest))(e)),
        }
    }

    /// Pushes an artifact under `tag`: its blobs first, the manifest last,
    /// so a reader never sees a tag whose blobs are missing. Pushing the
    /// same content twice (or concurrently) writes the same blobs and
    /// manifest.
    pub fn push(
        &self,
        tag: &str,
        config: (&str, Vec<u8>),
        layers: Vec<(&str, Vec<u8>)>,
        annotations: BTreeMap<String, String>,
    ) -> Result<(), OciError> {
        let reference = self.reference(tag);
        let layers: Vec<ImageLayer> = layers
            .into_iter()
            .map(|(media_type, data)| ImageLayer::new(data, media_type.to_string(), None))
            .collect();
        let config = Config::new(config.1, config.0.to_string(), None);
        let manifest = OciImageManifest::build(&layers, &config, Some(annotations));
        self.runtime
            .block_on(
                self.client
                    .push(&reference, &layers, config, &self.auth, Some(manifest)),
            )
            .map(|_| ())
            .map_err(self.error(format!("pushing `{tag}`")))
    }
}

fn is_not_found(error: &OciDistributionError) -> bool {
    match error {
        OciDistributionError::ImageManifestNotFoundError(_) => true,
        OciDistributionError::ServerError { code, .. } => *code == 404,
        OciDistributionError::RegistryError { envelope, .. } => envelope.errors.iter().any(|e| {
            matches!(
                e.code,
                OciErrorCode::ManifestUnknown | OciErrorCode::NameUnknown
            )
        }),
        _ => false,
    }
}

/// docker's credentials for the repository's registry, else anonymous.
fn credentials(repo: &Repository) -> Result<RegistryAuth, OciError> {
    use docker_credential::{CredentialRetrievalError as E, DockerCredential};
    match docker_credential::get_credential(&repo.registry) {
        Ok(DockerCredential::UsernamePassword(user, password)) => {
            Ok(RegistryAuth::Basic(user, password))
        }
        Ok(DockerCredential::IdentityToken(token)) => Ok(RegistryAuth::Bearer(token)),
        Err(E::ConfigNotFound | E::ConfigReadError | E::NoCredentialConfigured) => {
            Ok(RegistryAuth::Anonymous)
        }
        Err(e) => Err(OciError::Credentials {
            url: repo.url(),
            registry: repo.registry.clone(),
            detail: format!("{e:?}"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repositories_parse() {
        let repo = Repository::parse("oci://localhost:5000/team/hiperiso").unwrap();
        assert_eq!(repo.registry, "localhost:5000");
        assert_eq!(repo.repository, "team/hiperiso");
        assert!(repo.is_loopback());
        assert!(
            !Repository::parse("oci://ghcr.io/x/y")
                .unwrap()
                .is_loopback()
        );
        let (repo, tag) = Repository::parse_tagged("oci://ghcr.io/x/img:v1").unwrap();
        assert_eq!(
            (repo.repository.as_str(), tag.as_deref()),
            ("x/img", Some("v1"))
        );
        for bad in [
            "http://h/r",
            "oci://h",
            "oci://h/",
            "oci://h/Upper",
            "oci://h/r:t",
        ] {
            assert!(Repository::parse(bad).is_err(), "{bad}");
        }
    }
}
