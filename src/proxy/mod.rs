//! The budget-enforcing proxy for `/v1/messages`, and plain forwarding for the free endpoints.

pub mod admission;
pub mod books;
pub mod call;
pub mod estimate;
pub mod facts;
pub mod forward;
pub mod refusal;
pub mod request;
pub mod settle;
pub mod sse;

use crate::budget::alert::AlertKind;
use crate::budget::period;
use crate::error::HttpError;
use crate::ledger::Slot;
use crate::pricing::cost::Usage;
use crate::record::UsageStatus;
use crate::service::Service;
use crate::service::standing;
use crate::upstream::Chunks;
use admission::Admitted;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
pub use call::{BODY_LIMIT, SESSION_HEADER};
use call::{Call, budget_header, read_body};
use facts::{Charged, Reply};
use futures_util::StreamExt;
use refusal::{Denied, Refused};
use serde::Deserialize;
use settle::{Outcome, Relay, Settlement};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::oneshot;

/// Says a request was forwarded with a lower `max_tokens` than it asked for, and which.
pub const CLAMPED_HEADER: &str = "x-agent-budget-clamped-max-tokens";

fn path_and_query(req_uri: &axum::http::Uri, upstream_path: &str) -> String {
    match req_uri.query() {
        Some(q) => format!("{upstream_path}?{q}"),
        None => upstream_path.to_string(),
    }
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

/// Enforces the budget on one request, in three steps: admit; refuse and record; or forward.
async fn enforce(
    app: Arc<Service>,
    key: Option<String>,
    req: Request,
) -> Result<Response, HttpError> {
    let call = Call::read(app, key, req).await?;
    match admission::admit(&call).await {
        Ok(admitted) => forward(call, admitted).await,
        Err(Denied::Refused(refused)) => Err(refuse(call, refused).await),
        Err(Denied::Failed(e)) => Err(e),
    }
}

/// Counts and records a refused request; the error to answer it with.
async fn refuse(mut call: Call, refused: Refused) -> HttpError {
    let (app, now) = (call.app.clone(), period::now());
    app.metrics
        .request(&call.budget.name, "refused", refused.reason());
    let model = call.parsed.model.clone();
    let first = call
        .books
        .count_refusal(&app, &call.slot, refused.worst_case, &model, now)
        .await;
    let error = refused.error(now, &call.budget, &app);
    let mut facts = call.facts(refused.worst_case, None);
    let trace = facts.trace.take().map(|t| crate::service::spans::Request {
        decision: "refused",
        refused_by: Some(refused.reason()),
        ..t
    });
    let charged = Charged::nothing(model, UsageStatus::Blocked, call.priced_as);
    let reply = Reply {
        http_status: refused.status(),
        request_id: None,
    };
    let day = app.config.zone.day(now);
    let (name, row) = facts.row(charged, reply, first.into_iter().collect(), now, day);
    if let Some(t) = trace {
        app.trace(&name, &row, t);
    }
    app.publish(name, &row);
    let _ = app.store.writer.record(row).await;
    error
}

/// Forwards an admitted request; its exchange settles it however it ends.
async fn forward(mut call: Call, admitted: Admitted) -> Result<Response, HttpError> {
    let app = call.app.clone();
    let mut alerts = Vec::new();
    // Only forwarded requests count towards a loop (docs/guardrails.md).
    if let Some(h) = call.repeat {
        let now = period::now();
        if call.slot.count_repeat(h, now) {
            let model = Some(call.parsed.model.clone());
            alerts.push(
                call.slot
                    .status(now)
                    .alert(AlertKind::Loop, None, model, now),
            );
        }
    }
    let mut budget_headers = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(&call.budget.name) {
        budget_headers.insert("x-agent-budget-id", v);
    }
    if let Some(rem) = admitted.reservation.remaining() {
        if let Ok(v) = HeaderValue::from_str(&rem.max(Default::default()).to_string()) {
            budget_headers.insert("x-agent-budget-remaining", v);
        }
    }
    let body = match (admitted.clamped, &call.parsed.max_tokens_at) {
        (Some(n), Some(at)) => {
            budget_headers.insert(CLAMPED_HEADER, HeaderValue::from(n));
            Bytes::from(request::with_max_tokens(&call.body, at, n))
        }
        _ => call.body.clone(),
    };
    let exchange = Exchange {
        path: path_and_query(&call.uri, "/v1/messages"),
        headers: forward::request_headers(&call.headers),
        body,
        budget_headers,
        // Admission is done with the chain: the answer takes it, uncopied.
        keyed: call
            .keyed
            .is_some()
            .then(|| std::mem::take(&mut call.chain)),
        account: call.account.clone(),
        started: call.started,
    };
    let settlement = Settlement::new(call, admitted, alerts);
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
    /// The chain of a request charged through a virtual key or sign-in: its user is told its
    /// standing (Claude Code's usage-limit headers), not the organisation's.
    keyed: Option<Vec<Arc<Slot>>>,
    /// The credential's fingerprint, to read the answer's windows or rate limits for.
    account: Option<String>,
    /// When the request arrived.
    started: Instant,
}

/// What a whole response's body says about money.
#[derive(Deserialize)]
struct Answer {
    model: Option<String>,
    usage: Option<Usage>,
}

fn is_event_stream(h: &HeaderMap) -> bool {
    h.get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"))
}

/// What the upstream's answer tells the metrics (`arrived` and `sent` are when the request
/// came in and left), and what it says of the credential — read before the client has it,
/// so its next request sees what this one said.
fn note(
    app: &Service,
    parts: &axum::http::response::Parts,
    (arrived, sent): (Instant, Instant),
    account: Option<&str>,
) {
    app.metrics.timings(arrived, sent);
    if !parts.status.is_success() {
        app.metrics.upstream_error(parts.status.as_str());
    }
    if let Some(account) = account {
        app.observe_upstream(account, &parts.headers);
    }
}

/// Settles a request the upstream never answered, and tells the client why.
async fn unsent(app: &Service, s: Settlement, tx: oneshot::Sender<Response>, e: HttpError) {
    app.metrics.upstream_error("transport");
    let reply = Reply {
        http_status: e.status.as_u16(),
        request_id: None,
    };
    s.finish_durably(Outcome::Free(UsageStatus::UpstreamError), reply)
        .await;
    let _ = tx.send(e.into_response());
}

impl Exchange {
    async fn run(self, s: Settlement, tx: oneshot::Sender<Response>) {
        let app = s.app().clone();
        let sending = Instant::now();
        let sent = forward::send(
            &app,
            Method::POST,
            &self.path,
            self.headers,
            Some(self.body),
        );
        let resp = match sent.await {
            Ok(r) => r,
            Err(e) => return unsent(&app, s, tx, e).await,
        };
        let (parts, incoming) = resp.into_parts();
        let status = parts.status;
        note(
            &app,
            &parts,
            (self.started, sending),
            self.account.as_deref(),
        );
        let mut headers = forward::response_headers(&parts.headers);
        headers.extend(self.budget_headers);
        if let Some(chain) = &self.keyed {
            standing_of(&app, chain, status, &mut headers);
        }
        let mut reply = Reply {
            http_status: status.as_u16(),
            request_id: parts
                .headers
                .get("request-id")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
        };
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
            let chunks = futures_util::stream::iter(first).chain(upstream).boxed();
            // If the client is gone, the response (and the relay) drop here and settle as aborted.
            let _ = tx.send(build(Body::from_stream(Relay::new(chunks, s, reply))));
            return;
        }
        let body = match forward::read_all(&app, incoming).await {
            Ok(b) => b,
            Err(err) => {
                reply.http_status = err.status.as_u16();
                let outcome = if status.is_success() {
                    Outcome::WorstCase(UsageStatus::UpstreamError)
                } else {
                    Outcome::Free(UsageStatus::UpstreamError)
                };
                s.finish_durably(outcome, reply).await;
                let _ = tx.send(err.into_response());
                return;
            }
        };
        let finished = if tx.is_closed() {
            UsageStatus::ClientAborted
        } else {
            UsageStatus::Ok
        };
        s.finish_durably(outcome_of(status, &body, finished), reply)
            .await;
        let _ = tx.send(build(Body::from(body)));
    }
}

/// A keyed request's answer: the upstream's rate limits out (they are the organisation's),
/// and on success the budget's standing in Claude Code's usage-limit headers.
fn standing_of(app: &Service, chain: &[Arc<Slot>], status: StatusCode, headers: &mut HeaderMap) {
    standing::strip_upstream(headers);
    if let Some(standing) = status
        .is_success()
        .then(|| app.standing(chain, period::now()))
        .flatten()
    {
        standing.allowed(headers);
    }
}

/// What a whole (not streamed) response says about money.
fn outcome_of(status: StatusCode, body: &[u8], finished: UsageStatus) -> Outcome {
    if !status.is_success() {
        return Outcome::Free(UsageStatus::UpstreamError);
    }
    match serde_json::from_slice::<Answer>(body) {
        Ok(Answer {
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

/// The largest telemetry export read (Claude Code's are a few KiB); a larger one is dropped.
const TELEMETRY_LIMIT: usize = 4 * 1024 * 1024;

/// `POST /v1/metrics|logs|traces`: the telemetry Claude Code sends a gateway (OTLP/HTTP).
/// Metrics from a sign-in or virtual key have their per-session counters kept; logs, traces
/// and the rest are read and dropped. The answer is 200 whatever happened, as the protocol
/// asks (a 404 makes the client log an error on every flush), in the request's encoding: `{}`
/// for JSON, an empty message for protobuf.
pub async fn telemetry(State(app): State<Arc<Service>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let json = parts
        .headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let bytes = axum::body::to_bytes(body, TELEMETRY_LIMIT).await;
    if let (Ok(bytes), true) = (bytes, parts.uri.path().ends_with("/v1/metrics")) {
        app.keep_activity(&parts.headers, &bytes, json).await;
    }
    let (kind, body) = if json {
        ("application/json", "{}")
    } else {
        ("application/x-protobuf", "")
    };
    ([("content-type", kind)], body).into_response()
}

/// Any other `/v1/*` path: not proxied, because it would bypass the budget.
pub async fn not_proxied(req: Request) -> HttpError {
    HttpError::not_found(format!(
        "agent-budget: {} {} is not proxied; only /v1/messages, /v1/messages/count_tokens and /v1/models pass through (batches and other endpoints would bypass the budget)",
        req.method(),
        req.uri().path()
    ))
}
