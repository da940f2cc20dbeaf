//! `hiperiso-log screens`: a session's screenshots as one contact sheet PNG
//! (thumbnails in a grid, each labelled with its time in a tiny built-in
//! bitmap font) and an animated PNG, in time order.

use crate::picture::{self, Picture, PictureError};
use crate::screens::{self, Shot};
use std::path::{Path, PathBuf};

/// Thumbnail cell: picture area, label strip below it, gap around.
pub const THUMB_W: u32 = 240;
pub const THUMB_H: u32 = 150;
pub const LABEL_H: u32 = 14;
pub const GAP: u32 = 4;
/// Thumbnails a row.
pub const COLUMNS: u32 = 4;
/// The animation's frames are at most this wide (scaled down, not up).
pub const FRAME_MAX_W: u32 = 720;

/// Why the pictures could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ContactError {
    #[error("no screenshots in {}", dir.display())]
    NoScreenshots { dir: PathBuf },
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot decode {}", path.display())]
    Decode {
        path: PathBuf,
        #[source]
        source: PictureError,
    },
    #[error("cannot write {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot encode the animation")]
    Apng(#[source] png::EncodingError),
}

/// The screenshots, decoded, with their times.
pub fn load(session_dir: &Path) -> Result<Vec<(Shot, Picture)>, ContactError> {
    let shots = screens::shots(session_dir);
    if shots.is_empty() {
        return Err(ContactError::NoScreenshots {
            dir: session_dir.join(screens::SCREENSHOTS),
        });
    }
    shots
        .into_iter()
        .map(|shot| {
            let path = screens::png_path(session_dir, &shot);
            let bytes = std::fs::read(&path).map_err(|source| ContactError::Read {
                path: path.clone(),
                source,
            })?;
            let pic = picture::decode_png(&bytes)
                .map_err(|source| ContactError::Decode { path, source })?;
            Ok((shot, pic))
        })
        .collect()
}

/// The size of a sheet of `n` thumbnails.
pub fn sheet_size(n: usize) -> (u32, u32) {
    let n = n.max(1) as u32;
    let cols = n.min(COLUMNS);
    let rows = n.div_ceil(COLUMNS);
    (
        GAP + cols * (THUMB_W + GAP),
        GAP + rows * (THUMB_H + LABEL_H + GAP),
    )
}

/// Nearest-neighbour scale of `src` to fit `w`×`h`, keeping its aspect.
pub fn fit(src: &Picture, w: u32, h: u32) -> Picture {
    let (sw, sh) = (src.width.max(1) as u64, src.height.max(1) as u64);
    let scale_w = (w as u64 * sh <= h as u64 * sw).then_some(w as u64);
    let (tw, th) = match scale_w {
        Some(tw) => (tw, (tw * sh / sw).max(1)),
        None => ((h as u64 * sw / sh).max(1), h as u64),
    };
    let mut out = Picture::filled(tw as u32, th as u32, [0; 3]);
    for y in 0..th {
        for x in 0..tw {
            out.set(
                x as u32,
                y as u32,
                src.get((x * sw / tw) as u32, (y * sh / th) as u32),
            );
        }
    }
    out
}

fn blit(dst: &mut Picture, src: &Picture, x0: u32, y0: u32) {
    for y in 0..src.height {
        for x in 0..src.width {
            dst.set(x0 + x, y0 + y, src.get(x, y));
        }
    }
}

/// 3×5 glyphs, one row a byte (bits 2..0, left to right).
fn glyph(c: char) -> Option<[u8; 5]> {
    Some(match c {
        '0' => [7, 5, 5, 5, 7],
        '1' => [2, 6, 2, 2, 7],
        '2' => [7, 1, 7, 4, 7],
        '3' => [7, 1, 7, 1, 7],
        '4' => [5, 5, 7, 1, 1],
        '5' => [7, 4, 7, 1, 7],
        '6' => [7, 4, 7, 5, 7],
        '7' => [7, 1, 1, 1, 1],
        '8' => [7, 5, 7, 5, 7],
        '9' => [7, 5, 7, 1, 7],
        '.' => [0, 0, 0, 0, 2],
        ':' => [0, 2, 0, 2, 0],
        's' => [0, 3, 6, 3, 6],
        '#' => [5, 7, 5, 7, 5],
        _ => return None,
    })
}

/// Draw `text` (digits, `.`, `:`, `s`, `#`) at 2× scale.
pub fn draw_text(dst: &mut Picture, text: &str, x0: u32, y0: u32, rgb: [u8; 3]) {
    const SCALE: u32 = 2;
    let mut x = x0;
    for c in text.chars() {
        if let Some(rows) = glyph(c) {
            for (ry, bits) in rows.iter().enumerate() {
                for rx in 0..3 {
                    if bits & (4 >> rx) != 0 {
                        for dy in 0..SCALE {
                            for dx in 0..SCALE {
                                dst.set(x + rx * SCALE + dx, y0 + ry as u32 * SCALE + dy, rgb);
                            }
                        }
                    }
                }
            }
        }
        x += 4 * SCALE;
    }
}

/// A shot's label: its time (`12.3s`) or its number (`#3`).
pub fn label(shot: &Shot, index: usize) -> String {
    match shot.uptime_ms {
        Some(ms) => format!("{}.{}s", ms / 1000, (ms % 1000) / 100),
        None => format!("#{}", index + 1),
    }
}

/// The contact sheet.
pub fn contact_sheet(shots: &[(Shot, Picture)]) -> Picture {
    let (w, h) = sheet_size(shots.len());
    let mut sheet = Picture::filled(w, h, [32, 32, 40]);
    for (i, (shot, pic)) in shots.iter().enumerate() {
        let (col, row) = (i as u32 % COLUMNS, i as u32 / COLUMNS);
        let x = GAP + col * (THUMB_W + GAP);
        let y = GAP + row * (THUMB_H + LABEL_H + GAP);
        let thumb = fit(pic, THUMB_W, THUMB_H);
        blit(
            &mut sheet,
            &thumb,
            x + (THUMB_W - thumb.width) / 2,
            y + (THUMB_H - thumb.height) / 2,
        );
        draw_text(
            &mut sheet,
            &label(shot, i),
            x + 2,
            y + THUMB_H + 2,
            [255, 255, 255],
        );
    }
    sheet
}

/// The animation: one frame a screenshot, shown for the time until the
/// next one (clamped to 0.3–3 s), looping.
pub fn animation(shots: &[(Shot, Picture)]) -> Result<Vec<u8>, ContactError> {
    let first = &shots
        .first()
        .ok_or(ContactError::NoScreenshots {
            dir: PathBuf::new(),
        })?
        .1;
    let w = first.width.min(FRAME_MAX_W);
    let h = (first.height as u64 * w as u64 / first.width.max(1) as u64).max(1) as u32;
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, w, h);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    encoder
        .set_animated(shots.len() as u32, 0)
        .map_err(ContactError::Apng)?;
    let mut writer = encoder.write_header().map_err(ContactError::Apng)?;
    for (i, (shot, pic)) in shots.iter().enumerate() {
        let next = shots.get(i + 1).and_then(|n| n.0.uptime_ms);
        let delay_ms = match (shot.uptime_ms, next) {
            (Some(a), Some(b)) => b.saturating_sub(a).clamp(300, 3000),
            _ => 1000,
        };
        writer
            .set_frame_delay(delay_ms as u16, 1000)
            .map_err(ContactError::Apng)?;
        let mut frame = Picture::filled(w, h, [0; 3]);
        let fitted = fit(pic, w, h);
        blit(
            &mut frame,
            &fitted,
            (w - fitted.width) / 2,
            (h - fitted.height) / 2,
        );
        writer
            .write_image_data(&frame.pixels)
            .map_err(ContactError::Apng)?;
    }
    writer.finish().map_err(ContactError::Apng)?;
    Ok(out)
}

/// Write `contact-sheet.png` and `screens.apng` into `out_dir`; their paths.
pub fn write(session_dir: &Path, out_dir: &Path) -> Result<[PathBuf; 2], ContactError> {
    let shots = load(session_dir)?;
    let sheet = picture::encode_png(&contact_sheet(&shots));
    let anim = animation(&shots)?;
    let sheet_path = out_dir.join("contact-sheet.png");
    let anim_path = out_dir.join("screens.apng");
    for (path, bytes) in [(&sheet_path, sheet), (&anim_path, anim)] {
        std::fs::write(path, bytes).map_err(|source| ContactError::Write {
            path: path.clone(),
            source,
        })?;
    }
    Ok([sheet_path, anim_path])
}
