//! Each agent session's spend in a budget's current period, kept for a budget with
//! `max_session_dollars`: admission refuses a session's request that could pass it.

use crate::money::Money;
use std::collections::HashMap;

/// The most sessions one budget tracks in a period; a new session past it is refused (a
/// client inventing session ids cannot grow the proxy's memory without bound).
pub const MAX_SESSIONS: usize = 100_000;

/// One session's tab: settled spend and reservations in flight.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tab {
    pub spent: Money,
    pub reserved: Money,
}

#[derive(Debug, Default)]
pub(super) struct Sessions {
    tabs: HashMap<String, Tab>,
}

impl Sessions {
    pub fn from_spend(spend: Vec<(String, Money)>) -> Sessions {
        let tabs = spend
            .into_iter()
            .map(|(s, spent)| {
                (
                    s,
                    Tab {
                        spent,
                        reserved: Money::ZERO,
                    },
                )
            })
            .collect();
        Sessions { tabs }
    }

    pub fn tab(&self, session: &str) -> Tab {
        self.tabs.get(session).copied().unwrap_or_default()
    }

    /// Whether a request of `cost` would pass `cap` (or the session is one too many).
    pub fn over(&self, session: &str, cost: Money, cap: Money) -> bool {
        cost > self.room(session, cap)
    }

    /// The room left under `cap` (none for a new session once the budget tracks its most).
    pub fn room(&self, session: &str, cap: Money) -> Money {
        match self.tabs.get(session) {
            Some(t) => cap - t.spent - t.reserved,
            None if self.tabs.len() >= MAX_SESSIONS => Money::ZERO,
            None => cap,
        }
    }

    pub fn hold(&mut self, session: &str, cost: Money) {
        self.tabs.entry(session.to_string()).or_default().reserved += cost;
    }

    pub fn release(&mut self, session: &str, cost: Money) {
        if let Some(t) = self.tabs.get_mut(session) {
            t.reserved = t.reserved - cost;
        }
    }

    pub fn settle(&mut self, session: &str, reserved: Money, actual: Money) {
        if let Some(t) = self.tabs.get_mut(session) {
            t.reserved = t.reserved - reserved;
            t.spent += actual;
        }
    }

    pub fn clear(&mut self) {
        self.tabs.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_session_past_the_most_tracked_has_no_room() {
        let m = |s: &str| Money::parse(s).unwrap();
        let full = Sessions::from_spend(
            (0..MAX_SESSIONS)
                .map(|i| (i.to_string(), Money::ZERO))
                .collect(),
        );
        assert!(full.over("new", m("0.01"), m("5")));
        assert_eq!(full.room("new", m("5")), Money::ZERO);
        assert!(
            !full.over("7", m("0.01"), m("5")),
            "a session it tracks goes on"
        );
        assert_eq!(full.room("7", m("5")), m("5"));
    }
}
