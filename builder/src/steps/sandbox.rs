//! Running one build step in a sandbox (bubblewrap).
//!
//! Inside the sandbox:
//! - `/` is the tools tree, read-only (each top-level entry bound on an
//!   otherwise empty, read-only root);
//! - inputs are bound read-only under `/inputs`;
//! - only the build directory, `/out` and `/tmp` (both from the step's work
//!   directory) are writable;
//! - a fresh `/proc` and a minimal `/dev`;
//! - new network, IPC, PID, UTS and cgroup namespaces: the only network
//!   interface is an isolated loopback;
//! - the environment is exactly what the caller passes (no host variables).

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};

use hiperiso_stick::io::{IoError, io_err};

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error(
        "bubblewrap (`bwrap`) is not installed: install the `bubblewrap` package, or put a tools tree \
         that carries it first in PATH"
    )]
    NoBwrap,
    #[error(transparent)]
    Io(#[from] IoError),
    #[error("the tools tree {0} has no /bin/sh: steps run their commands with it")]
    NoShell(PathBuf),
    #[error("cannot start the sandbox (bwrap said: {message}){}", hint.as_deref().map(|h| format!("\n  {h}")).unwrap_or_default())]
    Unavailable {
        message: String,
        hint: Option<String>,
    },
}

/// Names the host setting that blocks unprivileged user namespaces, if any.
/// Root does not need them (bubblewrap then creates the namespaces itself).
pub fn userns_diagnosis() -> Option<String> {
    userns_diagnosis_in(Path::new("/proc/sys"), unsafe_is_root())
}

fn unsafe_is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn userns_diagnosis_in(sys: &Path, root: bool) -> Option<String> {
    if root {
        return None;
    }
    let read = |name: &str| {
        fs::read_to_string(sys.join(name))
            .ok()
            .map(|s| s.trim().to_string())
    };
    if read("kernel/unprivileged_userns_clone").as_deref() == Some("0") {
        return Some(
            "unprivileged user namespaces are disabled: run `sysctl -w kernel.unprivileged_userns_clone=1` \
             (persist it in /etc/sysctl.d/)"
                .to_string(),
        );
    }
    if read("user/max_user_namespaces").as_deref() == Some("0") {
        return Some(
            "user namespaces are disabled: run `sysctl -w user.max_user_namespaces=15000` \
             (persist it in /etc/sysctl.d/)"
                .to_string(),
        );
    }
    if read("kernel/apparmor_restrict_unprivileged_userns").as_deref() == Some("1") {
        return Some(
            "AppArmor restricts unprivileged user namespaces: run `sysctl -w \
             kernel.apparmor_restrict_unprivileged_userns=0`, or give bwrap an AppArmor profile \
             with `userns,` (see /etc/apparmor.d/bwrap-userns-restrict on Ubuntu)"
                .to_string(),
        );
    }
    None
}

/// The `bwrap` binary: `$HIPERISO_BWRAP`, else the first in `PATH`.
pub fn bwrap() -> Result<PathBuf, SandboxError> {
    if let Some(path) = std::env::var_os("HIPERISO_BWRAP").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(path));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("bwrap"))
        .find(|p| p.is_file())
        .ok_or(SandboxError::NoBwrap)
}

/// How bubblewrap is started for a tools tree: `$HIPERISO_BWRAP` if set;
/// else the tree's own `usr/bin/bwrap` through the tree's dynamic loader
/// and libraries, so the host needs no bubblewrap; else the first `bwrap`
/// in `PATH` (for `--tools-root` trees that carry none).
pub fn bwrap_command(tools_root: &Path) -> Result<Command, SandboxError> {
    if let Some(path) = std::env::var_os("HIPERISO_BWRAP").filter(|p| !p.is_empty()) {
        return Ok(Command::new(path));
    }
    if let Some(command) = tree_bwrap(tools_root) {
        return Ok(command);
    }
    Ok(Command::new(bwrap()?))
}

/// The tree's bwrap run by the tree's `ld-linux-x86-64.so.2`.
fn tree_bwrap(root: &Path) -> Option<Command> {
    let inside = |path: &str| {
        let parts: Vec<String> = path.split('/').map(str::to_string).collect();
        crate::debian::deb::resolve_in_tree(root, &parts, true).ok()
    };
    let bwrap = inside("usr/bin/bwrap").filter(|p| p.is_file())?;
    let loader = inside("lib64/ld-linux-x86-64.so.2").filter(|p| p.is_file())?;
    let libraries: Vec<String> = ["lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu"]
        .iter()
        .filter_map(|dir| inside(dir))
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let mut command = Command::new(loader);
    command
        .arg("--library-path")
        .arg(libraries.join(":"))
        .arg(bwrap);
    Some(command)
}

/// What one sandboxed run gets.
#[derive(Debug, Clone)]
pub struct Spec {
    /// Becomes `/` (read-only).
    pub tools_root: PathBuf,
    /// Host directory bound writable at `build_path`, the working directory.
    pub build_dir: PathBuf,
    /// Absolute path of the build directory inside the sandbox.
    pub build_path: String,
    /// Host directory bound writable at `/out`.
    pub out_dir: PathBuf,
    /// Host directory bound writable at `/tmp`.
    pub tmp_dir: PathBuf,
    /// (host path, absolute path inside), bound read-only.
    pub inputs: Vec<(PathBuf, String)>,
    /// The complete environment.
    pub env: Vec<(String, String)>,
    pub umask: u32,
    /// Shell commands, run by `/bin/sh -ex`.
    pub script: String,
}

/// Entries of the tools root that the sandbox provides itself.
const RESERVED: &[&str] = &["proc", "dev", "tmp", "out", "inputs", "sys"];

impl Spec {
    /// bwrap's arguments, up to and including the command.
    pub fn args(&self) -> Result<Vec<String>, SandboxError> {
        let mut args: Vec<String> = [
            "--unshare-all",
            "--die-with-parent",
            "--new-session",
            "--clearenv",
            "--hostname",
            "hiperiso",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let mut push = |items: &[&str]| args.extend(items.iter().map(|s| s.to_string()));
        let root = &self.tools_root;
        if !root.join("bin/sh").exists() {
            return Err(SandboxError::NoShell(root.clone()));
        }
        let mut entries: Vec<_> = fs::read_dir(root)
            .map_err(io_err("list the tools tree", root))?
            .collect::<Result<_, _>>()
            .map_err(io_err("list the tools tree", root))?;
        entries.sort_by_key(|e| e.file_name());
        let build_top = self
            .build_path
            .trim_start_matches('/')
            .split('/')
            .next()
            .unwrap_or_default()
            .to_string();
        for entry in entries {
            let name = entry.file_name().to_string_lossy().into_owned();
            if RESERVED.contains(&name.as_str()) || name == build_top {
                continue;
            }
            let host = entry.path();
            let inside = format!("/{name}");
            let meta = fs::symlink_metadata(&host).map_err(io_err("stat", &host))?;
            if meta.file_type().is_symlink() {
                let target = fs::read_link(&host).map_err(io_err("read the link", &host))?;
                push(&["--symlink", &target.to_string_lossy(), &inside]);
            } else {
                push(&["--ro-bind", &host.to_string_lossy(), &inside]);
            }
        }
        push(&["--proc", "/proc", "--dev", "/dev"]);
        push(&["--bind", &self.tmp_dir.to_string_lossy(), "/tmp"]);
        push(&["--bind", &self.out_dir.to_string_lossy(), "/out"]);
        push(&[
            "--bind",
            &self.build_dir.to_string_lossy(),
            &self.build_path,
        ]);
        for (host, inside) in &self.inputs {
            push(&["--ro-bind", &host.to_string_lossy(), inside]);
        }
        for (key, value) in &self.env {
            push(&["--setenv", key, value]);
        }
        push(&["--chdir", &self.build_path, "--remount-ro", "/"]);
        let script = format!("umask {:03o}\nset -ex\n{}\n", self.umask, self.script);
        push(&["/bin/sh", "-c", &script]);
        Ok(args)
    }

    /// Runs the step with stdout and stderr appended to `log`.
    pub fn run(&self, log: &Path) -> Result<ExitStatus, SandboxError> {
        let mut bwrap = bwrap_command(&self.tools_root)?;
        let args = self.args()?;
        let file = File::options()
            .create(true)
            .append(true)
            .open(log)
            .map_err(io_err("open the log", log))?;
        let err_file = file.try_clone().map_err(io_err("open the log", log))?;
        let program = PathBuf::from(bwrap.get_program());
        bwrap
            .args(&args)
            .env_clear()
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(err_file)
            .status()
            .map_err(|e| io_err("run", &program)(e).into())
    }
}

/// Checks that a sandbox can start on this host with this tools tree;
/// the error names the setting that blocks it.
pub fn probe(tools_root: &Path, scratch: &Path) -> Result<(), SandboxError> {
    let dirs = ["build", "out", "tmp"].map(|d| scratch.join(d));
    for dir in &dirs {
        fs::create_dir_all(dir).map_err(io_err("create", dir))?;
    }
    let spec = Spec {
        tools_root: tools_root.to_path_buf(),
        build_dir: dirs[0].clone(),
        build_path: "/build".to_string(),
        out_dir: dirs[1].clone(),
        tmp_dir: dirs[2].clone(),
        inputs: Vec::new(),
        env: Vec::new(),
        umask: 0o022,
        script: ":".to_string(),
    };
    let mut bwrap = bwrap_command(tools_root)?;
    let program = PathBuf::from(bwrap.get_program());
    let output = bwrap
        .args(spec.args()?)
        .env_clear()
        .stdin(Stdio::null())
        .output()
        .map_err(io_err("run", &program))?;
    if output.status.success() {
        return Ok(());
    }
    let message = String::from_utf8_lossy(&output.stderr).trim().to_string();
    Err(SandboxError::Unavailable {
        message: if message.is_empty() {
            format!("exit status {}", output.status)
        } else {
            message
        },
        hint: userns_diagnosis(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diagnosis_names_the_setting() {
        let dir = tempfile::tempdir().unwrap();
        let sys = dir.path();
        fs::create_dir_all(sys.join("kernel")).unwrap();
        fs::create_dir_all(sys.join("user")).unwrap();
        assert_eq!(userns_diagnosis_in(sys, false), None);
        fs::write(
            sys.join("kernel/apparmor_restrict_unprivileged_userns"),
            "1\n",
        )
        .unwrap();
        let hint = userns_diagnosis_in(sys, false).unwrap();
        assert!(
            hint.contains("kernel.apparmor_restrict_unprivileged_userns=0"),
            "{hint}"
        );
        fs::write(sys.join("user/max_user_namespaces"), "0\n").unwrap();
        assert!(
            userns_diagnosis_in(sys, false)
                .unwrap()
                .contains("user.max_user_namespaces")
        );
        fs::write(sys.join("kernel/unprivileged_userns_clone"), "0\n").unwrap();
        assert!(
            userns_diagnosis_in(sys, false)
                .unwrap()
                .contains("kernel.unprivileged_userns_clone=1")
        );
        assert_eq!(userns_diagnosis_in(sys, true), None);
    }
}
