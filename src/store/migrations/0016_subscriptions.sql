-- What the upstream last said about each credential that passed through (docs/subscriptions.md):
-- a subscription's windows or an API key's rate limits, by the credential's fingerprint (never
-- the credential), with the readings its pace is drawn from and the alerts already raised.
CREATE TABLE subscriptions (
    account TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    seen_at INTEGER NOT NULL
);
-- A budget may stop at a share of the subscription windows its requests report.
ALTER TABLE budgets ADD COLUMN max_subscription_utilization TEXT;
