//! Pictures shared by both sides: PPM (QEMU's `screendump`) decoding and PNG
//! encoding/decoding, 8-bit RGB only. No OS specifics, no `init` feature:
//! `hiperiso-init` encodes screenshots with it, `hiperiso-log` decodes them.

/// Why a picture could not be decoded or encoded.
#[derive(Debug, thiserror::Error)]
pub enum PictureError {
    #[error("not a binary PPM (P6, maxval 255): {0}")]
    Ppm(&'static str),
    #[error("cannot decode the PNG")]
    PngDecode(#[source] png::DecodingError),
    #[error("unsupported PNG layout: {0}")]
    PngLayout(&'static str),
    #[error("cannot encode a {width}x{height} PNG")]
    PngEncode {
        width: u32,
        height: u32,
        #[source]
        source: png::EncodingError,
    },
}

/// An RGB picture, 3 bytes a pixel, rows top to bottom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Picture {
    pub width: u32,
    pub height: u32,
    pub pixels: Vec<u8>,
}

impl Picture {
    /// A picture of one colour.
    pub fn filled(width: u32, height: u32, rgb: [u8; 3]) -> Self {
        let n = width as usize * height as usize;
        Picture {
            width,
            height,
            pixels: rgb.iter().copied().cycle().take(n * 3).collect(),
        }
    }

    /// The pixel at (x, y); black outside.
    pub fn get(&self, x: u32, y: u32) -> [u8; 3] {
        if x >= self.width || y >= self.height {
            return [0; 3];
        }
        let i = (y as usize * self.width as usize + x as usize) * 3;
        [self.pixels[i], self.pixels[i + 1], self.pixels[i + 2]]
    }

    /// Set the pixel at (x, y); ignored outside.
    pub fn set(&mut self, x: u32, y: u32, rgb: [u8; 3]) {
        if x < self.width && y < self.height {
            let i = (y as usize * self.width as usize + x as usize) * 3;
            self.pixels[i..i + 3].copy_from_slice(&rgb);
        }
    }
}

/// A binary PPM (`P6`), as QEMU writes it: `P6\n<w> <h>\n255\n<rgb…>`;
/// comments and any whitespace between the header fields are accepted.
pub fn ppm_to_rgb(bytes: &[u8]) -> Result<Picture, PictureError> {
    let mut pos = 0;
    let mut field = || -> Result<&[u8], PictureError> {
        loop {
            match bytes.get(pos) {
                Some(b'#') => {
                    while bytes.get(pos).is_some_and(|&b| b != b'\n') {
                        pos += 1;
                    }
                }
                Some(b) if b.is_ascii_whitespace() => pos += 1,
                Some(_) => break,
                None => return Err(PictureError::Ppm("truncated header")),
            }
        }
        let start = pos;
        while bytes.get(pos).is_some_and(|b| !b.is_ascii_whitespace()) {
            pos += 1;
        }
        Ok(&bytes[start..pos])
    };
    if field()? != b"P6" {
        return Err(PictureError::Ppm("no P6 magic"));
    }
    let mut number = || -> Result<u32, PictureError> {
        std::str::from_utf8(field()?)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or(PictureError::Ppm("bad number in the header"))
    };
    let (width, height, maxval) = (number()?, number()?, number()?);
    if maxval != 255 {
        return Err(PictureError::Ppm("maxval is not 255"));
    }
    // Exactly one whitespace byte ends the header.
    let start = pos + 1;
    let len = width as usize * height as usize * 3;
    let pixels = bytes
        .get(start..start + len)
        .ok_or(PictureError::Ppm("fewer pixels than the header says"))?;
    Ok(Picture {
        width,
        height,
        pixels: pixels.to_vec(),
    })
}

/// Encode as an 8-bit RGB PNG (fast compression: this runs on the stick
/// while the guest boots). Encoding into memory cannot fail for a
/// consistent picture; an inconsistent one (pixels ≠ width × height × 3)
/// gives an empty vector.
pub fn encode_png(picture: &Picture) -> Vec<u8> {
    try_encode_png(picture).unwrap_or_default()
}

/// [`encode_png`], with the error.
pub fn try_encode_png(picture: &Picture) -> Result<Vec<u8>, PictureError> {
    let err = |source| PictureError::PngEncode {
        width: picture.width,
        height: picture.height,
        source,
    };
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, picture.width, picture.height);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    encoder.set_compression(png::Compression::Fast);
    let mut writer = encoder.write_header().map_err(err)?;
    writer.write_image_data(&picture.pixels).map_err(err)?;
    writer.finish().map_err(err)?;
    Ok(out)
}

/// Decode a PNG (8-bit RGB, RGBA, grey or palette) into RGB.
pub fn decode_png(bytes: &[u8]) -> Result<Picture, PictureError> {
    let mut decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = decoder.read_info().map_err(PictureError::PngDecode)?;
    let size = reader
        .output_buffer_size()
        .ok_or(PictureError::PngLayout("too large"))?;
    let mut buf = vec![0; size];
    let info = reader
        .next_frame(&mut buf)
        .map_err(PictureError::PngDecode)?;
    buf.truncate(info.buffer_size());
    let channels = match info.color_type {
        png::ColorType::Rgb => 3,
        png::ColorType::Rgba => 4,
        png::ColorType::Grayscale => 1,
        png::ColorType::GrayscaleAlpha => 2,
        png::ColorType::Indexed => return Err(PictureError::PngLayout("palette not expanded")),
    };
    let pixels = match channels {
        3 => buf,
        4 => buf
            .chunks_exact(4)
            .flat_map(|p| [p[0], p[1], p[2]])
            .collect(),
        _ => buf
            .chunks_exact(channels)
            .flat_map(|p| [p[0], p[0], p[0]])
            .collect(),
    };
    Ok(Picture {
        width: info.width,
        height: info.height,
        pixels,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ppm_round_trips_through_png() {
        let mut ppm = b"P6\n# qemu\n2 1\n255\n".to_vec();
        ppm.extend_from_slice(&[255, 0, 0, 0, 0, 255]);
        let picture = ppm_to_rgb(&ppm).unwrap();
        assert_eq!((picture.width, picture.height), (2, 1));
        let png = encode_png(&picture);
        assert!(png.starts_with(b"\x89PNG"));
        assert_eq!(decode_png(&png).unwrap(), picture);
    }

    #[test]
    fn bad_ppm_is_refused() {
        assert!(ppm_to_rgb(b"P5\n1 1\n255\n\0").is_err());
        assert!(ppm_to_rgb(b"P6\n2 2\n255\n\0\0\0").is_err());
    }
}
