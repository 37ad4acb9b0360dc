//! A small PNG of a cheque for case attachments, drawn with a 5×7 bitmap font and written by a
//! minimal PNG encoder (stored deflate blocks), so the tests need no image library.

// Each test binary that includes this file uses a different subset of it.
#![allow(dead_code)]

const WIDTH: usize = 640;
const HEIGHT: usize = 280;

type Rgb = [u8; 3];
const PAPER: Rgb = [250, 246, 230];
const INK: Rgb = [22, 38, 84];
const RULE: Rgb = [120, 130, 150];
const BORDER: Rgb = [34, 94, 74];

struct Canvas {
    pixels: Vec<u8>,
}

impl Canvas {
    fn new() -> Self {
        let mut pixels = Vec::with_capacity(WIDTH * HEIGHT * 3);
        for _ in 0..WIDTH * HEIGHT {
            pixels.extend_from_slice(&PAPER);
        }
        Self { pixels }
    }

    fn set(&mut self, x: usize, y: usize, colour: Rgb) {
        if x < WIDTH && y < HEIGHT {
            let at = (y * WIDTH + x) * 3;
            self.pixels[at..at + 3].copy_from_slice(&colour);
        }
    }

    fn rect(&mut self, x: usize, y: usize, w: usize, h: usize, colour: Rgb) {
        for yy in y..y + h {
            for xx in x..x + w {
                self.set(xx, yy, colour);
            }
        }
    }

    fn frame(&mut self, x: usize, y: usize, w: usize, h: usize, thickness: usize, colour: Rgb) {
        self.rect(x, y, w, thickness, colour);
        self.rect(x, y + h - thickness, w, thickness, colour);
        self.rect(x, y, thickness, h, colour);
        self.rect(x + w - thickness, y, thickness, h, colour);
    }

    fn text(&mut self, x: usize, y: usize, scale: usize, colour: Rgb, text: &str) {
        for (i, c) in text.chars().enumerate() {
            let rows = glyph(c.to_ascii_uppercase());
            let left = x + i * 6 * scale;
            for (row, bits) in rows.iter().enumerate() {
                for col in 0..5 {
                    if bits & (0b10000 >> col) != 0 {
                        self.rect(left + col * scale, y + row * scale, scale, scale, colour);
                    }
                }
            }
        }
    }
}

fn glyph(c: char) -> [u8; 7] {
    match c {
        'A' => [14, 17, 17, 31, 17, 17, 17],
        'B' => [30, 17, 17, 30, 17, 17, 30],
        'C' => [14, 17, 16, 16, 16, 17, 14],
        'D' => [30, 17, 17, 17, 17, 17, 30],
        'E' => [31, 16, 16, 30, 16, 16, 31],
        'F' => [31, 16, 16, 30, 16, 16, 16],
        'G' => [14, 17, 16, 23, 17, 17, 15],
        'H' => [17, 17, 17, 31, 17, 17, 17],
        'I' => [14, 4, 4, 4, 4, 4, 14],
        'J' => [7, 2, 2, 2, 2, 18, 12],
        'K' => [17, 18, 20, 24, 20, 18, 17],
        'L' => [16, 16, 16, 16, 16, 16, 31],
        'M' => [17, 27, 21, 21, 17, 17, 17],
        'N' => [17, 17, 25, 21, 19, 17, 17],
        'O' => [14, 17, 17, 17, 17, 17, 14],
        'P' => [30, 17, 17, 30, 16, 16, 16],
        'Q' => [14, 17, 17, 17, 21, 18, 13],
        'R' => [30, 17, 17, 30, 20, 18, 17],
        'S' => [15, 16, 16, 14, 1, 1, 30],
        'T' => [31, 4, 4, 4, 4, 4, 4],
        'U' => [17, 17, 17, 17, 17, 17, 14],
        'V' => [17, 17, 17, 17, 17, 10, 4],
        'W' => [17, 17, 17, 21, 21, 21, 10],
        'X' => [17, 17, 10, 4, 10, 17, 17],
        'Y' => [17, 17, 10, 4, 4, 4, 4],
        'Z' => [31, 1, 2, 4, 8, 16, 31],
        '0' => [14, 17, 19, 21, 25, 17, 14],
        '1' => [4, 12, 4, 4, 4, 4, 14],
        '2' => [14, 17, 1, 2, 4, 8, 31],
        '3' => [31, 2, 4, 2, 1, 17, 14],
        '4' => [2, 6, 10, 18, 31, 2, 2],
        '5' => [31, 16, 30, 1, 1, 17, 14],
        '6' => [6, 8, 16, 30, 17, 17, 14],
        '7' => [31, 1, 2, 4, 8, 8, 8],
        '8' => [14, 17, 17, 14, 17, 17, 14],
        '9' => [14, 17, 17, 15, 1, 2, 12],
        '$' => [4, 15, 20, 14, 5, 30, 4],
        ',' => [0, 0, 0, 0, 12, 4, 8],
        '.' => [0, 0, 0, 0, 0, 12, 12],
        '-' => [0, 0, 0, 31, 0, 0, 0],
        ':' => [0, 12, 12, 0, 12, 12, 0],
        '/' => [1, 2, 2, 4, 8, 8, 16],
        '#' => [10, 10, 31, 10, 31, 10, 10],
        _ => [0; 7],
    }
}

/// A cheque made out to `payee` for `amount` (e.g. "7,500.00", and in `words`), with `reference`
/// on the MICR line.
pub fn cheque_png(payee: &str, amount: &str, words: &str, reference: &str) -> Vec<u8> {
    let mut canvas = Canvas::new();
    canvas.frame(4, 4, WIDTH - 8, HEIGHT - 8, 4, BORDER);
    canvas.frame(12, 12, WIDTH - 24, HEIGHT - 24, 1, BORDER);
    canvas.text(28, 28, 3, BORDER, "ACME SAVINGS BANK");
    canvas.text(470, 30, 2, INK, "NO. 001042");
    canvas.text(28, 86, 2, RULE, "PAY TO THE");
    canvas.text(28, 104, 2, RULE, "ORDER OF");
    canvas.text(164, 92, 3, INK, payee);
    canvas.rect(160, 118, 260, 2, RULE);
    canvas.frame(432, 84, 188, 40, 2, INK);
    canvas.text(442, 94, 3, INK, &format!("${amount}"));
    canvas.text(28, 150, 2, INK, words);
    canvas.rect(24, 170, 592, 2, RULE);
    canvas.text(28, 196, 2, RULE, "MEMO");
    canvas.text(84, 196, 2, INK, "INVOICE 2024-118");
    canvas.rect(80, 214, 220, 1, RULE);
    // A signature: a damped wave over the signature line.
    for x in 0..200_usize {
        let t = x as f64 / 200.0;
        let y = 200.0 + (t * 19.0).sin() * 10.0 * (1.0 - t) + (t * 5.0).cos() * 3.0;
        for dy in 0..2 {
            canvas.set(392 + x, y as usize + dy, INK);
        }
    }
    canvas.rect(380, 214, 236, 1, RULE);
    canvas.text(28, 238, 2, INK, &format!("#000123# 0042:7781# {reference}"));
    encode_png(WIDTH, HEIGHT, &canvas.pixels)
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFF_u32;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn adler32(bytes: &[u8]) -> u32 {
    let (mut a, mut b) = (1_u32, 0_u32);
    for &byte in bytes {
        a = (a + u32::from(byte)) % 65521;
        b = (b + a) % 65521;
    }
    (b << 16) | a
}

fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    let mut crc_input = kind.to_vec();
    crc_input.extend_from_slice(data);
    out.extend_from_slice(&crc_input);
    out.extend_from_slice(&crc32(&crc_input).to_be_bytes());
}

/// An 8-bit RGB PNG, its image data in uncompressed (stored) deflate blocks.
fn encode_png(width: usize, height: usize, rgb: &[u8]) -> Vec<u8> {
    let mut raw = Vec::with_capacity((width * 3 + 1) * height);
    for row in rgb.chunks(width * 3) {
        raw.push(0);
        raw.extend_from_slice(row);
    }
    let mut zlib = vec![0x78, 0x01];
    let blocks: Vec<&[u8]> = raw.chunks(65_535).collect();
    for (i, block) in blocks.iter().enumerate() {
        zlib.push(u8::from(i + 1 == blocks.len()));
        let len = block.len() as u16;
        zlib.extend_from_slice(&len.to_le_bytes());
        zlib.extend_from_slice(&(!len).to_le_bytes());
        zlib.extend_from_slice(block);
    }
    zlib.extend_from_slice(&adler32(&raw).to_be_bytes());

    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut header = Vec::new();
    header.extend_from_slice(&(width as u32).to_be_bytes());
    header.extend_from_slice(&(height as u32).to_be_bytes());
    header.extend_from_slice(&[8, 2, 0, 0, 0]);
    chunk(&mut png, b"IHDR", &header);
    chunk(&mut png, b"IDAT", &zlib);
    chunk(&mut png, b"IEND", &[]);
    png
}

#[cfg(test)]
mod tests {
    #[test]
    fn checksums_match_known_values() {
        assert_eq!(super::crc32(b"IEND"), 0xAE42_6082);
        assert_eq!(super::adler32(b"Wikipedia"), 0x11E6_0398);
        let png = super::cheque_png(
            "ANN SMITH",
            "7,500.00",
            "SEVEN THOUSAND FIVE HUNDRED",
            "CHQ-1",
        );
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"));
        assert!(png.ends_with(b"IEND\xaeB`\x82"));
    }
}
