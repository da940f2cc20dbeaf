//! Pictures of the guest's screen without QEMU's PNG support: QMP
//! `screendump` writes PPM (QEMU's default format, in every build), encoded
//! here as PNG; and the VGA text buffer read exactly when the guest is in
//! text mode (no OCR).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::picture::{self, Picture, PictureError};

/// Why a screen could not be read or encoded.
#[derive(Debug, thiserror::Error)]
pub enum ScreenError {
    #[error("cannot read the screendump {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("decoding or encoding the screen")]
    Picture(#[from] PictureError),
}

/// Read a `screendump` file (PPM).
pub fn read_ppm(path: &Path) -> Result<Picture, ScreenError> {
    let bytes = fs::read(path).map_err(|source| ScreenError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(picture::ppm_to_rgb(&bytes)?)
}

/// Encode as PNG (fast compression: this runs on the stick while the guest
/// boots).
pub fn encode_png(picture: &Picture) -> Result<Vec<u8>, ScreenError> {
    Ok(picture::try_encode_png(picture)?)
}

/// Guest-physical address of the BIOS data area bytes read for the mode.
pub const BDA_START: u64 = 0x400;
pub const BDA_LEN: usize = 0x100;
/// The colour text buffer.
pub const TEXT_BUFFER: u64 = 0xB8000;
/// The monochrome (mode 7) text buffer.
pub const MONO_TEXT_BUFFER: u64 = 0xB0000;

/// What the guest's text screen looks like, from the BIOS data area and the
/// screendump's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TextMode {
    pub columns: usize,
    pub rows: usize,
    /// Guest-physical address of the visible page.
    pub address: u64,
}

impl TextMode {
    /// Bytes to read at `address`: a character and an attribute per cell.
    pub fn len(self) -> usize {
        self.columns * self.rows * 2
    }
}

/// Whether the guest shows VGA text and how much: the BIOS data area (`bda`:
/// 256 bytes from 0x400; mode at 0x49, columns at 0x4A, page offset at 0x4E,
/// rows - 1 at 0x84) must name a text mode (0-3 or 7), and QEMU's rendering
/// of it must have the size text cells give (8 or 9 pixels wide, 8 to 16
/// high). A guest that switched to graphics without the BIOS fails the
/// second check; one in graphics through the BIOS fails the first.
pub fn detect_text_mode(bda: &[u8], width: u32, height: u32) -> Option<TextMode> {
    let byte = |offset: usize| bda.get(offset).copied();
    let word = |offset: usize| Some(u16::from_le_bytes([byte(offset)?, byte(offset + 1)?]));
    let mode = byte(0x49)? & 0x7F;
    let base = match mode {
        0..=3 => TEXT_BUFFER,
        7 => MONO_TEXT_BUFFER,
        _ => return None,
    };
    let columns = usize::from(word(0x4A)?);
    let rows = match byte(0x84)? {
        0 => 25, // BIOSes that do not fill it in
        r => usize::from(r) + 1,
    };
    if !(40..=132).contains(&columns) || !(25..=60).contains(&rows) {
        return None;
    }
    let (width, height) = (width as usize, height as usize);
    let cell_wide = width == columns * 8 || width == columns * 9;
    let cell_high = height % rows == 0 && (8..=16).contains(&(height / rows));
    if !(cell_wide && cell_high) {
        return None;
    }
    let page = u64::from(word(0x4E)?);
    let address = base + page;
    // The visible page must lie inside the 32 KiB text window.
    (page as usize + columns * rows * 2 <= 0x8000).then_some(TextMode {
        columns,
        rows,
        address,
    })
}

/// The text of a VGA text buffer: characters (even bytes) decoded from
/// CP437, attributes (odd bytes) skipped, one line per row, trailing spaces
/// trimmed, trailing empty rows kept (the screen has that many rows).
pub fn decode_text(buffer: &[u8], columns: usize) -> String {
    let mut out = String::new();
    for row in buffer.chunks(columns * 2) {
        let line: String = row.iter().step_by(2).map(|&c| cp437(c)).collect();
        out.push_str(line.trim_end_matches([' ', '\u{a0}']));
        out.push('\n');
    }
    out
}

/// Code page 437 as the VGA font draws it: 0 and 255 are blanks, 1-31 and
/// 127 are the graphic symbols (smileys, arrows), not control characters.
pub fn cp437(byte: u8) -> char {
    const LOW: [char; 32] = [
        ' ', '☺', '☻', '♥', '♦', '♣', '♠', '•', '◘', '○', '◙', '♂', '♀', '♪', '♫', '☼', '►', '◄',
        '↕', '‼', '¶', '§', '▬', '↨', '↑', '↓', '→', '←', '∟', '↔', '▲', '▼',
    ];
    const HIGH: [char; 128] = [
        'Ç', 'ü', 'é', 'â', 'ä', 'à', 'å', 'ç', 'ê', 'ë', 'è', 'ï', 'î', 'ì', 'Ä', 'Å', 'É', 'æ',
        'Æ', 'ô', 'ö', 'ò', 'û', 'ù', 'ÿ', 'Ö', 'Ü', '¢', '£', '¥', '₧', 'ƒ', 'á', 'í', 'ó', 'ú',
        'ñ', 'Ñ', 'ª', 'º', '¿', '⌐', '¬', '½', '¼', '¡', '«', '»', '░', '▒', '▓', '│', '┤', '╡',
        '╢', '╖', '╕', '╣', '║', '╗', '╝', '╜', '╛', '┐', '└', '┴', '┬', '├', '─', '┼', '╞', '╟',
        '╚', '╔', '╩', '╦', '╠', '═', '╬', '╧', '╨', '╤', '╥', '╙', '╘', '╒', '╓', '╫', '╪', '┘',
        '┌', '█', '▄', '▌', '▐', '▀', 'α', 'ß', 'Γ', 'π', 'Σ', 'σ', 'µ', 'τ', 'Φ', 'Θ', 'Ω', 'δ',
        '∞', 'φ', 'ε', '∩', '≡', '±', '≥', '≤', '⌠', '⌡', '÷', '≈', '°', '∙', '·', '√', 'ⁿ', '²',
        '■', ' ',
    ];
    match byte {
        0..=31 => LOW[usize::from(byte)],
        127 => '⌂',
        32..=126 => char::from(byte),
        _ => HIGH[usize::from(byte - 128)],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ppm(width: u32, height: u32, pixels: &[u8]) -> Vec<u8> {
        let mut bytes = format!("P6\n{width} {height}\n255\n").into_bytes();
        bytes.extend_from_slice(pixels);
        bytes
    }

    #[test]
    fn ppm_to_png_roundtrip() {
        let pixels: Vec<u8> = (0..4 * 3 * 3).map(|i| (i * 7) as u8).collect();
        let rgb = picture::ppm_to_rgb(&ppm(4, 3, &pixels)).unwrap();
        assert_eq!((rgb.width, rgb.height), (4, 3));
        let png_bytes = encode_png(&rgb).unwrap();
        assert_eq!(&png_bytes[..8], b"\x89PNG\r\n\x1a\n");
        let decoder = png::Decoder::new(std::io::Cursor::new(png_bytes));
        let mut reader = decoder.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut buf).unwrap();
        assert_eq!((info.width, info.height), (4, 3));
        assert_eq!(info.color_type, png::ColorType::Rgb);
        assert_eq!(&buf[..info.buffer_size()], &pixels[..]);
    }

    #[test]
    fn ppm_header_with_comment_and_errors() {
        let mut bytes = b"P6 # QEMU\n2 1\n255\n".to_vec();
        bytes.extend_from_slice(&[1, 2, 3, 4, 5, 6]);
        assert_eq!(
            picture::ppm_to_rgb(&bytes).unwrap().pixels,
            [1, 2, 3, 4, 5, 6]
        );
        assert!(
            picture::ppm_to_rgb(&ppm(2, 2, &[0; 6])).is_err(),
            "short pixel data"
        );
        assert!(
            picture::ppm_to_rgb(b"P3\n1 1\n255\n0 0 0").is_err(),
            "ASCII PPM"
        );
        assert!(picture::ppm_to_rgb(b"\x89PNG").is_err());
        assert!(picture::ppm_to_rgb(b"P6\n1 1\n65535\n\0\0\0\0\0\0").is_err());
    }

    fn bda(mode: u8, columns: u16, rows_minus_1: u8, page: u16) -> Vec<u8> {
        let mut b = vec![0u8; BDA_LEN];
        b[0x49] = mode;
        b[0x4A..0x4C].copy_from_slice(&columns.to_le_bytes());
        b[0x4E..0x50].copy_from_slice(&page.to_le_bytes());
        b[0x84] = rows_minus_1;
        b
    }

    #[test]
    fn text_mode_from_bda_and_screen_size() {
        let m = detect_text_mode(&bda(3, 80, 24, 0), 720, 400).unwrap();
        assert_eq!(
            (m.columns, m.rows, m.address, m.len()),
            (80, 25, 0xB8000, 4000)
        );
        let m = detect_text_mode(&bda(3, 80, 49, 0), 720, 400).unwrap();
        assert_eq!((m.columns, m.rows), (80, 50));
        let m = detect_text_mode(&bda(3, 80, 24, 0x1000), 640, 400).unwrap();
        assert_eq!(m.address, 0xB9000);
        assert_eq!(
            detect_text_mode(&bda(7, 80, 24, 0), 720, 350)
                .unwrap()
                .address,
            0xB0000
        );
        // Graphics through the BIOS, or behind its back.
        assert_eq!(detect_text_mode(&bda(0x12, 80, 24, 0), 640, 480), None);
        assert_eq!(detect_text_mode(&bda(3, 80, 24, 0), 1024, 768), None);
        assert_eq!(detect_text_mode(&bda(3, 80, 24, 0), 640, 480), None);
        // A BIOS that leaves the rows byte at 0 means 25.
        assert_eq!(
            detect_text_mode(&bda(3, 80, 0, 0), 720, 400).unwrap().rows,
            25
        );
        assert_eq!(detect_text_mode(&[], 720, 400), None);
    }

    #[test]
    fn text_buffer_decoding() {
        let mut buffer = Vec::new();
        let rows = ["GNU GRUB  version 2.06", "\u{1}\u{10}x", ""];
        for row in rows {
            let mut cells = [b' '; 24];
            cells[..row.len()].copy_from_slice(row.as_bytes());
            for c in cells {
                buffer.extend_from_slice(&[c, 0x1F]); // white on blue
            }
        }
        buffer[2 * 24 + 2 * 4] = 0xC9; // ╔
        buffer[2 * 24 + 2 * 5] = 0xCD; // ═
        buffer[2 * 24 + 2 * 6] = 0x82; // é
        let text = decode_text(&buffer, 24);
        assert_eq!(text, "GNU GRUB  version 2.06\n☺►x ╔═é\n\n");
        assert_eq!(cp437(0), ' ');
        assert_eq!(cp437(0xFF), ' ');
        assert_eq!(cp437(0xDB), '█');
        assert_eq!(cp437(0xB3), '│');
        assert_eq!(cp437(0xFE), '■');
    }
}
