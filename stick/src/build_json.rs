//! Reading the ESP's build record, [`BUILD_JSON`]: its `"hiperiso"` object
//! marks a stick as made by hiperiso (`install --update` refuses others) and
//! `inspect` prints its version and hashes. The builder writes it.

use serde::{Deserialize, Serialize};

pub use crate::paths::esp::BUILD_JSON;

/// The key of the object that marks a hiperiso stick.
pub const MARKER_KEY: &str = "hiperiso";

/// Why a build.json carries no marker.
#[derive(Debug, thiserror::Error)]
pub enum MarkerError {
    #[error("{BUILD_JSON} is not JSON")]
    NotJson(#[source] serde_json::Error),
    #[error("{BUILD_JSON} has no \"{MARKER_KEY}\" key")]
    NoMarker,
}

/// The `"hiperiso"` object of build.json: version, inputs and the hashes of
/// what was built. Kept whole, since the builder adds fields freely.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct BuildMarker(pub serde_json::Value);

impl BuildMarker {
    /// The `"hiperiso"` marker of a build.json's bytes.
    pub fn parse(bytes: &[u8]) -> Result<BuildMarker, MarkerError> {
        let json: serde_json::Value =
            serde_json::from_slice(bytes).map_err(MarkerError::NotJson)?;
        json.get(MARKER_KEY)
            .cloned()
            .map(BuildMarker)
            .ok_or(MarkerError::NoMarker)
    }

    /// The hiperiso version that built the stick, when recorded.
    pub fn version(&self) -> Option<&str> {
        self.0.get("version").and_then(|v| v.as_str())
    }

    /// One line about the build: `hiperiso <version>`.
    pub fn summary(&self) -> String {
        format!("hiperiso {}", self.version().unwrap_or("unknown"))
    }

    /// Every string leaf whose key mentions a hash, with its JSON path
    /// (`outputs.list[0].sha256`).
    pub fn hashes(&self) -> Vec<(String, String)> {
        fn walk(value: &serde_json::Value, path: String, out: &mut Vec<(String, String)>) {
            match value {
                serde_json::Value::Object(map) => {
                    for (key, v) in map {
                        let p = if path.is_empty() {
                            key.clone()
                        } else {
                            format!("{path}.{key}")
                        };
                        let lower = key.to_ascii_lowercase();
                        match v {
                            serde_json::Value::String(s)
                                if lower.contains("sha256") || lower.contains("hash") =>
                            {
                                out.push((p, s.clone()))
                            }
                            _ => walk(v, p, out),
                        }
                    }
                }
                serde_json::Value::Array(items) => {
                    for (i, v) in items.iter().enumerate() {
                        walk(v, format!("{path}[{i}]"), out);
                    }
                }
                _ => {}
            }
        }
        let mut out = Vec::new();
        walk(&self.0, String::new(), &mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marker_version_and_hashes() {
        let bytes = br#"{"hiperiso": {
            "version": "0.1.0",
            "outputs": {"vmlinuz": {"sha256": "aa"}, "list": [{"hash": "bb"}]},
            "lock_sha256": "cc"
        }, "other": 1}"#;
        let marker = BuildMarker::parse(bytes).unwrap();
        assert_eq!(marker.version(), Some("0.1.0"));
        assert_eq!(marker.summary(), "hiperiso 0.1.0");
        let hashes = marker.hashes();
        assert!(hashes.contains(&("outputs.vmlinuz.sha256".into(), "aa".into())));
        assert!(hashes.contains(&("outputs.list[0].hash".into(), "bb".into())));
        assert!(hashes.contains(&("lock_sha256".into(), "cc".into())));
    }

    #[test]
    fn missing_marker_and_bad_json_are_told_apart() {
        assert!(matches!(
            BuildMarker::parse(br#"{"other": {}}"#),
            Err(MarkerError::NoMarker)
        ));
        let error = BuildMarker::parse(b"{").unwrap_err();
        assert!(matches!(error, MarkerError::NotJson(_)));
        assert_eq!(error.to_string(), "EFI/hiperiso/build.json is not JSON");
        // Any value counts as the marker; a version that is not a
        // string reads as unknown.
        let odd = BuildMarker::parse(br#"{"hiperiso": {"version": 3}}"#).unwrap();
        assert_eq!(odd.summary(), "hiperiso unknown");
        assert!(BuildMarker::parse(br#"{"hiperiso": null}"#).is_ok());
    }
}
