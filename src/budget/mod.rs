//! Budgets: the model, its validated inputs, and the period arithmetic.

pub mod alert;
pub mod level;
pub mod pacing;
pub mod period;
pub mod rate;
pub mod repeats;

use crate::money::Money;
use chrono::{DateTime, Utc};
use period::Period;
use serde::{Deserialize, Deserializer, Serialize};
use ts_rs::TS;

pub const DEFAULT_BUDGET: &str = "default";
pub const DEFAULT_THRESHOLDS: [u8; 3] = [50, 80, 100];

/// How a request whose worst case does not fit is treated.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, TS)]
#[serde(rename_all = "snake_case")]
#[ts(export)]
pub enum Admission {
    /// Blocked (429).
    #[default]
    Strict,
    /// Forwarded with `max_tokens` lowered to the largest value that fits, if that is at least
    /// the floor (docs/admission.md); blocked otherwise.
    Clamp,
}

impl Admission {
    pub fn as_str(self) -> &'static str {
        match self {
            Admission::Strict => "strict",
            Admission::Clamp => "clamp",
        }
    }
    pub fn parse(s: &str) -> Option<Admission> {
        match s {
            "strict" => Some(Admission::Strict),
            "clamp" => Some(Admission::Clamp),
            _ => None,
        }
    }
}

/// A budget as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Budget {
    pub id: i64,
    pub name: String,
    /// `None` only for the built-in `default` budget until the user sets a cap.
    pub max_dollars: Option<Money>,
    pub max_tokens: Option<u64>,
    pub period: Period,
    pub webhook_url: Option<String>,
    pub thresholds: Vec<u8>,
    pub admission: Admission,
    /// Velocity cap: spend over any sliding 60 minutes, reservations included.
    pub max_dollars_per_hour: Option<Money>,
    /// A request whose worst case exceeds this is refused (400).
    pub max_request_dollars: Option<Money>,
    /// Model allow-list (ids or families, as the price table names them); None allows all.
    pub models: Option<Vec<String>>,
    pub loop_guard: Option<repeats::LoopGuard>,
    /// The budget above it: a request charged here must fit there too (and above that).
    pub parent: Option<i64>,
    /// Each agent session may spend at most this within the budget's period.
    pub max_session_dollars: Option<Money>,
    /// Its requests stop once the subscription windows they report pass these shares.
    pub max_subscription_utilization: Option<pacing::WindowCaps>,
    pub created_at: DateTime<Utc>,
}

impl Budget {
    /// The built-in `default` budget, made on first run: uncapped until the user sets a cap.
    pub fn built_in(now: DateTime<Utc>) -> Budget {
        Budget {
            id: 0,
            name: DEFAULT_BUDGET.into(),
            max_dollars: None,
            max_tokens: None,
            period: Period::default(),
            webhook_url: None,
            thresholds: DEFAULT_THRESHOLDS.to_vec(),
            admission: Admission::default(),
            max_dollars_per_hour: None,
            max_request_dollars: None,
            models: None,
            loop_guard: None,
            parent: None,
            max_session_dollars: None,
            max_subscription_utilization: None,
            created_at: now,
        }
    }
}

/// A budget named by its name or its id (`"team"` or `3`).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum BudgetRef {
    Id(i64),
    Name(String),
}

impl BudgetRef {
    /// The ledger's key for it.
    pub fn key(&self) -> String {
        match self {
            BudgetRef::Id(id) => id.to_string(),
            BudgetRef::Name(n) => n.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("field '{field}' {rule}")]
pub struct Invalid {
    pub field: &'static str,
    pub rule: String,
}

pub(crate) fn invalid(field: &'static str, rule: impl Into<String>) -> Invalid {
    Invalid {
        field,
        rule: rule.into(),
    }
}

/// `POST /api/budgets`.
#[derive(Clone, Debug, Deserialize, TS)]
#[serde(deny_unknown_fields)]
#[ts(export)]
pub struct NewBudget {
    pub name: String,
    /// Required, except below a parent (whose cap then holds it).
    #[ts(type = "string | number | null")]
    pub max_dollars: Option<Money>,
    #[serde(default)]
    #[ts(optional)]
    pub period: Option<Period>,
    #[serde(default)]
    #[ts(optional)]
    pub webhook_url: Option<String>,
    #[serde(default)]
    #[ts(optional)]
    pub max_tokens: Option<u64>,
    #[serde(default)]
    #[ts(optional)]
    pub thresholds: Option<Vec<u32>>,
    #[serde(default)]
    #[ts(optional)]
    pub admission: Option<Admission>,
    #[serde(default)]
    #[ts(optional, type = "string | number")]
    pub max_dollars_per_hour: Option<Money>,
    #[serde(default)]
    #[ts(optional, type = "string | number")]
    pub max_request_dollars: Option<Money>,
    #[serde(default)]
    #[ts(optional)]
    pub models: Option<Vec<String>>,
    #[serde(default)]
    #[ts(optional)]
    pub loop_guard: Option<repeats::LoopGuard>,
    /// The budget above it (name or id): its requests must fit there too.
    #[serde(default)]
    #[ts(optional, type = "string | number | null")]
    pub parent: Option<BudgetRef>,
    #[serde(default)]
    #[ts(optional, type = "string | number")]
    pub max_session_dollars: Option<Money>,
    #[serde(default)]
    #[ts(optional)]
    pub max_subscription_utilization: Option<pacing::WindowCaps>,
}

/// `PATCH /api/budgets/:id`: absent fields stay as they are; `null` clears an optional field.
#[derive(Clone, Debug, Default, Deserialize, TS)]
#[serde(deny_unknown_fields)]
#[ts(export)]
pub struct BudgetPatch {
    #[serde(default, deserialize_with = "present")]
    #[ts(optional, type = "string | number | null")]
    pub max_dollars: Option<Option<Money>>,
    #[serde(default, deserialize_with = "present")]
    #[ts(optional, type = "number | null")]
    pub max_tokens: Option<Option<u64>>,
    #[serde(default)]
    #[ts(optional)]
    pub period: Option<Period>,
    #[serde(default, deserialize_with = "present")]
    #[ts(optional, type = "string | null")]
    pub webhook_url: Option<Option<String>>,
    #[serde(default)]
    #[ts(optional)]
    pub thresholds: Option<Vec<u32>>,
    #[serde(default)]
    #[ts(optional)]
    pub admission: Option<Admission>,
    #[serde(default, deserialize_with = "present")]
    #[ts(optional, type = "string | number | null")]
    pub max_dollars_per_hour: Option<Option<Money>>,
    #[serde(default, deserialize_with = "present")]
    #[ts(optional, type = "string | number | null")]
    pub max_request_dollars: Option<Option<Money>>,
    #[serde(default, deserialize_with = "present")]
    #[ts(optional, type = "Array<string> | null")]
    pub models: Option<Option<Vec<String>>>,
    #[serde(default, deserialize_with = "present")]
    #[ts(optional, as = "Option<Option<repeats::LoopGuard>>")]
    pub loop_guard: Option<Option<repeats::LoopGuard>>,
    #[serde(default, deserialize_with = "present")]
    #[ts(optional, type = "string | number | null")]
    pub parent: Option<Option<BudgetRef>>,
    #[serde(default, deserialize_with = "present")]
    #[ts(optional, type = "string | number | null")]
    pub max_session_dollars: Option<Option<Money>>,
    #[serde(default, deserialize_with = "present")]
    #[ts(optional, as = "Option<Option<pacing::WindowCaps>>")]
    pub max_subscription_utilization: Option<Option<pacing::WindowCaps>>,
}

/// Finds the budget a `parent` field names: its id, or why it cannot be a parent.
pub trait Parents {
    fn resolve(&self, parent: &BudgetRef) -> Result<i64, Invalid>;
}

/// Only `default` and budgets below another may go without a dollar cap.
fn check_capped(b: &Budget) -> Result<(), Invalid> {
    if b.max_dollars.is_none() && b.parent.is_none() && b.name != DEFAULT_BUDGET {
        return Err(invalid(
            "max_dollars",
            "is required and must be greater than 0 (only the 'default' budget and budgets with a parent may be uncapped)",
        ));
    }
    Ok(())
}

/// Distinguishes a field set to `null` (`Some(None)`) from an absent one (`None`).
pub(crate) fn present<'de, T: Deserialize<'de>, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// `[a-z][a-z0-9_-]{0,63}`: starts with a letter, so a name is never mistaken for an id.
pub fn check_name(name: &str) -> Result<(), Invalid> {
    let b = name.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= 64
        && b[0].is_ascii_lowercase()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_' || *c == b'-');
    if ok {
        Ok(())
    } else {
        Err(invalid(
            "name",
            "must match [a-z][a-z0-9_-]{0,63}: a lowercase letter, then up to 63 lowercase letters, digits, '_' or '-'",
        ))
    }
}

fn check_cap(cap: Money) -> Result<Money, Invalid> {
    if cap.is_positive() {
        Ok(cap)
    } else {
        Err(invalid("max_dollars", "must be greater than 0"))
    }
}

fn check_positive(field: &'static str, m: Money) -> Result<Money, Invalid> {
    if m.is_positive() {
        Ok(m)
    } else {
        Err(invalid(field, "must be greater than 0 (or null for none)"))
    }
}

/// 1–100 model ids, each normalised as prices are (dated ids to their family), none twice.
fn check_models(models: Vec<String>) -> Result<Vec<String>, Invalid> {
    let rule = "must be a list of 1 to 100 model ids such as \"claude-sonnet-4-6\" (or null to allow every model)";
    if models.is_empty()
        || models.len() > 100
        || models.iter().any(|m| m.trim().is_empty() || m.len() > 200)
    {
        return Err(invalid("models", rule));
    }
    let mut v: Vec<String> = models
        .iter()
        .map(|m| crate::pricing::model_id::normalise(m.trim()))
        .collect();
    v.sort();
    v.dedup();
    Ok(v)
}

fn check_loop_guard(g: repeats::LoopGuard) -> Result<repeats::LoopGuard, Invalid> {
    match g.invalid() {
        Some(rule) => Err(invalid("loop_guard", rule)),
        None => Ok(g),
    }
}

/// Whether `model` is allowed by a budget's list (compared by family, as prices are).
pub fn allows(list: &Option<Vec<String>>, model: &str) -> bool {
    list.as_ref().is_none_or(|l| {
        l.iter()
            .any(|m| *m == crate::pricing::model_id::normalise(model))
    })
}

fn check_tokens(t: u64) -> Result<u64, Invalid> {
    if t > 0 && t <= i64::MAX as u64 {
        Ok(t)
    } else {
        Err(invalid(
            "max_tokens",
            "must be a whole number greater than 0",
        ))
    }
}

pub(crate) fn check_webhook(url: String) -> Result<String, Invalid> {
    match reqwest::Url::parse(&url) {
        Ok(u) if (u.scheme() == "http" || u.scheme() == "https") && u.host().is_some() => Ok(url),
        _ => Err(invalid(
            "webhook_url",
            "must be an http:// or https:// URL with a host",
        )),
    }
}

fn check_thresholds(t: Vec<u32>) -> Result<Vec<u8>, Invalid> {
    let rule = "must be a list of 1 to 10 distinct whole percentages between 1 and 100";
    if t.is_empty() || t.len() > 10 || t.iter().any(|p| !(1..=100).contains(p)) {
        return Err(invalid("thresholds", rule));
    }
    let mut v: Vec<u8> = t.into_iter().filter_map(|p| u8::try_from(p).ok()).collect();
    v.sort_unstable();
    let n = v.len();
    v.dedup();
    if v.len() != n {
        return Err(invalid("thresholds", rule));
    }
    Ok(v)
}

impl NewBudget {
    /// Validates every field; the result is ready to insert (id and time filled by the store).
    pub fn validate(self, now: DateTime<Utc>, parents: &impl Parents) -> Result<Budget, Invalid> {
        check_name(&self.name)?;
        let max_dollars = self.max_dollars.map(check_cap).transpose()?;
        let parent = self
            .parent
            .as_ref()
            .map(|p| parents.resolve(p))
            .transpose()?;
        let b = Budget {
            id: 0,
            name: self.name,
            max_dollars,
            max_tokens: self.max_tokens.map(check_tokens).transpose()?,
            period: self.period.unwrap_or_default(),
            webhook_url: self.webhook_url.map(check_webhook).transpose()?,
            thresholds: match self.thresholds {
                Some(t) => check_thresholds(t)?,
                None => DEFAULT_THRESHOLDS.to_vec(),
            },
            admission: self.admission.unwrap_or_default(),
            max_dollars_per_hour: self
                .max_dollars_per_hour
                .map(|m| check_positive("max_dollars_per_hour", m))
                .transpose()?,
            max_request_dollars: self
                .max_request_dollars
                .map(|m| check_positive("max_request_dollars", m))
                .transpose()?,
            models: self.models.map(check_models).transpose()?,
            loop_guard: self.loop_guard.map(check_loop_guard).transpose()?,
            parent,
            max_session_dollars: self
                .max_session_dollars
                .map(|m| check_positive("max_session_dollars", m))
                .transpose()?,
            max_subscription_utilization: self
                .max_subscription_utilization
                .map(pacing::check)
                .transpose()?,
            created_at: now,
        };
        check_capped(&b)?;
        Ok(b)
    }
}

impl BudgetPatch {
    /// The budget with the patch applied, or the first invalid field; `b` is untouched either way.
    pub fn apply(self, b: &Budget, parents: &impl Parents) -> Result<Budget, Invalid> {
        let mut next = b.clone();
        match self.max_dollars {
            None => {}
            Some(Some(cap)) => next.max_dollars = Some(check_cap(cap)?),
            Some(None) => next.max_dollars = None,
        }
        if let Some(p) = &self.parent {
            next.parent = p.as_ref().map(|p| parents.resolve(p)).transpose()?;
        }
        if let Some(t) = self.max_tokens {
            next.max_tokens = t.map(check_tokens).transpose()?;
        }
        if let Some(p) = self.period {
            next.period = p;
        }
        if let Some(w) = self.webhook_url {
            next.webhook_url = w.map(check_webhook).transpose()?;
        }
        if let Some(t) = self.thresholds {
            next.thresholds = check_thresholds(t)?;
        }
        if let Some(a) = self.admission {
            next.admission = a;
        }
        if let Some(m) = self.max_dollars_per_hour {
            next.max_dollars_per_hour = m
                .map(|m| check_positive("max_dollars_per_hour", m))
                .transpose()?;
        }
        if let Some(m) = self.max_request_dollars {
            next.max_request_dollars = m
                .map(|m| check_positive("max_request_dollars", m))
                .transpose()?;
        }
        if let Some(m) = self.models {
            next.models = m.map(check_models).transpose()?;
        }
        if let Some(g) = self.loop_guard {
            next.loop_guard = g.map(check_loop_guard).transpose()?;
        }
        if let Some(m) = self.max_session_dollars {
            next.max_session_dollars = m
                .map(|m| check_positive("max_session_dollars", m))
                .transpose()?;
        }
        if let Some(c) = self.max_subscription_utilization {
            next.max_subscription_utilization = c.map(pacing::check).transpose()?;
        }
        check_capped(&next)?;
        Ok(next)
    }
}

#[cfg(test)]
mod tests;
