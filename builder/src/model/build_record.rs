//! The ESP's `EFI/hiperiso/build.json`, completed by `image`: the output
//! tree hash of every build step the image was made from, the tools tree,
//! and the final image's sha256.
//!
//! The image contains build.json, so its hash cannot be inside it as
//! such. `image_sha256` is the image hash (`hiperiso_stick::image_hash`:
//! sha256 over the size and the non-zero 4 KiB blocks, so a sparse file
//! and a device agree) of the image whose build.json holds 64 `0`s in that
//! field's place: `image` writes the image with the
//! placeholder, hashes it, and writes the hash over the placeholder (same
//! length, same place). [`check_image`] undoes that to check an image.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use hiperiso_stick::image_hash::image_sha256_visiting;
use hiperiso_stick::io::{IoError, io_err, write_atomic};

/// The field's name in build.json.
pub const IMAGE_SHA256: &str = "image_sha256";
const PLACEHOLDER: &str = "0000000000000000000000000000000000000000000000000000000000000000";

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error(transparent)]
    Io(#[from] IoError),
    #[error("{path}: the top level is not a JSON object")]
    NotAnObject { path: PathBuf },
    #[error("{path}: not JSON")]
    NotJson {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "{path}: expected exactly one `{IMAGE_SHA256}` field of build.json in bytes {start}..{end}, found {found}"
    )]
    Field {
        path: PathBuf,
        start: u64,
        end: u64,
        found: usize,
    },
}

/// Adds `steps` (step name -> output tree hash), the tools tree's hash and
/// the `image_sha256` placeholder to `build_json` (created when missing).
pub fn add_steps(
    build_json: &Path,
    steps: &BTreeMap<String, String>,
    tools_tree: Option<&str>,
) -> Result<(), RecordError> {
    let mut object = match fs::read(build_json) {
        Ok(bytes) => match serde_json::from_slice::<serde_json::Value>(&bytes) {
            Ok(serde_json::Value::Object(object)) => object,
            Ok(_) => {
                return Err(RecordError::NotAnObject {
                    path: build_json.to_path_buf(),
                });
            }
            Err(source) => {
                return Err(RecordError::NotJson {
                    path: build_json.to_path_buf(),
                    source,
                });
            }
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => serde_json::Map::new(),
        Err(e) => return Err(io_err("read", build_json)(e).into()),
    };
    object.extend(step_fields(steps, tools_tree));
    let text =
        serde_json::to_string_pretty(&serde_json::Value::Object(object)).expect("json") + "\n";
    if let Some(parent) = build_json.parent() {
        fs::create_dir_all(parent).map_err(io_err("create", parent))?;
    }
    Ok(fs::write(build_json, text).map_err(io_err("write", build_json))?)
}

/// What [`add_steps`] adds to build.json: `steps`, `tools_tree` (when
/// steps ran) and the `image_sha256` placeholder.
pub fn step_fields(
    steps: &BTreeMap<String, String>,
    tools_tree: Option<&str>,
) -> serde_json::Map<String, serde_json::Value> {
    let mut fields = serde_json::Map::new();
    fields.insert(
        "steps".into(),
        steps
            .iter()
            .map(|(name, tree)| (name.clone(), serde_json::Value::from(tree.clone())))
            .collect::<serde_json::Map<_, _>>()
            .into(),
    );
    if let Some(tools) = tools_tree {
        fields.insert("tools_tree".into(), tools.into());
    }
    fields.insert(IMAGE_SHA256.into(), PLACEHOLDER.into());
    fields
}

fn field(value: &str) -> Vec<u8> {
    format!("\"{IMAGE_SHA256}\": \"{value}\"").into_bytes()
}

/// Finds `"image_sha256": "<value>"` in the part `range` of an image
/// that is fed to it in increasing order, in pieces (matches may span
/// two pieces that follow each other).
struct Finder {
    needle: Vec<u8>,
    range: (u64, u64),
    /// The last `needle.len() - 1` bytes fed, ending at `tail_end`.
    tail: Vec<u8>,
    tail_end: u64,
    found: Vec<u64>,
}

impl Finder {
    fn new(range: (u64, u64), value: &str) -> Self {
        Finder {
            needle: field(value),
            range,
            tail: Vec::new(),
            tail_end: 0,
            found: Vec::new(),
        }
    }

    fn feed(&mut self, at: u64, bytes: &[u8]) {
        let (lo, hi) = (
            at.max(self.range.0),
            (at + bytes.len() as u64).min(self.range.1),
        );
        if lo >= hi {
            return;
        }
        let part = &bytes[(lo - at) as usize..(hi - at) as usize];
        let keep = self.needle.len() - 1;
        let mut joined = if self.tail_end == lo {
            std::mem::take(&mut self.tail)
        } else {
            Vec::new()
        };
        // Matches across the seam, then inside `part`.
        let seam_start = lo - joined.len() as u64;
        joined.extend_from_slice(&part[..part.len().min(keep)]);
        let seam = memchr::memmem::find_iter(&joined, &self.needle);
        let inside = memchr::memmem::find_iter(part, &self.needle);
        let mut found: Vec<u64> = seam.map(|i| seam_start + i as u64).collect();
        found.extend(inside.map(|i| lo + i as u64));
        found.sort_unstable();
        found.dedup();
        self.found.extend(found);
        let source = if part.len() >= keep { part } else { &joined };
        self.tail = source[source.len().saturating_sub(keep)..].to_vec();
        self.tail_end = hi;
    }

    /// Where the value is: exactly one match, or an error.
    fn value_at(self, image: &Path) -> Result<u64, RecordError> {
        match self.found.as_slice() {
            [at] => Ok(at + self.needle.len() as u64 - 65),
            _ => Err(RecordError::Field {
                path: image.to_path_buf(),
                start: self.range.0,
                end: self.range.1,
                found: self.found.len(),
            }),
        }
    }
}

/// Where the field's value is in `range` of the image (exactly one match
/// of `"image_sha256": "<value>"`).
fn locate(image: &Path, range: (u64, u64), value: &str) -> Result<u64, RecordError> {
    use std::os::unix::fs::FileExt;
    let file = File::open(image).map_err(io_err("open", image))?;
    let mut finder = Finder::new(range, value);
    let mut buffer = vec![0u8; 1 << 20];
    let mut at = range.0;
    while at < range.1 {
        let chunk = &mut buffer[..(range.1 - at).min(1 << 20) as usize];
        file.read_exact_at(chunk, at)
            .map_err(io_err("read", image))?;
        finder.feed(at, chunk);
        at += chunk.len() as u64;
    }
    finder.value_at(image)
}

/// The image hash (`hiperiso_stick::image_hash`) of `image`, with
/// `patch` applied.
fn image_hash(
    image: &Path,
    patch: Option<(u64, &[u8])>,
    visit: impl FnMut(u64, &[u8]),
) -> Result<String, RecordError> {
    let file = File::open(image).map_err(io_err("open", image))?;
    let size = file.metadata().map_err(io_err("stat", image))?.len();
    let size = if size == 0 {
        // A block device: its size is where its end is.
        let mut file = &file;
        file.seek(SeekFrom::End(0)).map_err(io_err("seek", image))?
    } else {
        size
    };
    Ok(image_sha256_visiting(&file, size, patch, visit).map_err(io_err("hash", image))?)
}

/// Hashes the image written with the placeholder and writes the hash in
/// its place; `esp` is the ESP's byte range in the image. Returns the
/// hash. The caller syncs the file (`image::write_image_then` does).
pub fn seal_image(image: &Path, esp: (u64, u64)) -> Result<String, RecordError> {
    // One pass: the hash, and the placeholder found in the ESP meanwhile.
    let mut finder = Finder::new(esp, PLACEHOLDER);
    let sha256 = image_hash(image, None, |at, bytes| finder.feed(at, bytes))?;
    let at = finder.value_at(image)?;
    let mut file = File::options()
        .write(true)
        .open(image)
        .map_err(io_err("open", image))?;
    file.seek(SeekFrom::Start(at))
        .map_err(io_err("write", image))?;
    file.write_all(sha256.as_bytes())
        .map_err(io_err("write", image))?;
    Ok(sha256)
}

/// Checks a sealed image (a file or a device): computes the hash of the
/// image with the placeholder put back in place of `recorded`. Returns it.
pub fn check_image(image: &Path, esp: (u64, u64), recorded: &str) -> Result<String, RecordError> {
    let at = locate(image, esp, recorded)?;
    image_hash(image, Some((at, PLACEHOLDER.as_bytes())), |_, _| {})
}

/// What `image` remembers about an image file it wrote, so that a no-op
/// `image` (same inputs, file untouched since) writes nothing: like make,
/// the file's identity and modification time stand for its content.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ImageState {
    /// `payload::trees::image_key` of the inputs.
    pub key: String,
    pub sha256: String,
    pub size: u64,
    pub device: u64,
    pub inode: u64,
    pub mtime_ns: i128,
}

impl ImageState {
    /// The state of `image` now, for `key` and its sealed `sha256`.
    pub fn of(image: &Path, key: &str, sha256: &str) -> Result<Self, RecordError> {
        use std::os::unix::fs::MetadataExt;
        let meta = fs::metadata(image).map_err(io_err("stat", image))?;
        Ok(Self {
            key: key.to_string(),
            sha256: sha256.to_string(),
            size: meta.len(),
            device: meta.dev(),
            inode: meta.ino(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
        })
    }

    /// Where the state of the image at `image` is kept in the cache.
    pub fn path(cache: &Path, image: &Path) -> PathBuf {
        let absolute = std::path::absolute(image).unwrap_or_else(|_| image.to_path_buf());
        let name = crate::hash::sha256_hex(absolute.as_os_str().as_encoded_bytes());
        cache.join("state/images").join(format!("{name}.json"))
    }

    /// The recorded state if the image is still what was written for `key`.
    pub fn up_to_date(cache: &Path, image: &Path, key: &str) -> Option<Self> {
        let recorded: Self =
            serde_json::from_slice(&fs::read(Self::path(cache, image)).ok()?).ok()?;
        let now = Self::of(image, key, &recorded.sha256).ok()?;
        (now == recorded).then_some(recorded)
    }

    pub fn save(&self, cache: &Path, image: &Path) -> Result<(), RecordError> {
        let path = Self::path(cache, image);
        let text = serde_json::to_string_pretty(self).expect("json") + "\n";
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).map_err(io_err("create", dir))?;
        }
        Ok(write_atomic(&path, text.as_bytes())?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hiperiso_stick::image_hash::image_sha256;

    #[test]
    fn seal_then_check_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let json = dir.path().join("build.json");
        fs::write(&json, "{\"manifest_sha256\": \"ab\"}").unwrap();
        let steps = BTreeMap::from([("busybox".to_string(), "11".repeat(32))]);
        add_steps(&json, &steps, Some("tt")).unwrap();
        let value: serde_json::Value = serde_json::from_slice(&fs::read(&json).unwrap()).unwrap();
        assert_eq!(value["steps"]["busybox"], "11".repeat(32));
        assert_eq!(value["manifest_sha256"], "ab");
        assert_eq!(value["tools_tree"], "tt");
        // An "image": 4 KiB of noise, build.json, more noise.
        let mut image = vec![7u8; 4096];
        image.extend(fs::read(&json).unwrap());
        image.extend(vec![9u8; 4096]);
        let path = dir.path().join("x.img");
        fs::write(&path, &image).unwrap();
        let len = image.len() as u64;
        let expected = image_sha256(&File::open(&path).unwrap(), len, None).unwrap();
        let sealed = seal_image(&path, (4000, len)).unwrap();
        assert_eq!(sealed, expected);
        let text = fs::read(&path).unwrap();
        assert!(text.windows(64).any(|w| w == sealed.as_bytes()));
        assert_eq!(check_image(&path, (0, len), &sealed).unwrap(), sealed);
        // Outside the range, or a second sealing: a clear error.
        let err = seal_image(&path, (0, len)).unwrap_err().to_string();
        assert!(err.contains("found 0"), "{err}");
    }

    #[test]
    fn finder_sees_matches_across_pieces_and_only_in_its_range() {
        let needle = field(PLACEHOLDER);
        let mut bytes = vec![b'x'; 300];
        bytes.extend(&needle);
        bytes.extend(vec![b'y'; 77]);
        bytes.extend(&needle);
        bytes.extend(vec![b'z'; 5]);
        let second = (300 + needle.len() + 77) as u64;
        for piece in [1, 2, 7, needle.len() - 1, needle.len(), 64, 1000] {
            let mut finder = Finder::new((0, bytes.len() as u64), PLACEHOLDER);
            for (i, chunk) in bytes.chunks(piece).enumerate() {
                finder.feed((i * piece) as u64, chunk);
            }
            assert_eq!(finder.found, vec![300, second], "pieces of {piece}");
        }
        // The range cuts the first match off; a gap between pieces (a
        // hole) joins nothing.
        let mut finder = Finder::new((301, bytes.len() as u64), PLACEHOLDER);
        finder.feed(0, &bytes);
        assert_eq!(finder.found, vec![second]);
        let mut finder = Finder::new((0, 10_000), PLACEHOLDER);
        finder.feed(0, &bytes[..310]);
        finder.feed(5000, &bytes[310..300 + needle.len()]);
        assert!(finder.found.is_empty());
        assert_eq!(
            finder.value_at(Path::new("x")).unwrap_err().to_string(),
            "x: expected exactly one `image_sha256` field of build.json in bytes 0..10000, found 0"
        );
    }
}
