//! Wiring the guest's display to the host: the viewer on the framebuffer
//! (with its hotkeys, whose requests init serves over QMP), or else the
//! guest's serial console mirrored on the host's, and `display.json` at the
//! end.

use super::recording::Recording;
use crate::display::fbdev::Framebuffer;
use crate::display::viewer::{self, Request, StatusInfo, Viewer};
use hiperiso_stick::error_chain;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::thread::JoinHandle;
use std::time::Instant;

/// The viewer's measurements, in the session directory.
const DISPLAY_JSON: &str = "display.json";

/// The framebuffer to show the guest on, when `wanted` (`hiperiso.display`)
/// and the host has one; a framebuffer that cannot be opened is a warning.
pub fn open_framebuffer(rec: &mut Recording, wanted: bool) -> Option<Framebuffer> {
    match wanted.then(viewer::open_framebuffer).flatten()? {
        Ok(fb) => Some(fb),
        Err(e) => {
            rec.warn(format!(
                "{}; the guest's display is not shown",
                error_chain(&e)
            ));
            None
        }
    }
}

/// What shows the guest while QEMU runs.
pub struct GuestDisplay {
    viewer: Option<Viewer>,
    mirror: Option<JoinHandle<()>>,
    mirror_stop: Arc<AtomicBool>,
    /// Screenshots and power-off asked for with the hotkeys.
    requests: Receiver<Request>,
    qemu_cpu_ms: Option<f64>,
}

impl GuestDisplay {
    /// The viewer on `framebuffer` (QEMU's VNC server on `vnc_socket`), or
    /// without one the serial mirror on the kernel's serial console.
    pub fn start(
        rec: &mut Recording,
        framebuffer: Option<Framebuffer>,
        vnc_socket: PathBuf,
        cmdline_text: &str,
        status: StatusInfo,
    ) -> GuestDisplay {
        let (sender, requests) = mpsc::channel();
        let mut display = GuestDisplay {
            viewer: None,
            mirror: None,
            mirror_stop: Arc::new(AtomicBool::new(false)),
            requests,
            qemu_cpu_ms: None,
        };
        if let Some(fb) = framebuffer {
            rec.say(&format!(
                "showing the guest on {} ({}x{}); {}",
                fb.path.display(),
                fb.layout.width,
                fb.layout.height,
                viewer::HOTKEYS_HELP
            ));
            display.viewer = Some(Viewer::start(
                fb,
                vnc_socket,
                PathBuf::from("/dev/input"),
                status,
                sender,
            ));
        } else if let Some(console) = viewer::serial_console(cmdline_text) {
            rec.say(&format!(
                "no framebuffer: mirroring the guest's serial console on {}",
                console.display()
            ));
            display.mirror = Some(viewer::mirror_serial(
                console,
                status,
                display.mirror_stop.clone(),
            ));
        }
        display
    }

    /// QEMU's CPU time so far, for `display.json` (with the viewer only).
    pub fn sample_qemu_cpu(&mut self, pid: u32) {
        if self.viewer.is_some() {
            self.qemu_cpu_ms = viewer::process_cpu_ms(pid).or(self.qemu_cpu_ms);
        }
    }

    /// The hotkeys' requests since the last call.
    pub fn requests(&self) -> Vec<Request> {
        self.requests.try_iter().collect()
    }

    /// Stop the viewer (writing `display.json`) or the mirror.
    pub fn stop(self, rec: &mut Recording, started: Instant) {
        if let Some(viewer) = self.viewer {
            let mut stats = viewer.stop();
            stats.qemu_cpu_ms = self.qemu_cpu_ms;
            stats.guest_seconds = started.elapsed().as_secs_f64();
            if let Some(error) = &stats.error {
                rec.warn(format!("guest display: {error}"));
            }
            rec.write_json(DISPLAY_JSON, &stats);
        }
        self.mirror_stop.store(true, Ordering::Relaxed);
        if let Some(mirror) = self.mirror {
            let _ = mirror.join();
        }
    }
}
