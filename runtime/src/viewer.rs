//! The guest on the physical machine: its display full-screen on the
//! host's framebuffer, the host's keyboard and mouse fed to it, and the
//! hotkeys. QEMU serves the display with its built-in VNC server on a Unix
//! socket; [`Viewer`] speaks RFB to it ([`crate::rfb`]), scales every
//! update to fit `/dev/fb0` ([`crate::scale`], [`crate::fbdev`]) and turns
//! evdev events ([`crate::evdev`]) into RFB key (raw scancodes) and pointer
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

use crate::evdev::{self, Device, InputEvent, key};
use crate::fbdev::Framebuffer;
use crate::rfb::{self, Event, RELATIVE_CENTRE, Screen};
use crate::scale::Fit;
use serde::Serialize;
use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
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
/// A touchpad's full width moves the pointer this many guest pixels.
const TOUCHPAD_SPAN: i32 = 1200;
const KDSETMODE: libc::c_ulong = 0x4B3A;
const KD_TEXT: libc::c_int = 0;
const KD_GRAPHICS: libc::c_int = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hotkey {
    ToggleStatus,
    CtrlAltDel,
    Screenshot,
    PowerOff,
}

fn hotkey(code: u16) -> Option<Hotkey> {
    match code {
        key::H => Some(Hotkey::ToggleStatus),
        key::END => Some(Hotkey::CtrlAltDel),
        key::S => Some(Hotkey::Screenshot),
        key::P => Some(Hotkey::PowerOff),
        _ => None,
    }
}

/// What init does for the viewer (it owns the QMP connection).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    Screenshot,
    /// `force`: the second request; stop the guest at once.
    PowerOff {
        force: bool,
    },
}

/// What a key press does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyAction {
    /// Send this scancode to the guest.
    Forward {
        qnum: u32,
        down: bool,
    },
    Hotkey(Hotkey),
    Ignore,
}

/// The keyboard's state: held keys, and hotkey keys whose release must not
/// reach the guest either.
#[derive(Debug, Default)]
pub struct Keyboard {
    pressed: BTreeSet<u16>,
    swallowed: BTreeSet<u16>,
}

impl Keyboard {
    /// One `EV_KEY` event (`value`: 0 up, 1 down, 2 auto-repeat).
    pub fn handle(&mut self, code: u16, value: i32) -> KeyAction {
        let held = |codes: [u16; 2]| codes.iter().any(|c| self.pressed.contains(c));
        if value == 1
            && held([key::LEFTCTRL, key::RIGHTCTRL])
            && held([key::LEFTALT, key::RIGHTALT])
            && let Some(h) = hotkey(code)
        {
            self.swallowed.insert(code);
            return KeyAction::Hotkey(h);
        }
        if self.swallowed.contains(&code) {
            if value == 0 {
                self.swallowed.remove(&code);
            }
            return KeyAction::Ignore;
        }
        if value == 0 {
            self.pressed.remove(&code);
        } else {
            self.pressed.insert(code);
        }
        match evdev::qnum(code) {
            Some(qnum) => KeyAction::Forward {
                qnum,
                down: value != 0,
            },
            None => KeyAction::Ignore,
        }
    }

    /// Scancodes of every key held now (to release them in the guest).
    pub fn held_qnums(&self) -> Vec<u32> {
        self.pressed
            .iter()
            .filter_map(|&c| evdev::qnum(c))
            .collect()
    }
}

/// Ctrl-Alt-Del as key events: presses, then releases in reverse.
pub fn ctrl_alt_del() -> Vec<Vec<u8>> {
    let keys = [0x1d, 0x38, 0xd3];
    let mut messages: Vec<Vec<u8>> = keys
        .iter()
        .map(|&q| rfb::ext_key_event(true, 0, q))
        .collect();
    messages.extend(keys.iter().rev().map(|&q| rfb::ext_key_event(false, 0, q)));
    messages
}

/// A touchpad's X and Y ranges (minimum, maximum), when it has them.
pub type TouchSpan = (Option<(i32, i32)>, Option<(i32, i32)>);

/// An absolute pointing device's state: its ranges, whether a finger is
/// down, and where the last position was. A tablet (no touch) moves the
/// pointer whenever its position changes.
#[derive(Debug, Clone, Default)]
pub struct Touch {
    pub span: TouchSpan,
    pub always: bool,
    touching: bool,
    last: (Option<i32>, Option<i32>),
}

impl Touch {
    pub fn new(span: TouchSpan, always: bool) -> Touch {
        Touch {
            span,
            always,
            ..Touch::default()
        }
    }
}

/// Mouse and touchpad motion, collected until `EV_SYN`.
#[derive(Debug, Default)]
pub struct Pointer {
    /// The guest has an absolute pointer (a tablet); else a mouse.
    pub absolute: bool,
    x: i32,
    y: i32,
    buttons: u8,
    dx: i32,
    dy: i32,
    wheel: i32,
    changed: bool,
}

impl Pointer {
    /// One event from a device with touch state `touch`.
    /// Returns the RFB pointer events to send (at `EV_SYN`).
    pub fn handle(
        &mut self,
        event: InputEvent,
        touch: &mut Touch,
        guest: (u16, u16),
    ) -> Vec<Vec<u8>> {
        let scaled = |delta: i32, span: Option<(i32, i32)>| {
            let (min, max) = span.unwrap_or((0, TOUCHPAD_SPAN));
            delta * TOUCHPAD_SPAN / (max - min).max(1)
        };
        match (event.kind, event.code) {
            (evdev::EV_REL, evdev::REL_X) => self.dx += event.value,
            (evdev::EV_REL, evdev::REL_Y) => self.dy += event.value,
            (evdev::EV_REL, evdev::REL_WHEEL) => self.wheel += event.value,
            (evdev::EV_ABS, evdev::ABS_X) => {
                if (touch.touching || touch.always)
                    && let Some(last) = touch.last.0
                {
                    self.dx += scaled(event.value - last, touch.span.0);
                }
                touch.last.0 = Some(event.value);
            }
            (evdev::EV_ABS, evdev::ABS_Y) => {
                if (touch.touching || touch.always)
                    && let Some(last) = touch.last.1
                {
                    self.dy += scaled(event.value - last, touch.span.1);
                }
                touch.last.1 = Some(event.value);
            }
            (evdev::EV_KEY, evdev::BTN_TOUCH) => {
                touch.touching = event.value != 0;
                touch.last = (None, None);
            }
            (evdev::EV_KEY, code @ (evdev::BTN_LEFT | evdev::BTN_RIGHT | evdev::BTN_MIDDLE)) => {
                let bit = match code {
                    evdev::BTN_LEFT => rfb::button::LEFT,
                    evdev::BTN_RIGHT => rfb::button::RIGHT,
                    _ => rfb::button::MIDDLE,
                };
                if event.value != 0 {
                    self.buttons |= bit;
                } else {
                    self.buttons &= !bit;
                }
                self.changed = true;
            }
            (evdev::EV_SYN, 0) => return self.flush(guest),
            _ => {}
        }
        Vec::new()
    }

    fn flush(&mut self, guest: (u16, u16)) -> Vec<Vec<u8>> {
        let moved = self.dx != 0 || self.dy != 0;
        if !moved && !self.changed && self.wheel == 0 {
            return Vec::new();
        }
        let limit = RELATIVE_CENTRE;
        let (x, y) = if self.absolute {
            self.x = (self.x + self.dx).clamp(0, i32::from(guest.0.max(1)) - 1);
            self.y = (self.y + self.dy).clamp(0, i32::from(guest.1.max(1)) - 1);
            (self.x, self.y)
        } else {
            (
                RELATIVE_CENTRE + self.dx.clamp(-limit, limit),
                RELATIVE_CENTRE + self.dy.clamp(-limit, limit),
            )
        };
        let mut messages = vec![rfb::pointer_event(self.buttons, x, y)];
        // Wheel notches: a press and a release each, without motion.
        let (still_x, still_y) = if self.absolute {
            (x, y)
        } else {
            (RELATIVE_CENTRE, RELATIVE_CENTRE)
        };
        let notch = if self.wheel > 0 {
            rfb::button::WHEEL_UP
        } else {
            rfb::button::WHEEL_DOWN
        };
        for _ in 0..self.wheel.unsigned_abs().min(16) {
            messages.push(rfb::pointer_event(self.buttons | notch, still_x, still_y));
            messages.push(rfb::pointer_event(self.buttons, still_x, still_y));
        }
        self.dx = 0;
        self.dy = 0;
        self.wheel = 0;
        self.changed = false;
        messages
    }
}

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
fn sanitize(line: &str) -> String {
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
fn cpu_ms_from_stat(stat: &str, ticks_per_second: f64) -> Option<f64> {
    // The command name may hold spaces and parentheses: fields start
    // after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    (ticks_per_second > 0.0).then(|| (utime + stime) * 1000.0 / ticks_per_second)
}

fn thread_cpu_ms() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 * 1000.0 + ts.tv_nsec as f64 / 1e6
}

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
            stats.error = Some(crate::init::error_chain(&e));
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

/// The framebuffer to show the guest on, when the host has one.
pub fn open_framebuffer() -> Option<Result<Framebuffer, crate::fbdev::FbError>> {
    let path = Path::new("/dev/fb0");
    fs::metadata(path).ok()?;
    Some(Framebuffer::open(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn press(k: &mut Keyboard, code: u16) -> KeyAction {
        k.handle(code, 1)
    }

    #[test]
    fn keys_are_forwarded_as_scancodes() {
        let mut k = Keyboard::default();
        assert_eq!(
            press(&mut k, key::A),
            KeyAction::Forward {
                qnum: 0x1e,
                down: true
            }
        );
        assert_eq!(
            k.handle(key::A, 2),
            KeyAction::Forward {
                qnum: 0x1e,
                down: true
            }
        );
        assert_eq!(
            k.handle(key::A, 0),
            KeyAction::Forward {
                qnum: 0x1e,
                down: false
            }
        );
        assert_eq!(
            press(&mut k, key::S),
            KeyAction::Forward {
                qnum: 0x1f,
                down: true
            }
        );
        assert_eq!(k.held_qnums(), [0x1f]);
        // A key code without a scancode is dropped.
        assert_eq!(k.handle(240, 1), KeyAction::Ignore);
    }

    #[test]
    fn hotkeys_are_swallowed_with_their_release() {
        let mut k = Keyboard::default();
        assert!(matches!(
            press(&mut k, key::LEFTCTRL),
            KeyAction::Forward { qnum: 0x1d, .. }
        ));
        assert!(matches!(
            press(&mut k, key::RIGHTALT),
            KeyAction::Forward { qnum: 0xb8, .. }
        ));
        assert_eq!(
            press(&mut k, key::H),
            KeyAction::Hotkey(Hotkey::ToggleStatus)
        );
        assert_eq!(k.handle(key::H, 2), KeyAction::Ignore);
        assert_eq!(k.handle(key::H, 0), KeyAction::Ignore);
        assert_eq!(
            press(&mut k, key::END),
            KeyAction::Hotkey(Hotkey::CtrlAltDel)
        );
        assert_eq!(press(&mut k, key::S), KeyAction::Hotkey(Hotkey::Screenshot));
        assert_eq!(press(&mut k, key::P), KeyAction::Hotkey(Hotkey::PowerOff));
        // Ctrl-Alt-Del itself goes to the guest.
        assert_eq!(
            press(&mut k, key::DELETE),
            KeyAction::Forward {
                qnum: 0xd3,
                down: true
            }
        );
        k.handle(key::LEFTCTRL, 0);
        // Without Ctrl, H is a letter again.
        assert_eq!(
            press(&mut k, key::H),
            KeyAction::Forward {
                qnum: 0x23,
                down: true
            }
        );
    }

    #[test]
    fn ctrl_alt_del_presses_and_releases() {
        let messages = ctrl_alt_del();
        let decoded: Vec<(u8, u8)> = messages.iter().map(|m| (m[3], m[11])).collect();
        assert_eq!(
            decoded,
            [
                (1, 0x1d),
                (1, 0x38),
                (1, 0xd3),
                (0, 0xd3),
                (0, 0x38),
                (0, 0x1d)
            ]
        );
    }

    fn ev(kind: u16, code: u16, value: i32) -> InputEvent {
        InputEvent { kind, code, value }
    }

    fn decode(m: &[u8]) -> (u8, u16, u16) {
        assert_eq!(m[0], 5);
        (
            m[1],
            u16::from_be_bytes([m[2], m[3]]),
            u16::from_be_bytes([m[4], m[5]]),
        )
    }

    #[test]
    fn relative_mouse_motion_buttons_and_wheel() {
        let mut p = Pointer::default();
        let guest = (640, 480);
        let none = &mut Touch::default();
        assert!(
            p.handle(ev(evdev::EV_REL, evdev::REL_X, 5), none, guest)
                .is_empty()
        );
        p.handle(ev(evdev::EV_REL, evdev::REL_Y, -3), none, guest);
        p.handle(ev(evdev::EV_REL, evdev::REL_X, 2), none, guest);
        let m = p.handle(ev(evdev::EV_SYN, 0, 0), none, guest);
        assert_eq!(
            m.iter().map(|m| decode(m)).collect::<Vec<_>>(),
            [(0, 0x7FFF + 7, 0x7FFF - 3)]
        );
        p.handle(ev(evdev::EV_KEY, evdev::BTN_LEFT, 1), none, guest);
        let m = p.handle(ev(evdev::EV_SYN, 0, 0), none, guest);
        assert_eq!(decode(&m[0]), (rfb::button::LEFT, 0x7FFF, 0x7FFF));
        p.handle(ev(evdev::EV_REL, evdev::REL_WHEEL, -1), none, guest);
        let m = p.handle(ev(evdev::EV_SYN, 0, 0), none, guest);
        let decoded: Vec<_> = m.iter().map(|m| decode(m)).collect();
        assert_eq!(
            decoded,
            [
                (1, 0x7FFF, 0x7FFF),
                (1 | rfb::button::WHEEL_DOWN, 0x7FFF, 0x7FFF),
                (1, 0x7FFF, 0x7FFF)
            ]
        );
        // Nothing changed: nothing sent.
        assert!(p.handle(ev(evdev::EV_SYN, 0, 0), none, guest).is_empty());
    }

    #[test]
    fn absolute_guest_pointer_and_touchpad() {
        let mut p = Pointer {
            absolute: true,
            ..Pointer::default()
        };
        let guest = (640, 480);
        p.handle(
            ev(evdev::EV_REL, evdev::REL_X, 700),
            &mut Touch::default(),
            guest,
        );
        p.handle(
            ev(evdev::EV_REL, evdev::REL_Y, 10),
            &mut Touch::default(),
            guest,
        );
        let m = p.handle(ev(evdev::EV_SYN, 0, 0), &mut Touch::default(), guest);
        assert_eq!(decode(&m[0]), (0, 639, 10), "clamped to the guest's screen");
        // A touchpad 0..2400 wide: half a width moves TOUCHPAD_SPAN / 2.
        let span = &mut Touch::new((Some((0, 2400)), Some((0, 1200))), false);
        let mut t = Pointer::default();
        t.handle(ev(evdev::EV_KEY, evdev::BTN_TOUCH, 1), span, guest);
        t.handle(ev(evdev::EV_ABS, evdev::ABS_X, 1000), span, guest);
        t.handle(ev(evdev::EV_ABS, evdev::ABS_Y, 500), span, guest);
        t.handle(ev(evdev::EV_SYN, 0, 0), span, guest);
        t.handle(ev(evdev::EV_ABS, evdev::ABS_X, 2200), span, guest);
        t.handle(ev(evdev::EV_ABS, evdev::ABS_Y, 400), span, guest);
        let m = t.handle(ev(evdev::EV_SYN, 0, 0), span, guest);
        assert_eq!(decode(&m[0]), (0, 0x7FFF + 600, 0x7FFF - 100));
        // Lifting the finger and touching elsewhere does not jump.
        t.handle(ev(evdev::EV_KEY, evdev::BTN_TOUCH, 0), span, guest);
        t.handle(ev(evdev::EV_KEY, evdev::BTN_TOUCH, 1), span, guest);
        t.handle(ev(evdev::EV_ABS, evdev::ABS_X, 100), span, guest);
        assert!(t.handle(ev(evdev::EV_SYN, 0, 0), span, guest).is_empty());
        // A tablet moves the pointer without a touch.
        let tablet = &mut Touch::new((Some((0, 32767)), Some((0, 32767))), true);
        let mut p = Pointer::default();
        p.handle(ev(evdev::EV_ABS, evdev::ABS_X, 16000), tablet, guest);
        p.handle(ev(evdev::EV_SYN, 0, 0), tablet, guest);
        p.handle(
            ev(evdev::EV_ABS, evdev::ABS_X, 16000 + 32767 / 12),
            tablet,
            guest,
        );
        let m = p.handle(ev(evdev::EV_SYN, 0, 0), tablet, guest);
        assert_eq!(decode(&m[0]), (0, 0x7FFF + 99, 0x7FFF));
    }

    #[test]
    fn status_screen_text() {
        let dir = tempfile::tempdir().unwrap();
        let serial = dir.path().join("serial.log");
        let mut log = String::from("partial first line\n");
        for i in 0..20 {
            log.push_str(&format!("line {i}\x1b[2J\r\n"));
        }
        fs::write(&serial, log).unwrap();
        let lines = tail_lines(&serial, 3);
        assert_eq!(lines, ["line 17 [2J", "line 18 [2J", "line 19 [2J"]);
        let info = StatusInfo {
            session: "bios_20261122T031000Z".into(),
            iso: "/ISOs/bios.iso".into(),
            serial_log: serial,
            started: Instant::now(),
        };
        let long = "x".repeat(200);
        let with_long: Vec<String> = lines.iter().cloned().chain([long]).collect();
        let wrapped = status_text(&info, Duration::ZERO, "", &with_long);
        assert!(
            wrapped.lines().all(|l| l.chars().count() <= 80),
            "{wrapped}"
        );
        let text = status_text(
            &info,
            Duration::from_secs(3723),
            "640x480, pointer relative",
            &lines,
        );
        assert!(
            text.contains("session   bios_20261122T031000Z\r\n"),
            "{text}"
        );
        assert!(text.contains("elapsed   01:02:03"), "{text}");
        assert!(text.contains("Ctrl+Alt+S    screenshot"));
        assert!(
            text.lines().all(|l| l.chars().count() <= 80),
            "fits 80 columns"
        );
        assert!(text.ends_with("  line 19 [2J\r\n"), "{text}");
        assert!(!text.contains('\x1b'));
        assert!(tail_lines(Path::new("/nonexistent"), 3).is_empty());
    }

    #[test]
    fn cpu_time_from_proc_stat() {
        let stat = "4242 (qemu-system-x86) (x)) S 1 4242 4242 0 -1 4194560 5000 0 0 0 250 50 0 0 20 0 3 0 100";
        assert_eq!(cpu_ms_from_stat(stat, 100.0), Some(3000.0));
        assert_eq!(cpu_ms_from_stat("garbage", 100.0), None);
        let own = process_cpu_ms(std::process::id()).unwrap();
        assert!(own >= 0.0);
    }

    #[test]
    fn serial_mirror_copies_the_guest_output() {
        let dir = tempfile::tempdir().unwrap();
        let serial = dir.path().join("serial.log");
        let console = dir.path().join("console");
        fs::write(&serial, "SeaBIOS\r\n").unwrap();
        fs::write(&console, "").unwrap();
        let status = StatusInfo {
            session: "s1".into(),
            iso: "/ISOs/a.iso".into(),
            serial_log: serial.clone(),
            started: Instant::now(),
        };
        let stop = Arc::new(AtomicBool::new(false));
        let mirror = mirror_serial(console.clone(), status, stop.clone());
        thread::sleep(Duration::from_millis(300));
        let mut log = OpenOptions::new().append(true).open(&serial).unwrap();
        log.write_all(b"Booting from DVD/CD...\r\n").unwrap();
        thread::sleep(Duration::from_millis(300));
        stop.store(true, Ordering::Relaxed);
        mirror.join().unwrap();
        let out = fs::read_to_string(&console).unwrap();
        assert!(out.starts_with("hiperiso - host console"), "{out}");
        assert!(out.contains("session   s1"), "{out}");
        assert!(
            out.ends_with("SeaBIOS\r\nBooting from DVD/CD...\r\n"),
            "{out:?}"
        );
    }

    #[test]
    fn serial_console_from_the_command_line() {
        assert_eq!(
            serial_console("quiet console=ttyS0,115200 console=tty0"),
            Some(PathBuf::from("/dev/ttyS0"))
        );
        assert_eq!(serial_console("console=tty0"), None);
    }
}
