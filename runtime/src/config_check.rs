//! `hiperiso-build config check FILE`: every problem hiperiso-init would
//! meet in a `hiperiso.json` (bad JSON, unknown keys, bad values), each
//! with the line of its key, before the file goes onto a stick.
//!
//! The problems are [`Config::load`]'s own warnings, so the check and the
//! stick can never disagree; this module only finds each key's line.

use std::fmt;

use crate::config::Config;

/// The JSON Schema of `hiperiso.json`, written next to it on the data
/// partition so that editors validate the file as it is typed.
pub const SCHEMA: &str = include_str!("../schema/hiperiso.schema.json");

/// One problem: the key (empty for a syntax error) and its line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub line: usize,
    /// As the warnings write it: `control.default_ram`,
    /// `iso_overrides."win*.iso".firmware`.
    pub key: String,
    pub message: String,
}

/// Every problem of `text` (the content of `file`), in line order.
pub fn check(file: &str, text: &str) -> Vec<Problem> {
    let loaded = Config::load(file, text);
    if let Some(e) = loaded.error {
        let problem = Problem {
            line: e.line,
            key: String::new(),
            message: format!("invalid JSON at column {}: {}", e.column, e.message),
        };
        return vec![problem];
    }
    let lines = key_lines(text);
    let prefix = format!("{file}: ");
    let mut problems: Vec<Problem> = (loaded.warnings.iter())
        .map(|warning| {
            let rest = warning.strip_prefix(&prefix).unwrap_or(warning);
            // The longest key the warning starts with.
            let found = (lines.iter())
                .filter(|(key, _)| {
                    rest.strip_prefix(key.as_str())
                        .is_some_and(|r| r.starts_with(": "))
                })
                .max_by_key(|(key, _)| key.len());
            match found {
                Some((key, line)) => Problem {
                    line: *line,
                    key: key.clone(),
                    message: rest[key.len() + 2..].to_string(),
                },
                None => Problem {
                    line: 1,
                    key: String::new(),
                    message: rest.to_string(),
                },
            }
        })
        .collect();
    problems.sort_by_key(|p| p.line);
    problems
}

/// Formats problems as `FILE:LINE: KEY: MESSAGE`.
pub struct Report<'a>(pub &'a str, pub &'a [Problem]);

impl fmt::Display for Report<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for p in self.1 {
            match p.key.as_str() {
                "" => writeln!(f, "{}:{}: {}", self.0, p.line, p.message)?,
                key => writeln!(f, "{}:{}: {key}: {}", self.0, p.line, p.message)?,
            }
        }
        Ok(())
    }
}

/// Each object key of a valid JSON text with the line it starts on, named
/// as [`Config::load`]'s warnings name it: segments joined by `.`, the
/// globs under `iso_overrides` quoted.
fn key_lines(text: &str) -> Vec<(String, usize)> {
    enum Frame {
        Object {
            key: Option<String>,
            expect_key: bool,
        },
        Array,
    }
    let name = |stack: &[Frame], last: &str| {
        let mut segments: Vec<&str> = (stack.iter())
            .filter_map(|f| match f {
                Frame::Object { key, .. } => key.as_deref(),
                Frame::Array => None,
            })
            .collect();
        segments.push(last);
        let mut out = String::new();
        for (i, s) in segments.iter().enumerate() {
            if i > 0 {
                out.push('.');
            }
            if i == 1 && segments[0] == "iso_overrides" {
                out.push_str(&format!("{s:?}"));
            } else {
                out.push_str(s);
            }
        }
        out
    };
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut stack: Vec<Frame> = Vec::new();
    let (mut i, mut line) = (0, 1);
    while i < bytes.len() {
        match bytes[i] {
            b'\n' => line += 1,
            b'{' => stack.push(Frame::Object {
                key: None,
                expect_key: true,
            }),
            b'[' => stack.push(Frame::Array),
            b'}' | b']' => {
                stack.pop();
            }
            b',' => {
                if let Some(Frame::Object { expect_key, .. }) = stack.last_mut() {
                    *expect_key = true;
                }
            }
            b':' => {
                if let Some(Frame::Object { expect_key, .. }) = stack.last_mut() {
                    *expect_key = false;
                }
            }
            b'"' => {
                let start = i;
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
                let raw = &text[start..=i.min(bytes.len() - 1)];
                let n = stack.len();
                if let Some(Frame::Object {
                    expect_key: true, ..
                }) = stack.last()
                {
                    let key: String = serde_json::from_str(raw).unwrap_or_default();
                    out.push((name(&stack[..n - 1], &key), line));
                    if let Some(Frame::Object { key: slot, .. }) = stack.last_mut() {
                        *slot = Some(key);
                    }
                }
            }
            _ => {}
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_name_line_and_key() {
        let text = r#"{
  "control": {
    "default_ram": 0,
    "colour": "blue"
  },
  "iso_overrides": {
    "win*.iso": {
      "firmware": "coreboot"
    }
  },
  "extra": [1, {"control": 1}]
}"#;
        let problems = check("h.json", text);
        let report = Report("h.json", &problems).to_string();
        let lines: Vec<&str> = report.lines().collect();
        assert_eq!(lines.len(), 4, "{report}");
        assert!(
            lines[0].starts_with("h.json:3: control.default_ram: expected an integer"),
            "{report}"
        );
        assert!(
            lines[1].starts_with("h.json:4: control.colour: unknown key"),
            "{report}"
        );
        assert!(
            lines[2].starts_with(
                "h.json:8: iso_overrides.\"win*.iso\".firmware: unknown firmware \"coreboot\""
            ),
            "{report}"
        );
        assert!(
            lines[3].starts_with("h.json:11: extra: unknown key"),
            "{report}"
        );
    }

    #[test]
    fn syntax_errors_name_the_line() {
        let problems = check("h.json", "{\n  \"control\": {\n    \"a\": ,\n");
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].line, 3);
        assert!(
            problems[0].message.starts_with("invalid JSON at column"),
            "{problems:?}"
        );
    }

    #[test]
    fn the_example_is_clean() {
        let example = include_str!("../../overlays/data/hiperiso/hiperiso.json.example");
        assert_eq!(check("example", example), []);
    }

    /// Every key the schema allows is one the loader knows.
    #[test]
    fn the_schema_names_the_loaders_keys() {
        let schema: serde_json::Value = serde_json::from_str(SCHEMA).unwrap();
        let keys = |pointer: &str| -> Vec<String> {
            let props = schema.pointer(pointer).unwrap().as_object().unwrap();
            props.keys().cloned().collect()
        };
        let mut documents = Vec::new();
        for key in keys("/properties/control/properties") {
            documents.push(format!(r#"{{"control": {{"{key}": null}}}}"#));
        }
        for key in keys("/properties/control_ext/properties") {
            documents.push(format!(r#"{{"control_ext": {{"{key}": null}}}}"#));
        }
        for key in keys("/$defs/override/properties") {
            documents.push(format!(
                r#"{{"iso_overrides": {{"*": {{"{key}": null}}}}}}"#
            ));
        }
        assert!(documents.len() > 15);
        for doc in documents {
            let problems = check("s", &doc);
            assert!(
                problems.iter().all(|p| !p.message.contains("unknown key")),
                "{doc}: {problems:?}"
            );
        }
        assert!(!check("s", r#"{"control": {"nope": 1}}"#).is_empty());
    }
}
