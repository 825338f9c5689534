//! What a transaction's usage rows add to a roll-up table, grouped by the table's key.

use crate::money::Money;
use crate::record::{UsageRow, UsageStatus};
use rusqlite::{CachedStatement, ToSql};

/// The columns a tally fills after a table's key columns, and how a conflict adds them up.
pub(super) const COLUMNS: &str = "first_seen, last_seen, requests, blocked, tokens, dollars";
pub(super) const ADD_UP: &str = "first_seen = min(first_seen, excluded.first_seen),
    last_seen = max(last_seen, excluded.last_seen), requests = sadd(requests, excluded.requests),
    blocked = sadd(blocked, excluded.blocked), tokens = sadd(tokens, excluded.tokens),
    dollars = sadd(dollars, excluded.dollars)";

/// The totals of a group of rows.
pub(super) struct Tally {
    pub first: i64,
    pub last: i64,
    pub requests: i64,
    pub blocked: i64,
    pub tokens: u64,
    pub dollars: Money,
}

impl Tally {
    fn add(&mut self, r: &UsageRow) {
        let at = r.created_at.timestamp_millis();
        self.first = self.first.min(at);
        self.last = self.last.max(at);
        if r.status == UsageStatus::Blocked {
            self.blocked += 1;
        } else {
            self.requests += 1;
        }
        self.tokens = self.tokens.saturating_add(r.tokens.total());
        self.dollars += r.cost;
    }

    /// Runs an upsert whose parameters are the group's key columns, then `COLUMNS`.
    pub fn upsert(
        &self,
        stmt: &mut CachedStatement<'_>,
        key: &[&dyn ToSql],
    ) -> rusqlite::Result<()> {
        let (tokens, dollars) = (
            i64::try_from(self.tokens).unwrap_or(i64::MAX),
            self.dollars.picos(),
        );
        let tally: [&dyn ToSql; 6] = [
            &self.first,
            &self.last,
            &self.requests,
            &self.blocked,
            &tokens,
            &dollars,
        ];
        stmt.execute(rusqlite::params_from_iter(key.iter().chain(&tally)))?;
        Ok(())
    }
}

/// Rows grouped by key. A batch holds few keys: a scan beats hashing here.
pub(super) struct Groups<K> {
    items: Vec<(K, Tally)>,
}

impl<K> Default for Groups<K> {
    fn default() -> Self {
        Groups { items: Vec::new() }
    }
}

impl<K> Groups<K> {
    /// Adds `r` to the group `is` finds, or to a new one keyed `make()`.
    pub fn add(&mut self, r: &UsageRow, is: impl Fn(&K) -> bool, make: impl FnOnce() -> K) {
        let i = match self.items.iter().position(|(k, _)| is(k)) {
            Some(i) => i,
            None => {
                let at = r.created_at.timestamp_millis();
                let empty = Tally {
                    first: at,
                    last: at,
                    requests: 0,
                    blocked: 0,
                    tokens: 0,
                    dollars: Money::ZERO,
                };
                self.items.push((make(), empty));
                self.items.len() - 1
            }
        };
        self.items[i].1.add(r);
    }

    pub fn iter(&self) -> impl Iterator<Item = &(K, Tally)> {
        self.items.iter()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}
