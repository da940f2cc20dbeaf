//! The host's keyboard and pointer, turned into RFB messages for the
//! guest; the hotkeys.

use crate::display::evdev::{self, InputEvent, key};
use crate::display::rfb::{self, RELATIVE_CENTRE};
use std::collections::BTreeSet;

/// A touchpad's full width moves the pointer this many guest pixels.
const TOUCHPAD_SPAN: i32 = 1200;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hotkey {
    ToggleStatus,
    CtrlAltDel,
    Screenshot,
    PowerOff,
}

pub(super) fn hotkey(code: u16) -> Option<Hotkey> {
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
