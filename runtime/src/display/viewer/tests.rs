use super::*;
use crate::display::evdev::InputEvent;

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
    let mut p = Pointer::default();
    p.absolute = true;
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
    let stat =
        "4242 (qemu-system-x86) (x)) S 1 4242 4242 0 -1 4194560 5000 0 0 0 250 50 0 0 20 0 3 0 100";
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
