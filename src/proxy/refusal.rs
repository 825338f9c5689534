//! Why a request is not forwarded, and how that is answered: the 429 of a spend limit, a
//! loop or a subscription window, or the 400 of a budget's rule, each naming what to do.

use crate::budget::Budget;
use crate::budget::period;
use crate::error::HttpError;
use crate::ledger::{self, Limit, Refusal};
use crate::money::Money;
use crate::service::Service;
use crate::service::standing::Standing;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};

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

    /// What refused it, as the metrics say.
    pub fn reason(&self) -> &'static str {
        match &self.why {
            Why::Limit(r) => match r.limit {
                Limit::Dollars => "dollars",
                Limit::Tokens => "tokens",
                Limit::Hourly { .. } => "hourly",
                Limit::Session => "session",
            },
            Why::Rule(_) => "rule",
            Why::Window { .. } => "window",
            Why::Loop { .. } => "loop",
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
