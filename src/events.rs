//! Core events: what happened, broadcast to whoever listens (the dashboard's live updates,
//! the desktop tray). Publishing never waits: with no listener, or a slow one, events drop.

use crate::budget::alert::AlertKind;
use crate::money::Money;
use crate::record::UsageStatus;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use ts_rs::TS;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, TS)]
#[serde(tag = "type", rename_all = "snake_case")]
#[ts(export)]
pub enum CoreEvent {
    UsageRecorded {
        budget_id: i64,
        budget: String,
        status: UsageStatus,
        cost_dollars: Money,
    },
    RequestBlocked {
        budget_id: i64,
        budget: String,
    },
    AlertRaised {
        budget_id: i64,
        budget: String,
        kind: AlertKind,
        threshold: Option<u8>,
        message: String,
    },
    BudgetCreated {
        budget_id: i64,
        budget: String,
    },
    BudgetChanged {
        budget_id: i64,
        budget: String,
    },
    BudgetDeleted {
        budget_id: i64,
        budget: String,
    },
    PricingChanged {
        model: String,
    },
    /// Claude Code asks to sign in: the admin approves or denies the code in the dashboard.
    SignInRequested {
        user_code: String,
    },
    /// What the upstream says of a subscription's windows or an API key's rate limits changed.
    SubscriptionsChanged,
    /// A subscription window reached an alert threshold (`--subscription-alerts`).
    WindowAlert {
        account: String,
        window: String,
        threshold: u8,
        message: String,
    },
}

/// The broadcast channel of core events.
#[derive(Clone, Debug)]
pub struct Events(broadcast::Sender<CoreEvent>);

impl Default for Events {
    fn default() -> Events {
        Events(broadcast::channel(1024).0)
    }
}

impl Events {
    pub fn emit(&self, e: CoreEvent) {
        // An error only means nobody is listening.
        let _ = self.0.send(e);
    }
    pub fn subscribe(&self) -> broadcast::Receiver<CoreEvent> {
        self.0.subscribe()
    }
}
