//! Finding the stick's partitions among the block devices (by UUID, label,
//! device path or number on the ESP's disk, as the kernel command line
//! names them) and mounting them.

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
        // resolved to a device first (`on_esp_disk`)
        PartitionSpec::OnEspDisk(_) => false,
    }
}

/// `ESPDISK:<number>`: the device of partition `number` on the disk that
/// holds the partition `esp` names (`/dev/sda2` -> `/dev/sda1`).
fn on_esp_disk(esp: &PartitionSpec, number: u32, wait: u32) -> Option<PartitionSpec> {
    let Some(found) = wait_for(esp, wait) else {
        say(&format!(
            "no ESP {esp}: cannot find the data partition beside it"
        ));
        return None;
    };
    let name = found.device.file_name()?.to_string_lossy().into_owned();
    match partition_beside(Path::new("/sys/class/block"), &name, number) {
        Some(data) => Some(PartitionSpec::Device(format!("/dev/{data}"))),
        None => {
            say(&format!(
                "the ESP's disk (of {name}) has no partition {number}"
            ));
            None
        }
    }
}

/// The name of partition `number` on the disk holding the partition
/// `partition`, from sysfs (`class_block` is /sys/class/block, where each
/// partition links into its disk's directory and has a `partition` file).
fn partition_beside(class_block: &Path, partition: &str, number: u32) -> Option<String> {
    let disk = fs::canonicalize(class_block.join(partition)).ok()?;
    let mut found: Vec<String> = fs::read_dir(disk.parent()?)
        .ok()?
        .flatten()
        .filter(|entry| {
            fs::read_to_string(entry.path().join("partition"))
                .is_ok_and(|n| n.trim().parse() == Ok(number))
        })
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect();
    found.sort();
    found.into_iter().next()
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

/// Wait for the data partition and mount it read-write on `target`; `esp`
/// is the ESP's spec, for `ESPDISK:<n>`.
pub fn mount_data(
    spec: &PartitionSpec,
    esp: Option<&PartitionSpec>,
    wait: u32,
    target: &str,
) -> Option<ProbedPartition> {
    let resolved;
    let spec = match (spec, esp) {
        (PartitionSpec::OnEspDisk(number), Some(esp)) => {
            resolved = on_esp_disk(esp, *number, wait)?;
            &resolved
        }
        (PartitionSpec::OnEspDisk(_), None) => {
            say(&format!("hiperiso.data={spec} needs hiperiso.esp="));
            return None;
        }
        _ => spec,
    };
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

    /// A sysfs layout as the kernel makes it: /sys/class/block/NAME links
    /// into the disk's directory, each partition's holds its number.
    #[test]
    fn the_partition_beside_the_esp() {
        let sys = tempfile::tempdir().unwrap();
        let class = sys.path().join("class/block");
        fs::create_dir_all(&class).unwrap();
        for (disk, parts) in [("sda", &["sda1", "sda2"][..]), ("sdb", &["sdb1"][..])] {
            let disk_dir = sys.path().join("devices/usb/block").join(disk);
            fs::create_dir_all(disk_dir.join("queue")).unwrap();
            std::os::unix::fs::symlink(&disk_dir, class.join(disk)).unwrap();
            for (index, part) in parts.iter().enumerate() {
                fs::create_dir_all(disk_dir.join(part)).unwrap();
                fs::write(
                    disk_dir.join(part).join("partition"),
                    format!("{}\n", index + 1),
                )
                .unwrap();
                std::os::unix::fs::symlink(disk_dir.join(part), class.join(part)).unwrap();
            }
        }
        assert_eq!(partition_beside(&class, "sda2", 1).as_deref(), Some("sda1"));
        assert_eq!(partition_beside(&class, "sda1", 2).as_deref(), Some("sda2"));
        assert_eq!(partition_beside(&class, "sdb1", 1).as_deref(), Some("sdb1"));
        assert_eq!(partition_beside(&class, "sdb1", 2), None);
        assert_eq!(partition_beside(&class, "sdc1", 1), None);
    }
}
