//! Admission: reserve the request's worst case against its budget, deferring to the
//! upstream's free `count_tokens` when the estimate's uncertainty could flip the decision.

use super::books::Reservation;
use super::call::Call;
use super::estimate::estimate;
use super::forward;
use crate::budget::period;
use crate::budget::{Admission, Budget};
use crate::error::HttpError;
use crate::ledger::{self, Limit, Refusal, Room};
use crate::money::Money;
use crate::pricing::Price;
use crate::pricing::cost::{Ask, worst_case};
use crate::service::Service;
use crate::service::standing::Standing;
use axum::http::{HeaderMap, Method, StatusCode};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use std::time::Duration;

/// Fields `/v1/messages` accepts but `count_tokens` refuses; they do not change the prompt.
const NOT_COUNTED: [&str; 12] = [
    "max_tokens",
    "stream",
    "temperature",
    "top_p",
    "top_k",
    "stop_sequences",
    "metadata",
    "service_tier",
    "inference_geo",
    "speed",
    "container",
    "cache_control",
];
const COUNT_TIMEOUT: Duration = Duration::from_secs(10);

fn fits(r: &Refusal, cost: Money, tokens: u64) -> bool {
    let s = &r.status;
    let dollars = s
        .budget
        .max_dollars
        .is_none_or(|cap| s.period.dollars + s.reserved + cost <= cap);
    let toks = s.budget.max_tokens.is_none_or(|cap| {
        s.period
            .tokens
            .saturating_add(s.reserved_tokens)
            .saturating_add(tokens)
            <= cap
    });
    dollars && toks
}

/// The lowest `max_tokens` a clamp forwards: below it an agent's turn is rarely useful, and
/// a refusal it can report beats a truncated answer.
pub const CLAMP_FLOOR: u64 = 1024;

/// An admitted request: its reservation and what it was admitted as.
#[derive(Debug)]
pub struct Admitted {
    pub reservation: Reservation,
    /// The worst case as reserved: input as estimated (or counted), `max_tokens` as forwarded.
    pub ask: Ask,
    /// Set when `max_tokens` was lowered to fit (`admission: "clamp"`).
    pub clamped: Option<u64>,
}

/// What this proxy's ledger admitted, before the budget's books take it (`Books::reserve`).
struct Here {
    reservation: ledger::Reservation,
    ask: Ask,
    clamped: Option<u64>,
}

/// Why a request is not forwarded: refused by its budget (recorded: 429 or 400), or failed
/// before a decision could be made (not recorded: the team database is unreachable).
#[derive(Debug)]
pub enum Denied {
    Refused(Refused),
    Failed(HttpError),
}

impl From<Refused> for Denied {
    fn from(r: Refused) -> Denied {
        Denied::Refused(r)
    }
}

impl From<HttpError> for Denied {
    fn from(e: HttpError) -> Denied {
        Denied::Failed(e)
    }
}

/// A refused request: why, and the worst case it asked for.
#[derive(Debug)]
pub struct Refused {
    pub why: Why,
    pub worst_case: Money,
}

/// What refused a request: a limit that waiting frees (429), or a rule of the budget the
/// request itself breaks (400, naming the field).
#[derive(Debug)]
pub enum Why {
    Limit(Box<Refusal>),
    Rule(String),
    /// A subscription window past the budget's share of it: the message, and the seconds
    /// until the window resets.
    Window {
        message: String,
        resets_in: i64,
    },
    /// A repeat of a runaway loop the budget's `loop_guard` blocks; one more fits after
    /// this many milliseconds.
    Loop {
        frees_in_ms: i64,
    },
}

impl Refused {
    pub(super) fn limit(refusal: Refusal, worst_case: Money) -> Refused {
        Refused {
            why: Why::Limit(Box::new(refusal)),
            worst_case,
        }
    }

    pub fn looping(frees_in_ms: i64) -> Refused {
        Refused {
            why: Why::Loop { frees_in_ms },
            worst_case: Money::ZERO,
        }
    }

    /// The status it is answered with.
    pub fn status(&self) -> u16 {
        match self.why {
            Why::Rule(_) => 400,
            Why::Limit(_) | Why::Loop { .. } | Why::Window { .. } => 429,
        }
    }

    /// The response: the 429 of a spend limit or a loop, or a 400 naming the budget's rule.
    pub fn error(&self, now: DateTime<Utc>, budget: &Budget, app: &Service) -> HttpError {
        match &self.why {
            Why::Limit(r) => blocked(r, now, app),
            Why::Rule(msg) => HttpError::invalid(msg.clone()),
            Why::Window { message, resets_in } => HttpError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "billing_error",
                message.clone(),
            )
            .with_header("x-should-retry", "false")
            .with_header("retry-after", resets_in.to_string()),
            Why::Loop { frees_in_ms } => {
                let (repeats, minutes) =
                    budget.loop_guard.map_or((0, 0), |g| (g.repeats, g.minutes));
                let at = now + chrono::Duration::milliseconds(*frees_in_ms);
                let msg = format!(
                    "agent-budget: budget '{}' refuses this request: the same request was sent {repeats} times within {minutes} minutes, a runaway loop (its 'loop_guard' blocks repeats); it is accepted again at {}",
                    budget.name,
                    app.config.zone.render(at)
                );
                HttpError::new(StatusCode::TOO_MANY_REQUESTS, "billing_error", msg)
                    .with_header("x-should-retry", "false")
                    .with_header("retry-after", ((frees_in_ms + 999) / 1000).to_string())
            }
        }
    }
}

/// The budget's rules for a single request: its model, and its worst case.
fn check_rules(budget: &Budget, model: &str, worst: Money) -> Result<(), String> {
    let name = &budget.name;
    if !crate::budget::allows(&budget.models, model) {
        let list = budget.models.as_deref().unwrap_or_default().join(", ");
        return Err(format!(
            "agent-budget: budget '{name}' allows only these models (its 'models' list): {list}; '{model}' is not one of them"
        ));
    }
    if let Some(ceiling) = budget.max_request_dollars.filter(|c| worst > *c) {
        return Err(format!(
            "agent-budget: this request could cost up to {} (its prompt and all of max_tokens), over budget '{name}''s per-request ceiling 'max_request_dollars' of {}; lower max_tokens or shorten the prompt",
            worst.display_cents(),
            ceiling.display_cents()
        ));
    }
    if let Some(rate) = budget
        .max_dollars_per_hour
        .filter(|r| worst > *r && budget.admission == Admission::Strict)
    {
        return Err(format!(
            "agent-budget: this request could cost up to {}, more than budget '{name}''s hourly rate 'max_dollars_per_hour' of {} allows in any hour; lower max_tokens or raise the rate",
            worst.display_cents(),
            rate.display_cents()
        ));
    }
    Ok(())
}

/// Reserves the request's worst case in its budget's books, or says why it cannot be
/// admitted: a repeat the loop guard blocks, a rule of the budget, a cap here or the team's.
pub async fn admit(call: &Call) -> Result<Admitted, Denied> {
    let slot = &call.slot;
    if let Some(h) = call.repeat
        && let Some(frees_in_ms) = slot.loop_refusal(h, period::now())
    {
        return Err(Refused::looping(frees_in_ms).into());
    }
    if let Some((message, resets_in)) =
        (call.app).window_refusal(&call.budget, call.account.as_deref())
    {
        let why = Why::Window { message, resets_in };
        return Err(Refused {
            why,
            worst_case: Money::ZERO,
        }
        .into());
    }
    let here = reserve_here(call).await?;
    let reservation = call
        .books
        .reserve(&call.app, slot, here.reservation)
        .await?;
    Ok(Admitted {
        reservation,
        ask: here.ask,
        clamped: here.clamped,
    })
}

/// Reserves the request's worst case in this proxy's ledger, deferring to `count_tokens`
/// when the estimate's uncertainty could flip the decision.
async fn reserve_here(call: &Call) -> Result<Here, Refused> {
    let (app, chain, budget, price) = (&*call.app, &call.chain, &call.budget, &*call.price);
    let session = call.session.as_deref();
    let (req, body, headers) = (&call.parsed, &call.body, &call.headers);
    let est = estimate(body, req.new_tokenizer);
    let ask = |input_tokens| Ask {
        input_tokens,
        ..req.ask
    };
    let admitted = |reservation, ask| Here {
        reservation,
        ask,
        clamped: None,
    };
    let high = ask(est.high);
    let full = worst_case(price, &high);
    if let Err(rule) = check_rules(budget, &req.model, full) {
        return Err(Refused {
            why: Why::Rule(rule),
            worst_case: full,
        });
    }
    let refusal = match ledger::reserve(
        chain,
        full,
        est.high.saturating_add(req.ask.max_tokens),
        period::now(),
        session,
    ) {
        Ok(r) => return Ok(admitted(r, high)),
        Err(r) => r,
    };
    let low = ask(est.low);
    let mut known = high;
    if fits(
        &refusal,
        worst_case(price, &low),
        est.low.saturating_add(req.ask.max_tokens),
    ) {
        if let Some(exact) = count_tokens(app, headers, body).await {
            known = ask(exact);
            let cost = worst_case(price, &known);
            match ledger::reserve(
                chain,
                cost,
                exact.saturating_add(req.ask.max_tokens),
                period::now(),
                session,
            ) {
                Ok(r) => return Ok(admitted(r, known)),
                Err(_) if refusal.status.budget.admission == Admission::Clamp => {}
                Err(refusal) => return Err(Refused::limit(refusal, cost)),
            }
        }
    }
    let worst = worst_case(price, &known);
    if refusal.status.budget.admission == Admission::Clamp && req.max_tokens_at.is_some() {
        let floor = CLAMP_FLOOR.max(req.thinking_budget.map_or(0, |b| b.saturating_add(1)));
        let clamped = ledger::reserve_within(chain, (worst, session), period::now(), |room| {
            largest_fit(price, &known, floor, room)
        });
        if let Some((reservation, n)) = clamped {
            return Ok(Here {
                reservation,
                ask: Ask {
                    max_tokens: n,
                    ..known
                },
                // Room freed meanwhile can make the whole request fit after all.
                clamped: (n < known.max_tokens).then_some(n),
            });
        }
    }
    Err(Refused::limit(refusal, worst))
}

/// The largest `max_tokens` in `floor..=ask.max_tokens` whose worst case fits `room`, with
/// that worst case: (dollars, tokens, max_tokens). The worst case grows with `max_tokens`, so
/// a binary search finds it.
fn largest_fit(price: &Price, ask: &Ask, floor: u64, room: Room) -> Option<(Money, u64, u64)> {
    let mut hi = ask.max_tokens;
    if let Some(t) = room.tokens {
        hi = hi.min(t.checked_sub(ask.input_tokens)?);
    }
    let cost = |n| {
        worst_case(
            price,
            &Ask {
                max_tokens: n,
                ..*ask
            },
        )
    };
    let fits = |n| room.dollars.is_none_or(|d| cost(n) <= d);
    if hi < floor || !fits(floor) {
        return None;
    }
    let mut lo = floor; // fits
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        if fits(mid) {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    Some((cost(lo), ask.input_tokens.saturating_add(lo), lo))
}

#[derive(Deserialize)]
struct Count {
    input_tokens: u64,
}

/// The exact prompt size from the upstream, or None if it cannot be had (then the
/// conservative estimate stands: fail closed).
async fn count_tokens(app: &Service, headers: &HeaderMap, body: &Bytes) -> Option<u64> {
    // The top level only, its values as raw slices of the body: a tree of a 30 MB body
    // took 25 times its size in memory.
    let mut v: std::collections::BTreeMap<String, &serde_json::value::RawValue> =
        serde_json::from_slice(body).ok()?;
    for k in NOT_COUNTED {
        v.remove(k);
    }
    let body = Bytes::from(serde_json::to_vec(&v).ok()?);
    let send = forward::send(
        app,
        Method::POST,
        "/v1/messages/count_tokens",
        forward::request_headers(headers),
        Some(body),
    );
    let resp = tokio::time::timeout(COUNT_TIMEOUT, send).await.ok()?.ok()?;
    if !resp.status().is_success() {
        tracing::info!(status = %resp.status(), "count_tokens refused; keeping the conservative estimate");
        return None;
    }
    let bytes = tokio::time::timeout(COUNT_TIMEOUT, forward::read_all(app, resp.into_body()))
        .await
        .ok()?
        .ok()?;
    serde_json::from_slice::<Count>(&bytes)
        .ok()
        .map(|c| c.input_tokens)
}

/// What the refusal says of the limit it passed, and when waiting helps.
fn detail(r: &Refusal, now: DateTime<Utc>, zone: period::Zone) -> (String, Option<DateTime<Utc>>) {
    let s = &r.status;
    let period = s.budget.period.as_str();
    let resets = match s.window.resets_at {
        Some(t) => format!("; resets {}", zone.render(t)),
        None => String::new(),
    };
    match r.limit {
        Limit::Tokens => (
            format!(
                "{period} token cap: spent {} + in flight {} + this request up to {} > {} tokens{resets}",
                s.period.tokens,
                s.reserved_tokens,
                r.tokens,
                s.budget.max_tokens.unwrap_or(0)
            ),
            s.window.resets_at,
        ),
        Limit::Dollars => (
            format!(
                "{period} cap: spent {} + in flight {} + this request up to {} > {}{resets}",
                s.period.dollars.display_cents(),
                s.reserved.display_cents(),
                r.cost.display_cents(),
                s.budget.max_dollars.unwrap_or_default().display_cents()
            ),
            s.window.resets_at,
        ),
        Limit::Session => {
            let (name, tab) = r.session.clone().unwrap_or_default();
            (
                format!(
                    "per-session cap (max_session_dollars) for session '{name}': spent {} + in flight {} + this request up to {} > {}{resets}",
                    tab.spent.display_cents(),
                    tab.reserved.display_cents(),
                    r.cost.display_cents(),
                    s.budget
                        .max_session_dollars
                        .unwrap_or_default()
                        .display_cents()
                ),
                s.window.resets_at,
            )
        }
        Limit::Hourly { frees_in_ms } => {
            let at = frees_in_ms.map(|ms| now + chrono::Duration::milliseconds(ms));
            let when = match at {
                Some(t) => format!(
                    "; enough of the last hour's spend leaves the window at {}",
                    zone.render(t)
                ),
                None => "; requests in flight hold the rest: retry when they finish".to_string(),
            };
            (
                format!(
                    "hourly rate (max_dollars_per_hour, a sliding 60 minutes): spent {} in the last hour + in flight {} + this request up to {} > {}{when}",
                    s.last_hour.display_cents(),
                    s.reserved.display_cents(),
                    r.cost.display_cents(),
                    s.budget
                        .max_dollars_per_hour
                        .unwrap_or_default()
                        .display_cents()
                ),
                at,
            )
        }
    }
}

/// The 429 of Anthropic's spend-limit gateway: `billing_error`, never retried by SDKs.
/// `retry-after` is when waiting helps: the period's reset, or for the velocity cap the moment
/// enough of the last hour's spend has left the window.
pub fn blocked(r: &Refusal, now: DateTime<Utc>, app: &Service) -> HttpError {
    let s = &r.status;
    let zone = app.config.zone;
    let (detail, retry_at) = detail(r, now, zone);
    let above = match &r.below {
        Some(below) => format!(" (above {below})"),
        None => String::new(),
    };
    let scope = match ledger::chain::is_key(s) {
        true => ledger::chain::subject(&s.budget),
        false => format!("budget {}", ledger::chain::subject(&s.budget)),
    };
    let msg = format!("agent-budget: {scope}{above} would exceed its {detail}");
    let mut err = HttpError::new(StatusCode::TOO_MANY_REQUESTS, "billing_error", msg)
        .with_header("x-should-retry", "false");
    // At a cap, Claude Code's usage-limit headers: it then prints this message as it is.
    if matches!(r.limit, Limit::Dollars | Limit::Tokens) {
        for (name, value) in Standing::of(s).map(|s| s.rejected()).unwrap_or_default() {
            err = err.with_header(name, value);
        }
    }
    match retry_at {
        Some(t) => {
            let ms = (t - now).num_milliseconds().max(1);
            err.with_header("retry-after", ((ms + 999) / 1000).to_string())
        }
        None => err,
    }
}

#[cfg(test)]
mod tests;
