//! Hardware inventory in the session's `hw/` directory.
//!
//! - [`host`] (before QEMU starts): `host_*.txt`, `host_kernel_config.gz`,
//!   `acpi/` (the ACPI tables), `smbios/` (entry point and DMI table); init
//!   adds `kvm_caps.json`;
//! - [`guest`] (a few seconds after QEMU starts, through QMP): `qemu_*.txt`
//!   and `pci_summary.json`; [`smbios`] reads the guest's SMBIOS tables from
//!   its memory for `qemu_smbios.txt` (looked for again until the firmware
//!   has copied them, or the guest shuts down).

pub mod guest;
pub mod host;
pub mod smbios;

pub use guest::{GUEST_HMP, GuestPciDevice, PciSummary, collect_guest, guest_smbios, pci_summary};
pub use host::{collect_host, host_summary, read_dmesg};

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
