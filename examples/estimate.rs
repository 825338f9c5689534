//! Prints the admission estimator's range for each file, wrapped as a Messages request
//! (`tests/estimator/measure.mjs` compares it with the reference tokenizer). Also adds
//! synthetic PNG images whose reference is Anthropic's published ⌈w/28⌉·⌈h/28⌉ formula.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use agent_budget::proxy::estimate::estimate;
use serde_json::json;

fn png(w: u32, h: u32) -> Vec<u8> {
    let mut v = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec();
    v.extend_from_slice(&w.to_be_bytes());
    v.extend_from_slice(&h.to_be_bytes());
    v.resize(200_000, 0x5a);
    v
}

fn b64(bytes: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::new();
    for c in bytes.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for k in 0..4 {
            s.push(if k <= c.len() {
                T[((n >> (18 - 6 * k)) & 63) as usize] as char
            } else {
                '='
            });
        }
    }
    s
}

fn main() {
    for path in std::env::args().skip(1) {
        let text = std::fs::read_to_string(&path).unwrap();
        let body = json!({"model": "m", "max_tokens": 1024, "messages": [{"role": "user", "content": text}]});
        let bytes = serde_json::to_vec(&body).unwrap();
        let (old, new) = (estimate(&bytes, false), estimate(&bytes, true));
        println!(
            "{path}\t{}\t{}\t{}\t{}\t-",
            text.chars().count(),
            old.low,
            old.high,
            new.high
        );
    }
    for (w, h) in [(1092, 1092), (800, 600), (200, 200)] {
        let source = json!({"type": "base64", "media_type": "image/png", "data": b64(&png(w, h))});
        let body = json!({"model": "m", "max_tokens": 1024, "messages": [{"role": "user", "content": [{"type": "image", "source": source}]}]});
        let bytes = serde_json::to_vec(&body).unwrap();
        let (old, new) = (estimate(&bytes, false), estimate(&bytes, true));
        let reference = w.div_ceil(28) * h.div_ceil(28);
        println!(
            "image-{w}x{h}.png\t{}\t{}\t{}\t{}\t{reference}",
            bytes.len(),
            old.low,
            old.high,
            new.high
        );
    }
}
