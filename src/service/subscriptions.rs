//! Subscription windows and API rate limits (docs/subscriptions.md): what the upstream last
//! said about each credential, kept by fingerprint and saved across restarts; alerts at the
//! configured shares of a window, once per window instance; and the refusal of a budget that
//! stops at a share of the windows its requests report.

use super::Service;
use crate::budget::Budget;
use crate::dto::{RateLimitView, SubscriptionView, WindowView};
use crate::events::CoreEvent;
use crate::subscription::{self, RateLimits, Window, Windows};
use axum::http::HeaderMap;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;

/// The most credentials remembered: the least recently seen is forgotten past this.
const MAX_ACCOUNTS: usize = 64;
/// The readings kept of a window instance for its pace, one a minute at most.
const MAX_READINGS: usize = 60;
const READING_GAP_SECS: i64 = 60;

/// Resets this close are one window instance: an upstream that writes the same reset a few
/// seconds apart must not start a new instance (and raise its alerts again) each time.
const SAME_RESET_SECS: i64 = 300;

fn same_instance(a: Option<i64>, b: Option<i64>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => (a - b).abs() <= SAME_RESET_SECS,
        (a, b) => a == b,
    }
}

/// The windows alerts and pacing follow: (key, name in messages).
const PACED: [(&str, &str); 2] = [("five_hour", "5-hour"), ("seven_day", "weekly")];

/// One credential's last state.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Seen {
    #[serde(default)]
    windows: Option<Windows>,
    #[serde(default)]
    limits: Option<RateLimits>,
    /// Epoch seconds.
    seen_at: i64,
    /// The readings of each paced window's current instance.
    #[serde(default)]
    readings: BTreeMap<String, Instance>,
    /// The alerts raised: (window, its reset in epoch seconds, percent).
    #[serde(default)]
    raised: Vec<(String, i64, u8)>,
}

/// One instance of a window (until it resets): its readings (epoch seconds, utilization).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Instance {
    resets_at: Option<i64>,
    readings: Vec<(i64, f64)>,
}

impl Seen {
    fn window(&self, key: &str) -> Option<&Window> {
        let w = self.windows.as_ref()?;
        match key {
            "five_hour" => w.five_hour.as_ref(),
            _ => w.seven_day.as_ref(),
        }
    }

    /// Notes a reading of each paced window; returns the thresholds each newly reached.
    fn read(&mut self, now: i64, thresholds: &[u8]) -> Vec<Crossed> {
        let mut crossed = Vec::new();
        for (key, name) in PACED {
            let Some((u, resets_at)) = self
                .window(key)
                .and_then(|w| Some((w.utilization?, w.resets_at)))
            else {
                continue;
            };
            let inst = self.readings.entry(key.to_string()).or_default();
            if !same_instance(inst.resets_at, resets_at) {
                *inst = Instance {
                    resets_at,
                    readings: Vec::new(),
                };
            }
            if inst
                .readings
                .last()
                .is_none_or(|l| now - l.0 >= READING_GAP_SECS)
            {
                inst.readings.push((now, u));
                if inst.readings.len() > MAX_READINGS {
                    inst.readings.remove(0);
                }
            }
            let instance = resets_at.unwrap_or(0);
            let raised: Vec<u8> = (self.raised.iter())
                .filter(|(w, r, _)| w == key && same_instance(Some(*r), Some(instance)))
                .map(|(_, _, t)| *t)
                .collect();
            for t in subscription::reached(u, thresholds, &raised) {
                self.raised.push((key.to_string(), instance, t));
                crossed.push(Crossed {
                    window: name,
                    threshold: t,
                    utilization: u,
                    resets_at,
                });
            }
        }
        // Alerts of instances that have reset are not needed to keep them once.
        self.raised.retain(|(_, r, _)| *r == 0 || *r > now);
        crossed
    }

    /// A window's pace from its readings and the latest one.
    /// A window's pace: from its oldest reading kept to the latest.
    fn pace(&self, key: &str, w: &Window) -> Option<subscription::Pace> {
        let inst = self.readings.get(key)?;
        let (first, kept) = (*inst.readings.first()?, *inst.readings.last()?);
        let latest = match w.utilization {
            Some(u) if kept.0 < self.seen_at => (self.seen_at, u),
            _ => kept,
        };
        subscription::pace(&[first, latest], w.resets_at)
    }
}

/// A window's threshold, newly reached.
#[derive(Clone, Debug, PartialEq)]
pub struct Crossed {
    pub window: &'static str,
    pub threshold: u8,
    pub utilization: f64,
    pub resets_at: Option<i64>,
}

/// Every credential's last state, by account.
#[derive(Debug, Default)]
pub struct Accounts {
    seen: Mutex<HashMap<String, Seen>>,
    /// Changed since the last save; forgotten (to delete).
    dirty: Mutex<(HashSet<String>, HashSet<String>)>,
}

impl Accounts {
    /// From the saved states (a state that does not parse is dropped).
    pub fn load(rows: Vec<(String, String)>) -> Accounts {
        let seen = rows
            .into_iter()
            .take(MAX_ACCOUNTS)
            .filter_map(|(a, state)| Some((a, serde_json::from_str(&state).ok()?)))
            .collect();
        Accounts {
            seen: Mutex::new(seen),
            dirty: Mutex::default(),
        }
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, HashMap<String, Seen>> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn dirty(&self) -> std::sync::MutexGuard<'_, (HashSet<String>, HashSet<String>)> {
        self.dirty.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Notes what a response said of a credential; returns the thresholds it crossed and
    /// whether anything shown changed.
    fn observe(
        &self,
        account: &str,
        (windows, limits): (Option<Windows>, Option<RateLimits>),
        now: i64,
        thresholds: &[u8],
    ) -> (Vec<Crossed>, bool) {
        let mut all = self.seen();
        if !all.contains_key(account) && all.len() >= MAX_ACCOUNTS {
            let oldest = all
                .iter()
                .min_by_key(|(_, s)| s.seen_at)
                .map(|(a, _)| a.clone());
            if let Some(a) = oldest {
                all.remove(&a);
                self.dirty().1.insert(a);
            }
        }
        let seen = match all.get_mut(account) {
            Some(seen) => seen,
            None => all.entry(account.to_string()).or_default(),
        };
        let changed = (windows.is_some() && windows != seen.windows)
            || (limits.is_some() && limits != seen.limits);
        // The same answer within a second changes nothing to keep.
        if !changed && seen.seen_at == now {
            return (Vec::new(), false);
        }
        seen.seen_at = now;
        let mut crossed = Vec::new();
        if windows.is_some() {
            seen.windows = windows;
            crossed = seen.read(now, thresholds);
        }
        if limits.is_some() {
            seen.limits = limits;
        }
        let mut dirty = self.dirty();
        if !dirty.0.contains(account) {
            dirty.0.insert(account.to_string());
        }
        dirty.1.remove(account);
        (crossed, changed)
    }

    /// What changed since the last call: states to save, accounts to forget.
    fn take_dirty(&self) -> (Vec<(String, String, i64)>, Vec<String>) {
        let (changed, gone) = std::mem::take(&mut *self.dirty());
        let all = self.seen();
        let states = changed
            .into_iter()
            .filter_map(|a| {
                let s = all.get(&a)?;
                Some((a, serde_json::to_string(s).ok()?, s.seen_at))
            })
            .collect();
        (states, gone.into_iter().collect())
    }

    fn put_back(&self, states: &[(String, String, i64)], gone: Vec<String>) {
        let mut dirty = self.dirty();
        dirty.0.extend(states.iter().map(|(a, _, _)| a.clone()));
        dirty.1.extend(gone);
    }
}

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

/// The webhook deliveries of a window alert: now, then after 5 s and 30 s.
const WEBHOOK_PAUSES: [u64; 3] = [0, 5, 30];

impl Service {
    /// Tells the dashboard, the desktop and the log, and the subscription webhook if set.
    fn raise_window_alert(&self, account: &str, c: &Crossed) {
        let resets = c
            .resets_at
            .map(|r| format!(", resets {}", self.render_secs(r)))
            .unwrap_or_default();
        let message = format!(
            "Subscription {account}: the {} window is at {:.0} % (alert at {} %){resets}",
            c.window,
            c.utilization * 100.0,
            c.threshold
        );
        tracing::warn!(
            account,
            window = c.window,
            threshold = c.threshold,
            "{message}"
        );
        self.events.emit(CoreEvent::WindowAlert {
            account: account.to_string(),
            window: c.window.to_string(),
            threshold: c.threshold,
            message: message.clone(),
        });
        let Some(url) = self.config.subscription_webhook.clone() else {
            return;
        };
        let payload = serde_json::json!({
            "type": "subscription_window",
            "account": account,
            "window": c.window,
            "threshold": c.threshold,
            "utilization": c.utilization,
            "resets_at": c.resets_at.map(|r| self.render_secs(r)),
            "message": message,
        });
        let body = super::webhook::body_for(&url, &payload, &message);
        let (client, secret, zone) = (
            self.client.clone(),
            self.webhook_secret.clone(),
            self.config.zone,
        );
        let (stop, metrics) = (self.abort.clone(), self.metrics.clone());
        self.tracker.spawn(async move {
            for pause in WEBHOOK_PAUSES {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(std::time::Duration::from_secs(pause)) => {}
                }
                let now = chrono::Utc::now();
                let sent = super::webhook::post(&client, &url, body.clone(), &secret, now, zone);
                let attempt = sent.await;
                metrics.webhook(attempt.error.is_none());
                if attempt.error.is_none() {
                    return;
                }
                tracing::warn!(error = ?attempt.error, "a subscription window alert's webhook failed");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(u: f64, reset: i64) -> Seen {
        Seen {
            windows: Some(Windows {
                five_hour: Some(Window {
                    utilization: Some(u),
                    resets_at: Some(reset),
                    status: None,
                }),
                ..Windows::default()
            }),
            ..Seen::default()
        }
    }

    /// Reads `u` with `reset` into `s` at `now`; the thresholds it crossed.
    fn read(s: &mut Seen, u: f64, reset: i64, now: i64) -> Vec<u8> {
        s.windows = seen(u, reset).windows;
        s.seen_at = now;
        s.read(now, &[80, 95]).iter().map(|c| c.threshold).collect()
    }

    #[test]
    fn a_window_alerts_once_per_instance_even_when_its_reset_jitters() {
        let mut s = Seen::default();
        assert_eq!(read(&mut s, 0.81, 10_000, 100), vec![80]);
        // The same window, its reset written a few seconds off: nothing new.
        assert_eq!(read(&mut s, 0.85, 10_004, 200), Vec::<u8>::new());
        assert_eq!(read(&mut s, 0.96, 9_998, 300), vec![95]);
        // The next window: alerts again.
        assert_eq!(read(&mut s, 0.9, 28_000, 10_100), vec![80]);
    }

    #[test]
    fn the_pace_comes_from_one_instances_readings() {
        let mut s = Seen::default();
        read(&mut s, 0.40, 20_000, 0);
        read(&mut s, 0.45, 20_002, 900);
        read(&mut s, 0.50, 20_001, 1_800);
        let w = s.window("five_hour").cloned().unwrap();
        let p = s.pace("five_hour", &w).unwrap();
        assert!((p.per_hour - 0.2).abs() < 1e-9, "{p:?}");
        assert_eq!(p.fills_at, Some(1_800 + 9_000));
        // A new instance starts its readings afresh: no pace from one reading.
        read(&mut s, 0.05, 40_000, 20_100);
        let w = s.window("five_hour").cloned().unwrap();
        assert_eq!(s.pace("five_hour", &w), None);
    }
}
