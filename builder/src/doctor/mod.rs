//! `hiperiso-build doctor`: checks of the host for what the next command
//! needs, each with what is wrong and how to fix it. One file per group:
//! [`virt`] (KVM, nested virtualization, QEMU, OVMF), [`host`] (user
//! namespaces, disk space, loop devices), [`pins`] (the Debian mirror or
//! the offline cache, the pinned rustc). The checks take plain inputs and
//! the already loaded [`Project`]; the verb lives in `commands/doctor.rs`.

use std::path::PathBuf;

use serde::Serialize;

use crate::project::Project;

pub mod host;
pub mod pins;
pub mod virt;

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    /// Works, but worse (e.g. TCG instead of KVM), or only some verbs fail.
    Warn,
    Fail,
}

impl Status {
    pub fn label(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Fail => "fail",
        }
    }
}

/// One check's verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    pub name: String,
    pub status: Status,
    /// What was found (and, when not ok, what is wrong).
    pub detail: String,
    /// How to fix it.
    pub fix: Option<String>,
}

impl Check {
    pub fn new(name: &str, status: Status, detail: impl Into<String>) -> Self {
        Self {
            name: name.to_string(),
            status,
            detail: detail.into(),
            fix: None,
        }
    }

    pub fn ok(name: &str, detail: impl Into<String>) -> Self {
        Self::new(name, Status::Ok, detail)
    }

    pub fn warn(name: &str, detail: impl Into<String>) -> Self {
        Self::new(name, Status::Warn, detail)
    }

    pub fn fail(name: &str, detail: impl Into<String>) -> Self {
        Self::new(name, Status::Fail, detail)
    }

    pub fn with_fix(mut self, fix: impl Into<String>) -> Self {
        self.fix = Some(fix.into());
        self
    }
}

/// What the checks look at.
pub struct Inputs<'a> {
    /// The cache directory (it may not exist yet).
    pub cache_dir: PathBuf,
    /// The loaded project; `None` when there is no manifest.
    pub project: Option<&'a Project>,
    /// Why there is no project, e.g. "no manifest at hiperiso.toml".
    pub no_project: String,
    /// `--offline`: do not ask the mirror, only the cache.
    pub offline: bool,
}

/// Every check, in the order they are printed.
pub fn run_all(inputs: &Inputs) -> Vec<Check> {
    let kvm = virt::kvm();
    let kvm_usable = kvm.status == Status::Ok;
    let mut checks = vec![
        virt::qemu(),
        kvm,
        virt::nested(kvm_usable),
        virt::ovmf(),
        host::userns(),
        host::disk(&inputs.cache_dir, inputs.project),
        host::loop_devices(),
    ];
    match inputs.project {
        Some(project) => {
            checks.push(pins::mirror_or_offline(project, inputs.offline));
            checks.push(pins::rustc(project));
            checks.extend(host::signing(project));
        }
        None => {
            for name in [pins::MIRROR, pins::RUSTC] {
                checks.push(Check::warn(name, format!("skipped: {}", inputs.no_project)));
            }
        }
    }
    checks
}

/// Whether every check passed or only warned.
pub fn all_ok(checks: &[Check]) -> bool {
    checks.iter().all(|c| c.status != Status::Fail)
}

/// The human-readable report: one line per check, the fix indented below.
pub fn render(checks: &[Check]) -> String {
    let width = checks.iter().map(|c| c.name.len()).max().unwrap_or(0);
    let mut out = String::new();
    for check in checks {
        out.push_str(&format!(
            "{:<4}  {:<width$}  {}\n",
            check.status.label(),
            check.name,
            check.detail
        ));
        if let Some(fix) = &check.fix {
            out.push_str(&format!("      {:<width$}  fix: {fix}\n", ""));
        }
    }
    let failed = checks.iter().filter(|c| c.status == Status::Fail).count();
    let warned = checks.iter().filter(|c| c.status == Status::Warn).count();
    out.push_str(&format!(
        "{} checks: {} failed, {} warnings\n",
        checks.len(),
        failed,
        warned
    ));
    out
}

/// `--json`: `{"checks":[{"name","status","detail","fix"}],"ok":bool}`.
pub fn to_json(checks: &[Check]) -> String {
    #[derive(Serialize)]
    struct Report<'a> {
        checks: &'a [Check],
        ok: bool,
    }
    serde_json::to_string_pretty(&Report {
        checks,
        ok: all_ok(checks),
    })
    .expect("checks serialize")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_has_the_documented_shape() {
        let checks = vec![
            Check::ok("a", "fine"),
            Check::fail("b", "broken").with_fix("repair it"),
        ];
        let value: serde_json::Value = serde_json::from_str(&to_json(&checks)).unwrap();
        assert_eq!(value["ok"], false);
        assert_eq!(value["checks"][0]["status"], "ok");
        assert_eq!(value["checks"][0]["fix"], serde_json::Value::Null);
        assert_eq!(value["checks"][1]["status"], "fail");
        assert_eq!(value["checks"][1]["fix"], "repair it");
        assert!(all_ok(&checks[..1]));
    }

    #[test]
    fn render_shows_status_name_detail_and_fix() {
        let text = render(&[Check::warn("kvm", "no /dev/kvm").with_fix("load kvm")]);
        assert!(text.starts_with("warn  kvm  no /dev/kvm\n"), "{text}");
        assert!(text.contains("fix: load kvm"), "{text}");
        assert!(text.contains("0 failed, 1 warnings"), "{text}");
    }
}
