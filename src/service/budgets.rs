//! Budget operations: list, show, create, change, delete, and a budget's usage records.

use super::Service;
use crate::budget::level::Level;
use crate::budget::period;
use crate::budget::{Budget, BudgetPatch, DEFAULT_BUDGET, NewBudget};
use crate::dto::{BudgetDetail, BudgetView, SessionPage, UsagePage};
use crate::error::HttpError;
use crate::events::CoreEvent;
use crate::ledger::{Slot, Status};
use crate::money::Money;
use crate::record::UsageRecord;
use crate::store;
use std::sync::Arc;

pub const MAX_PAGE: u32 = 500;

/// A budget change the team database did not take (and this proxy undid).
fn unshared(name: &str, done: &str, e: crate::team::TeamError) -> HttpError {
    HttpError::new(
        axum::http::StatusCode::SERVICE_UNAVAILABLE,
        "api_error",
        format!(
            "agent-budget: budget '{name}' was not {done}: {e}, and the other proxies must see the same budgets; try again once it answers"
        ),
    )
}

impl Service {
    pub fn view(&self, s: &Status) -> BudgetView {
        let team = self.with_team(s);
        let s = team.as_ref().unwrap_or(s);
        let zone = self.config.zone;
        let b = &s.budget;
        let percent_used = match b.max_dollars {
            Some(cap) if cap.is_positive() => {
                // Display only (the ledger itself is exact): two decimals.
                let bp = (i128::from(s.period.dollars.picos()) * 10_000) / i128::from(cap.picos());
                bp as f64 / 100.0
            }
            _ => 0.0,
        };
        BudgetView {
            id: b.id,
            name: b.name.clone(),
            max_dollars: b.max_dollars,
            max_tokens: b.max_tokens,
            period: b.period,
            webhook_url: b.webhook_url.clone(),
            thresholds: b.thresholds.clone(),
            admission: b.admission,
            max_dollars_per_hour: b.max_dollars_per_hour,
            max_request_dollars: b.max_request_dollars,
            models: b.models.clone(),
            loop_guard: b.loop_guard,
            parent: b
                .parent
                .and_then(|p| self.ledger.find(&p.to_string()))
                .map(|p| p.name()),
            max_session_dollars: b.max_session_dollars,
            max_subscription_utilization: b.max_subscription_utilization,
            created_at: zone.render(b.created_at),
            spent_dollars: s.period.dollars,
            spent_tokens: s.period.tokens,
            reserved_dollars: s.reserved,
            remaining_dollars: s.remaining().map(|r| r.max(Money::ZERO)),
            percent_used,
            level: Level::of(s.period.dollars, b.max_dollars, s.period.blocked),
            requests: s.period.requests,
            blocked: s.period.blocked,
            period_start: zone.render(s.window.start),
            resets_at: s.window.resets_at.map(|r| zone.render(r)),
            worst_case_dollars: s.typical_worst_case,
            requests_that_fit: s.typical_requests_that_fit(),
            burn_rate_per_hour: s.last_hour,
            projected_exhaustion_at: s
                .projected_exhaustion(period::now())
                .map(|t| zone.render(t)),
        }
    }

    pub(super) fn slot(&self, key: &str) -> Result<Arc<Slot>, HttpError> {
        self.ledger
            .find(key)
            .ok_or_else(|| HttpError::not_found(format!("budget '{key}' does not exist")))
    }

    pub fn list_budgets(&self) -> Vec<BudgetView> {
        self.ledger
            .statuses(period::now())
            .iter()
            .map(|s| self.view(s))
            .collect()
    }

    pub async fn budget_detail(&self, key: &str) -> Result<BudgetDetail, HttpError> {
        let status = self.slot(key)?.status(period::now());
        let (id, since) = (status.budget.id, self.config.zone.day(status.window.start));
        let breakdown = self
            .store
            .read(move |c| store::budgets::breakdown(c, id, since))
            .await?;
        Ok(BudgetDetail {
            budget: self.view(&status),
            breakdown,
            ancestors: self.ancestors(&id.to_string()),
            children: self.children(id),
        })
    }

    /// Creates a budget: in the team database first, for a team, so that a budget this proxy
    /// has is one all proxies have (if saving it here then fails, the team's copy is made
    /// here by the next poll).
    pub async fn create_budget(&self, input: NewBudget) -> Result<BudgetView, HttpError> {
        let _in_step = self.budget_changes.lock().await;
        let tree = super::tree::Tree {
            ledger: &self.ledger,
            child: None,
        };
        let budget = input.validate(period::now(), &tree)?;
        if self.ledger.find(&budget.name).is_some() {
            return Err(store::StoreError::exists(&budget.name).into());
        }
        self.share(&budget.name, Some(&budget))
            .await
            .map_err(|e| unshared(&budget.name, "created", e))?;
        self.create_here(budget).await
    }

    /// Changes a budget: in the team database first, for a team, as when it is created.
    pub async fn patch_budget(
        &self,
        key: &str,
        patch: BudgetPatch,
    ) -> Result<BudgetView, HttpError> {
        let _in_step = self.budget_changes.lock().await;
        let before = self.slot(key)?.budget();
        let tree = super::tree::Tree {
            ledger: &self.ledger,
            child: Some(&before),
        };
        let next = patch.apply(&before, &tree)?;
        self.share(&next.name, Some(&next))
            .await
            .map_err(|e| unshared(&next.name, "changed", e))?;
        if let (Some(team), Some(above)) =
            (self.team_of(&next.name), self.above_move(&before, &next))
        {
            team.reopen(&above)
                .await
                .map_err(|e| unshared(&next.name, "moved", e))?;
        }
        self.change_here(&before, next).await
    }

    /// When a budget moves, the budgets above it before and after: their team figures are
    /// their subtrees', to be counted again from the team's records.
    pub(super) fn above_move(&self, before: &Budget, next: &Budget) -> Option<Vec<String>> {
        (next.parent != before.parent).then(|| {
            let mut above = self.ancestors_of(before.parent);
            above.extend(self.ancestors_of(next.parent));
            above
        })
    }

    /// Applies a budget's new settings on this proxy: sessions tracked from when a cap on
    /// them is set, the tree's figures rebuilt when it moves.
    pub(super) async fn change_here(
        &self,
        before: &Budget,
        next: Budget,
    ) -> Result<BudgetView, HttpError> {
        let moved = next.parent != before.parent;
        if next.max_session_dollars.is_some() && before.max_session_dollars.is_none() {
            // Sessions are tracked from now on: first, what each spent so far this period.
            let spend = super::tree::session_spend(&self.store, &next, self.config.zone).await?;
            self.ledger.set_sessions(next.id, spend);
        }
        let view = self.update_here(next).await?;
        if moved {
            self.rebase().await?;
        }
        Ok(view)
    }

    /// The names of a budget and the budgets above it.
    fn ancestors_of(&self, id: Option<i64>) -> Vec<String> {
        let Some(slot) = id.and_then(|id| self.ledger.find(&id.to_string())) else {
            return Vec::new();
        };
        self.ledger.chain(&slot).iter().map(|s| s.name()).collect()
    }

    pub async fn delete_budget(&self, key: &str) -> Result<(), HttpError> {
        let _in_step = self.budget_changes.lock().await;
        let b = self.slot(key)?.budget();
        let children = self.children(b.id);
        if !children.is_empty() {
            return Err(HttpError::new(
                axum::http::StatusCode::CONFLICT,
                "conflict_error",
                format!(
                    "budget '{}' has budgets below it ({}): give them another parent (PATCH {{\"parent\": …}}) or delete them first",
                    b.name,
                    children
                        .iter()
                        .map(|c| format!("'{c}'"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
        let name = b.name;
        self.share(&name, None)
            .await
            .map_err(|e| unshared(&name, "deleted", e))?;
        self.delete_here(key).await.map(|_| ())
    }

    /// Saves a new, validated budget on this proxy.
    pub(super) async fn create_here(&self, budget: Budget) -> Result<BudgetView, HttpError> {
        let now = period::now();
        let stored = self
            .store
            .writer
            .run(move |tx| store::budgets::insert(tx, &budget))
            .await?;
        self.ledger.insert(stored.clone(), Default::default(), now);
        self.events.emit(CoreEvent::BudgetCreated {
            budget_id: stored.id,
            budget: stored.name.clone(),
        });
        Ok(self.view(&self.slot(&stored.id.to_string())?.status(now)))
    }

    /// Saves a budget's new settings on this proxy.
    pub(super) async fn update_here(&self, next: Budget) -> Result<BudgetView, HttpError> {
        let now = period::now();
        let stored = next.clone();
        self.store
            .writer
            .run(move |tx| store::budgets::update(tx, &stored))
            .await?;
        self.ledger.update(next.clone(), now);
        self.events.emit(CoreEvent::BudgetChanged {
            budget_id: next.id,
            budget: next.name.clone(),
        });
        Ok(self.view(&self.slot(&next.id.to_string())?.status(now)))
    }

    /// Deletes a budget on this proxy; returns its name.
    pub(super) async fn delete_here(&self, key: &str) -> Result<String, HttpError> {
        let status = self.slot(key)?.status(period::now());
        if status.budget.name == DEFAULT_BUDGET {
            return Err(HttpError::invalid(
                "the built-in 'default' budget cannot be deleted (untagged requests are charged to it); give it a cap with PATCH instead",
            ));
        }
        let id = status.budget.id;
        self.store
            .writer
            .run(move |tx| store::budgets::delete(tx, id))
            .await?;
        self.ledger.remove(id);
        self.ledger.remove_keys_of(id);
        self.keys.forget_budget(id);
        self.events.emit(CoreEvent::BudgetDeleted {
            budget_id: id,
            budget: status.budget.name.clone(),
        });
        Ok(status.budget.name)
    }

    pub async fn usage_page(
        &self,
        key: &str,
        limit: Option<u32>,
        offset: Option<u64>,
    ) -> Result<UsagePage, HttpError> {
        let id = self.slot(key)?.status(period::now()).budget.id;
        let limit = limit.unwrap_or(50).clamp(1, MAX_PAGE);
        let offset = offset.unwrap_or(0);
        let zone = self.config.zone;
        let (items, total) = self
            .store
            .read(move |c| store::usage::page(c, id, limit, offset, zone))
            .await?;
        Ok(UsagePage {
            items,
            total,
            limit,
            offset,
        })
    }

    /// The budget a key names: its id and name.
    pub fn budget_ref(&self, key: &str) -> Result<(i64, String), HttpError> {
        let b = self.slot(key)?.budget();
        Ok((b.id, b.name))
    }

    /// Up to `limit` of a budget's records older than the record `before`, newest first, with
    /// the id to continue from (for exports that stream every record).
    pub async fn usage_before(
        &self,
        budget_id: i64,
        before: i64,
        limit: u32,
    ) -> Result<(Vec<UsageRecord>, Option<i64>), HttpError> {
        let zone = self.config.zone;
        Ok(self
            .store
            .read(move |c| store::usage::before(c, budget_id, before, limit, zone))
            .await?)
    }

    /// A page of the budget's agent sessions, most recently seen first.
    pub async fn sessions_page(
        &self,
        key: &str,
        limit: Option<u32>,
        offset: Option<u64>,
    ) -> Result<SessionPage, HttpError> {
        let id = self.slot(key)?.status(period::now()).budget.id;
        let limit = limit.unwrap_or(50).clamp(1, MAX_PAGE);
        let offset = offset.unwrap_or(0);
        let zone = self.config.zone;
        let (mut items, total) = self
            .store
            .read(move |c| store::sessions::page(c, id, limit, offset, zone))
            .await?;
        let slot = self.slot(key)?;
        for s in &mut items {
            s.period_dollars = slot.session_spent(&s.session);
        }
        Ok(SessionPage {
            items,
            total,
            limit,
            offset,
        })
    }
}
