//! The guest's display, keyboard and mouse on the host (issue 10).
//!
//! - `viewer_speaks_rfb_with_qemu`: the host's QEMU runs the display test
//!   guest with the same command line the stick uses (`QemuPlan` with a
//!   VNC socket); the viewer's RFB client reads its screen (text mode, then
//!   a resize to VGA mode 13h), scales it onto a framebuffer-like canvas,
//!   and types keys the guest echoes on its serial port.
//!   `HIPERISO_TEST_INNER_QEMU=/path/to/qemu` runs it against another QEMU
//!   (e.g. a wrapper around the debian profile's QEMU 7.2, which passes).

use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hiperiso_runtime::cmdline::TraceLevel;
use hiperiso_runtime::display::fbdev::{Canvas, Channel, Layout};
use hiperiso_runtime::display::rfb::{self, Event, Screen};
use hiperiso_runtime::display::scale::Fit;
use hiperiso_runtime::qemu::{Accel, FirmwareFiles, QemuPlan};
use hiperiso_tests::isos::{self, DISPLAY_DRAWN, DISPLAY_QUADRANTS};
use hiperiso_tests::keyboard;

pub(crate) struct Killed(pub(crate) Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits for `ready`; on a timeout, panics with what QEMU said (`stderr`).
fn wait_for(what: &str, timeout: Duration, stderr: &Path, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !ready() {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; QEMU's stderr: {}",
            lossy(stderr)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A file's text so far ("" before it exists).
pub(crate) fn lossy(path: &Path) -> String {
    String::from_utf8_lossy(&fs::read(path).unwrap_or_default()).into_owned()
}

fn serial(dir: &Path) -> String {
    lossy(&dir.join("serial.log"))
}

/// The guest's four quadrants, sampled at their centres.
fn quadrants(screen: &Screen) -> [u32; 4] {
    let (w, h) = (usize::from(screen.width), usize::from(screen.height));
    let at = |x: usize, y: usize| screen.pixels[y * w + x];
    [
        at(w / 4, h / 4),
        at(3 * w / 4, h / 4),
        at(w / 4, 3 * h / 4),
        at(3 * w / 4, 3 * h / 4),
    ]
}

#[test]
fn viewer_speaks_rfb_with_qemu() {
    let dir = tempfile::tempdir().unwrap();
    let iso = isos::display_iso(dir.path(), "display", "DISPLAY-HOST").unwrap();
    let vnc = dir.path().join("vnc.sock");
    let plan = QemuPlan {
        binary: PathBuf::from(
            std::env::var("HIPERISO_TEST_INNER_QEMU")
                .unwrap_or_else(|_| "qemu-system-x86_64".into()),
        ),
        accel: Accel::Tcg,
        ram_mb: 64,
        cpus: 1,
        cpu_features: None,
        firmware: FirmwareFiles::Bios { image: None },
        iso,
        session_dir: dir.path().to_path_buf(),
        monitor_socket: dir.path().join("monitor.sock"),
        net: false,
        net_dump: false,
        nic_rom: true,
        tpm_socket: None,
        trace_level: TraceLevel::None,
        trace_events: None,
        firmware_log: false,
        vnc_socket: Some(vnc.clone()),
    };
    let argv = plan.argv();
    // Paused (`-S`) until the viewer is connected, so the guest's switch to
    // mode 13h always comes after the handshake, as a resize.
    let mut qemu = Killed(
        Command::new(&argv[0])
            .arg("-S")
            .args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(dir.path().join("qemu.stderr")).unwrap())
            .spawn()
            .expect("qemu-system-x86_64"),
    );
    let stderr = dir.path().join("qemu.stderr");
    wait_for(
        "QEMU's VNC socket",
        Duration::from_secs(20),
        &stderr,
        || vnc.exists(),
    );
    let mut stream = UnixStream::connect(&vnc).unwrap();
    let init = rfb::handshake(&mut stream).unwrap();
    assert!(init.name.contains("hiperiso-guest"), "{}", init.name);
    assert_ne!((init.width, init.height), (640, 400), "the guest is paused");
    let mut qmp = keyboard::connect_qmp(&mut qemu.0, &dir.path().join("monitor.sock"));
    qmp.execute("cont", None).unwrap();
    let mut writer = stream.try_clone().unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let mut reader = BufReader::new(stream);
    let mut screen = Screen::new(init.width, init.height).unwrap();
    let mut events = Vec::new();
    let mut seen = Vec::new();
    use std::io::Write;
    writer
        .write_all(&rfb::update_request(false, init.width, init.height))
        .unwrap();
    // Seconds when the host is idle; generous for a host busy building.
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let drawn = serial(dir.path()).contains(DISPLAY_DRAWN);
        if drawn
            && (screen.width, screen.height) == (640, 400)
            && quadrants(&screen) == DISPLAY_QUADRANTS
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the guest's picture never arrived: {}x{} {:06x?}, events {seen:?}, serial {:?}, qemu: {}",
            screen.width,
            screen.height,
            quadrants(&screen),
            serial(dir.path()),
            lossy(&stderr)
        );
        // A timeout here falls between messages, never inside one.
        if reader.fill_buf().is_err() {
            continue;
        }
        rfb::read_server_message(&mut reader, &mut screen, &mut events).unwrap();
        for event in events.drain(..) {
            if event == Event::UpdateDone {
                writer
                    .write_all(&rfb::update_request(true, screen.width, screen.height))
                    .unwrap();
            } else if let Event::Resize { width, height } = event {
                // As the viewer does: the whole new screen, at once.
                writer
                    .write_all(&rfb::update_request(false, width, height))
                    .unwrap();
                seen.push(event);
            } else if !matches!(event, Event::Damage(_)) {
                seen.push(event);
            }
        }
    }
    assert!(seen.contains(&Event::ExtKeyEvents), "{seen:?}");
    assert!(
        seen.contains(&Event::PointerMode { absolute: false }),
        "PS/2 mouse: {seen:?}"
    );
    assert!(
        seen.contains(&Event::Resize {
            width: 640,
            height: 400
        }),
        "mode 13h (320x200, shown doubled) resizes the screen: {seen:?}"
    );

    // Scaled onto a 1024x768 XRGB8888 framebuffer: 640x400 becomes
    // 1024x640, centred with 64 black rows above and below.
    let layout = Layout {
        width: 1024,
        height: 768,
        stride: 4096,
        bytes_per_pixel: 4,
        red: Channel {
            offset: 16,
            length: 8,
        },
        green: Channel {
            offset: 8,
            length: 8,
        },
        blue: Channel {
            offset: 0,
            length: 8,
        },
        start: 0,
    };
    let mut memory = vec![0u8; 4096 * 768];
    let mut canvas = Canvas::new(layout, &mut memory);
    let fit = Fit::new(640, 400, 1024, 768);
    canvas.draw_scaled(&screen.pixels, &fit, 0, 0, 640, 400);
    assert_eq!((fit.x, fit.y, fit.width, fit.height), (0, 64, 1024, 640));
    assert_eq!(canvas.get(10, 63), 0);
    assert_eq!(canvas.get(10, 64), DISPLAY_QUADRANTS[0]);
    assert_eq!(canvas.get(511, 383), DISPLAY_QUADRANTS[0]);
    assert_eq!(canvas.get(512, 383), DISPLAY_QUADRANTS[1]);
    assert_eq!(canvas.get(511, 384), DISPLAY_QUADRANTS[2]);
    assert_eq!(canvas.get(1023, 703), DISPLAY_QUADRANTS[3]);
    assert_eq!(canvas.get(1023, 704), 0);

    // Keys as raw scancodes: h, i, Shift+1 ('!'); the guest echoes them.
    let before = serial(dir.path()).len();
    for (qnum, shifted) in [(0x23, false), (0x17, false), (0x02, true)] {
        if shifted {
            writer
                .write_all(&rfb::ext_key_event(true, 0, 0x2a))
                .unwrap();
        }
        writer
            .write_all(&rfb::ext_key_event(true, 0, qnum))
            .unwrap();
        writer
            .write_all(&rfb::ext_key_event(false, 0, qnum))
            .unwrap();
        if shifted {
            writer
                .write_all(&rfb::ext_key_event(false, 0, 0x2a))
                .unwrap();
        }
    }
    wait_for("the guest's echo", Duration::from_secs(20), &stderr, || {
        serial(dir.path())[before..].contains("hi!")
    });
}

// ---------------------------------------------------------------------
// The stick in the outer test VM.

use hiperiso_build::vm::{self as stick_run, Accel as OuterAccel, Console, StickImage, Vm};
use hiperiso_runtime::qmp::Qmp;
use hiperiso_tests::stick;
use serde_json::json;

const DISPLAY_MARKER: &str = "DISPLAY-E2E";
pub(crate) const BOOT_TIMEOUT: Duration = Duration::from_secs(600);
const CONFIG: &str = r#"{
  "control": {"default_ram": 256, "screenshot_interval": 0, "session_timeout": 400}
}"#;

/// The outer VM's screen, from a QMP `screendump` (PPM).
struct Shot {
    width: usize,
    height: usize,
    rgb: Vec<u8>,
}

impl Shot {
    fn take(qmp: &mut Qmp, path: &Path) -> Shot {
        let _ = fs::remove_file(path);
        qmp.execute(
            "screendump",
            Some(json!({ "filename": path.display().to_string() })),
        )
        .expect("screendump of the outer VM");
        let bytes = fs::read(path).unwrap();
        // P6 <width> <height> 255, then RGB.
        let mut fields = Vec::new();
        let mut at = 0;
        while fields.len() < 4 {
            while bytes[at].is_ascii_whitespace() {
                at += 1;
            }
            let start = at;
            while !bytes[at].is_ascii_whitespace() {
                at += 1;
            }
            fields.push(String::from_utf8_lossy(&bytes[start..at]).into_owned());
        }
        assert_eq!(fields[0], "P6");
        let (width, height) = (fields[1].parse().unwrap(), fields[2].parse().unwrap());
        Shot {
            width,
            height,
            rgb: bytes[at + 1..].to_vec(),
        }
    }

    fn at(&self, x: usize, y: usize) -> u32 {
        let i = (y * self.width + x) * 3;
        u32::from_be_bytes([0, self.rgb[i], self.rgb[i + 1], self.rgb[i + 2]])
    }

    /// Where a 16:10 picture fitted to this screen lies: (x, y, w, h),
    /// computed independently of `scale.rs`.
    fn expected_picture(&self) -> (usize, usize, usize, usize) {
        let (w, h) = if self.width * 10 <= self.height * 16 {
            (self.width, self.width * 10 / 16)
        } else {
            (self.height * 16 / 10, self.height)
        };
        ((self.width - w) / 2, (self.height - h) / 2, w, h)
    }

    /// The guest's quadrants at the centres of the expected picture's quarters.
    fn quadrants(&self) -> [u32; 4] {
        let (x, y, w, h) = self.expected_picture();
        [
            self.at(x + w / 4, y + h / 4),
            self.at(x + 3 * w / 4, y + h / 4),
            self.at(x + w / 4, y + 3 * h / 4),
            self.at(x + 3 * w / 4, y + 3 * h / 4),
        ]
    }
}

fn send_keys(qmp: &mut Qmp, keys: &[&str]) {
    let keys: Vec<_> = keys
        .iter()
        .map(|k| json!({"type": "qcode", "data": k}))
        .collect();
    qmp.execute("send-key", Some(json!({ "keys": keys })))
        .expect("send-key to the outer VM");
    std::thread::sleep(Duration::from_millis(300));
}

/// A stick image with `iso` and `config`, set to boot it.
pub(crate) fn stick_booting(dir: &Path, iso: &Path, config: &str) -> PathBuf {
    let (image, _) = stick::build_image(dir).expect("building the stick image");
    let mut stick = StickImage::open(&image).unwrap();
    let name = stick.add_iso(iso).unwrap();
    stick
        .put_bytes("hiperiso/hiperiso.json", config.as_bytes(), 0)
        .unwrap();
    stick.boot_once(&name).unwrap();
    image
}

/// The outer VM (TCG, `-cpu EPYC`: the stick's KVM works) booting `image`,
/// with a QMP socket at `dir/qmp.sock` and a USB tablet besides the PS/2
/// keyboard and mouse; returns it and its console log.
pub(crate) fn start_outer(dir: &Path, image: &Path) -> (Killed, PathBuf) {
    let (code, vars) = stick_run::find_ovmf().unwrap();
    let ovmf_vars = dir.join("vars.fd");
    fs::copy(vars, &ovmf_vars).unwrap();
    let vm = Vm {
        qemu: stick_run::qemu_program(),
        image: image.to_path_buf(),
        ram_mb: 3072,
        cpus: 1,
        accel: OuterAccel::Tcg { cpu: "EPYC".into() },
        console: Console::File {
            log: dir.join("console.log"),
        },
        ovmf_code: code,
        ovmf_vars,
        qmp: Some(dir.join("qmp.sock")),
        snapshot: false,
    };
    let outer = Killed(
        vm.command()
            .args(["-device", "usb-tablet,bus=xhci.0"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(dir.join("outer.stderr")).unwrap())
            .spawn()
            .expect("qemu-system-x86_64"),
    );
    (outer, dir.join("console.log"))
}

pub(crate) fn text(image: &Path, id: &str, name: &str) -> String {
    let bytes = stick_run::read_session_file(image, id, name)
        .unwrap()
        .unwrap_or_else(|| panic!("{id}/{name} missing"));
    String::from_utf8_lossy(&bytes).into_owned()
}

pub(crate) fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The stick boots the display guest in the outer VM (TCG, nested KVM):
/// the outer VM's screen shows the guest's picture fitted to it; keys
/// typed into the outer VM reach the guest; Ctrl+Alt+H shows the host's
/// status screen and brings the guest back; Ctrl+Alt+S takes a screenshot
/// into the session; Ctrl+Alt+End resets the guest, which ends the session.
#[test]
fn guest_display_and_keyboard_on_the_stick() {
    let dir = tempfile::tempdir().unwrap();
    let iso = isos::display_iso(dir.path(), "display", DISPLAY_MARKER).unwrap();
    let image = stick_booting(dir.path(), &iso, CONFIG);
    let started = Instant::now();
    let (mut outer, console) = start_outer(dir.path(), &image);
    let qmp_socket = dir.path().join("qmp.sock");
    let console_text = || lossy(&console);
    let stderr = dir.path().join("outer.stderr");
    wait_for(
        "the outer QMP socket",
        Duration::from_secs(30),
        &stderr,
        || qmp_socket.exists(),
    );
    // Generous: under TCG on a loaded host a screendump can take long.
    let mut qmp = Qmp::connect(&qmp_socket, Duration::from_secs(120)).unwrap();
    let shot_path = dir.path().join("outer.ppm");

    // The guest's picture on the outer screen.
    let deadline = Instant::now() + BOOT_TIMEOUT;
    let shot = loop {
        let running =
            console_text().contains(DISPLAY_MARKER) || console_text().contains("guest running");
        if running {
            let shot = Shot::take(&mut qmp, &shot_path);
            if shot.quadrants() == DISPLAY_QUADRANTS {
                break shot;
            }
        }
        let exited = outer.0.try_wait().unwrap();
        assert!(
            exited.is_none() && Instant::now() < deadline,
            "the guest's picture never reached the outer screen (outer QEMU: {exited:?}, stderr: {}); console:\n{}",
            lossy(&stderr),
            tail(&console_text(), 60)
        );
        std::thread::sleep(Duration::from_secs(2));
    };
    eprintln!(
        "display e2e: picture on the {}x{} outer screen after {:.0?}",
        shot.width,
        shot.height,
        started.elapsed()
    );
    // Fitted: the picture's edges where a 16:10 fit puts them (2 pixels'
    // rounding), black beyond them.
    let (x, y, w, h) = shot.expected_picture();
    let inside = |px: usize, py: usize| shot.at(px, py);
    assert_eq!(inside(x + 2, y + 2), DISPLAY_QUADRANTS[0]);
    assert_eq!(inside(x + w - 3, y + 2), DISPLAY_QUADRANTS[1]);
    assert_eq!(inside(x + 2, y + h - 3), DISPLAY_QUADRANTS[2]);
    assert_eq!(inside(x + w - 3, y + h - 3), DISPLAY_QUADRANTS[3]);
    assert_eq!(inside(x + w / 2 - 3, y + h / 2 - 3), DISPLAY_QUADRANTS[0]);
    assert_eq!(inside(x + w / 2 + 2, y + h / 2 + 2), DISPLAY_QUADRANTS[3]);
    if y >= 3 {
        assert_eq!(inside(x + w / 2, y - 3), 0, "black above the picture");
        assert_eq!(inside(x + w / 2, y + h + 2), 0, "black below the picture");
    }
    if x >= 3 {
        assert_eq!(inside(x - 3, y + h / 2), 0, "black left of the picture");
        assert_eq!(
            inside(x + w + 2, y + h / 2),
            0,
            "black right of the picture"
        );
    }

    // Typing: h, i, Shift+1; the guest echoes them to its serial port.
    send_keys(&mut qmp, &["h"]);
    send_keys(&mut qmp, &["i"]);
    send_keys(&mut qmp, &["shift", "1"]);
    // Ctrl+Alt+H: the host's status screen replaces the picture.
    send_keys(&mut qmp, &["ctrl", "alt", "h"]);
    let wait_status = Instant::now() + Duration::from_secs(60);
    loop {
        let shot = Shot::take(&mut qmp, &shot_path);
        // The console's text (light grey) in the top rows, no picture.
        let text_pixels = (0..shot.height / 4)
            .flat_map(|y| (0..shot.width).map(move |x| (x, y)))
            .filter(|&(x, y)| shot.at(x, y) == 0xAAAAAA)
            .count();
        if shot.quadrants() != DISPLAY_QUADRANTS && text_pixels > 500 {
            if let Some(keep) = std::env::var_os("HIPERISO_TEST_SHOTS") {
                fs::copy(&shot_path, Path::new(&keep).join("status-screen.ppm")).unwrap();
            }
            break;
        }
        assert!(
            Instant::now() < wait_status,
            "Ctrl+Alt+H did not show the status screen ({text_pixels} text pixels)"
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    // Keys typed on the status screen do not reach the guest.
    send_keys(&mut qmp, &["x"]);
    send_keys(&mut qmp, &["ctrl", "alt", "h"]);
    let wait_guest = Instant::now() + Duration::from_secs(60);
    while Shot::take(&mut qmp, &shot_path).quadrants() != DISPLAY_QUADRANTS {
        assert!(
            Instant::now() < wait_guest,
            "Ctrl+Alt+H did not bring the guest back"
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    // The mouse: relative motion and a click on the outer VM's PS/2 mouse.
    let mouse = json!({ "events": [
        {"type": "rel", "data": {"axis": "x", "value": 40}},
        {"type": "rel", "data": {"axis": "y", "value": -20}},
        {"type": "btn", "data": {"down": true, "button": "left"}},
    ]});
    qmp.execute("input-send-event", Some(mouse)).unwrap();
    let release = json!({ "events": [{"type": "btn", "data": {"down": false, "button": "left"}}]});
    qmp.execute("input-send-event", Some(release)).unwrap();
    // The USB tablet: absolute motion.
    for value in [1000, 9000] {
        let tablet = json!({ "events": [{"type": "abs", "data": {"axis": "x", "value": value}}]});
        qmp.execute("input-send-event", Some(tablet)).unwrap();
        std::thread::sleep(Duration::from_millis(300));
    }
    send_keys(&mut qmp, &["ctrl", "alt", "s"]);
    // Ctrl+Alt+P once: the ACPI power button, which this OS-less guest
    // ignores (a second press would stop it at once).
    send_keys(&mut qmp, &["ctrl", "alt", "p"]);
    std::thread::sleep(Duration::from_secs(3));
    // Ctrl+Alt+End: Ctrl-Alt-Del for the guest; its BIOS resets, and a
    // guest reset ends the session.
    send_keys(&mut qmp, &["ctrl", "alt", "end"]);
    drop(qmp);
    let status = stick_run::wait_with_timeout(&mut outer.0, BOOT_TIMEOUT)
        .unwrap()
        .unwrap_or_else(|| {
            panic!(
                "the VM did not power off; console:\n{}",
                tail(&console_text(), 60)
            )
        });
    assert!(status.success(), "outer QEMU: {status}");
    eprintln!("display e2e: outer VM ran {:.0?}", started.elapsed());

    let ids = stick_run::session_ids(&image).unwrap();
    assert_eq!(ids.len(), 1, "{ids:?}");
    let id = &ids[0];
    let serial = text(&image, id, "serial.log");
    let typed = serial
        .split_once(DISPLAY_DRAWN)
        .map(|(_, after)| after.trim_start().to_string())
        .unwrap_or_default();
    assert_eq!(
        typed, "hi!",
        "keys the guest received; serial.log:\n{serial}"
    );
    let display: serde_json::Value =
        serde_json::from_str(&text(&image, id, "display.json")).expect("display.json");
    eprintln!("display e2e: display.json {display}");
    assert!(display["updates"].as_u64().unwrap() > 0, "{display}");
    assert_eq!(display["guest_width"], 640);
    assert_eq!(display["guest_height"], 400);
    assert_eq!(display["host_width"].as_u64().unwrap() as usize, shot.width);
    assert_eq!(
        display["hotkeys"], 5,
        "Ctrl+Alt+H twice, Ctrl+Alt+S, Ctrl+Alt+P, Ctrl+Alt+End: {display}"
    );
    assert!(
        display["pointer_events"].as_u64().unwrap() >= 3,
        "mouse motion, click and tablet motion forwarded: {display}"
    );
    let devices = display["input_devices"].to_string();
    assert!(
        devices.contains("keyboard: true")
            && devices.contains("mouse: true")
            && devices.contains("tablet: true"),
        "{devices}"
    );
    assert!(display["error"].is_null(), "{display}");
    let info: serde_json::Value = serde_json::from_str(&text(&image, id, "session.json")).unwrap();
    assert!(
        info["guest_events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e.as_str().unwrap_or("").contains("guest-reset")),
        "Ctrl+Alt+End reset the guest: {}",
        info["guest_events"]
    );
    let init_log = text(&image, id, "init.log");
    assert!(
        init_log.contains("screenshot 0001.png taken (hotkey)"),
        "{init_log}"
    );
    assert!(
        init_log.contains("power-off requested (hotkey): pressing the guest's ACPI power button"),
        "{init_log}"
    );
    assert!(
        stick_run::read_session_file(&image, id, "screenshots/0001.png")
            .unwrap()
            .is_some(),
        "the hotkey's screenshot"
    );
}
