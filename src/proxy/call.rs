//! A `/v1/messages` request as admission, refusal and settlement see it: its budget and the
//! books it is kept in, its parsed body and its price, read once.

use super::books::Books;
use super::facts::Facts;
use super::request::{self, MessagesRequest};
use crate::budget::{Budget, DEFAULT_BUDGET};
use crate::error::HttpError;
use crate::ledger::Slot;
use crate::money::Money;
use crate::pricing::{Price, PriceBook, PricedAs};
use crate::record::Attribution;
use crate::service::Service;
use crate::service::sign_in::{PROJECT_TAG, TOKEN_PREFIX};
use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri};
use bytes::Bytes;
use std::sync::Arc;
use std::time::Instant;

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

/// Whether a sign-in's token is the request's credential (checked before it is swapped).
fn carries_sign_in(headers: &HeaderMap) -> bool {
    headers.get_all("authorization").iter().any(|v| {
        v.as_bytes()
            .strip_prefix(b"Bearer ")
            .is_some_and(|t| t.starts_with(TOKEN_PREFIX.as_bytes()))
    })
}

/// The beta that lets a request carry `tags`: taken out with them.
const TAGS_BETA: &str = "request-tags-";

fn drop_tags_beta(headers: &mut HeaderMap) {
    let Some(v) = headers.get("anthropic-beta").and_then(|v| v.to_str().ok()) else {
        return;
    };
    let kept: Vec<&str> = v
        .split(',')
        .map(str::trim)
        .filter(|b| !b.is_empty() && !b.starts_with(TAGS_BETA))
        .collect();
    match HeaderValue::from_str(&kept.join(",")) {
        Ok(v) if !kept.is_empty() => {
            headers.insert("anthropic-beta", v);
        }
        _ => {
            headers.remove("anthropic-beta");
        }
    }
}

/// Claude Code's agent headers: which agent of a session sent the request.
const AGENT_HEADERS: [&str; 3] = [
    "x-claude-code-agent-id",
    "x-claude-code-parent-agent-id",
    "x-claude-code-agent-type",
];

/// Who in the session sent the request, as far as the client says: each header kept when it
/// is 1 to 200 visible ASCII characters, else left out (informational: never refused).
fn attribution_of(headers: &HeaderMap) -> Attribution {
    let [agent_id, parent_agent_id, agent_type] = AGENT_HEADERS.map(|h| {
        let v = headers.get(h)?.to_str().ok()?.trim();
        let ok = !v.is_empty() && v.len() <= 200 && v.bytes().all(|b| b.is_ascii_graphic());
        ok.then(|| v.to_string())
    });
    Attribution {
        key_id: None,
        agent_id,
        parent_agent_id,
        agent_type,
        project: None,
    }
}

/// Anthropic's own request limit for Messages and count_tokens.
pub const BODY_LIMIT: usize = 32 * 1024 * 1024;

pub async fn read_body(body: Body, headers: &HeaderMap) -> Result<Bytes, HttpError> {
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

/// The budget `X-Budget-Id` names, if the header is there: one non-empty visible-ASCII
/// value, else 400 (a request is never charged to `default` by mistake).
pub fn budget_header(headers: &HeaderMap) -> Result<Option<String>, HttpError> {
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

/// A request on its way through the proxy.
pub struct Call {
    pub app: Arc<Service>,
    pub started: Instant,
    pub slot: Arc<Slot>,
    /// The budget's settings as the request found them.
    pub budget: Budget,
    /// The budget and its ancestors: what admission reserves on.
    pub chain: Vec<Arc<Slot>>,
    pub books: Books,
    pub uri: Uri,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub parsed: MessagesRequest,
    pub session: Option<String>,
    pub attribution: Attribution,
    /// Charged through a virtual key (or a sign-in), the key's lineage (its first key's hash,
    /// which names it in the team's records): its user sees the budget's standing, not the
    /// organisation's rate limits.
    pub keyed: Option<Arc<str>>,
    pub book: Arc<PriceBook>,
    pub price: Arc<Price>,
    pub priced_as: PricedAs,
    /// Its fingerprint, when the budget's loop guard watches for repeats.
    pub repeat: Option<u64>,
    /// The credential it goes upstream with, as a fingerprint: a subscription's windows or
    /// an API key's rate limits are read from the answer for it.
    pub account: Option<String>,
}

impl Call {
    /// Reads a request charged to the budget `key` names (a virtual key's own, whatever the
    /// path or header says; else `default`, unless the proxy requires a budget).
    pub async fn read(
        app: Arc<Service>,
        key: Option<String>,
        req: Request,
    ) -> Result<Call, HttpError> {
        let started = Instant::now();
        let (mut parts, body) = req.into_parts();
        let signed_in = carries_sign_in(&parts.headers);
        let keyed = app.resolve_key(&mut parts.headers)?;
        let account = account_of(&parts.headers);
        let mut slot = budget_of(&app, keyed.as_ref().map(|k| k.budget_id), key)?;
        let session = session_of(&parts.headers)?;
        let mut attribution = attribution_of(&parts.headers);
        attribution.key_id = keyed.as_ref().map(|k| k.id);
        let mut body = read_body(body, &parts.headers).await?;
        if signed_in {
            drop_tags_beta(&mut parts.headers);
            if let Some((rest, project)) = request::take_tags(&body, PROJECT_TAG) {
                body = Bytes::from(rest);
                attribution.project = project;
            }
        }
        if let Some(child) = project_budget(&app, &slot, attribution.project.as_deref()) {
            slot = child;
        }
        let parsed =
            request::parse(&body).map_err(|e| HttpError::invalid(format!("agent-budget: {e}")))?;
        let book = app.prices();
        let (price, priced_as) = book.lookup(&parsed.model);
        let budget = slot.budget();
        let repeat = budget
            .loop_guard
            .map(|_| request::fingerprint(&body, &parsed.model));
        Ok(Call {
            books: Books::of(&app, &budget.name),
            chain: app.chain_of(&slot, attribution.key_id),
            app,
            started,
            slot,
            budget,
            uri: parts.uri,
            headers: parts.headers,
            body,
            parsed,
            session,
            attribution,
            keyed: keyed.map(|k| k.lineage),
            book,
            price,
            priced_as,
            repeat,
            account,
        })
    }
}

/// The fingerprint of the credential a request goes upstream with (after a virtual key or
/// sign-in was swapped for the real key): a subscription's OAuth token, or an API key.
fn account_of(headers: &HeaderMap) -> Option<String> {
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "));
    let credential = bearer.or_else(|| headers.get("x-api-key").map(|v| v.as_bytes()))?;
    Some(crate::subscription::account(credential))
}

impl Call {
    /// What its record will say whatever the outcome, its text taken out of the call (no
    /// copies; the rest of the call stays usable).
    pub fn facts(&mut self, worst_case: Money, clamped_max_tokens: Option<u64>) -> Facts {
        let trace = self.app.tracing().then(|| crate::service::spans::Request {
            parent: (self.headers.get("traceparent"))
                .and_then(|v| v.to_str().ok())
                .and_then(crate::traces::parent),
            model: self.parsed.model.clone(),
            max_tokens: self.parsed.ask.max_tokens,
            decision: match clamped_max_tokens {
                Some(_) => "clamped",
                None => "admitted",
            },
            refused_by: None,
        });
        Facts {
            budget_id: self.budget.id,
            budget: std::mem::take(&mut self.budget.name),
            model: std::mem::take(&mut self.parsed.model),
            stream: self.parsed.stream,
            session: self.session.take(),
            started: self.started,
            worst_case,
            clamped_max_tokens,
            attribution: std::mem::take(&mut self.attribution),
            trace,
        }
    }
}

/// The child budget a project's request is charged to: the budget of the project's name
/// right below the request's own, if there is one.
fn project_budget(app: &Service, slot: &Arc<Slot>, project: Option<&str>) -> Option<Arc<Slot>> {
    // A project named like an id would find a budget by its id: names only.
    let project = project.filter(|p| p.parse::<i64>().is_err())?;
    let child = app.ledger.find(project)?;
    (child.parent() == Some(slot.id())).then_some(child)
}

/// The budget a request is charged to (its key's, else the one it names, else `default`),
/// once the proxy can record it.
fn budget_of(
    app: &Service,
    keyed: Option<i64>,
    key: Option<String>,
) -> Result<Arc<Slot>, HttpError> {
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
    if let Some(failure) = failure.filter(|_| !app.config.fail_open) {
        return Err(HttpError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "api_error",
            format!(
                "agent-budget: usage records cannot be saved to the database ({failure}); requests are refused until they can, so that none goes unaccounted. Free disk space or fix the data directory's permissions, or start with --fail-open to forward anyway"
            ),
        ));
    }
    app.ledger
        .find(&key)
        .ok_or_else(|| HttpError::not_found(format!("budget '{key}' does not exist")))
}
