//! A team's proxies in step (docs/team.md): budgets made, changed or deleted and virtual keys
//! made or revoked on any proxy are applied on every other, and each dashboard shows the
//! team's figures in place of this proxy's own share; all polled from the team database once
//! a second.

use super::Service;
use crate::budget::{Budget, BudgetPatch, DEFAULT_BUDGET, NewBudget};
use crate::error::HttpError;
use crate::events::CoreEvent;
use crate::ledger::chain;
use crate::ledger::{Slot, Status};
use crate::team::{KEY_SCOPE, Shared, Team, TeamError, TeamKey, period_key};
use chrono::{DateTime, Utc};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const POLL: Duration = Duration::from_secs(1);

/// The latest team figures by budget name, with the period they are for.
pub type TeamTotals = std::sync::RwLock<HashMap<String, (i64, Shared)>>;

impl Service {
    /// The settings of a budget that other proxies apply: as a patch, or with its name as a
    /// new budget. Keys sorted, so equal settings are equal text.
    pub(super) fn spec(&self, b: &Budget) -> String {
        let mut spec = serde_json::json!({
            "max_dollars": b.max_dollars,
            "max_tokens": b.max_tokens,
            "period": b.period,
            "webhook_url": b.webhook_url,
            "thresholds": b.thresholds,
            "admission": b.admission,
            "max_dollars_per_hour": b.max_dollars_per_hour,
            "max_request_dollars": b.max_request_dollars,
            "models": b.models,
            "loop_guard": b.loop_guard,
        });
        // Only when set: a budget without them keeps the spec earlier builds shared, so no
        // proxy sees a difference to apply. A parent goes by name (ids are each proxy's own).
        if let Some(m) = b.max_session_dollars {
            spec["max_session_dollars"] = serde_json::json!(m);
        }
        if let Some(c) = b.max_subscription_utilization {
            spec["max_subscription_utilization"] = serde_json::json!(c);
        }
        if let Some(parent) = b.parent.and_then(|id| self.ledger.find(&id.to_string())) {
            spec["parent"] = serde_json::json!(parent.name());
        }
        spec.to_string()
    }

    /// The team database a budget is shared through: none for `default`, which is each
    /// proxy's own (settings, spend and keys).
    pub fn team_of(&self, budget: &str) -> Option<&Arc<Team>> {
        self.team.as_ref().filter(|_| budget != DEFAULT_BUDGET)
    }

    /// Tells the other proxies of a budget's new settings (None: deleted).
    pub(super) async fn share(&self, name: &str, budget: Option<&Budget>) -> Result<(), TeamError> {
        match self.team_of(name) {
            Some(team) => {
                let spec = budget.map(|b| self.spec(b));
                team.put_budget(name, spec.as_deref()).await
            }
            None => Ok(()),
        }
    }

    /// Applies the team's budget settings and keys here, and shares the budgets and keys it
    /// has never seen (a proxy joining the team brings its own). The team is read before and
    /// written after the step in which local changes wait: an edit here never waits behind a
    /// slow database.
    async fn follow(&self, team: &Team) {
        let Ok(shared) = team.budgets().await else {
            return;
        };
        let keys = team.keys().await.ok();
        let (budgets, keys) = {
            let _in_step = self.budget_changes.lock().await;
            let budgets = self.apply_budgets(shared).await;
            let keys = match keys {
                Some(keys) => self.apply_keys(&keys).await.unwrap_or_else(|e| {
                    tracing::warn!(
                        "the team's virtual keys cannot be applied here: {}",
                        e.message
                    );
                    Vec::new()
                }),
                None => Vec::new(),
            };
            (budgets, keys)
        };
        for (name, spec) in budgets {
            let _ = team.put_budget(&name, Some(&spec)).await;
        }
        for key in keys {
            let _ = team.put_key(&key).await;
        }
    }

    /// Applies the team's budgets here; returns the local budgets the team has never seen,
    /// with their settings, to share.
    async fn apply_budgets(&self, shared: Vec<(String, Option<String>)>) -> Vec<(String, String)> {
        let known: HashSet<String> = shared.iter().map(|(name, _)| name.clone()).collect();
        let mut pending: Vec<_> = shared
            .into_iter()
            .filter(|(name, _)| name != DEFAULT_BUDGET)
            .collect();
        // A budget below one not made here yet waits for it: passes until one changes nothing.
        loop {
            let mut failed = Vec::new();
            for (name, spec) in &pending {
                if let Err(e) = self.apply_budget(name, spec.as_deref()).await {
                    failed.push((name.clone(), spec.clone(), e));
                }
            }
            if failed.is_empty() || failed.len() == pending.len() {
                for (name, _, e) in failed {
                    let why = e.message;
                    tracing::warn!("the team's budget '{name}' cannot be applied here: {why}");
                }
                break;
            }
            pending = failed.into_iter().map(|(n, s, _)| (n, s)).collect();
        }
        self.ledger
            .statuses(crate::budget::period::now())
            .into_iter()
            .filter(|s| s.budget.name != DEFAULT_BUDGET && !known.contains(&s.budget.name))
            .map(|s| (s.budget.name.clone(), self.spec(&s.budget)))
            .collect()
    }

    /// Makes, changes or deletes a budget here as the team has it (None: deleted).
    async fn apply_budget(&self, name: &str, spec: Option<&str>) -> Result<(), HttpError> {
        let local = self.ledger.find(name).map(|s| s.budget());
        match (spec, local) {
            (None, Some(_)) => self.delete_here(name).await.map(|_| ()),
            (Some(spec), None) => self.create_from(name, spec).await,
            (Some(spec), Some(here)) if self.spec(&here) != spec => {
                self.apply_spec(&here, spec).await
            }
            _ => Ok(()),
        }
    }

    /// Changes a budget here to the team's settings. A spec leaves out what is unset (a
    /// parent, a cap on sessions or windows): left out, it is cleared here too.
    async fn apply_spec(&self, here: &Budget, spec: &str) -> Result<(), HttpError> {
        let mut patch: BudgetPatch =
            serde_json::from_str(spec).map_err(|e| HttpError::invalid(e.to_string()))?;
        patch.parent.get_or_insert(None);
        patch.max_session_dollars.get_or_insert(None);
        patch.max_subscription_utilization.get_or_insert(None);
        let tree = super::tree::Tree {
            ledger: &self.ledger,
            child: Some(here),
        };
        let next = patch.apply(here, &tree)?;
        let moved = self.above_move(here, &next);
        self.change_here(here, next).await?;
        // Moved on another proxy: what this one charged the old parents before it knew is
        // counted again from the records (every proxy does so once it follows, so the
        // figures are exact once all have).
        if let (Some(team), Some(above)) = (self.team_of(&here.name), moved)
            && let Err(e) = team.reopen(&above).await
        {
            tracing::warn!(
                "budget '{}' moved; its parents' team figures are not recounted yet: {e}",
                here.name
            );
        }
        Ok(())
    }

    /// Makes here a budget the team has, from its settings.
    async fn create_from(&self, name: &str, spec: &str) -> Result<(), HttpError> {
        let mut v: serde_json::Value =
            serde_json::from_str(spec).map_err(|e| HttpError::invalid(e.to_string()))?;
        v["name"] = serde_json::Value::String(name.to_string());
        let input: NewBudget =
            serde_json::from_value(v).map_err(|e| HttpError::invalid(e.to_string()))?;
        let tree = super::tree::Tree {
            ledger: &self.ledger,
            child: None,
        };
        let budget = input.validate(crate::budget::period::now(), &tree)?;
        self.create_here(budget).await.map(|_| ())
    }

    /// Makes here the team's keys this proxy lacks and revokes those the team revoked; returns
    /// the keys the team has never seen, to share. A key the team knows as revoked is never
    /// made here, so a proxy that was away cannot bring one back.
    async fn apply_keys(&self, shared: &[TeamKey]) -> Result<Vec<TeamKey>, HttpError> {
        let local = self.store.read(crate::store::keys::all).await?;
        let here: HashMap<&str, &crate::store::keys::Known> =
            local.iter().map(|k| (k.hash.as_str(), k)).collect();
        // New keys first: a refreshed sign-in's token joins its lineage's scope before its
        // predecessor's revocation would drop it.
        for key in shared {
            if !key.revoked && key.budget != DEFAULT_BUDGET && !here.contains_key(key.hash.as_str())
            {
                self.make_shared_key(key).await?;
            }
        }
        for key in shared {
            let Some(k) = here.get(key.hash.as_str()).filter(|k| !k.revoked) else {
                continue;
            };
            if key.revoked {
                self.revoke_here(k.id, &k.hash).await?;
            } else if key.cap != k.cap {
                // Changed on another proxy.
                let lineage = k.lineage.as_deref().unwrap_or(&k.hash);
                let made = crate::budget::period::from_millis(k.created_at);
                self.cap_here((k.id, &k.budget), (&k.name, lineage), made, key.cap)
                    .await?;
            }
        }
        let theirs: HashSet<&str> = shared.iter().map(|k| k.hash.as_str()).collect();
        Ok(local
            .iter()
            .filter(|k| !theirs.contains(k.hash.as_str()) && k.budget != DEFAULT_BUDGET)
            .map(|k| TeamKey {
                hash: k.hash.clone(),
                budget: k.budget.clone(),
                name: k.name.clone(),
                created_at: k.created_at,
                revoked: k.revoked,
                sign_in: k.kind == crate::record::KeyKind::SignIn,
                refresh_hash: k.refresh_hash.clone(),
                cap: k.cap,
                lineage: k.lineage.clone(),
            })
            .collect())
    }

    /// Makes here a key another proxy made (once its budget is here).
    async fn make_shared_key(&self, key: &TeamKey) -> Result<(), HttpError> {
        let Some(slot) = self.ledger.find(&key.budget) else {
            return Ok(()); // its budget arrives first; the key follows next time
        };
        let budget_id = slot.budget().id;
        let kind = match key.sign_in {
            true => crate::record::KeyKind::SignIn,
            false => crate::record::KeyKind::Key,
        };
        let (hash, name) = (key.hash.clone(), key.name.clone());
        let (refresh_hash, cap, lineage) = (key.refresh_hash.clone(), key.cap, key.lineage.clone());
        let at = crate::budget::period::from_millis(key.created_at);
        let id = self
            .store
            .writer
            .run(move |tx| {
                let row = crate::store::keys::NewKeyRow {
                    budget_id,
                    name: &name,
                    kind,
                    hash: &hash,
                    refresh_hash: refresh_hash.as_deref(),
                    cap,
                    lineage: lineage.as_deref(),
                };
                crate::store::keys::insert(tx, &row, at)
            })
            .await?;
        if let Some(cap) = cap {
            let lineage = key.lineage.as_deref().unwrap_or(&key.hash);
            self.scope_key((id, &key.budget), (&key.name, lineage), cap, at, None)
                .await?;
        }
        self.keys.add(crate::store::keys::Active {
            hash: key.hash.clone(),
            id,
            budget_id,
            lineage: key.lineage.clone(),
        });
        Ok(())
    }

    /// A status with the team's spend, requests and reservations, where it has them.
    /// A budget's status as all proxies see it: for a team budget the team's figures (polled
    /// each second), else this proxy's.
    pub fn status_of(&self, slot: &Slot, now: DateTime<Utc>) -> Status {
        let s = slot.status(now);
        self.with_team(&s).unwrap_or(s)
    }

    pub(super) fn with_team(&self, s: &Status) -> Option<Status> {
        self.team_figures(&s.budget.name, s)
    }

    /// A scope's status with the team's figures for it, by its name in the team database.
    pub(super) fn team_figures(&self, name: &str, s: &Status) -> Option<Status> {
        self.team.as_ref()?;
        let totals = self.team_totals.read().unwrap_or_else(|p| p.into_inner());
        let (period, shared) = totals.get(name)?;
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

impl Service {
    /// Every budget's and capped key's status, by its name in the team database.
    fn team_scopes(&self) -> Vec<(String, Status)> {
        let now = crate::budget::period::now();
        let mut scopes: Vec<(String, Status)> = (self.ledger.statuses(now).into_iter())
            .map(|s| (s.budget.name.clone(), s))
            .collect();
        for k in self.ledger.key_slots() {
            if let Some(hash) = k.key_hash() {
                scopes.push((format!("{KEY_SCOPE}{hash}"), k.status(now)));
            }
        }
        scopes
    }

    /// Keeps the team's latest figures; returns the budgets whose figures changed (a key's
    /// budget for a key's).
    fn refresh_team_totals(
        &self,
        scopes: &[(String, Status)],
        rows: &[(String, i64, Shared)],
    ) -> Vec<(i64, String)> {
        let mut changed = Vec::new();
        let mut totals = self.team_totals.write().unwrap_or_else(|p| p.into_inner());
        for (name, s) in scopes {
            let key = period_key(s.budget.period, &s.window);
            let now = rows
                .iter()
                .find(|(n, period, _)| n == name && *period == key)
                .map(|(_, _, now)| (key, *now));
            // No figures (the budget was deleted and made again): none are shown.
            let same = match now {
                Some(now) => totals.insert(name.clone(), now) == Some(now),
                None => totals.remove(name).is_none(),
            };
            if same {
                continue;
            }
            let budget = match s.budget.parent.filter(|_| chain::is_key(s)) {
                Some(id) => self.ledger.find(&id.to_string()).map(|b| (id, b.name())),
                None => Some((s.budget.id, s.budget.name.clone())),
            };
            changed.extend(budget);
        }
        changed
    }
}

/// Polls the team's figures until `stop`; a budget whose figures changed is announced, so
/// live dashboards refresh.
pub async fn watch(app: Arc<Service>, stop: CancellationToken) {
    let Some(team) = app.team.clone() else { return };
    let mut every = tokio::time::interval(POLL);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut windows_since = 0;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = every.tick() => {}
        }
        app.follow(&team).await;
        app.share_windows(&team, &mut windows_since).await;
        let scopes = app.team_scopes();
        let names: Vec<String> = scopes.iter().map(|(name, _)| name.clone()).collect();
        let rows = match team.snapshot(&names).await {
            Ok(rows) => rows,
            Err(e) => {
                tracing::debug!("team figures not refreshed: {e}");
                continue;
            }
        };
        let changed = app.refresh_team_totals(&scopes, &rows);
        for (budget_id, budget) in changed {
            app.events
                .emit(CoreEvent::BudgetChanged { budget_id, budget });
        }
    }
}
