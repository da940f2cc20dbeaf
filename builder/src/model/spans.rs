//! Errors of the manifest, located: file, line, column and the dotted
//! field of the offending value.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("cannot read manifest {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}", .0)]
    Invalid(Box<Invalid>),
    #[error("{path}: profile `{profile}` is not defined (profiles: {known})")]
    UnknownProfile {
        path: PathBuf,
        profile: String,
        known: String,
    },
    #[error("{path}: no source named `{name}` (sources: {known})")]
    UnknownSource {
        path: PathBuf,
        name: String,
        known: String,
    },
}

/// A located validation error: file, line, column, field and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub path: PathBuf,
    /// 1-based; 0 when the position is unknown.
    pub line: usize,
    pub column: usize,
    /// Dotted key path such as `sources.linux.sha256` (may be empty).
    pub field: String,
    pub message: String,
    /// The offending line of the file, for context.
    pub snippet: String,
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.path.display(), self.line, self.column)?;
        if !self.field.is_empty() {
            write!(f, "{}: ", self.field)?;
        }
        write!(f, "{}", self.message)?;
        if !self.snippet.is_empty() {
            write!(f, "\n  {:>4} | {}", self.line, self.snippet)?;
        }
        Ok(())
    }
}

fn line_col(text: &str, offset: usize) -> (usize, usize, String) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    let line_end = text[line_start..]
        .find('\n')
        .map_or(text.len(), |i| line_start + i);
    (
        line,
        column,
        text[line_start..line_end].trim_end().to_string(),
    )
}

pub(crate) fn invalid(text: &str, path: &Path, span: Range<usize>, message: &str) -> ManifestError {
    let (line, column, snippet) = line_col(text, span.start);
    let field = toml_edit::Document::parse(text)
        .map(|doc| field_at(doc.as_item(), span.start, String::new()))
        .unwrap_or_default();
    ManifestError::Invalid(Box::new(Invalid {
        path: path.to_path_buf(),
        line,
        column,
        field,
        message: message.to_string(),
        snippet,
    }))
}

/// The dotted path of the deepest key whose key or value contains `offset`.
fn field_at(item: &toml_edit::Item, offset: usize, prefix: String) -> String {
    let contains = |span: Option<Range<usize>>| {
        span.is_some_and(|s| s.contains(&offset) || (s.start == offset && s.is_empty()))
    };
    let join = |key: &str| {
        if prefix.is_empty() {
            key.to_string()
        } else {
            format!("{prefix}.{key}")
        }
    };
    let mut best = prefix.clone();
    if let Some(table) = item.as_table_like() {
        for (key, child) in table.iter() {
            let key_span = table.get_key_value(key).and_then(|(k, _)| k.span());
            if contains(key_span) {
                return join(key);
            }
            if contains(child.span()) {
                best = field_at(child, offset, join(key));
            } else if let Some(found) = child
                .as_table_like()
                .map(|_| field_at(child, offset, join(key)))
                .filter(|found| *found != join(key))
            {
                best = found;
            }
        }
    } else if let Some(array) = item.as_array() {
        for (i, value) in array.iter().enumerate() {
            if contains(value.span()) {
                return join(&i.to_string());
            }
        }
    }
    best
}

/// Builds an [`Invalid`] pointing at the value of a dotted key path
/// (array indices as decimal strings).
pub(crate) fn locate(text: &str, path: &Path, keys: &[&str], message: String) -> Invalid {
    let mut offset = 0;
    if let Ok(doc) = toml_edit::Document::parse(text) {
        let mut item = Some(doc.as_item());
        for key in keys {
            let Some(current) = item else { break };
            if let Some(span) = current.span() {
                offset = span.start;
            }
            let next = match (
                current.as_table_like(),
                current.as_array(),
                key.parse::<usize>(),
            ) {
                (Some(table), _, _) => {
                    if let Some(span) = table.get_key_value(key).and_then(|(k, _)| k.span()) {
                        offset = span.start;
                    }
                    table.get(key)
                }
                (None, Some(array), Ok(i)) => {
                    if let Some(span) = array.get(i).and_then(|v| v.span()) {
                        offset = span.start;
                    }
                    None
                }
                _ => None,
            };
            item = next;
        }
    }
    let (line, column, snippet) = line_col(text, offset);
    Invalid {
        path: path.to_path_buf(),
        line,
        column,
        field: keys.join("."),
        message,
        snippet,
    }
}
