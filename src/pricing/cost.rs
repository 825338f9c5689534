//! Exact cost of a response from its `usage` block, and the worst-case cost of a request
//! before it is sent. Rules and their sources: `ANTHROPIC.md` §1–2.

use super::{Price, PriceBook, PricedAs};
use crate::money::Money;
use serde::Deserialize;

/// $10 per 1,000 web searches.
pub const WEB_SEARCH: Money = Money::from_picos(10_000_000_000);

#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
pub struct CacheCreation {
    pub ephemeral_5m_input_tokens: Option<u64>,
    pub ephemeral_1h_input_tokens: Option<u64>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
pub struct ServerToolUse {
    pub web_search_requests: Option<u64>,
}

/// One entry of `usage.iterations` (compaction, advisor, fallback…), billed at its own model's rate.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
pub struct Iteration {
    pub model: Option<String>,
    pub input_tokens: Option<u64>,
    pub output_tokens: Option<u64>,
    pub cache_creation_input_tokens: Option<u64>,
    pub cache_read_input_tokens: Option<u64>,
    pub cache_creation: Option<CacheCreation>,
}

/// The API's `usage` object; every field may be absent or null. Unknown fields are ignored.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
pub struct Usage {
    pub input_tokens: Option<u64>,
    pub output_tokens: Option<u64>,
    pub cache_creation_input_tokens: Option<u64>,
    pub cache_read_input_tokens: Option<u64>,
    pub cache_creation: Option<CacheCreation>,
    pub server_tool_use: Option<ServerToolUse>,
    pub service_tier: Option<String>,
    pub inference_geo: Option<String>,
    pub speed: Option<String>,
    pub iterations: Option<Vec<Iteration>>,
}

/// The most tokens any one field of a response's usage can plausibly report: ten times the
/// largest context window (1M) plus its output, leaving room for server-tool loops that bill
/// the prompt once per iteration. A larger value is malformed, not a bill (see `plausible`).
pub const MAX_USAGE_TOKENS: u64 = 100_000_000;

impl Usage {
    /// Stream rule: a later event restates cumulative figures. Each count is billed as the
    /// larger of what the stream reported (a smaller later figure never lowers a bill);
    /// other fields present (non-null) in the later event replace earlier ones.
    pub fn merge_later(&mut self, later: Usage) {
        fn take<T>(slot: &mut Option<T>, v: Option<T>) {
            if v.is_some() {
                *slot = v;
            }
        }
        fn max(slot: &mut Option<u64>, v: Option<u64>) {
            *slot = match (*slot, v) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            };
        }
        max(&mut self.input_tokens, later.input_tokens);
        max(&mut self.output_tokens, later.output_tokens);
        max(
            &mut self.cache_creation_input_tokens,
            later.cache_creation_input_tokens,
        );
        max(
            &mut self.cache_read_input_tokens,
            later.cache_read_input_tokens,
        );
        if let Some(l) = later.cache_creation {
            let c = self
                .cache_creation
                .get_or_insert_with(CacheCreation::default);
            max(
                &mut c.ephemeral_5m_input_tokens,
                l.ephemeral_5m_input_tokens,
            );
            max(
                &mut c.ephemeral_1h_input_tokens,
                l.ephemeral_1h_input_tokens,
            );
        }
        if let Some(l) = later.server_tool_use {
            let s = self
                .server_tool_use
                .get_or_insert_with(ServerToolUse::default);
            max(&mut s.web_search_requests, l.web_search_requests);
        }
        take(&mut self.service_tier, later.service_tier);
        take(&mut self.inference_geo, later.inference_geo);
        take(&mut self.speed, later.speed);
        // Iterations are restated whole; a longer list is the later one.
        if later.iterations.as_ref().map_or(0, Vec::len)
            >= self.iterations.as_ref().map_or(0, Vec::len)
        {
            take(&mut self.iterations, later.iterations);
        }
    }

    /// Whether every count is one a real response can report (at most `MAX_USAGE_TOKENS`, at
    /// most 1,000 iterations). An implausible usage block is malformed: its request is charged
    /// its reservation instead, so no upstream value can overflow a sum or brick the store.
    pub fn plausible(&self) -> bool {
        let ok = |v: Option<u64>| v.is_none_or(|n| n <= MAX_USAGE_TOKENS);
        let cache = |c: &Option<CacheCreation>| {
            c.as_ref()
                .is_none_or(|c| ok(c.ephemeral_5m_input_tokens) && ok(c.ephemeral_1h_input_tokens))
        };
        let counts = ok(self.input_tokens)
            && ok(self.output_tokens)
            && ok(self.cache_creation_input_tokens)
            && ok(self.cache_read_input_tokens)
            && cache(&self.cache_creation)
            && ok(self
                .server_tool_use
                .as_ref()
                .and_then(|s| s.web_search_requests));
        let iterations = self.iterations.as_ref().is_none_or(|its| {
            its.len() <= 1000
                && its.iter().all(|i| {
                    ok(i.input_tokens)
                        && ok(i.output_tokens)
                        && ok(i.cache_creation_input_tokens)
                        && ok(i.cache_read_input_tokens)
                        && cache(&i.cache_creation)
                })
        });
        counts && iterations
    }

    fn web_searches(&self) -> u64 {
        self.server_tool_use
            .as_ref()
            .and_then(|s| s.web_search_requests)
            .unwrap_or(0)
    }
}

/// Billed token counts of one response.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tokens {
    pub input: u64,
    pub cache_write_5m: u64,
    pub cache_write_1h: u64,
    pub cache_read: u64,
    pub output: u64,
    pub web_search_requests: u64,
}

impl Tokens {
    /// The size of the prompt, which decides a prompt-size band.
    pub fn prompt(&self) -> u64 {
        self.input
            .saturating_add(self.cache_write_5m)
            .saturating_add(self.cache_write_1h)
            .saturating_add(self.cache_read)
    }
    /// Tokens as billed, for token caps: input + cache writes + cache reads + output.
    pub fn total(&self) -> u64 {
        self.prompt().saturating_add(self.output)
    }
    pub fn add(&mut self, o: Tokens) {
        self.input = self.input.saturating_add(o.input);
        self.cache_write_5m = self.cache_write_5m.saturating_add(o.cache_write_5m);
        self.cache_write_1h = self.cache_write_1h.saturating_add(o.cache_write_1h);
        self.cache_read = self.cache_read.saturating_add(o.cache_read);
        self.output = self.output.saturating_add(o.output);
        self.web_search_requests = self
            .web_search_requests
            .saturating_add(o.web_search_requests);
    }
}

fn split(
    input: Option<u64>,
    output: Option<u64>,
    created: Option<u64>,
    read: Option<u64>,
    detail: Option<&CacheCreation>,
) -> Tokens {
    // Without the 5m/1h breakdown, cache writes are priced at the 5-minute rate.
    let (w5, w1) = match detail {
        Some(d)
            if d.ephemeral_5m_input_tokens.is_some() || d.ephemeral_1h_input_tokens.is_some() =>
        {
            (
                d.ephemeral_5m_input_tokens.unwrap_or(0),
                d.ephemeral_1h_input_tokens.unwrap_or(0),
            )
        }
        _ => (created.unwrap_or(0), 0),
    };
    Tokens {
        input: input.unwrap_or(0),
        cache_write_5m: w5,
        cache_write_1h: w1,
        cache_read: read.unwrap_or(0),
        output: output.unwrap_or(0),
        web_search_requests: 0,
    }
}

/// The cost of one response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Charge {
    pub cost: Money,
    pub tokens: Tokens,
    pub priced_as: PricedAs,
    /// A model the table had no price for (priced at the fallback rates).
    pub unpriced_model: Option<String>,
}

fn token_cost(price: &Price, t: &Tokens) -> Money {
    let r = price.rates_for(t.prompt());
    r.input.per_token(t.input)
        + r.cache_write_5m.per_token(t.cache_write_5m)
        + r.cache_write_1h.per_token(t.cache_write_1h)
        + r.cache_read.per_token(t.cache_read)
        + r.output.per_token(t.output)
}

/// Modifiers the response reports, applied to token charges (not to per-search charges).
fn modified(cost: Money, price: &Price, fast: bool, geo_us: bool, batch: bool) -> Money {
    let mut c = cost;
    if fast {
        c = c.scale(i64::from(price.fast_multiplier), 1);
    }
    if geo_us {
        c = c.scale(11, 10);
    }
    if batch {
        c = c.scale(1, 2);
    }
    c
}

/// Prices a response. `model` is the model the response (or, failing that, the request) names.
pub fn charge(book: &PriceBook, model: &str, usage: &Usage) -> Charge {
    let fast = usage.speed.as_deref() == Some("fast");
    let geo_us = usage.inference_geo.as_deref() == Some("us");
    let batch = usage.service_tier.as_deref() == Some("batch");
    let mut out = Charge {
        cost: WEB_SEARCH.per_token(usage.web_searches()),
        tokens: Tokens {
            web_search_requests: usage.web_searches(),
            ..Tokens::default()
        },
        priced_as: PricedAs::Table,
        unpriced_model: None,
    };
    let top = split(
        usage.input_tokens,
        usage.output_tokens,
        usage.cache_creation_input_tokens,
        usage.cache_read_input_tokens,
        usage.cache_creation.as_ref(),
    );
    let parts: Vec<(&str, Tokens)> = match usage.iterations.as_deref() {
        Some(its) if !its.is_empty() => its
            .iter()
            .map(|i| {
                let t = split(
                    i.input_tokens,
                    i.output_tokens,
                    i.cache_creation_input_tokens,
                    i.cache_read_input_tokens,
                    i.cache_creation.as_ref(),
                );
                (i.model.as_deref().unwrap_or(model), t)
            })
            .collect(),
        _ => vec![(model, top)],
    };
    for (m, t) in parts {
        let (price, how) = book.lookup(m);
        if how == PricedAs::Fallback {
            out.priced_as = PricedAs::Fallback;
            out.unpriced_model.get_or_insert_with(|| m.to_string());
        }
        out.cost += modified(token_cost(&price, &t), &price, fast, geo_us, batch);
        out.tokens.add(t);
    }
    out
}

/// What a request could cost at most, from what is known before it is sent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ask {
    /// Upper estimate of the prompt's tokens.
    pub input_tokens: u64,
    pub max_tokens: u64,
    pub cache_control: bool,
    pub web_search_max_uses: u64,
    pub geo_us: bool,
    pub fast: bool,
}

/// Worst-case dollars: input at the dearest rate the request can incur, all of `max_tokens`
/// as output, every allowed web search.
pub fn worst_case(price: &Price, ask: &Ask) -> Money {
    let r = price.rates_for(ask.input_tokens);
    let input_rate = if ask.cache_control {
        r.input.max(r.cache_write_5m).max(r.cache_write_1h)
    } else {
        r.input
    };
    let tokens = input_rate.per_token(ask.input_tokens) + r.output.per_token(ask.max_tokens);
    modified(tokens, price, ask.fast, ask.geo_us, false)
        + WEB_SEARCH.per_token(ask.web_search_max_uses)
}

/// The most a stream can still cost once its `message_start` has told the exact prompt: that
/// prompt at its real rates (cache reads, 5-minute and 1-hour writes), all of `max_tokens` as
/// output, every allowed web search, and the modifiers asked for or reported. Tokens likewise.
/// None when the start reports iterations, whose later entries nothing bounds yet.
pub fn worst_case_after_start(price: &Price, ask: &Ask, start: &Usage) -> Option<(Money, u64)> {
    if start.iterations.as_ref().is_some_and(|i| !i.is_empty()) || start.input_tokens.is_none() {
        return None;
    }
    let mut t = split(
        start.input_tokens,
        Some(ask.max_tokens),
        start.cache_creation_input_tokens,
        start.cache_read_input_tokens,
        start.cache_creation.as_ref(),
    );
    t.web_search_requests = 0;
    let fast = ask.fast || start.speed.as_deref() == Some("fast");
    let geo_us = ask.geo_us || start.inference_geo.as_deref() == Some("us");
    let cost = modified(token_cost(price, &t), price, fast, geo_us, false)
        + WEB_SEARCH.per_token(ask.web_search_max_uses);
    Some((cost, t.total()))
}

#[cfg(test)]
mod tests;
