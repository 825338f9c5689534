//! The price table: seeded from `seed.json` (with its source date), overridden by the user's
//! edits, looked up by normalised model id; unknown models get the dearest known rates.

pub mod cost;
pub mod model_id;

use crate::money::Money;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;
use ts_rs::TS;

/// Dollars per million tokens for each kind of token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(deny_unknown_fields)]
#[ts(export)]
pub struct PriceBand {
    /// The band applies when input + cache writes + cache reads exceed this many tokens.
    pub threshold_tokens: u64,
    pub input_per_mtok: Money,
    pub output_per_mtok: Money,
    pub cache_write_5m_per_mtok: Money,
    pub cache_write_1h_per_mtok: Money,
    pub cache_read_per_mtok: Money,
}

/// One model's prices, as served by `GET /api/pricing` and accepted by `PUT /api/pricing`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(deny_unknown_fields)]
#[ts(export)]
pub struct PriceEntry {
    pub model: String,
    pub input_per_mtok: Money,
    pub output_per_mtok: Money,
    pub cache_write_5m_per_mtok: Money,
    pub cache_write_1h_per_mtok: Money,
    pub cache_read_per_mtok: Money,
    #[serde(default)]
    pub above: Option<PriceBand>,
    /// Fast mode (`usage.speed = "fast"`) multiplies every token rate by this.
    #[serde(default)]
    pub fast_multiplier: Option<u32>,
}

/// `GET /api/pricing`.
#[derive(Clone, Debug, Serialize, Deserialize, TS)]
#[ts(export)]
pub struct PricingTable {
    pub models: Vec<PriceEntry>,
    pub source: String,
    pub as_of: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PricingError {
    #[error("field 'model' must be 1-128 characters of a-z, 0-9, '.', '-', '_' (got '{0}')")]
    Model(String),
    #[error(
        "field '{0}' must be between 0 and 100000 dollars per million tokens with at most 6 decimal places"
    )]
    Rate(&'static str),
    #[error("field 'above.threshold_tokens' must be greater than 0")]
    Threshold,
    #[error("field 'fast_multiplier' must be between 1 and 100")]
    Fast,
    #[error("the built-in price table is unreadable: {0}")]
    Seed(String),
}

/// Rates in picodollars per token, ready for arithmetic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rates {
    pub input: Money,
    pub output: Money,
    pub cache_write_5m: Money,
    pub cache_write_1h: Money,
    pub cache_read: Money,
}

impl Rates {
    fn max(self, o: Rates) -> Rates {
        Rates {
            input: self.input.max(o.input),
            output: self.output.max(o.output),
            cache_write_5m: self.cache_write_5m.max(o.cache_write_5m),
            cache_write_1h: self.cache_write_1h.max(o.cache_write_1h),
            cache_read: self.cache_read.max(o.cache_read),
        }
    }
}

/// A validated entry in arithmetic form.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Price {
    pub base: Rates,
    pub above: Option<(u64, Rates)>,
    pub fast_multiplier: u32,
}

impl Price {
    /// The rates that apply to a request whose prompt (input + cache) has `prompt_tokens` tokens.
    pub fn rates_for(&self, prompt_tokens: u64) -> Rates {
        match self.above {
            Some((threshold, rates)) if prompt_tokens > threshold => rates,
            _ => self.base,
        }
    }
}

const MAX_RATE_DOLLARS: i64 = 100_000;
const PICOS_PER_MICRO: i64 = 1_000_000;

fn per_token(per_mtok: Money, field: &'static str) -> Result<Money, PricingError> {
    let p = per_mtok.picos();
    if p < 0 || per_mtok > Money::from_dollars(MAX_RATE_DOLLARS) || p % PICOS_PER_MICRO != 0 {
        return Err(PricingError::Rate(field));
    }
    Ok(Money::from_picos(p / PICOS_PER_MICRO))
}

fn rates(prefix: &'static [&'static str; 5], v: [Money; 5]) -> Result<Rates, PricingError> {
    Ok(Rates {
        input: per_token(v[0], prefix[0])?,
        output: per_token(v[1], prefix[1])?,
        cache_write_5m: per_token(v[2], prefix[2])?,
        cache_write_1h: per_token(v[3], prefix[3])?,
        cache_read: per_token(v[4], prefix[4])?,
    })
}

const BASE_FIELDS: [&str; 5] = [
    "input_per_mtok",
    "output_per_mtok",
    "cache_write_5m_per_mtok",
    "cache_write_1h_per_mtok",
    "cache_read_per_mtok",
];
const BAND_FIELDS: [&str; 5] = [
    "above.input_per_mtok",
    "above.output_per_mtok",
    "above.cache_write_5m_per_mtok",
    "above.cache_write_1h_per_mtok",
    "above.cache_read_per_mtok",
];

impl PriceEntry {
    /// Validates the entry and converts it to per-token rates. The model id is stored normalised.
    pub fn validate(mut self) -> Result<(PriceEntry, Price), PricingError> {
        let model = model_id::normalise(&self.model);
        let ok = !model.is_empty()
            && model.len() <= 128
            && model
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b".-_".contains(&b));
        if !ok {
            return Err(PricingError::Model(self.model));
        }
        self.model = model;
        let base = rates(
            &BASE_FIELDS,
            [
                self.input_per_mtok,
                self.output_per_mtok,
                self.cache_write_5m_per_mtok,
                self.cache_write_1h_per_mtok,
                self.cache_read_per_mtok,
            ],
        )?;
        let above = match &self.above {
            None => None,
            Some(b) if b.threshold_tokens == 0 => return Err(PricingError::Threshold),
            Some(b) => Some((
                b.threshold_tokens,
                rates(
                    &BAND_FIELDS,
                    [
                        b.input_per_mtok,
                        b.output_per_mtok,
                        b.cache_write_5m_per_mtok,
                        b.cache_write_1h_per_mtok,
                        b.cache_read_per_mtok,
                    ],
                )?,
            )),
        };
        let fast_multiplier = match self.fast_multiplier {
            None => 1,
            Some(m @ 1..=100) => m,
            Some(_) => return Err(PricingError::Fast),
        };
        Ok((
            self,
            Price {
                base,
                above,
                fast_multiplier,
            },
        ))
    }
}

/// How a cost was priced: from the table, or at the fallback (dearest) rates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "snake_case")]
#[ts(export)]
pub enum PricedAs {
    Table,
    Fallback,
}

/// An immutable snapshot of the table; edits build a new snapshot (applies to later requests only).
#[derive(Debug, Clone)]
pub struct PriceBook {
    entries: HashMap<String, (PriceEntry, Arc<Price>)>,
    fallback: Arc<Price>,
    source: String,
    as_of: String,
}

#[derive(Deserialize)]
struct Seed {
    source: String,
    as_of: String,
    models: Vec<PriceEntry>,
}

impl PriceBook {
    /// The built-in table from `seed.json`, with `overrides` (the user's stored edits) on top.
    pub fn seeded(overrides: Vec<PriceEntry>) -> Result<PriceBook, PricingError> {
        let seed: Seed = serde_json::from_str(include_str!("seed.json"))
            .map_err(|e| PricingError::Seed(e.to_string()))?;
        let mut book = PriceBook {
            entries: HashMap::new(),
            fallback: Arc::new(Price {
                base: Rates {
                    input: Money::ZERO,
                    output: Money::ZERO,
                    cache_write_5m: Money::ZERO,
                    cache_write_1h: Money::ZERO,
                    cache_read: Money::ZERO,
                },
                above: None,
                fast_multiplier: 1,
            }),
            source: seed.source,
            as_of: seed.as_of,
        };
        for entry in seed.models.into_iter().chain(overrides) {
            let (entry, price) = entry.validate()?;
            book.entries
                .insert(entry.model.clone(), (entry, Arc::new(price)));
        }
        book.refresh_fallback();
        Ok(book)
    }

    /// A new book with one entry upserted.
    pub fn with(&self, entry: PriceEntry, price: Price) -> PriceBook {
        let mut book = self.clone();
        book.entries
            .insert(entry.model.clone(), (entry, Arc::new(price)));
        book.refresh_fallback();
        book
    }

    /// Each fallback rate is the maximum of that base rate over the table.
    fn refresh_fallback(&mut self) {
        let mut prices = self.entries.values().map(|(_, p)| p);
        let Some(first) = prices.next() else { return };
        let (mut base, mut fast) = (first.base, first.fast_multiplier);
        for p in prices {
            base = base.max(p.base);
            fast = fast.max(p.fast_multiplier);
        }
        self.fallback = Arc::new(Price {
            base,
            above: None,
            fast_multiplier: fast,
        });
    }

    /// The price for a model id as the client or the API wrote it.
    /// A model's name as the table knows it, for metrics labels: `other` when it has no
    /// price, so that clients cannot make up new labels.
    pub fn label(&self, model: &str) -> String {
        if self.entries.contains_key(model) {
            return model.to_string();
        }
        let family = model_id::normalise(model);
        let dated = format!("{family}-0");
        match (
            self.entries.contains_key(&family),
            self.entries.contains_key(&dated),
        ) {
            (true, _) => family,
            (false, true) => dated,
            (false, false) => "other".to_string(),
        }
    }

    pub fn lookup(&self, model: &str) -> (Arc<Price>, PricedAs) {
        // Keys are normal forms and normalising is idempotent, so an exact hit (what SDKs
        // usually send) is the same answer without the string work, which showed in profiles.
        if let Some((_, p)) = self.entries.get(model) {
            return (p.clone(), PricedAs::Table);
        }
        let family = model_id::normalise(model);
        let found = self
            .entries
            .get(&family)
            .or_else(|| self.entries.get(&format!("{family}-0")));
        match found {
            Some((_, p)) => (p.clone(), PricedAs::Table),
            None => (self.fallback.clone(), PricedAs::Fallback),
        }
    }

    pub fn table(&self) -> PricingTable {
        let mut models: Vec<PriceEntry> = self.entries.values().map(|(e, _)| e.clone()).collect();
        models.sort_by(|a, b| a.model.cmp(&b.model));
        PricingTable {
            models,
            source: self.source.clone(),
            as_of: self.as_of.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(json: &str) -> PriceEntry {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn seed_covers_every_model_in_the_api_facts() {
        let book = PriceBook::seeded(vec![]).unwrap();
        for id in [
            "claude-opus-4-8",
            "claude-opus-4-7",
            "claude-opus-4-6",
            "claude-opus-4-5-20251101",
            "claude-opus-4-1-20250805",
            "claude-opus-4-20250514",
            "claude-opus-4-0",
            "claude-sonnet-4-6",
            "claude-sonnet-4-5-20250929",
            "claude-sonnet-4-20250514",
            "claude-3-7-sonnet-20250219",
            "claude-3-7-sonnet-latest",
            "claude-haiku-4-5-20251001",
            "claude-3-5-haiku-20241022",
            "claude-3-haiku-20240307",
            "claude-3-opus-20240229",
            "claude-3-opus-latest",
            "claude-opus-5",
            "claude-sonnet-5",
            "claude-sonnet-5-5",
            "claude-opus-5-5",
            "claude-fable-5",
            "claude-mythos-5",
            "claude-fable-5-1",
            "claude-haiku-5-5",
        ] {
            assert_eq!(book.lookup(id).1, PricedAs::Table, "{id}");
        }
        assert_eq!(book.table().as_of, "2026-08-21");
    }

    #[test]
    fn an_exact_id_and_its_variants_find_the_same_price() {
        let book = PriceBook::seeded(vec![]).unwrap();
        for key in book.entries.keys() {
            let (exact, how) = book.lookup(key);
            assert_eq!(how, PricedAs::Table, "{key}");
            for variant in [
                key.to_uppercase(),
                format!("us.anthropic.{key}-v1:0"),
                format!(" {key}@20250101"),
            ] {
                let (p, _) = book.lookup(&variant);
                assert!(Arc::ptr_eq(&p, &exact), "{variant} priced unlike {key}");
            }
        }
    }

    #[test]
    fn unknown_models_get_the_dearest_base_rates() {
        let book = PriceBook::seeded(vec![]).unwrap();
        let (p, how) = book.lookup("claude-unheard-of-9");
        assert_eq!(how, PricedAs::Fallback);
        assert_eq!(p.base.input, Money::from_picos(15_000_000)); // $15/MTok
        assert_eq!(p.base.output, Money::from_picos(75_000_000));
        assert_eq!(p.base.cache_write_1h, Money::from_picos(30_000_000));
        assert_eq!(p.base.cache_read, Money::from_picos(1_500_000));
    }

    #[test]
    fn validation_names_the_field_and_rule() {
        let good = r#"{"model":"my-model","input_per_mtok":"1","output_per_mtok":2,"cache_write_5m_per_mtok":"1.25","cache_write_1h_per_mtok":"2","cache_read_per_mtok":"0.1"}"#;
        assert!(entry(good).validate().is_ok());
        let bad_rate = good.replace(
            r#""cache_read_per_mtok":"0.1""#,
            r#""cache_read_per_mtok":"0.0000001""#,
        );
        assert_eq!(
            entry(&bad_rate).validate().unwrap_err(),
            PricingError::Rate("cache_read_per_mtok")
        );
        let negative = good.replace(r#""input_per_mtok":"1""#, r#""input_per_mtok":"-1""#);
        assert_eq!(
            entry(&negative).validate().unwrap_err(),
            PricingError::Rate("input_per_mtok")
        );
        let bad_model = good.replace("my-model", "My Model!");
        assert!(matches!(
            entry(&bad_model).validate(),
            Err(PricingError::Model(_))
        ));
        assert!(
            serde_json::from_str::<PriceEntry>(&good.replace("\"model\"", "\"modle\"")).is_err()
        );
    }

    #[test]
    fn edits_apply_to_a_new_snapshot_only() {
        let book = PriceBook::seeded(vec![]).unwrap();
        let (e, p) = entry(r#"{"model":"claude-sonnet-4-6-20990101","input_per_mtok":"9","output_per_mtok":"9","cache_write_5m_per_mtok":"9","cache_write_1h_per_mtok":"9","cache_read_per_mtok":"9"}"#).validate().unwrap();
        assert_eq!(e.model, "claude-sonnet-4-6");
        let edited = book.with(e, p);
        assert_eq!(
            edited.lookup("claude-sonnet-4-6").0.base.input,
            Money::from_picos(9_000_000)
        );
        assert_eq!(
            book.lookup("claude-sonnet-4-6").0.base.input,
            Money::from_picos(3_000_000)
        );
    }
}
