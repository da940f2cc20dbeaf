//! A manifest's `[sources.*]`: one pinned upstream input, where its bytes
//! come from (URL templates, Debian pool files) and how newer versions are
//! found.

use serde::Deserialize;

use crate::hash::is_sha256_hex;

/// Environment variable naming Debian mirror base URLs (`[mirrors]`
/// overrides it).
pub const DEBIAN_MIRROR_ENV: &str = "HIPERISO_DEBIAN_MIRROR";

/// One pinned upstream input.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", try_from = "RawSource")]
pub struct Source {
    pub version: String,
    pub origin: Origin,
    /// Expected sha256 (lowercase hex); `None` until `pin` fills it in.
    pub sha256: Option<String>,
    pub size: Option<u64>,
    /// More URL templates, tried in order after the primary one.
    pub mirrors: Vec<String>,
    pub watch: Option<Watch>,
}

/// Where a source's bytes come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A URL template with `{version}` (and optionally `{debian}`, `{name}`).
    Url(String),
    /// A file of a Debian source package in the pool:
    /// `{debian}/pool/<component>/<prefix>/<package>/<file>`.
    DebianSource {
        package: String,
        component: String,
        /// File name template, e.g. `busybox_{version}.orig.tar.bz2`.
        file: String,
    },
}

/// How `bump --check` and `bump --latest` find newer versions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Watch {
    /// A directory index page; `regex` has one capture group: the version.
    Index { index: String, regex: String },
    /// The Sources index of a Debian suite; `package` defaults to the
    /// source's `debian-source` package, else its name.
    DebianSources {
        suite: String,
        package: Option<String>,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawSource {
    version: String,
    url: Option<String>,
    debian_source: Option<String>,
    component: Option<String>,
    file: Option<String>,
    sha256: Option<String>,
    size: Option<u64>,
    #[serde(default)]
    mirrors: Vec<String>,
    watch: Option<RawWatch>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawWatch {
    index: Option<String>,
    regex: Option<String>,
    debian_sources: Option<String>,
    package: Option<String>,
}

impl TryFrom<RawSource> for Source {
    type Error = String;

    fn try_from(raw: RawSource) -> Result<Self, String> {
        if raw.version.trim().is_empty() || raw.version.contains(['/', ' ']) {
            return Err(format!(
                "`version` {:?} must be non-empty, without spaces or slashes",
                raw.version
            ));
        }
        let origin = match (raw.url, raw.debian_source) {
            (Some(url), None) => {
                if raw.file.is_some() || raw.component.is_some() {
                    return Err(
                        "`file` and `component` go with `debian-source`, not with `url`".into(),
                    );
                }
                check_template(&url, "url")?;
                Origin::Url(url)
            }
            (None, Some(package)) => {
                let file = raw.file.ok_or(
                    "`debian-source` needs `file`, e.g. \"{package}_{version}.orig.tar.xz\"",
                )?;
                check_template(&file, "file")?;
                Origin::DebianSource {
                    package,
                    component: raw.component.unwrap_or_else(|| "main".into()),
                    file,
                }
            }
            (Some(_), Some(_)) => {
                return Err("give either `url` or `debian-source`, not both".into());
            }
            (None, None) => {
                return Err("missing `url` (a template with {version}) or `debian-source`".into());
            }
        };
        if let Some(sha) = &raw.sha256
            && !is_sha256_hex(sha)
        {
            return Err(format!("`sha256` {sha:?} is not 64 lowercase hex digits"));
        }
        for mirror in &raw.mirrors {
            check_template(mirror, "mirrors")?;
        }
        let watch = raw.watch.map(Watch::try_from).transpose()?;
        Ok(Source {
            version: raw.version,
            origin,
            sha256: raw.sha256,
            size: raw.size,
            mirrors: raw.mirrors,
            watch,
        })
    }
}

impl TryFrom<RawWatch> for Watch {
    type Error = String;

    fn try_from(raw: RawWatch) -> Result<Self, String> {
        match (raw.index, raw.regex, raw.debian_sources) {
            (Some(index), Some(regex), None) if raw.package.is_none() => {
                let compiled = regex::Regex::new(&regex).map_err(|e| format!("`watch.regex` is invalid: {e}"))?;
                if compiled.captures_len() < 2 {
                    return Err("`watch.regex` needs a capture group around the version".into());
                }
                Ok(Watch::Index { index, regex })
            }
            (None, None, Some(suite)) => Ok(Watch::DebianSources {
                suite,
                package: raw.package,
            }),
            _ => Err("`watch` is either { index = URL, regex = \"...(version)...\" } or { debian-sources = \"SUITE\" [, package = \"NAME\"] }".into()),
        }
    }
}

const PLACEHOLDERS: [&str; 4] = ["{version}", "{debian}", "{name}", "{package}"];

fn check_template(template: &str, key: &str) -> Result<(), String> {
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        let Some(len) = rest[start..].find('}') else {
            return Err(format!("`{key}` {template:?} has an unclosed `{{`"));
        };
        let placeholder = &rest[start..start + len + 1];
        if !PLACEHOLDERS.contains(&placeholder) {
            return Err(format!(
                "`{key}` {template:?} uses unknown placeholder {placeholder} (known: {})",
                PLACEHOLDERS.join(", ")
            ));
        }
        rest = &rest[start + len + 1..];
    }
    if key != "mirrors" && !template.contains("{version}") {
        return Err(format!(
            "`{key}` {template:?} must contain {{version}} so that bump can change it"
        ));
    }
    Ok(())
}

/// Debian's pool directory prefix of a source package: `libx` for `libxyz`,
/// else the first letter.
pub fn debian_pool_prefix(package: &str) -> &str {
    if package.starts_with("lib") && package.len() > 3 {
        &package[..4]
    } else {
        &package[..package.len().min(1)]
    }
}

impl Source {
    /// The primary and mirror URL templates, in order.
    pub fn templates(&self) -> Vec<String> {
        let primary = match &self.origin {
            Origin::Url(url) => url.clone(),
            Origin::DebianSource {
                package,
                component,
                file,
            } => {
                format!(
                    "{{debian}}/pool/{component}/{}/{package}/{file}",
                    debian_pool_prefix(package)
                )
            }
        };
        std::iter::once(primary)
            .chain(self.mirrors.iter().cloned())
            .collect()
    }

    /// The Debian source package name, if the source comes from Debian.
    pub fn debian_package(&self) -> Option<&str> {
        match &self.origin {
            Origin::DebianSource { package, .. } => Some(package),
            Origin::Url(_) => None,
        }
    }

    /// The file name this source has for `version` (the last URL segment).
    pub fn file_name(&self, name: &str, version: &str) -> String {
        let template = match &self.origin {
            Origin::Url(url) => url.rsplit('/').next().unwrap_or(url).to_string(),
            Origin::DebianSource { file, .. } => file.clone(),
        };
        render(
            &template,
            name,
            self.debian_package().unwrap_or(name),
            version,
            None,
        )
    }

    /// Every candidate URL for `version`, templates in order and, for each
    /// template using `{debian}`, every Debian mirror in order.
    pub fn urls(
        &self,
        name: &str,
        version: &str,
        debian_mirrors: &[String],
    ) -> Result<Vec<String>, String> {
        let package = self.debian_package().unwrap_or(name);
        let mut urls = Vec::new();
        for template in self.templates() {
            if template.contains("{debian}") {
                if debian_mirrors.is_empty() {
                    return Err(format!(
                        "source `{name}` needs a Debian mirror: set [mirrors] debian, {} or an apt source",
                        DEBIAN_MIRROR_ENV
                    ));
                }
                for mirror in debian_mirrors {
                    urls.push(render(&template, name, package, version, Some(mirror)));
                }
            } else {
                urls.push(render(&template, name, package, version, None));
            }
        }
        urls.dedup();
        Ok(urls)
    }
}

/// Expands the placeholders of a URL or file-name template.
pub fn render(
    template: &str,
    name: &str,
    package: &str,
    version: &str,
    debian: Option<&str>,
) -> String {
    let mut out = template
        .replace("{version}", version)
        .replace("{name}", name)
        .replace("{package}", package);
    if let Some(base) = debian {
        out = out.replace("{debian}", base.trim_end_matches('/'));
    }
    out
}
