//! The host's power button: the ACPI "Power Button" input device (Linux's
//! `button` driver, read through evdev). Pressing it (QEMU's
//! `system_powerdown` on the machine running the stick, as `hiperiso-build
//! run --timeout` does, or the PC's real button) asks hiperiso-init to stop
//! the guest and finalize the session.

use crate::display::evdev::{self, Device, EV_KEY, InputEvent, key};
use std::path::Path;

/// The input devices that can send `KEY_POWER`.
pub struct PowerButtons {
    devices: Vec<Device>,
}

impl PowerButtons {
    /// Open every `event*` node under `dir` (normally `/dev/input`) that
    /// has a power key.
    pub fn open(dir: &Path) -> PowerButtons {
        let devices = evdev::event_nodes(dir)
            .iter()
            .filter_map(|node| Device::open(node).ok())
            .filter(|d| d.caps.power_button)
            .collect();
        PowerButtons { devices }
    }

    pub fn names(&self) -> Vec<String> {
        self.devices
            .iter()
            .map(|d| d.path.display().to_string())
            .collect()
    }

    /// Whether the power key went down since the last call.
    pub fn pressed(&mut self) -> bool {
        let mut pressed = false;
        self.devices.retain_mut(|d| match d.read_events() {
            Ok(events) => {
                pressed |= is_power_press(&events);
                true
            }
            Err(_) => false,
        });
        pressed
    }
}

/// A `KEY_POWER` press (or autorepeat) among `events`.
pub fn is_power_press(events: &[InputEvent]) -> bool {
    events
        .iter()
        .any(|e| e.kind == EV_KEY && e.code == key::POWER && e.value != 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn ev(kind: u16, code: u16, value: i32) -> InputEvent {
        InputEvent { kind, code, value }
    }

    #[test]
    fn power_key_down_is_a_press() {
        assert!(is_power_press(&[ev(EV_KEY, key::POWER, 1), ev(0, 0, 0)]));
        assert!(
            !is_power_press(&[ev(EV_KEY, key::POWER, 0)]),
            "release only"
        );
        assert!(!is_power_press(&[ev(EV_KEY, key::ENTER, 1)]));
    }

    /// A regular file stands in for the device node: the events are read
    /// the same way (ioctls fail, so it does not count as a power button).
    #[test]
    fn no_devices_no_press() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = std::fs::File::create(dir.path().join("event0")).unwrap();
        f.write_all(&ev(EV_KEY, key::POWER, 1).to_bytes()).unwrap();
        let mut buttons = PowerButtons::open(dir.path());
        assert!(buttons.names().is_empty());
        assert!(!buttons.pressed());
    }
}
