//! Subscription windows and API rate limits (docs/subscriptions.md): what the upstream last
//! said about each credential, kept by fingerprint and saved across restarts; alerts at the
//! configured shares of a window, once per window instance; and the refusal of a budget that
//! stops at a share of the windows its requests report.

use super::Service;
use crate::budget::Budget;
use crate::dto::{RateLimitView, SubscriptionView, WindowView};
use crate::events::CoreEvent;
use crate::subscription::{self, Window};
use axum::http::HeaderMap;

mod accounts;
mod alerts;
mod team;
pub use accounts::Accounts;
use accounts::{Crossed, Seen};

impl Service {
    /// Reads a response's headers for what they say of the credential that sent it.
    pub fn observe_upstream(&self, account: &str, headers: &HeaderMap) {
        let windows = subscription::windows(headers);
        let limits = match windows {
            Some(_) => None,
            None => subscription::rate_limits(headers),
        };
        if windows.is_none() && limits.is_none() {
            return;
        }
        let now = chrono::Utc::now().timestamp();
        let thresholds = &self.config.subscription_alerts;
        let (crossed, changed) = self
            .accounts
            .observe(account, (windows, limits), now, thresholds);
        if changed {
            self.events.emit(CoreEvent::SubscriptionsChanged);
        }
        for c in crossed {
            self.raise_window_alert(account, &c);
        }
    }

    /// The refusal of a request of `budget` sent with the subscription `account`, once a
    /// window it last reported has reached the budget's share of it (and has not reset since):
    /// the message, and the seconds until the window resets.
    pub fn window_refusal(&self, budget: &Budget, account: Option<&str>) -> Option<(String, i64)> {
        let caps = budget.max_subscription_utilization?;
        let all = self.accounts.seen();
        let seen = all.get(account?)?;
        let now = chrono::Utc::now().timestamp();
        for (key, name, share) in caps.windows() {
            let Some(w) = seen.window(key) else { continue };
            let Some(u) = w.utilization else { continue };
            if u < share.fraction() || w.resets_at.is_some_and(|r| r <= now) {
                continue;
            }
            let resets = match w.resets_at {
                Some(r) => format!("; it resets at {}", self.render_secs(r)),
                None => String::new(),
            };
            let msg = format!(
                "agent-budget: budget '{}' stops at {} % of the subscription's {name} window (its 'max_subscription_utilization'), and the window is at {:.0} %{resets}",
                budget.name,
                share.percent(),
                u * 100.0
            );
            let wait = w.resets_at.map_or(3600, |r| (r - now).max(1));
            return Some((msg, wait));
        }
        None
    }

    fn render_secs(&self, secs: i64) -> String {
        self.config.zone.render(crate::budget::period::from_millis(
            secs.saturating_mul(1000),
        ))
    }

    fn window_view(&self, seen: &Seen, key: &str, w: &Window) -> WindowView {
        let pace = seen.pace(key, w);
        WindowView {
            utilization: w.utilization,
            resets_at: w.resets_at.map(|r| self.render_secs(r)),
            status: w.status.clone(),
            per_hour: pace.as_ref().map(|p| p.per_hour),
            fills_at: pace.and_then(|p| p.fills_at).map(|f| self.render_secs(f)),
        }
    }

    /// What `view` makes of each credential seen, the most recently seen first.
    fn latest<T>(&self, view: impl Fn(&String, &Seen) -> Option<T>) -> Vec<T> {
        let all = self.accounts.seen();
        let mut seen: Vec<(&String, &Seen)> = all.iter().collect();
        seen.sort_by_key(|(_, s)| std::cmp::Reverse(s.seen_at));
        seen.into_iter().filter_map(|(a, s)| view(a, s)).collect()
    }

    /// Every subscription seen, the most recently seen first.
    pub fn subscriptions(&self) -> Vec<SubscriptionView> {
        self.latest(|account, s| {
            let w = s.windows.as_ref()?;
            let view = |key, w: &Option<Window>| w.as_ref().map(|w| self.window_view(s, key, w));
            Some(SubscriptionView {
                account: account.clone(),
                five_hour: view("five_hour", &w.five_hour),
                seven_day: view("seven_day", &w.seven_day),
                overage: view("overage", &w.overage),
                representative_claim: w.representative_claim.clone(),
                status: w.status.clone(),
                seen_at: self.render_secs(s.seen_at),
            })
        })
    }

    /// Every API key's rate limits seen, the most recently seen first.
    pub fn rate_limits(&self) -> Vec<RateLimitView> {
        self.latest(|account, s| {
            let l = s.limits.clone()?;
            Some(RateLimitView {
                account: account.clone(),
                requests: l.requests,
                tokens: l.tokens,
                input_tokens: l.input_tokens,
                output_tokens: l.output_tokens,
                seen_at: self.render_secs(s.seen_at),
            })
        })
    }

    /// Saves what changed since the last save; kept for the next one if the store fails.
    pub async fn save_subscriptions(&self) {
        let (states, gone) = self.accounts.take_dirty();
        if states.is_empty() && gone.is_empty() {
            return;
        }
        let (s, g) = (states.clone(), gone.clone());
        let saved = self
            .store
            .writer
            .run(move |tx| {
                crate::store::subscriptions::save(tx, &s)?;
                crate::store::subscriptions::forget(tx, &g)
            })
            .await;
        if let Err(e) = saved {
            tracing::warn!(error = %e, "could not save the subscription windows");
            self.accounts.put_back(&states, gone);
        }
    }
}
