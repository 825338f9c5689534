//! The budget-enforcing proxy for `/v1/messages`, and plain forwarding for the free endpoints.

pub mod admission;
pub mod estimate;
pub mod forward;
pub mod request;
pub mod settle;
pub mod sse;
pub mod team;

use crate::budget::DEFAULT_BUDGET;
use crate::budget::alert::AlertKind;
use crate::budget::period;
use crate::error::HttpError;
use crate::pricing::cost::Usage;
use crate::record::UsageRow;
use crate::record::UsageStatus;
use crate::service::Service;
use crate::upstream::Chunks;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::StreamExt;
use serde::Deserialize;
use settle::{Outcome, Relay, Settlement};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::oneshot;

/// Says a request was forwarded with a lower `max_tokens` than it asked for, and which.
pub const CLAMPED_HEADER: &str = "x-agent-budget-clamped-max-tokens";

/// The client's name for its agent session; ours, so it is not forwarded.
pub const SESSION_HEADER: &str = "x-agent-budget-session";
/// Claude Code's session id, sent with every request; forwarded unchanged.
const CLAUDE_CODE_SESSION: &str = "x-claude-code-session-id";

/// The request's session: `X-Agent-Budget-Session`, else Claude Code's header; at most 200
/// visible ASCII characters.
fn session_of(headers: &HeaderMap) -> Result<Option<String>, HttpError> {
    let Some((name, v)) = [SESSION_HEADER, CLAUDE_CODE_SESSION]
        .into_iter()
        .find_map(|h| headers.get(h).map(|v| (h, v)))
    else {
        return Ok(None);
    };
    match v.to_str() {
        Ok(s)
            if !s.trim().is_empty()
                && s.len() <= 200
                && s.bytes().all(|b| b.is_ascii_graphic() || b == b' ') =>
        {
            Ok(Some(s.trim().to_string()))
        }
        _ => Err(HttpError::invalid(format!(
            "agent-budget: the header '{name}' must be 1 to 200 visible ASCII characters naming the agent session"
        ))),
    }
}

/// Anthropic's own request limit for Messages and count_tokens.
pub const BODY_LIMIT: usize = 32 * 1024 * 1024;

async fn read_body(body: Body, headers: &HeaderMap) -> Result<Bytes, HttpError> {
    let too_large = || {
        HttpError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request_too_large",
            format!(
                "agent-budget: the request body exceeds {BODY_LIMIT} bytes, the Messages API's limit"
            ),
        )
    };
    let declared = headers
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > BODY_LIMIT as u64) {
        return Err(too_large());
    }
    axum::body::to_bytes(body, BODY_LIMIT).await.map_err(|e| {
        let mut src: Option<&dyn std::error::Error> = Some(&e);
        while let Some(s) = src {
            if s.is::<http_body_util::LengthLimitError>() {
                return too_large();
            }
            src = s.source();
        }
        HttpError::invalid(format!(
            "agent-budget: could not read the request body: {e}"
        ))
    })
}

fn path_and_query(req_uri: &axum::http::Uri, upstream_path: &str) -> String {
    match req_uri.query() {
        Some(q) => format!("{upstream_path}?{q}"),
        None => upstream_path.to_string(),
    }
}

/// The budget `X-Budget-Id` names, if the header is there: one non-empty visible-ASCII
/// value, else 400 (a request is never charged to `default` by mistake).
fn budget_header(headers: &HeaderMap) -> Result<Option<String>, HttpError> {
    let mut values = headers.get_all("x-budget-id").iter();
    let Some(v) = values.next() else {
        return Ok(None);
    };
    let name = v.to_str().map(str::trim).unwrap_or("");
    if values.next().is_some() || name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(HttpError::invalid(
            "agent-budget: the header 'X-Budget-Id' must appear once and name a budget (its name or id, e.g. 'X-Budget-Id: my-agents'); leave it out to use the 'default' budget",
        ));
    }
    Ok(Some(name.to_string()))
}

/// `POST /agent-budget/v1/messages`: budget from `X-Budget-Id`, else `default`.
pub async fn messages(State(app): State<Arc<Service>>, req: Request) -> Response {
    let key = match budget_header(req.headers()) {
        Ok(k) => k,
        Err(e) => return e.into_response(),
    };
    enforce(app, key, req)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

/// `POST /agent-budget/b/{budget}/v1/messages`.
pub async fn messages_for(
    State(app): State<Arc<Service>>,
    Path(budget): Path<String>,
    req: Request,
) -> Response {
    enforce(app, Some(budget), req)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn enforce(
    app: Arc<Service>,
    key: Option<String>,
    req: Request,
) -> Result<Response, HttpError> {
    let started = Instant::now();
    let (mut parts, body) = req.into_parts();
    // A virtual key names its budget, whatever the path or header says.
    let keyed = app.resolve_key(&mut parts.headers)?;
    let key = match (keyed, key.filter(|k| !k.is_empty())) {
        (Some(id), _) => id.to_string(),
        (None, Some(k)) => k,
        (None, None) if app.config.require_budget => {
            return Err(HttpError::invalid(
                "agent-budget: this proxy requires a budget: add the header 'X-Budget-Id: <budget>' or use the base URL …/agent-budget/b/<budget>",
            ));
        }
        (None, None) => DEFAULT_BUDGET.to_string(),
    };
    let failure = app
        .store
        .health
        .failure()
        .or_else(|| app.store.writer.overloaded());
    if let Some(failure) = failure {
        if !app.config.fail_open {
            return Err(HttpError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "api_error",
                format!(
                    "agent-budget: usage records cannot be saved to the database ({failure}); requests are refused until they can, so that none goes unaccounted. Free disk space or fix the data directory's permissions, or start with --fail-open to forward anyway"
                ),
            ));
        }
    }
    let slot = app
        .ledger
        .find(&key)
        .ok_or_else(|| HttpError::not_found(format!("budget '{key}' does not exist")))?;
    let session = session_of(&parts.headers)?;
    let body = read_body(body, &parts.headers).await?;
    let parsed =
        request::parse(&body).map_err(|e| HttpError::invalid(format!("agent-budget: {e}")))?;
    let book = app.prices();
    let (price, priced_as) = book.lookup(&parsed.model);
    let budget = slot.budget();
    let (budget_id, budget_name) = (budget.id, budget.name.clone());
    let repeat = budget
        .loop_guard
        .map(|_| request::fingerprint(&body, &parsed.model));
    let looping = repeat.and_then(|h| slot.loop_refusal(h, period::now()));
    let admitted = match looping {
        Some(frees_in_ms) => Err(admission::Refused::looping(frees_in_ms)),
        None => {
            admission::admit(&app, &slot, &budget, &price, &parsed, &body, &parts.headers).await
        }
    };
    let admitted = match admitted {
        Ok(a) => team::share(&app, &slot, &budget, a).await?,
        Err(refused) => Err(refused),
    };
    let mut alerts = Vec::new();
    let admitted = match admitted {
        Ok(a) => a,
        Err(refused) => {
            let now = period::now();
            let first =
                team::first_block(&app, slot.count_blocked(refused.worst_case, now), now).await;
            alerts.extend(
                first
                    .iter()
                    .map(|st| st.alert(AlertKind::Blocked, None, None, now)),
            );
            let row = UsageRow {
                created_at: now,
                day: app.config.zone.day(now),
                budget_id,
                model: parsed.model.clone(),
                status: UsageStatus::Blocked,
                estimated: false,
                priced_as,
                http_status: refused.status(),
                stream: parsed.stream,
                tokens: Default::default(),
                cost: Default::default(),
                duration_ms: started.elapsed().as_millis() as u64,
                upstream_request_id: None,
                worst_case: refused.worst_case,
                clamped_max_tokens: None,
                session,
                alerts,
            };
            team::count_blocked(&app, &budget_name, &row);
            settle::publish(&app, budget_name, &row);
            let _ = app.store.writer.record(row).await;
            return Err(refused.error(now, &budget, &app));
        }
    };
    // Only forwarded requests count towards a loop (docs/guardrails.md).
    if let Some(h) = repeat {
        let now = period::now();
        if slot.count_repeat(h, now) {
            let model = Some(parsed.model.clone());
            alerts.push(slot.status(now).alert(AlertKind::Loop, None, model, now));
        }
    }
    let mut budget_headers = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(&budget_name) {
        budget_headers.insert("x-agent-budget-id", v);
    }
    if let Some(rem) = admitted.reservation.remaining() {
        if let Ok(v) = HeaderValue::from_str(&rem.max(Default::default()).to_string()) {
            budget_headers.insert("x-agent-budget-remaining", v);
        }
    }
    let body = match (admitted.clamped, &parsed.max_tokens_at) {
        (Some(n), Some(at)) => {
            budget_headers.insert(CLAMPED_HEADER, HeaderValue::from(n));
            Bytes::from(request::with_max_tokens(&body, at, n))
        }
        _ => body,
    };
    let settlement = Settlement {
        worst_case: admitted.reservation.worst_case(),
        reservation: admitted.reservation,
        team: admitted.team,
        ask: admitted.ask,
        early_input: !parsed.server_tools,
        clamped_max_tokens: admitted.clamped,
        session,
        alerts,
        price,
        app: app.clone(),
        book: book.clone(),
        budget_id,
        budget: budget_name,
        model: parsed.model,
        stream: parsed.stream,
        started,
        http_status: 0,
        upstream_request_id: None,
    };
    let exchange = Exchange {
        path: path_and_query(&parts.uri, "/v1/messages"),
        headers: forward::request_headers(&parts.headers),
        body,
        budget_headers,
    };
    // The exchange runs in its own tracked task so accounting completes even if the client
    // hangs up (the handler's future is dropped) and shutdown waits for it.
    let (tx, rx) = oneshot::channel();
    app.tracker.spawn(exchange.run(settlement, tx));
    rx.await.map_err(|_| {
        HttpError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "api_error",
            "agent-budget: the request failed internally",
        )
    })
}

struct Exchange {
    path: String,
    headers: HeaderMap,
    body: Bytes,
    budget_headers: HeaderMap,
}

#[derive(Deserialize)]
struct Reply {
    model: Option<String>,
    usage: Option<Usage>,
}

fn is_event_stream(h: &HeaderMap) -> bool {
    h.get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"))
}

impl Exchange {
    async fn run(self, mut s: Settlement, tx: oneshot::Sender<Response>) {
        let app = s.app.clone();
        let resp = match forward::send(
            &app,
            Method::POST,
            &self.path,
            self.headers,
            Some(self.body),
        )
        .await
        {
            Ok(r) => r,
            Err(e) => {
                s.http_status = e.status.as_u16();
                s.finish_durably(Outcome::Free(UsageStatus::UpstreamError))
                    .await;
                let _ = tx.send(e.into_response());
                return;
            }
        };
        let (parts, incoming) = resp.into_parts();
        let status = parts.status;
        let mut headers = forward::response_headers(&parts.headers);
        headers.extend(self.budget_headers);
        s.http_status = status.as_u16();
        s.upstream_request_id = parts
            .headers
            .get("request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let build = |body: Body| {
            let mut r = Response::new(body);
            *r.status_mut() = status;
            *r.headers_mut() = headers;
            r
        };
        if status.is_success() && is_event_stream(&parts.headers) {
            // Wait for the first event so the headers leave with it in one write: the client
            // then wakes once for both, as it does talking to the API directly.
            let mut upstream = Chunks::new(incoming, app.config.upstream_timeout);
            let first = upstream.next().await;
            let relay = Relay::new(futures_util::stream::iter(first).chain(upstream).boxed(), s);
            // If the client is gone, the response (and the relay) drop here and settle as aborted.
            let _ = tx.send(build(Body::from_stream(relay)));
            return;
        }
        let body = match forward::read_all(&app, incoming).await {
            Ok(b) => b,
            Err(err) => {
                s.http_status = err.status.as_u16();
                let outcome = if status.is_success() {
                    Outcome::WorstCase(UsageStatus::UpstreamError)
                } else {
                    Outcome::Free(UsageStatus::UpstreamError)
                };
                s.finish_durably(outcome).await;
                let _ = tx.send(err.into_response());
                return;
            }
        };
        let outcome = if !status.is_success() {
            Outcome::Free(UsageStatus::UpstreamError)
        } else {
            let finished = if tx.is_closed() {
                UsageStatus::ClientAborted
            } else {
                UsageStatus::Ok
            };
            match serde_json::from_slice::<Reply>(&body) {
                Ok(Reply {
                    model,
                    usage: Some(usage),
                }) => Outcome::Usage {
                    usage,
                    model,
                    status: finished,
                    estimated: false,
                },
                _ => Outcome::WorstCase(finished),
            }
        };
        s.finish_durably(outcome).await;
        let _ = tx.send(build(Body::from(body)));
    }
}

/// Free endpoints (`count_tokens`, `models`): forwarded as they are, never blocked, not recorded.
pub async fn passthrough(State(app): State<Arc<Service>>, req: Request) -> Response {
    forward_free(app, req)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

/// Whether a free endpoint's path may go upstream as it is: exactly one of the routes, with a
/// plain model id (an encoded `/` or `..` could reach another endpoint with the real key).
fn forwardable(v1: &str) -> bool {
    match v1.strip_prefix("/v1/models/") {
        Some(id) => {
            !id.is_empty()
                && id != "."
                && id != ".."
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._:@".contains(&b))
        }
        None => v1 == "/v1/models" || v1 == "/v1/messages/count_tokens",
    }
}

async fn forward_free(app: Arc<Service>, req: Request) -> Result<Response, HttpError> {
    let (mut parts, body) = req.into_parts();
    app.resolve_key(&mut parts.headers)?;
    let path = parts.uri.path();
    let v1 = path.find("/v1/").map(|i| &path[i..]).unwrap_or(path);
    if !forwardable(v1) {
        return Err(HttpError::invalid(format!(
            "agent-budget: the path '{v1}' is not forwarded: model ids are letters, digits and '-._:@', with no percent-encoding or dot segments"
        )));
    }
    let target = path_and_query(&parts.uri, v1);
    let body = if parts.method == Method::GET {
        None
    } else {
        Some(read_body(body, &parts.headers).await?)
    };
    let resp = forward::send(
        &app,
        parts.method.clone(),
        &target,
        forward::request_headers(&parts.headers),
        body,
    )
    .await?;
    let (parts, incoming) = resp.into_parts();
    let body = forward::read_all(&app, incoming).await?;
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = parts.status;
    *r.headers_mut() = forward::response_headers(&parts.headers);
    Ok(r)
}

/// Any other `/v1/*` path: not proxied, because it would bypass the budget.
pub async fn not_proxied(req: Request) -> HttpError {
    HttpError::not_found(format!(
        "agent-budget: {} {} is not proxied; only /v1/messages, /v1/messages/count_tokens and /v1/models pass through (batches and other endpoints would bypass the budget)",
        req.method(),
        req.uri().path()
    ))
}
