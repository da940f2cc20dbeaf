//! The viewer's per-frame cost on this machine: decoding a full-screen Raw
//! RFB update and fitting it onto a framebuffer (`cargo bench -p
//! hiperiso-runtime --bench viewer`). Printed against the obvious
//! alternative measured in the same run: a per-pixel scaler that computes
//! each destination pixel's source with floating point and writes pixels
//! one by one. The in-VM measurement (frame latency and CPU while the guest
//! redraws its whole screen) is `tests/bench/display.sh`.

use std::hint::black_box;
use std::io::Cursor;
use std::time::Instant;

use hiperiso_runtime::display::fbdev::{Canvas, Channel, Layout};
use hiperiso_runtime::display::rfb::{self, Screen};
use hiperiso_runtime::display::scale::Fit;

fn layout(width: u32, height: u32, bits: u32) -> Layout {
    let (red, green, blue) = if bits == 16 {
        ((11, 5), (5, 6), (0, 5))
    } else {
        ((16, 8), (8, 8), (0, 8))
    };
    let channel = |(offset, length)| Channel { offset, length };
    Layout {
        width,
        height,
        stride: width * bits / 8,
        bytes_per_pixel: bits / 8,
        red: channel(red),
        green: channel(green),
        blue: channel(blue),
        start: 0,
    }
}

/// A FramebufferUpdate with one Raw rectangle covering the screen.
fn full_update(width: u16, height: u16, seed: u32) -> Vec<u8> {
    let mut m = vec![0u8, 0, 0, 1, 0, 0, 0, 0];
    m.extend(width.to_be_bytes());
    m.extend(height.to_be_bytes());
    m.extend(0i32.to_be_bytes());
    for i in 0..u32::from(width) * u32::from(height) {
        m.extend((i.wrapping_mul(2654435761) ^ seed).to_le_bytes());
    }
    m
}

/// The alternative: per destination pixel, float source coordinates,
/// a generic pack and a write of that pixel alone.
fn naive_scale(pixels: &[u32], src: (u32, u32), layout: &Layout, bytes: &mut [u8]) {
    let scale = (layout.width as f32 / src.0 as f32).min(layout.height as f32 / src.1 as f32);
    let (w, h) = ((src.0 as f32 * scale) as u32, (src.1 as f32 * scale) as u32);
    let (x0, y0) = ((layout.width - w) / 2, (layout.height - h) / 2);
    let bpp = layout.bytes_per_pixel as usize;
    for y in 0..h {
        for x in 0..w {
            let sx = ((x as f32 / scale) as u32).min(src.0 - 1);
            let sy = ((y as f32 / scale) as u32).min(src.1 - 1);
            let packed = layout.pack(pixels[(sy * src.0 + sx) as usize]);
            let at = ((y0 + y) * layout.stride + (x0 + x) * layout.bytes_per_pixel) as usize;
            bytes[at..at + bpp].copy_from_slice(&packed.to_le_bytes()[..bpp]);
        }
    }
}

fn ms_per_frame(frames: u32, mut f: impl FnMut(u32)) -> f64 {
    f(0); // warm up
    let start = Instant::now();
    for i in 0..frames {
        f(i);
    }
    start.elapsed().as_secs_f64() * 1000.0 / f64::from(frames)
}

fn main() {
    const FRAMES: u32 = 30;
    println!("viewer: ms per full-screen frame (mean of {FRAMES}); lower is better");
    println!(
        "{:<34} {:>9} {:>9} {:>9} {:>7}",
        "guest -> host", "decode", "fit", "naive", "ratio"
    );
    for (guest, host, bits) in [
        ((640u16, 400u16), (800u32, 600u32), 32u32),
        ((720, 400), (1920, 1080), 32),
        ((1024, 768), (1920, 1080), 32),
        ((1920, 1080), (1920, 1080), 32),
        ((1280, 800), (1366, 768), 16),
    ] {
        let updates: Vec<Vec<u8>> = (0..2)
            .map(|seed| full_update(guest.0, guest.1, seed))
            .collect();
        let mut screen = Screen::new(guest.0, guest.1).unwrap();
        let mut events = Vec::new();
        let decode = ms_per_frame(FRAMES, |i| {
            let mut cursor = Cursor::new(&updates[(i % 2) as usize]);
            rfb::read_server_message(&mut cursor, &mut screen, &mut events).unwrap();
            events.clear();
        });
        let layout = layout(host.0, host.1, bits);
        let mut bytes = vec![0u8; (layout.stride * layout.height) as usize];
        let fit = Fit::new(guest.0.into(), guest.1.into(), host.0, host.1);
        let fitted = ms_per_frame(FRAMES, |_| {
            let mut canvas = Canvas::new(layout, &mut bytes);
            canvas.draw_scaled(&screen.pixels, &fit, 0, 0, guest.0.into(), guest.1.into());
            black_box(&bytes);
        });
        let naive = ms_per_frame(FRAMES, |_| {
            naive_scale(
                &screen.pixels,
                (guest.0.into(), guest.1.into()),
                &layout,
                &mut bytes,
            );
            black_box(&bytes);
        });
        println!(
            "{:<34} {:>9.2} {:>9.2} {:>9.2} {:>6.1}x",
            format!(
                "{}x{} -> {}x{} {bits} bpp",
                guest.0, guest.1, host.0, host.1
            ),
            decode,
            fitted,
            naive,
            naive / fitted
        );
    }
}
