//! The guest's display on the host's screen, for `hiperiso-init`: an RFB
//! client for QEMU's VNC server ([`rfb`]), scaling ([`scale`]) onto the
//! Linux framebuffer ([`fbdev`]), the host's keyboard and mouse ([`evdev`]),
//! and the [`viewer`] that runs them with the hotkeys.

pub mod evdev;
pub mod fbdev;
pub mod rfb;
pub mod scale;
pub mod viewer;
