//! Packages and Sources indices: binary package stanzas with their
//! dependency fields, and source package stanzas with their files.

use super::control::{self, ControlError};
use super::version::{Relation, Version, VersionError};

/// One alternative of a dependency: `name[:arch] [(relation version)]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dependency {
    pub name: String,
    pub constraint: Option<(Relation, Version)>,
}

impl std::fmt::Display for Dependency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.constraint {
            Some((relation, version)) => {
                write!(f, "{} ({} {})", self.name, relation.as_str(), version)
            }
            None => f.write_str(&self.name),
        }
    }
}

/// A dependency clause: any one of the alternatives satisfies it.
pub type Clause = Vec<Dependency>;

/// A virtual package provided by a binary package, optionally versioned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provide {
    pub name: String,
    pub version: Option<Version>,
}

#[derive(Debug, Clone)]
pub struct BinaryPackage {
    pub name: String,
    pub version: Version,
    pub architecture: String,
    pub pre_depends: Vec<Clause>,
    pub depends: Vec<Clause>,
    pub provides: Vec<Provide>,
    /// Pool path relative to the mirror base, e.g. `pool/main/b/busybox/…deb`.
    pub filename: String,
    pub size: u64,
    pub sha256: String,
    /// Source package name (without the version some stanzas append).
    pub source: String,
}

/// A file of a source package (`.dsc`, `.orig.tar.*`, `.debian.tar.*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceFile {
    pub name: String,
    pub size: u64,
    pub sha256: String,
}

#[derive(Debug, Clone)]
pub struct SourcePackage {
    pub name: String,
    pub version: Version,
    /// Pool directory relative to the mirror base.
    pub directory: String,
    pub files: Vec<SourceFile>,
}

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("{index}: {source}")]
    Syntax {
        index: String,
        #[source]
        source: ControlError,
    },
    #[error("{index}: stanza at line {line} ({package}): missing field {field}")]
    MissingField {
        index: String,
        line: usize,
        package: String,
        field: &'static str,
    },
    #[error("{index}: stanza at line {line} ({package}): field {field}: {reason}")]
    BadField {
        index: String,
        line: usize,
        package: String,
        field: &'static str,
        reason: String,
    },
}

struct StanzaContext<'a> {
    index: &'a str,
    paragraph: &'a control::Paragraph,
    package: String,
}

/// The index's stanzas; a syntax error names the index.
fn stanzas(index: &str, text: &str) -> Result<Vec<control::Paragraph>, IndexError> {
    control::parse(text).map_err(|source| IndexError::Syntax {
        index: index.to_string(),
        source,
    })
}

impl<'a> StanzaContext<'a> {
    /// The context of one stanza, named by its `Package` field (returned).
    fn named(
        index: &'a str,
        paragraph: &'a control::Paragraph,
    ) -> Result<(Self, String), IndexError> {
        let mut context = StanzaContext {
            index,
            paragraph,
            package: String::from("?"),
        };
        let name = context.required("Package")?.to_string();
        context.package = name.clone();
        Ok((context, name))
    }
    fn required(&self, field: &'static str) -> Result<&str, IndexError> {
        self.paragraph
            .get(field)
            .ok_or_else(|| IndexError::MissingField {
                index: self.index.to_string(),
                line: self.paragraph.line,
                package: self.package.clone(),
                field,
            })
    }

    fn bad(&self, field: &'static str, reason: impl ToString) -> IndexError {
        IndexError::BadField {
            index: self.index.to_string(),
            line: self.paragraph.line,
            package: self.package.clone(),
            field,
            reason: reason.to_string(),
        }
    }

    fn version(&self, field: &'static str) -> Result<Version, IndexError> {
        Version::parse(self.required(field)?).map_err(|e: VersionError| self.bad(field, e))
    }

    fn size(&self) -> Result<u64, IndexError> {
        self.required("Size")?
            .parse()
            .map_err(|e| self.bad("Size", e))
    }

    fn relations(&self, field: &'static str) -> Result<Vec<Clause>, IndexError> {
        match self.paragraph.get(field) {
            Some(text) => parse_relations(text).map_err(|reason| self.bad(field, reason)),
            None => Ok(Vec::new()),
        }
    }
}

/// Parses a dependency field such as `libc6 (>= 2.34), a | b:any`.
pub fn parse_relations(text: &str) -> Result<Vec<Clause>, String> {
    let mut clauses = Vec::new();
    for clause_text in text.split(',') {
        let clause_text = clause_text.trim();
        if clause_text.is_empty() {
            continue;
        }
        let mut clause = Vec::new();
        for alternative in clause_text.split('|') {
            clause.push(parse_dependency(alternative.trim())?);
        }
        clauses.push(clause);
    }
    Ok(clauses)
}

fn parse_dependency(text: &str) -> Result<Dependency, String> {
    // Drop architecture lists `[…]` and build-profile restrictions `<…>`,
    // which follow the version constraint (whose `<<` must stay).
    let mut depth = 0;
    let end = text
        .char_indices()
        .find(|&(_, c)| {
            match c {
                '(' => depth += 1,
                ')' => depth -= 1,
                _ => {}
            }
            depth == 0 && (c == '[' || c == '<')
        })
        .map_or(text.len(), |(index, _)| index);
    let text = text[..end].trim();
    let (name_part, constraint) = match text.split_once('(') {
        Some((name, rest)) => {
            let inner = rest
                .strip_suffix(')')
                .ok_or_else(|| format!("unbalanced parenthesis in {text:?}"))?
                .trim();
            let split = inner
                .find(|c: char| !matches!(c, '<' | '>' | '='))
                .ok_or_else(|| format!("no version in {text:?}"))?;
            let relation = Relation::parse(&inner[..split])
                .ok_or_else(|| format!("unknown relation in {text:?}"))?;
            let version = Version::parse(&inner[split..]).map_err(|e| e.to_string())?;
            (name.trim(), Some((relation, version)))
        }
        None => (text, None),
    };
    // Multi-arch qualifiers (`:any`, `:native`, `:amd64`) name the same package
    // for a single-architecture root.
    let name = name_part.split(':').next().unwrap_or("").trim();
    if name.is_empty() {
        return Err(format!("empty package name in {text:?}"));
    }
    Ok(Dependency {
        name: name.to_string(),
        constraint,
    })
}

fn parse_provides(text: &str) -> Result<Vec<Provide>, String> {
    parse_relations(text)?
        .into_iter()
        .flatten()
        .map(|dependency| match dependency.constraint {
            None => Ok(Provide {
                name: dependency.name,
                version: None,
            }),
            Some((Relation::Exactly, version)) => Ok(Provide {
                name: dependency.name,
                version: Some(version),
            }),
            Some(_) => Err(format!("Provides of {} must use `=`", dependency.name)),
        })
        .collect()
}

/// Parses a Packages index. `index` names it in error messages.
pub fn parse_packages(index: &str, text: &str) -> Result<Vec<BinaryPackage>, IndexError> {
    let paragraphs = stanzas(index, text)?;
    let mut packages = Vec::with_capacity(paragraphs.len());
    for paragraph in &paragraphs {
        let (context, name) = StanzaContext::named(index, paragraph)?;
        let source = paragraph
            .get("Source")
            .and_then(|s| s.split_whitespace().next())
            .unwrap_or(&name)
            .to_string();
        let sha256 = context.required("SHA256")?.to_ascii_lowercase();
        if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(context.bad("SHA256", "not 64 hex digits"));
        }
        packages.push(BinaryPackage {
            version: context.version("Version")?,
            architecture: context.required("Architecture")?.to_string(),
            pre_depends: context.relations("Pre-Depends")?,
            depends: context.relations("Depends")?,
            provides: match paragraph.get("Provides") {
                Some(text) => parse_provides(text).map_err(|r| context.bad("Provides", r))?,
                None => Vec::new(),
            },
            filename: context.required("Filename")?.to_string(),
            size: context.size()?,
            sha256,
            source,
            name,
        });
    }
    Ok(packages)
}

/// Parses a Sources index.
pub fn parse_sources(index: &str, text: &str) -> Result<Vec<SourcePackage>, IndexError> {
    let paragraphs = stanzas(index, text)?;
    let mut sources = Vec::with_capacity(paragraphs.len());
    for paragraph in &paragraphs {
        let (context, name) = StanzaContext::named(index, paragraph)?;
        let mut files = Vec::new();
        for line in context.required("Checksums-Sha256")?.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [sha256, size, file] = fields[..] else {
                if line.trim().is_empty() {
                    continue;
                }
                return Err(context.bad("Checksums-Sha256", format!("bad line {line:?}")));
            };
            files.push(SourceFile {
                name: file.to_string(),
                size: size
                    .parse()
                    .map_err(|e| context.bad("Checksums-Sha256", e))?,
                sha256: sha256.to_ascii_lowercase(),
            });
        }
        sources.push(SourcePackage {
            version: context.version("Version")?,
            directory: context.required("Directory")?.to_string(),
            files,
            name,
        });
    }
    Ok(sources)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "9e0b5aabb2465b3d2e7a7fe27f9913846277833f7a2826e7767acccff5b588c5";

    #[test]
    fn parses_binary_stanza() {
        let text = format!(
            "Package: qemu-system-x86\nSource: qemu (1:7.2+dfsg-7)\nVersion: 1:7.2+dfsg-7+b3\n\
             Architecture: amd64\nPre-Depends: dpkg (>= 1.17)\n\
             Depends: libc6 (>= 2.34), seabios [amd64], libfoo:any | libbar (<< 2~) <!nocheck>\n\
             Provides: qemu-kvm, qemu-x (= 1.0)\nFilename: pool/main/q/qemu/x.deb\nSize: 42\nSHA256: {SHA}\n"
        );
        let packages = parse_packages("Packages", &text).unwrap();
        let package = &packages[0];
        assert_eq!(package.source, "qemu");
        assert_eq!(package.depends.len(), 3);
        assert_eq!(package.depends[2][0].name, "libfoo");
        assert_eq!(package.depends[2][1].to_string(), "libbar (<< 2~)");
        assert_eq!(package.pre_depends[0][0].to_string(), "dpkg (>= 1.17)");
        assert_eq!(
            package.provides[1].version.as_ref().unwrap().as_str(),
            "1.0"
        );
        assert_eq!(package.size, 42);
    }

    #[test]
    fn missing_field_names_package_and_field() {
        let err = parse_packages("main/Packages", "Package: x\nVersion: 1\n").unwrap_err();
        let message = err.to_string();
        assert!(message.contains("main/Packages"), "{message}");
        assert!(message.contains("(x)"), "{message}");
        assert!(message.contains("SHA256"), "{message}");
    }

    #[test]
    fn parses_sources_stanza() {
        let text = format!(
            "Package: busybox\nVersion: 1:1.35.0-4\nDirectory: pool/main/b/busybox\n\
             Checksums-Sha256:\n {SHA} 2000 busybox_1.35.0-4.dsc\n {SHA} 9000 busybox_1.35.0.orig.tar.bz2\n"
        );
        let sources = parse_sources("Sources", &text).unwrap();
        assert_eq!(sources[0].files.len(), 2);
        assert_eq!(sources[0].files[1].name, "busybox_1.35.0.orig.tar.bz2");
        assert_eq!(sources[0].files[1].size, 9000);
    }
}
