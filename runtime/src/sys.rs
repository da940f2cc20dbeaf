//! Thin wrappers over the Linux calls PID 1 needs: mount, umount, sync,
//! reboot, uname and clocks.

use std::ffi::CString;
use std::io;
use std::path::Path;

fn cstr(s: &str) -> io::Result<CString> {
    CString::new(s).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in argument"))
}

fn check(ret: libc::c_int) -> io::Result<()> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// `mount(2)`; `data` is the filesystem-specific option string.
pub fn mount(
    source: &str,
    target: &Path,
    fstype: &str,
    flags: libc::c_ulong,
    data: &str,
) -> io::Result<()> {
    std::fs::create_dir_all(target)?;
    let source = cstr(source)?;
    let target = cstr(&target.display().to_string())?;
    let fstype = cstr(fstype)?;
    let data = cstr(data)?;
    // SAFETY: all pointers are valid NUL-terminated strings.
    check(unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            flags,
            data.as_ptr().cast(),
        )
    })
}

/// `umount2(2)`.
pub fn umount(target: &Path) -> io::Result<()> {
    let target = cstr(&target.display().to_string())?;
    // SAFETY: valid NUL-terminated path.
    check(unsafe { libc::umount2(target.as_ptr(), 0) })
}

/// Flush every filesystem.
pub fn sync_all() {
    // SAFETY: no arguments.
    unsafe { libc::sync() };
}

/// `reboot(2)` with `LINUX_REBOOT_CMD_*`; returns only on failure.
pub fn reboot(cmd: libc::c_int) -> io::Error {
    sync_all();
    // SAFETY: plain syscall.
    unsafe { libc::reboot(cmd) };
    io::Error::last_os_error()
}

/// The running kernel's release (`uname -r`).
pub fn kernel_release() -> String {
    // SAFETY: utsname is plain data; uname fills it.
    let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer to a utsname.
    if unsafe { libc::uname(&mut uts) } != 0 {
        return String::new();
    }
    let bytes: Vec<u8> = uts
        .release
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

fn clock(id: libc::clockid_t) -> libc::timespec {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer to a timespec.
    unsafe { libc::clock_gettime(id, &mut ts) };
    ts
}

/// Milliseconds since the kernel booted (CLOCK_BOOTTIME).
pub fn uptime_ms() -> u64 {
    let ts = clock(libc::CLOCK_BOOTTIME);
    ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
}

/// Milliseconds since the Unix epoch (CLOCK_REALTIME).
pub fn unix_ms() -> i64 {
    let ts = clock(libc::CLOCK_REALTIME);
    ts.tv_sec * 1000 + ts.tv_nsec / 1_000_000
}

/// Seconds since the Unix epoch (CLOCK_REALTIME).
pub fn unix_seconds() -> i64 {
    clock(libc::CLOCK_REALTIME).tv_sec
}
