//! Wire types of the REST API (and, later, the desktop commands): defined once here,
//! serialised by serde, generated for TypeScript by ts-rs into `ui/src/bindings/`.

use crate::budget::Admission;
use crate::budget::level::Level;
use crate::budget::period::Period;
use crate::money::Money;
use crate::record::{ModelBreakdown, SessionView, UsageRecord};
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
    /// The budget above it (its name), whose caps its requests must fit too.
    pub parent: Option<String>,
    /// Each agent session's cap within the period.
    pub max_session_dollars: Option<Money>,
    /// The share of each subscription window its requests may take.
    pub max_subscription_utilization: Option<crate::budget::pacing::WindowCaps>,
    pub created_at: String,
    pub spent_dollars: Money,
    pub spent_tokens: u64,
    pub reserved_dollars: Money,
    pub remaining_dollars: Option<Money>,
    /// spent ÷ cap × 100, for display; 0 when uncapped.
    pub percent_used: f64,
    /// How near the cap: `warning` from 80 %, `over` at 100 % or after a refusal this period.
    pub level: Level,
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

/// `GET /api/budgets/:id`: the budget plus its current-period breakdown by model.
#[derive(Clone, Debug, Serialize, Deserialize, TS)]
#[ts(export)]
pub struct BudgetDetail {
    #[serde(flatten)]
    pub budget: BudgetView,
    pub breakdown: Vec<ModelBreakdown>,
    /// The budgets above it, nearest first.
    pub ancestors: Vec<String>,
    /// The budgets right below it.
    pub children: Vec<String>,
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
    /// The key's own cap: a scope below its budget (per developer under a team budget).
    #[serde(default)]
    #[ts(optional, type = "string | number")]
    pub max_dollars: Option<Money>,
    /// The cap's period; the budget's when left out.
    #[serde(default)]
    #[ts(optional)]
    pub period: Option<crate::budget::period::Period>,
}

/// `PATCH /api/budgets/:id/keys/:key_id`: a key's (or sign-in's) own cap, changed while it
/// is in use.
#[derive(Clone, Debug, Deserialize, TS)]
#[serde(deny_unknown_fields)]
#[ts(export)]
pub struct KeyPatch {
    /// The new cap; `null` takes the key's own cap away (only its budget's caps apply).
    #[serde(default, deserialize_with = "crate::budget::present")]
    #[ts(optional, type = "string | number | null")]
    pub max_dollars: Option<Option<Money>>,
    /// The cap's new period.
    #[serde(default)]
    #[ts(optional)]
    pub period: Option<crate::budget::period::Period>,
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

/// One window of a subscription as the dashboard shows it.
#[derive(Clone, Debug, Serialize, Deserialize, TS)]
#[ts(export)]
pub struct WindowView {
    /// The share used (a fraction; above 1 past the limit).
    pub utilization: Option<f64>,
    pub resets_at: Option<String>,
    pub status: Option<String>,
    /// At its recent pace: utilization gained per hour, and when it fills if before it resets.
    pub per_hour: Option<f64>,
    pub fills_at: Option<String>,
}

/// A subscription credential's windows as the upstream last reported them
/// (`GET /api/subscriptions`).
#[derive(Clone, Debug, Serialize, Deserialize, TS)]
#[ts(export)]
pub struct SubscriptionView {
    /// A short, non-reversible fingerprint of the credential.
    pub account: String,
    pub five_hour: Option<WindowView>,
    pub seven_day: Option<WindowView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub overage: Option<WindowView>,
    pub representative_claim: Option<String>,
    pub status: Option<String>,
    pub seen_at: String,
}

/// An API key's rate limits as the upstream last reported them (`GET /api/rate-limits`).
#[derive(Clone, Debug, Serialize, Deserialize, TS)]
#[ts(export)]
pub struct RateLimitView {
    pub account: String,
    pub requests: Option<crate::subscription::Limit>,
    pub tokens: Option<crate::subscription::Limit>,
    pub input_tokens: Option<crate::subscription::Limit>,
    pub output_tokens: Option<crate::subscription::Limit>,
    pub seen_at: String,
}
