//! A request's usage record, made in one place: what is known of the request once admission
//! decided (`Facts`), what it was charged, and what the upstream answered.

use crate::budget::alert::NewAlert;
use crate::money::Money;
use crate::pricing::PricedAs;
use crate::pricing::cost::Tokens;
use crate::record::{Attribution, UsageRow, UsageStatus};
use chrono::{DateTime, Utc};
use std::time::Instant;

/// What a request's record says whatever its outcome.
#[derive(Debug)]
pub struct Facts {
    pub budget_id: i64,
    /// The budget's name, for the events the record publishes.
    pub budget: String,
    pub model: String,
    pub stream: bool,
    pub session: Option<String>,
    pub started: Instant,
    /// The worst case admitted (or refused).
    pub worst_case: Money,
    pub clamped_max_tokens: Option<u64>,
    pub attribution: Attribution,
    /// What its span needs, when spans are exported.
    pub trace: Option<crate::service::spans::Request>,
}

/// What a request was charged.
#[derive(Debug)]
pub struct Charged {
    /// The model the response named (else the one asked for).
    pub model: String,
    pub status: UsageStatus,
    pub estimated: bool,
    pub priced_as: PricedAs,
    pub tokens: Tokens,
    pub cost: Money,
}

impl Charged {
    /// Nothing: a refusal, or a response in which nothing was generated.
    pub fn nothing(model: String, status: UsageStatus, priced_as: PricedAs) -> Charged {
        Charged {
            model,
            status,
            estimated: false,
            priced_as,
            tokens: Tokens::default(),
            cost: Money::ZERO,
        }
    }
}

/// What answered the request: the upstream's status and request id, or ours.
#[derive(Clone, Debug, Default)]
pub struct Reply {
    pub http_status: u16,
    pub request_id: Option<String>,
}

impl Facts {
    /// The record, with the alerts the request raised; and the budget's name, to publish it.
    pub fn row(
        self,
        charged: Charged,
        reply: Reply,
        alerts: Vec<NewAlert>,
        now: DateTime<Utc>,
        day: chrono::NaiveDate,
    ) -> (String, UsageRow) {
        let row = UsageRow {
            created_at: now,
            day,
            budget_id: self.budget_id,
            model: charged.model,
            status: charged.status,
            estimated: charged.estimated,
            priced_as: charged.priced_as,
            http_status: reply.http_status,
            stream: self.stream,
            tokens: charged.tokens,
            cost: charged.cost,
            duration_ms: u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX),
            upstream_request_id: reply.request_id,
            worst_case: self.worst_case,
            clamped_max_tokens: self.clamped_max_tokens,
            session: self.session,
            attribution: self.attribution,
            alerts,
        };
        (self.budget, row)
    }
}
