//! The SSE usage tap, which reads every streamed response.

use agent_budget::proxy::sse::{LINE_LIMIT, Tap};
use proptest::prelude::*;

/// Lines an Anthropic stream (or a broken one) is made of.
fn line() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("event: message_start".to_string()),
        Just("event: message_delta".to_string()),
        Just("event: message_stop".to_string()),
        Just("event: content_block_delta".to_string()),
        Just("event: error".to_string()),
        Just("event: ping".to_string()),
        Just(String::new()),
        Just(": comment".to_string()),
        Just(r#"data: {"type":"message_start","message":{"model":"claude-opus-5","id":"msg_1","usage":{"input_tokens":12,"output_tokens":1}}}"#.to_string()),
        Just(r#"data: {"type":"message_delta","usage":{"output_tokens":7}}"#.to_string()),
        Just(r#"data: {"type":"message_stop"}"#.to_string()),
        Just(r#"data: {"type":"error","error":{"type":"overloaded_error"}}"#.to_string()),
        "data: [ -~]{0,80}".prop_map(|s| s),
        "[ -~]{0,40}".prop_map(|s| s),
        (0u32..4000).prop_map(|n| format!(r#"data: {{"type":"message_delta","usage":{{"output_tokens":{n}}}}}"#)),
    ]
}

fn stream() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec((line(), any::<bool>()), 0..60).prop_map(|lines| {
        let mut out = Vec::new();
        for (l, crlf) in lines {
            out.extend_from_slice(l.as_bytes());
            out.extend_from_slice(if crlf { b"\r\n" } else { b"\n" });
        }
        out
    })
}

/// What a tap concluded, comparable across runs.
fn summary(t: &Tap) -> String {
    format!(
        "{:?} {:?} {:?} {} {} {:?}",
        t.usage.as_ref().map(|u| (u.input_tokens, u.output_tokens)),
        t.model,
        t.message_id,
        t.content_bytes,
        t.stopped,
        t.error
    )
}

fn feed_split(bytes: &[u8], cuts: &[usize]) -> (Tap, usize) {
    let mut tap = Tap::default();
    let mut stops = 0;
    let mut at = 0;
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    cuts.sort_unstable();
    for c in cuts.into_iter().chain([bytes.len()]) {
        stops += usize::from(tap.feed(&bytes[at..c]));
        at = c;
    }
    (tap, stops)
}

proptest! {
    /// Chunk boundaries fall anywhere on the wire; what the tap learns must not depend on them.
    #[test]
    fn chunking_never_changes_what_is_read(bytes in stream(), cuts in prop::collection::vec(any::<usize>(), 0..12)) {
        let (whole, whole_stops) = feed_split(&bytes, &[]);
        let (split, split_stops) = feed_split(&bytes, &cuts);
        prop_assert_eq!(summary(&whole), summary(&split));
        prop_assert_eq!(whole_stops, split_stops);
        prop_assert!(whole_stops <= 1, "message_stop reported {} times", whole_stops);
    }

    /// Arbitrary bytes: no panic, and nothing held beyond the line limit.
    #[test]
    fn arbitrary_bytes_are_read_in_bounded_memory(chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..4096), 0..40)) {
        let mut tap = Tap::default();
        for c in &chunks {
            tap.feed(c);
            prop_assert!(tap.buffered() <= 2 * LINE_LIMIT + 8192);
        }
    }

    /// A line of several MiB (no newline for a long time) is skipped, in bounded memory, and
    /// the events after it are still read.
    #[test]
    fn an_overlong_line_is_skipped_and_reading_goes_on(kind in prop_oneof![Just("message_start"), Just("content_block_delta"), Just("ping")], chunk in 1000usize..300_000) {
        let mut tap = Tap::default();
        tap.feed(format!("event: {kind}\ndata: ").as_bytes());
        let filler = vec![b'x'; chunk];
        let mut sent = 0;
        while sent < 3 * LINE_LIMIT {
            tap.feed(&filler);
            sent += chunk;
            prop_assert!(tap.buffered() <= 2 * LINE_LIMIT + chunk);
        }
        let stopped = tap.feed(b"\n\nevent: message_delta\ndata: {\"usage\":{\"output_tokens\":5}}\n\nevent: message_stop\ndata: {}\n\n");
        prop_assert!(stopped);
        prop_assert_eq!(tap.usage.as_ref().and_then(|u| u.output_tokens), Some(5));
        if kind == "content_block_delta" {
            // Generated text that was skipped still counts towards an estimate.
            prop_assert!(tap.content_bytes >= sent as u64);
        }
    }
}
