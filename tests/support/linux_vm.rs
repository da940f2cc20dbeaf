//! A throwaway Linux VM for tests that need kernel drivers the host kernel
//! may lack (exFAT, vfat): Debian's kernel and busybox-static, fetched with
//! `apt-get download` into a cache, booted under QEMU (TCG) with a busybox
//! initramfs that loads the requested modules and runs a shell script.
//! Disks are attached as virtio block devices `/dev/vda`, `/dev/vdb`, ...

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use hiperiso_stick::qemu::{Accel, Drive, QemuCommand};

/// Marker the init script prints before powering off: `<MARKER> <status>`.
pub const EXIT_MARKER: &str = "HIPERISO-VM-EXIT";

/// Debian's kernel, its modules and a static busybox, unpacked.
pub struct LinuxKit {
    pub vmlinuz: PathBuf,
    /// `lib/modules/<version>` of the unpacked kernel package.
    pub modules: PathBuf,
    pub busybox: PathBuf,
}

static FETCH_LOCK: Mutex<()> = Mutex::new(());

/// Where downloaded test inputs are cached: `$HIPERISO_TEST_CACHE` or
/// `target/test-cache` in the workspace.
pub fn cache_dir() -> PathBuf {
    std::env::var_os("HIPERISO_TEST_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::workspace_root().join("target/test-cache"))
}

/// Fetches (once) and unpacks Debian's current `linux-image-amd64` and
/// `busybox-static` with the host's apt configuration.
pub fn debian_linux() -> Result<LinuxKit> {
    let _guard = FETCH_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let root = cache_dir().join("debian-linux");
    let unpacked = root.join("root");
    if !unpacked.join("ready").exists() {
        let scratch = root.join(format!("tmp-{}", std::process::id()));
        let _ = fs::remove_dir_all(&scratch);
        fs::create_dir_all(&scratch)?;
        let image = kernel_package_name()?;
        run_quiet(
            Command::new("apt-get")
                .args(["download", "-q", &image, "busybox-static"])
                .current_dir(&scratch),
        )
        .context("apt-get download of the test kernel failed (run `apt-get update` first)")?;
        let tree = scratch.join("root");
        for deb in fs::read_dir(&scratch)? {
            let deb = deb?.path();
            if deb.extension().is_some_and(|e| e == "deb") {
                run_quiet(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&tree))?;
            }
        }
        fs::write(tree.join("ready"), b"")?;
        let _ = fs::remove_dir_all(&unpacked);
        fs::rename(&tree, &unpacked)?;
        let _ = fs::remove_dir_all(&scratch);
    }
    let vmlinuz = only_entry(&unpacked.join("boot"), "vmlinuz-")?;
    let modules = only_entry(&unpacked.join("lib/modules"), "")?;
    Ok(LinuxKit {
        vmlinuz,
        modules,
        busybox: unpacked.join("bin/busybox"),
    })
}

/// The versioned kernel package `linux-image-amd64` depends on.
fn kernel_package_name() -> Result<String> {
    let output = Command::new("apt-cache")
        .args(["depends", "linux-image-amd64"])
        .output()
        .context("running apt-cache")?;
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .find_map(|line| line.trim().strip_prefix("Depends: "))
        .filter(|name| name.starts_with("linux-image-"))
        .map(str::to_string)
        .context("apt-cache knows no linux-image-amd64 (run `apt-get update` first)")
}

fn only_entry(dir: &Path, prefix: &str) -> Result<PathBuf> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let entry = entry?;
        if entry.file_name().to_string_lossy().starts_with(prefix) {
            found.push(entry.path());
        }
    }
    found.sort();
    found
        .pop()
        .with_context(|| format!("nothing named {prefix}* in {}", dir.display()))
}

fn run_quiet(command: &mut Command) -> Result<()> {
    let output = command
        .output()
        .with_context(|| format!("running {command:?}"))?;
    if !output.status.success() {
        bail!(
            "{command:?} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

/// Module files of `names` and everything they depend on, dependencies
/// first (read from each module's `.modinfo` `depends=` field).
pub fn module_load_order(modules: &Path, names: &[&str]) -> Result<Vec<PathBuf>> {
    let mut by_name = std::collections::HashMap::new();
    let mut stack = vec![modules.join("kernel")];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Some(stem) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".ko"))
            {
                by_name.insert(stem.replace('-', "_"), path.clone());
            }
        }
    }
    let mut order: Vec<PathBuf> = Vec::new();
    fn visit(
        name: &str,
        by_name: &std::collections::HashMap<String, PathBuf>,
        order: &mut Vec<PathBuf>,
        depth: usize,
    ) -> Result<()> {
        let name = name.replace('-', "_");
        let Some(path) = by_name.get(&name) else {
            // Built into the kernel.
            return Ok(());
        };
        if order.contains(path) {
            return Ok(());
        }
        if depth > 32 {
            bail!("module dependency loop at {name}");
        }
        let bytes = fs::read(path)?;
        let depends = bytes
            .split(|&b| b == 0)
            .find_map(|field| field.strip_prefix(b"depends="))
            .map(|d| String::from_utf8_lossy(d).into_owned())
            .unwrap_or_default();
        for dependency in depends.split(',').filter(|d| !d.is_empty()) {
            visit(dependency, by_name, order, depth + 1)?;
        }
        order.push(path.clone());
        Ok(())
    }
    for name in names {
        if !by_name.contains_key(&name.replace('-', "_")) {
            bail!("module {name} not found under {}", modules.display());
        }
        visit(name, &by_name, &mut order, 0)?;
    }
    Ok(order)
}

/// Builds an initramfs (newc cpio) whose init loads `modules` and runs
/// `script` with busybox sh, then prints `EXIT_MARKER <status>` and powers off.
pub fn build_initramfs(kit: &LinuxKit, modules: &[&str], script: &str, out: &Path) -> Result<()> {
    let staging = tempfile::tempdir()?;
    let root = staging.path();
    for dir in ["bin", "dev", "proc", "sys", "mnt", "modules", "tmp"] {
        fs::create_dir_all(root.join(dir))?;
    }
    fs::copy(&kit.busybox, root.join("bin/busybox"))?;
    let mut load = String::new();
    for (index, module) in module_load_order(&kit.modules, modules)?.iter().enumerate() {
        let name = format!("{index:02}.ko");
        fs::copy(module, root.join("modules").join(&name))?;
        load.push_str(&format!(
            "insmod /modules/{name} || echo 'insmod {} failed'\n",
            module.display()
        ));
    }
    let init = format!(
        "#!/bin/busybox sh\n\
         /bin/busybox --install -s /bin\n\
         mount -t proc proc /proc\n\
         mount -t sysfs sys /sys\n\
         mount -t devtmpfs dev /dev\n\
         {load}\
         sh /test.sh\n\
         echo \"{EXIT_MARKER} $?\"\n\
         sync\n\
         poweroff -f\n"
    );
    fs::write(root.join("init"), init)?;
    fs::write(root.join("test.sh"), script)?;
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(root.join("init"), fs::Permissions::from_mode(0o755))?;
    let listing = Command::new("sh")
        .arg("-c")
        .arg("find . | LC_ALL=C sort | cpio -o -H newc --quiet")
        .current_dir(root)
        .output()
        .context("running cpio")?;
    if !listing.status.success() {
        bail!("cpio failed: {}", String::from_utf8_lossy(&listing.stderr));
    }
    fs::write(out, listing.stdout)?;
    Ok(())
}

/// The last `count` lines of a console log, for error messages.
fn tail(output: &str, count: usize) -> String {
    let lines: Vec<&str> = output.lines().collect();
    lines[lines.len().saturating_sub(count)..].join("\n")
}

/// Boots the kit's kernel with `initramfs` and `disks` (raw images, as
/// virtio disks in order) under QEMU TCG; returns the serial console
/// output once the VM powers off. Fails on timeout or when the script
/// exits non-zero (the error shows the console's last lines).
pub fn run_vm(
    kit: &LinuxKit,
    initramfs: &Path,
    disks: &[&Path],
    timeout: Duration,
) -> Result<String> {
    let mut qemu = QemuCommand::new("qemu-system-x86_64");
    qemu.accel(Accel::Tcg)
        .memory_mb(1024)
        .smp(1)
        .nographic()
        .no_reboot()
        .nodefaults()
        .serial_stdio()
        .direct_kernel(
            &kit.vmlinuz,
            initramfs,
            "console=ttyS0 panic=-1 quiet loglevel=4",
        );
    for disk in disks {
        qemu.drive(&Drive::virtio(disk).opt("cache", "writeback"));
    }
    let mut command = qemu.command();
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting qemu-system-x86_64")?;
    let mut stdout = child.stdout.take().context("qemu stdout")?;
    let reader = std::thread::spawn(move || {
        let mut output = Vec::new();
        let _ = stdout.read_to_end(&mut output);
        output
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if started.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            let output = reader.join().unwrap_or_default();
            bail!(
                "VM timed out after {timeout:?}; console ends with:\n{}",
                tail(&String::from_utf8_lossy(&output), 60)
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let output = String::from_utf8_lossy(&reader.join().unwrap_or_default()).into_owned();
    if !status.success() {
        let mut stderr = String::new();
        if let Some(mut pipe) = child.stderr.take() {
            let _ = pipe.read_to_string(&mut stderr);
        }
        bail!(
            "qemu failed ({status}): {stderr}\nconsole ends with:\n{}",
            tail(&output, 60)
        );
    }
    let exit = output
        .lines()
        .find_map(|line| line.trim().strip_prefix(EXIT_MARKER))
        .map(str::trim);
    match exit {
        Some("0") => Ok(output),
        Some(code) => bail!(
            "VM script exited with {code}; console ends with:\n{}",
            tail(&output, 60)
        ),
        None => bail!(
            "VM stopped without finishing its script; console ends with:\n{}",
            tail(&output, 60)
        ),
    }
}

/// Lines between `=== BEGIN <name>` and `=== END <name>` in VM output.
pub fn section<'a>(output: &'a str, name: &str) -> Result<Vec<&'a str>> {
    let begin = format!("=== BEGIN {name}");
    let end = format!("=== END {name}");
    let mut lines = output.lines().map(|l| l.trim_end_matches('\r'));
    lines
        .by_ref()
        .find(|line| line.trim() == begin)
        .with_context(|| format!("no section {name} in VM output:\n{}", tail(output, 60)))?;
    let body: Vec<&str> = lines.take_while(|line| line.trim() != end).collect();
    Ok(body)
}
