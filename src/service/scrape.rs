//! What a scrape of `/agent-budget/metrics` reads at that moment: each budget's figures (the
//! team's, for a team budget) and the writer's queue.

use super::Service;
use crate::metrics::Figures;

impl Service {
    /// The metrics in the text format, with the budgets' figures as they are now.
    pub fn scrape(&self) -> String {
        let figures: Vec<Figures> = self
            .list_budgets()
            .into_iter()
            .map(|b| Figures {
                budget: b.name,
                spent: b.spent_dollars.approx_dollars(),
                reserved: b.reserved_dollars.approx_dollars(),
                cap: b.max_dollars.map(|c| c.approx_dollars()),
            })
            .collect();
        self.metrics.set_budgets(&figures);
        let queued = i64::try_from(self.store.writer.queued()).unwrap_or(i64::MAX);
        self.metrics.writer_queue.set(queued);
        self.metrics.encode()
    }
}
