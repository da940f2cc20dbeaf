//! The client side of RFB 3.8 (RFC 6143), as far as a local viewer of
//! QEMU's built-in VNC server needs it: no security, one pixel format
//! (32 bpp true colour, `0x00RRGGBB` little-endian), Raw rectangles, and the
//! pseudo-encodings QEMU speaks: DesktopSize (the guest changed
//! resolution), QEMU Pointer Motion Change (relative or absolute mouse),
//! QEMU Extended Key Event (raw scancodes, so no keymap is involved) and
//! QEMU LED State.
//!
//! Everything works on `Read`/`Write`, so the decoder is tested on byte
//! buffers.

use std::io::{self, Read, Write};

/// Encodings and pseudo-encodings (RFC 6143 §7.7, QEMU's extensions).
pub mod encoding {
    pub const RAW: i32 = 0;
    pub const COPY_RECT: i32 = 1;
    pub const DESKTOP_SIZE: i32 = -223;
    pub const POINTER_TYPE_CHANGE: i32 = -257;
    pub const EXT_KEY_EVENT: i32 = -258;
    pub const LED_STATE: i32 = -261;
}

/// What the viewer asks the server for, in order of preference.
pub const ENCODINGS: &[i32] = &[
    encoding::COPY_RECT,
    encoding::RAW,
    encoding::DESKTOP_SIZE,
    encoding::POINTER_TYPE_CHANGE,
    encoding::EXT_KEY_EVENT,
    encoding::LED_STATE,
];

/// The largest screen accepted (guards allocations against a broken peer).
pub const MAX_DIMENSION: u16 = 16384;

/// Pointer buttons in a PointerEvent's mask.
pub mod button {
    pub const LEFT: u8 = 1;
    pub const MIDDLE: u8 = 2;
    pub const RIGHT: u8 = 4;
    pub const WHEEL_UP: u8 = 8;
    pub const WHEEL_DOWN: u8 = 16;
}

/// In relative mode QEMU reads a pointer position as a motion from here.
pub const RELATIVE_CENTRE: i32 = 0x7FFF;

#[derive(Debug, thiserror::Error)]
pub enum RfbError {
    #[error("RFB connection failed")]
    Io(#[from] io::Error),
    #[error("the server speaks {0:?}, not RFB 3.x")]
    Version(String),
    #[error("the server refused the connection: {0}")]
    Refused(String),
    #[error("the server offers no 'None' security type (offered {0:?})")]
    NoSecurityNone(Vec<u8>),
    #[error("security handshake failed: {0}")]
    SecurityFailed(String),
    #[error("the server sent unknown message type {0}")]
    UnknownMessage(u8),
    #[error("the server sent a rectangle with encoding {0}, which was not asked for")]
    UnknownEncoding(i32),
    #[error("rectangle {x},{y} {w}x{h} lies outside the {width}x{height} screen")]
    OutOfBounds {
        x: u16,
        y: u16,
        w: u16,
        h: u16,
        width: u16,
        height: u16,
    },
    #[error("screen size {0}x{1} is not supported")]
    BadSize(u16, u16),
}

/// RFB's PIXEL_FORMAT (RFC 6143 §7.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PixelFormat {
    pub bits_per_pixel: u8,
    pub depth: u8,
    pub big_endian: bool,
    pub true_colour: bool,
    pub red_max: u16,
    pub green_max: u16,
    pub blue_max: u16,
    pub red_shift: u8,
    pub green_shift: u8,
    pub blue_shift: u8,
}

impl PixelFormat {
    /// The format the viewer asks for: a little-endian `u32` `0x00RRGGBB`.
    pub const XRGB8888: PixelFormat = PixelFormat {
        bits_per_pixel: 32,
        depth: 24,
        big_endian: false,
        true_colour: true,
        red_max: 255,
        green_max: 255,
        blue_max: 255,
        red_shift: 16,
        green_shift: 8,
        blue_shift: 0,
    };

    pub fn to_bytes(self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[0] = self.bits_per_pixel;
        b[1] = self.depth;
        b[2] = u8::from(self.big_endian);
        b[3] = u8::from(self.true_colour);
        b[4..6].copy_from_slice(&self.red_max.to_be_bytes());
        b[6..8].copy_from_slice(&self.green_max.to_be_bytes());
        b[8..10].copy_from_slice(&self.blue_max.to_be_bytes());
        b[10] = self.red_shift;
        b[11] = self.green_shift;
        b[12] = self.blue_shift;
        b
    }

    pub fn from_bytes(b: &[u8; 16]) -> PixelFormat {
        PixelFormat {
            bits_per_pixel: b[0],
            depth: b[1],
            big_endian: b[2] != 0,
            true_colour: b[3] != 0,
            red_max: u16::from_be_bytes([b[4], b[5]]),
            green_max: u16::from_be_bytes([b[6], b[7]]),
            blue_max: u16::from_be_bytes([b[8], b[9]]),
            red_shift: b[10],
            green_shift: b[11],
            blue_shift: b[12],
        }
    }
}

/// ServerInit (RFC 6143 §7.3.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerInit {
    pub width: u16,
    pub height: u16,
    pub format: PixelFormat,
    pub name: String,
}

/// A rectangle on the guest's screen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rect {
    pub x: u16,
    pub y: u16,
    pub w: u16,
    pub h: u16,
}

/// What a server message changed, besides pixels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// These pixels of [`Screen`] changed.
    Damage(Rect),
    /// The screen now has this size and is black until redrawn.
    Resize {
        width: u16,
        height: u16,
    },
    /// The guest's pointer is absolute (a tablet) or relative (a mouse).
    PointerMode {
        absolute: bool,
    },
    /// The server takes [`ext_key_event`] messages.
    ExtKeyEvents,
    /// Scroll, Num and Caps Lock as the guest sees them (bits 0, 1, 2).
    Leds(u8),
    Bell,
    /// The end of one FramebufferUpdate: the time to ask for the next.
    UpdateDone,
}

/// The guest's screen as the server described it so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Screen {
    pub width: u16,
    pub height: u16,
    /// `0x00RRGGBB`, row-major, `width * height`.
    pub pixels: Vec<u32>,
}

impl Screen {
    pub fn new(width: u16, height: u16) -> Result<Screen, RfbError> {
        if width == 0 || height == 0 || width > MAX_DIMENSION || height > MAX_DIMENSION {
            return Err(RfbError::BadSize(width, height));
        }
        Ok(Screen {
            width,
            height,
            pixels: vec![0; usize::from(width) * usize::from(height)],
        })
    }

    fn check(&self, r: Rect) -> Result<(), RfbError> {
        let inside = u32::from(r.x) + u32::from(r.w) <= u32::from(self.width)
            && u32::from(r.y) + u32::from(r.h) <= u32::from(self.height);
        if inside {
            Ok(())
        } else {
            Err(RfbError::OutOfBounds {
                x: r.x,
                y: r.y,
                w: r.w,
                h: r.h,
                width: self.width,
                height: self.height,
            })
        }
    }

    /// Copy `r`'s size of pixels from (`src_x`, `src_y`) to `r`, as if
    /// through a temporary buffer (the regions may overlap).
    fn copy_rect(&mut self, r: Rect, src_x: u16, src_y: u16) {
        let width = usize::from(self.width);
        let w = usize::from(r.w);
        let rows: Vec<usize> = (0..usize::from(r.h)).collect();
        let ordered: Box<dyn Iterator<Item = &usize>> = if src_y < r.y {
            Box::new(rows.iter().rev())
        } else {
            Box::new(rows.iter())
        };
        for &row in ordered {
            let from = (usize::from(src_y) + row) * width + usize::from(src_x);
            let to = (usize::from(r.y) + row) * width + usize::from(r.x);
            self.pixels.copy_within(from..from + w, to);
        }
    }
}

fn read_u8(r: &mut impl Read) -> io::Result<u8> {
    let mut b = [0u8; 1];
    r.read_exact(&mut b)?;
    Ok(b[0])
}

fn read_u16(r: &mut impl Read) -> io::Result<u16> {
    let mut b = [0u8; 2];
    r.read_exact(&mut b)?;
    Ok(u16::from_be_bytes(b))
}

fn read_u32(r: &mut impl Read) -> io::Result<u32> {
    let mut b = [0u8; 4];
    r.read_exact(&mut b)?;
    Ok(u32::from_be_bytes(b))
}

fn skip(r: &mut impl Read, count: u64) -> io::Result<()> {
    let copied = io::copy(&mut r.take(count), &mut io::sink())?;
    if copied < count {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(())
}

/// A length-prefixed string, at most 64 KiB kept.
fn read_string(r: &mut impl Read) -> io::Result<String> {
    let len = u64::from(read_u32(r)?);
    let keep = len.min(65536);
    let mut bytes = vec![0u8; keep as usize];
    r.read_exact(&mut bytes)?;
    skip(r, len - keep)?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// ProtocolVersion, security type None, ClientInit (shared) and
/// ServerInit; then SetPixelFormat and SetEncodings for [`ENCODINGS`].
pub fn handshake<S: Read + Write>(stream: &mut S) -> Result<ServerInit, RfbError> {
    let mut version = [0u8; 12];
    stream.read_exact(&mut version)?;
    let text = String::from_utf8_lossy(&version).into_owned();
    let minor = text
        .strip_prefix("RFB 003.")
        .and_then(|rest| rest.trim_end().parse::<u32>().ok())
        .ok_or_else(|| RfbError::Version(text.clone()))?;
    if minor < 7 {
        return Err(RfbError::Version(text));
    }
    stream.write_all(b"RFB 003.008\n")?;
    let count = read_u8(stream)?;
    if count == 0 {
        return Err(RfbError::Refused(read_string(stream)?));
    }
    let mut types = vec![0u8; usize::from(count)];
    stream.read_exact(&mut types)?;
    if !types.contains(&1) {
        return Err(RfbError::NoSecurityNone(types));
    }
    stream.write_all(&[1])?;
    if minor >= 8 && read_u32(stream)? != 0 {
        return Err(RfbError::SecurityFailed(read_string(stream)?));
    }
    stream.write_all(&[1])?; // ClientInit: share the desktop
    let width = read_u16(stream)?;
    let height = read_u16(stream)?;
    let mut format = [0u8; 16];
    stream.read_exact(&mut format)?;
    let name = read_string(stream)?;
    let mut setup = set_pixel_format(PixelFormat::XRGB8888);
    setup.extend(set_encodings(ENCODINGS));
    stream.write_all(&setup)?;
    Ok(ServerInit {
        width,
        height,
        format: PixelFormat::from_bytes(&format),
        name,
    })
}

/// SetPixelFormat (type 0).
pub fn set_pixel_format(format: PixelFormat) -> Vec<u8> {
    let mut m = vec![0u8, 0, 0, 0];
    m.extend(format.to_bytes());
    m
}

/// SetEncodings (type 2).
pub fn set_encodings(encodings: &[i32]) -> Vec<u8> {
    let mut m = vec![2u8, 0];
    m.extend((encodings.len() as u16).to_be_bytes());
    for e in encodings {
        m.extend(e.to_be_bytes());
    }
    m
}

/// FramebufferUpdateRequest (type 3) for the whole screen.
pub fn update_request(incremental: bool, width: u16, height: u16) -> Vec<u8> {
    let mut m = vec![3u8, u8::from(incremental), 0, 0, 0, 0];
    m.extend(width.to_be_bytes());
    m.extend(height.to_be_bytes());
    m
}

/// PointerEvent (type 5); positions saturate at the protocol's range.
pub fn pointer_event(buttons: u8, x: i32, y: i32) -> Vec<u8> {
    let clamp = |v: i32| v.clamp(0, i32::from(u16::MAX)) as u16;
    let mut m = vec![5u8, buttons];
    m.extend(clamp(x).to_be_bytes());
    m.extend(clamp(y).to_be_bytes());
    m
}

/// QEMU Extended Key Event (type 255, subtype 0): `qnum` is the key's
/// XT scancode with `0x80` standing for the `0xE0` prefix; the keysym is
/// informational (0 when unknown).
pub fn ext_key_event(down: bool, keysym: u32, qnum: u32) -> Vec<u8> {
    let mut m = vec![255u8, 0];
    m.extend(u16::from(down).to_be_bytes());
    m.extend(keysym.to_be_bytes());
    m.extend(qnum.to_be_bytes());
    m
}

/// Read one server message, apply its pixels to `screen` and append what
/// happened to `events`.
pub fn read_server_message(
    r: &mut impl Read,
    screen: &mut Screen,
    events: &mut Vec<Event>,
) -> Result<(), RfbError> {
    match read_u8(r)? {
        0 => {
            read_u8(r)?;
            let count = read_u16(r)?;
            for _ in 0..count {
                read_rect(r, screen, events)?;
            }
            events.push(Event::UpdateDone);
        }
        1 => {
            // SetColourMapEntries: never used with a true-colour format.
            read_u8(r)?;
            read_u16(r)?;
            let n = read_u16(r)?;
            skip(r, u64::from(n) * 6)?;
        }
        2 => events.push(Event::Bell),
        3 => {
            let mut pad = [0u8; 3];
            r.read_exact(&mut pad)?;
            read_string(r)?;
        }
        other => return Err(RfbError::UnknownMessage(other)),
    }
    Ok(())
}

fn read_rect(
    r: &mut impl Read,
    screen: &mut Screen,
    events: &mut Vec<Event>,
) -> Result<(), RfbError> {
    let rect = Rect {
        x: read_u16(r)?,
        y: read_u16(r)?,
        w: read_u16(r)?,
        h: read_u16(r)?,
    };
    let kind = read_u32(r)? as i32;
    match kind {
        encoding::RAW => {
            screen.check(rect)?;
            let w = usize::from(rect.w);
            let mut row = vec![0u8; w * 4];
            for y in 0..usize::from(rect.h) {
                r.read_exact(&mut row)?;
                let start =
                    (usize::from(rect.y) + y) * usize::from(screen.width) + usize::from(rect.x);
                for (pixel, bytes) in screen.pixels[start..start + w]
                    .iter_mut()
                    .zip(row.chunks_exact(4))
                {
                    *pixel =
                        u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) & 0x00FF_FFFF;
                }
            }
            if rect.w > 0 && rect.h > 0 {
                events.push(Event::Damage(rect));
            }
        }
        encoding::COPY_RECT => {
            let src_x = read_u16(r)?;
            let src_y = read_u16(r)?;
            screen.check(rect)?;
            screen.check(Rect {
                x: src_x,
                y: src_y,
                ..rect
            })?;
            screen.copy_rect(rect, src_x, src_y);
            events.push(Event::Damage(rect));
        }
        encoding::DESKTOP_SIZE => {
            *screen = Screen::new(rect.w, rect.h)?;
            events.push(Event::Resize {
                width: rect.w,
                height: rect.h,
            });
        }
        encoding::POINTER_TYPE_CHANGE => events.push(Event::PointerMode {
            absolute: rect.x != 0,
        }),
        encoding::EXT_KEY_EVENT => events.push(Event::ExtKeyEvents),
        encoding::LED_STATE => events.push(Event::Leds(read_u8(r)?)),
        other => return Err(RfbError::UnknownEncoding(other)),
    }
    Ok(())
}

#[cfg(test)]
mod tests;
