//! Records: what each request leaves behind (its usage record, written once) and the views
//! read back from the books (records, sessions, keys, spend by model). Defined once here,
//! below the store that keeps them and the API that shows them; generated for TypeScript.

pub mod stats;

use crate::budget::alert::{AlertKind, NewAlert};
use crate::money::Money;
use crate::pricing::PricedAs;
use crate::pricing::cost::Tokens;
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use ts_rs::TS;

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
    /// The agent that sent it (Claude Code's `x-claude-code-agent-id`), its parent agent, and
    /// its type (a subagent's); null when the client did not say.
    pub agent_id: Option<String>,
    pub parent_agent_id: Option<String>,
    pub agent_type: Option<String>,
    /// The project it was for (a sign-in's billing-group tag in the request's `tags`).
    pub project: Option<String>,
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
    /// `key`, made on the budget's page; `sign_in`, made by approving a Claude Code sign-in.
    pub kind: KeyKind,
    /// The key's own cap, a scope below its budget (null: only the budget's caps apply).
    pub max_dollars: Option<Money>,
    pub period: Option<crate::budget::period::Period>,
    /// What the key spent in its period, when it has a cap.
    pub spent_dollars: Option<Money>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "snake_case")]
#[ts(export)]
pub enum KeyKind {
    Key,
    SignIn,
}

impl KeyKind {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyKind::Key => "key",
            KeyKind::SignIn => "sign_in",
        }
    }
    pub fn parse(s: &str) -> KeyKind {
        match s {
            "sign_in" => KeyKind::SignIn,
            _ => KeyKind::Key,
        }
    }
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
    /// The session's spend split between its main agent and each subagent, most first.
    pub agents: Vec<AgentSpend>,
    /// What Claude Code's telemetry said the session did; null when it sent none.
    pub activity: Option<SessionActivity>,
    /// Its spend in the budget's current period, against `max_session_dollars` (null when
    /// the budget does not cap sessions).
    pub period_dollars: Option<Money>,
}

/// One agent's share of a session.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, TS)]
#[ts(export)]
pub struct AgentSpend {
    /// Claude Code's `x-claude-code-agent-id`; null for the main agent.
    pub agent_id: Option<String>,
    pub agent_type: Option<String>,
    pub parent_agent_id: Option<String>,
    pub spent_dollars: Money,
    pub requests: u64,
}

/// A session's counters from Claude Code's telemetry (OTLP metrics sent to the proxy).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, TS)]
#[ts(export)]
pub struct SessionActivity {
    pub lines_added: u64,
    pub lines_removed: u64,
    pub commits: u64,
    pub pull_requests: u64,
    /// Time the user and Claude Code were active, in whole seconds.
    pub active_seconds: u64,
}

/// A project's spend in a budget: requests whose sign-in named the project (Claude Code's
/// `attributionProject` setting).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, TS)]
#[ts(export)]
pub struct ProjectSpend {
    pub project: String,
    /// In the budget's current period.
    pub period_dollars: Money,
    pub period_requests: u64,
    /// Since the first request named it.
    pub total_dollars: Money,
    pub last_seen: String,
}

/// A usage record on its way to the database.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsageRow {
    pub created_at: DateTime<Utc>,
    /// The local day the spend counts towards (same zone as the ledger).
    pub day: NaiveDate,
    pub budget_id: i64,
    pub model: String,
    pub status: UsageStatus,
    pub estimated: bool,
    pub priced_as: PricedAs,
    pub http_status: u16,
    pub stream: bool,
    pub tokens: Tokens,
    pub cost: Money,
    pub duration_ms: u64,
    pub upstream_request_id: Option<String>,
    /// The worst case the request was admitted (or refused) with.
    pub worst_case: Money,
    /// The `max_tokens` it was forwarded with, when admission lowered it.
    pub clamped_max_tokens: Option<u64>,
    /// The agent session it belongs to (a header of the request).
    pub session: Option<String>,
    /// Which agent and project it was for.
    pub attribution: Attribution,
    /// Alerts this request raised, stored in the same transaction.
    pub alerts: Vec<NewAlert>,
}

/// Who made a request: the virtual key (or sign-in) it came with, and what the client said
/// of the agent in its session and of its project.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Attribution {
    pub key_id: Option<i64>,
    pub agent_id: Option<String>,
    pub parent_agent_id: Option<String>,
    pub agent_type: Option<String>,
    pub project: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "snake_case")]
#[ts(export)]
pub enum Delivery {
    Pending,
    Delivered,
    Failed,
    None,
}

impl Delivery {
    pub fn as_str(self) -> &'static str {
        match self {
            Delivery::Pending => "pending",
            Delivery::Delivered => "delivered",
            Delivery::Failed => "failed",
            Delivery::None => "none",
        }
    }
    pub fn parse(s: &str) -> Delivery {
        match s {
            "pending" => Delivery::Pending,
            "delivered" => Delivery::Delivered,
            "failed" => Delivery::Failed,
            _ => Delivery::None,
        }
    }
}

/// One webhook delivery attempt.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, TS)]
#[ts(export)]
pub struct DeliveryAttempt {
    pub at: String,
    /// The receiver's HTTP status, if it answered.
    pub status: Option<u16>,
    pub error: Option<String>,
}

/// An alert as the API shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, TS)]
#[ts(export)]
pub struct AlertView {
    pub id: i64,
    pub created_at: String,
    pub kind: AlertKind,
    pub budget: String,
    pub budget_id: i64,
    pub threshold: Option<u8>,
    pub model: Option<String>,
    pub spent_dollars: Money,
    pub cap_dollars: Option<Money>,
    pub message: String,
    pub delivery: Delivery,
    pub deliveries: Vec<DeliveryAttempt>,
}
