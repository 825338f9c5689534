//! Streams for the dashboard: core events as server-sent events, and usage as CSV.

use crate::error::HttpError;
use crate::service::Service;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, Stream};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;

/// `GET /api/events`: every core event as `event: <type>` with its JSON. A listener that falls
/// behind gets `event: lagged` and should refetch what it shows.
pub async fn events(
    State(app): State<Arc<Service>>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let rx = app.events.subscribe();
    let stream = stream::unfold(rx, |mut rx| async move {
        let event = match rx.recv().await {
            Ok(e) => {
                let json = serde_json::to_value(&e).unwrap_or_default();
                let kind = json["type"].as_str().unwrap_or("event").to_string();
                Event::default().event(kind).data(json.to_string())
            }
            Err(RecvError::Lagged(n)) => Event::default().event("lagged").data(n.to_string()),
            Err(RecvError::Closed) => return None,
        };
        Some((Ok(event), rx))
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

/// The export's columns; each row is a `[String; COLUMNS.len()]`, so a row can never have a
/// column more or less than the header.
const COLUMNS: [&str; 25] = [
    "id",
    "created_at",
    "budget",
    "model",
    "status",
    "estimated",
    "priced_as",
    "http_status",
    "stream",
    "input_tokens",
    "cache_write_5m_tokens",
    "cache_write_1h_tokens",
    "cache_read_tokens",
    "output_tokens",
    "web_search_requests",
    "cost_dollars",
    "duration_ms",
    "upstream_request_id",
    "worst_case_dollars",
    "clamped_max_tokens",
    "session",
    "agent_id",
    "parent_agent_id",
    "agent_type",
    "project",
];

/// A text cell a client chose (model, session…): quoted where CSV needs it, and kept from
/// being read as a formula by a spreadsheet (a leading `= + - @`, tab or CR gets a `'`).
fn csv_field(s: &str) -> String {
    let s = if s.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{s}")
    } else {
        s.to_string()
    };
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

fn csv_row(r: crate::record::UsageRecord) -> [String; COLUMNS.len()] {
    let word = |v: serde_json::Result<serde_json::Value>| {
        v.ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default()
    };
    [
        r.id.to_string(),
        r.created_at,
        csv_field(&r.budget),
        csv_field(&r.model),
        word(serde_json::to_value(r.status)),
        r.estimated.to_string(),
        word(serde_json::to_value(r.priced_as)),
        r.http_status.to_string(),
        r.stream.to_string(),
        r.input_tokens.to_string(),
        r.cache_write_5m_tokens.to_string(),
        r.cache_write_1h_tokens.to_string(),
        r.cache_read_tokens.to_string(),
        r.output_tokens.to_string(),
        r.web_search_requests.to_string(),
        r.cost_dollars.to_string(),
        r.duration_ms.to_string(),
        csv_field(r.upstream_request_id.as_deref().unwrap_or("")),
        r.worst_case_dollars.to_string(),
        r.clamped_max_tokens
            .map(|n| n.to_string())
            .unwrap_or_default(),
        csv_field(r.session.as_deref().unwrap_or("")),
        csv_field(r.agent_id.as_deref().unwrap_or("")),
        csv_field(r.parent_agent_id.as_deref().unwrap_or("")),
        csv_field(r.agent_type.as_deref().unwrap_or("")),
        csv_field(r.project.as_deref().unwrap_or("")),
    ]
}

/// `GET /api/budgets/:id/usage.csv`: every record of the budget, newest first, streamed in
/// pages so memory stays flat however many there are.
pub async fn usage_csv(
    State(app): State<Arc<Service>>,
    Path(id): Path<String>,
) -> Result<Response, HttpError> {
    let (budget_id, name) = app.budget_ref(&id)?;
    let pages = stream::unfold(
        (app, Some(i64::MAX), true),
        move |(app, before, first)| async move {
            let before = before?;
            let page = app.usage_before(budget_id, before, 1000).await;
            let (rows, last) = match page {
                Ok(page) => page,
                Err(e) => {
                    return Some((Err(std::io::Error::other(e.message)), (app, None, false)));
                }
            };
            if rows.is_empty() && !first {
                return None;
            }
            let next = (rows.len() == 1000).then_some(last).flatten();
            let mut out = String::new();
            if first {
                out.push_str(&COLUMNS.join(","));
                out.push('\n');
            }
            for r in rows {
                out.push_str(&csv_row(r).join(","));
                out.push('\n');
            }
            Some((Ok(bytes::Bytes::from(out)), (app, next, false)))
        },
    );
    let disposition = format!("attachment; filename=\"agent-budget-{name}-usage.csv\"");
    Ok((
        [
            ("content-type", "text/csv; charset=utf-8".to_string()),
            ("content-disposition", disposition),
        ],
        Body::from_stream(pages),
    )
        .into_response())
}
