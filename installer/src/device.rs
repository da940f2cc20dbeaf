//! Block devices: what a device is (sysfs), whether it is in use
//! (mountinfo, swaps, holders, the system disk), `install` and
//! `install --update`, and making the kernel see the new partitions.

use std::fmt;
use std::fs;
use std::io::{self, Cursor, Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::exfat::ExfatReader;
use crate::fat::{self, FatError, FatOptions, FatReader};
use crate::image::{self, BOOT_CODE, ImageError, ImageSpec, ImageSummary};
use crate::inspect::{self, DiskTable};
use crate::layout::{Extent, Identity, Layout, MIB, SECTOR};
use crate::mbr::BOOT_CODE_SIZE;
use crate::slice::Slice;

/// Where the ESP keeps the build record; its `"hiperiso"` key marks a stick.
pub const BUILD_JSON: &str = "EFI/hiperiso/build.json";

#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("{path}: not a block device")]
    NotBlockDevice { path: PathBuf },
    #[error("{path} is a partition, not a whole disk; give the disk itself ({disk})")]
    IsPartition { path: PathBuf, disk: PathBuf },
    #[error("{path} is in use: {uses}; unmount / swapoff / release it first")]
    InUse { path: PathBuf, uses: String },
    #[error("{path} holds the running system ({mountpoint} is on it); refusing to touch it")]
    SystemDisk { path: PathBuf, mountpoint: String },
    #[error("{path} ({model}) is not a removable disk; pass --force if you really mean it")]
    NotRemovable { path: PathBuf, model: String },
    #[error("{path} is too small for hiperiso: {source}")]
    TooSmall {
        path: PathBuf,
        #[source]
        source: ImageError,
    },
    #[error(
        "{path} is not a hiperiso stick: found {found}; `install --update` only updates sticks made by `install` or `image`"
    )]
    NotHiperiso { path: PathBuf, found: String },
    #[error(
        "the new ESP payload does not fit the {esp_size}-byte ESP on {path}: {short} bytes short; \
         a full `install` (which erases the data partition) is needed"
    )]
    EspTooSmall {
        path: PathBuf,
        esp_size: u64,
        short: u64,
    },
    #[error("cannot build the ESP from {tree}")]
    Esp {
        tree: PathBuf,
        #[source]
        source: FatError,
    },
    #[error("cannot assemble the image for {path}")]
    Image {
        path: PathBuf,
        #[source]
        source: ImageError,
    },
    #[error("read-back of {path} differs from what was written at bytes {offset}..{end}")]
    VerifyFailed {
        path: PathBuf,
        offset: u64,
        end: u64,
    },
    #[error("{what} on {path}")]
    Io {
        path: PathBuf,
        what: String,
        #[source]
        source: io::Error,
    },
}

fn io_err(path: &Path, what: impl Into<String>) -> impl FnOnce(io::Error) -> DeviceError {
    let path = path.to_path_buf();
    let what = what.into();
    move |source| DeviceError::Io { path, what, source }
}

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

fn kernel_partitions(sysfs: &Path, disk_name: &str) -> Vec<KernelPartition> {
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
        let meta = fs::metadata(path).map_err(io_err(path, "cannot stat"))?;
        if !meta.file_type().is_block_device() {
            return Err(DeviceError::NotBlockDevice {
                path: path.to_path_buf(),
            });
        }
        let dev = (libc::major(meta.rdev()), libc::minor(meta.rdev()));
        let sysfs = sysfs_for(dev).ok_or_else(|| DeviceError::Io {
            path: path.to_path_buf(),
            what: format!("no sysfs entry /sys/dev/block/{}:{}", dev.0, dev.1),
            source: io::Error::from(io::ErrorKind::NotFound),
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

fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
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

/// Refusals shared by `install` and `install --update`.
fn check_target(device: &BlockDevice, force: bool) -> Result<(), DeviceError> {
    if let Some(mountpoint) = device.system_mount() {
        return Err(DeviceError::SystemDisk {
            path: device.path.clone(),
            mountpoint,
        });
    }
    let uses = device.uses();
    if !uses.is_empty() {
        return Err(DeviceError::InUse {
            path: device.path.clone(),
            uses: uses.join("; "),
        });
    }
    if !device.removable && !force {
        return Err(DeviceError::NotRemovable {
            path: device.path.clone(),
            model: device.model.clone(),
        });
    }
    Ok(())
}

/// Opens the disk for writing, exclusively: the kernel refuses while
/// anything has it or a partition mounted or claimed.
fn open_exclusive(path: &Path) -> Result<fs::File, DeviceError> {
    fs::File::options()
        .read(true)
        .write(true)
        .custom_flags(libc::O_EXCL)
        .open(path)
        .map_err(io_err(path, "cannot open exclusively (is it in use?)"))
}

/// A byte range to copy from the staged image to the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    pub offset: u64,
    pub len: u64,
}

impl Region {
    fn end(&self) -> u64 {
        self.offset + self.len
    }
}

/// The data-holding extents of a (sparse) file within `[start, end)`.
fn allocated_extents(file: &fs::File, start: u64, end: u64) -> io::Result<Vec<Region>> {
    let fd = file.as_raw_fd();
    let mut out = Vec::new();
    let mut pos = start;
    while pos < end {
        // SAFETY: lseek on an open descriptor has no memory-safety conditions.
        let data = unsafe { libc::lseek(fd, pos as libc::off_t, libc::SEEK_DATA) };
        if data < 0 {
            let err = io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::ENXIO) {
                break;
            }
            return Err(err);
        }
        let data = data as u64;
        if data >= end {
            break;
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(fd, data as libc::off_t, libc::SEEK_HOLE) };
        if hole < 0 {
            return Err(io::Error::last_os_error());
        }
        let hole = (hole as u64).min(end);
        out.push(Region {
            offset: data,
            len: hole - data,
        });
        pos = hole;
    }
    Ok(out)
}

/// Sorts and merges overlapping or touching regions.
fn merge(mut regions: Vec<Region>) -> Vec<Region> {
    regions.retain(|r| r.len > 0);
    regions.sort_by_key(|r| r.offset);
    let mut out: Vec<Region> = Vec::new();
    for r in regions {
        match out.last_mut() {
            Some(last) if r.offset <= last.end() => {
                last.len = last.end().max(r.end()) - last.offset
            }
            _ => out.push(r),
        }
    }
    out
}

/// One step of an install, in the order they run.
#[derive(Debug, Clone)]
pub struct WriteStep {
    pub what: &'static str,
    pub regions: Vec<Region>,
}

impl WriteStep {
    pub fn bytes(&self) -> u64 {
        self.regions.iter().map(|r| r.len).sum()
    }
}

/// Everything `install` will do; printing it is `--dry-run`.
pub struct InstallPlan {
    pub device: BlockDevice,
    pub summary: ImageSummary,
    pub spec: ImageSpec,
    pub steps: Vec<WriteStep>,
    staged: tempfile::NamedTempFile,
}

impl InstallPlan {
    pub fn bytes_to_write(&self) -> u64 {
        self.steps.iter().map(WriteStep::bytes).sum()
    }
}

fn describe_layout(
    f: &mut fmt::Formatter<'_>,
    layout: &Layout,
    data_label: &str,
    esp_label: &str,
    esp_fs: &str,
) -> fmt::Result {
    writeln!(
        f,
        "partition table: {} ({} bytes)",
        layout.table, layout.disk_size
    )?;
    let id = &layout.identity;
    match layout.table {
        crate::layout::TableKind::Gpt => writeln!(f, "  disk GUID {}", id.disk_guid)?,
        crate::layout::TableKind::Mbr => writeln!(f, "  disk signature {:08x}", id.mbr_signature)?,
    }
    writeln!(
        f,
        "  1: data  bytes {}..{} ({}), exFAT, label {data_label}, UUID {}",
        layout.data.offset,
        layout.data.end(),
        human(layout.data.len),
        id.data_fs_uuid()
    )?;
    writeln!(
        f,
        "  2: ESP   bytes {}..{} ({}), {esp_fs}, label {esp_label}, volume id {:04X}-{:04X}",
        layout.esp.offset,
        layout.esp.end(),
        human(layout.esp.len),
        id.esp_volume_id >> 16,
        id.esp_volume_id & 0xffff
    )
}

impl fmt::Display for InstallPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.device)?;
        writeln!(f, "new layout (ALL DATA ON THE DEVICE WILL BE LOST):")?;
        let esp_fs = format!(
            "{:?} ({} clusters of {} bytes, {} used)",
            self.summary.esp.fat_type,
            self.summary.esp.clusters,
            self.summary.esp.cluster_size,
            self.summary.esp.used_clusters
        );
        describe_layout(
            f,
            &self.summary.layout,
            &self.spec.data_label,
            &self.spec.esp_label,
            &esp_fs,
        )?;
        writeln!(
            f,
            "writes, in order ({} in total):",
            human(self.bytes_to_write())
        )?;
        for (i, step) in self.steps.iter().enumerate() {
            writeln!(
                f,
                "  {}. {} ({} in {} region(s))",
                i + 1,
                step.what,
                human(step.bytes()),
                step.regions.len()
            )?;
        }
        writeln!(
            f,
            "then fsync, read every written region back and compare sha256, and make the kernel see the partitions"
        )
    }
}

/// Checks the target and stages the image for it; writes nothing to the
/// device. `spec.size` is replaced by the device's size.
pub fn plan_install(
    device_path: &Path,
    spec: &ImageSpec,
    force: bool,
) -> Result<InstallPlan, DeviceError> {
    let device = BlockDevice::probe(device_path)?;
    check_target(&device, force)?;
    let spec = ImageSpec {
        size: device.size,
        ..spec.clone()
    };
    let layout = image::plan(&spec).map_err(|source| match source {
        ImageError::DoesNotFit { .. } => DeviceError::TooSmall {
            path: device.path.clone(),
            source,
        },
        source => DeviceError::Image {
            path: device.path.clone(),
            source,
        },
    })?;
    let staged = tempfile::Builder::new()
        .prefix("hiperiso-install-")
        .tempfile()
        .map_err(io_err(
            &std::env::temp_dir(),
            "cannot create a staging file",
        ))?;
    let image_err = |source| DeviceError::Image {
        path: device.path.clone(),
        source,
    };
    let staged_path = staged.path().to_path_buf();
    staged
        .as_file()
        .set_len(layout.disk_size)
        .map_err(io_err(&staged_path, "cannot size the staging file"))?;
    let summary = image::write_disk(&spec, &layout, &mut staged.as_file(), &staged_path)
        .map_err(image_err)?;
    staged
        .as_file()
        .sync_data()
        .map_err(io_err(&staged_path, "cannot flush"))?;

    let sectors = |n: u64| n * SECTOR;
    let end = layout.disk_size;
    let head = Region {
        offset: 0,
        len: layout.data.offset,
    };
    let tail = Region {
        offset: layout.esp.end(),
        len: end - layout.esp.end(),
    };
    let data_head = Region {
        offset: layout.data.offset,
        len: MIB.min(layout.data.len),
    };
    let mut data_regions =
        allocated_extents(staged.as_file(), layout.data.offset, layout.data.end())
            .map_err(io_err(&staged_path, "cannot map the staging file"))?;
    data_regions.push(data_head);
    let steps = vec![
        WriteStep {
            what: "invalidate the old partition table (zero the first 34 and last 33 sectors)",
            regions: merge(vec![
                Region {
                    offset: 0,
                    len: sectors(34),
                },
                Region {
                    offset: end - sectors(33),
                    len: sectors(33),
                },
            ]),
        },
        WriteStep {
            what: "data partition: exFAT metadata and files",
            regions: merge(data_regions),
        },
        WriteStep {
            what: "ESP (whole partition)",
            regions: vec![Region {
                offset: layout.esp.offset,
                len: layout.esp.len,
            }],
        },
        WriteStep {
            what: "disk tail (backup GPT)",
            regions: merge(vec![tail]),
        },
        WriteStep {
            what: "disk head: MBR and partition table, last",
            regions: vec![head],
        },
    ];
    Ok(InstallPlan {
        device,
        summary,
        spec,
        steps,
        staged,
    })
}

/// Whether a step copies the staged bytes or writes zeros.
fn is_wipe(step: &WriteStep) -> bool {
    step.what.starts_with("invalidate")
}

fn copy_region(
    src: &mut fs::File,
    dst: &mut fs::File,
    region: Region,
    zeros: bool,
    dst_path: &Path,
) -> Result<(), DeviceError> {
    const CHUNK: u64 = 4 * MIB;
    let mut buf = vec![0u8; CHUNK.min(region.len) as usize];
    src.seek(SeekFrom::Start(region.offset))
        .map_err(io_err(dst_path, "cannot seek the staging file"))?;
    dst.seek(SeekFrom::Start(region.offset))
        .map_err(io_err(dst_path, "cannot seek"))?;
    let mut left = region.len;
    while left > 0 {
        let n = left.min(CHUNK) as usize;
        if zeros {
            buf[..n].fill(0);
        } else {
            src.read_exact(&mut buf[..n])
                .map_err(io_err(dst_path, "cannot read the staging file"))?;
        }
        dst.write_all(&buf[..n]).map_err(io_err(
            dst_path,
            format!("write failed near byte {}", region.end() - left),
        ))?;
        left -= n as u64;
    }
    Ok(())
}

fn hash_region<R: Read + Seek>(src: &mut R, region: Region) -> io::Result<[u8; 32]> {
    src.seek(SeekFrom::Start(region.offset))?;
    let mut hasher = Sha256::new();
    io::copy(&mut src.take(region.len), &mut hasher)?;
    Ok(hasher.finalize().into())
}

/// Drops the device's cached pages so read-back comes from the medium.
fn drop_cache(file: &fs::File) {
    // SAFETY: plain ioctl/fadvise on an open descriptor; failures only mean
    // the read-back may be served from the page cache.
    unsafe {
        libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED);
        libc::ioctl(file.as_raw_fd(), BLKFLSBUF as _, 0);
    }
}

fn sync(file: &fs::File, path: &Path) -> Result<(), DeviceError> {
    file.sync_all().map_err(io_err(path, "fsync failed"))
}

/// What `install` did.
#[derive(Debug, Clone)]
pub struct InstallReport {
    pub bytes_written: u64,
    pub verified_regions: usize,
    pub partition_nodes: Vec<PathBuf>,
    pub partitions_added_by_blkpg: bool,
}

/// Runs a plan: writes (table last), fsyncs, verifies, rescans.
pub fn execute_install(
    plan: &InstallPlan,
    mut progress: impl FnMut(&str),
) -> Result<InstallReport, DeviceError> {
    let path = &plan.device.path;
    let mut dev = open_exclusive(path)?;
    let mut staged = plan
        .staged
        .reopen()
        .map_err(io_err(plan.staged.path(), "cannot reopen the staging file"))?;
    for step in &plan.steps {
        progress(&format!("writing {} ({})", step.what, human(step.bytes())));
        for &region in &step.regions {
            copy_region(&mut staged, &mut dev, region, is_wipe(step), path)?;
        }
        sync(&dev, path)?;
    }
    progress("verifying");
    drop_cache(&dev);
    let mut verified = 0;
    for step in plan.steps.iter().filter(|s| !is_wipe(s)) {
        for &region in &step.regions {
            let want = hash_region(&mut staged, region)
                .map_err(io_err(plan.staged.path(), "cannot read the staging file"))?;
            let got = hash_region(&mut dev, region).map_err(io_err(path, "read-back failed"))?;
            if want != got {
                return Err(DeviceError::VerifyFailed {
                    path: path.clone(),
                    offset: region.offset,
                    end: region.end(),
                });
            }
            verified += 1;
        }
    }
    drop(dev);
    progress("making the kernel see the new partitions");
    let layout = &plan.summary.layout;
    let (nodes, added) = refresh_partitions(&plan.device, &[layout.data, layout.esp])?;
    Ok(InstallReport {
        bytes_written: plan.bytes_to_write(),
        verified_regions: verified,
        partition_nodes: nodes,
        partitions_added_by_blkpg: added,
    })
}

const BLKRRPART: u64 = 0x125F;
const BLKFLSBUF: u64 = 0x1261;
const BLKPG: u64 = 0x1269;
const BLKPG_ADD_PARTITION: libc::c_int = 1;
const BLKPG_DEL_PARTITION: libc::c_int = 2;

#[repr(C)]
struct BlkpgPartition {
    start: libc::c_longlong,
    length: libc::c_longlong,
    pno: libc::c_int,
    devname: [libc::c_char; 64],
    volname: [libc::c_char; 64],
}

#[repr(C)]
struct BlkpgIoctlArg {
    op: libc::c_int,
    flags: libc::c_int,
    datalen: libc::c_int,
    data: *mut libc::c_void,
}

fn blkpg(file: &fs::File, op: libc::c_int, pno: u32, extent: Extent) -> io::Result<()> {
    let mut part = BlkpgPartition {
        start: extent.offset as libc::c_longlong,
        length: extent.len as libc::c_longlong,
        pno: pno as libc::c_int,
        devname: [0; 64],
        volname: [0; 64],
    };
    let mut arg = BlkpgIoctlArg {
        op,
        flags: 0,
        datalen: std::mem::size_of::<BlkpgPartition>() as libc::c_int,
        data: (&mut part as *mut BlkpgPartition).cast(),
    };
    // SAFETY: `arg` and `part` are valid, properly laid out (#[repr(C)]) and
    // outlive the call.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), BLKPG as _, &mut arg as *mut BlkpgIoctlArg) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Makes the kernel's partitions of `device` match `wanted` (numbered from
/// 1): BLKRRPART first; when the kernel has no parser for the table (as on
/// many minimal kernels), BLKPG deletes stale and adds the missing ones.
/// Returns the partition nodes and whether BLKPG was needed.
pub fn refresh_partitions(
    device: &BlockDevice,
    wanted: &[Extent],
) -> Result<(Vec<PathBuf>, bool), DeviceError> {
    let path = &device.path;
    let file = fs::File::open(path).map_err(io_err(path, "cannot open"))?;
    // SAFETY: BLKRRPART takes no argument.
    unsafe { libc::ioctl(file.as_raw_fd(), BLKRRPART as _, 0) };
    let matches = |p: &KernelPartition, n: u32, e: &Extent| {
        p.number == n && p.start == e.offset && p.size == e.len
    };
    let current = kernel_partitions(&device.sysfs, &device.name);
    let all_there = wanted
        .iter()
        .zip(1u32..)
        .all(|(e, n)| current.iter().any(|p| matches(p, n, e)));
    let mut added = false;
    if !all_there {
        for p in &current {
            let keep = wanted.iter().zip(1u32..).any(|(e, n)| matches(p, n, e));
            if !keep {
                blkpg(
                    &file,
                    BLKPG_DEL_PARTITION,
                    p.number,
                    Extent { offset: 0, len: 0 },
                )
                .map_err(io_err(
                    path,
                    format!("BLKPG cannot delete stale partition {}", p.number),
                ))?;
            }
        }
        for (extent, n) in wanted.iter().zip(1u32..) {
            if !current.iter().any(|p| matches(p, n, extent)) {
                blkpg(&file, BLKPG_ADD_PARTITION, n, *extent)
                    .map_err(io_err(path, format!("BLKPG cannot add partition {n}")))?;
                added = true;
            }
        }
    }
    let nodes: Vec<PathBuf> = (1..=wanted.len() as u32)
        .map(|n| device.partition_node(n))
        .collect();
    // devtmpfs creates nodes asynchronously; give it a moment.
    for _ in 0..50 {
        if nodes.iter().all(|n| n.exists()) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    Ok((nodes, added))
}

/// A recognised hiperiso stick and the new ESP to put on it.
pub struct UpdatePlan {
    pub device: BlockDevice,
    pub table: DiskTable,
    pub data: Extent,
    pub esp: Extent,
    /// `"hiperiso"` object of the build.json found on the stick (None when an
    /// interrupted update had left the ESP blank).
    pub current_build: Option<serde_json::Value>,
    pub new_esp: Vec<u8>,
    pub esp_label: String,
}

impl fmt::Display for UpdatePlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.device)?;
        writeln!(f, "hiperiso stick, {} partition table", self.table)?;
        writeln!(
            f,
            "  data partition bytes {}..{} ({}): left untouched",
            self.data.offset,
            self.data.end(),
            human(self.data.len)
        )?;
        writeln!(
            f,
            "  ESP bytes {}..{} ({}): rewritten, label {}",
            self.esp.offset,
            self.esp.end(),
            human(self.esp.len),
            self.esp_label
        )?;
        match &self.current_build {
            Some(build) => writeln!(f, "  current build: {}", inspect::build_summary(build))?,
            None => writeln!(
                f,
                "  current ESP: blank (an earlier update was interrupted)"
            )?,
        }
        writeln!(
            f,
            "writes, in order: ESP boot sector zeroed; ESP sectors 1..end; ESP boot sector; MBR boot code (440 bytes)"
        )?;
        writeln!(f, "then fsync and read the ESP back to compare sha256")
    }
}

/// Reads the stick's `build.json` marker from its ESP.
fn read_marker<D: Read + Seek>(esp: D) -> Result<serde_json::Value, String> {
    let mut fat = FatReader::open(esp)
        .map_err(|e| format!("an ESP without a readable FAT filesystem ({e})"))?;
    let bytes = fat
        .read_file(BUILD_JSON)
        .map_err(|_| format!("a FAT ESP (label {:?}) without {BUILD_JSON}", fat.label()))?;
    let json: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| format!("an ESP whose {BUILD_JSON} is not JSON ({e})"))?;
    json.get("hiperiso")
        .cloned()
        .ok_or_else(|| format!("an ESP whose {BUILD_JSON} has no \"hiperiso\" key"))
}

/// Recognises a hiperiso stick on `disk` of `size` bytes: data then ESP,
/// the ESP ending the disk, and the build.json marker. Returns the table,
/// both extents and the marker (None for a blank ESP left by an
/// interrupted update).
pub fn recognise<D: Read + Seek>(
    disk: &mut D,
    size: u64,
) -> Result<(DiskTable, Extent, Extent, Option<serde_json::Value>), String> {
    let found = inspect::read_table(disk, size).map_err(|e| e.to_string())?;
    let (table, parts) = match found {
        Some(t) => t,
        None => return Err("no partition table".into()),
    };
    let describe = || {
        let list: Vec<String> = parts
            .iter()
            .map(|p| format!("{} at {} ({} bytes)", p.type_name, p.offset, p.len))
            .collect();
        format!(
            "a {table} partition table with {} partition(s): {}",
            parts.len(),
            list.join(", ")
        )
    };
    let [data, esp] = parts.as_slice() else {
        return Err(describe());
    };
    if !data.is_data() || !esp.is_esp() || esp.offset < data.offset + data.len {
        return Err(describe());
    }
    let data_extent = Extent {
        offset: data.offset,
        len: data.len,
    };
    let esp_extent = Extent {
        offset: esp.offset,
        len: esp.len,
    };
    let mut first = [0u8; 512];
    disk.seek(SeekFrom::Start(esp.offset))
        .and_then(|_| disk.read_exact(&mut first))
        .map_err(|e| e.to_string())?;
    if first.iter().all(|&b| b == 0) {
        // A blank ESP is what an interrupted update leaves; accept it only
        // when the data partition is clearly ours: our GPT name (if any) and
        // an exFAT volume with a `hiperiso/` directory.
        let data_is_ours = data.name_is_hiperiso() != Some(false)
            && ExfatReader::open(Slice::new(&mut *disk, data.offset, data.len))
                .and_then(|mut r| r.read_dir("/hiperiso"))
                .is_ok();
        if data_is_ours {
            return Ok((table, data_extent, esp_extent, None));
        }
        return Err(format!(
            "{}; the ESP is blank and the data partition has no hiperiso/ directory",
            describe()
        ));
    }
    let marker = read_marker(Slice::new(&mut *disk, esp.offset, esp.len))
        .map_err(|what| format!("{}; the ESP is {what}", describe()))?;
    Ok((table, data_extent, esp_extent, Some(marker)))
}

/// Recognises the stick and builds the new ESP in memory; writes nothing.
pub fn plan_update(
    device_path: &Path,
    esp_tree: &Path,
    esp_label: &str,
    seed: &str,
    source_date_epoch: u64,
    force: bool,
) -> Result<UpdatePlan, DeviceError> {
    let device = BlockDevice::probe(device_path)?;
    check_target(&device, force)?;
    let mut file = fs::File::open(device_path).map_err(io_err(device_path, "cannot open"))?;
    let (table, data, esp, current_build) =
        recognise(&mut file, device.size).map_err(|found| DeviceError::NotHiperiso {
            path: device_path.to_path_buf(),
            found,
        })?;
    let opts = FatOptions {
        label: esp_label.to_string(),
        volume_id: Identity::from_seed(seed).esp_volume_id,
        timestamp: source_date_epoch,
        hidden_sectors: u32::try_from(esp.first_lba()).unwrap_or(u32::MAX),
    };
    let mut new_esp = Cursor::new(vec![0u8; esp.len as usize]);
    fat::format(&mut new_esp, esp.len, Some(esp_tree), &opts).map_err(|source| match source {
        FatError::DoesNotFit { short, .. } => DeviceError::EspTooSmall {
            path: device_path.to_path_buf(),
            esp_size: esp.len,
            short,
        },
        source => DeviceError::Esp {
            tree: esp_tree.to_path_buf(),
            source,
        },
    })?;
    Ok(UpdatePlan {
        device,
        table,
        data,
        esp,
        current_build,
        new_esp: new_esp.into_inner(),
        esp_label: esp_label.to_string(),
    })
}

/// Rewrites the ESP and the boot code. The data partition is never
/// written; the ESP's boot sector is zeroed first and written last, so an
/// interrupted update leaves a blank ESP that a rerun recognises.
pub fn execute_update(
    plan: &UpdatePlan,
    mut progress: impl FnMut(&str),
) -> Result<(), DeviceError> {
    let path = &plan.device.path;
    let mut dev = open_exclusive(path)?;
    let at = |dev: &mut fs::File, offset: u64, bytes: &[u8]| -> Result<(), DeviceError> {
        dev.seek(SeekFrom::Start(offset))
            .map_err(io_err(path, "cannot seek"))?;
        dev.write_all(bytes)
            .map_err(io_err(path, format!("write failed at byte {offset}")))?;
        sync(dev, path)
    };
    progress("blanking the ESP boot sector");
    at(&mut dev, plan.esp.offset, &[0u8; 512])?;
    progress("writing the ESP");
    at(&mut dev, plan.esp.offset + 512, &plan.new_esp[512..])?;
    at(&mut dev, plan.esp.offset, &plan.new_esp[..512])?;
    progress("writing the boot code");
    let mut sector0 = [0u8; 512];
    dev.seek(SeekFrom::Start(0))
        .and_then(|_| dev.read_exact(&mut sector0))
        .map_err(io_err(path, "cannot read sector 0"))?;
    sector0[..BOOT_CODE_SIZE].copy_from_slice(&BOOT_CODE);
    at(&mut dev, 0, &sector0)?;
    progress("verifying");
    drop_cache(&dev);
    let region = Region {
        offset: plan.esp.offset,
        len: plan.esp.len,
    };
    let got = hash_region(&mut dev, region).map_err(io_err(path, "read-back failed"))?;
    let want: [u8; 32] = Sha256::digest(&plan.new_esp).into();
    if got != want {
        return Err(DeviceError::VerifyFailed {
            path: path.clone(),
            offset: region.offset,
            end: region.end(),
        });
    }
    Ok(())
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
    fn regions_merge() {
        let r = |offset, len| Region { offset, len };
        assert_eq!(
            merge(vec![r(10, 5), r(0, 10), r(30, 1), r(14, 2), r(40, 0)]),
            vec![r(0, 16), r(30, 1)]
        );
    }

    #[test]
    fn sparse_extents_are_found() {
        let file = tempfile::tempfile().unwrap();
        file.set_len(16 * MIB).unwrap();
        let mut f = &file;
        f.seek(SeekFrom::Start(4 * MIB)).unwrap();
        f.write_all(&[1u8; 4096]).unwrap();
        f.sync_all().unwrap();
        let extents = allocated_extents(&file, 0, 16 * MIB).unwrap();
        assert_eq!(extents.len(), 1);
        assert!(extents[0].offset <= 4 * MIB && extents[0].end() >= 4 * MIB + 4096);
        assert!(extents[0].len < MIB);
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
