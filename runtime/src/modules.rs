//! Load kernel modules without modprobe: `finit_module` on every `.ko`
//! listed (or found), in passes, so dependencies load whatever the order.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// The outcome of loading a set of modules.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LoadReport {
    pub loaded: Vec<String>,
    pub already_loaded: Vec<String>,
    /// (module, error) for modules that never loaded (e.g. kvm_intel on AMD).
    pub failed: Vec<(String, String)>,
}

fn module_name(path: &Path) -> String {
    let file = path.file_name().and_then(|n| n.to_str()).unwrap_or("?");
    file.split(".ko").next().unwrap_or(file).to_string()
}

fn finit_module(path: &Path) -> io::Result<()> {
    let file = File::open(path)?;
    let params = c"";
    // SAFETY: a valid fd and a NUL-terminated parameter string.
    let ret =
        unsafe { libc::syscall(libc::SYS_finit_module, file.as_raw_fd(), params.as_ptr(), 0) };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Every `*.ko` below `dir`, sorted for a stable order.
pub fn find_modules(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "ko") {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

/// Read a load-order list: one module path per line (absolute, or relative
/// to `base`), `#` comments and blank lines ignored.
pub fn read_list(text: &str, base: &Path) -> Vec<PathBuf> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let p = Path::new(l);
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                base.join(p)
            }
        })
        .collect()
}

/// Load `modules` in order; modules failing because a dependency is not
/// loaded yet are retried in further passes until no pass makes progress.
pub fn load_all(modules: &[PathBuf]) -> LoadReport {
    let mut report = LoadReport::default();
    let mut pending: Vec<&PathBuf> = modules.iter().collect();
    loop {
        let mut retry = Vec::new();
        let mut errors = Vec::new();
        let before = pending.len();
        for path in pending {
            match finit_module(path) {
                Ok(()) => report.loaded.push(module_name(path)),
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                    report.already_loaded.push(module_name(path))
                }
                Err(e) => {
                    retry.push(path);
                    errors.push((module_name(path), format!("{}: {e}", path.display())));
                }
            }
        }
        if retry.is_empty() || retry.len() == before {
            report.failed = errors;
            return report;
        }
        pending = retry;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_parsing() {
        let list = read_list(
            "# order\nkernel/arch/x86/kvm/kvm.ko\n\n/abs/exfat.ko\n",
            Path::new("/lib/modules/6.1"),
        );
        assert_eq!(
            list,
            vec![
                PathBuf::from("/lib/modules/6.1/kernel/arch/x86/kvm/kvm.ko"),
                PathBuf::from("/abs/exfat.ko")
            ]
        );
        assert_eq!(module_name(Path::new("/x/kvm-amd.ko")), "kvm-amd");
        assert_eq!(module_name(Path::new("/x/exfat.ko.xz")), "exfat");
    }

    #[test]
    fn missing_module_fails_cleanly() {
        let report = load_all(&[PathBuf::from("/nonexistent/foo.ko")]);
        assert!(report.loaded.is_empty());
        assert_eq!(report.failed.len(), 1);
        assert!(report.failed[0].1.contains("/nonexistent/foo.ko"));
    }

    #[test]
    fn find_modules_sorted() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("b")).unwrap();
        std::fs::write(dir.path().join("b/z.ko"), b"").unwrap();
        std::fs::write(dir.path().join("a.ko"), b"").unwrap();
        std::fs::write(dir.path().join("notes.txt"), b"").unwrap();
        let found = find_modules(dir.path());
        assert_eq!(
            found,
            vec![dir.path().join("a.ko"), dir.path().join("b/z.ko")]
        );
    }
}
