//! Signed step records: who vouches that a step key gives a tree.
//!
//! A shared step is used only when its record (key -> tree hash) carries an
//! ed25519 signature by a key that the manifest's `[cache] trusted-keys`
//! lists, as Nix binary caches require `trusted-public-keys`.
//!
//! Key files, one line each (written by `hiperiso-build keys`):
//!
//! ```text
//! cache-signing.ed25519      NAME:<64 hex digits: the secret seed>
//! cache-signing.ed25519.pub  NAME:<64 hex digits: the public key>
//! ```
//!
//! A `trusted-keys` entry is the text of a `.pub` file. The signature
//! covers `hiperiso step record v1\nstep S\nkey K\ntree T\n`.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use hiperiso_stick::io::{IoError, io_err};
use serde::{Deserialize, Serialize};

use crate::steps::StepRecord;

/// The key pair's file name (the public half adds `.pub`).
pub const KEY_FILE: &str = "cache-signing.ed25519";

#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error(transparent)]
    Io(#[from] IoError),
    #[error("{where_}: `{text}` is not a key (expected NAME:<64 hex digits>)")]
    BadKey { where_: String, text: String },
    #[error("{0} exists already: keys are never overwritten (move it away first)")]
    Exists(PathBuf),
}

/// Why a record was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the record of step `{step}` (key {key}) is not signed")]
    Unsigned { step: String, key: String },
    #[error(
        "the record of step `{step}` (key {key}) is signed by key `{signer}`, which \
         [cache] trusted-keys does not list"
    )]
    UnknownKey {
        step: String,
        key: String,
        signer: String,
    },
    #[error(
        "the record of step `{step}` (key {key}) has a signature that key `{signer}` did not make"
    )]
    BadSignature {
        step: String,
        key: String,
        signer: String,
    },
    #[error("the record is not a hiperiso step record: {0}")]
    Malformed(String),
}

/// A named ed25519 public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    pub name: String,
    key: VerifyingKey,
}

impl PublicKey {
    /// Parses `NAME:HEX`; `where_` names the file or field in errors.
    pub fn parse(text: &str, where_: &str) -> Result<Self, TrustError> {
        let (name, bytes) = parse_named(text, where_)?;
        let key = VerifyingKey::from_bytes(&bytes).map_err(|_| TrustError::BadKey {
            where_: where_.to_string(),
            text: text.trim().to_string(),
        })?;
        Ok(Self { name, key })
    }

    pub fn text(&self) -> String {
        format!("{}:{}", self.name, hex::encode(self.key.as_bytes()))
    }
}

/// A named ed25519 signing key.
pub struct SecretKey {
    pub name: String,
    key: SigningKey,
}

impl SecretKey {
    /// A fresh key from the kernel's random source.
    pub fn generate(name: &str) -> Result<Self, TrustError> {
        let mut seed = [0u8; 32];
        let path = Path::new("/dev/urandom");
        fs::File::open(path)
            .and_then(|mut f| f.read_exact(&mut seed))
            .map_err(io_err("read", path))?;
        Ok(Self {
            name: name.to_string(),
            key: SigningKey::from_bytes(&seed),
        })
    }

    pub fn read(path: &Path) -> Result<Self, TrustError> {
        let text = fs::read_to_string(path).map_err(io_err("read", path))?;
        let (name, seed) = parse_named(&text, &path.display().to_string())?;
        Ok(Self {
            name,
            key: SigningKey::from_bytes(&seed),
        })
    }

    pub fn public(&self) -> PublicKey {
        PublicKey {
            name: self.name.clone(),
            key: self.key.verifying_key(),
        }
    }

    /// Writes `dir/cache-signing.ed25519` (mode 600) and its `.pub`;
    /// refuses to overwrite either.
    pub fn write(&self, dir: &Path) -> Result<(PathBuf, PathBuf), TrustError> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        fs::create_dir_all(dir).map_err(io_err("create", dir))?;
        let secret = dir.join(KEY_FILE);
        let public = dir.join(format!("{KEY_FILE}.pub"));
        for path in [&secret, &public] {
            if fs::symlink_metadata(path).is_ok() {
                return Err(TrustError::Exists(path.clone()));
            }
        }
        let text = format!("{}:{}\n", self.name, hex::encode(self.key.to_bytes()));
        fs::File::options()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&secret)
            .and_then(|mut f| f.write_all(text.as_bytes()))
            .map_err(io_err("write", &secret))?;
        fs::write(&public, format!("{}\n", self.public().text()))
            .map_err(io_err("write", &public))?;
        Ok((secret, public))
    }

    pub fn sign(&self, record: StepRecord) -> SignedRecord {
        let signature = self.key.sign(&message(&record));
        SignedRecord {
            record,
            signature: Some(RecordSignature {
                key: self.name.clone(),
                ed25519: hex::encode(signature.to_bytes()),
            }),
        }
    }
}

fn parse_named(text: &str, where_: &str) -> Result<(String, [u8; 32]), TrustError> {
    let bad = || TrustError::BadKey {
        where_: where_.to_string(),
        text: text.trim().to_string(),
    };
    let (name, hex_part) = text.trim().split_once(':').ok_or_else(bad)?;
    let bytes: [u8; 32] = hex::decode(hex_part)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(bad)?;
    if name.is_empty() || name.contains(char::is_whitespace) {
        return Err(bad());
    }
    Ok((name.to_string(), bytes))
}

/// The bytes a signature covers.
fn message(record: &StepRecord) -> Vec<u8> {
    format!(
        "hiperiso step record v1\nstep {}\nkey {}\ntree {}\n",
        record.step, record.key, record.tree
    )
    .into_bytes()
}

/// A step record and who signed it: the config blob of a shared step.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SignedRecord {
    pub record: StepRecord,
    #[serde(default)]
    pub signature: Option<RecordSignature>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RecordSignature {
    /// The signing key's name.
    pub key: String,
    /// Hex of the 64-byte signature.
    pub ed25519: String,
}

impl SignedRecord {
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("records serialize")
    }

    /// Parses a config blob and checks its signature against `trusted`.
    pub fn verify(bytes: &[u8], trusted: &[PublicKey]) -> Result<StepRecord, Refusal> {
        let signed: SignedRecord =
            serde_json::from_slice(bytes).map_err(|e| Refusal::Malformed(e.to_string()))?;
        let record = signed.record;
        let Some(signature) = signed.signature else {
            return Err(Refusal::Unsigned {
                step: record.step,
                key: record.key,
            });
        };
        let candidates: Vec<&PublicKey> =
            trusted.iter().filter(|k| k.name == signature.key).collect();
        if candidates.is_empty() {
            return Err(Refusal::UnknownKey {
                step: record.step,
                key: record.key,
                signer: signature.key,
            });
        }
        let valid = hex::decode(&signature.ed25519)
            .ok()
            .and_then(|b| Signature::from_slice(&b).ok())
            .is_some_and(|sig| {
                let message = message(&record);
                candidates
                    .iter()
                    .any(|k| k.key.verify(&message, &sig).is_ok())
            });
        if !valid {
            return Err(Refusal::BadSignature {
                step: record.step,
                key: record.key,
                signer: signature.key,
            });
        }
        Ok(record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> StepRecord {
        StepRecord {
            step: "busybox".into(),
            key: "k".repeat(64),
            tree: "t".repeat(64),
            inputs: "i".into(),
            upstream: Default::default(),
            seconds: 1.0,
        }
    }

    #[test]
    fn signatures_are_checked_against_trusted_keys() {
        let alice = SecretKey::generate("alice").unwrap();
        let mallory = SecretKey::generate("mallory").unwrap();
        let trusted = [alice.public()];
        let signed = alice.sign(record()).to_json();
        assert_eq!(SignedRecord::verify(&signed, &trusted).unwrap(), record());

        let refusal = SignedRecord::verify(&mallory.sign(record()).to_json(), &trusted);
        assert!(matches!(&refusal, Err(Refusal::UnknownKey { signer, .. }) if signer == "mallory"));
        assert!(refusal.unwrap_err().to_string().contains("`mallory`"));

        // Another key under a trusted name.
        let impostor = SecretKey::generate("alice").unwrap();
        let refusal = SignedRecord::verify(&impostor.sign(record()).to_json(), &trusted);
        assert!(matches!(refusal, Err(Refusal::BadSignature { .. })));

        // A signed record whose tree was changed afterwards.
        let mut changed = alice.sign(record());
        changed.record.tree = "x".repeat(64);
        let refusal = SignedRecord::verify(&changed.to_json(), &trusted);
        assert!(matches!(refusal, Err(Refusal::BadSignature { .. })));

        let unsigned = SignedRecord {
            record: record(),
            signature: None,
        };
        let refusal = SignedRecord::verify(&unsigned.to_json(), &trusted);
        assert!(matches!(refusal, Err(Refusal::Unsigned { .. })));
    }

    #[test]
    fn key_files_round_trip_and_are_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let key = SecretKey::generate("ci-1").unwrap();
        let (secret, public) = key.write(dir.path()).unwrap();
        let read = SecretKey::read(&secret).unwrap();
        assert_eq!(read.public(), key.public());
        let text = fs::read_to_string(&public).unwrap();
        assert_eq!(PublicKey::parse(&text, "pub").unwrap(), key.public());
        assert!(matches!(
            key.write(dir.path()),
            Err(TrustError::Exists(p)) if p == secret
        ));
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(&secret).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let bad = PublicKey::parse("nohex", "hiperiso.toml: [cache] trusted-keys");
        assert!(bad.unwrap_err().to_string().contains("trusted-keys"));
    }
}
