//! The input-token estimate used for admission: a single pass over the request's JSON bytes.
//! It returns a range: `high` is meant never to be below the real count (it sizes the
//! reservation); `low` is meant never to be above it (below it, a request is surely blocked).
//! Between the two, the handler asks the upstream's free `count_tokens`. See docs/admission.md.

/// Strings this long made only of base64 characters are binary (images, PDFs), not text.
const BLOB_MIN: usize = 512;

/// Token range for a request body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Estimate {
    pub low: u64,
    pub high: u64,
}

#[derive(Default)]
struct Counts {
    /// ASCII characters of text, keys and structure.
    ascii: u64,
    /// Non-ASCII characters (each at most about one token).
    other: u64,
    /// Upper and lower token counts of binary blobs.
    blob_high: u64,
}

/// Estimates the prompt tokens of a Messages request body. `new_tokenizer` is true for models
/// whose tokenizer yields up to 35 % more tokens (Opus 4.7 and later, the 5.x family).
pub fn estimate(body: &[u8], new_tokenizer: bool) -> Estimate {
    let c = scan(body);
    // Calibrated against the reference tokenizer on the sample in docs/admission.md: dense
    // ASCII (JSON, code, ids) runs down to ~2.3 characters a token, English prose ~4.3.
    let high_text = c.ascii.div_ceil(2) + c.other + 8;
    let low_text = c.ascii / 6 + c.other / 4;
    let high = if new_tokenizer {
        high_text + high_text.div_ceil(100) * 35
    } else {
        high_text
    };
    Estimate {
        low: low_text,
        high: high + c.blob_high,
    }
}

fn scan(b: &[u8]) -> Counts {
    let mut c = Counts::default();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'"' {
            i = string(b, i + 1, &mut c);
        } else {
            if !b[i].is_ascii_whitespace() {
                c.ascii += 1;
            }
            i += 1;
        }
    }
    c
}

/// Counts one JSON string starting after its opening quote; returns the index after it.
fn string(b: &[u8], start: usize, c: &mut Counts) -> usize {
    let (mut ascii, mut other, mut base64ish) = (0u64, 0u64, true);
    let mut i = start;
    while i < b.len() {
        let ch = b[i];
        match ch {
            b'"' => break,
            b'\\' => {
                base64ish &= b.get(i + 1) == Some(&b'/');
                if b.get(i + 1) == Some(&b'u') {
                    other += 1;
                    i += 6;
                } else {
                    ascii += 1;
                    i += 2;
                }
                continue;
            }
            0x80.. => {
                base64ish = false;
                if ch >= 0xC0 {
                    other += 1;
                }
            }
            _ => {
                base64ish &= ch.is_ascii_alphanumeric() || ch == b'+' || ch == b'/' || ch == b'=';
                ascii += 1;
            }
        }
        i += 1;
    }
    let end = i.min(b.len());
    if base64ish && end - start >= BLOB_MIN {
        c.blob_high += blob_tokens(&b[start..end]);
    } else {
        c.ascii += ascii;
        c.other += other;
    }
    end + 1
}

/// Upper bound for a base64 blob: an image by its pixel size (⌈w/28⌉·⌈h/28⌉, at most the
/// largest image any model accepts), anything else (PDF pages) at one token per 3 bytes.
fn blob_tokens(b64: &[u8]) -> u64 {
    const MAX_IMAGE: u64 = (2576 / 28 + 1) * (2576 / 28 + 1);
    let head = decode_prefix(b64, 64 * 1024);
    match image_size(&head) {
        Some((w, h)) => (u64::from(w).div_ceil(28) * u64::from(h).div_ceil(28)).min(MAX_IMAGE),
        None => (b64.len() as u64 * 3 / 4).div_ceil(3),
    }
}

fn decode_prefix(b64: &[u8], max: usize) -> Vec<u8> {
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let mut out = Vec::with_capacity(max.min(b64.len()));
    let (mut acc, mut bits) = (0u32, 0);
    for &ch in b64.iter().filter(|&&ch| ch != b'\\') {
        let Some(v) = val(ch) else { break };
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            if out.len() >= max {
                break;
            }
        }
    }
    out
}

/// Width and height from a PNG, GIF, WebP or JPEG header.
pub fn image_size(d: &[u8]) -> Option<(u32, u32)> {
    let be16 = |i: usize| -> Option<u32> {
        Some(u32::from(u16::from_be_bytes([*d.get(i)?, *d.get(i + 1)?])))
    };
    let le16 = |i: usize| -> Option<u32> {
        Some(u32::from(u16::from_le_bytes([*d.get(i)?, *d.get(i + 1)?])))
    };
    let be32 =
        |i: usize| -> Option<u32> { Some(u32::from_be_bytes(d.get(i..i + 4)?.try_into().ok()?)) };
    if d.starts_with(b"\x89PNG\r\n\x1a\n") {
        return Some((be32(16)?, be32(20)?));
    }
    if d.starts_with(b"GIF8") {
        return Some((le16(6)?, le16(8)?));
    }
    if d.starts_with(b"RIFF") && d.get(8..12) == Some(b"WEBP") {
        let le24 = |i: usize| -> Option<u32> {
            Some(u32::from_le_bytes([
                *d.get(i)?,
                *d.get(i + 1)?,
                *d.get(i + 2)?,
                0,
            ]))
        };
        return match d.get(12..16)? {
            b"VP8X" => Some((le24(24)? + 1, le24(27)? + 1)),
            b"VP8 " => Some((le16(26)? & 0x3FFF, le16(28)? & 0x3FFF)),
            b"VP8L" => {
                let bits = u32::from_le_bytes(d.get(21..25)?.try_into().ok()?);
                Some(((bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1))
            }
            _ => None,
        };
    }
    if d.starts_with(&[0xFF, 0xD8]) {
        let mut i = 2;
        while i + 9 < d.len() {
            if d[i] != 0xFF {
                i += 1;
                continue;
            }
            let marker = d[i + 1];
            let len = be16(i + 2)? as usize;
            let sof = matches!(marker, 0xC0..=0xCF) && !matches!(marker, 0xC4 | 0xC8 | 0xCC);
            if sof {
                return Some((be16(i + 7)?, be16(i + 5)?));
            }
            i += 2 + len;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(bytes: &[u8]) -> String {
        const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut s = String::new();
        for c in bytes.chunks(3) {
            let n = (u32::from(c[0]) << 16)
                | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
                | u32::from(*c.get(2).unwrap_or(&0));
            for k in 0..=c.len() {
                s.push(T[((n >> (18 - 6 * k)) & 63) as usize] as char);
            }
        }
        while s.len() % 4 != 0 {
            s.push('=');
        }
        s
    }

    fn png(w: u32, h: u32) -> Vec<u8> {
        let mut v = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec();
        v.extend_from_slice(&w.to_be_bytes());
        v.extend_from_slice(&h.to_be_bytes());
        v.resize(2000, 7);
        v
    }

    #[test]
    fn image_headers_give_their_size() {
        assert_eq!(image_size(&png(1092, 1092)), Some((1092, 1092)));
        let gif = [b"GIF89a".as_slice(), &[0x20, 0x03, 0x58, 0x02]].concat();
        assert_eq!(image_size(&gif), Some((800, 600)));
        let mut jpeg = vec![0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x04, 0, 0];
        jpeg.extend_from_slice(&[
            0xFF, 0xC0, 0x00, 0x11, 0x08, 0x02, 0x58, 0x03, 0x20, 0, 0, 0,
        ]);
        assert_eq!(image_size(&jpeg), Some((800, 600)));
        assert_eq!(image_size(b"%PDF-1.7"), None);
    }

    #[test]
    fn images_count_by_pixels_not_by_base64_length() {
        let body = format!(
            r#"{{"messages":[{{"role":"user","content":[{{"type":"image","source":{{"type":"base64","media_type":"image/png","data":"{}"}}}}]}}]}}"#,
            b64(&png(1092, 1092))
        );
        let e = estimate(body.as_bytes(), false);
        // 39 × 39 = 1521 image tokens plus the envelope.
        assert!(e.high >= 1521 && e.high < 1700, "{e:?}");
        assert!(e.low < 100, "{e:?}");
    }

    #[test]
    fn text_ranges_bracket_plausible_counts_and_grow_for_the_new_tokenizer() {
        let prose = "The quick brown fox jumps over the lazy dog. ".repeat(100);
        let body = format!(
            r#"{{"model":"m","max_tokens":10,"messages":[{{"role":"user","content":"{prose}"}}]}}"#
        );
        let old = estimate(body.as_bytes(), false);
        let new = estimate(body.as_bytes(), true);
        // ~4,500 characters of English prose is about 1,000 tokens.
        assert!(old.low < 1000 && old.high > 1000, "{old:?}");
        assert!(new.high > old.high * 13 / 10, "{new:?} vs {old:?}");
        let cjk = "你好世界".repeat(500);
        let e = estimate(
            format!(r#"{{"messages":[{{"role":"user","content":"{cjk}"}}]}}"#).as_bytes(),
            false,
        );
        assert!(e.high >= 2000, "{e:?}");
    }
}
