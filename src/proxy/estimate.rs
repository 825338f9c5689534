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

/// Character classes whose runs tokenizers split on.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Class {
    Lower,
    Upper,
    Digit,
    Space,
    Newline,
    Punct,
    Other,
    Start,
}

fn class(b: u8) -> Class {
    match b {
        b'a'..=b'z' => Class::Lower,
        b'A'..=b'Z' => Class::Upper,
        b'0'..=b'9' => Class::Digit,
        b' ' => Class::Space,
        b'\n' | b'\r' | b'\t' => Class::Newline,
        0x80.. => Class::Other,
        _ => Class::Punct,
    }
}

/// An upper bound on tokens built from runs of one character class: a tokenizer may merge
/// characters within a run, rarely across classes. Each run costs at least one token;
/// letters at most 6 to a token, digits 2, punctuation and non-ASCII characters 1 each, a
/// single space nothing (it joins the next word).
#[derive(Default)]
struct Runs {
    tokens: u64,
    ascii: u64,
    other: u64,
    run: u64,
    class: Option<Class>,
}

impl Runs {
    fn close(&mut self) {
        if let Some(c) = self.class.take() {
            self.tokens += match c {
                Class::Lower | Class::Upper => self.run.div_ceil(6),
                Class::Digit => self.run.div_ceil(2),
                Class::Space => u64::from(self.run > 1),
                Class::Newline => 1,
                Class::Punct | Class::Other => self.run,
                Class::Start => 0,
            };
        }
        self.run = 0;
    }

    fn push(&mut self, c: Class) {
        let prev = self.class.unwrap_or(Class::Start);
        // A capital starts a word ("Hello"); a capital after a small letter starts a new
        // piece ("camelCase", random ids); lower after upper continues it.
        let same = prev == c || (prev == Class::Upper && c == Class::Lower);
        if !same {
            self.close();
            self.class = Some(c);
        }
        self.run += 1;
        if c == Class::Other {
            self.other += 1;
        } else {
            self.ascii += 1;
        }
    }

    fn add(&mut self, o: Runs) {
        self.tokens += o.tokens;
        self.ascii += o.ascii;
        self.other += o.other;
    }
}

/// The largest context window of any model: no request's prompt can be billed beyond it (the
/// API refuses a longer one), so it bounds content the proxy cannot measure.
pub const CONTEXT_TOKENS: u64 = 1_000_000;

/// The most tokens one image can cost: the largest image any model accepts, in 28-pixel tiles.
const MAX_IMAGE: u64 = (2576 / 28 + 1) * (2576 / 28 + 1);

/// Estimates the prompt tokens of a Messages request body. `new_tokenizer` is true for models
/// whose tokenizer yields up to 35 % more tokens (Opus 4.7 and later, the 5.x family).
///
/// Content the proxy cannot see — an image or document by `url` or `file_id`, a PDF (each
/// page is billed as an image plus its text) — is bounded conservatively: an image at the
/// largest image's tokens, anything else at `CONTEXT_TOKENS`. Where that bound decides a
/// capped budget's admission, the upstream's free `count_tokens` settles it exactly.
pub fn estimate(body: &[u8], new_tokenizer: bool) -> Estimate {
    let mut blob_high = unmeasured(body);
    let c = scan(body, &mut blob_high);
    // A further 10 % covers what the sample in docs/admission.md did not show.
    let high_text = c.tokens + c.tokens.div_ceil(10) + 8;
    let high = if new_tokenizer {
        high_text + high_text.div_ceil(100) * 35
    } else {
        high_text
    };
    // No tokenizer packs more than about 8 ASCII characters (or 4 others) into a token on average.
    let low = c.ascii / 8 + c.other / 4;
    Estimate {
        low,
        high: high.saturating_add(blob_high),
    }
}

/// Tokens to reserve for sources given by reference (`{"type": "url" | "file", …}`): an image
/// (its block says `"image"` just before `"source"`, as every SDK writes it) at `MAX_IMAGE`,
/// anything else at `CONTEXT_TOKENS`.
fn unmeasured(body: &[u8]) -> u64 {
    let mut total: u64 = 0;
    for at in memchr::memmem::find_iter(body, b"\"source\"") {
        let rest = &body[at + 8..];
        let Some(open) = rest
            .iter()
            .position(|b| !b.is_ascii_whitespace() && *b != b':')
        else {
            continue;
        };
        if rest[open] != b'{' {
            continue;
        }
        let object = &rest[open..open + object_len(&rest[open..])];
        if !by_reference(object) {
            continue;
        }
        let before = &body[at.saturating_sub(64)..at];
        let image = memchr::memmem::find(before, b"\"image\"").is_some();
        total = total.saturating_add(if image { MAX_IMAGE } else { CONTEXT_TOKENS });
    }
    total
}

/// The length of the JSON object starting at `b[0] == b'{'` (to the end if unterminated).
fn object_len(b: &[u8]) -> usize {
    let (mut depth, mut in_string, mut escaped) = (0u32, false, false);
    for (i, &c) in b.iter().enumerate() {
        match (in_string, c) {
            (true, _) if escaped => escaped = false,
            (true, b'\\') => escaped = true,
            (true, b'"') => in_string = false,
            (true, _) => {}
            (false, b'"') => in_string = true,
            (false, b'{') => depth += 1,
            (false, b'}') => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return i + 1;
                }
            }
            _ => {}
        }
    }
    b.len()
}

/// Whether a `source` object names its content instead of carrying it.
fn by_reference(object: &[u8]) -> bool {
    let compact: Vec<u8> = object
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .take(4096)
        .collect();
    [
        &b"\"type\":\"url\""[..],
        b"\"type\":\"file\"",
        b"\"file_id\":",
    ]
    .iter()
    .any(|p| memchr::memmem::find(&compact, p).is_some())
}

fn scan(b: &[u8], blob_high: &mut u64) -> Runs {
    let mut runs = Runs::default();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'"' {
            runs.close();
            runs.push(Class::Punct);
            runs.close();
            let (string, next) = string(b, i + 1, blob_high);
            runs.add(string);
            i = next;
        } else {
            let c = class(b[i]);
            if !matches!(c, Class::Space | Class::Newline) {
                runs.push(c);
            }
            i += 1;
        }
    }
    runs.close();
    runs
}

/// Counts one JSON string starting after its opening quote; returns the counts and the
/// index after its closing quote. Long base64 strings count as binary blobs instead.
fn string(b: &[u8], start: usize, blob_high: &mut u64) -> (Runs, usize) {
    let mut runs = Runs::default();
    let mut base64ish = true;
    let mut i = start;
    while i < b.len() {
        let ch = b[i];
        match ch {
            b'"' => break,
            b'\\' => {
                let esc = b.get(i + 1).copied().unwrap_or(b'\\');
                base64ish &= esc == b'/';
                match esc {
                    b'u' => {
                        runs.push(Class::Other);
                        i += 6;
                    }
                    b'n' | b'r' | b't' => {
                        runs.push(Class::Newline);
                        i += 2;
                    }
                    _ => {
                        runs.push(Class::Punct);
                        i += 2;
                    }
                }
                continue;
            }
            _ => {
                let c = class(ch);
                base64ish &= ch.is_ascii_alphanumeric() || ch == b'+' || ch == b'/' || ch == b'=';
                // Continuation bytes of a UTF-8 character are part of the character already counted.
                if !(0x80..0xC0).contains(&ch) {
                    runs.push(c);
                }
            }
        }
        i += 1;
    }
    runs.close();
    let end = i.min(b.len());
    if base64ish && end - start >= BLOB_MIN {
        *blob_high = blob_high.saturating_add(blob_tokens(&b[start..end]));
        return (Runs::default(), end + 1);
    }
    (runs, end + 1)
}

/// Upper bound for a base64 blob: an image by its pixel size (⌈w/28⌉·⌈h/28⌉, at most the
/// largest image any model accepts), a PDF (pages billed as images, not by its bytes) at
/// `CONTEXT_TOKENS`, anything else at one token per 3 bytes.
fn blob_tokens(b64: &[u8]) -> u64 {
    let head = decode_prefix(b64, 64 * 1024);
    if head.starts_with(b"%PDF") {
        return CONTEXT_TOKENS;
    }
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
    fn content_by_reference_and_pdfs_are_bounded_not_guessed() {
        let with = |content: &str| {
            estimate(
                format!(r#"{{"messages":[{{"role":"user","content":[{content}]}}]}}"#).as_bytes(),
                false,
            )
        };
        let image_url =
            with(r#"{"type":"image","source":{"type":"url","url":"https://example.com/a.png"}}"#);
        assert!(
            image_url.high >= MAX_IMAGE && image_url.high < CONTEXT_TOKENS,
            "{image_url:?}"
        );
        let doc_file =
            with(r#"{"type": "document", "source": { "type" : "file", "file_id": "file_011"}}"#);
        assert!(doc_file.high >= CONTEXT_TOKENS, "{doc_file:?}");
        let doc_url =
            with(r#"{"source":{"url":"https://x/y.pdf","type":"url"},"type":"document"}"#);
        assert!(doc_url.high >= CONTEXT_TOKENS, "{doc_url:?}");
        let two_images = with(
            r#"{"type":"image","source":{"type":"file","file_id":"f1"}},{"type":"image","source":{"type":"url","url":"u"}}"#,
        );
        assert!(two_images.high >= 2 * MAX_IMAGE, "{two_images:?}");
        let pdf = format!(
            r#"{{"type":"document","source":{{"type":"base64","media_type":"application/pdf","data":"{}"}}}}"#,
            b64(&[b"%PDF-1.7\n".as_slice(), &[b'x'; 3000]].concat())
        );
        assert!(with(&pdf).high >= CONTEXT_TOKENS);
        // A `url` that is not a source (a search result in the history) is text like any other.
        let result =
            with(r#"{"type":"web_search_result","url":"https://example.com","title":"t"}"#);
        assert!(result.high < 1000, "{result:?}");
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
