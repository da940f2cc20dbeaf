//! The host's inventory, from `/proc` and `/sys` (parameters, for tests).

use super::{InventoryError, read_trimmed, sorted_entries, write};
use hiperiso_stick::session::HostSummary;
use std::fmt::Write as _;
use std::fs;
use std::path::Path;

/// One line per PCI device from sysfs: address, ids, class, driver.
pub fn host_pci(sys: &Path) -> String {
    let mut out = String::new();
    for dev in sorted_entries(&sys.join("bus/pci/devices")) {
        let get = |f: &str| read_trimmed(&dev.join(f)).unwrap_or_default();
        let driver = fs::read_link(dev.join("driver"))
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "-".into());
        let name = dev.file_name().unwrap_or_default().to_string_lossy();
        let _ = writeln!(
            out,
            "{name} vendor={} device={} subsystem={}:{} class={} driver={driver}",
            get("vendor"),
            get("device"),
            get("subsystem_vendor"),
            get("subsystem_device"),
            get("class"),
        );
    }
    out
}

/// One line per USB device from sysfs.
pub fn host_usb(sys: &Path) -> String {
    let mut out = String::new();
    for dev in sorted_entries(&sys.join("bus/usb/devices")) {
        let get = |f: &str| read_trimmed(&dev.join(f));
        let Some(vendor) = get("idVendor") else {
            continue;
        };
        let name = dev.file_name().unwrap_or_default().to_string_lossy();
        let _ = writeln!(
            out,
            "{name} {vendor}:{} speed={} manufacturer={:?} product={:?}",
            get("idProduct").unwrap_or_default(),
            get("speed").unwrap_or_default(),
            get("manufacturer").unwrap_or_default(),
            get("product").unwrap_or_default(),
        );
    }
    out
}

/// One line per block device: name, size in bytes, model, removable.
pub fn host_block(sys: &Path) -> String {
    let mut out = String::new();
    for dev in sorted_entries(&sys.join("class/block")) {
        let get = |f: &str| read_trimmed(&dev.join(f)).unwrap_or_default();
        let sectors: u64 = get("size").parse().unwrap_or(0);
        let name = dev.file_name().unwrap_or_default().to_string_lossy();
        let _ = writeln!(
            out,
            "{name} size={} model={:?} removable={} ro={}",
            sectors * 512,
            get("device/model"),
            get("removable"),
            get("ro"),
        );
    }
    out
}

/// DMI strings from `/sys/class/dmi/id` (serial numbers included: the
/// inventory describes this machine).
pub fn host_dmi(sys: &Path) -> String {
    let mut out = String::new();
    for file in sorted_entries(&sys.join("class/dmi/id")) {
        if file.is_file()
            && let Some(value) = read_trimmed(&file)
        {
            let name = file.file_name().unwrap_or_default().to_string_lossy();
            let _ = writeln!(out, "{name}: {value}");
        }
    }
    out
}

/// `session.json`'s `host` from `/proc/cpuinfo` and `/proc/meminfo`.
pub fn host_summary(proc: &Path) -> HostSummary {
    let cpuinfo = fs::read_to_string(proc.join("cpuinfo")).unwrap_or_default();
    let meminfo = fs::read_to_string(proc.join("meminfo")).unwrap_or_default();
    let field = |line: &str, key: &str| {
        let (k, v) = line.split_once(':')?;
        (k.trim() == key).then(|| v.trim().to_string())
    };
    let first = |key: &str| cpuinfo.lines().find_map(|l| field(l, key));
    let flags = first("flags").unwrap_or_default();
    let has = |flag: &str| flags.split_whitespace().any(|f| f == flag);
    let mem_kb: u64 = meminfo
        .lines()
        .find_map(|l| field(l, "MemTotal"))
        .and_then(|v| v.trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    HostSummary {
        cpu_model: first("model name").unwrap_or_default(),
        cpu_cores: cpuinfo
            .lines()
            .filter(|l| field(l, "processor").is_some())
            .count() as u32,
        ram_mb: mem_kb / 1024,
        virtualization: if has("vmx") {
            "vmx"
        } else if has("svm") {
            "svm"
        } else {
            "none"
        }
        .into(),
    }
}

/// The `cpuN` directories of `/sys/devices/system/cpu`, in CPU order.
fn cpu_dirs(sys: &Path) -> Vec<(u32, std::path::PathBuf)> {
    let mut cpus: Vec<(u32, std::path::PathBuf)> = sorted_entries(&sys.join("devices/system/cpu"))
        .into_iter()
        .filter_map(|p| {
            let n = p.file_name()?.to_str()?.strip_prefix("cpu")?.parse().ok()?;
            Some((n, p))
        })
        .collect();
    cpus.sort();
    cpus
}

/// `key=value` for each file of `dir` that exists, in the order given.
fn fields(dir: &Path, names: &[(&str, &str)]) -> String {
    names
        .iter()
        .filter_map(|(key, file)| read_trimmed(&dir.join(file)).map(|v| format!(" {key}={v}")))
        .collect()
}

/// One line per CPU cache: level, type, size, ways, line size, sharing.
pub fn host_cpu_cache(sys: &Path) -> String {
    let mut out = String::new();
    for (n, cpu) in cpu_dirs(sys) {
        for index in sorted_entries(&cpu.join("cache")) {
            let name = index.file_name().unwrap_or_default().to_string_lossy();
            if !name.starts_with("index") {
                continue;
            }
            let _ = writeln!(
                out,
                "cpu{n} {name}{}",
                fields(
                    &index,
                    &[
                        ("level", "level"),
                        ("type", "type"),
                        ("size", "size"),
                        ("ways", "ways_of_associativity"),
                        ("line", "coherency_line_size"),
                        ("shared_cpus", "shared_cpu_list"),
                    ]
                )
            );
        }
    }
    out
}

/// One line per CPU: package, die, core and sibling lists.
pub fn host_cpu_topology(sys: &Path) -> String {
    let mut out = String::new();
    for (n, cpu) in cpu_dirs(sys) {
        let _ = writeln!(
            out,
            "cpu{n}{}",
            fields(
                &cpu.join("topology"),
                &[
                    ("package", "physical_package_id"),
                    ("die", "die_id"),
                    ("core", "core_id"),
                    ("thread_siblings", "thread_siblings_list"),
                    ("core_siblings", "core_siblings_list"),
                ]
            )
        );
    }
    out
}

/// One line per NUMA node: its CPUs and memory, then the distances.
pub fn host_numa(sys: &Path) -> String {
    let mut out = String::new();
    for node in sorted_entries(&sys.join("devices/system/node")) {
        let name = node.file_name().unwrap_or_default().to_string_lossy();
        if !name.starts_with("node") {
            continue;
        }
        let mem_total = fs::read_to_string(node.join("meminfo"))
            .unwrap_or_default()
            .lines()
            .find(|l| l.contains("MemTotal:"))
            .and_then(|l| l.split(':').nth(1))
            .map(|v| v.trim().to_string())
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "{name}{} mem_total={mem_total:?}",
            fields(&node, &[("cpus", "cpulist"), ("distance", "distance")])
        );
    }
    if out.is_empty() {
        out.push_str("no NUMA nodes in sysfs (a kernel without CONFIG_NUMA)\n");
    }
    out
}

/// One line per IOMMU group and its devices.
pub fn host_iommu(sys: &Path) -> String {
    let mut groups: Vec<(u32, String)> = sorted_entries(&sys.join("kernel/iommu_groups"))
        .into_iter()
        .filter_map(|g| {
            let n = g.file_name()?.to_str()?.parse().ok()?;
            let devices: Vec<String> = sorted_entries(&g.join("devices"))
                .iter()
                .filter_map(|d| Some(d.file_name()?.to_string_lossy().into_owned()))
                .collect();
            Some((n, devices.join(" ")))
        })
        .collect();
    groups.sort();
    if groups.is_empty() {
        return "no IOMMU groups (no VT-d/AMD-Vi, or it is off)\n".into();
    }
    groups
        .iter()
        .map(|(n, devices)| format!("group {n}: {devices}\n"))
        .collect()
}

/// `/dev/kvm` (its misc device in sysfs) and the KVM modules' parameters,
/// `nested` among them.
pub fn host_kvm(sys: &Path) -> String {
    let present = sys.join("class/misc/kvm").exists();
    let mut out = format!("/dev/kvm: {}\n", if present { "present" } else { "absent" });
    for module in ["kvm", "kvm_intel", "kvm_amd"] {
        for param in sorted_entries(&sys.join("module").join(module).join("parameters")) {
            if let Some(value) = read_trimmed(&param) {
                let name = param.file_name().unwrap_or_default().to_string_lossy();
                let _ = writeln!(out, "{module}.{name}={value}");
            }
        }
    }
    out
}

/// The `SecureBoot` EFI variable's GUID.
const EFI_GLOBAL_GUID: &str = "8be4df61-93ca-11d2-aa0d-00e098032b8c";

/// EFI: whether the host booted through UEFI, the firmware's vendor (from
/// the kernel's `efi: EFI vX by VENDOR` line) and the Secure Boot state
/// (the `SecureBoot` variable, else the kernel's log).
pub fn host_efi(sys: &Path, dmesg: &str) -> String {
    let efi = sys.join("firmware/efi");
    if !efi.is_dir() {
        return "uefi: no (booted through BIOS/CSM)\n".into();
    }
    let vendor = dmesg
        .lines()
        .find_map(|l| {
            l.split_once("efi: EFI v")?
                .1
                .split_once(" by ")
                .map(|(_, v)| v.trim())
        })
        .unwrap_or("unknown");
    let variable = efi.join(format!("efivars/SecureBoot-{EFI_GLOBAL_GUID}"));
    // efivarfs: 4 bytes of attributes, then the value.
    let secure_boot = match fs::read(&variable).ok().and_then(|b| b.get(4).copied()) {
        Some(1) => "enabled".to_string(),
        Some(_) => "disabled".to_string(),
        None => dmesg
            .lines()
            .find_map(|l| {
                let at = l.to_ascii_lowercase().find("secure boot ")?;
                Some(l[at + "secure boot ".len()..].trim().to_string())
            })
            .unwrap_or_else(|| "unknown".into()),
    };
    format!(
        "uefi: yes\nfirmware_vendor: {vendor}\nplatform_size: {}\nsecure_boot: {secure_boot}\n",
        read_trimmed(&efi.join("fw_platform_size")).unwrap_or_else(|| "unknown".into())
    )
}

fn copy_dir_files(from: &Path, to: &Path) -> Result<usize, InventoryError> {
    let mut copied = 0;
    for entry in sorted_entries(from) {
        let name = entry.file_name().unwrap_or_default().to_owned();
        if entry.is_dir() {
            let sub = to.join(&name);
            fs::create_dir_all(&sub).map_err(|source| InventoryError {
                path: sub.clone(),
                source,
            })?;
            copied += copy_dir_files(&entry, &sub)?;
        } else if let Ok(bytes) = fs::read(&entry) {
            write(&to.join(&name), &bytes)?;
            copied += 1;
        }
    }
    Ok(copied)
}

/// Write the host inventory into `hw_dir`. `proc`/`sys` are `/proc` and
/// `/sys` (parameters for tests); `shipped_config` is the gzipped kernel
/// configuration the initramfs carries for a kernel without
/// `/proc/config.gz`. Returns the files written.
pub fn collect_host(
    hw_dir: &Path,
    proc: &Path,
    sys: &Path,
    shipped_config: &Path,
    dmesg: &str,
) -> Result<Vec<String>, InventoryError> {
    let mkdir = |p: &Path| {
        fs::create_dir_all(p).map_err(|source| InventoryError {
            path: p.to_path_buf(),
            source,
        })
    };
    mkdir(hw_dir)?;
    let mut written = Vec::new();
    let mut put = |name: &str, content: String| -> Result<(), InventoryError> {
        write(&hw_dir.join(name), content.as_bytes())?;
        written.push(name.to_string());
        Ok(())
    };
    for (name, source) in [
        ("host_cpuinfo.txt", "cpuinfo"),
        ("host_meminfo.txt", "meminfo"),
        ("host_modules.txt", "modules"),
        ("host_cmdline.txt", "cmdline"),
        ("host_version.txt", "version"),
        ("host_interrupts.txt", "interrupts"),
        ("host_iomem.txt", "iomem"),
        ("host_ioports.txt", "ioports"),
        ("host_diskstats.txt", "diskstats"),
        ("host_pci_devices.txt", "bus/pci/devices"),
    ] {
        put(
            name,
            fs::read_to_string(proc.join(source)).unwrap_or_default(),
        )?;
    }
    put("host_pci.txt", host_pci(sys))?;
    put("host_usb.txt", host_usb(sys))?;
    put("host_block.txt", host_block(sys))?;
    put("host_dmi.txt", host_dmi(sys))?;
    put("host_dmesg.txt", dmesg.to_string())?;
    put("host_cpu_cache.txt", host_cpu_cache(sys))?;
    put("host_cpu_topology.txt", host_cpu_topology(sys))?;
    put("host_numa.txt", host_numa(sys))?;
    put("host_iommu.txt", host_iommu(sys))?;
    put("host_kvm.txt", host_kvm(sys))?;
    put("host_efi.txt", host_efi(sys, dmesg))?;
    if let Ok(config) = fs::read(proc.join("config.gz")).or_else(|_| fs::read(shipped_config)) {
        write(&hw_dir.join("host_kernel_config.gz"), &config)?;
        written.push("host_kernel_config.gz".into());
    }
    let acpi = hw_dir.join("acpi");
    mkdir(&acpi)?;
    copy_dir_files(&sys.join("firmware/acpi/tables"), &acpi)?;
    let smbios = hw_dir.join("smbios");
    mkdir(&smbios)?;
    copy_dir_files(&sys.join("firmware/dmi/tables"), &smbios)?;
    Ok(written)
}

/// The kernel log (`dmesg`), read with `klogctl`.
pub fn read_dmesg() -> String {
    const SYSLOG_ACTION_READ_ALL: libc::c_int = 3;
    const SYSLOG_ACTION_SIZE_BUFFER: libc::c_int = 10;
    // SAFETY: size query takes no buffer.
    let size = unsafe { libc::klogctl(SYSLOG_ACTION_SIZE_BUFFER, std::ptr::null_mut(), 0) };
    if size <= 0 {
        return String::new();
    }
    let mut buf = vec![0u8; size as usize];
    // SAFETY: buf is valid for `size` bytes.
    let n = unsafe { libc::klogctl(SYSLOG_ACTION_READ_ALL, buf.as_mut_ptr().cast(), size) };
    if n <= 0 {
        return String::new();
    }
    buf.truncate(n as usize);
    String::from_utf8_lossy(&buf).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_inventory_from_fake_trees() {
        let root = tempfile::tempdir().unwrap();
        let proc = root.path().join("proc");
        let sys = root.path().join("sys");
        fs::create_dir_all(&proc).unwrap();
        fs::write(proc.join("cpuinfo"), "processor : 0\nflags : svm\n").unwrap();
        let dev = sys.join("bus/pci/devices/0000:00:1f.2");
        fs::create_dir_all(&dev).unwrap();
        fs::write(dev.join("vendor"), "0x8086\n").unwrap();
        fs::write(dev.join("device"), "0x2922\n").unwrap();
        fs::write(dev.join("class"), "0x010601\n").unwrap();
        let tables = sys.join("firmware/acpi/tables/dynamic");
        fs::create_dir_all(&tables).unwrap();
        fs::write(sys.join("firmware/acpi/tables/DSDT"), b"DSDT\x01").unwrap();
        fs::write(tables.join("SSDT1"), b"SSDT").unwrap();
        let hw = root.path().join("hw");
        let shipped = root.path().join("kernel-config.gz");
        fs::write(&shipped, "\x1f\u{8b}shipped").unwrap();
        let written = collect_host(&hw, &proc, &sys, &shipped, "dmesg line\n").unwrap();
        assert!(written.contains(&"host_pci.txt".to_string()));
        // No /proc/config.gz: the configuration the initramfs ships.
        assert_eq!(
            fs::read(hw.join("host_kernel_config.gz")).unwrap(),
            "\x1f\u{8b}shipped".as_bytes()
        );
        assert_eq!(
            fs::read_to_string(hw.join("host_cpuinfo.txt")).unwrap(),
            "processor : 0\nflags : svm\n"
        );
        let pci = fs::read_to_string(hw.join("host_pci.txt")).unwrap();
        assert_eq!(
            pci,
            "0000:00:1f.2 vendor=0x8086 device=0x2922 subsystem=: class=0x010601 driver=-\n"
        );
        assert_eq!(fs::read(hw.join("acpi/DSDT")).unwrap(), b"DSDT\x01");
        assert_eq!(fs::read(hw.join("acpi/dynamic/SSDT1")).unwrap(), b"SSDT");
        assert!(hw.join("smbios").is_dir());
        assert_eq!(
            fs::read_to_string(hw.join("host_dmesg.txt")).unwrap(),
            "dmesg line\n"
        );
    }

    #[test]
    fn host_topology_kvm_efi_and_summary_from_fake_trees() {
        let root = tempfile::tempdir().unwrap();
        let (proc, sys) = (root.path().join("proc"), root.path().join("sys"));
        let put = |path: &str, text: &str| {
            let path = root.path().join(path);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, text).unwrap();
        };
        put(
            "proc/cpuinfo",
            "processor : 0\nmodel name : AMD EPYC Processor\nflags : fpu svm\n\nprocessor : 1\nmodel name : AMD EPYC Processor\nflags : fpu svm\n",
        );
        put(
            "proc/meminfo",
            "MemTotal:        2097152 kB\nMemFree: 1 kB\n",
        );
        put("proc/config.gz", "\x1f\u{8b}gz");
        for cpu in ["cpu0", "cpu1"] {
            put(
                &format!("sys/devices/system/cpu/{cpu}/cache/index0/level"),
                "1\n",
            );
            put(
                &format!("sys/devices/system/cpu/{cpu}/cache/index0/size"),
                "32K\n",
            );
            put(
                &format!("sys/devices/system/cpu/{cpu}/topology/core_id"),
                "0\n",
            );
        }
        put("sys/devices/system/cpu/cpufreq/x", "");
        put("sys/devices/system/node/node0/cpulist", "0-1\n");
        put(
            "sys/devices/system/node/node0/meminfo",
            "Node 0 MemTotal: 2048 kB\n",
        );
        put("sys/kernel/iommu_groups/1/devices/0000:00:02.0", "");
        put("sys/class/misc/kvm/dev", "10:232\n");
        put("sys/module/kvm_amd/parameters/nested", "1\n");
        put("sys/firmware/efi/fw_platform_size", "64\n");
        let efi_var = format!("sys/firmware/efi/efivars/SecureBoot-{EFI_GLOBAL_GUID}");
        put(&efi_var, "\x06\0\0\0\x01");
        let hw = root.path().join("hw");
        let shipped = root.path().join("kernel-config.gz");
        fs::write(&shipped, "\x1f\u{8b}shipped").unwrap();
        collect_host(&hw, &proc, &sys, &shipped, "efi: EFI v2.7 by EDK II\n").unwrap();
        let read = |f: &str| fs::read_to_string(hw.join(f)).unwrap();
        assert_eq!(
            read("host_cpu_cache.txt"),
            "cpu0 index0 level=1 size=32K\ncpu1 index0 level=1 size=32K\n"
        );
        assert_eq!(read("host_cpu_topology.txt"), "cpu0 core=0\ncpu1 core=0\n");
        assert_eq!(
            read("host_numa.txt"),
            "node0 cpus=0-1 mem_total=\"2048 kB\"\n"
        );
        assert_eq!(read("host_iommu.txt"), "group 1: 0000:00:02.0\n");
        assert_eq!(
            read("host_kvm.txt"),
            "/dev/kvm: present\nkvm_amd.nested=1\n"
        );
        assert_eq!(
            read("host_efi.txt"),
            "uefi: yes\nfirmware_vendor: EDK II\nplatform_size: 64\nsecure_boot: enabled\n"
        );
        // /proc/config.gz comes first.
        assert_eq!(
            fs::read(hw.join("host_kernel_config.gz")).unwrap(),
            "\x1f\u{8b}gz".as_bytes()
        );
        assert_eq!(
            host_summary(&proc),
            HostSummary {
                cpu_model: "AMD EPYC Processor".into(),
                cpu_cores: 2,
                ram_mb: 2048,
                virtualization: "svm".into(),
            }
        );
        // Nothing there: says so rather than writing an empty file.
        let bare = root.path().join("bare");
        assert!(host_iommu(&bare).starts_with("no IOMMU groups"));
        assert!(host_efi(&bare, "").starts_with("uefi: no"));
        assert_eq!(host_kvm(&bare), "/dev/kvm: absent\n");
    }
}
