//! The guest on the physical machine: its display full-screen on the
//! host's framebuffer, the host's keyboard and mouse fed to it, and the
//! hotkeys. QEMU serves the display with its built-in VNC server on a Unix
//! socket; [`Viewer`] speaks RFB to it ([`crate::display::rfb`]), scales every
//! update to fit `/dev/fb0` ([`crate::display::scale`], [`crate::display::fbdev`]) and turns
//! evdev events ([`crate::display::evdev`]) into RFB key (raw scancodes) and pointer
//! events.
//!
//! Two threads: the display thread reads the socket and draws; the input
//! thread polls the input devices, writes events to the socket and runs
//! the hotkeys. Screenshots and power-off need QMP, which init owns: they
//! are sent to it as [`Request`]s.
//!
//! Hotkeys (Ctrl+Alt+key; the key never reaches the guest):
//! - `H`: the host console's status screen (session, elapsed time, last
//!   serial lines), and back; `Esc` also goes back;
//! - `End`: send Ctrl-Alt-Del to the guest (Ctrl-Alt-Del itself also
//!   reaches the guest, since the keyboard is grabbed);
//! - `S`: a screenshot into the session's `screenshots/`;
//! - `P`: power the guest off cleanly (ACPI power button); a second `P`
//!   stops it at once.

use crate::display::evdev::{self, Device, key};
use crate::display::fbdev::Framebuffer;
use crate::display::rfb::{self, Event, Screen};
use crate::display::scale::Fit;
use std::collections::BTreeSet;
use std::fs::{self, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// One line of help, shown on the status screen.
pub const HOTKEYS_HELP: &str = "Ctrl+Alt+H status/guest   Ctrl+Alt+End Ctrl-Alt-Del   Ctrl+Alt+S screenshot   Ctrl+Alt+P power off";
/// How long the display thread waits for QEMU's VNC socket.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Input devices plugged in later are found this often.
const RESCAN_INTERVAL: Duration = Duration::from_secs(2);
const STATUS_REFRESH: Duration = Duration::from_secs(1);
/// Serial lines on the status screen.
const STATUS_SERIAL_LINES: usize = 14;
const KDSETMODE: libc::c_ulong = 0x4B3A;
const KD_TEXT: libc::c_int = 0;
const KD_GRAPHICS: libc::c_int = 1;

mod input;
mod status;
#[cfg(test)]
mod tests;

pub use input::*;
pub use status::*;

/// State both threads see.
struct Shared {
    stop: AtomicBool,
    status_shown: AtomicBool,
    repaint: AtomicBool,
    absolute: AtomicBool,
    /// Guest width << 16 | height.
    guest_size: AtomicU32,
    writer: Mutex<Option<UnixStream>>,
}

impl Shared {
    fn send(&self, message: &[u8]) {
        let mut writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(stream) = writer.as_mut()
            && stream.write_all(message).is_err()
        {
            *writer = None;
        }
    }

    fn guest_size(&self) -> (u16, u16) {
        let packed = self.guest_size.load(Ordering::Relaxed);
        ((packed >> 16) as u16, packed as u16)
    }
}

/// Switch the active virtual terminal between text (the kernel draws the
/// console) and graphics (it leaves the framebuffer to us).
fn set_console_mode(graphics: bool) -> io::Result<()> {
    let tty = OpenOptions::new().write(true).open("/dev/tty0")?;
    let mode = if graphics { KD_GRAPHICS } else { KD_TEXT };
    // SAFETY: KDSETMODE takes an int by value.
    if unsafe { libc::ioctl(tty.as_raw_fd(), KDSETMODE, mode) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn write_console(text: &str) {
    if let Ok(mut tty) = OpenOptions::new().write(true).open("/dev/tty0") {
        let _ = tty.write_all(text.as_bytes());
    }
}

/// A running viewer.
pub struct Viewer {
    shared: Arc<Shared>,
    display: JoinHandle<Stats>,
    input: JoinHandle<InputStats>,
}

#[derive(Debug, Default)]
struct InputStats {
    cpu_ms: f64,
    keys: u64,
    pointer_events: u64,
    hotkeys: u64,
    devices: Vec<String>,
}

impl Viewer {
    /// Start showing QEMU's VNC display at `socket` on `framebuffer`,
    /// reading input devices from `input_dir` (`/dev/input`).
    pub fn start(
        framebuffer: Framebuffer,
        socket: PathBuf,
        input_dir: PathBuf,
        status: StatusInfo,
        requests: Sender<Request>,
    ) -> Viewer {
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            status_shown: AtomicBool::new(false),
            repaint: AtomicBool::new(false),
            absolute: AtomicBool::new(false),
            guest_size: AtomicU32::new(0),
            writer: Mutex::new(None),
        });
        let _ = set_console_mode(true);
        let display = {
            let shared = shared.clone();
            thread::spawn(move || display_thread(&shared, framebuffer, &socket))
        };
        let input = {
            let shared = shared.clone();
            thread::spawn(move || input_thread(&shared, &input_dir, &status, &requests))
        };
        Viewer {
            shared,
            display,
            input,
        }
    }

    /// Stop both threads (QEMU has exited or is exiting) and give the
    /// console back to the kernel.
    pub fn stop(self) -> Stats {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(stream) = self
            .shared
            .writer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
        let input = self.input.join().unwrap_or_default();
        let mut stats = self.display.join().unwrap_or_else(|_| Stats {
            error: Some("the display thread panicked".into()),
            ..Stats::default()
        });
        let _ = set_console_mode(false);
        stats.input_cpu_ms = input.cpu_ms;
        stats.keys = input.keys;
        stats.pointer_events = input.pointer_events;
        stats.hotkeys = input.hotkeys;
        stats.input_devices = input.devices;
        stats
    }
}

fn connect(socket: &Path, shared: &Shared) -> io::Result<UnixStream> {
    let deadline = Instant::now() + CONNECT_TIMEOUT;
    loop {
        match UnixStream::connect(socket) {
            Ok(stream) => return Ok(stream),
            Err(e) if Instant::now() > deadline || shared.stop.load(Ordering::Relaxed) => {
                return Err(e);
            }
            Err(_) => thread::sleep(Duration::from_millis(100)),
        }
    }
}

fn display_thread(shared: &Shared, mut framebuffer: Framebuffer, socket: &Path) -> Stats {
    let layout = framebuffer.layout;
    let mut stats = Stats {
        framebuffer: framebuffer.path.display().to_string(),
        host_width: layout.width,
        host_height: layout.height,
        ..Stats::default()
    };
    if let Err(e) = show_display(shared, &mut framebuffer, socket, &mut stats) {
        // QEMU quitting closes the socket: not an error.
        let quitting = shared.stop.load(Ordering::Relaxed)
            || matches!(&e, rfb::RfbError::Io(io) if io.kind() == io::ErrorKind::UnexpectedEof);
        if !quitting {
            stats.error = Some(hiperiso_stick::error_chain(&e));
        }
    }
    stats.display_cpu_ms = thread_cpu_ms();
    // Nothing is shown any more: the kernel's console comes back, and the
    // input thread stops (giving the keyboard back to the host).
    let _ = set_console_mode(false);
    shared.stop.store(true, Ordering::Relaxed);
    stats
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[index]
}

fn show_display(
    shared: &Shared,
    framebuffer: &mut Framebuffer,
    socket: &Path,
    stats: &mut Stats,
) -> Result<(), rfb::RfbError> {
    let mut stream = connect(socket, shared)?;
    let init = rfb::handshake(&mut stream)?;
    let mut screen = Screen::new(init.width, init.height)?;
    let layout = framebuffer.layout;
    let mut fit = Fit::new(
        init.width.into(),
        init.height.into(),
        layout.width,
        layout.height,
    );
    shared.guest_size.store(
        u32::from(init.width) << 16 | u32::from(init.height),
        Ordering::Relaxed,
    );
    *shared.writer.lock().unwrap_or_else(|e| e.into_inner()) = Some(stream.try_clone()?);
    shared.send(&rfb::update_request(false, init.width, init.height));
    framebuffer
        .canvas()
        .fill(0, 0, layout.width, layout.height, 0);
    let mut reader = BufReader::with_capacity(1 << 20, stream);
    let mut events = Vec::new();
    let mut latencies = Vec::new();
    let mut draw_total = 0.0;
    let mut first_update: Option<Instant> = None;
    let mut last_update = Instant::now();
    let result = loop {
        // Wait for the next message's first byte, then time the rest.
        match reader.fill_buf() {
            Ok([]) => break Ok(()),
            Ok(_) => {}
            Err(e) => break Err(e.into()),
        }
        let arrived = Instant::now();
        if let Err(e) = rfb::read_server_message(&mut reader, &mut screen, &mut events) {
            break Err(e);
        }
        let showing = !shared.status_shown.load(Ordering::Relaxed);
        let drawing = Instant::now();
        if showing && shared.repaint.swap(false, Ordering::Relaxed) {
            let mut canvas = framebuffer.canvas();
            canvas.fill(0, 0, layout.width, layout.height, 0);
            canvas.draw_scaled(
                &screen.pixels,
                &fit,
                0,
                0,
                screen.width.into(),
                screen.height.into(),
            );
        }
        for event in events.drain(..) {
            match event {
                Event::Damage(r) => {
                    stats.pixels += u64::from(r.w) * u64::from(r.h);
                    if showing {
                        framebuffer.canvas().draw_scaled(
                            &screen.pixels,
                            &fit,
                            r.x.into(),
                            r.y.into(),
                            r.w.into(),
                            r.h.into(),
                        );
                    }
                }
                Event::Resize { width, height } => {
                    stats.resizes += 1;
                    fit = Fit::new(width.into(), height.into(), layout.width, layout.height);
                    shared.guest_size.store(
                        u32::from(width) << 16 | u32::from(height),
                        Ordering::Relaxed,
                    );
                    if showing {
                        framebuffer
                            .canvas()
                            .fill(0, 0, layout.width, layout.height, 0);
                    }
                    // QEMU marks the new screen dirty but may wait for the
                    // guest's next change to send it: ask for all of it.
                    shared.send(&rfb::update_request(false, width, height));
                }
                Event::PointerMode { absolute } => {
                    shared.absolute.store(absolute, Ordering::Relaxed)
                }
                Event::UpdateDone => {
                    let now = Instant::now();
                    stats.updates += 1;
                    draw_total += now.duration_since(drawing).as_secs_f64() * 1000.0;
                    latencies.push(now.duration_since(arrived).as_secs_f64() * 1000.0);
                    first_update.get_or_insert(arrived);
                    last_update = now;
                    shared.send(&rfb::update_request(true, screen.width, screen.height));
                }
                Event::ExtKeyEvents | Event::Leds(_) | Event::Bell => {}
            }
        }
    };
    stats.guest_width = screen.width;
    stats.guest_height = screen.height;
    if !latencies.is_empty() {
        stats.latency_ms_mean = latencies.iter().sum::<f64>() / latencies.len() as f64;
        stats.draw_ms_mean = draw_total / latencies.len() as f64;
        latencies.sort_by(f64::total_cmp);
        stats.latency_ms_p95 = percentile(&latencies, 0.95);
        stats.latency_ms_max = latencies[latencies.len() - 1];
    }
    if let Some(first) = first_update {
        let span = last_update.duration_since(first).as_secs_f64();
        if span > 0.0 {
            stats.updates_per_second = (stats.updates.saturating_sub(1)) as f64 / span;
        }
    }
    result
}

/// An input device and what is known about it.
struct Input {
    device: Device,
    touch: Touch,
}

/// Open and grab the new keyboards, mice and touchpads under `dir`.
fn rescan(
    dir: &Path,
    inputs: &mut Vec<Input>,
    skipped: &mut BTreeSet<PathBuf>,
    stats: &mut InputStats,
) {
    for node in evdev::event_nodes(dir) {
        if skipped.contains(&node) || inputs.iter().any(|i| i.device.path == node) {
            continue;
        }
        let Ok(device) = Device::open(&node) else {
            skipped.insert(node);
            continue;
        };
        if !device.caps.any() || device.grab(true).is_err() {
            skipped.insert(node);
            continue;
        }
        let span = (
            device.abs_range(evdev::ABS_X),
            device.abs_range(evdev::ABS_Y),
        );
        let touch = Touch::new(span, device.caps.tablet);
        stats
            .devices
            .push(format!("{} {:?}", node.display(), device.caps));
        inputs.push(Input { device, touch });
    }
}

fn guest_description(shared: &Shared) -> String {
    let (w, h) = shared.guest_size();
    let pointer = if shared.absolute.load(Ordering::Relaxed) {
        "absolute"
    } else {
        "relative"
    };
    format!("{w}x{h}, pointer {pointer}")
}

fn show_status(shared: &Shared, status: &StatusInfo) {
    let serial = tail_lines(&status.serial_log, STATUS_SERIAL_LINES);
    let text = status_text(
        status,
        status.started.elapsed(),
        &guest_description(shared),
        &serial,
    );
    write_console(&format!("\x1b[?25l\x1b[H\x1b[2J{text}"));
}

fn input_thread(
    shared: &Shared,
    dir: &Path,
    status: &StatusInfo,
    requests: &Sender<Request>,
) -> InputStats {
    let mut stats = InputStats::default();
    let mut inputs: Vec<Input> = Vec::new();
    let mut skipped = BTreeSet::new();
    let mut keyboard = Keyboard::default();
    let mut pointer = Pointer::default();
    let mut next_scan = Instant::now();
    let mut next_status = Instant::now();
    let mut power_requested = false;
    while !shared.stop.load(Ordering::Relaxed) {
        if Instant::now() >= next_scan {
            rescan(dir, &mut inputs, &mut skipped, &mut stats);
            next_scan = Instant::now() + RESCAN_INTERVAL;
        }
        let showing_status = shared.status_shown.load(Ordering::Relaxed);
        if showing_status && Instant::now() >= next_status {
            show_status(shared, status);
            next_status = Instant::now() + STATUS_REFRESH;
        }
        let mut fds: Vec<libc::pollfd> = inputs
            .iter()
            .map(|i| libc::pollfd {
                fd: i.device.fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        // SAFETY: `fds` is a valid array of pollfd.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 200) };
        if ready <= 0 {
            continue;
        }
        let mut gone = Vec::new();
        for (index, fd) in fds.iter().enumerate() {
            if fd.revents == 0 {
                continue;
            }
            let input = &mut inputs[index];
            let events = match input.device.read_events() {
                Ok(events) => events,
                Err(_) => {
                    gone.push(index);
                    continue;
                }
            };
            for event in events {
                let is_pointer = event.kind == evdev::EV_REL
                    || event.kind == evdev::EV_ABS
                    || (event.kind == evdev::EV_KEY
                        && event.code >= evdev::BTN_LEFT
                        && event.code < 0x160)
                    || event.kind == evdev::EV_SYN;
                if event.kind == evdev::EV_KEY && !is_pointer {
                    match keyboard.handle(event.code, event.value) {
                        KeyAction::Forward { qnum, down } => {
                            if !shared.status_shown.load(Ordering::Relaxed) {
                                stats.keys += 1;
                                shared.send(&rfb::ext_key_event(down, 0, qnum));
                            } else if down && event.code == key::ESC {
                                leave_status(shared);
                            }
                        }
                        KeyAction::Hotkey(h) => {
                            stats.hotkeys += 1;
                            match h {
                                Hotkey::ToggleStatus => {
                                    if shared.status_shown.load(Ordering::Relaxed) {
                                        leave_status(shared);
                                    } else {
                                        enter_status(shared, &keyboard);
                                        next_status = Instant::now();
                                    }
                                }
                                Hotkey::CtrlAltDel => {
                                    for message in ctrl_alt_del() {
                                        shared.send(&message);
                                    }
                                }
                                Hotkey::Screenshot => {
                                    let _ = requests.send(Request::Screenshot);
                                }
                                Hotkey::PowerOff => {
                                    let _ = requests.send(Request::PowerOff {
                                        force: power_requested,
                                    });
                                    power_requested = true;
                                }
                            }
                        }
                        KeyAction::Ignore => {}
                    }
                } else if is_pointer {
                    pointer.absolute = shared.absolute.load(Ordering::Relaxed);
                    let messages = pointer.handle(event, &mut input.touch, shared.guest_size());
                    if !shared.status_shown.load(Ordering::Relaxed) {
                        for message in messages {
                            stats.pointer_events += 1;
                            shared.send(&message);
                        }
                    }
                }
            }
        }
        for index in gone.into_iter().rev() {
            inputs.remove(index);
        }
    }
    for qnum in keyboard.held_qnums() {
        shared.send(&rfb::ext_key_event(false, 0, qnum));
    }
    for input in &inputs {
        let _ = input.device.grab(false);
    }
    stats.cpu_ms = thread_cpu_ms();
    stats
}

/// To the status screen: the guest sees every held key released.
fn enter_status(shared: &Shared, keyboard: &Keyboard) {
    for qnum in keyboard.held_qnums() {
        shared.send(&rfb::ext_key_event(false, 0, qnum));
    }
    shared.status_shown.store(true, Ordering::Relaxed);
    let _ = set_console_mode(false);
}

/// Back to the guest: graphics mode, then a full redraw.
fn leave_status(shared: &Shared) {
    write_console("\x1b[H\x1b[2J");
    let _ = set_console_mode(true);
    shared.repaint.store(true, Ordering::Relaxed);
    shared.status_shown.store(false, Ordering::Relaxed);
    let (w, h) = shared.guest_size();
    shared.send(&rfb::update_request(false, w, h));
}

/// The framebuffer to show the guest on, when the host has one.
pub fn open_framebuffer() -> Option<Result<Framebuffer, crate::display::fbdev::FbError>> {
    let path = Path::new("/dev/fb0");
    fs::metadata(path).ok()?;
    Some(Framebuffer::open(path))
}
