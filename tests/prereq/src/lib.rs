//! Tests that need something from the host (root, a tool, a file a package
//! installs) ask here instead of returning early in silence:
//!
//! ```no_run
//! if !hiperiso_prereq::root() || !hiperiso_prereq::tools(&[("mkfs.ext4", "e2fsprogs")]) {
//!     return;
//! }
//! ```
//!
//! When the prerequisite is missing, the test fails under `CI=true` (a CI
//! machine lacking a tool must turn red by name), and elsewhere reports
//! itself ignored on the terminal, with the reason and the command that
//! installs what is missing. `.ci/packages.txt` lists every package named
//! here.

use std::io::Write;
use std::path::Path;

/// Whether this run is CI's: `CI` set to anything but empty, `0` or `false`.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !matches!(v.as_str(), "" | "0" | "false"))
}

/// Whether `ok`; when not, fails under CI and otherwise reports the running
/// test as ignored because it needs `what` (`fix` says how to get it).
pub fn check(ok: bool, what: &str, fix: &str) -> bool {
    if ok {
        return true;
    }
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("this test");
    if in_ci() {
        panic!("{}", missing(test, what, fix, true));
    }
    // Straight to the terminal: libtest captures only print!/eprint!.
    let _ = writeln!(std::io::stderr(), "{}", missing(test, what, fix, false));
    false
}

/// What a test that lacks `what` says, under CI (a failure) or not.
fn missing(test: &str, what: &str, fix: &str, ci: bool) -> String {
    if ci {
        format!("{test} needs {what}, which this CI machine lacks (CI=true: not skipped); {fix}")
    } else {
        format!("test {test} ... ignored at run time: needs {what}; {fix}")
    }
}

/// Root (loop devices, mounts, BLKPG).
pub fn root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let uid = unsafe { libc::geteuid() };
    check(
        uid == 0,
        "root",
        "run the tests as root (`sudo -E cargo test`)",
    )
}

/// Whether `program` is an executable on PATH (or a path that exists).
pub fn on_path(program: &str) -> bool {
    if program.contains('/') {
        return Path::new(program).exists();
    }
    std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).any(|dir| {
            std::fs::metadata(dir.join(program)).is_ok_and(|m| {
                use std::os::unix::fs::PermissionsExt;
                m.is_file() && m.permissions().mode() & 0o111 != 0
            })
        })
    })
}

/// Every `(program, Debian package)` on PATH; the message names the
/// missing programs and one `apt-get install` for their packages.
pub fn tools(needed: &[(&str, &str)]) -> bool {
    let missing: Vec<&(&str, &str)> = needed.iter().filter(|(p, _)| !on_path(p)).collect();
    let programs: Vec<&str> = missing.iter().map(|(p, _)| *p).collect();
    let mut packages: Vec<&str> = missing.iter().map(|(_, pkg)| *pkg).collect();
    packages.dedup();
    check(
        missing.is_empty(),
        &programs.join(", "),
        &format!("apt-get install {}", packages.join(" ")),
    )
}

/// A file a Debian package installs (firmware, data files).
pub fn file(path: &str, package: &str) -> bool {
    check(
        Path::new(path).exists(),
        path,
        &format!("apt-get install {package}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn present_things_pass_and_missing_ones_name_the_fix() {
        assert!(on_path("sh") && tools(&[("sh", "dash")]));
        assert!(!on_path("no-such-program-hiperiso"));
        let local = missing("t", "mkfs.exfat", "apt-get install exfatprogs", false);
        assert_eq!(
            local,
            "test t ... ignored at run time: needs mkfs.exfat; apt-get install exfatprogs"
        );
        let ci = missing("t", "root", "run as root", true);
        assert!(
            ci.contains("t needs root") && ci.contains("CI=true"),
            "{ci}"
        );
    }
}
