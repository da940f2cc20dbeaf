use super::*;
use std::io::Cursor;

/// A scripted server: reads come from `input`, writes are recorded.
struct Peer {
    input: Cursor<Vec<u8>>,
    written: Vec<u8>,
}

impl Read for Peer {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.input.read(buf)
    }
}

impl Write for Peer {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.written.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn server_init(width: u16, height: u16, name: &str) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend(width.to_be_bytes());
    b.extend(height.to_be_bytes());
    b.extend(PixelFormat::XRGB8888.to_bytes());
    b.extend((name.len() as u32).to_be_bytes());
    b.extend(name.as_bytes());
    b
}

fn rect_header(x: u16, y: u16, w: u16, h: u16, encoding: i32) -> Vec<u8> {
    let mut b = Vec::new();
    for v in [x, y, w, h] {
        b.extend(v.to_be_bytes());
    }
    b.extend(encoding.to_be_bytes());
    b
}

#[test]
fn handshake_with_security_none() {
    let mut input = b"RFB 003.008\n".to_vec();
    input.extend([2, 2, 1]); // VNC auth and None offered
    input.extend(0u32.to_be_bytes());
    input.extend(server_init(720, 400, "hiperiso-guest"));
    let mut peer = Peer {
        input: Cursor::new(input),
        written: Vec::new(),
    };
    let init = handshake(&mut peer).unwrap();
    assert_eq!((init.width, init.height), (720, 400));
    assert_eq!(init.name, "hiperiso-guest");
    assert_eq!(init.format, PixelFormat::XRGB8888);
    let mut expected = b"RFB 003.008\n".to_vec();
    expected.extend([1, 1]); // security None, shared
    expected.extend([
        0, 0, 0, 0, 32, 24, 0, 1, 0, 255, 0, 255, 0, 255, 16, 8, 0, 0, 0, 0,
    ]);
    expected.extend([2, 0, 0, 6]);
    for e in [1i32, 0, -223, -257, -258, -261] {
        expected.extend(e.to_be_bytes());
    }
    assert_eq!(peer.written, expected);
}

#[test]
fn handshake_errors_name_the_cause() {
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"HTTP/1.1 400".to_vec(), "not RFB"),
        (b"RFB 003.003\n".to_vec(), "not RFB"),
        (
            [
                b"RFB 003.008\n".to_vec(),
                vec![0, 0, 0, 0, 4],
                b"busy".to_vec(),
            ]
            .concat(),
            "refused the connection: busy",
        ),
        (
            [b"RFB 003.008\n".to_vec(), vec![1, 2]].concat(),
            "no 'None' security type",
        ),
        (
            [
                b"RFB 003.008\n".to_vec(),
                vec![1, 1, 0, 0, 0, 1, 0, 0, 0, 2],
                b"no".to_vec(),
            ]
            .concat(),
            "security handshake failed: no",
        ),
        (b"RFB 003.008\n".to_vec(), "connection failed"),
    ];
    for (input, needle) in cases {
        let mut peer = Peer {
            input: Cursor::new(input),
            written: Vec::new(),
        };
        let error = handshake(&mut peer).unwrap_err();
        assert!(error.to_string().contains(needle), "{error} lacks {needle}");
    }
}

#[test]
fn raw_copyrect_and_pseudo_rectangles() {
    let mut screen = Screen::new(4, 3).unwrap();
    let mut m = vec![0u8, 0, 0, 5];
    // Raw 2x2 at (1,1): 0xRRGGBB as little-endian u32s, padding byte set.
    m.extend(rect_header(1, 1, 2, 2, 0));
    for pixel in [0xFF11_2233u32, 0x0044_5566, 0x0077_8899, 0x00AA_BBCC] {
        m.extend(pixel.to_le_bytes());
    }
    // CopyRect: (1,1)-(2,2) to (2,0) overlapping.
    m.extend(rect_header(2, 0, 2, 2, 1));
    m.extend(1u16.to_be_bytes());
    m.extend(1u16.to_be_bytes());
    m.extend(rect_header(0, 0, 0, 0, -258));
    m.extend(rect_header(1, 0, 0, 0, -257));
    m.extend(rect_header(0, 0, 0, 0, -261));
    m.push(0b010);
    let mut events = Vec::new();
    read_server_message(&mut Cursor::new(m), &mut screen, &mut events).unwrap();
    #[rustfmt::skip]
    let expected = vec![
        0, 0, 0x112233, 0x445566,
        0, 0x112233, 0x778899, 0xAABBCC,
        0, 0x778899, 0xAABBCC, 0,
    ];
    assert_eq!(screen.pixels, expected);
    assert_eq!(
        events,
        vec![
            Event::Damage(Rect {
                x: 1,
                y: 1,
                w: 2,
                h: 2
            }),
            Event::Damage(Rect {
                x: 2,
                y: 0,
                w: 2,
                h: 2
            }),
            Event::ExtKeyEvents,
            Event::PointerMode { absolute: true },
            Event::Leds(2),
            Event::UpdateDone,
        ]
    );
}

#[test]
fn desktop_size_replaces_the_screen() {
    let mut screen = Screen::new(4, 3).unwrap();
    screen.pixels[0] = 7;
    let mut m = vec![0u8, 0, 0, 2];
    m.extend(rect_header(0, 0, 640, 480, -223));
    m.extend(rect_header(639, 479, 1, 1, 0));
    m.extend(0x00FF_0000u32.to_le_bytes());
    let mut events = Vec::new();
    read_server_message(&mut Cursor::new(m), &mut screen, &mut events).unwrap();
    assert_eq!((screen.width, screen.height), (640, 480));
    assert_eq!(screen.pixels[0], 0);
    assert_eq!(screen.pixels[640 * 480 - 1], 0xFF0000);
    assert_eq!(
        events[0],
        Event::Resize {
            width: 640,
            height: 480
        }
    );
}

#[test]
fn other_messages_and_errors() {
    let mut screen = Screen::new(4, 3).unwrap();
    let mut events = Vec::new();
    let mut m = vec![2u8]; // bell
    m.extend([3, 0, 0, 0, 0, 0, 0, 3]);
    m.extend(b"abc"); // cut text
    m.extend([1, 0, 0, 0, 0, 1]);
    m.extend([0u8; 6]); // colour map entry
    let mut cursor = Cursor::new(m);
    for _ in 0..3 {
        read_server_message(&mut cursor, &mut screen, &mut events).unwrap();
    }
    assert_eq!(events, vec![Event::Bell]);

    let mut outside = vec![0u8, 0, 0, 1];
    outside.extend(rect_header(3, 0, 2, 1, 0));
    outside.extend([0u8; 8]);
    let error =
        read_server_message(&mut Cursor::new(outside), &mut screen, &mut events).unwrap_err();
    assert!(
        error.to_string().contains("3,0 2x1 lies outside the 4x3"),
        "{error}"
    );

    let mut tight = vec![0u8, 0, 0, 1];
    tight.extend(rect_header(0, 0, 1, 1, 7));
    let error = read_server_message(&mut Cursor::new(tight), &mut screen, &mut events).unwrap_err();
    assert!(matches!(error, RfbError::UnknownEncoding(7)));

    let truncated = [0u8, 0, 0, 1, 0, 0, 0, 0, 0, 1, 0, 1, 0, 0, 0, 0, 1, 2];
    let error =
        read_server_message(&mut Cursor::new(truncated), &mut screen, &mut events).unwrap_err();
    assert!(matches!(error, RfbError::Io(_)));
    assert!(matches!(
        read_server_message(&mut Cursor::new([9u8]), &mut screen, &mut events),
        Err(RfbError::UnknownMessage(9))
    ));
    let mut huge = vec![0u8, 0, 0, 1];
    huge.extend(rect_header(0, 0, 0, 480, -223));
    assert!(matches!(
        read_server_message(&mut Cursor::new(huge), &mut screen, &mut events),
        Err(RfbError::BadSize(0, 480))
    ));
}

#[test]
fn client_messages() {
    assert_eq!(
        update_request(true, 800, 600),
        [3, 1, 0, 0, 0, 0, 3, 32, 2, 88]
    );
    assert_eq!(
        pointer_event(button::LEFT | button::RIGHT, -5, 70000),
        [5, 5, 0, 0, 255, 255]
    );
    assert_eq!(
        ext_key_event(true, 0x61, 0x1e),
        [255, 0, 0, 1, 0, 0, 0, 0x61, 0, 0, 0, 0x1e]
    );
}
