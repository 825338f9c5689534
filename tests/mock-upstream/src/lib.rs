//! A mock Anthropic Messages API for agent-budget's tests and benchmarks, faithful to the
//! wire format (JSON bodies, SSE event order and usage placement, error shapes, `request-id`).
//!
//! Each request may carry a script in the `x-mock` header (JSON, see [`Script`]); the proxy
//! forwards it like any other header. The mock counts requests and records the headers and
//! bodies it saw; `GET /_mock/stats` and `POST /_mock/reset` expose that to other processes.

mod control;
mod hostile;
mod limits;
pub use limits::RATE_LIMITS;
pub mod postgres;
pub mod trace;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use axum::{Json, Router};
use futures_util::{StreamExt, stream};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What one request should get back. Every field is optional.
#[derive(Clone, Debug, Default)]
pub struct Script {
    /// The `usage` object to report (default `{"input_tokens":25,"output_tokens":15}`).
    pub usage: Option<Value>,
    /// The model to echo (default: the request's).
    pub model: Option<String>,
    /// Answer with this HTTP error status and `error_type` instead.
    pub status: Option<u16>,
    pub error_type: Option<String>,
    /// Wait before sending the response headers.
    pub delay_ms: u64,
    /// Wait between SSE events.
    pub chunk_delay_ms: u64,
    /// Streams: cut the connection after this many events.
    pub break_after: Option<usize>,
    /// Streams: send `event: error` (overloaded) after this many events, then end.
    pub error_event_after: Option<usize>,
    /// Text of the reply, streamed word by word.
    pub text: Option<String>,
    /// Never answer.
    pub hang: bool,
    /// Streams: after this many events, send nothing more but keep the connection open.
    pub hang_after: Option<usize>,
    /// Answer 200 with this body verbatim (and `content_type`): invalid JSON, invalid SSE.
    pub raw: Option<String>,
    pub content_type: Option<String>,
    /// With `status`: a `Location` header (redirects).
    pub location: Option<String>,
    /// `count_tokens` answer (default: the request body's length / 4).
    pub count: Option<u64>,
    /// Streams: `message_start` carries no usage; it all comes in the final `message_delta`.
    pub late_usage: bool,
    /// Stop at the request's `max_tokens` as the API does: output is capped there and the
    /// reply says `stop_reason: "max_tokens"`. Off by default, because many tests report
    /// more output than a small `max_tokens` to spend a given amount while reserving little.
    pub stop_at_max_tokens: bool,
    /// Non-streaming: a 200 reply this many bytes long, its text padded, sent in 64 KiB chunks
    /// (a hostile upstream's huge response; the mock never holds it whole).
    pub pad_bytes: Option<u64>,
    /// Answer with a call of this tool after the text: `{"name": …, "input": {…}}`.
    pub tool_use: Option<Value>,
    /// To a subscription's OAuth token: `anthropic-ratelimit-unified-*` headers to send in
    /// place of the defaults, by the part after the prefix (`{"5h-utilization": "0.81"}`).
    pub unified: Option<Value>,
}

impl Script {
    fn from_headers(h: &HeaderMap) -> Script {
        let v: Value = h
            .get("x-mock")
            .and_then(|v| v.to_str().ok())
            .and_then(|s| serde_json::from_str(s).ok())
            .unwrap_or(Value::Null);
        Script::from_value(&v)
    }

    fn from_value(v: &Value) -> Script {
        let u = |k: &str| v.get(k).and_then(Value::as_u64);
        let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        Script {
            usage: v.get("usage").cloned(),
            model: s("model"),
            status: u("status").and_then(|x| u16::try_from(x).ok()),
            error_type: s("error_type"),
            delay_ms: u("delay_ms").unwrap_or(0),
            chunk_delay_ms: u("chunk_delay_ms").unwrap_or(0),
            break_after: u("break_after").map(|x| x as usize),
            error_event_after: u("error_event_after").map(|x| x as usize),
            text: s("text"),
            hang: v.get("hang").and_then(Value::as_bool).unwrap_or(false),
            hang_after: u("hang_after").map(|x| x as usize),
            raw: s("raw"),
            content_type: s("content_type"),
            location: s("location"),
            count: u("count"),
            late_usage: v
                .get("late_usage")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            stop_at_max_tokens: v
                .get("stop_at_max_tokens")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            pad_bytes: u("pad_bytes"),
            tool_use: v.get("tool_use").cloned(),
            unified: v.get("unified").cloned(),
        }
    }
}

/// A request as the mock saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub headers: HeaderMap,
    pub body: Bytes,
}

#[derive(Default)]
pub struct MockState {
    /// `POST /v1/messages` requests received.
    pub messages: AtomicU64,
    pub count_tokens: AtomicU64,
    pub other: AtomicU64,
    /// Streams currently open.
    pub open_streams: AtomicU64,
    /// When false, nothing is recorded (benchmarks).
    pub record: std::sync::atomic::AtomicBool,
    pub seen: Mutex<Vec<Seen>>,
    queued: Mutex<Vec<control::Queued>>,
}

impl MockState {
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().map(|s| s.clone()).unwrap_or_default()
    }
    pub fn messages(&self) -> u64 {
        self.messages.load(Ordering::SeqCst)
    }
    pub fn reset(&self) {
        self.messages.store(0, Ordering::SeqCst);
        self.count_tokens.store(0, Ordering::SeqCst);
        self.other.store(0, Ordering::SeqCst);
        if let Ok(mut s) = self.seen.lock() {
            s.clear();
        }
        if let Ok(mut q) = self.queued.lock() {
            q.clear();
        }
    }
    fn remember<B>(&self, req: &Request<B>, body: &Bytes) {
        if !self.record.load(Ordering::Relaxed) {
            return;
        }
        if let Ok(mut s) = self.seen.lock() {
            s.push(Seen {
                method: req.method().to_string(),
                path: req.uri().path().to_string(),
                query: req.uri().query().map(str::to_string),
                headers: req.headers().clone(),
                body: body.clone(),
            });
        }
    }
}

/// A running mock.
pub struct Mock {
    pub addr: SocketAddr,
    pub state: Arc<MockState>,
}

impl Mock {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// Starts a mock on 127.0.0.1 (`port` 0 picks a free one).
pub async fn start(port: u16) -> std::io::Result<Mock> {
    let state = Arc::new(MockState::default());
    state.record.store(true, Ordering::Relaxed);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    let addr = listener.local_addr()?;
    let app = router(state.clone());
    // Like the API's own servers: each SSE event leaves when written. Without it, an event
    // written while the previous one is unacknowledged waited for the peer's delayed ACK (up
    // to 40 ms), and a proxy, which sends nothing back mid-stream, got events in bursts.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(Mock { addr, state })
}

pub fn router(state: Arc<MockState>) -> Router {
    Router::new()
        .route("/v1/messages", post(messages))
        .route("/v1/messages/count_tokens", post(count_tokens))
        .route("/v1/models", get(models))
        .route("/v1/models/{id}", get(models))
        // An OTLP collector that takes every export and keeps nothing (benchmarks' traces).
        .route("/v1/traces", post(|| async { StatusCode::OK }))
        .route("/_mock/stats", get(control::stats))
        .route("/_mock/reset", post(control::reset))
        .route("/_mock/script", post(control::push))
        .with_state(state)
}

fn request_id() -> String {
    static N: AtomicU64 = AtomicU64::new(1);
    format!("req_mock{:016}", N.fetch_add(1, Ordering::Relaxed))
}

fn error(status: StatusCode, kind: &str, message: &str) -> Response {
    let rid = request_id();
    let body =
        json!({"type": "error", "error": {"type": kind, "message": message}, "request_id": rid});
    (status, [("request-id", rid)], Json(body)).into_response()
}

async fn read(req: Request) -> (Request<()>, Bytes) {
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, 64 * 1024 * 1024)
        .await
        .unwrap_or_default();
    (Request::from_parts(parts, ()), bytes)
}

async fn messages(State(st): State<Arc<MockState>>, req: Request) -> Response {
    let (req, body) = read(req).await;
    st.messages.fetch_add(1, Ordering::SeqCst);
    st.remember(&req, &body);
    let script = match req.headers().contains_key("x-mock") {
        true => Script::from_headers(req.headers()),
        false => control::take(&st, &body).unwrap_or_default(),
    };
    let unified = script.unified.clone();
    let mut r = respond(script, &body).await;
    if limits::is_subscription(req.headers()) {
        let status = r.status();
        limits::unified(r.headers_mut(), status, unified.as_ref());
    } else if r.status().is_success() {
        limits::rate_limits(r.headers_mut());
    }
    let streamed = r
        .headers()
        .get("content-type")
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    if !streamed {
        return r;
    }
    // Counted open until the body is dropped (sent, or the connection gone).
    struct Open(Arc<MockState>);
    impl Drop for Open {
        fn drop(&mut self) {
            self.0.open_streams.fetch_sub(1, Ordering::SeqCst);
        }
    }
    st.open_streams.fetch_add(1, Ordering::SeqCst);
    let open = Open(st.clone());
    let (parts, body) = r.into_parts();
    let body = body.into_data_stream().map(move |chunk| {
        let _counted = &open;
        chunk
    });
    Response::from_parts(parts, Body::from_stream(body))
}

/// Builds the reply for a Messages request (public so benchmarks can use the same logic).
pub async fn respond(script: Script, body: &Bytes) -> Response {
    if script.hang {
        std::future::pending::<()>().await;
    }
    if script.delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(script.delay_ms)).await;
    }
    if let Some(n) = script.pad_bytes {
        return hostile::padded(n);
    }
    if let Some(raw) = script.raw {
        let ct = script
            .content_type
            .unwrap_or_else(|| "application/json".into());
        return ([("content-type", ct), ("request-id", request_id())], raw).into_response();
    }
    let req: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "There was an error parsing the body",
            );
        }
    };
    if let Some(code) = script.status {
        let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let kind = script
            .error_type
            .clone()
            .unwrap_or_else(|| "api_error".into());
        let mut r = error(status, &kind, "scripted error");
        if let Some(l) = script.location.and_then(|l| l.parse().ok()) {
            r.headers_mut().insert("location", l);
        }
        return r;
    }
    let model = script
        .model
        .clone()
        .or_else(|| req.get("model").and_then(Value::as_str).map(str::to_string))
        .unwrap_or_else(|| "claude-sonnet-4-6".into());
    let mut usage = script
        .usage
        .clone()
        .unwrap_or_else(|| json!({"input_tokens": 25, "output_tokens": 15}));
    let mut stop_reason = match script.tool_use {
        Some(_) => "tool_use",
        None => "end_turn",
    };
    let limit = req
        .get("max_tokens")
        .and_then(Value::as_u64)
        .filter(|_| script.stop_at_max_tokens);
    let out = usage.get("output_tokens").and_then(Value::as_u64);
    if let (Some(limit), Some(out)) = (limit, out)
        && out > limit
    {
        usage["output_tokens"] = json!(limit);
        stop_reason = "max_tokens";
    }
    let text = script
        .text
        .clone()
        .unwrap_or_else(|| "Hello from the mock upstream.".into());
    let id = format!("msg_mock{}", request_id().trim_start_matches("req_mock"));
    if req.get("stream").and_then(Value::as_bool) == Some(true) {
        return sse(script, model, usage, text, id, stop_reason);
    }
    let mut content = vec![json!({"type": "text", "text": text})];
    content.extend(script.tool_use.map(|t| control::tool_block(&t, &id)));
    let body = json!({
        "id": id, "type": "message", "role": "assistant", "model": model,
        "content": content,
        "stop_reason": stop_reason, "stop_sequence": null, "usage": usage,
    });
    ([("request-id", request_id())], Json(body)).into_response()
}

/// The SSE events of a reply, in the documented order.
pub fn events(model: &str, usage: &Value, text: &str, id: &str) -> Vec<String> {
    stream_events(model, usage, text, id, "end_turn", false)
}

/// [`events`] with a stop reason, and optionally all usage held back to the last delta.
pub fn stream_events(
    model: &str,
    usage: &Value,
    text: &str,
    id: &str,
    stop_reason: &str,
    late_usage: bool,
) -> Vec<String> {
    let mut start_usage = if late_usage { json!({}) } else { usage.clone() };
    if let Some(o) = start_usage.as_object_mut() {
        o.insert("output_tokens".into(), json!(1));
    }
    let mut ev = vec![
        format!(
            "event: message_start\ndata: {}\n\n",
            json!({"type": "message_start", "message": {"id": id, "type": "message", "role": "assistant", "content": [], "model": model, "stop_reason": null, "stop_sequence": null, "usage": start_usage}})
        ),
        format!(
            "event: content_block_start\ndata: {}\n\n",
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})
        ),
        "event: ping\ndata: {\"type\": \"ping\"}\n\n".to_string(),
    ];
    for word in text.split_inclusive(' ') {
        ev.push(format!("event: content_block_delta\ndata: {}\n\n", json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": word}})));
    }
    ev.push(format!(
        "event: content_block_stop\ndata: {}\n\n",
        json!({"type": "content_block_stop", "index": 0})
    ));
    let final_usage = {
        let mut u =
            json!({"output_tokens": usage.get("output_tokens").cloned().unwrap_or(json!(0))});
        if let (Some(o), Some(src)) = (u.as_object_mut(), usage.as_object()) {
            for k in [
                "input_tokens",
                "cache_creation_input_tokens",
                "cache_read_input_tokens",
                "server_tool_use",
            ] {
                if let Some(v) = src.get(k) {
                    o.insert(k.into(), v.clone());
                }
            }
        }
        u
    };
    ev.push(format!("event: message_delta\ndata: {}\n\n", json!({"type": "message_delta", "delta": {"stop_reason": stop_reason, "stop_sequence": null}, "usage": final_usage})));
    ev.push("event: message_stop\ndata: {\"type\": \"message_stop\"}\n\n".to_string());
    ev
}

fn sse(
    script: Script,
    model: String,
    usage: Value,
    text: String,
    id: String,
    stop_reason: &str,
) -> Response {
    let mut ev = stream_events(&model, &usage, &text, &id, stop_reason, script.late_usage);
    if let Some(tool) = &script.tool_use {
        let at = ev.len() - 2; // before message_delta and message_stop
        ev.splice(
            at..at,
            control::tool_events(&control::tool_block(tool, &id), 1),
        );
    }
    let mut fail_at = None;
    if let Some(n) = script.error_event_after {
        ev.truncate(n);
        ev.push("event: error\ndata: {\"type\": \"error\", \"error\": {\"type\": \"overloaded_error\", \"message\": \"Overloaded\"}}\n\n".into());
    } else if let Some(n) = script.break_after {
        ev.truncate(n);
        fail_at = Some(n);
    } else if let Some(n) = script.hang_after {
        ev.truncate(n);
    }
    let hang = script.hang_after.is_some();
    let delay = Duration::from_millis(script.chunk_delay_ms);
    let items = ev.into_iter().map(Some).chain(fail_at.map(|_| None));
    let body = stream::unfold((items, 0usize), move |(mut items, i)| async move {
        let Some(next) = items.next() else {
            if hang {
                std::future::pending::<()>().await;
            }
            return None;
        };
        if i > 0 && !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let item = match next {
            Some(e) => Ok(Bytes::from(e)),
            None => Err(std::io::Error::other("scripted break")),
        };
        Some((item, (items, i + 1)))
    });
    Response::builder()
        .header("content-type", "text/event-stream; charset=utf-8")
        .header("cache-control", "no-cache")
        .header("request-id", request_id())
        .body(Body::from_stream(body))
        .unwrap_or_default()
}

async fn count_tokens(State(st): State<Arc<MockState>>, req: Request) -> Response {
    let (req, body) = read(req).await;
    st.count_tokens.fetch_add(1, Ordering::SeqCst);
    let script = Script::from_headers(req.headers());
    st.remember(&req, &body);
    let n = script.count.unwrap_or(body.len() as u64 / 4);
    (
        [("request-id", request_id())],
        Json(json!({"input_tokens": n})),
    )
        .into_response()
}

async fn models(State(st): State<Arc<MockState>>, req: Request) -> Response {
    st.other.fetch_add(1, Ordering::SeqCst);
    st.remember(&req, &Bytes::new());
    let data = json!({"data": [{"id": "claude-sonnet-4-6", "type": "model", "display_name": "Claude Sonnet 4.6", "created_at": "2026-02-17T00:00:00Z"}], "has_more": false, "first_id": "claude-sonnet-4-6", "last_id": "claude-sonnet-4-6"});
    if req.uri().path() == "/v1/models" {
        return Json(data).into_response();
    }
    Json(data["data"][0].clone()).into_response()
}
