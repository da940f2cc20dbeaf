//! InRelease: an OpenPGP cleartext-signed Release file, verified against the
//! Debian archive keyring (an OpenPGP binary keyring such as
//! `usr/share/keyrings/debian-archive-keyring.gpg` from the pinned
//! `debian-archive-keyring` package).

use pgp::composed::{CleartextSignedMessage, PublicOrSecret, SignedPublicKey};
use pgp::types::KeyDetails;

#[derive(Debug, thiserror::Error)]
pub enum SignatureError {
    #[error("keyring {keyring}: cannot read it")]
    Keyring {
        keyring: String,
        #[source]
        source: Box<pgp::errors::Error>,
    },
    #[error("keyring {0} holds no usable public key")]
    EmptyKeyring(String),
    #[error("{file}: not an OpenPGP cleartext-signed message")]
    Malformed {
        file: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error(
        "{file}: no signature verifies against the keyring (signed by {issuers}); \
         the file was tampered with, or the keyring is too old for it"
    )]
    Unverified { file: String, issuers: String },
}

/// The archive's public keys.
pub struct Keyring {
    keys: Vec<SignedPublicKey>,
}

impl Keyring {
    /// Loads a binary (or ASCII-armored) OpenPGP keyring. Keys whose self
    /// signatures do not verify are skipped.
    pub fn from_bytes(name: &str, bytes: &[u8]) -> Result<Self, SignatureError> {
        let keyring_error = |source: pgp::errors::Error| SignatureError::Keyring {
            keyring: name.to_string(),
            source: Box::new(source),
        };
        let mut keys = Vec::new();
        let (iter, _) = PublicOrSecret::from_reader_many(bytes).map_err(keyring_error)?;
        for item in iter {
            match item.map_err(keyring_error)? {
                PublicOrSecret::Public(key) => keys.push(key),
                PublicOrSecret::Secret(key) => keys.push(key.to_public_key()),
            }
        }
        keys.retain(|key| key.verify_bindings().is_ok());
        if keys.is_empty() {
            return Err(SignatureError::EmptyKeyring(name.to_string()));
        }
        Ok(Self { keys })
    }

    /// Fingerprints of the primary keys, upper-case hex.
    pub fn fingerprints(&self) -> Vec<String> {
        self.keys
            .iter()
            .map(|key| hex::encode_upper(key.fingerprint().as_bytes()))
            .collect()
    }
}

/// A verified InRelease: the signed text (LF line endings) and the
/// fingerprint of the key whose signature verified.
#[derive(Debug, Clone)]
pub struct Verified {
    pub text: String,
    pub signer: String,
}

/// Verifies a cleartext-signed file. `file` names it in errors. At least one
/// signature must verify against a primary key or subkey of the keyring.
pub fn verify_cleartext(
    file: &str,
    signed: &[u8],
    keyring: &Keyring,
) -> Result<Verified, SignatureError> {
    let malformed = |source: Box<dyn std::error::Error + Send + Sync>| SignatureError::Malformed {
        file: file.to_string(),
        source,
    };
    let text = std::str::from_utf8(signed).map_err(|e| malformed(Box::new(e)))?;
    let (message, _) =
        CleartextSignedMessage::from_string(text).map_err(|e| malformed(Box::new(e)))?;
    for key in &keyring.keys {
        if message.verify(key).is_ok() {
            return Ok(verified(&message, key.fingerprint().as_bytes()));
        }
        for subkey in &key.public_subkeys {
            if message.verify(subkey).is_ok() {
                return Ok(verified(&message, subkey.fingerprint().as_bytes()));
            }
        }
    }
    let mut issuers: Vec<String> = message
        .signatures()
        .iter()
        .flat_map(|signature| {
            let mut ids: Vec<String> = signature
                .issuer_fingerprint()
                .iter()
                .map(|fp| hex::encode_upper(fp.as_bytes()))
                .collect();
            if ids.is_empty() {
                ids = signature
                    .issuer_key_id()
                    .iter()
                    .map(|id| hex::encode_upper(id.as_ref()))
                    .collect();
            }
            ids
        })
        .collect();
    issuers.sort();
    issuers.dedup();
    Err(SignatureError::Unverified {
        file: file.to_string(),
        issuers: if issuers.is_empty() {
            "no issuer".to_string()
        } else {
            issuers.join(", ")
        },
    })
}

fn verified(message: &CleartextSignedMessage, fingerprint: &[u8]) -> Verified {
    Verified {
        text: message.signed_text().replace("\r\n", "\n"),
        signer: hex::encode_upper(fingerprint),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgp::composed::{KeyType, SecretKeyParamsBuilder, SignedSecretKey};
    use pgp::ser::Serialize;
    use rand_chacha::ChaCha8Rng;
    use rand_chacha::rand_core::SeedableRng;

    fn key(seed: u64) -> SignedSecretKey {
        SecretKeyParamsBuilder::default()
            .key_type(KeyType::Ed25519Legacy)
            .can_certify(true)
            .can_sign(true)
            .primary_user_id("Test Archive Key <archive@example.invalid>".into())
            .passphrase(None)
            .build()
            .unwrap()
            .generate(ChaCha8Rng::seed_from_u64(seed))
            .unwrap()
    }

    fn keyring_of(secret: &SignedSecretKey) -> Keyring {
        let public = secret.to_public_key();
        Keyring::from_bytes("test keyring", &public.to_bytes().unwrap()).unwrap()
    }

    const RELEASE: &str = "Origin: Test\nSuite: stable\nSHA256:\n 2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae 3 main/binary-amd64/Packages.xz\n";

    fn signed(secret: &SignedSecretKey) -> String {
        CleartextSignedMessage::sign(
            ChaCha8Rng::seed_from_u64(7),
            RELEASE,
            &secret.primary_key,
            &"".into(),
        )
        .unwrap()
        .to_armored_string(Default::default())
        .unwrap()
    }

    #[test]
    fn verifies_signed_release_and_returns_text() {
        let secret = key(1);
        let keyring = keyring_of(&secret);
        let verified = verify_cleartext("InRelease", signed(&secret).as_bytes(), &keyring).unwrap();
        assert_eq!(verified.text.trim_end(), RELEASE.trim_end());
        assert_eq!(vec![verified.signer], keyring.fingerprints());
    }

    #[test]
    fn tampered_text_or_foreign_key_is_refused() {
        let secret = key(1);
        let tampered = signed(&secret).replace("2c26b46b", "2c26b46c");
        let err =
            verify_cleartext("InRelease", tampered.as_bytes(), &keyring_of(&secret)).unwrap_err();
        assert!(matches!(err, SignatureError::Unverified { .. }), "{err}");
        let err = verify_cleartext(
            "InRelease",
            signed(&secret).as_bytes(),
            &keyring_of(&key(2)),
        )
        .unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains("InRelease: no signature verifies"),
            "{message}"
        );
        let err =
            verify_cleartext("InRelease", RELEASE.as_bytes(), &keyring_of(&secret)).unwrap_err();
        assert!(matches!(err, SignatureError::Malformed { .. }), "{err}");
    }
}
