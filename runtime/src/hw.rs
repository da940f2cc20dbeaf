//! Hardware inventory in the session's `hw/` directory.
//!
//! Host (before QEMU starts): `host_*.txt`, `acpi/` (the ACPI tables),
//! `smbios/` (entry point and DMI table) and `kvm_caps.json`.
//! Guest (a few seconds after QEMU starts, through QMP): `qemu_*.txt` and
//! `pci_summary.json`.

use crate::qmp::Qmp;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::fmt::Write as _;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// Errors writing the inventory (reading sources is best-effort).
#[derive(Debug, thiserror::Error)]
#[error("cannot write {path}")]
pub struct InventoryError {
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

fn write(path: &Path, content: &[u8]) -> Result<(), InventoryError> {
    fs::write(path, content).map_err(|source| InventoryError {
        path: path.to_path_buf(),
        source,
    })
}

fn read_trimmed(path: &Path) -> Option<String> {
    fs::read_to_string(path).ok().map(|s| s.trim().to_string())
}

fn sorted_entries(dir: &Path) -> Vec<PathBuf> {
    let mut entries: Vec<PathBuf> = fs::read_dir(dir)
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    entries.sort();
    entries
}

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
/// `/sys` (parameters for tests). Returns the files written.
pub fn collect_host(
    hw_dir: &Path,
    proc: &Path,
    sys: &Path,
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

/// One PCI function of the guest, from `query-pci`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestPciDevice {
    pub bus: u64,
    pub slot: u64,
    pub function: u64,
    pub vendor_id: u64,
    pub device_id: u64,
    pub class: u64,
    pub description: String,
    pub qdev_id: String,
}

/// `pci_summary.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PciSummary {
    pub schema: u32,
    pub devices: Vec<GuestPciDevice>,
}

/// Flatten a `query-pci` reply (buses and bridges included).
pub fn pci_summary(query_pci: &Value) -> PciSummary {
    fn walk(devices: &Value, bus: u64, out: &mut Vec<GuestPciDevice>) {
        for dev in devices.as_array().into_iter().flatten() {
            let num = |v: &Value| v.as_u64().unwrap_or(0);
            out.push(GuestPciDevice {
                bus: num(&dev["bus"]).max(bus),
                slot: num(&dev["slot"]),
                function: num(&dev["function"]),
                vendor_id: num(&dev["id"]["vendor"]),
                device_id: num(&dev["id"]["device"]),
                class: num(&dev["class_info"]["class"]),
                description: dev["class_info"]["desc"].as_str().unwrap_or("").to_string(),
                qdev_id: dev["qdev_id"].as_str().unwrap_or("").to_string(),
            });
            if let Some(bridge) = dev.get("pci_bridge") {
                let secondary = bridge["bus"]["secondary"].as_u64().unwrap_or(bus);
                walk(&bridge["devices"], secondary, out);
            }
        }
    }
    let mut devices = Vec::new();
    for bus in query_pci.as_array().into_iter().flatten() {
        walk(
            &bus["devices"],
            bus["bus"].as_u64().unwrap_or(0),
            &mut devices,
        );
    }
    PciSummary {
        schema: hiperiso_stick::session::SCHEMA_VERSION,
        devices,
    }
}

/// HMP commands saved as `hw/qemu_<name>.txt`.
pub const GUEST_HMP: &[(&str, &str)] = &[
    ("pci", "info pci"),
    ("qtree", "info qtree"),
    ("mtree", "info mtree -f"),
    ("cpus", "info cpus"),
    ("block", "info block"),
    ("chardev", "info chardev"),
    ("network", "info network"),
    ("version", "info version"),
    ("kvm", "info kvm"),
    ("irq", "info irq"),
];

/// Collect the guest inventory through QMP. Returns the files written and
/// the commands that failed.
pub fn collect_guest(
    hw_dir: &Path,
    qmp: &mut Qmp,
) -> Result<(Vec<String>, Vec<String>), InventoryError> {
    let mut written = Vec::new();
    let mut failed = Vec::new();
    for (name, command) in GUEST_HMP {
        match qmp.hmp(command) {
            Ok(text) => {
                let file = format!("qemu_{name}.txt");
                write(&hw_dir.join(&file), text.as_bytes())?;
                written.push(file);
            }
            Err(e) => failed.push(format!("{command}: {e}")),
        }
    }
    match qmp.execute("query-pci", None) {
        Ok(reply) => {
            let summary = pci_summary(&reply);
            let text = serde_json::to_string_pretty(&summary).unwrap_or_default() + "\n";
            write(&hw_dir.join("pci_summary.json"), text.as_bytes())?;
            written.push("pci_summary.json".into());
        }
        Err(e) => failed.push(format!("query-pci: {e}")),
    }
    Ok((written, failed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pci_summary_flattens_bridges() {
        let reply = json!([{
            "bus": 0,
            "devices": [
                {"bus": 0, "slot": 0, "function": 0, "id": {"vendor": 32902, "device": 10688},
                 "class_info": {"class": 1536, "desc": "Host bridge"}, "qdev_id": ""},
                {"bus": 0, "slot": 30, "function": 0, "id": {"vendor": 32902, "device": 9230},
                 "class_info": {"class": 1540, "desc": "PCI bridge"}, "qdev_id": "",
                 "pci_bridge": {"bus": {"number": 0, "secondary": 1, "subordinate": 1},
                   "devices": [{"bus": 1, "slot": 1, "function": 0,
                     "id": {"vendor": 4660, "device": 4369}, "class_info": {"class": 768},
                     "qdev_id": "vga"}]}}
            ]
        }]);
        let summary = pci_summary(&reply);
        assert_eq!(summary.devices.len(), 3);
        assert_eq!(summary.devices[0].description, "Host bridge");
        assert_eq!(summary.devices[2].bus, 1);
        assert_eq!(summary.devices[2].qdev_id, "vga");
        assert_eq!(summary.devices[2].vendor_id, 0x1234);
    }

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
        let written = collect_host(&hw, &proc, &sys, "dmesg line\n").unwrap();
        assert!(written.contains(&"host_pci.txt".to_string()));
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
}
