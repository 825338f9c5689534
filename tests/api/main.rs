//! End-to-end tests: the real server on a real socket (port 0) against the mock upstream.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod activity;
mod admission;
mod alerts;
mod budgets;
mod durability;
mod faults;
mod gateway;
mod guardrails;
mod guards;
mod helpers;
mod hostile;
mod instants;
mod key_caps;
mod keychain;
mod keys;
mod limits;
mod live;
mod load;
mod metrics;
mod modes;
mod nested;
mod prometheus;
mod proxy;
mod receiver;
mod secrets;
mod session_caps;
mod sign_in;
mod streaming;
mod subscriptions;
mod team;
mod team_keys;
mod team_nested;
mod team_sign_in;
mod trace;
mod traces;
