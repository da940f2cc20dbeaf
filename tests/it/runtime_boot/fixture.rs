//! The outer VM's kernel, modules and initramfs with a static hiperiso-init.

use super::*;
pub(crate) fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The standard output of `cmd`, which must succeed.
pub(crate) fn run_bytes(cmd: &mut Command) -> Vec<u8> {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?} failed: {}", out.status);
    out.stdout
}

pub(crate) fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

/// `hiperiso-init` as the product ships it: a static release binary.
pub(crate) fn build_static_init() -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    run(Command::new(cargo)
        .current_dir(workspace_root())
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .args([
            "build",
            "--release",
            "-p",
            "hiperiso-runtime",
            "--bin",
            "hiperiso-init",
        ])
        .args(["--target", "x86_64-unknown-linux-gnu", "--target-dir"])
        .arg(target_dir()));
    let bin = target_dir().join("x86_64-unknown-linux-gnu/release/hiperiso-init");
    assert!(
        !has_interpreter(&fs::read(&bin).unwrap()),
        "{} is not static",
        bin.display()
    );
    bin
}

/// Whether an ELF64 file asks for a dynamic loader (a PT_INTERP header).
pub(crate) fn has_interpreter(elf: &[u8]) -> bool {
    assert_eq!(&elf[..4], b"\x7fELF");
    let u16_at = |at: usize| usize::from(u16::from_le_bytes([elf[at], elf[at + 1]]));
    let phoff = u64::from_le_bytes(elf[0x20..0x28].try_into().unwrap()) as usize;
    let (entry_size, count) = (u16_at(0x36), u16_at(0x38));
    (0..count).any(|i| {
        let at = phoff + i * entry_size;
        u32::from_le_bytes(elf[at..at + 4].try_into().unwrap()) == 3
    })
}

/// Debian's `linux-image-amd64` kernel and modules, downloaded once.
pub(crate) fn debian_kernel() -> (PathBuf, PathBuf) {
    let cache = target_dir().join("hiperiso-test-cache/debian-kernel");
    let root = cache.join("root");
    let find = |root: &Path| -> Option<(PathBuf, PathBuf)> {
        let boot = fs::read_dir(root.join("boot")).ok()?;
        let vmlinuz = boot.flatten().map(|e| e.path()).find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("vmlinuz-"))
        })?;
        let release = vmlinuz
            .file_name()?
            .to_str()?
            .strip_prefix("vmlinuz-")?
            .to_string();
        let modules = root.join("lib/modules").join(release);
        modules.is_dir().then_some((vmlinuz, modules))
    };
    if let Some(found) = find(&root) {
        return found;
    }
    fs::create_dir_all(&cache).unwrap();
    let depends = run(Command::new("apt-cache").args(["depends", "linux-image-amd64"]));
    let package = depends
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Depends: "))
        .find(|p| p.starts_with("linux-image-") && p.ends_with("-amd64"))
        .expect("linux-image-amd64 depends on a linux-image-*-amd64 package")
        .to_string();
    run(Command::new("apt-get")
        .current_dir(&cache)
        .args(["download", &package]));
    let deb = fs::read_dir(&cache)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&package) && n.ends_with(".deb"))
        })
        .expect("downloaded .deb");
    let staging = cache.join("root.tmp");
    let _ = fs::remove_dir_all(&staging);
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&staging));
    fs::rename(&staging, &root).unwrap();
    find(&root).expect("kernel and modules in the package")
}

/// The `depends=` field of a module's .modinfo section.
pub(crate) fn module_depends(ko: &[u8]) -> Vec<String> {
    let needle = b"depends=";
    ko.windows(needle.len())
        .position(|w| w == needle)
        .map(|at| {
            let rest = &ko[at + needle.len()..];
            let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
            String::from_utf8_lossy(&rest[..end])
                .split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

pub(crate) fn find_module(dir: &Path, name: &str) -> Option<PathBuf> {
    let wanted = format!("{name}.ko");
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).ok()?.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.file_name().is_some_and(|n| n == wanted.as_str()) {
                return Some(path);
            }
        }
    }
    None
}

pub(crate) fn copy_preserving(src: &Path, root: &Path) {
    let dest = root.join(src.strip_prefix("/").unwrap());
    fs::create_dir_all(dest.parent().unwrap()).unwrap();
    run(Command::new("cp").arg("-a").arg(src).arg(&dest));
}

/// Pack the initramfs: /init, QEMU with its libraries and data, firmware,
/// trace event files and the modules (with their dependencies).
pub(crate) fn build_initramfs(init: &Path, modules_dir: &Path, out: &Path) {
    let staging = tempfile::tempdir().unwrap();
    let root = staging.path();
    for dir in ["proc", "sys", "dev", "run", "mnt", "tmp"] {
        fs::create_dir_all(root.join(dir)).unwrap();
    }
    fs::copy(init, root.join("init")).unwrap();
    // The shell of `hiperiso.after=shell` and of the rescue entry, as the
    // product's initramfs has it (Debian's busybox-static).
    fs::create_dir_all(root.join("bin")).unwrap();
    fs::copy("/bin/busybox", root.join("bin/busybox"))
        .expect("/bin/busybox (Debian's busybox-static)");
    let qemu = Path::new("/usr/bin/qemu-system-x86_64");
    copy_preserving(qemu, root);
    let ldd = run(Command::new("ldd").arg(qemu));
    for lib in ldd.split_whitespace().filter(|w| w.starts_with('/')) {
        let dest = root.join(lib.trim_start_matches('/'));
        fs::create_dir_all(dest.parent().unwrap()).unwrap();
        fs::copy(lib, &dest).unwrap_or_else(|e| panic!("copy {lib}: {e}"));
    }
    // Debian builds TCG as a loadable QEMU module: the fallback needs it.
    copy_preserving(
        Path::new("/usr/lib/x86_64-linux-gnu/qemu/accel-tcg-x86_64.so"),
        root,
    );
    copy_preserving(Path::new("/usr/share/qemu"), root);
    copy_preserving(Path::new("/usr/share/seabios"), root);
    fs::create_dir_all(root.join("usr/share/OVMF")).unwrap();
    for fd in ["OVMF_CODE_4M.fd", "OVMF_VARS_4M.fd"] {
        fs::copy(
            Path::new("/usr/share/OVMF").join(fd),
            root.join("usr/share/OVMF").join(fd),
        )
        .unwrap();
    }
    let trace = root.join("usr/share/hiperiso/trace");
    fs::create_dir_all(&trace).unwrap();
    for entry in fs::read_dir(workspace_root().join("overlays/esp/EFI/hiperiso/trace")).unwrap() {
        let path = entry.unwrap().path();
        fs::copy(&path, trace.join(path.file_name().unwrap())).unwrap();
    }
    let release = modules_dir.file_name().unwrap();
    // Debian's kernel has no /proc/config.gz: its package's config, gzipped,
    // where the debian profile's initramfs has it (payload/esp.rs).
    let package_root = modules_dir.ancestors().nth(3).unwrap();
    let config = package_root
        .join("boot")
        .join(format!("config-{}", release.to_str().unwrap()));
    let shipped = root.join(hiperiso_stick::paths::initramfs::KERNEL_CONFIG);
    fs::create_dir_all(shipped.parent().unwrap()).unwrap();
    let gz = run_bytes(Command::new("gzip").arg("-n9c").arg(&config));
    fs::write(&shipped, gz).unwrap();
    let dest_modules = root.join("lib/modules").join(release);
    let mut wanted: Vec<String> = MODULES.iter().map(|s| s.to_string()).collect();
    let mut done: Vec<String> = Vec::new();
    while let Some(name) = wanted.pop() {
        if done.contains(&name) {
            continue;
        }
        let ko = find_module(modules_dir, &name)
            .or_else(|| find_module(modules_dir, &name.replace('_', "-")))
            .unwrap_or_else(|| panic!("module {name} not in {}", modules_dir.display()));
        let bytes = fs::read(&ko).unwrap();
        wanted.extend(module_depends(&bytes));
        let dest = dest_modules.join(ko.strip_prefix(modules_dir).unwrap());
        fs::create_dir_all(dest.parent().unwrap()).unwrap();
        fs::write(dest, bytes).unwrap();
        done.push(name);
    }
    let cpio = File::create(out).unwrap();
    let status = Command::new("sh")
        .current_dir(root)
        .args(["-c", "find . | LC_ALL=C sort | cpio -o -H newc --quiet"])
        .stdout(cpio)
        .status()
        .unwrap();
    assert!(status.success(), "cpio failed");
}

pub(crate) struct Fixture {
    pub(crate) _dir: tempfile::TempDir,
    pub(crate) kernel: PathBuf,
    pub(crate) initrd: PathBuf,
    pub(crate) isos: PathBuf,
}

pub(crate) fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let init = build_static_init();
        let (kernel, modules) = debian_kernel();
        let initrd = dir.path().join("initramfs.cpio");
        build_initramfs(&init, &modules, &initrd);
        let isos = dir.path().join("ISOs");
        fs::create_dir_all(&isos).unwrap();
        let work = dir.path().join("iso-work");
        fs::create_dir_all(&work).unwrap();
        let bios = isos::bios_iso(&work, "bios", BIOS_MARKER).unwrap();
        fs::copy(&bios, isos.join("bios.iso")).unwrap();
        fs::copy(&bios, isos.join("startfail.iso")).unwrap();
        let panic = isos::boot_sector_iso(&work, "panic", PANIC_MARKER, isos::After::Panic);
        fs::copy(panic.unwrap(), isos.join("panic.iso")).unwrap();
        let hang = isos::boot_sector_iso(&work, "hang", HANG_MARKER, isos::After::Hang);
        fs::copy(hang.unwrap(), isos.join("hang.iso")).unwrap();
        let uefi = isos::uefi_iso(&work, "uefi", UEFI_MARKER).unwrap();
        fs::copy(uefi, isos.join("uefi.iso")).unwrap();
        fs::write(isos.join("junk.iso"), vec![0xAAu8; 1 << 20]).unwrap();
        Fixture {
            _dir: dir,
            kernel,
            initrd,
            isos,
        }
    })
}
