//! What a hostile upstream sends: answers no real one would.

use crate::request_id;
use axum::body::{Body, Bytes};
use axum::response::Response;
use futures_util::stream;

/// A JSON reply `n` bytes long whose text is padding, streamed in 64 KiB chunks.
pub(crate) fn padded(n: u64) -> Response {
    const CHUNK: usize = 64 * 1024;
    let head = r#"{"id":"msg_pad","type":"message","role":"assistant","model":"claude-sonnet-4-6","usage":{"input_tokens":10,"output_tokens":10},"content":[{"type":"text","text":""#;
    let tail = r#""}]}"#;
    let pad = (n as usize).saturating_sub(head.len() + tail.len());
    let chunks = std::iter::once(Bytes::from_static(head.as_bytes()))
        .chain(
            (0..pad.div_ceil(CHUNK))
                .map(move |i| Bytes::from(vec![b'x'; CHUNK.min(pad - i * CHUNK)])),
        )
        .chain(std::iter::once(Bytes::from_static(tail.as_bytes())))
        .map(Ok::<_, std::io::Error>);
    Response::builder()
        .header("content-type", "application/json")
        .header("request-id", request_id())
        .body(Body::from_stream(stream::iter(chunks)))
        .unwrap_or_default()
}
