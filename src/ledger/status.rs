//! A budget's figures as the ledger reports them: totals, its status, the room left.

use crate::budget::Budget;
use crate::budget::alert::{AlertKind, NewAlert};
use crate::budget::period::Window;
use crate::money::Money;
use chrono::{DateTime, Utc};
use std::collections::VecDeque;

/// Spend and counts over some span (a day, a period).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    pub dollars: Money,
    pub tokens: u64,
    pub requests: u64,
    pub blocked: u64,
}

impl Totals {
    pub fn add(&mut self, o: Totals) {
        self.dollars += o.dollars;
        self.tokens = self.tokens.saturating_add(o.tokens);
        self.requests = self.requests.saturating_add(o.requests);
        self.blocked = self.blocked.saturating_add(o.blocked);
    }
}

/// Alerts a budget has raised: (period start in ms, threshold — or None for "blocked").
pub type Raised = Vec<(i64, Option<u8>)>;

/// How many recent worst cases a budget keeps for its typical (p95) worst case.
pub const RECENT_WORST_CASES: usize = 200;

/// A budget's state as shown by the API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    pub budget: Budget,
    pub window: Window,
    pub period: Totals,
    pub reserved: Money,
    pub reserved_tokens: u64,
    /// The p95 of the worst cases of its recent requests, if it has had any.
    pub typical_worst_case: Option<Money>,
    /// Settled spend over the last 60 minutes: the burn rate per hour.
    pub last_hour: Money,
}

impl Status {
    /// An alert about the budget as it stands.
    pub fn alert(
        &self,
        kind: AlertKind,
        threshold: Option<u8>,
        model: Option<String>,
        now: DateTime<Utc>,
    ) -> NewAlert {
        NewAlert {
            kind,
            created_at: now,
            budget_id: self.budget.id,
            budget: self.budget.name.clone(),
            period: self.budget.period,
            window: self.window,
            threshold,
            model,
            spent: self.period.dollars,
            cap: self.budget.max_dollars,
            webhook_url: self.budget.webhook_url.clone(),
            loop_guard: self.budget.loop_guard,
        }
    }

    /// Dollars left before in-flight requests settle: cap − spent − reserved (None if uncapped).
    pub fn remaining(&self) -> Option<Money> {
        self.budget
            .max_dollars
            .map(|cap| cap - self.period.dollars - self.reserved)
    }

    /// When the dollar cap is reached at the last hour's rate (None if not in this period).
    pub fn projected_exhaustion(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        crate::budget::rate::exhaustion_at(
            self.remaining(),
            self.last_hour,
            now,
            self.window.resets_at,
        )
    }

    /// How many typical requests fit in what is left now (None if uncapped or no history).
    pub fn typical_requests_that_fit(&self) -> Option<u64> {
        let (left, each) = (self.remaining()?, self.typical_worst_case?);
        if !each.is_positive() {
            return None;
        }
        Some(u64::try_from(left.max(Money::ZERO).picos() / each.picos()).unwrap_or(0))
    }
}

/// What is left under a budget's caps for one more request (None where uncapped).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Room {
    pub dollars: Option<Money>,
    pub tokens: Option<u64>,
}

/// The p95 of some amounts (nearest rank), or None if there are none.
pub(super) fn p95(amounts: &VecDeque<Money>) -> Option<Money> {
    let mut v: Vec<Money> = amounts.iter().copied().collect();
    v.sort_unstable();
    let rank = (v.len() * 95).div_ceil(100);
    v.get(rank.checked_sub(1)?).copied()
}
