//! Finding the stick's partitions among the block devices (by UUID, label
//! or device path, as the kernel command line names them) and mounting them.

use super::console::say;
use crate::cmdline::PartitionSpec;
use crate::sys;
use hiperiso_stick::fs_identity::{self, FsIdentity};
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::thread::sleep;
use std::time::{Duration, Instant};

/// A block device whose filesystem was identified by probing it.
#[derive(Debug, Clone)]
pub struct ProbedPartition {
    pub device: PathBuf,
    pub identity: FsIdentity,
}

impl ProbedPartition {
    /// `/dev/sda1 (exfat, UUID=…, label=…)`, for `env.txt`.
    pub fn describe(&self) -> String {
        format!(
            "{} ({}, UUID={}, label={})",
            self.device.display(),
            self.identity.fs_type.mount_name(),
            self.identity.uuid,
            self.identity.label.as_deref().unwrap_or("-")
        )
    }
}

fn spec_matches(spec: &PartitionSpec, device: &Path, id: &FsIdentity) -> bool {
    match spec {
        PartitionSpec::Uuid(uuid) => id.uuid.eq_ignore_ascii_case(uuid),
        PartitionSpec::Label(label) => id
            .label
            .as_deref()
            .is_some_and(|l| l.eq_ignore_ascii_case(label)),
        PartitionSpec::Device(path) => device == Path::new(path),
    }
}

/// Scan `/sys/class/block` once for a partition matching `spec`.
pub fn scan_for(spec: &PartitionSpec) -> Option<ProbedPartition> {
    let mut names: Vec<String> = fs::read_dir("/sys/class/block")
        .ok()?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with("ram") && !n.starts_with("zram"))
        .collect();
    names.sort();
    for name in names {
        let device = PathBuf::from("/dev").join(&name);
        let Ok(mut file) = File::open(&device) else {
            continue;
        };
        if let Ok(Some(identity)) = fs_identity::identify(&mut file)
            && spec_matches(spec, &device, &identity)
        {
            return Some(ProbedPartition { device, identity });
        }
    }
    None
}

/// Wait up to `seconds` for a partition matching `spec` (slow USB sticks).
pub fn wait_for(spec: &PartitionSpec, seconds: u32) -> Option<ProbedPartition> {
    let deadline = Instant::now() + Duration::from_secs(u64::from(seconds));
    loop {
        if let Some(found) = scan_for(spec) {
            return Some(found);
        }
        if Instant::now() >= deadline {
            return None;
        }
        sleep(Duration::from_millis(250));
    }
}

/// Mount with UTF-8 file names; the kernel's default FAT character set
/// (often `ascii`) may be a module the initramfs lacks, so `iocharset=utf8`
/// comes first and the kernel's defaults second.
fn mount_partition(found: &ProbedPartition, target: &Path, read_only: bool) -> std::io::Result<()> {
    let flags = if read_only { libc::MS_RDONLY } else { 0 } | libc::MS_NOATIME;
    let device = found.device.display().to_string();
    let fs_type = found.identity.fs_type.mount_name();
    sys::mount(&device, target, fs_type, flags, "iocharset=utf8")
        .or_else(|_| sys::mount(&device, target, fs_type, flags, ""))
}

/// Wait for the data partition and mount it read-write on `target`.
pub fn mount_data(spec: &PartitionSpec, wait: u32, target: &str) -> Option<ProbedPartition> {
    wait_for(spec, wait).filter(
        |found| match mount_partition(found, Path::new(target), false) {
            Ok(()) => true,
            Err(e) => {
                say(&format!(
                    "cannot mount {} on {target}: {e}",
                    found.device.display()
                ));
                false
            }
        },
    )
}

/// Wait briefly for the ESP and mount it read-only on `target`.
pub fn mount_esp(spec: &PartitionSpec, target: &str) -> Option<ProbedPartition> {
    let found = wait_for(spec, 5)?;
    match mount_partition(&found, Path::new(target), true) {
        Ok(()) => Some(found),
        Err(e) => {
            say(&format!(
                "cannot mount ESP {} read-only: {e}",
                found.device.display()
            ));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_spec_matching() {
        let id = FsIdentity {
            fs_type: fs_identity::FsType::Exfat,
            uuid: "12AB-34CD".into(),
            label: Some("HIPERISO".into()),
        };
        let dev = Path::new("/dev/sda1");
        assert!(spec_matches(
            &PartitionSpec::Uuid("12ab-34cd".into()),
            dev,
            &id
        ));
        assert!(!spec_matches(
            &PartitionSpec::Uuid("12AB-34CE".into()),
            dev,
            &id
        ));
        assert!(spec_matches(
            &PartitionSpec::Label("hiperiso".into()),
            dev,
            &id
        ));
        assert!(spec_matches(
            &PartitionSpec::Device("/dev/sda1".into()),
            dev,
            &id
        ));
        assert!(!spec_matches(
            &PartitionSpec::Device("/dev/sdb1".into()),
            dev,
            &id
        ));
    }
}
