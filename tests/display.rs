//! The guest's display, keyboard and mouse on the host (issue 10).
//!
//! - `viewer_speaks_rfb_with_qemu`: the host's QEMU runs the display test
//!   guest with the same command line the stick uses (`QemuPlan` with a
//!   VNC socket); the viewer's RFB client reads its screen (text mode, then
//!   a resize to VGA mode 13h), scales it onto a framebuffer-like canvas,
//!   and types keys the guest echoes on its serial port.

use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hiperiso_runtime::cmdline::TraceLevel;
use hiperiso_runtime::fbdev::{Canvas, Channel, Layout};
use hiperiso_runtime::qemu::{Accel, FirmwareFiles, QemuPlan};
use hiperiso_runtime::rfb::{self, Event, Screen};
use hiperiso_runtime::scale::Fit;
use hiperiso_tests::isos::{self, DISPLAY_DRAWN, DISPLAY_QUADRANTS};

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_for(what: &str, timeout: Duration, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !ready() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn serial(dir: &Path) -> String {
    String::from_utf8_lossy(&fs::read(dir.join("serial.log")).unwrap_or_default()).into_owned()
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
        binary: PathBuf::from("qemu-system-x86_64"),
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
        tpm_socket: None,
        trace_level: TraceLevel::None,
        trace_events: None,
        firmware_log: false,
        vnc_socket: Some(vnc.clone()),
    };
    let argv = plan.argv();
    let _qemu = Killed(
        Command::new(&argv[0])
            .args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(dir.path().join("qemu.stderr")).unwrap())
            .spawn()
            .expect("qemu-system-x86_64"),
    );
    wait_for("QEMU's VNC socket", Duration::from_secs(20), || {
        vnc.exists()
    });
    let mut stream = UnixStream::connect(&vnc).unwrap();
    let init = rfb::handshake(&mut stream).unwrap();
    assert!(init.name.contains("hiperiso-guest"), "{}", init.name);
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
    let deadline = Instant::now() + Duration::from_secs(60);
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
            fs::read_to_string(dir.path().join("qemu.stderr")).unwrap_or_default()
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
    wait_for("the guest's echo", Duration::from_secs(20), || {
        serial(dir.path())[before..].contains("hi!")
    });
}
