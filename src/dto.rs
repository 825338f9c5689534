//! Wire types of the REST API (and, later, the desktop commands): defined once here,
//! serialised by serde, generated for TypeScript by ts-rs into `ui/src/bindings/`.

use crate::budget::Admission;
use crate::budget::period::Period;
use crate::money::Money;
use crate::pricing::PricedAs;
use serde::{Deserialize, Serialize};
use ts_rs::TS;

/// A budget with its current-period spend. Counts (`requests`, `blocked`) are for the current period.
#[derive(Clone, Debug, Serialize, Deserialize, TS)]
#[ts(export)]
pub struct BudgetView {
    pub id: i64,
    pub name: String,
    pub max_dollars: Option<Money>,
    pub max_tokens: Option<u64>,
    pub period: Period,
    pub webhook_url: Option<String>,
    pub thresholds: Vec<u8>,
    pub admission: Admission,
    pub max_dollars_per_hour: Option<Money>,
    pub max_request_dollars: Option<Money>,
    pub models: Option<Vec<String>>,
    pub loop_guard: Option<crate::budget::repeats::LoopGuard>,
    pub created_at: String,
    pub spent_dollars: Money,
    pub spent_tokens: u64,
    pub reserved_dollars: Money,
    pub remaining_dollars: Option<Money>,
    /// spent ÷ cap × 100, for display; 0 when uncapped.
    pub percent_used: f64,
    pub requests: u64,
    pub blocked: u64,
    pub period_start: String,
    pub resets_at: Option<String>,
    /// The typical request's worst case: the p95 of the worst cases of the budget's latest
    /// 200 requests (null until it has had one).
    pub worst_case_dollars: Option<Money>,
    /// How many such requests fit in what is left now (null when uncapped or without history).
    pub requests_that_fit: Option<u64>,
    /// Spend settled in the last 60 minutes.
    pub burn_rate_per_hour: Money,
    /// When the dollar cap is reached at that rate; null when uncapped, when nothing was spent
    /// in the last hour, or when it would come only after the period resets.
    pub projected_exhaustion_at: Option<String>,
}

/// Spend by model (`breakdown` in budget detail and webhook payloads).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, TS)]
#[ts(export)]
pub struct ModelBreakdown {
    pub model: String,
    pub requests: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_write_tokens: u64,
    pub cache_read_tokens: u64,
    pub dollars: Money,
}

/// `GET /api/budgets/:id`: the budget plus its current-period breakdown by model.
#[derive(Clone, Debug, Serialize, Deserialize, TS)]
#[ts(export)]
pub struct BudgetDetail {
    #[serde(flatten)]
    pub budget: BudgetView,
    pub breakdown: Vec<ModelBreakdown>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "snake_case")]
#[ts(export)]
pub enum UsageStatus {
    Ok,
    Blocked,
    UpstreamError,
    ClientAborted,
}

impl UsageStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            UsageStatus::Ok => "ok",
            UsageStatus::Blocked => "blocked",
            UsageStatus::UpstreamError => "upstream_error",
            UsageStatus::ClientAborted => "client_aborted",
        }
    }
    pub fn parse(s: &str) -> UsageStatus {
        match s {
            "ok" => UsageStatus::Ok,
            "blocked" => UsageStatus::Blocked,
            "client_aborted" => UsageStatus::ClientAborted,
            _ => UsageStatus::UpstreamError,
        }
    }
}

/// One proxied (or blocked) request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, TS)]
#[ts(export)]
pub struct UsageRecord {
    pub id: i64,
    pub created_at: String,
    pub budget: String,
    pub model: String,
    pub status: UsageStatus,
    pub estimated: bool,
    pub priced_as: PricedAs,
    pub http_status: u16,
    pub stream: bool,
    pub input_tokens: u64,
    pub cache_write_5m_tokens: u64,
    pub cache_write_1h_tokens: u64,
    pub cache_read_tokens: u64,
    pub output_tokens: u64,
    pub web_search_requests: u64,
    pub cost_dollars: Money,
    pub duration_ms: u64,
    pub upstream_request_id: Option<String>,
    /// The worst case admission reserved (or refused) for this request ("0" before 0.5 records).
    pub worst_case_dollars: Money,
    /// Set when admission lowered `max_tokens` to fit the budget (`admission: "clamp"`).
    pub clamped_max_tokens: Option<u64>,
    /// The agent session it belongs to, if the client said.
    pub session: Option<String>,
}

/// A budget's virtual key as listed: never the key itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, TS)]
#[ts(export)]
pub struct KeyView {
    pub id: i64,
    pub name: String,
    pub created_at: String,
    pub revoked_at: Option<String>,
    /// When a request last carried it (saved every few seconds; None: never).
    pub last_used_at: Option<String>,
}

/// `POST /api/budgets/:id/keys` → 201: the key, shown this once.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, TS)]
#[ts(export)]
pub struct KeyCreated {
    pub id: i64,
    pub name: String,
    /// `sk-ab-…`: give it to the agent; only its hash is kept.
    pub key: String,
    pub created_at: String,
}

/// `GET /api/settings/upstream-key`: the real Anthropic key that virtual-key requests are
/// forwarded with. Never the key itself: its last four characters at most.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, TS)]
#[ts(export)]
pub struct UpstreamKeyView {
    /// None: no key is set, and requests with a virtual key are refused.
    pub source: Option<crate::config::KeySource>,
    pub last4: Option<String>,
    /// Whether the keychain is in use (`--no-keychain` turns it off).
    pub keychain: bool,
}

/// `PUT /api/settings/upstream-key`.
#[derive(Clone, Deserialize, TS)]
#[serde(deny_unknown_fields)]
#[ts(export)]
pub struct NewUpstreamKey {
    pub key: String,
}

/// `POST /api/budgets/:id/keys`.
#[derive(Clone, Debug, Deserialize, TS)]
#[serde(deny_unknown_fields)]
#[ts(export)]
pub struct NewKey {
    pub name: String,
}

/// One agent session's spend in a budget (`GET /api/budgets/:id/sessions`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, TS)]
#[ts(export)]
pub struct SessionView {
    /// Claude Code's `x-claude-code-session-id`, or the client's `X-Agent-Budget-Session`.
    pub session: String,
    pub spent_dollars: Money,
    /// Forwarded requests; refused ones are in `blocked`.
    pub requests: u64,
    pub blocked: u64,
    pub tokens: u64,
    pub first_seen: String,
    pub last_seen: String,
    pub models: Vec<String>,
}

/// `GET /api/budgets/:id/sessions`: most recently seen first.
#[derive(Clone, Debug, Serialize, Deserialize, TS)]
#[ts(export)]
pub struct SessionPage {
    pub items: Vec<SessionView>,
    pub total: u64,
    pub limit: u32,
    pub offset: u64,
}

/// `GET /api/budgets/:id/usage`.
#[derive(Clone, Debug, Serialize, Deserialize, TS)]
#[ts(export)]
pub struct UsagePage {
    pub items: Vec<UsageRecord>,
    pub total: u64,
    pub limit: u32,
    pub offset: u64,
}

/// Dollars and counts over a span of time.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, TS)]
#[ts(export)]
pub struct SpendTotals {
    pub dollars: Money,
    /// Forwarded requests; blocked ones are counted only in `blocked`.
    pub requests: u64,
    pub blocked: u64,
    pub tokens: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, TS)]
#[ts(export)]
pub struct ModelSpend {
    pub model: String,
    #[serde(flatten)]
    pub totals: SpendTotals,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, TS)]
#[ts(export)]
pub struct BudgetSpend {
    pub budget: String,
    pub budget_id: i64,
    #[serde(flatten)]
    pub totals: SpendTotals,
}

/// `GET /api/stats`. `by_model` and `by_budget` are all-time.
#[derive(Clone, Debug, Serialize, Deserialize, TS)]
#[ts(export)]
pub struct Stats {
    pub today: SpendTotals,
    pub this_month: SpendTotals,
    pub all_time: SpendTotals,
    pub by_model: Vec<ModelSpend>,
    pub by_budget: Vec<BudgetSpend>,
}

/// `{ "items": [...] }` for list endpoints.
#[derive(Clone, Debug, Serialize, Deserialize, TS)]
#[ts(export)]
pub struct Items<T: TS> {
    pub items: Vec<T>,
}

/// `GET /api/settings`.
#[derive(Clone, Debug, Serialize, Deserialize, TS)]
#[ts(export)]
pub struct Settings {
    /// Signs webhook bodies (`X-Agent-Budget-Signature`); see docs/webhooks.md.
    pub webhook_secret: String,
    pub retention_days: u32,
    pub proxy_url: String,
    pub require_budget: bool,
    pub time_zone: String,
    /// Whether budgets are enforced with other proxies through a team database
    /// (`--database`): then the figures shown are the team's, `default`'s excepted.
    pub team: bool,
    /// The file holding the admin token that scripts present to `/api/*`; null when the token
    /// was given with `--admin-token` or the API is open (`--open-admin`).
    pub admin_token_file: Option<String>,
}

/// The body of every REST error: `{ "error": { "type": "...", "message": "..." } }`.
#[derive(Clone, Debug, Serialize, Deserialize, TS)]
#[ts(export)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Clone, Debug, Serialize, Deserialize, TS)]
#[ts(export)]
pub struct ErrorDetail {
    #[serde(rename = "type")]
    pub kind: String,
    pub message: String,
}

/// One line of a chart: a budget's or a model's spend per day.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, TS)]
#[ts(export)]
pub struct Series {
    pub name: String,
    /// Dollars per day, aligned with `SpendSeries::days`.
    pub dollars: Vec<Money>,
}

/// `GET /api/spend?days=30`: spend per local day, by budget and by model.
#[derive(Clone, Debug, Serialize, Deserialize, TS)]
#[ts(export)]
pub struct SpendSeries {
    /// `YYYY-MM-DD`, oldest first, ending today.
    pub days: Vec<String>,
    pub by_budget: Vec<Series>,
    pub by_model: Vec<Series>,
}
