//! What every proxy's dashboard shows of a team budget: the team's figures, polled from the
//! team database once a second (docs/team.md), in place of this proxy's own share.

use super::Service;
use crate::events::CoreEvent;
use crate::ledger::Status;
use crate::team::{Shared, period_key};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const POLL: Duration = Duration::from_secs(1);

/// The latest team figures by budget name, with the period they are for.
pub type TeamTotals = std::sync::RwLock<HashMap<String, (i64, Shared)>>;

impl Service {
    /// A status with the team's spend, requests and reservations, where it has them.
    pub(super) fn with_team(&self, s: &Status) -> Option<Status> {
        self.team.as_ref()?;
        let totals = self.team_totals.read().unwrap_or_else(|p| p.into_inner());
        let (period, shared) = totals.get(&s.budget.name)?;
        if *period != period_key(s.budget.period, &s.window) {
            return None;
        }
        let mut team = s.clone();
        team.period.dollars = shared.spent;
        team.period.tokens = shared.spent_tokens;
        team.period.requests = shared.requests;
        team.reserved = shared.reserved;
        team.reserved_tokens = shared.reserved_tokens;
        Some(team)
    }
}

/// Polls the team's figures until `stop`; a budget whose figures changed is announced, so
/// live dashboards refresh.
pub async fn watch(app: Arc<Service>, stop: CancellationToken) {
    let Some(team) = app.team.clone() else { return };
    let mut every = tokio::time::interval(POLL);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = every.tick() => {}
        }
        let statuses = app.ledger.statuses(crate::budget::period::now());
        let names: Vec<String> = statuses.iter().map(|s| s.budget.name.clone()).collect();
        let rows = match team.snapshot(&names).await {
            Ok(rows) => rows,
            Err(e) => {
                tracing::debug!("team figures not refreshed: {e}");
                continue;
            }
        };
        let mut changed = Vec::new();
        {
            let mut totals = app.team_totals.write().unwrap_or_else(|p| p.into_inner());
            for s in &statuses {
                let key = period_key(s.budget.period, &s.window);
                let Some((_, _, now)) = rows
                    .iter()
                    .find(|(name, period, _)| *name == s.budget.name && *period == key)
                else {
                    continue;
                };
                if totals.get(&s.budget.name) != Some(&(key, *now)) {
                    totals.insert(s.budget.name.clone(), (key, *now));
                    changed.push((s.budget.id, s.budget.name.clone()));
                }
            }
        }
        for (budget_id, budget) in changed {
            app.events
                .emit(CoreEvent::BudgetChanged { budget_id, budget });
        }
    }
}
