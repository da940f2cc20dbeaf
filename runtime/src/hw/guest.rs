//! The guest's inventory, through QEMU's monitor (QMP, and HMP commands
//! over QMP).

use super::{InventoryError, smbios, write};
use crate::qmp::Qmp;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::fmt::Write as _;
use std::path::Path;

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

/// HMP commands saved as `hw/qemu_<name>.txt` (and in
/// `qemu_monitor_raw.txt`). QEMU 7.2 has no `info ioapic`: `info pic`
/// shows the IO-APIC's routing (and the i8259's state).
pub const GUEST_HMP: &[(&str, &str)] = &[
    ("version", "info version"),
    ("qtree", "info qtree"),
    ("pci", "info pci"),
    ("memmap", "info mtree"),
    ("memmap_flat", "info mtree -f"),
    ("ioapic", "info pic"),
    ("irq", "info irq"),
    ("registers", "info registers -a"),
    ("tlb", "info tlb"),
    ("numa", "info numa"),
    ("qomtree", "info qom-tree"),
    ("chardev", "info chardev"),
    ("block", "info block"),
    ("net", "info network"),
    ("cpus", "info cpus"),
    ("kvm", "info kvm"),
];

/// The inventory's monitor session: files written, commands that failed,
/// and every answer for `qemu_monitor_raw.txt`.
struct Collector<'a> {
    hw_dir: &'a Path,
    qmp: &'a mut Qmp,
    written: Vec<String>,
    failed: Vec<String>,
    raw: String,
}

impl<'a> Collector<'a> {
    fn new(hw_dir: &'a Path, qmp: &'a mut Qmp) -> Self {
        Self {
            hw_dir,
            qmp,
            written: Vec::new(),
            failed: Vec::new(),
            raw: String::new(),
        }
    }

    /// One HMP command; `None` (recorded as failed) when QEMU refused it.
    fn hmp(&mut self, command: &str) -> Option<String> {
        match self.qmp.hmp(command) {
            // HMP answers an unknown command with text, not an error.
            Ok(text) if text.starts_with("unknown command") => {
                self.failed.push(format!("{command}: {}", text.trim()));
                None
            }
            Ok(text) => {
                let text = text.replace("\r\n", "\n");
                let _ = write!(self.raw, "### {command}\n{text}");
                if !text.ends_with('\n') {
                    self.raw.push('\n');
                }
                Some(text)
            }
            Err(e) => {
                self.failed.push(format!("{command}: {e}"));
                None
            }
        }
    }

    /// `size` bytes of guest-physical memory from `address` (QMP
    /// `pmemsave` through a temporary file).
    fn read_memory(&mut self, address: u64, size: usize) -> Option<Vec<u8>> {
        let file = tempfile::NamedTempFile::new().ok()?;
        self.qmp.pmemsave(address, size, file.path()).ok()?;
        std::fs::read(file.path()).ok()
    }

    fn put(&mut self, file: &str, text: &str) -> Result<(), InventoryError> {
        write(&self.hw_dir.join(file), text.as_bytes())?;
        self.written.push(file.to_string());
        Ok(())
    }

    /// A QMP command's reply, or `None` (recorded as failed).
    fn qmp(&mut self, command: &str, args: Option<Value>) -> Option<Value> {
        match self.qmp.execute(command, args) {
            Ok(reply) => Some(reply),
            Err(e) => {
                self.failed.push(format!("{command}: {e}"));
                None
            }
        }
    }
}

/// The `dev: hpet` block of `info qtree` (QEMU has no `info hpet`): the
/// HPET's timers and properties as the guest sees them.
pub fn hpet_from_qtree(qtree: &str) -> Option<String> {
    let mut lines = qtree
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("dev: hpet"));
    let first = lines.next()?;
    let indent = first.len() - first.trim_start().len();
    let mut out = format!("{}\n", first.trim_start());
    for line in lines {
        if line.len() - line.trim_start().len() <= indent {
            break;
        }
        out.push_str(&line[indent..]);
        out.push('\n');
    }
    Some(out)
}

/// `qom-get feature-words` of a CPU: the CPUID words the guest is given,
/// one per line (`filtered-features`: those the host could not provide).
pub fn cpuid_text(cpu_path: &str, words: &Value, filtered: Option<&Value>) -> String {
    let mut out = format!("# CPUID of {cpu_path} (QOM feature-words)\n");
    let line = |w: &Value| {
        let num = |k: &str| w[k].as_u64();
        let ecx = num("cpuid-input-ecx").map_or("-".to_string(), |n| format!("{n:#x}"));
        format!(
            "eax={:#010x} ecx={ecx} {}={:#010x}\n",
            num("cpuid-input-eax").unwrap_or(0),
            w["cpuid-register"].as_str().unwrap_or("?"),
            num("features").unwrap_or(0)
        )
    };
    let mut sorted: Vec<String> = words.as_array().into_iter().flatten().map(line).collect();
    sorted.sort();
    out.extend(sorted);
    if let Some(filtered) = filtered {
        let mut missing: Vec<String> = filtered
            .as_array()
            .into_iter()
            .flatten()
            .filter(|w| w["features"].as_u64().unwrap_or(0) != 0)
            .map(line)
            .collect();
        missing.sort();
        out.push_str("# filtered-features (requested, not given)\n");
        out.extend(missing);
    }
    out
}

/// `qemu_smbios.txt`, one look (`look` counts them, from 1): the SMBIOS
/// tables found in guest memory (true), or else why not, with the entry
/// point type QEMU gives them (false). The firmware copies the tables while
/// it starts, which OVMF in a slow (nested, traced) guest may not have done
/// yet, so the supervisor looks again later; failures are never fatal.
pub fn guest_smbios(hw_dir: &Path, qmp: &mut Qmp, look: u32) -> Result<bool, InventoryError> {
    let mut c = Collector::new(hw_dir, qmp);
    let ram = c.qmp("query-memory-size-summary", None);
    let ram = ram.as_ref().and_then(|r| r["base-memory"].as_u64());
    // q35 maps RAM from 2 GiB up above 4 GiB when it has 2.75 GiB or more.
    let low_ram = ram.map(|ram| if ram >= 0xB000_0000 { 0x8000_0000 } else { ram });
    let found = match low_ram {
        Some(low_ram) => {
            smbios::guest_smbios(|address, size| c.read_memory(address, size), low_ram)
        }
        None => Err("QEMU did not give the guest's RAM size".to_string()),
    };
    let text = match &found {
        Ok(text) => format!("{text}\n# found on look {look}\n"),
        Err(e) => {
            let kind = c.qmp(
                "qom-get",
                Some(
                    serde_json::json!({"path": "/machine", "property": "smbios-entry-point-type"}),
                ),
            );
            format!(
                "# {e} (look {look})\nentry_point_type: {}\n",
                kind.as_ref().and_then(Value::as_str).unwrap_or("?")
            )
        }
    };
    c.put("qemu_smbios.txt", &text)?;
    Ok(found.is_ok())
}

/// Collect the guest inventory through QMP. Returns the files written and
/// the commands that failed.
pub fn collect_guest(
    hw_dir: &Path,
    qmp: &mut Qmp,
) -> Result<(Vec<String>, Vec<String>), InventoryError> {
    let mut c = Collector::new(hw_dir, qmp);
    let mut qtree = None;
    for (name, command) in GUEST_HMP {
        if let Some(text) = c.hmp(command) {
            c.put(&format!("qemu_{name}.txt"), &text)?;
            if *name == "qtree" {
                qtree = Some(text);
            }
        }
    }
    match qtree.as_deref().map(hpet_from_qtree) {
        Some(Some(hpet)) => c.put("qemu_hpet.txt", &hpet)?,
        Some(None) => c.failed.push("hpet: no HPET in info qtree".into()),
        None => {}
    }
    let cpus = c.qmp("query-cpus-fast", None).unwrap_or_default();
    let cpus: Vec<(u64, String)> = cpus
        .as_array()
        .into_iter()
        .flatten()
        .map(|cpu| {
            (
                cpu["cpu-index"].as_u64().unwrap_or(0),
                cpu["qom-path"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    let mut lapic = String::new();
    for (index, _) in &cpus {
        if let Some(text) = c.hmp(&format!("info lapic {index}")) {
            lapic.push_str(&text);
        }
    }
    if !lapic.is_empty() {
        c.put("qemu_lapic.txt", &lapic)?;
    }
    if let Some((_, path)) = cpus.first() {
        let get = |c: &mut Collector, property: &str| {
            c.qmp(
                "qom-get",
                Some(serde_json::json!({"path": path, "property": property})),
            )
        };
        if let Some(words) = get(&mut c, "feature-words") {
            let filtered = get(&mut c, "filtered-features");
            c.put(
                "qemu_cpuid.txt",
                &cpuid_text(path, &words, filtered.as_ref()),
            )?;
        }
    }
    if let Some(reply) = c.qmp("query-pci", None) {
        let summary = pci_summary(&reply);
        let text = serde_json::to_string_pretty(&summary).unwrap_or_default() + "\n";
        c.put("pci_summary.json", &text)?;
    }
    let raw = std::mem::take(&mut c.raw);
    c.put("qemu_monitor_raw.txt", &raw)?;
    Ok((c.written, c.failed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn hpet_block_from_qtree() {
        let qtree = "bus: main-system-bus\n  type System\n  dev: hpet, id \"\"\n    gpio-in \"\" 2\n    timers = 3 (0x3)\n    mmio 00000000fed00000/0000000000000400\n  dev: ioapic, id \"\"\n    gsi_base = 0 (0x0)\n";
        assert_eq!(
            hpet_from_qtree(qtree).unwrap(),
            "dev: hpet, id \"\"\n  gpio-in \"\" 2\n  timers = 3 (0x3)\n  mmio 00000000fed00000/0000000000000400\n"
        );
        assert_eq!(hpet_from_qtree("bus: main-system-bus\n"), None);
    }

    #[test]
    fn cpuid_words_sorted_with_filtered() {
        let words = json!([
            {"cpuid-register": "EDX", "cpuid-input-eax": 1, "features": 0x178bfbff_u64},
            {"cpuid-register": "ECX", "cpuid-input-ecx": 0, "cpuid-input-eax": 7, "features": 4},
        ]);
        let filtered = json!([
            {"cpuid-register": "ECX", "cpuid-input-eax": 1, "features": 32},
            {"cpuid-register": "EDX", "cpuid-input-eax": 1, "features": 0},
        ]);
        assert_eq!(
            cpuid_text("/machine/unattached/device[0]", &words, Some(&filtered)),
            "# CPUID of /machine/unattached/device[0] (QOM feature-words)\n\
             eax=0x00000001 ecx=- EDX=0x178bfbff\n\
             eax=0x00000007 ecx=0x0 ECX=0x00000004\n\
             # filtered-features (requested, not given)\n\
             eax=0x00000001 ecx=- ECX=0x00000020\n"
        );
    }

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
}
