//! The host console's status screen, the serial mirror (no framebuffer)
//! and the viewer's measurements.

use serde::Serialize;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// What the status screen shows.
#[derive(Debug, Clone)]
pub struct StatusInfo {
    pub session: String,
    pub iso: String,
    pub serial_log: PathBuf,
    pub started: Instant,
}

/// Printable text only: a guest's escape sequences must not drive the
/// host's console.
pub(super) fn sanitize(line: &str) -> String {
    line.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim_end()
        .to_string()
}

/// The last `count` lines of a file (reads at most its last 16 KiB).
pub fn tail_lines(path: &Path, count: usize) -> Vec<String> {
    let Ok(mut file) = File::open(path) else {
        return Vec::new();
    };
    let size = file.seek(SeekFrom::End(0)).unwrap_or(0);
    let start = size.saturating_sub(16 * 1024);
    let mut bytes = Vec::new();
    if file.seek(SeekFrom::Start(start)).is_err() || file.read_to_end(&mut bytes).is_err() {
        return Vec::new();
    }
    let text = String::from_utf8_lossy(&bytes);
    let mut lines: Vec<&str> = text.lines().collect();
    if start > 0 && !lines.is_empty() {
        lines.remove(0); // probably cut in the middle
    }
    lines[lines.len().saturating_sub(count)..]
        .iter()
        .map(|l| sanitize(l))
        .collect()
}

/// The status screen's text (lines end in `\r\n` for a raw console).
pub fn status_text(info: &StatusInfo, elapsed: Duration, guest: &str, serial: &[String]) -> String {
    let secs = elapsed.as_secs();
    let mut lines = vec![
        "hiperiso - host console".to_string(),
        String::new(),
        format!("  session   {}", info.session),
        format!("  image     {}", info.iso),
        format!(
            "  elapsed   {:02}:{:02}:{:02}",
            secs / 3600,
            secs / 60 % 60,
            secs % 60
        ),
        format!("  guest     {guest}"),
        String::new(),
        "  Ctrl+Alt+H    back to the guest (or Esc)".to_string(),
        "  Ctrl+Alt+End  send Ctrl-Alt-Del".to_string(),
        "  Ctrl+Alt+S    screenshot into the session".to_string(),
        "  Ctrl+Alt+P    power the guest off (twice: at once)".to_string(),
        String::new(),
        "last serial lines:".to_string(),
    ];
    if serial.is_empty() {
        lines.push("  (none yet)".to_string());
    }
    // Cut to 80 columns: a wrapped line would push the screen up.
    lines.extend(
        serial
            .iter()
            .map(|l| format!("  {}", l.chars().take(78).collect::<String>())),
    );
    lines.join("\r\n") + "\r\n"
}

/// The viewer's measurements, written to the session as `display.json`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Stats {
    pub framebuffer: String,
    pub host_width: u32,
    pub host_height: u32,
    pub guest_width: u16,
    pub guest_height: u16,
    pub resizes: u32,
    pub updates: u64,
    /// Rectangles' source pixels received.
    pub pixels: u64,
    /// Per update: from its first byte on the socket to its pixels on
    /// the host's screen (mean, 95th percentile, maximum).
    pub latency_ms_mean: f64,
    pub latency_ms_p95: f64,
    pub latency_ms_max: f64,
    /// Of that, scaling and writing to the framebuffer.
    pub draw_ms_mean: f64,
    /// Updates per second while updates arrived.
    pub updates_per_second: f64,
    /// CPU time of the display and input threads.
    pub display_cpu_ms: f64,
    pub input_cpu_ms: f64,
    pub keys: u64,
    pub pointer_events: u64,
    pub hotkeys: u64,
    pub input_devices: Vec<String>,
    /// QEMU's own CPU time (guest, VNC server) and the guest's run time,
    /// filled in by init: the yardstick for the viewer's CPU use.
    pub qemu_cpu_ms: Option<f64>,
    pub guest_seconds: f64,
    pub error: Option<String>,
}

/// User plus system CPU time of process `pid` so far, from `/proc`.
pub fn process_cpu_ms(pid: u32) -> Option<f64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    cpu_ms_from_stat(&stat, ticks as f64)
}

/// `utime + stime` (fields 14 and 15) of a `/proc/PID/stat` line, in ms.
pub(super) fn cpu_ms_from_stat(stat: &str, ticks_per_second: f64) -> Option<f64> {
    // The command name may hold spaces and parentheses: fields start
    // after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    (ticks_per_second > 0.0).then(|| (utime + stime) * 1000.0 / ticks_per_second)
}

pub(super) fn thread_cpu_ms() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 * 1000.0 + ts.tv_nsec as f64 / 1e6
}

/// The serial console device named on the kernel command line
/// (`console=ttyS0,115200` gives `/dev/ttyS0`), if any.
pub fn serial_console(cmdline: &str) -> Option<PathBuf> {
    cmdline
        .split_whitespace()
        .filter_map(|arg| arg.strip_prefix("console="))
        .map(|value| value.split(',').next().unwrap_or(value))
        .find(|name| {
            name.starts_with("ttyS") || name.starts_with("ttyAMA") || name.starts_with("hvc")
        })
        .map(|name| Path::new("/dev").join(name))
}

/// Without a framebuffer: the status once, then the guest's serial output
/// as it is written, on the host's serial console, until `stop`.
pub fn mirror_serial(
    console: PathBuf,
    status: StatusInfo,
    stop: Arc<AtomicBool>,
) -> JoinHandle<()> {
    thread::spawn(move || {
        let Ok(mut out) = OpenOptions::new().write(true).open(&console) else {
            return;
        };
        let text = status_text(
            &status,
            status.started.elapsed(),
            "no framebuffer: guest serial console follows",
            &[],
        );
        let _ = out.write_all(text.as_bytes());
        let mut offset = 0u64;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let stopping = stop.load(Ordering::Relaxed);
            if let Ok(mut file) = File::open(&status.serial_log)
                && file.seek(SeekFrom::Start(offset)).is_ok()
            {
                while let Ok(n) = file.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    offset += n as u64;
                    let _ = out.write_all(&buf[..n]);
                }
            }
            if stopping {
                return;
            }
            thread::sleep(Duration::from_millis(200));
        }
    })
}
