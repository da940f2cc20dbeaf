//! The host: user namespaces for the sandbox, disk space in the cache,
//! loop devices for `install` tests, the Secure Boot signing tools.

use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::Check;
use crate::model::manifest::{PayloadFrom, Profile};
use crate::project::Project;
use crate::sources::progress::human_bytes;
use crate::steps::sandbox;

pub const USERNS: &str = "user-namespaces";
pub const DISK: &str = "disk-space";
pub const LOOP: &str = "loop-devices";
pub const SIGNING: &str = "secure-boot-signing";

const GIB: u64 = 1 << 30;
/// Free space a cold build of the from-source profile needs.
pub const FROM_SOURCE_NEED: u64 = 15 * GIB;
/// Free space the Debian-packages profile needs.
pub const PACKAGES_NEED: u64 = 3 * GIB;

/// The sysctls that block unprivileged user namespaces.
const USERNS_KNOBS: [(&str, &str); 3] = [
    (
        "kernel.unprivileged_userns_clone",
        "kernel/unprivileged_userns_clone",
    ),
    ("user.max_user_namespaces", "user/max_user_namespaces"),
    (
        "kernel.apparmor_restrict_unprivileged_userns",
        "kernel/apparmor_restrict_unprivileged_userns",
    ),
];

/// Starts a process in a new user namespace for real.
pub fn userns() -> Check {
    let result = match Command::new("unshare")
        .args(["--user", "--map-root-user", "true"])
        .stdin(Stdio::null())
        .output()
    {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(String::from_utf8_lossy(&out.stderr).trim().to_string()),
        Err(error) => Err(format!("cannot run unshare: {error}")),
    };
    let knobs = USERNS_KNOBS
        .iter()
        .filter_map(|(name, file)| {
            let value = fs::read_to_string(Path::new("/proc/sys").join(file)).ok()?;
            Some((name.to_string(), value.trim().to_string()))
        })
        .collect::<Vec<_>>();
    userns_check(result, sandbox::userns_diagnosis(), &knobs)
}

/// The verdict on a user-namespace attempt; `hint` is the sandbox's own
/// diagnosis, `knobs` the current values of the sysctls that matter.
pub fn userns_check(
    attempt: Result<(), String>,
    hint: Option<String>,
    knobs: &[(String, String)],
) -> Check {
    match attempt {
        Ok(()) => Check::ok(
            USERNS,
            "`unshare --user --map-root-user` works: the sandbox can start",
        ),
        Err(error) => {
            let fix = hint.unwrap_or_else(|| {
                let current = knobs
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(", ");
                format!(
                    "allow unprivileged user namespaces: `sysctl -w \
                     kernel.unprivileged_userns_clone=1`, `sysctl -w \
                     user.max_user_namespaces=15000`, `sysctl -w \
                     kernel.apparmor_restrict_unprivileged_userns=0` (now: {})",
                    if current.is_empty() {
                        "none readable".to_string()
                    } else {
                        current
                    }
                )
            });
            Check::fail(
                USERNS,
                format!("cannot create a user namespace: {error}; build steps cannot be sandboxed"),
            )
            .with_fix(fix)
        }
    }
}

/// Free space `profile` needs in the cache, and the profile's kind.
pub fn space_needed(profile: Option<&Profile>) -> (u64, &'static str) {
    match profile {
        Some(p) if p.payload == Some(PayloadFrom::Steps) || !p.steps.is_empty() => {
            (FROM_SOURCE_NEED, "a from-source build")
        }
        Some(_) => (PACKAGES_NEED, "a Debian-packages build"),
        None => (PACKAGES_NEED, "a Debian-packages build (no profile known)"),
    }
}

/// Free space in the cache dir (or its nearest existing parent).
pub fn disk(cache_dir: &Path, project: Option<&Project>) -> Check {
    let profile = project.and_then(|p| p.profile().ok()).map(|(_, p)| p);
    let (needed, what) = space_needed(profile);
    let probe = existing_ancestor(cache_dir);
    match free_bytes(&probe) {
        Ok(free) => disk_check(cache_dir, free, needed, what),
        Err(error) => Check::fail(DISK, format!("cannot stat {}: {error}", probe.display())),
    }
}

/// The verdict on `free` bytes in `cache_dir` when `needed` are needed.
pub fn disk_check(cache_dir: &Path, free: u64, needed: u64, what: &str) -> Check {
    let detail = format!(
        "{} free in {}, {what} needs about {}",
        human_bytes(free),
        cache_dir.display(),
        human_bytes(needed)
    );
    if free >= needed {
        Check::ok(DISK, detail)
    } else {
        Check::fail(DISK, detail).with_fix(format!(
            "free {} there, or point --cache-dir (or $HIPERISO_CACHE_DIR) at a larger file \
             system; `hiperiso-build gc` drops unused cache entries",
            human_bytes(needed - free)
        ))
    }
}

fn existing_ancestor(path: &Path) -> PathBuf {
    path.ancestors()
        .find(|p| p.exists())
        .unwrap_or(Path::new("/"))
        .to_path_buf()
}

/// Bytes an unprivileged user may still write on the file system of `path`.
#[allow(clippy::unnecessary_cast)] // the field types differ between targets
fn free_bytes(path: &Path) -> std::io::Result<u64> {
    let c_path = CString::new(path.as_os_str().as_bytes()).map_err(std::io::Error::other)?;
    // SAFETY: an all-zero statvfs is a valid value of this plain C struct.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: the path is NUL-terminated and `stat` is ours to write.
    if unsafe { libc::statvfs(c_path.as_ptr(), &mut stat) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(stat.f_bavail as u64 * stat.f_frsize as u64)
}

/// `/dev/loop-control` and a free loop device (`losetup -f`).
pub fn loop_devices() -> Check {
    let control = Path::new("/dev/loop-control").exists();
    let free = match Command::new("losetup")
        .arg("-f")
        .stdin(Stdio::null())
        .output()
    {
        Ok(out) if out.status.success() => {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        }
        Ok(out) => Err(String::from_utf8_lossy(&out.stderr).trim().to_string()),
        Err(error) => Err(format!("cannot run losetup: {error}")),
    };
    loop_check(control, free)
}

/// The verdict on loop devices: only `install` tests need them.
pub fn loop_check(control: bool, free: Result<String, String>) -> Check {
    let fix = "modprobe loop (and run as root or with access to /dev/loop*)";
    if !control {
        return Check::warn(
            LOOP,
            "/dev/loop-control is missing: `install` tests cannot run",
        )
        .with_fix(fix);
    }
    match free {
        Ok(device) => Check::ok(LOOP, format!("/dev/loop-control present, {device} free")),
        Err(error) => Check::warn(
            LOOP,
            format!("no free loop device ({error}): `install` tests cannot run"),
        )
        .with_fix(fix),
    }
}

/// With `[secure-boot]`: the key and certificate it names, and the tools
/// that sign with them (payload/secure_boot.rs); None without it.
pub fn signing(project: &Project) -> Option<Check> {
    let sb = project.manifest.secure_boot.as_ref()?;
    let dir = project.manifest_dir();
    let missing_files: Vec<String> = [&sb.key, &sb.cert]
        .into_iter()
        .map(|f| dir.join(f))
        .filter(|f| !f.is_file())
        .map(|f| f.display().to_string())
        .collect();
    let missing_tools: Vec<&str> = [("sbsign", "sbsigntool"), ("faketime", "faketime")]
        .into_iter()
        .filter(|(tool, _)| !on_path(tool))
        .map(|(_, package)| package)
        .collect();
    Some(signing_check(&missing_files, &missing_tools))
}

pub fn signing_check(missing_files: &[String], missing_packages: &[&str]) -> Check {
    if !missing_files.is_empty() {
        return Check::fail(
            SIGNING,
            format!(
                "[secure-boot] names missing files: {}",
                missing_files.join(", ")
            ),
        )
        .with_fix(
            "hiperiso-build keys secure-boot --dir DIR, then point [secure-boot] key/cert at DIR",
        );
    }
    if !missing_packages.is_empty() {
        return Check::fail(
            SIGNING,
            "sbsign or faketime is missing (the ESP is signed with them)",
        )
        .with_fix(format!("apt-get install {}", missing_packages.join(" ")));
    }
    Check::ok(
        SIGNING,
        "[secure-boot] key, certificate, sbsign and faketime are there",
    )
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::Status;

    #[test]
    fn userns_failure_names_the_knobs() {
        assert_eq!(userns_check(Ok(()), None, &[]).status, Status::Ok);
        let knobs = [("user.max_user_namespaces".to_string(), "0".to_string())];
        let check = userns_check(Err("Operation not permitted".into()), None, &knobs);
        assert_eq!(check.status, Status::Fail);
        let fix = check.fix.unwrap();
        for knob in [
            "kernel.unprivileged_userns_clone",
            "user.max_user_namespaces",
            "kernel.apparmor_restrict_unprivileged_userns",
            "now: user.max_user_namespaces=0",
        ] {
            assert!(fix.contains(knob), "{knob} in {fix}");
        }
        let hinted = userns_check(Err("x".into()), Some("do this".into()), &knobs);
        assert_eq!(hinted.fix.as_deref(), Some("do this"));
    }

    #[test]
    fn disk_threshold_follows_the_profile() {
        let from_source = Profile {
            payload: Some(PayloadFrom::Steps),
            ..Profile::default()
        };
        let packages = Profile {
            payload: Some(PayloadFrom::Packages),
            ..Profile::default()
        };
        assert_eq!(space_needed(Some(&from_source)).0, FROM_SOURCE_NEED);
        assert_eq!(space_needed(Some(&packages)).0, PACKAGES_NEED);
        assert_eq!(space_needed(None).0, PACKAGES_NEED);
        let dir = Path::new("/c");
        assert_eq!(disk_check(dir, 4 * GIB, 3 * GIB, "x").status, Status::Ok);
        let low = disk_check(dir, GIB, 3 * GIB, "x");
        assert_eq!(low.status, Status::Fail);
        assert!(low.fix.unwrap().contains("--cache-dir"));
    }

    #[test]
    fn signing_names_missing_files_then_packages() {
        let files = signing_check(&["/k/sb.key".into()], &["faketime"]);
        assert_eq!(files.status, Status::Fail);
        assert!(files.detail.contains("/k/sb.key"), "{}", files.detail);
        let tools = signing_check(&[], &["sbsigntool", "faketime"]);
        assert_eq!(tools.status, Status::Fail);
        assert_eq!(
            tools.fix.as_deref(),
            Some("apt-get install sbsigntool faketime")
        );
        assert_eq!(signing_check(&[], &[]).status, Status::Ok);
    }

    #[test]
    fn loop_devices_are_a_warning() {
        assert_eq!(loop_check(true, Ok("/dev/loop0".into())).status, Status::Ok);
        assert_eq!(loop_check(false, Ok("x".into())).status, Status::Warn);
        assert_eq!(loop_check(true, Err("none".into())).status, Status::Warn);
    }
}
