//! Linux input devices (`/dev/input/event*`, `linux/input.h`): the
//! 24-byte `input_event` records, what a device can do (keyboard, mouse,
//! touchpad), exclusive grabs, and the map from Linux key codes to the
//! XT scancodes ("qnum") QEMU's Extended Key Event takes, so the guest sees
//! the physical key whatever its keyboard layout.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// `sizeof(struct input_event)` on 64-bit Linux.
pub const EVENT_SIZE: usize = 24;

pub const EV_SYN: u16 = 0x00;
pub const EV_KEY: u16 = 0x01;
pub const EV_REL: u16 = 0x02;
pub const EV_ABS: u16 = 0x03;

pub const REL_X: u16 = 0x00;
pub const REL_Y: u16 = 0x01;
pub const REL_WHEEL: u16 = 0x08;
pub const ABS_X: u16 = 0x00;
pub const ABS_Y: u16 = 0x01;

pub const BTN_LEFT: u16 = 0x110;
pub const BTN_RIGHT: u16 = 0x111;
pub const BTN_MIDDLE: u16 = 0x112;
pub const BTN_TOUCH: u16 = 0x14a;

/// Key codes the hotkeys use.
pub mod key {
    pub const ESC: u16 = 1;
    pub const LEFTCTRL: u16 = 29;
    pub const LEFTALT: u16 = 56;
    pub const DELETE: u16 = 111;
    pub const RIGHTCTRL: u16 = 97;
    pub const RIGHTALT: u16 = 100;
    pub const END: u16 = 107;
    pub const H: u16 = 35;
    pub const S: u16 = 31;
    pub const P: u16 = 25;
    pub const A: u16 = 30;
    pub const ENTER: u16 = 28;
    pub const POWER: u16 = 116;
}

/// One `struct input_event`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InputEvent {
    pub kind: u16,
    pub code: u16,
    pub value: i32,
}

impl InputEvent {
    /// Parse one record (the timestamp is not needed).
    pub fn parse(b: &[u8; EVENT_SIZE]) -> InputEvent {
        InputEvent {
            kind: u16::from_ne_bytes([b[16], b[17]]),
            code: u16::from_ne_bytes([b[18], b[19]]),
            value: i32::from_ne_bytes([b[20], b[21], b[22], b[23]]),
        }
    }

    /// The record's bytes, timestamp zero (tests and replay).
    pub fn to_bytes(self) -> [u8; EVENT_SIZE] {
        let mut b = [0u8; EVENT_SIZE];
        b[16..18].copy_from_slice(&self.kind.to_ne_bytes());
        b[18..20].copy_from_slice(&self.code.to_ne_bytes());
        b[20..24].copy_from_slice(&self.value.to_ne_bytes());
        b
    }
}

/// Parse every whole record in `bytes`.
pub fn parse_events(bytes: &[u8]) -> Vec<InputEvent> {
    bytes
        .chunks_exact(EVENT_SIZE)
        .map(|chunk| InputEvent::parse(chunk.try_into().expect("exact chunk")))
        .collect()
}

/// What a device reports, from its capability bitmaps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Capabilities {
    pub keyboard: bool,
    pub mouse: bool,
    /// Absolute X/Y with a touch: a touchpad or touchscreen.
    pub touchpad: bool,
    /// Absolute X/Y with buttons but no touch: a graphics tablet or a
    /// virtual machine's USB tablet.
    pub tablet: bool,
    /// Sends `KEY_POWER`: the ACPI power button ("Power Button"), or a
    /// keyboard's power key.
    pub power_button: bool,
}

fn bit(bits: &[u8], n: u16) -> bool {
    bits.get(usize::from(n / 8))
        .is_some_and(|byte| byte & (1 << (n % 8)) != 0)
}

impl Capabilities {
    /// From the `EV_*`, `KEY_*`/`BTN_*`, `REL_*` and `ABS_*` bitmaps.
    pub fn from_bits(ev: &[u8], keys: &[u8], rel: &[u8], abs: &[u8]) -> Capabilities {
        let has_keys = bit(ev, EV_KEY);
        let absolute = bit(ev, EV_ABS) && bit(abs, ABS_X) && bit(abs, ABS_Y);
        Capabilities {
            keyboard: has_keys && bit(keys, key::A) && bit(keys, key::ENTER),
            mouse: bit(ev, EV_REL) && bit(rel, REL_X) && bit(rel, REL_Y) && bit(keys, BTN_LEFT),
            touchpad: absolute && bit(keys, BTN_TOUCH),
            tablet: absolute && !bit(keys, BTN_TOUCH) && bit(keys, BTN_LEFT),
            power_button: has_keys && bit(keys, key::POWER),
        }
    }

    pub fn any(self) -> bool {
        self.keyboard || self.mouse || self.touchpad || self.tablet
    }
}

/// `_IOC(dir, 'E', nr, size)`.
const fn eviocg(dir: libc::c_ulong, nr: libc::c_ulong, size: libc::c_ulong) -> libc::c_ulong {
    (dir << 30) | (size << 16) | ((b'E' as libc::c_ulong) << 8) | nr
}

const IOC_READ: libc::c_ulong = 2;
const IOC_WRITE: libc::c_ulong = 1;
const EVIOCGRAB: libc::c_ulong = eviocg(IOC_WRITE, 0x90, 4);

/// An open input device, non-blocking.
pub struct Device {
    pub path: PathBuf,
    pub caps: Capabilities,
    file: File,
    partial: Vec<u8>,
}

impl Device {
    /// Open `path` and read its capabilities.
    pub fn open(path: &Path) -> io::Result<Device> {
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(path)?;
        let fd = file.as_raw_fd();
        let bits = |ev: u16, len: usize| -> Vec<u8> {
            let mut buf = vec![0u8; len];
            let request = eviocg(
                IOC_READ,
                0x20 + libc::c_ulong::from(ev),
                len as libc::c_ulong,
            );
            // SAFETY: the kernel writes at most `len` bytes into `buf`.
            let n = unsafe { libc::ioctl(fd, request, buf.as_mut_ptr()) };
            if n < 0 {
                buf.clear();
            }
            buf
        };
        let caps = Capabilities::from_bits(
            &bits(0, 4),
            &bits(EV_KEY, 96),
            &bits(EV_REL, 2),
            &bits(EV_ABS, 8),
        );
        Ok(Device {
            path: path.to_path_buf(),
            caps,
            file,
            partial: Vec::new(),
        })
    }

    /// Take the device for ourselves: the host's console no longer sees
    /// its keys (so Ctrl-Alt-Del and SysRq reach the guest, not the host).
    pub fn grab(&self, on: bool) -> io::Result<()> {
        // SAFETY: EVIOCGRAB takes an int by value.
        let ret = unsafe { libc::ioctl(self.file.as_raw_fd(), EVIOCGRAB, libc::c_int::from(on)) };
        if ret < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    /// The range of absolute axis `code` (`EVIOCGABS`), e.g. a touchpad's X.
    pub fn abs_range(&self, code: u16) -> Option<(i32, i32)> {
        let mut info = [0i32; 6]; // value, minimum, maximum, fuzz, flat, resolution
        let request = eviocg(IOC_READ, 0x40 + libc::c_ulong::from(code), 24);
        // SAFETY: struct input_absinfo is six ints.
        let ret = unsafe { libc::ioctl(self.file.as_raw_fd(), request, info.as_mut_ptr()) };
        (ret >= 0 && info[2] > info[1]).then_some((info[1], info[2]))
    }

    pub fn fd(&self) -> i32 {
        self.file.as_raw_fd()
    }

    /// Whatever events are ready; `Err` when the device went away.
    pub fn read_events(&mut self) -> io::Result<Vec<InputEvent>> {
        let mut buf = [0u8; EVENT_SIZE * 64];
        loop {
            match self.file.read(&mut buf) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => {
                    self.partial.extend_from_slice(&buf[..n]);
                    if n < buf.len() {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        let whole = self.partial.len() / EVENT_SIZE * EVENT_SIZE;
        let events = parse_events(&self.partial[..whole]);
        self.partial.drain(..whole);
        Ok(events)
    }
}

/// `event*` nodes under `dir`, sorted by number.
pub fn event_nodes(dir: &Path) -> Vec<PathBuf> {
    let mut nodes: Vec<(u32, PathBuf)> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    let n = name.strip_prefix("event")?.parse().ok()?;
                    Some((n, e.path()))
                })
                .collect()
        })
        .unwrap_or_default();
    nodes.sort();
    nodes.into_iter().map(|(_, p)| p).collect()
}

/// The XT scancode QEMU numbers a Linux key code with (`0x80 | code` for
/// `0xE0`-prefixed keys), as in QEMU's keycodemapdb.
pub fn qnum(code: u16) -> Option<u32> {
    let q = match code {
        // Escape to keypad '.', then the keys after it: the scancode is
        // the key code.
        1..=83 => u32::from(code),
        85 => 0x76,  // KEY_ZENKAKUHANKAKU
        86 => 0x56,  // KEY_102ND
        87 => 0x57,  // KEY_F11
        88 => 0x58,  // KEY_F12
        89 => 0x73,  // KEY_RO
        90 => 0x78,  // KEY_KATAKANA
        91 => 0x77,  // KEY_HIRAGANA
        92 => 0x79,  // KEY_HENKAN
        93 => 0x70,  // KEY_KATAKANAHIRAGANA
        94 => 0x7b,  // KEY_MUHENKAN
        95 => 0x5c,  // KEY_KPJPCOMMA
        96 => 0x9c,  // KEY_KPENTER
        97 => 0x9d,  // KEY_RIGHTCTRL
        98 => 0xb5,  // KEY_KPSLASH
        99 => 0xb7,  // KEY_SYSRQ (Print Screen)
        100 => 0xb8, // KEY_RIGHTALT
        102 => 0xc7, // KEY_HOME
        103 => 0xc8, // KEY_UP
        104 => 0xc9, // KEY_PAGEUP
        105 => 0xcb, // KEY_LEFT
        106 => 0xcd, // KEY_RIGHT
        107 => 0xcf, // KEY_END
        108 => 0xd0, // KEY_DOWN
        109 => 0xd1, // KEY_PAGEDOWN
        110 => 0xd2, // KEY_INSERT
        111 => 0xd3, // KEY_DELETE
        113 => 0xa0, // KEY_MUTE
        114 => 0xae, // KEY_VOLUMEDOWN
        115 => 0xb0, // KEY_VOLUMEUP
        116 => 0xde, // KEY_POWER
        117 => 0x59, // KEY_KPEQUAL
        119 => 0xc6, // KEY_PAUSE
        121 => 0x7e, // KEY_KPCOMMA
        122 => 0x72, // KEY_HANGEUL
        123 => 0x71, // KEY_HANJA
        124 => 0x7d, // KEY_YEN
        125 => 0xdb, // KEY_LEFTMETA
        126 => 0xdc, // KEY_RIGHTMETA
        127 => 0xdd, // KEY_COMPOSE
        142 => 0xdf, // KEY_SLEEP
        143 => 0xe3, // KEY_WAKEUP
        183 => 0x5d, // KEY_F13
        184 => 0x5e, // KEY_F14
        185 => 0x5f, // KEY_F15
        _ => return None,
    };
    Some(q)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_event_records() {
        let mut bytes = Vec::new();
        // A real record: timestamp, EV_KEY, KEY_A, pressed.
        bytes.extend(1_700_000_000i64.to_ne_bytes());
        bytes.extend(123_456i64.to_ne_bytes());
        bytes.extend(1u16.to_ne_bytes());
        bytes.extend(30u16.to_ne_bytes());
        bytes.extend(1i32.to_ne_bytes());
        let motion = InputEvent {
            kind: EV_REL,
            code: REL_X,
            value: -3,
        };
        bytes.extend(motion.to_bytes());
        bytes.extend([0u8; 7]); // a partial record is left alone
        let events = parse_events(&bytes);
        assert_eq!(
            events,
            vec![
                InputEvent {
                    kind: EV_KEY,
                    code: 30,
                    value: 1
                },
                motion
            ]
        );
    }

    fn bits(set: &[u16], len: usize) -> Vec<u8> {
        let mut b = vec![0u8; len];
        for &n in set {
            b[usize::from(n / 8)] |= 1 << (n % 8);
        }
        b
    }

    #[test]
    fn capabilities_from_bitmaps() {
        let keyboard = Capabilities::from_bits(
            &bits(&[EV_SYN, EV_KEY], 4),
            &bits(&[key::A, key::ENTER, key::ESC], 96),
            &[],
            &[],
        );
        assert_eq!(
            keyboard,
            Capabilities {
                keyboard: true,
                ..Default::default()
            }
        );
        let mouse = Capabilities::from_bits(
            &bits(&[EV_KEY, EV_REL], 4),
            &bits(&[BTN_LEFT, BTN_RIGHT], 96),
            &bits(&[REL_X, REL_Y, REL_WHEEL], 2),
            &[],
        );
        assert!(mouse.mouse && !mouse.keyboard && !mouse.touchpad);
        let touchpad = Capabilities::from_bits(
            &bits(&[EV_KEY, EV_ABS], 4),
            &bits(&[BTN_TOUCH, BTN_LEFT], 96),
            &[],
            &bits(&[ABS_X, ABS_Y], 8),
        );
        assert!(touchpad.touchpad && !touchpad.mouse && !touchpad.tablet);
        let tablet = Capabilities::from_bits(
            &bits(&[EV_KEY, EV_ABS], 4),
            &bits(&[BTN_LEFT, BTN_RIGHT], 96),
            &[],
            &bits(&[ABS_X, ABS_Y], 8),
        );
        assert!(tablet.tablet && !tablet.touchpad && tablet.any());
        // A power button: keys, but not a keyboard.
        let power = Capabilities::from_bits(&bits(&[EV_KEY], 4), &bits(&[116], 96), &[], &[]);
        assert!(!power.any());
    }

    #[test]
    fn key_codes_to_scancodes() {
        assert_eq!(qnum(key::ESC), Some(0x01));
        assert_eq!(qnum(key::A), Some(0x1e));
        assert_eq!(qnum(key::LEFTCTRL), Some(0x1d));
        assert_eq!(qnum(key::RIGHTCTRL), Some(0x9d));
        assert_eq!(qnum(key::DELETE), Some(0xd3));
        assert_eq!(qnum(103), Some(0xc8), "up arrow is E0 48");
        assert_eq!(qnum(88), Some(0x58), "F12");
        assert_eq!(qnum(84), None);
        assert_eq!(qnum(BTN_LEFT), None);
        // No two keys share a scancode.
        let mut seen = std::collections::HashSet::new();
        for code in 0..300 {
            if let Some(q) = qnum(code) {
                assert!(seen.insert(q), "scancode {q:#x} twice");
            }
        }
    }

    #[test]
    fn ioctl_numbers_match_linux() {
        assert_eq!(EVIOCGRAB, 0x4004_4590);
        assert_eq!(
            eviocg(IOC_READ, 0x21, 96),
            0x8060_4521,
            "EVIOCGBIT(EV_KEY, 96)"
        );
    }
}
