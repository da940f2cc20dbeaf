//! The Linux framebuffer device (`/dev/fb0`, from efifb, simpledrm or a
//! DRM driver's fbdev emulation): its screen info (`linux/fb.h`'s
//! `fb_var_screeninfo` and `fb_fix_screeninfo`, parsed from bytes), its
//! memory mapped, and a [`Canvas`] that draws `0x00RRGGBB` pixels into any
//! packed RGB layout (32, 24 or 16 bits per pixel).

use crate::display::scale::Fit;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

const FBIOGET_VSCREENINFO: libc::c_ulong = 0x4600;
const FBIOGET_FSCREENINFO: libc::c_ulong = 0x4602;
/// `sizeof(struct fb_var_screeninfo)`.
pub const VAR_INFO_SIZE: usize = 160;
/// `sizeof(struct fb_fix_screeninfo)` on 64-bit Linux.
pub const FIX_INFO_SIZE: usize = 80;
/// `FB_TYPE_PACKED_PIXELS`.
const FB_TYPE_PACKED_PIXELS: u32 = 0;
/// `FB_VISUAL_TRUECOLOR` and `FB_VISUAL_DIRECTCOLOR`.
const FB_VISUALS_RGB: [u32; 2] = [2, 4];

#[derive(Debug, thiserror::Error)]
pub enum FbError {
    #[error("{path}: {action}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path}: {reason}")]
    Unsupported { path: PathBuf, reason: String },
}

/// One colour channel: bit offset and width within a pixel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Channel {
    pub offset: u32,
    pub length: u32,
}

/// The visible screen's geometry and pixel layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub width: u32,
    pub height: u32,
    /// Bytes from one row to the next.
    pub stride: u32,
    pub bytes_per_pixel: u32,
    pub red: Channel,
    pub green: Channel,
    pub blue: Channel,
    /// Byte offset of the visible screen's first pixel (panning).
    pub start: u32,
}

fn u32_at(b: &[u8], index: usize) -> u32 {
    u32::from_ne_bytes([
        b[index * 4],
        b[index * 4 + 1],
        b[index * 4 + 2],
        b[index * 4 + 3],
    ])
}

impl Layout {
    /// From the two structures' bytes as the kernel filled them.
    pub fn parse(var: &[u8; VAR_INFO_SIZE], fix: &[u8; FIX_INFO_SIZE]) -> Result<Layout, String> {
        let (width, height) = (u32_at(var, 0), u32_at(var, 1));
        let (xoffset, yoffset) = (u32_at(var, 4), u32_at(var, 5));
        let bits = u32_at(var, 6);
        let channel = |i: usize| Channel {
            offset: u32_at(var, i),
            length: u32_at(var, i + 1),
        };
        let (red, green, blue) = (channel(8), channel(11), channel(14));
        let fb_type = u32::from_ne_bytes([fix[28], fix[29], fix[30], fix[31]]);
        let visual = u32::from_ne_bytes([fix[36], fix[37], fix[38], fix[39]]);
        let stride = u32::from_ne_bytes([fix[48], fix[49], fix[50], fix[51]]);
        if fb_type != FB_TYPE_PACKED_PIXELS || !FB_VISUALS_RGB.contains(&visual) {
            return Err(format!(
                "not a packed true-colour framebuffer (type {fb_type}, visual {visual})"
            ));
        }
        if !matches!(bits, 16 | 24 | 32) {
            return Err(format!("{bits} bits per pixel are not supported"));
        }
        let bytes_per_pixel = bits / 8;
        for c in [red, green, blue] {
            if c.length == 0 || c.length > 8 || c.offset + c.length > bits {
                return Err(format!("colour channel {c:?} does not fit {bits} bits"));
            }
        }
        if width == 0
            || height == 0
            || u64::from(stride) < u64::from(width) * u64::from(bytes_per_pixel)
        {
            return Err(format!(
                "bad geometry {width}x{height}, {stride} bytes per row"
            ));
        }
        Ok(Layout {
            width,
            height,
            stride,
            bytes_per_pixel,
            red,
            green,
            blue,
            start: yoffset * stride + xoffset * bytes_per_pixel,
        })
    }

    /// Bytes from the start of the mapping to the end of the visible screen.
    pub fn visible_end(&self) -> u64 {
        u64::from(self.start) + u64::from(self.stride) * u64::from(self.height)
    }

    /// `0x00RRGGBB` in this layout.
    pub fn pack(&self, rgb: u32) -> u32 {
        let part = |value: u32, c: Channel| (value >> (8 - c.length)) << c.offset;
        part((rgb >> 16) & 0xFF, self.red)
            | part((rgb >> 8) & 0xFF, self.green)
            | part(rgb & 0xFF, self.blue)
    }

    /// A pixel of this layout back to `0x00RRGGBB` (low bits zero).
    pub fn unpack(&self, pixel: u32) -> u32 {
        let part = |c: Channel| ((pixel >> c.offset) & ((1 << c.length) - 1)) << (8 - c.length);
        (part(self.red) << 16) | (part(self.green) << 8) | part(self.blue)
    }

    fn is_xrgb8888(&self) -> bool {
        self.bytes_per_pixel == 4
            && self.red
                == Channel {
                    offset: 16,
                    length: 8,
                }
            && self.green
                == Channel {
                    offset: 8,
                    length: 8,
                }
            && self.blue
                == Channel {
                    offset: 0,
                    length: 8,
                }
    }
}

/// Pixels in memory with a [`Layout`]: the mapped framebuffer, or a
/// buffer in tests.
pub struct Canvas<'a> {
    pub layout: Layout,
    bytes: &'a mut [u8],
}

impl<'a> Canvas<'a> {
    /// `bytes` must hold the visible screen.
    pub fn new(layout: Layout, bytes: &'a mut [u8]) -> Canvas<'a> {
        assert!(
            bytes.len() as u64 >= layout.visible_end(),
            "canvas smaller than its layout"
        );
        Canvas { layout, bytes }
    }

    fn offset(&self, x: u32, y: u32) -> usize {
        (self.layout.start + y * self.layout.stride + x * self.layout.bytes_per_pixel) as usize
    }

    fn put_packed(&mut self, at: usize, packed: u32) {
        let n = self.layout.bytes_per_pixel as usize;
        self.bytes[at..at + n].copy_from_slice(&packed.to_le_bytes()[..n]);
    }

    /// The pixel at (`x`, `y`) as `0x00RRGGBB`.
    pub fn get(&self, x: u32, y: u32) -> u32 {
        let at = self.offset(x, y);
        let mut raw = [0u8; 4];
        let n = self.layout.bytes_per_pixel as usize;
        raw[..n].copy_from_slice(&self.bytes[at..at + n]);
        self.layout.unpack(u32::from_le_bytes(raw))
    }

    /// Fill a rectangle (clipped to the screen).
    pub fn fill(&mut self, x: u32, y: u32, width: u32, height: u32, rgb: u32) {
        let packed = self.layout.pack(rgb);
        let x_end = x.saturating_add(width).min(self.layout.width);
        let y_end = y.saturating_add(height).min(self.layout.height);
        for row in y..y_end {
            for column in x..x_end {
                let at = self.offset(column, row);
                self.put_packed(at, packed);
            }
        }
    }

    /// Redraw the part of the fitted picture that shows source rectangle
    /// (`sx`, `sy`, `sw`, `sh`) of `pixels` (`fit.src_width` wide).
    pub fn draw_scaled(&mut self, pixels: &[u32], fit: &Fit, sx: u32, sy: u32, sw: u32, sh: u32) {
        let columns = fit.columns_of(sx..sx + sw);
        if columns.is_empty() {
            return;
        }
        let sources = fit.source_columns(columns.clone());
        let src_width = fit.src_width as usize;
        let fast = self.layout.is_xrgb8888();
        let bpp = self.layout.bytes_per_pixel as usize;
        // Each distinct source row is scaled once into `line`; the
        // framebuffer is only written, in whole rows (video memory is slow
        // to read and fast to fill sequentially).
        let mut line = vec![0u8; sources.len() * bpp];
        let mut line_row = None;
        for row in fit.rows_of(sy..sy + sh) {
            let source = fit.source_row(row);
            if line_row != Some(source) {
                let source_row = &pixels[source as usize * src_width..][..src_width];
                if fast {
                    for (&column, out) in sources.iter().zip(line.chunks_exact_mut(4)) {
                        out.copy_from_slice(&source_row[column as usize].to_le_bytes());
                    }
                } else {
                    let layout = self.layout;
                    match bpp {
                        2 => pack_line::<2>(&layout, source_row, sources, &mut line),
                        3 => pack_line::<3>(&layout, source_row, sources, &mut line),
                        _ => pack_line::<4>(&layout, source_row, sources, &mut line),
                    }
                }
                line_row = Some(source);
            }
            let start = self.offset(fit.x + columns.start as u32, fit.y + row as u32);
            self.bytes[start..start + line.len()].copy_from_slice(&line);
        }
    }
}

/// One scaled row in a layout of `N` bytes per pixel.
fn pack_line<const N: usize>(
    layout: &Layout,
    source_row: &[u32],
    sources: &[u32],
    line: &mut [u8],
) {
    for (&column, out) in sources.iter().zip(line.chunks_exact_mut(N)) {
        let packed = layout.pack(source_row[column as usize]).to_le_bytes();
        out.copy_from_slice(&packed[..N]);
    }
}

/// `/dev/fbN`, mapped.
pub struct Framebuffer {
    pub path: PathBuf,
    pub layout: Layout,
    _file: File,
    map: *mut u8,
    len: usize,
}

// SAFETY: the mapping is owned by this value and only reached through it.
unsafe impl Send for Framebuffer {}

impl Framebuffer {
    pub fn open(path: &Path) -> Result<Framebuffer, FbError> {
        let io_error = |action| {
            move |source| FbError::Io {
                action,
                path: path.to_path_buf(),
                source,
            }
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(io_error("cannot open the framebuffer"))?;
        let mut var = [0u8; VAR_INFO_SIZE];
        let mut fix = [0u8; FIX_INFO_SIZE];
        // SAFETY: the buffers have the kernel structures' sizes.
        let ok = unsafe {
            libc::ioctl(file.as_raw_fd(), FBIOGET_VSCREENINFO, var.as_mut_ptr()) == 0
                && libc::ioctl(file.as_raw_fd(), FBIOGET_FSCREENINFO, fix.as_mut_ptr()) == 0
        };
        if !ok {
            return Err(io_error("FBIOGET_*SCREENINFO failed")(
                io::Error::last_os_error(),
            ));
        }
        let layout = Layout::parse(&var, &fix).map_err(|reason| FbError::Unsupported {
            path: path.to_path_buf(),
            reason,
        })?;
        let smem_len = u32::from_ne_bytes([fix[24], fix[25], fix[26], fix[27]]);
        let len = usize::try_from(layout.visible_end()).unwrap_or(usize::MAX);
        if len > smem_len as usize {
            return Err(FbError::Unsupported {
                path: path.to_path_buf(),
                reason: format!(
                    "the visible screen ({len} bytes) exceeds the memory ({smem_len} bytes)"
                ),
            });
        }
        // SAFETY: a shared mapping of the device's memory, `len` bytes.
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if map == libc::MAP_FAILED {
            return Err(io_error("cannot map the framebuffer")(
                io::Error::last_os_error(),
            ));
        }
        Ok(Framebuffer {
            path: path.to_path_buf(),
            layout,
            _file: file,
            map: map.cast(),
            len,
        })
    }

    pub fn canvas(&mut self) -> Canvas<'_> {
        // SAFETY: `map` is a live mapping of `len` bytes owned by self.
        let bytes = unsafe { std::slice::from_raw_parts_mut(self.map, self.len) };
        Canvas::new(self.layout, bytes)
    }
}

impl Drop for Framebuffer {
    fn drop(&mut self) {
        // SAFETY: unmapping our own mapping once.
        unsafe { libc::munmap(self.map.cast(), self.len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn infos(
        width: u32,
        height: u32,
        bits: u32,
        rgb: [(u32, u32); 3],
        stride: u32,
    ) -> ([u8; 160], [u8; 80]) {
        let mut var = [0u8; VAR_INFO_SIZE];
        let mut put = |i: usize, v: u32| var[i * 4..i * 4 + 4].copy_from_slice(&v.to_ne_bytes());
        put(0, width);
        put(1, height);
        put(2, width);
        put(3, height * 2);
        put(5, 0);
        put(6, bits);
        for (n, (offset, length)) in rgb.iter().enumerate() {
            put(8 + n * 3, *offset);
            put(9 + n * 3, *length);
        }
        let mut fix = [0u8; FIX_INFO_SIZE];
        fix[..6].copy_from_slice(b"EFI VG");
        fix[24..28].copy_from_slice(&(stride * height * 2).to_ne_bytes());
        fix[36..40].copy_from_slice(&2u32.to_ne_bytes());
        fix[48..52].copy_from_slice(&stride.to_ne_bytes());
        (var, fix)
    }

    #[test]
    fn parses_efifb_xrgb8888() {
        let (var, fix) = infos(1280, 800, 32, [(16, 8), (8, 8), (0, 8)], 5120);
        let layout = Layout::parse(&var, &fix).unwrap();
        assert_eq!(
            (
                layout.width,
                layout.height,
                layout.stride,
                layout.bytes_per_pixel
            ),
            (1280, 800, 5120, 4)
        );
        assert!(layout.is_xrgb8888());
        assert_eq!(layout.pack(0x123456), 0x123456);
        assert_eq!(layout.visible_end(), 5120 * 800);
    }

    #[test]
    fn parse_rejects_what_it_cannot_draw() {
        let (var, mut fix) = infos(640, 480, 8, [(0, 8), (0, 8), (0, 8)], 640);
        assert!(
            Layout::parse(&var, &fix)
                .unwrap_err()
                .contains("8 bits per pixel")
        );
        let (var, _) = infos(640, 480, 32, [(16, 8), (8, 8), (0, 8)], 2560);
        fix[36..40].copy_from_slice(&3u32.to_ne_bytes()); // pseudocolour
        assert!(Layout::parse(&var, &fix).unwrap_err().contains("visual 3"));
        let (var, fix) = infos(640, 480, 32, [(16, 8), (8, 8), (0, 8)], 1000);
        assert!(
            Layout::parse(&var, &fix)
                .unwrap_err()
                .contains("bad geometry")
        );
    }

    #[test]
    fn rgb565_and_bgr888_round_trip() {
        let (var, fix) = infos(4, 2, 16, [(11, 5), (5, 6), (0, 5)], 8);
        let layout = Layout::parse(&var, &fix).unwrap();
        assert_eq!(layout.pack(0xFF0000), 0xF800);
        assert_eq!(layout.pack(0x00FF00), 0x07E0);
        assert_eq!(layout.unpack(0xFFFF), 0xF8FCF8);
        let mut bytes = vec![0u8; 16];
        let mut canvas = Canvas::new(layout, &mut bytes);
        canvas.fill(1, 1, 2, 5, 0x0000FF);
        assert_eq!(canvas.get(1, 1), 0x0000F8);
        assert_eq!(canvas.get(0, 1), 0);
        assert_eq!(&bytes[8..14], &[0, 0, 0x1F, 0, 0x1F, 0]);

        let (var, fix) = infos(2, 1, 24, [(0, 8), (8, 8), (16, 8)], 6);
        let layout = Layout::parse(&var, &fix).unwrap();
        let mut bytes = vec![0u8; 6];
        Canvas::new(layout, &mut bytes).fill(0, 0, 9, 9, 0x112233);
        assert_eq!(
            bytes,
            [0x11, 0x22, 0x33, 0x11, 0x22, 0x33],
            "red in the low byte"
        );
    }

    /// A 2x2 checkerboard scaled 3x onto 8x6 (centred: 1 black column each side).
    #[test]
    fn draw_scaled_fills_the_fit() {
        let (var, fix) = infos(8, 6, 32, [(16, 8), (8, 8), (0, 8)], 40);
        let layout = Layout::parse(&var, &fix).unwrap();
        let mut bytes = vec![0u8; 40 * 6];
        let mut canvas = Canvas::new(layout, &mut bytes);
        let pixels = [0xFF0000, 0x00FF00, 0x0000FF, 0xFFFFFF];
        let fit = Fit::new(2, 2, 8, 6);
        assert_eq!((fit.x, fit.y, fit.width, fit.height), (1, 0, 6, 6));
        canvas.draw_scaled(&pixels, &fit, 0, 0, 2, 2);
        for y in 0..6 {
            let row: Vec<u32> = (0..8).map(|x| canvas.get(x, y)).collect();
            let (left, right) = if y < 3 {
                (0xFF0000, 0x00FF00)
            } else {
                (0x0000FF, 0xFFFFFF)
            };
            assert_eq!(
                row,
                [0, left, left, left, right, right, right, 0],
                "row {y}"
            );
        }
        // Damage to one source pixel redraws only its 3x3 block.
        let changed = [0xFF0000, 0x00FF00, 0x0000FF, 0x123456];
        canvas.fill(0, 0, 8, 6, 0x010101);
        canvas.draw_scaled(&changed, &fit, 1, 1, 1, 1);
        for y in 0..6 {
            for x in 0..8 {
                let expected = if (4..7).contains(&x) && y >= 3 {
                    0x123456
                } else {
                    0x010101
                };
                assert_eq!(canvas.get(x, y), expected, "({x},{y})");
            }
        }
        // 16 bpp goes through the generic path.
        let (var, fix) = infos(8, 6, 16, [(11, 5), (5, 6), (0, 5)], 16);
        let mut small = vec![0u8; 16 * 6];
        let mut canvas = Canvas::new(Layout::parse(&var, &fix).unwrap(), &mut small);
        canvas.draw_scaled(&pixels, &fit, 0, 0, 2, 2);
        assert_eq!(canvas.get(6, 5), 0xF8FCF8);
        assert_eq!(canvas.get(7, 5), 0);
    }
}
