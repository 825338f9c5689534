use super::*;

fn book() -> PriceBook {
    PriceBook::seeded(vec![]).unwrap()
}
fn usage(json: &str) -> Usage {
    serde_json::from_str(json).unwrap()
}
fn dollars(s: &str) -> Money {
    Money::parse(s).unwrap()
}

/// Hand-worked examples, one per pricing rule. Rates in $/MTok from ANTHROPIC.md.
#[test]
fn every_pricing_rule_by_hand() {
    let cases: &[(&str, &str, &str, &str)] = &[
        // base: 1000 in × $3 + 500 out × $15 = 0.003 + 0.0075
        (
            "base",
            "claude-sonnet-4-6",
            r#"{"input_tokens":1000,"output_tokens":500}"#,
            "0.0105",
        ),
        // cache writes without breakdown → 5m rate: 2000 × 3.75 = 0.0075; + 100 in × 3 = 0.0003
        (
            "cache write, no breakdown",
            "claude-sonnet-4-6",
            r#"{"input_tokens":100,"output_tokens":0,"cache_creation_input_tokens":2000}"#,
            "0.0078",
        ),
        // 5m 148 × 6.25 + 1h 100 × 10 + read 1800 × 0.5 + in 2048 × 5 + out 503 × 25
        // = 0.000925 + 0.001 + 0.0009 + 0.01024 + 0.012575 = 0.02564
        (
            "5m and 1h writes, reads",
            "claude-opus-4-6",
            r#"{"input_tokens":2048,"cache_creation_input_tokens":248,"cache_read_input_tokens":1800,
            "cache_creation":{"ephemeral_5m_input_tokens":148,"ephemeral_1h_input_tokens":100},"output_tokens":503}"#,
            "0.02564",
        ),
        // Haiku 3's listed (non-multiplier) prices: 1M read × 0.03 + 1M 5m write × 0.30
        (
            "haiku 3 table values",
            "claude-3-haiku-20240307",
            r#"{"input_tokens":0,"output_tokens":0,"cache_read_input_tokens":1000000,"cache_creation_input_tokens":1000000}"#,
            "0.33",
        ),
        // web search: 1000 in × $1 + 2 searches × $0.01
        (
            "web search",
            "claude-haiku-4-5",
            r#"{"input_tokens":1000,"output_tokens":0,"server_tool_use":{"web_search_requests":2}}"#,
            "0.021",
        ),
        // geo us ×1.1: (1000 × 5 + 1000 × 25) / 1e6 = 0.03 → 0.033
        (
            "inference_geo us",
            "claude-opus-4-8",
            r#"{"input_tokens":1000,"output_tokens":1000,"inference_geo":"us"}"#,
            "0.033",
        ),
        (
            "inference_geo global",
            "claude-opus-4-8",
            r#"{"input_tokens":1000,"output_tokens":1000,"inference_geo":"global"}"#,
            "0.03",
        ),
        // fast ×2 on Opus 5: 0.03 → 0.06; with geo: 0.066
        (
            "fast mode",
            "claude-opus-5",
            r#"{"input_tokens":1000,"output_tokens":1000,"speed":"fast"}"#,
            "0.06",
        ),
        (
            "fast + geo stack",
            "claude-opus-5",
            r#"{"input_tokens":1000,"output_tokens":1000,"speed":"fast","inference_geo":"us"}"#,
            "0.066",
        ),
        (
            "standard speed",
            "claude-opus-5",
            r#"{"input_tokens":1000,"output_tokens":1000,"speed":"standard"}"#,
            "0.03",
        ),
        // batch −50%: Sonnet 4.x $1.50/$7.50 → 1000 × 1.5 + 1000 × 7.5 = 0.009
        (
            "batch tier",
            "claude-sonnet-4-5",
            r#"{"input_tokens":1000,"output_tokens":1000,"service_tier":"batch"}"#,
            "0.009",
        ),
        // Haiku 5.5 ≤100K: 100,000 in × 0.10 + 1000 out × 0.50 = 0.01 + 0.0005
        (
            "haiku 5.5 at the band edge",
            "claude-haiku-5-5",
            r#"{"input_tokens":100000,"output_tokens":1000}"#,
            "0.0105",
        ),
        // >100K counts cache reads too, and bands every token: 90,000 in × 0.5 + 20,000 read × 0.05 + 1000 out × 2.5
        (
            "haiku 5.5 above the band",
            "claude-haiku-5-5",
            r#"{"input_tokens":90000,"cache_read_input_tokens":20000,"output_tokens":1000}"#,
            "0.0485",
        ),
        // iterations: each at its own model — Opus 4.8 (1000 in, 100 out) + Haiku 4.5 advisor (2000 in, 200 out)
        // = 0.005 + 0.0025 + 0.002 + 0.001; top-level totals ignored
        (
            "iterations",
            "claude-opus-4-8",
            r#"{"input_tokens":1,"output_tokens":1,"iterations":[
            {"type":"message","input_tokens":1000,"output_tokens":100},
            {"type":"advisor_message","model":"claude-haiku-4-5-20251001","input_tokens":2000,"output_tokens":200}]}"#,
            "0.0105",
        ),
        // dated / Bedrock / Vertex ids resolve to the family
        (
            "bedrock id",
            "anthropic.claude-sonnet-4-5-20250929-v1:0",
            r#"{"input_tokens":1000,"output_tokens":500}"#,
            "0.0105",
        ),
        (
            "vertex id",
            "claude-haiku-4-5@20251001",
            r#"{"input_tokens":1000000,"output_tokens":0}"#,
            "1",
        ),
        // unknown model at fallback rates: $15 in / $75 out
        (
            "fallback",
            "claude-new-thing",
            r#"{"input_tokens":1000,"output_tokens":1000}"#,
            "0.09",
        ),
        // nulls are absent
        (
            "nulls",
            "claude-sonnet-4-6",
            r#"{"input_tokens":1000,"output_tokens":0,"cache_creation_input_tokens":null,"cache_creation":null,"server_tool_use":null}"#,
            "0.003",
        ),
    ];
    let book = book();
    for (name, model, json, want) in cases {
        let c = charge(&book, model, &usage(json));
        assert_eq!(c.cost, dollars(want), "{name}: got {}", c.cost);
    }
}

#[test]
fn fallback_and_tokens_are_reported() {
    let c = charge(
        &book(),
        "claude-new-thing",
        &usage(r#"{"input_tokens":10,"output_tokens":5,"cache_read_input_tokens":7}"#),
    );
    assert_eq!(c.priced_as, PricedAs::Fallback);
    assert_eq!(c.unpriced_model.as_deref(), Some("claude-new-thing"));
    assert_eq!(c.tokens.total(), 22);
    let known = charge(
        &book(),
        "claude-sonnet-4-6",
        &usage(r#"{"input_tokens":1,"output_tokens":1}"#),
    );
    assert_eq!(
        (known.priced_as, known.unpriced_model),
        (PricedAs::Table, None)
    );
}

#[test]
fn stream_usage_takes_the_larger_report_and_never_adds() {
    let mut u = usage(r#"{"input_tokens":2679,"output_tokens":3,"cache_read_input_tokens":10}"#);
    u.merge_later(usage(r#"{"output_tokens":15}"#));
    u.merge_later(usage(r#"{"input_tokens":10682,"output_tokens":510,"server_tool_use":{"web_search_requests":1},"cache_read_input_tokens":null}"#));
    assert_eq!(u.input_tokens, Some(10682));
    assert_eq!(u.output_tokens, Some(510));
    assert_eq!(u.cache_read_input_tokens, Some(10));
    assert_eq!(u.web_searches(), 1);
    // A later, smaller figure (a hostile or buggy upstream) never lowers the bill.
    u.merge_later(usage(r#"{"input_tokens":0,"output_tokens":1,"cache_read_input_tokens":0,"server_tool_use":{"web_search_requests":0},"cache_creation":{"ephemeral_5m_input_tokens":4}}"#));
    u.merge_later(usage(
        r#"{"cache_creation":{"ephemeral_5m_input_tokens":2}}"#,
    ));
    assert_eq!(
        (u.input_tokens, u.output_tokens, u.cache_read_input_tokens),
        (Some(10682), Some(510), Some(10))
    );
    assert_eq!(u.web_searches(), 1);
    assert_eq!(
        u.cache_creation.and_then(|c| c.ephemeral_5m_input_tokens),
        Some(4)
    );
}

#[test]
fn usage_beyond_any_response_is_not_plausible() {
    assert!(usage(r#"{"input_tokens":1000000,"output_tokens":128000}"#).plausible());
    assert!(usage("{}").plausible());
    for bad in [
        r#"{"output_tokens":18446744073709551615}"#,
        r#"{"input_tokens":100000001}"#,
        r#"{"cache_creation":{"ephemeral_1h_input_tokens":9223372036854775807}}"#,
        r#"{"server_tool_use":{"web_search_requests":4294967296000}}"#,
        r#"{"iterations":[{"output_tokens":18446744073709551615}]}"#,
    ] {
        assert!(!usage(bad).plausible(), "{bad}");
    }
    // Sums of huge fields saturate instead of wrapping to a small bill.
    let t = Tokens {
        input: u64::MAX,
        output: 5,
        ..Tokens::default()
    };
    assert_eq!(t.total(), u64::MAX);
}

#[test]
fn after_message_start_the_prompt_is_priced_exactly_and_the_output_stays_worst() {
    let book = book();
    let (opus, _) = book.lookup("claude-opus-4-8");
    let ask = Ask {
        input_tokens: 90_000,
        max_tokens: 32_000,
        cache_control: true,
        ..Ask::default()
    };
    // Admission: 90,000 × $10 (1h write) + 32,000 × $25 = 0.9 + 0.8
    assert_eq!(worst_case(&opus, &ask), dollars("1.7"));
    // Start: 500 in × $5 + 2,000 5m writes × $6.25 + 60,000 reads × $0.50 + 32,000 × $25
    // = 0.0025 + 0.0125 + 0.03 + 0.8
    let start = usage(
        r#"{"input_tokens":500,"cache_creation_input_tokens":2000,"cache_read_input_tokens":60000,"output_tokens":1}"#,
    );
    assert_eq!(
        worst_case_after_start(&opus, &ask, &start),
        Some((dollars("0.845"), 500 + 2000 + 60_000 + 32_000))
    );
    // The request's geo and web searches still count: ×1.1 on tokens, + 3 × $0.01.
    let geo = Ask {
        geo_us: true,
        web_search_max_uses: 3,
        ..ask
    };
    assert_eq!(
        worst_case_after_start(&opus, &geo, &start).map(|w| w.0),
        Some(dollars("0.9595"))
    );
    // Haiku 5.5: an exact prompt under 100K keeps the low band for the output too.
    let (haiku, _) = book.lookup("claude-haiku-5-5");
    let small = usage(r#"{"input_tokens":50000,"output_tokens":1}"#);
    let h = Ask {
        input_tokens: 120_000,
        max_tokens: 1000,
        ..Ask::default()
    };
    // 50,000 × $0.10 + 1,000 × $0.50
    assert_eq!(
        worst_case_after_start(&haiku, &h, &small).map(|w| w.0),
        Some(dollars("0.0055"))
    );
    // Nothing to go on: keep the reservation.
    let none = usage(r#"{"output_tokens":1}"#);
    assert_eq!(worst_case_after_start(&opus, &ask, &none), None);
    let its = usage(r#"{"input_tokens":5,"output_tokens":1,"iterations":[{"input_tokens":5}]}"#);
    assert_eq!(worst_case_after_start(&opus, &ask, &its), None);
}

#[test]
fn worst_case_takes_the_dearest_rate_the_request_can_incur() {
    let book = book();
    let (sonnet, _) = book.lookup("claude-sonnet-4-6");
    let ask = Ask {
        input_tokens: 1000,
        max_tokens: 32_000,
        ..Ask::default()
    };
    // 1000 × 3 + 32,000 × 15 = 0.003 + 0.48
    assert_eq!(worst_case(&sonnet, &ask), dollars("0.483"));
    // cache_control → the 1h write rate ($6)
    assert_eq!(
        worst_case(
            &sonnet,
            &Ask {
                cache_control: true,
                ..ask
            }
        ),
        dollars("0.486")
    );
    // web search max_uses 5 → + $0.05; geo → ×1.1 on tokens
    assert_eq!(
        worst_case(
            &sonnet,
            &Ask {
                web_search_max_uses: 5,
                ..ask
            }
        ),
        dollars("0.533")
    );
    assert_eq!(
        worst_case(
            &sonnet,
            &Ask {
                geo_us: true,
                ..ask
            }
        ),
        dollars("0.5313")
    );
    // Haiku 5.5 over 100K: the band's rates for everything
    let (haiku, _) = book.lookup("claude-haiku-5-5");
    let big = Ask {
        input_tokens: 150_000,
        max_tokens: 1000,
        ..Ask::default()
    };
    assert_eq!(worst_case(&haiku, &big), dollars("0.0775"));
    // Claude Code's default Opus call: 128,000 output × $25 ≈ $3.2
    let (opus, _) = book.lookup("claude-opus-4-8");
    assert_eq!(
        worst_case(
            &opus,
            &Ask {
                input_tokens: 0,
                max_tokens: 128_000,
                ..Ask::default()
            }
        ),
        dollars("3.2")
    );
}
