//! agent-budget: a budget-enforcing proxy for the Anthropic Messages API.
//!
//! The headless core: proxy, exact ledger, SQLite store and REST API. The `agent-budget`
//! binary serves it; the desktop app embeds the same `RunningServer`.

pub mod admin;
pub mod api;
pub mod budget;
pub mod claude_settings;
pub mod cli;
pub mod config;
pub mod connections;
pub mod dto;
pub mod error;
pub mod events;
pub mod guard;
pub mod keychain;
pub mod ledger;
pub mod metrics;
pub mod money;
pub mod otlp;
pub mod pricing;
pub mod proxy;
pub mod record;
pub mod runtime;
pub mod secret_file;
pub mod server;
pub mod service;
pub mod store;
pub mod subscription;
pub mod team;
pub mod traces;
pub mod upstream;

pub use config::{Config, Settings};
pub use server::{RunningServer, ServeError};
