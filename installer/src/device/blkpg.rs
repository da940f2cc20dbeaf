//! Making the kernel see a disk's new partitions: BLKRRPART, and BLKPG
//! where the kernel cannot parse the table itself.

use std::fs;
use std::io;
use std::os::fd::AsRawFd;
use std::path::PathBuf;

use hiperiso_stick::io::io_err;

use super::probe::kernel_partitions;
use super::{BlockDevice, DeviceError, KernelPartition};
use crate::layout::Extent;

const BLKRRPART: u64 = 0x125F;
/// Flushes a block device's buffer cache (read-back after writing).
pub(super) const BLKFLSBUF: u64 = 0x1261;
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
    let file = fs::File::open(path).map_err(io_err("open", path))?;
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
                .map_err(|source| DeviceError::Blkpg {
                    path: path.clone(),
                    action: "delete stale",
                    partition: p.number,
                    source,
                })?;
            }
        }
        for (extent, n) in wanted.iter().zip(1u32..) {
            if !current.iter().any(|p| matches(p, n, extent)) {
                blkpg(&file, BLKPG_ADD_PARTITION, n, *extent).map_err(|source| {
                    DeviceError::Blkpg {
                        path: path.clone(),
                        action: "add",
                        partition: n,
                        source,
                    }
                })?;
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
