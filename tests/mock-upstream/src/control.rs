//! The mock's own routes: `GET /_mock/stats` (what it saw), `POST /_mock/reset`, and scripts
//! for clients that cannot send the `x-mock` header (Claude Code): `POST /_mock/script` queues
//! them, each with `when`, a string the request's body must contain; a Messages request
//! that offers tools (an agent's turn, not a side request such as a title) and matches one
//! takes the first such script, once. A script may answer with a tool call (`tool_use`).

use super::{MockState, Script};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use bytes::Bytes;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// A queued script and what selects it.
#[derive(Clone, Debug)]
pub struct Queued {
    when: String,
    script: Value,
}

/// `POST /_mock/script`: `[{"when": "...", ...script fields}]`, appended to the queue.
pub async fn push(State(st): State<Arc<MockState>>, Json(items): Json<Vec<Value>>) -> StatusCode {
    let Ok(mut q) = st.queued.lock() else {
        return StatusCode::INTERNAL_SERVER_ERROR;
    };
    for script in items {
        let when = script.get("when").and_then(Value::as_str).unwrap_or("");
        q.push(Queued {
            when: when.to_string(),
            script,
        });
    }
    StatusCode::NO_CONTENT
}

/// The queued script this request takes, if any (removed from the queue).
pub fn take(st: &MockState, body: &Bytes) -> Option<Script> {
    let req: Value = serde_json::from_slice(body).ok()?;
    let offers_tools = req
        .get("tools")
        .and_then(Value::as_array)
        .is_some_and(|t| !t.is_empty());
    if !offers_tools {
        return None;
    }
    let text = String::from_utf8_lossy(body);
    let mut q = st.queued.lock().ok()?;
    let i = q.iter().position(|s| text.contains(&s.when))?;
    Some(Script::from_value(&q.remove(i).script))
}

/// A `tool_use` content block for `tool_use: {"name", "input"}`.
pub fn tool_block(tool: &Value, id: &str) -> Value {
    json!({
        "type": "tool_use",
        "id": format!("toolu_{}", id.trim_start_matches("msg_")),
        "name": tool.get("name").cloned().unwrap_or(json!("unknown")),
        "input": tool.get("input").cloned().unwrap_or(json!({})),
    })
}

/// The SSE events that stream a `tool_use` block at `index`: its start with an empty input, the
/// input as one JSON delta, its stop.
pub fn tool_events(block: &Value, index: usize) -> Vec<String> {
    let mut start = block.clone();
    start["input"] = json!({});
    let input = block.get("input").map(Value::to_string).unwrap_or_default();
    vec![
        format!(
            "event: content_block_start\ndata: {}\n\n",
            json!({"type": "content_block_start", "index": index, "content_block": start})
        ),
        format!(
            "event: content_block_delta\ndata: {}\n\n",
            json!({"type": "content_block_delta", "index": index, "delta": {"type": "input_json_delta", "partial_json": input}})
        ),
        format!(
            "event: content_block_stop\ndata: {}\n\n",
            json!({"type": "content_block_stop", "index": index})
        ),
    ]
}

pub async fn stats(State(st): State<Arc<MockState>>) -> Json<Value> {
    let seen: Vec<Value> = st
        .seen()
        .iter()
        .map(|s| {
            let headers: serde_json::Map<String, Value> = s
                .headers
                .iter()
                .map(|(k, v)| (k.to_string(), json!(v.to_str().unwrap_or(""))))
                .collect();
            json!({"method": s.method, "path": s.path, "query": s.query, "headers": headers, "body_len": s.body.len(), "body": String::from_utf8_lossy(&s.body)})
        })
        .collect();
    Json(json!({
        "messages": st.messages(),
        "count_tokens": st.count_tokens.load(Ordering::SeqCst),
        "other": st.other.load(Ordering::SeqCst),
        "seen": seen,
    }))
}

pub async fn reset(State(st): State<Arc<MockState>>) -> StatusCode {
    st.reset();
    StatusCode::NO_CONTENT
}
