//! `install`: stage the image for the device's size, plan the writes
//! (only allocated extents of the data partition, the table last), copy,
//! fsync, read back and compare, and make the kernel see the partitions.

use std::fmt;
use std::fs;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use hiperiso_stick::fs_identity::serial_uuid;
use hiperiso_stick::io::io_err;
use sha2::{Digest, Sha256};

use super::blkpg::{BLKFLSBUF, refresh_partitions};
use super::refusals::check_install;
use super::{BlockDevice, DeviceError, human};
use crate::image::{self, ImageError, ImageSpec, ImageSummary};
use crate::layout::{Extent, Layout, MIB, SECTOR, TableKind};

/// Opens the disk for writing, exclusively: the kernel refuses while
/// anything has it or a partition mounted or claimed.
pub(super) fn open_exclusive(path: &Path) -> Result<fs::File, DeviceError> {
    fs::File::options()
        .read(true)
        .write(true)
        .custom_flags(libc::O_EXCL)
        .open(path)
        .map_err(|source| DeviceError::OpenExclusive {
            path: path.to_path_buf(),
            source,
        })
}

/// A byte range to copy from the staged image to the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    pub offset: u64,
    pub len: u64,
}

impl Region {
    pub(super) fn end(&self) -> u64 {
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

/// What an install reports while it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstallProgress<'a> {
    /// A step starts: what it does, and how many bytes it writes or reads
    /// back (0: it counts none).
    Step { what: &'a str, bytes: u64 },
    /// So many more bytes of the current step are done.
    Bytes(u64),
}

/// Bytes moved per read or write while copying and reading back.
const CHUNK: u64 = 4 * MIB;

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

/// A plan's writes, in order, and what follows them (both kinds of install).
pub(super) fn describe_writes(f: &mut fmt::Formatter<'_>, steps: &[WriteStep]) -> fmt::Result {
    let total = steps.iter().map(WriteStep::bytes).sum();
    writeln!(f, "writes, in order ({} in total):", human(total))?;
    for (i, step) in steps.iter().enumerate() {
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
        TableKind::Gpt => writeln!(f, "  disk GUID {}", id.disk_guid)?,
        TableKind::Mbr => writeln!(f, "  disk signature {:08x}", id.mbr_signature)?,
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
        "  2: ESP   bytes {}..{} ({}), {esp_fs}, label {esp_label}, volume id {}",
        layout.esp.offset,
        layout.esp.end(),
        human(layout.esp.len),
        serial_uuid(id.esp_volume_id)
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
        describe_writes(f, &self.steps)
    }
}

/// The writes that put the disk image `src` (`size` bytes, partitions
/// `data` then `esp`) onto a device of `device_size` bytes: the old tables
/// invalidated, then only the allocated extents of the data partition, the
/// ESP, the tail (backup GPT) and the head (MBR and table) last.
pub(super) fn write_steps(
    (src, src_path): (&fs::File, &Path),
    (data, esp): (Extent, Extent),
    size: u64,
    device_size: u64,
) -> Result<Vec<WriteStep>, DeviceError> {
    let sectors = |n: u64| n * SECTOR;
    let head = Region {
        offset: 0,
        len: data.offset,
    };
    let tail = Region {
        offset: esp.end(),
        len: size - esp.end(),
    };
    let data_head = Region {
        offset: data.offset,
        len: MIB.min(data.len),
    };
    let mut data_regions = allocated_extents(src, data.offset, data.end())
        .map_err(io_err("map the extents of", src_path))?;
    data_regions.push(data_head);
    Ok(vec![
        WriteStep {
            what: "invalidate the old partition table (zero the first 34 and last 33 sectors)",
            regions: merge(vec![
                Region {
                    offset: 0,
                    len: sectors(34),
                },
                Region {
                    offset: device_size - sectors(33),
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
                offset: esp.offset,
                len: esp.len,
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
    ])
}

/// Checks the target and stages the image for it; writes nothing to the
/// device. `spec.size` is replaced by the device's size.
/// `force` and `reinstall` as in [`check_install`], which runs first.
pub fn plan_install(
    device_path: &Path,
    spec: &ImageSpec,
    force: bool,
    reinstall: bool,
) -> Result<InstallPlan, DeviceError> {
    let device = check_install(device_path, force, reinstall)?;
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
        .map_err(io_err("create a staging file in", &std::env::temp_dir()))?;
    let image_err = |source| DeviceError::Image {
        path: device.path.clone(),
        source,
    };
    let staged_path = staged.path().to_path_buf();
    staged
        .as_file()
        .set_len(layout.disk_size)
        .map_err(io_err("size the staging file", &staged_path))?;
    let summary = image::write_disk(&spec, &layout, &mut staged.as_file(), &staged_path)
        .map_err(image_err)?;
    staged
        .as_file()
        .sync_data()
        .map_err(io_err("flush the staging file", &staged_path))?;

    let steps = write_steps(
        (staged.as_file(), &staged_path),
        (layout.data, layout.esp),
        layout.disk_size,
        layout.disk_size,
    )?;
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

/// Copies `region` from the staging file `src` (or zeros) to `dst`,
/// telling `done` each chunk's size.
fn copy_region(
    (src, src_path): (&mut fs::File, &Path),
    (dst, dst_path): (&mut fs::File, &Path),
    (region, zeros): (Region, bool),
    mut done: impl FnMut(u64),
) -> Result<(), DeviceError> {
    let mut buf = vec![0u8; CHUNK.min(region.len) as usize];
    src.seek(SeekFrom::Start(region.offset))
        .map_err(io_err("seek the staging file", src_path))?;
    dst.seek(SeekFrom::Start(region.offset))
        .map_err(io_err("seek", dst_path))?;
    let mut left = region.len;
    while left > 0 {
        let n = left.min(CHUNK) as usize;
        if zeros {
            buf[..n].fill(0);
        } else {
            src.read_exact(&mut buf[..n])
                .map_err(io_err("read the staging file", src_path))?;
        }
        dst.write_all(&buf[..n])
            .map_err(|source| DeviceError::Write {
                path: dst_path.to_path_buf(),
                offset: region.end() - left,
                source,
            })?;
        left -= n as u64;
        done(n as u64);
    }
    Ok(())
}

/// sha256 of `region` of `src`, telling `done` each chunk's size.
pub(super) fn hash_region<R: Read + Seek>(
    src: &mut R,
    region: Region,
    mut done: impl FnMut(u64),
) -> io::Result<[u8; 32]> {
    src.seek(SeekFrom::Start(region.offset))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; CHUNK.min(region.len) as usize];
    let mut left = region.len;
    while left > 0 {
        let n = left.min(CHUNK) as usize;
        src.read_exact(&mut buf[..n])?;
        hasher.update(&buf[..n]);
        left -= n as u64;
        done(n as u64);
    }
    Ok(hasher.finalize().into())
}

/// Drops the device's cached pages so read-back comes from the medium.
pub(super) fn drop_cache(file: &fs::File) {
    // SAFETY: plain ioctl/fadvise on an open descriptor; failures only mean
    // the read-back may be served from the page cache.
    unsafe {
        libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED);
        libc::ioctl(file.as_raw_fd(), BLKFLSBUF as _, 0);
    }
}

pub(super) fn sync(file: &fs::File, path: &Path) -> Result<(), DeviceError> {
    file.sync_all().map_err(io_err("fsync", path))?;
    Ok(())
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
    progress: impl FnMut(InstallProgress),
) -> Result<InstallReport, DeviceError> {
    let staged_path = plan.staged.path();
    let mut staged = plan
        .staged
        .reopen()
        .map_err(io_err("reopen the staging file", staged_path))?;
    let layout = &plan.summary.layout;
    write_and_verify(
        &plan.device,
        (&mut staged, staged_path),
        &plan.steps,
        &[layout.data, layout.esp],
        progress,
    )
}

/// Runs `steps` from `src` onto `device`: writes (table last), fsyncs,
/// reads every written region back and compares, and makes the kernel see
/// `partitions`.
pub(super) fn write_and_verify(
    device: &BlockDevice,
    (src, src_path): (&mut fs::File, &Path),
    steps: &[WriteStep],
    partitions: &[Extent],
    mut progress: impl FnMut(InstallProgress),
) -> Result<InstallReport, DeviceError> {
    let path = &device.path;
    let mut dev = open_exclusive(path)?;
    for step in steps {
        progress(InstallProgress::Step {
            what: &format!("writing {}", step.what),
            bytes: step.bytes(),
        });
        for &region in &step.regions {
            copy_region(
                (&mut *src, src_path),
                (&mut dev, path),
                (region, is_wipe(step)),
                |n| progress(InstallProgress::Bytes(n)),
            )?;
        }
        sync(&dev, path)?;
    }
    let written: Vec<_> = steps.iter().filter(|s| !is_wipe(s)).collect();
    progress(InstallProgress::Step {
        what: "verifying: reading back what was written",
        bytes: written.iter().map(|s| s.bytes()).sum(),
    });
    drop_cache(&dev);
    let mut verified = 0;
    for step in &written {
        for &region in &step.regions {
            let want = hash_region(src, region, |_| {}).map_err(io_err("read", src_path))?;
            let got = hash_region(&mut dev, region, |n| progress(InstallProgress::Bytes(n)))
                .map_err(io_err("read back", path))?;
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
    progress(InstallProgress::Step {
        what: "making the kernel see the new partitions",
        bytes: 0,
    });
    let (nodes, added) = refresh_partitions(device, partitions)?;
    Ok(InstallReport {
        bytes_written: steps.iter().map(WriteStep::bytes).sum(),
        verified_regions: verified,
        partition_nodes: nodes,
        partitions_added_by_blkpg: added,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
