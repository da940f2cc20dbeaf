//! What a block device is (sysfs) and whether it is in use (mountinfo,
//! swaps, holders, the disk holding the running system).

use std::fmt;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use hiperiso_stick::io::io_err;

use super::{DeviceError, human};
use crate::layout::SECTOR;

/// A partition the kernel knows about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelPartition {
    pub name: String,
    pub number: u32,
    pub dev: (u32, u32),
    pub start: u64,
    pub size: u64,
}

/// A whole-disk block device as sysfs describes it.
#[derive(Debug, Clone)]
pub struct BlockDevice {
    pub path: PathBuf,
    pub name: String,
    pub sysfs: PathBuf,
    pub dev: (u32, u32),
    pub size: u64,
    pub removable: bool,
    pub model: String,
    pub serial: String,
    pub partitions: Vec<KernelPartition>,
}

fn read_trimmed(path: &Path) -> Option<String> {
    fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

fn parse_dev(s: &str) -> Option<(u32, u32)> {
    let (a, b) = s.trim().split_once(':')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

fn sysfs_for(dev: (u32, u32)) -> Option<PathBuf> {
    fs::canonicalize(format!("/sys/dev/block/{}:{}", dev.0, dev.1)).ok()
}

/// Model and serial: from the disk's device directory, else from the first
/// ancestor that has them (USB sticks keep `serial` on the USB device).
fn model_and_serial(sysfs: &Path) -> (String, String) {
    let mut model = None;
    let mut serial = read_trimmed(&sysfs.join("device/serial"));
    let vendor = read_trimmed(&sysfs.join("device/vendor"));
    if let Some(m) = read_trimmed(&sysfs.join("device/model")) {
        model = Some(match vendor {
            Some(v) => format!("{v} {m}"),
            None => m,
        });
    }
    if let Some(backing) = read_trimmed(&sysfs.join("loop/backing_file")) {
        model.get_or_insert(format!("loop device on {backing}"));
    }
    if serial.is_none()
        && let Ok(mut dir) = fs::canonicalize(sysfs.join("device"))
    {
        while dir.pop() && dir.starts_with("/sys/devices") {
            if let Some(s) = read_trimmed(&dir.join("serial")) {
                serial = Some(s);
                break;
            }
        }
    }
    (
        model.unwrap_or_else(|| "unknown model".into()),
        serial.unwrap_or_else(|| "unknown".into()),
    )
}

pub(super) fn kernel_partitions(sysfs: &Path, disk_name: &str) -> Vec<KernelPartition> {
    let mut parts: Vec<KernelPartition> = fs::read_dir(sysfs)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let dir = entry.path();
            let name = entry.file_name().into_string().ok()?;
            if !name.starts_with(disk_name) {
                return None;
            }
            let number = read_trimmed(&dir.join("partition"))?.parse().ok()?;
            Some(KernelPartition {
                name,
                number,
                dev: parse_dev(&read_trimmed(&dir.join("dev"))?)?,
                start: read_trimmed(&dir.join("start"))?.parse::<u64>().ok()? * SECTOR,
                size: read_trimmed(&dir.join("size"))?.parse::<u64>().ok()? * SECTOR,
            })
        })
        .collect();
    parts.sort_by_key(|p| p.number);
    parts
}

impl BlockDevice {
    /// Describes the whole disk at `path`; refuses partitions and non-devices.
    pub fn probe(path: &Path) -> Result<BlockDevice, DeviceError> {
        let meta = fs::metadata(path).map_err(io_err("stat", path))?;
        if !meta.file_type().is_block_device() {
            return Err(DeviceError::NotBlockDevice {
                path: path.to_path_buf(),
            });
        }
        let dev = (libc::major(meta.rdev()), libc::minor(meta.rdev()));
        let sysfs = sysfs_for(dev).ok_or_else(|| DeviceError::NoSysfs {
            path: path.to_path_buf(),
            dev,
        })?;
        if sysfs.join("partition").exists() {
            let disk = sysfs
                .parent()
                .and_then(|p| p.file_name())
                .map(|n| Path::new("/dev").join(n))
                .unwrap_or_default();
            return Err(DeviceError::IsPartition {
                path: path.to_path_buf(),
                disk,
            });
        }
        let name = sysfs
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let sectors: u64 = read_trimmed(&sysfs.join("size"))
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let removable = read_trimmed(&sysfs.join("removable")).as_deref() == Some("1");
        let (model, serial) = model_and_serial(&sysfs);
        let partitions = kernel_partitions(&sysfs, &name);
        Ok(BlockDevice {
            path: path.to_path_buf(),
            name,
            sysfs,
            dev,
            size: sectors * SECTOR,
            removable,
            model,
            serial,
            partitions,
        })
    }

    /// The node name the kernel gives partition `number` of this disk.
    pub fn partition_node(&self, number: u32) -> PathBuf {
        let sep = if self.name.ends_with(|c: char| c.is_ascii_digit()) {
            "p"
        } else {
            ""
        };
        Path::new("/dev").join(format!("{}{sep}{number}", self.name))
    }

    fn devs(&self) -> Vec<((u32, u32), String)> {
        let mut devs = vec![(self.dev, format!("/dev/{}", self.name))];
        devs.extend(
            self.partitions
                .iter()
                .map(|p| (p.dev, format!("/dev/{}", p.name))),
        );
        devs
    }

    /// Every way the disk or one of its partitions is in use.
    pub fn uses(&self) -> Vec<String> {
        let devs = self.devs();
        let which = |dev: (u32, u32)| devs.iter().find(|(d, _)| *d == dev).map(|(_, n)| n.clone());
        let mut uses = Vec::new();
        for mount in mounts() {
            let by_source = Some(&mount.source)
                .filter(|s| s.starts_with('/'))
                .and_then(|s| fs::canonicalize(s).ok())
                .and_then(|p| {
                    let meta = fs::metadata(&p).ok()?;
                    meta.file_type()
                        .is_block_device()
                        .then(|| (libc::major(meta.rdev()), libc::minor(meta.rdev())))
                });
            if let Some(node) = which(mount.dev).or_else(|| by_source.and_then(which)) {
                uses.push(format!("{node} is mounted on {}", mount.mountpoint));
            }
        }
        for swap in swaps() {
            let Ok(meta) = fs::metadata(&swap) else {
                continue;
            };
            let dev = if meta.file_type().is_block_device() {
                meta.rdev()
            } else {
                meta.dev()
            };
            if let Some(node) = which((libc::major(dev), libc::minor(dev))) {
                uses.push(format!("{node} is used as swap ({swap})"));
            }
        }
        let mut holder_dirs = vec![(format!("/dev/{}", self.name), self.sysfs.join("holders"))];
        holder_dirs.extend(self.partitions.iter().map(|p| {
            (
                format!("/dev/{}", p.name),
                self.sysfs.join(&p.name).join("holders"),
            )
        }));
        for (node, dir) in holder_dirs {
            for holder in fs::read_dir(dir).into_iter().flatten().flatten() {
                uses.push(format!(
                    "{node} is held by {}",
                    holder.file_name().to_string_lossy()
                ));
            }
        }
        uses
    }

    /// The mount point of `/` or `/boot` when it lives on this disk.
    pub fn system_mount(&self) -> Option<String> {
        let mounts = mounts();
        ["/", "/boot", "/boot/efi"].into_iter().find_map(|target| {
            let mount = mounts.iter().rev().find(|m| m.mountpoint == target)?;
            disks_under(mount.dev)
                .contains(&self.dev)
                .then(|| target.to_string())
        })
    }
}

/// The whole disks beneath a block device: itself or its parent disk, and
/// through device-mapper/md `slaves` the disks beneath those.
fn disks_under(dev: (u32, u32)) -> Vec<(u32, u32)> {
    let mut out = Vec::new();
    let mut todo = vec![dev];
    while let Some(dev) = todo.pop() {
        let Some(mut sysfs) = sysfs_for(dev) else {
            continue;
        };
        if sysfs.join("partition").exists() {
            sysfs.pop();
        }
        if let Some(d) = read_trimmed(&sysfs.join("dev")).and_then(|s| parse_dev(&s)) {
            if out.contains(&d) {
                continue;
            }
            out.push(d);
        }
        for slave in fs::read_dir(sysfs.join("slaves"))
            .into_iter()
            .flatten()
            .flatten()
        {
            if let Some(d) = read_trimmed(&slave.path().join("dev")).and_then(|s| parse_dev(&s)) {
                todo.push(d);
            }
        }
    }
    out
}

struct Mount {
    dev: (u32, u32),
    mountpoint: String,
    source: String,
}

/// Undoes mountinfo's and swaps' octal escapes (`\040` for a space).
fn unescape(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 4 <= bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            out.push(u8::from_str_radix(&s[i + 1..i + 4], 8).unwrap_or(b'?'));
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let fields: Vec<&str> = left.split(' ').collect();
            let dev = parse_dev(fields.get(2)?)?;
            let mountpoint = unescape(fields.get(4)?);
            let source = unescape(right.split(' ').nth(1)?);
            Some(Mount {
                dev,
                mountpoint,
                source,
            })
        })
        .collect()
}

fn mounts() -> Vec<Mount> {
    parse_mountinfo(&fs::read_to_string("/proc/self/mountinfo").unwrap_or_default())
}

fn parse_swaps(text: &str) -> Vec<String> {
    text.lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .map(unescape)
        .collect()
}

fn swaps() -> Vec<String> {
    parse_swaps(&fs::read_to_string("/proc/swaps").unwrap_or_default())
}

impl fmt::Display for BlockDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "device:    {}", self.path.display())?;
        writeln!(f, "model:     {}", self.model)?;
        writeln!(f, "serial:    {}", self.serial)?;
        writeln!(f, "size:      {} ({} bytes)", human(self.size), self.size)?;
        writeln!(
            f,
            "removable: {}",
            if self.removable { "yes" } else { "no" }
        )?;
        if self.partitions.is_empty() {
            writeln!(f, "current partitions: none known to the kernel")?;
        } else {
            writeln!(f, "current partitions:")?;
            for p in &self.partitions {
                writeln!(
                    f,
                    "  /dev/{}  start {}  size {}",
                    p.name,
                    p.start,
                    human(p.size)
                )?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_and_swaps_parse_with_escapes() {
        let text = "36 35 8:17 / /media/my\\040stick rw,relatime shared:1 - exfat /dev/sdb1 rw\n\
                    37 35 0:5 / /dev rw - devtmpfs devtmpfs rw\n";
        let mounts = parse_mountinfo(text);
        assert_eq!(mounts.len(), 2);
        assert_eq!(mounts[0].dev, (8, 17));
        assert_eq!(mounts[0].mountpoint, "/media/my stick");
        assert_eq!(mounts[0].source, "/dev/sdb1");
        let swaps = parse_swaps(
            "Filename Type Size Used Priority\n/dev/sdb2 partition 1 0 -2\n/swap\\040file file 1 0 -3\n",
        );
        assert_eq!(swaps, ["/dev/sdb2", "/swap file"]);
    }

    #[test]
    fn probing_a_regular_file_is_refused() {
        let file = tempfile::NamedTempFile::new().unwrap();
        assert!(matches!(
            BlockDevice::probe(file.path()),
            Err(DeviceError::NotBlockDevice { .. })
        ));
    }
}
