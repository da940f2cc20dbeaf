//! Messages from PID 1 on the host's consoles.

use std::fs;
use std::io::Write;

/// Print a message on every console: the kernel's console and, when it is
/// a different device, the first serial port.
pub fn say(message: &str) {
    let line = format!("hiperiso: {message}\n");
    let _ = std::io::stderr().write_all(line.as_bytes());
    if let Ok(mut kmsg) = fs::OpenOptions::new().write(true).open("/dev/kmsg") {
        let _ = kmsg.write_all(format!("<5>hiperiso: {message}\n").as_bytes());
    }
}
