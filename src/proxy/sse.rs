//! The SSE usage tap: reads the events of a streamed response as its chunks pass through,
//! without holding them back. Usage starts from `message_start` and is overwritten by each
//! `message_delta` (cumulative values); chunks may split lines and events anywhere.

use crate::pricing::cost::Usage;
use serde::Deserialize;

/// Envelope bytes of a `content_block_delta` data line that are not generated text.
const DELTA_ENVELOPE: u64 = 70;

/// The longest line, and event data, the tap keeps. Real events are a few KB; longer lines
/// still pass through to the client untouched but are not read, so the tap's memory stays
/// bounded whatever the upstream sends.
pub const LINE_LIMIT: usize = 1 << 20;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Kind {
    #[default]
    Unnamed,
    MessageStart,
    MessageDelta,
    MessageStop,
    ContentDelta,
    Error,
    Other,
}

impl Kind {
    fn of(name: &[u8]) -> Kind {
        match name {
            b"message_start" => Kind::MessageStart,
            b"message_delta" => Kind::MessageDelta,
            b"message_stop" => Kind::MessageStop,
            b"content_block_delta" => Kind::ContentDelta,
            b"error" => Kind::Error,
            _ => Kind::Other,
        }
    }
    /// Whether the data of this event must be kept to be parsed.
    fn wants_data(self) -> bool {
        matches!(
            self,
            Kind::Unnamed | Kind::MessageStart | Kind::MessageDelta | Kind::Error
        )
    }
}

#[derive(Deserialize)]
struct Typed {
    #[serde(rename = "type")]
    kind: String,
}
#[derive(Deserialize)]
struct StartMessage {
    model: Option<String>,
    id: Option<String>,
    usage: Option<Usage>,
}
#[derive(Deserialize)]
struct Start {
    message: StartMessage,
}
#[derive(Deserialize)]
struct Delta {
    usage: Option<Usage>,
}
#[derive(Deserialize)]
struct ErrorDetail {
    #[serde(rename = "type")]
    kind: String,
}
#[derive(Deserialize)]
struct ErrorEvent {
    error: ErrorDetail,
}

/// What the tap has learnt so far.
#[derive(Debug, Default)]
pub struct Tap {
    partial: Vec<u8>,
    /// Inside a line longer than `LINE_LIMIT`, skipped up to its end.
    overlong: bool,
    kind: Kind,
    data: Vec<u8>,
    /// Usage as of the latest event.
    pub usage: Option<Usage>,
    pub model: Option<String>,
    pub message_id: Option<String>,
    /// Bytes of generated content relayed so far (for estimating output of a broken stream).
    pub content_bytes: u64,
    pub stopped: bool,
    /// `message_start` has been read (with its usage, if it had one).
    pub started: bool,
    /// A `message_delta` reported usage: the stream told its final figures.
    pub final_usage: bool,
    /// Bytes read in all.
    pub bytes: u64,
    /// `error.type` of an `event: error` the upstream sent mid-stream.
    pub error: Option<String>,
}

impl Tap {
    /// Reads one chunk. Returns true if it completed the `message_stop` event.
    pub fn feed(&mut self, chunk: &[u8]) -> bool {
        let was_stopped = self.stopped;
        self.bytes += chunk.len() as u64;
        let mut rest = chunk;
        while let Some(nl) = memchr::memchr(b'\n', rest) {
            let (line, tail) = (&rest[..nl], &rest[nl + 1..]);
            if self.overlong {
                self.skip(line.len());
                self.overlong = false;
            } else if self.partial.is_empty() {
                self.line(line);
            } else if self.partial.len() + line.len() > LINE_LIMIT {
                self.skip(self.partial.len() + line.len());
                self.partial = Vec::new();
            } else {
                let mut whole = std::mem::take(&mut self.partial);
                whole.extend_from_slice(line);
                self.line(&whole);
                whole.clear();
                self.partial = whole;
            }
            rest = tail;
        }
        if self.overlong {
            self.skip(rest.len());
        } else if self.partial.len() + rest.len() > LINE_LIMIT {
            self.skip(self.partial.len() + rest.len());
            self.partial = Vec::new();
            self.overlong = true;
        } else {
            self.partial.extend_from_slice(rest);
        }
        self.stopped && !was_stopped
    }

    /// Passes over `n` bytes of an overlong line; if it is generated text, counts it.
    fn skip(&mut self, n: usize) {
        if self.kind == Kind::ContentDelta {
            self.content_bytes += n as u64;
        }
    }

    /// Bytes held for lines and events not yet complete (at most `2 * LINE_LIMIT`).
    pub fn buffered(&self) -> usize {
        self.partial.capacity() + self.data.capacity()
    }

    fn line(&mut self, line: &[u8]) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            return self.dispatch();
        }
        let (field, value) = match memchr::memchr(b':', line) {
            Some(0) => return, // comment
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &b""[..]),
        };
        match field {
            b"event" => self.kind = Kind::of(value),
            b"data" => {
                if self.kind == Kind::ContentDelta {
                    self.content_bytes += (value.len() as u64).saturating_sub(DELTA_ENVELOPE);
                } else if self.data.len() + value.len() >= LINE_LIMIT {
                    // Too big to be an event we read: drop it.
                    self.data = Vec::new();
                    self.kind = Kind::Other;
                } else if self.kind.wants_data() {
                    if !self.data.is_empty() {
                        self.data.push(b'\n');
                    }
                    self.data.extend_from_slice(value);
                }
            }
            _ => {}
        }
    }

    fn dispatch(&mut self) {
        let mut kind = std::mem::take(&mut self.kind);
        if kind == Kind::Unnamed && !self.data.is_empty() {
            kind = serde_json::from_slice::<Typed>(&self.data)
                .map(|t| Kind::of(t.kind.as_bytes()))
                .unwrap_or(Kind::Other);
            if kind == Kind::ContentDelta {
                self.content_bytes += (self.data.len() as u64).saturating_sub(DELTA_ENVELOPE);
            }
        }
        match kind {
            Kind::MessageStart => {
                if let Ok(s) = serde_json::from_slice::<Start>(&self.data) {
                    self.started = true;
                    self.model = s.message.model;
                    self.message_id = s.message.id;
                    if let Some(u) = s.message.usage {
                        match &mut self.usage {
                            Some(acc) => acc.merge_later(u),
                            None => self.usage = Some(u),
                        }
                    }
                }
            }
            Kind::MessageDelta => {
                if let Ok(Delta { usage: Some(u) }) = serde_json::from_slice::<Delta>(&self.data) {
                    self.final_usage = true;
                    match &mut self.usage {
                        Some(acc) => acc.merge_later(u),
                        None => self.usage = Some(u),
                    }
                }
            }
            Kind::MessageStop => self.stopped = true,
            Kind::Error => {
                let kind = serde_json::from_slice::<ErrorEvent>(&self.data).map(|e| e.error.kind);
                self.error = Some(kind.unwrap_or_else(|_| "api_error".into()));
            }
            _ => {}
        }
        self.data.clear();
    }

    /// Output tokens to charge for a stream that ended early: what the upstream reported,
    /// or one token per 3 bytes of content relayed, whichever is more.
    pub fn estimated_output(&self) -> u64 {
        let reported = self
            .usage
            .as_ref()
            .and_then(|u| u.output_tokens)
            .unwrap_or(0);
        reported.max(self.content_bytes.div_ceil(3))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STREAM: &str = "event: message_start\r\n\
data: {\"type\": \"message_start\", \"message\": {\"id\": \"msg_1\", \"type\": \"message\", \"role\": \"assistant\", \"content\": [], \"model\": \"claude-opus-5\", \"stop_reason\": null, \"usage\": {\"input_tokens\": 25, \"output_tokens\": 1, \"cache_read_input_tokens\": 7}}}\r\n\r\n\
event: content_block_start\n\
data: {\"type\": \"content_block_start\", \"index\": 0, \"content_block\": {\"type\": \"text\", \"text\": \"\"}}\n\n\
: a comment\n\n\
event: ping\n\
data: {\"type\": \"ping\"}\n\n\
event: content_block_delta\n\
data: {\"type\": \"content_block_delta\", \"index\": 0, \"delta\": {\"type\": \"text_delta\", \"text\": \"Hello\"}}\n\n\
event: some_future_event\n\
data: {\"type\": \"some_future_event\", \"usage\": {\"output_tokens\": 999}}\n\n\
event: message_delta\n\
data: {\"type\": \"message_delta\", \"delta\": {\"stop_reason\": null}, \"usage\": {\"output_tokens\": 9}}\n\n\
event: message_delta\n\
data: {\"type\": \"message_delta\", \"delta\": {\"stop_reason\": \"end_turn\"}, \"usage\": {\"output_tokens\": 15, \"input_tokens\": 30, \"server_tool_use\": {\"web_search_requests\": 1}}}\n\n\
event: message_stop\n\
data: {\"type\": \"message_stop\"}\n\n";

    fn check(tap: &Tap) {
        let u = tap.usage.as_ref().unwrap();
        assert_eq!(
            (u.input_tokens, u.output_tokens, u.cache_read_input_tokens),
            (Some(30), Some(15), Some(7))
        );
        assert_eq!(
            u.server_tool_use
                .as_ref()
                .and_then(|s| s.web_search_requests),
            Some(1)
        );
        assert_eq!(tap.model.as_deref(), Some("claude-opus-5"));
        assert_eq!(tap.message_id.as_deref(), Some("msg_1"));
        assert!(tap.stopped);
    }

    #[test]
    fn usage_is_right_whatever_the_chunk_boundaries() {
        let bytes = STREAM.as_bytes();
        // Every single split point, and every pair of split points.
        for i in 0..=bytes.len() {
            let mut tap = Tap::default();
            let stops = u8::from(tap.feed(&bytes[..i])) + u8::from(tap.feed(&bytes[i..]));
            check(&tap);
            assert_eq!(stops, 1, "split at {i}");
        }
        for i in (0..=bytes.len()).step_by(7) {
            for j in (i..=bytes.len()).step_by(5) {
                let mut tap = Tap::default();
                tap.feed(&bytes[..i]);
                tap.feed(&bytes[i..j]);
                tap.feed(&bytes[j..]);
                check(&tap);
            }
        }
        // Byte by byte.
        let mut tap = Tap::default();
        for b in bytes {
            tap.feed(std::slice::from_ref(b));
        }
        check(&tap);
    }

    #[test]
    fn message_stop_is_reported_by_the_chunk_that_completes_it() {
        let mut tap = Tap::default();
        let cut = STREAM.find("event: message_stop").unwrap() + 30;
        assert!(!tap.feed(&STREAM.as_bytes()[..cut]));
        assert!(tap.feed(&STREAM.as_bytes()[cut..]));
        assert!(!tap.feed(b"\n"));
    }

    #[test]
    fn events_without_an_event_line_are_typed_from_their_data() {
        let mut tap = Tap::default();
        tap.feed(b"data: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":5,\"output_tokens\":1}}}\n\n");
        tap.feed(b"data: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":4}}\n\ndata: {\"type\":\"message_stop\"}\n\n");
        let u = tap.usage.unwrap();
        assert_eq!(
            (u.input_tokens, u.output_tokens, tap.stopped),
            (Some(5), Some(4), true)
        );
    }

    #[test]
    fn errors_and_broken_streams_are_noticed() {
        let mut tap = Tap::default();
        tap.feed(b"event: message_start\ndata: {\"message\":{\"usage\":{\"input_tokens\":5,\"output_tokens\":1}}}\n\n");
        let delta = format!(
            "event: content_block_delta\ndata: {{\"type\": \"content_block_delta\", \"index\": 0, \"delta\": {{\"type\": \"text_delta\", \"text\": \"{}\"}}}}\n\n",
            "x".repeat(300)
        );
        tap.feed(delta.as_bytes());
        assert!(!tap.stopped);
        assert!(tap.estimated_output() >= 100, "{}", tap.estimated_output());
        tap.feed(b"event: error\ndata: {\"type\": \"error\", \"error\": {\"type\": \"overloaded_error\", \"message\": \"Overloaded\"}}\n\n");
        assert_eq!(tap.error.as_deref(), Some("overloaded_error"));
    }
}
