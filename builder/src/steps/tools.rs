//! The tools tree (DESIGN.md §3): the manifest's `[tools] packages`,
//! resolved with their closure into the lock's `[tools]` table, unpacked
//! into `<cache>/tools/<hash>/` and finished the way dpkg's maintainer
//! scripts would have finished them where builds need it:
//!
//! - alternatives and default links (`cc`, `c++`, `awk`, `yacc`, `/bin/sh`);
//! - minimal `/etc/passwd`, `/etc/group` and `/etc/hosts`;
//! - `ld.so.cache`, written by the tree's own `ldconfig` inside a sandbox
//!   whose `/` is the tree.
//!
//! The tree's hash comes from the locked packages' sha256 and
//! [`FINISH_VERSION`], so it is known without unpacking anything; every
//! step's key includes it. The tree is built in a temporary directory and
//! renamed into place, so a killed build never leaves half a tree.

use std::fs::{self, File};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use sha2::{Digest, Sha256};

use hiperiso_stick::io::{IoError, io_err};

use crate::debian::closure::{deb_fetcher, repository_for};
use crate::debian::deb::resolve_in_tree;
use crate::debian::repo;
use crate::model::lock::{LockError, LockInputs, ToolsLock};
use crate::model::manifest::Manifest;
use crate::project::Project;
use crate::sources::store::StoreError;
use crate::steps::sandbox;

/// Version of what [`finish`] does to an unpacked tree: bump it whenever
/// that changes, so every tree (and every step key) changes with it.
pub const FINISH_VERSION: u32 = 2;

/// Links that Debian's maintainer scripts (update-alternatives, dash's
/// diversion) would create: `(link, target)`, made only when the link is
/// missing and its target exists in the tree.
pub const ALTERNATIVES: &[(&str, &str)] = &[
    ("bin/sh", "dash"),
    ("usr/bin/cc", "gcc"),
    ("usr/bin/c++", "g++"),
    ("usr/bin/cpp", "cpp-12"),
    ("usr/bin/awk", "mawk"),
    ("usr/bin/nawk", "mawk"),
    ("usr/bin/yacc", "bison.yacc"),
    ("usr/bin/lex", "flex"),
];

const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
                      nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n";
const GROUP: &str = "root:x:0:\nnogroup:x:65534:\n";
const HOSTS: &str = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n";

#[derive(Debug, thiserror::Error)]
pub enum ToolsError {
    #[error(
        "{0}: [tools] lists no packages: list the Debian packages build steps need \
         (compiler, make, ...) and run `hiperiso-build lock`, or pass --tools-root DIR"
    )]
    NoPackages(PathBuf),
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error("opening the cache")]
    Store(#[source] StoreError),
    #[error("fetching and unpacking the tools tree's packages")]
    Repo(#[from] crate::debian::repo::RepoError),
    #[error(transparent)]
    Io(#[from] IoError),
    #[error("finding bubblewrap to run in the tools tree")]
    Bwrap(#[source] sandbox::SandboxError),
    #[error("finishing the tools tree: `{command}` failed ({status}):\n{output}")]
    Finish {
        command: String,
        status: String,
        output: String,
    },
}

/// The manifest inputs of the tools closure.
pub fn lock_inputs(manifest: &Manifest) -> LockInputs {
    LockInputs {
        suite: manifest.debian.suite.clone(),
        components: manifest.debian.components.clone(),
        architecture: manifest.debian.arch.clone(),
        packages: manifest.tools.packages.clone(),
        exclude: manifest.debian.exclude.clone(),
    }
}

/// The tree's hash: the locked packages (name, version, sha256) and the
/// finishing version, computed without unpacking.
pub fn tree_hash(tools: &ToolsLock) -> String {
    let mut hasher = Sha256::new();
    hasher.update(format!("hiperiso tools tree, finish v{FINISH_VERSION}\n"));
    for package in &tools.packages {
        hasher.update(format!(
            "{} {} {}\n",
            package.name, package.version, package.sha256
        ));
    }
    hex::encode(hasher.finalize())
}

/// A tools tree ready to be `/` in the sandbox.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub root: PathBuf,
    pub hash: String,
    pub tools: ToolsLock,
}

/// The tree the lock's `[tools]` names, and where it is (or will be)
/// unpacked, without unpacking it: step keys need only its hash, so steps
/// that come from a shared cache never need the tree itself.
pub fn planned(project: &Project) -> Result<Prepared, ToolsError> {
    let inputs = lock_inputs(&project.manifest);
    if inputs.packages.is_empty() {
        return Err(ToolsError::NoPackages(project.manifest.path.clone()));
    }
    let tools = project.tools_lock(&inputs)?.clone();
    let store = project.store().map_err(ToolsError::Store)?;
    let hash = tree_hash(&tools);
    let root = store.root().join("tools").join(&hash);
    Ok(Prepared { root, hash, tools })
}

/// Reads the lock's `[tools]` (stale or missing stops with "run
/// `hiperiso-build lock`") and returns its tree, unpacking and finishing
/// it first when the cache does not have it.
pub fn prepare(project: &Project) -> Result<Prepared, ToolsError> {
    let Prepared { root, hash, tools } = planned(project)?;
    if root.is_dir() {
        return Ok(Prepared { root, hash, tools });
    }
    let inputs = lock_inputs(&project.manifest);
    let fetcher = deb_fetcher(project).map_err(ToolsError::Store)?;
    let dir = fetcher.store().root().join("tools");
    fs::create_dir_all(&dir).map_err(io_err("create", &dir))?;
    // One process unpacks; a concurrent one waits and then finds the tree.
    let _lock = lock_file(&dir.join(format!("{hash}.lock")))?;
    if root.is_dir() {
        return Ok(Prepared { root, hash, tools });
    }
    let repository = repository_for(project, &inputs, &fetcher);
    project.settings.say(format!(
        "tools tree: fetching and unpacking {} packages",
        tools.packages.len()
    ));
    let debs = repository.fetch_debs(&tools.packages)?;
    let staging = tempfile::Builder::new()
        .prefix(".unpacking-")
        .tempdir_in(&dir)
        .map_err(io_err("create a directory in", &dir))?;
    repo::unpack_locked(&tools.packages, debs, staging.path())?;
    finish(staging.path())?;
    let staged = staging.keep();
    fs::rename(&staged, &root).map_err(io_err("move into place", &staged))?;
    Ok(Prepared { root, hash, tools })
}

fn lock_file(path: &Path) -> Result<File, ToolsError> {
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(io_err("open", path))?;
    // SAFETY: the descriptor is valid for the call; the lock is released
    // when `file` is dropped.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(io_err("lock", path)(io::Error::last_os_error()).into());
    }
    Ok(file)
}

/// Does to an unpacked tree what maintainer scripts would have done, as
/// far as builds need it (see the module docs).
pub fn finish(root: &Path) -> Result<(), ToolsError> {
    for (link, target) in ALTERNATIVES {
        let link_path = root.join(link);
        let parent = link_path.parent().expect("links have a parent");
        let parts: Vec<String> = Path::new(link)
            .parent()
            .expect("links have a parent")
            .join(target)
            .iter()
            .map(|c| c.to_string_lossy().into_owned())
            .collect();
        let target_exists = resolve_in_tree(root, &parts, true).is_ok_and(|p| p.is_file());
        if target_exists && fs::symlink_metadata(&link_path).is_err() {
            fs::create_dir_all(parent).map_err(io_err("create", parent))?;
            symlink(target, &link_path).map_err(io_err("create the link", &link_path))?;
        }
    }
    let etc = root.join("etc");
    fs::create_dir_all(&etc).map_err(io_err("create", &etc))?;
    for (name, text) in [("passwd", PASSWD), ("group", GROUP), ("hosts", HOSTS)] {
        let path = etc.join(name);
        if fs::symlink_metadata(&path).is_err() {
            fs::write(&path, text).map_err(io_err("write", &path))?;
        }
    }
    run_ldconfig(root)?;
    set_times(root, TREE_MTIME)
}

/// Every file time in the tree (unpacking leaves the current time, which
/// would make trees of two hosts differ).
pub const TREE_MTIME: i64 = 946_684_800; // 2000-01-01T00:00:00Z

/// Sets the modification and access times of `path` and everything below
/// it (symlinks themselves, not their targets) to `epoch`.
fn set_times(path: &Path, epoch: i64) -> Result<(), ToolsError> {
    let meta = fs::symlink_metadata(path).map_err(io_err("stat", path))?;
    if meta.is_dir() {
        for entry in fs::read_dir(path).map_err(io_err("list", path))? {
            let entry = entry.map_err(io_err("list", path))?;
            set_times(&entry.path(), epoch)?;
        }
    }
    let time = libc::timespec {
        tv_sec: epoch as libc::time_t,
        tv_nsec: 0,
    };
    let c_path =
        std::ffi::CString::new(std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str()))
            .map_err(|_| io_err("set the time of", path)(io::ErrorKind::InvalidInput.into()))?;
    // SAFETY: c_path is NUL-terminated and the array has the two entries
    // utimensat reads.
    let rc = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c_path.as_ptr(),
            [time, time].as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if rc != 0 {
        return Err(io_err("set the time of", path)(io::Error::last_os_error()).into());
    }
    Ok(())
}

/// Runs the tree's `ldconfig` with the tree as `/` (read-write), through
/// the sandbox's bwrap.
fn run_ldconfig(root: &Path) -> Result<(), ToolsError> {
    let ldconfig = ["sbin/ldconfig", "usr/sbin/ldconfig"]
        .into_iter()
        .find(|p| root.join(p).is_file());
    let Some(ldconfig) = ldconfig else {
        return Ok(()); // no libc-bin: nothing reads ld.so.cache either
    };
    let mut command = sandbox::bwrap_command(root).map_err(ToolsError::Bwrap)?;
    command
        .args(["--unshare-all", "--die-with-parent", "--clearenv", "--bind"])
        .arg(root)
        .args(["/", "--proc", "/proc", "--dev", "/dev"])
        .arg(format!("/{ldconfig}"))
        .env_clear()
        .stdin(Stdio::null());
    let output = command.output().map_err(io_err("run bwrap for", root))?;
    if !output.status.success() {
        return Err(ToolsError::Finish {
            command: format!("{command:?}"),
            status: output.status.to_string(),
            output: String::from_utf8_lossy(&output.stderr).into_owned(),
        });
    }
    // ldconfig leaves an auxiliary cache that varies between runs.
    let aux = root.join("var/cache/ldconfig/aux-cache");
    match fs::remove_file(&aux) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err("remove", &aux)(e).into()),
    }
}

/// Removes every tools tree under `<cache>/tools/` but `keep`, and the
/// leftovers of killed unpacks (never one whose lock is held). Returns how
/// many trees were removed.
pub fn gc(cache: &Path, keep: Option<&str>) -> Result<usize, ToolsError> {
    let dir = cache.join("tools");
    let Ok(entries) = fs::read_dir(&dir) else {
        return Ok(0);
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        if !path.is_dir() || Some(name.as_str()) == keep {
            continue;
        }
        if name.starts_with(".unpacking-") {
            // A running unpack holds its tree's lock; a killed one does not.
            let busy = fs::read_dir(&dir).into_iter().flatten().flatten().any(|e| {
                let lock = e.path();
                lock.extension().is_some_and(|x| x == "lock") && is_locked(&lock)
            });
            if busy {
                continue;
            }
        } else {
            let lock = dir.join(format!("{name}.lock"));
            if is_locked(&lock) {
                continue;
            }
            let _ = fs::remove_file(&lock);
            removed += 1;
        }
        fs::remove_dir_all(&path).map_err(io_err("remove", &path))?;
    }
    Ok(removed)
}

fn is_locked(path: &Path) -> bool {
    let Ok(file) = File::open(path) else {
        return false;
    };
    // SAFETY: a valid descriptor; a non-blocking attempt, released on drop.
    unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) != 0 }
}

/// The names of the locked tools packages (for checking recipes' `tools`).
pub fn package_names(tools: &ToolsLock) -> Vec<String> {
    tools.packages.iter().map(|p| p.name.clone()).collect()
}

/// Runs `command` in a tools tree the way a step would (for benchmarks and
/// diagnostics): `/bin/sh -c` with the tree as `/`.
pub fn shell_in(root: &Path, script: &str) -> Result<Command, ToolsError> {
    let mut command = sandbox::bwrap_command(root).map_err(ToolsError::Bwrap)?;
    command
        .args(["--unshare-all", "--die-with-parent", "--ro-bind"])
        .arg(root)
        .args([
            "/", "--proc", "/proc", "--dev", "/dev", "/bin/sh", "-c", script,
        ]);
    Ok(command)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::lock::LockedPackage;

    fn package(name: &str, sha: &str) -> LockedPackage {
        LockedPackage {
            name: name.into(),
            version: "1.0".into(),
            architecture: "amd64".into(),
            filename: format!("pool/main/x/{name}.deb"),
            size: 1,
            sha256: sha.into(),
            source: name.into(),
        }
    }

    #[test]
    fn hash_follows_the_locked_packages() {
        let tools = ToolsLock {
            inputs: "i".into(),
            release_date: "d".into(),
            packages: vec![package("gcc", "aa"), package("make", "bb")],
        };
        let hash = tree_hash(&tools);
        let mut other = tools.clone();
        other.inputs = "j".into();
        other.release_date = "e".into();
        assert_eq!(tree_hash(&other), hash, "only packages decide the tree");
        other.packages[1].sha256 = "cc".into();
        assert_ne!(tree_hash(&other), hash);
    }

    #[test]
    fn gc_keeps_the_current_tree() {
        let cache = tempfile::tempdir().unwrap();
        let dir = cache.path().join("tools");
        for name in ["aaa", "bbb", ".unpacking-x"] {
            fs::create_dir_all(dir.join(name).join("usr")).unwrap();
        }
        fs::write(dir.join("aaa.lock"), "").unwrap();
        assert_eq!(gc(cache.path(), Some("bbb")).unwrap(), 1);
        let left: Vec<String> = fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(left, ["bbb"]);
    }

    #[test]
    fn finish_adds_alternatives_and_etc_files_only_where_missing() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("usr/bin")).unwrap();
        fs::create_dir_all(root.join("bin")).unwrap();
        fs::write(root.join("usr/bin/gcc"), "").unwrap();
        fs::write(root.join("bin/dash"), "").unwrap();
        fs::create_dir_all(root.join("etc")).unwrap();
        fs::write(root.join("etc/hosts"), "mine\n").unwrap();
        finish(root).unwrap();
        assert_eq!(
            fs::read_link(root.join("usr/bin/cc")).unwrap(),
            Path::new("gcc")
        );
        assert_eq!(
            fs::read_link(root.join("bin/sh")).unwrap(),
            Path::new("dash")
        );
        assert!(
            fs::symlink_metadata(root.join("usr/bin/c++")).is_err(),
            "no g++"
        );
        assert_eq!(
            fs::read_to_string(root.join("etc/hosts")).unwrap(),
            "mine\n"
        );
        assert!(
            fs::read_to_string(root.join("etc/passwd"))
                .unwrap()
                .starts_with("root:")
        );
    }
}
