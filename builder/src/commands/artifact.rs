//! Finished images as OCI artifacts (`image --push`, `install --image`),
//! and the check both make first: the image's hash against the
//! `image_sha256` its own build.json records.
//!
//! The artifact: the config blob is the image's build.json
//! ([`BUILD_MEDIA_TYPE`]), its one layer the image's non-zero blocks
//! (`model::image_layer`), and the manifest carries build.json and the
//! image hash as annotations ([`BUILD_JSON_ANNOTATION`],
//! [`SHA256_ANNOTATION`]), so `crane manifest` or a registry's web page
//! shows what an image is made of without pulling it.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::Path;

use hiperiso_installer::device::{NotAStick, recognise};
use hiperiso_installer::fat::FatReader;
use hiperiso_installer::slice::Slice;
use hiperiso_stick::io::{IoError, io_err};
use hiperiso_stick::paths::esp::BUILD_JSON;

use crate::model::build_record::{self, IMAGE_SHA256, RecordError};
use crate::model::image_layer::{self, LayerError};
use crate::sources::oci::{OciError, Registry, Repository, SCHEME};

pub const BUILD_MEDIA_TYPE: &str = "application/vnd.hiperiso.build.v1+json";
pub const BUILD_JSON_ANNOTATION: &str = "org.hiperiso.build-json";
pub const SHA256_ANNOTATION: &str = "org.hiperiso.image-sha256";
/// The tag of `oci://HOST/REPO` without one.
const DEFAULT_TAG: &str = "latest";

#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("{name}: not a hiperiso image")]
    NotAnImage {
        name: String,
        #[source]
        source: NotAStick,
    },
    #[error("{name}: the ESP's {BUILD_JSON} has no `{IMAGE_SHA256}` ({detail})")]
    NoRecord { name: String, detail: String },
    #[error(
        "{name}: the image's sha256 is {actual} but its {BUILD_JSON} records {recorded}: \
         the image was changed or damaged after `image` wrote it; refusing it"
    )]
    Mismatch {
        name: String,
        recorded: String,
        actual: String,
    },
    #[error(
        "{name}: the artifact's {SHA256_ANNOTATION} annotation is {annotated} but the image \
         inside records {recorded}; refusing it"
    )]
    AnnotationMismatch {
        name: String,
        annotated: String,
        recorded: String,
    },
    #[error("{name}: checking the image hash")]
    Record {
        name: String,
        #[source]
        source: RecordError,
    },
    #[error("{url}: no such tag in the registry")]
    NotFound { url: String },
    #[error("{url}: not a hiperiso image artifact ({found})")]
    NotAnArtifact { url: String, found: String },
    #[error("{name}: the image layer")]
    Layer {
        name: String,
        #[source]
        source: LayerError,
    },
    #[error(transparent)]
    Oci(#[from] OciError),
    #[error(transparent)]
    Io(#[from] IoError),
}

/// What [`verify`] found: the image's ESP build.json and its hash.
pub struct SealedImage {
    pub build_json: Vec<u8>,
    /// build.json on one line, for the annotation.
    pub compact_json: String,
    pub sha256: String,
}

/// Whether `image` names a registry (`oci://`) rather than a file.
pub fn is_reference(image: &str) -> bool {
    image.starts_with(SCHEME)
}

/// Checks that `image`'s hash is the `image_sha256` its build.json records,
/// reading nothing but the image; `name` (the file or the reference) names
/// it in errors.
pub fn verify(image: &Path, name: &str) -> Result<SealedImage, ArtifactError> {
    let mut file = File::open(image).map_err(io_err("open", image))?;
    let size = file.metadata().map_err(io_err("stat", image))?.len();
    let (_, _, esp, _) =
        recognise(&mut file, size).map_err(|source| ArtifactError::NotAnImage {
            name: name.to_string(),
            source,
        })?;
    let no_record = |detail: String| ArtifactError::NoRecord {
        name: name.to_string(),
        detail,
    };
    let build_json = FatReader::open(Slice::new(&mut file, esp.offset, esp.len))
        .and_then(|mut fat| fat.read_file(BUILD_JSON))
        .map_err(|e| no_record(e.to_string()))?;
    let json: serde_json::Value =
        serde_json::from_slice(&build_json).map_err(|e| no_record(e.to_string()))?;
    let recorded = json[IMAGE_SHA256]
        .as_str()
        .ok_or_else(|| no_record("no such string field".into()))?
        .to_string();
    let actual =
        build_record::check_image(image, (esp.offset, esp.end()), &recorded).map_err(|source| {
            ArtifactError::Record {
                name: name.to_string(),
                source,
            }
        })?;
    if actual != recorded {
        return Err(ArtifactError::Mismatch {
            name: name.to_string(),
            recorded,
            actual,
        });
    }
    Ok(SealedImage {
        compact_json: json.to_string(),
        build_json,
        sha256: recorded,
    })
}

fn connect(url: &str) -> Result<(Registry, String), ArtifactError> {
    let (repo, tag) = Repository::parse_tagged(url)?;
    let tag = tag.unwrap_or_else(|| DEFAULT_TAG.to_string());
    Ok((Registry::connect(repo)?, tag))
}

/// Verifies `image` and pushes it to `url` (`oci://HOST/REPO[:TAG]`).
/// Returns the image hash and the layer's size.
pub fn push(image: &Path, url: &str) -> Result<(String, usize), ArtifactError> {
    let sealed = verify(image, &image.display().to_string())?;
    let file = File::open(image).map_err(io_err("open", image))?;
    let size = file.metadata().map_err(io_err("stat", image))?.len();
    let layer = image_layer::pack(&file, size).map_err(|source| ArtifactError::Layer {
        name: image.display().to_string(),
        source,
    })?;
    let layer_size = layer.len();
    let (registry, tag) = connect(url)?;
    let annotations = BTreeMap::from([
        (SHA256_ANNOTATION.to_string(), sealed.sha256.clone()),
        (
            BUILD_JSON_ANNOTATION.to_string(),
            sealed.compact_json.clone(),
        ),
    ]);
    registry.push(
        &tag,
        (BUILD_MEDIA_TYPE, sealed.build_json),
        vec![(image_layer::MEDIA_TYPE, layer)],
        annotations,
    )?;
    Ok((sealed.sha256, layer_size))
}

/// Pulls the image at `url` into a sparse temporary file and verifies it
/// (its blob digests, its hash against its build.json, and that against
/// the manifest's annotation).
pub fn pull(url: &str) -> Result<(tempfile::NamedTempFile, SealedImage), ArtifactError> {
    let (registry, tag) = connect(url)?;
    let artifact = registry
        .pull(&tag)?
        .ok_or_else(|| ArtifactError::NotFound {
            url: url.to_string(),
        })?;
    let manifest = &artifact.manifest;
    let layer = match manifest.layers.as_slice() {
        [layer]
            if layer.media_type == image_layer::MEDIA_TYPE
                && manifest.config.media_type == BUILD_MEDIA_TYPE =>
        {
            layer
        }
        layers => {
            let types: Vec<&str> = layers.iter().map(|l| l.media_type.as_str()).collect();
            return Err(ArtifactError::NotAnArtifact {
                url: url.to_string(),
                found: format!(
                    "config {}, layers [{}]",
                    manifest.config.media_type,
                    types.join(", ")
                ),
            });
        }
    };
    let blob = registry.pull_blob(&tag, layer)?;
    let staged = tempfile::Builder::new()
        .prefix("hiperiso-pulled-")
        .suffix(".img")
        .tempfile()
        .map_err(io_err("create a file in", &std::env::temp_dir()))?;
    image_layer::unpack(&blob, staged.as_file()).map_err(|source| ArtifactError::Layer {
        name: url.to_string(),
        source,
    })?;
    drop(blob);
    let sealed = verify(staged.path(), url)?;
    let annotated = manifest
        .annotations
        .as_ref()
        .and_then(|a| a.get(SHA256_ANNOTATION));
    if let Some(annotated) = annotated.filter(|a| **a != sealed.sha256) {
        return Err(ArtifactError::AnnotationMismatch {
            name: url.to_string(),
            annotated: annotated.clone(),
            recorded: sealed.sha256,
        });
    }
    Ok((staged, sealed))
}
