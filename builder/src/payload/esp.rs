//! The ESP payload: from a root tree laid out like an installed system
//! (the debian profile's unpacked packages, or the default profile's build
//! steps laid together), the ESP tree (GRUB, kernel, initramfs, firmware,
//! build.json).
//!
//! ```text
//! EFI/BOOT/BOOTX64.EFI            the grub-image step's, or Debian's signed shim
//!                                 (+ grubx64.efi, EFI/debian/grub.cfg, x86_64-efi/)
//!                                 when the tree has it, or grub-mkimage of the tree
//! EFI/hiperiso/bios/boot.img …    GRUB's legacy BIOS pair (payload/grub.rs), when
//!                                 the grub-image step or the tree has i386-pc
//! EFI/BOOT/fonts/unicode.pf2      GRUB's font for gfxterm
//! EFI/BOOT/grub.cfg …             overlays/esp (laid on last)
//! EFI/hiperiso/vmlinuz            the tree's boot/vmlinuz-<version>
//! EFI/hiperiso/initramfs.cpio.zst see `initramfs_tree`, then `overlay_initramfs`
//! EFI/hiperiso/OVMF_CODE.fd       usr/share/OVMF/OVMF_CODE_4M.fd (4 MiB variant)
//! EFI/hiperiso/OVMF_VARS.fd       usr/share/OVMF/OVMF_VARS_4M.fd
//! EFI/hiperiso/build.json         inputs and the sha256 of every file above
//! ```

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

use hiperiso_stick::io::{IoError, io_err};
use hiperiso_stick::paths::esp as paths;

use sha2::{Digest, Sha256};

use crate::debian::deb::resolve_in_tree;
use crate::payload::cpio::{Content, Node};
use crate::payload::grub::{
    Platform, bios_boot, grub_mkimage, has_platform, has_signed_chain, signed_chain,
};
use crate::payload::initramfs::{Compression, Initramfs, InitramfsError};
use crate::payload::kmod::{KmodError, ModuleIndex};
use crate::payload::secure_boot::{Grub, SecureBootError, SigningKey, sign_esp};

/// Kernel modules the host needs (hiperiso-init loads them in the order of
/// `/etc/hiperiso/modules.load`). Built-in ones are skipped.
pub const KERNEL_MODULES: &[&str] = &[
    // KVM
    "kvm",
    "kvm_amd",
    "kvm_intel",
    // USB host controllers and storage
    "xhci_pci",
    "xhci_hcd",
    "ehci_pci",
    "ehci_hcd",
    "ohci_pci",
    "uhci_hcd",
    "usb_storage",
    "uas",
    // SATA, NVMe, SCSI disks and CD-ROMs, virtio (for tests and VMs)
    "ahci",
    "nvme",
    "sd_mod",
    "sr_mod",
    "virtio_pci",
    "virtio_blk",
    "virtio_scsi",
    // File systems and code pages
    "exfat",
    "vfat",
    "isofs",
    "loop",
    "nls_cp437",
    "nls_iso8859_1",
    "nls_utf8",
    "nls_ascii",
    // Framebuffer and input
    "bochs",
    "evdev",
    // The ACPI power button: hiperiso-init finalizes the session on it
    "button",
    "psmouse",
    "usbhid",
    "hid_generic",
    // Guest networking
    "tun",
];

/// Top-level files of `/usr/share/qemu` an x86 QEMU may load; the rest of
/// that directory (ppc, sparc, s390, riscv firmware) is left out.
const QEMU_DATA_PREFIXES: &[&str] = &[
    "bios",
    "kvmvapic.bin",
    "linuxboot",
    "multiboot",
    "pvh.bin",
    "qboot.rom",
    "vgabios",
    "efi-",
    "pxe-",
    "sgabios.bin",
    "OVMF.fd",
];

#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    #[error("{0}")]
    Missing(String),
    #[error("building the initramfs")]
    Initramfs(#[from] InitramfsError),
    #[error("writing the initramfs archive")]
    Cpio(#[from] crate::payload::cpio::CpioError),
    #[error("resolving the kernel modules")]
    Kmod(#[from] KmodError),
    #[error(transparent)]
    Grub(#[from] crate::payload::grub::GrubError),
    #[error("signing the boot chain with the [secure-boot] key")]
    SecureBoot(#[from] SecureBootError),
    #[error(transparent)]
    Io(#[from] IoError),
    #[error("caching the payload")]
    Cache(#[from] crate::steps::StepError),
}

/// Inputs of the payload besides the package tree.
#[derive(Debug, Clone)]
pub struct PayloadOptions {
    /// The unpacked package tree.
    pub root: PathBuf,
    /// The `hiperiso-init` binary, installed as `/init`.
    pub init: PathBuf,
    /// `overlays/` of the repository: `esp/` and `initramfs/` are laid on last.
    pub overlays: Option<PathBuf>,
    pub kernel_modules: Vec<String>,
    pub grub_modules: Vec<String>,
    /// A ready BOOTX64.EFI (the grub-image step's); else grub-mkimage of
    /// the tree runs with `grub_modules`.
    pub grub_image: Option<PathBuf>,
    /// A ready directory with the BIOS `boot.img` and `core.img` (the
    /// grub-image step's); else made from the tree's i386-pc GRUB when it
    /// has one; else the image has no legacy BIOS path.
    pub grub_bios: Option<PathBuf>,
    /// The user's Secure Boot key (the manifest's `[secure-boot]`): the
    /// chain of payload/secure_boot.rs replaces the others.
    pub secure_boot: Option<SigningKey>,
    pub compression: Compression,
    pub source_date_epoch: u32,
    /// Extra files for the ESP, e.g. `EFI/hiperiso/hiperiso-log`.
    pub extra_esp_files: Vec<(String, PathBuf)>,
    /// Merged into build.json (manifest and lock hashes).
    pub build_info: serde_json::Map<String, serde_json::Value>,
    /// Names the content of `root`, `init`, `grub_image` and
    /// `extra_esp_files` (the lock's package tree key, the steps' output
    /// trees): the payload's cache keys (payload/cached.rs) hash it instead
    /// of those files.
    pub content_id: String,
}

impl PayloadOptions {
    pub fn new(root: impl Into<PathBuf>, init: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            init: init.into(),
            overlays: None,
            kernel_modules: KERNEL_MODULES.iter().map(|s| s.to_string()).collect(),
            grub_modules: Platform::Efi.modules(),
            grub_image: None,
            grub_bios: None,
            secure_boot: None,
            compression: Compression::Zstd,
            source_date_epoch: 0,
            extra_esp_files: Vec::new(),
            build_info: serde_json::Map::new(),
            content_id: String::new(),
        }
    }
}

/// What was built.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Payload {
    pub kernel_version: String,
    /// ESP-relative path -> (size, sha256), build.json included.
    pub files: BTreeMap<String, (u64, String)>,
    /// Kernel modules in load order (paths under /lib/modules/<version>).
    pub modules: Vec<String>,
}

impl Payload {
    pub fn total_size(&self) -> u64 {
        self.files.values().map(|(size, _)| size).sum()
    }
}

/// The single kernel version under `lib/modules` of the tree.
pub fn kernel_version(root: &Path) -> Result<String, PayloadError> {
    let mut versions: Vec<String> = fs::read_dir(root.join("lib/modules"))
        .map_err(io_err("read", &root.join("lib/modules")))?
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|v| root.join("boot").join(format!("vmlinuz-{v}")).exists())
        .collect();
    versions.sort();
    match &versions[..] {
        [one] => Ok(one.clone()),
        [] => Err(PayloadError::Missing(format!(
            "no kernel in {}: expected boot/vmlinuz-<v> and lib/modules/<v> (is linux-image-amd64 in the package list?)",
            root.display()
        ))),
        many => Err(PayloadError::Missing(format!(
            "several kernels in {}: {}; list exactly one linux-image package",
            root.display(),
            many.join(", ")
        ))),
    }
}

/// Assembles the initramfs: `/init`, busybox, QEMU with its library closure
/// and data files, firmware for the inner VM, kernel modules (the overlay
/// is a second archive: [`overlay_initramfs`]).
pub fn initramfs_tree(
    options: &PayloadOptions,
    kernel: &str,
) -> Result<(Initramfs, Vec<String>), PayloadError> {
    let root = &options.root;
    let mut initramfs = Initramfs::new(root)?;
    initramfs.tree_mut().insert(
        "init",
        Node::File {
            content: Content::Path(options.init.clone()),
            mode: 0o755,
        },
    )?;
    for dir in ["proc", "sys", "run", "tmp", "mnt", "etc/hiperiso"] {
        initramfs
            .tree_mut()
            .insert(dir, Node::Directory { mode: 0o755 })?;
    }

    // busybox and its applet links (asked from the static binary itself).
    initramfs.add_from_root("bin/busybox")?;
    for applet in busybox_applets(root)? {
        if !initramfs.tree().contains(&applet) {
            initramfs.tree_mut().insert(
                &applet,
                Node::Symlink {
                    target: "/bin/busybox".into(),
                },
            )?;
        }
    }

    // QEMU, its libraries, its firmware search path.
    initramfs.add_binaries(&["usr/bin/qemu-system-x86_64"])?;
    if tree_path_exists(root, "usr/bin/qemu-img") {
        initramfs.add_binaries(&["usr/bin/qemu-img"])?;
    }
    // Debian builds TCG as a loadable module; without it the
    // `hiperiso_fallback=1` path fails with "could not load module for type
    // 'tcg-accel-ops'".
    let tcg = "usr/lib/x86_64-linux-gnu/qemu/accel-tcg-x86_64.so";
    if tree_path_exists(root, tcg) {
        initramfs.add_binaries(&[tcg])?;
    }
    // swtpm gives guests that ask for one (`"tpm": true`) a TPM 2.0.
    if tree_path_exists(root, "usr/bin/swtpm") {
        initramfs.add_binaries(&["usr/bin/swtpm"])?;
    }
    for dir in [
        "usr/share/seabios",
        "usr/lib/ipxe/qemu",
        "usr/share/OVMF",
        "usr/share/qemu/keymaps",
        "usr/share/qemu/firmware",
    ] {
        if tree_path_exists(root, dir) {
            initramfs.add_from_root(dir)?;
        }
    }
    let qemu_data = root.join("usr/share/qemu");
    let mut names: Vec<String> = fs::read_dir(&qemu_data)
        .map_err(io_err("read", &qemu_data))?
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|name| {
            QEMU_DATA_PREFIXES
                .iter()
                .any(|prefix| name.starts_with(prefix))
        })
        .collect();
    names.sort();
    for name in names {
        initramfs.add_from_root(&format!("usr/share/qemu/{name}"))?;
    }

    // Kernel modules, in load order, with a modules.dep for modprobe.
    let module_dir = format!("lib/modules/{kernel}");
    let index = ModuleIndex::scan(&root.join(&module_dir))?;
    let names: Vec<&str> = options.kernel_modules.iter().map(String::as_str).collect();
    let modules = index.closure(&names)?;
    let mut order = Vec::new();
    for module in &modules {
        initramfs.add_from_root(&format!("{module_dir}/{}", module.path))?;
        order.push(module.path.clone());
    }
    let list: String = order.iter().map(|path| format!("{path}\n")).collect();
    let tree = initramfs.tree_mut();
    tree.insert(
        &format!("{module_dir}/modules.dep"),
        bytes_node(index.modules_dep(&modules)),
    )?;
    tree.insert(
        &format!("{module_dir}/modules.order"),
        bytes_node(list.clone()),
    )?;
    tree.insert(
        "etc/hiperiso/modules.load",
        bytes_node(format!("# /lib/modules/{kernel}/… in load order\n{list}")),
    )?;
    tree.insert(
        "etc/hiperiso/kernel-version",
        bytes_node(format!("{kernel}\n")),
    )?;
    // The kernel's configuration for hw/host_kernel_config.gz: Debian's
    // kernel has no /proc/config.gz, its package has boot/config-<version>.
    let config = format!("boot/config-{kernel}");
    if tree_path_exists(root, &config) {
        let path = real_path(root, &config)?;
        let text = fs::read(&path).map_err(io_err("read", &path))?;
        tree.insert(
            hiperiso_stick::paths::initramfs::KERNEL_CONFIG,
            Node::File {
                content: Content::Bytes(gzip(&text).map_err(io_err("compress", &path))?),
                mode: 0o644,
            },
        )?;
    }
    if tree_path_exists(root, &format!("{module_dir}/modules.builtin")) {
        initramfs.add_from_root(&format!("{module_dir}/modules.builtin"))?;
    }
    Ok((initramfs, order))
}

/// `overlays/initramfs` packed alone (None when there is none). It goes
/// after the cached initramfs in the same file: the kernel unpacks
/// concatenated archives in order, so its files replace the first's, and
/// an edit repacks only this small archive.
pub fn overlay_initramfs(options: &PayloadOptions) -> Result<Option<Vec<u8>>, PayloadError> {
    let Some(dir) = options.overlays.as_ref().map(|o| o.join("initramfs")) else {
        return Ok(None);
    };
    if !dir.is_dir() {
        return Ok(None);
    }
    let mut archive = Vec::new();
    Initramfs::of_directory(&dir)?.write(
        options.source_date_epoch,
        options.compression,
        &mut archive,
    )?;
    Ok(Some(archive))
}

/// `data` gzipped, with no name and no time in the header (reproducible).
fn gzip(data: &[u8]) -> io::Result<Vec<u8>> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(data)?;
    encoder.finish()
}

fn bytes_node(text: String) -> Node {
    Node::File {
        content: Content::Bytes(text.into_bytes()),
        mode: 0o644,
    }
}

fn tree_path_exists(root: &Path, path: &str) -> bool {
    let components: Vec<String> = path.split('/').map(str::to_string).collect();
    resolve_in_tree(root, &components, true).is_ok_and(|p| p.exists())
}

fn real_path(root: &Path, path: &str) -> Result<PathBuf, PayloadError> {
    Ok(crate::payload::grub::real_path(root, path)?)
}

/// `busybox --list-full` of the tree's static busybox: `bin/sh`, `sbin/…`.
fn busybox_applets(root: &Path) -> Result<Vec<String>, PayloadError> {
    let busybox = real_path(root, "bin/busybox")?;
    let output = Command::new(&busybox)
        .arg("--list-full")
        .env_clear()
        .output()
        .map_err(io_err("run", &busybox))?;
    let mut applets: Vec<String> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| line.trim().trim_start_matches('/').to_string())
        .filter(|line| !line.is_empty() && !line.contains(".."))
        .collect();
    applets.sort();
    if applets.is_empty() {
        return Err(PayloadError::Missing(format!(
            "{} --list-full printed no applets",
            busybox.display()
        )));
    }
    Ok(applets)
}

fn copy(source: &Path, destination: &Path) -> Result<(), PayloadError> {
    if let Some(parent) = destination.parent() {
        fs::create_dir_all(parent).map_err(io_err("create", parent))?;
    }
    fs::copy(source, destination).map_err(io_err("copy to", destination))?;
    Ok(())
}

fn copy_tree(source: &Path, destination: &Path) -> Result<(), PayloadError> {
    let mut entries: Vec<_> = fs::read_dir(source)
        .map_err(io_err("read", source))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();
    entries.sort();
    for entry in entries {
        let target = destination.join(entry.file_name().unwrap_or_default());
        if entry.is_dir() {
            copy_tree(&entry, &target)?;
        } else {
            copy(&entry, &target)?;
        }
    }
    Ok(())
}

fn hash_tree(
    dir: &Path,
    prefix: &str,
    files: &mut BTreeMap<String, (u64, String)>,
) -> Result<(), PayloadError> {
    for entry in fs::read_dir(dir).map_err(io_err("read", dir))? {
        let entry = entry.map_err(io_err("read", dir))?;
        let name = entry.file_name().to_string_lossy().to_string();
        let relative = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        if entry.path().is_dir() {
            hash_tree(&entry.path(), &relative, files)?;
        } else {
            let bytes = fs::read(entry.path()).map_err(io_err("read", &entry.path()))?;
            files.insert(
                relative,
                (bytes.len() as u64, hex::encode(Sha256::digest(&bytes))),
            );
        }
    }
    Ok(())
}

/// The initramfs archive's file name for `compression`.
pub fn initramfs_name(compression: Compression) -> String {
    format!("initramfs.cpio{}", compression.extension())
}

/// Packs the initramfs into `file`; returns the kernel modules in load
/// order.
pub fn build_initramfs(options: &PayloadOptions, file: &Path) -> Result<Vec<String>, PayloadError> {
    let kernel = kernel_version(&options.root)?;
    let (initramfs, modules) = initramfs_tree(options, &kernel)?;
    let out = fs::File::create(file).map_err(io_err("create", file))?;
    initramfs.write(
        options.source_date_epoch,
        options.compression,
        io::BufWriter::new(out),
    )?;
    Ok(modules)
}

/// Builds the ESP tree into `esp` (which must be empty or absent) around
/// the packed `initramfs` (see [`build_initramfs`]) and its `modules`.
pub fn build(
    options: &PayloadOptions,
    initramfs: &Path,
    modules: Vec<String>,
    esp: &Path,
) -> Result<Payload, PayloadError> {
    let root = &options.root;
    fs::create_dir_all(esp).map_err(io_err("create", esp))?;
    let kernel = kernel_version(root)?;
    let hiperiso = esp.join(paths::HIPERISO_DIR);
    let boot = esp.join(paths::GRUB_DIR);
    fs::create_dir_all(&hiperiso).map_err(io_err("create", &hiperiso))?;
    fs::create_dir_all(&boot).map_err(io_err("create", &boot))?;

    match (&options.secure_boot, &options.grub_image) {
        // signed below, once the kernel is there
        (Some(_), _) => {}
        (None, Some(image)) => copy(image, &esp.join(paths::BOOT_EFI))?,
        (None, None) if has_signed_chain(root) => signed_chain(root, esp, &options.grub_modules)?,
        (None, None) => grub_mkimage(
            root,
            Platform::Efi,
            &options.grub_modules,
            &esp.join(paths::BOOT_EFI),
        )?,
    }
    match &options.grub_bios {
        Some(dir) => {
            copy(&dir.join("boot.img"), &esp.join(paths::BIOS_BOOT_IMG))?;
            copy(&dir.join("core.img"), &esp.join(paths::BIOS_CORE_IMG))?;
        }
        None if has_platform(root, Platform::Bios) => bios_boot(root, esp)?,
        None => {}
    }
    if let Ok(font) = real_path(root, "usr/share/grub/unicode.pf2") {
        copy(&font, &boot.join("fonts/unicode.pf2"))?;
    }
    copy(
        &real_path(root, &format!("boot/vmlinuz-{kernel}"))?,
        &esp.join(paths::VMLINUZ),
    )?;
    if let Some(key) = &options.secure_boot {
        let grub = match &options.grub_image {
            Some(image) => Grub::Image(image),
            None => Grub::Modules(&options.grub_modules),
        };
        sign_esp(root, esp, key, grub, i64::from(options.source_date_epoch))?;
    }
    copy(
        &real_path(root, "usr/share/OVMF/OVMF_CODE_4M.fd")?,
        &esp.join(paths::OVMF_CODE),
    )?;
    copy(
        &real_path(root, "usr/share/OVMF/OVMF_VARS_4M.fd")?,
        &esp.join(paths::OVMF_VARS),
    )?;
    copy(
        initramfs,
        &hiperiso.join(initramfs_name(options.compression)),
    )?;

    for (relative, source) in &options.extra_esp_files {
        copy(source, &esp.join(relative))?;
    }
    if let Some(overlays) = &options.overlays {
        let overlay = overlays.join("esp");
        if overlay.is_dir() {
            copy_tree(&overlay, esp)?;
        }
    }

    let mut files = BTreeMap::new();
    hash_tree(esp, "", &mut files)?;
    let mut info = options.build_info.clone();
    info.insert("kernel".into(), kernel.clone().into());
    info.insert("source_date_epoch".into(), options.source_date_epoch.into());
    info.insert(
        "files".into(),
        files
            .iter()
            .map(|(path, (size, sha256))| {
                (
                    path.clone(),
                    serde_json::json!({"size": size, "sha256": sha256}),
                )
            })
            .collect::<serde_json::Map<_, _>>()
            .into(),
    );
    let json = serde_json::to_string_pretty(&serde_json::Value::Object(info)).expect("json") + "\n";
    let build_json = esp.join(paths::BUILD_JSON);
    fs::write(&build_json, &json).map_err(io_err("write", &build_json))?;
    files.insert(
        paths::BUILD_JSON.into(),
        (
            json.len() as u64,
            hex::encode(Sha256::digest(json.as_bytes())),
        ),
    );
    Ok(Payload {
        kernel_version: kernel,
        files,
        modules,
    })
}
