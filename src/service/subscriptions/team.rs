//! Subscription windows across a team: what a proxy saw of a credential goes to the team
//! database, and each proxy takes the newer states the others saw, so a budget's share of a
//! window holds on every proxy from the last answer any of them had (docs/team.md).

use crate::events::CoreEvent;
use crate::service::Service;
use crate::team::Team;

/// A credential last seen longer ago than this is not taken from the team at start: its
/// windows (5 hours, a week) are over.
const TAKEN_SECS: i64 = 8 * 24 * 3600;

impl Service {
    /// Shares the states seen here since the last call, then takes the newer ones the team
    /// has. `since`: the newest team state taken so far (epoch seconds), kept by the caller.
    pub async fn share_windows(&self, team: &Team, since: &mut i64) {
        let mine = self.accounts.take_unshared();
        if let Err(e) = team.put_windows(&mine).await {
            tracing::debug!("subscription windows not shared with the team: {e}");
            self.accounts.put_back_unshared(&mine);
            return;
        }
        let from = (*since).max(chrono::Utc::now().timestamp() - TAKEN_SECS);
        let theirs = match team.windows_since(from).await {
            Ok(theirs) => theirs,
            Err(e) => {
                tracing::debug!("subscription windows not taken from the team: {e}");
                return;
            }
        };
        let mut changed = false;
        for (account, state, seen_at) in theirs {
            changed |= self.accounts.merge(&account, &state);
            *since = (*since).max(seen_at);
        }
        if changed {
            self.events.emit(CoreEvent::SubscriptionsChanged);
        }
    }
}
