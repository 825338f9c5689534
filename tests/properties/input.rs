//! Request bodies, model ids, money amounts, budgets and prices: everything a client or the
//! dashboard can send.

use agent_budget::budget::{BudgetRef, Invalid, NewBudget, Parents, check_name};
use agent_budget::money::Money;
use agent_budget::pricing::cost::{WEB_SEARCH, worst_case};
use agent_budget::pricing::model_id::normalise;
use agent_budget::pricing::{PriceBook, PriceEntry, PricedAs};
use agent_budget::proxy::{estimate::estimate, request};
use proptest::prelude::*;
use serde_json::{Value, json};

/// Budgets that stand alone: every parent refused.
struct TopLevel;

impl Parents for TopLevel {
    fn resolve(&self, _: &BudgetRef) -> Result<i64, Invalid> {
        Err(Invalid {
            field: "parent",
            rule: "names no budget".into(),
        })
    }
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        ".{0,30}".prop_map(Value::String),
        Just(json!("claude-sonnet-4-6")),
        Just(json!("image")),
        Just(json!("base64")),
    ];
    leaf.prop_recursive(5, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("model".to_string()),
                    Just("max_tokens".to_string()),
                    Just("messages".to_string()),
                    Just("content".to_string()),
                    Just("type".to_string()),
                    Just("text".to_string()),
                    Just("source".to_string()),
                    Just("data".to_string()),
                    Just("tools".to_string()),
                    Just("stream".to_string()),
                    Just("thinking".to_string()),
                    ".{0,10}".prop_map(|s| s),
                ],
                inner,
                0..8
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A Messages request with generated parts in the places clients fill.
fn messages_body() -> impl Strategy<Value = Value> {
    (json_value(), json_value(), any::<u64>(), any::<bool>()).prop_map(
        |(content, extra, max, stream)| {
            json!({"model": "claude-sonnet-4-6", "max_tokens": max, "stream": stream,
               "messages": [{"role": "user", "content": content}], "system": extra})
        },
    )
}

proptest! {
    #[test]
    fn any_bytes_are_parsed_or_refused_with_a_reason(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        match request::parse(&bytes) {
            Ok(r) => prop_assert!(!r.model.is_empty()),
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
        let e = estimate(&bytes, false);
        prop_assert!(e.low <= e.high);
    }

    #[test]
    fn any_json_request_gets_an_ordered_estimate(v in messages_body(), newer in any::<bool>()) {
        let body = serde_json::to_vec(&v).unwrap();
        let parsed = request::parse(&body).unwrap();
        prop_assert_eq!(parsed.model.as_str(), "claude-sonnet-4-6");
        let e = estimate(&body, newer);
        prop_assert!(e.low <= e.high, "{:?}", e);
        // Every byte of a prompt is at most one token, plus the fixed overhead.
        prop_assert!(e.low <= body.len() as u64 + 16, "{:?} for {} bytes", e, body.len());
    }

    #[test]
    fn any_json_value_as_a_body_never_panics(v in json_value()) {
        let body = serde_json::to_vec(&v).unwrap();
        let _ = request::parse(&body);
        let e = estimate(&body, true);
        prop_assert!(e.low <= e.high);
    }

    #[test]
    fn model_ids_normalise_idempotently_and_always_find_a_price(id in ".{0,80}") {
        let once = normalise(&id);
        prop_assert_eq!(normalise(&once), once.clone());
        prop_assert!(once.len() <= id.len());
        let book = PriceBook::seeded(Vec::new()).unwrap();
        let (price, how) = book.lookup(&id);
        // Never free: a known family at its own rates, anything else at the dearest known ones.
        prop_assert!(price.base.input.is_positive() && price.base.output.is_positive());
        let dearest = book.lookup("no-such-model-anywhere").0;
        match how {
            PricedAs::Table => prop_assert!(price.base.output <= dearest.base.output),
            PricedAs::Fallback => prop_assert_eq!(&*price, &*dearest),
        }
    }

    /// No `max_tokens` or `max_uses`, however large, makes the worst case wrap to a small one:
    /// it is at least the exact output and search charges (capped at the largest amount).
    #[test]
    fn the_worst_case_never_wraps(max in any::<u64>(), uses in prop::collection::vec(any::<u64>(), 0..4)) {
        let tools: Vec<Value> = uses.iter().map(|u| json!({"type": "web_search_20250305", "name": "web_search", "max_uses": u})).collect();
        let body = serde_json::to_vec(&json!({"model": "claude-opus-4-8", "max_tokens": max, "tools": tools, "messages": []})).unwrap();
        let r = request::parse(&body).unwrap();
        let book = PriceBook::seeded(Vec::new()).unwrap();
        let (price, _) = book.lookup(&r.model);
        let exact = i128::from(price.base.output.picos()) * i128::from(max)
            + i128::from(WEB_SEARCH.picos()) * uses.iter().map(|&u| i128::from(u)).sum::<i128>();
        let got = worst_case(&price, &r.ask);
        prop_assert!(i128::from(got.picos()) >= exact.min(i128::from(i64::MAX)), "{} < {}", got.picos(), exact);
    }

    #[test]
    fn known_ids_in_any_dress_resolve_to_their_family(
        family in prop_oneof![Just("claude-sonnet-4-5"), Just("claude-opus-4-1"), Just("claude-haiku-4-5")],
        date in "20[0-9]{6}",
        dress in 0usize..5,
    ) {
        let id = match dress {
            0 => format!("{family}-{date}"),
            1 => format!("anthropic.{family}-{date}-v1:0"),
            2 => format!("us.anthropic.{family}-{date}-v2:0"),
            3 => format!("{family}@{date}"),
            _ => format!("  {}  ", family.to_uppercase()),
        };
        prop_assert_eq!(normalise(&id), family);
    }

    #[test]
    fn money_parses_exactly_or_not_at_all(s in "[-+]?[0-9]{0,9}(\\.[0-9]{0,14})?|.{0,20}") {
        if let Ok(m) = Money::parse(&s) {
            prop_assert_eq!(Money::parse(&m.to_string()).unwrap(), m);
        }
    }

    #[test]
    fn budgets_validate_or_name_the_field(v in json_value(), name in "[a-z][a-z0-9_-]{0,70}|.{0,10}", cap in ".{0,12}|[0-9]{1,8}(\\.[0-9]{1,3})?") {
        let mut obj = json!({"name": name, "max_dollars": cap});
        if let Value::Object(extra) = v {
            for (k, x) in extra {
                obj[k] = x;
            }
        }
        // Serde refuses unknown fields and wrong types first; whatever passes is validated.
        if let Ok(nb) = serde_json::from_value::<NewBudget>(obj) {
            match nb.validate(chrono::Utc::now(), &TopLevel) {
                Ok(b) => {
                    prop_assert!(check_name(&b.name).is_ok());
                    prop_assert!(b.max_dollars.is_some_and(|m| m > Money::ZERO));
                    prop_assert!(!b.thresholds.is_empty() && b.thresholds.iter().all(|t| (1..=100).contains(t)));
                    if let Some(u) = &b.webhook_url {
                        prop_assert!(u.starts_with("http://") || u.starts_with("https://"));
                    }
                }
                Err(e) => prop_assert!(!e.to_string().is_empty()),
            }
        }
    }

    #[test]
    fn prices_validate_or_are_refused(model in ".{0,40}", rates in prop::collection::vec("-?[0-9]{0,6}(\\.[0-9]{0,8})?", 5)) {
        let entry = json!({"model": model, "input_per_mtok": rates[0], "output_per_mtok": rates[1],
            "cache_write_5m_per_mtok": rates[2], "cache_write_1h_per_mtok": rates[3], "cache_read_per_mtok": rates[4]});
        if let Ok(e) = serde_json::from_value::<PriceEntry>(entry) {
            if let Ok((stored, _)) = e.validate() {
                prop_assert_eq!(normalise(&stored.model), stored.model.clone());
                prop_assert!(stored.input_per_mtok >= Money::ZERO && stored.output_per_mtok >= Money::ZERO);
            }
        }
    }
}

/// Deep nesting (a classic stack-overflow input) is read without recursion.
#[test]
fn deeply_nested_bodies_do_not_overflow_the_stack() {
    let depth = 200_000;
    let mut body = String::from(r#"{"model":"claude-sonnet-4-6","max_tokens":1,"messages":"#);
    body.push_str(&"[".repeat(depth));
    body.push_str(&"]".repeat(depth));
    body.push('}');
    let _ = request::parse(body.as_bytes());
    let e = estimate(body.as_bytes(), false);
    assert!(e.low <= e.high);
}
