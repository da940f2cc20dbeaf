//! The deb822 control-file format shared by Release, Packages and Sources:
//! paragraphs separated by blank lines, `Field: value` lines, continuation
//! lines starting with a space or a tab.

use std::collections::BTreeMap;

/// One paragraph. Field names are matched case-insensitively, as dpkg does;
/// they are stored in their original spelling for error messages.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Paragraph {
    fields: BTreeMap<String, (String, String)>,
    /// 1-based line number of the paragraph's first line, for error messages.
    pub line: usize,
}

impl Paragraph {
    /// The value of `name` (case-insensitive). Multi-line values keep their
    /// continuation lines joined with `\n`, with the leading space removed.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .get(&name.to_ascii_lowercase())
            .map(|(_, value)| value.as_str())
    }

    fn insert(&mut self, name: &str, value: String) {
        self.fields
            .insert(name.to_ascii_lowercase(), (name.to_string(), value));
    }
}

/// A line that is neither a field, a continuation nor a blank line.
#[derive(Debug, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct ControlError {
    pub line: usize,
    pub reason: &'static str,
}

/// Splits `text` into paragraphs. Lines starting with `#` are comments.
pub fn parse(text: &str) -> Result<Vec<Paragraph>, ControlError> {
    let mut paragraphs = Vec::new();
    let mut current = Paragraph::default();
    let mut last_field: Option<(String, String)> = None;
    for (index, raw) in text.lines().enumerate() {
        let line_number = index + 1;
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        if line.trim().is_empty() {
            if let Some((name, value)) = last_field.take() {
                current.insert(&name, value);
            }
            if !current.fields.is_empty() {
                paragraphs.push(std::mem::take(&mut current));
            }
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        if line.starts_with([' ', '\t']) {
            let Some((_, value)) = last_field.as_mut() else {
                return Err(ControlError {
                    line: line_number,
                    reason: "continuation line without a field",
                });
            };
            let continuation = &line[1..];
            if !value.is_empty() {
                value.push('\n');
            }
            // A lone "." stands for an empty line inside a multi-line value.
            value.push_str(if continuation == "." {
                ""
            } else {
                continuation
            });
            continue;
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err(ControlError {
                line: line_number,
                reason: "expected `Field: value`",
            });
        };
        if let Some((name, value)) = last_field.take() {
            current.insert(&name, value);
        }
        if current.fields.is_empty() {
            current.line = line_number;
        }
        last_field = Some((name.trim().to_string(), value.trim().to_string()));
    }
    if let Some((name, value)) = last_field.take() {
        current.insert(&name, value);
    }
    if !current.fields.is_empty() {
        paragraphs.push(current);
    }
    Ok(paragraphs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_paragraphs_and_continuations() {
        let text =
            "Package: a\nDescription: short\n long\n .\n more\n\n\nPackage: b\r\nversion: 1\n";
        let paragraphs = parse(text).unwrap();
        assert_eq!(paragraphs.len(), 2);
        assert_eq!(paragraphs[0].get("package"), Some("a"));
        assert_eq!(
            paragraphs[0].get("Description"),
            Some("short\nlong\n\nmore")
        );
        assert_eq!(paragraphs[1].get("Version"), Some("1"));
        assert_eq!(paragraphs[1].line, 8);
    }

    #[test]
    fn rejects_garbage_with_line_number() {
        let err = parse("Package: a\nnot a field\n").unwrap_err();
        assert_eq!(err.line, 2);
        let err = parse(" orphan\n").unwrap_err();
        assert_eq!(err.line, 1);
    }
}
